//! [`AdaptiveLimitLayer`]: a concurrency limit across every service and clone that follows
//! the inner service's capacity (see [`keel_core::adaptive`] and [`AdaptiveLimit`]).
//!
//! Each call takes a slot under the current limit (or waits in the bounded queue, or is
//! rejected with [`KeelError::BulkheadRejected`], which `keel_tokio::http` answers with a
//! `503`), runs the inner call, and feeds one sample: the time from the grant of the slot to
//! the inner result, and the outcome the classifier reads from that result. The classifier is
//! the breaker's [`ClassifyResult`] (so `keel_tokio::http::HttpClassifier` works here too):
//!
//! | [`Outcome`] | sample |
//! | --- | --- |
//! | `Success` | [`SampleOutcome::Success`] |
//! | `Failure` | [`SampleOutcome::Dropped`], or [`SampleOutcome::TimedOut`] for a [`KeelError::TimedOut`] from an inner timeout |
//! | `Ignored` | no sample (keel's own local rejections from an inner layer, by default) |
//!
//! A call whose future is dropped (the client went away, an outer timeout fired) feeds no
//! sample and releases its slot.
//!
//! ```
//! use keel_tokio::core::adaptive::AdaptiveConfig;
//! use keel_tokio::core::bulkhead::BulkheadConfig;
//! use keel_tokio::tower::{AdaptiveLimitLayer, KeelError};
//! use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let layer = AdaptiveLimitLayer::new(
//!     AdaptiveConfig::builder().initial_limit(10).build()?,
//!     BulkheadConfig::builder().max_queue(0).build()?, // over the limit: rejected at once
//! );
//! let limit = layer.limit().clone();
//! let mut svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service(service_fn(|x: u32| async move { Ok::<_, std::convert::Infallible>(x * 2) }));
//! assert_eq!(svc.ready().await?.call(21).await?, 42);
//! assert_eq!(limit.stats().samples, 1);
//! assert_eq!(limit.limit(), 10);
//! # let _: Option<KeelError> = None;
//! # Ok(()) }
//! ```

use std::task::{Context, Poll};

use ::tower::{Layer, Service};
use keel_core::adaptive::{AdaptiveConfig, SampleOutcome};
use keel_core::breaker::Outcome;
use keel_core::bulkhead::BulkheadConfig;

use super::ResponseFuture;
use super::{ready_call, BoxError, ClassifyErrors, ClassifyResult, InnerService, KeelError};
use crate::AdaptiveLimit;

/// An adaptive concurrency limit shared by every service it makes and all their clones.
///
/// Each call takes a slot under the current limit (or waits in the bounded queue, or is
/// rejected with [`KeelError::BulkheadRejected`]), runs the inner call and feeds one sample:
/// the time from the grant to the result, with the outcome the classifier reads
/// ([`Outcome::Success`]: a success; [`Outcome::Failure`]: a drop, or a timeout for an inner
/// [`KeelError::TimedOut`]; [`Outcome::Ignored`]: no sample). A cancelled call feeds none.
#[derive(Clone, Debug)]
pub struct AdaptiveLimitLayer<C = ClassifyErrors> {
    limit: AdaptiveLimit,
    classify: C,
}

impl AdaptiveLimitLayer {
    /// A layer with a fresh adaptive limit. `queue` says how calls over the limit wait
    /// (`max_queue(0)`, the default, rejects them at once); its `max_concurrent` is replaced by
    /// the adaptive limit.
    #[must_use]
    pub fn new(config: AdaptiveConfig, queue: BulkheadConfig) -> Self {
        Self::from_limit(AdaptiveLimit::new(config, queue))
    }

    /// A layer on an existing adaptive limit (shared with whatever else uses it).
    #[must_use]
    pub fn from_limit(limit: AdaptiveLimit) -> Self {
        AdaptiveLimitLayer {
            limit,
            classify: ClassifyErrors::default(),
        }
    }
}

impl<C> AdaptiveLimitLayer<C> {
    /// Classifies the whole result, `Ok` responses included (e.g. `HttpClassifier`: a `503`
    /// is a drop), replacing the default, which reads only errors.
    #[must_use]
    pub fn classify_result<C2>(self, classify: C2) -> AdaptiveLimitLayer<C2> {
        AdaptiveLimitLayer {
            limit: self.limit,
            classify,
        }
    }

    /// The shared adaptive limit.
    #[must_use]
    pub fn limit(&self) -> &AdaptiveLimit {
        &self.limit
    }

    /// Names the layer's limit (see [`Name`](keel_core::driver::Name)): its log lines and
    /// metrics carry it. Call it before [`layer`](Layer::layer).
    #[must_use]
    pub fn named(mut self, name: impl Into<keel_core::driver::Name>) -> Self {
        self.limit = self.limit.named(name);
        self
    }
}

impl<S, C: Clone> Layer<S> for AdaptiveLimitLayer<C> {
    type Service = AdaptiveLimitService<S, C>;

    fn layer(&self, inner: S) -> AdaptiveLimitService<S, C> {
        AdaptiveLimitService {
            inner,
            limit: self.limit.clone(),
            classify: self.classify.clone(),
        }
    }
}

/// The service of [`AdaptiveLimitLayer`].
#[derive(Clone, Debug)]
pub struct AdaptiveLimitService<S, C = ClassifyErrors> {
    inner: S,
    limit: AdaptiveLimit,
    classify: C,
}

impl<S, C> AdaptiveLimitService<S, C> {
    /// The shared adaptive limit.
    #[must_use]
    pub fn limit(&self) -> &AdaptiveLimit {
        &self.limit
    }
}

/// The sample a classified result feeds (`None`: none).
fn sample_outcome<Res>(outcome: Outcome, result: &Result<Res, BoxError>) -> Option<SampleOutcome> {
    match outcome {
        Outcome::Success => Some(SampleOutcome::Success),
        Outcome::Ignored => None,
        Outcome::Failure => match result {
            Err(e) if matches!(e.downcast_ref(), Some(KeelError::TimedOut { .. })) => {
                Some(SampleOutcome::TimedOut)
            }
            _ => Some(SampleOutcome::Dropped),
        },
    }
}

impl<S, C, Req> Service<Req> for AdaptiveLimitService<S, C>
where
    S: InnerService<Req>,
    Req: Send + 'static,
    C: ClassifyResult<S::Response> + Clone + Send + Sync + 'static,
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
        let limit = self.limit.clone();
        let classify = self.classify.clone();
        Box::pin(async move {
            let mut permit = limit.acquire().await.map_err(KeelError::from)?;
            // Dropped with the call future (a cancellation): no sample.
            permit.ignore();
            let result = ready_call(inner, req).await;
            match sample_outcome(classify.outcome(&result), &result) {
                Some(outcome) => permit.set_outcome(outcome),
                None => permit.ignore(),
            }
            drop(permit);
            result
        })
    }
}
