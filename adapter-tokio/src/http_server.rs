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
//! ready), however long its handler works without moving a byte. So that a client cannot hold
//! a slot that way, the request's head and body have read deadlines ([`HttpConfig`], set with
//! [`serve_with_config`]): a client that trickles its headers is closed after 30 s (hyper's
//! header read timeout), and one that sends a head and then none (or a trickle) of its body is
//! answered `408` with `Connection: close` once the body read deadline passes (30 s plus one
//! second per 500 bytes received, counted while the handler reads the body), which frees its
//! slot. Both are counted: the server's stats and report have `header_timeouts` and
//! `body_timeouts` ([`ServeStats::requests`](crate::core::driver::ServeStats::requests)), and
//! with feature `metrics` `keel_request_timeouts_total{part="header"|"body"}`. Requests carry their body as a [`RequestBody`] (an axum `Router` takes any body).
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
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{Either, Empty};
use hyper::body::{Body, Bytes, Frame, Incoming as HyperBody, SizeHint};
use hyper::server::conn::http1;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use keel_core::driver::ConnIo;
use keel_core::ConfigError;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};
use tower::Service;

use crate::{Conn, Draining, Incoming, ServeReport, Server, ShutdownConfig, TokioConn};

/// The peer's address of the connection a request came on (what keel's accept reported), as a
/// request extension: `req.extensions().get::<PeerAddr>()` (a `SocketAddr`), or axum's
/// `Extension<PeerAddr>`. The same type the HTTP layers' peer-based key extractors read
/// ([`http::PeerIp`](crate::http::PeerIp)), so a per-IP limit works under this server as is.
pub use crate::http::PeerAddr;

/// The services these functions serve, stated once (a trait alias: every `tower::Service` of
/// [`RequestBody`] requests answering `Response<B>` that is `Clone + Send + 'static`, with a
/// `Send` future and an error convertible to a boxed error, implements it).
pub trait HttpService<B>:
    Service<
        Request<RequestBody>,
        Response = Response<B>,
        Future: Send + 'static,
        Error: Into<Box<dyn StdError + Send + Sync>>,
    > + Clone
    + Send
    + 'static
{
}

impl<S, B> HttpService<B> for S
where
    S: Service<Request<RequestBody>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
{
}

/// The response bodies these functions send, stated once (a trait alias: every `Send + 'static`
/// hyper [`Body`] with `Send` data and an error convertible to a boxed error implements it).
pub trait ResponseBody:
    Body<Data: Send, Error: Into<Box<dyn StdError + Send + Sync>>> + Send + 'static
{
}

impl<B> ResponseBody for B
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
}

/// Serves `service` over HTTP/1 on `incoming` until SIGINT or SIGTERM, then drains with
/// `config` (drain delay, grace period; a second signal stops at once). See the
/// [module docs](self). For another trigger, a [`ServeHandle`](crate::ServeHandle) (health,
/// readiness, counts) or a connection config, build the [`Server`] yourself and call
/// [`serve_with`] ([`serve_with_config`] for other request read deadlines).
pub async fn serve<L, S, B>(
    incoming: Incoming<L>,
    service: S,
    config: ShutdownConfig,
) -> ServeReport
where
    L: ConnIo + Send + 'static,
    L::Addr: Clone + Send + Sync + 'static,
    S: HttpService<B>,
    B: ResponseBody,
{
    let server = Server::new(incoming)
        .config(config)
        .shutdown_on(crate::shutdown_signal);
    serve_with(server, service).await
}

/// Serves `service` over HTTP/1 on a [`Server`] you configured (its triggers, shutdown and
/// connection configs; take its [`handle`](Server::handle) first for readiness and counts),
/// with the default [`HttpConfig`] (30 s to read a request's head, 30 s plus one second per
/// 500 bytes to read its body). Returns the server's report once it has stopped.
pub async fn serve_with<L, S, B>(server: Server<L>, service: S) -> ServeReport
where
    L: ConnIo + Send + 'static,
    L::Addr: Clone + Send + Sync + 'static,
    S: HttpService<B>,
    B: ResponseBody,
{
    serve_with_config(server, service, HttpConfig::default()).await
}

