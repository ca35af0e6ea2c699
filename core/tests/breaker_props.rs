//! Property tests: the breaker against a naive reference model, plus invariants under
//! arbitrary inputs.

use std::collections::VecDeque;

use core::time::Duration;

use keel_core::backoff::Jitter;
use keel_core::breaker::{BreakerConfig, BreakerPermit, CircuitBreaker, Outcome, State};
use keel_core::Instant;
use proptest::prelude::*;

#[path = "support/props.rs"]
mod props;

/// The model's configuration: consecutive failures plus a count window, fixed open duration.
#[derive(Clone, Debug)]
struct ModelConfig {
    consecutive: Option<u32>,
    window: u32,
    minimum_calls: u32,
    failure_rate: Option<u8>,
    slow_rate: Option<u8>,
    slow_ms: u64,
    open_ms: u64,
    probes: u32,
    abandon_ms: u64,
}

impl ModelConfig {
    fn build(&self) -> BreakerConfig {
        let mut b = BreakerConfig::builder()
            .count_window(self.window)
            .minimum_calls(self.minimum_calls)
            .slow_call_duration_threshold(Duration::from_millis(self.slow_ms))
            .open_duration(Duration::from_millis(self.open_ms))
            .permitted_calls_in_half_open(self.probes)
            .abandon_threshold(Duration::from_millis(self.abandon_ms));
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
        b.build().expect("the strategy only makes valid configs")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MState {
    Closed,
    Open { until: u64 },
    HalfOpen { used: u32, successes: u32 },
    Forced,
    Disabled,
}

/// The breaker, written the obvious way: every rate recomputed from a list of outcomes.
struct Model {
    cfg: ModelConfig,
    newest: u64,
    state: MState,
    generation: u64,
    consecutive: u32,
    window: VecDeque<(bool, bool)>,
}

impl Model {
    fn new(cfg: ModelConfig) -> Self {
        Model {
            cfg,
            newest: 0,
            state: MState::Closed,
            generation: 0,
            consecutive: 0,
            window: VecDeque::new(),
        }
    }

    fn go(&mut self, to: MState) {
        self.state = to;
        self.generation += 1;
        self.consecutive = 0;
        self.window.clear();
    }

    fn trip(&mut self) {
        let until = self.newest + self.cfg.open_ms * 1_000_000;
        self.go(MState::Open { until });
    }

    fn advance(&mut self, now: u64) -> u64 {
        self.newest = self.newest.max(now);
        if let MState::Open { until } = self.state {
            if self.newest >= until {
                self.go(MState::HalfOpen {
                    used: 0,
                    successes: 0,
                });
            }
        }
        self.newest
    }

    fn acquire(&mut self, now: u64) -> Result<(u64, u64), Option<u64>> {
        let now = self.advance(now);
        match &mut self.state {
            MState::Closed | MState::Disabled => Ok((self.generation, now)),
            MState::HalfOpen { used, .. } if *used < self.cfg.probes => {
                *used += 1;
                Ok((self.generation, now))
            }
            MState::HalfOpen { .. } | MState::Forced => Err(None),
            MState::Open { until } => Err(Some(*until)),
        }
    }

    fn outcome(&mut self, now: u64, permit: (u64, u64), outcome: Outcome) {
        let now = self.advance(now);
        if permit.0 != self.generation {
            return;
        }
        let failed = match outcome {
            Outcome::Ignored => {
                if let MState::HalfOpen { used, .. } = &mut self.state {
                    *used -= 1;
                }
                return;
            }
            Outcome::Success => false,
            Outcome::Failure => true,
        };
        let slow = now - permit.1 >= self.cfg.slow_ms * 1_000_000;
        match self.state {
            MState::Closed => {
                self.consecutive = if failed { self.consecutive + 1 } else { 0 };
                if self.cfg.failure_rate.is_some() || self.cfg.slow_rate.is_some() {
                    self.window.push_back((failed, slow));
                    if self.window.len() > self.cfg.window as usize {
                        self.window.pop_front();
                    }
                }
                let calls = self.window.len() as u64;
                let failures = self.window.iter().filter(|o| o.0).count() as u64;
                let slows = self.window.iter().filter(|o| o.1).count() as u64;
                let judged = calls >= u64::from(self.cfg.minimum_calls);
                let over =
                    |n: u64, t: Option<u8>| t.is_some_and(|t| n * 100 >= u64::from(t) * calls);
                if self.cfg.consecutive.is_some_and(|n| self.consecutive >= n)
                    || (judged && over(failures, self.cfg.failure_rate))
                    || (judged && over(slows, self.cfg.slow_rate))
                {
                    self.trip();
                }
            }
            MState::HalfOpen { used, successes } => {
                if failed || (slow && self.cfg.slow_rate.is_some()) {
                    self.trip();
                } else if successes + 1 >= self.cfg.probes {
                    self.go(MState::Closed);
                } else {
                    self.state = MState::HalfOpen {
                        used,
                        successes: successes + 1,
                    };
                }
            }
            _ => {}
        }
    }

    fn public_state(&self) -> State {
        match self.state {
            MState::Closed => State::Closed,
            MState::Open { .. } => State::Open,
            MState::HalfOpen { .. } => State::HalfOpen,
            MState::Forced => State::ForcedOpen,
            MState::Disabled => State::Disabled,
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Acquire,
    Report(usize, Outcome),
    /// The call of the held permit at this index was dropped before it finished.
    Abandon(usize),
    Timeout,
    ForceOpen,
    Disable,
    Reset,
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        4 => Just(Outcome::Failure),
        4 => Just(Outcome::Success),
        1 => Just(Outcome::Ignored),
    ]
}

fn op() -> impl Strategy<Value = (i64, Op)> {
    let op = prop_oneof![
        20 => Just(Op::Acquire),
        20 => (any::<usize>(), outcome()).prop_map(|(i, o)| Op::Report(i, o)),
        6 => any::<usize>().prop_map(Op::Abandon),
        4 => Just(Op::Timeout),
        1 => Just(Op::ForceOpen),
        1 => Just(Op::Disable),
        1 => Just(Op::Reset),
    ];
    // Milliseconds; a negative step is a clock going backwards. Steps of exactly 1 s meet an
    // abandon threshold of 1 s (the boundary: a call that ran exactly the threshold counts).
    (
        prop_oneof![6 => -2_000i64..4_000, 1 => Just(1_000), 1 => Just(0)],
        op,
    )
}

fn model_config() -> impl Strategy<Value = ModelConfig> {
    (1u32..12, any::<u32>())
        .prop_flat_map(|(window, _)| {
            (
                proptest::option::of(1u32..6),
                Just(window),
                1..=window,
                proptest::option::of(1u8..=100),
                proptest::option::of(1u8..=100),
                1u64..3_000,
                1u64..10_000,
                1u32..4,
                prop_oneof![2 => 0u64..3_000, 1 => Just(1_000)],
            )
        })
        .prop_map(
            |(
                consecutive,
                window,
                minimum_calls,
                failure_rate,
                slow_rate,
                slow_ms,
                open_ms,
                probes,
                abandon_ms,
            )| {
                let consecutive =
                    if consecutive.is_none() && failure_rate.is_none() && slow_rate.is_none() {
                        Some(3)
                    } else {
                        consecutive
                    };
                ModelConfig {
                    consecutive,
                    window,
                    minimum_calls,
                    failure_rate,
                    slow_rate,
                    slow_ms,
                    open_ms,
                    probes,
                    abandon_ms,
                }
            },
        )
}

proptest! {
    #![proptest_config(props::config(256, "proptest-regressions/breaker_props.txt"))]

    /// Same observable state after every step, every admission decided alike; plus: half-open
    /// probes never exceed N, and stale outcomes never change anything.
    #[test]
    fn matches_the_reference_model(cfg in model_config(), ops in proptest::collection::vec(op(), 1..200)) {
        let mut real = CircuitBreaker::new(cfg.build(), Instant::ZERO);
        let mut model = Model::new(cfg.clone());
        let mut held: Vec<(BreakerPermit, (u64, u64))> = Vec::new();
        let mut raw: i64 = 0;
        let mut stale_seen = 0u64;
        for (dt, op) in ops {
            raw = (raw + dt).max(0);
            let now = Instant::from_millis(raw as u64);
            let now_ns = now.as_nanos();
            match op {
                Op::Acquire => {
                    let r = real.try_acquire(now);
                    let m = model.acquire(now_ns);
                    match (r, m) {
                        (Ok(p), Ok(mp)) => {
                            prop_assert_eq!((p.generation(), p.admitted_at().as_nanos()), mp);
                            held.push((p, mp));
                        }
                        (Err(rej), Err(retry)) => {
                            prop_assert_eq!(rej.retry_at.map(Instant::as_nanos), retry);
                            prop_assert_eq!(rej.reason, model.public_state());
                        }
                        (r, m) => prop_assert!(false, "real {:?} vs model {:?}", r, m),
                    }
                }
                Op::Report(i, outcome) if !held.is_empty() => {
                    let (p, mp) = held.swap_remove(i % held.len());
                    real.handle_timeout(now);
                    let before = real.stats();
                    real.on_outcome(now, p, outcome);
                    model.outcome(now_ns, mp, outcome);
                    if p.generation() != before.generation {
                        stale_seen += 1;
                        let after = real.stats();
                        prop_assert_eq!(after.state, before.state);
                        prop_assert_eq!(after.generation, before.generation);
                        prop_assert_eq!(after.window_calls, before.window_calls);
                        prop_assert_eq!(after.consecutive_failures, before.consecutive_failures);
                        prop_assert_eq!(after.probes_in_use, before.probes_in_use);
                    }
                }
                Op::Report(..) => {}
                Op::Abandon(i) if !held.is_empty() => {
                    let (p, mp) = held.swap_remove(i % held.len());
                    real.handle_timeout(now);
                    model.advance(now_ns);
                    let before = real.stats();
                    // The rule: a failure once the call ran the abandon threshold, else ignored.
                    let ran = model.newest.saturating_sub(mp.1);
                    let want = if ran >= cfg.abandon_ms * 1_000_000 {
                        Outcome::Failure
                    } else {
                        Outcome::Ignored
                    };
                    prop_assert_eq!(real.on_abandoned(now, p), want);
                    model.outcome(now_ns, mp, want);
                    let after = real.stats();
                    prop_assert_eq!(after.abandoned, before.abandoned + 1);
                    let current = p.generation() == before.generation;
                    let counted = u64::from(current && want == Outcome::Failure);
                    prop_assert_eq!(after.abandoned_failures, before.abandoned_failures + counted);
                    if !current {
                        stale_seen += 1;
                    }
                }
                Op::Abandon(_) => {}
                Op::Timeout => {
                    real.handle_timeout(now);
                    model.advance(now_ns);
                    let t = real.poll_timeout();
                    prop_assert!(t.is_none_or(|t| t > now), "poll_timeout {:?} after {:?}", t, now);
                }
                Op::ForceOpen => {
                    real.force_open(now);
                    model.newest = model.newest.max(now_ns);
                    if model.state != MState::Forced { model.go(MState::Forced); }
                }
                Op::Disable => {
                    real.disable(now);
                    model.newest = model.newest.max(now_ns);
                    if model.state != MState::Disabled { model.go(MState::Disabled); }
                }
                Op::Reset => {
                    real.reset(now);
                    model.newest = model.newest.max(now_ns);
                    model.go(MState::Closed);
                }
            }
            let s = real.stats();
            prop_assert_eq!(s.state, model.public_state());
            prop_assert_eq!(s.generation, model.generation);
            prop_assert_eq!(s.consecutive_failures, model.consecutive);
            prop_assert_eq!(s.window_calls, model.window.len() as u64);
            prop_assert_eq!(s.window_failures, model.window.iter().filter(|o| o.0).count() as u64);
            prop_assert_eq!(s.window_slow, model.window.iter().filter(|o| o.1).count() as u64);
            prop_assert_eq!(s.stale_outcomes, stale_seen);
            prop_assert!(s.probes_in_use <= cfg.probes);
            if let MState::HalfOpen { used, .. } = model.state {
                prop_assert_eq!(s.probes_in_use, used);
            }
            let expected_timeout = match model.state {
                MState::Open { until } if until > model.newest => Some(until),
                _ => None,
            };
            prop_assert_eq!(real.poll_timeout().map(Instant::as_nanos), expected_timeout);
        }
    }

    /// In one half-open episode, admissions minus ignored releases never exceed N.
    #[test]
    fn half_open_admissions_never_exceed_n(
        probes in 1u32..5,
        ops in proptest::collection::vec((0u8..4, 0usize..8), 1..100),
    ) {
        let config = BreakerConfig::consecutive_failures(1)
            .open_duration(Duration::from_secs(1))
            .permitted_calls_in_half_open(probes)
            .build()
            .unwrap();
        let mut b = CircuitBreaker::new(config, Instant::ZERO);
        let p = b.try_acquire(Instant::ZERO).unwrap();
        b.on_failure(Instant::ZERO, p);
        let now = Instant::from_secs(1);
        let mut in_use: Vec<BreakerPermit> = Vec::new();
        let mut successes = 0u32;
        b.handle_timeout(now);
        prop_assert_eq!(b.state(), State::HalfOpen);
        for (kind, i) in ops {
            match kind {
                0 | 1 => {
                    if let Ok(p) = b.try_acquire(now) {
                        in_use.push(p);
                    }
                }
                2 if !in_use.is_empty() => {
                    let p = in_use.swap_remove(i % in_use.len());
                    b.on_ignored(now, p);
                }
                3 if !in_use.is_empty() => {
                    let p = in_use.swap_remove(i % in_use.len());
                    b.on_success(now, p);
                    successes += 1;
                }
                _ => {}
            }
            if b.state() == State::HalfOpen {
                prop_assert!(in_use.len() as u32 + successes <= probes);
                prop_assert_eq!(b.stats().probes_in_use, in_use.len() as u32 + successes);
            } else {
                prop_assert_eq!(b.state(), State::Closed);
                prop_assert_eq!(successes, probes);
                break;
            }
        }
    }

    /// Nothing panics or spins, whatever the configuration and inputs, extremes included.
    #[test]
    fn no_panic_on_any_input(
        consecutive in proptest::option::of(1u32..4),
        time_window in any::<bool>(),
        size in 1u32..=32,
        base in prop_oneof![Just(Duration::MAX), Just(Duration::from_nanos(1)), (1u64..u64::MAX).prop_map(Duration::from_nanos)],
        factor in prop_oneof![Just(1u32), Just(u32::MAX), 1u32..10],
        jitter in prop_oneof![Just(Jitter::None), Just(Jitter::Full), Just(Jitter::Equal)],
        max_wait in proptest::option::of(prop_oneof![Just(Duration::MAX), (1u64..u64::MAX).prop_map(Duration::from_nanos)]),
        slow in prop_oneof![Just(Duration::ZERO), Just(Duration::MAX), (0u64..u64::MAX).prop_map(Duration::from_nanos)],
        seed in any::<u64>(),
        ops in proptest::collection::vec((0u8..9, prop_oneof![Just(0u64), Just(u64::MAX), any::<u64>(), 0u64..10_000_000_000]), 1..150),
    ) {
        let mut builder = BreakerConfig::builder()
            .minimum_calls(1)
            .failure_rate_threshold(50)
            .slow_call_rate_threshold(100)
            .slow_call_duration_threshold(slow)
            .exponential_open_duration(base, factor, Duration::MAX, jitter)
            .permitted_calls_in_half_open(2)
            .seed(seed);
        builder = if time_window {
            builder.time_window(size, Duration::from_millis(250))
        } else {
            builder.count_window(size)
        };
        if let Some(n) = consecutive { builder = builder.consecutive_failures(n); }
        if let Some(w) = max_wait { builder = builder.max_wait_in_half_open(w); }
        let mut b = CircuitBreaker::new(builder.build().unwrap(), Instant::from_nanos(seed % 1_000));
        let mut held = Vec::new();
        let mut newest = Instant::from_nanos(seed % 1_000);
        for (kind, t) in ops {
            let now = Instant::from_nanos(t);
            newest = newest.max(now);
            match kind {
                0 | 1 => { if let Ok(p) = b.try_acquire(now) { held.push(p); } }
                2..=4 => match held.pop() {
                    Some(p) if kind == 2 => b.on_failure(now, p),
                    Some(p) if kind == 3 => b.on_success(now, p),
                    Some(p) => b.on_ignored(now, p),
                    None => b.handle_timeout(now),
                },
                5 => {
                    b.handle_timeout(now);
                    let next = b.poll_timeout();
                    prop_assert!(next.is_none_or(|n| n > newest));
                }
                6 => b.force_open(now),
                7 => b.disable(now),
                _ => b.reset(now),
            }
            let _ = b.stats();
            while b.poll_event().is_some() {}
        }
    }
}
