//! The accepted stream as [`Server`](super::Server) hands it to a handler: [`Conn`], which
//! records its last activity, can be closed by the server (idle timeout, read deadline,
//! reclamation), and on drop hands the socket back for the lingering close. Plus
//! [`lingering_close`] for streams served without a `Server`, and [`read_line_bounded`], a line
//! reader whose memory is bounded.
//!
//! Runtimes' I/O traits differ (tokio's `AsyncRead`/`AsyncWrite`, `futures-io`'s), and an
//! adapter may not implement a keel trait for its runtime's stream type (both foreign to it), so
//! the four operations the driver needs are asked of the **listener** type, which the adapter
//! owns: [`ConnIo`]. [`Conn`] implements `futures-io`'s `AsyncRead`/`AsyncWrite`; keel-tokio
//! wraps it for tokio's traits.
//!
//! A handler may arm a per-request read deadline with [`Conn::set_read_deadline`] (the echo
//! example arms one when the first byte of a line arrives: a trickler sending one byte a second
//! and never a newline is closed when it passes, although bytes flow). For HTTP-like protocols
//! this is the header timeout: arm it when a request's first byte arrives, clear it once the
//! headers are in.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::pin::Pin;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use core::task::{Context, Poll, Waker};
use core::time::Duration;
use std::io;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::{timeout_at, Draining, Listener, Runtime};
use crate::conn::{CloseReason, ConnEnd};
use crate::time::Instant;

