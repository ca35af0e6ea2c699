//! The glue shared by the runtimes that sit on `async-io` (smol, async-std), written once so
//! neither adapter repeats it (feature `async-io`).
//!
//! - [`AsyncIoRuntime`]: the clock (`std::time::Instant`, counted from a process-wide origin)
//!   and the timer (`async_io::Timer`, re-armed in place with `set_at`).
//! - [`AsyncIoListener`]: a std listener registered with the `async-io` reactor, accepted from
//!   with a non-blocking `accept` and `poll_readable`; each accepted std stream goes through a
//!   conversion the adapter supplies (`fn(std stream) -> io::Result<its runtime's stream>`).
//!   Shed mode writes the farewell with one non-blocking `send` on the converted stream.
//! - [`bind_tcp`]: a std TCP listener bound with `SO_REUSEADDR` and the configured backlog
//!   (`std::net::TcpListener::bind` always uses 128).
//!
//! ```
//! use keel_core::driver::async_io::{AsyncIoListener, AsyncIoRuntime};
//! use keel_core::driver::{GuardConfig, Incoming, Runtime as _};
//!
//! let config = GuardConfig::builder().max_connections(64).backlog(256).build()?;
//! let std_listener = keel_core::driver::async_io::bind_tcp(
//!     [std::net::SocketAddr::from(([127, 0, 0, 1], 0))],
//!     config.backlog(),
//! )?;
//! // A runtime stream type converted from the accepted std stream (here: the std stream).
//! let listener = AsyncIoListener::new(std_listener, |s: std::net::TcpStream| Ok(s))?;
//! let incoming = Incoming::new(listener, AsyncIoRuntime, &config);
//! assert!(incoming.get_ref().get_ref().local_addr()?.port() != 0);
//! assert!(AsyncIoRuntime.now() >= keel_core::time::Instant::ZERO);
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

use super::{GuardConfig, Incoming, Listener, Runtime, Timer};
use crate::time::Instant;

/// The clock and timers of the `async-io` reactor as a keel [`Runtime`].
///
/// keel instants count nanoseconds since the first time any `AsyncIoRuntime` read the clock.
/// A deadline too far away for `std::time::Instant` arms a timer that never fires.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AsyncIoRuntime;

fn origin() -> std::time::Instant {
    static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();
    *ORIGIN.get_or_init(std::time::Instant::now)
}

impl AsyncIoRuntime {
    /// Converts a keel instant back to std's clock (`None` past what `std::time::Instant` holds).
    pub fn to_std(deadline: Instant) -> Option<std::time::Instant> {
        origin().checked_add(deadline.as_duration())
    }
}

impl Runtime for AsyncIoRuntime {
    type Timer = AsyncIoTimer;

    fn now(&self) -> Instant {
        let since = std::time::Instant::now().saturating_duration_since(origin());
        Instant::from_duration(since)
    }

    fn timer(&self, deadline: Instant) -> AsyncIoTimer {
        AsyncIoTimer(match Self::to_std(deadline) {
            Some(at) => async_io::Timer::at(at),
            None => async_io::Timer::never(),
        })
    }
}

/// An `async_io::Timer` as a keel [`Timer`] (re-armed in place, never reallocated).
#[derive(Debug)]
pub struct AsyncIoTimer(async_io::Timer);

impl Timer for AsyncIoTimer {
    fn reset(&mut self, deadline: Instant) {
        match AsyncIoRuntime::to_std(deadline) {
            Some(at) => self.0.set_at(at),
            None => self.0 = async_io::Timer::never(),
        }
    }

    fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(drop)
    }
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

impl<L: StdListener, C: AsSocketRef + Send + 'static> Listener for AsyncIoListener<L, C> {
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

/// A guarded listener on the `async-io` reactor yielding `C`.
pub type AsyncIoIncoming<L, C> = Incoming<AsyncIoListener<L, C>, AsyncIoRuntime>;

/// [`bind_tcp`] with `config`'s backlog, registered with the reactor and guarded: an adapter's
/// `bind` after resolving `addrs` with its runtime's resolver.
pub fn bind_guarded<C: AsSocketRef + Send + 'static>(
    addrs: impl IntoIterator<Item = SocketAddr>,
    config: &GuardConfig,
    into_conn: fn(std::net::TcpStream) -> io::Result<C>,
) -> io::Result<AsyncIoIncoming<std::net::TcpListener, C>> {
    let listener = AsyncIoListener::new(bind_tcp(addrs, config.backlog())?, into_conn)?;
    Ok(Incoming::new(listener, AsyncIoRuntime, config))
}

/// Guards a listener already registered with the reactor (an adapter's `guard`).
pub fn guard_async<L: StdListener, C: AsSocketRef + Send + 'static>(
    io: Arc<Async<L>>,
    config: &GuardConfig,
    into_conn: fn(L::Stream) -> io::Result<C>,
) -> AsyncIoIncoming<L, C> {
    Incoming::new(
        AsyncIoListener::from_async(io, into_conn),
        AsyncIoRuntime,
        config,
    )
}

/// Registers a std listener with the reactor and guards it (an adapter's `guard` when its
/// runtime does not share its registration).
#[cfg(unix)]
pub fn guard_std<L: StdListener + std::os::fd::AsFd, C: AsSocketRef + Send + 'static>(
    listener: L,
    config: &GuardConfig,
    into_conn: fn(L::Stream) -> io::Result<C>,
) -> io::Result<AsyncIoIncoming<L, C>> {
    let listener = AsyncIoListener::new(listener, into_conn)?;
    Ok(Incoming::new(listener, AsyncIoRuntime, config))
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
