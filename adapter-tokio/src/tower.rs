//! `tower` layers (feature `tower`) for axum, hyper and tonic users: rate limit, bulkhead,
//! circuit breaker, retry with a budget, and a timeout that covers the time spent waiting for them.
//!
//! # How these differ from tower's own `RateLimit`, `ConcurrencyLimit` and `Timeout`
//!
//! - **One state for every clone.** tower's `RateLimit` keeps its budget per service instance,
//!   so a server that clones the service per connection (hyper, axum) gets one budget *per
//!   connection*. Here the layer owns the state ([`RateLimiter`], [`Bulkhead`]) and every
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

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use ::tower::{Layer, Service};
use keel_core::backoff::BackoffConfig;
use keel_core::breaker::{BreakerConfig, Outcome};
use keel_core::bulkhead::{BulkheadConfig, RejectReason};
use keel_core::driver::breaker::BreakerError;
use keel_core::driver::retry::{NoNotify, RetryAction, RetryNotify, RetryPredicate, StopReason};
use keel_core::rate::Quota;
use keel_core::sync::breaker::SharedBreaker;
use keel_core::sync::budget::SharedBudget;
use keel_core::sync::bulkhead::BulkheadRejected;
use keel_core::time::Instant;

use crate::{Bulkhead, RateLimiter};

/// The error type of every service here (the same as tower's `BoxError`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The response future of every service here.
pub type ResponseFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

/// Why a keel layer refused or abandoned a call. Arrives boxed in a [`BoxError`]; use
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

/// Applies a rate limit shared by every service it makes and all their clones.
///
/// **By default a limited call is rejected at once** with [`KeelError::RateLimited`]
/// (carrying `retry_at`, for a `429` with `Retry-After`): under a flood, waiting requests would
/// otherwise pile up without bound (memory, sockets, file descriptors) unless an outer timeout
/// happened to be set. [`wait_when_limited(max_wait, max_waiters)`](Self::wait_when_limited)
/// lets a limited call wait for a token instead, boundedly: at most `max_waiters` calls wait at
/// once (across every service and clone of the layer) and each for at most `max_wait`; a call
/// beyond either bound, or whose token is further away than `max_wait`, is rejected at once as
/// in the default mode.
#[derive(Clone, Debug)]
pub struct RateLimitLayer {
    limiter: RateLimiter,
    wait: Option<WaitLimits>,
}

/// The bounds of [`RateLimitLayer::wait_when_limited`], and the waiters counted against them
/// (shared by every service and clone of the layer).
#[derive(Clone, Debug)]
struct WaitLimits {
    max_wait: Duration,
    max_waiters: usize,
    waiting: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// One waiter counted against `max_waiters`, released on drop (resolved or cancelled).
struct WaiterSlot(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl WaiterSlot {
    fn try_take(limits: &WaitLimits) -> Option<WaiterSlot> {
        use std::sync::atomic::Ordering;
        limits
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limits.max_waiters).then_some(n + 1)
            })
            .ok()
            .map(|_| WaiterSlot(std::sync::Arc::clone(&limits.waiting)))
    }
}

impl Drop for WaiterSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl RateLimitLayer {
    /// A layer with a fresh limiter; a limited call is rejected at once (see the type's docs).
    #[must_use]
    pub fn new(quota: Quota) -> Self {
        Self::from_limiter(RateLimiter::new(quota))
    }

    /// A layer on an existing limiter (shared with whatever else checks it); a limited call
    /// is rejected at once.
    #[must_use]
    pub fn from_limiter(limiter: RateLimiter) -> Self {
        RateLimitLayer {
            limiter,
            wait: None,
        }
    }

    /// Fail a limited call at once with [`KeelError::RateLimited`] (the default; this undoes
    /// [`wait_when_limited`](Self::wait_when_limited)).
    #[must_use]
    pub fn reject_when_limited(mut self) -> Self {
        self.wait = None;
        self
    }

