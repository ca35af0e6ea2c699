//! # keel-tokio: keel's reliability machines on tokio
//!
//! The thin binding of [`keel_core`] to tokio's listeners, timers and signals. Every algorithm
//! lives in the core (re-exported here as [`core`], so an application depends on this crate
//! alone); this crate supplies tokio's types, [`TokioRuntime`] (clock and timer, so
//! `tokio::time::pause()` drives keel in tests) and the [`Tcp`] / [`Unix`] listener glue, then
//! names each machine with tokio filled in.
//!
//! ## A guarded accept loop
//!
//! ```no_run
//! use keel_tokio::{Accepted, GuardConfig};
//!
//! # async fn run() -> std::io::Result<()> {
//! let config = GuardConfig::builder().max_connections(1024).build().expect("valid config");
//! let mut incoming = keel_tokio::bind("127.0.0.1:7878", &config).await?;
//! while let Some(Accepted { permit, stream, peer }) = incoming.next().await {
//!     eprintln!("connection from {peer}"); // the client's address, e.g. for a per-IP limit
//!     tokio::spawn(async move {
//!         let _permit = permit; // the slot is released when the connection task ends
//!         drop(stream);
//!     });
//! }
//! # Ok(()) }
//! ```
//!
//! ## The clock, and tests that pause it
//!
//! | build | keel's clock | `tokio::time::pause()` / `start_paused` |
//! | --- | --- | --- |
//! | debug (`cargo test`, `cargo run`) | `tokio::time::Instant` | drives keel |
//! | any, with the feature `paused-time` | `tokio::time::Instant` | drives keel |
//! | release | quanta's calibrated TSC counter (a third of std's read) | drives keel once a keel timer is armed or fires under the paused clock (the process then reads tokio's clock for good) |
//!
//! Release-mode tests that pause time and read keel's clock before any keel timer: turn on
//! `paused-time`. See [`TokioRuntime`].
//!
//! ## What this crate exports
//!
//! | group | names |
//! | --- | --- |
//! | the core | [`core`], [`GuardConfig`], [`ShutdownConfig`], [`Accepted`] |
//! | runtime | [`TokioRuntime`], [`TokioTimer`], [`TokioTask`] |
//! | clock and timers | [`now`], [`sleep_until`], [`timeout`] |
//! | listeners and accept | [`Tcp`], [`Unix`], [`Incoming`], [`bind`], [`guard`], [`guard_unix`] |
//! | serve and shutdown | [`Server`], [`serve`], [`shutdown_signal`], [`Conn`], [`TokioConn`], [`Draining`], [`ServeHandle`], [`ServeReport`] |
//! | breaker | [`Breaker`] |
//! | retry | [`Retry`], [`retry`] |
//! | rate limits | [`RateLimiter`], [`KeyedRateLimiter`] |
//! | bulkhead | [`Bulkhead`] |
//! | adaptive concurrency | [`AdaptiveLimit`], [`AdaptivePermit`] |
//! | tower layers (feature `tower`) | `tower` (the module) |
//! | HTTP layers (features `http`, `axum`) | `http` (the module) |
//! | axum's `serve` on the guarded listener (feature `axum`) | `axum_listener` (the module and function), `AxumListener`, `AxumIncoming`, `Guarded` |
//! | graceful HTTP/1 serving with keel's drain (feature `hyper`) | `http_server` (`serve`, `serve_with`, `PeerAddr`, the bound aliases `HttpService`, `ResponseBody`) |
//!
//! keel-smol and keel-async-std export the same names for their runtimes.
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use keel_core::backoff::BackoffConfig;
use keel_core::driver::{self, Runtime, Timer};
use keel_core::sync::budget::SharedBudget;
use keel_core::time::Instant;
use tokio::net::{TcpListener, TcpSocket, TcpStream, ToSocketAddrs, UnixListener, UnixStream};

/// The runtime-agnostic core, re-exported.
pub use keel_core as core;
pub use keel_core::driver::{Accepted, Draining, GuardConfig, ServeHandle, ServeReport};
/// A connection as [`Server`] hands it to a handler on tokio (`futures-io` traits; wrap it in
/// [`TokioConn`] for tokio's).
pub type Conn<L = Tcp> = keel_core::driver::Conn<L>;
pub use keel_core::shutdown::ShutdownConfig;

