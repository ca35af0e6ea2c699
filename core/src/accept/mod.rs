//! Accept errors: classify them, pause on resource shortages, report without flooding the log.
//!
//! # What it protects against
//!
//! An accept loop meets two kinds of errors (seed 002, "Production-Ready Accept Loop"):
//!
//! - **per-connection** errors: one queued connection died (`ECONNRESET`, `ECONNABORTED`, a
//!   firewall's `EPERM`, and on Linux the pending network errors accept(2) says to "treat like
//!   EAGAIN"). The next connection may already be queued: accept again at once.
//! - **resource shortages** (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`): accepting again at once
//!   fails again and burns a CPU core. Pause, keep the listener open, retry later, and *log it*:
//!   it usually means a misconfigured system, and the log is how operators find out.
//!
//! Known-broken listeners (`EBADF`, `EINVAL`, `ENOTSOCK`...) are **fatal**: stop and report.
//!
//! A code the tables do not know follows [`UnknownErrorPolicy`]. The default is
//! [`UnknownErrorPolicy::Pause`]: treat it like a shortage of unknown cause (pause with the
//! growing pause, report it rate-limited with the OS error text, keep the listener). Why not stop:
//! the Linux accept(2) page says "various Linux kernels can return other errors", so an unknown
//! code is far more often a transient condition of one new socket than a broken listener (the
//! codes that do mean a broken listener are in the tables as fatal), and stopping turns it into an
//! outage of the whole server. A listener that really is broken and returns an unknown code on
//! every call costs one `accept` per `max_pause` (1 s) and one log line per `report_interval`,
//! and health shows `accept: paused (unknown)`. [`UnknownErrorPolicy::Stop`] is the stricter
//! choice (the behaviour before it was configurable) for supervisors that restart on exit.
//!
//! Under a storm (the seed's test: open-files limit 100, 1000 clients) the naive loop either
//! spins or writes a log line per failed `accept`. [`AcceptLoop`] pauses with a growing pause and
//! reports at most one [`AcceptEvent::Shortage`] per `report_interval`, each carrying the exact
//! count of shortages it stands for.
//!
//! # Contract
//!
//! - [`classify_os_error`] maps a raw code with the table of a [`Platform`] (Linux, BSD/macOS,
//!   Windows: `WSAEMFILE` is 10024, not 24); [`classify_io_error`] (feature `std`) uses
//!   `raw_os_error()` on [`Platform::HOST`] and falls back on the `ErrorKind`.
//! - [`AcceptLoop::on_error`] returns [`AcceptDecision::Continue`] for a per-connection error,
//!   [`AcceptDecision::PauseUntil`] (never before `now`, never more than `max_pause` after it)
//!   for a shortage, and [`AcceptDecision::Stop`] for a fatal error, after which the loop stays
//!   stopped.
//! - Consecutive shortages grow the pause by `growth_percent` up to `max_pause`; a successful
//!   accept ([`AcceptLoop::on_accepted`]) resets it.
//! - Reports are rate-limited: at most one `Shortage` event per `report_interval`, and one
//!   `Resumed` event after each episode that was reported. Every shortage is counted exactly
//!   once, as a report or as suppressed: `stats.reports + stats.suppressed == stats.shortages`,
//!   and the events' counts (1 per `Shortage` event plus every `suppressed` field) add up to
//!   `stats.shortages - stats.unreported`.
//! - The event queue is a fixed array of [`EVENT_QUEUE_CAPACITY`]: if nobody polls it, the oldest
//!   event is folded into the next one (its count moves into that event's `suppressed`), so a
//!   storm never grows memory and no count is lost.
//! - Time is an input, clamped through [`Monotonic`]; arithmetic saturates; no input panics.
//!
//! # Defaults
//!
//! | setting | default | source |
//! | --- | --- | --- |
//! | `initial_pause` | 50 ms | short enough that one freed descriptor is used quickly |
//! | `growth_percent` | 200 (doubling) | Go's `net/http` `Server.Serve` doubles its accept back-off |
//! | `max_pause` | 1 s | Go's `net/http` cap (and axum's fixed 1 s); the seed's fixed 500 ms lies between |
//! | `report_interval` | 1 s | one log line per second per listener under a storm |
//! | `unknown_errors` | [`UnknownErrorPolicy::Pause`] | see above: an unknown code should not end serving |
//!
//! The seed's behaviour (a fixed 500 ms pause) is `AcceptConfig::fixed_pause(500 ms).build()`.
//!
//! # Example
//!
//! ```
//! use core::time::Duration;
//! use keel_core::accept::{
//!     classify_os_error, AcceptDecision, AcceptEvent, AcceptLoop, AcceptConfig, Platform,
//! };
//! use keel_core::time::Instant;
//!
//! let mut acceptor = AcceptLoop::new(AcceptConfig::default(), Instant::ZERO);
//! let now = Instant::from_secs(1);
//!
//! // accept() failed with EMFILE (24 on Linux): pause 50 ms, and log it.
//! let kind = classify_os_error(24, Platform::Linux);
//! assert_eq!(
//!     acceptor.on_error(now, kind),
//!     AcceptDecision::PauseUntil(now + Duration::from_millis(50))
//! );
//! if let Some(AcceptEvent::Shortage { shortage, pause, .. }) = acceptor.poll_event() {
//!     assert_eq!(shortage.as_str(), "EMFILE");
//!     assert_eq!(pause, Duration::from_millis(50));
//!     assert!(shortage.hint().contains("ulimit -n"));
//! }
//!
//! // A second EMFILE right after: the pause doubles and the report is suppressed.
//! let later = now + Duration::from_millis(50);
//! acceptor.handle_timeout(later);
//! let decision = acceptor.on_error(later, kind);
//! assert_eq!(decision, AcceptDecision::PauseUntil(later + Duration::from_millis(100)));
//! assert_eq!(acceptor.poll_event(), None);
//!
//! // A connection arrives: the pause resets and the episode's end is reported.
//! acceptor.on_accepted(later + Duration::from_millis(100));
//! assert_eq!(
//!     acceptor.poll_event(),
//!     Some(AcceptEvent::Resumed { paused_for: Duration::from_millis(150), suppressed: 1 })
//! );
//! assert_eq!(acceptor.stats().shortages, 2);
//! ```

