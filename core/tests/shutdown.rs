//! Scenario tests for the graceful-shutdown machine, on a simulated clock.

use core::time::Duration;

use keel_core::shutdown::{
    Shutdown, ShutdownConfig, ShutdownDecision, ShutdownEvent, ShutdownPermit, ShutdownState,
};
use keel_core::{ConfigError, Instant, Rejected};

const T0: Instant = Instant::from_secs(1_000);

fn secs(s: u64) -> Instant {
    T0 + Duration::from_secs(s)
}

fn machine(grace_secs: u64) -> Shutdown {
    let config = ShutdownConfig::builder()
        .grace_period(Duration::from_secs(grace_secs))
        .build()
        .expect("valid config");
    Shutdown::new(config, T0)
}

fn admit(sd: &mut Shutdown, now: Instant) -> ShutdownPermit {
    match sd.try_acquire(now) {
        Ok(t) => t,
        Err(rejected) => panic!("refused while running: {rejected:?}"),
    }
}

fn events(sd: &mut Shutdown) -> Vec<ShutdownEvent> {
    core::iter::from_fn(|| sd.poll_event()).collect()
}

#[test]
fn default_grace_period_is_30_seconds_like_kubernetes() {
    assert_eq!(
        ShutdownConfig::default().grace_period(),
        Duration::from_secs(30)
    );
    assert_eq!(
        ShutdownConfig::builder().build().unwrap().grace_period(),
        Duration::from_secs(30)
    );
}

#[test]
fn zero_grace_period_is_rejected() {
    assert_eq!(
        ShutdownConfig::builder()
            .grace_period(Duration::ZERO)
            .build(),
        Err(ConfigError::Zero {
            field: "grace_period"
        })
    );
}

#[test]
fn admits_work_while_running_with_sequential_ticket_ids() {
    let mut sd = machine(5);
    assert!(sd.is_accepting());
    assert_eq!(admit(&mut sd, T0).id(), 0);
    assert_eq!(admit(&mut sd, T0).id(), 1);
    assert_eq!(sd.in_flight(), 2);
    assert_eq!(sd.poll_timeout(), None);
}

#[test]
fn stops_accepting_at_once_when_draining() {
    let mut sd = machine(5);
    let _t = admit(&mut sd, T0);
    assert_eq!(
        sd.on_signal(secs(1)),
        ShutdownDecision::Drain {
            deadline: Some(secs(6)),
            in_flight: 1
        }
    );
    assert!(!sd.is_accepting());
    assert_eq!(
        sd.state(),
        ShutdownState::Draining {
            deadline: Some(secs(6))
        }
    );
    let refused = Rejected {
        reason: ShutdownState::Draining {
            deadline: Some(secs(6)),
        },
        retry_at: None,
    };
    assert_eq!(sd.try_acquire(secs(1)), Err(refused));
    assert_eq!(sd.try_acquire(secs(2)), Err(refused));
    let s = sd.stats();
    assert_eq!((s.started, s.refused, s.in_flight), (1, 2, 1));
}

#[test]
fn in_flight_work_finishes_before_the_deadline() {
    let mut sd = machine(5);
    let early = admit(&mut sd, T0);
    assert_eq!(sd.on_work_finished(T0, early), ShutdownDecision::Continue);
    let a = admit(&mut sd, T0);
    let b = admit(&mut sd, T0);
    let c = admit(&mut sd, T0);
    assert_eq!(
        sd.on_signal(secs(1)),
        ShutdownDecision::Drain {
            deadline: Some(secs(6)),
            in_flight: 3
        }
    );
    assert_eq!(sd.on_work_finished(secs(2), a), ShutdownDecision::Continue);
    assert_eq!(sd.on_work_finished(secs(3), b), ShutdownDecision::Continue);
    sd.handle_timeout(secs(3)); // early: a no-op
    assert!(sd.is_draining());
    assert_eq!(sd.poll_timeout(), Some(secs(6)));
    assert_eq!(
        sd.on_work_finished(secs(5), c),
        ShutdownDecision::StopNow { aborted: 0 }
    );
    assert_eq!(
        events(&mut sd),
        vec![
            ShutdownEvent::DrainStarted {
                deadline: Some(secs(6)),
                in_flight: 3
            },
            ShutdownEvent::Drained { completed: 3 },
        ]
    );
    let s = sd.stats();
    assert_eq!(
        (s.started, s.completed, s.aborted, s.in_flight),
        (4, 4, 0, 0)
    );
    sd.handle_timeout(secs(6)); // the old deadline: nothing left to do
    assert_eq!(sd.stats().aborted, 0);
    assert_eq!(sd.poll_event(), None);
}

