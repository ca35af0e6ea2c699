//! Property tests: [`SharedBreaker`] (a lock-free closed path over the locked machine) decides
//! exactly as the `&mut` [`CircuitBreaker`] it wraps: every admission, rejection, permit,
//! event, timeout, state and stats snapshot alike, after every step of an arbitrary sequence
//! (clock going backwards included). Configs lean on the ones the closed path serves (no rate
//! policy) but include rate policies too; a second property drives rate policies with mostly
//! quick successes, so the window is often full of them (quiet: its successes are recorded
//! without the lock) and a failure or a slow call breaks the quiet.
#![cfg(feature = "std")]

use core::time::Duration;

use keel_core::backoff::Jitter;
use keel_core::breaker::{BreakerConfig, BreakerPermit, CircuitBreaker, Outcome};
use keel_core::sync::breaker::SharedBreaker;
use keel_core::Instant;
use proptest::prelude::*;

#[path = "support/props.rs"]
mod props;

#[derive(Clone, Debug)]
struct Cfg {
    consecutive: Option<u32>,
    failure_rate: Option<u8>,
    slow_rate: Option<u8>,
    slow_ms: u64,
    open_ms: u64,
    exponential: bool,
    probes: u32,
    abandon_ms: u64,
    max_wait_ms: Option<u64>,
}

impl Cfg {
    fn build(&self) -> Option<BreakerConfig> {
        let mut b = BreakerConfig::builder()
            .count_window(4)
            .minimum_calls(2)
            .slow_call_duration_threshold(Duration::from_millis(self.slow_ms))
            .permitted_calls_in_half_open(self.probes)
            .abandon_threshold(Duration::from_millis(self.abandon_ms));
        b = if self.exponential {
            b.exponential_open_duration(
                Duration::from_millis(self.open_ms),
                2,
                Duration::from_millis(self.open_ms * 8),
                Jitter::Full,
            )
        } else {
            b.open_duration(Duration::from_millis(self.open_ms))
        };
        if let Some(w) = self.max_wait_ms {
            b = b.max_wait_in_half_open(Duration::from_millis(w));
        }
        b = match self.consecutive {
            Some(n) => b.consecutive_failures(n),
            None => b.disable_consecutive_failures(),
        };
        b = match self.failure_rate {
            Some(r) => b.failure_rate_threshold(r),
            None => b.disable_failure_rate(),
        };
        b = match self.slow_rate {
            Some(r) => b.slow_call_rate_threshold(r),
            None => b.disable_slow_call_rate(),
        };
        b.build().ok()
    }
}

fn cfg() -> impl Strategy<Value = Cfg> {
    configs(
        prop_oneof![4 => Just(None), 1 => (1u8..=100).prop_map(Some)],
        prop_oneof![6 => Just(None), 1 => (1u8..=100).prop_map(Some)],
    )
}

/// Rate policies always (a failure rate, a slow-call rate or both).
fn windowed_cfg() -> impl Strategy<Value = Cfg> {
    configs(
        prop_oneof![2 => (1u8..=100).prop_map(Some), 1 => Just(None)],
        prop_oneof![1 => (1u8..=100).prop_map(Some), 1 => Just(None)],
    )
    .prop_map(|mut c| {
        if c.failure_rate.is_none() && c.slow_rate.is_none() {
            c.failure_rate = Some(50);
        }
        c
    })
}

fn configs(
    failure_rate: impl Strategy<Value = Option<u8>>,
    slow_rate: impl Strategy<Value = Option<u8>>,
) -> impl Strategy<Value = Cfg> {
    (
        prop_oneof![6 => (1u32..5).prop_map(Some), 1 => Just(None)],
        failure_rate,
        slow_rate,
        1u64..3_000,
        0u64..5_000,
        any::<bool>(),
        1u32..4,
        0u64..3_000,
        proptest::option::of(0u64..5_000),
    )
        .prop_map(
            |(
                consecutive,
                failure_rate,
                slow_rate,
                slow_ms,
                open_ms,
                exponential,
                probes,
                abandon_ms,
                max_wait_ms,
            )| Cfg {
                consecutive,
                failure_rate,
                slow_rate,
                slow_ms,
                open_ms,
                exponential,
                probes,
                abandon_ms,
                max_wait_ms,
            },
        )
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Acquire,
    Report(usize, Outcome),
    Abandon(usize),
    Timeout,
    ForceOpen,
    Disable,
    Reset,
    /// `with`: a call on the machine itself (its stats must include the lock-free counts).
    With,
}

