//! # keel-async-std: keel's reliability machines on async-std
//!
//! **Upstream async-std is discontinued** (its maintainers point to smol): new code should use
//! [keel-smol](https://docs.rs/keel-smol). This crate keeps existing async-std services covered.
//!
//! The thin binding of [`keel_core`] to async-std's listeners and the `async-io` timers
//! async-std runs on. Every algorithm lives in the core (re-exported here as [`core`]); the
//! `async-io` glue is keel-smol's ([`keel_smol::async_io`]), so this crate supplies async-std's
//! runtime ([`AsyncStdRuntime`]: its tasks), its listeners and the server on them, and
//! re-exports keel-smol's clock, timers and the machines that only wait on timers
//! ([`Breaker`], [`Retry`], [`RateLimiter`], [`Bulkhead`], ...: async-std's timers are
//! `async-io`'s, so they are the same types).
//!
//! ## A guarded accept loop
//!
//! ```no_run
//! use keel_async_std::{Accepted, GuardConfig};
//!
//! # fn main() -> std::io::Result<()> { async_std::task::block_on(async {
//! let config = GuardConfig::builder().max_connections(1024).build().expect("valid config");
//! let mut incoming = keel_async_std::bind("127.0.0.1:7878", &config).await?;
//! while let Some(Accepted { permit, stream, peer }) = incoming.next().await {
//!     eprintln!("connection from {peer}"); // the client's address, e.g. for a per-IP limit
//!     async_std::task::spawn(async move {
//!         let _permit = permit; // the slot is released when the connection task ends
//!         drop(stream);
//!     });
//! }
//! # Ok(()) }) }
//! ```
//!
//! ## What this crate exports
//!
//! | group | names |
//! | --- | --- |
//! | the core | [`core`], [`GuardConfig`], [`ShutdownConfig`], [`Accepted`] |
//! | runtime | [`AsyncStdRuntime`], [`AsyncStdTask`] |
//! | clock and timers | [`now`], [`sleep_until`], [`timeout`] |
//! | listeners and accept | [`Tcp`], [`Unix`], [`Incoming`], [`bind`], [`guard`], [`guard_unix`] |
//! | serve and shutdown | [`Server`], [`serve`], [`shutdown_signal`], [`Conn`], [`Draining`], [`ServeHandle`], [`ServeReport`] |
//! | breaker | [`Breaker`] |
//! | retry | [`Retry`], [`retry`] |
//! | rate limits | [`RateLimiter`], [`KeyedRateLimiter`] |
//! | bulkhead | [`Bulkhead`] |
//! | adaptive concurrency | [`AdaptiveLimit`], [`AdaptivePermit`] |
//!
//! keel-tokio and keel-smol export the same names for their runtimes.
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::future::Future;
use std::io;

use async_std::net::{TcpListener, TcpStream, ToSocketAddrs};
#[cfg(unix)]
use async_std::os::unix::net::{UnixListener, UnixStream};
use keel_core::driver::{self, AbortHandle, BoxFuture, ConnIo};
use keel_core::time::Instant;
use keel_smol::async_io::{self, AsyncIoListener, AsyncIoTimer};

// ---- The core, re-exported -------------------------------------------------------------------

/// The runtime-agnostic core, re-exported.
pub use keel_core as core;
pub use keel_core::driver::{Accepted, Draining, GuardConfig, ServeHandle, ServeReport};
pub use keel_core::shutdown::ShutdownConfig;

// ---- Runtime: clock, timers, signals, tasks ------------------------------------------------

/// async-std as a keel runtime: quanta's TSC clock and the `async-io` reactor's timers
/// (`async_io::Timer`), SIGINT/SIGTERM through `async-signal` (both from
/// [`keel_smol::async_io`]), and `async_std::task::spawn` for [`Server`]'s tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AsyncStdRuntime;

impl Default for AsyncStdRuntime {
    /// The runtime handle; the first one calibrates keel's clock
    /// ([`async_io::calibrate`]), so no machine's first clock read pays for it.
    fn default() -> Self {
        async_io::calibrate();
        AsyncStdRuntime
    }
}

impl driver::Runtime for AsyncStdRuntime {
    type Timer = AsyncIoTimer;

    fn now(&self) -> Instant {
        async_io::now()
    }

    fn timer(&self, deadline: Instant) -> AsyncIoTimer {
        AsyncIoTimer::at(deadline)
    }
}

impl driver::Signals for AsyncStdRuntime {
    fn shutdown_signal(&self) -> BoxFuture<()> {
        async_io::shutdown_signal()
    }
}

