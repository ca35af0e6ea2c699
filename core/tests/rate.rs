//! Scenario tests for the GCRA rate limiter (`&mut` and shared forms) on a simulated clock.

use core::num::NonZeroU32;
use core::time::Duration;

use keel_core::rate::{Gcra, Quota, RateLimited, RateStats};
#[cfg(feature = "alloc")]
use keel_core::sync::gcra::SharedRateLimiter;
use keel_core::Rejected;
use keel_core::{ConfigError, Instant};

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

fn ms(n: u64) -> Instant {
    Instant::from_millis(n)
}

#[test]
fn a_fresh_limiter_admits_exactly_burst_at_one_instant() {
    let quota = Quota::per_second(nz(10))
        .unwrap()
        .with_burst(nz(3))
        .unwrap();
    let mut l = Gcra::new(quota, ms(1000));
    assert_eq!(l.try_acquire(ms(1000)), Ok(()));
    assert_eq!(l.try_acquire(ms(1000)), Ok(()));
    assert_eq!(l.try_acquire(ms(1000)), Ok(()));
    assert_eq!(
        l.try_acquire(ms(1000)),
        Err(Rejected {
            reason: RateLimited::OverRate,
            retry_at: Some(ms(1100))
        })
    );
    assert_eq!(l.stats(), {
        let mut s: RateStats = RateStats::default();
        s.allowed = 3;
        s.limited = 1;
        s.clock_faults = 0;
        s
    });
}

#[test]
fn per_second_defaults_burst_to_count_like_governor() {
    let q = Quota::per_second(nz(5)).unwrap();
    assert_eq!(q.burst().get(), 5);
    assert_eq!(q.emission_interval(), Duration::from_millis(200));
    assert_eq!(q.tolerance(), Duration::from_millis(800));
    assert_eq!(q.replenish_all(), Duration::from_secs(1));
    let q = Quota::with_period(Duration::from_secs(2)).unwrap();
    assert_eq!(q.burst().get(), 1);
    assert_eq!(q.tolerance(), Duration::ZERO);
}

/// The presets are built, validated quotas: the same value (or the same error) as the builder
/// with the same count and period.
#[test]
fn presets_are_the_builder_with_a_period() {
    for n in [1, 7, 1_000_000_000, 1_000_000_001, u32::MAX] {
        let built = |secs| {
            Quota::builder()
                .count(n)
                .period(Duration::from_secs(secs))
                .build()
        };
        assert_eq!(Quota::per_second(nz(n)), built(1), "{n}/s");
        assert_eq!(Quota::per_minute(nz(n)), built(60), "{n}/min");
        assert_eq!(Quota::per_hour(nz(n)), built(3600), "{n}/h");
    }
    assert_eq!(
        Quota::with_period(Duration::ZERO),
        Err(ConfigError::Zero { field: "period" })
    );
    assert_eq!(
        Quota::with_period(Duration::from_millis(250)),
        Quota::builder()
            .count(1)
            .period(Duration::from_millis(250))
            .build()
    );
}

#[test]
fn emission_interval_rounds_up_so_the_rate_never_exceeds_the_quota() {
    let q = Quota::per_second(nz(3)).unwrap();
    assert_eq!(q.emission_interval(), Duration::from_nanos(333_333_334));
    let q = Quota::per_second(nz(1_000_000_000)).unwrap();
    assert_eq!(q.emission_interval(), Duration::from_nanos(1));
}

#[test]
fn invalid_quotas_are_config_errors() {
    assert!(matches!(
        Quota::per_second(nz(1_000_000_001)),
        Err(ConfigError::OutOfRange { field: "count", .. })
    ));
    assert_eq!(
        Quota::new(nz(1), Duration::ZERO),
        Err(ConfigError::Zero { field: "period" })
    );
    assert!(matches!(
        Quota::new(nz(1), Duration::MAX),
        Err(ConfigError::Overflow {
            field: "period",
            ..
        })
    ));
    let long = Quota::with_period(Duration::from_nanos(u64::MAX / 2)).unwrap();
    assert!(long.with_burst(nz(2)).is_ok());
    assert!(matches!(
        long.with_burst(nz(3)),
        Err(ConfigError::Overflow { field: "burst", .. })
    ));
    assert_eq!(
        Quota::builder().period(Duration::from_secs(1)).build(),
        Err(ConfigError::Zero { field: "count" })
    );
    assert_eq!(
        Quota::builder()
            .count(1)
            .period(Duration::from_secs(1))
            .burst(0)
            .build(),
        Err(ConfigError::Zero { field: "burst" })
    );
    assert_eq!(
        Quota::builder()
            .count(100)
            .period(Duration::from_secs(60))
            .burst(10)
            .build(),
        Quota::per_minute(nz(100)).unwrap().with_burst(nz(10))
    );
}

