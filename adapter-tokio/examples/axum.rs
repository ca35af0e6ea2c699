//! An axum server with a per-IP rate limit (429 with `Retry-After`) and a bulkhead + timeout
//! in front of a slow route.
//!
//! ```text
//! cargo run -p keel-tokio --features tower --example axum -- --addr 127.0.0.1:3000
//! for i in 1 2 3 4; do curl -si http://127.0.0.1:3000/ | head -6; done
//! ```
//!
//! Each client IP (IPv6 clients by their /64, so a host cannot rotate through its subnet) gets
//! a burst of 3 requests, then one every 2 seconds. A limited request is answered
//! `429 Too Many Requests` with `Retry-After` (whole seconds, rounded up), and every answer
//! carries `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` (seconds until
//! the full burst is back, rounded up). The keyed limiter tracks at most 10 000 IPs (fixed
//! memory, an OS-seeded hash key); when all of them are active, new IPs share one overflow
//! limiter at the same quota (and get a `429` when it is spent).
//!
//! `/slow` runs at most 2 at once with 4 more waiting for at most 1 s (then `503`), and the
//! whole request, including that wait, has a 3 s timeout (then `504`).

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use keel_tokio::core::bulkhead::BulkheadConfig;
use keel_tokio::core::rate::ip::ip_key;
use keel_tokio::core::rate::keyed::KeyedConfig;
use keel_tokio::core::rate::Quota;
use keel_tokio::tower::{BoxError, BulkheadLayer, KeelError, TimeoutLayer};
use keel_tokio::KeyedRateLimiter;
use tower::ServiceBuilder;

/// Whole seconds, rounded up (HTTP's `Retry-After` has no fractions; rounding down would
/// invite a retry that is still limited).
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn set(headers: &mut HeaderMap, name: &'static str, value: u64) {
    headers.insert(name, HeaderValue::from(value));
}

async fn per_ip_limit(
    State(limiter): State<KeyedRateLimiter<IpAddr>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    // IPv4 as is, IPv6 by its /64: one host cannot rotate through its subnet's addresses.
    let ip = ip_key(peer.ip());
    // Decide and read the remaining budget under one lock, at one `now`.
    let (decision, remaining, now) =
        limiter.with(|table, now| (table.try_acquire(now, &ip), table.remaining(now, &ip), now));
    let quota = limiter.quota();
    let burst = quota.burst().get();
    // Every used request is repaid after one emission interval.
    let reset = quota
        .emission_interval()
        .saturating_mul(burst.saturating_sub(remaining));
    let mut response = match decision {
        Ok(()) => next.run(req).await,
        // Over the rate: the rejection says when this address conforms again.
        Err(rejected) => match rejected.wait_from(now) {
            Some(wait) => {
                let wait = ceil_secs(wait).max(1);
                let mut r = (
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("rate limited: retry in {wait} s\n"),
                )
                    .into_response();
                set(r.headers_mut(), "retry-after", wait);
                r
            }
            // No instant (a table full of active keys under `Full::RejectNew`).
            None => {
                let mut r =
                    (StatusCode::SERVICE_UNAVAILABLE, format!("{rejected}\n")).into_response();
                set(r.headers_mut(), "retry-after", 1);
                r
            }
        },
    };
    let headers = response.headers_mut();
    set(headers, "x-ratelimit-limit", u64::from(burst));
    set(headers, "x-ratelimit-remaining", u64::from(remaining));
    set(headers, "x-ratelimit-reset", ceil_secs(reset));
    response
}

/// Maps keel's layer errors to HTTP answers.
async fn keel_error(err: BoxError) -> Response {
    match err.downcast_ref::<KeelError>() {
        Some(KeelError::TimedOut { .. }) => (StatusCode::GATEWAY_TIMEOUT, format!("{err}\n")),
        Some(e) if e.reject_reason().is_some() => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("{err}\n"))
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n")),
    }
    .into_response()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut addr: SocketAddr = "127.0.0.1:3000".parse()?;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => addr = args.next().ok_or("--addr needs a value")?.parse()?,
            other => {
                return Err(format!("unknown argument {other:?}; try --addr 127.0.0.1:3000").into())
            }
        }
    }

    let quota = Quota::with_period(Duration::from_secs(2))?
        .with_burst(NonZeroU32::new(3).ok_or("zero")?)?;
    let config = KeyedConfig::builder()
        .quota(quota)
        .max_keys(10_000)
        // The SipHash key is drawn from the OS; a full table sends new keys to one shared
        // overflow limiter at the same quota (`Full::Overflow`, the default).
        .build()?;
    let per_ip = KeyedRateLimiter::<IpAddr>::new(config);

    let bulkhead = BulkheadConfig::builder()
        .max_concurrent(2)
        .max_queue(4)
        .max_wait(Duration::from_secs(1))
        .build()?;
    let slow = get(|| async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        "slow answer\n"
    })
    .layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(keel_error))
            .layer(TimeoutLayer::new(Duration::from_secs(3)))
            .layer(BulkheadLayer::new(bulkhead)),
    );

    let app = Router::new()
        .route("/", get(|| async { "hello\n" }))
        .route("/slow", slow)
        .layer(middleware::from_fn_with_state(per_ip, per_ip_limit));

    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
