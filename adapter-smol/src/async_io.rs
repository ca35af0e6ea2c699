//! The glue of every runtime on the `async-io` reactor: smol's here, and keel-async-std's
//! (async-std runs on `async-io` too), which uses this module rather than repeat it.
//!
//! - [`now`] and [`AsyncIoTimer`]: the clock (quanta's calibrated TSC counter, counted as keel
//!   instants from a process-wide origin, so smol's and async-std's instants are comparable) and the timer
//!   (`async_io::Timer`, re-armed in place with `set_at`). A runtime type implements
//!   [`Runtime`] with these two (see [`SmolRuntime`](crate::SmolRuntime)).
//! - [`shutdown_signal`]: SIGINT/SIGTERM (Ctrl-C on Windows) through `async-signal`, which runs
//!   on any `async-io` reactor.
//! - [`AsyncIoListener`]: a std listener registered with the `async-io` reactor, accepted from
//!   with a non-blocking `accept` and `poll_readable`; each accepted std stream goes through a
//!   conversion the adapter supplies (`fn(std stream) -> io::Result<its runtime's stream>`).
//!   Shed mode writes the farewell with one non-blocking `send` on the converted stream.
//! - [`bind_tcp`]: a std TCP listener bound with `SO_REUSEADDR` and the configured backlog
//!   (`std::net::TcpListener::bind` always uses 128); [`bind_guarded`], [`guard_async`] and
//!   [`guard_std`]: an adapter's `bind` and `guard`, generic over its runtime type.
//!
//! ```
//! use keel_smol::async_io::{self, AsyncIoListener};
//! use keel_smol::{GuardConfig, Incoming, SmolRuntime};
//!
//! let config = GuardConfig::builder().max_connections(64).backlog(256).build()?;
//! let std_listener = async_io::bind_tcp(
//!     [std::net::SocketAddr::from(([127, 0, 0, 1], 0))],
//!     config.backlog(),
//! )?;
//! // The runtime's stream type, converted from each accepted std stream.
//! let listener = AsyncIoListener::new(std_listener, smol::net::TcpStream::try_from)?;
//! assert!(listener.get_ref().local_addr()?.port() != 0);
//! // Guarded on smol's runtime (what `keel_smol::bind` returns):
//! let incoming: Incoming<keel_smol::Tcp> = keel_smol::core::driver::Incoming::new(listener, SmolRuntime, &config);
//! # drop(incoming);
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

use keel_core::driver::{BoxFuture, ConnIo, GuardConfig, Incoming, Listener, Runtime, Timer};
use keel_core::time::Instant;

/// keel's clock on `async-io`: quanta's calibrated TSC counter (std's monotonic clock where
/// the TSC is not invariant), and its raw count at the first read, which keel instants count
/// from.
struct Clock {
    fast: quanta::Clock,
    raw: u64,
}

fn clock() -> &'static Clock {
    static CLOCK: OnceLock<Clock> = OnceLock::new();
    CLOCK.get_or_init(|| {
        // Calibrates the counter against the OS clock, once per process (under a millisecond
        // idle, up to a few hundred on a loaded machine, while every other first read waits):
        // `calibrate` does it where a runtime handle is made, not in a machine's first read.
        let fast = quanta::Clock::new();
        let raw = fast.raw();
        Clock { fast, raw }
    })
}

/// Calibrates [`now`]'s clock if no read has yet (once per process; later calls cost one
/// atomic load). The runtime handles' `Default` call it, so the calibration (up to a few
/// hundred milliseconds on a loaded machine) happens where a handle is made, not inside a
/// machine's first clock read.
pub fn calibrate() {
    let _ = clock();
}