#[test]
fn drain_completes_when_the_last_ticket_returns() {
    let mut sd = machine(5);
    let a = admit(&mut sd, T0);
    let b = admit(&mut sd, T0);
    let _ = sd.on_signal(secs(1));
    assert_eq!(sd.on_work_finished(secs(2), a), ShutdownDecision::Continue);
    assert_eq!(
        sd.on_work_finished(secs(4), b),
        ShutdownDecision::StopNow { aborted: 0 }
    );
    assert!(sd.is_stopped());
    assert_eq!(sd.poll_timeout(), None);
    assert_eq!(
        events(&mut sd),
        vec![
            ShutdownEvent::DrainStarted {
                deadline: Some(secs(6)),
                in_flight: 2
            },
            ShutdownEvent::Drained { completed: 2 },
        ]
    );
    let summary = sd.summary();
    assert_eq!(summary.completed, 2);
    assert_eq!(summary.aborted, 0);
    assert_eq!(summary.drained_in, Some(Duration::from_secs(3)));
    assert_eq!(
        summary.to_string(),
        "completed=2 aborted=0 refused=0 drained_in=3s"
    );
}

#[test]
fn a_hung_task_is_cut_off_at_the_deadline_and_counted() {
    let mut sd = machine(5);
    let quick = admit(&mut sd, T0);
    let hung = admit(&mut sd, T0);
    let _ = sd.on_signal(secs(1));
    assert_eq!(
        sd.on_work_finished(secs(2), quick),
        ShutdownDecision::Continue
    );
    // The hung task never finishes; the deadline fires anyway.
    assert_eq!(sd.poll_timeout(), Some(secs(6)));
    sd.handle_timeout(secs(6) - Duration::from_nanos(1));
    assert!(sd.is_draining(), "one nanosecond early is still draining");
    sd.handle_timeout(secs(6));
    assert!(sd.is_stopped());
    assert_eq!(sd.poll_timeout(), None);
    assert_eq!(
        events(&mut sd),
        vec![
            ShutdownEvent::DrainStarted {
                deadline: Some(secs(6)),
                in_flight: 2
            },
            ShutdownEvent::DeadlineExceeded { aborted: 1 },
        ]
    );
    let s = sd.stats();
    assert_eq!(
        (s.started, s.completed, s.aborted, s.in_flight),
        (2, 1, 1, 0)
    );
    assert_eq!(sd.summary().drained_in, Some(Duration::from_secs(5)));

    // The aborted task winds down later: ignored, counts never go negative.
    assert_eq!(
        sd.on_work_finished(secs(9), hung),
        ShutdownDecision::Continue
    );
    let s = sd.stats();
    assert_eq!(
        (s.completed, s.aborted, s.in_flight, s.finished_after_stop),
        (1, 1, 0, 1)
    );
}

