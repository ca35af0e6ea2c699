//! # keel-testkit: test support for keel
//!
//! - [`runtime`]: **a deterministic runtime for your own tests**. [`ManualRuntime`] implements
//!   keel-core's driver traits ([`Runtime`](keel_core::driver::Runtime),
//!   [`Spawn`]) on a clock that moves only when the test says so
//!   ([`ManualRuntime::advance`]), or, inside [`ManualRuntime::block_on`], jumps straight to the
//!   next timer when every task is waiting (as tokio's paused time does). A `Breaker`, `Retry`,
//!   `RateLimiter::until_ready` or `Bulkhead` future runs on it exactly as on a real runtime,
//!   in no wall-clock time and the same way every run.
//! - [`conformance`]: the behavioural suite every runtime adapter passes, written once against
//!   [`Harness`]; an adapter's `tests/conformance.rs` implements [`Harness`] and invokes
//!   [`conformance_suite!`].
//! - [`storm`]: the seed-002 accept storm (1000 clients against a server under `ulimit -n 100`),
//!   the client side, for any server binary that echoes lines.
//! - [`echo`]: the line echo of the adapters' `echo` examples and its command-line flags.
//! - [`models`]: reference models of keel-core's machines, shared by the proptests and the fuzz
//!   targets.
//!
//! ```
//! use std::time::Duration;
//! use keel_core::driver;
//! use keel_testkit::ManualRuntime;
//!
//! let rt = ManualRuntime::new();
//! let start = rt.now();
//! // The sleep ends when the clock reaches its deadline: block_on jumps the clock there.
//! rt.block_on(driver::sleep(&rt, Duration::from_secs(3600)));
//! assert_eq!(rt.now(), start + Duration::from_secs(3600));
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use keel_core::driver::{ConnIo, GuardConfig, Incoming, Listener, ServeHandle, Signals, Spawn};

pub mod conformance;
pub mod echo;
pub mod models;
pub mod runtime;
pub mod storm;

pub use runtime::ManualRuntime;

/// A runtime adapter as the conformance suite drives it (a few lines per adapter, in its
/// `tests/conformance.rs`).
pub trait Harness: 'static {
    /// The runtime's name, for messages (`"tokio"`, `"smol"`, `"async-std"`).
    const NAME: &'static str;
    /// The package of the adapter (`"keel-tokio"`...), whose echo example the suite runs.
    const PACKAGE: &'static str;
    /// The name of that echo example (`"echo"` for keel-tokio, `"smol-echo"`,
    /// `"async-std-echo"`): each adapter's examples have their own names, so that the
    /// workspace's `target/<profile>/examples/` holds one binary per name.
    const ECHO_EXAMPLE: &'static str;
    /// The adapter's keel runtime: clock, timer, tasks and shutdown signals.
    type Runtime: Spawn + Signals + Default;
    /// The adapter's TCP listener glue (its peer address is the std `SocketAddr`).
    type Listener: ConnIo<Addr = SocketAddr> + Send + 'static;
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
    /// connections are echoed by [`echo::echo_conn`]). With a `server`, answers the
    /// line `HEALTH` with its health line and follows its drain: an idle connection is closed
    /// when the drain starts, a line in flight is finished and answered first (see
    /// [`echo::echo_futures_io`], which the `async-io` adapters use).
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
/// type's name, the runtime's name, the adapter's package, its echo example's name, its crate
/// (which offers `Tcp`, `bind` and `core`), its runtime type and its `block_on`.
///
/// ```ignore
/// keel_testkit::async_io_harness!(Smol, "smol", "keel-smol", "smol-echo", keel_smol, SmolRuntime, smol::block_on);
/// ```
#[macro_export]
macro_rules! async_io_harness {
    ($name:ident, $label:literal, $package:literal, $echo:literal, $adapter:ident, $runtime:ident, $block_on:path) => {
        /// The adapter as the conformance suite drives it.
        pub struct $name;

        impl $crate::Harness for $name {
            const NAME: &'static str = $label;
            const PACKAGE: &'static str = $package;
            const ECHO_EXAMPLE: &'static str = $echo;
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
                $crate::echo::echo_futures_io(conn, server).await
            }
        }
    };
}

/// The crate README's code blocks, compiled as doctests so the README stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct CrateReadmeDoctests;
