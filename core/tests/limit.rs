//! Scenario tests for the connection limit: the `&mut` form and the shared form.

// Runs with `std` only: `SharedLimit::poll_acquire` (a `Waker` registration) needs `std`.
#![cfg(feature = "std")]

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Wake, Waker};

use keel_core::limit::{
    Limit, LimitConfig, LimitPermit, LimitStats, Overflow, DEFAULT_MAX, MAX_LIMIT,
};
use keel_core::sync::limit::{LimitGuard, SharedLimit};
use keel_core::{ConfigError, Instant, Rejected};

const T0: Instant = Instant::ZERO;

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("test values are non-zero")
}

fn limit(max: usize) -> Limit {
    Limit::new(
        LimitConfig::builder()
            .max(max)
            .build()
            .expect("valid config"),
    )
}

fn shared(max: usize) -> SharedLimit {
    SharedLimit::new(
        LimitConfig::builder()
            .max(max)
            .build()
            .expect("valid config"),
    )
}

/// A waker that counts how often it was woken.
#[derive(Default)]
struct CountingWaker {
    wakes: AtomicUsize,
}

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
    }
}

fn counting_waker() -> (Arc<CountingWaker>, Waker) {
    let counter = Arc::new(CountingWaker::default());
    let waker = Waker::from(Arc::clone(&counter));
    (counter, waker)
}

fn wakes(counter: &CountingWaker) -> usize {
    counter.wakes.load(Ordering::SeqCst)
}

fn poll(limit: &SharedLimit, waker: &Waker) -> Poll<LimitGuard> {
    limit.poll_acquire(&mut Context::from_waker(waker))
}

// ---------------------------------------------------------------- configuration

#[test]
fn defaults_are_1024_backpressure_and_no_farewell() {
    let config = LimitConfig::builder().build().expect("defaults are valid");
    assert_eq!(config.max(), 1024);
    assert_eq!(DEFAULT_MAX, 1024);
    assert_eq!(config.overflow(), Overflow::Backpressure);
    assert_eq!(config.farewell(), b"");
    assert_eq!(config, LimitConfig::default());
}

#[test]
fn zero_max_is_rejected() {
    assert_eq!(
        LimitConfig::builder().max(0).build(),
        Err(ConfigError::Zero { field: "max" })
    );
}

#[test]
fn max_above_max_limit_is_rejected() {
    assert_eq!(MAX_LIMIT, (1 << 31) - 1);
    assert!(LimitConfig::builder().max(MAX_LIMIT).build().is_ok());
    let err = LimitConfig::builder()
        .max(MAX_LIMIT + 1)
        .build()
        .unwrap_err();
    assert!(
        matches!(err, ConfigError::OutOfRange { field: "max", .. }),
        "{err:?}"
    );
    assert!(LimitConfig::builder().max(usize::MAX).build().is_err());
}

#[test]
fn a_farewell_without_shed_is_a_conflict() {
    let err = LimitConfig::builder()
        .farewell(b"busy\r\n")
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::Conflict {
                field: "farewell",
                other: "overflow",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("Overflow::Shed"), "{err}");
}

#[test]
fn shed_keeps_its_farewell() {
    let config = LimitConfig::builder()
        .max(8)
        .overflow(Overflow::Shed)
        .farewell(b"HTTP/1.1 503 Service Unavailable\r\n\r\n")
        .build()
        .expect("valid");
    assert_eq!(config.overflow(), Overflow::Shed);
    assert_eq!(
        config.farewell(),
        b"HTTP/1.1 503 Service Unavailable\r\n\r\n"
    );
    let shared = SharedLimit::new(config.clone());
    assert_eq!(shared.overflow(), Overflow::Shed);
    assert_eq!(shared.farewell(), config.farewell());
    assert_eq!(shared.config(), config);
}

// ---------------------------------------------------------------- the &mut form

#[test]
fn backpressure_holds_at_the_limit_and_resumes_when_a_permit_drops() {
    let mut l = limit(3);
    let mut held: Vec<LimitPermit> = (0..3).map(|_| l.try_acquire(T0).expect("room")).collect();
    for _ in 0..5 {
        let rejected = l.try_acquire(T0).expect_err("held at the limit");
        assert_eq!(
            rejected,
            Rejected {
                reason: Overflow::Backpressure,
                retry_at: None
            }
        );
    }
    assert_eq!(l.in_use(), 3);
    assert_eq!(l.available(), 0);
    assert_eq!(l.stats().waiting, 1);
    assert_eq!(l.stats().rejected, 5);

    l.on_release(T0, held.pop().expect("three held"));
    assert_eq!(l.stats().waiting, 1, "still waiting until it acquires");
    held.push(l.try_acquire(T0).expect("resumes once a slot is back"));
    assert_eq!(l.stats().waiting, 0);
    assert!(l.try_acquire(T0).is_err());
    assert_eq!(l.stats(), {
        let mut s: LimitStats = LimitStats::default();
        s.max = 3;
        s.in_use = 3;
        s.peak = 3;
        s.acquired = 4;
        s.released = 1;
        s.rejected = 6;
        s.waiting = 1;
        s.shed = 0;
        s.unmatched_releases = 0;
        s
    });
}

