//! An axum server with a per-IP rate limit (429 with `Retry-After`) and a bulkhead + timeout
//! in front of a slow route.
//!
//! ```text
//! cargo run -p keel-tokio --features axum --example axum -- --addr 127.0.0.1:3000
//! for i in 1 2 3 4; do curl -si http://127.0.0.1:3000/ | head -6; done
//! ```
//!
//! Each client IP (IPv6 clients by their /64, so a host cannot rotate through its subnet) gets
//! a burst of 3 requests, then one every 2 seconds (`keel_tokio::http::KeyedRateLimitLayer`). A
//! limited request is answered `429 Too Many Requests` with `Retry-After` (whole seconds,
//! rounded up), and every answer carries the IETF `RateLimit-Policy` and `RateLimit` fields
//! (what is left, and the seconds until the full burst is back). The keyed limiter tracks at
//! most 10 000 IPs (fixed memory, an OS-seeded hash key); when all of them are active, new IPs
//! share one overflow limiter at the same quota (and get a `429` when it is spent).
//!
//! `/slow` runs at most 2 at once with 4 more waiting for at most 1 s (then `503`), and the
//! whole request, including that wait, has a 3 s timeout (then `504`).

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use keel_tokio::core::bulkhead::BulkheadConfig;
use keel_tokio::core::rate::keyed::KeyedConfig;
use keel_tokio::core::rate::Quota;
use keel_tokio::http::{error_response, KeyedRateLimitLayer, PeerIp};
use keel_tokio::tower::{BoxError, BulkheadLayer, TimeoutLayer};
use tower::ServiceBuilder;

/// Maps keel's layer errors to HTTP answers (503 for the bulkhead, 504 for the timeout), with
/// bodies for the client.
async fn keel_error(err: BoxError) -> Response {
    error_response(&*err)
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
    // IPv4 as is, IPv6 by its /64: one host cannot rotate through its subnet's addresses.
    let per_ip = KeyedRateLimitLayer::new(config, PeerIp::default());

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
        .layer(per_ip);

    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