    /// Let a limited call wait for a token, for at most `max_wait`, with at most `max_waiters`
    /// calls waiting at once across every service and clone of this layer. A call that
    /// finds `max_waiters` already waiting, whose token is further away than `max_wait`, or
    /// that waited `max_wait` in vain is rejected with [`KeelError::RateLimited`]. A zero
    /// `max_wait` or `max_waiters` rejects every limited call (the default mode). A cancelled
    /// wait spends no token and frees its place at once.
    #[must_use]
    pub fn wait_when_limited(mut self, max_wait: Duration, max_waiters: usize) -> Self {
        self.wait = Some(WaitLimits {
            max_wait,
            max_waiters,
            waiting: std::sync::Arc::default(),
        });
        self
    }

    /// Calls waiting for a token right now (always 0 in the default, rejecting mode).
    #[must_use]
    pub fn waiting(&self) -> usize {
        self.wait
            .as_ref()
            .map_or(0, |w| w.waiting.load(std::sync::atomic::Ordering::Acquire))
    }

    /// The shared limiter.
    #[must_use]
    pub fn limiter(&self) -> &RateLimiter {
        &self.limiter
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            limiter: self.limiter.clone(),
            wait: self.wait.clone(),
        }
    }
}

/// The service of [`RateLimitLayer`].
#[derive(Clone, Debug)]
pub struct RateLimit<S> {
    inner: S,
    limiter: RateLimiter,
    wait: Option<WaitLimits>,
}

impl<S> RateLimit<S> {
    /// The shared limiter.
    #[must_use]
    pub fn limiter(&self) -> &RateLimiter {
        &self.limiter
    }
}

impl<S, Req> Service<Req> for RateLimit<S>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Response>;

    /// Always ready: the token is taken (or waited for) inside the call future.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let inner = self.inner.clone();
        let limiter = self.limiter.clone();
        let wait = self.wait.clone();
        Box::pin(async move {
            if let Err(limited) = limiter.check() {
                let rejected = |retry_at| KeelError::RateLimited { retry_at };
                let Some(wait) = wait else {
                    return Err(rejected(limited.retry_at).into());
                };
                let rt = *limiter.runtime();
                let now = keel_core::driver::Runtime::now(&rt);
                if limited.retry_at.saturating_duration_since(now) > wait.max_wait {
                    return Err(rejected(limited.retry_at).into());
                }
                let Some(_slot) = WaiterSlot::try_take(&wait) else {
                    return Err(rejected(limited.retry_at).into());
                };
                let deadline = now + wait.max_wait;
                match keel_core::driver::timeout_at(&rt, deadline, limiter.until_ready()).await {
                    // A single call never exceeds a burst (bursts are at least 1).
                    Ok(admitted) => admitted?,
                    // Waited `max_wait` in vain (other waiters took the tokens): one last check.
                    Err(_) => limiter.check().map_err(|e| rejected(e.retry_at))?,
                }
            }
            ready_call(inner, req).await
        })
    }
}

/// Bounds the calls in flight across every service it makes and all their clones; rejects
/// when full (no queue) or queues in a bounded FIFO for at most `max_wait`.
#[derive(Clone, Debug)]
pub struct BulkheadLayer {
    bulkhead: Bulkhead,
}

impl BulkheadLayer {
    /// A layer with a fresh bulkhead. `max_queue(0)` (the default) rejects as soon as every
    /// slot is busy; a queue makes calls wait up to `max_wait`.
    #[must_use]
    pub fn new(config: BulkheadConfig) -> Self {
        Self::from_bulkhead(Bulkhead::new(config))
    }

    /// A layer on an existing bulkhead (shared with whatever else uses it).
    #[must_use]
    pub fn from_bulkhead(bulkhead: Bulkhead) -> Self {
        BulkheadLayer { bulkhead }
    }

