//! Connection bookkeeping for a server: idle timeouts, per-request read deadlines, reclamation
//! of the longest-idle connection at the limit, and the lingering close.
//!
//! # What it protects against
//!
//! - **Slowloris.** Clients that connect and send nothing, or trickle one byte a second, hold
//!   every connection slot for ever. Here an **idle timeout** (no bytes either way) closes a
//!   silent connection, a **read deadline** the handler arms per request closes one that keeps
//!   a request open too long even though bytes flow (the trickler), and **reclamation** closes
//!   the connection idle the longest when every slot is taken and a newcomer waits, so a
//!   newcomer waits a bounded time however many idle sockets an attacker opens (nginx's
//!   `ngx_drain_connections` does the same with its reusable connections).
//! - **Replies lost at the close.** Closing a socket with unread input in the kernel buffer, or
//!   one the peer still writes to, makes Linux answer with a reset, and the peer discards the
//!   reply it has not read yet. A **lingering close** (nginx `lingering_close`, Go net/http
//!   `closeWriteAndWait`) shuts the write side down, then reads and discards until the peer's
//!   EOF, a byte cap or a short deadline, so the reply already written arrives before the FIN.
//!
//! # The contract
//!
//! [`ConnTable`] is a sans-IO machine: the server reports connections ([`on_open`]), their
//! activity ([`on_activity`], the instant of the last byte either way, which the accepted stream
//! records), the read deadline a handler armed ([`on_read_deadline`]), the handler's end
//! ([`on_handler_done`], which returns the linger deadline) and the close ([`on_closed`]).
//! [`handle_timeout`] marks the connections whose idle timeout or read deadline passed;
//! [`poll_event`] hands them out as [`ConnEvent::Close`] for the server to close. At the limit,
//! [`reclaim`] picks the connection idle the longest (at least
//! [`reclaim_min_idle`](ConnConfigBuilder::reclaim_min_idle)); one reclamation is pending at a
//! time.
//!
//! The linger deadline is `now + linger_time`, never past the drain deadline the server passes
//! in. A connection the server closed (idle, deadline, reclaimed) is not lingered: it is the
//! attacker's, and its slot is wanted at once.
//!
//! # Defaults and why
//!
//! | setting | default | why |
//! | --- | --- | --- |
//! | idle timeout | 60 s | nginx `keepalive_timeout` is 75 s, `client_body_timeout` 60 s; long enough for any keep-alive client, short enough that a silent socket does not hold a slot for ever |
//! | reclaim min idle | 1 s | a client that just connected gets a round trip's time to send its first request before it can be reclaimed |
//! | linger time | 2 s | nginx `lingering_timeout` is 5 s (`lingering_time` 30 s), Go waits 500 ms: 2 s lets a slow reader finish without holding slots for long |
//! | linger bytes | 1 MiB | what a peer may still send after our FIN before it is cut off (with a reset, counted) |
//!
//! ```
//! use core::time::Duration;
//! use keel_core::conn::{ConnConfig, ConnEvent, ConnTable, CloseReason};
//! use keel_core::Instant;
//!
//! let config = ConnConfig::builder().idle_timeout(Some(Duration::from_secs(10))).build()?;
//! let mut table = ConnTable::new(config, Instant::ZERO);
//! table.on_open(Instant::ZERO, 1);
//! table.on_open(Instant::ZERO, 2);
//! table.on_activity(Instant::from_secs(5), 2, Instant::from_secs(5));
//! // At the limit, the connection idle the longest is reclaimed first.
//! assert_eq!(table.reclaim(Instant::from_secs(6)), Some(1));
//! // Connection 2 has been silent for 10 s at t = 15 s.
//! assert_eq!(table.poll_timeout(), Some(Instant::from_secs(15)));
//! table.handle_timeout(Instant::from_secs(15));
//! assert_eq!(table.poll_event(), Some(ConnEvent::Close { id: 2, reason: CloseReason::Idle }));
//! # Ok::<(), keel_core::ConfigError>(())
//! ```
//!
//! [`on_open`]: ConnTable::on_open
//! [`on_activity`]: ConnTable::on_activity
//! [`on_read_deadline`]: ConnTable::on_read_deadline
//! [`on_handler_done`]: ConnTable::on_handler_done
//! [`on_closed`]: ConnTable::on_closed
//! [`handle_timeout`]: ConnTable::handle_timeout
//! [`poll_event`]: ConnTable::poll_event
//! [`reclaim`]: ConnTable::reclaim

use alloc::collections::{BTreeMap, VecDeque};
use core::time::Duration;

