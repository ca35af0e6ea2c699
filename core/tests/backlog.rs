//! Scenario tests for `keel_core::backlog` on a simulated clock.

use core::time::Duration;

use keel_core::backlog::{Backlog, BacklogConfig, BacklogEvent, BacklogFull, Priority};
use keel_core::time::Instant;
use keel_core::ConfigError;

fn t0() -> Instant {
    Instant::from_secs(1_000)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn config(high: u64, low: u64, reserve: u64) -> BacklogConfig {
    BacklogConfig::builder()
        .high(high)
        .low(low)
        .critical_reserve(reserve)
        .build()
        .expect("valid")
}

fn admit_all(b: &mut Backlog, now: Instant, p: Priority) -> u64 {
    let mut n = 0;
    while b.try_acquire(now, p).is_ok() {
        n += 1;
        assert!(n < 1_000_000, "the backlog never refused");
    }
    n
}

fn events(b: &mut Backlog) -> Vec<BacklogEvent> {
    core::iter::from_fn(|| b.poll_event()).collect()
}

#[test]
fn refuses_normal_work_at_high_and_counts_each_admission() {
    let mut b = Backlog::new(config(10, 5, 0), t0());
    assert_eq!(admit_all(&mut b, t0(), Priority::Normal), 10);
    let r = b.try_acquire(t0(), Priority::Normal).unwrap_err();
    assert_eq!(
        r.reason,
        BacklogFull::Full {
            depth: 10,
            bound: 10
        }
    );
    assert_eq!(r.retry_at, None, "no drain measured: no hint");
    let s = b.stats();
    assert_eq!(
        (s.admitted, s.refused_full, s.depth, s.peak_depth),
        (10, 2, 10, 10)
    );
    assert!(s.full);
    assert_eq!(
        events(&mut b),
        vec![BacklogEvent::Full {
            at: t0(),
            depth: 10
        }]
    );
}

#[test]
fn hysteresis_admits_again_only_at_low() {
    let mut b = Backlog::new(config(10, 5, 0), t0());
    let _ = admit_all(&mut b, t0(), Priority::Normal);
    let _ = events(&mut b);
    b.on_dequeued(t0(), 1); // 9: below high, but still full
    assert!(b.is_full());
    assert!(b.try_acquire(t0(), Priority::Normal).is_err());
    b.on_dequeued(t0(), 3); // 6
    assert!(b.try_acquire(t0(), Priority::Normal).is_err());
    b.on_dequeued(t0(), 1); // 5 = low
    assert!(!b.is_full());
    assert_eq!(
        events(&mut b),
        vec![BacklogEvent::Admitting { at: t0(), depth: 5 }]
    );
    assert_eq!(admit_all(&mut b, t0(), Priority::Normal), 5);
    assert_eq!(b.stats().full_transitions, 2);
}

#[test]
fn critical_work_uses_the_reserve_and_ignores_the_hysteresis() {
    let mut b = Backlog::new(config(10, 5, 3), t0());
    assert_eq!(admit_all(&mut b, t0(), Priority::Normal), 10);
    assert_eq!(admit_all(&mut b, t0(), Priority::Critical), 3);
    let r = b.try_acquire(t0(), Priority::Critical).unwrap_err();
    assert_eq!(
        r.reason,
        BacklogFull::Full {
            depth: 13,
            bound: 13
        }
    );
    b.on_dequeued(t0(), 1);
    assert!(b.is_full());
    assert!(
        b.try_acquire(t0(), Priority::Critical).is_ok(),
        "within the reserve while full"
    );
    assert_eq!(b.stats().admitted_critical, 4);
}

#[test]
fn retry_at_comes_from_the_measured_drain_rate() {
    let c = BacklogConfig::builder()
        .high(1_000)
        .low(500)
        .critical_reserve(0)
        .build()
        .expect("valid");
    let mut b = Backlog::new(c, t0());
    b.on_enqueued(t0(), 1_000); // full, not through admission
                                // 100 dequeues per second for 4 s: the EWMA starts at the first window's 100 per second.
    for s in 0..4 {
        b.on_dequeued(t0() + Duration::from_secs(s) + ms(500), 100);
    }
    let now = t0() + Duration::from_secs(4);
    let r = b.try_acquire(now, Priority::Normal).unwrap_err();
    assert_eq!(b.depth(), 600);
    assert_eq!(b.drain_rate_milli(), 100_000);
    // 100 jobs above `low` at 100 per second: one second.
    assert_eq!(r.retry_at, Some(now + Duration::from_secs(1)));
}

#[test]
fn a_stalled_queue_decays_the_rate_to_zero_and_the_hint_to_none() {
    let mut b = Backlog::new(config(10, 5, 0), t0());
    let _ = admit_all(&mut b, t0(), Priority::Normal);
    b.on_dequeued(t0() + ms(10), 4); // 6, still full; 4 per second in the first window
    let r = b
        .try_acquire(t0() + Duration::from_secs(1), Priority::Normal)
        .unwrap_err();
    assert_eq!(r.retry_at, Some(t0() + Duration::from_secs(1) + ms(250)));
    // Nothing drains for a long time: the rate decays away.
    let late = t0() + Duration::from_secs(1_000);
    let r = b.try_acquire(late, Priority::Normal).unwrap_err();
    assert_eq!(b.drain_rate_milli(), 0);
    assert_eq!(r.retry_at, None);
}

#[test]
fn the_rate_decays_a_quarter_per_empty_window() {
    let mut b = Backlog::new(config(10, 5, 0), t0());
    b.on_dequeued(t0(), 64);
    b.on_dequeued(t0() + Duration::from_secs(1), 0);
    assert_eq!(b.drain_rate_milli(), 64_000);
    b.on_dequeued(t0() + Duration::from_secs(3), 0); // two more windows, both empty
    assert_eq!(b.drain_rate_milli(), 36_000);
}

#[test]
fn a_stale_depth_refuses_normal_work_but_not_critical() {
    let c = BacklogConfig::builder()
        .high(100)
        .low(50)
        .critical_reserve(10)
        .max_staleness(Duration::from_secs(2))
        .build()
        .expect("valid");
    let mut b = Backlog::new(c, t0());
    assert_eq!(
        b.poll_timeout(),
        None,
        "never stale before a first observation"
    );
    b.on_depth(t0(), 20);
    assert_eq!(b.poll_timeout(), Some(t0() + Duration::from_secs(2)));
    let just_before = t0() + Duration::from_secs(2) - Duration::from_nanos(1);
    assert!(b.try_acquire(just_before, Priority::Normal).is_ok());
    b.handle_timeout(just_before);
    assert!(!b.is_stale(), "an early timer is a no-op");
    let at = t0() + Duration::from_secs(2);
    b.handle_timeout(at);
    assert!(b.is_stale());
    assert_eq!(b.poll_timeout(), None);
    let r = b.try_acquire(at, Priority::Normal).unwrap_err();
    assert_eq!(r.reason, BacklogFull::Stale { observed_at: t0() });
    assert_eq!(r.retry_at, None);
    assert!(b.try_acquire(at, Priority::Critical).is_ok());
    b.on_depth(at + ms(1), 30);
    assert!(b.try_acquire(at + ms(1), Priority::Normal).is_ok());
    assert_eq!(
        events(&mut b),
        vec![
            BacklogEvent::Stale {
                at,
                observed_at: t0()
            },
            BacklogEvent::Fresh {
                at: at + ms(1),
                depth: 30
            }
        ]
    );
    let s = b.stats();
    assert_eq!((s.refused_stale, s.observations, s.depth), (1, 2, 31));
}

#[test]
fn staleness_is_noticed_by_admission_without_the_timer() {
    let c = BacklogConfig::builder()
        .high(100)
        .max_staleness(Duration::from_secs(1))
        .build()
        .expect("valid");
    let mut b = Backlog::new(c, t0());
    b.on_depth(t0(), 0);
    let r = b
        .try_acquire(t0() + Duration::from_secs(5), Priority::Normal)
        .unwrap_err();
    assert!(matches!(r.reason, BacklogFull::Stale { .. }));
}

#[test]
fn an_observed_drop_counts_as_drain() {
    let mut b = Backlog::new(config(100, 50, 0), t0());
    b.on_depth(t0(), 100);
    b.on_depth(t0() + ms(500), 70);
    let _ = b.try_acquire(t0() + ms(1_000), Priority::Normal);
    assert_eq!(b.drain_rate_milli(), 30_000);
    // A rise (other producers) is not negative drain.
    b.on_depth(t0() + ms(1_500), 90);
    let _ = b.try_acquire(t0() + ms(2_000), Priority::Normal);
    assert_eq!(b.drain_rate_milli(), 22_500);
}

#[test]
fn a_flood_never_pushes_the_estimate_past_the_bound() {
    let mut b = Backlog::new(config(1_000, 900, 100), t0());
    b.on_depth(t0(), 0);
    let mut admitted = 0u64;
    for i in 0..100_000u64 {
        let p = if i % 7 == 0 {
            Priority::Critical
        } else {
            Priority::Normal
        };
        if b.try_acquire(t0() + Duration::from_nanos(i), p).is_ok() {
            admitted += 1;
        }
        assert!(b.depth() <= 1_100);
    }
    assert_eq!(admitted, 1_100);
    let s = b.stats();
    assert_eq!(s.admitted + s.admitted_critical, 1_100);
    assert_eq!(s.refused_full, 100_000 - 1_100);
}

#[test]
fn huge_values_saturate() {
    let mut b = Backlog::new(config(u64::MAX, 0, u64::MAX), Instant::ZERO);
    b.on_enqueued(Instant::ZERO, u64::MAX);
    b.on_enqueued(Instant::ZERO, u64::MAX);
    assert_eq!(b.depth(), u64::MAX);
    assert!(b.is_full());
    let r = b
        .try_acquire(Instant::ZERO, Priority::Critical)
        .unwrap_err();
    assert_eq!(
        r.reason,
        BacklogFull::Full {
            depth: u64::MAX,
            bound: u64::MAX
        }
    );
    b.on_dequeued(Instant::from_nanos(1), u64::MAX);
    assert_eq!(b.depth(), 0);
    // A rate of u64::MAX dequeues in a 1 ms window, then a huge excess: no overflow.
    b.on_enqueued(Instant::MAX, u64::MAX);
    b.on_depth(Instant::MAX, u64::MAX);
    b.handle_timeout(Instant::MAX);
    let r = b.try_acquire(Instant::MAX, Priority::Normal);
    assert!(r.is_err());
    assert_eq!(b.poll_timeout(), None);
    let _ = b.stats();
}

#[test]
fn the_retry_hint_past_the_end_of_the_clock_is_none() {
    let mut b = Backlog::new(config(10, 0, 0), Instant::ZERO);
    b.on_enqueued(Instant::ZERO, u64::MAX);
    b.on_dequeued(Instant::ZERO, 1); // 1 job per second
    let r = b
        .try_acquire(Instant::from_secs(1), Priority::Normal)
        .unwrap_err();
    assert_eq!(b.drain_rate_milli(), 1_000);
    assert_eq!(
        r.retry_at, None,
        "u64::MAX seconds is past the end of the clock"
    );
}

#[test]
fn time_going_backwards_is_clamped() {
    let c = BacklogConfig::builder()
        .high(10)
        .max_staleness(Duration::from_secs(1))
        .build()
        .expect("valid");
    let mut b = Backlog::new(c, t0());
    b.on_depth(t0() + Duration::from_secs(10), 0);
    // An older `now` is the newest seen: the observation stays fresh until 11 s.
    b.on_depth(t0(), 1);
    assert_eq!(b.poll_timeout(), Some(t0() + Duration::from_secs(11)));
    assert!(b.try_acquire(Instant::ZERO, Priority::Normal).is_ok());
    assert!(b.try_acquire(t0() + ms(10_999), Priority::Normal).is_ok());
    assert!(b.try_acquire(t0() + ms(11_000), Priority::Normal).is_err());
}

#[test]
fn the_event_ring_drops_the_oldest_when_nobody_polls() {
    let mut b = Backlog::new(config(1, 0, 0), t0());
    for _ in 0..20 {
        b.on_enqueued(t0(), 1);
        b.on_dequeued(t0(), 1);
    }
    let s = b.stats();
    assert_eq!(s.full_transitions, 20);
    assert_eq!(s.events_dropped, 40 - 8);
    assert_eq!(events(&mut b).len(), 8);
}

#[test]
fn builder_rejects_what_cannot_work() {
    assert_eq!(
        BacklogConfig::builder().high(0).build(),
        Err(ConfigError::Zero { field: "high" })
    );
    assert!(matches!(
        BacklogConfig::builder().high(10).low(10).build(),
        Err(ConfigError::OutOfRange { field: "low", .. })
    ));
    assert!(matches!(
        BacklogConfig::builder().high(10).low(11).build(),
        Err(ConfigError::OutOfRange { field: "low", .. })
    ));
    assert_eq!(
        BacklogConfig::builder()
            .max_staleness(Duration::ZERO)
            .build(),
        Err(ConfigError::Zero {
            field: "max_staleness"
        })
    );
    assert!(matches!(
        BacklogConfig::builder()
            .drain_window(Duration::ZERO)
            .build(),
        Err(ConfigError::OutOfRange {
            field: "drain_window",
            ..
        })
    ));
    assert!(matches!(
        BacklogConfig::builder()
            .drain_window(Duration::from_secs(3601))
            .build(),
        Err(ConfigError::OutOfRange {
            field: "drain_window",
            ..
        })
    ));
    let one = BacklogConfig::builder().high(1).build().expect("valid");
    assert_eq!((one.high(), one.low(), one.critical_reserve()), (1, 0, 0));
    let d = BacklogConfig::default();
    assert_eq!(
        (d.high(), d.low(), d.critical_reserve(), d.critical_bound()),
        (10_000, 9_000, 1_000, 11_000)
    );
    assert_eq!(d.max_staleness(), Duration::from_secs(1));
    assert_eq!(d.drain_window(), Duration::from_secs(1));
    assert_eq!(BacklogConfig::builder().build(), Ok(d));
}

#[test]
fn staleness_off_with_duration_max() {
    let c = BacklogConfig::builder()
        .high(10)
        .max_staleness(Duration::MAX)
        .build()
        .expect("valid");
    let mut b = Backlog::new(c, t0());
    b.on_depth(t0(), 0);
    assert_eq!(b.poll_timeout(), None);
    assert!(b.try_acquire(Instant::MAX, Priority::Normal).is_ok());
}

#[test]
fn rejection_messages_say_what_to_change() {
    let full = BacklogFull::Full { depth: 5, bound: 5 };
    assert!(full.to_string().contains("raise `high`"));
    let stale = BacklogFull::Stale {
        observed_at: Instant::ZERO,
    };
    assert!(stale.to_string().contains("max_staleness"));
}

#[test]
fn a_small_rate_decays_all_the_way_to_zero() {
    let mut b = Backlog::new(config(10, 5, 0), t0());
    b.on_dequeued(t0(), 1);
    b.on_dequeued(t0() + Duration::from_secs(1), 0);
    assert_eq!(b.drain_rate_milli(), 1_000);
    // 99 empty windows (fewer than the shortcut's 160): the rounding must reach zero.
    b.on_dequeued(t0() + Duration::from_secs(100), 0);
    assert_eq!(b.drain_rate_milli(), 0);
}

#[test]
fn config_returns_the_configuration_the_machine_was_built_with() {
    let c = BacklogConfig::builder()
        .high(50)
        .low(7)
        .critical_reserve(3)
        .max_staleness(ms(1_234))
        .drain_window(ms(250))
        .build()
        .expect("valid");
    let b = Backlog::new(c, t0());
    assert_eq!(b.config(), &c);
    assert_eq!(
        (
            b.config().high(),
            b.config().low(),
            b.config().critical_bound()
        ),
        (50, 7, 53)
    );
}

#[test]
fn the_drain_window_range_includes_its_ends() {
    for window in [ms(1), Duration::from_secs(3_600)] {
        let c = BacklogConfig::builder()
            .drain_window(window)
            .build()
            .expect("an end of the documented range");
        assert_eq!(c.drain_window(), window);
    }
    for window in [
        Duration::from_micros(999),
        Duration::from_secs(3_600) + ms(1),
    ] {
        assert!(matches!(
            BacklogConfig::builder().drain_window(window).build(),
            Err(ConfigError::OutOfRange {
                field: "drain_window",
                ..
            })
        ));
    }
}