/// Now, as a keel [`Instant`]: nanoseconds since the first time any `async-io` runtime in the
/// process read the clock (so smol's and async-std's instants are comparable). The clock read of
/// [`SmolRuntime`](crate::SmolRuntime) and keel-async-std's runtime.
///
/// The clock is quanta's calibrated TSC counter (the clock governor reads), about a third of
/// the cost of `std::time::Instant::now()` on a virtual machine; where the TSC is not invariant
/// quanta reads the OS monotonic clock. It may run a few parts per million off std's clock, which
/// the `async-io` timers use: [`AsyncIoTimer`] arms each timer for the time left on this clock
/// ([`to_std`]), so that difference scales with a sleep's length, never with the process's age.
/// Reads on different cores may differ by the counters' skew; keel's machines clamp a `now`
/// older than the newest they have seen.
#[inline]
pub fn now() -> Instant {
    let clock = clock();
    Instant::from_nanos(clock.fast.delta_as_nanos(clock.raw, clock.fast.raw()))
}

/// The `std::time::Instant` at which [`now`] will read `deadline`, measured from now on both
/// clocks (std's now plus the time left on keel's clock, stretched by 61 ppm so that the
/// clocks' few-ppm rate difference rarely fires a timer early; std's now for a deadline that has
/// passed); `None` past what `std::time::Instant` can hold.
pub fn to_std(deadline: Instant) -> Option<std::time::Instant> {
    arm_at(deadline, now(), std::time::Instant::now())
}

/// `deadline` on keel's clock, which reads `keel_now` while std's reads `std_now`, as a std
/// instant: the time left added to std's now.
fn arm_at(
    deadline: Instant,
    keel_now: Instant,
    std_now: std::time::Instant,
) -> Option<std::time::Instant> {
    let left = deadline.saturating_duration_since(keel_now);
    // A little late on purpose (61 ppm of the time left, 61 ns a millisecond): the two clocks'
    // rates differ by a few ppm, and a timer that fires before keel's clock reached the deadline
    // costs a re-arm and another turn of the reactor.
    std_now.checked_add(left.saturating_add(left / EARLY_MARGIN_DIVISOR))
}

/// The time left is stretched by 1/this when a timer is armed (see [`arm_at`]).
const EARLY_MARGIN_DIVISOR: u32 = 16_384;

/// An `async_io::Timer` as a keel [`Timer`], on [`now`]'s clock (re-armed in place, never
/// reallocated): armed for the time left until the deadline on that clock ([`to_std`]), so a
/// timer that fires a little before the deadline (the two clocks' rates differ by parts per
/// million) is re-armed for the little left, not spun on. A deadline too far away for
/// `std::time::Instant` arms a timer that never fires.
///
/// Once it has fired it stays ready until [`reset`](Timer::reset), as keel's [`Timer`] asks
/// (an `async_io::Timer` is spent once it fired: polled again, it returns `Pending` without
/// registering a waker, and the driver, which re-polls a timer that fired before its clock
/// reached the deadline, would wait forever).
#[derive(Debug)]
pub struct AsyncIoTimer {
    timer: async_io::Timer,
    fired: bool,
}

impl AsyncIoTimer {
    /// A timer armed for `deadline`.
    pub fn at(deadline: Instant) -> Self {
        let timer = match to_std(deadline) {
            Some(at) => async_io::Timer::at(at),
            None => async_io::Timer::never(),
        };
        AsyncIoTimer {
            timer,
            fired: false,
        }
    }
}

impl Timer for AsyncIoTimer {
    fn reset(&mut self, deadline: Instant) {
        self.fired = false;
        match to_std(deadline) {
            Some(at) => self.timer.set_at(at),
            None => self.timer = async_io::Timer::never(),
        }
    }

    fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.fired {
            return Poll::Ready(());
        }
        let elapsed = Pin::new(&mut self.timer).poll(cx).map(drop);
        self.fired = elapsed.is_ready();
        elapsed
    }
}

/// Registers SIGINT and SIGTERM listeners (Ctrl-C on Windows) with `async-signal` **now**, and
/// returns a future that resolves at the next of them: the
/// [`Signals`](keel_core::driver::Signals) impl of [`SmolRuntime`](crate::SmolRuntime) and of
/// keel-async-std's runtime.
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
        Err(e) => {
            tracing::warn!(target: "keel::shutdown", error = %e, "cannot listen for SIGINT/SIGTERM; graceful shutdown on signals is off");
            return Box::pin(core::future::pending());
        }
    };
    Box::pin(async move {
        let received = core::future::poll_fn(|cx| Pin::new(&mut signals).poll_next(cx)).await;
        let name = match received {
            Some(Ok(Signal::Int)) => "SIGINT",
            #[cfg(unix)]
            Some(Ok(Signal::Term)) => "SIGTERM",
            Some(Ok(_)) => "signal",
            // The notifier failed: no further signal can be heard, so treat it as one.
            Some(Err(_)) | None => "error",
        };
        tracing::info!(target: "keel::shutdown", signal = name, "shutdown signal received");
    })
}

