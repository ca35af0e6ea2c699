//! Waiting on a rate limiter, on a simulated runtime: FIFO, no herd (the work per admission
//! does not grow with the number of waiters), no capacity lost to a coarse timer, and a
//! cancelled wait spends nothing.
#![cfg(feature = "futures")]

use core::num::NonZeroU32;
use core::task::{Context, Poll, Waker};
use core::time::Duration;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::Wake;

use keel_core::driver::rate::RateLimiter;
use keel_core::driver::Spawn as _;
use keel_core::rate::Quota;
use keel_core::Instant;
use keel_testkit::ManualRuntime;

/// What a run of waiters did.
#[derive(Debug)]
struct Run {
    /// Task polls in all.
    polls: u64,
    /// Task ids in the order they were admitted, with the instant.
    admitted: Vec<(usize, Instant)>,
    /// The limiter's decisions (admissions + rejections): each is one check or reservation.
    decisions: u64,
}

/// `waiters` tasks each `until_ready()` once on a spent limiter (burst 1, 1,000/s), polled in
/// order at the start, on keel-testkit's manual runtime with timers that fire `late` after
/// their deadline rounded up to the next millisecond (a coarse timer wheel, as tokio's); runs
/// the tasks, then moves the clock to the next timer, until every waiter is admitted or
/// `max_polls` polls are spent.
fn run(waiters: usize, late: Duration, max_polls: u64) -> Run {
    let rt = ManualRuntime::starting_at(Instant::from_secs(1))
        .with_timer_granularity(Duration::from_millis(1))
        .with_timer_lateness(late);
    let quota = Quota::per_second(NonZeroU32::new(1_000).unwrap())
        .unwrap()
        .with_burst(NonZeroU32::MIN)
        .unwrap();
    let limiter = RateLimiter::with_runtime(quota, rt.clone());
    limiter.check().expect("the burst of 1 is free; spend it");
    let admitted = Arc::new(Mutex::new(Vec::new()));
    for id in 0..waiters {
        let limiter = limiter.clone();
        let admitted = Arc::clone(&admitted);
        let clock = rt.clone();
        drop(rt.spawn(async move {
            limiter.until_ready().await.expect("admitted");
            admitted.lock().unwrap().push((id, clock.now()));
        }));
    }
    let mut polls = 0u64;
    while rt.tasks() > 0 && polls < max_polls {
        polls += rt.run_until_idle();
        match rt.next_timer() {
            Some(at) => rt.advance_to(at),
            None => break,
        }
    }
    let stats = limiter.stats();
    let admitted = admitted.lock().unwrap().clone();
    Run {
        polls,
        admitted,
        decisions: stats.allowed + stats.limited,
    }
}

/// Polls and limiter decisions per admission stay a small constant from 100 to 10,000
/// waiters: an admission wakes only the waiter whose slot is next. (The herd loop woke every
/// waiter at each `retry_at`: N polls and N checks per admission; this test stops it after
/// 50 polls per waiter and fails.)
#[test]
fn work_per_admission_does_not_grow_with_the_number_of_waiters() {
    let mut per_admission = vec![];
    for waiters in [100, 1_000, 10_000] {
        let r = run(waiters, Duration::ZERO, 50 * waiters as u64);
        assert_eq!(r.admitted.len(), waiters, "{waiters} waiters: all admitted");
        let n = waiters as f64;
        let polls = r.polls as f64 / n;
        let decisions = r.decisions as f64 / n;
        eprintln!(
            "{waiters} waiters: {polls:.3} polls, {decisions:.3} limiter decisions per admission"
        );
        per_admission.push((waiters, polls, decisions));
        assert!(
            polls <= 4.0 && decisions <= 3.0,
            "{waiters} waiters: {polls:.2} polls and {decisions:.2} limiter decisions per admission"
        );
    }
    let (small, large) = (per_admission[0], per_admission[2]);
    assert!(
        large.1 <= small.1 + 0.5 && large.2 <= small.2 + 0.5,
        "work per admission grew with the waiters: {per_admission:?}"
    );
}

