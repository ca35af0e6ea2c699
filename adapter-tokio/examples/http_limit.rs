//! A per-IP rate limit on an axum app in six lines, with the IETF `RateLimit` fields, and
//! keel's errors answered as HTTP.
//!
//! ```text
//! cargo run -p keel-tokio --features axum --example http_limit -- --addr 127.0.0.1:3000
//! for i in 1 2 3 4; do curl -si http://127.0.0.1:3000/ | head -6; done
//! # behind a proxy on 10.0.0.0/8 that sets X-Forwarded-For:
//! cargo run -p keel-tokio --features axum --example http_limit -- --trusted-proxy 10.0.0.0/8
//! ```
//!
//! Each client IP (IPv6 clients by their /64) gets a burst of 3, then one request every 2
//! seconds. Every answer carries `RateLimit-Policy: "default";q=3;w=6` and
//! `RateLimit: "default";r=<left>;t=<seconds until the burst is whole>`; a limited request is
//! answered `429` with `Retry-After`. `/slow` sits behind a bulkhead (2 at once, no queue) and a
//! 1 s timeout; its rejections are answered by `keel_tokio::http::error_response` (`503`, `504`).

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use keel_tokio::core::bulkhead::BulkheadConfig;
use keel_tokio::core::rate::Quota;
use keel_tokio::http::{error_response, Cidr, ForwardedIp, KeyedRateLimitLayer};
use keel_tokio::tower::{BoxError, BulkheadLayer, TimeoutLayer};
use tower::ServiceBuilder;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut addr: SocketAddr = "127.0.0.1:3000".parse()?;
    let mut trusted: Vec<Cidr> = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => addr = args.next().ok_or("--addr needs a value")?.parse()?,
            "--trusted-proxy" => {
                trusted.push(args.next().ok_or("--trusted-proxy needs a CIDR")?.parse()?);
            }
            other => {
                return Err(format!(
                "unknown argument {other:?}; try --addr 127.0.0.1:3000 --trusted-proxy 10.0.0.0/8"
            )
                .into())
            }
        }
    }

    let quota = Quota::with_period(Duration::from_secs(2))?
        .with_burst(NonZeroU32::new(3).ok_or("zero")?)?;

    let slow = get(|| async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        "slow answer\n"
    })
    .layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(|e: BoxError| async move {
                error_response::<axum::body::Body>(&*e) as Response
            }))
            .layer(TimeoutLayer::new(Duration::from_secs(1)))
            .layer(BulkheadLayer::new(
                BulkheadConfig::builder().max_concurrent(2).build()?,
            )),
    );
    let routes = Router::new()
        .route("/", get(|| async { "hello\n" }))
        .route("/slow", slow);
    // Per peer IP; behind trusted proxies, per the client address they report.
    let app = if trusted.is_empty() {
        routes.layer(KeyedRateLimitLayer::per_ip(quota)?)
    } else {
        routes.layer(KeyedRateLimitLayer::with_quota(
            quota,
            ForwardedIp::x_forwarded_for(trusted),
        )?)
    };

    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
