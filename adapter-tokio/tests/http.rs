//! The HTTP layers (feature `http`): the keyed limit's 429 with exact `Retry-After` and
//! `RateLimit` fields, trusted and untrusted proxies, IPv6 prefixes, keel errors as HTTP
//! answers, and status-aware breaker and retry. On tokio's paused clock, through
//! `ServiceExt::oneshot` with `http` types.
#![cfg(feature = "http")]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode};
use keel_tokio::core::rate::keyed::KeyedConfig;
use keel_tokio::core::rate::Quota;
use keel_tokio::http::{
    error_response, keel_error_response, Cidr, ForwardedIp, HeaderKey, HttpClassifier,
    KeyExtractor, KeyedRateLimitLayer, MissingKey, PeerAddr, PeerIp, RequestHead,
};
use keel_tokio::tower::{BoxError, KeelError};
use tower::{service_fn, Layer, Service, ServiceExt};

/// One request every `period`, bursts of `burst`.
fn quota(period: Duration, burst: u32) -> Quota {
    Quota::with_period(period)
        .unwrap()
        .with_burst(NonZeroU32::new(burst).unwrap())
        .unwrap()
}

fn layer<X: KeyExtractor>(q: Quota, extractor: X) -> KeyedRateLimitLayer<X> {
    let config = KeyedConfig::builder()
        .quota(q)
        .max_keys(64)
        .hash_seed(0x1234_5678_9abc_def0_1234_5678_9abc_def0)
        .build()
        .unwrap();
    KeyedRateLimitLayer::new(config, extractor)
}

fn ok_service(
) -> impl Service<Request<String>, Response = Response<String>, Error = Infallible, Future: Send>
       + Clone
       + Send
       + 'static {
    service_fn(|_req: Request<String>| async { Ok::<_, Infallible>(Response::new("ok".into())) })
}

fn from(peer: &str) -> Request<String> {
    let mut req = Request::new(String::new());
    req.extensions_mut()
        .insert(PeerAddr(peer.parse::<SocketAddr>().unwrap()));
    req
}

fn with_xff(peer: &str, xff: &str) -> Request<String> {
    let mut req = from(peer);
    req.headers_mut()
        .insert("x-forwarded-for", HeaderValue::from_str(xff).unwrap());
    req
}

async fn send<S>(svc: &S, req: Request<String>) -> Response<String>
where
    S: Service<Request<String>, Response = Response<String>, Error = Infallible> + Clone,
{
    svc.clone().oneshot(req).await.unwrap()
}

fn header(r: &Response<String>, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

fn advance(d: Duration) -> impl std::future::Future<Output = ()> {
    tokio::time::advance(d)
}

#[tokio::test(start_paused = true)]
async fn a_limited_request_gets_429_with_exact_retry_after_and_ratelimit_fields() {
    // Burst 3, one request every 2 s: the whole burst refills in 6 s.
    let svc = layer(quota(Duration::from_secs(2), 3), PeerIp::default()).layer(ok_service());
    let peer = "192.0.2.1:5000";
    let expected = [(2, 2), (1, 4), (0, 6)];
    for (remaining, reset) in expected {
        let r = send(&svc, from(peer)).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            header(&r, "ratelimit-policy").unwrap(),
            "\"default\";q=3;w=6"
        );
        assert_eq!(
            header(&r, "ratelimit").unwrap(),
            format!("\"default\";r={remaining};t={reset}")
        );
        assert_eq!(header(&r, "retry-after"), None);
    }
    let r = send(&svc, from(peer)).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&r, "retry-after").unwrap(), "2");
    assert_eq!(header(&r, "ratelimit").unwrap(), "\"default\";r=0;t=6");
    assert_eq!(
        header(&r, "ratelimit-policy").unwrap(),
        "\"default\";q=3;w=6"
    );
    assert_eq!(r.body(), "too many requests: retry in 2 s\n");
    // 1.5 s later: 0.5 s to wait, rounded up to 1; the burst is whole in 4.5 s, rounded to 5.
    advance(Duration::from_millis(1500)).await;
    let r = send(&svc, from(peer)).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&r, "retry-after").unwrap(), "1");
    assert_eq!(header(&r, "ratelimit").unwrap(), "\"default\";r=0;t=5");
    // One nanosecond before the token: still limited, and Retry-After is never 0.
    advance(Duration::from_millis(500) - Duration::from_nanos(1)).await;
    let r = send(&svc, from(peer)).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&r, "retry-after").unwrap(), "1");
    // At the token: admitted, nothing left, whole again in 6 s.
    advance(Duration::from_nanos(1)).await;
    let r = send(&svc, from(peer)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "ratelimit").unwrap(), "\"default\";r=0;t=6");
    // Another client has its own budget.
    let r = send(&svc, from("192.0.2.2:5000")).await;
    assert_eq!(header(&r, "ratelimit").unwrap(), "\"default\";r=2;t=2");
}