/// [`serve_with`] with the request read deadlines of `http` (see [`HttpConfig`]).
pub async fn serve_with_config<L, S, B>(
    server: Server<L>,
    service: S,
    http: HttpConfig,
) -> ServeReport
where
    L: ConnIo + Send + 'static,
    L::Addr: Clone + Send + Sync + 'static,
    S: HttpService<B>,
    B: ResponseBody,
{
    server
        .serve(move |conn: Conn<L>, draining: Draining| {
            serve_connection(conn, draining, service.clone(), http)
        })
        .await
}

/// How [`serve_with_config`] reads requests: the deadlines that keep a hostile or broken client
/// from holding a connection slot (a connection with a request in flight is never idle, so
/// neither keel's idle timeout nor reclamation at the limit closes it).
///
/// - **Head**: a request's head (request line and headers) must arrive within
///   `header_read_timeout` (default 30 s, hyper's header read timeout), or the connection is
///   closed. This covers slowloris clients that trickle their headers.
/// - **Body**: once the handler starts reading a request's body, the whole body must arrive
///   within `body_read_timeout` (default 30 s) plus one second per `body_min_rate` bytes
///   received (default 500 bytes/s, as Apache's `mod_reqtimeout`): a large upload at a decent
///   rate is never cut, a client that sends nothing or trickles a byte a second is. When the
///   deadline passes the body yields a [`BodyError`] whose [`is_timeout`](BodyError::is_timeout)
///   is true, the request's handler is dropped and the client is answered
///   `408 Request Timeout` with `Connection: close`; the connection then closes and frees its
///   slot. The clock runs only while the body is read, so a handler may work as long as it
///   likes before or after.
///
/// ```
/// use std::time::Duration;
///
/// use keel_tokio::http_server::HttpConfig;
///
/// let http = HttpConfig::builder()
///     .header_read_timeout(Duration::from_secs(10))
///     .body_read_timeout(Some(Duration::from_secs(5)))
///     .body_min_rate(1024) // bytes per second: +1 s of deadline per KiB received
///     .build()
///     .expect("valid config");
/// assert_eq!(http.body_read_timeout(), Some(Duration::from_secs(5)));
/// // A body of 10 KiB received in time extends its deadline by 10 s.
/// assert_eq!(http.body_allowance(10 * 1024), Some(Duration::from_secs(15)));
///
/// // Zero is refused: `None` turns the body deadline off.
/// let zero = HttpConfig::builder().body_read_timeout(Some(Duration::ZERO)).build();
/// assert!(zero.unwrap_err().to_string().contains("body_read_timeout"));
/// // A huge body timeout means no deadline; a huge header timeout is refused.
/// let huge = HttpConfig::builder().body_read_timeout(Some(Duration::MAX)).build();
/// assert_eq!(huge.unwrap().body_allowance(u64::MAX), Some(Duration::MAX));
/// assert!(HttpConfig::builder().header_read_timeout(Duration::MAX).build().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpConfig {
    header_read_timeout: Duration,
    body_read_timeout: Option<Duration>,
    body_min_rate: u64,
}

impl HttpConfig {
    /// A builder with the defaults (see the type's docs).
    pub fn builder() -> HttpConfigBuilder {
        HttpConfigBuilder {
            config: HttpConfig::default(),
        }
    }

    /// How long a request's head may take to arrive.
    pub const fn header_read_timeout(&self) -> Duration {
        self.header_read_timeout
    }

    /// How long a request's body may take to arrive before the minimum-rate extension; `None`:
    /// no body deadline.
    pub const fn body_read_timeout(&self) -> Option<Duration> {
        self.body_read_timeout
    }

    /// Bytes per second that each extend the body deadline by one second; 0: no extension.
    pub const fn body_min_rate(&self) -> u64 {
        self.body_min_rate
    }

    /// How long after the handler starts reading a body it may still be waiting for more, once
    /// `received` bytes have arrived: `body_read_timeout + received / body_min_rate` seconds
    /// (saturating). `None` when there is no body deadline.
    pub fn body_allowance(&self, received: u64) -> Option<Duration> {
        let base = self.body_read_timeout?;
        if self.body_min_rate == 0 {
            return Some(base);
        }
        let nanos =
            u128::from(received).saturating_mul(1_000_000_000) / u128::from(self.body_min_rate);
        let extra = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        Some(base.saturating_add(extra))
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Some(Duration::from_secs(30)),
            body_min_rate: 500,
        }
    }
}

