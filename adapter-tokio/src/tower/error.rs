//! [`KeelError`]: why a keel layer refused or abandoned a call.

use std::time::Duration;

use keel_core::bulkhead::RejectReason;
use keel_core::sync::bulkhead::BulkheadRejected;
use keel_core::time::Instant;

/// Why a keel layer refused or abandoned a call. Arrives boxed in a [`BoxError`](super::BoxError); use
/// `err.downcast_ref::<KeelError>()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeelError {
    /// The rate limit is spent; the call would conform at `retry_at`.
    #[error("rate limited: a call would conform {}, or raise the quota", In(Some(*.retry_at)))]
    RateLimited {
        /// The earliest instant (on [`crate::now`]'s clock) at which a call would be admitted.
        retry_at: Instant,
    },
    /// The bulkhead shed the call: full, queue full, or waited too long.
    #[error("{0}")]
    BulkheadRejected(BulkheadRejected),
    /// The circuit breaker is open (or its half-open probes are all taken).
    #[error("{}", BreakerOpenMessage(*.retry_at))]
    BreakerOpen {
        /// When the breaker lets a probe through again, if known.
        retry_at: Option<Instant>,
    },
    /// The call, including time spent waiting for a token or a slot, ran past its timeout.
    #[error("timed out after {after:?} (time spent waiting for a rate-limit token or bulkhead slot counts): raise the timeout or the limits")]
    TimedOut {
        /// The timeout that elapsed.
        after: Duration,
    },
}

impl KeelError {
    /// When to try again, if the error says: `retry_at` for a rate limit or an open breaker.
    #[must_use]
    pub fn retry_at(&self) -> Option<Instant> {
        match self {
            KeelError::RateLimited { retry_at } => Some(*retry_at),
            KeelError::BreakerOpen { retry_at } => *retry_at,
            KeelError::BulkheadRejected(_) | KeelError::TimedOut { .. } => None,
        }
    }

    /// How long from now until [`retry_at`](Self::retry_at) (zero if it has passed): the value
    /// for an HTTP `Retry-After` header (round it up to whole seconds).
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_at()
            .map(|at| at.saturating_duration_since(crate::now()))
    }

    /// The bulkhead's reason, for [`KeelError::BulkheadRejected`].
    #[must_use]
    pub fn reject_reason(&self) -> Option<RejectReason> {
        match self {
            KeelError::BulkheadRejected(r) => Some(r.reason),
            _ => None,
        }
    }
}

/// "in 1.5s" from [`crate::now`] ("now" once passed); nothing when unknown.
struct In(Option<Instant>);

impl std::fmt::Display for In {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.map(|at| at.saturating_duration_since(crate::now())) {
            Some(d) if d.is_zero() => f.write_str("now"),
            Some(d) => write!(f, "in {d:?}"),
            None => Ok(()),
        }
    }
}

struct BreakerOpenMessage(Option<Instant>);

impl std::fmt::Display for BreakerOpenMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(at) => write!(
                f,
                "circuit breaker open because the dependency keeps failing: a probe call is let through {}",
                In(Some(at))
            ),
            None => f.write_str(
                "circuit breaker open with no known reopening time: forced open by hand, \
                 or every half-open probe is in flight (retry when the probes finish)",
            ),
        }
    }
}

impl From<BulkheadRejected> for KeelError {
    fn from(e: BulkheadRejected) -> Self {
        KeelError::BulkheadRejected(e)
    }
}