    /// The shared bulkhead.
    #[must_use]
    pub fn bulkhead(&self) -> &Bulkhead {
        &self.bulkhead
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = BulkheadService<S>;

    fn layer(&self, inner: S) -> BulkheadService<S> {
        BulkheadService {
            inner,
            bulkhead: self.bulkhead.clone(),
        }
    }
}

/// The service of [`BulkheadLayer`].
#[derive(Clone, Debug)]
pub struct BulkheadService<S> {
    inner: S,
    bulkhead: Bulkhead,
}

impl<S> BulkheadService<S> {
    /// The shared bulkhead.
    #[must_use]
    pub fn bulkhead(&self) -> &Bulkhead {
        &self.bulkhead
    }
}

impl<S, Req> Service<Req> for BulkheadService<S>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Response>;

    /// Always ready: the slot is taken (or waited for) inside the call future.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let inner = self.inner.clone();
        let bulkhead = self.bulkhead.clone();
        Box::pin(async move {
            let guard = bulkhead.acquire().await.map_err(KeelError::from)?;
            let out = ready_call(inner, req).await;
            guard.release(crate::now());
            out
        })
    }
}

/// Fails a call with [`KeelError::TimedOut`] once `after` has passed since `call`, counting
/// the time inner keel layers spend waiting for a token or a slot (see the module docs).
#[derive(Clone, Copy, Debug)]
pub struct TimeoutLayer {
    after: Duration,
}

impl TimeoutLayer {
    /// A timeout of `after` per call.
    #[must_use]
    pub const fn new(after: Duration) -> Self {
        TimeoutLayer { after }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout {
            inner,
            after: self.after,
        }
    }
}

/// The service of [`TimeoutLayer`].
#[derive(Clone, Debug)]
pub struct Timeout<S> {
    inner: S,
    after: Duration,
}

impl<S, Req> Service<Req> for Timeout<S>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Response>;

    /// Always ready: the inner service's readiness is awaited inside the (timed) call future.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let inner = self.inner.clone();
        let after = self.after;
        let rt = crate::TokioRuntime;
        let deadline = keel_core::driver::Runtime::now(&rt).saturating_add(after);
        Box::pin(async move {
            match keel_core::driver::timeout_at(&rt, deadline, ready_call(inner, req)).await {
                Ok(out) => out,
                Err(_elapsed) => Err(KeelError::TimedOut { after }.into()),
            }
        })
    }
}

/// Fails calls fast with [`KeelError::BreakerOpen`] while a circuit breaker shared by every
/// service it makes (and their clones) is open. An inner `Ok` is a success; an inner `Err` is
/// classified by [`classify_error`] unless [`BreakerLayer::classify`] replaces it: a failure,
/// except keel's own *local* rejections from layers inside this one ([`KeelError::RateLimited`],
/// [`KeelError::BulkheadRejected`], [`KeelError::BreakerOpen`]), which are ignored, so local
/// throttling never opens the breaker. A dropped call future is reported by the breaker's drop
/// guard (see [`crate::core::driver::breaker`]). Calls go through
/// [`Breaker::call_with`](crate::Breaker), so transitions are logged under `keel::breaker`.
#[derive(Clone, Debug)]
pub struct BreakerLayer {
    breaker: crate::Breaker,
    classify: fn(&BoxError) -> Outcome,
}

/// The default error classifier of [`BreakerLayer`]: [`Outcome::Ignored`] for keel's local
/// rejections ([`KeelError::RateLimited`], [`KeelError::BulkheadRejected`],
/// [`KeelError::BreakerOpen`] from an inner layer: they say nothing about the dependency),
/// [`Outcome::Failure`] for everything else.
///
/// [`KeelError::TimedOut`] **is** a failure: a call that ran past its timeout is the
/// dependency-health signal a breaker exists for. Place a [`TimeoutLayer`] inside the breaker
/// only if rate limits and bulkheads are *outside* it (or not waiting), or time spent waiting
/// for a local token or slot counts against the dependency.
#[must_use]
pub fn classify_error(error: &BoxError) -> Outcome {
    match error.downcast_ref::<KeelError>() {
        Some(
            KeelError::RateLimited { .. }
            | KeelError::BulkheadRejected(_)
            | KeelError::BreakerOpen { .. },
        ) => Outcome::Ignored,
        _ => Outcome::Failure,
    }
}

