//! [`SharedBudget`]: one [`RetryBudget`] shared by many tasks and threads (feature `std`).
//!
//! A retry budget only works if every operation that retries against a dependency draws on
//! the same one: a clone is a handle to the same budget (`Arc<Mutex<RetryBudget>>`). Each
//! method holds the lock for a few integer steps (O(1), no allocation) and never across an
//! `.await`. A mutex poisoned by a panic elsewhere is recovered, never propagated: the budget's
//! state is consistent between methods.
//!
//! The async retry driver ([`crate::driver::retry`]) deposits and withdraws through this
//! type; see [`crate::budget`] for what to deposit and the exact guarantee.
//!
//! ```
//! use core::time::Duration;
//! use keel_core::budget::BudgetConfig;
//! use keel_core::sync::budget::SharedBudget;
//! use keel_core::Instant;
//!
//! let config = BudgetConfig::builder()
//!     .ttl(Duration::from_secs(10))
//!     .min_per_sec(1)
//!     .retry_percent(20)
//!     .build()?;
//! let t = Instant::from_secs(5);
//! let budget = SharedBudget::new(config, t);
//! let other = budget.clone();
//! // The floor: 1 retry per second over 10 s, shared by both handles.
//! let granted = (0..20).filter(|i| if i % 2 == 0 { budget.try_acquire(t) } else { other.try_acquire(t) }.is_ok()).count();
//! assert_eq!(granted, 10);
//! assert_eq!(budget.stats().exhausted, 10);
//! # Ok::<(), keel_core::ConfigError>(())
//! ```

use crate::budget::{BudgetConfig, BudgetStats, Exhausted, RetryBudget};
use crate::error::Rejected;
use crate::sync::shim::{Arc, Mutex, MutexGuard};
use crate::time::Instant;

/// A thread-safe handle to one [`RetryBudget`]; clones share it.
#[derive(Clone, Debug)]
pub struct SharedBudget {
    inner: Arc<Mutex<RetryBudget>>,
}

impl SharedBudget {
    /// A shared, empty budget (only the floor is available) aligned on `now`.
    #[must_use]
    pub fn new(config: BudgetConfig, now: Instant) -> Self {
        SharedBudget::from_budget(RetryBudget::new(config, now))
    }

    /// Shares an existing budget.
    #[must_use]
    pub fn from_budget(budget: RetryBudget) -> Self {
        SharedBudget {
            inner: Arc::new(Mutex::new(budget)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, RetryBudget> {
        // Every method leaves the budget consistent; a panic elsewhere while the lock was held
        // is no reason to stop retrying everywhere: recover the guard.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` with the budget locked (keep it short: no I/O, no `.await`).
    pub fn with<T>(&self, f: impl FnOnce(&mut RetryBudget) -> T) -> T {
        f(&mut self.lock())
    }

    /// See [`RetryBudget::deposit`].
    pub fn deposit(&self, now: Instant) {
        self.lock().deposit(now);
    }

    /// See [`RetryBudget::try_acquire`].
    ///
    /// # Errors
    ///
    /// [`Rejected<Exhausted>`](Exhausted) when the budget is spent, with the instant it would
    /// next allow a retry if nothing else happened (see [`RetryBudget::try_acquire`]).
    pub fn try_acquire(&self, now: Instant) -> Result<(), Rejected<Exhausted>> {
        self.lock().try_acquire(now)
    }

    /// See [`RetryBudget::remaining`].
    #[must_use]
    pub fn remaining(&self, now: Instant) -> u64 {
        self.lock().remaining(now)
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> BudgetConfig {
        *self.lock().config()
    }

    /// See [`RetryBudget::stats`].
    #[must_use]
    pub fn stats(&self) -> BudgetStats {
        self.lock().stats()
    }
}

impl From<RetryBudget> for SharedBudget {
    fn from(budget: RetryBudget) -> Self {
        SharedBudget::from_budget(budget)
    }
}

#[cfg(test)]
#[cfg(not(keel_loom))]
mod tests {
    use super::*;
    use std::thread;

    #[test]
    fn threads_share_one_floor() {
        let config = BudgetConfig::builder()
            .ttl(core::time::Duration::from_secs(10))
            .min_per_sec(3)
            .build()
            .unwrap();
        let t = Instant::from_secs(1);
        let b = SharedBudget::new(config, t);
        let handles: std::vec::Vec<_> = (0..8)
            .map(|_| {
                let b = b.clone();
                thread::spawn(move || (0..10).filter(|_| b.try_acquire(t).is_ok()).count())
            })
            .collect();
        let granted: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(granted, 30);
        assert_eq!(b.stats().withdrawals, 30);
        assert_eq!(b.stats().exhausted, 50);
        assert_eq!(b.config(), config);
        assert_ne!(config, BudgetConfig::default());
    }

    #[test]
    fn recovers_from_a_poisoned_lock() {
        let b = SharedBudget::new(BudgetConfig::default(), Instant::ZERO);
        let b2 = b.clone();
        let r = thread::spawn(move || b2.with(|_| panic!("poison the lock"))).join();
        assert!(r.is_err());
        b.deposit(Instant::ZERO);
        assert_eq!(b.stats().deposits, 1);
    }
}
