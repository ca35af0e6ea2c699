//! The retry budget: both documented window inequalities hold for every window the run
//! contains, `try_withdraw` agrees with `remaining`, counters balance.

use arbitrary::Arbitrary;
use keel_core::budget::{BudgetConfig, RetryBudget, SLOTS};
use keel_core::time::{duration_to_nanos, Instant};

use crate::common::{Clock, Dur, Timed};

/// One input.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Op {
    /// `deposit`.
    Deposit,
    /// `deposit` this many times at one instant.
    Deposits(u8),
    /// `try_withdraw`.
    Withdraw,
    /// `try_withdraw` until refused (at most 64 times).
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

/// The budget and a log of what it did, in clamped time.
pub struct Harness {
    b: RetryBudget,
    ttl: u64,
    ring: u64,
    reserve: u128,
    deposit: u128,
    deposits: Vec<u64>,
    withdrawals: Vec<u64>,
    tries: u64,
}

/// Most log entries checked (the window checks are linear in the log).
const LOG: usize = 512;

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
        let ttl = duration_to_nanos(config.ttl());
        let w = duration_to_nanos(config.slot());
        Some(Harness {
            b: RetryBudget::new(config, start),
            ttl,
            ring: w.saturating_mul(SLOTS as u64 + 1),
            reserve: u128::from(config.min_per_sec()) * u128::from(ttl) / 1_000_000,
            deposit: u128::from(config.retry_percent()) * 10,
            deposits: Vec::new(),
            withdrawals: Vec::new(),
            tries: 0,
        })
    }

    fn withdraw(&mut self, now: Instant, t: u64) -> bool {
        let remaining = self.b.remaining(now);
        let ok = self.b.try_withdraw(now);
        self.tries += 1;
        assert_eq!(ok, remaining >= 1, "try_withdraw disagrees with remaining");
        if self.withdrawals.len() < LOG && self.deposits.len() < LOG {
            if ok {
                self.withdrawals.push(t);
                self.check_upper(t);
            } else {
                self.check_refusal(t);
            }
        }
        ok
    }

    /// `1000 * withdrawals in [a, a + ttl) <= reserve + deposit * deposits in (a - ring, a + ttl)`
    /// for every window ending with this withdrawal at `t` (windows starting at a withdrawal).
    /// The logs are in clamped time, so they are sorted.
    fn check_upper(&self, t: u64) {
        let n = self.withdrawals.len();
        for (i, &a) in self.withdrawals.iter().enumerate().rev() {
            if t.saturating_sub(a) >= self.ttl {
                break;
            }
            let w = (n - i) as u128;
            let d = if a < self.ring {
                self.deposits.len()
            } else {
                let lo = a - self.ring;
                self.deposits.len() - self.deposits.partition_point(|&x| x <= lo)
            } as u128;
            assert!(
                1000 * w <= self.reserve + self.deposit * d,
                "{w} withdrawals in [{a}, {t}] exceed reserve {} + {} deposits",
                self.reserve,
                d
            );
        }
    }

    /// A refusal at `t` only when
    /// `1000 * withdrawals in (t - ring, t] + 1000 > reserve + deposit * deposits in [t - ttl, t]`.
    fn check_refusal(&self, t: u64) {
        let w = if t < self.ring {
            self.withdrawals.len()
        } else {
            let lo = t - self.ring;
            self.withdrawals.len() - self.withdrawals.partition_point(|&x| x <= lo)
        } as u128;
        let lo = t.saturating_sub(self.ttl);
        let d = (self.deposits.len() - self.deposits.partition_point(|&x| x < lo)) as u128;
        assert!(
            1000 * w + 1000 > self.reserve + self.deposit * d,
            "refused at {t} with {w} recent withdrawals and {d} deposits in the last ttl"
        );
    }

    /// Applies `op` at `now` and checks the invariants.
    pub fn apply(&mut self, clock: &mut Clock, now: Instant, op: Op) {
        let t = clock.newest;
        match op {
            Op::Deposit | Op::Deposits(_) => {
                let n = if let Op::Deposits(n) = op { n } else { 1 };
                if n == 0 {
                    // No call, so `now` never reaches the machine: its clamped clock stays
                    // where it was, and so must the instant later operations are logged at.
                    clock.unseen();
                }
                for _ in 0..n {
                    self.b.deposit(now);
                    if self.deposits.len() < LOG {
                        self.deposits.push(t);
                    }
                }
            }
            Op::Withdraw => {
                self.withdraw(now, t);
            }
            Op::Drain => {
                for _ in 0..64 {
                    if !self.withdraw(now, t) {
                        break;
                    }
                }
            }
            Op::Remaining => {
                let r = self.b.remaining(now);
                assert_eq!(self.b.remaining(now), r, "remaining changed the state");
            }
        }
        let s = self.b.stats();
        assert_eq!(s.withdrawals + s.exhausted, self.tries);
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
