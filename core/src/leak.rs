//! Leak detection for permits and leases: report a permit held longer than a threshold.
//!
//! # What it protects against
//!
//! A pool of connections (or permits, or leases) is exhausted by a leak long before anything
//! fails loudly: a worker that forgets to return a Redis connection in 1 % of its jobs drains
//! the pool in minutes, and then every job waits (seed 004's "connections not released
//! promptly"). [`LeakDetector`] watches the permits a pool hands out, by id, and reports each
//! one held longer than `threshold` as a [`LeakEvent::Leaked`] with its id and age, exactly
//! once, and counts it, so the leak is an alert with a culprit instead of a slow outage. A
//! leaked permit that is released after all is reported again as [`LeakEvent::Released`] with
//! how long it was held.
//!
//! # The contract
//!
//! - **Ids are the caller's** (`u64`: a lease token, a connection number, a counter). Call
//!   [`on_acquire(now, id)`](LeakDetector::on_acquire) when the permit is handed out and
//!   [`on_release(now, id)`](LeakDetector::on_release) when it comes back.
//! - **A leak is a permit held for `threshold` or longer**: one whose `now - acquired_at >=
//!   threshold` at a [`handle_timeout(now)`](LeakDetector::handle_timeout) or at its own
//!   release, whichever comes first. So the verdict does not depend on how often the timer is
//!   driven: a permit released late but before the timer fired is still a leak (reported
//!   `Leaked`, then `Released`), and one released in time never is.
//! - **Exactly once.** Every permit the table tracks ends in exactly one of: released in time
//!   ([`Release::OnTime`]), or reported [`LeakEvent::Leaked`] once (then, if released after all,
//!   [`LeakEvent::Released`] once). Events are generated from the table when polled, so none is
//!   lost because nobody polled; the entry is kept until its events have been taken.
//! - **Bounded memory: a fixed table of `N` entries** (a const parameter, no allocation). A
//!   permit acquired while the table is full takes the place of the oldest leaked permit
//!   (oldest acquisition, then tracking order) whose events have all been taken (it is forgotten: [`LeakStats::forgotten`]; a late
//!   release of it is then unknown), or, when there is none, is not tracked at all
//!   ([`Tracking::Overflow`], counted in [`LeakStats::overflow`]). Size `N` to the pool (the
//!   most permits that can be out at once, plus room for the leaks you want to remember).
//!   Every call scans the table: O(`N`), meant for pools of tens to a few thousand permits.
//! - **Careless callers are counted, never trusted**: acquiring an id that is already tracked
//!   is ignored ([`Tracking::Duplicate`]; the first acquisition's time stands), releasing an id
//!   that is not tracked (never acquired, released twice, overflowed, forgotten) is
//!   [`Release::Unknown`]. Neither panics or changes another permit.
//! - **Time** is an input; a `now` older than one already seen is clamped; ages saturate.
//!
//! # Timers, events, stats
//!
//! [`poll_timeout`](LeakDetector::poll_timeout) is the instant the oldest outstanding,
//! not-yet-leaked permit reaches the threshold; [`handle_timeout`](LeakDetector::handle_timeout)
//! marks every permit at or past it as leaked (early or spurious calls are no-ops);
//! [`poll_event`](LeakDetector::poll_event) returns the reports, oldest acquisition first;
//! [`stats`](LeakDetector::stats) has `leaked_total`, `outstanding` and `oldest_age`.
//!
//! # Defaults and their source
//!
//! `threshold` 60 s: keel's choice, above any legitimate hold of a pooled connection by a job
//! (Sidekiq's default shutdown timeout is 25 s) and below the minutes a leak takes to drain a
//! pool; HikariCP's `leakDetectionThreshold` is off by default and at least 2 s when set.
//! Set it to the longest a permit may legitimately be held, plus margin.
//!
//! # Example
//!
//! ```
//! use core::time::Duration;
//! use keel_core::leak::{LeakConfig, LeakDetector, LeakEvent, Release, Tracking};
//! use keel_core::time::Instant;
//!
//! let config = LeakConfig::builder().threshold(Duration::from_secs(5)).build()?;
//! let t = Instant::from_secs(100);
//! let mut leaks: LeakDetector<32> = LeakDetector::new(config, t);
//!
//! assert_eq!(leaks.on_acquire(t, 1), Tracking::Tracked);
//! assert_eq!(leaks.on_acquire(t + Duration::from_secs(1), 2), Tracking::Tracked);
//! assert_eq!(
//!     leaks.on_release(t + Duration::from_secs(2), 2),
//!     Release::OnTime { held: Duration::from_secs(1) }
//! );
//!
//! // Permit 1 is never returned: the timer fires at its threshold.
//! assert_eq!(leaks.poll_timeout(), Some(t + Duration::from_secs(5)));
//! leaks.handle_timeout(t + Duration::from_secs(5));
//! assert_eq!(
//!     leaks.poll_event(),
//!     Some(LeakEvent::Leaked { id: 1, acquired_at: t, age: Duration::from_secs(5) })
//! );
//! assert_eq!(leaks.poll_event(), None); // reported once
//! assert_eq!(leaks.stats().leaked_total, 1);
//!
//! // It comes back after all.
//! let late = t + Duration::from_secs(9);
//! assert_eq!(leaks.on_release(late, 1), Release::Late { held: Duration::from_secs(9) });
//! assert_eq!(leaks.poll_event(), Some(LeakEvent::Released { id: 1, held: Duration::from_secs(9) }));
//! assert_eq!(leaks.stats().outstanding, 0);
//! # Ok::<(), keel_core::ConfigError>(())
//! ```

