//! loom models of the shared limit: permits never exceed the limit, and no wake-up is lost.
//!
//! ```text
//! RUSTFLAGS="--cfg keel_loom" LOOM_MAX_PREEMPTIONS=2 \
//!     cargo test --release -p keel-core --features std --test loom_limit
//! ```
#![cfg(keel_loom)]

use std::num::NonZeroUsize;
use std::task::{Context, Poll, Wake, Waker};

use keel_core::limit::LimitConfig;
use keel_core::sync::limit::{LimitGuard, SharedLimit};
use keel_core::Instant;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::{Arc, Notify};
use loom::thread;

fn shared(max: usize) -> SharedLimit {
    SharedLimit::new(
        LimitConfig::builder()
            .max(max)
            .build()
            .expect("valid config"),
    )
}

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("non-zero")
}

/// A waker that unparks one loom thread (loom's own `block_on` needs its `futures` feature).
struct Unpark(Notify);

impl Wake for Unpark {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.notify();
    }
}

/// Polls `poll_acquire` until it is ready, parking in between. A lost wake-up leaves the thread
/// parked for ever, which loom reports as a deadlock.
fn acquire(limit: &SharedLimit) -> LimitGuard {
    let unpark = std::sync::Arc::new(Unpark(Notify::new()));
    let waker = Waker::from(std::sync::Arc::clone(&unpark));
    loop {
        if let Poll::Ready(p) = limit.poll_acquire(&mut Context::from_waker(&waker)) {
            return p;
        }
        unpark.0.wait();
    }
}

/// Each thread tries once; the holders counted by the model never exceed `max`.
fn race(max: usize, threads: usize) {
    loom::model(move || {
        let limit = shared(max);
        let holders = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (limit, holders) = (limit.clone(), Arc::clone(&holders));
                thread::spawn(move || {
                    if let Ok(p) = limit.try_acquire(Instant::ZERO) {
                        let now = holders.fetch_add(1, Ordering::SeqCst) + 1;
                        assert!(now <= max, "{now} holders with max {max}");
                        assert!(limit.in_use() <= max);
                        holders.fetch_sub(1, Ordering::SeqCst);
                        drop(p);
                        true
                    } else {
                        false
                    }
                })
            })
            .collect();
        let got = handles
            .into_iter()
            .filter(|_| true)
            .map(|h| h.join().expect("no panic"))
            .filter(|&g| g)
            .count();
        if threads <= max {
            // Room for everyone: a lost CAS is retried, never taken for a full limit.
            assert_eq!(got, threads, "a try with room was refused");
        }
        let s = limit.stats();
        assert_eq!(s.in_use, 0);
        assert_eq!(s.acquired, got as u64);
        assert_eq!(s.released, got as u64);
        assert_eq!(s.acquired + s.rejected, threads as u64);
        assert!(s.peak >= 1 && s.peak <= max);
    });
}

#[test]
fn loom_two_threads_never_hold_more_than_max_1() {
    race(1, 2);
}

#[test]
fn loom_two_threads_with_room_are_both_admitted() {
    race(2, 2);
}

#[test]
fn loom_three_threads_never_hold_more_than_max_1() {
    race(1, 3);
}

#[test]
fn loom_three_threads_never_hold_more_than_max_2() {
    race(2, 3);
}

#[test]
fn loom_an_acquire_after_a_shrink_sees_the_new_max() {
    loom::model(|| {
        let limit = shared(2);
        let held = limit.try_acquire(Instant::ZERO).expect("room");
        let shrunk = Arc::new(AtomicBool::new(false));

        let shrinker = {
            let (limit, shrunk) = (limit.clone(), Arc::clone(&shrunk));
            thread::spawn(move || {
                limit.set_max(nz(1));
                shrunk.store(true, Ordering::SeqCst);
            })
        };
        let acquirer = {
            let (limit, shrunk) = (limit.clone(), Arc::clone(&shrunk));
            thread::spawn(move || {
                let after_shrink = shrunk.load(Ordering::SeqCst);
                let got = limit.try_acquire(Instant::ZERO);
                assert!(
                    !(after_shrink && got.is_ok()),
                    "admitted a second permit after the limit shrank to 1"
                );
                got.is_ok()
            })
        };
        shrinker.join().expect("no panic");
        let got = acquirer.join().expect("no panic");
        drop(held);
        let s = limit.stats();
        assert_eq!((s.max, s.in_use), (1, 0));
        assert_eq!(s.acquired, 1 + u64::from(got));
    });
}

#[test]
fn loom_no_lost_wakeup_when_the_last_permit_drops() {
    loom::model(|| {
        let limit = shared(1);
        let p = limit.try_acquire(Instant::ZERO).expect("room");
        let releaser = thread::spawn(move || drop(p));
        // If the release slipped between the check and the registration, block_on would
        // never be woken and loom would report a deadlock.
        let q = acquire(&limit);
        assert_eq!(limit.in_use(), 1);
        drop(q);
        releaser.join().expect("no panic");
        let s = limit.stats();
        assert_eq!((s.in_use, s.acquired, s.released, s.waiting), (0, 2, 2, 0));
    });
}

#[test]
fn loom_growing_the_limit_wakes_the_waiter() {
    loom::model(|| {
        let limit = shared(1);
        let held = limit.try_acquire(Instant::ZERO).expect("room");
        let grower = {
            let limit = limit.clone();
            thread::spawn(move || limit.set_max(nz(2)))
        };
        let q = acquire(&limit);
        assert_eq!(limit.in_use(), 2);
        grower.join().expect("no panic");
        drop((held, q));
        assert_eq!(limit.stats().waiting, 0);
    });
}

#[test]
fn loom_a_displaced_waiter_is_never_stranded() {
    loom::model(|| {
        let limit = shared(1);
        let p = limit.try_acquire(Instant::ZERO).expect("room");
        let other = {
            let limit = limit.clone();
            thread::spawn(move || drop(acquire(&limit)))
        };
        let releaser = thread::spawn(move || drop(p));
        drop(acquire(&limit));
        other.join().expect("no panic");
        releaser.join().expect("no panic");
        let s = limit.stats();
        assert_eq!((s.in_use, s.acquired, s.released), (0, 3, 3));
    });
}

/// Releases are derived in `stats()` (`acquired - in_use`), not counted: a snapshot taken while
/// borrowed permits come and go must never report more releases than were made, never fewer
/// than an earlier snapshot, and never more than `acquired`.
#[test]
fn loom_derived_releases_never_run_ahead_or_back() {
    loom::model(|| {
        let limit = shared(1);
        let started = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let (limit, started) = (limit.clone(), Arc::clone(&started));
                thread::spawn(move || {
                    if let Ok(slot) = limit.try_acquire_ref(Instant::ZERO) {
                        // Counted before the release: an upper bound of the releases made.
                        started.fetch_add(1, Ordering::SeqCst);
                        drop(slot);
                    }
                })
            })
            .collect();
        let first = limit.stats();
        let upper = started.load(Ordering::SeqCst) as u64;
        assert!(
            first.released <= upper,
            "{} releases reported, at most {upper} made",
            first.released
        );
        assert!(first.released <= first.acquired);
        let second = limit.stats();
        assert!(
            second.released >= first.released,
            "went back: {first:?} -> {second:?}"
        );
        for w in workers {
            w.join().expect("no panic");
        }
        let last = limit.stats();
        assert_eq!(last.in_use, 0);
        assert_eq!(last.released, last.acquired);
        assert_eq!(last.released, started.load(Ordering::SeqCst) as u64);
    });
}
