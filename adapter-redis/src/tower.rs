//! A tower layer for fleet-wide rate limits (feature `tower`), for axum, hyper and tonic.
//!
//! [`FleetRateLimitLayer`] checks a [`FleetLimiter`] with a key taken from each request before
//! calling the inner service; a rejection is the service's error, a boxed [`Denied`] (its
//! `retry_after` fills `Retry-After`). Every clone of the layer's service shares the limiter,
//! and the limiter's state is shared by every process on the same Redis.
//!
//! The layer's error carries only rejections; to put `X-RateLimit-*` headers on admitted
//! answers too, call [`FleetLimiter::check`] in a middleware and turn its decision into header
//! values with [`RateLimitHeaders::of`] (as the crate's `axum` example does).
//!
//! ```no_run
//! use keel_redis::tower::FleetRateLimitLayer;
//! # fn layer(limiter: keel_redis::FleetLimiter) {
//! // Per client, from a header (an axum/hyper `Request` works the same way).
//! let layer = FleetRateLimitLayer::new(limiter, |req: &String| req.clone());
//! # let _ = layer; }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use crate::{Denied, FleetLimiter};

/// A boxed error, as tower's middleware return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

type KeyFn<Req> = Arc<dyn Fn(&Req) -> String + Send + Sync>;

/// Applies a [`FleetLimiter`] to every request, keyed by a function of the request.
pub struct FleetRateLimitLayer<Req> {
    limiter: FleetLimiter,
    key: KeyFn<Req>,
}

impl<Req> Clone for FleetRateLimitLayer<Req> {
    fn clone(&self) -> Self {
        FleetRateLimitLayer {
            limiter: self.limiter.clone(),
            key: self.key.clone(),
        }
    }
}

impl<Req> core::fmt::Debug for FleetRateLimitLayer<Req> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FleetRateLimitLayer")
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl<Req> FleetRateLimitLayer<Req> {
    /// Limits requests by `key(&request)` (a user id, an API key, a client address).
    pub fn new(
        limiter: FleetLimiter,
        key: impl Fn(&Req) -> String + Send + Sync + 'static,
    ) -> Self {
        FleetRateLimitLayer {
            limiter,
            key: Arc::new(key),
        }
    }

    /// The limiter.
    #[must_use]
    pub fn limiter(&self) -> &FleetLimiter {
        &self.limiter
    }
}

impl<S, Req> Layer<S> for FleetRateLimitLayer<Req> {
    type Service = FleetRateLimit<S, Req>;

    fn layer(&self, inner: S) -> Self::Service {
        FleetRateLimit {
            inner,
            limiter: self.limiter.clone(),
            key: self.key.clone(),
        }
    }
}

/// The service of a [`FleetRateLimitLayer`].
pub struct FleetRateLimit<S, Req> {
    inner: S,
    limiter: FleetLimiter,
    key: KeyFn<Req>,
}

impl<S: Clone, Req> Clone for FleetRateLimit<S, Req> {
    fn clone(&self) -> Self {
        FleetRateLimit {
            inner: self.inner.clone(),
            limiter: self.limiter.clone(),
            key: self.key.clone(),
        }
    }
}

impl<S, Req> core::fmt::Debug for FleetRateLimit<S, Req> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FleetRateLimit")
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl<S, Req> Service<Req> for FleetRateLimit<S, Req>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // The service polled ready is the one that must be called: take it, leave a clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limiter = self.limiter.clone();
        let key = (self.key)(&req);
        Box::pin(async move {
            limiter
                .check(&key)
                .await
                .map_err(|d: Denied| -> BoxError { Box::new(d) })?;
            inner.call(req).await.map_err(Into::into)
        })
    }
}

/// Whole seconds, rounded up: HTTP's `Retry-After` has no fractions, and rounding down would
/// invite a retry that is still limited.
#[must_use]
pub fn ceil_secs(d: std::time::Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}

/// The values of the rate-limit headers for one single-request decision of a [`FleetLimiter`]
/// (`X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset`, `Retry-After`), in
/// whole seconds rounded up. A field is `None` when the decision does not know it (an
/// admission by [`FailurePolicy::FailOpen`](crate::FailurePolicy::FailOpen) knows neither the
/// remaining budget nor the reset; an admission by the
/// [`Local`](crate::FailurePolicy::Local) policy knows no fleet reset): leave that header out
/// rather than send a made-up number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitHeaders {
    /// `X-RateLimit-Limit`: the fleet quota's burst.
    pub limit: u32,
    /// `X-RateLimit-Remaining`: single requests still admitted now.
    pub remaining: Option<u32>,
    /// `X-RateLimit-Reset`: seconds until the whole burst is available again.
    pub reset_secs: Option<u64>,
    /// `Retry-After`: seconds to wait, for a rejection (at least 1; 1 when Redis could not
    /// decide and the policy rejected).
    pub retry_after_secs: Option<u64>,
}