#[tokio::test(start_paused = true)]
async fn fields_on_admitted_responses_can_be_turned_off_and_the_policy_named() {
    let svc = layer(quota(Duration::from_secs(1), 1), PeerIp::default())
        .rate_limit_headers(false)
        .policy_name("per-ip\"\u{e9}")
        .layer(ok_service());
    let r = send(&svc, from("192.0.2.1:1")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "ratelimit"), None);
    assert_eq!(header(&r, "ratelimit-policy"), None);
    let r = send(&svc, from("192.0.2.1:1")).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&r, "ratelimit").unwrap(), "\"per-ip\";r=0;t=1");
    assert_eq!(
        header(&r, "ratelimit-policy").unwrap(),
        "\"per-ip\";q=1;w=1"
    );
}

#[tokio::test(start_paused = true)]
async fn a_trusted_proxys_forwarded_for_keys_the_limit_and_an_untrusted_ones_does_not() {
    let trusted: Cidr = "10.0.0.0/8".parse().unwrap();
    let svc = layer(
        quota(Duration::from_secs(60), 1),
        ForwardedIp::x_forwarded_for([trusted]),
    )
    .layer(ok_service());
    // Through the trusted proxy 10.0.0.1: each client address has its own budget.
    let proxy = "10.0.0.1:40000";
    assert_eq!(
        send(&svc, with_xff(proxy, "203.0.113.5")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&svc, with_xff(proxy, "203.0.113.6, 10.0.0.9"))
            .await
            .status(),
        StatusCode::OK,
        "a second client behind two trusted hops"
    );
    assert_eq!(
        send(&svc, with_xff(proxy, "6.6.6.6, 203.0.113.5"))
            .await
            .status(),
        StatusCode::TOO_MANY_REQUESTS,
        "a spoofed left-most entry does not buy a fresh budget"
    );
    // Clients behind the proxy are grouped like direct ones: IPv6 by /64.
    assert_eq!(
        send(&svc, with_xff(proxy, "2001:db8:5:6::1"))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&svc, with_xff(proxy, "2001:db8:5:6::2"))
            .await
            .status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the same /64 behind the proxy"
    );
    // An untrusted peer's header is ignored: it is keyed by its own address.
    let direct = "198.51.100.7:40000";
    assert_eq!(
        send(&svc, with_xff(direct, "203.0.113.77")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&svc, with_xff(direct, "203.0.113.78")).await.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "rotating the header does not rotate the key"
    );
}

