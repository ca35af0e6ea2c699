//! Property tests for the adaptive limit: for any configuration the builder accepts and any
//! sequence of samples and timer calls (RTTs from zero to `Duration::MAX`, any `in_flight`,
//! time jumping forward, stalling or going backwards), the limit stays within
//! `[min_limit, max_limit]`, every `Resize` names the limit now in force and is reported as an
//! event, counters balance, and after `handle_timeout(t)` the timer is never due at or before
//! `t`.

use core::time::Duration;

use keel_core::adaptive::{
    Adaptive, AdaptiveConfig, AdaptiveDecision, AdaptiveEvent, AimdParams, Algorithm,
    GradientParams, SampleOutcome, VegasParams,
};
use keel_core::Instant;
use proptest::prelude::*;

#[path = "support/props.rs"]
mod props;

#[derive(Clone, Debug)]
enum Op {
    Sample {
        rtt: Duration,
        outcome: SampleOutcome,
        in_flight: u32,
    },
    Timeout,
}

fn rtt() -> impl Strategy<Value = Duration> {
    prop_oneof![
        4 => (1_000_000u64..50_000_000).prop_map(Duration::from_nanos),
        1 => Just(Duration::ZERO),
        1 => Just(Duration::MAX),
        1 => any::<u64>().prop_map(Duration::from_nanos),
    ]
}

fn outcome() -> impl Strategy<Value = SampleOutcome> {
    prop_oneof![
        6 => Just(SampleOutcome::Success),
        1 => Just(SampleOutcome::Dropped),
        1 => Just(SampleOutcome::TimedOut),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (rtt(), outcome(), prop_oneof![0u32..200, any::<u32>()])
            .prop_map(|(rtt, outcome, in_flight)| Op::Sample { rtt, outcome, in_flight }),
        1 => Just(Op::Timeout),
    ]
}

/// Nanoseconds to move the clock: mostly forward by a few ms, sometimes back, stalled, or to
/// either end of time.
fn time_step() -> impl Strategy<Value = i64> {
    prop_oneof![
        8 => 0i64..20_000_000,
        1 => Just(0i64),
        1 => -5_000_000_000i64..0,
        1 => Just(i64::MAX),
        1 => Just(i64::MIN),
    ]
}

fn algorithm() -> impl Strategy<Value = Algorithm> {
    prop_oneof![
        (any::<u8>(), any::<u8>(), any::<u8>()).prop_map(|(q, g, b)| Algorithm::Gradient(
            GradientParams {
                queue_target_percent: q,
                gain_percent: g,
                backoff_percent: b
            }
        )),
        (any::<u8>(), any::<u8>(), any::<u8>()).prop_map(|(alpha, beta, b)| Algorithm::Vegas(
            VegasParams {
                alpha,
                beta,
                backoff_percent: b
            }
        )),
        (0u32..5, any::<u8>(), 0u64..10_000_000_000).prop_map(|(increase, b, t)| Algorithm::Aimd(
            AimdParams {
                increase,
                backoff_percent: b,
                timeout: Duration::from_nanos(t)
            }
        )),
        Just(Algorithm::default()),
    ]
}

fn config() -> impl Strategy<Value = Option<AdaptiveConfig>> {
    (
        prop_oneof![0u32..5, any::<u32>()],
        prop_oneof![1u32..2000, any::<u32>()],
        prop_oneof![0u32..2000, any::<u32>()],
        prop_oneof![
            (1u64..500_000_000).prop_map(Duration::from_nanos),
            Just(Duration::ZERO),
            Just(Duration::MAX)
        ],
        prop_oneof![0u32..40, any::<u32>()],
        prop_oneof![
            Just(None),
            (0u64..5_000_000_000).prop_map(|n| Some(Duration::from_nanos(n))),
            Just(Some(Duration::MAX))
        ],
        algorithm(),
    )
        .prop_map(|(min, max, initial, window, samples, probe, algorithm)| {
            AdaptiveConfig::builder()
                .min_limit(min)
                .max_limit(max)
                .initial_limit(initial)
                .window(window)
                .min_samples(samples)
                .probe_interval(probe)
                .algorithm(algorithm)
                .build()
                .ok()
        })
}

proptest! {
    #![proptest_config(props::config(256, "proptest-regressions/adaptive_props.txt"))]

    #[test]
    fn limit_stays_in_bounds_on_any_input(
        config in config(),
        start in any::<u64>(),
        ops in proptest::collection::vec((op(), time_step()), 0..300),
    ) {
        let Some(config) = config else { return Ok(()) };
        let (min, max) = (config.min_limit(), config.max_limit());
        let mut a = Adaptive::new(config, Instant::from_nanos(start));
        prop_assert!((min..=max).contains(&a.limit()));
        let mut raw = start;
        let mut samples = 0u64;
        let mut resizes = 0u64;
        let mut changes = 0u64;
        for (op, step) in ops {
            raw = if step >= 0 {
                raw.saturating_add(step.unsigned_abs())
            } else {
                raw.saturating_sub(step.unsigned_abs())
            };
            let now = Instant::from_nanos(raw);
            let before = a.limit();
            let d = match op {
                Op::Sample { rtt, outcome, in_flight } => {
                    samples += 1;
                    a.on_sample(now, rtt, outcome, in_flight)
                }
                Op::Timeout => {
                    let d = a.handle_timeout(now);
                    if let Some(next) = a.poll_timeout() {
                        // Never due at or before the newest time seen (`now` may be older:
                        // it is clamped), unless the clock is at its end.
                        let newest = now.max(Instant::from_nanos(raw));
                        prop_assert!(next > newest || next == Instant::MAX, "{next:?} {newest:?}");
                    }
                    d
                }
            };
            let limit = a.limit();
            prop_assert!((min..=max).contains(&limit), "{limit} not in [{min}, {max}]");
            prop_assert_eq!(a.stats().limit, limit);
            match d {
                AdaptiveDecision::Resize { limit: l } => {
                    prop_assert_eq!(l, limit);
                    prop_assert_ne!(l, before);
                    resizes += 1;
                }
                AdaptiveDecision::Unchanged => prop_assert_eq!(limit, before),
            }
            while let Some(ev) = a.poll_event() {
                if let AdaptiveEvent::LimitChanged { from, to, .. } = ev {
                    prop_assert!((min..=max).contains(&from) && (min..=max).contains(&to));
                    changes += 1;
                }
            }
            if let Some(rtt) = a.min_rtt() {
                prop_assert!(rtt >= Duration::from_nanos(1));
            }
        }
        let s = a.stats();
        prop_assert_eq!(s.samples, samples);
        prop_assert!(s.dropped + s.timed_out <= samples);
        prop_assert!(s.windows <= samples);
        prop_assert!(s.stale_min_rtt <= s.probes);
        prop_assert_eq!(changes, resizes);
        prop_assert_eq!(s.events_dropped, 0);
    }
}
