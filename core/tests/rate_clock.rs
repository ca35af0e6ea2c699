//! Clock faults (issue 13, item 7): one bogus `now` far ahead of (or far behind) the real
//! clock must not turn a rate limiter off for good, and both forms (and the keyed table) must
//! behave alike. See `keel_core::rate`, "Clock faults".

// Runs in the `alloc` and `std` configurations only: the keyed and shared limiters need `alloc`.
#![cfg(feature = "alloc")]

use core::num::NonZeroU32;
use core::time::Duration;

use keel_core::rate::keyed::{Full, KeyedConfig, KeyedGcra};
use keel_core::rate::{Gcra, Quota};
use keel_core::sync::gcra::SharedRateLimiter;
use keel_core::Instant;

fn one_per_second() -> Quota {
    Quota::per_second(NonZeroU32::MIN).unwrap()
}

const HOUR: u64 = 3_600_000_000_000;

/// The bogus instants: the end of the clock, a century ahead, an hour ahead.
fn bogus_ahead(real: Instant) -> [Instant; 3] {
    [
        Instant::MAX,
        real + Duration::from_secs(100 * 365 * 24 * 3600),
        real + Duration::from_nanos(HOUR),
    ]
}

/// One bogus `now`, then 10 s of real checks every 10 ms: (admitted in the first real second,
/// admitted in the 10 s).
fn after_one_bogus_now(mut check: impl FnMut(Instant) -> bool, bogus: Instant) -> (u32, u32) {
    let t0 = Instant::from_secs(1_000);
    assert!(check(t0));
    let _ = check(bogus);
    let (mut first_second, mut total) = (0, 0);
    for i in 1..=1000u64 {
        let now = t0 + Duration::from_millis(10 * i);
        if check(now) {
            total += 1;
            if i <= 100 {
                first_second += 1;
            }
        }
    }
    (first_second, total)
}

/// At 1/s with burst 1, 10 s of real checks after one bogus far-future `now` admit about 10:
/// at most one extra (the resynchronised fresh limiter), never all of them (the `&mut` form
/// before: 1000 of 1000 after `Instant::MAX`) and never none (the shared form before: 0).
#[test]
fn one_bogus_far_future_now_does_not_turn_limiting_off_or_on_for_good() {
    let t0 = Instant::from_secs(1_000);
    for bogus in bogus_ahead(t0) {
        let mut m = Gcra::new(one_per_second(), Instant::ZERO);
        let mut_form = after_one_bogus_now(|now| m.try_acquire(now).is_ok(), bogus);
        let s = SharedRateLimiter::new(one_per_second(), Instant::ZERO);
        let shared = after_one_bogus_now(|now| s.try_acquire(now).is_ok(), bogus);
        let mut k = KeyedGcra::<u8>::new(
            KeyedConfig::builder()
                .quota(one_per_second())
                .max_keys(4)
                .hash_seed(1)
                .build()
                .unwrap(),
            Instant::ZERO,
        );
        let keyed = after_one_bogus_now(|now| k.try_acquire(now, &7).is_ok(), bogus);
        for (form, (first_second, total)) in
            [("&mut", mut_form), ("shared", shared), ("keyed", keyed)]
        {
            assert!(
                (1..=2).contains(&first_second),
                "{form} after {bogus:?}: {first_second} admitted in the first real second"
            );
            assert!(
                (10..=11).contains(&total),
                "{form} after {bogus:?}: {total} admitted in 10 s at 1/s"
            );
        }
        assert_eq!(mut_form, shared, "the forms disagree after {bogus:?}");
        assert_eq!(mut_form, keyed, "keyed and &mut disagree after {bogus:?}");
    }
}

/// A bogus `now` far in the past (a careless caller passing `Instant::ZERO`) costs at most one
/// extra burst, then limiting goes on at the quota.
#[test]
fn one_bogus_far_past_now_costs_at_most_one_burst() {
    let mut m = Gcra::new(one_per_second(), Instant::ZERO);
    let s = SharedRateLimiter::new(one_per_second(), Instant::ZERO);
    let mut_form = after_one_bogus_now(|now| m.try_acquire(now).is_ok(), Instant::ZERO);
    let shared = after_one_bogus_now(|now| s.try_acquire(now).is_ok(), Instant::ZERO);
    assert_eq!(mut_form, shared);
    assert!(mut_form.1 <= 11, "{mut_form:?}");
    assert!(mut_form.1 >= 10, "{mut_form:?}");
}