#[tokio::test(start_paused = true)]
async fn ipv6_peers_are_grouped_by_their_64() {
    let svc = layer(quota(Duration::from_secs(60), 1), PeerIp::default()).layer(ok_service());
    assert_eq!(
        send(&svc, from("[2001:db8:1:2::1]:443")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&svc, from("[2001:db8:1:2:ffff:ffff:ffff:fffe]:443"))
            .await
            .status(),
        StatusCode::TOO_MANY_REQUESTS,
        "same /64, same budget"
    );
    assert_eq!(
        send(&svc, from("[2001:db8:1:3::1]:443")).await.status(),
        StatusCode::OK,
        "the next /64 is another client"
    );
    // A /128 keyer tells them apart.
    let exact = PeerIp::new(keel_tokio::core::rate::ip::IpKeyer::v6_prefix(128).unwrap());
    let svc = layer(quota(Duration::from_secs(60), 1), exact).layer(ok_service());
    assert_eq!(
        send(&svc, from("[2001:db8:1:2::1]:443")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&svc, from("[2001:db8:1:2::2]:443")).await.status(),
        StatusCode::OK
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_without_a_key_is_rejected_by_default_or_shares_one_key() {
    let svc = layer(quota(Duration::from_secs(60), 1), PeerIp::default()).layer(ok_service());
    let r = send(&svc, Request::new(String::new())).await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.body(), "internal server error\n");
    let api_key = HeaderKey::new(http::header::HeaderName::from_static("x-api-key"));
    let svc = layer(quota(Duration::from_secs(60), 1), api_key.clone())
        .on_missing_key(MissingKey::Reject(StatusCode::BAD_REQUEST))
        .layer(ok_service());
    let r = send(&svc, Request::new(String::new())).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let svc = layer(quota(Duration::from_secs(60), 1), api_key)
        .on_missing_key(MissingKey::Shared(HeaderValue::from_static("anonymous")))
        .layer(ok_service());
    assert_eq!(
        send(&svc, Request::new(String::new())).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&svc, Request::new(String::new())).await.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "keyless requests share one budget"
    );
    let mut keyed = Request::new(String::new());
    keyed
        .headers_mut()
        .insert("x-api-key", HeaderValue::from_static("k1"));
    assert_eq!(send(&svc, keyed).await.status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn a_closure_is_a_key_extractor() {
    let by_path = |head: &RequestHead<'_>| Some(head.uri().path().to_owned());
    let svc = layer(quota(Duration::from_secs(60), 1), by_path).layer(ok_service());
    let to = |path: &str| Request::builder().uri(path).body(String::new()).unwrap();
    assert_eq!(send(&svc, to("/a")).await.status(), StatusCode::OK);
    assert_eq!(send(&svc, to("/b")).await.status(), StatusCode::OK);
    assert_eq!(
        send(&svc, to("/a")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test(start_paused = true)]
async fn keel_errors_map_to_statuses_with_client_safe_bodies() {
    let now = keel_tokio::now();
    let limited = KeelError::RateLimited {
        retry_at: now + Duration::from_millis(1200),
    };
    let r: Response<String> = keel_error_response(&limited);
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&r, "retry-after").unwrap(), "2");
    let open = KeelError::BreakerOpen {
        retry_at: Some(now + Duration::from_secs(30)),
    };
    let r: Response<String> = keel_error_response(&open);
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&r, "retry-after").unwrap(), "30");
    let r: Response<String> = keel_error_response(&KeelError::BreakerOpen { retry_at: None });
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&r, "retry-after"), None);
    let r: Response<String> = keel_error_response(&KeelError::TimedOut {
        after: Duration::from_secs(3),
    });
    assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
    // A rate limit that has passed still says at least 1 s.
    let passed = KeelError::RateLimited { retry_at: now };
    let r: Response<String> = keel_error_response(&passed);
    assert_eq!(header(&r, "retry-after").unwrap(), "1");

    // Bulkhead rejections, from a real bulkhead: 503, no operator advice in the body.
    use keel_tokio::core::bulkhead::BulkheadConfig;
    use keel_tokio::tower::BulkheadLayer;
    let bulkhead = BulkheadLayer::new(BulkheadConfig::builder().max_concurrent(1).build().unwrap());
    let slow = service_fn(|_: u32| async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok::<_, Infallible>(0u32)
    });
    let svc = bulkhead.layer(slow);
    let busy = tokio::spawn(svc.clone().oneshot(1));
    tokio::task::yield_now().await;
    let err: BoxError = svc.clone().oneshot(2).await.unwrap_err();
    let internal = err.to_string();
    let r: Response<String> = error_response(&*err);
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.body(), "server busy: retry later\n");
    assert!(!r.body().contains("max_"), "{internal} leaked");
    busy.abort();

    // Anything else: 500, the error's text kept from the client.
    let other: BoxError = "database password is hunter2".into();
    let r: Response<String> = error_response(&*other);
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!r.body().contains("hunter2"));
}

/// A service answering `statuses` in turn (the last one forever), with `Retry-After` when given.
fn answering(
    statuses: &'static [(u16, Option<&'static str>)],
    calls: Arc<AtomicU32>,
) -> impl Service<Request<String>, Response = Response<String>, Error = BoxError, Future: Send>
       + Clone
       + Send
       + 'static {
    service_fn(move |_req: Request<String>| {
        let n = calls.fetch_add(1, Ordering::SeqCst) as usize;
        let (status, retry_after) = statuses[n.min(statuses.len() - 1)];
        async move {
            let mut r = Response::new(format!("{status}"));
            *r.status_mut() = StatusCode::from_u16(status).unwrap();
            if let Some(v) = retry_after {
                r.headers_mut()
                    .insert("retry-after", HeaderValue::from_static(v));
            }
            Ok::<_, BoxError>(r)
        }
    })
}