#[test]
fn a_second_signal_stops_at_once() {
    let mut sd = machine(30);
    let _a = admit(&mut sd, T0);
    let _b = admit(&mut sd, T0);
    assert_eq!(
        sd.on_signal(secs(1)),
        ShutdownDecision::Drain {
            deadline: Some(secs(31)),
            in_flight: 2
        }
    );
    assert_eq!(
        sd.on_signal(secs(2)),
        ShutdownDecision::StopNow { aborted: 2 }
    );
    assert!(sd.is_stopped());
    assert_eq!(sd.on_signal(secs(3)), ShutdownDecision::Continue);
    assert_eq!(
        events(&mut sd),
        vec![
            ShutdownEvent::DrainStarted {
                deadline: Some(secs(31)),
                in_flight: 2
            },
            ShutdownEvent::ForcedStop { aborted: 2 },
        ]
    );
    assert_eq!(sd.stats().signals, 3);
    assert_eq!(sd.summary().drained_in, Some(Duration::from_secs(1)));
}

#[test]
fn draining_with_nothing_in_flight_stops_at_once() {
    let mut sd = machine(5);
    assert_eq!(
        sd.begin_drain(secs(1)),
        ShutdownDecision::StopNow { aborted: 0 }
    );
    assert!(sd.is_stopped());
    assert_eq!(
        events(&mut sd),
        vec![
            ShutdownEvent::DrainStarted {
                deadline: Some(secs(6)),
                in_flight: 0
            },
            ShutdownEvent::Drained { completed: 0 },
        ]
    );
    assert_eq!(sd.summary().drained_in, Some(Duration::ZERO));
}

#[test]
fn begin_drain_is_idempotent() {
    let mut sd = machine(5);
    let _a = admit(&mut sd, T0);
    assert_eq!(
        sd.begin_drain(secs(1)),
        ShutdownDecision::Drain {
            deadline: Some(secs(6)),
            in_flight: 1
        }
    );
    assert_eq!(sd.begin_drain(secs(2)), ShutdownDecision::Continue);
    assert_eq!(
        sd.state(),
        ShutdownState::Draining {
            deadline: Some(secs(6))
        }
    );
}

#[test]
fn stop_now_while_running_aborts_everything_without_a_drain() {
    let mut sd = machine(5);
    let _a = admit(&mut sd, T0);
    assert_eq!(
        sd.stop_now(secs(1)),
        ShutdownDecision::StopNow { aborted: 1 }
    );
    assert_eq!(
        events(&mut sd),
        vec![ShutdownEvent::ForcedStop { aborted: 1 }]
    );
    assert_eq!(sd.summary().drained_in, Some(Duration::ZERO));
    assert_eq!(sd.stop_now(secs(2)), ShutdownDecision::Continue);
}

#[test]
fn summary_has_no_drain_time_while_running_or_draining() {
    let mut sd = machine(5);
    assert_eq!(sd.summary().drained_in, None);
    let _a = admit(&mut sd, T0);
    let _ = sd.on_signal(secs(1));
    assert_eq!(sd.summary().drained_in, None);
}

#[test]
fn time_going_backwards_does_not_rewind_the_deadline() {
    let mut sd = machine(5);
    let _a = admit(&mut sd, secs(10));
    assert_eq!(
        sd.on_signal(secs(1)),
        ShutdownDecision::Drain {
            deadline: Some(secs(15)),
            in_flight: 1
        }
    );
    sd.handle_timeout(Instant::ZERO);
    assert!(sd.is_draining());
    sd.handle_timeout(secs(15));
    assert!(sd.is_stopped());
}

#[test]
fn does_not_panic_on_duration_max_and_instant_max() {
    let config = ShutdownConfig::builder()
        .grace_period(Duration::MAX)
        .build()
        .unwrap();
    let mut sd = Shutdown::new(config, Instant::MAX);
    let _a = admit(&mut sd, Instant::MAX);
    assert_eq!(
        sd.on_signal(Instant::MAX),
        ShutdownDecision::Drain {
            deadline: None,
            in_flight: 1
        }
    );
    // A deadline past the end of the clock never comes, even at the clock's last instant;
    // stop_now still stops.
    sd.handle_timeout(Instant::MAX);
    assert!(sd.is_draining());
    assert_eq!(sd.poll_timeout(), None);
    assert_eq!(
        sd.stop_now(Instant::MAX),
        ShutdownDecision::StopNow { aborted: 1 }
    );
    assert_eq!(sd.stats().aborted, 1);
}