impl driver::Spawn for AsyncStdRuntime {
    type Handle = AsyncStdTask;

    fn spawn<F>(&self, fut: F) -> AsyncStdTask
    where
        F: Future<Output = ()> + Send + 'static,
    {
        AsyncStdTask(async_std::task::spawn(fut))
    }
}

/// A task spawned by keel on async-std: its `JoinHandle`, which detaches when dropped.
/// [`AbortHandle::abort`] cancels it through `JoinHandle::cancel`, which is async: a small task
/// is spawned to run it, so the task stops at the executor's next opportunity rather than
/// before `abort` returns.
#[derive(Debug)]
pub struct AsyncStdTask(async_std::task::JoinHandle<()>);

impl AbortHandle for AsyncStdTask {
    fn abort(self) {
        drop(async_std::task::spawn(self.0.cancel()));
    }
}

// ---- Clock, timers and the machines that only wait on them ----------------------------------

/// async-std's clock and timers are the `async-io` reactor's, so everything that only reads the
/// clock and waits on a timer (spawning nothing) is keel-smol's, re-exported: the same types on
/// [`keel_smol::SmolRuntime`]'s clock and timers, which are async-std's own. What spawns tasks
/// ([`Incoming`], [`Server`], [`serve`]) runs on [`AsyncStdRuntime`] below.
pub use keel_smol::{
    now, retry, shutdown_signal, sleep_until, timeout, AdaptiveLimit, AdaptivePermit, Breaker,
    Bulkhead, KeyedRateLimiter, RateLimiter, Retry,
};

// ---- Listeners and the guarded accept loop -------------------------------------------------

/// An async-std TCP listener as a keel listener: yields `async_std::net::TcpStream`.
pub type Tcp = AsyncIoListener<std::net::TcpListener, TcpStream>;

/// An async-std Unix-domain listener as a keel listener: yields
/// `async_std::os::unix::net::UnixStream`.
#[cfg(unix)]
pub type Unix = AsyncIoListener<std::os::unix::net::UnixListener, UnixStream>;

/// A guarded listener: a `Stream` of [`Accepted`] connections (permit, stream, peer address);
/// take the next with its inherent `next().await`.
pub type Incoming<L> = driver::Incoming<L, AsyncStdRuntime>;

/// Binds a TCP listener with the configured backlog and guards it.
pub async fn bind(addr: impl ToSocketAddrs, config: &GuardConfig) -> io::Result<Incoming<Tcp>> {
    async_io::bind_guarded(addr.to_socket_addrs().await?, config, |s| Ok(s.into()))
}

/// Guards an already bound TCP listener. async-std does not share its reactor registration, so
/// the socket is taken back from async-std and registered anew (which can fail).
pub fn guard(listener: TcpListener, config: &GuardConfig) -> io::Result<Incoming<Tcp>> {
    async_io::guard_std(std::net::TcpListener::try_from(listener)?, config, |s| {
        Ok(s.into())
    })
}

/// Guards a Unix-domain listener (taken back from async-std and registered anew, like [`guard`]).
#[cfg(unix)]
pub fn guard_unix(listener: UnixListener, config: &GuardConfig) -> io::Result<Incoming<Unix>> {
    let listener = std::os::unix::net::UnixListener::try_from(listener)?;
    async_io::guard_std(listener, config, |s| Ok(s.into()))
}

// ---- Serving with graceful shutdown --------------------------------------------------------

/// A graceful server over a guarded listener on this runtime: see [`driver::serve::Server`].
pub type Server<L> = driver::serve::Server<L, AsyncStdRuntime>;

/// A connection as [`Server`] hands it to a handler (`futures-io`'s `AsyncRead`/`AsyncWrite`):
/// activity recorded, closed by the server on an idle timeout, a read deadline or reclamation,
/// closed with a lingering close when dropped.
pub type Conn<L = Tcp> = driver::Conn<L>;

/// Serves `incoming` with one `handler` task per connection until SIGINT or SIGTERM, then
/// drains gracefully (default grace period 30 s; a second signal stops at once). For another
/// grace period or trigger, use [`Server`] directly.
pub async fn serve<L, H, Fut>(incoming: Incoming<L>, handler: H) -> ServeReport
where
    L: ConnIo + Send + 'static,
    H: FnMut(Conn<L>, Draining) -> Fut + Send,
    Fut: Future<Output = ()> + Send + 'static,
{
    Server::new(incoming)
        .shutdown_on(shutdown_signal)
        .serve(handler)
        .await
}

/// The README's code blocks, compiled as doctests so the README stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
