//! The glue shared by the runtimes that sit on `async-io` (smol, async-std), written once so
//! neither adapter repeats it (feature `async-io`).
//!
//! - [`AsyncIoRuntime`](crate::driver::async_io::AsyncIoRuntime): the adapter's clock (a
//!   `fn() -> std::time::Instant` the adapter passes in: keel-core never reads a clock itself),
//!   counted from a process-wide origin, and the timer (`async_io::Timer`, re-armed in place
//!   with `set_at`).
//! - [`shutdown_signal`](crate::driver::async_io::shutdown_signal): SIGINT/SIGTERM (Ctrl-C on Windows) through `async-signal`, which runs
//!   on any `async-io` reactor.
//! - [`async_io_runtime!`](crate::async_io_runtime): declares an adapter's own runtime type (a
//!   unit struct) with [`Runtime`](crate::driver::Runtime) and [`Signals`](crate::driver::Signals) delegated to the above and
//!   [`Spawn`](crate::driver::Spawn) given by the adapter (`smol::spawn`, `async_std::task::spawn`).
//! - [`AsyncIoListener`](crate::driver::async_io::AsyncIoListener): a std listener registered with the `async-io` reactor, accepted from
//!   with a non-blocking `accept` and `poll_readable`; each accepted std stream goes through a
//!   conversion the adapter supplies (`fn(std stream) -> io::Result<its runtime's stream>`).
//!   Shed mode writes the farewell with one non-blocking `send` on the converted stream.
//! - [`bind_tcp`](crate::driver::async_io::bind_tcp): a std TCP listener bound with `SO_REUSEADDR` and the configured backlog
//!   (`std::net::TcpListener::bind` always uses 128).
//!
//! ```
//! use keel_core::driver::async_io::{AsyncIoListener, AsyncIoRuntime};
//! use keel_core::driver::{GuardConfig, Incoming};
//!
//! let config = GuardConfig::builder().max_connections(64).backlog(256).build()?;
//! let std_listener = keel_core::driver::async_io::bind_tcp(
//!     [std::net::SocketAddr::from(([127, 0, 0, 1], 0))],
//!     config.backlog(),
//! )?;
//! // A runtime stream type converted from the accepted std stream (here: the std stream).
//! let listener = AsyncIoListener::new(std_listener, |s: std::net::TcpStream| Ok(s))?;
//! assert!(listener.get_ref().local_addr()?.port() != 0);
//! // An adapter then guards it with its own runtime type (e.g. `keel_smol::SmolRuntime`,
//! // declared with `async_io_runtime!`, which supplies the clock and spawns):
//! // `Incoming::new(listener, SmolRuntime, &config)`.
//! # let _ = (AsyncIoRuntime::new, Incoming::<AsyncIoListener<std::net::TcpListener, std::net::TcpStream>, AsyncIoRuntime>::new);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use core::fmt;
use core::future::Future;
use core::net::SocketAddr;
use core::pin::Pin;
use core::task::{Context, Poll};
use std::io;
use std::sync::{Arc, OnceLock};

use async_io::Async;
use futures_core::Stream as _;

use super::{BoxFuture, GuardConfig, Incoming, Listener, Runtime, Timer};
use crate::time::Instant;

/// The adapter's clock: its one clock read, passed in so keel-core itself never reads a clock.
pub type StdClock = fn() -> std::time::Instant;

/// The clock and timers of the `async-io` reactor as a keel [`Runtime`]: what every adapter's
/// runtime type declared with [`async_io_runtime!`](crate::async_io_runtime) delegates to.
///
/// The clock is the adapter's ([`StdClock`]). keel instants count nanoseconds since the first
/// time any `async-io` runtime read it, so smol's and async-std's instants are comparable. A
/// deadline too far away for `std::time::Instant` arms a timer that never fires.
#[derive(Clone, Copy, Debug)]
pub struct AsyncIoRuntime {
    clock: StdClock,
}

impl AsyncIoRuntime {
    /// The `async-io` reactor's timers, with `clock` as the time.
    pub const fn new(clock: StdClock) -> Self {
        AsyncIoRuntime { clock }
    }

    fn origin(&self) -> std::time::Instant {
        static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();
        *ORIGIN.get_or_init(self.clock)
    }

    /// Converts a keel instant back to std's clock (`None` past what `std::time::Instant` holds).
    pub fn to_std(&self, deadline: Instant) -> Option<std::time::Instant> {
        self.origin().checked_add(deadline.as_duration())
    }
}

