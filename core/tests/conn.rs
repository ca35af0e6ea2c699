//! Scenario tests for the connection machine (idle timeout, read deadline, reclamation,
//! lingering close), on a simulated clock.

// Runs in the `alloc` and `std` configurations only: the connection machine needs `alloc`.
#![cfg(feature = "alloc")]

use core::time::Duration;

use keel_core::conn::{CloseReason, ConnConfig, ConnEnd, ConnEvent, ConnTable};
use keel_core::{ConfigError, Instant};

fn secs(s: u64) -> Instant {
    Instant::from_secs(s)
}

fn ms(m: u64) -> Instant {
    Instant::from_millis(m)
}

fn table(idle: Option<u64>, min_idle_ms: Option<u64>) -> ConnTable {
    let config = ConnConfig::builder()
        .idle_timeout(idle.map(Duration::from_secs))
        .reclaim_min_idle(min_idle_ms.map(Duration::from_millis))
        .build()
        .expect("valid");
    ConnTable::new(config, Instant::ZERO)
}

fn events(t: &mut ConnTable) -> Vec<ConnEvent> {
    core::iter::from_fn(|| t.poll_event()).collect()
}

#[test]
fn defaults_are_documented_values() {
    let c = ConnConfig::default();
    assert_eq!(c.idle_timeout(), Some(Duration::from_secs(60)));
    assert_eq!(c.reclaim_min_idle(), Some(Duration::from_secs(1)));
    assert_eq!(c.linger_time(), Duration::from_secs(2));
    assert_eq!(c.linger_bytes(), 1 << 20);
}

#[test]
fn a_zero_idle_timeout_is_refused_with_a_hint() {
    let err = ConnConfig::builder()
        .idle_timeout(Some(Duration::ZERO))
        .build()
        .expect_err("zero");
    assert_eq!(
        err,
        ConfigError::Zero {
            field: "idle_timeout"
        }
    );
}

#[test]
fn closes_a_connection_silent_for_the_idle_timeout_and_counts_it() {
    let mut t = table(Some(10), None);
    t.on_open(Instant::ZERO, 7);
    t.on_activity(secs(4), 7, secs(4));
    assert_eq!(t.poll_timeout(), Some(secs(14)));
    t.handle_timeout(secs(13));
    assert!(events(&mut t).is_empty(), "not yet: active at 4 s");
    t.handle_timeout(secs(14));
    assert_eq!(
        events(&mut t),
        [ConnEvent::Close {
            id: 7,
            reason: CloseReason::Idle
        }]
    );
    assert_eq!(
        t.poll_timeout(),
        None,
        "a closing connection has no deadline"
    );
    t.on_closed(secs(14), 7, ConnEnd::Reset);
    let s = t.stats();
    assert_eq!((s.idle_closed, s.open, s.resets), (1, 0, 0));
}

#[test]
fn a_trickler_is_closed_at_its_read_deadline_although_bytes_flow() {
    let mut t = table(Some(60), None);
    t.on_open(Instant::ZERO, 1);
    t.on_read_deadline(Instant::ZERO, 1, Some(secs(10)));
    for s in 1..=12 {
        t.on_activity(secs(s), 1, secs(s)); // one byte a second, never a newline
        t.handle_timeout(secs(s));
        let closed = events(&mut t);
        if s < 10 {
            assert!(closed.is_empty(), "closed at {s} s");
        } else if s == 10 {
            assert_eq!(
                closed,
                [ConnEvent::Close {
                    id: 1,
                    reason: CloseReason::ReadDeadline
                }]
            );
        } else {
            assert!(closed.is_empty(), "closed twice");
        }
    }
    assert_eq!(t.stats().deadline_expired, 1);
}

#[test]
fn reclaims_the_longest_idle_connection_first_and_one_at_a_time() {
    let mut t = table(None, Some(1000));
    for id in 0..4 {
        t.on_open(Instant::ZERO, id);
    }
    t.on_activity(secs(5), 0, secs(5));
    t.on_activity(secs(5), 1, secs(2));
    t.on_activity(secs(5), 2, secs(3));
    t.on_activity(secs(5), 3, secs(5));
    assert_eq!(t.reclaim(secs(5)), Some(1));
    assert_eq!(t.reclaim(secs(5)), None, "connection 1 is still closing");
    t.on_closed(secs(5), 1, ConnEnd::Clean);
    assert_eq!(t.reclaim(ms(5_500)), Some(2));
    t.on_closed(ms(5_500), 2, ConnEnd::Clean);
    assert_eq!(t.reclaim(ms(5_500)), None, "0 and 3 were active 0.5 s ago");
    assert_eq!(t.reclaim(secs(6)), Some(0), "a tie goes to the lower id");
    let s = t.stats();
    assert_eq!(
        (s.reclaimed, s.clean),
        (3, 0),
        "a reclaimed end counts once"
    );
}

#[test]
fn never_reclaims_a_connection_idle_less_than_the_minimum() {
    let mut t = table(None, Some(1000));
    t.on_open(secs(10), 1);
    assert_eq!(t.reclaim(ms(10_999)), None);
    assert_eq!(t.reclaim(secs(11)), Some(1));
}

#[test]
fn reclamation_can_be_turned_off() {
    let mut t = table(None, None);
    t.on_open(Instant::ZERO, 1);
    assert_eq!(t.reclaim(secs(3600)), None);
}

