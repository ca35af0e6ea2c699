//! The driver's call futures (`Breaker::call`, `Bulkhead::run`, `AdaptiveLimit::run`,
//! `timeout`, `Retry::run`) hold the wrapped future once: their size is the wrapped future's
//! plus a bounded handful of bytes, whatever the wrapped future's size. (Written as `async fn`s
//! they stored it two to seven times: a 1 KB request future became a 7 KB `call_timeout`
//! future, copied whole on every move.) And they behave as the `async fn`s did where a
//! careless caller pokes at them: nothing happens before the first poll, a poll after the end
//! neither reports nor takes a slot twice.
#![cfg(feature = "futures")]

use std::future::Future;
use std::mem::size_of_val;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use keel_core::adaptive::AdaptiveConfig;
use keel_core::backoff::BackoffConfig;
use keel_core::breaker::{BreakerConfig, Outcome};
use keel_core::bulkhead::BulkheadConfig;
use keel_core::driver::adaptive::AdaptiveLimit;
use keel_core::driver::breaker::{Breaker, BreakerError};
use keel_core::driver::bulkhead::Bulkhead;
use keel_core::driver::retry::Retry;
use keel_core::driver::{timeout, timeout_at};
use keel_core::sync::breaker::SharedBreaker;
use keel_core::Instant;
use keel_testkit::ManualRuntime;

/// What a call future may add to the future it wraps: a handle reference, a classifier, a
/// permit or slot, a stage, and its own state (the bulkhead's and adaptive limit's wait while
/// queued, a retry's backoff and budget).
const OVERHEAD: usize = 512;

/// A future holding `N` bytes across its await (as a request future holds its buffers).
fn big<const N: usize>() -> impl Future<Output = Result<u8, ()>> {
    let bytes = [7u8; N];
    async move {
        std::future::ready(()).await;
        Ok(bytes[N / 2])
    }
}

fn breaker(rt: &ManualRuntime) -> Breaker<ManualRuntime> {
    Breaker::from_shared(
        SharedBreaker::new(BreakerConfig::default(), rt.now()),
        rt.clone(),
    )
}

fn bulkhead(rt: &ManualRuntime, max: usize) -> Bulkhead<ManualRuntime> {
    Bulkhead::with_runtime(
        BulkheadConfig::builder()
            .max_concurrent(max)
            .build()
            .unwrap(),
        rt.clone(),
    )
}

/// One slot, a queue of 4 waiting at most 10 s.
fn queueing_bulkhead(rt: &ManualRuntime) -> Bulkhead<ManualRuntime> {
    Bulkhead::with_runtime(
        BulkheadConfig::builder()
            .max_concurrent(1)
            .max_queue(4)
            .max_wait(Duration::from_secs(10))
            .build()
            .unwrap(),
        rt.clone(),
    )
}

fn adaptive(rt: &ManualRuntime) -> AdaptiveLimit<ManualRuntime> {
    AdaptiveLimit::with_runtime(
        AdaptiveConfig::default(),
        BulkheadConfig::builder()
            .max_concurrent(64)
            .build()
            .unwrap(),
        rt.clone(),
    )
}

/// Asserts that a wrapper holds its future once: around futures of two sizes (`small` and
/// `large`: the inner size, then the wrapper's), it grows by exactly the inner future's growth,
/// and it adds at most [`OVERHEAD`] bytes.
#[track_caller]
fn holds_once(what: &str, small: (usize, usize), large: (usize, usize)) {
    assert_eq!(
        large.1 - small.1,
        large.0 - small.0,
        "{what}: {small:?} then {large:?} (inner, wrapper) bytes: it stores the wrapped future \
         more than once"
    );
    assert!(
        small.1 <= small.0 + OVERHEAD,
        "{what}: {} bytes around a {}-byte future (more than {OVERHEAD} added)",
        small.1,
        small.0
    );
}

