//! What a whole call result says: [`ClassifyResult`] for the [`BreakerLayer`](super::BreakerLayer)
//! and [`RetryResponse`] for the [`RetryLayer`](super::RetryLayer).
//!
//! An inner service that answers with a value (an HTTP `503` is an `Ok(response)`) may still
//! have failed. The defaults here read only errors, as before; feature `http` adds
//! `keel_tokio::http::HttpClassifier`, which reads the status (5xx and 429 are failures) and
//! the response's `Retry-After`.

use keel_core::breaker::Outcome;
use keel_core::driver::retry::RetryAction;

use super::{classify_error, BoxError};

/// Classifies a call's whole result, `Ok` responses included, for a breaker.
pub trait ClassifyResult<Res> {
    /// What `result` says about the dependency's health.
    fn outcome(&self, result: &Result<Res, BoxError>) -> Outcome;
}

/// The breaker's default classifier: every `Ok` is a success, an `Err` goes to the function
/// ([`classify_error`] unless [`BreakerLayer::classify`](super::BreakerLayer::classify) sets
/// another).
#[derive(Clone, Copy, Debug)]
pub struct ClassifyErrors(pub fn(&BoxError) -> Outcome);

impl Default for ClassifyErrors {
    fn default() -> Self {
        ClassifyErrors(classify_error)
    }
}

impl<Res> ClassifyResult<Res> for ClassifyErrors {
    fn outcome(&self, result: &Result<Res, BoxError>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(e) => (self.0)(e),
        }
    }
}

/// Decides whether a successful (`Ok`) response is a failed attempt worth retrying. Errors are
/// still classified by the retry's predicate.
pub trait RetryResponse<Res> {
    /// `None`: the response is the answer. `Some(action)`: the attempt failed;
    /// [`RetryAction::Retry`] retries on the schedule, [`RetryAction::RetryAfter`] passes the
    /// server's hint to the backoff (capped at its `max_retry_after`), [`RetryAction::Stop`]
    /// gives this response back at once. When the retry gives up (attempts, elapsed time or
    /// budget spent), the last response is the answer, not an error.
    fn retry(&self, response: &Res) -> Option<RetryAction>;
}

/// The retry layer's default: no `Ok` response is retried.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoResponseRetry;

impl<Res> RetryResponse<Res> for NoResponseRetry {
    fn retry(&self, _response: &Res) -> Option<RetryAction> {
        None
    }
}
