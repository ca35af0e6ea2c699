//! Property tests for `keel_core::backoff`: delays within bounds for any config and seed, an
//! reference model of the un-jittered schedules (`keel_testkit::models::backoff`, shared with the
//! fuzz target), and no panic on any input.

// The model is `keel_testkit::models::backoff`. keel-testkit is left out of the `no_std` test runs
// (`--cfg keel_no_testkit`, see core/Cargo.toml), so there the same source file is compiled
// into this test instead (it uses only keel-core's public API and std, which this test crate
// links; keel-core is built without it). One model, two ways in.

use core::time::Duration;

use keel_core::backoff::{Backoff, BackoffConfig, GiveUpReason, Jitter, RetryDecision};
use keel_core::time::Instant;
#[cfg(not(keel_no_testkit))]
use keel_testkit::models::backoff::BackoffModel;
use proptest::prelude::*;

#[path = "support/props.rs"]
mod props;

#[cfg(keel_no_testkit)]
#[path = "../../testkit/src/models/backoff.rs"]
#[allow(dead_code, unreachable_pub)] // a library module here: items this test does not use
mod backoff_model;
#[cfg(keel_no_testkit)]
use backoff_model::BackoffModel;

fn nanos(d: Duration) -> u128 {
    d.as_nanos().min(u128::from(u64::MAX))
}

/// Durations from zero to `Duration::MAX`, weighted towards realistic values and the edges.
fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        3 => (0u64..=10_000_000_000).prop_map(Duration::from_nanos),
        1 => any::<u64>().prop_map(Duration::from_nanos),
        1 => Just(Duration::ZERO),
        1 => Just(Duration::MAX),
        1 => (0u64..5).prop_map(Duration::from_nanos),
    ]
}

fn jitter() -> impl Strategy<Value = Jitter> {
    prop_oneof![
        Just(Jitter::None),
        Just(Jitter::Full),
        Just(Jitter::Equal),
        Just(Jitter::Decorrelated),
    ]
}

/// Any builder input, valid or not.
fn config() -> impl Strategy<Value = Result<BackoffConfig, keel_core::ConfigError>> {
    (
        0u8..3,
        duration(),
        duration(),
        duration(),
        prop_oneof![Just(100u32), Just(200), 90u32..1_000, any::<u32>()],
        jitter(),
        proptest::option::of(1u32..50),
        proptest::option::of(duration()),
        proptest::option::of(duration()),
        proptest::option::of(duration()),
        any::<u64>(),
    )
        .prop_map(
            |(
                kind,
                a,
                b,
                cap,
                factor,
                jitter,
                attempts,
                elapsed,
                retry_after,
                min_retry_after,
                seed,
            )| {
                let (lo, hi) = if a <= cap { (a, cap) } else { (cap, a) };
                let mut builder = match kind {
                    0 => BackoffConfig::constant(lo),
                    1 => BackoffConfig::linear(lo, b).cap(hi),
                    _ => BackoffConfig::exponential(lo, hi).factor_percent(factor),
                }
                .jitter(jitter)
                .seed(seed);
                builder = match attempts {
                    Some(n) => builder.max_attempts(n),
                    None => builder.unlimited_attempts(),
                };
                if let Some(d) = elapsed {
                    builder = builder.max_elapsed(d);
                }
                if let Some(d) = retry_after {
                    builder = builder.max_retry_after(d);
                }
                if let Some(d) = min_retry_after {
                    builder = builder.min_retry_after(d);
                }
                builder.build()
            },
        )
}

fn valid_config() -> impl Strategy<Value = BackoffConfig> {
    config().prop_filter_map("invalid config", Result::ok)
}

