//! [`KeyedRateLimitLayer`]: a per-key (per-IP, per-header) rate limit that answers `429` itself.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use ::tower::{Layer, Service};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use keel_core::rate::keyed::{DecidedBy, KeyedConfig, KeyedLimited};
use keel_core::rate::Quota;
use keel_core::time::Instant;
use keel_core::ConfigError;
use keel_core::Rejected;

use super::key::{KeyExtractor, PeerIp, RequestHead};
use super::{ceil_secs, plain, retry_after_secs};
use crate::KeyedRateLimiter;

/// The keys a layer built by [`KeyedRateLimitLayer::per_ip`] or
/// [`KeyedRateLimitLayer::with_quota`] tracks at once: about 6 MB for IP keys, allocated up
/// front (see [`keel_core::rate::keyed`]; when every tracked key is active, new ones share one
/// overflow limiter at the same quota).
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// What a [`KeyedRateLimitLayer`] does with a request its extractor finds no key for.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MissingKey<K> {
    /// Answer with this status (no inner call). The default is `500 Internal Server Error`:
    /// for the peer-address extractors a missing address is a deployment error (axum served
    /// without `into_make_service_with_connect_info::<SocketAddr>()`, no [`PeerAddr`](super::PeerAddr)
    /// inserted), which must not pass unlimited or silently share one budget. A header key
    /// usually wants `400 Bad Request`.
    Reject(StatusCode),
    /// Limit every such request under this one key (they share its budget).
    Shared(K),
}

/// A keyed rate limit for HTTP services: finds each request's key with a [`KeyExtractor`]
/// (default: the peer IP, IPv6 by /64), checks the key's own GCRA budget in a bounded table
/// shared by every service and clone of the layer, and **answers a limited request itself**:
/// `429 Too Many Requests` with `Retry-After` (whole seconds, rounded up, at least 1), the IETF
/// `RateLimit-Policy` and `RateLimit` fields, and a short plain-text body for the client. An
/// admitted request goes to the inner service, and its response gets the two `RateLimit`
/// fields too (turn that off with [`rate_limit_headers(false)`](Self::rate_limit_headers)).
///
/// The fields follow draft-ietf-httpapi-ratelimit-headers (structured fields): with policy name
/// `p` (default `"default"`), burst `b` and one request every `T`,
/// `RateLimit-Policy: "p";q=b;w=W` where `W` is the seconds the whole burst takes to refill
/// (`b × T`, rounded up), and `RateLimit: "p";r=R;t=S` where `R` is what the key may still send
/// now and `S` the seconds until its burst is whole again (rounded up), both read from the
/// key's own state in the same lock as the decision. A request decided by the overflow limiter
/// of a full table (see [`keel_core::rate::keyed`]) gets no `RateLimit` field when admitted (its
/// budget is not the key's).
///
/// The service's error type is the inner service's (no [`BoxError`](crate::tower::BoxError)),
/// so it fits `axum::Router::layer` directly; it is always ready and waits for the inner
/// service's readiness inside the call future, as the other keel layers do.
///
/// ```
/// use std::net::SocketAddr;
/// use std::num::NonZeroU32;
/// use std::time::Duration;
///
/// use http::{Request, Response, StatusCode};
/// use keel_tokio::core::rate::Quota;
/// use keel_tokio::http::{KeyedRateLimitLayer, PeerAddr};
/// use tower::{service_fn, Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // Per peer IP: one request every 2 s, bursts of 2.
/// let quota = Quota::with_period(Duration::from_secs(2))?.with_burst(NonZeroU32::new(2).unwrap())?;
/// let layer = KeyedRateLimitLayer::per_ip(quota)?;
/// let svc = layer.layer(service_fn(|_: Request<String>| async {
///     Ok::<_, std::convert::Infallible>(Response::new(String::from("ok")))
/// }));
/// let from = |peer: &str| {
///     let mut req = Request::new(String::new());
///     req.extensions_mut().insert(PeerAddr(peer.parse::<SocketAddr>().unwrap()));
///     req
/// };
/// for remaining in [1, 0] {
///     let ok = svc.clone().oneshot(from("192.0.2.1:4000")).await?;
///     assert_eq!(ok.status(), StatusCode::OK);
///     assert_eq!(ok.headers()["ratelimit-policy"], "\"default\";q=2;w=4");
///     assert_eq!(ok.headers()["ratelimit"], format!("\"default\";r={remaining};t={}", 4 - 2 * remaining));
/// }
/// // The third is answered by the layer itself: 429, retry in 2 s.
/// let limited = svc.clone().oneshot(from("192.0.2.1:4001")).await?;
/// assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
/// assert_eq!(limited.headers()["retry-after"], "2");
/// assert_eq!(limited.headers()["ratelimit"], "\"default\";r=0;t=4");
/// // Another address has its own budget.
/// let other = svc.oneshot(from("192.0.2.2:4000")).await?;
/// assert_eq!(other.status(), StatusCode::OK);
/// # Ok(()) }
/// ```
pub struct KeyedRateLimitLayer<X: KeyExtractor = PeerIp> {
    limiter: KeyedRateLimiter<X::Key>,
    extractor: X,
    missing: MissingKey<X::Key>,
    headers: bool,
    policy: Arc<Policy>,
}

