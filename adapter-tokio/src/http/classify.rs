//! [`HttpClassifier`]: what an HTTP response's status says about the dependency.

use http::{Response, StatusCode};
use keel_core::breaker::Outcome;
use keel_core::driver::retry::RetryAction;

use crate::tower::{classify_error, BoxError, ClassifyResult, RetryResponse};

/// Classifies HTTP results by status, for
/// [`BreakerLayer::classify_result`](crate::tower::BreakerLayer::classify_result) and
/// [`RetryLayer::retry_responses`](crate::tower::RetryLayer::retry_responses) (see the
/// [module docs](super), *Status-aware breaker and retry*).
#[derive(Clone, Copy, Debug, Default)]
pub struct HttpClassifier;

impl HttpClassifier {
    /// A failure for the breaker: any 5xx, and 429 (the dependency is shedding load).
    #[must_use]
    pub fn is_failure(status: StatusCode) -> bool {
        status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
    }

    /// Worth retrying: 429, 500, 502, 503, 504 (another attempt may succeed). Other 5xx
    /// (501 Not Implemented, 505, ...) will not go away.
    #[must_use]
    pub fn is_retryable(status: StatusCode) -> bool {
        matches!(status.as_u16(), 429 | 500 | 502 | 503 | 504)
    }
}

impl<B> ClassifyResult<Response<B>> for HttpClassifier {
    fn outcome(&self, result: &Result<Response<B>, BoxError>) -> Outcome {
        match result {
            Ok(r) if Self::is_failure(r.status()) => Outcome::Failure,
            Ok(_) => Outcome::Success,
            Err(e) => classify_error(e),
        }
    }
}

impl<B> RetryResponse<Response<B>> for HttpClassifier {
    fn retry(&self, response: &Response<B>) -> Option<RetryAction> {
        let status = response.status();
        if Self::is_retryable(status) {
            Some(match super::retry_after(response.headers()) {
                Some(hint) => RetryAction::RetryAfter(hint),
                None => RetryAction::Retry,
            })
        } else if Self::is_failure(status) {
            Some(RetryAction::Stop)
        } else {
            None
        }
    }
}