mod classify;

#[cfg(feature = "std")]
pub use classify::{classify_error_kind, classify_io_error};
pub use classify::{
    classify_os_error, errno_name, AcceptErrorKind, ErrnoEntry, Platform, Shortage,
};

use core::time::Duration;

use crate::error::ConfigError;
use crate::report::{Report, ReportLimiter};
use crate::ring::EventRing;
use crate::time::{Instant, Monotonic};

/// Default first pause after a shortage: 50 ms.
pub const DEFAULT_INITIAL_PAUSE: Duration = Duration::from_millis(50);
/// Default longest pause: 1 s (Go's `net/http` accept back-off cap).
pub const DEFAULT_MAX_PAUSE: Duration = Duration::from_secs(1);
/// Default growth of the pause per consecutive shortage: 200 %, i.e. doubling.
pub const DEFAULT_GROWTH_PERCENT: u32 = 200;
/// Default minimum time between two `Shortage` reports: 1 s ([`crate::report`]'s default).
pub const DEFAULT_REPORT_INTERVAL: Duration = crate::report::DEFAULT_REPORT_INTERVAL;
/// How many events [`AcceptLoop`] holds before it folds the oldest into the next.
pub const EVENT_QUEUE_CAPACITY: usize = 8;

/// What the accept loop does with an error code its platform table does not know
/// ([`AcceptErrorKind::Unknown`]). See the module docs for why `Pause` is the default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UnknownErrorPolicy {
    /// Pause and report it like a shortage ([`Shortage::Unrecognized`]): the listener stays
    /// open and accepting resumes after the pause (the default).
    #[default]
    Pause,
    /// Stop the loop as for a fatal error.
    Stop,
}

impl UnknownErrorPolicy {
    /// `"pause"` or `"stop"`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            UnknownErrorPolicy::Pause => "pause",
            UnknownErrorPolicy::Stop => "stop",
        }
    }
}

