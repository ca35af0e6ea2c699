//! Scenario tests for `keel_core::leak` on a simulated clock.

use core::time::Duration;

use keel_core::leak::{LeakConfig, LeakDetector, LeakEvent, Release, Tracking};
use keel_core::time::Instant;
use keel_core::ConfigError;

fn t0() -> Instant {
    Instant::from_secs(1_000)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn detector<const N: usize>(threshold: Duration) -> LeakDetector<N> {
    LeakDetector::new(
        LeakConfig::builder()
            .threshold(threshold)
            .build()
            .expect("valid"),
        t0(),
    )
}

fn events<const N: usize>(d: &mut LeakDetector<N>) -> Vec<LeakEvent> {
    core::iter::from_fn(|| d.poll_event()).collect()
}

#[test]
fn a_permit_held_past_the_threshold_is_reported_once_with_its_age() {
    let mut d = detector::<8>(secs(5));
    assert_eq!(d.on_acquire(t0(), 7), Tracking::Tracked);
    assert_eq!(d.poll_timeout(), Some(t0() + secs(5)));
    d.handle_timeout(t0() + secs(4));
    assert_eq!(d.poll_event(), None, "early timer: no-op");
    d.handle_timeout(t0() + secs(6)); // late timer: the age is what it is when found
    assert_eq!(
        events(&mut d),
        vec![LeakEvent::Leaked {
            id: 7,
            acquired_at: t0(),
            age: secs(6)
        }]
    );
    d.handle_timeout(t0() + secs(60));
    assert_eq!(d.poll_event(), None, "reported exactly once");
    assert_eq!(d.poll_timeout(), None);
    let s = d.stats();
    assert_eq!(
        (s.leaked_total, s.outstanding, s.outstanding_leaked),
        (1, 1, 1)
    );
    assert_eq!(s.oldest_age, secs(60));
}

#[test]
fn a_release_in_time_is_never_a_leak() {
    let mut d = detector::<8>(secs(5));
    let _ = d.on_acquire(t0(), 1);
    let just = t0() + secs(5) - Duration::from_nanos(1);
    assert_eq!(
        d.on_release(just, 1),
        Release::OnTime {
            held: secs(5) - Duration::from_nanos(1)
        }
    );
    d.handle_timeout(t0() + secs(100));
    assert_eq!(d.poll_event(), None);
    let s = d.stats();
    assert_eq!(
        (s.acquired, s.released, s.leaked_total, s.outstanding),
        (1, 1, 0, 0)
    );
}

#[test]
fn a_late_release_before_the_timer_fired_is_still_a_leak() {
    let mut d = detector::<8>(secs(5));
    let _ = d.on_acquire(t0(), 3);
    assert_eq!(
        d.on_release(t0() + secs(5), 3),
        Release::Late { held: secs(5) }
    );
    assert_eq!(
        events(&mut d),
        vec![
            LeakEvent::Leaked {
                id: 3,
                acquired_at: t0(),
                age: secs(5)
            },
            LeakEvent::Released {
                id: 3,
                held: secs(5)
            }
        ]
    );
    let s = d.stats();
    assert_eq!((s.leaked_total, s.late_releases, s.outstanding), (1, 1, 0));
}

#[test]
fn a_leak_released_before_its_report_was_polled_still_reports_both() {
    let mut d = detector::<8>(secs(5));
    let _ = d.on_acquire(t0(), 3);
    d.handle_timeout(t0() + secs(5));
    assert_eq!(
        d.on_release(t0() + secs(7), 3),
        Release::Late { held: secs(7) }
    );
    assert_eq!(
        events(&mut d),
        vec![
            LeakEvent::Leaked {
                id: 3,
                acquired_at: t0(),
                age: secs(5)
            },
            LeakEvent::Released {
                id: 3,
                held: secs(7)
            }
        ]
    );
    assert_eq!(
        d.on_release(t0() + secs(8), 3),
        Release::Unknown,
        "released twice"
    );
}

#[test]
fn events_come_oldest_acquisition_first() {
    let mut d = detector::<8>(secs(5));
    let _ = d.on_acquire(t0() + secs(2), 20);
    let _ = d.on_acquire(t0(), 10);
    let _ = d.on_acquire(t0() + secs(1), 30);
    assert_eq!(
        d.poll_timeout(),
        Some(t0() + secs(7)),
        "clamped: all acquired at t0+2s"
    );
    d.handle_timeout(t0() + secs(7));
    let ids: Vec<u64> = events(&mut d)
        .into_iter()
        .map(|e| match e {
            LeakEvent::Leaked { id, .. } | LeakEvent::Released { id, .. } => id,
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(ids, vec![20, 10, 30], "same instant: tracking order");
}

#[test]
fn poll_timeout_is_the_oldest_outstanding_permit_plus_the_threshold() {
    let mut d = detector::<8>(secs(10));
    assert_eq!(d.poll_timeout(), None);
    let _ = d.on_acquire(t0(), 1);
    let _ = d.on_acquire(t0() + secs(3), 2);
    assert_eq!(d.poll_timeout(), Some(t0() + secs(10)));
    let _ = d.on_release(t0() + secs(4), 1);
    assert_eq!(d.poll_timeout(), Some(t0() + secs(13)));
    d.handle_timeout(t0() + secs(13));
    assert_eq!(
        d.poll_timeout(),
        None,
        "after handle_timeout(t): None or later than t"
    );
}

#[test]
fn duplicate_and_unknown_ids_are_counted_and_change_nothing() {
    let mut d = detector::<8>(secs(5));
    assert_eq!(d.on_acquire(t0(), 1), Tracking::Tracked);
    assert_eq!(d.on_acquire(t0() + secs(3), 1), Tracking::Duplicate);
    assert_eq!(d.on_release(t0(), 99), Release::Unknown);
    // The first acquisition's time stands.
    assert_eq!(d.poll_timeout(), Some(t0() + secs(5)));
    assert_eq!(
        d.on_release(t0() + secs(4), 1),
        Release::OnTime { held: secs(4) }
    );
    assert_eq!(d.on_release(t0() + secs(4), 1), Release::Unknown);
    let s = d.stats();
    assert_eq!(
        (s.acquired, s.released, s.duplicates, s.unknown_releases),
        (1, 1, 1, 2)
    );
}

#[test]
fn a_full_table_overflows_and_counts_it() {
    let mut d = detector::<2>(secs(5));
    assert_eq!(d.on_acquire(t0(), 1), Tracking::Tracked);
    assert_eq!(d.on_acquire(t0(), 2), Tracking::Tracked);
    assert_eq!(d.on_acquire(t0(), 3), Tracking::Overflow);
    assert_eq!(d.on_release(t0(), 3), Release::Unknown);
    assert_eq!(
        d.on_release(t0(), 1),
        Release::OnTime {
            held: Duration::ZERO
        }
    );
    assert_eq!(d.on_acquire(t0(), 3), Tracking::Tracked);
    let s = d.stats();
    assert_eq!((s.overflow, s.capacity, s.outstanding), (1, 2, 2));
}

#[test]
fn a_full_table_forgets_the_oldest_reported_leak_but_never_an_unpolled_one() {
    let mut d = detector::<2>(secs(5));
    let _ = d.on_acquire(t0(), 1);
    let _ = d.on_acquire(t0() + secs(1), 2);
    d.handle_timeout(t0() + secs(6));
    // Both leaked, neither report taken: nothing may be forgotten.
    assert_eq!(d.on_acquire(t0() + secs(6), 3), Tracking::Overflow);
    assert_eq!(events(&mut d).len(), 2);
    assert_eq!(d.on_acquire(t0() + secs(6), 3), Tracking::Tracked);
    assert_eq!(
        d.on_release(t0() + secs(7), 1),
        Release::Unknown,
        "1 was forgotten"
    );
    assert_eq!(
        d.on_release(t0() + secs(7), 2),
        Release::Late { held: secs(6) }
    );
    let s = d.stats();
    assert_eq!((s.forgotten, s.overflow, s.leaked_total), (1, 1, 2));
}

#[test]
fn a_zero_capacity_table_tracks_nothing() {
    let mut d = detector::<0>(secs(5));
    assert_eq!(d.on_acquire(t0(), 1), Tracking::Overflow);
    assert_eq!(d.on_release(t0(), 1), Release::Unknown);
    d.handle_timeout(Instant::MAX);
    assert_eq!(d.poll_timeout(), None);
    assert_eq!(d.poll_event(), None);
}

#[test]
fn a_flood_of_acquisitions_stays_in_the_table() {
    let mut d = detector::<64>(secs(5));
    for id in 0..20_000u64 {
        let now = t0() + Duration::from_millis(id);
        let _ = d.on_acquire(now, id);
        if id % 10 != 0 {
            let _ = d.on_release(now, id); // 1 in 10 leaks
        }
        d.handle_timeout(now);
        while d.poll_event().is_some() {}
        assert!(d.stats().outstanding <= 64);
    }
    let s = d.stats();
    assert_eq!(s.acquired + s.overflow, 20_000);
    assert_eq!(s.released + s.unknown_releases, 18_000);
    assert_eq!(s.duplicates, 0);
}

#[test]
fn time_going_backwards_is_clamped() {
    let mut d = detector::<4>(secs(5));
    let _ = d.on_acquire(t0() + secs(10), 1);
    let _ = d.on_acquire(Instant::ZERO, 2); // clamped to t0+10s
    assert_eq!(d.poll_timeout(), Some(t0() + secs(15)));
    assert_eq!(
        d.on_release(Instant::ZERO, 1),
        Release::OnTime {
            held: Duration::ZERO
        }
    );
    d.handle_timeout(Instant::ZERO);
    assert_eq!(d.poll_event(), None);
}

#[test]
fn huge_values_saturate() {
    let mut d = detector::<4>(Duration::MAX);
    let _ = d.on_acquire(Instant::ZERO, u64::MAX); // clamped to t0
    assert_eq!(
        d.poll_timeout(),
        None,
        "a threshold past the end of the clock never fires"
    );
    d.handle_timeout(Instant::MAX);
    assert_eq!(d.poll_event(), None);
    assert_eq!(
        d.on_release(Instant::MAX, u64::MAX),
        Release::OnTime {
            held: Instant::MAX - t0()
        }
    );
    let mut d = detector::<4>(Duration::from_nanos(1));
    let _ = d.on_acquire(Instant::MAX, 0);
    assert_eq!(d.poll_timeout(), None);
    d.handle_timeout(Instant::MAX);
    assert_eq!(d.stats().leaked_total, 0);
}

#[test]
fn builder_rejects_a_zero_threshold() {
    assert_eq!(
        LeakConfig::builder().threshold(Duration::ZERO).build(),
        Err(ConfigError::Zero { field: "threshold" })
    );
    assert_eq!(LeakConfig::default().threshold(), secs(60));
    assert_eq!(LeakConfig::builder().build(), Ok(LeakConfig::default()));
}

#[test]
fn config_returns_the_configuration_the_detector_was_built_with() {
    let d = detector::<4>(Duration::from_millis(1_234));
    assert_eq!(d.config().threshold(), Duration::from_millis(1_234));
    assert_eq!(
        d.config(),
        &LeakConfig::builder()
            .threshold(Duration::from_millis(1_234))
            .build()
            .expect("valid")
    );
}
