//! The connection table ([`keel_core::conn::ConnTable`]) as its docs define it, one plain
//! record per connection.
//!
//! - **Serving** connections close at their idle deadline (`last_active + idle_timeout`) or
//!   their read deadline, whichever comes first, at a `handle_timeout` at or after it (one
//!   `ConnEvent::Close` each, in id order; a deadline at the end of the clock never comes).
//! - **Activity** moves `last_active` forward only (an older stamp changes nothing; a stamp
//!   newer than the newest `now` counts as that `now`).
//! - **The handler returns**: a serving connection lingers (`now + linger_time`, never past
//!   the drain deadline) unless the linger time is zero; asked again for a lingering one, the
//!   table answers again; every other connection closes at once (`None`).
//! - **Reclamation**: with `reclaim_min_idle` set and no reclamation pending (a reclaimed
//!   connection still open), `reclaim(now)` picks the serving connection idle longest (the
//!   oldest `last_active`, then the lowest id), if it has been idle at least the minimum;
//!   `reclaim_at()` is when the longest-idle one reaches it.
//!
//! ```
//! use std::time::Duration;
//! use keel_core::conn::{ConnConfig, ConnTable};
//! use keel_core::time::Instant;
//! use keel_testkit::models::conn::ConnModel;
//!
//! let config = ConnConfig::builder().reclaim_min_idle(Some(Duration::from_secs(1))).build()?;
//! let (mut table, mut model) = (ConnTable::new(config, Instant::ZERO), ConnModel::new(&config, Instant::ZERO));
//! for id in [7, 3] {
//!     table.on_open(Instant::ZERO, id);
//!     model.on_open(Instant::ZERO, id);
//! }
//! let t = Instant::from_secs(2);
//! assert_eq!(table.reclaim(t), model.reclaim(t)); // Some(3): as idle as 7, lower id
//! model.check_stats(&table.stats()).expect("the counters agree");
//! # Ok::<(), keel_core::ConfigError>(())
//! ```

use core::time::Duration;
use std::collections::BTreeMap;

use keel_core::conn::{CloseReason, ConnConfig, ConnEvent, ConnStats};
use keel_core::time::Instant;

/// Where a connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Serving,
    Closing(CloseReason),
    Lingering,
}

/// One open connection.
#[derive(Clone, Copy, Debug)]
struct Conn {
    last_active: Instant,
    read_deadline: Option<Instant>,
    phase: Phase,
}

/// The reference model of a connection table. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct ConnModel {
    idle: Option<Duration>,
    min_idle: Option<Duration>,
    linger: Duration,
    newest: Instant,
    conns: BTreeMap<u64, Conn>,
    idle_closed: u64,
    deadline_expired: u64,
    reclaimed: u64,
}

impl ConnModel {
    /// The model of `ConnTable::new(*config, start)`.
    #[must_use]
    pub fn new(config: &ConnConfig, start: Instant) -> Self {
        ConnModel {
            idle: config.idle_timeout(),
            min_idle: config.reclaim_min_idle(),
            linger: config.linger_time(),
            newest: start,
            conns: BTreeMap::new(),
            idle_closed: 0,
            deadline_expired: 0,
            reclaimed: 0,
        }
    }

    fn observe(&mut self, now: Instant) -> Instant {
        self.newest = self.newest.max(now);
        self.newest
    }

    /// `on_open(now, id)` (an id already open starts over).
    pub fn on_open(&mut self, now: Instant, id: u64) {
        let now = self.observe(now);
        let conn = Conn {
            last_active: now,
            read_deadline: None,
            phase: Phase::Serving,
        };
        self.conns.insert(id, conn);
    }

    /// `on_activity(now, id, at)`.
    pub fn on_activity(&mut self, now: Instant, id: u64, at: Instant) {
        let now = self.observe(now);
        if let Some(c) = self.conns.get_mut(&id) {
            c.last_active = c.last_active.max(at.min(now));
        }
    }

    /// `on_read_deadline(now, id, deadline)`.
    pub fn on_read_deadline(&mut self, now: Instant, id: u64, deadline: Option<Instant>) {
        self.observe(now);
        if let Some(c) = self.conns.get_mut(&id) {
            c.read_deadline = deadline;
        }
    }

    /// Checks the machine's answer `got` to `on_handler_done(now, id, drain)`: a linger
    /// deadline exactly when one is due, never past `now + linger_time` nor the drain deadline,
    /// and, for a connection that starts lingering, not before `now`. `Err` says what failed.
    pub fn on_handler_done(
        &mut self,
        now: Instant,
        id: u64,
        drain: Option<Instant>,
        got: Option<Instant>,
    ) -> Result<(), String> {
        let now = self.observe(now);
        let linger = self.linger;
        let phase = self.conns.get(&id).map(|c| c.phase);
        let due = match phase {
            Some(Phase::Serving) => !linger.is_zero(),
            Some(Phase::Lingering) => true,
            _ => false,
        };
        match (due, got) {
            (false, None) => return Ok(()),
            (false, Some(d)) => {
                return Err(format!("connection {id} ({phase:?}) lingers to {d:?}"))
            }
            (true, None) => return Err(format!("connection {id} ({phase:?}) does not linger")),
            (true, Some(deadline)) => {
                if phase == Some(Phase::Serving) && deadline < now {
                    return Err(format!("linger deadline {deadline:?} before now {now:?}"));
                }
                if deadline > now.saturating_add(linger) {
                    return Err(format!(
                        "linger deadline {deadline:?} past now + {linger:?}"
                    ));
                }
                if drain.is_some_and(|d| deadline > d.max(now)) {
                    return Err(format!(
                        "linger deadline {deadline:?} past the drain {drain:?}"
                    ));
                }
            }
        }
        if let Some(c) = self.conns.get_mut(&id) {
            c.phase = Phase::Lingering;
        }
        Ok(())
    }

