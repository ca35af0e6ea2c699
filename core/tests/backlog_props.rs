//! Property tests for `keel_core::backlog`: the machine against its reference model
//! (`keel_testkit::models::backlog`, shared with the fuzz target: every decision, retry hint,
//! depth, event and timer), the bound (an admission never takes the estimate past its
//! priority's bound), and no panic on any input.

// The model is `keel_testkit::models::backlog`. keel-testkit is left out of the `no_std` test runs
// (`--cfg keel_no_testkit`, see core/Cargo.toml), so there the same source file is compiled
// into this test instead (it uses only keel-core's public API and std, which this test crate
// links; keel-core is built without it). One model, two ways in.

#[path = "support/props.rs"]
mod props;

#[cfg(keel_no_testkit)]
#[path = "../../testkit/src/models/backlog.rs"]
#[allow(dead_code, unreachable_pub)] // a library module here: items this test does not use
mod backlog_model;
#[cfg(keel_no_testkit)]
use backlog_model::BacklogModel;

use core::time::Duration;

use keel_core::backlog::{Backlog, BacklogConfig, Priority};
use keel_core::time::Instant;
#[cfg(not(keel_no_testkit))]
use keel_testkit::models::backlog::BacklogModel;
use proptest::prelude::*;

#[derive(Clone, Copy, Debug)]
enum Op {
    Acquire(Priority),
    Depth(u64),
    Enqueued(u64),
    Dequeued(u64),
    Timer,
}

fn op(high: u64) -> impl Strategy<Value = Op> {
    let count = prop_oneof![
        0..=high.saturating_mul(2).max(1),
        Just(u64::MAX),
        Just(0u64)
    ];
    prop_oneof![
        6 => prop_oneof![Just(Priority::Normal), Just(Priority::Critical)].prop_map(Op::Acquire),
        2 => count.clone().prop_map(Op::Depth),
        1 => (0..=high).prop_map(Op::Enqueued),
        2 => prop_oneof![1 => count, 4 => 0..=high / 4 + 1].prop_map(Op::Dequeued),
        1 => Just(Op::Timer),
    ]
}

fn config() -> impl Strategy<Value = BacklogConfig> {
    (
        prop_oneof![1u64..20, 20u64..2_000, Just(u64::MAX)],
        0u64..1_000,
        prop_oneof![Just(None), (0u64..50).prop_map(Some), Just(Some(u64::MAX))],
        prop_oneof![
            Just(Duration::from_millis(1)),
            (1u64..5_000).prop_map(Duration::from_millis),
            Just(Duration::MAX)
        ],
        prop_oneof![
            Just(Duration::from_millis(1)),
            (1u64..3_000).prop_map(Duration::from_millis)
        ],
    )
        .prop_map(|(high, low_pct, reserve, stale, window)| {
            let low = u64::try_from(u128::from(high) * u128::from(low_pct) / 1_000).unwrap();
            let mut b = BacklogConfig::builder()
                .high(high)
                .low(low)
                .max_staleness(stale)
                .drain_window(window);
            if let Some(r) = reserve {
                b = b.critical_reserve(r);
            }
            b.build().unwrap()
        })
}

proptest! {
    #![proptest_config(props::config(256, "proptest-regressions/backlog_props.txt"))]

    #[test]
    fn backlog_matches_the_reference_model_and_keeps_the_bound(
        config in config(),
        start in prop_oneof![0u64..1_000_000_000, Just(u64::MAX - 10_000_000_000)],
        ops in (1u64..2_000).prop_flat_map(|h| proptest::collection::vec(
            (op(h), 0u64..400, 0u8..20), 1..300)),
    ) {
        let mut b = Backlog::new(config, Instant::from_nanos(start));
        let mut m = BacklogModel::new(&config, Instant::from_nanos(start));
        let mut now = start;
        for (op, step_ms, back) in ops {
            let dt = step_ms.saturating_mul(1_000_000) / 8;
            let asked = if back == 0 { now.saturating_sub(dt) } else { now.saturating_add(dt) };
            now = now.max(asked);
            let at = Instant::from_nanos(asked);
            match op {
                Op::Acquire(p) => {
                    let before = b.depth();
                    let got = b.try_acquire(at, p);
                    prop_assert_eq!(got, m.try_acquire(at, p), "{:?} at +{} ns", p, now - start);
                    if got.is_ok() {
                        let bound = match p {
                            Priority::Normal => config.high(),
                            Priority::Critical => config.critical_bound(),
                        };
                        prop_assert!(before < bound && b.depth() <= bound, "the bound holds");
                        prop_assert!(p == Priority::Critical || !b.is_stale());
                    }
                }
                Op::Depth(d) => { b.on_depth(at, d); m.on_depth(at, d); }
                Op::Enqueued(n) => { b.on_enqueued(at, n); m.on_enqueued(at, n); }
                Op::Dequeued(n) => { b.on_dequeued(at, n); m.on_dequeued(at, n); }
                Op::Timer => {
                    b.handle_timeout(at);
                    m.handle_timeout(at);
                    if let Some(next) = b.poll_timeout() {
                        prop_assert!(next > Instant::from_nanos(now), "no busy loop");
                    }
                }
            }
            prop_assert_eq!(b.depth(), m.depth());
            prop_assert_eq!(b.is_full(), m.is_full());
            prop_assert_eq!(b.is_stale(), m.is_stale());
            prop_assert_eq!(b.poll_timeout(), m.poll_timeout());
            prop_assert_eq!(b.drain_rate_milli(), m.drain_rate_milli());
            let events: Vec<_> = core::iter::from_fn(|| b.poll_event()).collect();
            prop_assert_eq!(events, m.take_events());
            let s = b.stats();
            prop_assert_eq!(
                (s.admitted, s.admitted_critical, s.refused_full, s.refused_stale),
                m.totals()
            );
            prop_assert_eq!(s.full_transitions, m.full_transitions());
            prop_assert_eq!(s.events_dropped, 0);
            prop_assert!(s.peak_depth >= s.depth);
        }
    }
}