impl Runtime for AsyncIoRuntime {
    type Timer = AsyncIoTimer;

    fn now(&self) -> Instant {
        let since = (self.clock)().saturating_duration_since(self.origin());
        Instant::from_duration(since)
    }

    fn timer(&self, deadline: Instant) -> AsyncIoTimer {
        let timer = match self.to_std(deadline) {
            Some(at) => async_io::Timer::at(at),
            None => async_io::Timer::never(),
        };
        AsyncIoTimer { timer, rt: *self }
    }
}

/// An `async_io::Timer` as a keel [`Timer`] (re-armed in place, never reallocated).
#[derive(Debug)]
pub struct AsyncIoTimer {
    timer: async_io::Timer,
    rt: AsyncIoRuntime,
}

impl Timer for AsyncIoTimer {
    fn reset(&mut self, deadline: Instant) {
        match self.rt.to_std(deadline) {
            Some(at) => self.timer.set_at(at),
            None => self.timer = async_io::Timer::never(),
        }
    }

    fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.timer).poll(cx).map(drop)
    }
}

/// Registers SIGINT and SIGTERM listeners (Ctrl-C on Windows) with `async-signal` **now**, and
/// returns a future that resolves at the next of them: the [`Signals`](super::Signals) impl of
/// every runtime declared with [`async_io_runtime!`](crate::async_io_runtime).
///
/// While registered, the signals' default action (ending the process) is replaced. If they
/// cannot be registered, the error is logged (target `keel::shutdown`, `warn`) and the future
/// never resolves. On receipt it logs `shutdown signal received` with field `signal`
/// (`"SIGINT"`, `"SIGTERM"`), at `info`.
pub fn shutdown_signal() -> BoxFuture<()> {
    use async_signal::Signal;
    #[cfg(unix)]
    let wanted = [Signal::Int, Signal::Term];
    #[cfg(not(unix))]
    let wanted = [Signal::Int];
    let mut signals = match async_signal::Signals::new(wanted) {
        Ok(signals) => signals,
        Err(_e) => {
            #[cfg(feature = "tracing")]
            tracing::warn!(target: "keel::shutdown", error = %_e, "cannot listen for SIGINT/SIGTERM; graceful shutdown on signals is off");
            return alloc::boxed::Box::pin(core::future::pending());
        }
    };
    alloc::boxed::Box::pin(async move {
        let received = core::future::poll_fn(|cx| Pin::new(&mut signals).poll_next(cx)).await;
        let _name = match received {
            Some(Ok(Signal::Int)) => "SIGINT",
            #[cfg(unix)]
            Some(Ok(Signal::Term)) => "SIGTERM",
            Some(Ok(_)) => "signal",
            // The notifier failed: no further signal can be heard, so treat it as one.
            Some(Err(_)) | None => "error",
        };
        #[cfg(feature = "tracing")]
        tracing::info!(target: "keel::shutdown", signal = _name, "shutdown signal received");
    })
}

/// Declares an adapter's runtime type on `async-io`: a unit struct (`Clone`, `Copy`, `Default`,
/// `Debug`) whose [`Runtime`](crate::driver::Runtime) (clock and timer) is
/// [`AsyncIoRuntime`](crate::driver::async_io::AsyncIoRuntime)'s, whose
/// [`Signals`](crate::driver::Signals) is
/// [`shutdown_signal`](crate::driver::async_io::shutdown_signal), and whose
/// [`Spawn`](crate::driver::Spawn) is the adapter's own: `spawn($fut) -> Handle { body }`.
/// `clock:` is the adapter's [`StdClock`](crate::driver::async_io::StdClock) (the std monotonic
/// clock's `now`): the one clock read, in the adapter.
///
/// ```ignore
/// keel_core::async_io_runtime! {
///     /// smol's clock, timers, signals and tasks.
///     pub struct SmolRuntime;
///     clock: smol_clock;
///     spawn(fut) -> SmolTask { SmolTask(Some(smol::spawn(fut))) }
/// }
/// ```
#[macro_export]
macro_rules! async_io_runtime {
    (
        $(#[$meta:meta])*
        $vis:vis struct $rt:ident;
        clock: $clock:expr;
        spawn($fut:ident) -> $handle:ty $body:block
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        $vis struct $rt;

        impl $crate::driver::Runtime for $rt {
            type Timer = $crate::driver::async_io::AsyncIoTimer;
            fn now(&self) -> $crate::time::Instant {
                $crate::driver::Runtime::now(&$crate::driver::async_io::AsyncIoRuntime::new($clock))
            }
            fn timer(&self, deadline: $crate::time::Instant) -> Self::Timer {
                $crate::driver::Runtime::timer(
                    &$crate::driver::async_io::AsyncIoRuntime::new($clock),
                    deadline,
                )
            }
        }

        impl $crate::driver::Signals for $rt {
            fn shutdown_signal(&self) -> $crate::driver::BoxFuture<()> {
                $crate::driver::async_io::shutdown_signal()
            }
        }

        impl $crate::driver::Spawn for $rt {
            type Handle = $handle;
            fn spawn<F>(&self, $fut: F) -> $handle
            where
                F: ::core::future::Future<Output = ()> + ::core::marker::Send + 'static,
            $body
        }
    };
}

/// A std listener [`AsyncIoListener`] can accept from (TCP, and Unix-domain on Unix).
pub trait StdListener: Send + Sync + 'static {
    /// The std stream `accept` returns.
    type Stream;
    /// One `accept(2)`; the listener is non-blocking, so `WouldBlock` means "none yet".
    fn accept_stream(&self) -> io::Result<Self::Stream>;
}