#[test]
fn retry_at_is_exactly_when_the_next_request_conforms() {
    let quota = Quota::per_second(nz(2)).unwrap(); // T = 500 ms, burst 2
    let mut l = Gcra::new(quota, ms(0));
    assert!(l.try_acquire(ms(0)).is_ok());
    assert!(l.try_acquire(ms(0)).is_ok());
    let e = l.try_acquire(ms(100)).unwrap_err();
    assert_eq!(e.reason, RateLimited::OverRate);
    assert_eq!(e.retry_at, Some(ms(500)));
    assert_eq!(e.wait_from(ms(100)), Some(Duration::from_millis(400)));
    assert_eq!(e.wait_from(ms(900)), Some(Duration::ZERO));
    assert_eq!(
        l.try_acquire(Instant::from_nanos(499_999_999))
            .unwrap_err()
            .retry_at,
        Some(ms(500))
    );
    assert!(l.try_acquire(ms(500)).is_ok());
    assert_eq!(l.try_acquire(ms(500)).unwrap_err().retry_at, Some(ms(1000)));
}

#[test]
fn time_going_backwards_is_clamped_not_rewound() {
    let quota = Quota::per_second(nz(1)).unwrap();
    let mut l = Gcra::new(quota, ms(5000));
    assert!(l.try_acquire(ms(5000)).is_ok());
    // An older `now` is treated as 5000 ms: still one interval to wait.
    assert_eq!(
        l.try_acquire(ms(10)),
        Err(Rejected {
            reason: RateLimited::OverRate,
            retry_at: Some(ms(6000))
        })
    );
    assert_eq!(
        l.try_acquire(Instant::ZERO),
        Err(Rejected {
            reason: RateLimited::OverRate,
            retry_at: Some(ms(6000))
        })
    );
    assert!(l.try_acquire(ms(6000)).is_ok());
}

#[test]
fn check_n_above_burst_is_insufficient_capacity_not_a_retry() {
    let quota = Quota::per_second(nz(10))
        .unwrap()
        .with_burst(nz(4))
        .unwrap();
    let mut l = Gcra::new(quota, ms(0));
    assert_eq!(
        l.try_acquire_n(ms(0), 5),
        Err(Rejected {
            reason: RateLimited::InsufficientCapacity { burst: 4 },
            retry_at: None
        })
    );
    assert_eq!(
        l.try_acquire_n(ms(0), u32::MAX),
        Err(Rejected {
            reason: RateLimited::InsufficientCapacity { burst: 4 },
            retry_at: None
        })
    );
    assert_eq!(l.peek_n(ms(0), 5).unwrap_err().wait_from(ms(0)), None);
    assert_eq!(
        l.peek_n(ms(0), 5).unwrap_err().to_string(),
        "a batch larger than the burst (4) can never be admitted: split it or raise the burst"
    );
    assert_eq!(l.try_acquire_n(ms(0), 0), Ok(()));
    assert_eq!(l.try_acquire_n(ms(0), 3), Ok(()));
    // One left: a batch of 2 waits one interval.
    assert_eq!(
        l.try_acquire_n(ms(0), 2),
        Err(Rejected {
            reason: RateLimited::OverRate,
            retry_at: Some(ms(100))
        })
    );
    assert_eq!(l.try_acquire_n(ms(100), 2), Ok(()));
    assert_eq!(l.stats(), {
        let mut s: RateStats = RateStats::default();
        s.allowed = 2;
        s.limited = 3;
        s.clock_faults = 0;
        s
    });
}

