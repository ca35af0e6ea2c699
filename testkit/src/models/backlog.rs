//! Queue-depth admission ([`keel_core::backlog::Backlog`]) as its docs define it.
//!
//! - **The estimate**: an observation replaces it, `on_enqueued` adds, `on_dequeued`
//!   subtracts, every admission adds one (all saturating at `0` and `u64::MAX`).
//! - **Full** from the moment the estimate reaches `high` until it is at or below `low`;
//!   normal work is admitted iff not full, not stale and the estimate is below `high`; critical
//!   work iff the estimate is below `high + critical_reserve`.
//! - **Stale** once an observation has been made and `now ≥ observed_at + max_staleness` (a
//!   sum that reaches the end of the clock never comes), until the next observation.
//! - **The drain rate** is recomputed from the history of drained jobs per window (window `k`
//!   is `[origin + k·w, origin + (k+1)·w)`): the first closed window sets it, each later one
//!   weighs 1/4 (`r − ⌈r/4⌉ + s/4`), where a window's sample `s` is its drained jobs
//!   `× 10¹² / w` in thousandths per second; drained jobs are `on_dequeued`'s counts plus each
//!   observation's drop below the estimate. The model decays an empty gap one window at a time
//!   (up to [`MAX_DECAY_STEPS`] windows, then it checks the rate is zero), so it does not share
//!   the machine's shortcut.
//! - **The hint**: `now + ⌈excess × 10¹² / rate⌉` ns, `excess` the jobs above `low` (normal work
//!   while full) or above `bound − 1`; `None` when the rate is zero, the instant saturates, or
//!   the refusal is for staleness.
//!
//! ```
//! use keel_core::backlog::{Backlog, BacklogConfig, Priority};
//! use keel_core::time::Instant;
//! use keel_testkit::models::backlog::BacklogModel;
//!
//! let config = BacklogConfig::builder().high(3).low(1).critical_reserve(1).build()?;
//! let (mut b, mut m) = (Backlog::new(config, Instant::ZERO), BacklogModel::new(&config, Instant::ZERO));
//! for p in [Priority::Normal, Priority::Normal, Priority::Normal, Priority::Normal, Priority::Critical] {
//!     assert_eq!(b.try_acquire(Instant::ZERO, p), m.try_acquire(Instant::ZERO, p));
//! }
//! assert_eq!(b.depth(), m.depth());
//! assert_eq!(m.depth(), 4);
//! # Ok::<(), keel_core::ConfigError>(())
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use keel_core::backlog::{BacklogConfig, BacklogEvent, BacklogFull, Priority};
use keel_core::time::{duration_to_nanos, Instant};
use keel_core::Rejected;

/// Most empty windows the model decays one by one; beyond, the rate must have reached zero.
pub const MAX_DECAY_STEPS: u64 = 1_000;

/// The reference model of a [`Backlog`](keel_core::backlog::Backlog). See the
/// [module docs](self).
#[derive(Clone, Debug)]
pub struct BacklogModel {
    config: BacklogConfig,
    origin: u64,
    window: u64,
    newest: u64,
    depth: u64,
    full: bool,
    observed_at: Option<u64>,
    stale: bool,
    /// Drained jobs per window index.
    drained: BTreeMap<u64, u64>,
    events: Vec<BacklogEvent>,
    /// (normal admitted, critical admitted, refused full, refused stale).
    totals: (u64, u64, u64, u64),
    full_transitions: u64,
}

impl BacklogModel {
    /// A fresh backlog at `now`.
    #[must_use]
    pub fn new(config: &BacklogConfig, now: Instant) -> BacklogModel {
        BacklogModel {
            config: *config,
            origin: now.as_nanos(),
            window: duration_to_nanos(config.drain_window()).max(1),
            newest: now.as_nanos(),
            depth: 0,
            full: false,
            observed_at: None,
            stale: false,
            drained: BTreeMap::new(),
            events: Vec::new(),
            totals: (0, 0, 0, 0),
            full_transitions: 0,
        }
    }

    fn clamp(&mut self, now: Instant) -> u64 {
        self.newest = self.newest.max(now.as_nanos());
        let now = self.newest;
        if !self.stale {
            if let Some(at) = self.stale_at() {
                if now >= at {
                    self.stale = true;
                    self.events.push(BacklogEvent::Stale {
                        at: Instant::from_nanos(now),
                        observed_at: Instant::from_nanos(self.observed_at.unwrap_or(0)),
                    });
                }
            }
        }
        now
    }

    fn stale_at(&self) -> Option<u64> {
        let at = self.observed_at?;
        let end = Instant::from_nanos(at).saturating_add(self.config.max_staleness());
        (end != Instant::MAX).then_some(end.as_nanos())
    }

    fn drain(&mut self, now: u64, n: u64) {
        let k = (now - self.origin) / self.window;
        let c = self.drained.entry(k).or_insert(0);
        *c = c.saturating_add(n);
    }

    fn set_depth(&mut self, now: u64, depth: u64) {
        self.depth = depth;
        let at = Instant::from_nanos(now);
        if self.full && depth <= self.config.low() {
            self.full = false;
            self.events.push(BacklogEvent::Admitting { at, depth });
        } else if !self.full && depth >= self.config.high() {
            self.full = true;
            self.full_transitions += 1;
            self.events.push(BacklogEvent::Full { at, depth });
        }
    }

