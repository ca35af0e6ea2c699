//! Support code for keel's criterion benches, examples and conformance tests (not published).
//!
//! - [`Harness`]: what a runtime adapter supplies so shared code can drive it (a few lines per
//!   adapter, in its `examples/support/harness.rs`).
//! - [`storm`]: the guarded echo server and the seed-002 storm, shared by every adapter's `echo`
//!   and `storm` examples (the clients are std threads, so no runtime is forced on an adapter).
//! - [`conformance`]: the behavioural suite every adapter runs in `tests/conformance.rs`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use keel_core::driver::{GuardConfig, Incoming, Listener, Runtime};

pub mod conformance;
pub mod storm;

/// A runtime adapter as the shared examples and the conformance suite drive it.
pub trait Harness: 'static {
    /// The runtime's name, for messages (`"tokio"`, `"smol"`, `"async-std"`).
    const NAME: &'static str;
    /// The adapter's keel runtime (clock and timer).
    type Runtime: Runtime + Default;
    /// The adapter's TCP listener glue.
    type Listener: Listener;
    /// Runs a future to completion on the runtime (from outside it).
    fn block_on<F: Future>(fut: F) -> F::Output;
    /// Spawns a detached task on the runtime.
    fn spawn<F: Future<Output = ()> + Send + 'static>(fut: F);
    /// The adapter's `bind(addr, config)`.
    fn bind(
        addr: &str,
        config: &GuardConfig,
    ) -> impl Future<Output = io::Result<Incoming<Self::Listener, Self::Runtime>>>;
    /// The bound address of the adapter's listener.
    fn local_addr(listener: &Self::Listener) -> io::Result<SocketAddr>;
    /// Echoes each line of `conn` back until the peer closes it.
    fn echo(conn: <Self::Listener as Listener>::Conn) -> impl Future<Output = ()> + Send + 'static;
}

/// Implements [`Harness`] for an adapter on `async-io` (smol, async-std): given the harness
/// type's name, the runtime's name, the adapter crate (which offers `Tcp`, `bind` and `core`),
/// its `block_on` and a closure spawning a detached task.
///
/// ```ignore
/// keel_benches::async_io_harness!(Smol, "smol", keel_smol, smol::block_on, |f| smol::spawn(f).detach());
/// ```
#[macro_export]
macro_rules! async_io_harness {
    ($name:ident, $label:literal, $adapter:ident, $block_on:path, $spawn:expr) => {
        /// The adapter as the shared examples and conformance suite drive it.
        pub struct $name;

        impl $crate::Harness for $name {
            const NAME: &'static str = $label;
            type Runtime = $adapter::core::driver::async_io::AsyncIoRuntime;
            type Listener = $adapter::Tcp;
            fn block_on<F: ::core::future::Future>(fut: F) -> F::Output {
                $block_on(fut)
            }
            fn spawn<F: ::core::future::Future<Output = ()> + Send + 'static>(fut: F) {
                ($spawn)(fut)
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
            async fn echo(conn: <$adapter::Tcp as $adapter::core::driver::Listener>::Conn) {
                $crate::storm::echo_futures_io(conn).await
            }
        }
    };
}
