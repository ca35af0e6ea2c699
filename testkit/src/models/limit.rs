//! The connection limit ([`keel_core::limit::Limit`]) as its docs define it: a counter
//! compared with `max`.
//!
//! - `try_acquire` takes a slot while `in_use < max`, else it is rejected with the configured
//!   [`Overflow`] (and, under `Backpressure`, the limit reports one waiter until the next
//!   admission).
//! - A release frees one slot; a release with nothing in use is counted as unmatched.
//! - `set_max(n)` clamps `n` to [`MAX_LIMIT`] and never touches the slots in use (so `in_use`
//!   may exceed a lowered `max` until releases bring it down).
//!
//! ```
//! use keel_core::limit::{Limit, LimitConfig};
//! use keel_core::time::Instant;
//! use keel_testkit::models::limit::LimitModel;
//!
//! let config = LimitConfig::builder().max(1).build()?;
//! let (mut limit, mut model) = (Limit::new(config.clone()), LimitModel::new(&config));
//! let permit = limit.try_acquire(Instant::ZERO).expect("a free slot");
//! assert_eq!(model.try_acquire(), Ok(()));
//! assert_eq!(limit.try_acquire(Instant::ZERO).unwrap_err().reason, model.try_acquire().unwrap_err());
//! limit.on_release(Instant::ZERO, permit);
//! model.on_release();
//! assert_eq!(limit.stats(), model.stats());
//! # Ok::<(), keel_core::ConfigError>(())
//! ```

use core::num::NonZeroUsize;

use keel_core::limit::{LimitConfig, LimitStats, Overflow, MAX_LIMIT};

/// The reference model of a connection limit. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct LimitModel {
    overflow: Overflow,
    stats: LimitStats,
}

impl LimitModel {
    /// The model of `Limit::new(config)`.
    #[must_use]
    pub fn new(config: &LimitConfig) -> Self {
        let mut stats = LimitStats::default();
        stats.max = config.max();
        LimitModel {
            overflow: config.overflow(),
            stats,
        }
    }

    /// `try_acquire(now)`: `Ok` when a slot is taken, else the rejection's reason.
    pub fn try_acquire(&mut self) -> Result<(), Overflow> {
        let s = &mut self.stats;
        if s.in_use < s.max {
            s.in_use += 1;
            s.peak = s.peak.max(s.in_use);
            s.acquired += 1;
            s.waiting = 0;
            Ok(())
        } else {
            s.rejected += 1;
            s.waiting = usize::from(self.overflow == Overflow::Backpressure);
            Err(self.overflow)
        }
    }

    /// `on_release(now, permit)`.
    pub fn on_release(&mut self) {
        let s = &mut self.stats;
        if s.in_use == 0 {
            s.unmatched_releases += 1;
        } else {
            s.in_use -= 1;
            s.released += 1;
        }
    }

    /// `set_max(n)`.
    pub fn set_max(&mut self, n: NonZeroUsize) {
        self.stats.max = n.get().min(MAX_LIMIT);
    }

    /// `on_shed(now)`.
    pub fn on_shed(&mut self) {
        self.stats.shed += 1;
    }

    /// The counters the machine's `stats()` must return.
    #[must_use]
    pub fn stats(&self) -> LimitStats {
        self.stats
    }
}
