//! [`SharedBreaker`]: one [`CircuitBreaker`] shared by many tasks and threads (feature `std`).
//!
//! A clone is a handle to the same breaker (`Arc<Mutex<CircuitBreaker>>`). Every method takes
//! the lock for a few arithmetic steps and never across an `.await` or a call, so the admission
//! check and the state change it causes are one atomic step: the seed's race (load the state,
//! then store a new one) cannot happen, and the hot path has no async lock. A mutex poisoned by
//! a panic elsewhere is recovered (the breaker's state is always consistent between methods),
//! never propagated.
//!
//! The adapters build `breaker.call(future)` on this type: acquire, run the future, report its
//! outcome with the permit (a dropped future reports through
//! [`on_abandoned`](SharedBreaker::on_abandoned)).
//!
//! ```
//! use keel_core::breaker::{BreakerConfig, State};
//! use keel_core::sync::breaker::SharedBreaker;
//! use keel_core::Instant;
//!
//! let config = BreakerConfig::consecutive_failures(2).build()?;
//! let breaker = SharedBreaker::new(config, Instant::ZERO);
//! let other = breaker.clone();
//! let t = Instant::from_secs(1);
//! for _ in 0..2 {
//!     let permit = other.try_acquire(t).expect("closed");
//!     other.on_failure(t, permit);
//! }
//! assert_eq!(breaker.state(), State::Open);
//! let mut events = 0;
//! breaker.drain_events(|_| events += 1);
//! assert_eq!(events, 1);
//! # Ok::<(), keel_core::ConfigError>(())
//! ```

use crate::breaker::{
    BreakerConfig, BreakerEvent, BreakerPermit, BreakerStats, CircuitBreaker, Outcome, Rejected,
    State,
};
use crate::sync::shim::{Arc, Mutex, MutexGuard};
use crate::time::Instant;

/// A thread-safe handle to one [`CircuitBreaker`]; clones share it.
#[derive(Clone, Debug)]
pub struct SharedBreaker {
    inner: Arc<Mutex<CircuitBreaker>>,
}

impl SharedBreaker {
    /// A shared, closed breaker.
    #[must_use]
    pub fn new(config: BreakerConfig, now: Instant) -> Self {
        SharedBreaker::from_breaker(CircuitBreaker::new(config, now))
    }

    /// Shares an existing breaker.
    #[must_use]
    pub fn from_breaker(breaker: CircuitBreaker) -> Self {
        SharedBreaker {
            inner: Arc::new(Mutex::new(breaker)),
        }
    }

    #[inline]
    fn lock(&self) -> MutexGuard<'_, CircuitBreaker> {
        // A panic while the lock was held cannot leave the breaker half-updated in a way that
        // matters more than refusing service would: recover the guard.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` with the breaker locked (keep it short: no I/O, no `.await`).
    pub fn with<R>(&self, f: impl FnOnce(&mut CircuitBreaker) -> R) -> R {
        f(&mut self.lock())
    }

    /// See [`CircuitBreaker::try_acquire`].
    ///
    /// # Errors
    ///
    /// [`Rejected`] while open, forced open, or half-open with every probe slot taken.
    #[must_use = "a permit must be reported; a rejection must be handled"]
    #[inline]
    pub fn try_acquire(&self, now: Instant) -> Result<BreakerPermit, Rejected> {
        self.lock().try_acquire(now)
    }

    /// See [`CircuitBreaker::on_success`].
    #[inline]
    pub fn on_success(&self, now: Instant, permit: BreakerPermit) {
        self.lock().on_success(now, permit);
    }

    /// See [`CircuitBreaker::on_failure`].
    #[inline]
    pub fn on_failure(&self, now: Instant, permit: BreakerPermit) {
        self.lock().on_failure(now, permit);
    }

    /// See [`CircuitBreaker::on_ignored`].
    #[inline]
    pub fn on_ignored(&self, now: Instant, permit: BreakerPermit) {
        self.lock().on_ignored(now, permit);
    }