#[test]
fn a_long_grace_period_waits_for_work() {
    let config = ShutdownConfig::builder()
        .grace_period(Duration::MAX)
        .build()
        .unwrap();
    let mut sd = Shutdown::new(config, T0);
    let a = admit(&mut sd, T0);
    let _ = sd.on_signal(T0);
    // No deadline: `None`, in the state as in poll_timeout, and even the end of the clock
    // does not abort the work.
    assert_eq!(sd.state(), ShutdownState::Draining { deadline: None });
    assert_eq!(sd.poll_timeout(), None);
    sd.handle_timeout(secs(1_000_000));
    assert!(sd.is_draining());
    sd.handle_timeout(Instant::MAX);
    assert!(sd.is_draining());
    assert_eq!(
        sd.on_work_finished(secs(1_000_001), a),
        ShutdownDecision::StopNow { aborted: 0 }
    );
}

// ---- The Kubernetes drain delay ---------------------------------------------------------------

fn delayed(grace_secs: u64, delay: Duration) -> Shutdown {
    let config = ShutdownConfig::builder()
        .grace_period(Duration::from_secs(grace_secs))
        .drain_delay(delay)
        .build()
        .expect("valid config");
    Shutdown::new(config, T0)
}

#[test]
fn no_drain_delay_by_default() {
    assert_eq!(ShutdownConfig::default().drain_delay(), Duration::ZERO);
    let mut sd = machine(10);
    assert!(sd.is_ready());
    let _t = admit(&mut sd, T0);
    assert!(matches!(sd.on_signal(T0), ShutdownDecision::Drain { .. }));
}

#[test]
fn drain_delay_keeps_admitting_while_not_ready_then_drains_at_its_end() {
    let mut sd = delayed(10, Duration::from_secs(5));
    assert!(sd.is_ready());
    let a = admit(&mut sd, T0);

    // SIGTERM: not ready at once, still admitting, the drain starts at T0 + 5 s.
    assert_eq!(
        sd.on_signal(secs(1)),
        ShutdownDecision::Delay {
            until: Some(secs(6))
        }
    );
    assert_eq!(
        sd.state(),
        ShutdownState::Delaying {
            until: Some(secs(6))
        }
    );
    assert!(!sd.is_ready() && sd.is_accepting() && sd.is_delaying() && !sd.is_draining());
    assert_eq!(sd.poll_timeout(), Some(secs(6)));
    let b = admit(&mut sd, secs(3)); // a load balancer that has not heard yet

    // Early timeouts change nothing.
    sd.handle_timeout(secs(5));
    assert!(sd.is_delaying());
    assert_eq!(sd.poll_timeout(), Some(secs(6)));

    // The delay ends: refuse and drain, the grace period counted from now.
    sd.handle_timeout(secs(6));
    assert_eq!(
        sd.state(),
        ShutdownState::Draining {
            deadline: Some(secs(16))
        }
    );
    assert!(!sd.is_accepting() && !sd.is_ready());
    assert!(sd.try_acquire(secs(6)).is_err());
    assert_eq!(sd.poll_timeout(), Some(secs(16)));

    assert_eq!(sd.on_work_finished(secs(7), a), ShutdownDecision::Continue);
    assert_eq!(
        sd.on_work_finished(secs(8), b),
        ShutdownDecision::StopNow { aborted: 0 }
    );
    assert_eq!(
        events(&mut sd),
        [
            ShutdownEvent::DelayStarted {
                until: Some(secs(6))
            },
            ShutdownEvent::DrainStarted {
                deadline: Some(secs(16)),
                in_flight: 2
            },
            ShutdownEvent::Drained { completed: 2 },
        ]
    );
    let summary = sd.summary();
    assert_eq!(
        (summary.completed, summary.aborted, summary.refused),
        (2, 0, 1)
    );
    assert_eq!(summary.drained_in, Some(Duration::from_secs(2)));
}

