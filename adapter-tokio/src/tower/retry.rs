//! [`RetryLayer`]: retries failed calls with backoff and an optional shared budget.

use std::marker::PhantomData;
use std::sync::Mutex;
use std::task::{Context, Poll};

use ::tower::{Layer, Service};
use keel_core::backoff::BackoffConfig;
use keel_core::driver::retry::{NoNotify, RetryAction, RetryNotify, RetryPredicate, StopReason};
use keel_core::sync::budget::SharedBudget;

use super::{
    ready_call, BoxError, InnerService, KeelError, NoResponseRetry, ResponseFuture, RetryResponse,
};

/// Retries failed calls with backoff (and an optional shared retry budget) using a keel
/// [`Retry`](crate::Retry); the request must be `Clone`. Each attempt waits for the inner
/// service's readiness inside the call future, so an outer [`TimeoutLayer`](super::TimeoutLayer) bounds all attempts
/// and the backoff sleeps between them. When it gives up, the error is a boxed
/// [`RetryGaveUp`] (the stop reason, the attempt count, and the last attempt's error as its
/// `source()`). The default predicate is [`FailFastOnRejection`]: keel's own rejections from
/// inner layers are not retried.
///
/// By default an `Ok` response is the answer. An inner service that answers failures as values
/// (an HTTP `Ok(503)`) is retried with [`retry_responses`](Self::retry_responses) and a
/// [`RetryResponse`] (feature `http`: `keel_tokio::http::HttpClassifier`, which also passes the
/// response's `Retry-After` to the backoff's hint path, capped at the schedule's
/// `max_retry_after`). Such a response is retried like an error (schedule, budget, notify hook,
/// which sees a [`RetryableResponse`]); when the retry gives up, the last response is the
/// answer.
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// use keel_tokio::core::backoff::{BackoffConfig, Jitter};
/// use keel_tokio::tower::{BoxError, RetryGaveUp, RetryLayer};
/// use tower::{service_fn, Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), BoxError> {
/// let config = BackoffConfig::constant(Duration::from_millis(100))
///     .jitter(Jitter::None)
///     .max_attempts(3)
///     .build()?;
/// let calls = Arc::new(AtomicU32::new(0));
/// let counted = Arc::clone(&calls);
/// // Fails twice, then answers.
/// let flaky = service_fn(move |x: u32| {
///     let n = counted.fetch_add(1, Ordering::SeqCst);
///     async move { if n < 2 { Err::<u32, BoxError>("flaky".into()) } else { Ok(x) } }
/// });
/// let started = tokio::time::Instant::now();
/// assert_eq!(RetryLayer::new(config).layer(flaky).oneshot(7).await?, 7);
/// assert_eq!(calls.load(Ordering::SeqCst), 3);
/// assert_eq!(started.elapsed(), Duration::from_millis(200)); // two 100 ms backoffs
///
/// // Always failing: gives up after 3 attempts with the last error as the source.
/// let down = service_fn(|_: u32| async { Err::<u32, BoxError>("down".into()) });
/// let err = RetryLayer::new(config).layer(down).oneshot(1).await.unwrap_err();
/// let gave_up = err.downcast_ref::<RetryGaveUp>().expect("the retry's own error");
/// assert_eq!(gave_up.attempts(), 3);
/// assert_eq!(gave_up.error().to_string(), "down");
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct RetryLayer<P = FailFastOnRejection, N = NoNotify, C = NoResponseRetry> {
    retry: crate::Retry<P, N>,
    responses: C,
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
// The last error is the `source`, not part of the message (see keel_core's `RetryError`).
#[error("gave up after {attempts} attempt(s) because {reason}")]
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
        Self::from_retry(crate::Retry::new(config).retry_if(FailFastOnRejection))
    }
}

impl<P, N> RetryLayer<P, N> {
    /// A layer on a configured retry (predicate, notify hook, shared budget); clones share its
    /// budget and stats.
    #[must_use]
    pub fn from_retry(retry: crate::Retry<P, N>) -> Self {
        RetryLayer {
            retry,
            responses: NoResponseRetry,
        }
    }
}

impl<P, N, C> RetryLayer<P, N, C> {
    /// Draws every retry from this budget (share one per dependency).
    #[must_use]
    pub fn budget(self, budget: SharedBudget) -> Self {
        RetryLayer {
            retry: self.retry.budget(budget),
            responses: self.responses,
        }
    }

    /// Names the layer's retry (see [`Name`](keel_core::driver::Name)): its log lines and
    /// metrics carry it. Call it before [`layer`](Layer::layer).
    #[must_use]
    pub fn named(self, name: impl Into<keel_core::driver::Name>) -> Self {
        RetryLayer {
            retry: self.retry.named(name),
            responses: self.responses,
        }
    }

