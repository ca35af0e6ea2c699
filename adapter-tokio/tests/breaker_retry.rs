//! keel-tokio's `Breaker::new`, `Retry::new` and `retry` on tokio's paused clock: what only the
//! adapter's names do (a seed salted with OS randomness on the runtime `TokioRuntime::default()`).
//! The drivers' behaviour is tested once, in keel-core (`core/tests/driver_breaker_retry.rs`,
//! on keel-testkit's `ManualRuntime`).

// The tests that pause tokio's clock and check exact durations on keel's run only where keel
// follows that clock from the start (see each); a release build without `paused-time`
// compiles the rest, and their helpers go unused there.
#![cfg_attr(
    not(any(debug_assertions, feature = "paused-time")),
    allow(dead_code, unused_imports)
)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use keel_tokio::core::backoff::{BackoffConfig, GiveUpReason, Jitter};
use keel_tokio::core::breaker::BreakerConfig;
use keel_tokio::core::driver::breaker::BreakerError;
use keel_tokio::core::driver::retry::StopReason;
use keel_tokio::core::sync::breaker::SharedBreaker;
use keel_tokio::core::time::Instant;
use keel_tokio::{now, Breaker, TokioRuntime};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Error {
    Unavailable,
}

/// Breakers built from one jittered config and tripped at the same instant: `Breaker::new`
/// mixes OS randomness into the seed, so they reopen at different instants; built by hand from
/// the shared form, they use the config's seed as given and agree.
// Exact durations on keel's clock under tokio's paused clock: the contract of debug builds and
// of the feature `paused-time` (a release build reads the TSC until a keel timer sees the
// pause; keel-tokio's docs: "turn on `paused-time` for release-mode tests that pause").
#[cfg(any(debug_assertions, feature = "paused-time"))]
#[tokio::test(start_paused = true)]
async fn breakers_sharing_a_config_do_not_reopen_in_step() {
    let t0 = now();
    let minute = Duration::from_secs(60);
    let config = BreakerConfig::consecutive_failures(1)
        .exponential_open_duration(minute, 1, minute, Jitter::Full)
        .build()
        .unwrap();
    async fn reopens_at(b: Breaker) -> Instant {
        let failed = b.call(async { Err::<(), _>(Error::Unavailable) }).await;
        assert!(failed.is_err());
        match b.call(async { Ok::<_, Error>(7) }).await {
            Err(BreakerError::Rejected(r)) => r.retry_at.expect("an open breaker knows when"),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }
    let mut seeded = Vec::new();
    for _ in 0..4 {
        seeded.push(reopens_at(Breaker::new(config)).await);
    }
    assert!(seeded.iter().all(|&at| at > t0 && at <= t0 + minute));
    seeded.dedup();
    assert!(
        seeded.len() > 1,
        "four breakers reopened in step at {seeded:?}"
    );

    let by_hand = || Breaker::from_shared(SharedBreaker::new(config, t0), TokioRuntime);
    assert_eq!(reopens_at(by_hand()).await, reopens_at(by_hand()).await);
}

// Exact durations on keel's clock under tokio's paused clock: the contract of debug builds and
// of the feature `paused-time` (a release build reads the TSC until a keel timer sees the
// pause; keel-tokio's docs: "turn on `paused-time` for release-mode tests that pause").
#[cfg(any(debug_assertions, feature = "paused-time"))]
#[tokio::test(start_paused = true)]
async fn the_retry_free_function_sleeps_on_tokios_clock() {
    let t0 = now();
    let calls = AtomicU32::new(0);
    let config = BackoffConfig::constant(Duration::from_millis(40))
        .jitter(Jitter::None)
        .max_attempts(3)
        .build()
        .unwrap();
    let err = keel_tokio::retry(config, None, || {
        calls.fetch_add(1, Ordering::SeqCst);
        async { Err::<(), _>(Error::Unavailable) }
    })
    .await
    .unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(err.reason, StopReason::Exhausted(GiveUpReason::MaxAttempts));
    assert_eq!(now() - t0, Duration::from_millis(80));
}
