//! [`BulkheadLayer`]: bounds the calls in flight across every service and clone.

use std::task::{Context, Poll};

use ::tower::{Layer, Service};
use keel_core::bulkhead::{BulkheadConfig, Criticality};

use super::{ready_call, BoxError, InnerService, KeelError, ResponseFuture};
use crate::Bulkhead;

/// How a [`BulkheadLayer`] finds a request's [`Criticality`] (see
/// [`BulkheadLayer::classify_by`]): [`AllDefault`] (the default), [`FromExtension`] (an
/// `http::Request` extension, feature `http`), or any `Fn(&Req) -> Criticality`.
pub trait ClassifyCriticality<Req> {
    /// The class of `req`.
    fn classify(&self, req: &Req) -> Criticality;
}

/// Every request is [`Criticality::Default`]: the layer's default.
#[derive(Clone, Copy, Debug, Default)]
pub struct AllDefault;

impl<Req> ClassifyCriticality<Req> for AllDefault {
    fn classify(&self, _: &Req) -> Criticality {
        Criticality::Default
    }
}

/// Reads the [`Criticality`] a request carries in its extensions (feature `http`):
/// `req.extensions_mut().insert(Criticality::Critical)` upstream (an auth layer, a route);
/// a request without one is [`Criticality::Default`].
#[cfg(feature = "http")]
#[derive(Clone, Copy, Debug, Default)]
pub struct FromExtension;

#[cfg(feature = "http")]
impl<B> ClassifyCriticality<http::Request<B>> for FromExtension {
    fn classify(&self, req: &http::Request<B>) -> Criticality {
        req.extensions()
            .get::<Criticality>()
            .copied()
            .unwrap_or_default()
    }
}

impl<Req, F: Fn(&Req) -> Criticality> ClassifyCriticality<Req> for F {
    fn classify(&self, req: &Req) -> Criticality {
        self(req)
    }
}

/// Bounds the calls in flight across every service it makes and all their clones; rejects
/// when full (no queue) or queues in a bounded FIFO for at most `max_wait`. With
/// [`classify_by`](Self::classify_by), each request carries a [`Criticality`]: sheddable
/// requests are shed first and critical ones keep their reserved share.
///
///
/// ```
/// use std::sync::{Arc, Mutex};
///
/// use keel_tokio::core::bulkhead::BulkheadConfig;
/// use keel_tokio::tower::{BoxError, BulkheadLayer, KeelError};
/// use tokio::sync::oneshot;
/// use tower::{service_fn, Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), BoxError> {
/// // One call at a time, no queue: a second call while the first runs is rejected at once.
/// let layer = BulkheadLayer::new(BulkheadConfig::builder().max_concurrent(1).build()?);
/// let (release, held) = oneshot::channel::<()>();
/// let held = Arc::new(Mutex::new(Some(held)));
/// let svc = layer.layer(service_fn(move |x: u32| {
///     let held = held.lock().unwrap().take();
///     async move {
///         if let Some(held) = held {
///             let _ = held.await; // the first call holds its slot until released
///         }
///         Ok::<_, BoxError>(x)
///     }
/// }));
/// let first = tokio::spawn(svc.clone().oneshot(1));
/// tokio::task::yield_now().await; // the first call takes the slot
/// assert_eq!(layer.bulkhead().stats().in_flight, 1);
/// let err = svc.clone().oneshot(2).await.unwrap_err();
/// assert!(matches!(err.downcast_ref::<KeelError>(), Some(KeelError::BulkheadRejected(_))));
/// release.send(()).unwrap();
/// assert_eq!(first.await.unwrap()?, 1);
/// // The slot is free again.
/// assert_eq!(svc.oneshot(3).await?, 3);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct BulkheadLayer<C = AllDefault> {
    bulkhead: Bulkhead,
    classify: C,
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
        BulkheadLayer {
            bulkhead,
            classify: AllDefault,
        }
    }
}

impl<C> BulkheadLayer<C> {
    /// Classifies each request with `classify` (a [`ClassifyCriticality`]: [`FromExtension`]
    /// for an `http::Request` extension, or a closure `|req: &Req| -> Criticality`).
    ///
    /// ```
    /// use keel_tokio::core::bulkhead::{BulkheadConfig, Criticality};
    /// use keel_tokio::tower::BulkheadLayer;
    ///
    /// let layer = BulkheadLayer::new(BulkheadConfig::builder().reserved_critical_percent(10).build()?)
    ///     .classify_by(|path: &&str| {
    ///         if path.starts_with("/checkout") { Criticality::Critical } else { Criticality::Default }
    ///     });
    /// # let _ = layer;
    /// # Ok::<(), keel_tokio::core::ConfigError>(())
    /// ```
    #[must_use]
    pub fn classify_by<C2>(self, classify: C2) -> BulkheadLayer<C2> {
        BulkheadLayer {
            bulkhead: self.bulkhead,
            classify,
        }
    }

    /// Names the layer's bulkhead (see [`Name`](keel_core::driver::Name)): its log lines and
    /// metrics carry it. Call it before [`layer`](Layer::layer).
    #[must_use]
    pub fn named(mut self, name: impl Into<keel_core::driver::Name>) -> Self {
        self.bulkhead = self.bulkhead.named(name);
        self
    }

    /// The shared bulkhead.
    #[must_use]
    pub fn bulkhead(&self) -> &Bulkhead {
        &self.bulkhead
    }
}

impl<S, C: Clone> Layer<S> for BulkheadLayer<C> {
    type Service = BulkheadService<S, C>;

    fn layer(&self, inner: S) -> BulkheadService<S, C> {
        BulkheadService {
            inner,
            bulkhead: self.bulkhead.clone(),
            classify: self.classify.clone(),
        }
    }
}

/// The service of [`BulkheadLayer`].
#[derive(Clone, Debug)]
pub struct BulkheadService<S, C = AllDefault> {
    inner: S,
    bulkhead: Bulkhead,
    classify: C,
}

impl<S, C> BulkheadService<S, C> {
    /// The shared bulkhead.
    #[must_use]
    pub fn bulkhead(&self) -> &Bulkhead {
        &self.bulkhead
    }
}

impl<S, C, Req> Service<Req> for BulkheadService<S, C>
where
    S: InnerService<Req>,
    C: ClassifyCriticality<Req>,
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
        let class = self.classify.classify(&req);
        Box::pin(async move {
            // `run_with` releases the slot when the call ends or is dropped, and keeps the
            // bulkhead's gauges (feature `metrics`) current.
            bulkhead
                .run_with(class, ready_call(inner, req))
                .await
                .map_err(KeelError::from)?
        })
    }
}