#[test]
fn shrinking_the_limit_lets_holders_finish_and_admits_again_below_the_new_max() {
    let mut l = limit(4);
    let mut held: Vec<LimitPermit> = (0..4).map(|_| l.try_acquire(T0).expect("room")).collect();
    l.set_max(nz(2));
    assert_eq!(l.max(), 2);
    assert_eq!(l.in_use(), 4, "holders keep their slots");
    assert_eq!(l.available(), 0);

    let mut release = |l: &mut Limit| l.on_release(T0, held.pop().expect("held"));
    release(&mut l); // 3 in use
    assert!(l.try_acquire(T0).is_err());
    release(&mut l); // 2 in use: not below 2
    assert!(l.try_acquire(T0).is_err());
    release(&mut l); // 1 in use
    let _again = l.try_acquire(T0).expect("admits again below the new max");
    assert!(l.try_acquire(T0).is_err());
    assert_eq!(l.in_use(), 2);
    assert_eq!(l.stats().peak, 4);
}

#[test]
fn growing_the_limit_admits_at_once() {
    let mut l = limit(1);
    let _a = l.try_acquire(T0).expect("room");
    assert!(l.try_acquire(T0).is_err());
    l.set_max(nz(3));
    let _b = l.try_acquire(T0).expect("room after growing");
    let _c = l.try_acquire(T0).expect("room after growing");
    assert!(l.try_acquire(T0).is_err());
    assert_eq!(l.config().max(), 3);
}

#[test]
fn set_max_clamps_to_max_limit() {
    let mut l = limit(1);
    l.set_max(NonZeroUsize::MAX);
    assert_eq!(l.max(), MAX_LIMIT);
    let s = shared(1);
    s.set_max(NonZeroUsize::MAX);
    assert_eq!(s.max(), MAX_LIMIT);
    assert_eq!(s.available(), MAX_LIMIT);
}

#[test]
fn peak_remembers_the_high_water_mark() {
    let mut l = limit(10);
    let held: Vec<LimitPermit> = (0..7).map(|_| l.try_acquire(T0).expect("room")).collect();
    let mut held = held.into_iter();
    for p in held.by_ref().take(6) {
        l.on_release(T0, p);
    }
    let _one = l.try_acquire(T0).expect("room");
    let s = l.stats();
    assert_eq!((s.in_use, s.peak), (2, 7));

    let sl = shared(10);
    let held: Vec<LimitGuard> = (0..7).map(|_| sl.try_acquire(T0).expect("room")).collect();
    drop(held);
    let _one = sl.try_acquire(T0).expect("room");
    let s = sl.stats();
    assert_eq!((s.in_use, s.peak, s.acquired, s.released), (1, 7, 8, 7));
}

#[test]
fn a_permit_of_another_limit_released_with_nothing_in_use_is_counted_and_ignored() {
    let mut other = limit(2);
    let stray = (
        other.try_acquire(T0).expect("room"),
        other.try_acquire(T0).expect("room"),
    );
    let mut l = limit(2);
    l.on_release(T0, stray.0);
    l.on_release(T0, stray.1);
    assert_eq!(l.in_use(), 0);
    let _a = l.try_acquire(T0).expect("room");
    let _b = l.try_acquire(T0).expect("room");
    assert!(
        l.try_acquire(T0).is_err(),
        "stray releases did not create extra room"
    );
    let s = l.stats();
    assert_eq!((s.unmatched_releases, s.released, s.in_use), (2, 0, 2));
}