use crate::error::ConfigError;
use crate::time::{Instant, Monotonic};

/// How a server treats its connections: idle timeout, reclamation and lingering close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnConfig {
    idle_timeout: Option<Duration>,
    reclaim_min_idle: Option<Duration>,
    linger_time: Duration,
    linger_bytes: u64,
}

impl ConnConfig {
    /// A builder with the defaults (see the [module docs](self)).
    pub fn builder() -> ConnConfigBuilder {
        ConnConfigBuilder {
            config: ConnConfig::default(),
        }
    }

    /// Silence (no byte either way) after which a connection is closed; `None`: never.
    pub const fn idle_timeout(&self) -> Option<Duration> {
        self.idle_timeout
    }

    /// The least idle time of a connection reclaimed at the limit; `None`: no reclamation.
    pub const fn reclaim_min_idle(&self) -> Option<Duration> {
        self.reclaim_min_idle
    }

    /// The longest a lingering close waits for the peer's EOF.
    pub const fn linger_time(&self) -> Duration {
        self.linger_time
    }

    /// The most bytes a lingering close reads and discards before it gives up.
    pub const fn linger_bytes(&self) -> u64 {
        self.linger_bytes
    }
}

impl Default for ConnConfig {
    fn default() -> Self {
        ConnConfig {
            idle_timeout: Some(Duration::from_secs(60)),
            reclaim_min_idle: Some(Duration::from_secs(1)),
            linger_time: Duration::from_secs(2),
            linger_bytes: 1 << 20,
        }
    }
}

/// Builder for [`ConnConfig`].
#[derive(Clone, Copy, Debug)]
pub struct ConnConfigBuilder {
    config: ConnConfig,
}

impl ConnConfigBuilder {
    /// Closes a connection silent (no byte either way) for this long (default 60 s); `None`
    /// turns the idle timeout off.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.idle_timeout = timeout;
        self
    }

    /// At the limit, with a newcomer waiting, closes the connection idle the longest if it has
    /// been idle at least this long (default 1 s); `None` turns reclamation off.
    pub fn reclaim_min_idle(mut self, min_idle: Option<Duration>) -> Self {
        self.config.reclaim_min_idle = min_idle;
        self
    }

    /// How long a lingering close waits for the peer's EOF after shutting down the write side
    /// (default 2 s; zero: close at once, as without lingering).
    pub fn linger_time(mut self, time: Duration) -> Self {
        self.config.linger_time = time;
        self
    }

    /// How many bytes a lingering close reads and discards at most (default 1 MiB).
    pub fn linger_bytes(mut self, bytes: u64) -> Self {
        self.config.linger_bytes = bytes;
        self
    }

    /// Validates the configuration: an idle timeout of zero is an error (use `None`).
    pub fn build(self) -> Result<ConnConfig, ConfigError> {
        if self.config.idle_timeout == Some(Duration::ZERO) {
            return Err(ConfigError::Zero {
                field: "idle_timeout",
            });
        }
        Ok(self.config)
    }
}

/// Why the server closes a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// No byte either way for the idle timeout.
    Idle,
    /// The read deadline the handler armed passed.
    ReadDeadline,
    /// Reclaimed at the limit for a waiting newcomer (it was idle the longest).
    Reclaimed,
}

impl CloseReason {
    /// A short name for logs: `idle`, `read deadline`, `reclaimed`.
    pub const fn as_str(self) -> &'static str {
        match self {
            CloseReason::Idle => "idle",
            CloseReason::ReadDeadline => "read deadline",
            CloseReason::Reclaimed => "reclaimed",
        }
    }
}

/// How a connection ended, as the server reports it to [`ConnTable::on_closed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnEnd {
    /// The lingering close saw the peer's EOF (or no linger was due): every byte written was
    /// delivered before the FIN.
    Clean,
    /// The linger deadline passed with nothing more from the peer: closed without a reset.
    LingerTimeout,
    /// The connection ended in a reset: the linger byte cap or deadline was hit while the peer
    /// still sent, or a read or write failed (ECONNRESET, EPIPE).
    Reset,
    /// Closed by the server for a [`CloseReason`], without lingering.
    Closed(CloseReason),
    /// The connection's task was cancelled (the drain deadline passed) or panicked: forgotten
    /// here without a count (the shutdown machine counts it as aborted).
    Aborted,
}

/// What [`ConnTable::poll_event`] hands out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnEvent {
    /// Close connection `id` (its idle timeout or read deadline passed).
    Close {
        /// The connection.
        id: u64,
        /// Why.
        reason: CloseReason,
    },
}

