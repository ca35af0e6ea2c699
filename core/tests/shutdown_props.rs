//! Property tests for the graceful-shutdown machine: counts never go negative, nothing is
//! admitted after the drain starts, the deadline always fires, and no input panics.

use core::time::Duration;

use keel_core::shutdown::{Shutdown, ShutdownConfig, ShutdownDecision, ShutdownPermit};
use keel_core::Instant;
use proptest::prelude::*;

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
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

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