/// A std listener [`AsyncIoListener`] can accept from (TCP, and Unix-domain on Unix).
pub trait StdListener: Send + Sync + 'static {
    /// The std stream `accept` returns.
    type Stream;
    /// The peer's address `accept` returns.
    type Addr: Send + Unpin + 'static;
    /// One `accept(2)`: the stream and the peer's address; the listener is non-blocking, so
    /// `WouldBlock` means "none yet".
    fn accept_stream(&self) -> io::Result<(Self::Stream, Self::Addr)>;
}

impl StdListener for std::net::TcpListener {
    type Stream = std::net::TcpStream;
    type Addr = std::net::SocketAddr;
    fn accept_stream(&self) -> io::Result<(std::net::TcpStream, std::net::SocketAddr)> {
        self.accept()
    }
}

#[cfg(unix)]
impl StdListener for std::os::unix::net::UnixListener {
    type Stream = std::os::unix::net::UnixStream;
    type Addr = std::os::unix::net::SocketAddr;
    fn accept_stream(
        &self,
    ) -> io::Result<(
        std::os::unix::net::UnixStream,
        std::os::unix::net::SocketAddr,
    )> {
        self.accept()
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
    type Addr = L::Addr;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(C, L::Addr)>> {
        loop {
            match self.io.get_ref().accept_stream() {
                Ok((stream, peer)) => {
                    return Poll::Ready((self.into_conn)(stream).map(|conn| (conn, peer)))
                }
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
impl<L, C> ConnIo for AsyncIoListener<L, C>
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_timer_re_armed_in_place_follows_its_latest_deadline() {
        let mut timer = AsyncIoTimer::at(Instant::MAX);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(timer.poll_elapsed(&mut cx).is_pending());
        // Re-armed for a past deadline it fires; re-armed for the far future it stops firing.
        timer.reset(Instant::ZERO);
        assert!(timer.poll_elapsed(&mut cx).is_ready());
        // A timer that fired stays ready until it is re-armed (keel's `Timer` contract; a
        // spent `async_io::Timer` would return `Pending` with no waker registered).
        assert!(timer.poll_elapsed(&mut cx).is_ready());
        timer.reset(Instant::MAX);
        assert!(timer.poll_elapsed(&mut cx).is_pending());
    }

    #[test]
    fn a_deadline_maps_to_std_now_plus_the_time_left_on_keels_clock() {
        let before = std::time::Instant::now();
        let now = now();
        let back = to_std(now).expect("now fits in std's clock");
        let after = std::time::Instant::now();
        // A deadline that has come maps to std's now (read inside `to_std`).
        assert!(
            before <= back && back <= after,
            "{before:?} <= {back:?} <= {after:?}"
        );
        assert!(to_std(Instant::ZERO).expect("fits") >= before);
        // A deadline a minute on maps a minute on from std's now, however long the process has
        // run (the mapping starts from both clocks' now, not from an origin).
        let later = now + Duration::from_secs(60);
        let at = to_std(later).expect("fits");
        let ahead = at.saturating_duration_since(before);
        assert!(
            ahead
                <= Duration::from_secs(60)
                    + Duration::from_micros(3_663)
                    + after.duration_since(before),
            "{ahead:?}"
        );
        assert!(ahead >= Duration::from_secs(59), "{ahead:?}");
    }

    /// Sleeps 30 ms on a simulated keel clock that runs `ppm_slow` parts per million slower
    /// than the timers' clock, in a process an hour old: how many arms it takes and how long
    /// on the timers' clock.
    fn sleep_30_ms_on_a_slow_clock(ppm_slow: u128) -> (u32, Duration) {
        let std_origin = std::time::Instant::now();
        let keel_at = |std: std::time::Instant| {
            let nanos =
                std.duration_since(std_origin).as_nanos() * (1_000_000 - ppm_slow) / 1_000_000;
            Instant::from_duration(Duration::from_nanos(
                u64::try_from(nanos).unwrap_or(u64::MAX),
            ))
        };
        let mut std_now = std_origin + Duration::from_secs(3600);
        let deadline = keel_at(std_now) + Duration::from_millis(30);
        let start = std_now;
        let mut arms = 0;
        while keel_at(std_now) < deadline {
            arms += 1;
            assert!(arms <= 4, "still not at the deadline after {arms} arms");
            let at = arm_at(deadline, keel_at(std_now), std_now).expect("fits");
            // The timer fires at its instant (a timer armed in the past fires at once, 1 µs on).
            std_now = at.max(std_now + Duration::from_micros(1));
        }
        (arms, std_now - start)
    }

    /// keel's clock 0.1 % slower than the timers' clock: each arm ends a little early and the
    /// re-arm covers what is left, so a 30 ms sleep takes a few arms and about 30 ms. (Mapped
    /// from a fixed origin instead, the deadline lies 3.6 s in the timers' past: the timer fires
    /// at once, again and again.)
    #[test]
    fn a_slower_keel_clock_needs_a_few_re_arms_not_a_spin() {
        let (arms, took) = sleep_30_ms_on_a_slow_clock(1_000);
        assert!(took >= Duration::from_millis(30), "{took:?}");
        assert!(took <= Duration::from_micros(30_100), "{took:?}");
        assert!(
            arms >= 2,
            "the first arm ends before the slower clock reaches the deadline"
        );
    }

    /// The rate differences measured between quanta's TSC clock and std's (tens of ppm) need no
    /// re-arm: one arm, a few ns late.
    #[test]
    fn a_few_ppm_slower_keel_clock_needs_one_arm() {
        let (arms, took) = sleep_30_ms_on_a_slow_clock(30);
        assert_eq!(arms, 1, "took {took:?}");
        assert!(took <= Duration::from_micros(30_002), "{took:?}");
    }

    #[test]
    fn the_clock_advances_with_std_time() {
        let a = now();
        let start = std::time::Instant::now();
        std::thread::sleep(Duration::from_millis(20));
        let b = now();
        let elapsed = start.elapsed();
        let advanced = b.saturating_duration_since(a);
        // Generous bounds: the calibration is parts per million off, but a loaded machine may
        // deschedule this thread between the reads.
        assert!(advanced >= Duration::from_millis(19), "{advanced:?}");
        assert!(
            advanced <= elapsed + Duration::from_secs(1),
            "{advanced:?} > {elapsed:?}"
        );
    }

    /// keel's clock runs at std's rate, within 1 %, over 200 ms measured from the process's
    /// first read (each read bracketed by two std reads, so a thread descheduled between them
    /// widens the bracket rather than failing the test).
    #[test]
    fn the_clock_runs_at_std_rate_from_the_first_read() {
        let s0a = std::time::Instant::now();
        let k0 = now();
        let s0b = std::time::Instant::now();
        std::thread::sleep(Duration::from_millis(200));
        let s1a = std::time::Instant::now();
        let k1 = now();
        let s1b = std::time::Instant::now();
        let keel = k1.saturating_duration_since(k0);
        let (shortest, longest) = (s1a.duration_since(s0b), s1b.duration_since(s0a));
        eprintln!(
            "keel clock rate: keel {keel:?} in std [{shortest:?}, {longest:?}] ({:.6})",
            keel.as_secs_f64() / longest.as_secs_f64()
        );
        assert!(
            keel >= shortest - shortest / 100 && keel <= longest + longest / 100,
            "keel's clock advanced {keel:?} while std's advanced {shortest:?}..{longest:?}"
        );
    }

    #[test]
    fn binding_to_no_address_is_an_invalid_input_error() {
        let err = bind_tcp([], 128).expect_err("no address to bind");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
