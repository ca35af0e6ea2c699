//! The backoff schedule ([`keel_core::backoff::Backoff`]) as its docs define it.
//!
//! - **The un-jittered delay** `d(n)`: constant `delay`; linear `base + n × step`; exponential
//!   `base × (factor_percent / 100)^n` rounded up at each step; every one capped at `cap`
//!   (and `d(0) = min(base, cap)`). [`step`](BackoffModel::step) returns `d(n)` and advances.
//! - **The jitter** ([`check_draw`](BackoffModel::check_draw) checks a delay the machine drew):
//!   `None` is `d(n)`; `Full` is in `[0, d(n)]`; `Equal` in `[d(n) / 2, d(n)]`; `Decorrelated`
//!   in `[base, min(cap, 3 × previous draw)]`. Never above `cap`. A delay that saturated at the
//!   end of the clock may fall short of its lower bound.
//!
//! The attempt count, the deadline and the hint floor are the callers' to check: they depend on
//! the instants the caller feeds the machine, not on the schedule.
//!
//! ```
//! use std::time::Duration;
//! use keel_core::backoff::{Backoff, BackoffConfig, Jitter};
//! use keel_core::time::Instant;
//! use keel_testkit::models::backoff::BackoffModel;
//!
//! let config = BackoffConfig::exponential(Duration::from_millis(100), Duration::from_secs(1))
//!     .jitter(Jitter::Equal)
//!     .unlimited_attempts()
//!     .build()?;
//! let (mut backoff, mut model) = (Backoff::new(config, Instant::ZERO), BackoffModel::new(&config));
//! for delay in backoff.delays().take(8) {
//!     let d = model.step();
//!     let delay = u64::try_from(delay.as_nanos()).expect("under the 1 s cap");
//!     model.check_draw(d, delay, false).expect("within the equal-jitter bounds");
//! }
//! assert_eq!(model.step(), 1_000_000_000); // capped
//! # Ok::<(), keel_core::ConfigError>(())
//! ```

use keel_core::backoff::{BackoffConfig, Jitter, Schedule};
use keel_core::time::duration_to_nanos;

/// The reference model of a backoff schedule. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct BackoffModel {
    schedule: Schedule,
    jitter: Jitter,
    base: u64,
    cap: u64,
    /// The next un-jittered delay.
    next: u64,
    /// The previous visible draw (what a decorrelated window grows from).
    prev: u64,
    /// `prev` as it was when [`step`](Self::step) last ran: the window of that step's draw.
    window: u64,
}

impl BackoffModel {
    /// The model of `Backoff::new(*config, _)`, at its first retry.
    ///
    /// # Panics
    ///
    /// On a [`Schedule`] this model does not know yet (extend the model with it).
    #[must_use]
    pub fn new(config: &BackoffConfig) -> Self {
        let base = duration_to_nanos(match config.schedule() {
            Schedule::Constant { delay } => delay,
            Schedule::Linear { base, .. } | Schedule::Exponential { base, .. } => base,
            other => panic!("BackoffModel does not know {other:?}: add it to the model"),
        });
        let cap = duration_to_nanos(config.cap());
        let base = base.min(cap);
        BackoffModel {
            schedule: config.schedule(),
            jitter: config.jitter(),
            base,
            cap,
            next: base,
            prev: base,
            window: base,
        }
    }

    /// `min(base, cap)` in nanoseconds: `d(0)` and the decorrelated floor.
    #[must_use]
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The cap in nanoseconds.
    #[must_use]
    pub fn cap(&self) -> u64 {
        self.cap
    }

    /// `Backoff::reset`: the schedule starts over at `d(0)`.
    pub fn reset(&mut self) {
        self.next = self.base;
        self.prev = self.base;
        self.window = self.base;
    }

    /// The un-jittered delay `d(n)` of this retry (nanoseconds); advances to `n + 1`. The draw
    /// that follows is hidden until [`check_draw`](Self::check_draw) sees it: a decorrelated
    /// window after a hidden draw (a hint won, or the delay saturated) is bounded by the cap.
    pub fn step(&mut self) -> u64 {
        let d = self.next;
        self.next = match self.schedule {
            Schedule::Linear { step, .. } => {
                d.saturating_add(duration_to_nanos(step)).min(self.cap)
            }
            Schedule::Exponential { factor_percent, .. } => {
                let grown = (u128::from(d) * u128::from(factor_percent)).div_ceil(100);
                u64::try_from(grown).unwrap_or(u64::MAX).min(self.cap)
            }
            _ => d,
        };
        self.window = self.prev;
        self.prev = self.cap;
        d
    }

    /// Checks a delay the machine drew for the step that returned `d`: within that step's
    /// jitter bounds and the cap (`saturated`: the retry instant hit the end of the clock, so
    /// the delay may fall short). A visible, unsaturated draw is the next decorrelated
    /// window's start. `Err` says which bound failed.
    pub fn check_draw(&mut self, d: u64, delay: u64, saturated: bool) -> Result<(), String> {
        let within = |lo: u64, hi: u64| (lo <= delay || saturated) && delay <= hi;
        let ok = match self.jitter {
            Jitter::None => delay == d || saturated && delay <= d,
            Jitter::Full => within(0, d),
            Jitter::Equal => within(d / 2, d),
            Jitter::Decorrelated => {
                let hi = self.window.saturating_mul(3).min(self.cap).max(self.base);
                within(self.base, hi)
            }
        };
        if !ok {
            return Err(format!(
                "{:?} jitter drew {delay} ns for d(n) = {d} ns (previous draw {} ns, base {}, cap {})",
                self.jitter, self.window, self.base, self.cap
            ));
        }
        if delay > self.cap {
            return Err(format!("delay {delay} ns above the cap {} ns", self.cap));
        }
        if !saturated {
            self.prev = delay;
        }
        Ok(())
    }
}
