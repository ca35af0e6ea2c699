//! Graceful HTTP/1 serving of a tower service (an axum `Router`, or any
//! `Service<Request<hyper::body::Incoming>>`) on keel's [`Server`] (feature `hyper`).
//!
//! Every connection is a keel connection: guarded accept and connection limit, idle timeout and
//! reclamation at the limit, lingering close, and keel's drain. hyper serves HTTP/1.1 on it
//! (keep-alive, pipelining, upgrades; its 30 s header-read timeout runs on tokio's timer).
//!
//! On the shutdown trigger (SIGINT/SIGTERM for [`serve`]; any trigger of the [`Server`] for
//! [`serve_with`]):
//!
//! 1. keel stops accepting at once (after the configured drain delay, see
//!    [`ShutdownConfig`]'s `drain_delay`, during which the server still serves and
//!    [`ServeHandle::is_ready`](crate::ServeHandle::is_ready) is already `false`);
//! 2. every connection is told to shut down gracefully (hyper's `graceful_shutdown`): an idle
//!    keep-alive connection is closed at once, a connection with a request in flight finishes
//!    that response (sent with `Connection: close`) and then closes;
//! 3. at the drain deadline (`grace_period`) the connections still open are aborted and counted
//!    in the report's `aborted`; a second signal does that at once.
//!
//! keel's connection defences apply to HTTP connections as to any other: the idle timeout
//! ([`ConnConfig`](crate::core::conn::ConnConfig), default 60 s) closes a keep-alive connection
//! silent that long, and reclamation at the connection limit closes the connection idle the
//! longest (at least 1 s) for a newcomer. A connection with a request in flight is never idle
//! (each request holds a [`Busy`](crate::core::driver::Busy) guard until its response is
//! ready), however long its handler works without moving a byte; hyper's 30 s header-read
//! timeout covers a client that trickles its headers.
//!
//! Each request carries its peer's address as a [`PeerAddr`] extension and, with feature
//! `axum`, as axum's `ConnectInfo<SocketAddr>` (TCP) so the `ConnectInfo` extractor works
//! without `into_make_service_with_connect_info`.
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use std::time::Duration;
//!
//! use axum::{extract::ConnectInfo, routing::get, Router};
//! use keel_tokio::{GuardConfig, ShutdownConfig};
//!
//! # async fn run() -> std::io::Result<()> {
//! let guard = GuardConfig::builder().max_connections(1024).build().expect("valid config");
//! let shutdown = ShutdownConfig::builder()
//!     .grace_period(Duration::from_secs(25))
//!     .drain_delay(Duration::from_secs(5)) // not ready, still serving, before the drain
//!     .build()
//!     .expect("valid config");
//! let app = Router::new().route(
//!     "/",
//!     get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { format!("hello {peer}\n") }),
//! );
//! let incoming = keel_tokio::bind("127.0.0.1:3000", &guard).await?;
//! let report = keel_tokio::http_server::serve(incoming, app, shutdown).await;
//! println!("{report}"); // completed=.. aborted=.. refused=.. drained_in=..
//! # Ok(()) }
//! ```

use std::error::Error as StdError;
use std::future::Future;

use hyper::body::{Body, Incoming as HyperBody};
use hyper::server::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use keel_core::driver::ConnIo;
use tower::Service;

use crate::{Conn, Draining, Incoming, ServeReport, Server, ShutdownConfig, TokioConn};

/// The peer's address of the connection a request came on (what keel's accept reported), as a
/// request extension: `req.extensions().get::<PeerAddr>()` (a `SocketAddr`), or axum's
/// `Extension<PeerAddr>`. The same type the HTTP layers' peer-based key extractors read
/// ([`http::PeerIp`](crate::http::PeerIp)), so a per-IP limit works under this server as is.
pub use crate::http::PeerAddr;

/// Serves `service` over HTTP/1 on `incoming` until SIGINT or SIGTERM, then drains with
/// `config` (drain delay, grace period; a second signal stops at once). See the
/// [module docs](self). For another trigger, a [`ServeHandle`](crate::ServeHandle) (health,
/// readiness, counts) or a connection config, build the [`Server`] yourself and call
/// [`serve_with`].
pub async fn serve<L, S, B>(
    incoming: Incoming<L>,
    service: S,
    config: ShutdownConfig,
) -> ServeReport
where
    L: ConnIo + Send + 'static,
    L::Addr: Clone + Send + Sync + 'static,
    S: Service<Request<HyperBody>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let server = Server::new(incoming)
        .config(config)
        .shutdown_on(crate::shutdown_signal);
    serve_with(server, service).await
}

/// Serves `service` over HTTP/1 on a [`Server`] you configured (its triggers, shutdown and
/// connection configs; take its [`handle`](Server::handle) first for readiness and counts).
/// Returns the server's report once it has stopped.
pub async fn serve_with<L, S, B>(server: Server<L>, service: S) -> ServeReport
where
    L: ConnIo + Send + 'static,
    L::Addr: Clone + Send + Sync + 'static,
    S: Service<Request<HyperBody>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    server
        .serve(move |conn: Conn<L>, draining: Draining| {
            serve_connection(conn, draining, service.clone())
        })
        .await
}

/// One connection: hyper's HTTP/1 on the keel connection, shut down gracefully when the drain
/// starts.
fn serve_connection<L, S, B>(
    conn: Conn<L>,
    draining: Draining,
    service: S,
) -> impl Future<Output = ()> + Send + 'static
where
    L: ConnIo + Send + 'static,
    L::Addr: Clone + Send + Sync + 'static,
    S: Service<Request<HyperBody>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let peer = conn.peer().clone();
    let busy = conn.busy_handle();
    let io = TokioIo::new(TokioConn::from(conn));
    let per_request = hyper::service::service_fn(move |mut req: Request<HyperBody>| {
        req.extensions_mut().insert(PeerAddr(peer.clone()));
        #[cfg(feature = "axum")]
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer.clone()));
        let mut service = service.clone();
        // Busy from the request's arrival until its response is ready: never idle meanwhile.
        let in_flight = busy.enter();
        async move {
            let _in_flight = in_flight;
            std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
            service.call(req).await
        }
    });
    async move {
        let mut builder = http1::Builder::new();
        builder.timer(TokioTimer::new());
        let connection = builder.serve_connection(io, per_request).with_upgrades();
        let mut connection = std::pin::pin!(connection);
        let result = match draining.run_until_draining(connection.as_mut()).await {
            Some(result) => result,
            None => {
                // Idle keep-alive: closed at once. A request in flight: its response is
                // finished (with `Connection: close`), then the connection closes.
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(error) = result {
            tracing::debug!(target: "keel::serve", %error, "HTTP connection ended with an error");
        }
    }
}
