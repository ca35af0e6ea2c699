//! # keel-smol: keel's reliability machines on smol
//!
//! The thin binding of [`keel_core`] to smol's listeners and the `async-io` timers. Every
//! algorithm lives in the core (re-exported here as [`core`], so an application depends on this
//! crate alone); this crate supplies smol's runtime ([`SmolRuntime`]) and the `async-io` glue
//! ([`async_io`], which keel-async-std uses too), then names each machine with smol filled in.
//!
//! ## A guarded accept loop
//!
//! ```no_run
//! use keel_smol::{Accepted, GuardConfig};
//!
//! # fn main() -> std::io::Result<()> { smol::block_on(async {
//! let config = GuardConfig::builder().max_connections(1024).build().expect("valid config");
//! let mut incoming = keel_smol::bind("127.0.0.1:7878", &config).await?;
//! while let Some(Accepted { permit, stream, peer }) = incoming.next().await {
//!     eprintln!("connection from {peer}"); // the client's address, e.g. for a per-IP limit
//!     smol::spawn(async move {
//!         let _permit = permit; // the slot is released when the connection task ends
//!         drop(stream);
//!     })
//!     .detach();
//! }
//! # Ok(()) }) }
//! ```
//!
//! ## What this crate exports
//!
//! | group | names |
//! | --- | --- |
//! | the core | [`core`], [`GuardConfig`], [`ShutdownConfig`], [`Accepted`] |
//! | runtime | [`SmolRuntime`], [`SmolTask`], [`async_io`] (the glue) |
//! | clock and timers | [`now`], [`sleep_until`], [`timeout`] |
//! | listeners and accept | [`Tcp`], [`Unix`], [`Incoming`], [`bind`], [`guard`], [`guard_unix`] |
//! | serve and shutdown | [`Server`], [`serve`], [`shutdown_signal`], [`Conn`], [`Draining`], [`ServeHandle`], [`ServeReport`] |
//! | breaker | [`Breaker`] |
//! | retry | [`Retry`], [`retry`] |
//! | rate limits | [`RateLimiter`], [`KeyedRateLimiter`] |
//! | bulkhead | [`Bulkhead`] |
//! | adaptive concurrency | [`AdaptiveLimit`], [`AdaptivePermit`] |
//!
//! keel-tokio and keel-async-std export the same names for their runtimes.
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use keel_core::backoff::BackoffConfig;
use keel_core::driver::{self, AbortHandle, BoxFuture, ConnIo, SleepUntil};
use keel_core::sync::budget::SharedBudget;
use keel_core::time::Instant;
use smol::net::{AsyncToSocketAddrs, TcpListener, TcpStream};

use crate::async_io::{AsyncIoListener, AsyncIoTimer};

pub mod async_io;

// ---- The core, re-exported -------------------------------------------------------------------

/// The runtime-agnostic core, re-exported.
pub use keel_core as core;
pub use keel_core::driver::{Accepted, Draining, GuardConfig, ServeHandle, ServeReport};
pub use keel_core::shutdown::ShutdownConfig;

// ---- Runtime: clock, timers, signals, tasks ------------------------------------------------

/// smol as a keel runtime: quanta's TSC clock and the `async-io` reactor's timers
/// (`async_io::Timer`, see [`async_io::now`] and [`AsyncIoTimer`]), SIGINT/SIGTERM through `async-signal`, and `smol::spawn` for [`Server`]'s tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmolRuntime;

impl Default for SmolRuntime {
    /// The runtime handle; the first one calibrates keel's clock
    /// ([`async_io::calibrate`]), so no machine's first clock read pays for it.
    fn default() -> Self {
        async_io::calibrate();
        SmolRuntime
    }
}

impl driver::Runtime for SmolRuntime {
    type Timer = AsyncIoTimer;

    fn now(&self) -> Instant {
        async_io::now()
    }

    fn timer(&self, deadline: Instant) -> AsyncIoTimer {
        AsyncIoTimer::at(deadline)
    }
}

impl driver::Signals for SmolRuntime {
    fn shutdown_signal(&self) -> BoxFuture<()> {
        async_io::shutdown_signal()
    }
}

impl driver::Spawn for SmolRuntime {
    type Handle = SmolTask;

    fn spawn<F>(&self, fut: F) -> SmolTask
    where
        F: Future<Output = ()> + Send + 'static,
    {
        SmolTask(Some(smol::spawn(fut)))
    }
}

/// A task spawned by keel on smol. Dropping a `smol::Task` cancels it, so this handle keeps the
/// task and **detaches** it when dropped; only [`AbortHandle::abort`] cancels it.
#[derive(Debug)]
pub struct SmolTask(Option<smol::Task<()>>);

impl AbortHandle for SmolTask {
    fn abort(mut self) {
        drop(self.0.take());
    }
}

