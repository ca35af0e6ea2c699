//! The retry budget ([`keel_core::budget::RetryBudget`]) as its docs define it.
//!
//! - **The balance**: `reserve + deposit × deposits − 1000 × withdrawals`, over the events whose
//!   slot is within [`SLOTS`] slots of the current one (`reserve` is `min_per_sec × ttl` in
//!   thousandths of a retry, `deposit` is `10 × retry_percent`). A withdrawal is granted while
//!   the balance is at least 1000 (one retry); [`remaining`](BudgetModel::remaining) is the
//!   balance in whole retries.
//! - **The window guarantees** ([`on_withdraw`](BudgetModel::on_withdraw) checks both for every
//!   withdrawal the machine decides): in any window `[a, a + ttl)` starting at a withdrawal,
//!   `1000 × withdrawals ≤ reserve + deposit × deposits in (a − ring, a + ttl)`, where `ring` is
//!   `(SLOTS + 1)` slots; and a refusal at `t` only when
//!   `1000 × withdrawals in (t − ring, t] + 1000 > reserve + deposit × deposits in [t − ttl, t]`.
//!
//! Events at one instant are kept as one entry with a count and running totals (so every count
//! over a time range is two binary searches), and events too old to matter for either the
//! balance or a window are dropped, so the model stays small and fast however long it runs (a
//! fuzz target drives it). The upper window guarantee is checked for the windows starting at
//! the [`MAX_WINDOW_STARTS`] most recent withdrawal instants before each withdrawal.
//!
//! ```
//! use std::time::Duration;
//! use keel_core::budget::{BudgetConfig, RetryBudget};
//! use keel_core::time::Instant;
//! use keel_testkit::models::budget::BudgetModel;
//!
//! let config = BudgetConfig::builder().min_per_sec(1).ttl(Duration::from_secs(2)).build()?;
//! let (mut budget, mut model) = (RetryBudget::new(config, Instant::ZERO), BudgetModel::new(&config, Instant::ZERO));
//! for ms in [0, 10, 20, 30] {
//!     let now = Instant::from_millis(ms);
//!     let allowed = model.allows(now);
//!     let granted = budget.try_acquire(now).is_ok();
//!     assert_eq!(granted, allowed);
//!     model.on_withdraw(now, granted).expect("the documented window guarantees hold");
//! }
//! assert_eq!(model.totals(), (0, 2, 2)); // a floor of 2 retries per 2 s
//! # Ok::<(), keel_core::ConfigError>(())
//! ```

use keel_core::budget::{BudgetConfig, SLOTS};
use keel_core::time::{duration_to_nanos, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Deposit,
    Withdrawal,
    Refusal,
}

/// How many withdrawal instants, newest first, start a window checked at each withdrawal.
pub const MAX_WINDOW_STARTS: usize = 512;

/// Events of one kind at one (clamped) instant, and the running totals up to and including it.
#[derive(Clone, Copy, Debug)]
struct Entry {
    at: u64,
    kind: Kind,
    count: u64,
    deposits: u64,
    withdrawals: u64,
}

impl Entry {
    /// The running totals (deposits, withdrawals) just before this entry.
    fn before(&self) -> (u64, u64) {
        match self.kind {
            Kind::Deposit => (self.deposits - self.count, self.withdrawals),
            Kind::Withdrawal => (self.deposits, self.withdrawals - self.count),
            Kind::Refusal => (self.deposits, self.withdrawals),
        }
    }
}

/// The reference model of a retry budget. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct BudgetModel {
    origin: u64,
    newest: u64,
    slot: u64,
    ttl: u64,
    ring: u64,
    reserve: i128,
    deposit: i128,
    entries: Vec<Entry>,
    deposits: u64,
    withdrawals: u64,
    refusals: u64,
}

impl BudgetModel {
    /// The model of `RetryBudget::new(*config, start)`.
    #[must_use]
    pub fn new(config: &BudgetConfig, start: Instant) -> Self {
        let ttl = duration_to_nanos(config.ttl());
        let slot = duration_to_nanos(config.slot()).max(1);
        BudgetModel {
            origin: start.as_nanos(),
            newest: start.as_nanos(),
            slot,
            ttl,
            ring: slot.saturating_mul(SLOTS as u64 + 1),
            reserve: i128::from(config.min_per_sec()) * i128::from(ttl) / 1_000_000,
            deposit: i128::from(config.retry_percent()) * 10,
            entries: Vec::new(),
            deposits: 0,
            withdrawals: 0,
            refusals: 0,
        }
    }

    fn observe(&mut self, now: Instant) -> u64 {
        self.newest = self.newest.max(now.as_nanos());
        self.newest
    }

    /// The balance at `t`, in thousandths of a retry (negative once over-spent): the events
    /// whose slot is within `SLOTS` of `t`'s.
    fn balance(&self, t: u64) -> i128 {
        let current = (t - self.origin) / self.slot;
        let oldest_live = current.saturating_sub(SLOTS as u64);
        let first = self
            .entries
            .partition_point(|e| (e.at - self.origin) / self.slot < oldest_live);
        let (d, w) = self.totals_from(first);
        self.reserve + self.deposit * i128::from(d) - 1000 * i128::from(w)
    }

    /// Deposits and withdrawals in the entries from index `first` on.
    fn totals_from(&self, first: usize) -> (u64, u64) {
        let (d0, w0) = self
            .entries
            .get(first)
            .map_or((self.deposits, self.withdrawals), Entry::before);
        (self.deposits - d0, self.withdrawals - w0)
    }