/// A validated [`AcceptLoop`] configuration. Build one with [`AcceptConfig::builder`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AcceptConfig {
    initial_pause: Duration,
    max_pause: Duration,
    growth_percent: u32,
    report_interval: Duration,
    unknown_errors: UnknownErrorPolicy,
}

impl AcceptConfig {
    /// A builder starting from the defaults (50 ms doubling up to 1 s, reports every 1 s).
    pub const fn builder() -> AcceptConfigBuilder {
        AcceptConfigBuilder {
            initial_pause: DEFAULT_INITIAL_PAUSE,
            max_pause: DEFAULT_MAX_PAUSE,
            growth_percent: DEFAULT_GROWTH_PERCENT,
            report_interval: DEFAULT_REPORT_INTERVAL,
            unknown_errors: UnknownErrorPolicy::Pause,
        }
    }

    /// A builder preset to the seed's behaviour: the same `pause` after every shortage (seed
    /// 002 uses 500 ms), with the default report interval. Like every named preset in keel it
    /// returns the builder: change more, then [`build`](AcceptConfigBuilder::build) (which
    /// refuses a zero `pause` with [`ConfigError::Zero`]).
    pub const fn fixed_pause(pause: Duration) -> AcceptConfigBuilder {
        AcceptConfig::builder().fixed_pause(pause)
    }

    /// The pause after the first shortage of an episode.
    #[must_use]
    pub const fn initial_pause(&self) -> Duration {
        self.initial_pause
    }

    /// The longest pause.
    #[must_use]
    pub const fn max_pause(&self) -> Duration {
        self.max_pause
    }

    /// Each consecutive shortage multiplies the pause by `growth_percent / 100`.
    #[must_use]
    pub const fn growth_percent(&self) -> u32 {
        self.growth_percent
    }

    /// The minimum time between two `Shortage` reports.
    #[must_use]
    pub const fn report_interval(&self) -> Duration {
        self.report_interval
    }

    /// What an unknown error code does.
    #[must_use]
    pub const fn unknown_errors(&self) -> UnknownErrorPolicy {
        self.unknown_errors
    }
}

impl Default for AcceptConfig {
    /// 50 ms doubling up to 1 s, reports every 1 s (see the module docs for the sources).
    fn default() -> Self {
        AcceptConfig {
            initial_pause: DEFAULT_INITIAL_PAUSE,
            max_pause: DEFAULT_MAX_PAUSE,
            growth_percent: DEFAULT_GROWTH_PERCENT,
            report_interval: DEFAULT_REPORT_INTERVAL,
            unknown_errors: UnknownErrorPolicy::Pause,
        }
    }
}

/// Builds an [`AcceptConfig`]; see [`AcceptConfig::builder`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct AcceptConfigBuilder {
    initial_pause: Duration,
    max_pause: Duration,
    growth_percent: u32,
    report_interval: Duration,
    unknown_errors: UnknownErrorPolicy,
}

impl AcceptConfigBuilder {
    /// The pause after the first shortage of an episode (default 50 ms). Must be positive.
    pub const fn initial_pause(mut self, pause: Duration) -> Self {
        self.initial_pause = pause;
        self
    }

    /// The longest pause (default 1 s). Must be at least `initial_pause`.
    pub const fn max_pause(mut self, pause: Duration) -> Self {
        self.max_pause = pause;
        self
    }

    /// Growth per consecutive shortage, in percent (default 200: doubling; 100: fixed).
    /// Must be at least 100.
    pub const fn growth_percent(mut self, percent: u32) -> Self {
        self.growth_percent = percent;
        self
    }

    /// The same pause after every shortage: `initial_pause = max_pause = pause`, growth 100 %.
    pub const fn fixed_pause(mut self, pause: Duration) -> Self {
        self.initial_pause = pause;
        self.max_pause = pause;
        self.growth_percent = 100;
        self
    }

    /// The minimum time between two `Shortage` reports (default 1 s). Zero reports every
    /// shortage (the event queue stays bounded: see [`EVENT_QUEUE_CAPACITY`]).
    pub const fn report_interval(mut self, interval: Duration) -> Self {
        self.report_interval = interval;
        self
    }