#[test]
fn peek_does_not_consume() {
    let quota = Quota::per_second(nz(1)).unwrap();
    let mut l = Gcra::new(quota, ms(0));
    for _ in 0..5 {
        assert_eq!(l.peek(ms(0)), Ok(()));
        assert_eq!(l.peek_n(ms(0), 1), Ok(()));
    }
    assert_eq!(
        l.peek_n(ms(0), 2),
        Err(Rejected {
            reason: RateLimited::InsufficientCapacity { burst: 1 },
            retry_at: None
        })
    );
    assert!(l.try_acquire(ms(0)).is_ok());
    assert_eq!(
        l.peek(ms(0)),
        Err(Rejected {
            reason: RateLimited::OverRate,
            retry_at: Some(ms(1000))
        })
    );
    assert_eq!(l.stats(), {
        let mut s: RateStats = RateStats::default();
        s.allowed = 1;
        s.limited = 0;
        s.clock_faults = 0;
        s
    });
}

#[test]
fn remaining_and_reset_at_give_the_rate_limit_headers() {
    let quota = Quota::per_second(nz(10)).unwrap(); // T = 100 ms, burst 10
    let mut l = Gcra::new(quota, ms(0));
    assert_eq!(l.remaining(ms(0)), 10);
    assert_eq!(l.reset_at(ms(0)), ms(0));
    for _ in 0..4 {
        assert!(l.try_acquire(ms(0)).is_ok());
    }
    assert_eq!(l.remaining(ms(0)), 6);
    assert_eq!(l.reset_at(ms(0)), ms(400));
    assert_eq!(l.remaining(ms(150)), 7);
    for _ in 0..7 {
        assert!(l.try_acquire(ms(150)).is_ok());
    }
    assert_eq!(l.remaining(ms(150)), 0);
    assert_eq!(l.reset_at(ms(150)), ms(1100));
    assert_eq!(l.remaining(ms(2000)), 10);
    assert_eq!(l.reset_at(ms(2000)), ms(2000));
}

#[test]
fn raising_the_burst_at_run_time_adds_no_capacity_at_the_switch_instant() {
    let mut l = Gcra::new(Quota::per_second(nz(2)).unwrap(), ms(0));
    assert!(l.try_acquire(ms(0)).is_ok());
    assert_eq!(l.remaining(ms(0)), 1);
    l.set_quota(ms(0), Quota::per_second(nz(100)).unwrap());
    // The old state allowed 1 more at this instant: so does the new one.
    assert_eq!(l.remaining(ms(0)), 1);
    assert!(l.try_acquire(ms(0)).is_ok());
    assert!(l.try_acquire(ms(0)).is_err());
    // Then it refills at the new rate (10 ms per request).
    assert_eq!(l.remaining(ms(100)), 10);
}

#[test]
fn lowering_the_burst_at_run_time_caps_the_capacity_left() {
    let mut l = Gcra::new(Quota::per_second(nz(100)).unwrap(), ms(0));
    for _ in 0..50 {
        assert!(l.try_acquire(ms(0)).is_ok());
    }
    l.set_quota(ms(0), Quota::per_second(nz(10)).unwrap());
    // 50 were still allowed; the new burst is 10: 10 now, then one per 100 ms.
    assert_eq!(l.remaining(ms(0)), 10);
    assert_eq!(l.quota(), Quota::per_second(nz(10)).unwrap());
    let mut admitted = 0;
    while l.try_acquire(ms(0)).is_ok() {
        admitted += 1;
    }
    assert_eq!(admitted, 10);
    assert_eq!(
        l.try_acquire(ms(0)),
        Err(Rejected {
            reason: RateLimited::OverRate,
            retry_at: Some(ms(100))
        })
    );
}

