//! The retry budget against its reference model: every `try_acquire` and `remaining` answer
//! (and every refusal's `retry_at`) is the model's, both documented window inequalities hold for every window the run
//! contains, counters balance.

use arbitrary::Arbitrary;
use keel_core::budget::{BudgetConfig, RetryBudget};
use keel_core::time::Instant;
use keel_testkit::models::budget::BudgetModel;

use crate::common::{Clock, Dur, Timed};

/// One input.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Op {
    /// `deposit`.
    Deposit,
    /// `deposit` this many times at one instant.
    Deposits(u8),
    /// `try_acquire`.
    Withdraw,
    /// `try_acquire` until refused (at most 64 times).
    Drain,
    /// `remaining`.
    Remaining,
}

/// The configuration.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct Config {
    ttl: Option<Dur>,
    min_per_sec: Option<u32>,
    retry_percent: Option<u32>,
}

/// The budget beside its reference model (`keel_testkit::models::budget`, shared with the
/// proptests).
pub struct Harness {
    b: RetryBudget,
    model: BudgetModel,
}

impl Harness {
    /// `None` when the builder rejects the config.
    pub fn new(c: &Config, start: Instant) -> Option<Harness> {
        let mut b = BudgetConfig::builder();
        if let Some(d) = c.ttl {
            b = b.ttl(d.get());
        }
        if let Some(n) = c.min_per_sec {
            b = b.min_per_sec(n);
        }
        if let Some(p) = c.retry_percent {
            b = b.retry_percent(p);
        }
        let config = b.build().ok()?;
        Some(Harness {
            b: RetryBudget::new(config, start),
            model: BudgetModel::new(&config, start),
        })
    }

    fn withdraw(&mut self, now: Instant) -> bool {
        let remaining = self.b.remaining(now);
        assert_eq!(
            remaining,
            self.model.remaining(now),
            "remaining disagrees with the model"
        );
        let expected_retry_at = self.model.retry_at(now);
        let decision = self.b.try_acquire(now);
        let ok = decision.is_ok();
        assert_eq!(ok, remaining >= 1, "try_acquire disagrees with remaining");
        if let Err(rejected) = decision {
            assert_eq!(
                rejected.retry_at, expected_retry_at,
                "a refusal's retry_at disagrees with the model"
            );
        }
        if let Err(broken) = self.model.on_withdraw(now, ok) {
            panic!("{broken}");
        }
        ok
    }

    /// Applies `op` at `now` and checks the invariants.
    pub fn apply(&mut self, _clock: &mut Clock, now: Instant, op: Op) {
        match op {
            Op::Deposit | Op::Deposits(_) => {
                let n = if let Op::Deposits(n) = op { n } else { 1 };
                for _ in 0..n {
                    self.b.deposit(now);
                    self.model.on_deposit(now);
                }
            }
            Op::Withdraw => {
                self.withdraw(now);
            }
            Op::Drain => {
                for _ in 0..64 {
                    if !self.withdraw(now) {
                        break;
                    }
                }
            }
            Op::Remaining => {
                let r = self.b.remaining(now);
                assert_eq!(self.b.remaining(now), r, "remaining changed the state");
                assert_eq!(
                    r,
                    self.model.remaining(now),
                    "remaining disagrees with the model"
                );
            }
        }
        let s = self.b.stats();
        assert_eq!(
            (s.deposits, s.withdrawals, s.exhausted),
            self.model.totals(),
            "the counters disagree with the model"
        );
    }

    /// Nothing more to check at the end.
    pub fn finish(&mut self) {}
}

impl Timed for Op {
    fn timed(&self) -> bool {
        true
    }
}

crate::single_machine_target!("budget", Config);