    /// What an error code the platform table does not know does (default
    /// [`UnknownErrorPolicy::Pause`]; see the module docs for why).
    pub const fn unknown_errors(mut self, policy: UnknownErrorPolicy) -> Self {
        self.unknown_errors = policy;
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    ///
    /// - [`ConfigError::Zero`] if `initial_pause` or `max_pause` is zero (a zero pause spins);
    /// - [`ConfigError::InvertedRange`] if `initial_pause > max_pause`;
    /// - [`ConfigError::OutOfRange`] if `growth_percent < 100` (the pause would shrink).
    pub fn build(self) -> Result<AcceptConfig, ConfigError> {
        if self.initial_pause.is_zero() {
            return Err(ConfigError::Zero {
                field: "initial_pause",
            });
        }
        if self.max_pause.is_zero() {
            return Err(ConfigError::Zero { field: "max_pause" });
        }
        if self.initial_pause > self.max_pause {
            return Err(ConfigError::InvertedRange {
                min: "initial_pause",
                max: "max_pause",
            });
        }
        if self.growth_percent < 100 {
            return Err(ConfigError::OutOfRange {
                field: "growth_percent",
                expected: "at least 100 (100 keeps the pause fixed, 200 doubles it)",
            });
        }
        Ok(AcceptConfig {
            initial_pause: self.initial_pause,
            max_pause: self.max_pause,
            growth_percent: self.growth_percent,
            report_interval: self.report_interval,
            unknown_errors: self.unknown_errors,
        })
    }
}

/// What the accept loop should do after an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum AcceptDecision {
    /// Accept the next connection at once.
    Continue,
    /// Do not call `accept` before this instant; the listener stays open (the kernel backlog
    /// holds new connections meanwhile).
    PauseUntil(Instant),
    /// The listener is broken: stop accepting and report.
    Stop,
}

/// A transition worth logging or counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AcceptEvent {
    /// A shortage worth logging: at most one per `report_interval`. `suppressed` counts the
    /// shortages since the previous report that were not reported.
    Shortage {
        /// What ran out; [`Shortage::hint`] says what to do about it.
        shortage: Shortage,
        /// The pause this shortage started.
        pause: Duration,
        /// When accepting resumes.
        until: Instant,
        /// Shortages since the previous report that were not reported.
        suppressed: u64,
    },
    /// Accepting resumed after a reported shortage episode. `suppressed` counts the episode's
    /// shortages not carried by an earlier event.
    Resumed {
        /// From the episode's first shortage to the accept that ended it.
        paused_for: Duration,
        /// Shortages not yet carried by any event.
        suppressed: u64,
    },
    /// A fatal error stopped the loop.
    Fatal,
}

/// Counters of an [`AcceptLoop`], a `Copy` snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AcceptStats {
    /// Successful accepts ([`AcceptLoop::on_accepted`] calls, after a stop included).
    pub accepted: u64,
    /// Per-connection errors skipped.
    pub per_connection_errors: u64,
    /// Resource shortages.
    pub shortages: u64,
    /// Pauses started (a shortage during a pause extends it and is not counted here).
    pub pauses: u64,
    /// Time spent paused, up to the newest `now` seen.
    pub paused_total: Duration,
    /// Fatal errors (0 or 1: the loop stops at the first).
    pub fatal: u64,
    /// Errors with a code the platform table does not know ([`AcceptErrorKind::Unknown`]),
    /// whatever the policy did with them (under `Pause` each is also counted in `shortages`).
    pub unknown_errors: u64,
    /// Shortages reported by a `Shortage` event.
    pub reports: u64,
    /// Shortages not reported by their own event: `reports + suppressed == shortages`.
    pub suppressed: u64,
    /// Suppressed shortages not yet carried by any event's `suppressed` count; the next
    /// `Shortage` or `Resumed` event will carry them.
    pub unreported: u64,
}

#[derive(Clone, Copy, Debug)]
struct Pause {
    start: Instant,
    until: Instant,
}

#[derive(Clone, Copy, Debug)]
struct Episode {
    start: Instant,
    reported: bool,
}

