//! [`TimeoutLayer`]: a timeout that covers the time inner keel layers spend waiting.

use std::task::{Context, Poll};
use std::time::Duration;

use ::tower::{Layer, Service};

use super::{ready_call, BoxError, InnerService, KeelError, ResponseFuture};

/// Fails a call with [`KeelError::TimedOut`] once `after` has passed since `call`, counting
/// the time inner keel layers spend waiting for a token or a slot (see the module docs).
///
/// ```
/// use std::time::Duration;
///
/// use keel_tokio::tower::{BoxError, KeelError, TimeoutLayer};
/// use tower::{service_fn, Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), BoxError> {
/// let layer = TimeoutLayer::new(Duration::from_millis(500));
/// let slow = service_fn(|delay_ms: u64| async move {
///     tokio::time::sleep(Duration::from_millis(delay_ms)).await;
///     Ok::<_, BoxError>(delay_ms)
/// });
/// let svc = layer.layer(slow);
/// assert_eq!(svc.clone().oneshot(100).await?, 100);
/// let err = svc.oneshot(2_000).await.unwrap_err();
/// assert!(matches!(
///     err.downcast_ref::<KeelError>(),
///     Some(KeelError::TimedOut { after }) if *after == Duration::from_millis(500)
/// ));
/// # Ok(()) }
/// ```
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
    S: InnerService<Req>,
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