impl StdListener for std::net::TcpListener {
    type Stream = std::net::TcpStream;
    fn accept_stream(&self) -> io::Result<std::net::TcpStream> {
        self.accept().map(|(stream, _peer)| stream)
    }
}

#[cfg(unix)]
impl StdListener for std::os::unix::net::UnixListener {
    type Stream = std::os::unix::net::UnixStream;
    fn accept_stream(&self) -> io::Result<std::os::unix::net::UnixStream> {
        self.accept().map(|(stream, _peer)| stream)
    }
}

/// A socket handle shed mode can `send` the farewell on: anything with a socket descriptor
/// (`AsFd` on Unix, `AsSocket` on Windows), e.g. smol's and async-std's streams.
#[cfg(unix)]
pub trait AsSocketRef: std::os::fd::AsFd {}
#[cfg(unix)]
impl<T: std::os::fd::AsFd> AsSocketRef for T {}
/// A socket handle shed mode can `send` the farewell on: anything with a socket descriptor
/// (`AsFd` on Unix, `AsSocket` on Windows), e.g. smol's and async-std's streams.
#[cfg(windows)]
pub trait AsSocketRef: std::os::windows::io::AsSocket {}
#[cfg(windows)]
impl<T: std::os::windows::io::AsSocket> AsSocketRef for T {}

/// A std listener on the `async-io` reactor, as a keel [`Listener`] yielding `C` (the
/// runtime's stream type, made from each accepted std stream by `into_conn`).
pub struct AsyncIoListener<L: StdListener, C> {
    io: Arc<Async<L>>,
    into_conn: fn(L::Stream) -> io::Result<C>,
}

impl<L: StdListener, C> AsyncIoListener<L, C> {
    /// Wraps a listener already registered with the reactor (smol's listeners convert into an
    /// `Arc<Async<_>>` without a system call).
    pub fn from_async(io: Arc<Async<L>>, into_conn: fn(L::Stream) -> io::Result<C>) -> Self {
        AsyncIoListener { io, into_conn }
    }

    /// The std listener (for `local_addr` and socket options).
    pub fn get_ref(&self) -> &L {
        self.io.get_ref()
    }
}

#[cfg(unix)]
impl<L: StdListener + std::os::fd::AsFd, C> AsyncIoListener<L, C> {
    /// Registers `listener` with the reactor (and makes it non-blocking).
    pub fn new(listener: L, into_conn: fn(L::Stream) -> io::Result<C>) -> io::Result<Self> {
        Ok(Self::from_async(Arc::new(Async::new(listener)?), into_conn))
    }
}

#[cfg(windows)]
impl<L: StdListener + std::os::windows::io::AsSocket, C> AsyncIoListener<L, C> {
    /// Registers `listener` with the reactor (and makes it non-blocking).
    pub fn new(listener: L, into_conn: fn(L::Stream) -> io::Result<C>) -> io::Result<Self> {
        Ok(Self::from_async(Arc::new(Async::new(listener)?), into_conn))
    }
}

impl<L: StdListener + fmt::Debug, C> fmt::Debug for AsyncIoListener<L, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AsyncIoListener")
            .field(self.get_ref())
            .finish()
    }
}