impl Drop for SmolTask {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.detach();
        }
    }
}

// ---- Clock and timers ----------------------------------------------------------------------

/// Now, on this runtime's clock ([`async_io::now`]), as a keel instant.
pub fn now() -> Instant {
    async_io::now()
}

/// Sleeps until a keel instant on this runtime's timer.
pub fn sleep_until(deadline: Instant) -> SleepUntil<SmolRuntime> {
    driver::sleep_until(&SmolRuntime, deadline)
}

/// Runs a future for at most `duration` (from its first poll) on this runtime's timer:
/// [`Elapsed`](driver::Elapsed) if the deadline comes first. The returned future holds `fut` once.
pub fn timeout<F: Future>(duration: Duration, fut: F) -> driver::Timeout<SmolRuntime, F> {
    driver::timeout(&SmolRuntime, duration, fut)
}

// ---- Listeners and the guarded accept loop -------------------------------------------------

/// A smol TCP listener as a keel listener: yields `smol::net::TcpStream`.
pub type Tcp = AsyncIoListener<std::net::TcpListener, TcpStream>;

/// A smol Unix-domain listener as a keel listener: yields `smol::net::unix::UnixStream`.
#[cfg(unix)]
pub type Unix = AsyncIoListener<std::os::unix::net::UnixListener, smol::net::unix::UnixStream>;

/// A guarded listener: a `Stream` of [`Accepted`] connections (permit, stream, peer address);
/// take the next with its inherent `next().await`.
pub type Incoming<L> = driver::Incoming<L, SmolRuntime>;

/// Binds a TCP listener with the configured backlog and guards it.
pub async fn bind(
    addr: impl AsyncToSocketAddrs,
    config: &GuardConfig,
) -> io::Result<Incoming<Tcp>> {
    async_io::bind_guarded(smol::net::resolve(addr).await?, config, TcpStream::try_from)
}

/// Guards an already bound TCP listener.
pub fn guard(listener: TcpListener, config: &GuardConfig) -> Incoming<Tcp> {
    async_io::guard_async(Arc::from(listener), config, TcpStream::try_from)
}

/// Guards a Unix-domain listener.
#[cfg(unix)]
pub fn guard_unix(listener: smol::net::unix::UnixListener, config: &GuardConfig) -> Incoming<Unix> {
    async_io::guard_async(
        Arc::from(listener),
        config,
        smol::net::unix::UnixStream::try_from,
    )
}

// ---- Serving with graceful shutdown --------------------------------------------------------

/// A graceful server over a guarded listener on this runtime: see [`driver::serve::Server`].
pub type Server<L> = driver::serve::Server<L, SmolRuntime>;

/// A connection as [`Server`] hands it to a handler (`futures-io`'s `AsyncRead`/`AsyncWrite`):
/// activity recorded, closed by the server on an idle timeout, a read deadline or reclamation,
/// closed with a lingering close when dropped.
pub type Conn<L = Tcp> = driver::Conn<L>;

/// Resolves at the next SIGINT or SIGTERM (Ctrl-C on Windows): see
/// [`async_io::shutdown_signal`].
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
pub type Breaker = driver::breaker::Breaker<SmolRuntime>;

// ---- Retry ---------------------------------------------------------------------------------

/// Retries async operations with backoff, a shared budget and a predicate on this runtime.
pub type Retry<P = driver::retry::RetryAll, N = driver::retry::NoNotify> =
    driver::retry::Retry<SmolRuntime, P, N>;

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
    driver::retry::retry(&SmolRuntime, config, budget, op).await
}

// ---- Rate limits ---------------------------------------------------------------------------

/// A GCRA rate limiter whose `until_ready()` sleeps on this runtime's timer.
pub type RateLimiter = driver::rate::RateLimiter<SmolRuntime>;

/// A bounded keyed (per IP, per user) rate limiter on this runtime.
pub type KeyedRateLimiter<K> = driver::rate::KeyedRateLimiter<K, SmolRuntime>;

// ---- Bulkhead ------------------------------------------------------------------------------

/// A bulkhead whose `run(fut)` waits in a bounded queue on this runtime's timer.
pub type Bulkhead = driver::bulkhead::Bulkhead<SmolRuntime>;

/// An adaptive concurrency limit on this runtime: a bulkhead whose limit follows the
/// service's capacity, measured from the calls it admits (see [`driver::adaptive`]).
pub type AdaptiveLimit = driver::adaptive::AdaptiveLimit<SmolRuntime>;

/// A slot under an [`AdaptiveLimit`]; dropping it feeds the call's sample.
pub type AdaptivePermit = driver::adaptive::AdaptivePermit<SmolRuntime>;

/// The README's code blocks, compiled as doctests so the README stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