    /// See [`CircuitBreaker::on_abandoned`].
    pub fn on_abandoned(&self, now: Instant, permit: BreakerPermit) -> Outcome {
        self.lock().on_abandoned(now, permit)
    }

    /// See [`CircuitBreaker::on_outcome`].
    #[inline]
    pub fn on_outcome(&self, now: Instant, permit: BreakerPermit, outcome: Outcome) {
        self.lock().on_outcome(now, permit, outcome);
    }

    /// See [`CircuitBreaker::handle_timeout`].
    pub fn handle_timeout(&self, now: Instant) {
        self.lock().handle_timeout(now);
    }

    /// See [`CircuitBreaker::poll_timeout`].
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.lock().poll_timeout()
    }

    /// See [`CircuitBreaker::poll_event`].
    #[must_use]
    pub fn poll_event(&self) -> Option<BreakerEvent> {
        self.lock().poll_event()
    }

    /// Pops every queued event under one lock and hands each to `f` (after the lock is
    /// released, so `f` may log or call back into the breaker).
    pub fn drain_events(&self, mut f: impl FnMut(BreakerEvent)) {
        let mut batch = [None; crate::breaker::EVENT_QUEUE_CAPACITY];
        {
            let mut b = self.lock();
            for slot in &mut batch {
                *slot = b.poll_event();
                if slot.is_none() {
                    break;
                }
            }
        }
        for ev in batch.into_iter().flatten() {
            f(ev);
        }
    }

    /// See [`CircuitBreaker::state`].
    #[must_use]
    pub fn state(&self) -> State {
        self.lock().state()
    }

    /// See [`CircuitBreaker::stats`].
    #[must_use]
    pub fn stats(&self) -> BreakerStats {
        self.lock().stats()
    }

    /// See [`CircuitBreaker::force_open`].
    pub fn force_open(&self, now: Instant) {
        self.lock().force_open(now);
    }

    /// See [`CircuitBreaker::disable`].
    pub fn disable(&self, now: Instant) {
        self.lock().disable(now);
    }

    /// See [`CircuitBreaker::reset`].
    pub fn reset(&self, now: Instant) {
        self.lock().reset(now);
    }
}

impl From<CircuitBreaker> for SharedBreaker {
    fn from(breaker: CircuitBreaker) -> Self {
        SharedBreaker::from_breaker(breaker)
    }
}

#[cfg(all(test, not(keel_loom)))]
mod tests {
    use super::*;
    use std::thread;

    #[test]
    fn recovers_from_a_poisoned_lock() {
        let config = BreakerConfig::consecutive_failures(1).build().unwrap();
        let b = SharedBreaker::new(config, Instant::ZERO);
        let b2 = b.clone();
        let r = thread::spawn(move || {
            b2.with(|_| panic!("poison the lock"));
        })
        .join();
        assert!(r.is_err());
        let p = b.try_acquire(Instant::ZERO).unwrap();
        b.on_failure(Instant::ZERO, p);
        assert_eq!(b.state(), State::Open);
    }

    #[test]
    fn threads_share_one_half_open_probe_budget() {
        let config = BreakerConfig::consecutive_failures(1)
            .permitted_calls_in_half_open(3)
            .build()
            .unwrap();
        let b = SharedBreaker::new(config, Instant::ZERO);
        b.force_open(Instant::ZERO);
        b.reset(Instant::ZERO);
        let p = b.try_acquire(Instant::ZERO).unwrap();
        b.on_failure(Instant::ZERO, p);
        let t = Instant::from_secs(60);
        let handles: std::vec::Vec<_> = (0..8)
            .map(|_| {
                let b = b.clone();
                thread::spawn(move || (0..4).filter(|_| b.try_acquire(t).is_ok()).count())
            })
            .collect();
        let admitted: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(admitted, 3);
        assert_eq!(b.stats().probes_in_use, 3);
    }
}