    /// `on_closed(now, id, _)`: the connection is gone.
    pub fn on_closed(&mut self, now: Instant, id: u64) {
        self.observe(now);
        self.conns.remove(&id);
    }

    /// `on_close(now, id, reason)`: a serving connection closes (and is counted).
    pub fn on_close(&mut self, now: Instant, id: u64, reason: CloseReason) {
        self.observe(now);
        if let Some(c) = self.conns.get_mut(&id) {
            if c.phase == Phase::Serving {
                c.phase = Phase::Closing(reason);
                self.count(reason);
            }
        }
    }

    fn count(&mut self, reason: CloseReason) {
        match reason {
            CloseReason::Idle => self.idle_closed += 1,
            CloseReason::ReadDeadline => self.deadline_expired += 1,
            CloseReason::Reclaimed => self.reclaimed += 1,
            // `CloseReason` is #[non_exhaustive]: a new reason needs a rule in this model.
            other => panic!("no model rule for {other:?}"),
        }
    }

    fn reclaim_pending(&self) -> bool {
        self.conns
            .values()
            .any(|c| c.phase == Phase::Closing(CloseReason::Reclaimed))
    }

    /// `reclaim_at()`: when the longest-idle serving connection reaches the minimum (`None`
    /// when reclamation is off, one is pending, or nothing serves).
    #[must_use]
    pub fn reclaim_at(&self) -> Option<Instant> {
        let min = self.min_idle.filter(|_| !self.reclaim_pending())?;
        self.conns
            .values()
            .filter(|c| c.phase == Phase::Serving)
            .map(|c| c.last_active)
            .min()
            .map(|t| t.saturating_add(min))
    }

    /// `reclaim(now)`: the connection the machine must pick, if any (and marks it closing).
    pub fn reclaim(&mut self, now: Instant) -> Option<u64> {
        let now = self.observe(now);
        let min = self.min_idle.filter(|_| !self.reclaim_pending())?;
        let id = self
            .conns
            .iter()
            .filter(|(_, c)| c.phase == Phase::Serving)
            .filter(|(_, c)| now.saturating_duration_since(c.last_active) >= min)
            .min_by_key(|(&id, c)| (c.last_active, id))
            .map(|(&id, _)| id)?;
        self.on_close(now, id, CloseReason::Reclaimed);
        Some(id)
    }

    /// `handle_timeout(now)`: the events the machine must queue, in id order.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<ConnEvent> {
        let now = self.observe(now);
        let idle = self.idle;
        let mut due = Vec::new();
        for (&id, c) in &self.conns {
            if c.phase != Phase::Serving {
                continue;
            }
            let i = idle.map(|t| (c.last_active.saturating_add(t), CloseReason::Idle));
            let r = c.read_deadline.map(|d| (d, CloseReason::ReadDeadline));
            let first = match (i, r) {
                (Some(i), Some(r)) => Some(if r.0 <= i.0 { r } else { i }),
                (i, r) => i.or(r),
            };
            if let Some((t, reason)) = first {
                if t <= now && t != Instant::MAX {
                    due.push((id, reason));
                }
            }
        }
        due.into_iter()
            .map(|(id, reason)| {
                self.on_close(now, id, reason);
                ConnEvent::Close { id, reason }
            })
            .collect()
    }

    /// `idle_for(now, id)` as the machine reads it (`now` clamped to the newest seen).
    #[must_use]
    pub fn idle_for(&self, now: Instant, id: u64) -> Option<Duration> {
        let now = self.newest.max(now);
        self.conns
            .get(&id)
            .map(|c| now.saturating_duration_since(c.last_active))
    }

    /// The open connections' ids.
    pub fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.conns.keys().copied()
    }

    /// Checks the machine's counters: open, lingering, closed idle, read deadlines expired and
    /// reclaimed. `Err` names the first that disagrees.
    pub fn check_stats(&self, s: &ConnStats) -> Result<(), String> {
        let lingering = self
            .conns
            .values()
            .filter(|c| c.phase == Phase::Lingering)
            .count() as u64;
        let want = [
            ("open", s.open, self.conns.len() as u64),
            ("lingering", s.lingering, lingering),
            ("idle_closed", s.idle_closed, self.idle_closed),
            (
                "deadline_expired",
                s.deadline_expired,
                self.deadline_expired,
            ),
            ("reclaimed", s.reclaimed, self.reclaimed),
        ];
        match want.iter().find(|(_, got, want)| got != want) {
            Some((name, got, want)) => Err(format!("{name}: {got}, the model {want}")),
            None => Ok(()),
        }
    }
}