/// A step forward and back smaller than `max_clock_jump` is taken at face value (no fault):
/// the limiter stays as strict as the later clock says until the real clock catches up.
#[test]
fn a_jump_within_max_clock_jump_is_taken_at_face_value() {
    let t0 = Instant::from_secs(1_000);
    let ahead = t0 + Duration::from_secs(30);
    let mut m = Gcra::new(one_per_second(), t0);
    let s = SharedRateLimiter::counted(one_per_second(), t0);
    assert!(m.try_acquire(ahead).is_ok() && s.try_acquire(ahead).is_ok());
    // Back to the real clock: every check up to `ahead` is rejected, with the same answer.
    for secs in [1u64, 10, 29] {
        let now = t0 + Duration::from_secs(secs);
        let (a, b) = (m.try_acquire(now), s.try_acquire(now));
        assert_eq!(a, b);
        assert_eq!(
            a.unwrap_err().retry_at,
            Some(ahead + Duration::from_secs(1))
        );
    }
    assert!(m.try_acquire(ahead + Duration::from_secs(1)).is_ok());
    assert!(s.try_acquire(ahead + Duration::from_secs(1)).is_ok());
    assert_eq!(m.stats().clock_faults, 0);
    assert_eq!(s.stats().clock_faults, 0);
}

/// The fault is counted once, by every form, and `max_clock_jump` is configurable.
#[test]
fn a_fault_is_counted_and_the_threshold_is_configurable() {
    let t0 = Instant::from_secs(1_000);
    let jump = Duration::from_secs(5);
    let ahead = t0 + Duration::from_secs(10);
    let mut m = Gcra::new(one_per_second(), t0).with_max_clock_jump(jump);
    let s = SharedRateLimiter::counted(one_per_second(), t0).with_max_clock_jump(jump);
    let u = SharedRateLimiter::new(one_per_second(), t0).with_max_clock_jump(jump);
    assert_eq!(m.max_clock_jump(), jump);
    assert_eq!(s.max_clock_jump(), jump);
    let mut k = KeyedGcra::<u8>::new(
        KeyedConfig::builder()
            .quota(one_per_second())
            .max_keys(1)
            .full(Full::RejectNew)
            .max_clock_jump(jump)
            .hash_seed(1)
            .build()
            .unwrap(),
        t0,
    );
    for now in [
        ahead,
        t0 + Duration::from_secs(1),
        t0 + Duration::from_secs(2),
    ] {
        let d = m.try_acquire(now);
        assert_eq!(d, s.try_acquire(now));
        assert_eq!(d, u.try_acquire(now));
        assert_eq!(d.is_ok(), k.try_acquire(now, &1).is_ok());
    }
    assert_eq!(m.stats().clock_faults, 1);
    assert_eq!(s.stats().clock_faults, 1);
    assert_eq!(u.clock_faults(), 1);
    assert_eq!(k.stats().clock_faults, 1);
    // peek, remaining and reset_at read a faulted state as a fresh limiter, without counting.
    let _ = m.try_acquire(ahead);
    let _ = s.try_acquire(ahead);
    let back = t0 + Duration::from_secs(3);
    assert_eq!(m.peek(back), Ok(()));
    assert_eq!(s.peek(back), Ok(()));
    assert_eq!((m.remaining(back), s.remaining(back)), (1, 1));
    assert_eq!((m.reset_at(back), s.reset_at(back)), (back, back));
    assert_eq!(m.stats().clock_faults, 1);
    assert_eq!(s.stats().clock_faults, 1);
}

/// `max_clock_jump(Duration::MAX)` never resynchronises (and zero/huge values never panic).
#[test]
fn extreme_thresholds_do_not_panic() {
    for jump in [Duration::ZERO, Duration::from_nanos(1), Duration::MAX] {
        let mut m = Gcra::new(one_per_second(), Instant::ZERO).with_max_clock_jump(jump);
        let s = SharedRateLimiter::new(one_per_second(), Instant::ZERO).with_max_clock_jump(jump);
        for now in [
            Instant::MAX,
            Instant::ZERO,
            Instant::from_nanos(1),
            Instant::MAX,
        ] {
            assert_eq!(m.try_acquire(now), s.try_acquire(now));
            assert_eq!(m.try_acquire_n(now, 1), s.try_acquire_n(now, 1));
        }
        if jump == Duration::MAX {
            assert_eq!(m.stats().clock_faults, 0);
        }
    }
}

/// A quota change never leaves a state the new quota reads as a clock fault: the shared form,
/// which otherwise keeps a larger old debt (it only moves its state word forward), takes the
/// `&mut` form's exact carried-over state when the old debt exceeds what the new quota can owe
/// by more than `max_clock_jump`. (Found by the `all` fuzz target: it opened a window.)
#[test]
fn a_quota_change_never_reads_as_a_clock_fault() {
    let t0 = Instant::from_secs(1_000);
    let slow = Quota::per_hour(NonZeroU32::new(5).unwrap()).unwrap(); // 12 min each, burst 5
    let fast = one_per_second();
    let s = SharedRateLimiter::counted(slow, t0);
    let mut m = Gcra::new(slow, t0);
    for _ in 0..5 {
        assert!(s.try_acquire(t0).is_ok() && m.try_acquire(t0).is_ok());
    }
    assert_eq!((s.remaining(t0), m.remaining(t0)), (0, 0));
    s.set_quota(t0, fast);
    m.set_quota(t0, fast);
    assert_eq!(s.remaining(t0), 0, "the quota change opened a window");
    let (a, b) = (s.try_acquire(t0), m.try_acquire(t0));
    assert_eq!(a, b);
    assert_eq!(a.unwrap_err().retry_at, Some(t0 + Duration::from_secs(1)));
    assert_eq!(s.stats().clock_faults, 0);
    assert_eq!(m.stats().clock_faults, 0);
}