/// The policy name and its `RateLimit-Policy` value, built once for the quota the limiter had
/// when the layer (or its policy name) was set: a request clones the value (a reference count),
/// and builds it afresh only if the limiter's quota was changed since (`set_quota`).
#[derive(Debug)]
struct Policy {
    name: Box<str>,
    quota: Quota,
    field: HeaderValue,
}

impl Policy {
    fn new(name: Box<str>, quota: Quota) -> Self {
        let field = policy_field(&name, quota);
        Policy { name, quota, field }
    }

    /// The `RateLimit-Policy` value for `quota`.
    fn field(&self, quota: Quota) -> HeaderValue {
        if quota == self.quota {
            self.field.clone()
        } else {
            policy_field(&self.name, quota)
        }
    }
}

impl<X: KeyExtractor + Clone> Clone for KeyedRateLimitLayer<X> {
    fn clone(&self) -> Self {
        KeyedRateLimitLayer {
            limiter: self.limiter.clone(),
            extractor: self.extractor.clone(),
            missing: self.missing.clone(),
            headers: self.headers,
            policy: Arc::clone(&self.policy),
        }
    }
}

impl<X: KeyExtractor + std::fmt::Debug> std::fmt::Debug for KeyedRateLimitLayer<X> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedRateLimitLayer")
            .field("extractor", &self.extractor)
            .field("headers", &self.headers)
            .field("policy", &self.policy.name)
            .finish_non_exhaustive()
    }
}

impl KeyedRateLimitLayer<PeerIp> {
    /// Per peer IP (IPv6 by /64), each with `quota`, at most [`DEFAULT_MAX_KEYS`] tracked.
    ///
    /// # Errors
    ///
    /// As [`KeyedConfigBuilder::build`](keel_core::rate::keyed::KeyedConfigBuilder::build)
    /// (only if the OS random source for the hash key fails).
    pub fn per_ip(quota: Quota) -> Result<Self, ConfigError> {
        Self::with_quota(quota, PeerIp::default())
    }
}

impl<X: KeyExtractor> KeyedRateLimitLayer<X> {
    /// Keys by `extractor`, each key with `quota`, at most [`DEFAULT_MAX_KEYS`] tracked.
    ///
    /// # Errors
    ///
    /// As [`KeyedConfigBuilder::build`](keel_core::rate::keyed::KeyedConfigBuilder::build).
    pub fn with_quota(quota: Quota, extractor: X) -> Result<Self, ConfigError> {
        let config = KeyedConfig::builder()
            .quota(quota)
            .max_keys(DEFAULT_MAX_KEYS)
            .build()?;
        Ok(Self::new(config, extractor))
    }

    /// Keys by `extractor`, with a fresh keyed limiter of `config` (table size, full-table
    /// policy, hash key).
    #[must_use]
    pub fn new(config: KeyedConfig, extractor: X) -> Self {
        Self::from_limiter(KeyedRateLimiter::new(config), extractor)
    }