impl<L: StdListener, C: AsSocketRef + Send + Unpin + 'static> Listener for AsyncIoListener<L, C> {
    type Conn = C;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<C>> {
        loop {
            match self.io.get_ref().accept_stream() {
                Ok(stream) => return Poll::Ready((self.into_conn)(stream)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match self.io.poll_readable(cx) {
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => return Poll::Pending,
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn shed(&mut self, conn: C, farewell: &'static [u8]) {
        if !farewell.is_empty() {
            // Best effort: the stream is non-blocking (the reactor made it so); whatever the
            // socket buffer takes right now, never waiting on the peer.
            let _ = socket2::SockRef::from(&conn).send(farewell);
        }
    }
}

/// The streams of `async-io` runtimes have `futures-io`'s traits; the write side is shut down
/// with `shutdown(SHUT_WR)` on the socket (`poll_close` differs between runtimes).
impl<L, C> super::ConnIo for AsyncIoListener<L, C>
where
    L: StdListener,
    C: AsSocketRef + futures_io::AsyncRead + futures_io::AsyncWrite + Send + Unpin + 'static,
{
    fn poll_read(conn: &mut C, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        futures_io::AsyncRead::poll_read(Pin::new(conn), cx, buf)
    }

    fn poll_write(conn: &mut C, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        futures_io::AsyncWrite::poll_write(Pin::new(conn), cx, buf)
    }

    fn poll_flush(conn: &mut C, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        futures_io::AsyncWrite::poll_flush(Pin::new(conn), cx)
    }

    fn poll_shutdown_write(conn: &mut C, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(&*conn).shutdown(std::net::Shutdown::Write))
    }
}

/// A guarded listener on the `async-io` reactor yielding `C`, on the adapter's runtime `R`.
pub type AsyncIoIncoming<L, C, R> = Incoming<AsyncIoListener<L, C>, R>;

/// [`bind_tcp`] with `config`'s backlog, registered with the reactor and guarded: an adapter's
/// `bind` after resolving `addrs` with its runtime's resolver.
pub fn bind_guarded<C: AsSocketRef + Send + Unpin + 'static, R: Runtime + Default>(
    addrs: impl IntoIterator<Item = SocketAddr>,
    config: &GuardConfig,
    into_conn: fn(std::net::TcpStream) -> io::Result<C>,
) -> io::Result<AsyncIoIncoming<std::net::TcpListener, C, R>> {
    let listener = AsyncIoListener::new(bind_tcp(addrs, config.backlog())?, into_conn)?;
    Ok(Incoming::new(listener, R::default(), config))
}

/// Guards a listener already registered with the reactor (an adapter's `guard`).
pub fn guard_async<
    L: StdListener,
    C: AsSocketRef + Send + Unpin + 'static,
    R: Runtime + Default,
>(
    io: Arc<Async<L>>,
    config: &GuardConfig,
    into_conn: fn(L::Stream) -> io::Result<C>,
) -> AsyncIoIncoming<L, C, R> {
    Incoming::new(
        AsyncIoListener::from_async(io, into_conn),
        R::default(),
        config,
    )
}

/// Registers a std listener with the reactor and guards it (an adapter's `guard` when its
/// runtime does not share its registration).
#[cfg(unix)]
pub fn guard_std<L, C, R>(
    listener: L,
    config: &GuardConfig,
    into_conn: fn(L::Stream) -> io::Result<C>,
) -> io::Result<AsyncIoIncoming<L, C, R>>
where
    L: StdListener + std::os::fd::AsFd,
    C: AsSocketRef + Send + Unpin + 'static,
    R: Runtime + Default,
{
    let listener = AsyncIoListener::new(listener, into_conn)?;
    Ok(Incoming::new(listener, R::default(), config))
}

/// Binds a std TCP listener to the first of `addrs` that works, with `SO_REUSEADDR` (not on
/// Windows, where it means something else) and `backlog` passed to `listen(2)` (the kernel caps
/// it at `net.core.somaxconn`). The error is the last address's, or `InvalidInput` if `addrs`
/// is empty.
pub fn bind_tcp(
    addrs: impl IntoIterator<Item = SocketAddr>,
    backlog: u32,
) -> io::Result<std::net::TcpListener> {
    let mut last = None;
    for addr in addrs {
        match listen(addr, backlog) {
            Ok(listener) => return Ok(listener),
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

fn listen(addr: SocketAddr, backlog: u32) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    #[cfg(not(windows))]
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(socket.into())
}
