//! [`RateLimitLayer`]: one GCRA shared by every service and clone; rejects, or waits boundedly.

use std::task::{Context, Poll};
use std::time::Duration;

use ::tower::{Layer, Service};
use keel_core::rate::Quota;

use super::{ready_call, BoxError, InnerService, KeelError, ResponseFuture};
use crate::RateLimiter;

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
///
/// ```
/// use std::num::NonZeroU32;
/// use std::time::Duration;
///
/// use keel_tokio::core::rate::Quota;
/// use keel_tokio::tower::{BoxError, KeelError, RateLimitLayer};
/// use tower::{service_fn, Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), BoxError> {
/// // One call a second, no burst: shared by every service the layer makes and their clones.
/// let layer = RateLimitLayer::new(Quota::per_second(NonZeroU32::new(1).unwrap())?);
/// let svc = layer.layer(service_fn(|x: u32| async move { Ok::<_, BoxError>(x) }));
/// assert_eq!(svc.clone().oneshot(1).await?, 1);
/// // The second call in the same instant is rejected at once, with when to retry.
/// let err = svc.clone().oneshot(2).await.unwrap_err();
/// let keel = err.downcast_ref::<KeelError>().expect("keel's own rejection");
/// assert!(matches!(keel, KeelError::RateLimited { .. }));
/// assert_eq!(keel.retry_after(), Some(Duration::from_secs(1)));
/// // A second later the token is back.
/// tokio::time::advance(Duration::from_secs(1)).await;
/// assert_eq!(svc.oneshot(3).await?, 3);
/// # Ok(()) }
/// ```
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

    /// Names the layer's limiter (see [`Name`](keel_core::driver::Name)): its log lines and
    /// metrics carry it. Call it before [`layer`](Layer::layer): services made earlier keep the
    /// old name.
    #[must_use]
    pub fn named(mut self, name: impl Into<keel_core::driver::Name>) -> Self {
        self.limiter = self.limiter.named(name);
        self
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
    S: InnerService<Req>,
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
                // A single call is never over the burst (bursts are at least 1), so its
                // rejection always says when; should that change, pass the rejection on.
                let Some(retry_at) = limited.retry_at else {
                    return Err(limited.into());
                };
                let Some(wait) = wait else {
                    return Err(rejected(retry_at).into());
                };
                let rt = *limiter.runtime();
                let now = keel_core::driver::Runtime::now(&rt);
                if retry_at.saturating_duration_since(now) > wait.max_wait {
                    return Err(rejected(retry_at).into());
                }
                let Some(_slot) = WaiterSlot::try_take(&wait) else {
                    return Err(rejected(retry_at).into());
                };
                let deadline = now + wait.max_wait;
                match keel_core::driver::timeout_at(&rt, deadline, limiter.until_ready()).await {
                    // A single call never exceeds a burst (bursts are at least 1).
                    Ok(admitted) => admitted?,
                    // Waited `max_wait` in vain (other waiters took the tokens): one last check.
                    Err(_) => match limiter.check() {
                        Ok(()) => {}
                        Err(e) => match e.retry_at {
                            Some(retry_at) => return Err(rejected(retry_at).into()),
                            None => return Err(e.into()),
                        },
                    },
                }
            }
            ready_call(inner, req).await
        })
    }
}