/// Counts of a [`ConnTable`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ConnStats {
    /// Connections open now (serving or lingering).
    pub open: u64,
    /// Connections in their lingering close now.
    pub lingering: u64,
    /// Closed after the idle timeout.
    pub idle_closed: u64,
    /// Closed when the handler's read deadline passed.
    pub deadline_expired: u64,
    /// Reclaimed at the limit for a waiting newcomer.
    pub reclaimed: u64,
    /// Ended cleanly: the lingering close saw the peer's EOF.
    pub clean: u64,
    /// Ended when the linger deadline passed with nothing more from the peer (no reset).
    pub linger_timeouts: u64,
    /// Ended in a reset (linger cap or deadline hit while the peer still sent; I/O error).
    pub resets: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Serving,
    Closing(CloseReason),
    Lingering { deadline: Instant },
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    last_active: Instant,
    read_deadline: Option<Instant>,
    phase: Phase,
}

/// A serving connection's next deadline (idle or read) and what it means; the read deadline
/// first when both fall at once.
fn deadline_of(config: &ConnConfig, e: &Entry) -> Option<(Instant, CloseReason)> {
    if e.phase != Phase::Serving {
        return None;
    }
    let idle = config
        .idle_timeout
        .map(|t| (e.last_active + t, CloseReason::Idle));
    let read = e.read_deadline.map(|d| (d, CloseReason::ReadDeadline));
    match (idle, read) {
        (Some(i), Some(r)) => Some(if r.0 <= i.0 { r } else { i }),
        (i, r) => i.or(r),
    }
}

/// The connection bookkeeping machine. See the [module docs](self).
///
/// | group | methods |
/// | --- | --- |
/// | construct | [`new`](Self::new) |
/// | inputs | [`on_open`](Self::on_open), [`on_activity`](Self::on_activity), [`on_read_deadline`](Self::on_read_deadline), [`on_close`](Self::on_close), [`on_handler_done`](Self::on_handler_done), [`on_closed`](Self::on_closed) |
/// | timer | [`handle_timeout`](Self::handle_timeout), [`poll_timeout`](Self::poll_timeout) |
/// | commands | [`reclaim`](Self::reclaim) |
/// | outputs | [`poll_event`](Self::poll_event) |
/// | getters | [`stats`](Self::stats), [`idle_for`](Self::idle_for), [`reclaim_pending`](Self::reclaim_pending), [`reclaim_at`](Self::reclaim_at), [`defended_within`](Self::defended_within) |
///
/// After every input, drain [`poll_event`](Self::poll_event) and re-arm the timer from
/// [`poll_timeout`](Self::poll_timeout).
///
/// ```
/// use core::time::Duration;
/// use keel_core::conn::{CloseReason, ConnConfig, ConnEnd, ConnEvent, ConnTable};
/// use keel_core::Instant;
///
/// let config = ConnConfig::builder().linger_time(Duration::from_secs(2)).build()?;
/// let t0 = Instant::from_secs(1);
/// let s = Duration::from_secs;
/// let mut table = ConnTable::new(config, t0);
///
/// // A trickler: a byte a second keeps it from being idle, but the read deadline its handler
/// // armed when the request began (5 s for the whole request) closes it.
/// table.on_open(t0, 7);
/// table.on_read_deadline(t0, 7, Some(t0 + s(5)));
/// for i in 1..5 {
///     table.on_activity(t0 + s(i), 7, t0 + s(i));
/// }
/// assert_eq!(table.poll_timeout(), Some(t0 + s(5)));
/// table.handle_timeout(t0 + s(5));
/// assert_eq!(table.poll_event(), Some(ConnEvent::Close { id: 7, reason: CloseReason::ReadDeadline }));
/// // Closed by the server: no lingering, its slot is wanted at once.
/// assert_eq!(table.on_handler_done(t0 + s(5), 7, None), None);
/// table.on_closed(t0 + s(5), 7, ConnEnd::Closed(CloseReason::ReadDeadline));
/// assert_eq!(table.stats().deadline_expired, 1);
///
/// // A client served normally: its handler returns, the close lingers 2 s for its EOF.
/// table.on_open(t0 + s(6), 8);
/// assert_eq!(table.on_handler_done(t0 + s(7), 8, None), Some(t0 + s(9)));
/// # Ok::<(), keel_core::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct ConnTable {
    config: ConnConfig,
    clock: Monotonic,
    conns: BTreeMap<u64, Entry>,
    events: VecDeque<ConnEvent>,
    stats: ConnStats,
    /// When the server last closed a client itself (idle, read deadline, reclaimed).
    last_defence: Option<Instant>,
}