/// 1,000 waiters at burst 1 and 1,000/s on a timer that rounds up to the millisecond and then
/// fires 0.9 ms late: the slots were reserved in advance, so the late wake-ups lose nothing
/// (the herd loop lost the lateness on every admission: about half the quota). And the
/// waiters are admitted in the order they queued, one per slot.
#[test]
fn a_late_timer_loses_no_capacity_and_waiters_are_served_in_order() {
    let r = run(1_000, Duration::from_micros(900), 50_000);
    assert_eq!(r.admitted.len(), 1_000);
    let start = Instant::from_secs(1);
    let by_one_second = r
        .admitted
        .iter()
        .filter(|(_, at)| *at <= start + Duration::from_millis(1_000))
        .count();
    assert!(
        by_one_second >= 950,
        "{by_one_second} of the 1,000 slots in the first second were used"
    );
    let order: Vec<usize> = r.admitted.iter().map(|(id, _)| *id).collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "not FIFO: {:?}",
        &order[..20.min(order.len())]
    );
    // No waiter before its slot: waiter i's slot is i + 1 ms after the start.
    for (i, (_, at)) in r.admitted.iter().enumerate() {
        assert!(
            *at >= start + Duration::from_millis(i as u64 + 1),
            "waiter {i} early at {at:?}"
        );
    }
}

mod queue {
    //! The queue itself ([`RateWaiters`]), polled by hand at chosen instants.
    use super::*;
    use keel_core::rate::RateLimited;
    use keel_core::sync::gcra::SharedRateLimiter;
    use keel_core::sync::rate_wait::{Acquire, RateWaiter, RateWaiters};
    use keel_core::Rejected;
    use std::sync::atomic::AtomicUsize;

    const T0: Instant = Instant::from_secs(100);

    fn s(secs: f64) -> Instant {
        T0 + Duration::from_secs_f64(secs)
    }

    /// `per_second` requests a second with a burst of `burst`, spent at `T0`.
    fn spent(per_second: u32, burst: u32) -> RateWaiters {
        let quota = Quota::per_second(NonZeroU32::new(per_second).unwrap())
            .unwrap()
            .with_burst(NonZeroU32::new(burst).unwrap())
            .unwrap();
        let limiter = Arc::new(SharedRateLimiter::counted(quota, T0));
        limiter.try_acquire_n(T0, burst).expect("the burst is free");
        RateWaiters::new(limiter)
    }

    fn wait(a: Acquire) -> RateWaiter {
        match a {
            Acquire::Wait(w) => w,
            Acquire::Ready(r) => panic!("expected to wait, got {r:?}"),
        }
    }