// ---- The names every adapter offers, with tokio filled in --------------------------------------
// (keel-smol and keel-async-std write out the same names for their runtimes.)

/// Now, on this runtime's clock, as a keel instant.
pub fn now() -> Instant {
    TokioRuntime.now()
}

/// Sleeps until a keel instant on this runtime's timer.
pub fn sleep_until(deadline: Instant) -> driver::SleepUntil<TokioRuntime> {
    driver::sleep_until(&TokioRuntime, deadline)
}

/// Runs a future for at most `duration` (from its first poll) on this runtime's timer:
/// [`Elapsed`](driver::Elapsed) if the deadline comes first. The returned future holds `fut` once.
pub fn timeout<F: Future>(duration: Duration, fut: F) -> driver::Timeout<TokioRuntime, F> {
    driver::timeout(&TokioRuntime, duration, fut)
}

/// A guarded listener: a `Stream` of [`Accepted`] connections (permit, stream, peer address);
/// take the next with its inherent `next().await`.
pub type Incoming<L> = driver::Incoming<L, TokioRuntime>;

/// A graceful server over a guarded listener on this runtime: see [`driver::serve::Server`].
pub type Server<L> = driver::serve::Server<L, TokioRuntime>;

/// Resolves at the next SIGINT or SIGTERM (Ctrl-C on Windows): see [`TokioRuntime`]'s
/// [`Signals`](driver::Signals) for when listening starts and what stays installed.
pub fn shutdown_signal() -> driver::BoxFuture<()> {
    driver::Signals::shutdown_signal(&TokioRuntime)
}

/// Serves `incoming` with one `handler` task per connection until SIGINT or SIGTERM, then
/// drains gracefully (default grace period 30 s; a second signal stops at once). For another
/// grace period or trigger, use [`Server`] directly.
pub async fn serve<L, H, Fut>(incoming: Incoming<L>, handler: H) -> ServeReport
where
    L: driver::ConnIo + Send + 'static,
    H: FnMut(Conn<L>, Draining) -> Fut + Send,
    Fut: Future<Output = ()> + Send + 'static,
{
    Server::new(incoming)
        .shutdown_on(shutdown_signal)
        .serve(handler)
        .await
}

/// A circuit breaker around futures on this runtime; clones share one breaker.
pub type Breaker = driver::breaker::Breaker<TokioRuntime>;

/// Retries async operations with backoff, a shared budget and a predicate on this runtime.
pub type Retry<P = driver::retry::RetryAll, N = driver::retry::NoNotify> =
    driver::retry::Retry<TokioRuntime, P, N>;

/// Retries `op` with `config` on this runtime, drawing on `budget` if given, retrying every
/// error (use [`Retry`] to classify errors).
pub async fn retry<T, E, Fut, Op>(
    config: BackoffConfig,
    budget: Option<&SharedBudget>,
    op: Op,
) -> Result<T, driver::retry::RetryError<E>>
where
    Op: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Debug,
{
    driver::retry::retry(&TokioRuntime, config, budget, op).await
}

/// A GCRA rate limiter whose `until_ready()` sleeps on this runtime's timer.
pub type RateLimiter = driver::rate::RateLimiter<TokioRuntime>;

/// A bounded keyed (per IP, per user) rate limiter on this runtime.
pub type KeyedRateLimiter<K> = driver::rate::KeyedRateLimiter<K, TokioRuntime>;

/// A bulkhead whose `run(fut)` waits in a bounded queue on this runtime's timer.
pub type Bulkhead = driver::bulkhead::Bulkhead<TokioRuntime>;

/// An adaptive concurrency limit on this runtime: a bulkhead whose limit follows the
/// service's capacity, measured from the calls it admits (see [`driver::adaptive`]).
pub type AdaptiveLimit = driver::adaptive::AdaptiveLimit<TokioRuntime>;

/// A slot under an [`AdaptiveLimit`]; dropping it feeds the call's sample.
pub type AdaptivePermit = driver::adaptive::AdaptivePermit<TokioRuntime>;

// ---- tokio's runtime, listeners and connections ------------------------------------------

#[cfg(feature = "tower")]
pub mod tower;

