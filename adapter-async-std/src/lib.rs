//! # keel-async-std: keel's reliability machines on async-std
//!
//! **Upstream async-std is discontinued** (its maintainers point to smol): new code should use
//! [keel-smol](https://docs.rs/keel-smol). This crate keeps existing async-std services covered.
//!
//! The thin binding of [`keel_core`] to async-std's listeners and the `async-io` timers
//! async-std runs on. Every algorithm lives in the core (re-exported here as [`core`]); the
//! `async-io` glue is keel-smol's ([`keel_smol::async_io`]), so this crate supplies async-std's
//! runtime ([`AsyncStdRuntime`]: its tasks) and names each machine with async-std filled in.
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
use std::time::Duration;

use async_std::net::{TcpListener, TcpStream, ToSocketAddrs};
#[cfg(unix)]
use async_std::os::unix::net::{UnixListener, UnixStream};
use keel_core::backoff::BackoffConfig;
use keel_core::driver::{self, AbortHandle, BoxFuture, ConnIo, Elapsed, SleepUntil};
use keel_core::sync::budget::SharedBudget;
use keel_core::time::Instant;
use keel_smol::async_io::{self, AsyncIoListener, AsyncIoTimer};

// ---- The core, re-exported -------------------------------------------------------------------

/// The runtime-agnostic core, re-exported.
pub use keel_core as core;
pub use keel_core::driver::{Accepted, Draining, GuardConfig, ServeHandle, ServeReport};
pub use keel_core::shutdown::ShutdownConfig;

// ---- Runtime: clock, timers, signals, tasks ------------------------------------------------

/// async-std as a keel runtime: std's clock and the `async-io` reactor's timers
/// (`async_io::Timer`), SIGINT/SIGTERM through `async-signal` (both from
/// [`keel_smol::async_io`]), and `async_std::task::spawn` for [`Server`]'s tasks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AsyncStdRuntime;

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

// ---- Clock and timers ----------------------------------------------------------------------

/// Now, on this runtime's clock ([`async_io::now`]), as a keel instant.
pub fn now() -> Instant {
    async_io::now()
}

/// Sleeps until a keel instant on this runtime's timer.
pub fn sleep_until(deadline: Instant) -> SleepUntil<AsyncStdRuntime> {
    driver::sleep_until(&AsyncStdRuntime, deadline)
}

/// Runs a future for at most `duration` on this runtime's timer.
pub async fn timeout<F: Future>(duration: Duration, fut: F) -> Result<F::Output, Elapsed> {
    driver::timeout(&AsyncStdRuntime, duration, fut).await
}

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

/// Resolves at the next SIGINT or SIGTERM (Ctrl-C on Windows): see
/// [`keel_smol::async_io::shutdown_signal`].
pub fn shutdown_signal() -> BoxFuture<()> {
    async_io::shutdown_signal()
}

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

// ---- Circuit breaker -----------------------------------------------------------------------

/// A circuit breaker around futures on this runtime; clones share one breaker.
pub type Breaker = driver::breaker::Breaker<AsyncStdRuntime>;

// ---- Retry ---------------------------------------------------------------------------------

/// Retries async operations with backoff, a shared budget and a predicate on this runtime.
pub type Retry<P = driver::retry::RetryAll, N = driver::retry::NoNotify> =
    driver::retry::Retry<AsyncStdRuntime, P, N>;

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
    driver::retry::retry(&AsyncStdRuntime, config, budget, op).await
}

// ---- Rate limits ---------------------------------------------------------------------------

/// A GCRA rate limiter whose `until_ready()` sleeps on this runtime's timer.
pub type RateLimiter = driver::rate::RateLimiter<AsyncStdRuntime>;

/// A bounded keyed (per IP, per user) rate limiter on this runtime.
pub type KeyedRateLimiter<K> = driver::rate::KeyedRateLimiter<K, AsyncStdRuntime>;

// ---- Bulkhead ------------------------------------------------------------------------------

/// A bulkhead whose `run(fut)` waits in a bounded queue on this runtime's timer.
pub type Bulkhead = driver::bulkhead::Bulkhead<AsyncStdRuntime>;

/// An adaptive concurrency limit on this runtime: a bulkhead whose limit follows the
/// service's capacity, measured from the calls it admits (see [`driver::adaptive`]).
pub type AdaptiveLimit = driver::adaptive::AdaptiveLimit<AsyncStdRuntime>;

/// A slot under an [`AdaptiveLimit`]; dropping it feeds the call's sample.
pub type AdaptivePermit = driver::adaptive::AdaptivePermit<AsyncStdRuntime>;

/// The README's code blocks, compiled as doctests so the README stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
