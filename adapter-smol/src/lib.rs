//! # keel-smol: keel's reliability machines on smol
//!
//! The thin binding of [`keel_core`] to smol's listeners and the `async-io` timers. Every
//! algorithm lives in the core (re-exported here as [`core`], so an application depends on this
//! crate alone); the `async-io` glue is shared with keel-async-std
//! ([`keel_core::driver::async_io`]), so this crate only names smol's types.
//!
//! ## A guarded accept loop
//!
//! ```no_run
//! use keel_smol::{GuardConfig, StreamExt as _};
//!
//! # fn main() -> std::io::Result<()> { smol::block_on(async {
//! let config = GuardConfig::builder().max_connections(1024).build().expect("valid config");
//! let mut incoming = keel_smol::bind("127.0.0.1:7878", &config).await?;
//! while let Some((permit, stream)) = incoming.next().await {
//!     smol::spawn(async move {
//!         let _permit = permit; // the slot is released when the connection task ends
//!         drop(stream);
//!     })
//!     .detach();
//! }
//! # Ok(()) }) }
//! ```

use std::io;
use std::sync::Arc;

use keel_core::driver::async_io::{self, AsyncIoListener};
use smol::net::{AsyncToSocketAddrs, TcpListener, TcpStream};

/// The runtime-agnostic core, re-exported.
pub use keel_core as core;
pub use keel_core::driver::{Draining, GuardConfig, ServeHandle, ServeReport, StreamExt};
/// A connection as [`Server`] hands it to a handler (`futures-io`'s `AsyncRead`/`AsyncWrite`):
/// activity recorded, closed by the server on an idle timeout, a read deadline or reclamation,
/// closed with a lingering close when dropped.
pub type Conn<L = Tcp> = keel_core::driver::Conn<L>;
pub use keel_core::shutdown::ShutdownConfig;

keel_core::async_io_runtime! {
    /// smol as a keel runtime: the `async-io` reactor's clock and timers (`async_io::Timer`),
    /// SIGINT/SIGTERM through `async-signal`, and `smol::spawn` for [`Server`]'s tasks.
    pub struct SmolRuntime;
    clock: std::time::Instant::now;
    spawn(fut) -> SmolTask { SmolTask(Some(smol::spawn(fut))) }
}

/// A task spawned by keel on smol. Dropping a `smol::Task` cancels it, so this handle keeps the
/// task and **detaches** it when dropped; only
/// [`AbortHandle::abort`](keel_core::driver::AbortHandle::abort) cancels it.
#[derive(Debug)]
pub struct SmolTask(Option<smol::Task<()>>);

impl keel_core::driver::AbortHandle for SmolTask {
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

keel_core::runtime_aliases!(SmolRuntime);

/// A smol TCP listener as a keel listener: yields `smol::net::TcpStream`.
pub type Tcp = AsyncIoListener<std::net::TcpListener, TcpStream>;

/// A smol Unix-domain listener as a keel listener: yields `smol::net::unix::UnixStream`.
#[cfg(unix)]
pub type Unix = AsyncIoListener<std::os::unix::net::UnixListener, smol::net::unix::UnixStream>;

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

/// The README's code blocks, compiled as doctests so the README stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
