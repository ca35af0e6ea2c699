//! A tower layer for fleet-wide rate limits (feature `tower`), for axum, hyper and tonic.
//!
//! [`FleetRateLimitLayer`] checks a [`FleetLimiter`] with a key taken from each request before
//! calling the inner service; a rejection is the service's error, a boxed [`Denied`] (its
//! `retry_after` fills `Retry-After`). Every clone of the layer's service shares the limiter,
//! and the limiter's state is shared by every process on the same Redis.
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