/// What the driver needs from an accepted connection, asked of its listener type (see the
/// [module docs](self) for why). Adapters implement it in a few lines per stream type.
pub trait ConnIo: Listener {
    /// Reads into `buf`; `Ok(0)` at EOF.
    fn poll_read(
        conn: &mut Self::Conn,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>>;
    /// Writes from `buf`.
    fn poll_write(
        conn: &mut Self::Conn,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>>;
    /// Flushes buffered writes.
    fn poll_flush(conn: &mut Self::Conn, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Shuts the write side down (`shutdown(SHUT_WR)`): the peer reads EOF after the bytes
    /// already written.
    fn poll_shutdown_write(conn: &mut Self::Conn, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

const OPEN: u8 = 0;
const IDLE: u8 = 1;
const DEADLINE: u8 = 2;
const RECLAIMED: u8 = 3;
const NO_DEADLINE: u64 = u64::MAX;

/// The coarsest activity granularity: how late, at most, a [`Server`](super::Server) sees a
/// connection's last byte (an eighth of the idle timeout when that is shorter, at least 1 ms).
/// See [`Conn`].
pub const ACTIVITY_GRANULARITY: Duration = Duration::from_secs(1);

/// The activity granularity for a server's connection defences: `None` if it needs no
/// activity (no idle timeout, no reclamation).
pub(crate) fn activity_granularity(
    idle_timeout: Option<Duration>,
    reclaim: bool,
) -> Option<Duration> {
    match idle_timeout {
        Some(idle) => Some((idle / 8).clamp(Duration::from_millis(1), ACTIVITY_GRANULARITY)),
        None if reclaim => Some(ACTIVITY_GRANULARITY),
        None => None,
    }
}

/// The clock a [`Conn`] stamps its activity with: the runtime's.
pub(crate) type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// The server's sweep timer as its connections see it: the instant it is armed for, and how a
/// handler arming an earlier read deadline makes the server re-arm it.
///
/// The protocol (every access `SeqCst`):
///
/// - a handler stores its connection's deadline `d`, then lowers `at` to `d`
///   ([`lower`](Self::lower)) and wakes the server if that moved it;
/// - the server, when its timer fires, [`begins`](Self::begin) (`at` = none) **before** it reads
///   the connections' deadlines, then lowers `at` to the table's next deadline and arms its
///   timer at `at`.
///
/// A deadline stored before the server's `begin` is read by its sweep; one whose `lower` came
/// after `begin` keeps `at` at or before it. Either way the timer fires no later than the
/// deadline: no timeout is missed.
pub(crate) struct Sweep {
    at: AtomicU64,
    waker: Mutex<Option<Waker>>,
}

impl Sweep {
    pub(crate) fn new() -> Self {
        Sweep {
            at: AtomicU64::new(NO_DEADLINE),
            waker: Mutex::new(None),
        }
    }

    /// The server's task, to wake when a deadline moves the sweep earlier.
    pub(crate) fn register(&self, cx: &Context<'_>) {
        let mut w = lock(&self.waker);
        match &mut *w {
            Some(old) if old.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
    }

    /// When the sweep is due; `None` if nothing has a deadline.
    pub(crate) fn at(&self) -> Option<Instant> {
        match self.at.load(Ordering::SeqCst) {
            NO_DEADLINE => None,
            t => Some(Instant::from_nanos(t)),
        }
    }

    /// The server starts a sweep: until it lowers `at` again, any deadline armed wakes it.
    pub(crate) fn begin(&self) {
        self.at.store(NO_DEADLINE, Ordering::SeqCst);
    }

    /// Moves the sweep to `deadline` if that is earlier; `true` if it moved. A plain load
    /// first: the common case (the sweep is already earlier) writes nothing to the shared line.
    /// Skipping on that load is safe: `at` only rises in [`begin`](Self::begin), and a load
    /// ordered before it means the caller's deadline, stored before, is read by that sweep.
    pub(crate) fn lower_to(&self, deadline: Instant) -> bool {
        let t = deadline.as_nanos().min(NO_DEADLINE - 1);
        if self.at.load(Ordering::SeqCst) <= t {
            return false;
        }
        self.at.fetch_min(t, Ordering::SeqCst) > t
    }

    /// A handler armed `deadline`: moves the sweep to it if earlier, and wakes the server.
    fn lower(&self, deadline: Instant) {
        if self.lower_to(deadline) {
            let waker = lock(&self.waker).clone();
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

/// What a connection shares with the server: its activity, deadline, close order, and the
/// slot its socket is handed back through.
pub(crate) struct ConnShared<C> {
    pub(crate) id: u64,
    clock: Clock,
    /// The server's sweep, lowered when the handler arms an earlier read deadline, and when
    /// the connection is first active after the server last looked.
    sweep: Arc<Sweep>,
    /// How late the server may see activity (see [`ConnShared::touch`]); `None`: the server
    /// needs no activity (no idle timeout, no reclamation).
    granularity: Option<Duration>,
    last_active: AtomicU64,
    /// Active since the server last looked ([`ConnShared::take_active`]).
    active: AtomicBool,
    read_deadline: AtomicU64,
    close: AtomicU8,
    io_failed: AtomicBool,
    /// Requests in flight marked by [`Busy`] guards: while non-zero the connection is not idle.
    busy: Arc<AtomicU64>,
    /// The readers' and writers' wakers, woken when the server closes the connection.
    wakers: Mutex<[Option<Waker>; 2]>,
    returned: Mutex<Option<C>>,
    /// How [`Conn::close`] lingers: the time, the byte cap, and the drain (whose deadline
    /// bounds it).
    linger: Duration,
    linger_bytes: u64,
    draining: Draining,
    /// How the connection ended if the handler closed it itself ([`Conn::close`]).
    ended: Mutex<Option<ConnEnd>>,
    /// The server's request timeout counts ([`Conn::request_timeouts`]).
    requests: Arc<super::serve::RequestCounts>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<C> ConnShared<C> {
    // Each argument is a distinct piece of the server's state the connection shares; one
    // constructor, called from one place (the serving loop).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: u64,
        clock: Clock,
        sweep: Arc<Sweep>,
        granularity: Option<Duration>,
        linger: Duration,
        linger_bytes: u64,
        draining: Draining,
        requests: Arc<super::serve::RequestCounts>,
    ) -> Self {
        let now = clock();
        ConnShared {
            id,
            requests,
            linger,
            linger_bytes,
            draining,
            ended: Mutex::new(None),
            clock,
            sweep,
            granularity,
            active: AtomicBool::new(false),
            last_active: AtomicU64::new(now.as_nanos()),
            read_deadline: AtomicU64::new(NO_DEADLINE),
            close: AtomicU8::new(OPEN),
            io_failed: AtomicBool::new(false),
            busy: Arc::new(AtomicU64::new(0)),
            wakers: Mutex::new([None, None]),
            returned: Mutex::new(None),
        }
    }

    pub(crate) fn last_active(&self) -> Instant {
        Instant::from_nanos(self.last_active.load(Ordering::Relaxed))
    }

    pub(crate) fn read_deadline(&self) -> Option<Instant> {
        match self.read_deadline.load(Ordering::SeqCst) {
            NO_DEADLINE => None,
            t => Some(Instant::from_nanos(t)),
        }
    }

    /// `true` while a [`Busy`] guard is held: a request is in flight.
    pub(crate) fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Acquire) != 0
    }

    pub(crate) fn io_failed(&self) -> bool {
        self.io_failed.load(Ordering::Relaxed)
    }

    /// Orders the connection closed: its pending and next reads and writes fail.
    pub(crate) fn close(&self, reason: CloseReason) {
        let code = match reason {
            CloseReason::Idle => IDLE,
            CloseReason::ReadDeadline => DEADLINE,
            CloseReason::Reclaimed => RECLAIMED,
        };
        let _ = self
            .close
            .compare_exchange(OPEN, code, Ordering::AcqRel, Ordering::Acquire);
        let wakers = core::mem::take(&mut *lock(&self.wakers));
        for w in wakers.into_iter().flatten() {
            w.wake();
        }
    }

    pub(crate) fn closed_for(&self) -> Option<CloseReason> {
        match self.close.load(Ordering::Acquire) {
            IDLE => Some(CloseReason::Idle),
            DEADLINE => Some(CloseReason::ReadDeadline),
            RECLAIMED => Some(CloseReason::Reclaimed),
            _ => None,
        }
    }

    pub(crate) fn take_returned(&self) -> Option<C> {
        lock(&self.returned).take()
    }

    /// Records activity. Only the first since the server last looked reads the clock: it
    /// stamps `last_active`, marks the connection active and moves the server's sweep to at
    /// most `granularity` later. Later ones find the mark and return (one relaxed load): the
    /// server, when it looks, stamps the connection active at its own `now`. So the server sees
    /// the last activity at most `granularity` late, never early: an idle timeout fires
    /// between `idle_timeout` and `idle_timeout + granularity` after the last byte.
    fn touch(&self) {
        if self.active.load(Ordering::Relaxed) {
            return;
        }
        let now = (self.clock)();
        self.last_active.store(now.as_nanos(), Ordering::Relaxed);
        self.active.store(true, Ordering::SeqCst);
        if let Some(g) = self.granularity {
            self.sweep.lower(now.saturating_add(g));
        }
    }

    /// The server looks at `now`: if the connection was active since it last looked, its
    /// `last_active` becomes `now` (the activity may have lasted until now).
    pub(crate) fn look(&self, now: Instant) {
        if self.active.swap(false, Ordering::SeqCst) {
            self.last_active
                .fetch_max(now.as_nanos(), Ordering::Relaxed);
        }
    }

    /// `Some(error)` if the connection was ordered closed or (when `reading`) its read deadline
    /// passed. Lock-free: atomics, and a clock read only while a read deadline is armed.
    fn check(&self, reading: bool) -> Option<io::Error> {
        if let Some(reason) = self.closed_for() {
            return Some(closed_error(reason));
        }
        if reading {
            if let Some(d) = self.read_deadline() {
                if (self.clock)() >= d {
                    // Noticed here before the server's sweep: closed all the same (no linger),
                    // and counted by the server when the handler returns.
                    let _ = self.close.compare_exchange(
                        OPEN,
                        DEADLINE,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    );
                    return self.closed_for().map(closed_error);
                }
            }
        }
        None
    }

    /// After the socket said `Pending`: registers `cx` to hear a close order, then checks again
    /// (an order given between the first check and the registration is reported now, not
    /// never). The waker lock is taken only here, never on a ready read or write.
    fn park(&self, cx: &mut Context<'_>, slot: usize) -> Option<io::Error> {
        let mut wakers = lock(&self.wakers);
        if let Some(w) = wakers.get_mut(slot) {
            match w {
                Some(old) if old.will_wake(cx.waker()) => {}
                other => *other = Some(cx.waker().clone()),
            }
        }
        drop(wakers);
        self.closed_for().map(closed_error)
    }

    /// The order of a poll: [`check`](Self::check), the socket, then [`park`](Self::park) if it
    /// is pending, and the activity stamp if it moved bytes.
    fn poll_io<T>(
        &self,
        cx: &mut Context<'_>,
        slot: usize,
        reading: bool,
        io: impl FnOnce(&mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if let Some(e) = self.check(reading) {
            return Poll::Ready(Err(e));
        }
        let r = io(cx);
        if r.is_pending() {
            if let Some(e) = self.park(cx, slot) {
                return Poll::Ready(Err(e));
            }
        }
        self.note(&r);
        r
    }

    fn note<T>(&self, r: &Poll<io::Result<T>>) {
        match r {
            Poll::Ready(Ok(_)) => self.touch(),
            other => self.note_error(other),
        }
    }

    /// A flush or shutdown moves no byte of its own (the write that buffered them was stamped):
    /// only a reset is recorded, without a clock read.
    fn note_error<T>(&self, r: &Poll<io::Result<T>>) {
        if let Poll::Ready(Err(e)) = r {
            if is_reset(e) {
                self.io_failed.store(true, Ordering::Relaxed);
            }
        }
    }
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}

fn closed_error(reason: CloseReason) -> io::Error {
    let message = match reason {
        CloseReason::Idle => "connection closed by the server: idle timeout",
        CloseReason::ReadDeadline => "connection closed by the server: read deadline passed",
        CloseReason::Reclaimed => {
            "connection closed by the server: reclaimed (idle the longest at the connection limit)"
        }
    };
    io::Error::new(io::ErrorKind::TimedOut, message)
}

/// An accepted connection served by [`Server`](super::Server): the runtime's stream, plus what
/// the server needs to defend its slots.
///
/// - Every successful read or write records activity, so the server knows how long the
///   connection has been idle without the handler's help. Cheaply: the first since the server
///   last looked reads the runtime's clock and asks the server to look again within the
///   **activity granularity** (an eighth of the idle timeout, between 1 ms and
///   [`ACTIVITY_GRANULARITY`], 1 s; 1 s with reclamation only); the others are one relaxed
///   atomic load. The server then sees the last byte at most that late, never early: an idle
///   connection is closed between `idle_timeout` and `idle_timeout` + granularity after its
///   last byte. A flush or a shutdown moves no byte of its own and records nothing. Read
///   deadlines are exact (armed on the clock).
/// - When the server closes it (idle timeout, read deadline, reclaimed at the limit), pending
///   and later reads and writes fail with `TimedOut` and a message saying why.
/// - When dropped (normally when the handler returns), the socket goes back to the server,
///   which closes it with a lingering close (see [`crate::conn`]).
///
/// It implements `futures-io`'s `AsyncRead` and `AsyncWrite`; keel-tokio offers tokio's.
pub struct Conn<L: ConnIo> {
    io: Option<L::Conn>,
    peer: L::Addr,
    shared: Arc<ConnShared<L::Conn>>,
}

impl<L: ConnIo> Conn<L> {
    pub(crate) fn new(io: L::Conn, peer: L::Addr, shared: Arc<ConnShared<L::Conn>>) -> Self {
        Conn {
            io: Some(io),
            peer,
            shared,
        }
    }

    /// The peer's address, as `accept(2)` reported it.
    pub fn peer(&self) -> &L::Addr {
        &self.peer
    }

    /// The runtime's stream (e.g. for `peer_addr` or socket options).
    pub fn get_ref(&self) -> Option<&L::Conn> {
        self.io.as_ref()
    }

    /// The runtime's stream, mutably. Bytes moved through it directly are not seen as activity.
    pub fn get_mut(&mut self) -> Option<&mut L::Conn> {
        self.io.as_mut()
    }

    /// Arms a read deadline `timeout` from now (`None` clears it): when it passes, reads fail
    /// with `TimedOut` and the server closes the connection (counted as `deadline_expired`).
    /// Arm it when a request's first byte arrives; clear it once the request is read. For
    /// HTTP-like protocols this is the header timeout.
    pub fn set_read_deadline(&self, timeout: Option<Duration>) {
        let at = timeout.map_or(NO_DEADLINE, |t| {
            ((self.shared.clock)() + t).as_nanos().min(NO_DEADLINE - 1)
        });
        if at == NO_DEADLINE {
            // Cleared: a later deadline never needs the server early.
            self.shared.read_deadline.store(at, Ordering::Relaxed);
            return;
        }
        // Stored before the sweep is lowered (see `Sweep`): the server either reads it or is
        // woken to re-arm at it.
        self.shared.read_deadline.store(at, Ordering::SeqCst);
        self.shared.sweep.lower(Instant::from_nanos(at));
    }

    /// A handle that marks this connection busy (a request in flight) while a guard from
    /// [`BusyHandle::enter`] is held: the server then counts it as active, so neither the idle
    /// timeout nor reclamation at the limit closes it, however long the handler works without
    /// moving a byte. Clone it into per-request code (an HTTP server's service) before the
    /// `Conn` moves into the protocol's machinery.
    pub fn busy_handle(&self) -> BusyHandle {
        BusyHandle {
            count: Arc::clone(&self.shared.busy),
        }
    }

    /// A handle that counts the requests a protocol on this connection timed out (an HTTP
    /// request's head or body too slow to arrive) in the server's
    /// [`ServeStats::requests`](super::ServeStats::requests) and, with feature `metrics`, in
    /// `keel_request_timeouts_total`. Clone it into per-request code before the `Conn` moves
    /// into the protocol's machinery.
    pub fn request_timeouts(&self) -> super::RequestTimeouts {
        super::RequestTimeouts {
            counts: Arc::clone(&self.shared.requests),
        }
    }

    /// When the connection last moved a byte (on the runtime's clock), to within the activity
    /// granularity (see the type's docs): the first byte since the server last looked, or the
    /// instant it looked and found the connection active.
    pub fn last_active(&self) -> Instant {
        self.shared.last_active()
    }

    /// Why the server closed this connection, if it did.
    pub fn closed_for(&self) -> Option<CloseReason> {
        self.shared.closed_for()
    }

    /// Ends the connection now with a lingering close, from a handler that closes before it
    /// returns: flush, shut the write side down, read and discard until the peer's EOF, the
    /// server's byte cap or its linger time (never past the drain deadline), on `rt`'s timer
    /// (the adapter's runtime, e.g. `keel_tokio::TokioRuntime`). Returns how it ended; the
    /// server counts it when the handler returns. (Returning or dropping the `Conn` in the
    /// handler does the same, after the handler: a `Conn` moved to another task and dropped
    /// after the handler returned is closed without lingering.)
    pub async fn close<R: Runtime>(mut self, rt: &R) -> ConnEnd {
        let shared = Arc::clone(&self.shared);
        let Some(mut io) = self.io.take() else {
            return ConnEnd::Clean;
        };
        drop(self);
        let end = match shared.closed_for() {
            Some(reason) => ConnEnd::Closed(reason),
            None => {
                let mut deadline = rt.now() + shared.linger;
                if let Some(d) = shared.draining.deadline() {
                    deadline = deadline.min(d);
                }
                match lingering_close::<L, R>(rt, &mut io, deadline, shared.linger_bytes).await {
                    _ if shared.io_failed() => ConnEnd::Reset,
                    end => end,
                }
            }
        };
        *lock(&shared.ended) = Some(end);
        end
    }

    fn parts(&mut self) -> Option<(&mut L::Conn, &ConnShared<L::Conn>)> {
        Some((self.io.as_mut()?, &*self.shared))
    }
}

impl<L: ConnIo> Drop for Conn<L> {
    fn drop(&mut self) {
        if let Some(io) = self.io.take() {
            *lock(&self.shared.returned) = Some(io);
        }
    }
}

impl<L: ConnIo> fmt::Debug for Conn<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("id", &self.shared.id)
            .field("last_active", &self.shared.last_active())
            .field("closed_for", &self.shared.closed_for())
            .finish_non_exhaustive()
    }
}

/// Marks a [`Conn`] busy: see [`Conn::busy_handle`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct BusyHandle {
    count: Arc<AtomicU64>,
}

impl BusyHandle {
    /// The connection is busy until the returned guard is dropped (guards nest: busy while any
    /// is held).
    pub fn enter(&self) -> Busy {
        self.count.fetch_add(1, Ordering::AcqRel);
        Busy {
            count: Arc::clone(&self.count),
        }
    }
}

/// A request in flight on a [`Conn`]: it counts as active while this is held.
#[derive(Debug)]
#[must_use = "the connection is busy only while the guard is held"]
pub struct Busy {
    count: Arc<AtomicU64>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        // Saturating: a count can only come back from a guard that raised it.
        let _ = self
            .count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection already closed")
}

impl<L: ConnIo> futures_io::AsyncRead for Conn<L> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let Some((io, shared)) = self.get_mut().parts() else {
            return Poll::Ready(Err(gone()));
        };
        shared.poll_io(cx, 0, true, |cx| L::poll_read(io, cx, buf))
    }
}

impl<L: ConnIo> futures_io::AsyncWrite for Conn<L> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let Some((io, shared)) = self.get_mut().parts() else {
            return Poll::Ready(Err(gone()));
        };
        shared.poll_io(cx, 1, false, |cx| L::poll_write(io, cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some((io, shared)) = self.get_mut().parts() else {
            return Poll::Ready(Err(gone()));
        };
        let r = L::poll_flush(io, cx);
        shared.note_error(&r);
        r
    }

    /// Shuts the write side down (the server still lingers when the handler returns).
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some((io, shared)) = self.get_mut().parts() else {
            return Poll::Ready(Err(gone()));
        };
        let r = L::poll_shutdown_write(io, cx);
        shared.note_error(&r);
        r
    }
}

/// Closes `conn` the way keel ends every connection it serves: flush, shut the write side down,
/// then read and discard until the peer's EOF, `max_bytes`, or `deadline` (on `rt`'s timer).
/// Returns how it ended: [`ConnEnd::Clean`] at EOF, [`ConnEnd::LingerTimeout`] when the
/// deadline passed with nothing more from the peer, [`ConnEnd::Reset`] when the cap or the
/// deadline was hit while the peer still sent, or an I/O error. For streams served without a
/// [`Server`](super::Server) (which does this itself when a handler returns); drop `conn`
/// afterwards.
pub async fn lingering_close<L: ConnIo, R: Runtime>(
    rt: &R,
    conn: &mut L::Conn,
    deadline: Instant,
    max_bytes: u64,
) -> ConnEnd {
    let shut = timeout_at(
        rt,
        deadline,
        core::future::poll_fn(|cx| match L::poll_flush(conn, cx) {
            Poll::Ready(Ok(())) => L::poll_shutdown_write(conn, cx),
            other => other,
        }),
    )
    .await;
    match shut {
        Ok(Ok(())) => {}
        Ok(Err(_)) | Err(_) => return ConnEnd::Reset,
    }
    let mut buf = Box::new([0u8; 4096]);
    let mut discarded: u64 = 0;
    loop {
        let read = timeout_at(
            rt,
            deadline,
            core::future::poll_fn(|cx| L::poll_read(conn, cx, &mut buf[..])),
        )
        .await;
        match read {
            Err(_) if discarded == 0 => return ConnEnd::LingerTimeout,
            Err(_) => return ConnEnd::Reset,
            Ok(Ok(0)) => return ConnEnd::Clean,
            Ok(Ok(n)) => {
                discarded = discarded.saturating_add(n as u64);
                if discarded >= max_bytes {
                    return ConnEnd::Reset;
                }
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(Err(_)) => return ConnEnd::Reset,
        }
    }
}

/// What [`read_line_bounded`] read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line {
    /// A line of this many bytes (its `\n` included) was appended to the buffer.
    Complete(usize),
    /// The stream ended; the buffer holds what came after the last `\n` (maybe nothing).
    Eof,
    /// More than `max` bytes came without a `\n`: the buffer holds the first `max`. The
    /// connection should be answered with an error and closed (the rest is not read).
    TooLong,
}

/// Appends the next line of `reader` (up to and including `\n`) to `buf`, reading at most
/// `max` bytes into it: memory stays bounded whatever a peer sends. Cancel-safe: bytes read
/// before a cancellation stay in `buf` (call again with the same `buf` to continue).
///
/// `on_first_byte(reader)` is called once, when the first byte of a line arrives (the echo
/// example arms its per-line read deadline there with [`Conn::set_read_deadline`]).
///
/// ```
/// use keel_core::driver::{read_line_bounded, Line};
/// # futures_lite::future::block_on(async {
/// let mut input = futures_lite::io::BufReader::new(&b"hi\nan overlong line\n"[..]);
/// let mut line = Vec::new();
/// assert_eq!(read_line_bounded(&mut input, &mut line, 8, |_| {}).await?, Line::Complete(3));
/// line.clear();
/// assert_eq!(read_line_bounded(&mut input, &mut line, 8, |_| {}).await?, Line::TooLong);
/// assert_eq!(line, b"an overl");
/// # Ok::<(), std::io::Error>(()) }).unwrap();
/// ```
pub async fn read_line_bounded<B, F>(
    reader: &mut B,
    buf: &mut Vec<u8>,
    max: usize,
    mut on_first_byte: F,
) -> io::Result<Line>
where
    B: futures_io::AsyncBufRead + Unpin,
    F: FnMut(&B),
{
    let mut started = !buf.is_empty();
    core::future::poll_fn(|cx| loop {
        if buf.len() >= max {
            return Poll::Ready(Ok(Line::TooLong));
        }
        if !started {
            match Pin::new(&mut *reader).poll_fill_buf(cx) {
                Poll::Ready(Ok([])) => return Poll::Ready(Ok(Line::Eof)),
                Poll::Ready(Ok(_)) => {
                    started = true;
                    on_first_byte(&*reader);
                }
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let available = match Pin::new(&mut *reader).poll_fill_buf(cx) {
            Poll::Ready(Ok(b)) => b,
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        if available.is_empty() {
            return Poll::Ready(Ok(Line::Eof));
        }
        let room = max.saturating_sub(buf.len());
        let window = available
            .get(..room.min(available.len()))
            .unwrap_or(available);
        let (take, done) = match window.iter().position(|&b| b == b'\n') {
            Some(i) => (i.saturating_add(1), true),
            None => (window.len(), false),
        };
        buf.extend_from_slice(window.get(..take).unwrap_or(window));
        Pin::new(&mut *reader).consume(take);
        if done {
            return Poll::Ready(Ok(Line::Complete(buf.len())));
        }
    })
    .await
}

/// A future that a server's connection task runs after the handler: the lingering close of the
/// returned socket, or nothing if the handler kept it (moved it elsewhere) or the server closed
/// it.
pub(crate) async fn finish<L: ConnIo, R: Runtime>(
    rt: &R,
    shared: &ConnShared<L::Conn>,
    linger_deadline: Option<Instant>,
    max_bytes: u64,
) -> ConnEnd {
    if let Some(reason) = shared.closed_for() {
        drop(shared.take_returned());
        return lock(&shared.ended).unwrap_or(ConnEnd::Closed(reason));
    }
    let Some(mut io) = shared.take_returned() else {
        // Closed by the handler ([`Conn::close`]), or kept past the handler.
        if let Some(end) = *lock(&shared.ended) {
            return end;
        }
        return if shared.io_failed() {
            ConnEnd::Reset
        } else {
            ConnEnd::Clean
        };
    };
    let end = match linger_deadline {
        Some(deadline) => lingering_close::<L, R>(rt, &mut io, deadline, max_bytes).await,
        None => ConnEnd::Clean,
    };
    if shared.io_failed() {
        return ConnEnd::Reset;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;
    use futures_lite::io::BufReader;

    fn read(input: &[u8], max: usize) -> Vec<(io::Result<Line>, Vec<u8>, u32)> {
        let mut reader = BufReader::with_capacity(3, input);
        let mut out = Vec::new();
        for _ in 0..8 {
            let mut line = Vec::new();
            let mut firsts = 0;
            let r = block_on(read_line_bounded(&mut reader, &mut line, max, |_| {
                firsts += 1
            }));
            let stop = !matches!(r, Ok(Line::Complete(_)));
            out.push((r, line, firsts));
            if stop {
                break;
            }
        }
        out
    }

    fn kinds(v: &[(io::Result<Line>, Vec<u8>, u32)]) -> Vec<(Line, &[u8], u32)> {
        v.iter()
            .map(|(r, l, f)| (*r.as_ref().expect("no I/O error"), &l[..], *f))
            .collect()
    }

    #[test]
    fn lines_are_split_across_small_buffers_and_the_first_byte_is_signalled_once() {
        let got = read(b"hello\nab\n", 64);
        assert_eq!(
            kinds(&got),
            [
                (Line::Complete(6), &b"hello\n"[..], 1),
                (Line::Complete(3), b"ab\n", 1),
                (Line::Eof, b"", 0),
            ]
        );
    }

    #[test]
    fn a_line_of_exactly_max_bytes_fits_one_more_is_too_long() {
        let got = read(b"abc\n", 4);
        assert_eq!(kinds(&got)[0], (Line::Complete(4), &b"abc\n"[..], 1));
        let got = read(b"abcd\n", 4);
        assert_eq!(kinds(&got), [(Line::TooLong, &b"abcd"[..], 1)]);
    }

    #[test]
    fn a_zero_max_is_too_long_at_once_without_reading() {
        let got = read(b"x\n", 0);
        assert_eq!(kinds(&got), [(Line::TooLong, &b""[..], 0)]);
    }

    #[test]
    fn a_last_line_without_a_newline_is_kept_at_eof() {
        let got = read(b"tail", 64);
        assert_eq!(kinds(&got), [(Line::Eof, &b"tail"[..], 1)]);
    }
}
