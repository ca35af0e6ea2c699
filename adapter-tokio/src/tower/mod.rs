//! `tower` layers (feature `tower`) for axum, hyper and tonic users: rate limit, bulkhead,
//! circuit breaker, retry with a budget, and a timeout that covers the time spent waiting for them.
//!
//! # How these differ from tower's own `RateLimit`, `ConcurrencyLimit` and `Timeout`
//!
//! - **One state for every clone.** tower's `RateLimit` keeps its budget per service instance,
//!   so a server that clones the service per connection (hyper, axum) gets one budget *per
//!   connection*. Here the layer owns the state ([`RateLimiter`](crate::RateLimiter), [`Bulkhead`](crate::Bulkhead)) and every
//!   service it makes, and every clone of those, shares it.
//! - **Reject instead of queue, by default.** A [`RateLimitLayer`] fails a limited call at once
//!   with [`KeelError::RateLimited`] (carrying `retry_at`, for a `429` with `Retry-After`)
//!   unless told to wait, and then only boundedly
//!   ([`wait_when_limited(max_wait, max_waiters)`](RateLimitLayer::wait_when_limited));
//!   a [`BulkheadLayer`] rejects when every slot is busy and its bounded queue is full, or when a
//!   call waited `max_wait`, with [`KeelError::BulkheadRejected`] and the reason. Nothing here
//!   piles up an unbounded number of waiting requests under a flood.
//! - **Waiting happens inside the call future, so a timeout covers it.** Every service here
//!   answers `poll_ready` with `Ready` at once; the future returned by `call` waits for the
//!   token or slot, then for the inner service's readiness, then runs the inner call. A
//!   [`TimeoutLayer`] placed *outside* them therefore bounds the whole thing: waiting for a
//!   rate-limit token, a bulkhead slot, the inner service's readiness and the response. (tower's
//!   `Timeout` applies only to the response future: time spent in `poll_ready` is not counted.)
//!   The same holds for tower's own `Timeout` placed outside these layers. The cost: the inner
//!   service is cloned per call (axum and hyper services are cheap `Arc` clones), and the
//!   call future is boxed.
//!
//! For HTTP services, feature `http` adds `keel_tokio::http`: a per-key (per-IP) limit that
//! answers `429` with `Retry-After` and the IETF `RateLimit` fields itself, keel errors as HTTP
//! answers, and a status-aware classifier for [`BreakerLayer`] and [`RetryLayer`].
//!
//! # Errors
//!
//! Services return `Result<_, BoxError>` (as tower's own layers do): inner errors pass through
//! unchanged and keel's own are a [`KeelError`] inside the box; find them with
//! `err.downcast_ref::<KeelError>()`. A [`RetryLayer`] that gives up returns a
//! [`RetryGaveUp`] whose `source()` is the last attempt's error (walk the chain to find a
//! `KeelError` under it).
//!
//! # Order
//!
//! `ServiceBuilder::new().layer(timeout).layer(rate_limit).layer(bulkhead)`: the timeout is
//! outermost so it covers both waits; the rate limit runs before the bulkhead so a rejected
//! call never takes a slot. For a client calling a dependency, the recommended stack is
//! overall timeout → retry → breaker → per-attempt timeout → bulkhead (see
//! [`crate::core::driver::breaker`], *The recommended client stack*):
//! `ServiceBuilder::new().layer(TimeoutLayer::new(total)).layer(RetryLayer::new(..)).layer(BreakerLayer::new(..)).layer(TimeoutLayer::new(per_attempt)).layer(BulkheadLayer::new(..))`.
//! A breaker abandoned by an outer timeout still counts the call past its `abandon_threshold`. A bulkhead slot is held until the inner response future resolves
//! (for a streaming HTTP body, that is when the response head is ready, not the end of the body).
//!
//! ```
//! use std::num::NonZeroU32;
//! use std::time::Duration;
//! use keel_tokio::core::bulkhead::BulkheadConfig;
//! use keel_tokio::core::rate::Quota;
//! use keel_tokio::tower::{BulkheadLayer, KeelError, RateLimitLayer, TimeoutLayer};
//! use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let quota = Quota::per_second(NonZeroU32::new(100).unwrap())?;
//! let mut svc = ServiceBuilder::new()
//!     .layer(TimeoutLayer::new(Duration::from_secs(1)))
//!     .layer(RateLimitLayer::new(quota))
//!     .layer(BulkheadLayer::new(BulkheadConfig::builder().max_concurrent(64).build()?))
//!     .service(service_fn(|x: u32| async move { Ok::<_, std::convert::Infallible>(x * 2) }));
//! assert_eq!(svc.ready().await?.call(21).await?, 42);
//! # let _ = KeelError::TimedOut { after: Duration::ZERO };
//! # Ok(()) }
//! ```

mod adaptive;
mod breaker;
mod bulkhead;
mod classify;
mod error;
mod rate;
mod retry;
mod timeout;

use std::future::Future;
use std::pin::Pin;

use ::tower::Service;

pub use adaptive::{AdaptiveLimitLayer, AdaptiveLimitService};
pub use breaker::{classify_error, BreakerLayer, BreakerService};
#[cfg(feature = "http")]
pub use bulkhead::FromExtension;
pub use bulkhead::{AllDefault, BulkheadLayer, BulkheadService, ClassifyCriticality};
pub use classify::{ClassifyErrors, ClassifyResult, NoResponseRetry, RetryResponse};
pub use error::KeelError;
pub use rate::{RateLimit, RateLimitLayer};
pub use retry::{FailFastOnRejection, RetryGaveUp, RetryLayer, RetryService, RetryableResponse};
pub use timeout::{Timeout, TimeoutLayer};

/// The error type of every service here (the same as tower's `BoxError`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The response future of every service here.
pub type ResponseFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

/// The services keel's layers wrap, stated once (a trait alias: every service with these bounds
/// implements it). Each layer's service is always ready and clones the inner service per call
/// (axum and hyper services are cheap `Arc` clones) into a boxed [`ResponseFuture`], where it
/// waits for its token, slot or admission, then for the inner service's readiness (one
/// function, shared), then runs the call.
pub trait InnerService<Req>:
    Service<Req, Future: Send, Error: Into<BoxError>> + Clone + Send + 'static
{
}

impl<S, Req> InnerService<Req> for S
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
{
}

/// Waits for `inner` to be ready, then calls it: readiness waiting inside the call future.
async fn ready_call<S, Req>(mut inner: S, req: Req) -> Result<S::Response, BoxError>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    std::future::poll_fn(|cx| inner.poll_ready(cx))
        .await
        .map_err(Into::into)?;
    inner.call(req).await.map_err(Into::into)
}
