//! Property tests for `keel_core::budget`: an exact reference model of the slot ring, the
//! documented window guarantee in both directions, and no panic on any input.

use core::time::Duration;

use keel_core::budget::{BudgetConfig, RetryBudget, SLOTS};
use keel_core::time::Instant;
use proptest::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Deposit,
    Withdrawal,
    Refusal,
}

#[derive(Clone, Copy, Debug)]
struct Event {
    at: u64,
    kind: Kind,
}

/// The budget as the docs define it, recomputed from the whole history at every call: an event
/// is live while its slot index is within `SLOTS` of the current one.
struct Model {
    origin: u64,
    slot_ns: u64,
    reserve: i128,
    deposit: i128,
    events: Vec<Event>,
}

impl Model {
    fn balance(&self, now: u64) -> i128 {
        let current = (now - self.origin) / self.slot_ns;
        let live = |e: &&Event| current - (e.at - self.origin) / self.slot_ns <= SLOTS as u64;
        self.events
            .iter()
            .filter(live)
            .map(|e| match e.kind {
                Kind::Deposit => self.deposit,
                Kind::Withdrawal => -1000,
                Kind::Refusal => 0,
            })
            .sum::<i128>()
            + self.reserve
    }
}

/// Events of `kind` at times in `[lo, hi)` (i128, so window edges never saturate).
fn count(events: &[Event], kind: Kind, lo: i128, hi: i128) -> i128 {
    events
        .iter()
        .filter(|e| e.kind == kind && i128::from(e.at) >= lo && i128::from(e.at) < hi)
        .count() as i128
}

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
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn budget_matches_the_reference_model_and_its_window_guarantee(
        config in budget_config(),
        start in prop_oneof![0u64..1_000_000_000, Just(u64::MAX - 100_000_000_000)],
        ops in proptest::collection::vec((any::<bool>(), 0u32..1_000, 0u8..20), 1..300),
    ) {
        let ttl = u64::try_from(config.ttl().as_nanos()).unwrap();
        let w = u64::try_from(config.slot().as_nanos()).unwrap();
        prop_assert_eq!(w, ttl.div_ceil(SLOTS as u64));
        let reserve = i128::from(config.min_per_sec()) * i128::from(ttl) / 1_000_000;
        let deposit = i128::from(config.retry_percent()) * 10;
        let mut model = Model { origin: start, slot_ns: w, reserve, deposit, events: Vec::new() };
        let mut budget = RetryBudget::new(config, Instant::from_nanos(start));
        let mut now = start;
        for (is_deposit, step, back) in ops {
            // Steps of up to a tenth of ttl; one call in twenty goes back in time.
            let dt = u64::from(step) * (ttl / 10_000).max(1);
            let asked = if back == 0 { now.saturating_sub(dt) } else { now.saturating_add(dt) };
            now = now.max(asked);
            if is_deposit {
                budget.deposit(Instant::from_nanos(asked));
                model.events.push(Event { at: now, kind: Kind::Deposit });
            } else {
                let expected = model.balance(now) >= 1000;
                let got = budget.try_withdraw(Instant::from_nanos(asked));
                prop_assert_eq!(got, expected, "at {} (+{} ns)", now, now - start);
                let kind = if got { Kind::Withdrawal } else { Kind::Refusal };
                model.events.push(Event { at: now, kind });
            }
            let remaining = model.balance(now).max(0) / 1000;
            prop_assert_eq!(i128::from(budget.remaining(Instant::from_nanos(now))), remaining);
            // `remaining(&self)` at a later instant sees the slots that will have expired by
            // then without forgetting them (up to one ttl ahead: every partial rotation).
            let ahead = now.saturating_add(u64::from(step) * (ttl / 1_000).max(1));
            let expected = model.balance(ahead).max(0) / 1000;
            prop_assert_eq!(i128::from(budget.remaining(Instant::from_nanos(ahead))), expected, "ahead");
        }

        let events = &model.events;
        let (ttl, lookback) = (i128::from(ttl), i128::from((SLOTS as u64 + 1) * w));
        for (i, e) in events.iter().enumerate() {
            let a = i128::from(e.at);
            match e.kind {
                // Any window [a, a + ttl) starting at a withdrawal (the windows with the most):
                // 1000 * withdrawals <= reserve + 10 * pct * deposits in (a - 11 w, a + ttl).
                Kind::Withdrawal => {
                    let wd = count(events, Kind::Withdrawal, a, a + ttl);
                    let dep = count(events, Kind::Deposit, a - lookback + 1, a + ttl);
                    prop_assert!(
                        1000 * wd <= reserve + deposit * dep,
                        "{} withdrawals in [{}, +ttl) against {} deposits", wd, a, dep
                    );
                }
                // A refusal means the withdrawals of (a - 11 w, a] used up the reserve plus the
                // share of the deposits of [a - ttl, a].
                Kind::Refusal => {
                    // Only the events before the refusal (later ones may share its instant).
                    let before = &events[..i];
                    let wd = count(before, Kind::Withdrawal, a - lookback + 1, a + 1);
                    let dep = count(before, Kind::Deposit, a - ttl, a + 1);
                    prop_assert!(
                        1000 * wd + 1000 > reserve + deposit * dep,
                        "refused at {} with {} withdrawals and {} deposits", a, wd, dep
                    );
                }
                Kind::Deposit => {}
            }
        }
        let stats = budget.stats();
        let n = |k| events.iter().filter(|e| e.kind == k).count() as u64;
        prop_assert_eq!(stats.deposits, n(Kind::Deposit));
        prop_assert_eq!(stats.withdrawals, n(Kind::Withdrawal));
        prop_assert_eq!(stats.exhausted, n(Kind::Refusal));
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
                    let _ = budget.try_withdraw(at);
                }
                _ => {
                    let _ = budget.remaining(at);
                }
            }
        }
    }
}