/// The longest `header_read_timeout` accepted.
const MAX_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(86_400);

/// Builder for [`HttpConfig`].
#[derive(Clone, Copy, Debug)]
pub struct HttpConfigBuilder {
    config: HttpConfig,
}

impl HttpConfigBuilder {
    /// Closes a connection whose request head has not fully arrived this long after it began
    /// waiting for it (default 30 s; hyper's header read timeout).
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.config.header_read_timeout = timeout;
        self
    }

    /// Answers `408` to a request whose body has not fully arrived this long (plus the
    /// minimum-rate extension) after its handler began reading it (default 30 s); `None` turns
    /// the body deadline off, which lets a client that never sends its body hold its
    /// connection slot for as long as the handler waits.
    pub fn body_read_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.body_read_timeout = timeout;
        self
    }

    /// Each `bytes_per_second` bytes of body received extend the body deadline by one second
    /// (default 500); 0 turns the extension off (the whole body must arrive within
    /// `body_read_timeout`, whatever its size).
    pub fn body_min_rate(mut self, bytes_per_second: u64) -> Self {
        self.config.body_min_rate = bytes_per_second;
        self
    }

    /// Validates the configuration: a zero `header_read_timeout` or `body_read_timeout` is an
    /// error (for the body, use `None` to turn its deadline off), and so is a
    /// `header_read_timeout` over one day (hyper adds it to the clock, which must not overflow).
    pub fn build(self) -> Result<HttpConfig, ConfigError> {
        if self.config.header_read_timeout.is_zero() {
            return Err(ConfigError::Zero {
                field: "header_read_timeout",
            });
        }
        if self.config.header_read_timeout > MAX_HEADER_READ_TIMEOUT {
            return Err(ConfigError::OutOfRange {
                field: "header_read_timeout",
                expected: "at most one day (86 400 s); 30 s is hyper's default",
            });
        }
        if self.config.body_read_timeout == Some(Duration::ZERO) {
            return Err(ConfigError::Zero {
                field: "body_read_timeout",
            });
        }
        Ok(self.config)
    }
}

/// The body of a request served by [`serve`], [`serve_with`] or [`serve_with_config`]: hyper's
/// body under the [`HttpConfig`]'s body read deadline. An axum `Router` takes it as is
/// (`Router` serves any body); a hyper or tower service is written over
/// `Request<RequestBody>`.
pub struct RequestBody {
    inner: HyperBody,
    deadline: Option<BodyDeadline>,
}

/// The body read deadline of one request (absent for a body that is empty from the start).
struct BodyDeadline {
    config: HttpConfig,
    started: Option<Instant>,
    received: u64,
    sleep: Option<Pin<Box<Sleep>>>,
    expired: Arc<Notify>,
    timed_out: bool,
}