use core::time::Duration;

use crate::error::ConfigError;
use crate::time::{never_at_the_end, Instant, Monotonic};

/// Default `threshold`: 60 s (keel's choice; see the [module docs](self)).
pub const DEFAULT_THRESHOLD: Duration = Duration::from_secs(60);

/// A validated leak-detector configuration; build it with [`LeakConfig::builder`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeakConfig {
    threshold: Duration,
}

impl Default for LeakConfig {
    /// `threshold` 60 s.
    fn default() -> Self {
        LeakConfig {
            threshold: DEFAULT_THRESHOLD,
        }
    }
}

impl LeakConfig {
    /// A builder holding the defaults (`threshold` 60 s).
    pub fn builder() -> LeakConfigBuilder {
        LeakConfigBuilder {
            threshold: DEFAULT_THRESHOLD,
        }
    }

    /// How long a permit may be held before it is reported as leaked.
    #[inline]
    #[must_use]
    pub const fn threshold(&self) -> Duration {
        self.threshold
    }
}

/// Builds a [`LeakConfig`]; [`build`](LeakConfigBuilder::build) validates it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct LeakConfigBuilder {
    threshold: Duration,
}

impl LeakConfigBuilder {
    /// How long a permit may be held before it is reported (default 60 s; non-zero;
    /// [`Duration::MAX`] = never).
    pub fn threshold(mut self, threshold: Duration) -> Self {
        self.threshold = threshold;
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Zero`] if `threshold` is zero (every permit would be a leak the moment
    /// it is acquired).
    pub fn build(self) -> Result<LeakConfig, ConfigError> {
        if self.threshold.is_zero() {
            return Err(ConfigError::Zero { field: "threshold" });
        }
        Ok(LeakConfig {
            threshold: self.threshold,
        })
    }
}

/// What [`LeakDetector::on_acquire`] did with a permit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[must_use = "an untracked permit will not be reported if it leaks"]
pub enum Tracking {
    /// The permit is tracked.
    Tracked,
    /// The id is already tracked: ignored (the first acquisition's time stands). A caller bug:
    /// ids must be unique among permits out at once.
    Duplicate,
    /// The table is full of permits still out (or leaks not yet polled): this one is not
    /// tracked. Size the table to the pool.
    Overflow,
}

/// What [`LeakDetector::on_release`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[must_use = "a late release means the permit was reported as leaked"]
pub enum Release {
    /// Released within the threshold.
    OnTime {
        /// How long it was held.
        held: Duration,
    },
    /// Released after the threshold: it is (or was already) reported as leaked, and a
    /// [`LeakEvent::Released`] follows.
    Late {
        /// How long it was held.
        held: Duration,
    },
    /// The id is not tracked: never acquired, released twice, not tracked for overflow, or
    /// forgotten to make room.
    Unknown,
}

/// A report of a [`LeakDetector`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LeakEvent {
    /// A permit held for the threshold or longer. Reported once per permit.
    Leaked {
        /// The permit's id.
        id: u64,
        /// When it was acquired.
        acquired_at: Instant,
        /// How long it had been held when it was found (at least the threshold).
        age: Duration,
    },
    /// A permit reported as leaked was released after all.
    Released {
        /// The permit's id.
        id: u64,
        /// How long it was held.
        held: Duration,
    },
}

/// Counters and gauges of a [`LeakDetector`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct LeakStats {
    /// Permits tracked ([`Tracking::Tracked`]).
    pub acquired: u64,
    /// Tracked permits released in time.
    pub released: u64,
    /// Permits found leaked (each counted once).
    pub leaked_total: u64,
    /// Leaked permits released after all.
    pub late_releases: u64,
    /// Tracked permits still out (leaked ones included).
    pub outstanding: u64,
    /// Of those, the ones found leaked.
    pub outstanding_leaked: u64,
    /// How long the oldest tracked permit still out has been held, as of the newest `now`
    /// seen (zero when none is out).
    pub oldest_age: Duration,
    /// Acquisitions ignored because the id was already tracked.
    pub duplicates: u64,
    /// Releases of ids not tracked.
    pub unknown_releases: u64,
    /// Acquisitions not tracked because the table was full.
    pub overflow: u64,
    /// Leaked permits forgotten to make room for new ones (their late release is unknown).
    pub forgotten: u64,
    /// The table's capacity, `N`.
    pub capacity: u64,
}

/// A tracked permit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    id: u64,
    at: Instant,
    /// Tracking order: breaks ties between permits acquired at one instant.
    seq: u64,
    state: Held,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Held {
    /// Out, within the threshold so far.
    InTime,
    /// Out, found leaked `age` after its acquisition; `reported` once its `Leaked` event was
    /// taken.
    Leaked { age: Duration, reported: bool },
    /// Released late, after `held`; kept until its events (`Leaked` if not yet taken, then
    /// `Released`) are.
    ReleasedLate {
        age: Duration,
        reported: bool,
        held: Duration,
    },
}

impl Entry {
    /// Whether the entry holds an event not yet taken.
    fn has_event(&self) -> bool {
        matches!(
            self.state,
            Held::Leaked {
                reported: false,
                ..
            } | Held::ReleasedLate { .. }
        )
    }

    /// Whether the permit is still out.
    fn is_out(&self) -> bool {
        !matches!(self.state, Held::ReleasedLate { .. })
    }

    /// The order of reports and of forgetting: oldest acquisition first, then tracking order.
    fn age_key(&self) -> (Instant, u64) {
        (self.at, self.seq)
    }
}

/// Leak detection over a fixed table of `N` permits. See the [module docs](self).
///
/// | group | methods |
/// | --- | --- |
/// | construct | [`new`](Self::new) |
/// | inputs | [`on_acquire`](Self::on_acquire) `-> Tracking`, [`on_release`](Self::on_release) `-> Release` |
/// | timer | [`handle_timeout`](Self::handle_timeout), [`poll_timeout`](Self::poll_timeout) |
/// | outputs | [`poll_event`](Self::poll_event) `-> Option<LeakEvent>` |
/// | getters | [`config`](Self::config), [`stats`](Self::stats) |
///
/// The table lives inline (`N` entries of 64 bytes): a large `N` belongs in a `static` or a
/// `Box` built in place, not on a small stack.
#[derive(Clone, Debug)]
pub struct LeakDetector<const N: usize> {
    config: LeakConfig,
    clock: Monotonic,
    slots: [Option<Entry>; N],
    next_seq: u64,
    stats: LeakStats,
}

impl<const N: usize> LeakDetector<N> {
    /// An empty detector.
    #[must_use]
    pub fn new(config: LeakConfig, now: Instant) -> LeakDetector<N> {
        LeakDetector {
            config,
            clock: Monotonic::new(now),
            slots: [None; N],
            next_seq: 0,
            stats: LeakStats {
                capacity: u64::try_from(N).unwrap_or(u64::MAX),
                ..LeakStats::default()
            },
        }
    }

    /// A permit `id` was handed out at `now`.
    pub fn on_acquire(&mut self, now: Instant, id: u64) -> Tracking {
        let now = self.clock.observe(now);
        if self.find(id).is_some() {
            self.stats.duplicates = self.stats.duplicates.saturating_add(1);
            return Tracking::Duplicate;
        }
        let free = self
            .slots
            .iter()
            .position(Option::is_none)
            .or_else(|| self.forgettable());
        let Some(slot) = free.and_then(|i| self.slots.get_mut(i)) else {
            self.stats.overflow = self.stats.overflow.saturating_add(1);
            return Tracking::Overflow;
        };
        if slot.is_some() {
            self.stats.forgotten = self.stats.forgotten.saturating_add(1);
        }
        *slot = Some(Entry {
            id,
            at: now,
            seq: self.next_seq,
            state: Held::InTime,
        });
        self.next_seq = self.next_seq.wrapping_add(1);
        self.stats.acquired = self.stats.acquired.saturating_add(1);
        Tracking::Tracked
    }

    /// The permit `id` came back at `now`.
    pub fn on_release(&mut self, now: Instant, id: u64) -> Release {
        let now = self.clock.observe(now);
        let threshold = self.config.threshold;
        let found = self.find(id).and_then(|i| self.slots.get_mut(i));
        let Some(slot) = found else {
            self.stats.unknown_releases = self.stats.unknown_releases.saturating_add(1);
            return Release::Unknown;
        };
        let Some(entry) = slot.as_mut() else {
            // `find` only returns occupied slots: not reached.
            debug_assert!(false, "find returned an empty slot");
            return Release::Unknown;
        };
        let held = now.saturating_duration_since(entry.at);
        match entry.state {
            Held::InTime if held < threshold => {
                *slot = None;
                self.stats.released = self.stats.released.saturating_add(1);
                Release::OnTime { held }
            }
            // Held past the threshold though the timer has not fired: a leak all the same.
            Held::InTime => {
                self.stats.leaked_total = self.stats.leaked_total.saturating_add(1);
                self.stats.late_releases = self.stats.late_releases.saturating_add(1);
                entry.state = Held::ReleasedLate {
                    age: held,
                    reported: false,
                    held,
                };
                Release::Late { held }
            }
            Held::Leaked { age, reported } => {
                self.stats.late_releases = self.stats.late_releases.saturating_add(1);
                entry.state = Held::ReleasedLate {
                    age,
                    reported,
                    held,
                };
                Release::Late { held }
            }
            // Released already (its events not yet taken): a second release.
            Held::ReleasedLate { .. } => {
                self.stats.unknown_releases = self.stats.unknown_releases.saturating_add(1);
                Release::Unknown
            }
        }
    }

    /// Marks every permit held for the threshold or longer as leaked. Early or spurious calls
    /// are no-ops.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.observe(now);
        let threshold = self.config.threshold;
        let mut found = 0u64;
        for entry in self.slots.iter_mut().flatten() {
            if entry.state == Held::InTime {
                let age = now.saturating_duration_since(entry.at);
                if age >= threshold {
                    entry.state = Held::Leaked {
                        age,
                        reported: false,
                    };
                    found += 1;
                }
            }
        }
        self.stats.leaked_total = self.stats.leaked_total.saturating_add(found);
    }

    /// When the oldest outstanding permit not yet found leaked reaches the threshold; `None`
    /// when there is none or that instant is past the end of the clock.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let oldest = self
            .slots
            .iter()
            .flatten()
            .filter(|e| e.state == Held::InTime)
            .map(|e| e.at)
            .min()?;
        never_at_the_end(oldest.saturating_add(self.config.threshold))
    }

    /// The next report, oldest acquisition first (then in the order the permits were tracked);
    /// a permit's `Leaked` comes before its `Released`.
    pub fn poll_event(&mut self) -> Option<LeakEvent> {
        let slot = self
            .slots
            .iter_mut()
            .filter(|s| s.is_some_and(|e| e.has_event()))
            .min_by_key(|s| s.map(|e| e.age_key()))?;
        let entry = slot.as_mut()?;
        let (id, acquired_at) = (entry.id, entry.at);
        match entry.state {
            Held::Leaked {
                age,
                reported: false,
            } => {
                entry.state = Held::Leaked {
                    age,
                    reported: true,
                };
                Some(LeakEvent::Leaked {
                    id,
                    acquired_at,
                    age,
                })
            }
            Held::ReleasedLate {
                age,
                reported: false,
                held,
            } => {
                entry.state = Held::ReleasedLate {
                    age,
                    reported: true,
                    held,
                };
                Some(LeakEvent::Leaked {
                    id,
                    acquired_at,
                    age,
                })
            }
            Held::ReleasedLate {
                reported: true,
                held,
                ..
            } => {
                *slot = None;
                Some(LeakEvent::Released { id, held })
            }
            // `has_event` selected the entry: not reached.
            Held::Leaked { reported: true, .. } | Held::InTime => {
                debug_assert!(false, "an entry without an event was selected");
                None
            }
        }
    }

    /// The configuration.
    #[must_use]
    pub const fn config(&self) -> &LeakConfig {
        &self.config
    }

    /// A snapshot of the counters; `oldest_age` is measured at the newest `now` seen.
    #[must_use]
    pub fn stats(&self) -> LeakStats {
        let mut s = self.stats;
        let out = self.slots.iter().flatten().filter(|e| e.is_out());
        let (mut outstanding, mut leaked) = (0u64, 0u64);
        let mut oldest: Option<Instant> = None;
        for entry in out {
            outstanding += 1;
            if matches!(entry.state, Held::Leaked { .. }) {
                leaked += 1;
            }
            oldest = Some(oldest.map_or(entry.at, |o| o.min(entry.at)));
        }
        s.outstanding = outstanding;
        s.outstanding_leaked = leaked;
        s.oldest_age = oldest.map_or(Duration::ZERO, |at| {
            self.clock.get().saturating_duration_since(at)
        });
        s
    }

    fn find(&self, id: u64) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.is_some_and(|e| e.id == id))
    }

    /// The slot of the oldest leaked permit whose events have all been taken.
    fn forgettable(&self) -> Option<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                Some(
                    e @ Entry {
                        state: Held::Leaked { reported: true, .. },
                        ..
                    },
                ) => Some((e.age_key(), i)),
                _ => None,
            })
            .min()
            .map(|(_, i)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::Entry;

    #[test]
    fn an_entry_is_at_most_64_bytes_as_documented() {
        assert!(core::mem::size_of::<Option<Entry>>() <= 64);
    }
}
