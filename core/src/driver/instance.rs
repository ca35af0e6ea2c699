//! What every named handle of the driver carries: its [`Name`] and (feature `metrics`) the
//! metric series registered under that name at first use.
//!
//! Written once here so that each handle's `named(..)`, `name()`, `Clone` and metrics lookup
//! are one line each ([`Breaker`](super::breaker::Breaker), [`Retry`](super::retry::Retry),
//! [`RateLimiter`](super::rate::RateLimiter),
//! [`KeyedRateLimiter`](super::rate::KeyedRateLimiter),
//! [`Bulkhead`](super::bulkhead::Bulkhead)).

#[cfg(feature = "metrics")]
use alloc::sync::Arc;
#[cfg(not(feature = "metrics"))]
use core::marker::PhantomData;

#[cfg(feature = "metrics")]
use super::metrics::Lazy;
use super::Name;
#[cfg(feature = "metrics")]
use ::metrics::SharedString;

/// The series type `M` of each handle: the real series with the `metrics` feature, `()`
/// without it (the handles then carry no series).
#[cfg(feature = "metrics")]
pub(crate) use super::metrics::{BreakerMetrics, BulkheadMetrics, RateMetrics, RetryMetrics};
#[cfg(not(feature = "metrics"))]
pub(crate) type BreakerMetrics = ();
#[cfg(not(feature = "metrics"))]
pub(crate) type BulkheadMetrics = ();
#[cfg(not(feature = "metrics"))]
pub(crate) type RateMetrics = ();
#[cfg(not(feature = "metrics"))]
pub(crate) type RetryMetrics = ();

/// A handle's name and its series `M`, shared by the clones made from the handle.
pub(crate) struct Instance<M> {
    name: Name,
    #[cfg(feature = "metrics")]
    series: Arc<Lazy<M>>,
    #[cfg(not(feature = "metrics"))]
    series: PhantomData<fn() -> M>,
}

impl<M> Instance<M> {
    /// Named [`Name::DEFAULT`], no series registered yet.
    pub(crate) fn new() -> Self {
        Instance {
            name: Name::DEFAULT,
            #[cfg(feature = "metrics")]
            series: Lazy::new(),
            #[cfg(not(feature = "metrics"))]
            series: PhantomData,
        }
    }

    /// Takes a new name; the series are registered afresh under it at their next use (the
    /// clones made before keep the old name and series).
    pub(crate) fn rename(&mut self, name: Name) {
        *self = Instance {
            name,
            ..Instance::new()
        };
    }

    /// The name.
    pub(crate) fn name(&self) -> &Name {
        &self.name
    }

    /// The series, registered by `register` under the name at the first call.
    #[cfg(feature = "metrics")]
    pub(crate) fn series(&self, register: impl FnOnce(SharedString) -> M) -> &M {
        self.series.get(&self.name, register)
    }
}

impl<M> Clone for Instance<M> {
    fn clone(&self) -> Self {
        Instance {
            name: self.name.clone(),
            #[cfg(feature = "metrics")]
            series: Arc::clone(&self.series),
            #[cfg(not(feature = "metrics"))]
            series: PhantomData,
        }
    }
}
