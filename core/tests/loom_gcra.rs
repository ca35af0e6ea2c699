//! loom models of the shared GCRA limiter: every interleaving of concurrent checks (and of a
//! quota change) on the real code, through `sync::shim`.
//!
//! `RUSTFLAGS="--cfg keel_loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p keel-core --features std --test loom_gcra`
#![cfg(keel_loom)]

use core::num::NonZeroU32;

use keel_core::rate::{Quota, RateLimited};
use keel_core::sync::gcra::SharedRateLimiter;
use keel_core::Instant;
use keel_core::Rejected;
use loom::sync::Arc;
use loom::thread;

fn burst2() -> Quota {
    Quota::per_second(NonZeroU32::new(2).unwrap()).unwrap()
}

/// Three threads check once each at one instant; returns how many were admitted.
fn admitted_by_three_threads(l: &Arc<SharedRateLimiter>) -> usize {
    let now = Instant::from_millis(1);
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let l = l.clone();
            thread::spawn(move || l.try_acquire(now).is_ok())
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|ok| *ok)
        .count()
}

#[test]
fn loom_three_threads_at_one_instant_admit_at_most_burst() {
    loom::model(|| {
        let l = Arc::new(SharedRateLimiter::counted(burst2(), Instant::ZERO));
        // Exactly 2: no over-admission and no spurious rejection.
        assert_eq!(admitted_by_three_threads(&l), 2);
        assert_eq!(l.stats().allowed, 2);
        assert_eq!(l.stats().limited, 1);
    });
}

#[test]
fn loom_bare_form_admits_exactly_burst() {
    loom::model(|| {
        let l = Arc::new(SharedRateLimiter::new(burst2(), Instant::ZERO));
        assert_eq!(admitted_by_three_threads(&l), 2);
    });
}

#[test]
fn loom_check_n_and_check_share_the_burst_exactly() {
    loom::model(|| {
        let l = Arc::new(SharedRateLimiter::new(burst2(), Instant::ZERO));
        let now = Instant::from_millis(1);
        let a = {
            let l = l.clone();
            thread::spawn(move || l.try_acquire_n(now, 2).is_ok())
        };
        let b = {
            let l = l.clone();
            thread::spawn(move || l.try_acquire(now).is_ok())
        };
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        // Either the batch of 2 or the single request wins, never both.
        assert!(a ^ b, "batch {a}, single {b}");
    });
}

#[test]
fn loom_quota_change_during_checks_never_over_admits() {
    loom::model(|| {
        // Burst 2 lowered to burst 1 at the same instant: whatever the interleaving, at most 2
        // checks pass in total, and at most 1 after the change completed.
        let l = Arc::new(SharedRateLimiter::new(burst2(), Instant::ZERO));
        let now = Instant::from_millis(1);
        let checker = {
            let l = l.clone();
            thread::spawn(move || (0..2).filter(|_| l.try_acquire(now).is_ok()).count())
        };
        let changer = {
            let l = l.clone();
            thread::spawn(move || {
                l.set_quota(now, Quota::per_second(NonZeroU32::new(1).unwrap()).unwrap());
            })
        };
        let before = checker.join().unwrap();
        changer.join().unwrap();
        assert!(before <= 2);
        let after = usize::from(l.try_acquire(now).is_ok());
        assert!(before + after <= 2, "{before} + {after}");
        assert_eq!(
            l.try_acquire_n(now, 2),
            Err(Rejected {
                reason: RateLimited::InsufficientCapacity { burst: 1 },
                retry_at: None
            })
        );
    });
}

#[test]
fn loom_concurrent_checks_after_a_clock_fault_resynchronise_once() {
    loom::model(|| {
        // One bogus far-future instant left the TAT an hour ahead; three threads then check at
        // the real time. Exactly one resynchronises (one fault counted), and the fresh limiter
        // admits exactly its burst: no thread is admitted twice over, none wrongly rejected.
        let l = Arc::new(SharedRateLimiter::counted(burst2(), Instant::ZERO));
        assert!(l.try_acquire(Instant::from_secs(3_600)).is_ok());
        assert_eq!(admitted_by_three_threads(&l), 2);
        assert_eq!(l.stats().clock_faults, 1);
        assert_eq!(l.stats().allowed, 3);
        assert_eq!(l.stats().limited, 1);
    });
}

#[test]
fn loom_a_clock_fault_during_a_quota_change_never_over_admits() {
    loom::model(|| {
        // The TAT is an hour ahead; a check at the real time races a quota change at the real
        // time (burst 2 -> 1). Both resynchronise the same fault; it is counted once, and at
        // most 2 checks pass at the real time in all.
        let l = Arc::new(SharedRateLimiter::counted(burst2(), Instant::ZERO));
        assert!(l.try_acquire(Instant::from_secs(3_600)).is_ok());
        let now = Instant::from_millis(1);
        let checker = {
            let l = l.clone();
            thread::spawn(move || usize::from(l.try_acquire(now).is_ok()))
        };
        let changer = {
            let l = l.clone();
            thread::spawn(move || {
                l.set_quota(now, Quota::per_second(NonZeroU32::new(1).unwrap()).unwrap());
            })
        };
        let before = checker.join().unwrap();
        changer.join().unwrap();
        assert_eq!(before, 1);
        let after = usize::from(l.try_acquire(now).is_ok());
        assert!(before + after <= 2, "{before} + {after}");
        assert_eq!(l.stats().clock_faults, 1);
    });
}
