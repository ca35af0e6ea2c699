//! Leak detection ([`keel_core::leak::LeakDetector`]) as its docs define it, and the ledger
//! that proves no permit is lost.
//!
//! - **Tracking**: an id already in the table is a duplicate; otherwise it takes a free entry
//!   when the table holds fewer than `capacity`, else the place of the oldest (acquisition,
//!   then tracking order) leaked permit whose report was taken, else it overflows.
//! - **A leak** is a permit whose `now − acquired_at ≥ threshold` at a `handle_timeout(now)`
//!   (its age is then that difference) or at its release (its age is how long it was held).
//! - **Reports**, oldest acquisition first, then tracking order: `Leaked` once per leaked
//!   permit, then `Released` once if it came back; an entry leaves the table when released
//!   in time or when its `Released` report is taken (or when forgotten).
//! - **The ledger** ([`LeakModel::check_ledger`]): every tracked permit ends in exactly one of
//!   "released in time" or "reported `Leaked` once", or is still out within the threshold; a
//!   `Released` report only follows that permit's `Leaked`; every permit tracked is accounted
//!   for, including the forgotten ones.
//!
//! ```
//! use std::time::Duration;
//! use keel_core::leak::{LeakConfig, LeakDetector};
//! use keel_core::time::Instant;
//! use keel_testkit::models::leak::LeakModel;
//!
//! let config = LeakConfig::builder().threshold(Duration::from_secs(1)).build()?;
//! let mut d: LeakDetector<4> = LeakDetector::new(config, Instant::ZERO);
//! let mut m = LeakModel::new(&config, 4, Instant::ZERO);
//! assert_eq!(d.on_acquire(Instant::ZERO, 9), m.on_acquire(Instant::ZERO, 9));
//! d.handle_timeout(Instant::from_secs(2));
//! m.handle_timeout(Instant::from_secs(2));
//! assert_eq!(d.poll_event(), m.poll_event());
//! m.check_ledger().expect("no permit lost");
//! # Ok::<(), keel_core::ConfigError>(())
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use keel_core::leak::{LeakConfig, LeakEvent, Release, Tracking};
use keel_core::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Held,
    Leaked {
        age: Duration,
        reported: bool,
    },
    Late {
        age: Duration,
        reported: bool,
        held: Duration,
    },
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    id: u64,
    at: u64,
    seq: u64,
    state: State,
}

/// What happened to one tracked permit (by tracking sequence number).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Fate {
    on_time: u32,
    leaked_reports: u32,
    released_reports: u32,
    late_releases: u32,
    forgotten: bool,
}

/// The reference model of a [`LeakDetector`](keel_core::leak::LeakDetector). See the
/// [module docs](self).
#[derive(Clone, Debug)]
pub struct LeakModel {
    threshold: Duration,
    capacity: usize,
    newest: u64,
    next_seq: u64,
    entries: Vec<Entry>,
    ledger: BTreeMap<u64, Fate>,
    leaked_total: u64,
}

impl LeakModel {
    /// A fresh detector at `now` with a table of `capacity` entries.
    #[must_use]
    pub fn new(config: &LeakConfig, capacity: usize, now: Instant) -> LeakModel {
        LeakModel {
            threshold: config.threshold(),
            capacity,
            newest: now.as_nanos(),
            next_seq: 0,
            entries: Vec::new(),
            ledger: BTreeMap::new(),
            leaked_total: 0,
        }
    }

    fn clamp(&mut self, now: Instant) -> u64 {
        self.newest = self.newest.max(now.as_nanos());
        self.newest
    }

    fn age(now: u64, at: u64) -> Duration {
        Duration::from_nanos(now - at)
    }

    fn fate(&mut self, seq: u64) -> &mut Fate {
        self.ledger.entry(seq).or_default()
    }

    /// The tracking decision the machine must make, applied.
    pub fn on_acquire(&mut self, now: Instant, id: u64) -> Tracking {
        let now = self.clamp(now);
        if self.entries.iter().any(|e| e.id == id) {
            return Tracking::Duplicate;
        }
        if self.entries.len() >= self.capacity {
            let oldest = self
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| matches!(e.state, State::Leaked { reported: true, .. }))
                .min_by_key(|(_, e)| (e.at, e.seq))
                .map(|(i, _)| i);
            let Some(i) = oldest else {
                return Tracking::Overflow;
            };
            let gone = self.entries.remove(i);
            self.fate(gone.seq).forgotten = true;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.push(Entry {
            id,
            at: now,
            seq,
            state: State::Held,
        });
        self.ledger.insert(seq, Fate::default());
        Tracking::Tracked
    }

