//! Property tests for the accept-loop machine: invariants under any sequence of inputs (time
//! going back, jumping to the end of time, extreme configs), and the reference model of the
//! decisions and of when reports happen (`keel_testkit::models::accept`, shared with the fuzz
//! target).

// The model is `keel_testkit::models::accept`. keel-testkit is left out of the `no_std` test runs
// (`--cfg keel_no_testkit`, see core/Cargo.toml), so there the same source file is compiled
// into this test instead (it uses only keel-core's public API and std, which this test crate
// links; keel-core is built without it). One model, two ways in.

use core::time::Duration;

use keel_core::accept::{
    AcceptConfig, AcceptDecision, AcceptErrorKind, AcceptEvent, AcceptLoop, Shortage,
    UnknownErrorPolicy, EVENT_QUEUE_CAPACITY,
};
use keel_core::time::Instant;
#[cfg(not(keel_no_testkit))]
use keel_testkit::models::accept::{event_count, AcceptModel};
use proptest::prelude::*;

#[path = "support/props.rs"]
mod props;

#[cfg(keel_no_testkit)]
#[path = "../../testkit/src/models/accept.rs"]
#[allow(dead_code, unreachable_pub)] // a library module here: items this test does not use
mod accept_model;
#[cfg(keel_no_testkit)]
use accept_model::{event_count, AcceptModel};

#[derive(Clone, Debug)]
enum Op {
    Accepted(i64),
    Error(i64, AcceptErrorKind),
    Timeout(i64),
    /// Jump to the end of time or back to the epoch.
    Extreme(bool),
    Poll,
    /// Wait exactly until the machine's deadline, then call `handle_timeout`.
    WaitOut,
}

fn kind() -> impl Strategy<Value = AcceptErrorKind> {
    prop_oneof![
        4 => Just(AcceptErrorKind::PerConnection),
        6 => prop_oneof![
            Just(Shortage::ProcessFileLimit),
            Just(Shortage::SystemFileLimit),
            Just(Shortage::Buffers),
            Just(Shortage::Memory),
            Just(Shortage::Streams),
        ]
        .prop_map(AcceptErrorKind::Shortage),
        1 => Just(AcceptErrorKind::Fatal),
        1 => Just(AcceptErrorKind::Unknown),
    ]
}

fn delta() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => 0i64..2_000_000_000,     // up to 2 s forward
        2 => Just(0i64),              // stalled clock
        1 => -2_000_000_000i64..0,    // backwards
        1 => any::<i64>(),            // anything, including huge jumps
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => delta().prop_map(Op::Accepted),
        6 => (delta(), kind()).prop_map(|(d, k)| Op::Error(d, k)),
        2 => delta().prop_map(Op::Timeout),
        1 => any::<bool>().prop_map(Op::Extreme),
        2 => Just(Op::Poll),
        2 => Just(Op::WaitOut),
    ]
}

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        4 => (0u64..3_000_000_000).prop_map(Duration::from_nanos),
        1 => Just(Duration::ZERO),
        1 => Just(Duration::MAX),
        1 => any::<u64>().prop_map(Duration::from_nanos),
        1 => (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
    ]
}

