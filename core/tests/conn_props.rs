//! Property tests for the connection machine, beside its reference model
//! (`keel_testkit::models::conn`, shared with the fuzz target): reclamation always
//! picks the longest-idle eligible connection and never one idle less than the minimum, the
//! linger deadline is never past the drain deadline, expiries match the model, the counts add
//! up, and no input sequence panics or makes `poll_timeout` spin.

// The model is `keel_testkit::models::conn`. keel-testkit is left out of the `no_std` test runs
// (`--cfg keel_no_testkit`, see core/Cargo.toml), so there the same source file is compiled
// into this test instead (it uses only keel-core's public API and std, which this test crate
// links; keel-core is built without it). One model, two ways in.
// Runs in the `alloc` and `std` configurations only: the connection machine needs `alloc`.
#![cfg(feature = "alloc")]

use core::time::Duration;

use keel_core::conn::{CloseReason, ConnConfig, ConnEnd, ConnTable};
use keel_core::Instant;
#[cfg(not(keel_no_testkit))]
use keel_testkit::models::conn::ConnModel;
use proptest::prelude::*;

#[path = "support/props.rs"]
mod props;

#[cfg(keel_no_testkit)]
#[path = "../../testkit/src/models/conn.rs"]
#[allow(dead_code, unreachable_pub)] // a library module here: items this test does not use
mod conn_model;
#[cfg(keel_no_testkit)]
use conn_model::ConnModel;

#[derive(Clone, Debug)]
enum Op {
    Open(u8),
    Activity(u8, u64),
    ReadDeadline(u8, Option<u64>),
    HandlerDone(u8, Option<u64>),
    Closed(u8, u8),
    Close(u8, bool),
    Reclaim,
    Timeout,
}

fn op() -> impl Strategy<Value = Op> {
    let id = 0u8..8;
    let offset = prop_oneof![0u64..10_000_000_000, Just(0), Just(u64::MAX)];
    prop_oneof![
        3 => id.clone().prop_map(Op::Open),
        3 => (id.clone(), offset.clone()).prop_map(|(i, t)| Op::Activity(i, t)),
        2 => (id.clone(), proptest::option::of(offset.clone())).prop_map(|(i, d)| Op::ReadDeadline(i, d)),
        2 => (id.clone(), proptest::option::of(offset)).prop_map(|(i, d)| Op::HandlerDone(i, d)),
        2 => (id.clone(), 0u8..4).prop_map(|(i, e)| Op::Closed(i, e)),
        1 => (id.clone(), any::<bool>()).prop_map(|(i, idle)| Op::Close(i, idle)),
        2 => Just(Op::Reclaim),
        3 => Just(Op::Timeout),
    ]
}

fn step() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0i64),
        0i64..3_000_000_000,
        -1_000_000_000i64..0,
        Just(i64::MAX),
    ]
}

fn opt_duration() -> impl Strategy<Value = Option<Duration>> {
    prop_oneof![
        Just(None),
        (1u64..5_000_000_000).prop_map(|n| Some(Duration::from_nanos(n))),
        Just(Some(Duration::MAX)),
        Just(Some(Duration::from_nanos(1))),
    ]
}

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        (1u64..5_000_000_000).prop_map(Duration::from_nanos),
        Just(Duration::MAX),
    ]
}

fn end(e: u8) -> ConnEnd {
    match e {
        0 => ConnEnd::Clean,
        1 => ConnEnd::LingerTimeout,
        2 => ConnEnd::Reset,
        _ => ConnEnd::Aborted,
    }
}

proptest! {
    #![proptest_config(props::config(1024, "proptest-regressions/conn_props.txt"))]

    #[test]
    fn conn_table_matches_the_model_on_any_input(
        idle in opt_duration(),
        min_idle in prop_oneof![Just(Some(Duration::ZERO)), opt_duration()],
        linger in duration(),
        start in prop_oneof![any::<u64>(), Just(0u64), 0u64..1_000_000_000],
        ops in proptest::collection::vec((op(), step()), 0..80),
    ) {
        let config = ConnConfig::builder()
            .idle_timeout(idle)
            .reclaim_min_idle(min_idle)
            .linger_time(linger)
            .build();
        let Ok(config) = config else {
            // Only a zero idle timeout is refused; the generator never makes one.
            prop_assert!(false, "{config:?}");
            return Ok(());
        };
        let mut table = ConnTable::new(config, Instant::from_nanos(start));
        let mut model = ConnModel::new(&config, Instant::from_nanos(start));
        let mut now = Instant::from_nanos(start);

        for (op, dt) in ops {
            // Time mostly moves forward; a step back is clamped by the machine (and here).
            let raw = if dt >= 0 {
                now.as_nanos().saturating_add(dt as u64)
            } else {
                now.as_nanos().saturating_sub(dt.unsigned_abs())
            };
            now = now.max(Instant::from_nanos(raw));
            match op {
                Op::Open(id) => {
                    table.on_open(now, u64::from(id));
                    model.on_open(now, u64::from(id));
                }
                Op::Activity(id, back) => {
                    let at = Instant::from_nanos(now.as_nanos().saturating_sub(back));
                    table.on_activity(now, u64::from(id), at);
                    model.on_activity(now, u64::from(id), at);
                }
                Op::ReadDeadline(id, d) => {
                    let d = d.map(|d| Instant::from_nanos(now.as_nanos().saturating_add(d)));
                    table.on_read_deadline(now, u64::from(id), d);
                    model.on_read_deadline(now, u64::from(id), d);
                }
                Op::HandlerDone(id, drain) => {
                    let drain = drain.map(|d| Instant::from_nanos(now.as_nanos().saturating_add(d)));
                    let got = table.on_handler_done(now, u64::from(id), drain);
                    if let Err(broken) = model.on_handler_done(now, u64::from(id), drain, got) {
                        prop_assert!(false, "{}", broken);
                    }
                }
                Op::Closed(id, e) => {
                    table.on_closed(now, u64::from(id), end(e));
                    model.on_closed(now, u64::from(id));
                }
                Op::Close(id, idle_reason) => {
                    let reason = if idle_reason { CloseReason::Idle } else { CloseReason::ReadDeadline };
                    table.on_close(now, u64::from(id), reason);
                    model.on_close(now, u64::from(id), reason);
                }
                Op::Reclaim => {
                    // When a waiting newcomer's server arms its timer: the longest-idle serving
                    // connection reaching the minimum; `reclaim` picks one exactly from then on.
                    let at = table.reclaim_at();
                    prop_assert_eq!(at, model.reclaim_at());
                    let got = table.reclaim(now);
                    match at {
                        None => prop_assert_eq!(got, None),
                        // (At the end of the clock the sum saturates: eligibility is then
                        // decided by the model.)
                        Some(t) if t < Instant::MAX => prop_assert_eq!(got.is_some(), t <= now),
                        Some(_) => {}
                    }
                    prop_assert_eq!(got, model.reclaim(now));
                }
                Op::Timeout => {
                    table.handle_timeout(now);
                    let mut got = Vec::new();
                    while let Some(e) = table.poll_event() {
                        got.push(e);
                    }
                    prop_assert_eq!(got, model.handle_timeout(now));
                    // No busy loop: nothing left due at `now`.
                    if let Some(t) = table.poll_timeout() {
                        prop_assert!(t > now, "poll_timeout {t:?} not after {now:?}");
                    }
                }
            }
            if let Err(broken) = model.check_stats(&table.stats()) {
                prop_assert!(false, "{}", broken);
            }
            for id in model.ids() {
                prop_assert_eq!(table.idle_for(now, id), model.idle_for(now, id));
            }
        }
    }
}