    #[derive(Default)]
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count::default());
        (Arc::clone(&c), Waker::from(c))
    }

    fn poll(
        w: &mut RateWaiter,
        waker: &Waker,
        now: Instant,
    ) -> Poll<Result<(), Rejected<RateLimited>>> {
        w.poll(&mut Context::from_waker(waker), now)
    }

    #[test]
    fn a_free_token_is_a_plain_check_and_reserves_nothing() {
        let q = spent(1, 1);
        assert!(matches!(q.acquire(s(1.0), 1), Acquire::Ready(Ok(()))));
        assert!(matches!(q.acquire(s(2.0), 0), Acquire::Ready(Ok(()))));
        let stats = q.stats();
        assert_eq!((stats.reserved, stats.waiting, stats.wakes), (0, 0, 0));
    }

    #[test]
    fn a_batch_larger_than_the_burst_fails_at_once() {
        let q = spent(1, 2);
        assert!(matches!(
            q.acquire(T0, 3),
            Acquire::Ready(Err(Rejected {
                reason: RateLimited::InsufficientCapacity { burst: 2 },
                retry_at: None
            }))
        ));
        let _a = wait(q.acquire(T0, 1));
        assert!(matches!(
            q.acquire(T0, 3),
            Acquire::Ready(Err(Rejected {
                reason: RateLimited::InsufficientCapacity { burst: 2 },
                retry_at: None
            }))
        ));
    }

    /// A (slot at 1 s) and B (2 s) hold slots, C waits without one. A gives up: B moves up to
    /// 1 s, C gets 2 s and is woken. Nothing is lost: at 3 s the limiter is free again.
    #[test]
    fn a_cancelled_head_hands_its_slot_down_the_line() {
        let q = spent(1, 1);
        let (wakes_b, waker_b) = counting();
        let (wakes_c, waker_c) = counting();
        let a = wait(q.acquire(T0, 1));
        let mut b = wait(q.acquire(T0, 1));
        let mut c = wait(q.acquire(T0, 1));
        assert_eq!(
            (a.slot(), b.slot(), c.slot()),
            (Some(s(1.0)), Some(s(2.0)), None)
        );
        assert!(poll(&mut b, &waker_b, T0).is_pending());
        assert!(poll(&mut c, &waker_c, T0).is_pending());
        drop(a);
        assert_eq!(
            wakes_b.0.load(Ordering::SeqCst),
            1,
            "B is woken to its earlier slot"
        );
        assert_eq!(
            wakes_c.0.load(Ordering::SeqCst),
            1,
            "C is woken: it has a slot now"
        );
        assert!(poll(&mut b, &waker_b, s(0.5)).is_pending());
        assert!(poll(&mut c, &waker_c, s(0.5)).is_pending());
        assert_eq!((b.slot(), c.slot()), (Some(s(1.0)), Some(s(2.0))));
        assert_eq!(poll(&mut b, &waker_b, s(1.0)), Poll::Ready(Ok(())));
        assert!(poll(&mut c, &waker_c, s(1.5)).is_pending());
        assert_eq!(poll(&mut c, &waker_c, s(2.0)), Poll::Ready(Ok(())));
        assert_eq!(
            poll(&mut c, &waker_c, s(9.0)),
            Poll::Ready(Ok(())),
            "polled again: same answer"
        );
        let limiter = q.limiter();
        assert!(limiter.try_acquire(s(2.5)).is_err());
        assert!(
            limiter.try_acquire(s(3.0)).is_ok(),
            "the cancelled slot was not spent"
        );
        let stats = q.stats();
        assert_eq!(
            (
                stats.admitted,
                stats.cancelled,
                stats.handed_on,
                stats.lapsed
            ),
            (2, 1, 1, 0)
        );
    }

    #[test]
    fn a_cancelled_waiter_without_a_slot_changes_nothing() {
        let q = spent(1, 1);
        let a = wait(q.acquire(T0, 1));
        let b = wait(q.acquire(T0, 1));
        let c = wait(q.acquire(T0, 1));
        let d = wait(q.acquire(T0, 1));
        drop(c);
        let e = wait(q.acquire(T0, 1));
        assert_eq!(
            (a.slot(), b.slot(), d.slot(), e.slot()),
            (Some(s(1.0)), Some(s(2.0)), None, None)
        );
        assert_eq!(q.stats().reserved, 2);
        assert_eq!(q.stats().waiting, 4);
    }

    /// Nobody waits behind a cancelled slot and nothing was admitted since: it is given back
    /// to the limiter, so a direct check can use it (the cancelled wait spent nothing).
    #[test]
    fn a_slot_nobody_takes_is_given_back_to_the_limiter() {
        let q = spent(1, 1);
        let allowed = q.limiter().stats().allowed;
        drop(wait(q.acquire(T0, 1)));
        assert_eq!(q.stats().given_back, 1);
        assert_eq!(
            q.limiter().stats().allowed,
            allowed,
            "the reservation was undone"
        );
        assert!(q.limiter().try_acquire(s(0.9)).is_err());
        assert!(
            q.limiter().try_acquire(s(1.0)).is_ok(),
            "its slot is free for a direct check"
        );
    }

    /// The limiter moved on after the reservation (a direct check was admitted on top of it),
    /// so it cannot be given back: it is kept for the next waiter until one emission interval
    /// after its instant, then lapses (as an unused token does in the GCRA).
    #[test]
    fn a_slot_that_cannot_be_given_back_serves_the_next_arrival_or_lapses() {
        let (_, waker) = counting();
        let q = spent(1, 2); // two at T0: the next slot is 1 s, then 2 s
        let a = wait(q.acquire(T0, 1));
        assert_eq!(a.slot(), Some(s(1.0)));
        assert!(
            q.limiter().try_acquire(s(2.0)).is_ok(),
            "a direct check on top of A's slot"
        );
        drop(a);
        assert_eq!(q.stats().given_back, 0);
        // Arrives within one interval of the slot's instant: admitted in it at once.
        let mut d = wait(q.acquire(s(2.0), 1));
        assert_eq!(d.slot(), Some(s(1.0)));
        assert_eq!(poll(&mut d, &waker, s(2.0)), Poll::Ready(Ok(())));
        assert_eq!(q.stats().handed_on, 1);

        let e = wait(q.acquire(s(2.0), 1)); // slot 3 s
        assert!(
            q.limiter().try_acquire(s(4.0)).is_ok(),
            "on top of E's slot"
        );
        drop(e);
        // Arrives more than an interval after E's slot: the spare lapses, a fresh slot.
        let mut f = wait(q.acquire(s(4.5), 1));
        assert!(poll(&mut f, &waker, s(4.5)).is_pending());
        assert_eq!(f.slot(), Some(s(5.0)));
        assert_eq!(q.stats().lapsed, 1);
    }

    /// FIFO with batches: a batch of 3 at the head is served before a single request behind
    /// it, though the single one would fit sooner (head-of-line blocking, documented).
    #[test]
    fn a_batch_keeps_its_place_ahead_of_smaller_requests() {
        let q = spent(1, 3);
        let big = wait(q.acquire(T0, 3));
        let small = wait(q.acquire(T0, 1));
        assert_eq!(big.slot(), Some(s(3.0)));
        assert_eq!(small.slot(), Some(s(4.0)));
        assert_eq!(
            format!("{q:?}"),
            format!("RateWaiters {{ stats: {:?}, .. }}", q.stats())
        );
        assert_eq!(q.stats().waiting, 2);
    }

    /// One pump reserves slots for C and D at the same instant (the limiter was idle, burst
    /// 2). C gives up: D takes C's (older) reservation at the same instant, and D's (the
    /// newest) is given back, so a direct check can use it at once; before, C's was freed,
    /// which the limiter had moved on from, and it lapsed as a spare.
    #[test]
    fn a_slot_freed_beside_an_equal_one_is_still_given_back() {
        let q = spent(1, 2); // A's slot is 1 s, B's 2 s; C and D wait without one
        let (_, waker) = counting();
        let mut a = wait(q.acquire(T0, 1));
        let b = wait(q.acquire(T0, 1));
        let c = wait(q.acquire(T0, 1));
        let d = wait(q.acquire(T0, 1));
        assert_eq!(
            (a.slot(), b.slot(), c.slot()),
            (Some(s(1.0)), Some(s(2.0)), None)
        );
        // Long after: A is admitted, and its pump reserves C and D both at 10 s.
        assert_eq!(poll(&mut a, &waker, s(10.0)), Poll::Ready(Ok(())));
        assert_eq!((c.slot(), d.slot()), (Some(s(10.0)), Some(s(10.0))));
        // `Debug` shows the slot as of the waiter's last poll (D has not been polled).
        assert_eq!(
            format!("{d:?}"),
            "RateWaiter { slot: None, done: None, .. }"
        );
        drop(c);
        assert_eq!(d.slot(), Some(s(10.0)));
        assert_eq!((q.stats().given_back, q.stats().lapsed), (1, 0));
        assert!(
            q.limiter().try_acquire(s(10.0)).is_ok(),
            "the freed slot is the limiter's again"
        );
        drop((b, d));
    }

    /// Two slots the limiter cannot take back are both kept as spares (below the bound on
    /// spares), each serving a later arrival of its size.
    #[test]
    fn spares_below_the_bound_are_all_kept() {
        let q = spent(1, 2); // A's slot is 1 s, B's 2 s
        let a = wait(q.acquire(T0, 1));
        let b = wait(q.acquire(T0, 1));
        assert!(
            q.limiter().try_acquire(s(3.0)).is_ok(),
            "a direct check on top of both"
        );
        drop(a); // B moves up to 1 s; 2 s cannot be given back: a spare
        drop(b); // 1 s cannot be given back either: a second spare
        assert_eq!((q.stats().given_back, q.stats().lapsed), (0, 0));
        let d = wait(q.acquire(s(2.0), 1));
        let e = wait(q.acquire(s(2.0), 1));
        assert_eq!((d.slot(), e.slot()), (Some(s(1.0)), Some(s(2.0))));
        let stats = q.stats();
        assert_eq!((stats.handed_on, stats.lapsed, stats.reserved), (2, 0, 2));
    }

    /// A quota change that makes a queued batch larger than the burst fails that waiter when
    /// its turn comes (it would wait for ever).
    #[test]
    fn a_batch_a_quota_change_made_too_large_fails_in_its_turn() {
        let q = spent(1, 3);
        let (_, waker) = counting();
        let (big_woken, big_waker) = counting();
        let mut a = wait(q.acquire(T0, 1));
        let b = wait(q.acquire(T0, 1));
        let mut c = wait(q.acquire(T0, 1));
        let mut big = wait(q.acquire(T0, 3));
        assert_eq!((c.slot(), big.slot()), (None, None));
        let one = Quota::per_second(NonZeroU32::MIN).unwrap();
        q.limiter().set_quota(T0, one);
        assert!(
            poll(&mut big, &big_waker, T0).is_pending(),
            "not its turn yet"
        );
        let a_slot = a.slot().expect("reserved");
        assert_eq!(poll(&mut a, &waker, a_slot), Poll::Ready(Ok(())));
        assert!(c.slot().is_some(), "C's turn came");
        // A's poll failed the batch in its turn: woken to learn it.
        assert_eq!(big_woken.0.load(Ordering::SeqCst), 1);
        assert_eq!(
            poll(&mut big, &waker, a_slot),
            Poll::Ready(Err(Rejected {
                reason: RateLimited::InsufficientCapacity { burst: 1 },
                retry_at: None
            }))
        );
        drop(b);
        assert!(poll(&mut c, &waker, a_slot).is_pending());
        drop(c);
        assert_eq!(q.stats().waiting, 0);
        assert!(matches!(
            q.limiter().try_acquire_n(T0, 3),
            Err(Rejected {
                reason: RateLimited::InsufficientCapacity { burst: 1 },
                retry_at: None
            })
        ));
    }
}

