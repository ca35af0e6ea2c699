//! `Server`'s connection sweep on keel-testkit's manual clock: its timer is armed at the
//! table's next real deadline (idle timeout, read deadline, reclamation for a waiting
//! newcomer), re-armed when a handler arms an earlier read deadline, and not armed at all while
//! no connection has a deadline. Connections are in-memory streams the test feeds by hand.
#![cfg(feature = "futures")]

use std::collections::VecDeque;
use std::future::Future as _;
use std::io;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_lite::AsyncReadExt as _;
use keel_core::conn::{CloseReason, ConnConfig};
use keel_core::driver::{Conn, ConnIo, Draining, GuardConfig, Incoming, Listener, Server};
use keel_core::time::Instant;
use keel_testkit::ManualRuntime;

/// A listener whose connections the test pushes.
#[derive(Clone, Default)]
struct Mem {
    queue: Arc<Mutex<(VecDeque<MemConn>, Option<Waker>)>>,
}

impl Mem {
    /// A new connection in the accept queue; returns its input, which the test feeds.
    fn connect(&self) -> Input {
        let input = Input::default();
        let waker = {
            let mut q = self.queue.lock().unwrap();
            q.0.push_back(MemConn {
                input: input.clone(),
            });
            q.1.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        input
    }
}

/// What a connection's peer has sent and the reader waiting for more.
#[derive(Clone, Default)]
struct Input(Arc<Mutex<(VecDeque<u8>, Option<Waker>)>>);

impl Input {
    fn send(&self, bytes: &[u8]) {
        let waker = {
            let mut i = self.0.lock().unwrap();
            i.0.extend(bytes);
            i.1.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// A connection whose peer sends only what the test feeds it, and never closes.
struct MemConn {
    input: Input,
}

impl Listener for Mem {
    type Conn = MemConn;
    type Addr = ();
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(MemConn, ())>> {
        let mut q = self.queue.lock().unwrap();
        match q.0.pop_front() {
            Some(c) => Poll::Ready(Ok((c, ()))),
            None => {
                q.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
    fn shed(&mut self, _conn: MemConn, _farewell: &'static [u8]) {}
}

impl ConnIo for Mem {
    fn poll_read(c: &mut MemConn, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut i = c.input.0.lock().unwrap();
        if i.0.is_empty() {
            i.1 = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = buf.len().min(i.0.len());
        for (b, x) in buf.iter_mut().zip(i.0.drain(..n)) {
            *b = x;
        }
        Poll::Ready(Ok(n))
    }
    fn poll_write(_c: &mut MemConn, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(_c: &mut MemConn, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown_write(_c: &mut MemConn, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// When each connection's handler saw its connection closed, and why (in accept order).
type Log = Arc<Mutex<Vec<(Instant, Option<CloseReason>)>>>;

const T0: Instant = Instant::from_secs(1);

struct Setup {
    rt: ManualRuntime,
    mem: Mem,
    log: Log,
    handle: keel_core::driver::ServeHandle,
}

/// A server on a manual clock starting at [`T0`]; the `n`th connection's handler arms a read
/// deadline of `read_deadlines[n]` (if any) and reads until its connection is closed.
fn serve(max: usize, conns: ConnConfig, read_deadlines: Vec<Option<Duration>>) -> Setup {
    let rt = ManualRuntime::starting_at(T0);
    let mem = Mem::default();
    let guard = GuardConfig::builder().max_connections(max).build().unwrap();
    let incoming = Incoming::new(mem.clone(), rt.clone(), &guard);
    let server = Server::with_runtime(incoming, rt.clone()).conn_config(conns);
    let handle = server.handle();
    let log: Log = Arc::default();
    let (hlog, hrt) = (Arc::clone(&log), rt.clone());
    let mut deadlines = read_deadlines.into_iter();
    let handler = move |mut conn: Conn<Mem>, _draining: Draining| {
        let (log, rt) = (Arc::clone(&hlog), hrt.clone());
        conn.set_read_deadline(deadlines.next().flatten());
        async move {
            let mut buf = [0u8; 16];
            while let Ok(n) = conn.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
            log.lock().unwrap().push((rt.now(), conn.closed_for()));
        }
    };
    drop(rt.spawn_joinable(server.serve(handler)));
    rt.run_until_idle();
    Setup {
        rt,
        mem,
        log,
        handle,
    }
}

fn config(idle: Option<Duration>, reclaim: Option<Duration>) -> ConnConfig {
    ConnConfig::builder()
        .idle_timeout(idle)
        .reclaim_min_idle(reclaim)
        .build()
        .unwrap()
}

/// Moves the clock to `at` and runs what it woke.
fn step_to(s: &Setup, at: Instant) {
    s.rt.advance_to(at);
    s.rt.run_until_idle();
}

fn closed(s: &Setup) -> Vec<(Instant, Option<CloseReason>)> {
    s.log.lock().unwrap().clone()
}

// A fixed 250 ms sweep (before) armed a timer with no deadline in sight and closed these
// connections at the first tick after their deadline: 10.25 s, 3.25 s, 1.55 s below.

#[test]
fn no_timer_is_armed_while_no_connection_has_a_deadline() {
    let s = serve(4, config(None, None), vec![None]);
    assert_eq!(s.rt.armed_timers(), 0, "a server with no connection");
    let _ = s.mem.connect();
    s.rt.run_until_idle();
    assert_eq!(s.handle.stats().conns.open, 1);
    assert_eq!(s.rt.armed_timers(), 0, "{:?}", s.rt.next_timer());
}

#[test]
fn the_first_and_only_idle_connection_is_closed_at_its_exact_deadline() {
    let idle = Duration::from_millis(10_100);
    let s = serve(4, config(Some(idle), None), vec![None]);
    let _ = s.mem.connect();
    s.rt.run_until_idle();
    let deadline = T0 + idle;
    assert_eq!(s.rt.next_timer(), Some(deadline));
    step_to(&s, Instant::from_nanos(deadline.as_nanos() - 1));
    assert_eq!(closed(&s), []);
    step_to(&s, deadline);
    assert_eq!(closed(&s), [(deadline, Some(CloseReason::Idle))]);
    assert_eq!(s.handle.stats().conns.idle_closed, 1);
    // Nothing left with a deadline: the timer is gone.
    assert_eq!(s.rt.armed_timers(), 0, "{:?}", s.rt.next_timer());
}

#[test]
fn an_earlier_read_deadline_armed_after_the_timer_rearms_it() {
    let idle = Duration::from_secs(60);
    let read = Duration::from_millis(2_100);
    let s = serve(4, config(Some(idle), None), vec![None, Some(read)]);
    let _ = s.mem.connect();
    s.rt.run_until_idle();
    assert_eq!(s.rt.next_timer(), Some(T0 + idle));
    // A second connection, a second later, whose handler arms a read deadline well before the
    // first one's idle timeout.
    let opened = T0 + Duration::from_secs(1);
    step_to(&s, opened);
    let _ = s.mem.connect();
    s.rt.run_until_idle();
    let deadline = opened + read;
    assert_eq!(s.rt.next_timer(), Some(deadline));
    step_to(&s, Instant::from_nanos(deadline.as_nanos() - 1));
    assert_eq!(closed(&s), []);
    step_to(&s, deadline);
    assert_eq!(closed(&s), [(deadline, Some(CloseReason::ReadDeadline))]);
    // The first connection is still there, its idle timeout the next deadline.
    assert_eq!(s.rt.next_timer(), Some(T0 + idle));
    step_to(&s, T0 + idle);
    assert_eq!(
        closed(&s),
        [
            (deadline, Some(CloseReason::ReadDeadline)),
            (T0 + idle, Some(CloseReason::Idle)),
        ]
    );
    let stats = s.handle.stats().conns;
    assert_eq!((stats.deadline_expired, stats.idle_closed), (1, 1));
}

#[test]
fn a_waiting_newcomer_reclaims_the_idle_connection_the_moment_it_is_eligible() {
    let min_idle = Duration::from_millis(1_100);
    let s = serve(1, config(None, Some(min_idle)), vec![None, None]);
    let _ = s.mem.connect();
    s.rt.run_until_idle();
    assert_eq!(s.rt.armed_timers(), 0, "{:?}", s.rt.next_timer());
    // The only slot is taken: a newcomer waits from 300 ms on.
    step_to(&s, T0 + Duration::from_millis(300));
    let _ = s.mem.connect();
    s.rt.run_until_idle();
    assert_eq!(closed(&s), []);
    let eligible = T0 + min_idle;
    assert_eq!(s.rt.next_timer(), Some(eligible));
    step_to(&s, eligible);
    assert_eq!(closed(&s), [(eligible, Some(CloseReason::Reclaimed))]);
    assert_eq!(s.handle.stats().conns.reclaimed, 1);
    assert_eq!(s.handle.stats().conns.open, 1, "the newcomer is served");
}

#[test]
fn activity_is_seen_at_most_one_granularity_late_and_never_early() {
    // Idle timeout 8 s: granularity 1 s (an eighth, at most 1 s).
    let idle = Duration::from_secs(8);
    let granularity = Duration::from_secs(1);
    let s = serve(4, config(Some(idle), None), vec![None]);
    let input = s.mem.connect();
    s.rt.run_until_idle();
    let mut last = T0;
    // Bytes that are not the first since the server last looked (1.2 s, 2.9 s) are seen late.
    for at_ms in [500, 1_200, 2_300, 2_900] {
        last = T0 + Duration::from_millis(at_ms);
        step_to(&s, last);
        input.send(b"x");
        s.rt.run_until_idle();
    }
    // Step through every timer: the connection is closed as idle, not before `last + idle`
    // and at most one granularity after it.
    while closed(&s).is_empty() {
        let next =
            s.rt.next_timer()
                .expect("a timer while the connection is open");
        assert!(next <= last + idle + granularity, "{next:?}");
        step_to(&s, next);
    }
    let [(at, reason)] = closed(&s)[..] else {
        panic!("{:?}", closed(&s));
    };
    assert_eq!(reason, Some(CloseReason::Idle));
    assert!(at >= last + idle, "closed early: {at:?}");
    assert!(at <= last + idle + granularity, "closed late: {at:?}");
}

/// Sets its flag when dropped.
struct DropFlag(Arc<std::sync::atomic::AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn run_until_draining_gives_the_output_or_none_once_the_drain_starts_and_drops_the_future_then() {
    let s = serve(4, config(None, None), vec![]);
    let draining = s.handle.draining();
    let mut cx = Context::from_waker(Waker::noop());
    let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = DropFlag(Arc::clone(&dropped));
    let mut waiting = std::pin::pin!(draining.run_until_draining(async move {
        let _flag = flag;
        std::future::pending::<()>().await
    }));
    assert!(waiting.as_mut().poll(&mut cx).is_pending());
    assert!(!dropped.load(std::sync::atomic::Ordering::SeqCst));
    s.handle.shutdown();
    s.rt.run_until_idle();
    assert!(draining.is_draining());
    assert_eq!(waiting.as_mut().poll(&mut cx), Poll::Ready(None));
    // The wrapped future was dropped when the drain won, not when this future is.
    assert!(dropped.load(std::sync::atomic::Ordering::SeqCst));
    // Polled again it still says the drain won (the future is gone; nothing runs).
    assert_eq!(waiting.as_mut().poll(&mut cx), Poll::Ready(None));
    // A ready future wins even after the drain started: it is polled first.
    let mut ready = std::pin::pin!(draining.run_until_draining(async { 5 }));
    assert_eq!(ready.as_mut().poll(&mut cx), Poll::Ready(Some(5)));
    // It holds the wrapped future once.
    let big = async {
        let buf = [1u8; 4096];
        std::future::ready(()).await;
        buf[7]
    };
    let inner = std::mem::size_of_val(&big);
    assert!(std::mem::size_of_val(&draining.run_until_draining(big)) <= inner + 64);
}