#[test]
fn a_second_signal_during_the_drain_delay_stops_at_once() {
    let mut sd = delayed(10, Duration::from_secs(5));
    let _a = admit(&mut sd, T0);
    let _b = admit(&mut sd, T0);
    assert!(matches!(sd.on_signal(T0), ShutdownDecision::Delay { .. }));
    assert_eq!(
        sd.on_signal(secs(1)),
        ShutdownDecision::StopNow { aborted: 2 }
    );
    assert!(sd.is_stopped());
    assert_eq!(sd.poll_timeout(), None);
    assert_eq!(
        events(&mut sd),
        [
            ShutdownEvent::DelayStarted {
                until: Some(secs(5))
            },
            ShutdownEvent::ForcedStop { aborted: 2 },
        ]
    );
}

#[test]
fn begin_drain_cuts_the_drain_delay_short() {
    let mut sd = delayed(10, Duration::from_secs(5));
    let _a = admit(&mut sd, T0);
    assert!(matches!(sd.on_signal(T0), ShutdownDecision::Delay { .. }));
    assert_eq!(
        sd.begin_drain(secs(2)),
        ShutdownDecision::Drain {
            deadline: Some(secs(12)),
            in_flight: 1
        }
    );
    assert!(!sd.is_accepting());
    // The delay's end passing later changes nothing.
    sd.handle_timeout(secs(5));
    assert!(sd.is_draining());
}

#[test]
fn the_drain_delay_ending_with_nothing_in_flight_stops_at_once() {
    let mut sd = delayed(10, Duration::from_secs(5));
    let a = admit(&mut sd, T0);
    assert!(matches!(sd.on_signal(T0), ShutdownDecision::Delay { .. }));
    assert_eq!(sd.on_work_finished(secs(1), a), ShutdownDecision::Continue);
    assert!(
        sd.is_delaying(),
        "work ending during the delay does not end it"
    );
    sd.handle_timeout(secs(9)); // late: the clock jumped past the end
    assert!(sd.is_stopped());
    assert_eq!(
        events(&mut sd),
        [
            ShutdownEvent::DelayStarted {
                until: Some(secs(5))
            },
            ShutdownEvent::DrainStarted {
                deadline: Some(secs(19)),
                in_flight: 0
            },
            ShutdownEvent::Drained { completed: 0 },
        ]
    );
}

#[test]
fn a_drain_delay_past_the_end_of_the_clock_never_ends_by_itself() {
    let mut sd = delayed(10, Duration::MAX);
    let _a = admit(&mut sd, T0);
    assert_eq!(sd.on_signal(T0), ShutdownDecision::Delay { until: None });
    assert_eq!(sd.poll_timeout(), None);
    sd.handle_timeout(Instant::MAX);
    assert!(sd.is_delaying() && !sd.is_ready() && sd.is_accepting());
    assert!(matches!(
        sd.begin_drain(Instant::MAX),
        ShutdownDecision::Drain { .. }
    ));
}

#[test]
fn health_reports_the_drain_delay_as_not_ready_but_live() {
    use keel_core::health::{ComponentState, HealthReport};
    let mut sd = delayed(10, Duration::from_secs(5));
    let _ = sd.on_signal(T0);
    let report = HealthReport::new().with("shutdown", ComponentState::from_shutdown(sd.state()));
    assert!(!report.is_ready());
    assert!(report.is_live());
    assert_eq!(
        report.to_string(),
        "ready=false live=true reasons=[shutdown: drain delay]"
    );
}