#[test]
fn every_call_future_holds_the_wrapped_future_once() {
    let rt = ManualRuntime::new();
    let (br, bh, al) = (breaker(&rt), bulkhead(&rt, 4), adaptive(&rt));
    let retry = Retry::with_runtime(
        BackoffConfig::constant(Duration::from_millis(1))
            .max_attempts(3)
            .build()
            .unwrap(),
        rt.clone(),
    );
    // Each wrapper around futures of two sizes: (inner, wrapper) bytes.
    macro_rules! sizes {
        ($wrap:expr) => {{
            let (s, l) = (size_of_val(&big::<1000>()), size_of_val(&big::<16384>()));
            #[allow(clippy::redundant_closure_call)]
            (
                (s, size_of_val(&$wrap(big::<1000>()))),
                (l, size_of_val(&$wrap(big::<16384>()))),
            )
        }};
    }
    let (s, l) = sizes!(|f| br.call(f));
    holds_once("Breaker::call", s, l);
    let (s, l) = sizes!(|f| br.call_with(f, |_: &Result<u8, ()>| Outcome::Ignored));
    holds_once("Breaker::call_with", s, l);
    let (s, l) = sizes!(|f| br.call_timeout(Duration::from_secs(1), f));
    holds_once("Breaker::call_timeout", s, l);
    let (s, l) = sizes!(|f| bh.run(f));
    holds_once("Bulkhead::run", s, l);
    let (s, l) = sizes!(|f| al.run(f));
    holds_once("AdaptiveLimit::run", s, l);
    let (s, l) = sizes!(|f| timeout(&rt, Duration::from_secs(1), f));
    holds_once("timeout", s, l);
    let (s, l) = sizes!(|f| timeout_at(&rt, Instant::from_secs(1), f));
    holds_once("timeout_at", s, l);
    let small = size_of_val(&retry.run(big::<1000>));
    let large = size_of_val(&retry.run(big::<16384>));
    holds_once(
        "Retry::run",
        (size_of_val(&big::<1000>()), small),
        (size_of_val(&big::<16384>()), large),
    );
}

#[test]
fn wrapped_futures_still_run_to_their_output() {
    let rt = ManualRuntime::new();
    let (br, bh, al) = (breaker(&rt), bulkhead(&rt, 4), adaptive(&rt));
    rt.block_on(async {
        assert_eq!(br.call(big::<4096>()).await.ok(), Some(7));
        assert_eq!(
            br.call_timeout(Duration::from_secs(1), big::<4096>())
                .await
                .ok(),
            Some(7)
        );
        assert_eq!(bh.run(big::<4096>()).await, Ok(Ok(7)));
        assert_eq!(al.run(big::<4096>()).await, Ok(Ok(7)));
        assert_eq!(
            timeout(&rt, Duration::from_secs(1), big::<4096>()).await,
            Ok(Ok(7))
        );
    });
    assert_eq!(br.stats().successes, 2);
    assert_eq!(bh.stats().in_flight, 0);
}

/// A future that counts its polls and is ready at each (it may be polled again after its
/// output, as some futures allow).
struct Counted(Arc<AtomicU32>);

impl Future for Counted {
    type Output = Result<u32, ()>;
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(Ok(self.0.fetch_add(1, Ordering::Relaxed) + 1))
    }
}

fn poll_once<F: Future>(f: Pin<&mut F>) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(Waker::noop()))
}