#[tokio::test(start_paused = true)]
async fn an_ok_503_opens_the_breaker_with_the_http_classifier() {
    use keel_tokio::core::breaker::{BreakerConfig, State};
    use keel_tokio::tower::BreakerLayer;

    let config = || BreakerConfig::consecutive_failures(2).build().unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let failing = answering(&[(503, None)], Arc::clone(&calls));
    // The default (errors only) counts `Ok(503)` as healthy.
    let blind = BreakerLayer::new(config());
    let svc = blind.layer(failing.clone());
    for _ in 0..3 {
        let r = svc
            .clone()
            .oneshot(Request::new(String::new()))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(blind.breaker().state(), State::Closed);

    let layer = BreakerLayer::new(config()).classify_result(HttpClassifier);
    let svc = layer.layer(failing);
    for _ in 0..2 {
        let r = svc
            .clone()
            .oneshot(Request::new(String::new()))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(layer.breaker().state(), State::Open);
    let before = calls.load(Ordering::SeqCst);
    let err = svc
        .clone()
        .oneshot(Request::new(String::new()))
        .await
        .unwrap_err();
    assert!(matches!(
        err.downcast_ref::<KeelError>(),
        Some(KeelError::BreakerOpen { .. })
    ));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        before,
        "rejected without a call"
    );
    let r: Response<String> = error_response(&*err);
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(header(&r, "retry-after").is_some());

    // 4xx other than 429 are the client's: they keep the breaker closed.
    let layer = BreakerLayer::new(config()).classify_result(HttpClassifier);
    let svc = layer.layer(answering(&[(404, None)], Arc::new(AtomicU32::new(0))));
    for _ in 0..3 {
        let _ = svc
            .clone()
            .oneshot(Request::new(String::new()))
            .await
            .unwrap();
    }
    assert_eq!(layer.breaker().state(), State::Closed);
    // 429 is a failure.
    let layer = BreakerLayer::new(config()).classify_result(HttpClassifier);
    let svc = layer.layer(answering(&[(429, None)], Arc::new(AtomicU32::new(0))));
    for _ in 0..2 {
        let _ = svc
            .clone()
            .oneshot(Request::new(String::new()))
            .await
            .unwrap();
    }
    assert_eq!(layer.breaker().state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn the_retry_layer_honours_a_responses_retry_after_up_to_the_cap() {
    use keel_tokio::core::backoff::{BackoffConfig, Jitter};
    use keel_tokio::tower::RetryLayer;

    let backoff = |cap: Duration| {
        BackoffConfig::constant(Duration::from_millis(10))
            .jitter(Jitter::None)
            .max_attempts(3)
            .max_retry_after(cap)
            .build()
            .unwrap()
    };
    static SCRIPT: [(u16, Option<&str>); 2] = [(503, Some("2")), (200, None)];

    // Under the cap: waits the server's 2 s (not the schedule's 10 ms), then succeeds.
    let calls = Arc::new(AtomicU32::new(0));
    let svc = RetryLayer::new(backoff(Duration::from_secs(5)))
        .retry_responses(HttpClassifier)
        .layer(answering(&SCRIPT, Arc::clone(&calls)));
    let start = tokio::time::Instant::now();
    let r = svc.oneshot(Request::new(String::new())).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(start.elapsed(), Duration::from_secs(2));

    // Over the cap: waits the cap, 1 s.
    let calls = Arc::new(AtomicU32::new(0));
    let svc = RetryLayer::new(backoff(Duration::from_secs(1)))
        .retry_responses(HttpClassifier)
        .layer(answering(&SCRIPT, Arc::clone(&calls)));
    let start = tokio::time::Instant::now();
    let r = svc.oneshot(Request::new(String::new())).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(start.elapsed(), Duration::from_secs(1));

    // Without `retry_responses` an Ok(503) is the answer: one call.
    let calls = Arc::new(AtomicU32::new(0));
    let svc = RetryLayer::new(backoff(Duration::from_secs(5)))
        .layer(answering(&SCRIPT, Arc::clone(&calls)));
    let r = svc.oneshot(Request::new(String::new())).await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Always 503: after max_attempts the last response is the answer (not an error).
    static ALWAYS: [(u16, Option<&str>); 1] = [(503, None)];
    let calls = Arc::new(AtomicU32::new(0));
    let layer = RetryLayer::new(backoff(Duration::from_secs(5))).retry_responses(HttpClassifier);
    let svc = layer.clone().layer(answering(&ALWAYS, Arc::clone(&calls)));
    let start = tokio::time::Instant::now();
    let r = svc.oneshot(Request::new(String::new())).await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(20),
        "the schedule, no hint"
    );
    assert_eq!(layer.retry().stats().gave_up_exhausted, 1);

    // 501 will not go away: given back at once.
    static NOT_IMPLEMENTED: [(u16, Option<&str>); 1] = [(501, None)];
    let calls = Arc::new(AtomicU32::new(0));
    let svc = RetryLayer::new(backoff(Duration::from_secs(5)))
        .retry_responses(HttpClassifier)
        .layer(answering(&NOT_IMPLEMENTED, Arc::clone(&calls)));
    let r = svc.oneshot(Request::new(String::new())).await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_IMPLEMENTED);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_request_the_overflow_limiter_admits_gets_no_ratelimit_field_of_another_budget() {
    use keel_tokio::core::rate::keyed::Full;
    let config = KeyedConfig::builder()
        .quota(quota(Duration::from_secs(60), 2))
        .max_keys(1)
        .full(Full::Overflow)
        .hash_seed(7)
        .build()
        .unwrap();
    let svc = KeyedRateLimitLayer::new(config, PeerIp::default()).layer(ok_service());
    let r = send(&svc, from("192.0.2.1:1")).await;
    assert_eq!(header(&r, "ratelimit").unwrap(), "\"default\";r=1;t=60");
    // The table is full of an active key: 192.0.2.2 is decided by the shared overflow limiter.
    let r = send(&svc, from("192.0.2.2:1")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "ratelimit"), None, "not this key's budget");
    assert!(header(&r, "ratelimit-policy").is_some());
    let r = send(&svc, from("192.0.2.3:1")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = send(&svc, from("192.0.2.4:1")).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "overflow spent");
    let wait: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
    assert_eq!(wait, 60);
    assert_eq!(
        header(&r, "ratelimit").unwrap(),
        "\"default\";r=0;t=60",
        "a refusal says when to come back"
    );
}

#[cfg(feature = "axum")]
#[tokio::test(start_paused = true)]
async fn keel_error_is_an_axum_response() {
    use axum::response::IntoResponse;
    let r = KeelError::RateLimited {
        retry_at: keel_tokio::now() + Duration::from_secs(3),
    }
    .into_response();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["retry-after"], "3");
    let r = KeelError::TimedOut {
        after: Duration::from_secs(1),
    }
    .into_response();
    assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
}

/// `RateLimit-Policy` is built once when the layer is built, for the limiter's quota then: a
/// quota changed later on the shared limiter is still reported (not the stale cached value),
/// and a policy name longer than the stack buffer the values are formatted in is kept whole.
#[tokio::test(start_paused = true)]
async fn the_policy_field_follows_a_changed_quota_and_long_names() {
    let long = "p".repeat(300);
    let layer = layer(quota(Duration::from_secs(1), 2), PeerIp::default()).policy_name(&long);
    let limiter = layer.limiter().clone();
    let svc = layer.layer(ok_service());
    let r = send(&svc, from("192.0.2.1:1")).await;
    assert_eq!(
        header(&r, "ratelimit-policy").unwrap(),
        format!("\"{long}\";q=2;w=2")
    );
    assert_eq!(
        header(&r, "ratelimit").unwrap(),
        format!("\"{long}\";r=1;t=1")
    );
    limiter.set_quota(quota(Duration::from_secs(3), 5));
    let r = send(&svc, from("192.0.2.2:1")).await;
    assert_eq!(
        header(&r, "ratelimit-policy").unwrap(),
        format!("\"{long}\";q=5;w=15")
    );
}