/// Thirty-two waiters take slots and are then neither polled nor dropped (leaked futures): the
/// waiter behind them is told to poll again when the last of their slots has passed, and is
/// then admitted past them instead of waiting for ever.
#[test]
fn leaked_waiters_holding_slots_do_not_stall_the_queue() {
    use keel_core::sync::gcra::SharedRateLimiter;
    use keel_core::sync::rate_wait::{Acquire, RateWaiters};
    let t0 = Instant::from_secs(1);
    let quota = Quota::per_second(NonZeroU32::new(10_000).unwrap())
        .unwrap()
        .with_burst(NonZeroU32::MIN)
        .unwrap();
    let q = RateWaiters::new(Arc::new(SharedRateLimiter::counted(quota, t0)));
    assert!(matches!(q.acquire(t0, 1), Acquire::Ready(Ok(()))));
    let mut leaked = vec![];
    let mut behind = loop {
        match q.acquire(t0, 1) {
            Acquire::Wait(w) if w.slot().is_none() => break w,
            Acquire::Wait(w) => leaked.push(w),
            Acquire::Ready(r) => panic!("the token is spent: {r:?}"),
        }
    };
    assert_eq!(leaked.len(), 32, "the most slots reserved at once");
    let mut cx = Context::from_waker(Waker::noop());
    assert!(behind.poll(&mut cx, t0).is_pending());
    let last = leaked.last().and_then(|w| w.slot()).expect("a slot");
    let retry = last + Duration::from_nanos(1);
    assert_eq!(behind.retry_at(), Some(retry));
    // At the last leaked slot's instant that slot has not passed (its holder may still come):
    // the bound on slots ahead still holds.
    assert!(behind.poll(&mut cx, last).is_pending());
    assert_eq!(behind.slot(), None, "reserved past a slot that is due now");
    // At the retry the leaked slots have all passed: it reserves the next one.
    assert!(behind.poll(&mut cx, retry).is_pending());
    let slot = behind.slot().expect("a slot past the leaked ones");
    assert_eq!(slot, last + Duration::from_micros(100));
    assert_eq!(behind.poll(&mut cx, slot), Poll::Ready(Ok(())));
    std::mem::forget(leaked);
}