#[cfg(feature = "axum")]
pub mod axum_listener;
#[cfg(feature = "axum")]
pub mod health;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "axum")]
pub use axum_listener::{axum_listener, AxumIncoming, AxumListener, Guarded};

#[cfg(feature = "hyper")]
pub mod http_server;

mod clock;

/// tokio's clock and timers as a keel [`Runtime`].
///
/// keel instants count nanoseconds since an origin one hour before the first time any
/// `TokioRuntime` read the clock (so every runtime in the process, paused test clocks included,
/// reads after it).
///
/// **The clock.** Debug builds (where `cargo test` runs) and builds with the feature
/// `paused-time` read `tokio::time::Instant`, so `tokio::time::pause()`, `advance()` and
/// `start_paused` move keel's machines in tests exactly as they move tokio's timers. Release
/// builds read quanta's calibrated TSC counter (about a third of the cost; std's monotonic
/// clock where the TSC is not invariant), calibrated when the first handle or machine is built
/// ([`Default`], or a machine's constructor); if a keel timer then sees tokio's clock depart
/// from real time (a test that pauses it, run with `--release`), the process switches to
/// tokio's clock for good, carrying on from keel's latest instant rather than stepping back.
/// Until a keel timer is armed or fires under the paused clock, such a test sees real time on
/// keel's clock: turn on `paused-time` for release-mode tests that pause.
///
/// **The timers** are `tokio::time::Sleep`s, armed on tokio's clock for the time left on
/// keel's (stretched by 61 ppm on the fast clock, whose rate differs from tokio's by a few ppm,
/// so a timer fires a little late rather than early).
#[derive(Clone, Copy, Debug)]
pub struct TokioRuntime;

impl Default for TokioRuntime {
    /// The runtime handle; the first one calibrates the fast clock (release builds), so no
    /// machine's first clock read pays for it.
    fn default() -> Self {
        clock::warm();
        TokioRuntime
    }
}

impl TokioRuntime {
    /// The tokio instant at which keel's clock will read `deadline` (see [`TokioRuntime`]: on
    /// tokio's clock, the origin plus the deadline; on the fast clock, tokio's now plus the time
    /// left on keel's, 61 ppm late).
    pub fn to_tokio(deadline: Instant) -> tokio::time::Instant {
        clock::to_tokio(deadline)
    }
}

impl Runtime for TokioRuntime {
    type Timer = TokioTimer;

    #[inline]
    fn now(&self) -> Instant {
        clock::now()
    }

    fn timer(&self, deadline: Instant) -> TokioTimer {
        clock::check_departure();
        TokioTimer {
            sleep: Box::pin(tokio::time::sleep_until(Self::to_tokio(deadline))),
        }
    }
}

/// A `tokio::time::Sleep` as a keel [`Timer`] (boxed once: the driver re-arms it in place).
#[derive(Debug)]
pub struct TokioTimer {
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Timer for TokioTimer {
    fn reset(&mut self, deadline: Instant) {
        self.sleep.as_mut().reset(TokioRuntime::to_tokio(deadline));
    }

    fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let elapsed = self.sleep.as_mut().poll(cx);
        if elapsed.is_ready() {
            clock::check_departure();
        }
        elapsed
    }
}

impl keel_core::driver::Spawn for TokioRuntime {
    type Handle = TokioTask;

    fn spawn<F>(&self, fut: F) -> TokioTask
    where
        F: Future<Output = ()> + Send + 'static,
    {
        TokioTask(tokio::spawn(fut))
    }
}

/// A task spawned by keel on tokio: `tokio::task::JoinHandle`, aborted by
/// [`AbortHandle::abort`](keel_core::driver::AbortHandle::abort), detached when dropped.
#[derive(Debug)]
pub struct TokioTask(pub tokio::task::JoinHandle<()>);

impl keel_core::driver::AbortHandle for TokioTask {
    fn abort(self) {
        self.0.abort();
    }
}

