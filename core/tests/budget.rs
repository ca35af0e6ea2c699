//! Scenario tests for `keel_core::budget` on a simulated clock.

use core::time::Duration;

use keel_core::budget::{BudgetConfig, BudgetStats, Exhausted, RetryBudget};
use keel_core::time::Instant;
use keel_core::ConfigError;

fn t0() -> Instant {
    Instant::from_secs(500)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn withdraw_all(budget: &mut RetryBudget, now: Instant) -> u64 {
    let mut n = 0;
    while budget.try_acquire(now).is_ok() {
        n += 1;
        assert!(n < 1_000_000, "the budget never ran out");
    }
    n
}

#[test]
fn budget_allows_20_percent_of_recent_requests_plus_the_floor() {
    // Defaults: ttl 10 s, floor 10/s (100 per window), 20 %.
    let mut budget = RetryBudget::new(BudgetConfig::default(), t0());
    for i in 0..1_000 {
        budget.deposit(t0() + ms(i)); // 1000 requests over the first second
    }
    assert_eq!(budget.remaining(t0() + ms(1_000)), 100 + 200);
    assert_eq!(withdraw_all(&mut budget, t0() + ms(1_000)), 300);
    assert_eq!(budget.stats(), {
        let mut s: BudgetStats = BudgetStats::default();
        s.deposits = 1_000;
        s.withdrawals = 300;
        s.exhausted = 1;
        s
    });
}

#[test]
fn only_the_floor_is_available_without_requests() {
    let mut budget = RetryBudget::new(BudgetConfig::default(), t0());
    assert_eq!(withdraw_all(&mut budget, t0()), 100);
}

#[test]
fn a_failing_dependency_gets_only_the_percentage_not_n_retries() {
    // 10 000 requests in a second, all failing, each wanting 3 retries: at most 20 % + floor.
    let config = BudgetConfig::builder().min_per_sec(0).build().unwrap();
    let mut budget = RetryBudget::new(config, t0());
    let mut retries = 0;
    for i in 0..10_000u64 {
        let now = t0() + Duration::from_micros(i * 100);
        budget.deposit(now);
        for _ in 0..3 {
            if budget.try_acquire(now).is_ok() {
                retries += 1;
            }
        }
    }
    assert_eq!(retries, 2_000);
}

#[test]
fn deposits_refill_the_budget_one_fifth_at_a_time() {
    let config = BudgetConfig::builder().min_per_sec(0).build().unwrap();
    let mut budget = RetryBudget::new(config, t0());
    for _ in 0..4 {
        budget.deposit(t0());
    }
    assert!(budget.try_acquire(t0()).is_err());
    budget.deposit(t0());
    assert!(budget.try_acquire(t0()).is_ok());
    assert!(budget.try_acquire(t0()).is_err());
}

#[test]
fn budget_forgets_requests_older_than_the_window() {
    // ttl 1 s in 10 slots of 100 ms; no floor; 100 % so each deposit is one retry.
    let config = BudgetConfig::builder()
        .ttl(Duration::from_secs(1))
        .min_per_sec(0)
        .retry_percent(100)
        .build()
        .unwrap();
    let mut budget = RetryBudget::new(config, t0());
    budget.deposit(t0() + ms(50)); // slot 0: [0, 100 ms)
    budget.deposit(t0() + ms(350)); // slot 3
                                    // Still remembered until slot 0 falls out of the 11-slot ring at 1.1 s.
    assert_eq!(budget.remaining(t0() + ms(1_099)), 2);
    assert_eq!(budget.remaining(t0() + ms(1_100)), 1);
    // The second deposit is forgotten at 1.4 s.
    assert_eq!(budget.remaining(t0() + ms(1_399)), 1);
    assert_eq!(budget.remaining(t0() + ms(1_400)), 0);
    assert!(budget.try_acquire(t0() + ms(1_400)).is_err());
}

#[test]
fn withdrawals_are_forgotten_too() {
    let config = BudgetConfig::builder()
        .ttl(Duration::from_secs(1))
        .min_per_sec(5)
        .build()
        .unwrap();
    let mut budget = RetryBudget::new(config, t0());
    assert_eq!(withdraw_all(&mut budget, t0()), 5);
    assert!(budget.try_acquire(t0() + ms(1_099)).is_err());
    assert_eq!(withdraw_all(&mut budget, t0() + ms(1_100)), 5);
}

#[test]
fn a_long_idle_period_clears_everything_in_one_step() {
    let mut budget = RetryBudget::new(BudgetConfig::default(), t0());
    for _ in 0..500 {
        budget.deposit(t0());
    }
    assert_eq!(budget.remaining(t0()), 200);
    let much_later = t0() + Duration::from_secs(86_400 * 365 * 100);
    assert_eq!(budget.remaining(much_later), 100);
    assert_eq!(budget.remaining(Instant::MAX), 100);
    budget.deposit(Instant::MAX);
    assert_eq!(budget.remaining(Instant::MAX), 100);
    for _ in 0..4 {
        budget.deposit(Instant::MAX);
    }
    assert_eq!(budget.remaining(Instant::MAX), 101);
}

#[test]
fn time_going_backwards_is_clamped() {
    let config = BudgetConfig::builder()
        .ttl(Duration::from_secs(1))
        .min_per_sec(0)
        .retry_percent(100)
        .build()
        .unwrap();
    let mut budget = RetryBudget::new(config, t0());
    budget.deposit(t0() + ms(2_000));
    // A stale `now` counts as the newest seen: the deposit is neither lost nor doubled.
    assert_eq!(budget.remaining(Instant::ZERO), 1);
    assert!(budget.try_acquire(t0()).is_ok());
    assert!(budget.try_acquire(t0()).is_err());
}

#[test]
fn drains_after_time_goes_back_at_a_large_instant_spend_the_deposits_of_the_newest_instant() {
    // The fuzz crash `seed-regression-1` as the machine sees it (the harness's `Deposits(0)`
    // steps never reach it): defaults, created at 1_364_283_729 s, 83 deposits 41_634 s later,
    // then eleven drains at instants 46_003 s apart going backwards. Every stale `now` clamps to
    // the deposit instant, so the 83 deposits are in the current slot: 100 + 83 / 5 = 116.
    let start = Instant::from_secs(1_364_283_729);
    let mut budget = RetryBudget::new(BudgetConfig::default(), start);
    let deposited = start + Duration::from_secs(41_634);
    for _ in 0..83 {
        budget.deposit(deposited);
    }
    let mut caller = start + Duration::from_secs(62_451);
    let mut granted = 0;
    for _ in 0..11 {
        caller = caller - Duration::from_secs(46_003);
        granted += withdraw_all(&mut budget, caller);
    }
    // Within the guarantee: 1000 * 116 <= 100_000 + 200 * 83.
    assert_eq!(granted, 116);
    assert_eq!(budget.stats(), {
        let mut s: BudgetStats = BudgetStats::default();
        s.deposits = 83;
        s.withdrawals = 116;
        s.exhausted = 11;
        s
    });
    // A window later (where the harness wrongly logged the drains) only the floor remains.
    assert_eq!(budget.remaining(start + Duration::from_secs(62_451)), 100);
}

#[test]
fn retry_percent_above_100_allows_several_retries_per_request() {
    let config = BudgetConfig::builder()
        .min_per_sec(0)
        .retry_percent(250)
        .build()
        .unwrap();
    let mut budget = RetryBudget::new(config, t0());
    budget.deposit(t0());
    budget.deposit(t0());
    assert_eq!(withdraw_all(&mut budget, t0()), 5);
}

#[test]
fn zero_percent_and_zero_floor_never_retries() {
    let config = BudgetConfig::builder()
        .min_per_sec(0)
        .retry_percent(0)
        .build()
        .unwrap();
    let mut budget = RetryBudget::new(config, t0());
    for _ in 0..100 {
        budget.deposit(t0());
    }
    assert!(budget.try_acquire(t0()).is_err());
}

#[test]
fn fractional_floor_rounds_down() {
    // 3 per second over 1.5 s is 4.5 retries: 4 are allowed.
    let config = BudgetConfig::builder()
        .ttl(ms(1_500))
        .min_per_sec(3)
        .build()
        .unwrap();
    assert_eq!(config.floor(), 4);
    assert_eq!(config.slot(), ms(150));
    let mut budget = RetryBudget::new(config, t0());
    assert_eq!(withdraw_all(&mut budget, t0()), 4);
}

#[test]
fn defaults_are_finagle_and_tower() {
    let c = BudgetConfig::builder().build().unwrap();
    assert_eq!(c, BudgetConfig::default());
    assert_eq!(c.ttl(), Duration::from_secs(10));
    assert_eq!(c.min_per_sec(), 10);
    assert_eq!(c.retry_percent(), 20);
    assert_eq!(c.floor(), 100);
    assert_eq!(c.slot(), Duration::from_secs(1));
}

#[test]
fn invalid_configs_are_rejected() {
    for ttl in [
        Duration::ZERO,
        Duration::from_micros(999),
        Duration::from_secs(3_601),
        Duration::MAX,
    ] {
        assert!(
            matches!(
                BudgetConfig::builder().ttl(ttl).build(),
                Err(ConfigError::OutOfRange { field: "ttl", .. })
            ),
            "{ttl:?}"
        );
    }
    assert!(matches!(
        BudgetConfig::builder().retry_percent(100_001).build(),
        Err(ConfigError::OutOfRange {
            field: "retry_percent",
            ..
        })
    ));
    let extreme = BudgetConfig::builder()
        .ttl(Duration::from_secs(3_600))
        .min_per_sec(u32::MAX)
        .retry_percent(100_000)
        .build()
        .unwrap();
    assert_eq!(extreme.floor(), u64::from(u32::MAX) * 3_600);
    let mut budget = RetryBudget::new(extreme, Instant::ZERO);
    budget.deposit(Instant::ZERO);
    assert_eq!(
        budget.remaining(Instant::ZERO),
        u64::from(u32::MAX) * 3_600 + 1_000
    );
}

/// Withdraws at `at` and returns the refusal's `retry_at`; panics if the withdrawal was granted.
fn refused_until(budget: &mut RetryBudget, at: Instant) -> Option<Instant> {
    budget
        .try_acquire(at)
        .expect_err("the budget is spent")
        .retry_at
}

#[test]
fn a_refusal_says_when_the_spent_floor_is_forgotten_exactly() {
    // ttl 1 s in slots of 100 ms, a floor of 5. Five withdrawals at 250 ms (slot 2) spend it;
    // slot 2 leaves the 11-slot ring when slot 13 starts, at 1.3 s.
    let config = BudgetConfig::builder()
        .ttl(Duration::from_secs(1))
        .min_per_sec(5)
        .build()
        .unwrap();
    let mut budget = RetryBudget::new(config, t0());
    assert_eq!(withdraw_all(&mut budget, t0() + ms(250)), 5);
    let at = refused_until(&mut budget, t0() + ms(250));
    assert_eq!(at, Some(t0() + ms(1_300)));
    // The same answer from any instant before it, and a refusal one nanosecond before it...
    assert_eq!(
        refused_until(&mut budget, t0() + ms(1_300) - Duration::from_nanos(1)),
        at
    );
    // ...and a grant exactly at it.
    assert_eq!(withdraw_all(&mut budget, t0() + ms(1_300)), 5);
}

#[test]
fn a_refusal_waits_only_for_the_first_slot_that_frees_a_whole_retry() {
    // 100 %: a deposit is one retry. No floor. Deposits: 2 in slot 0, 1 in slot 1; withdrawals:
    // 3 in slot 4. The balance is 0. Slot 0 leaving (at 1.1 s) takes two deposits away (-2),
    // slot 1 one more (-3 at 1.2 s); only slot 4's withdrawals leaving (at 1.5 s) brings it
    // back to 0, which is still no whole retry: never, without a deposit.
    let config = BudgetConfig::builder()
        .ttl(Duration::from_secs(1))
        .min_per_sec(0)
        .retry_percent(100)
        .build()
        .unwrap();
    let mut budget = RetryBudget::new(config, t0());
    budget.deposit(t0());
    budget.deposit(t0() + ms(50));
    budget.deposit(t0() + ms(150));
    assert_eq!(withdraw_all(&mut budget, t0() + ms(450)), 3);
    assert_eq!(refused_until(&mut budget, t0() + ms(450)), None);

    // With a floor of 2 (2 per second over 1 s) the same idea, with a retry at the end.
    let config = BudgetConfig::builder()
        .ttl(Duration::from_secs(1))
        .min_per_sec(2)
        .retry_percent(100)
        .build()
        .unwrap();
    let mut budget = RetryBudget::new(config, t0());
    budget.deposit(t0() + ms(150)); // slot 1: +1
    assert_eq!(withdraw_all(&mut budget, t0() + ms(450)), 3); // slot 4: -3; 2 + 1 - 3 = 0
                                                              // Slot 1 leaving (1.2 s) leaves 2 - 3 = -1; slot 4 leaving (1.5 s) leaves 2: the first
                                                              // whole retry is at 1.5 s, not at the first boundary.
    assert_eq!(
        refused_until(&mut budget, t0() + ms(450)),
        Some(t0() + ms(1_500))
    );
    assert!(budget.try_acquire(t0() + ms(1_499)).is_err());
    assert_eq!(withdraw_all(&mut budget, t0() + ms(1_500)), 2);
}

#[test]
fn a_refusal_near_the_end_of_the_clock_never_comes_back() {
    // The slot that would free the retry starts after Instant::MAX: None, not a wrapped instant.
    let config = BudgetConfig::builder()
        .ttl(Duration::from_secs(1))
        .min_per_sec(1)
        .build()
        .unwrap();
    let mut budget = RetryBudget::new(config, Instant::MAX - Duration::from_millis(500));
    assert_eq!(withdraw_all(&mut budget, Instant::MAX), 1);
    assert_eq!(refused_until(&mut budget, Instant::MAX), None);
}

/// The refusal's message says what happened and what to change.
#[test]
fn exhausted_says_what_to_change() {
    let msg = Exhausted.to_string();
    assert!(msg.starts_with("retry budget exhausted"), "{msg}");
    assert!(
        msg.contains("retry_percent") && msg.contains("min_per_sec"),
        "{msg}"
    );
}