impl ConnTable {
    /// An empty table.
    #[must_use]
    pub fn new(config: ConnConfig, now: Instant) -> ConnTable {
        ConnTable {
            config,
            clock: Monotonic::new(now),
            conns: BTreeMap::new(),
            events: VecDeque::new(),
            stats: ConnStats::default(),
            last_defence: None,
        }
    }

    /// `true` if the server closed a client itself (idle timeout, read deadline, reclaimed at
    /// the limit) within `window` before the newest instant this table has seen: what health
    /// reports as `clients: closing idle or slow clients`.
    #[must_use]
    pub fn defended_within(&self, window: Duration) -> bool {
        self.last_defence
            .is_some_and(|t| self.clock.get().saturating_duration_since(t) < window)
    }

    /// The configuration.
    #[must_use]
    pub const fn config(&self) -> &ConnConfig {
        &self.config
    }

    /// Counts.
    #[must_use]
    pub const fn stats(&self) -> ConnStats {
        self.stats
    }

    /// How long connection `id` has been idle at `now` (`None` if unknown).
    #[must_use]
    pub fn idle_for(&self, now: Instant, id: u64) -> Option<Duration> {
        self.conns
            .get(&id)
            .map(|e| now.saturating_duration_since(e.last_active))
    }

    /// A connection opened (active now). An `id` already known is reset.
    pub fn on_open(&mut self, now: Instant, id: u64) {
        let now = self.clock.observe(now);
        let entry = Entry {
            last_active: now,
            read_deadline: None,
            phase: Phase::Serving,
        };
        if let Some(old) = self.conns.insert(id, entry) {
            if matches!(old.phase, Phase::Lingering { .. }) {
                self.stats.lingering = self.stats.lingering.saturating_sub(1);
            }
        } else {
            self.stats.open = self.stats.open.saturating_add(1);
        }
    }

    /// Connection `id` moved a byte at `at` (clamped to `now`; an older instant than the one
    /// known changes nothing).
    pub fn on_activity(&mut self, now: Instant, id: u64, at: Instant) {
        let now = self.clock.observe(now);
        if let Some(e) = self.conns.get_mut(&id) {
            e.last_active = e.last_active.max(at.min(now));
        }
    }

    /// The handler of `id` armed (`Some`) or cleared (`None`) its read deadline.
    pub fn on_read_deadline(&mut self, now: Instant, id: u64, deadline: Option<Instant>) {
        self.clock.observe(now);
        if let Some(e) = self.conns.get_mut(&id) {
            e.read_deadline = deadline;
        }
    }

    /// Connection `id` was closed for `reason` outside [`handle_timeout`](Self::handle_timeout)
    /// (e.g. its own read noticed its read deadline first): marks it closing and counts it, if
    /// it was serving. It will not linger.
    pub fn on_close(&mut self, now: Instant, id: u64, reason: CloseReason) {
        self.clock.observe(now);
        if self
            .conns
            .get(&id)
            .is_some_and(|e| e.phase == Phase::Serving)
        {
            self.close(now, id, reason);
        }
    }

    /// The handler of `id` returned. Returns the linger deadline: `now + linger_time`, never
    /// past `drain_deadline` (the drain's, when draining), or `None` if no linger is due (a
    /// connection the server closed, a zero linger time, an unknown `id`): close at once.
    /// Asked again for a connection already lingering, it returns that linger's deadline, cut
    /// to `drain_deadline` (a drain that started since never waits for an older linger).
    #[must_use]
    pub fn on_handler_done(
        &mut self,
        now: Instant,
        id: u64,
        drain_deadline: Option<Instant>,
    ) -> Option<Instant> {
        let now = self.clock.observe(now);
        let linger = self.config.linger_time;
        let e = self.conns.get_mut(&id)?;
        match e.phase {
            Phase::Serving if !linger.is_zero() => {
                let mut deadline = now + linger;
                if let Some(d) = drain_deadline {
                    deadline = deadline.min(d.max(now));
                }
                e.phase = Phase::Lingering { deadline };
                self.stats.lingering = self.stats.lingering.saturating_add(1);
                Some(deadline)
            }
            // Asked again (e.g. after the drain started): the linger never outlives the drain.
            Phase::Lingering { deadline } => {
                let deadline = drain_deadline.map_or(deadline, |d| deadline.min(d.max(now)));
                e.phase = Phase::Lingering { deadline };
                Some(deadline)
            }
            Phase::Serving | Phase::Closing(_) => None,
        }
    }