    /// Keys by `extractor`, on an existing keyed limiter (shared with whatever else checks it).
    #[must_use]
    pub fn from_limiter(limiter: KeyedRateLimiter<X::Key>, extractor: X) -> Self {
        let policy = Arc::new(Policy::new(Box::from("default"), limiter.quota()));
        KeyedRateLimitLayer {
            limiter,
            extractor,
            missing: MissingKey::Reject(StatusCode::INTERNAL_SERVER_ERROR),
            headers: true,
            policy,
        }
    }

    /// What to do with a request that has no key (default
    /// `MissingKey::Reject(StatusCode::INTERNAL_SERVER_ERROR)`, see [`MissingKey`]).
    #[must_use]
    pub fn on_missing_key(mut self, missing: MissingKey<X::Key>) -> Self {
        self.missing = missing;
        self
    }

    /// Whether admitted responses carry `RateLimit-Policy` and `RateLimit` (default `true`;
    /// a `429` always carries them).
    #[must_use]
    pub fn rate_limit_headers(mut self, on: bool) -> Self {
        self.headers = on;
        self
    }

    /// The policy name in the `RateLimit` fields (default `default`). Characters a structured
    /// field string cannot hold (outside printable ASCII, `"` and `\`) are dropped.
    #[must_use]
    pub fn policy_name(mut self, name: &str) -> Self {
        let clean: String = name
            .chars()
            .filter(|c| (' '..='~').contains(c) && *c != '"' && *c != '\\')
            .collect();
        self.policy = Arc::new(Policy::new(clean.into_boxed_str(), self.limiter.quota()));
        self
    }

    /// The shared keyed limiter.
    #[must_use]
    pub fn limiter(&self) -> &KeyedRateLimiter<X::Key> {
        &self.limiter
    }
}

impl<S, X: KeyExtractor + Clone> Layer<S> for KeyedRateLimitLayer<X> {
    type Service = KeyedRateLimit<S, X>;