#[test]
fn the_linger_deadline_is_never_past_the_drain_deadline() {
    let mut t = table(None, None);
    t.on_open(Instant::ZERO, 1);
    t.on_open(Instant::ZERO, 2);
    t.on_open(Instant::ZERO, 3);
    assert_eq!(t.on_handler_done(secs(1), 1, None), Some(secs(3)));
    assert_eq!(
        t.on_handler_done(secs(1), 2, Some(ms(1_500))),
        Some(ms(1_500))
    );
    assert_eq!(
        t.on_handler_done(secs(1), 3, Some(Instant::ZERO)),
        Some(secs(1)),
        "a drain deadline already past: close now"
    );
    assert_eq!(t.stats().lingering, 3);
    t.on_closed(secs(2), 1, ConnEnd::Clean);
    t.on_closed(secs(2), 2, ConnEnd::LingerTimeout);
    t.on_closed(secs(2), 3, ConnEnd::Reset);
    let s = t.stats();
    assert_eq!(
        (s.clean, s.linger_timeouts, s.resets, s.lingering, s.open),
        (1, 1, 1, 0, 0)
    );
}

#[test]
fn a_connection_the_server_closed_is_not_lingered() {
    let mut t = table(Some(1), None);
    t.on_open(Instant::ZERO, 1);
    t.handle_timeout(secs(1));
    assert_eq!(events(&mut t).len(), 1);
    assert_eq!(t.on_handler_done(secs(1), 1, None), None);
}

#[test]
fn a_zero_linger_time_closes_at_once() {
    let config = ConnConfig::builder()
        .linger_time(Duration::ZERO)
        .build()
        .expect("valid");
    let mut t = ConnTable::new(config, Instant::ZERO);
    t.on_open(Instant::ZERO, 1);
    assert_eq!(t.on_handler_done(secs(1), 1, None), None);
}

#[test]
fn does_not_panic_on_bad_instants_or_unknown_ids() {
    let mut t = table(Some(1), Some(0));
    t.on_open(Instant::MAX, 1);
    t.on_activity(Instant::ZERO, 1, Instant::MAX);
    t.on_read_deadline(Instant::ZERO, 99, Some(Instant::ZERO));
    t.on_closed(Instant::ZERO, 99, ConnEnd::Reset);
    assert_eq!(t.on_handler_done(Instant::ZERO, 99, None), None);
    t.handle_timeout(Instant::ZERO);
    assert_eq!(
        t.poll_timeout(),
        None,
        "an idle deadline past the end of time is never"
    );
    assert_eq!(
        t.reclaim(Instant::ZERO),
        Some(1),
        "clamped to the newest instant seen"
    );
}

#[test]
fn defended_within_reports_a_server_close_for_the_window_after_it() {
    let mut t = table(Some(10), Some(500));
    assert!(
        !t.defended_within(Duration::from_secs(10)),
        "nothing closed yet"
    );
    t.on_open(Instant::ZERO, 1);
    t.on_open(Instant::ZERO, 2);
    t.handle_timeout(secs(9));
    assert!(
        !t.defended_within(Duration::from_secs(10)),
        "nothing due at 9 s"
    );
    t.on_activity(secs(9), 2, secs(9));
    t.handle_timeout(secs(10)); // 1 idle since 0: closed at 10 s
    assert_eq!(events(&mut t).len(), 1);
    assert!(t.defended_within(Duration::from_secs(10)));
    t.on_closed(secs(10), 1, ConnEnd::Reset);
    t.on_activity(secs(19), 2, secs(15));
    assert!(
        t.defended_within(Duration::from_secs(10)),
        "9 s after the close"
    );
    // A reclamation is a defence too, and restarts the window.
    assert_eq!(t.reclaim(secs(20)), Some(2));
    t.on_activity(secs(29), 2, secs(15));
    assert!(
        t.defended_within(Duration::from_secs(10)),
        "9 s after the reclaim"
    );
    t.on_closed(secs(30), 2, ConnEnd::Reset);
    assert!(
        !t.defended_within(Duration::from_secs(10)),
        "10 s after: over"
    );
}

#[test]
fn a_drain_that_starts_during_a_linger_cuts_it_to_the_drain_deadline() {
    let mut t = table(None, None);
    t.on_open(Instant::ZERO, 1);
    let linger = t.on_handler_done(secs(1), 1, None).expect("lingers");
    assert_eq!(linger, secs(3), "the default 2 s linger");
    // Found by the fuzz target: asked again with an earlier drain deadline, the old linger
    // deadline came back, past the drain's.
    assert_eq!(
        t.on_handler_done(secs(2), 1, Some(ms(2_500))),
        Some(ms(2_500))
    );
    assert_eq!(
        t.on_handler_done(secs(2), 1, None),
        Some(ms(2_500)),
        "never longer again"
    );
}

/// The label strings are part of the API (logs): each is pinned.
#[test]
fn close_reason_labels_are_stable() {
    assert_eq!(CloseReason::Idle.as_str(), "idle");
    assert_eq!(CloseReason::ReadDeadline.as_str(), "read deadline");
    assert_eq!(CloseReason::Reclaimed.as_str(), "reclaimed");
}
