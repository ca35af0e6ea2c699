//! [`BreakerLayer`]: fails calls fast while a shared circuit breaker is open.

use std::task::{Context, Poll};

use ::tower::{Layer, Service};
use keel_core::breaker::{BreakerConfig, Outcome};
use keel_core::driver::breaker::BreakerError;
use keel_core::sync::breaker::SharedBreaker;

use super::{ready_call, BoxError, KeelError, ResponseFuture};

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
