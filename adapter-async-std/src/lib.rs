//! # keel-async-std: keel's reliability machines on async-std
//!
//! **Upstream async-std is discontinued** (its maintainers point to smol): new code should use
//! [keel-smol](https://docs.rs/keel-smol). This crate keeps existing async-std services covered.
//!
//! The thin binding of [`keel_core`] to async-std's listeners and the `async-io` timers
//! async-std runs on. Every algorithm lives in the core (re-exported here as [`core`]); the
//! `async-io` glue is shared with keel-smol ([`keel_core::driver::async_io`]), so this crate
//! only names async-std's types.
//!
//! ## A guarded accept loop
//!
//! ```no_run
//! use keel_async_std::{GuardConfig, StreamExt as _};
//!
//! # fn main() -> std::io::Result<()> { async_std::task::block_on(async {
//! let config = GuardConfig::builder().max_connections(1024).build().expect("valid config");
//! let mut incoming = keel_async_std::bind("127.0.0.1:7878", &config).await?;
//! while let Some((permit, stream)) = incoming.next().await {
//!     async_std::task::spawn(async move {
//!         let _permit = permit; // the slot is released when the connection task ends
//!         drop(stream);
//!     });
//! }
//! # Ok(()) }) }
//! ```

use std::io;

use async_std::net::{TcpListener, TcpStream, ToSocketAddrs};
#[cfg(unix)]
use async_std::os::unix::net::{UnixListener, UnixStream};
use keel_core::driver::async_io::{self, AsyncIoListener};

/// The runtime-agnostic core, re-exported.
pub use keel_core as core;
pub use keel_core::driver::{Draining, GuardConfig, ServeHandle, ServeReport, StreamExt};
/// A connection as [`Server`] hands it to a handler (`futures-io`'s `AsyncRead`/`AsyncWrite`):
/// activity recorded, closed by the server on an idle timeout, a read deadline or reclamation,
/// closed with a lingering close when dropped.
pub type Conn<L = Tcp> = keel_core::driver::Conn<L>;
pub use keel_core::shutdown::ShutdownConfig;

keel_core::async_io_runtime! {
    /// async-std as a keel runtime: the `async-io` reactor's clock and timers
    /// (`async_io::Timer`), SIGINT/SIGTERM through `async-signal`, and `async_std::task::spawn`
    /// for [`Server`]'s tasks.
    pub struct AsyncStdRuntime;
    clock: std::time::Instant::now;
    spawn(fut) -> AsyncStdTask { AsyncStdTask(async_std::task::spawn(fut)) }
}

/// A task spawned by keel on async-std: its `JoinHandle`, which detaches when dropped.
/// [`AbortHandle::abort`](keel_core::driver::AbortHandle::abort) cancels it through
/// `JoinHandle::cancel`, which is async: a small task is spawned to run it, so the task stops
/// at the executor's next opportunity rather than before `abort` returns.
#[derive(Debug)]
pub struct AsyncStdTask(async_std::task::JoinHandle<()>);

impl keel_core::driver::AbortHandle for AsyncStdTask {
    fn abort(self) {
        drop(async_std::task::spawn(self.0.cancel()));
    }
}

keel_core::runtime_aliases!(AsyncStdRuntime);

/// An async-std TCP listener as a keel listener: yields `async_std::net::TcpStream`.
pub type Tcp = AsyncIoListener<std::net::TcpListener, TcpStream>;

/// An async-std Unix-domain listener as a keel listener: yields
/// `async_std::os::unix::net::UnixStream`.
#[cfg(unix)]
pub type Unix = AsyncIoListener<std::os::unix::net::UnixListener, UnixStream>;

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

/// The README's code blocks, compiled as doctests so the README stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
