//! Property tests for the graceful-shutdown machine: counts never go negative, nothing is
//! admitted after the drain starts, the deadline always fires, and no input panics.

use core::time::Duration;

use keel_core::shutdown::{
    Shutdown, ShutdownConfig, ShutdownDecision, ShutdownEvent, ShutdownPermit, ShutdownState,
};
use keel_core::Instant;
use proptest::prelude::*;

#[path = "support/props.rs"]
mod props;

#[derive(Clone, Debug)]
enum Op {
    Start,
    Finish(usize),
    Signal,
    Drain,
    StopNow,
    Timeout,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Start),
        4 => any::<usize>().prop_map(Op::Finish),
        1 => Just(Op::Signal),
        1 => Just(Op::Drain),
        1 => Just(Op::StopNow),
        2 => Just(Op::Timeout),
    ]
}

fn time_step() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0i64),
        -5_000_000_000i64..5_000_000_000,
        Just(i64::MAX),
        Just(i64::MIN),
    ]
}

fn grace() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (1u64..10_000_000_000).prop_map(Duration::from_nanos),
        Just(Duration::MAX),
        Just(Duration::from_nanos(1)),
    ]
}

proptest! {
    #![proptest_config(props::config(512, "proptest-regressions/shutdown_props.txt"))]

    #[test]
    fn shutdown_invariants_hold_on_any_input(
        grace in grace(),
        start in any::<u64>(),
        ops in proptest::collection::vec((op(), time_step()), 0..64),
    ) {
        let config = ShutdownConfig::builder().grace_period(grace).build().unwrap();
        let mut sd = Shutdown::new(config, Instant::from_nanos(start));
        let mut tickets: Vec<ShutdownPermit> = Vec::new();
        let mut raw = start;
        let mut newest = start;
        // `Some(deadline)` once the drain started; the deadline is `None` when it never comes.
        let mut drain_deadline: Option<Option<Instant>> = None;
        // reference model: live tickets issued and not yet returned before the stop
        let mut model_in_flight: u64 = 0;
        for (op, step) in ops {
            raw = if step >= 0 { raw.saturating_add(step as u64) } else { raw.saturating_sub(step.unsigned_abs()) };
            if !(matches!(op, Op::Finish(_)) && tickets.is_empty()) {
                newest = newest.max(raw); // the machine sees this `now`
            }
            let now = Instant::from_nanos(raw);
            let was_stopped = sd.is_stopped();
            match op {
                Op::Start => match sd.try_acquire(now) {
                    Ok(t) => {
                        prop_assert!(drain_deadline.is_none() && !was_stopped, "admitted after the drain started");
                        model_in_flight += 1;
                        tickets.push(t);
                    }
                    Err(r) => prop_assert!(!sd.is_accepting() && r.reason == sd.state() && r.retry_at.is_none()),
                },
                Op::Finish(i) => {
                    if !tickets.is_empty() {
                        let t = tickets.swap_remove(i % tickets.len());
                        let d = sd.on_work_finished(now, t);
                        if !was_stopped {
                            model_in_flight -= 1;
                            if drain_deadline.is_some() && model_in_flight == 0 {
                                prop_assert_eq!(d, ShutdownDecision::StopNow { aborted: 0 });
                            } else {
                                prop_assert_eq!(d, ShutdownDecision::Continue);
                            }
                        } else {
                            prop_assert_eq!(d, ShutdownDecision::Continue);
                        }
                    }
                }
                Op::Signal | Op::Drain | Op::StopNow => {
                    let draining = sd.is_draining();
                    let d = match op {
                        Op::Signal => sd.on_signal(now),
                        Op::Drain => sd.begin_drain(now),
                        _ => sd.stop_now(now),
                    };
                    match d {
                        ShutdownDecision::Drain { deadline, in_flight } => {
                            prop_assert_eq!(in_flight, model_in_flight);
                            let expected = Some(Instant::from_nanos(newest) + grace).filter(|d| *d != Instant::MAX);
                            prop_assert_eq!(deadline, expected);
                            drain_deadline = Some(deadline);
                        }
                        ShutdownDecision::StopNow { aborted } => {
                            prop_assert!(!was_stopped);
                            let forced = matches!(op, Op::StopNow) || (draining && matches!(op, Op::Signal));
                            prop_assert_eq!(aborted, if forced { model_in_flight } else { 0 });
                            model_in_flight = 0;
                            drain_deadline.get_or_insert(Some(Instant::ZERO));
                        }
                        ShutdownDecision::Continue => {
                            prop_assert!(was_stopped || (draining && matches!(op, Op::Drain)));
                        }
                        ShutdownDecision::Delay { .. } => {
                            prop_assert!(false, "a drain delay without one configured");
                        }
                    }
                }
                Op::Timeout => {
                    sd.handle_timeout(now);
                    if let Some(t) = sd.poll_timeout() {
                        prop_assert!(t > Instant::from_nanos(newest), "poll_timeout not after handle_timeout");
                    }
                    if let Some(Some(deadline)) = drain_deadline {
                        if Instant::from_nanos(newest) >= deadline {
                            prop_assert!(sd.is_stopped(), "the deadline did not fire");
                            model_in_flight = 0;
                        }
                    }
                }
            }
            while sd.poll_event().is_some() {}
            let s = sd.stats();
            prop_assert_eq!(s.in_flight, model_in_flight);
            prop_assert_eq!(s.in_flight, sd.in_flight());
            prop_assert!(s.completed + s.aborted + s.in_flight == s.started);
            if sd.is_stopped() {
                prop_assert_eq!(s.in_flight, 0);
                prop_assert!(sd.summary().drained_in.is_some());
            }
        }
    }
}

