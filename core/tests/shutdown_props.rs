//! Property tests for the graceful-shutdown machine against its reference model
//! (`keel_testkit::models::shutdown`, shared with the fuzz target): every decision, state,
//! counter, event and timer is the model's, with and without a drain delay; counts never go
//! negative, nothing is admitted after the drain starts, the deadline always fires, and no
//! input panics.

// The model is `keel_testkit::models::shutdown`. keel-testkit is left out of the `no_std` test runs
// (`--cfg keel_no_testkit`, see core/Cargo.toml), so there the same source file is compiled
// into this test instead (it uses only keel-core's public API and std, which this test crate
// links; keel-core is built without it). One model, two ways in.

use core::time::Duration;

use keel_core::shutdown::{Shutdown, ShutdownConfig, ShutdownEvent, ShutdownPermit, ShutdownState};
use keel_core::Instant;
#[cfg(not(keel_no_testkit))]
use keel_testkit::models::shutdown::ShutdownModel;
use proptest::prelude::*;

#[path = "support/props.rs"]
mod props;

#[cfg(keel_no_testkit)]
#[path = "../../testkit/src/models/shutdown.rs"]
#[allow(dead_code, unreachable_pub)] // a library module here: items this test does not use
mod shutdown_model;
#[cfg(keel_no_testkit)]
use shutdown_model::ShutdownModel;

#[derive(Clone, Debug)]
enum Op {
    Start,
    Finish(usize),
    Signal,
    Drain,
    StopNow,
    Timeout,
    /// Jump to `poll_timeout()` and handle it (exactly at the delay's end or the deadline).
    WaitOut,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Start),
        4 => any::<usize>().prop_map(Op::Finish),
        1 => Just(Op::Signal),
        1 => Just(Op::Drain),
        1 => Just(Op::StopNow),
        2 => Just(Op::Timeout),
        1 => Just(Op::WaitOut),
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

fn delay() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (1u64..10_000_000_000).prop_map(Duration::from_nanos),
        Just(Duration::MAX),
        Just(Duration::from_nanos(1)),
    ]
}

/// Drives the machine and the model through `ops` and compares them after every step.
fn run(config: ShutdownConfig, start: u64, ops: &[(Op, i64)]) -> Result<(), TestCaseError> {
    let mut sd = Shutdown::new(config, Instant::from_nanos(start));
    let mut model = ShutdownModel::new(&config, Instant::from_nanos(start));
    let mut tickets: Vec<ShutdownPermit> = Vec::new();
    let mut raw = start;
    let mut newest = start;
    let mut signalled = false;
    let mut events: Vec<ShutdownEvent> = Vec::new();
    for &(ref op, step) in ops {
        raw = if step >= 0 {
            raw.saturating_add(step as u64)
        } else {
            raw.saturating_sub(step.unsigned_abs())
        };
        if let (Op::WaitOut, Some(t)) = (op, sd.poll_timeout()) {
            raw = t.as_nanos();
        }
        if !(matches!(op, Op::Finish(_)) && tickets.is_empty()) {
            newest = newest.max(raw); // the machine sees this `now`
        }
        let now = Instant::from_nanos(raw);
        let before = sd.state();
        match *op {
            Op::Start => match (sd.try_acquire(now), model.try_acquire(now)) {
                (Ok(t), Ok(id)) => {
                    prop_assert!(
                        matches!(
                            before,
                            ShutdownState::Running | ShutdownState::Delaying { .. }
                        ),
                        "admitted while draining or stopped"
                    );
                    prop_assert_eq!(t.id(), id);
                    tickets.push(t);
                }
                (Err(r), Err(state)) => {
                    prop_assert!(
                        matches!(
                            before,
                            ShutdownState::Draining { .. } | ShutdownState::Stopped
                        ),
                        "refused while running or delaying"
                    );
                    prop_assert_eq!((r.reason, r.retry_at), (state, None));
                }
                (a, b) => prop_assert!(false, "try_acquire: {:?}, the model {:?}", a, b),
            },
            Op::Finish(i) => {
                if !tickets.is_empty() {
                    let t = tickets.swap_remove(i % tickets.len());
                    prop_assert_eq!(sd.on_work_finished(now, t), model.on_work_finished(now));
                }
            }
            Op::Signal => {
                signalled = true;
                prop_assert_eq!(sd.on_signal(now), model.on_signal(now));
            }
            Op::Drain => prop_assert_eq!(sd.begin_drain(now), model.begin_drain(now)),
            Op::StopNow => {
                prop_assert_eq!(sd.stop_now(now), model.stop_now(now));
                prop_assert!(sd.is_stopped());
            }
            Op::Timeout | Op::WaitOut => {
                sd.handle_timeout(now);
                model.handle_timeout(now);
                if let Some(t) = sd.poll_timeout() {
                    prop_assert!(
                        t > Instant::from_nanos(newest),
                        "poll_timeout not after handle_timeout"
                    );
                }
            }
        }
        prop_assert_eq!(sd.state(), model.state());
        prop_assert_eq!(sd.poll_timeout(), model.poll_timeout());
        let s = sd.stats();
        prop_assert_eq!(s, model.stats());
        prop_assert_eq!(s.in_flight, sd.in_flight());
        prop_assert!(s.completed + s.aborted + s.in_flight == s.started);
        if sd.is_stopped() {
            prop_assert_eq!(s.in_flight, 0);
            prop_assert!(sd.summary().drained_in.is_some());
        }
        if signalled || !matches!(sd.state(), ShutdownState::Running) {
            prop_assert!(!sd.is_ready(), "ready after a signal");
        }
        let mut fresh = Vec::new();
        while let Some(e) = sd.poll_event() {
            fresh.push(e);
        }
        prop_assert_eq!(&fresh, &model.events());
        events.extend(fresh);
        prop_assert!(events.len() <= 3);
        let order = |e: &ShutdownEvent| match e {
            ShutdownEvent::DelayStarted { .. } => 0,
            ShutdownEvent::DrainStarted { .. } => 1,
            _ => 2,
        };
        prop_assert!(
            events.windows(2).all(|w| order(&w[0]) < order(&w[1])),
            "events out of order: {:?}",
            events
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(props::config(512, "proptest-regressions/shutdown_props.txt"))]

    #[test]
    fn shutdown_matches_the_reference_model_on_any_input(
        grace in grace(),
        start in any::<u64>(),
        ops in proptest::collection::vec((op(), time_step()), 0..64),
    ) {
        let config = ShutdownConfig::builder().grace_period(grace).build().unwrap();
        run(config, start, &ops)?;
    }

    /// With a drain delay: not ready from the first signal on; work is admitted during the
    /// delay and refused from the drain on; the drain starts once the delay has passed (at the
    /// first `handle_timeout` at or after it), with the deadline counted from then; a second
    /// signal stops at once; events come in order, at most three.
    #[test]
    fn with_a_drain_delay_shutdown_matches_the_reference_model(
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
        run(config, start, &ops)?;
    }
}