    /// Connection `id` is closed, having ended as `end`. Forgets it and counts the end.
    pub fn on_closed(&mut self, now: Instant, id: u64, end: ConnEnd) {
        self.clock.observe(now);
        let Some(e) = self.conns.remove(&id) else {
            return;
        };
        self.stats.open = self.stats.open.saturating_sub(1);
        if matches!(e.phase, Phase::Lingering { .. }) {
            self.stats.lingering = self.stats.lingering.saturating_sub(1);
        }
        // A connection the server closed is counted under its reason, whatever the I/O said.
        let end = match e.phase {
            Phase::Closing(reason) => ConnEnd::Closed(reason),
            _ => end,
        };
        let counter = match end {
            ConnEnd::Clean => &mut self.stats.clean,
            ConnEnd::LingerTimeout => &mut self.stats.linger_timeouts,
            ConnEnd::Reset => &mut self.stats.resets,
            // Counted when the close was decided, or by the shutdown machine.
            ConnEnd::Closed(_) | ConnEnd::Aborted => return,
        };
        *counter = counter.saturating_add(1);
    }

    /// At the limit with a newcomer waiting: picks the serving connection idle the longest,
    /// if it has been idle at least the configured minimum, marks it closing and returns it.
    /// `None` if reclamation is off, no connection is eligible, or a reclaimed connection is
    /// still closing (one at a time: each frees one slot for one newcomer).
    #[must_use]
    pub fn reclaim(&mut self, now: Instant) -> Option<u64> {
        let now = self.clock.observe(now);
        let min_idle = self.config.reclaim_min_idle?;
        if self.reclaim_pending() {
            return None;
        }
        let (&id, _) = self
            .conns
            .iter()
            .filter(|(_, e)| e.phase == Phase::Serving)
            .filter(|(_, e)| now.saturating_duration_since(e.last_active) >= min_idle)
            .min_by_key(|(&id, e)| (e.last_active, id))?;
        self.close(now, id, CloseReason::Reclaimed);
        Some(id)
    }

    /// When [`reclaim`](Self::reclaim) could next pick a connection: the instant the serving
    /// connection idle the longest (by the activity this table knows) reaches the minimum idle
    /// time. `None` if reclamation is off, a reclaimed connection is still closing, or no
    /// connection is serving. A server with a newcomer waiting arms its timer here.
    #[must_use]
    pub fn reclaim_at(&self) -> Option<Instant> {
        let min_idle = self.config.reclaim_min_idle?;
        if self.reclaim_pending() {
            return None;
        }
        self.conns
            .values()
            .filter(|e| e.phase == Phase::Serving)
            .map(|e| e.last_active)
            .min()
            .map(|t| t.saturating_add(min_idle))
    }

    /// `true` while a reclaimed connection has not closed yet.
    #[must_use]
    pub fn reclaim_pending(&self) -> bool {
        self.conns
            .values()
            .any(|e| e.phase == Phase::Closing(CloseReason::Reclaimed))
    }

    fn close(&mut self, now: Instant, id: u64, reason: CloseReason) {
        if let Some(e) = self.conns.get_mut(&id) {
            e.phase = Phase::Closing(reason);
            count_close(&mut self.stats, reason);
            self.last_defence = Some(now);
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has work: the earliest idle or read
    /// deadline of a serving connection. An idle deadline past the end of the clock is `None`.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.conns
            .values()
            .filter_map(|e| deadline_of(&self.config, e))
            .map(|(t, _)| t)
            .filter(|&t| t != Instant::MAX)
            .min()
    }

    /// Marks every serving connection whose idle timeout or read deadline has passed at `now`
    /// as closing, and queues a [`ConnEvent::Close`] for each (read deadline first when both).
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.observe(now);
        for (&id, e) in &mut self.conns {
            let Some((t, reason)) = deadline_of(&self.config, e) else {
                continue;
            };
            if t > now || t == Instant::MAX {
                continue;
            }
            e.phase = Phase::Closing(reason);
            count_close(&mut self.stats, reason);
            self.last_defence = Some(now);
            self.events.push_back(ConnEvent::Close { id, reason });
        }
    }

    /// The next connection to close, if any.
    pub fn poll_event(&mut self) -> Option<ConnEvent> {
        self.events.pop_front()
    }
}

/// Counts a close the server decided under its reason.
fn count_close(stats: &mut ConnStats, reason: CloseReason) {
    let counter = match reason {
        CloseReason::Idle => &mut stats.idle_closed,
        CloseReason::ReadDeadline => &mut stats.deadline_expired,
        CloseReason::Reclaimed => &mut stats.reclaimed,
    };
    *counter = counter.saturating_add(1);
}
