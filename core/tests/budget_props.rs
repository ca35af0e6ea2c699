//! Property tests for `keel_core::budget`: the machine against its reference model
//! (`keel_testkit::models::budget`, shared with the fuzz target: the exact slot-ring balance and
//! the documented window guarantee in both directions), and no panic on any input.

// The model is `keel_testkit::models::budget`. keel-testkit is left out of the `no_std` test runs
// (`--cfg keel_no_testkit`, see core/Cargo.toml), so there the same source file is compiled
// into this test instead (it uses only keel-core's public API and std, which this test crate
// links; keel-core is built without it). One model, two ways in.

use core::time::Duration;

use keel_core::budget::{BudgetConfig, RetryBudget, SLOTS};
use keel_core::time::Instant;
#[cfg(not(keel_no_testkit))]
use keel_testkit::models::budget::BudgetModel;
use proptest::prelude::*;

#[path = "support/props.rs"]
mod props;

#[cfg(keel_no_testkit)]
#[path = "../../testkit/src/models/budget.rs"]
#[allow(dead_code, unreachable_pub)] // a library module here: items this test does not use
mod budget_model;
#[cfg(keel_no_testkit)]
use budget_model::BudgetModel;

fn budget_config() -> impl Strategy<Value = BudgetConfig> {
    (
        prop_oneof![
            Just(1_000_000u64),
            1_000_000u64..50_000_000,
            Just(10_000_000u64),
            Just(3_600_000_000_000u64)
        ],
        prop_oneof![Just(0u32), 0u32..3_000, Just(10)],
        prop_oneof![Just(0u32), Just(20), 0u32..400, Just(100_000)],
    )
        .prop_map(|(ttl, min_per_sec, pct)| {
            BudgetConfig::builder()
                .ttl(Duration::from_nanos(ttl))
                .min_per_sec(min_per_sec)
                .retry_percent(pct)
                .build()
                .unwrap()
        })
}

proptest! {
    #![proptest_config(props::config(256, "proptest-regressions/budget_props.txt"))]

    #[test]
    fn budget_matches_the_reference_model_and_its_window_guarantee(
        config in budget_config(),
        start in prop_oneof![0u64..1_000_000_000, Just(u64::MAX - 100_000_000_000)],
        ops in proptest::collection::vec((any::<bool>(), 0u32..1_000, 0u8..20), 1..300),
    ) {
        let ttl = u64::try_from(config.ttl().as_nanos()).unwrap();
        let w = u64::try_from(config.slot().as_nanos()).unwrap();
        prop_assert_eq!(w, ttl.div_ceil(SLOTS as u64));
        let mut model = BudgetModel::new(&config, Instant::from_nanos(start));
        let mut budget = RetryBudget::new(config, Instant::from_nanos(start));
        let mut now = start;
        for (is_deposit, step, back) in ops {
            // Steps of up to a tenth of ttl; one call in twenty goes back in time.
            let dt = u64::from(step) * (ttl / 10_000).max(1);
            let asked = if back == 0 { now.saturating_sub(dt) } else { now.saturating_add(dt) };
            now = now.max(asked);
            let at = Instant::from_nanos(asked);
            if is_deposit {
                budget.deposit(at);
                model.on_deposit(at);
            } else {
                let expected = model.allows(at);
                let decision = budget.try_acquire(at);
                let got = decision.is_ok();
                prop_assert_eq!(got, expected, "at {} (+{} ns)", now, now - start);
                if let Err(rejected) = decision {
                    // The first instant a withdrawal would succeed, computed by the model from
                    // the events (not the machine's slots).
                    prop_assert_eq!(rejected.retry_at, model.retry_at(at), "retry_at at {}", now);
                }
                if let Err(broken) = model.on_withdraw(at, got) {
                    prop_assert!(false, "{}", broken);
                }
            }
            let at = Instant::from_nanos(now);
            prop_assert_eq!(budget.remaining(at), model.remaining(at));
            // `remaining(&self)` at a later instant sees the slots that will have expired by
            // then without forgetting them (up to one ttl ahead: every partial rotation).
            let ahead = Instant::from_nanos(now.saturating_add(u64::from(step) * (ttl / 1_000).max(1)));
            prop_assert_eq!(budget.remaining(ahead), model.remaining(ahead), "ahead");
        }
        let stats = budget.stats();
        prop_assert_eq!(
            (stats.deposits, stats.withdrawals, stats.exhausted),
            model.totals()
        );
    }

    #[test]
    fn no_panic_on_any_input(
        ttl in any::<u64>(),
        min_per_sec in any::<u32>(),
        pct in any::<u32>(),
        start in any::<u64>(),
        ops in proptest::collection::vec((0u8..3, any::<u64>()), 0..100),
    ) {
        let Ok(config) = BudgetConfig::builder()
            .ttl(Duration::from_nanos(ttl))
            .min_per_sec(min_per_sec)
            .retry_percent(pct)
            .build()
        else {
            return Ok(());
        };
        let mut budget = RetryBudget::new(config, Instant::from_nanos(start));
        for (op, at) in ops {
            let at = Instant::from_nanos(at);
            match op {
                0 => budget.deposit(at),
                1 => {
                    let _ = budget.try_acquire(at);
                }
                _ => {
                    let _ = budget.remaining(at);
                }
            }
        }
    }
}