/// SIGINT or SIGTERM on Unix, Ctrl-C elsewhere.
///
/// - **Handlers stay installed.** The first call installs tokio's SIGINT/SIGTERM handlers, and
///   tokio keeps them for the life of the process, even after every future is dropped: from
///   then on these signals no longer terminate the process by default; the application must
///   act on them (keel's `serve` does: drain, then stop on a second signal).
/// - **Listening starts at the call, not at the first poll**: each call registers its own
///   listeners when `shutdown_signal()` runs, so a signal delivered before the call is not
///   seen by it. To catch a second signal (a second Ctrl-C), call it again right after the
///   first resolves; one that arrives in the window between the two is lost. (Keeping one
///   pair of streams alive across calls would close that window but would hand each signal
///   to only one of several concurrent listeners, so it is not done.)
impl keel_core::driver::Signals for TokioRuntime {
    fn shutdown_signal(&self) -> keel_core::driver::BoxFuture<()> {
        Box::pin(signal_future())
    }
}

/// Registers SIGINT and SIGTERM listeners now; the future resolves at the next of either.
#[cfg(unix)]
fn signal_future() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let interrupt = signal(SignalKind::interrupt());
    let terminate = signal(SignalKind::terminate());
    async move {
        let (mut interrupt, mut terminate) = match (interrupt, terminate) {
            (Ok(i), Ok(t)) => (i, t),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(target: "keel::shutdown", error = %e, "cannot listen for SIGINT/SIGTERM; graceful shutdown on signals is off");
                return std::future::pending().await;
            }
        };
        let signal = std::future::poll_fn(|cx| {
            if interrupt.poll_recv(cx).is_ready() {
                return Poll::Ready("SIGINT");
            }
            if terminate.poll_recv(cx).is_ready() {
                return Poll::Ready("SIGTERM");
            }
            Poll::Pending
        })
        .await;
        tracing::info!(target: "keel::shutdown", signal, "shutdown signal received");
    }
}

/// Ctrl-C outside Unix.
#[cfg(not(unix))]
fn signal_future() -> impl Future<Output = ()> + Send + 'static {
    async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => {
                tracing::info!(target: "keel::shutdown", signal = "ctrl-c", "shutdown signal received")
            }
            Err(e) => {
                tracing::warn!(target: "keel::shutdown", error = %e, "cannot listen for Ctrl-C; graceful shutdown on signals is off");
                std::future::pending::<()>().await;
            }
        }
    }
}

/// A `tokio::net::TcpListener` as a keel listener.
#[derive(Debug)]
pub struct Tcp(pub TcpListener);

impl keel_core::driver::Listener for Tcp {
    type Conn = TcpStream;
    type Addr = std::net::SocketAddr;

    fn poll_accept(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(TcpStream, std::net::SocketAddr)>> {
        self.0.poll_accept(cx)
    }

    fn shed(&mut self, conn: TcpStream, farewell: &'static [u8]) {
        if !farewell.is_empty() {
            // Best effort: whatever the socket buffer takes right now; never wait on a peer.
            let _ = conn.try_write(farewell);
        }
    }
}

/// `ConnIo` for tokio streams: tokio's `AsyncRead`/`AsyncWrite` (`poll_shutdown` is
/// `shutdown(SHUT_WR)`).
fn tokio_read<S: tokio::io::AsyncRead + Unpin>(
    conn: &mut S,
    cx: &mut Context<'_>,
    buf: &mut [u8],
) -> Poll<io::Result<usize>> {
    let mut buf = tokio::io::ReadBuf::new(buf);
    match tokio::io::AsyncRead::poll_read(Pin::new(conn), cx, &mut buf) {
        Poll::Ready(Ok(())) => Poll::Ready(Ok(buf.filled().len())),
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    }
}

impl keel_core::driver::ConnIo for Tcp {
    fn poll_read(c: &mut TcpStream, cx: &mut Context<'_>, b: &mut [u8]) -> Poll<io::Result<usize>> {
        tokio_read(c, cx, b)
    }
    fn poll_write(c: &mut TcpStream, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        tokio::io::AsyncWrite::poll_write(Pin::new(c), cx, b)
    }
    fn poll_flush(c: &mut TcpStream, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::io::AsyncWrite::poll_flush(Pin::new(c), cx)
    }
    fn poll_shutdown_write(c: &mut TcpStream, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::io::AsyncWrite::poll_shutdown(Pin::new(c), cx)
    }
}

impl keel_core::driver::ConnIo for Unix {
    fn poll_read(
        c: &mut UnixStream,
        cx: &mut Context<'_>,
        b: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        tokio_read(c, cx, b)
    }
    fn poll_write(c: &mut UnixStream, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        tokio::io::AsyncWrite::poll_write(Pin::new(c), cx, b)
    }
    fn poll_flush(c: &mut UnixStream, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::io::AsyncWrite::poll_flush(Pin::new(c), cx)
    }
    fn poll_shutdown_write(c: &mut UnixStream, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::io::AsyncWrite::poll_shutdown(Pin::new(c), cx)
    }
}

/// A connection served by keel's [`Server`] with tokio's `AsyncRead`/`AsyncWrite`:
/// `TokioConn::from(conn)` in a handler, then `tokio::io::split`, `BufReader`... as with a
/// `TcpStream`. It is [`Conn`](keel_core::driver::Conn) (activity recorded, closed by the
/// server on an idle timeout, a read deadline or reclamation, lingering close when dropped)
/// with tokio's traits; [`TokioConn::get_ref`] reaches the `Conn`.
pub struct TokioConn<L: keel_core::driver::ConnIo = Tcp>(keel_core::driver::Conn<L>);

impl<L: keel_core::driver::ConnIo> TokioConn<L> {
    /// The keel connection (read deadline, last activity, the runtime's stream).
    pub fn get_ref(&self) -> &keel_core::driver::Conn<L> {
        &self.0
    }