impl BreakerLayer {
    /// A layer with a fresh, closed breaker.
    #[must_use]
    pub fn new(config: BreakerConfig) -> Self {
        Self::from_breaker(crate::Breaker::new(config))
    }

    /// A layer on an existing shared breaker (shared with whatever else reports to it).
    #[must_use]
    pub fn from_shared(breaker: SharedBreaker) -> Self {
        Self::from_breaker(crate::Breaker::from_shared(breaker, crate::TokioRuntime))
    }

    /// A layer on an existing breaker handle (its clones share its state and its hook).
    #[must_use]
    pub fn from_breaker(breaker: crate::Breaker) -> Self {
        BreakerLayer {
            breaker,
            classify: classify_error,
        }
    }

    /// Replaces [`classify_error`]: decides what an inner `Err` says about the dependency
    /// (e.g. [`Outcome::Ignored`] for a client error). An inner `Ok` is always a success.
    #[must_use]
    pub fn classify(mut self, classify: fn(&BoxError) -> Outcome) -> Self {
        self.classify = classify;
        self
    }

    /// The shared breaker.
    #[must_use]
    pub fn breaker(&self) -> &SharedBreaker {
        self.breaker.shared()
    }
}

impl<S> Layer<S> for BreakerLayer {
    type Service = BreakerService<S>;

    fn layer(&self, inner: S) -> BreakerService<S> {
        BreakerService {
            inner,
            breaker: self.breaker.clone(),
            classify: self.classify,
        }
    }
}

/// The service of [`BreakerLayer`].
#[derive(Clone, Debug)]
pub struct BreakerService<S> {
    inner: S,
    breaker: crate::Breaker,
    classify: fn(&BoxError) -> Outcome,
}

impl<S, Req> Service<Req> for BreakerService<S>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Response>;

    /// Always ready: admission is decided inside the call future.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let inner = self.inner.clone();
        let breaker = self.breaker.clone();
        let classify = self.classify;
        Box::pin(async move {
            let outcome = |r: &Result<S::Response, BoxError>| match r {
                Ok(_) => Outcome::Success,
                Err(e) => classify(e),
            };
            match breaker.call_with(ready_call(inner, req), outcome).await {
                Ok(response) => Ok(response),
                Err(BreakerError::Rejected(r)) => Err(KeelError::BreakerOpen {
                    retry_at: r.retry_at,
                }
                .into()),
                Err(BreakerError::Inner(e)) => Err(e),
                Err(e) => Err(e.to_string().into()),
            }
        })
    }
}

/// Retries failed calls with backoff (and an optional shared retry budget) using a keel
/// [`Retry`](crate::Retry); the request must be `Clone`. Each attempt waits for the inner
/// service's readiness inside the call future, so an outer [`TimeoutLayer`] bounds all attempts
/// and the backoff sleeps between them. When it gives up, the error is a boxed
/// [`RetryGaveUp`] (the stop reason, the attempt count, and the last attempt's error as its
/// `source()`). The default predicate is [`FailFastOnRejection`]: keel's own rejections from
/// inner layers are not retried.
#[derive(Clone, Debug)]
pub struct RetryLayer<P = FailFastOnRejection, N = NoNotify> {
    retry: crate::Retry<P, N>,
}

/// The default predicate of [`RetryLayer`]: [`RetryAction::Stop`] for keel's rejections
/// ([`KeelError::BreakerOpen`], [`KeelError::RateLimited`], [`KeelError::BulkheadRejected`]:
/// retrying them only adds load where keel decided to shed it, so they fail fast),
/// [`RetryAction::Retry`] for every other error ([`KeelError::TimedOut`] of an inner per-attempt
/// timeout included). Classify your own errors with
/// [`Retry::retry_if`](keel_core::driver::retry::Retry::retry_if) (and call this one for the
/// errors you do not know).
#[derive(Clone, Copy, Debug, Default)]
pub struct FailFastOnRejection;

