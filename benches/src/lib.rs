//! Support code for keel's criterion benches, examples and conformance tests (not published).
//!
//! - [`Harness`]: what a runtime adapter supplies so shared code can drive it (a few lines per
//!   adapter, in its `examples/support/harness.rs`).
//! - [`storm`]: the guarded echo server and the seed-002 storm, shared by every adapter's `echo`
//!   and `storm` examples (the clients are std threads, so no runtime is forced on an adapter).
//! - [`conformance`]: the behavioural suite every adapter runs in `tests/conformance.rs`.
//! - [`adaptive_sim`]: `adaptive-sim`, keel's adaptive concurrency controllers beside Netflix's
//!   and Envoy's on a simulated service in virtual time.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use keel_core::driver::{ConnIo, GuardConfig, Incoming, Listener, ServeHandle, Signals, Spawn};

pub mod adaptive_sim;
pub mod conformance;
pub mod sim;
pub mod storm;

/// A runtime adapter as the shared examples and the conformance suite drive it.
pub trait Harness: 'static {
    /// The runtime's name, for messages (`"tokio"`, `"smol"`, `"async-std"`).
    const NAME: &'static str;
    /// The package of the adapter (`"keel-tokio"`...), whose `echo` example the suite runs.
    const PACKAGE: &'static str;
    /// The adapter's keel runtime: clock, timer, tasks and shutdown signals.
    type Runtime: Spawn + Signals + Default;
    /// The adapter's TCP listener glue.
    type Listener: ConnIo + Send + 'static;
    /// Runs a future to completion on the runtime (from outside it).
    fn block_on<F: Future>(fut: F) -> F::Output;
    /// Runs a future to completion on the runtime's single-threaded executor, on this thread
    /// (the default: [`block_on`](Self::block_on), which is that for smol and async-std;
    /// tokio's current-thread runtime for tokio).
    fn block_on_current_thread<F: Future>(fut: F) -> F::Output {
        Self::block_on(fut)
    }
    /// The adapter's `bind(addr, config)`.
    fn bind(
        addr: &str,
        config: &GuardConfig,
    ) -> impl Future<Output = io::Result<Incoming<Self::Listener, Self::Runtime>>>;
    /// The bound address of the adapter's listener.
    fn local_addr(listener: &Self::Listener) -> io::Result<SocketAddr>;
    /// Echoes each line of the raw (unserved) `conn` back until the peer closes it (a server's
    /// connections are echoed by [`storm::echo_conn`]). With a `server`, answers the
    /// line `HEALTH` with its health line and follows its drain: an idle connection is closed
    /// when the drain starts, a line in flight is finished and answered first (see
    /// [`storm::echo_futures_io`], which the `async-io` adapters use).
    fn echo(
        conn: <Self::Listener as Listener>::Conn,
        server: Option<ServeHandle>,
    ) -> impl Future<Output = ()> + Send + 'static;
}

/// Spawns a detached task on `H`'s runtime (through its [`Spawn`]; the handle is dropped).
pub fn spawn<H: Harness>(fut: impl Future<Output = ()> + Send + 'static) {
    drop(H::Runtime::default().spawn(fut));
}

/// Implements [`Harness`] for an adapter on `async-io` (smol, async-std): given the harness
/// type's name, the runtime's name, the adapter's package and crate (which offers `Tcp`, `bind`
/// and `core`), its runtime type and its `block_on`.
///
/// ```ignore
/// keel_benches::async_io_harness!(Smol, "smol", "keel-smol", keel_smol, SmolRuntime, smol::block_on);
/// ```
#[macro_export]
macro_rules! async_io_harness {
    ($name:ident, $label:literal, $package:literal, $adapter:ident, $runtime:ident, $block_on:path) => {
        /// The adapter as the shared examples and conformance suite drive it.
        pub struct $name;

        impl $crate::Harness for $name {
            const NAME: &'static str = $label;
            const PACKAGE: &'static str = $package;
            type Runtime = $adapter::$runtime;
            type Listener = $adapter::Tcp;
            fn block_on<F: ::core::future::Future>(fut: F) -> F::Output {
                $block_on(fut)
            }
            async fn bind(
                addr: &str,
                config: &$adapter::GuardConfig,
            ) -> ::std::io::Result<$adapter::Incoming<$adapter::Tcp>> {
                $adapter::bind(addr, config).await
            }
            fn local_addr(listener: &$adapter::Tcp) -> ::std::io::Result<::std::net::SocketAddr> {
                listener.get_ref().local_addr()
            }
            async fn echo(
                conn: <$adapter::Tcp as $adapter::core::driver::Listener>::Conn,
                server: ::core::option::Option<$adapter::ServeHandle>,
            ) {
                $crate::storm::echo_futures_io(conn, server).await
            }
        }
    };
}