    /// The drain rate over the windows closed by the newest instant, in thousandths of a job
    /// per second.
    ///
    /// # Panics
    ///
    /// If a long empty gap did not decay the rate to zero (the machine's shortcut would then
    /// be wrong).
    #[must_use]
    pub fn drain_rate_milli(&self) -> u64 {
        let closed = (self.newest - self.origin) / self.window;
        if closed == 0 {
            return 0;
        }
        let sample = |k: u64| {
            let n = self.drained.get(&k).copied().unwrap_or(0);
            let s = u128::from(n) * 1_000_000_000_000 / u128::from(self.window);
            u64::try_from(s).unwrap_or(u64::MAX)
        };
        let ewma = |r: u64, s: u64| (r - r.div_ceil(4)).saturating_add(s / 4);
        let mut rate = sample(0);
        let mut k = 1;
        // Windows with drains, in order, each after a run of empty windows.
        let busy: Vec<u64> = self.drained.range(1..closed).map(|(k, _)| *k).collect();
        for next in busy.into_iter().chain(std::iter::once(closed)) {
            let empty = next - k;
            let steps = empty.min(MAX_DECAY_STEPS);
            for _ in 0..steps {
                rate = ewma(rate, 0);
            }
            if empty > steps {
                assert_eq!(
                    rate, 0,
                    "{steps} empty windows did not decay the rate to zero"
                );
            }
            if next < closed {
                rate = ewma(rate, sample(next));
                k = next + 1;
            }
        }
        rate
    }

    fn hint(&self, now: u64, excess: u64) -> Option<Instant> {
        let rate = self.drain_rate_milli();
        if rate == 0 {
            return None;
        }
        let ns = (u128::from(excess) * 1_000_000_000_000).div_ceil(u128::from(rate));
        let ns = u64::try_from(ns).unwrap_or(u64::MAX);
        let at = Instant::from_nanos(now).saturating_add(Duration::from_nanos(ns));
        (at != Instant::MAX).then_some(at)
    }

    /// The decision the machine must make, applied to the model.
    ///
    /// # Errors
    ///
    /// The expected rejection.
    pub fn try_acquire(
        &mut self,
        now: Instant,
        priority: Priority,
    ) -> Result<(), Rejected<BacklogFull>> {
        let now = self.clamp(now);
        let (high, critical) = (self.config.high(), self.config.critical_bound());
        let admitted = match priority {
            Priority::Normal if self.stale => {
                self.totals.3 += 1;
                return Err(Rejected {
                    reason: BacklogFull::Stale {
                        observed_at: Instant::from_nanos(self.observed_at.unwrap_or(0)),
                    },
                    retry_at: None,
                });
            }
            Priority::Normal => !self.full && self.depth < high,
            Priority::Critical => self.depth < critical,
        };
        if !admitted {
            self.totals.2 += 1;
            let (bound, target) = match priority {
                Priority::Normal if self.full => (high, self.config.low()),
                Priority::Normal => (high, high - 1),
                Priority::Critical => (critical, critical - 1),
            };
            return Err(Rejected {
                reason: BacklogFull::Full {
                    depth: self.depth,
                    bound,
                },
                retry_at: self.hint(now, self.depth.saturating_sub(target)),
            });
        }
        match priority {
            Priority::Normal => self.totals.0 += 1,
            Priority::Critical => self.totals.1 += 1,
        }
        self.set_depth(now, self.depth.saturating_add(1));
        Ok(())
    }

    /// An observed depth.
    pub fn on_depth(&mut self, now: Instant, depth: u64) {
        let now = self.clamp(now);
        self.drain(now, self.depth.saturating_sub(depth));
        self.observed_at = Some(now);
        if self.stale {
            self.stale = false;
            self.events.push(BacklogEvent::Fresh {
                at: Instant::from_nanos(now),
                depth,
            });
        }
        self.set_depth(now, depth);
    }

    /// Jobs enqueued without admission.
    pub fn on_enqueued(&mut self, now: Instant, n: u64) {
        let now = self.clamp(now);
        self.set_depth(now, self.depth.saturating_add(n));
    }

    /// Jobs dequeued.
    pub fn on_dequeued(&mut self, now: Instant, n: u64) {
        let now = self.clamp(now);
        self.drain(now, n);
        self.set_depth(now, self.depth.saturating_sub(n));
    }

    /// The timer.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.clamp(now);
    }

    /// When the depth goes stale.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.stale {
            return None;
        }
        self.stale_at().map(Instant::from_nanos)
    }

    /// The events the machine must have queued since the last call, oldest first.
    pub fn take_events(&mut self) -> Vec<BacklogEvent> {
        std::mem::take(&mut self.events)
    }

    /// The estimate.
    #[must_use]
    pub fn depth(&self) -> u64 {
        self.depth
    }

    /// Whether full.
    #[must_use]
    pub fn is_full(&self) -> bool {
        self.full
    }

    /// Whether stale.
    #[must_use]
    pub fn is_stale(&self) -> bool {
        self.stale
    }

    /// `(admitted, admitted_critical, refused_full, refused_stale)`.
    #[must_use]
    pub fn totals(&self) -> (u64, u64, u64, u64) {
        self.totals
    }

    /// Times the backlog became full.
    #[must_use]
    pub fn full_transitions(&self) -> u64 {
        self.full_transitions
    }
}