#[test]
fn shed_mode_refuses_without_waiting_and_counts_sheds() {
    let config = LimitConfig::builder()
        .max(1)
        .overflow(Overflow::Shed)
        .build()
        .expect("valid");
    let mut l = Limit::new(config.clone());
    let _held = l.try_acquire(T0).expect("room");
    assert_eq!(
        l.try_acquire(T0).expect_err("full").reason,
        Overflow::Shed,
        "the rejection says to shed"
    );
    l.on_shed(T0);
    let s = l.stats();
    assert_eq!((s.rejected, s.shed, s.waiting), (1, 1, 0));

    let sl = SharedLimit::new(config);
    let _p = sl.try_acquire(T0).expect("room");
    // The shared form rejects in the same shape as the `&mut` one.
    assert_eq!(
        sl.try_acquire(T0).unwrap_err(),
        Rejected {
            reason: Overflow::Shed,
            retry_at: None
        },
        "the shared rejection says to shed, with no retry instant"
    );
    sl.on_shed(T0);
    sl.on_shed(T0);
    let s = sl.stats();
    assert_eq!((s.rejected, s.shed, s.waiting), (1, 2, 0));
}

// ---------------------------------------------------------------- the shared form

#[test]
fn shared_backpressure_holds_at_the_limit_and_resumes_when_a_permit_drops() {
    let l = shared(2);
    let a = l.try_acquire(T0).expect("room");
    let b = l.try_acquire(T0).expect("room");
    assert!(l.try_acquire(T0).is_err());

    let (counter, waker) = counting_waker();
    assert!(poll(&l, &waker).is_pending(), "held at the limit");
    assert_eq!(l.stats().waiting, 1);
    assert_eq!(wakes(&counter), 0);

    drop(a);
    assert_eq!(wakes(&counter), 1, "dropping a permit wakes the acceptor");
    assert_eq!(l.stats().waiting, 0);

    drop(b); // nobody registered any more: no second wake
    assert_eq!(wakes(&counter), 1);

    let Poll::Ready(p) = poll(&l, &waker) else {
        panic!("a slot is free")
    };
    let Poll::Ready(q) = poll(&l, &waker) else {
        panic!("a slot is free")
    };
    assert!(poll(&l, &waker).is_pending());
    drop((p, q));
    assert_eq!(wakes(&counter), 2);
    let s = l.stats();
    assert_eq!(
        (s.acquired, s.released, s.rejected, s.in_use, s.peak),
        (4, 4, 3, 0, 2)
    );
}

#[test]
fn a_waiter_that_acquires_clears_its_registration() {
    let l = shared(1);
    let p = l.try_acquire(T0).expect("room");
    let (counter, waker) = counting_waker();
    assert!(poll(&l, &waker).is_pending());
    // Room appears without a wake reaching the task (it is polled for another reason).
    l.set_max(nz(2));
    assert_eq!(wakes(&counter), 1, "growth woke the waiter");
    let Poll::Ready(q) = poll(&l, &waker) else {
        panic!("room after growth")
    };
    assert_eq!(l.stats().waiting, 0);
    drop(p);
    drop(q);
    assert_eq!(wakes(&counter), 1, "no stale registration left behind");
}

#[test]
fn shrinking_the_shared_limit_lets_holders_finish_and_admits_again_below_the_new_max() {
    let l = shared(3);
    let mut held: Vec<LimitGuard> = (0..3).map(|_| l.try_acquire(T0).expect("room")).collect();
    l.set_max(nz(1));
    assert_eq!((l.in_use(), l.max(), l.available()), (3, 1, 0));

    let (counter, waker) = counting_waker();
    assert!(poll(&l, &waker).is_pending());
    held.pop();
    assert_eq!(
        wakes(&counter),
        1,
        "each release wakes the waiter to re-check"
    );
    assert!(poll(&l, &waker).is_pending(), "2 in use, max 1");
    held.pop();
    assert!(poll(&l, &waker).is_pending(), "1 in use, max 1");
    held.pop();
    assert_eq!(wakes(&counter), 3);
    let Poll::Ready(p) = poll(&l, &waker) else {
        panic!("0 in use, max 1")
    };
    assert!(l.try_acquire(T0).is_err());
    drop(p);
    assert_eq!(l.stats().peak, 3);
}

#[test]
fn growing_the_shared_limit_wakes_the_waiter_and_shrinking_does_not() {
    let l = shared(2);
    let _a = l.try_acquire(T0).expect("room");
    let _b = l.try_acquire(T0).expect("room");
    let (counter, waker) = counting_waker();
    assert!(poll(&l, &waker).is_pending());

    l.set_max(nz(1));
    assert_eq!(wakes(&counter), 0, "shrinking makes no room");
    l.set_max(nz(2));
    assert_eq!(wakes(&counter), 0, "2 in use, max 2: still no room");
    l.set_max(nz(3));
    assert_eq!(wakes(&counter), 1, "growing past in_use wakes");
    assert!(matches!(poll(&l, &waker), Poll::Ready(_)));
}