proptest! {
    #![proptest_config(props::config(512, "proptest-regressions/backoff_props.txt"))]

    #[test]
    fn jittered_delays_always_within_bounds(config in valid_config()) {
        let mut backoff = Backoff::new(config, Instant::ZERO);
        let mut model = BackoffModel::new(&config);
        for (i, d) in backoff.delays().take(64).enumerate() {
            let full = model.step();
            let delay = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
            if let Err(broken) = model.check_draw(full, delay, false) {
                prop_assert!(false, "retry {}: {}", i, broken);
            }
        }
    }

    #[test]
    fn unjittered_exponential_never_decreases_until_the_cap(
        base in 1u64..1_000_000_000,
        extra in 0u64..100_000_000_000,
        factor in 100u32..2_000,
    ) {
        let cap = base + extra;
        let config = BackoffConfig::exponential(Duration::from_nanos(base), Duration::from_nanos(cap))
            .factor_percent(factor)
            .jitter(Jitter::None)
            .unlimited_attempts()
            .build()
            .unwrap();
        let mut backoff = Backoff::new(config, Instant::ZERO);
        let delays: Vec<u128> = backoff.delays().take(400).map(|d| d.as_nanos()).collect();
        prop_assert_eq!(delays[0], u128::from(base));
        for pair in delays.windows(2) {
            prop_assert!(pair[0] <= pair[1], "{:?}", pair);
            if factor > 100 && pair[0] < u128::from(cap) {
                prop_assert!(pair[0] < pair[1], "stuck below the cap: {:?}", pair);
            }
        }
        if factor >= 110 {
            // Growing by at least 10 % a step reaches any cap here within 400 steps.
            prop_assert_eq!(*delays.last().unwrap(), u128::from(cap));
        }
    }

    #[test]
    fn same_seed_same_delays_for_any_config(config in valid_config()) {
        let mut a = Backoff::new(config, Instant::ZERO);
        let mut b = Backoff::new(config, Instant::ZERO);
        let da: Vec<Duration> = a.delays().take(32).collect();
        let db: Vec<Duration> = b.delays().take(32).collect();
        prop_assert_eq!(da, db);
    }

    #[test]
    fn any_input_sequence_keeps_every_promise(
        config in valid_config(),
        start in prop_oneof![any::<u64>(), Just(u64::MAX), Just(0u64)],
        ops in proptest::collection::vec((0u8..4, any::<i64>(), duration()), 0..64),
    ) {
        let mut backoff = Backoff::new(config, Instant::from_nanos(start));
        let mut newest = start;
        let mut op_start = start;
        let mut retries_this_op = 0u32;
        let longest = nanos(config.cap()).max(nanos(config.max_retry_after()));
        for (op, dt, hint) in ops {
            let now = if dt >= 0 {
                start.saturating_add(dt.unsigned_abs() % 100_000_000_000)
            } else {
                start.saturating_sub(dt.unsigned_abs())
            };
            let clamped = newest.max(now);
            newest = clamped;
            let decision = match op {
                0 => {
                    backoff.reset(Instant::from_nanos(now));
                    op_start = clamped;
                    retries_this_op = 0;
                    prop_assert_eq!(backoff.attempts(), 1);
                    continue;
                }
                1 => backoff.next_delay_with_hint(Instant::from_nanos(now), hint),
                _ => backoff.next_delay(Instant::from_nanos(now)),
            };
            match decision {
                RetryDecision::RetryAt(at) => {
                    retries_this_op += 1;
                    prop_assert!(at.as_nanos() >= clamped, "retry in the past");
                    let wait = u128::from(at.as_nanos() - clamped);
                    prop_assert!(wait <= longest, "waits {wait} > {longest}");
                    if op == 1 {
                        // A hint is a floor under the schedule, clamped to its own bounds.
                        let (lo, hi) = (nanos(config.min_retry_after()), nanos(config.max_retry_after()));
                        let floor = nanos(hint).clamp(lo, hi);
                        prop_assert!(wait <= floor.max(nanos(config.cap())));
                        let saturated = at == Instant::MAX;
                        prop_assert!(saturated || wait >= floor, "waits {wait} < hint floor {floor}");
                    }
                    if let Some(max) = config.max_elapsed() {
                        let deadline = u128::from(op_start) + nanos(max);
                        prop_assert!(u128::from(at.as_nanos()) <= deadline);
                    }
                    if let Some(max) = config.max_attempts() {
                        prop_assert!(retries_this_op < max);
                    }
                    prop_assert_eq!(backoff.attempts(), retries_this_op + 1);
                    prop_assert_eq!(backoff.gave_up(), None);
                }
                RetryDecision::GiveUp(reason) => {
                    prop_assert_eq!(backoff.gave_up(), Some(reason));
                    if reason == GiveUpReason::MaxAttempts {
                        prop_assert_eq!(Some(backoff.attempts()), config.max_attempts());
                    }
                }
            }
        }
    }
}