#[test]
fn raising_the_rate_carries_the_used_requests_not_the_time() {
    let mut l = Gcra::new(Quota::per_second(nz(2)).unwrap(), ms(0)); // T = 500 ms
    assert!(l.try_acquire(ms(0)).is_ok());
    assert!(l.try_acquire(ms(0)).is_ok());
    // Both requests used; at 10x the rate and the same burst they are repaid 10x faster.
    l.set_quota(
        ms(0),
        Quota::per_second(nz(20))
            .unwrap()
            .with_burst(nz(2))
            .unwrap(),
    );
    assert_eq!(
        l.try_acquire(ms(0)),
        Err(Rejected {
            reason: RateLimited::OverRate,
            retry_at: Some(ms(50))
        })
    );
    assert_eq!(l.remaining(ms(100)), 2);
}

#[cfg(feature = "alloc")]
#[test]
fn shared_set_quota_is_never_more_permissive_than_the_mut_form() {
    let mut m = Gcra::new(Quota::per_second(nz(2)).unwrap(), ms(0));
    let s = SharedRateLimiter::new(Quota::per_second(nz(2)).unwrap(), ms(0));
    for _ in 0..2 {
        assert!(m.try_acquire(ms(0)).is_ok());
        assert!(s.try_acquire(ms(0)).is_ok());
    }
    let faster = Quota::per_second(nz(20))
        .unwrap()
        .with_burst(nz(2))
        .unwrap();
    m.set_quota(ms(0), faster);
    s.set_quota(ms(0), faster);
    // The shared form keeps the old TAT (1 s, plus the 1 ns every change adds) until it
    // drains: conservative.
    assert_eq!(m.remaining(ms(100)), 2);
    assert_eq!(s.remaining(ms(100)), 0);
    let retry_at = Instant::from_nanos(950_000_001);
    assert_eq!(
        s.try_acquire(ms(100)),
        Err(Rejected {
            reason: RateLimited::OverRate,
            retry_at: Some(retry_at)
        })
    );
    assert_eq!(s.remaining(retry_at), 1);
    assert_eq!(s.remaining(ms(1001)), 2);
}

#[test]
fn switching_to_a_full_limiter_with_a_smaller_burst_admits_the_new_burst() {
    let mut l = Gcra::new(Quota::per_second(nz(100)).unwrap(), ms(0));
    l.set_quota(ms(0), Quota::per_second(nz(3)).unwrap());
    let mut admitted = 0;
    while l.try_acquire(ms(0)).is_ok() {
        admitted += 1;
    }
    assert_eq!(admitted, 3);
}

#[test]
fn extreme_inputs_do_not_panic() {
    let huge = Quota::with_period(Duration::from_nanos(u64::MAX)).unwrap();
    let mut l = Gcra::new(huge, Instant::ZERO);
    assert!(l.try_acquire(Instant::ZERO).is_ok());
    assert!(l.try_acquire(Instant::from_secs(1)).is_err());
    let _ = l.try_acquire_n(Instant::MAX, u32::MAX);
    let _ = l.remaining(Instant::MAX);
    let _ = l.reset_at(Instant::MAX);
    l.set_quota(Instant::MAX, Quota::per_second(nz(1_000_000_000)).unwrap());
    let _ = l.try_acquire(Instant::MAX);
    let _ = l.try_acquire(Instant::ZERO);
    let mut l = Gcra::new(
        Quota::per_second(nz(u32::MAX / 5))
            .unwrap()
            .with_burst(nz(u32::MAX))
            .unwrap(),
        Instant::MAX,
    );
    assert!(l.try_acquire_n(Instant::MAX, u32::MAX).is_ok());
    let _ = l.peek_n(Instant::ZERO, u32::MAX);
}

#[cfg(feature = "alloc")]
#[test]
fn shared_limiter_matches_the_scenario_of_the_mut_form() {
    let quota = Quota::per_second(nz(10))
        .unwrap()
        .with_burst(nz(3))
        .unwrap();
    let l = SharedRateLimiter::counted(quota, ms(1000));
    assert_eq!(l.remaining(ms(1000)), 3);
    assert!(l.try_acquire(ms(1000)).is_ok());
    assert_eq!(l.try_acquire_n(ms(1000), 2), Ok(()));
    assert_eq!(
        l.try_acquire(ms(1000)),
        Err(Rejected {
            reason: RateLimited::OverRate,
            retry_at: Some(ms(1100))
        })
    );
    assert_eq!(l.peek(ms(1100)), Ok(()));
    assert_eq!(
        l.try_acquire_n(ms(1100), 4),
        Err(Rejected {
            reason: RateLimited::InsufficientCapacity { burst: 3 },
            retry_at: None
        })
    );
    assert_eq!(l.reset_at(ms(1000)), ms(1300));
    assert_eq!(l.stats(), {
        let mut s: RateStats = RateStats::default();
        s.allowed = 2;
        s.limited = 2;
        s.clock_faults = 0;
        s
    });
    l.set_quota(ms(1000), Quota::per_second(nz(100)).unwrap());
    assert_eq!(l.quota(), Quota::per_second(nz(100)).unwrap());
    assert_eq!(l.remaining(ms(1000)), 0);
}