#[test]
fn two_waiters_do_not_wake_each_other_while_the_limit_is_full() {
    let l = shared(1);
    let p = l.try_acquire(T0).expect("room");
    let (first, first_waker) = counting_waker();
    let (second, second_waker) = counting_waker();

    for _ in 0..3 {
        assert!(poll(&l, &first_waker).is_pending());
        assert!(poll(&l, &second_waker).is_pending());
    }
    assert_eq!(
        (wakes(&first), wakes(&second)),
        (0, 0),
        "no busy loop between waiters"
    );
    assert_eq!(l.stats().waiting, 2);

    drop(p);
    assert_eq!(
        (wakes(&first), wakes(&second)),
        (1, 1),
        "a release wakes every waiter"
    );
    assert_eq!(l.stats().waiting, 0);

    let Poll::Ready(q) = poll(&l, &second_waker) else {
        panic!("slot free")
    };
    assert!(
        poll(&l, &first_waker).is_pending(),
        "the loser registers again"
    );
    assert_eq!(l.stats().waiting, 1);
    drop(q);
    assert_eq!((wakes(&first), wakes(&second)), (2, 1));
    let Poll::Ready(_r) = poll(&l, &first_waker) else {
        panic!("slot free")
    };
    assert_eq!(l.stats().waiting, 0);
}

#[test]
fn growth_wakes_every_waiter_and_the_loser_waits_again() {
    let l = shared(2);
    let a = l.try_acquire(T0).expect("room");
    let b = l.try_acquire(T0).expect("room");
    let (first, first_waker) = counting_waker();
    let (second, second_waker) = counting_waker();
    assert!(poll(&l, &first_waker).is_pending());
    assert!(poll(&l, &second_waker).is_pending());
    l.set_max(nz(3));
    assert_eq!(
        (wakes(&first), wakes(&second)),
        (1, 1),
        "growth wakes every waiter"
    );
    let Poll::Ready(c) = poll(&l, &second_waker) else {
        panic!("room after growth")
    };
    assert!(poll(&l, &first_waker).is_pending(), "3 in use, max 3");
    assert_eq!(l.stats().waiting, 1);
    drop(a);
    assert_eq!((wakes(&first), wakes(&second)), (2, 1));
    let Poll::Ready(d) = poll(&l, &first_waker) else {
        panic!("a slot was released")
    };
    drop((b, c, d));
    assert_eq!(
        (wakes(&first), wakes(&second)),
        (2, 1),
        "nobody left registered"
    );
}

#[test]
fn re_polling_with_the_same_waker_registers_once() {
    let l = shared(1);
    let _p = l.try_acquire(T0).expect("room");
    let (counter, waker) = counting_waker();
    for _ in 0..4 {
        assert!(poll(&l, &waker).is_pending());
    }
    assert_eq!(
        wakes(&counter),
        0,
        "polling again with the same waker wakes nobody"
    );
    assert_eq!(l.stats().rejected, 1, "one wait counts one rejection");
}

#[test]
fn clones_share_one_state() {
    let a = shared(2);
    let b = a.clone();
    let _p = a.try_acquire(T0).expect("room");
    let _q = b.try_acquire(T0).expect("room");
    assert!(a.try_acquire(T0).is_err());
    assert_eq!(b.in_use(), 2);
    b.set_max(nz(5));
    assert_eq!(a.max(), 5);
}

#[test]
fn a_permit_moved_to_another_thread_releases_there() {
    fn assert_send_sync_static<T: Send + Sync + 'static>() {}
    assert_send_sync_static::<LimitGuard>();
    assert_send_sync_static::<SharedLimit>();

    let l = shared(1);
    let permit = l.try_acquire(T0).expect("room");
    let (counter, waker) = counting_waker();
    assert!(poll(&l, &waker).is_pending());

    let seen_in_use = std::thread::spawn(move || {
        let p = permit;
        drop(p);
    });
    seen_in_use.join().expect("the worker does not panic");
    assert_eq!(l.in_use(), 0);
    assert_eq!(
        wakes(&counter),
        1,
        "the release on the other thread woke the acceptor"
    );
    assert!(format!("{:?}", l.try_acquire(T0).expect("room")).contains("LimitGuard"));
}

