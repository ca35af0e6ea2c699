//! The per-IP layer on a real socket: an axum app served on 127.0.0.1 with
//! `into_make_service_with_connect_info`, reached over HTTP/1.1 (hyper's client) from two
//! client source addresses, 127.0.0.1 and 127.0.0.2: each has its own budget. (What this tests
//! is the socket's: the peer address axum records per connection keys the limit.)
#![cfg(feature = "axum")]

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use keel_tokio::core::rate::Quota;
use keel_tokio::http::KeyedRateLimitLayer;
use tokio::net::TcpSocket;

/// An HTTP/1.1 connection to `server` from the source address `from`.
async fn connect(from: &str, server: SocketAddr) -> SendRequest<String> {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(format!("{from}:0").parse().unwrap())
        .unwrap_or_else(|e| panic!("bind {from}: {e}"));
    let stream = socket.connect(server).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// Status, `Retry-After`, `RateLimit` and body of one `GET /`.
async fn get_root(
    sender: &mut SendRequest<String>,
) -> (StatusCode, Option<String>, Option<String>, String) {
    sender.ready().await.unwrap();
    let req = Request::get("/")
        .header("host", "localhost")
        .body(String::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (retry_after, ratelimit) = (header("retry-after"), header("ratelimit"));
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        retry_after,
        ratelimit,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

#[tokio::test]
async fn each_client_source_address_has_its_own_budget() {
    // Burst 2, then one request a minute: nothing refills while the test runs.
    let quota = Quota::with_period(Duration::from_secs(60))
        .unwrap()
        .with_burst(NonZeroU32::new(2).unwrap())
        .unwrap();
    let app = Router::new()
        .route("/", get(|| async { "hello\n" }))
        .layer(KeyedRateLimitLayer::per_ip(quota).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });

    let mut one = connect("127.0.0.1", addr).await;
    for remaining in [1, 0] {
        let (status, retry_after, ratelimit, body) = get_root(&mut one).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "hello\n");
        assert_eq!(retry_after, None);
        let ratelimit = ratelimit.expect("RateLimit on an admitted response");
        assert!(
            ratelimit.starts_with(&format!("\"default\";r={remaining};t=")),
            "{ratelimit}"
        );
    }
    let (status, retry_after, ratelimit, body) = get_root(&mut one).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // The next token is 60 s after the first request; a loaded machine may have spent a few.
    let wait: u64 = retry_after.expect("Retry-After on a 429").parse().unwrap();
    assert!((50..=60).contains(&wait), "Retry-After: {wait}");
    let ratelimit = ratelimit.expect("RateLimit on a 429");
    assert!(ratelimit.starts_with("\"default\";r=0;t="), "{ratelimit}");
    assert_eq!(body, format!("too many requests: retry in {wait} s\n"));

    // A new connection from the same address is the same client.
    let mut again = connect("127.0.0.1", addr).await;
    assert_eq!(get_root(&mut again).await.0, StatusCode::TOO_MANY_REQUESTS);

    // 127.0.0.2 is another client with its own burst.
    let mut two = connect("127.0.0.2", addr).await;
    let (status, _, ratelimit, _) = get_root(&mut two).await;
    assert_eq!(status, StatusCode::OK);
    assert!(ratelimit.unwrap().starts_with("\"default\";r=1;t="));
    assert_eq!(get_root(&mut two).await.0, StatusCode::OK);
    assert_eq!(get_root(&mut two).await.0, StatusCode::TOO_MANY_REQUESTS);

    server.abort();
}
