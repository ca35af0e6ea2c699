//! [`BreakerLayer`]: fails calls fast while a shared circuit breaker is open.

use std::task::{Context, Poll};

use ::tower::{Layer, Service};
use keel_core::breaker::{BreakerConfig, Outcome};
use keel_core::driver::breaker::BreakerError;
use keel_core::sync::breaker::SharedBreaker;

use super::{
    ready_call, BoxError, ClassifyErrors, ClassifyResult, InnerService, KeelError, ResponseFuture,
};

/// Fails calls fast with [`KeelError::BreakerOpen`] while a circuit breaker shared by every
/// service it makes (and their clones) is open. An inner `Ok` is a success; an inner `Err` is
/// classified by [`classify_error`] unless [`BreakerLayer::classify`] replaces it: a failure,
/// except keel's own *local* rejections from layers inside this one ([`KeelError::RateLimited`],
/// [`KeelError::BulkheadRejected`], [`KeelError::BreakerOpen`]), which are ignored, so local
/// throttling never opens the breaker. A dropped call future is reported by the breaker's drop
/// guard (see [`crate::core::driver::breaker`]). Calls go through
/// [`Breaker::call_with`](crate::Breaker), so transitions are logged under `keel::breaker`.
///
/// An inner service that answers failures as values (an HTTP `Ok(503)`) needs a classifier of
/// the whole result: [`classify_result`](Self::classify_result) with a [`ClassifyResult`]
/// (feature `http`: `keel_tokio::http::HttpClassifier`, 5xx and 429 are failures).
///
/// ```
/// use keel_tokio::core::breaker::{BreakerConfig, State};
/// use keel_tokio::tower::{BoxError, BreakerLayer, KeelError};
/// use tower::{service_fn, Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), BoxError> {
/// let layer = BreakerLayer::new(BreakerConfig::consecutive_failures(2).build()?).named("db");
/// let down = service_fn(|_: u32| async { Err::<u32, BoxError>("connection refused".into()) });
/// let svc = layer.layer(down);
/// // Two failures open the breaker (every clone of the service shares it)...
/// for _ in 0..2 {
///     let err = svc.clone().oneshot(1).await.unwrap_err();
///     assert_eq!(err.to_string(), "connection refused");
/// }
/// assert_eq!(layer.breaker().state(), State::Open);
/// // ...and the third call fails fast, without reaching the service, saying when to retry.
/// let err = svc.clone().oneshot(1).await.unwrap_err();
/// let keel = err.downcast_ref::<KeelError>().expect("keel's own rejection");
/// assert!(matches!(keel, KeelError::BreakerOpen { retry_at: Some(_) }));
/// assert!(keel.retry_after().is_some_and(|d| !d.is_zero()));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct BreakerLayer<C = ClassifyErrors> {
    breaker: crate::Breaker,
    classify: C,
}

/// The default error classifier of [`BreakerLayer`]: [`Outcome::Ignored`] for keel's local
/// rejections ([`KeelError::RateLimited`], [`KeelError::BulkheadRejected`],
/// [`KeelError::BreakerOpen`] from an inner layer: they say nothing about the dependency),
/// [`Outcome::Failure`] for everything else.
///
/// [`KeelError::TimedOut`] **is** a failure: a call that ran past its timeout is the
/// dependency-health signal a breaker exists for. Place a [`TimeoutLayer`](super::TimeoutLayer) inside the breaker
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
            classify: ClassifyErrors::default(),
        }
    }

    /// Replaces [`classify_error`]: decides what an inner `Err` says about the dependency
    /// (e.g. [`Outcome::Ignored`] for a client error). An inner `Ok` is always a success.
    #[must_use]
    pub fn classify(mut self, classify: fn(&BoxError) -> Outcome) -> Self {
        self.classify = ClassifyErrors(classify);
        self
    }
}

impl<C> BreakerLayer<C> {
    /// Names the layer's breaker (see [`Name`](keel_core::driver::Name)): its transition log
    /// lines (`breaker{name=payments} closed -> open`) and metrics carry it. Call it before
    /// [`layer`](Layer::layer).
    #[must_use]
    pub fn named(mut self, name: impl Into<keel_core::driver::Name>) -> Self {
        self.breaker = self.breaker.named(name);
        self
    }

    /// Classifies the whole result, `Ok` responses included, with `classify` (replacing
    /// [`classify`](BreakerLayer::classify)'s error-only classifier).
    #[must_use]
    pub fn classify_result<C2>(self, classify: C2) -> BreakerLayer<C2> {
        BreakerLayer {
            breaker: self.breaker,
            classify,
        }
    }

    /// The shared breaker.
    #[must_use]
    pub fn breaker(&self) -> &SharedBreaker {
        self.breaker.shared()
    }
}

impl<S, C: Clone> Layer<S> for BreakerLayer<C> {
    type Service = BreakerService<S, C>;

    fn layer(&self, inner: S) -> BreakerService<S, C> {
        BreakerService {
            inner,
            breaker: self.breaker.clone(),
            classify: self.classify.clone(),
        }
    }
}

/// The service of [`BreakerLayer`].
#[derive(Clone, Debug)]
pub struct BreakerService<S, C = ClassifyErrors> {
    inner: S,
    breaker: crate::Breaker,
    classify: C,
}

impl<S, C, Req> Service<Req> for BreakerService<S, C>
where
    S: InnerService<Req>,
    Req: Send + 'static,
    C: ClassifyResult<S::Response> + Clone + Send + Sync + 'static,
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
        let classify = self.classify.clone();
        Box::pin(async move {
            let outcome = |r: &Result<S::Response, BoxError>| classify.outcome(r);
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