#[test]
fn threads_racing_never_hold_more_than_the_limit() {
    const MAX: usize = 3;
    const THREADS: usize = 8;
    let l = shared(MAX);
    let holders = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(Barrier::new(THREADS));
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (l, holders, most, start) = (
                l.clone(),
                Arc::clone(&holders),
                Arc::clone(&most),
                Arc::clone(&start),
            );
            std::thread::spawn(move || {
                start.wait();
                let mut got = 0u64;
                for _ in 0..2_000 {
                    if let Ok(p) = l.try_acquire(T0) {
                        got += 1;
                        let now = holders.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        assert!(l.in_use() <= MAX);
                        holders.fetch_sub(1, Ordering::SeqCst);
                        drop(p);
                    }
                }
                got
            })
        })
        .collect();
    let total: u64 = workers
        .into_iter()
        .map(|w| w.join().expect("no panic"))
        .sum();
    assert!(most.load(Ordering::SeqCst) <= MAX);
    let s = l.stats();
    assert_eq!(s.in_use, 0);
    assert_eq!(s.acquired, total);
    assert_eq!(s.released, total);
    assert_eq!(s.acquired + s.rejected, (THREADS * 2_000) as u64);
    assert!(s.peak <= MAX && s.peak >= 1);
}

#[test]
fn debug_output_names_the_state() {
    let l = shared(4);
    let _p = l.try_acquire(T0).expect("room");
    let text = format!("{l:?}");
    assert!(
        text.contains("max: 4") && text.contains("in_use: 1"),
        "{text}"
    );
}

#[test]
fn shared_repolls_of_one_wait_count_one_rejection() {
    let limit = shared(1);
    let held = limit.try_acquire(T0).expect("a free slot");
    let (counter, waker) = counting_waker();
    for _ in 0..5 {
        assert!(poll(&limit, &waker).is_pending());
    }
    assert_eq!(
        limit.stats().rejected,
        1,
        "one wait, however often it is polled"
    );
    drop(held);
    assert_eq!(wakes(&counter), 1);
    let _p = match poll(&limit, &waker) {
        Poll::Ready(p) => p,
        Poll::Pending => panic!("the released slot is free"),
    };
    // A second task's wait is a second rejection.
    let (_c2, other) = counting_waker();
    assert!(poll(&limit, &other).is_pending());
    assert!(poll(&limit, &other).is_pending());
    assert_eq!(limit.stats().rejected, 2);
}

/// A borrowed permit (`try_acquire_ref`) counts, limits and wakes exactly as an owned one, and
/// the derived `released` follows every drop and never goes back.
#[test]
fn borrowed_permits_count_limit_and_wake_like_owned_ones() {
    let l = shared(2);
    let (counter, waker) = counting_waker();
    let a = l.try_acquire_ref(Instant::ZERO).expect("room");
    let b = l.try_acquire(Instant::ZERO).expect("room");
    let full = l.try_acquire_ref(Instant::ZERO).unwrap_err();
    assert_eq!((full.reason, full.retry_at), (Overflow::Backpressure, None));
    assert!(poll(&l, &waker).is_pending());
    let s = l.stats();
    assert_eq!((s.in_use, s.acquired, s.released, s.rejected), (2, 2, 0, 2));
    drop(a); // a borrowed release wakes the waiting acceptor
    assert_eq!(wakes(&counter), 1);
    assert_eq!(l.stats().released, 1);
    let c = match poll(&l, &waker) {
        Poll::Ready(c) => c,
        Poll::Pending => panic!("the slot freed by the borrowed permit is free"),
    };
    let s = l.stats();
    assert_eq!((s.in_use, s.acquired, s.released, s.waiting), (2, 3, 1, 0));
    drop((b, c));
    for expected in 3..6 {
        drop(l.try_acquire_ref(Instant::ZERO).expect("room"));
        let s = l.stats();
        assert_eq!(
            (s.in_use, s.acquired, s.released),
            (0, expected + 1, expected + 1)
        );
    }
    assert!(format!("{:?}", l.try_acquire_ref(Instant::ZERO).expect("room")).contains("in_use: 1"));
}

/// A lost compare-and-swap is retried, never taken for a full limit: with one permit of room
/// per thread, every try of every thread is admitted however the threads' CASes collide (the
/// tight loop makes them collide thousands of times on two cores).
#[test]
fn racing_threads_with_room_each_are_never_refused() {
    const THREADS: usize = 2;
    const TRIES: u64 = 100_000;
    let l = shared(THREADS);
    let start = Arc::new(Barrier::new(THREADS));
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (l, start) = (l.clone(), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                (0..TRIES)
                    .filter(|_| l.try_acquire_ref(T0).is_err())
                    .count()
            })
        })
        .collect();
    let refused: usize = workers
        .into_iter()
        .map(|w| w.join().expect("no panic"))
        .sum();
    assert_eq!(refused, 0, "a try with room was refused");
    let s = l.stats();
    assert_eq!((s.in_use, s.rejected), (0, 0));
    assert_eq!(s.acquired, TRIES * THREADS as u64);
}