impl fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("RequestBody");
        d.field("inner", &self.inner);
        if let Some(deadline) = &self.deadline {
            d.field("received", &deadline.received)
                .field("timed_out", &deadline.timed_out);
        }
        d.finish_non_exhaustive()
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let Some(deadline) = this.deadline.as_mut() else {
            return Pin::new(&mut this.inner)
                .poll_frame(cx)
                .map_err(BodyError::hyper);
        };
        if deadline.timed_out {
            return Poll::Ready(None);
        }
        let started = *deadline.started.get_or_insert_with(Instant::now);
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
                    deadline.received = deadline.received.saturating_add(len);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(BodyError::hyper(error)))),
            Poll::Ready(None) => {
                deadline.sleep = None;
                Poll::Ready(None)
            }
            Poll::Pending => {
                // Waiting for the client: the deadline applies (only now, so a body already
                // buffered is never judged late).
                let Some(allowance) = deadline.config.body_allowance(deadline.received) else {
                    return Poll::Pending;
                };
                // Past tokio's range: no deadline.
                let Some(at) = started.checked_add(allowance) else {
                    return Poll::Pending;
                };
                let sleep = deadline
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                if sleep.deadline() != at {
                    sleep.as_mut().reset(at);
                }
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                deadline.timed_out = true;
                deadline.sleep = None;
                // Wakes the request's future (the body may be read in another task), which
                // drops the handler and answers 408.
                deadline.expired.notify_one();
                tracing::debug!(
                    target: "keel::serve",
                    received = deadline.received,
                    "request body not received within its read deadline",
                );
                Poll::Ready(Some(Err(BodyError::timed_out())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.deadline.as_ref().is_some_and(|d| d.timed_out) || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Why reading a [`RequestBody`] failed: its read deadline passed
/// ([`is_timeout`](Self::is_timeout)), or hyper's error (its [`source`](StdError::source)).
#[derive(Debug)]
pub struct BodyError {
    hyper: Option<hyper::Error>,
}

impl BodyError {
    fn hyper(error: hyper::Error) -> Self {
        BodyError { hyper: Some(error) }
    }

    fn timed_out() -> Self {
        BodyError { hyper: None }
    }

    /// True if the body did not arrive within its read deadline (the client is answered 408).
    pub fn is_timeout(&self) -> bool {
        self.hyper.is_none()
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.hyper {
            None => f.write_str("request body not received within its read deadline"),
            // The cause is the source, not repeated here.
            Some(_) => f.write_str("error reading the request body"),
        }
    }
}

impl StdError for BodyError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.hyper.as_ref().map(|e| e as &(dyn StdError + 'static))
    }
}

/// The server's own answer when a body's deadline passed: `408` with `Connection: close`.
fn request_timeout<B: Body>() -> Response<Either<B, Empty<B::Data>>> {
    let mut response = Response::new(Either::Right(Empty::new()));
    *response.status_mut() = StatusCode::REQUEST_TIMEOUT;
    response.headers_mut().insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    response
}

/// One connection: hyper's HTTP/1 on the keel connection, shut down gracefully when the drain
/// starts.
fn serve_connection<L, S, B>(
    conn: Conn<L>,
    draining: Draining,
    service: S,
    http: HttpConfig,
) -> impl Future<Output = ()> + Send + 'static
where
    L: ConnIo + Send + 'static,
    L::Addr: Clone + Send + Sync + 'static,
    S: HttpService<B>,
    B: ResponseBody,
{
    let peer = conn.peer().clone();
    let busy = conn.busy_handle();
    let timeouts = conn.request_timeouts();
    let body_timeouts = timeouts.clone();
    let io = TokioIo::new(TokioConn::from(conn));
    let per_request = hyper::service::service_fn(move |req: Request<HyperBody>| {
        // Busy from the request's arrival until its response is ready: never idle meanwhile
        // (the body read deadline bounds how long a client can keep it so without sending).
        let in_flight = busy.enter();
        let (mut parts, inner) = req.into_parts();
        parts.extensions.insert(PeerAddr(peer.clone()));
        #[cfg(feature = "axum")]
        parts
            .extensions
            .insert(axum::extract::ConnectInfo(peer.clone()));
        // A body that is empty from the start has nothing to wait for.
        let expired = (!inner.is_end_stream() && http.body_read_timeout.is_some())
            .then(|| Arc::new(Notify::new()));
        let body = RequestBody {
            inner,
            deadline: expired.as_ref().map(|expired| BodyDeadline {
                config: http,
                started: None,
                received: 0,
                sleep: None,
                expired: Arc::clone(expired),
                timed_out: false,
            }),
        };
        let req = Request::from_parts(parts, body);
        let mut service = service.clone();
        let timeouts = body_timeouts.clone();
        async move {
            let _in_flight = in_flight;
            let call = async move {
                std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
                service.call(req).await
            };
            let Some(expired) = expired else {
                return call.await.map(|r| r.map(Either::Left));
            };
            let mut call = std::pin::pin!(call);
            let mut notified = std::pin::pin!(expired.notified());
            std::future::poll_fn(|cx| {
                let done = call.as_mut().poll(cx);
                // The deadline passed (maybe while the handler was reading, in this very
                // poll): whatever the handler made of it, the answer is 408.
                if notified.as_mut().poll(cx).is_ready() {
                    timeouts.body_timed_out();
                    return Poll::Ready(Ok(request_timeout()));
                }
                done.map(|r| r.map(|r| r.map(Either::Left)))
            })
            .await
        }
    });
    async move {
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(http.header_read_timeout);
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
            // hyper's header read timeout (the only timer hyper runs here) closed it.
            if error.is_timeout() {
                timeouts.header_timed_out();
            }
            tracing::debug!(target: "keel::serve", %error, "HTTP connection ended with an error");
        }
    }
}
