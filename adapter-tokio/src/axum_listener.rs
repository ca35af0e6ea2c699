//! The guarded listener as axum 0.8's [`axum::serve::Listener`] (feature `axum`).
//!
//! `axum::serve(tokio::net::TcpListener, app)` accepts without a connection limit, sleeps a
//! fixed second on `EMFILE` and has no drain deadline. [`axum_listener`] hands axum keel's
//! guarded accept instead: accept errors classified and paused on keel's growing schedule (with
//! rate-limited reports), and the connection limit applied **before** `accept` (at the limit
//! axum's accept simply waits, and the kernel backlog holds the newcomers; shed mode says its
//! farewell). Each connection's slot is held by the [`Guarded`] stream axum serves and freed
//! when axum drops it.
//!
//! axum's contract is that `Listener::accept` never fails: keel's accept machine handles every
//! error itself. A **fatal** listener error (the socket itself is broken) ends keel's stream;
//! the error is logged (target `keel::accept`, error level) and `accept` then waits for ever, so
//! `axum::serve` keeps serving the connections it has until its graceful-shutdown signal.
//!
//! ```no_run
//! use std::net::SocketAddr;
//!
//! use axum::{extract::ConnectInfo, routing::get, Router};
//! use keel_tokio::GuardConfig;
//!
//! # async fn run() -> std::io::Result<()> {
//! let guard = GuardConfig::builder().max_connections(1024).build().expect("valid config");
//! let listener = keel_tokio::axum_listener(keel_tokio::bind("127.0.0.1:3000", &guard).await?);
//! let app = Router::new().route(
//!     "/",
//!     get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { format!("hello {peer}\n") }),
//! );
//! axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
//!     .with_graceful_shutdown(async { keel_tokio::shutdown_signal().await })
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! `axum::serve` drains without a deadline and knows nothing of keel's abort count or second
//! signal: for those, serve the router with [`crate::http_server`] (feature `hyper`) instead.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use keel_core::sync::limit::Permit;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use crate::{Incoming, Tcp, Unix};

/// A stream served by axum through keel's guarded listener: the runtime's stream plus the
/// connection's slot under the limit, freed when this is dropped (when axum is done with the
/// connection). It reads and writes exactly as the stream does.
pub struct Guarded<S> {
    stream: S,
    _permit: Permit,
}

impl<S> Guarded<S> {
    /// The runtime's stream (for socket options such as `set_nodelay`).
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The runtime's stream, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }
}

impl<S: fmt::Debug> fmt::Debug for Guarded<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guarded")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// keel's guarded listener as an [`axum::serve::Listener`]: see the [module docs](self). Most
/// code wants [`axum_listener`], which wraps it so axum's `ConnectInfo<SocketAddr>` works.
pub struct AxumListener<L: keel_core::driver::Listener = Tcp> {
    incoming: Incoming<L>,
    failed: bool,
}

impl<L: keel_core::driver::Listener> AxumListener<L> {
    /// Wraps a guarded listener.
    pub fn new(incoming: Incoming<L>) -> Self {
        AxumListener {
            incoming,
            failed: false,
        }
    }

    /// The guarded listener (its counts, its limit).
    pub fn get_ref(&self) -> &Incoming<L> {
        &self.incoming
    }

    /// The next connection; after a fatal listener error, waits for ever (axum's `accept`
    /// must not fail).
    async fn next(&mut self) -> (Guarded<L::Conn>, L::Addr) {
        if !self.failed {
            if let Some(accepted) = self.incoming.next().await {
                let (permit, stream, peer) = accepted.into_parts();
                return (
                    Guarded {
                        stream,
                        _permit: permit,
                    },
                    peer,
                );
            }
            self.failed = true;
            let error = self.incoming.take_error();
            tracing::error!(
                target: "keel::accept",
                error = error.as_ref().map(|e| e as &dyn std::error::Error),
                "listener failed: no new connections will be accepted; axum serves on until its shutdown signal"
            );
        }
        std::future::pending().await
    }
}

impl<L: keel_core::driver::Listener> fmt::Debug for AxumListener<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AxumListener")
            .field("incoming", &self.incoming)
            .field("failed", &self.failed)
            .finish()
    }
}

impl<L: keel_core::driver::Listener> From<Incoming<L>> for AxumListener<L> {
    fn from(incoming: Incoming<L>) -> Self {
        AxumListener::new(incoming)
    }
}

impl axum::serve::Listener for AxumListener<Tcp> {
    type Io = Guarded<TcpStream>;
    type Addr = std::net::SocketAddr;

    fn accept(&mut self) -> impl std::future::Future<Output = (Self::Io, Self::Addr)> + Send {
        self.next()
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.incoming.get_ref().0.local_addr()
    }
}

impl axum::serve::Listener for AxumListener<Unix> {
    type Io = Guarded<UnixStream>;
    type Addr = tokio::net::unix::SocketAddr;

    fn accept(&mut self) -> impl std::future::Future<Output = (Self::Io, Self::Addr)> + Send {
        self.next()
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.incoming.get_ref().0.local_addr()
    }
}

/// The listener [`axum_listener`] returns: an [`AxumListener`] in axum's `TapIo` (with a tap
/// that does nothing), the form for which axum implements `Connected`, so
/// `into_make_service_with_connect_info::<SocketAddr>()` (TCP) or
/// `::<tokio::net::unix::SocketAddr>()` (Unix) gives handlers `ConnectInfo` with the peer
/// address keel's accept reported.
pub type AxumIncoming<L = Tcp> =
    axum::serve::TapIo<AxumListener<L>, fn(&mut Guarded<<L as keel_core::driver::Listener>::Conn>)>;

/// keel's guarded listener ready for `axum::serve`, with `ConnectInfo` working: see the
/// [module docs](self).
pub fn axum_listener<L>(incoming: Incoming<L>) -> AxumIncoming<L>
where
    L: keel_core::driver::Listener,
    AxumListener<L>: axum::serve::Listener<Io = Guarded<L::Conn>>,
{
    fn untouched<S>(_: &mut Guarded<S>) {}
    axum::serve::ListenerExt::tap_io(
        AxumListener::new(incoming),
        untouched::<L::Conn> as fn(&mut Guarded<L::Conn>),
    )
}