/// The accept loop's events: the crate's ring, where a full ring folds its oldest event into
/// the next instead of losing its count.
#[derive(Clone, Debug)]
struct EventQueue(EventRing<AcceptEvent, EVENT_QUEUE_CAPACITY>);

impl EventQueue {
    const fn new() -> Self {
        EventQueue(EventRing::new())
    }

    fn pop(&mut self) -> Option<AcceptEvent> {
        self.0.pop()
    }

    /// Pushes `event`. When full, the oldest event is folded into the next one first; returns
    /// whether a `Shortage` report was folded (its shortage becomes a suppressed one).
    fn push(&mut self, event: AcceptEvent) -> bool {
        let mut folded_report = false;
        if self.0.is_full() {
            let carried = match self.0.pop() {
                Some(AcceptEvent::Shortage { suppressed, .. }) => {
                    folded_report = true;
                    suppressed.saturating_add(1)
                }
                Some(AcceptEvent::Resumed { suppressed, .. }) => suppressed,
                Some(AcceptEvent::Fatal) | None => 0,
            };
            match self.0.front_mut() {
                Some(
                    AcceptEvent::Shortage { suppressed, .. }
                    | AcceptEvent::Resumed { suppressed, .. },
                ) => *suppressed = suppressed.saturating_add(carried),
                Some(AcceptEvent::Fatal) | None => {}
            }
        }
        // Room was made above (a capacity of 0 is not configurable: EVENT_QUEUE_CAPACITY > 0).
        let lost = self.0.push(event);
        debug_assert!(lost.is_none(), "an accept event was lost after making room");
        folded_report
    }
}

/// The accept-loop machine: decides what to do after each accept error and what to log.
///
/// # Methods
///
/// | group | methods |
/// | --- | --- |
/// | construct | [`new`](Self::new) |
/// | admission | none: the connection limit admits ([`crate::limit::Limit::try_acquire`]) |
/// | inputs | [`on_accepted`](Self::on_accepted), [`on_error`](Self::on_error) |
/// | timer | [`handle_timeout`](Self::handle_timeout), [`poll_timeout`](Self::poll_timeout) |
/// | outputs | [`poll_event`](Self::poll_event) |
/// | getters | [`is_paused`](Self::is_paused), [`is_stopped`](Self::is_stopped), [`next_pause`](Self::next_pause), [`stats`](Self::stats), [`config`](Self::config) |
///
/// A driver calls `accept`; on success `on_accepted(now)`, on error `on_error(now, kind)` and
/// obeys the decision; it drains `poll_event` after each call (to log) and sleeps until
/// `poll_timeout` while paused, then calls `handle_timeout(now)`.
///
/// ```
/// use core::time::Duration;
/// use keel_core::accept::{
///     AcceptConfig, AcceptDecision, AcceptErrorKind, AcceptEvent, AcceptLoop, Shortage,
/// };
/// use keel_core::Instant;
///
/// let config = AcceptConfig::builder()
///     .initial_pause(Duration::from_millis(50))
///     .max_pause(Duration::from_millis(150))
///     .growth_percent(200) // doubling
///     .build()?;
/// let t0 = Instant::from_secs(1);
/// let mut accept = AcceptLoop::new(config, t0);
/// let emfile = AcceptErrorKind::Shortage(Shortage::ProcessFileLimit);
///
/// // Out of file descriptors: pause (the backlog holds newcomers), 50 ms, then 100, capped at 150.
/// let ms = Duration::from_millis;
/// assert_eq!(accept.on_error(t0, emfile), AcceptDecision::PauseUntil(t0 + ms(50)));
/// assert!(accept.is_paused(t0));
/// assert_eq!(accept.poll_timeout(), Some(t0 + ms(50)));
/// assert!(matches!(accept.poll_event(), Some(AcceptEvent::Shortage { .. }))); // log it
/// let t1 = t0 + ms(50);
/// accept.handle_timeout(t1);
/// assert_eq!(accept.on_error(t1, emfile), AcceptDecision::PauseUntil(t1 + ms(100)));
/// let t2 = t1 + ms(100);
/// accept.handle_timeout(t2);
/// assert_eq!(accept.on_error(t2, emfile), AcceptDecision::PauseUntil(t2 + ms(150)));
/// // A reset peer is that connection's problem: keep accepting.
/// assert_eq!(accept.on_error(t2, AcceptErrorKind::PerConnection), AcceptDecision::Continue);
/// // An accepted connection ends the episode and resets the pause.
/// accept.on_accepted(t2 + ms(150));
/// assert_eq!(accept.next_pause(), ms(50));
/// // A broken listener stops the loop for good.
/// assert_eq!(accept.on_error(t2 + ms(200), AcceptErrorKind::Fatal), AcceptDecision::Stop);
/// assert!(accept.is_stopped());
/// # Ok::<(), keel_core::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct AcceptLoop {
    config: AcceptConfig,
    clock: Monotonic,
    next_pause: Duration,
    pause: Option<Pause>,
    episode: Option<Episode>,
    /// Which shortages are reported; the source of `reports`, `suppressed` and `unreported`.
    reports: ReportLimiter,
    stopped: bool,
    fatal_pending: bool,
    events: EventQueue,
    stats: AcceptStats,
}

