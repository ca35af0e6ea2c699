//! [`BulkheadLayer`]: bounds the calls in flight across every service and clone.

use std::task::{Context, Poll};

use ::tower::{Layer, Service};
use keel_core::bulkhead::BulkheadConfig;

use super::{ready_call, BoxError, InnerService, KeelError, ResponseFuture};
use crate::Bulkhead;

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
    S: InnerService<Req>,
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
            // `run` releases the slot when the call ends or is dropped, and keeps the
            // bulkhead's gauges (feature `metrics`) current.
            bulkhead
                .run(ready_call(inner, req))
                .await
                .map_err(KeelError::from)?
        })
    }
}
