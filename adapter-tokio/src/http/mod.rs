//! HTTP-native layers (feature `http`; `axum` adds axum's `ConnectInfo` and `IntoResponse`):
//! a per-key rate limit that answers `429` itself, keel's errors as HTTP answers, and a
//! status-aware classifier for the breaker and retry layers.
//!
//! # A per-IP limit
//!
//! [`KeyedRateLimitLayer`] keys each request (by default by the peer IP, IPv6 clients by their
//! /64), keeps one GCRA budget per key in a bounded table shared by every clone, and answers a
//! limited request with `429 Too Many Requests`, `Retry-After` and the IETF `RateLimit-Policy` /
//! `RateLimit` fields; admitted responses get the `RateLimit` fields too.
//!
//! ```
//! use std::net::SocketAddr;
//! use std::num::NonZeroU32;
//! use axum::{routing::get, Router};
//! use keel_tokio::core::rate::Quota;
//! use keel_tokio::http::KeyedRateLimitLayer;
//!
//! # async fn serve(listener: tokio::net::TcpListener) -> Result<(), Box<dyn std::error::Error>> {
//! let per_ip = KeyedRateLimitLayer::per_ip(Quota::per_second(NonZeroU32::new(5).unwrap())?)?;
//! let app = Router::new().route("/", get(|| async { "hello\n" })).layer(per_ip);
//! axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
//! # Ok(()) }
//! ```
//!
//! The peer address comes from a [`PeerAddr`] request extension or (feature `axum`) axum's
//! `ConnectInfo<SocketAddr>`, as above. Behind a proxy, key by [`ForwardedIp`] with the proxies'
//! networks (the headers of a peer outside them are ignored). Other keys: [`HeaderKey`], or any
//! `Fn(&RequestHead<'_>) -> Option<K>`. A request without a key is answered `500` by default
//! ([`MissingKey`]).
//!
//! # keel's errors as HTTP answers
//!
//! [`error_response`] maps a keel error (found anywhere in an error's `source()` chain, so a
//! [`RetryGaveUp`](crate::tower::RetryGaveUp) over a rejection maps too) to its status and
//! headers, with a body that tells the client what happened and nothing about the server's
//! configuration:
//!
//! | error | status | `Retry-After` |
//! | --- | --- | --- |
//! | [`KeelError::RateLimited`] | `429 Too Many Requests` | seconds to `retry_at`, rounded up, at least 1 |
//! | [`KeelError::BreakerOpen`] | `503 Service Unavailable` | the same, when the reopening is known |
//! | [`KeelError::BulkheadRejected`] | `503 Service Unavailable` | none |
//! | [`KeelError::TimedOut`] | `504 Gateway Timeout` | none |
//! | anything else | `500 Internal Server Error` | none |
//!
//! With feature `axum`, [`KeelError`] is an `axum::response::IntoResponse` with that mapping;
//! use `error_response` in a `HandleErrorLayer` for the boxed errors of the tower layers.
//!
//! # Status-aware breaker and retry
//!
//! An HTTP dependency answers failures as values: an `Ok(503)` is not an `Err`.
//! [`HttpClassifier`] reads the status: for
//! [`BreakerLayer::classify_result`](crate::tower::BreakerLayer::classify_result), 5xx and 429
//! are failures and other statuses successes (errors as
//! [`classify_error`](crate::tower::classify_error)); for
//! [`RetryLayer::retry_responses`](crate::tower::RetryLayer::retry_responses), 429, 500, 502,
//! 503 and 504 are retried, with the response's `Retry-After` (seconds or an HTTP date) passed
//! to the backoff's hint path (capped at the schedule's `max_retry_after`), and the other 5xx are
//! given back at once.
//!
//! [`KeelError`]: crate::tower::KeelError
//! [`KeelError::RateLimited`]: crate::tower::KeelError::RateLimited
//! [`KeelError::BreakerOpen`]: crate::tower::KeelError::BreakerOpen
//! [`KeelError::BulkheadRejected`]: crate::tower::KeelError::BulkheadRejected
//! [`KeelError::TimedOut`]: crate::tower::KeelError::TimedOut

mod classify;
mod key;
mod limit;

use std::time::{Duration, SystemTime};

use http::header::RETRY_AFTER;
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use crate::tower::KeelError;

pub use classify::HttpClassifier;
pub use key::{Cidr, ForwardedIp, HeaderKey, KeyExtractor, PeerAddr, PeerIp, RequestHead};
pub use limit::{KeyedRateLimit, KeyedRateLimitLayer, MissingKey, DEFAULT_MAX_KEYS};

/// Whole seconds in `d`, rounded up.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}

/// A `Retry-After` delay: whole seconds, rounded up (rounding down would invite a retry that is
/// still refused), and never 0 for a refusal.
fn retry_after_secs(d: Duration) -> u64 {
    ceil_secs(d).max(1)
}

/// A plain-text answer.
fn plain<B: From<String>>(status: StatusCode, body: &str) -> Response<B> {
    let mut response = Response::new(B::from(body.to_owned()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The HTTP answer to a keel error (see the [module docs](self) for the table).
#[must_use]
pub fn keel_error_response<B: From<String>>(error: &KeelError) -> Response<B> {
    let (status, body) = match error {
        KeelError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "too many requests"),
        KeelError::BreakerOpen { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "service temporarily unavailable",
        ),
        KeelError::BulkheadRejected(_) => (StatusCode::SERVICE_UNAVAILABLE, "server busy"),
        KeelError::TimedOut { .. } => (StatusCode::GATEWAY_TIMEOUT, "the request timed out"),
    };
    match error
        .retry_at()
        .map(|at| retry_after_secs(at.saturating_duration_since(crate::now())))
    {
        Some(wait) => {
            let mut r = plain(status, &format!("{body}: retry in {wait} s\n"));
            r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(wait));
            r
        }
        None => plain(status, &format!("{body}: retry later\n")),
    }
}

/// The HTTP answer to an error of a keel layer: the first [`KeelError`] in its `source()`
/// chain answered as [`keel_error_response`] does, anything else `500 Internal Server Error`
/// (the error's text is not shown to the client: log it yourself).
#[must_use]
pub fn error_response<B: From<String>>(error: &(dyn std::error::Error + 'static)) -> Response<B> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(keel) = e.downcast_ref::<KeelError>() {
            return keel_error_response(keel);
        }
        next = e.source();
    }
    plain(StatusCode::INTERNAL_SERVER_ERROR, "internal server error\n")
}

/// A response's `Retry-After`: delay-seconds, or an HTTP date (the delay from the system clock's
/// now, zero if it has passed). `None` when absent or malformed.
#[must_use]
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(feature = "axum")]
impl axum::response::IntoResponse for KeelError {
    /// [`keel_error_response`].
    fn into_response(self) -> axum::response::Response {
        keel_error_response(&self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates_and_rejects_garbage() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("-1"));
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO), "a past date: now");
        let future = SystemTime::now() + Duration::from_secs(120);
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_str(&httpdate::fmt_http_date(future)).unwrap(),
        );
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
    }

    #[test]
    fn seconds_round_up_and_a_refusal_never_says_zero() {
        assert_eq!(ceil_secs(Duration::ZERO), 0);
        assert_eq!(ceil_secs(Duration::from_nanos(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
        assert_eq!(ceil_secs(Duration::from_millis(2001)), 3);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(ceil_secs(Duration::MAX), u64::MAX);
    }
}