impl RetryPredicate<BoxError> for FailFastOnRejection {
    fn classify(&self, error: &BoxError) -> RetryAction {
        match error.downcast_ref::<KeelError>() {
            Some(
                KeelError::BreakerOpen { .. }
                | KeelError::RateLimited { .. }
                | KeelError::BulkheadRejected(_),
            ) => RetryAction::Stop,
            _ => RetryAction::Retry,
        }
    }
}

/// The error of a [`RetryService`] that gave up: why, after how many attempts, and the last
/// attempt's error, which is also its [`source`](std::error::Error::source) (so a walk of the
/// chain finds a [`KeelError`] from an inner layer).
#[derive(Debug, thiserror::Error)]
// The last error is the `source`, not part of the message (see keel_core's `RetryError`).
#[error("gave up after {attempts} attempt(s) because {reason}")]
pub struct RetryGaveUp {
    #[source]
    error: BoxError,
    reason: StopReason,
    attempts: u32,
}

impl RetryGaveUp {
    /// The last attempt's error.
    #[must_use]
    pub fn error(&self) -> &BoxError {
        &self.error
    }

    /// The last attempt's error, by value.
    #[must_use]
    pub fn into_error(self) -> BoxError {
        self.error
    }

    /// Why the retry stopped.
    #[must_use]
    pub fn reason(&self) -> StopReason {
        self.reason
    }

    /// Attempts made, the first included.
    #[must_use]
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}

impl RetryLayer {
    /// Retries every error except keel's rejections ([`FailFastOnRejection`]) with `config`'s
    /// backoff; add a budget with [`budget`](RetryLayer::budget), or configure a
    /// [`Retry`](keel_core::driver::retry::Retry) and use [`from_retry`](RetryLayer::from_retry).
    #[must_use]
    pub fn new(config: BackoffConfig) -> Self {
        RetryLayer {
            retry: crate::Retry::new(config).retry_if(FailFastOnRejection),
        }
    }
}

impl<P, N> RetryLayer<P, N> {
    /// A layer on a configured retry (predicate, notify hook, shared budget); clones share its
    /// budget and stats.
    #[must_use]
    pub fn from_retry(retry: crate::Retry<P, N>) -> Self {
        RetryLayer { retry }
    }

    /// Draws every retry from this budget (share one per dependency).
    #[must_use]
    pub fn budget(self, budget: SharedBudget) -> Self {
        RetryLayer {
            retry: self.retry.budget(budget),
        }
    }

    /// The retry policy.
    #[must_use]
    pub fn retry(&self) -> &crate::Retry<P, N> {
        &self.retry
    }
}

impl<S, P: Clone, N: Clone> Layer<S> for RetryLayer<P, N> {
    type Service = RetryService<S, P, N>;

    fn layer(&self, inner: S) -> RetryService<S, P, N> {
        RetryService {
            inner,
            retry: self.retry.clone(),
        }
    }
}

/// The service of [`RetryLayer`].
#[derive(Clone, Debug)]
pub struct RetryService<S, P = FailFastOnRejection, N = NoNotify> {
    inner: S,
    retry: crate::Retry<P, N>,
}

impl<S, Req, P, N> Service<Req> for RetryService<S, P, N>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    S::Response: Send,
    Req: Clone + Send + 'static,
    P: RetryPredicate<BoxError> + Clone + Send + Sync + 'static,
    N: RetryNotify<BoxError> + Clone + Send + Sync + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Response>;

    /// Always ready: each attempt waits for the inner service inside the call future.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let inner = self.inner.clone();
        let retry = self.retry.clone();
        Box::pin(async move {
            retry
                .run(move || ready_call(inner.clone(), req.clone()))
                .await
                .map_err(|e| -> BoxError {
                    Box::new(RetryGaveUp {
                        error: e.error,
                        reason: e.reason,
                        attempts: e.attempts,
                    })
                })
        })
    }
}
