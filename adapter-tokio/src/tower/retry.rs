//! [`RetryLayer`]: retries failed calls with backoff and an optional shared budget.

use std::task::{Context, Poll};

use ::tower::{Layer, Service};
use keel_core::backoff::BackoffConfig;
use keel_core::driver::retry::{NoNotify, RetryAction, RetryNotify, RetryPredicate, StopReason};
use keel_core::sync::budget::SharedBudget;

use super::{ready_call, BoxError, KeelError, ResponseFuture};

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
#[error("gave up after {attempts} attempt(s) because {reason}: {error}")]
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
