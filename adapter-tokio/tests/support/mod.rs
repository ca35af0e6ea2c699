//! Helpers shared by the breaker/retry test binaries.

use std::time::Duration;

use keel_tokio::core::backoff::{BackoffConfig, Jitter};
use keel_tokio::core::breaker::BreakerConfig;
use keel_tokio::core::time::Instant;
use keel_tokio::{now, Breaker};

/// The instant a test starts at, on its own paused clock.
pub(crate) async fn settle() -> Instant {
    now()
}

/// A breaker that opens after `failures` consecutive failures, for `open`, and lets `probes`
/// probes through when half-open.
pub(crate) fn breaker(failures: u32, open: Duration, probes: u32) -> Breaker {
    let config = BreakerConfig::consecutive_failures(failures)
        .open_duration(open)
        .permitted_calls_in_half_open(probes)
        .build()
        .unwrap();
    Breaker::new(config)
}

/// `attempts` attempts `ms` apart, no jitter.
pub(crate) fn constant(ms: u64, attempts: u32) -> BackoffConfig {
    BackoffConfig::constant(Duration::from_millis(ms))
        .jitter(Jitter::None)
        .max_attempts(attempts)
        .build()
        .unwrap()
}