    fn layer(&self, inner: S) -> KeyedRateLimit<S, X> {
        KeyedRateLimit {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`KeyedRateLimitLayer`].
pub struct KeyedRateLimit<S, X: KeyExtractor = PeerIp> {
    inner: S,
    layer: KeyedRateLimitLayer<X>,
}

impl<S: Clone, X: KeyExtractor + Clone> Clone for KeyedRateLimit<S, X> {
    fn clone(&self) -> Self {
        KeyedRateLimit {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S: std::fmt::Debug, X: KeyExtractor + std::fmt::Debug> std::fmt::Debug
    for KeyedRateLimit<S, X>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedRateLimit")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

/// The key's state read with the decision, for the `RateLimit` fields.
#[derive(Clone, Copy, Debug)]
struct KeyState {
    now: Instant,
    quota: Quota,
    remaining: u32,
    reset_at: Instant,
    by: DecidedBy,
}

/// The one place a keyed rejection becomes an answer: its status and, where known, the instant
/// a retry would be admitted (for `Retry-After`).
fn rejection_answer(rejection: &Rejected<KeyedLimited>) -> (StatusCode, Option<Instant>) {
    match rejection.reason {
        KeyedLimited::OverRate => (StatusCode::TOO_MANY_REQUESTS, rejection.retry_at),
        // `Full::RejectNew` with every slot active: the server cannot track this client now.
        // (`InsufficientCapacity` cannot happen for one request: bursts are at least 1.)
        _ => (StatusCode::SERVICE_UNAVAILABLE, None),
    }
}

/// The `RateLimit-Policy` value.
fn policy_field(policy: &str, quota: Quota) -> HeaderValue {
    let burst = quota.burst().get();
    let window = quota.emission_interval().saturating_mul(burst);
    header_value(format_args!(
        "\"{policy}\";q={burst};w={}",
        ceil_secs(window).max(1)
    ))
}

/// The `RateLimit` value.
fn limit_field(policy: &str, state: &KeyState) -> HeaderValue {
    let reset = ceil_secs(state.reset_at.saturating_duration_since(state.now));
    header_value(format_args!("\"{policy}\";r={};t={reset}", state.remaining))
}

/// A header value formatted on the stack (the value's own bytes are its one allocation); a
/// value longer than the buffer (a very long policy name) is formatted on the heap.
fn header_value(args: std::fmt::Arguments<'_>) -> HeaderValue {
    let mut buf = StackBuf {
        bytes: [0; 128],
        len: 0,
    };
    let value = if std::fmt::Write::write_fmt(&mut buf, args).is_ok() {
        HeaderValue::from_bytes(buf.bytes.get(..buf.len).unwrap_or_default())
    } else {
        HeaderValue::from_str(&std::fmt::format(args))
    };
    // The name holds only printable ASCII (`policy_name` filters it), the rest are digits.
    value.unwrap_or_else(|_| HeaderValue::from_static("\"default\""))
}

/// A fixed buffer that refuses what does not fit.
struct StackBuf {
    bytes: [u8; 128],
    len: usize,
}

impl std::fmt::Write for StackBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len.checked_add(s.len()).ok_or(std::fmt::Error)?;
        let dst = self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

fn add_fields(headers: &mut HeaderMap, policy: &Policy, state: &KeyState, limited: bool) {
    headers.insert("ratelimit-policy", policy.field(state.quota));
    if limited || state.by == DecidedBy::Key {
        headers.insert("ratelimit", limit_field(&policy.name, state));
    }
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, X, ReqB, ResB> Service<Request<ReqB>> for KeyedRateLimit<S, X>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    X: KeyExtractor + Clone,
    ReqB: Send + 'static,
    ResB: From<String> + Send + 'static,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = BoxFuture<Response<ResB>, S::Error>;

    /// Always ready: the inner service's readiness is awaited inside the call future, after the
    /// limit admitted the request.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let layer = &self.layer;
        let key = match layer.extractor.extract(&RequestHead::of(&req)) {
            Some(key) => key,
            None => match &layer.missing {
                MissingKey::Shared(key) => key.clone(),
                MissingKey::Reject(status) => {
                    let status = *status;
                    let body = if status.is_server_error() {
                        "internal server error\n"
                    } else {
                        "the request does not say which client it is from\n"
                    };
                    return Box::pin(async move { Ok(plain(status, body)) });
                }
            },
        };
        // Decided (and counted in the limiter's metrics) with the key's state read in one lock.
        let (decision, state) = layer.limiter.decide_with(&key, |entry, decision| {
            let state = KeyState {
                now: entry.now(),
                quota: entry.quota(),
                remaining: entry.remaining(),
                reset_at: entry.reset_at(),
                by: decision.by,
            };
            (decision.result, state)
        });
        let policy = Arc::clone(&layer.policy);
        match decision {
            Ok(()) => {
                let mut inner = self.inner.clone();
                let headers = layer.headers;
                Box::pin(async move {
                    std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
                    let mut response = inner.call(req).await?;
                    if headers {
                        add_fields(response.headers_mut(), &policy, &state, false);
                    }
                    Ok(response)
                })
            }
            Err(rejection) => {
                let (status, retry_at) = rejection_answer(&rejection);
                let mut response = match retry_at {
                    Some(at) => {
                        let wait = retry_after_secs(at.saturating_duration_since(state.now));
                        let mut r =
                            plain(status, &format!("too many requests: retry in {wait} s\n"));
                        r.headers_mut()
                            .insert(http::header::RETRY_AFTER, HeaderValue::from(wait));
                        r
                    }
                    None => plain(status, "server busy: retry later\n"),
                };
                // Limited: nothing remains, and the budget is not whole before the retry.
                let state = KeyState {
                    remaining: 0,
                    reset_at: state.reset_at.max(retry_at.unwrap_or(state.now)),
                    ..state
                };
                add_fields(response.headers_mut(), &policy, &state, true);
                Box::pin(async move { Ok(response) })
            }
        }
    }
}