#[test]
fn nothing_is_asked_before_the_first_poll() {
    let rt = ManualRuntime::new();
    let (br, bh, al) = (breaker(&rt), bulkhead(&rt, 1), adaptive(&rt));
    let polls = Arc::new(AtomicU32::new(0));
    // Built and dropped unpolled: no admission, no slot, no abandoned call, nothing run.
    drop(br.call(Counted(polls.clone())));
    drop(br.call_timeout(Duration::from_secs(1), Counted(polls.clone())));
    drop(bh.run(Counted(polls.clone())));
    drop(al.run(Counted(polls.clone())));
    assert_eq!(polls.load(Ordering::Relaxed), 0);
    let s = br.stats();
    assert_eq!(
        (s.admitted, s.successes, s.failures, s.ignored),
        (0, 0, 0, 0)
    );
    assert_eq!(bh.stats().in_flight, 0);
    assert_eq!(bh.stats().admitted, 0);
    assert_eq!(al.bulkhead().stats().admitted, 0);
    assert_eq!(al.stats().samples, 0);
    // `timeout` counts its duration from the first poll, as the `async fn` did.
    let mut t = pin!(timeout(
        &rt,
        Duration::from_secs(5),
        std::future::pending::<()>()
    ));
    assert_eq!(t.deadline(), None);
    rt.advance(Duration::from_secs(60));
    assert_eq!(poll_once(t.as_mut()), Poll::Pending);
    assert_eq!(t.deadline(), Some(Instant::from_secs(65)));
}

#[test]
fn a_poll_after_the_end_reports_nothing_twice_and_takes_no_second_slot() {
    let rt = ManualRuntime::new();
    let (br, bh) = (breaker(&rt), bulkhead(&rt, 1));
    let polls = Arc::new(AtomicU32::new(0));

    let mut call = pin!(br.call(Counted(polls.clone())));
    assert_eq!(poll_once(call.as_mut()), Poll::Ready(Ok(1)));
    // The wrapped future answers the second poll; the breaker counts the call once.
    assert_eq!(poll_once(call.as_mut()), Poll::Ready(Ok(2)));
    let s = br.stats();
    assert_eq!((s.admitted, s.successes), (1, 1));

    let mut run = pin!(bh.run(Counted(polls.clone())));
    assert_eq!(poll_once(run.as_mut()), Poll::Ready(Ok(Ok(3))));
    assert_eq!(poll_once(run.as_mut()), Poll::Ready(Ok(Ok(4))));
    assert_eq!((bh.stats().admitted, bh.stats().in_flight), (1, 0));

    let al = adaptive(&rt);
    let mut run = pin!(al.run(Counted(polls.clone())));
    assert_eq!(poll_once(run.as_mut()), Poll::Ready(Ok(Ok(5))));
    assert_eq!(poll_once(run.as_mut()), Poll::Ready(Ok(Ok(6))));
    // One slot, one sample.
    assert_eq!(al.stats().samples, 1);
    let s = al.bulkhead().stats();
    assert_eq!((s.admitted, s.in_flight), (1, 0));
}

/// Pending at its first poll, ready after; counts its polls and sets a flag when dropped.
struct Slow {
    polled: bool,
    polls: Arc<AtomicU32>,
    dropped: Arc<AtomicU32>,
}

impl Future for Slow {
    type Output = Result<u32, ()>;
    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        let n = self.polls.fetch_add(1, Ordering::Relaxed);
        if std::mem::replace(&mut self.polled, true) {
            Poll::Ready(Ok(n))
        } else {
            Poll::Pending
        }
    }
}