/// Four threads make 1000 checks each at 10 ms on a fresh limiter with a burst of 100; returns
/// how many were admitted.
#[cfg(feature = "alloc")]
fn admitted_by_four_threads(l: &SharedRateLimiter) -> usize {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| (0..1000).filter(|_| l.try_acquire(ms(10)).is_ok()).count()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    })
}

#[cfg(feature = "alloc")]
fn burst_100_per_second() -> Quota {
    Quota::per_second(nz(1))
        .unwrap()
        .with_burst(nz(100))
        .unwrap()
}

#[cfg(feature = "alloc")]
#[test]
fn shared_limiter_admits_exactly_burst_across_threads() {
    let l = SharedRateLimiter::counted(burst_100_per_second(), ms(0));
    assert_eq!(admitted_by_four_threads(&l), 100);
    assert_eq!(l.stats().allowed, 100);
    assert_eq!(l.stats().limited, 3900);
}

#[cfg(feature = "alloc")]
#[test]
fn bare_shared_limiter_admits_exactly_burst_across_threads() {
    let l = SharedRateLimiter::new(burst_100_per_second(), ms(0));
    assert_eq!(admitted_by_four_threads(&l), 100);
    // The burst was spent at 10 ms: one slot frees 1 s later.
    assert_eq!(l.try_acquire(ms(10)).unwrap_err().retry_at, Some(ms(1010)));
    // The bare limiter counts nothing but clock faults; the counted one says it counts.
    assert!(!l.is_counted());
    assert_eq!(l.stats(), RateStats::default());
    assert!(SharedRateLimiter::counted(burst_100_per_second(), ms(0)).is_counted());
}

/// At the end of the clock, where the new TAT saturates (the hot paths send this case out of
/// line), the `&mut` form and both shared forms admit and reject alike: with a burst of 1, one
/// admission moves the TAT to its ceiling and the next check is refused until then.
#[cfg(feature = "alloc")]
#[test]
fn every_form_saturates_the_same_way_at_the_end_of_the_clock() {
    let end = Instant::from_nanos(u64::MAX - 10);
    let ceiling = Instant::from_nanos(u64::MAX - 1);
    for quota in [
        Quota::per_second(nz(1)).unwrap(),
        Quota::per_second(nz(1)).unwrap().with_burst(nz(3)).unwrap(),
    ] {
        let mut exact = Gcra::new(quota, end);
        let bare = SharedRateLimiter::new(quota, end);
        let counted = SharedRateLimiter::counted(quota, end);
        for i in 0..5 {
            let want = exact.try_acquire(end);
            assert_eq!(bare.try_acquire(end), want, "check {i}, {quota:?}");
            assert_eq!(counted.try_acquire(end), want, "check {i}, {quota:?}");
            assert_eq!(bare.reset_at(end), exact.reset_at(end));
        }
        assert_eq!(counted.stats(), exact.stats());
    }
    let mut one = Gcra::new(Quota::per_second(nz(1)).unwrap(), end);
    assert_eq!(one.try_acquire(end), Ok(()));
    assert_eq!(one.reset_at(end), ceiling);
    assert_eq!(
        one.try_acquire(end),
        Err(Rejected {
            reason: RateLimited::OverRate,
            retry_at: Some(ceiling)
        })
    );
}

#[cfg(feature = "alloc")]
#[test]
fn shared_limiter_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SharedRateLimiter>();
    assert_send_sync::<SharedRateLimiter>();
}