/// A quota change at a slightly stale `now` (within `max_clock_jump`) to a slower rate neither
/// multiplies the staleness into a debt the new quota reads as a clock fault nor opens a
/// window: the drained limiter stays drained. (Found by the `gcra` fuzz target through the
/// shared form's conservative carry-over, which likewise leaves a debt beyond `burst × T`.)
#[test]
fn a_quota_change_at_a_stale_now_keeps_a_drained_limiter_drained() {
    let t0 = Instant::from_secs(1_000);
    let fast = Quota::per_second(NonZeroU32::new(1_000).unwrap()).unwrap(); // 1 ms, burst 1000
    let real = t0 + Duration::from_secs(10);
    let stale = t0 + Duration::from_secs(9);
    let mut m = Gcra::new(fast, t0);
    let s = SharedRateLimiter::counted(fast, t0);
    for _ in 0..1_000 {
        assert!(m.try_acquire(real).is_ok() && s.try_acquire(real).is_ok());
    }
    m.set_quota(stale, one_per_second());
    s.set_quota(stale, one_per_second());
    let next = real + Duration::from_secs(1);
    for (form, d) in [
        ("&mut", m.try_acquire(real)),
        ("shared", s.try_acquire(real)),
    ] {
        let retry_at = d
            .map_err(|e| e.retry_at.expect("over the rate, not over the burst"))
            .expect_err("a drained limiter admitted after a quota change");
        // The shared form's state word moves forward by at least 1 ns on a quota change.
        assert!(
            (next..=next + Duration::from_nanos(1)).contains(&retry_at),
            "{form}: retry at {retry_at:?}"
        );
    }
    assert_eq!(m.stats().clock_faults, 0);
    assert_eq!(s.stats().clock_faults, 0);
}

/// A reservation (what `until_ready`'s waiters take) decides after a clock fault as a check
/// does: as a fresh limiter, not at a slot years away (found merging the fair-waiting queue with
/// the clock-fault work: the reservation path had no resynchronisation).
#[test]
fn a_reservation_after_a_bogus_instant_is_a_fresh_limiters_slot() {
    for bogus in bogus_ahead(Instant::from_secs(1_000)) {
        let shared = SharedRateLimiter::new(one_per_second(), Instant::ZERO);
        let t0 = Instant::from_secs(1_000);
        assert!(shared.try_acquire(t0).is_ok());
        let _ = shared.try_acquire(bogus);
        let now = t0 + Duration::from_millis(10);
        let latest = now + Duration::from_secs(2);
        let first = shared.reserve_n(now, 1, latest).expect("a slot within 2 s");
        assert_eq!(first.at(), now, "fresh after the fault ({bogus:?})");
        let second = shared.reserve_n(now, 1, latest).expect("the next slot");
        assert_eq!(
            second.at(),
            now + Duration::from_secs(1),
            "then the quota holds"
        );
        assert_eq!(shared.clock_faults(), 1);
    }
}

/// The fault threshold is exact to the nanosecond: after an admission at `ahead`, a `now`
/// exactly `max_clock_jump` behind it is taken at face value (rejected until `ahead + T`),
/// and one nanosecond earlier proves a fault (a fresh limiter admits). For `check`, whose
/// test is on the rejection path, and for `check_n` and `peek`, which test the state first.
#[test]
fn the_fault_threshold_is_exact_to_the_nanosecond() {
    use keel_core::rate::RateLimited;
    use keel_core::Rejected;
    let t0 = Instant::from_secs(1_000);
    let jump = Duration::from_secs(5);
    let ahead = t0 + jump;
    let retry_at = ahead + Duration::from_secs(1);
    let admitted_ahead = || {
        let mut m = Gcra::new(one_per_second(), t0).with_max_clock_jump(jump);
        assert_eq!(m.try_acquire(ahead), Ok(()));
        m
    };

    let mut m = admitted_ahead();
    assert_eq!(
        m.peek(t0),
        Err(Rejected {
            reason: RateLimited::OverRate,
            retry_at: Some(retry_at)
        })
    );
    assert_eq!(
        m.try_acquire(t0),
        Err(Rejected {
            reason: RateLimited::OverRate,
            retry_at: Some(retry_at)
        })
    );
    assert_eq!(
        m.try_acquire_n(t0, 1),
        Err(Rejected {
            reason: RateLimited::OverRate,
            retry_at: Some(retry_at)
        })
    );
    assert_eq!(m.stats().clock_faults, 0);

    let back = Instant::from_nanos(t0.as_nanos() - 1);
    let mut m = admitted_ahead();
    assert_eq!(m.peek(back), Ok(()));
    assert_eq!(m.try_acquire(back), Ok(()));
    assert_eq!(m.stats().clock_faults, 1);
    let mut m = admitted_ahead();
    assert_eq!(m.try_acquire_n(back, 1), Ok(()));
    assert_eq!(m.stats().clock_faults, 1);
}
