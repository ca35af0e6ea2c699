//! keel-tokio's axum example in fleet mode: the per-IP rate limit is held in Redis, so every
//! replica of the service behind a load balancer shares it.
//!
//! ```text
//! cargo run -p keel-redis --features tower --example redis-axum -- --redis redis://127.0.0.1:6379
//! for i in 1 2 3 4; do curl -si http://127.0.0.1:3000/ | head -7; done
//! ```
//!
//! Flags: `--redis URL`, `--addr HOST:PORT` (default `127.0.0.1:3000`; port 0 picks one, and
//! the `listening on` line says which), `--per-second R` (may be fractional: `0.5` is one
//! request every 2 s; default 0.5), `--burst B` (default 3), `--policy closed|open|local`
//! (default `closed`), `--name N` (the limiter's name, the Redis key prefix `{N}:`; replicas
//! with the same name and Redis share the limit; default `axum`), `--replicas K` (for
//! `--policy local`: each replica keeps 1/K of the rate and burst while Redis is away; default 1).
//!
//! Each client IP (IPv6 clients by their /64, so a host cannot rotate through its subnet) gets
//! a burst of `B` requests across the whole fleet, then `R` per second. A limited request is
//! answered `429 Too Many Requests` with `Retry-After` (whole seconds, rounded up); answers
//! carry `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` (seconds until the
//! full burst is back) from the fleet's decision, leaving out what the decision does not know.
//!
//! When Redis is down or slow (each call is bounded by keel-redis's timeout and breaker, so a
//! request never hangs on it), the policy decides: `closed` answers `503` with `Retry-After: 1`,
//! `open` lets the request through unlimited, `local` limits it in this process.
//!
//! `/slow` runs at most 2 at once with 4 more waiting for at most 1 s (then `503`), and the
//! whole request, including that wait, has a 3 s timeout (then `504`).

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use keel_redis::keel_core::bulkhead::BulkheadConfig;
use keel_redis::keel_core::rate::ip::ip_key;
use keel_redis::keel_core::rate::Quota;
use keel_redis::tower::RateLimitHeaders;
use keel_redis::{Denied, FailurePolicy, FleetConfig, FleetLimiter};
use keel_tokio::tower::{BoxError, BulkheadLayer, KeelError, TimeoutLayer};
use tower::ServiceBuilder;

fn set(headers: &mut HeaderMap, name: &'static str, value: Option<u64>) {
    if let Some(v) = value {
        headers.insert(name, HeaderValue::from(v));
    }
}

async fn fleet_per_ip_limit(
    State(limiter): State<FleetLimiter>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    // IPv4 as is, IPv6 by its /64: one host cannot rotate through its subnet's addresses.
    let key = ip_key(peer.ip()).to_string();
    let decision = limiter.check(&key).await;
    let h = RateLimitHeaders::of(limiter.config().quota(), &decision);
    let mut response = match &decision {
        Ok(_) => next.run(req).await,
        Err(Denied::Limited { .. } | Denied::InsufficientCapacity { .. }) => (
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "rate limited: retry in {} s\n",
                h.retry_after_secs.unwrap_or(1)
            ),
        )
            .into_response(),
        // Redis could not decide and the policy rejects (or the local table is full).
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    };
    let headers = response.headers_mut();
    set(headers, "retry-after", h.retry_after_secs);
    set(headers, "x-ratelimit-limit", Some(u64::from(h.limit)));
    set(headers, "x-ratelimit-remaining", h.remaining.map(u64::from));
    set(headers, "x-ratelimit-reset", h.reset_secs);
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

struct Args {
    redis: String,
    addr: SocketAddr,
    per_second: f64,
    burst: u32,
    policy: String,
    name: String,
    replicas: u32,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        redis: "redis://127.0.0.1:6379".into(),
        addr: SocketAddr::from(([127, 0, 0, 1], 3000)),
        per_second: 0.5,
        burst: 3,
        policy: "closed".into(),
        name: "axum".into(),
        replicas: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let bad = |e: &dyn std::fmt::Display| format!("{flag}: {e}");
        match flag.as_str() {
            "--redis" => a.redis = value()?,
            "--addr" => a.addr = value()?.parse().map_err(|e| bad(&e))?,
            "--per-second" => a.per_second = value()?.parse().map_err(|e| bad(&e))?,
            "--burst" => a.burst = value()?.parse().map_err(|e| bad(&e))?,
            "--policy" => a.policy = value()?,
            "--name" => a.name = value()?,
            "--replicas" => a.replicas = value()?.parse().map_err(|e| bad(&e))?,
            other => {
                return Err(format!(
                    "unknown argument {other:?}; try --redis redis://127.0.0.1:6379 \
                     --addr 127.0.0.1:3000 --per-second 0.5 --burst 3 --policy closed"
                ))
            }
        }
    }
    Ok(a)
}

/// `per_second` requests per second (fractional rates allowed), burst `burst`.
fn make_quota(per_second: f64, burst: u32) -> Result<Quota, String> {
    if !(per_second.is_finite() && per_second > 0.0) {
        return Err("--per-second must be a number above 0".into());
    }
    let period = Duration::try_from_secs_f64(1.0 / per_second).map_err(|e| {
        format!("--per-second {per_second:e}: one request per 1/R s must fit a Duration ({e})")
    })?;
    let burst = NonZeroU32::new(burst).ok_or("--burst must be at least 1")?;
    Quota::with_period(period)
        .and_then(|q| q.with_burst(burst))
        .map_err(|e| format!("--per-second/--burst: {e}"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse()?;
    let quota = make_quota(args.per_second, args.burst)?;
    let policy = match args.policy.as_str() {
        "closed" => FailurePolicy::FailClosed,
        "open" => FailurePolicy::FailOpen,
        "local" => {
            // This replica's share of the fleet quota while Redis is away.
            let k = args.replicas.max(1);
            FailurePolicy::Local {
                quota: make_quota(args.per_second / f64::from(k), (args.burst / k).max(1))?,
                max_keys: 10_000,
            }
        }
        other => return Err(format!("--policy {other:?}: use closed, open or local").into()),
    };
    let config = FleetConfig::builder(args.name, quota)
        .policy(policy)
        .build()?;
    // Lazy: succeeds while Redis is down (decisions then follow the policy).
    let per_ip = FleetLimiter::connect(&args.redis, config)?;

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
        .layer(middleware::from_fn_with_state(per_ip, fleet_per_ip_limit));

    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
