//! Property tests for `keel_core::leak`: the machine against its reference model
//! (`keel_testkit::models::leak`, shared with the fuzz target: every decision, report and
//! timer) and its ledger (no lost permit: every tracked permit is released in time or reported
//! `Leaked` exactly once), the table bound, and no panic on any input.

// The model is `keel_testkit::models::leak`. keel-testkit is left out of the `no_std` test runs
// (`--cfg keel_no_testkit`, see core/Cargo.toml), so there the same source file is compiled
// into this test instead (it uses only keel-core's public API and std, which this test crate
// links; keel-core is built without it). One model, two ways in.

#[path = "support/props.rs"]
mod props;

#[cfg(keel_no_testkit)]
#[path = "../../testkit/src/models/leak.rs"]
#[allow(dead_code, unreachable_pub)] // a library module here: items this test does not use
mod leak_model;
#[cfg(keel_no_testkit)]
use leak_model::LeakModel;

use core::time::Duration;

use keel_core::leak::{LeakConfig, LeakDetector};
use keel_core::time::Instant;
#[cfg(not(keel_no_testkit))]
use keel_testkit::models::leak::LeakModel;
use proptest::prelude::*;

const N: usize = 6;

#[derive(Clone, Copy, Debug)]
enum Op {
    Acquire(u64),
    Release(u64),
    Timer,
    Poll,
}

fn op() -> impl Strategy<Value = Op> {
    // Few ids, so duplicates, double releases and unknown ids are common.
    let id = prop_oneof![8 => 0u64..12, 1 => Just(u64::MAX)];
    prop_oneof![
        4 => id.clone().prop_map(Op::Acquire),
        4 => id.prop_map(Op::Release),
        2 => Just(Op::Timer),
        1 => Just(Op::Poll),
    ]
}

proptest! {
    #![proptest_config(props::config(256, "proptest-regressions/leak_props.txt"))]

    #[test]
    fn leak_detector_matches_the_reference_model_and_loses_no_permit(
        threshold in prop_oneof![
            Just(Duration::from_nanos(1)),
            (1u64..2_000).prop_map(Duration::from_millis),
            Just(Duration::MAX)
        ],
        start in prop_oneof![0u64..1_000_000_000, Just(u64::MAX - 10_000_000_000)],
        ops in proptest::collection::vec((op(), 0u64..500, 0u8..20), 1..300),
    ) {
        let config = LeakConfig::builder().threshold(threshold).build().unwrap();
        let mut d: LeakDetector<N> = LeakDetector::new(config, Instant::from_nanos(start));
        let mut m = LeakModel::new(&config, N, Instant::from_nanos(start));
        let mut now = start;
        for (op, step_ms, back) in ops {
            let dt = step_ms.saturating_mul(1_000_000) / 4;
            let asked = if back == 0 { now.saturating_sub(dt) } else { now.saturating_add(dt) };
            // `now` is the newest instant the detector has seen: `poll_event` takes none.
            if !matches!(op, Op::Poll) {
                now = now.max(asked);
            }
            let at = Instant::from_nanos(asked);
            match op {
                Op::Acquire(id) => prop_assert_eq!(d.on_acquire(at, id), m.on_acquire(at, id)),
                Op::Release(id) => prop_assert_eq!(d.on_release(at, id), m.on_release(at, id)),
                Op::Timer => {
                    d.handle_timeout(at);
                    m.handle_timeout(at);
                    if let Some(next) = d.poll_timeout() {
                        prop_assert!(next > Instant::from_nanos(now), "no busy loop");
                    }
                }
                Op::Poll => prop_assert_eq!(d.poll_event(), m.poll_event()),
            }
            prop_assert_eq!(d.poll_timeout(), m.poll_timeout());
            let s = d.stats();
            prop_assert_eq!(s.leaked_total, m.leaked_total());
            prop_assert_eq!((s.outstanding, s.outstanding_leaked), m.outstanding());
            prop_assert!(s.outstanding <= N as u64);
            prop_assert_eq!(
                s.acquired,
                s.released + s.leaked_total + (s.outstanding - s.outstanding_leaked),
                "every tracked permit is released in time, leaked, or still out in time"
            );
        }
        // Drain the reports, then the ledger must balance.
        loop {
            let (got, want) = (d.poll_event(), m.poll_event());
            prop_assert_eq!(got, want);
            if got.is_none() { break; }
        }
        if let Err(lost) = m.check_ledger() {
            prop_assert!(false, "{}", lost);
        }
    }
}