fn config() -> impl Strategy<Value = AcceptConfig> {
    (
        duration(),
        duration(),
        prop_oneof![Just(100u32), Just(200), 100u32..1000, any::<u32>()],
        duration(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(a, b, growth, interval, fixed, stop_unknown)| {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let lo = lo.max(Duration::from_nanos(1));
            let hi = hi.max(lo);
            let policy = if stop_unknown {
                UnknownErrorPolicy::Stop
            } else {
                UnknownErrorPolicy::Pause
            };
            let builder = AcceptConfig::builder()
                .report_interval(interval)
                .unknown_errors(policy);
            let builder = if fixed {
                builder.fixed_pause(lo)
            } else {
                builder
                    .initial_pause(lo)
                    .max_pause(hi)
                    .growth_percent(growth)
            };
            builder.build().expect("a valid config")
        })
}

fn apply(t: u64, d: i64) -> u64 {
    if d >= 0 {
        t.saturating_add(d.unsigned_abs())
    } else {
        t.saturating_sub(d.unsigned_abs())
    }
}

fn run(config: AcceptConfig, start: u64, ops: &[Op], eager: bool) -> Result<(), TestCaseError> {
    let mut machine = AcceptLoop::new(config, Instant::from_nanos(start));
    let mut model = AcceptModel::new(&config, Instant::from_nanos(start));
    let mut caller = start;
    let mut counted = 0u64; // shortages accounted for by polled events
    let mut shortage_events = 0u64;
    let mut fatal_events = 0u64;
    let max_pause = config.max_pause();

    for op in ops {
        match *op {
            Op::Accepted(d) => {
                caller = apply(caller, d);
                machine.on_accepted(Instant::from_nanos(caller));
                model.on_accepted(Instant::from_nanos(caller));
            }
            Op::Error(d, kind) => {
                caller = apply(caller, d);
                let decision = machine.on_error(Instant::from_nanos(caller), kind);
                prop_assert_eq!(decision, model.on_error(Instant::from_nanos(caller), kind));
                let clamped = model.newest();
                if let AcceptDecision::PauseUntil(t) = decision {
                    prop_assert!(t >= clamped, "PauseUntil before now");
                    prop_assert!(t >= Instant::from_nanos(caller));
                    prop_assert!(t - clamped <= max_pause, "pause above max");
                    prop_assert!(machine.is_paused(clamped) || t == clamped);
                }
            }
            Op::Timeout(d) => {
                caller = apply(caller, d);
                machine.handle_timeout(Instant::from_nanos(caller));
                model.handle_timeout(Instant::from_nanos(caller));
                if let Some(t) = machine.poll_timeout() {
                    prop_assert!(t > Instant::from_nanos(caller), "poll_timeout not after t");
                }
            }
            Op::Extreme(to_end) => {
                caller = if to_end { u64::MAX } else { 0 };
                machine.handle_timeout(Instant::from_nanos(caller));
                model.handle_timeout(Instant::from_nanos(caller));
                if let Some(t) = machine.poll_timeout() {
                    prop_assert!(t > Instant::from_nanos(caller));
                }
            }
            Op::WaitOut => {
                if let Some(t) = machine.poll_timeout() {
                    caller = t.as_nanos();
                    machine.handle_timeout(t);
                    model.handle_timeout(Instant::from_nanos(caller));
                    prop_assert!(machine.poll_timeout().is_none_or(|u| u > t));
                }
            }
            Op::Poll => {}
        }
        if eager || matches!(op, Op::Poll) {
            let got: Vec<AcceptEvent> = core::iter::from_fn(|| machine.poll_event()).collect();
            prop_assert!(
                got.len() <= EVENT_QUEUE_CAPACITY + 1,
                "queue grew to {}",
                got.len()
            );
            if let Err(broken) = model.check_events(&got) {
                prop_assert!(false, "{}", broken);
            }
            for e in &got {
                counted += event_count(e);
                match *e {
                    AcceptEvent::Shortage { pause, until, .. } => {
                        shortage_events += 1;
                        prop_assert!(pause <= max_pause);
                        prop_assert!(until >= Instant::from_duration(pause));
                    }
                    AcceptEvent::Fatal => fatal_events += 1,
                    _ => {}
                }
            }
        }
        prop_assert_eq!(machine.poll_timeout(), model.poll_timeout());
        prop_assert_eq!(machine.is_stopped(), model.is_stopped());
        let s = machine.stats();
        prop_assert_eq!(s.reports + s.suppressed, s.shortages);
        prop_assert_eq!(s.unreported, model.unreported());
        prop_assert!(s.unreported <= s.suppressed);
        prop_assert!(s.fatal <= 1);
        prop_assert!(s.pauses <= s.shortages);
        if eager {
            prop_assert_eq!(s.reports, shortage_events);
        }
    }

    // Drain: every shortage is accounted for exactly once.
    let got: Vec<AcceptEvent> = core::iter::from_fn(|| machine.poll_event()).collect();
    if let Err(broken) = model.check_events(&got) {
        prop_assert!(false, "{}", broken);
    }
    for e in &got {
        counted += event_count(e);
        match e {
            AcceptEvent::Shortage { .. } => shortage_events += 1,
            AcceptEvent::Fatal => fatal_events += 1,
            _ => {}
        }
    }
    let s = machine.stats();
    prop_assert_eq!(counted + s.unreported, s.shortages);
    prop_assert_eq!(shortage_events, s.reports);
    prop_assert_eq!(fatal_events, s.fatal);
    prop_assert_eq!(machine.poll_event(), None);
    Ok(())
}

proptest! {
    #![proptest_config(props::config(512, "proptest-regressions/accept_props.txt"))]

    #[test]
    fn any_op_sequence_keeps_the_invariants_and_matches_the_model(
        config in config(),
        start in prop_oneof![Just(0u64), Just(u64::MAX), any::<u64>(), 0u64..1_000_000_000],
        ops in proptest::collection::vec(op(), 0..200),
        eager in any::<bool>(),
    ) {
        run(config, start, &ops, eager)?;
    }

    #[test]
    fn a_shortage_storm_reports_once_per_interval(
        interval_ms in 1u64..2_000,
        step_us in prop_oneof![Just(1_000u64), Just(10_000), Just(250), 1u64..50_000],
        n in 1usize..3_000,
    ) {
        let config = AcceptConfig::builder()
            .report_interval(Duration::from_millis(interval_ms))
            .build()
            .unwrap();
        let mut machine = AcceptLoop::new(config, Instant::ZERO);
        let mut report_times = Vec::new();
        let mut counted = 0;
        for i in 0..n as u64 {
            let now = Instant::from_nanos(i * step_us * 1_000);
            let decision = machine.on_error(now, AcceptErrorKind::Shortage(Shortage::ProcessFileLimit));
            prop_assert!(matches!(decision, AcceptDecision::PauseUntil(t) if t > now));
            while let Some(e) = machine.poll_event() {
                counted += event_count(&e);
                if let AcceptEvent::Shortage { .. } = e {
                    report_times.push(now);
                }
            }
        }
        // Expected: the first error, then the first error at or after last report + interval.
        let mut expected: Vec<Instant> = Vec::new();
        for i in 0..n as u64 {
            let t = Instant::from_nanos(i * step_us * 1_000);
            if expected.last().is_none_or(|&last| t - last >= Duration::from_millis(interval_ms)) {
                expected.push(t);
            }
        }
        prop_assert_eq!(&report_times, &expected);
        let s = machine.stats();
        prop_assert_eq!(s.reports, report_times.len() as u64);
        prop_assert_eq!(counted + s.unreported, n as u64);
    }
}