/// Fuzz regression (`fuzz/corpus/gcra/seed-regression-1`): after a full-burst batch, the two
/// forms agree when asked at the same instant, and a query at an instant newer than any check
/// is answered at that instant without being observed. (The harness had compared the `&mut`
/// form at the caller's newer `now` with the shared form at the older clamped instant.)
#[cfg(feature = "alloc")]
#[test]
fn shared_and_mut_forms_agree_at_the_same_instant_after_a_full_burst_batch() {
    let burst = 1_701_143_909;
    let quota = Quota::builder()
        .count(1_711_220_065)
        .period(Duration::from_millis(25_957))
        .burst(burst)
        .build()
        .unwrap();
    assert_eq!(quota.emission_interval(), Duration::from_nanos(16)); // 15.17 ns rounded up
    let t0 = Instant::from_secs(1_701_143_909);
    let mut exact = Gcra::new(quota, t0);
    let shared = SharedRateLimiter::new(quota, t0);
    assert_eq!(exact.try_acquire_n(t0, burst), Ok(()));
    assert_eq!(shared.try_acquire_n(t0, burst), Ok(()));

    let next = Err(Rejected {
        reason: RateLimited::OverRate,
        retry_at: Some(t0 + Duration::from_nanos(16)),
    });
    assert_eq!(exact.peek(t0), next);
    assert_eq!(shared.peek(t0), next);

    // 25957 s later the whole burst is back, for both forms alike.
    let later = t0 + Duration::from_secs(25_957);
    assert_eq!(exact.peek(later), Ok(()));
    assert_eq!(shared.peek(later), Ok(()));
    assert_eq!(exact.remaining(later), burst);
    assert_eq!(shared.remaining(later), burst);
    // The query did not move the `&mut` form's clock: `t0` is still answered at `t0`.
    assert_eq!(exact.peek(t0), next);
    assert_eq!(
        exact.peek_n(t0, 1),
        Err(Rejected {
            reason: RateLimited::OverRate,
            retry_at: Some(t0 + Duration::from_nanos(16))
        })
    );
}

/// The edge of the GCRA's saturation: an admission whose new TAT lands exactly on `u64::MAX`
/// (no overflow) is capped at the ceiling `u64::MAX - 1` like one that overflows, and one
/// nanosecond earlier it is not capped at all.
#[test]
fn a_tat_landing_exactly_on_the_end_of_the_clock_is_capped_at_the_ceiling() {
    let t = 1_000_000_000; // one per second
    let ceiling = Instant::from_nanos(u64::MAX - 1);
    let now = Instant::from_nanos(u64::MAX - t);
    let mut l = Gcra::new(Quota::per_second(nz(1)).unwrap(), now);
    assert_eq!(l.try_acquire(now), Ok(()));
    assert_eq!(l.reset_at(now), ceiling);
    assert_eq!(
        l.try_acquire(now),
        Err(Rejected {
            reason: RateLimited::OverRate,
            retry_at: Some(ceiling)
        })
    );
    assert_eq!(l.stats().allowed, 1);

    let now = Instant::from_nanos(u64::MAX - t - 1);
    let mut l = Gcra::new(Quota::per_second(nz(1)).unwrap(), now);
    assert_eq!(l.try_acquire(now), Ok(()));
    assert_eq!(
        l.try_acquire(now),
        Err(Rejected {
            reason: RateLimited::OverRate,
            retry_at: Some(ceiling)
        })
    );
}

/// `remaining` at the exact instant the next request conforms is 1, one nanosecond before it
/// is 0 (`X-RateLimit-Remaining` at the boundary).
#[test]
fn remaining_is_exact_at_the_conformance_boundary() {
    let q = Quota::per_second(nz(1)).unwrap().with_burst(nz(2)).unwrap();
    let t0 = ms(10_000);
    let mut l = Gcra::new(q, t0);
    assert_eq!(l.try_acquire(t0), Ok(()));
    assert_eq!(l.try_acquire(t0), Ok(()));
    // TAT = t0 + 2 s, tolerance 1 s: the next request conforms at t0 + 1 s.
    assert_eq!(l.remaining(t0), 0);
    assert_eq!(l.remaining(ms(10_999)), 0);
    assert_eq!(
        l.remaining(Instant::from_nanos(ms(11_000).as_nanos() - 1)),
        0
    );
    assert_eq!(l.remaining(ms(11_000)), 1);
    assert_eq!(l.remaining(ms(12_000)), 2);
}

