//! loom models of the rate waiting queue (`keel_core::sync::rate_wait`): a slot handed on by
//! a cancellation or an admission always wakes the waiter that gets it (no lost wake-up),
//! the lock-free fast path and the queue never admit more than the GCRA, and nothing is
//! spent by a cancelled wait.
//!
//! `RUSTFLAGS="--cfg keel_loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p keel-core --features std --test loom_rate_wait`
#![cfg(keel_loom)]

use core::future::poll_fn;
use core::num::NonZeroU32;
use core::task::{Context, Poll, Waker};

use keel_core::rate::Quota;
use keel_core::rate::RateLimited;
use keel_core::sync::gcra::SharedRateLimiter;
use keel_core::sync::rate_wait::{Acquire, RateWaiter, RateWaiters};
use keel_core::Instant;
use keel_core::Rejected;

const T0: Instant = Instant::from_secs(10);

#[path = "support/loom_block_on.rs"]
mod loom_block_on;
use loom_block_on::block_on;

/// Waits as the driver does: polls at the waiter's slot when it has one (its timer fired),
/// and otherwise parks until the queue wakes it.
fn wait_for_turn(mut w: RateWaiter) -> Result<(), Rejected<RateLimited>> {
    block_on(poll_fn(move |cx| loop {
        let now = w.slot().unwrap_or(T0);
        match w.poll(cx, now) {
            Poll::Ready(r) => return Poll::Ready(r),
            Poll::Pending if w.slot().is_some() => continue,
            Poll::Pending => return Poll::Pending,
        }
    }))
}

/// 1 a second, burst 1, spent at `T0`.
fn spent() -> RateWaiters {
    let quota = Quota::per_second(NonZeroU32::MIN).unwrap();
    let limiter = std::sync::Arc::new(SharedRateLimiter::counted(quota, T0));
    limiter.try_acquire(T0).unwrap();
    RateWaiters::new(limiter)
}

fn wait(a: Acquire) -> RateWaiter {
    match a {
        Acquire::Wait(w) => w,
        Acquire::Ready(r) => panic!("expected to wait, got {r:?}"),
    }
}

/// A (slot 1 s) and B (2 s) hold slots, C has none. A is dropped on another thread while C
/// waits: C gets a slot and is woken, whatever the interleaving; nothing is spent.
#[test]
fn loom_a_cancelled_slot_wakes_the_next_waiter() {
    loom::model(|| {
        let q = spent();
        let a = wait(q.acquire(T0, 1));
        let b = wait(q.acquire(T0, 1));
        let c = wait(q.acquire(T0, 1));
        assert_eq!(c.slot(), None);
        let canceller = loom::thread::spawn(move || drop(a));
        wait_for_turn(c).unwrap();
        canceller.join().unwrap();
        drop(b);
        // A's and B's slots were handed on or are spare; C took 1 s or 2 s: at 3 s the
        // limiter is free again (nothing was spent beyond C's admission).
        assert!(q.limiter().try_acquire(Instant::from_secs(13)).is_ok());
    });
}

/// A is admitted on one thread (its slot came) while C, without a slot, waits on another:
/// the admission reserves for C and wakes it.
#[test]
fn loom_an_admission_wakes_the_next_waiter() {
    loom::model(|| {
        let q = spent();
        let mut a = wait(q.acquire(T0, 1));
        let b = wait(q.acquire(T0, 1));
        let c = wait(q.acquire(T0, 1));
        let admit = loom::thread::spawn(move || {
            let waker = Waker::noop();
            let at = a.slot().unwrap();
            assert_eq!(
                a.poll(&mut Context::from_waker(waker), at),
                Poll::Ready(Ok(()))
            );
        });
        wait_for_turn(c).unwrap();
        admit.join().unwrap();
        drop(b);
        assert_eq!(q.stats().admitted, 2);
    });
}

/// Another thread and the main one ask for the one free token at once: exactly one is admitted
/// now (by the fast path or the queue), the others get later slots, one per second.
#[test]
fn loom_the_fast_path_and_the_queue_admit_one_per_slot() {
    loom::model(|| {
        let quota = Quota::per_second(NonZeroU32::MIN).unwrap();
        let limiter = std::sync::Arc::new(SharedRateLimiter::counted(quota, T0));
        let q = RateWaiters::new(limiter);
        let slot_of = |a: Acquire| match a {
            Acquire::Ready(r) => {
                r.unwrap();
                T0
            }
            Acquire::Wait(w) => {
                let at = w.slot().expect("the first two waiters get slots at once");
                // Keep the slot: forget the waiter's cancel by admitting it.
                let mut w = w;
                assert_eq!(
                    w.poll(&mut Context::from_waker(Waker::noop()), at),
                    Poll::Ready(Ok(()))
                );
                at
            }
        };
        let other = {
            let q = q.clone();
            loom::thread::spawn(move || {
                let a = q.acquire(T0, 1);
                match a {
                    Acquire::Ready(r) => {
                        r.unwrap();
                        T0
                    }
                    Acquire::Wait(mut w) => {
                        let at = w.slot().expect("a slot");
                        assert_eq!(
                            w.poll(&mut Context::from_waker(Waker::noop()), at),
                            Poll::Ready(Ok(()))
                        );
                        at
                    }
                }
            })
        };
        let mine = slot_of(q.acquire(T0, 1));
        let theirs = other.join().unwrap();
        let mut slots = [mine, theirs];
        slots.sort();
        assert_eq!(slots, [T0, Instant::from_secs(11)]);
    });
}

/// A reservation given back while another thread checks at the reservation's instant: the
/// check is admitted only if the give-back happened first (it then uses the freed slot), and
/// never alongside a reservation that stands. With a quota change after the give-back on the
/// same thread, the check still decides on the state and quota it commits under.
#[test]
fn loom_a_given_back_reservation_and_a_racing_check_admit_at_most_one() {
    loom::model(|| {
        let quota = Quota::per_second(NonZeroU32::MIN).unwrap();
        let limiter = std::sync::Arc::new(SharedRateLimiter::counted(quota, T0));
        limiter.try_acquire(T0).unwrap();
        let reservation = limiter.reserve_n(T0, 1, Instant::MAX).unwrap();
        let at = reservation.at();
        assert_eq!(at, Instant::from_secs(11));
        let checker = {
            let limiter = std::sync::Arc::clone(&limiter);
            loom::thread::spawn(move || limiter.try_acquire(at).is_ok())
        };
        let given = limiter.cancel_reservation(reservation).is_ok();
        // A quota change right after (burst 2): it must not let the check commit on a state
        // it read under the old quota.
        let two = quota.with_burst(NonZeroU32::new(2).unwrap()).unwrap();
        limiter.set_quota(at, two);
        let checked = checker.join().unwrap();
        assert!(
            given || !checked,
            "a check admitted beside a reservation that stands"
        );
        // At `at`: the first check, at most one of (reservation, check), and nothing else.
        assert!(limiter.stats().allowed <= 2);
    });
}