impl Drop for Slow {
    fn drop(&mut self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn a_timed_out_future_is_dropped_at_the_expiry_and_never_answers_after_it() {
    let rt = ManualRuntime::new();
    let (polls, dropped) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let slow = || Slow {
        polled: false,
        polls: Arc::clone(&polls),
        dropped: Arc::clone(&dropped),
    };

    // A zero timeout: the future is polled once (pending), then the deadline wins.
    let mut t = pin!(timeout(&rt, Duration::ZERO, slow()));
    assert!(matches!(poll_once(t.as_mut()), Poll::Ready(Err(_))));
    assert_eq!(dropped.load(Ordering::Relaxed), 1, "dropped at the expiry");
    // Polled again, it answers the expiry again: the future (which would be ready now) is gone.
    assert!(matches!(poll_once(t.as_mut()), Poll::Ready(Err(_))));
    assert_eq!(polls.load(Ordering::Relaxed), 1);

    // The same inside the breaker: one failure, and no `Ok` after the `TimedOut`.
    let br = breaker(&rt);
    let mut call = pin!(br.call_timeout(Duration::ZERO, slow()));
    for i in 0..3 {
        let p = poll_once(call.as_mut());
        assert!(
            matches!(p, Poll::Ready(Err(BreakerError::TimedOut(_)))),
            "poll {i}: {p:?}"
        );
    }
    assert_eq!(dropped.load(Ordering::Relaxed), 2);
    assert_eq!(polls.load(Ordering::Relaxed), 2);
    let s = br.stats();
    assert_eq!((s.admitted, s.failures, s.successes), (1, 1, 0));
}

#[test]
fn a_queued_run_leaves_the_queue_before_its_future_is_dropped() {
    // The wrapped future holds the bulkhead's only slot and is dropped while its run waits
    // in the queue: the wait must be gone first, or the freed slot would be handed to it.
    let rt = ManualRuntime::new();
    let bh = queueing_bulkhead(&rt);
    let held = bh.try_acquire().unwrap();
    {
        let mut queued = pin!(bh.run(async move {
            let _held = held;
        }));
        assert!(poll_once(queued.as_mut()).is_pending());
        assert_eq!(bh.stats().queue_len, 1);
    }
    let s = bh.stats();
    assert_eq!((s.queue_len, s.in_flight, s.promoted), (0, 0, 0));
    assert_eq!(s.cancelled, 1);
}

#[test]
fn a_rejected_call_never_runs_its_future_however_often_it_is_polled() {
    let rt = ManualRuntime::new();
    let br = breaker(&rt);
    br.shared().force_open(rt.now());
    let polls = Arc::new(AtomicU32::new(0));
    let mut call = pin!(br.call(Counted(polls.clone())));
    for _ in 0..3 {
        assert!(matches!(
            poll_once(call.as_mut()),
            Poll::Ready(Err(BreakerError::Rejected(_)))
        ));
    }
    assert_eq!(polls.load(Ordering::Relaxed), 0);
    // One admission asked, one rejection: a re-poll repeats the answer, it does not ask again.
    assert_eq!(br.stats().rejected, 1);

    let bh = bulkhead(&rt, 1);
    let held = bh.try_acquire().unwrap();
    let mut run = pin!(bh.run(Counted(polls.clone())));
    assert!(matches!(poll_once(run.as_mut()), Poll::Ready(Err(_))));
    // A slot frees: a re-poll still answers the rejection, it neither asks again nor runs.
    drop(held);
    for _ in 0..3 {
        assert!(matches!(poll_once(run.as_mut()), Poll::Ready(Err(_))));
    }
    assert_eq!(polls.load(Ordering::Relaxed), 0);
    let s = bh.stats();
    assert_eq!((s.shed_full, s.admitted, s.in_flight), (1, 1, 0));
}

#[test]
fn a_call_dropped_mid_flight_is_reported_once_as_abandoned() {
    let rt = ManualRuntime::new();
    let br = breaker(&rt);
    let bh = bulkhead(&rt, 1);
    {
        let mut call = pin!(br.call(std::future::pending::<Result<(), ()>>()));
        assert!(poll_once(call.as_mut()).is_pending());
        let mut run = pin!(bh.run(std::future::pending::<()>()));
        assert!(poll_once(run.as_mut()).is_pending());
        assert_eq!(bh.stats().in_flight, 1);
        // Past the abandon threshold (1 s): the dropped call is a failure.
        rt.advance(Duration::from_secs(2));
    }
    let s = br.stats();
    assert_eq!((s.admitted, s.failures, s.successes), (1, 1, 0));
    assert_eq!(bh.stats().in_flight, 0);
}

#[test]
fn a_queued_run_dropped_leaves_the_queue_and_a_queued_one_runs_when_a_slot_frees() {
    let rt = ManualRuntime::new();
    let bh = queueing_bulkhead(&rt);
    let held = bh.try_acquire().unwrap();
    {
        let mut queued = pin!(bh.run(async { 1 }));
        assert!(poll_once(queued.as_mut()).is_pending());
        assert_eq!(bh.stats().queue_len, 1);
    }
    assert_eq!(bh.stats().queue_len, 0);
    let mut queued = pin!(bh.run(async { 2 }));
    let p = poll_once(queued.as_mut());
    assert!(p.is_pending(), "{p:?} {:?}", bh.stats());
    drop(held);
    assert_eq!(poll_once(queued.as_mut()), Poll::Ready(Ok(2)));
    assert_eq!(bh.stats().in_flight, 0);
}

#[test]
fn the_timeout_inside_the_breaker_counts_an_expiry_as_a_failure() {
    let rt = ManualRuntime::new();
    let br = breaker(&rt);
    let r = rt.block_on(br.call_timeout(
        Duration::from_millis(50),
        std::future::pending::<Result<(), ()>>(),
    ));
    assert!(matches!(r, Err(BreakerError::TimedOut(e)) if e.deadline == Instant::from_millis(50)));
    assert_eq!(br.stats().failures, 1);
    // An already-ready future wins over an expired deadline.
    let r = rt.block_on(br.call_timeout(Duration::ZERO, async { Ok::<_, ()>(5) }));
    assert_eq!(r.ok(), Some(5));
}

/// A dependency that blows up: its future panics when polled.
struct Panics;

impl Future for Panics {
    type Output = Result<(), ()>;
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        panic!("the dependency's client panicked")
    }
}

#[test]
fn a_wrapped_future_that_panics_leaves_no_permit_or_slot_behind() {
    let rt = ManualRuntime::new();
    let (br, bh, al) = (breaker(&rt), bulkhead(&rt, 1), adaptive(&rt));
    let caught =
        |f: &mut dyn FnMut()| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err();
    {
        let mut call = pin!(br.call(Panics));
        let mut run = pin!(bh.run(Panics));
        let mut adaptive_run = pin!(al.run(Panics));
        assert!(caught(&mut || {
            let _ = poll_once(call.as_mut());
        }));
        assert!(caught(&mut || {
            let _ = poll_once(run.as_mut());
        }));
        assert!(caught(&mut || {
            let _ = poll_once(adaptive_run.as_mut());
        }));
        // Past the abandon threshold: the panicked call is counted when its future goes.
        rt.advance(Duration::from_secs(2));
    }
    let s = br.stats();
    assert_eq!((s.admitted, s.failures, s.successes), (1, 1, 0));
    assert_eq!(bh.stats().in_flight, 0);
    assert_eq!(al.bulkhead().stats().in_flight, 0);
    // A cancelled (here: panicked) adaptive call feeds no sample.
    assert_eq!(al.stats().samples, 0);
}

#[test]
fn a_huge_timeout_saturates_and_a_ready_future_still_wins() {
    let rt = ManualRuntime::starting_at(Instant::from_secs(5));
    let mut t = pin!(timeout(&rt, Duration::MAX, std::future::pending::<()>()));
    assert!(poll_once(t.as_mut()).is_pending());
    // The deadline saturates at the end of the clock instead of overflowing.
    assert_eq!(t.deadline(), Some(Instant::from_secs(5) + Duration::MAX));
    rt.advance(Duration::from_secs(3600 * 24 * 365));
    assert!(poll_once(t.as_mut()).is_pending());
    let br = breaker(&rt);
    let r = rt.block_on(br.call_timeout(Duration::MAX, async { Ok::<_, ()>(9) }));
    assert_eq!(r.ok(), Some(9));
    assert_eq!(br.stats().successes, 1);
}