/// A burst whose `burst × T` is near `u64::MAX` ns (2,661,171,615 per 584 years): a second large
/// batch is rejected until `TAT + n × T − burst × T`, about 88 years on, and not admitted at
/// 3 days, where `TAT + (n − 1) × T` overflowed and saturated (`retry_at` was `u64::MAX − τ`).
/// Found by the `gcra` fuzz target against its reference model.
#[cfg(feature = "alloc")]
#[test]
fn a_large_batch_on_a_huge_burst_is_not_admitted_early() {
    let quota = Quota::new(
        nz(2_661_171_615),
        Duration::from_nanos(18_446_462_598_732_840_960),
    )
    .unwrap();
    let t = quota.emission_interval().as_nanos() as u64;
    let burst = u64::from(quota.burst().get());
    let n = 1_532_713_819u32;
    let due = Instant::from_nanos((2 * u64::from(n) - burst) * t);
    let later = Instant::from_secs(23_387);
    let mut m = Gcra::new(quota, Instant::ZERO);
    let s = SharedRateLimiter::new(quota, Instant::ZERO);
    assert_eq!(m.try_acquire_n(Instant::ZERO, n), Ok(()));
    assert_eq!(s.try_acquire_n(Instant::ZERO, n), Ok(()));
    let rejected = Rejected {
        reason: RateLimited::OverRate,
        retry_at: Some(due),
    };
    assert_eq!(m.try_acquire_n(later, n), Err(rejected));
    assert_eq!(s.try_acquire_n(later, n), Err(rejected));
    let past_the_old_retry_at = Instant::from_nanos(u64::MAX - t * (burst - 1) + 1);
    assert!(past_the_old_retry_at < due);
    assert_eq!(m.peek_n(past_the_old_retry_at, n), Err(rejected));
    assert_eq!(s.peek_n(past_the_old_retry_at, n), Err(rejected));
    assert_eq!(m.try_acquire_n(due, n), Ok(()));
    let step = keel_core::rate::step(&quota, Instant::from_nanos(u64::from(n) * t), later, n);
    assert_eq!(step.decision, Err(rejected));
}

#[cfg(feature = "alloc")]
#[test]
fn shared_reservations_queue_up_to_latest_and_only_the_newest_is_given_back() {
    // One per second, burst 1: each reservation takes the next whole second.
    let l = SharedRateLimiter::counted(Quota::per_second(nz(1)).unwrap(), ms(0));
    let over = l.reserve_n(ms(0), 2, ms(10_000)).unwrap_err();
    assert_eq!(
        (over.reason, over.retry_at),
        (RateLimited::InsufficientCapacity { burst: 1 }, None)
    );
    let first = l.reserve_n(ms(0), 1, ms(0)).unwrap();
    assert_eq!(first.at(), ms(0));
    // The next slot is at 1 s: refused before it, reserved at it.
    let late = l.reserve_n(ms(0), 1, ms(500)).unwrap_err();
    assert_eq!(late.retry_at, Some(ms(1000)));
    let second = l.reserve_n(ms(0), 1, ms(1000)).unwrap();
    assert_eq!(second.at(), ms(1000));
    assert_eq!(l.stats().allowed, 2);
    // Only the newest reservation can be rewound.
    let first = l.cancel_reservation(first).unwrap_err();
    assert_eq!(first.at(), ms(0));
    assert_eq!(l.cancel_reservation(second), Ok(()));
    assert_eq!(l.stats().allowed, 1);
    let again = l.reserve_n(ms(0), 1, ms(1000)).unwrap();
    assert_eq!(again.at(), ms(1000));
    // A reservation of nothing has nothing to give back.
    let none = l.reserve_n(ms(0), 0, ms(0)).unwrap();
    assert!(l.cancel_reservation(none).is_err());
    assert_eq!(l.stats().clock_faults, 0);
}