fn op() -> impl Strategy<Value = (i64, Op)> {
    let outcome = prop_oneof![
        4 => Just(Outcome::Failure),
        4 => Just(Outcome::Success),
        1 => Just(Outcome::Ignored),
    ];
    let op = prop_oneof![
        20 => Just(Op::Acquire),
        20 => (any::<usize>(), outcome).prop_map(|(i, o)| Op::Report(i, o)),
        4 => any::<usize>().prop_map(Op::Abandon),
        4 => Just(Op::Timeout),
        1 => Just(Op::ForceOpen),
        1 => Just(Op::Disable),
        2 => Just(Op::Reset),
        1 => Just(Op::With),
    ];
    (
        prop_oneof![6 => -2_000i64..4_000, 1 => Just(1_000), 2 => Just(0)],
        op,
    )
}

/// Mostly admissions and quick successes (steps of 0 to 20 ms; the slow-call threshold is at
/// least 1 ms), with a failure, an ignored outcome, a slow step or a reset now and then.
fn healthy_op() -> impl Strategy<Value = (i64, Op)> {
    let outcome = prop_oneof![
        12 => Just(Outcome::Success),
        1 => Just(Outcome::Failure),
        1 => Just(Outcome::Ignored),
    ];
    let op = prop_oneof![
        20 => Just(Op::Acquire),
        20 => (any::<usize>(), outcome).prop_map(|(i, o)| Op::Report(i, o)),
        1 => any::<usize>().prop_map(Op::Abandon),
        2 => Just(Op::Timeout),
        1 => Just(Op::Reset),
        1 => Just(Op::With),
    ];
    (
        prop_oneof![20 => 0i64..20, 1 => Just(3_000), 1 => -20i64..0],
        op,
    )
}

proptest! {
    #![proptest_config(props::config(512, "proptest-regressions/breaker_shared_props.txt"))]

    #[test]
    fn shared_decides_as_the_machine(cfg in cfg(), ops in proptest::collection::vec(op(), 1..250)) {
        decides_as_the_machine(&cfg, ops)?;
    }

    #[test]
    fn shared_decides_as_the_machine_through_quiet_windows(
        cfg in windowed_cfg(),
        ops in proptest::collection::vec(healthy_op(), 1..250),
    ) {
        decides_as_the_machine(&cfg, ops)?;
    }
}

/// Runs `ops` on a `&mut` machine and on a shared one (two handles, alternately), comparing
/// every decision, state, stats snapshot, timer and event after each step.
fn decides_as_the_machine(cfg: &Cfg, ops: Vec<(i64, Op)>) -> Result<(), TestCaseError> {
    let Some(config) = cfg.build() else {
        return Ok(());
    };
    let mut real = CircuitBreaker::new(config, Instant::ZERO);
    let shared = SharedBreaker::new(config, Instant::ZERO);
    let other = shared.clone();
    // (machine permit, shared permit): they must be equal anyway.
    let mut held: Vec<(BreakerPermit, BreakerPermit)> = Vec::new();
    let mut raw: i64 = 0;
    for (step, (dt, op)) in ops.into_iter().enumerate() {
        raw = (raw + dt).max(0);
        let now = Instant::from_millis(raw as u64);
        // Alternate handles: clones are one breaker.
        let s = if step % 2 == 0 { &shared } else { &other };
        match op {
            Op::Acquire => {
                let a = real.try_acquire(now);
                let b = s.try_acquire(now);
                prop_assert_eq!(a, b, "try_acquire at step {}", step);
                if let (Ok(pa), Ok(pb)) = (a, b) {
                    held.push((pa, pb));
                }
            }
            Op::Report(i, outcome) if !held.is_empty() => {
                let (pa, pb) = held.swap_remove(i % held.len());
                real.on_outcome(now, pa, outcome);
                s.on_outcome(now, pb, outcome);
            }
            Op::Abandon(i) if !held.is_empty() => {
                let (pa, pb) = held.swap_remove(i % held.len());
                prop_assert_eq!(real.on_abandoned(now, pa), s.on_abandoned(now, pb));
            }
            Op::Report(..) | Op::Abandon(_) => {}
            Op::Timeout => {
                real.handle_timeout(now);
                s.handle_timeout(now);
            }
            Op::ForceOpen => {
                real.force_open(now);
                s.force_open(now);
            }
            Op::Disable => {
                real.disable(now);
                s.disable(now);
            }
            Op::Reset => {
                real.reset(now);
                s.reset(now);
            }
            Op::With => {
                let inside = s.with(|m| m.stats());
                prop_assert_eq!(inside, real.stats(), "with() at step {}", step);
            }
        }
        prop_assert_eq!(s.state(), real.state(), "state at step {}", step);
        prop_assert_eq!(s.stats(), real.stats(), "stats at step {}", step);
        prop_assert_eq!(
            s.poll_timeout(),
            real.poll_timeout(),
            "poll_timeout at step {}",
            step
        );
        let mut got = Vec::new();
        s.drain_events(|e| got.push(e));
        let mut want = Vec::new();
        while let Some(e) = real.poll_event() {
            want.push(e);
        }
        prop_assert_eq!(got, want, "events at step {}", step);
        prop_assert_eq!(s.poll_event(), None);
    }
    Ok(())
}