    /// Whether a withdrawal at `now` would be granted (reads `now` like the machine does).
    pub fn allows(&mut self, now: Instant) -> bool {
        let t = self.observe(now);
        self.balance(t) >= 1000
    }

    /// The `retry_at` of a refusal at `now`: the first instant after `now` at which a
    /// withdrawal would be granted if nothing else happened. The balance only changes when an
    /// event's slot leaves the window, at a slot start, and after `SLOTS + 1` slots every
    /// event has left; so the model tries those starts in order. `None` if no start grants one
    /// (only a deposit would). A query: it changes nothing.
    #[must_use]
    pub fn retry_at(&self, now: Instant) -> Option<Instant> {
        let t = self.newest.max(now.as_nanos());
        let current = (t - self.origin) / self.slot;
        (1..=SLOTS as u64 + 1)
            .map(|k| {
                u64::try_from(
                    u128::from(self.origin) + u128::from(current + k) * u128::from(self.slot),
                )
            })
            .map_while(Result::ok)
            .find(|start| self.balance(*start) >= 1000)
            .map(Instant::from_nanos)
    }

    /// `RetryBudget::remaining(now)`: whole retries left. A query: like the machine's, it reads
    /// `now` against the newest instant seen but does not advance the clock (a later input at an
    /// earlier instant is still read at the newest *input's* instant).
    #[must_use]
    pub fn remaining(&self, now: Instant) -> u64 {
        let t = self.newest.max(now.as_nanos());
        u64::try_from(self.balance(t).max(0) / 1000).unwrap_or(u64::MAX)
    }

    /// Records `RetryBudget::deposit(now)`.
    pub fn on_deposit(&mut self, now: Instant) {
        let t = self.observe(now);
        self.deposits += 1;
        self.record(t, Kind::Deposit);
    }

    /// Records the machine's answer to `RetryBudget::try_acquire(now)` and checks the window
    /// guarantee that answer must keep (see the [module docs](self)); `Err` says which failed.
    pub fn on_withdraw(&mut self, now: Instant, granted: bool) -> Result<(), String> {
        let t = self.observe(now);
        if granted {
            self.withdrawals += 1;
            self.record(t, Kind::Withdrawal);
            self.check_upper(t)
        } else {
            let checked = self.check_refusal(t);
            self.refusals += 1;
            self.record(t, Kind::Refusal);
            checked
        }
    }

    /// Deposits, withdrawals and refusals recorded so far (the machine's `stats()` must agree).
    #[must_use]
    pub fn totals(&self) -> (u64, u64, u64) {
        (self.deposits, self.withdrawals, self.refusals)
    }

    fn record(&mut self, t: u64, kind: Kind) {
        let (deposits, withdrawals) = (self.deposits, self.withdrawals);
        match self.entries.last_mut() {
            Some(e) if e.at == t && e.kind == kind => {
                e.count += 1;
                (e.deposits, e.withdrawals) = (deposits, withdrawals);
            }
            _ => self.entries.push(Entry {
                at: t,
                kind,
                count: 1,
                deposits,
                withdrawals,
            }),
        }
        // Older than every window and every live slot: nothing reads it again.
        let horizon = i128::from(t) - i128::from(self.ttl) - i128::from(self.ring);
        if self.entries.len() > 64 && i128::from(self.entries[0].at) < horizon {
            self.entries.retain(|e| i128::from(e.at) >= horizon);
        }
    }

    /// Events of `kind` at instants in `[lo, hi]`.
    fn count(&self, kind: Kind, lo: i128, hi: i128) -> i128 {
        let first = self.entries.partition_point(|e| i128::from(e.at) < lo);
        let end = self.entries.partition_point(|e| i128::from(e.at) <= hi);
        let (d, w) = self.totals_from(first);
        let (d_after, w_after) = self.totals_from(end);
        i128::from(match kind {
            Kind::Deposit => d - d_after,
            Kind::Withdrawal => w - w_after,
            Kind::Refusal => 0,
        })
    }

    /// The windows `[a, t]` starting at a withdrawal less than `ttl` before `t`.
    fn check_upper(&self, t: u64) -> Result<(), String> {
        let t = i128::from(t);
        let (ttl, ring) = (i128::from(self.ttl), i128::from(self.ring));
        let starts = self
            .entries
            .iter()
            .rev()
            .filter(|e| e.kind == Kind::Withdrawal)
            .take(MAX_WINDOW_STARTS);
        for e in starts {
            let a = i128::from(e.at);
            if t - a >= ttl {
                break;
            }
            let w = self.count(Kind::Withdrawal, a, t);
            let d = self.count(Kind::Deposit, a - ring + 1, t);
            if 1000 * w > self.reserve + self.deposit * d {
                return Err(format!(
                    "{w} withdrawals in [{a}, {t}] exceed reserve {} + {d} deposits",
                    self.reserve
                ));
            }
        }
        Ok(())
    }

    fn check_refusal(&self, t: u64) -> Result<(), String> {
        let t = i128::from(t);
        let w = self.count(Kind::Withdrawal, t - i128::from(self.ring) + 1, t);
        let d = self.count(Kind::Deposit, t - i128::from(self.ttl), t);
        if 1000 * w + 1000 > self.reserve + self.deposit * d {
            Ok(())
        } else {
            Err(format!(
                "refused at {t} with {w} recent withdrawals and {d} deposits in the last ttl"
            ))
        }
    }
}