fn delay() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (1u64..10_000_000_000).prop_map(Duration::from_nanos),
        Just(Duration::MAX),
        Just(Duration::from_nanos(1)),
    ]
}

proptest! {
    #![proptest_config(props::config(512, "proptest-regressions/shutdown_props.txt"))]

    /// With a drain delay: not ready from the first signal on; work is admitted during the
    /// delay and refused from the drain on; the drain starts once the delay has passed (at the
    /// first `handle_timeout` at or after it), with the deadline counted from then; a second
    /// signal stops at once; `poll_timeout` is always later than the newest `now` after
    /// `handle_timeout`; events come in order, at most three.
    #[test]
    fn drain_delay_invariants_hold_on_any_input(
        grace in grace(),
        delay in delay(),
        start in any::<u64>(),
        ops in proptest::collection::vec((op(), time_step()), 0..64),
    ) {
        let config = ShutdownConfig::builder()
            .grace_period(grace)
            .drain_delay(delay)
            .build()
            .unwrap();
        let mut sd = Shutdown::new(config, Instant::from_nanos(start));
        let mut tickets: Vec<ShutdownPermit> = Vec::new();
        let mut raw = start;
        let mut newest = start;
        let mut signalled = false;
        // `Some(until)` once the delay started (`until` is `None` when it never ends by itself).
        let mut delay_until: Option<Option<Instant>> = None;
        let mut events: Vec<ShutdownEvent> = Vec::new();
        for (op, step) in ops {
            raw = if step >= 0 { raw.saturating_add(step as u64) } else { raw.saturating_sub(step.unsigned_abs()) };
            if !(matches!(op, Op::Finish(_)) && tickets.is_empty()) {
                newest = newest.max(raw);
            }
            let now = Instant::from_nanos(raw);
            let before = sd.state();
            match op {
                Op::Start => match sd.try_acquire(now) {
                    Ok(t) => {
                        prop_assert!(matches!(before, ShutdownState::Running | ShutdownState::Delaying { .. }), "admitted while draining or stopped");
                        tickets.push(t);
                    }
                    Err(_) => prop_assert!(matches!(before, ShutdownState::Draining { .. } | ShutdownState::Stopped), "refused while running or delaying"),
                },
                Op::Finish(i) => {
                    if !tickets.is_empty() {
                        let t = tickets.swap_remove(i % tickets.len());
                        let _ = sd.on_work_finished(now, t);
                    }
                }
                Op::Signal => {
                    let d = sd.on_signal(now);
                    match before {
                        ShutdownState::Running => {
                            signalled = true;
                            let until = Some(Instant::from_nanos(newest) + delay).filter(|u| *u != Instant::MAX);
                            prop_assert_eq!(d, ShutdownDecision::Delay { until });
                            prop_assert!(sd.is_accepting() && !sd.is_ready() && sd.is_delaying());
                            delay_until = Some(until);
                        }
                        ShutdownState::Delaying { .. } | ShutdownState::Draining { .. } => {
                            prop_assert!(matches!(d, ShutdownDecision::StopNow { .. }), "a second signal did not stop at once");
                            prop_assert!(sd.is_stopped());
                        }
                        ShutdownState::Stopped => prop_assert_eq!(d, ShutdownDecision::Continue),
                    }
                }
                Op::Drain => {
                    let d = sd.begin_drain(now);
                    if matches!(before, ShutdownState::Running | ShutdownState::Delaying { .. }) {
                        prop_assert!(!matches!(d, ShutdownDecision::Continue | ShutdownDecision::Delay { .. }), "begin_drain did not drain");
                        prop_assert!(!sd.is_accepting());
                    }
                }
                Op::StopNow => {
                    let _ = sd.stop_now(now);
                    prop_assert!(sd.is_stopped());
                }
                Op::Timeout => {
                    sd.handle_timeout(now);
                    if let Some(t) = sd.poll_timeout() {
                        prop_assert!(t > Instant::from_nanos(newest), "poll_timeout not after handle_timeout");
                    }
                    if let (ShutdownState::Delaying { .. }, Some(Some(until))) = (before, delay_until) {
                        if Instant::from_nanos(newest) >= until {
                            prop_assert!(!sd.is_accepting(), "the delay passed but the drain did not start");
                            if let ShutdownState::Draining { deadline } = sd.state() {
                                let expected = Some(Instant::from_nanos(newest) + grace).filter(|d| *d != Instant::MAX);
                                prop_assert_eq!(deadline, expected, "the grace period counts from the end of the delay");
                            }
                        } else {
                            prop_assert!(sd.is_delaying(), "the drain started before the delay passed");
                        }
                    }
                }
            }
            if signalled || !matches!(sd.state(), ShutdownState::Running) {
                prop_assert!(!sd.is_ready(), "ready after a signal");
            }
            while let Some(e) = sd.poll_event() {
                events.push(e);
            }
            prop_assert!(events.len() <= 3);
            let order = |e: &ShutdownEvent| match e {
                ShutdownEvent::DelayStarted { .. } => 0,
                ShutdownEvent::DrainStarted { .. } => 1,
                _ => 2,
            };
            prop_assert!(events.windows(2).all(|w| order(&w[0]) < order(&w[1])), "events out of order: {:?}", events);
        }
    }
}