    /// The keel connection, back.
    pub fn into_inner(self) -> keel_core::driver::Conn<L> {
        self.0
    }
}

impl<L: keel_core::driver::ConnIo> From<keel_core::driver::Conn<L>> for TokioConn<L> {
    fn from(conn: keel_core::driver::Conn<L>) -> Self {
        TokioConn(conn)
    }
}

impl<L: keel_core::driver::ConnIo> std::fmt::Debug for TokioConn<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TokioConn").field(&self.0).finish()
    }
}

impl<L: keel_core::driver::ConnIo> tokio::io::AsyncRead for TokioConn<L> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let unfilled = buf.initialize_unfilled();
        match futures_io::AsyncRead::poll_read(Pin::new(&mut self.get_mut().0), cx, unfilled) {
            Poll::Ready(Ok(n)) => {
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<L: keel_core::driver::ConnIo> tokio::io::AsyncWrite for TokioConn<L> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        futures_io::AsyncWrite::poll_write(Pin::new(&mut self.get_mut().0), cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        futures_io::AsyncWrite::poll_flush(Pin::new(&mut self.get_mut().0), cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        futures_io::AsyncWrite::poll_close(Pin::new(&mut self.get_mut().0), cx)
    }
}

/// A `tokio::net::UnixListener` as a keel listener.
#[derive(Debug)]
pub struct Unix(pub UnixListener);

impl keel_core::driver::Listener for Unix {
    type Conn = UnixStream;
    type Addr = tokio::net::unix::SocketAddr;

    fn poll_accept(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(UnixStream, tokio::net::unix::SocketAddr)>> {
        self.0.poll_accept(cx)
    }

    fn shed(&mut self, conn: UnixStream, farewell: &'static [u8]) {
        if !farewell.is_empty() {
            let _ = conn.try_write(farewell);
        }
    }
}

/// Binds a TCP listener with the configured backlog and guards it.
pub async fn bind(addr: impl ToSocketAddrs, config: &GuardConfig) -> io::Result<Incoming<Tcp>> {
    let mut last = None;
    for addr in tokio::net::lookup_host(addr).await? {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket
            .bind(addr)
            .and_then(|()| socket.listen(config.backlog()))
        {
            Ok(listener) => return Ok(guard(listener, config)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "address resolved to no socket addresses",
        )
    }))
}

/// Guards an already bound TCP listener.
pub fn guard(listener: TcpListener, config: &GuardConfig) -> Incoming<Tcp> {
    Incoming::new(Tcp(listener), TokioRuntime, config)
}

/// Guards a Unix-domain listener.
pub fn guard_unix(listener: UnixListener, config: &GuardConfig) -> Incoming<Unix> {
    Incoming::new(Unix(listener), TokioRuntime, config)
}

/// The README's code blocks, compiled and run as doctests so the README stays true (with every
/// feature on, as the README's test command runs them).
#[cfg(all(doctest, feature = "tower", feature = "axum", feature = "hyper"))]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

/// The crate README's code blocks, compiled as doctests so the README stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct CrateReadmeDoctests;
