//! Property tests: the breaker against its reference model (`keel_testkit::models::breaker`,
//! shared with the fuzz target), plus invariants under arbitrary inputs.

use core::time::Duration;

use keel_core::backoff::Jitter;
use keel_core::breaker::{BreakerConfig, BreakerPermit, CircuitBreaker, State};
use keel_core::Instant;
use proptest::prelude::*;

#[path = "support/props.rs"]
mod props;

// The model is `keel_testkit::models::breaker`. keel-testkit is left out of the `no_std` test
// runs (`--cfg keel_no_testkit`, see core/Cargo.toml), so there the same source file is compiled
// into this test instead (it uses only keel-core's public API and std, which this test crate
// links; keel-core is built without it). One model, two ways in.
#[cfg(keel_no_testkit)]
#[path = "../../testkit/src/models/breaker.rs"]
#[allow(dead_code, unreachable_pub)] // a library module here: items this test does not use
mod breaker_model;

/// The machine against the model.
mod model {
    use super::*;
    #[cfg(keel_no_testkit)]
    use crate::breaker_model::{BreakerModel, ModelPermit, ModelState};
    use keel_core::breaker::Outcome;
    #[cfg(not(keel_no_testkit))]
    use keel_testkit::models::breaker::{BreakerModel, ModelPermit, ModelState};

    /// The configurations the model covers: consecutive failures plus a count window, a fixed
    /// open duration, an optional maximum wait in half-open.
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
        max_wait_ms: Option<u64>,
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
            if let Some(ms) = self.max_wait_ms {
                b = b.max_wait_in_half_open(Duration::from_millis(ms));
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
            b.build().expect("the strategy only makes valid configs")
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
                    proptest::option::of(1u64..5_000),
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
                    max_wait_ms,
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
                        max_wait_ms,
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
            let config = cfg.build();
            let mut real = CircuitBreaker::new(config, Instant::ZERO);
            let mut model = BreakerModel::new(&config, Instant::ZERO).expect("a count window, a fixed open duration");
            let mut held: Vec<(BreakerPermit, ModelPermit)> = Vec::new();
            let mut raw: i64 = 0;
            let mut stale_seen = 0u64;
            for (dt, op) in ops {
                raw = (raw + dt).max(0);
                let now = Instant::from_millis(raw as u64);
                match op {
                    Op::Acquire => {
                        let r = real.try_acquire(now);
                        let m = model.try_acquire(now);
                        match (r, m) {
                            (Ok(p), Ok(mp)) => {
                                prop_assert_eq!(p.generation(), mp.generation);
                                prop_assert_eq!(p.admitted_at(), mp.admitted_at);
                                held.push((p, mp));
                            }
                            (Err(rej), Err(retry)) => {
                                prop_assert_eq!(rej.retry_at, retry);
                                prop_assert_eq!(rej.reason, model.state().state());
                            }
                            (r, m) => prop_assert!(false, "real {:?} vs model {:?}", r, m),
                        }
                    }
                    Op::Report(i, outcome) if !held.is_empty() => {
                        let (p, mp) = held.swap_remove(i % held.len());
                        real.handle_timeout(now);
                        model.handle_timeout(now);
                        let before = real.stats();
                        real.on_outcome(now, p, outcome);
                        model.on_outcome(now, mp, outcome);
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
                        model.handle_timeout(now);
                        let before = real.stats();
                        // The rule: a failure once the call ran the abandon threshold, else ignored.
                        let ran = model.newest().saturating_duration_since(mp.admitted_at);
                        let want = if ran >= Duration::from_millis(cfg.abandon_ms) {
                            Outcome::Failure
                        } else {
                            Outcome::Ignored
                        };
                        prop_assert_eq!(real.on_abandoned(now, p), want);
                        prop_assert_eq!(model.on_abandoned(now, mp), want);
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
                        model.handle_timeout(now);
                        let t = real.poll_timeout();
                        prop_assert!(t.is_none_or(|t| t > now), "poll_timeout {:?} after {:?}", t, now);
                    }
                    Op::ForceOpen => {
                        real.force_open(now);
                        model.force_open(now);
                    }
                    Op::Disable => {
                        real.disable(now);
                        model.disable(now);
                    }
                    Op::Reset => {
                        real.reset(now);
                        model.reset(now);
                    }
                }
                let s = real.stats();
                if let Err(e) = model.check(&s, real.poll_timeout()) {
                    prop_assert!(false, "the breaker disagrees with the model: {}", e);
                }
                prop_assert_eq!(s.stale_outcomes, stale_seen);
                prop_assert!(s.probes_in_use <= cfg.probes);
                if let ModelState::HalfOpen { used, .. } = model.state() {
                    prop_assert_eq!(s.probes_in_use, used);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(props::config(256, "proptest-regressions/breaker_props.txt"))]

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