impl AcceptLoop {
    /// A running accept loop, not paused.
    #[must_use]
    pub fn new(config: AcceptConfig, now: Instant) -> Self {
        AcceptLoop {
            config,
            clock: Monotonic::new(now),
            next_pause: config.initial_pause,
            pause: None,
            episode: None,
            reports: ReportLimiter::new(config.report_interval, now),
            stopped: false,
            fatal_pending: false,
            events: EventQueue::new(),
            stats: AcceptStats::default(),
        }
    }

    /// A connection was accepted: ends any pause, resets the pause growth, and (if the shortage
    /// episode was reported) queues a [`AcceptEvent::Resumed`].
    ///
    /// After [`AcceptDecision::Stop`] this only counts the connection: a stopped loop stays
    /// stopped (build a new `AcceptLoop` for a new listener).
    pub fn on_accepted(&mut self, now: Instant) {
        let now = self.clock.observe(now);
        self.stats.accepted = self.stats.accepted.saturating_add(1);
        if self.stopped {
            return;
        }
        self.end_pause(now);
        self.next_pause = self.config.initial_pause;
        if let Some(episode) = self.episode.take() {
            if episode.reported {
                let suppressed = self.reports.take_unreported();
                self.push(AcceptEvent::Resumed {
                    paused_for: now.saturating_duration_since(episode.start),
                    suppressed,
                });
            }
        }
    }

    /// `accept` failed with an error of `kind`.
    ///
    /// - per-connection: [`AcceptDecision::Continue`] (a pause in progress stays in force);
    /// - shortage: [`AcceptDecision::PauseUntil`]`(now + pause)`; the next pause grows by
    ///   `growth_percent` up to `max_pause` until a connection is accepted; a report is queued if
    ///   `report_interval` has passed since the previous one;
    /// - fatal: [`AcceptDecision::Stop`], a [`AcceptEvent::Fatal`] event, and every later call
    ///   returns `Stop` without counting anything;
    /// - unknown: as a shortage ([`Shortage::Unrecognized`]) under [`UnknownErrorPolicy::Pause`],
    ///   as a fatal error under [`UnknownErrorPolicy::Stop`].
    pub fn on_error(&mut self, now: Instant, kind: AcceptErrorKind) -> AcceptDecision {
        let now = self.clock.observe(now);
        if self.stopped {
            return AcceptDecision::Stop;
        }
        self.expire(now);
        match kind {
            AcceptErrorKind::PerConnection => {
                self.stats.per_connection_errors =
                    self.stats.per_connection_errors.saturating_add(1);
                AcceptDecision::Continue
            }
            AcceptErrorKind::Shortage(shortage) => self.shortage(now, shortage),
            AcceptErrorKind::Fatal => self.fatal(now),
            AcceptErrorKind::Unknown => {
                self.stats.unknown_errors = self.stats.unknown_errors.saturating_add(1);
                match self.config.unknown_errors {
                    UnknownErrorPolicy::Pause => self.shortage(now, Shortage::Unrecognized),
                    UnknownErrorPolicy::Stop => self.fatal(now),
                }
            }
        }
    }