    /// Retries the `Ok` responses `classify` says failed (see the type's docs).
    #[must_use]
    pub fn retry_responses<C2>(self, classify: C2) -> RetryLayer<P, N, C2> {
        RetryLayer {
            retry: self.retry,
            responses: classify,
        }
    }

    /// The retry policy.
    #[must_use]
    pub fn retry(&self) -> &crate::Retry<P, N> {
        &self.retry
    }
}

impl<S, P: Clone, N: Clone, C: Clone> Layer<S> for RetryLayer<P, N, C> {
    type Service = RetryService<S, P, N, C>;

    fn layer(&self, inner: S) -> RetryService<S, P, N, C> {
        RetryService {
            inner,
            retry: self.retry.clone(),
            responses: self.responses.clone(),
        }
    }
}

/// The service of [`RetryLayer`].
#[derive(Clone, Debug)]
pub struct RetryService<S, P = FailFastOnRejection, N = NoNotify, C = NoResponseRetry> {
    inner: S,
    retry: crate::Retry<P, N>,
    responses: C,
}

/// An `Ok` response a [`RetryResponse`] classified as a failed attempt, as the retry's notify
/// hook sees it (boxed in a [`BoxError`]) before the next attempt. It never reaches the
/// caller: when the retry gives up, the response inside is the answer.
pub struct RetryableResponse<Res> {
    // A mutex only to make the box `Sync` for any response type (an HTTP body need not be).
    response: Mutex<Option<Res>>,
    action: RetryAction,
}

impl<Res> RetryableResponse<Res> {
    /// What the classifier said: [`RetryAction::Retry`] or [`RetryAction::RetryAfter`].
    #[must_use]
    pub fn action(&self) -> RetryAction {
        self.action
    }

    fn take(self) -> Option<Res> {
        match self.response.into_inner() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

impl<Res> std::fmt::Debug for RetryableResponse<Res> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryableResponse")
            .field("action", &self.action)
            .finish_non_exhaustive()
    }
}

impl<Res> std::fmt::Display for RetryableResponse<Res> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the response was classified as a failed attempt")
    }
}

impl<Res> std::error::Error for RetryableResponse<Res> {}

/// The predicate of a run that retries responses: a [`RetryableResponse`] says its own action,
/// every other error goes to the layer's predicate.
struct ResponsesThen<P, Res> {
    predicate: P,
    _response: PhantomData<fn() -> Res>,
}

impl<P: RetryPredicate<BoxError>, Res: 'static> RetryPredicate<BoxError> for ResponsesThen<P, Res> {
    fn classify(&self, error: &BoxError) -> RetryAction {
        match error.downcast_ref::<RetryableResponse<Res>>() {
            Some(r) => r.action,
            None => self.predicate.classify(error),
        }
    }
}

impl<S, Req, P, N, C> Service<Req> for RetryService<S, P, N, C>
where
    S: InnerService<Req>,
    S::Response: Send + 'static,
    Req: Clone + Send + 'static,
    P: RetryPredicate<BoxError> + Clone + Send + Sync + 'static,
    N: RetryNotify<BoxError> + Clone + Send + Sync + 'static,
    C: RetryResponse<S::Response> + Clone + Send + Sync + 'static,
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
        let predicate = ResponsesThen::<P, S::Response> {
            predicate: self.retry.predicate().clone(),
            _response: PhantomData,
        };
        let retry = self.retry.clone().retry_if(predicate);
        let responses = self.responses.clone();
        Box::pin(async move {
            let attempt = move || {
                let call = ready_call(inner.clone(), req.clone());
                let responses = responses.clone();
                async move {
                    let response = call.await?;
                    match responses.retry(&response) {
                        Some(action @ (RetryAction::Retry | RetryAction::RetryAfter(_))) => {
                            Err(Box::new(RetryableResponse {
                                response: Mutex::new(Some(response)),
                                action,
                            }) as BoxError)
                        }
                        // `Stop` and `None`: this response is the answer.
                        _ => Ok(response),
                    }
                }
            };
            match retry.run(attempt).await {
                Ok(response) => Ok(response),
                Err(e) => match e.error.downcast::<RetryableResponse<S::Response>>() {
                    // Gave up on a failed response: it is the answer. (The response is taken
                    // only here, once, so it is always there.)
                    Ok(last) => last.take().ok_or_else(|| -> BoxError {
                        "keel retry: a retried response was already taken".into()
                    }),
                    Err(error) => Err(Box::new(RetryGaveUp {
                        error,
                        reason: e.reason,
                        attempts: e.attempts,
                    }) as BoxError),
                },
            }
        })
    }
}