    /// The release decision the machine must make, applied.
    pub fn on_release(&mut self, now: Instant, id: u64) -> Release {
        let now = self.clamp(now);
        let threshold = self.threshold;
        let Some(i) = self.entries.iter().position(|e| e.id == id) else {
            return Release::Unknown;
        };
        let e = self.entries[i];
        let held = Self::age(now, e.at);
        match e.state {
            State::Held if held < threshold => {
                self.entries.remove(i);
                self.fate(e.seq).on_time += 1;
                Release::OnTime { held }
            }
            State::Held => {
                self.leaked_total += 1;
                self.entries[i].state = State::Late {
                    age: held,
                    reported: false,
                    held,
                };
                self.fate(e.seq).late_releases += 1;
                Release::Late { held }
            }
            State::Leaked { age, reported } => {
                self.entries[i].state = State::Late {
                    age,
                    reported,
                    held,
                };
                self.fate(e.seq).late_releases += 1;
                Release::Late { held }
            }
            State::Late { .. } => Release::Unknown,
        }
    }

    /// The timer.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clamp(now);
        for e in &mut self.entries {
            let age = Self::age(now, e.at);
            if e.state == State::Held && age >= self.threshold {
                e.state = State::Leaked {
                    age,
                    reported: false,
                };
                self.leaked_total += 1;
            }
        }
    }

    /// When the oldest permit still within the threshold reaches it.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let at = self
            .entries
            .iter()
            .filter(|e| e.state == State::Held)
            .map(|e| e.at)
            .min()?;
        let t = Instant::from_nanos(at).saturating_add(self.threshold);
        (t != Instant::MAX).then_some(t)
    }

    /// The next report the machine must give.
    pub fn poll_event(&mut self) -> Option<LeakEvent> {
        let i = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| {
                matches!(
                    e.state,
                    State::Leaked {
                        reported: false,
                        ..
                    } | State::Late { .. }
                )
            })
            .min_by_key(|(_, e)| (e.at, e.seq))
            .map(|(i, _)| i)?;
        let e = self.entries[i];
        let leaked = |age| LeakEvent::Leaked {
            id: e.id,
            acquired_at: Instant::from_nanos(e.at),
            age,
        };
        match e.state {
            State::Leaked { age, .. } => {
                self.entries[i].state = State::Leaked {
                    age,
                    reported: true,
                };
                self.fate(e.seq).leaked_reports += 1;
                Some(leaked(age))
            }
            State::Late {
                age,
                reported: false,
                held,
            } => {
                self.entries[i].state = State::Late {
                    age,
                    reported: true,
                    held,
                };
                self.fate(e.seq).leaked_reports += 1;
                Some(leaked(age))
            }
            State::Late { held, .. } => {
                self.entries.remove(i);
                self.fate(e.seq).released_reports += 1;
                Some(LeakEvent::Released { id: e.id, held })
            }
            State::Held => unreachable!("filtered out"),
        }
    }

    /// Permits leaked so far.
    #[must_use]
    pub fn leaked_total(&self) -> u64 {
        self.leaked_total
    }

    /// Tracked permits still out, and of those the leaked ones.
    #[must_use]
    pub fn outstanding(&self) -> (u64, u64) {
        let out = self
            .entries
            .iter()
            .filter(|e| !matches!(e.state, State::Late { .. }));
        let (mut n, mut leaked) = (0, 0);
        for e in out {
            n += 1;
            if matches!(e.state, State::Leaked { .. }) {
                leaked += 1;
            }
        }
        (n, leaked)
    }

    /// The ledger (see the [module docs](self)): call after draining the events.
    ///
    /// # Errors
    ///
    /// What was lost or reported twice.
    pub fn check_ledger(&self) -> Result<(), String> {
        for (seq, f) in &self.ledger {
            let in_table = self.entries.iter().find(|e| e.seq == *seq);
            if f.on_time > 1 || f.leaked_reports > 1 || f.released_reports > 1 {
                return Err(format!("permit #{seq} reported more than once: {f:?}"));
            }
            if f.on_time == 1 && (f.leaked_reports + f.released_reports + f.late_releases) > 0 {
                return Err(format!("permit #{seq} released in time and leaked: {f:?}"));
            }
            if f.released_reports == 1 && f.leaked_reports != 1 {
                return Err(format!("permit #{seq} Released without Leaked: {f:?}"));
            }
            let ended = f.on_time == 1 || f.leaked_reports == 1;
            let pending = in_table.is_some_and(|e| {
                matches!(
                    e.state,
                    State::Held
                        | State::Leaked {
                            reported: false,
                            ..
                        }
                        | State::Late {
                            reported: false,
                            ..
                        }
                )
            });
            if !ended && !pending {
                return Err(format!(
                    "permit #{seq} lost: neither released nor reported: {f:?}"
                ));
            }
            if f.forgotten && f.leaked_reports != 1 {
                return Err(format!("permit #{seq} forgotten before its report: {f:?}"));
            }
        }
        Ok(())
    }
}