    fn fatal(&mut self, now: Instant) -> AcceptDecision {
        self.stats.fatal = self.stats.fatal.saturating_add(1);
        self.end_pause(now);
        self.stopped = true;
        self.fatal_pending = true;
        AcceptDecision::Stop
    }

    /// Ends a pause whose deadline has passed. Early or spurious calls are no-ops.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.observe(now);
        if !self.stopped {
            self.expire(now);
        }
    }

    /// The end of the current pause, or `None` when not paused (or stopped).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.stopped {
            return None;
        }
        self.pause.map(|p| p.until)
    }

    /// Whether `accept` must wait at `now` (clamped to the newest instant seen).
    #[must_use]
    pub fn is_paused(&self, now: Instant) -> bool {
        let now = now.max(self.clock.get());
        !self.stopped && self.pause.is_some_and(|p| now < p.until)
    }

    /// Whether a fatal error stopped the loop.
    #[must_use]
    pub const fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// The pause the next shortage would start.
    #[must_use]
    pub const fn next_pause(&self) -> Duration {
        self.next_pause
    }

    /// The configuration.
    #[must_use]
    pub const fn config(&self) -> &AcceptConfig {
        &self.config
    }

    /// The next event to log, oldest first; `Fatal` comes last.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<AcceptEvent> {
        if let Some(event) = self.events.pop() {
            return Some(event);
        }
        if core::mem::take(&mut self.fatal_pending) {
            return Some(AcceptEvent::Fatal);
        }
        None
    }

    /// A snapshot of the counters; `paused_total` includes the current pause up to the newest
    /// `now` seen.
    #[must_use]
    pub fn stats(&self) -> AcceptStats {
        let mut stats = self.stats;
        let reports = self.reports.stats();
        stats.reports = reports.reports;
        stats.suppressed = reports.suppressed;
        stats.unreported = reports.unreported;
        if let Some(p) = self.pause {
            let end = self.clock.get().min(p.until);
            stats.paused_total = stats
                .paused_total
                .saturating_add(end.saturating_duration_since(p.start));
        }
        stats
    }

    fn shortage(&mut self, now: Instant, shortage: Shortage) -> AcceptDecision {
        self.stats.shortages = self.stats.shortages.saturating_add(1);
        let pause = self.next_pause;
        self.next_pause = self.grow(pause);
        let until = match &mut self.pause {
            Some(p) => {
                p.until = p.until.max(now.saturating_add(pause));
                p.until
            }
            None => {
                let until = now.saturating_add(pause);
                self.pause = Some(Pause { start: now, until });
                self.stats.pauses = self.stats.pauses.saturating_add(1);
                until
            }
        };
        let episode = self.episode.get_or_insert(Episode {
            start: now,
            reported: false,
        });
        if let Report::Emit { suppressed } = self.reports.on_occurrence(now) {
            episode.reported = true;
            self.push(AcceptEvent::Shortage {
                shortage,
                pause,
                until,
                suppressed,
            });
        }
        AcceptDecision::PauseUntil(until)
    }

    fn push(&mut self, event: AcceptEvent) {
        if self.events.push(event) {
            self.reports.demote();
        }
    }

    fn grow(&self, pause: Duration) -> Duration {
        let max = self.config.max_pause;
        let nanos = pause
            .as_nanos()
            .saturating_mul(u128::from(self.config.growth_percent))
            / 100;
        if nanos >= max.as_nanos() {
            return max;
        }
        // nanos < max.as_nanos() <= Duration::MAX in nanoseconds, so the seconds fit in a u64.
        let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
        let subsec = u32::try_from(nanos % 1_000_000_000).unwrap_or(0);
        Duration::new(secs, subsec)
    }

    fn expire(&mut self, now: Instant) {
        if self.pause.is_some_and(|p| now >= p.until) {
            self.end_pause(now);
        }
    }

    fn end_pause(&mut self, now: Instant) {
        if let Some(p) = self.pause.take() {
            let end = now.min(p.until);
            self.stats.paused_total = self
                .stats
                .paused_total
                .saturating_add(end.saturating_duration_since(p.start));
        }
    }
}