impl RateLimitHeaders {
    /// The headers for `decision`, an answer of `limiter.check(key)` (one request), where
    /// `quota` is `limiter.config().quota()`.
    #[must_use]
    pub fn of(quota: keel_core::rate::Quota, decision: &crate::Decision) -> RateLimitHeaders {
        let limit = quota.burst().get();
        let (remaining, reset_secs, retry_after_secs) = match decision {
            Ok(a) => match a.by {
                crate::Source::Redis => (Some(a.remaining), Some(ceil_secs(a.reset_after)), None),
                crate::Source::Local => (Some(a.remaining), None, None),
                _ => (None, None, None),
            },
            Err(Denied::Limited { retry_after, by }) => {
                // Limited means TAT - now > τ and retry_after = TAT - τ - now, so the whole
                // burst is back after retry_after + τ (on the fleet quota; the local policy's
                // quota is another one).
                let reset = match by {
                    crate::Source::Local => None,
                    _ => Some(ceil_secs(retry_after.saturating_add(quota.tolerance()))),
                };
                (Some(0), reset, Some(ceil_secs(*retry_after).max(1)))
            }
            Err(Denied::InsufficientCapacity { .. }) => (Some(0), None, None),
            Err(_) => (None, None, Some(1)),
        };
        RateLimitHeaders {
            limit,
            remaining,
            reset_secs,
            retry_after_secs,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::time::Duration;

    use keel_core::rate::Quota;

    use super::{ceil_secs, RateLimitHeaders};
    use crate::{Admitted, Denied, FleetError, Source};

    fn quota() -> Quota {
        // T = 2 s, burst 3, τ = 4 s.
        let burst = NonZeroU32::new(3).unwrap_or(NonZeroU32::MIN);
        Quota::with_period(Duration::from_secs(2))
            .and_then(|q| q.with_burst(burst))
            .unwrap_or_else(|e| panic!("a valid quota: {e}"))
    }

    #[test]
    fn ceil_secs_rounds_up_and_saturates() {
        assert_eq!(ceil_secs(Duration::ZERO), 0);
        assert_eq!(ceil_secs(Duration::from_nanos(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
        assert_eq!(ceil_secs(Duration::from_millis(2001)), 3);
        assert_eq!(ceil_secs(Duration::MAX), u64::MAX);
    }

    #[test]
    fn headers_follow_who_decided() {
        let q = quota();
        let by_redis = Ok(Admitted {
            remaining: 1,
            reset_after: Duration::from_millis(3500),
            by: Source::Redis,
        });
        let h = RateLimitHeaders::of(q, &by_redis);
        assert_eq!(
            (h.limit, h.remaining, h.reset_secs, h.retry_after_secs),
            (3, Some(1), Some(4), None)
        );
        let open = Ok(Admitted {
            remaining: 0,
            reset_after: Duration::ZERO,
            by: Source::FailOpen,
        });
        let h = RateLimitHeaders::of(q, &open);
        assert_eq!(
            (h.remaining, h.reset_secs, h.retry_after_secs),
            (None, None, None)
        );
        let local = Ok(Admitted {
            remaining: 2,
            reset_after: Duration::ZERO,
            by: Source::Local,
        });
        let h = RateLimitHeaders::of(q, &local);
        assert_eq!((h.remaining, h.reset_secs), (Some(2), None));
    }

    #[test]
    fn a_limited_request_gets_a_retry_after_of_at_least_one_second_and_the_fleet_reset() {
        let q = quota();
        let limited = Err(Denied::Limited {
            retry_after: Duration::from_millis(1),
            by: Source::DenyCache,
        });
        let h = RateLimitHeaders::of(q, &limited);
        // Reset: retry_after + τ = 4.001 s, rounded up.
        assert_eq!(
            (h.remaining, h.reset_secs, h.retry_after_secs),
            (Some(0), Some(5), Some(1))
        );
        let zero = Err(Denied::Limited {
            retry_after: Duration::ZERO,
            by: Source::Redis,
        });
        assert_eq!(RateLimitHeaders::of(q, &zero).retry_after_secs, Some(1));
        let huge = Err(Denied::Limited {
            retry_after: Duration::MAX,
            by: Source::Redis,
        });
        let h = RateLimitHeaders::of(q, &huge);
        assert_eq!(
            (h.reset_secs, h.retry_after_secs),
            (Some(u64::MAX), Some(u64::MAX))
        );
        let local = Err(Denied::Limited {
            retry_after: Duration::from_secs(1),
            by: Source::Local,
        });
        assert_eq!(RateLimitHeaders::of(q, &local).reset_secs, None);
    }

    #[test]
    fn redis_unavailable_is_retry_after_one_second_with_no_budget_claimed() {
        let down = Err(Denied::Unavailable(FleetError::BreakerOpen));
        let h = RateLimitHeaders::of(quota(), &down);
        assert_eq!(
            (h.limit, h.remaining, h.reset_secs, h.retry_after_secs),
            (3, None, None, Some(1))
        );
    }
}
