//! Queue-depth admission: refuse new work once a queue's backlog passes a bound.
//!
//! # What it protects against
//!
//! A job queue (a Redis list behind Sidekiq, a broker topic, an in-process channel) absorbs a
//! flood by growing. When producers outrun the workers for long enough, legitimately (a spike) or
//! maliciously (seed 004's job flood), the queue grows until the server holding it runs out of
//! memory, and then every queue on that server fails, not only the flooded one. A rate limit per
//! user does not prevent it (many users, or a slow dependency that stalls the workers, fill the
//! queue just as well). [`Backlog`] is the last line: once the queue holds `high` jobs, ordinary
//! enqueues are refused with a retry hint estimated from how fast the queue drains, until it has
//! drained to `low`; critical work may use a reserve above `high`. The queue's memory is then
//! bounded by `high + critical_reserve` jobs (plus what other producers add between two
//! observations of the depth).
//!
//! # The contract
//!
//! - **The depth estimate.** The machine keeps an estimate of the queue's length:
//!   [`on_depth(now, depth)`](Backlog::on_depth) sets it to an observed length (e.g. Redis
//!   `LLEN`, polled; it may be stale); [`on_enqueued`](Backlog::on_enqueued) and
//!   [`on_dequeued`](Backlog::on_dequeued) add and subtract counts seen locally between
//!   observations. **Every admission counts itself**: [`try_acquire`](Backlog::try_acquire)
//!   adds one to the estimate when it admits, so many admissions between two observations can
//!   never push the estimate past the bound. Call `on_enqueued` only for jobs that bypass
//!   admission (a worker re-enqueuing a retry, another producer), never for an admitted one.
//! - **Admission.** `try_acquire(now, Priority::Normal)` admits while the machine is not
//!   *full* and the estimate is below `high`. The machine becomes full when the estimate reaches
//!   `high` and admits normal work again only once it has drained to `low` or below
//!   (hysteresis: it does not flap around one value). `Priority::Critical` ignores the
//!   hysteresis and is admitted while the estimate is below `high + critical_reserve`.
//! - **The retry hint.** A refusal's `retry_at` is `now` plus the time the queue needs, at the
//!   measured drain rate, to drain to the point where the same request would be admitted (to
//!   `low` for normal work, below `high + critical_reserve` for critical work). `None` when the
//!   drain rate is zero or unknown, when the instant is past the end of the clock, and for a
//!   refusal because the depth is stale: only a fresh observation would tell.
//! - **The drain rate** is an exponentially weighted moving average of dequeues per second,
//!   sampled in windows of `drain_window`: each finished window's rate weighs 1/4, the older
//!   average 3/4 (the first window sets it). A window with no dequeues decays it (so a stalled
//!   queue's rate falls to zero and the hint becomes `None`). Dequeues are `on_dequeued`'s
//!   counts plus the drop of the estimate at each `on_depth` (a net drain: dequeues minus other
//!   producers' enqueues, never more than the true drain).
//! - **Staleness (fail closed for normal work).** Once [`on_depth`](Backlog::on_depth) has been
//!   called, an observation older than `max_staleness` is stale: nobody knows what other
//!   producers added since. The machine then refuses **normal** work with
//!   `BacklogFull::Stale` (`retry_at: None`), and still admits **critical** work within
//!   `high + critical_reserve` of its (local) estimate, until the next `on_depth`. The
//!   reasoning: a poller that stopped (or a Redis that stopped answering) is exactly when a
//!   flood can grow the queue unseen, and refusing ordinary work costs a retry, whereas
//!   admitting it blind may cost the whole queue server. A machine fed only counts (never
//!   `on_depth`) is never stale: it is the queue's only producer and sees every dequeue.
//!   `max_staleness` of [`Duration::MAX`] turns staleness off.
//! - **Time** is an input; a `now` older than one already seen is clamped; every count
//!   saturates (`u64::MAX` depths and counts are legal); nothing allocates or panics.
//!
//! # Timers, events, stats
//!
//! [`poll_timeout`](Backlog::poll_timeout) is the instant the current observation goes stale
//! (`None` before the first `on_depth`, while stale, or with staleness off);
//! [`handle_timeout`](Backlog::handle_timeout) marks it stale and reports it. Admission checks
//! staleness itself, so the timer only makes the [`BacklogEvent::Stale`] report timely.
//! [`poll_event`](Backlog::poll_event) reports the transitions ([`BacklogEvent::Full`],
//! [`BacklogEvent::Admitting`], [`BacklogEvent::Stale`], [`BacklogEvent::Fresh`]);
//! [`stats`](Backlog::stats) counts admissions and refusals, the estimate, its peak and the
//! drain rate.
//!
//! # Defaults and their source
//!
//! keel's choices (Sidekiq bounds nothing, seed 004 only says "alert on unusually long queue
//! lengths"): `high` 10 000 jobs (10 MiB of Redis memory at 1 KiB per job), `low` 90 % of
//! `high` (a band of a tenth, the same share as the reserve), `critical_reserve` 10 % of
//! `high`, `max_staleness` 1 s (ten missed polls at 100 ms), `drain_window` 1 s (the EWMA then
//! has a time constant of about 3.5 s, near the 1-minute load average's shape at a shorter
//! scale).
//!
//! # Example
//!
//! ```
//! use core::time::Duration;
//! use keel_core::backlog::{Backlog, BacklogConfig, BacklogFull, Priority};
//! use keel_core::time::Instant;
//!
//! let config = BacklogConfig::builder()
//!     .high(100)
//!     .low(80)
//!     .critical_reserve(10)
//!     .max_staleness(Duration::from_secs(5)) // the depth is polled every second
//!     .build()?;
//! let t = Instant::from_secs(10);
//! let mut backlog = Backlog::new(config, t);
//!
//! // The poller saw 99 jobs in the queue: one more normal job fits.
//! backlog.on_depth(t, 99);
//! assert!(backlog.try_acquire(t, Priority::Normal).is_ok());
//! let refused = backlog.try_acquire(t, Priority::Normal).unwrap_err();
//! assert_eq!(refused.reason, BacklogFull::Full { depth: 100, bound: 100 });
//! assert_eq!(refused.retry_at, None); // no drain measured yet
//! assert!(backlog.try_acquire(t, Priority::Critical).is_ok()); // the reserve
//!
//! // Workers take 10 jobs in the first second: the drain rate is known once it ends.
//! backlog.on_dequeued(t + Duration::from_millis(500), 5);
//! backlog.on_dequeued(t + Duration::from_millis(900), 5);
//! let t2 = t + Duration::from_secs(1);
//! let refused = backlog.try_acquire(t2, Priority::Normal).unwrap_err();
//! assert_eq!(backlog.depth(), 91); // still full: normal work waits for `low` (80)
//! assert_eq!(backlog.drain_rate_milli(), 10_000); // 10 jobs per second
//! // 11 jobs to drain at 10 per second:
//! assert_eq!(refused.retry_at, Some(t2 + Duration::from_millis(1_100)));
//!
//! // The depth poller reports 80: admitting again.
//! backlog.on_depth(t2, 80);
//! assert!(backlog.try_acquire(t2, Priority::Normal).is_ok());
//! assert_eq!(backlog.stats().full_transitions, 1);
//! # Ok::<(), keel_core::ConfigError>(())
//! ```

use core::time::Duration;

use crate::error::{ConfigError, Rejected};
use crate::ring::EventRing;
use crate::time::{duration_to_nanos, never_at_the_end, Instant, Monotonic};

/// Default `high`: 10 000 jobs (keel's choice; see the [module docs](self)).
pub const DEFAULT_HIGH: u64 = 10_000;
/// Default `max_staleness`: 1 s.
pub const DEFAULT_MAX_STALENESS: Duration = Duration::from_secs(1);
/// Default `drain_window`: 1 s.
pub const DEFAULT_DRAIN_WINDOW: Duration = Duration::from_secs(1);
/// The smallest `drain_window`: 1 ms.
pub const MIN_DRAIN_WINDOW: Duration = Duration::from_millis(1);
/// The largest `drain_window`: 1 hour.
pub const MAX_DRAIN_WINDOW: Duration = Duration::from_secs(3600);
/// Events kept when nobody polls; older ones are dropped and counted
/// ([`BacklogStats::events_dropped`]).
pub const EVENT_QUEUE_CAPACITY: usize = 8;

/// Empty windows after which the drain rate has surely decayed to zero (`(3/4)^160 * 2^64 < 1`
/// with the rounding below).
const DECAY_WINDOWS_TO_ZERO: u64 = 160;

/// A validated backlog configuration; build it with [`BacklogConfig::builder`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BacklogConfig {
    high: u64,
    low: u64,
    critical_reserve: u64,
    max_staleness: Duration,
    drain_window: Duration,
}

impl Default for BacklogConfig {
    /// `high` 10 000, `low` 9 000, `critical_reserve` 1 000, `max_staleness` 1 s,
    /// `drain_window` 1 s.
    fn default() -> Self {
        BacklogConfigBuilder::new().assemble()
    }
}

impl BacklogConfig {
    /// A builder holding the defaults (see [`Default`](#impl-Default-for-BacklogConfig)).
    pub fn builder() -> BacklogConfigBuilder {
        BacklogConfigBuilder::new()
    }

    /// The depth at which normal work is refused.
    #[inline]
    #[must_use]
    pub const fn high(&self) -> u64 {
        self.high
    }

    /// The depth to which the queue must drain before normal work is admitted again.
    #[inline]
    #[must_use]
    pub const fn low(&self) -> u64 {
        self.low
    }

    /// Jobs above `high` that critical work may still use.
    #[inline]
    #[must_use]
    pub const fn critical_reserve(&self) -> u64 {
        self.critical_reserve
    }

    /// The bound critical work may fill to: `high + critical_reserve` (saturating).
    #[inline]
    #[must_use]
    pub const fn critical_bound(&self) -> u64 {
        self.high.saturating_add(self.critical_reserve)
    }

    /// How long an observed depth is trusted.
    #[inline]
    #[must_use]
    pub const fn max_staleness(&self) -> Duration {
        self.max_staleness
    }

    /// The sampling window of the drain rate.
    #[inline]
    #[must_use]
    pub const fn drain_window(&self) -> Duration {
        self.drain_window
    }
}

/// Builds a [`BacklogConfig`]; [`build`](BacklogConfigBuilder::build) validates it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct BacklogConfigBuilder {
    high: u64,
    low: Option<u64>,
    critical_reserve: Option<u64>,
    max_staleness: Duration,
    drain_window: Duration,
}

impl BacklogConfigBuilder {
    fn new() -> BacklogConfigBuilder {
        BacklogConfigBuilder {
            high: DEFAULT_HIGH,
            low: None,
            critical_reserve: None,
            max_staleness: DEFAULT_MAX_STALENESS,
            drain_window: DEFAULT_DRAIN_WINDOW,
        }
    }

    /// The depth at which normal work is refused (default 10 000; at least 1).
    pub fn high(mut self, high: u64) -> Self {
        self.high = high;
        self
    }

    /// The depth to which the queue must drain before normal work is admitted again (default
    /// `high - max(high / 10, 1)`; below `high`; 0 is allowed).
    pub fn low(mut self, low: u64) -> Self {
        self.low = Some(low);
        self
    }

    /// Jobs above `high` that critical work may use (default `high / 10`; 0 = none).
    pub fn critical_reserve(mut self, reserve: u64) -> Self {
        self.critical_reserve = Some(reserve);
        self
    }

    /// How long an observed depth is trusted (default 1 s; [`Duration::MAX`] = for ever).
    pub fn max_staleness(mut self, max_staleness: Duration) -> Self {
        self.max_staleness = max_staleness;
        self
    }

    /// The sampling window of the drain rate (default 1 s; 1 ms to 1 hour).
    pub fn drain_window(mut self, window: Duration) -> Self {
        self.drain_window = window;
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    ///
    /// - [`ConfigError::Zero`] if `high` or `max_staleness` is zero (nothing, or no depth,
    ///   would ever be admitted).
    /// - [`ConfigError::OutOfRange`] if `low` is not below `high` (a band of zero would flap
    ///   between full and admitting at one depth) or `drain_window` is outside 1 ms ..= 1 hour.
    pub fn build(self) -> Result<BacklogConfig, ConfigError> {
        if self.high == 0 {
            return Err(ConfigError::Zero { field: "high" });
        }
        if self.max_staleness.is_zero() {
            return Err(ConfigError::Zero {
                field: "max_staleness",
            });
        }
        if self.low.is_some_and(|low| low >= self.high) {
            return Err(ConfigError::OutOfRange {
                field: "low",
                expected: "below `high` (the machine admits again at `low` after refusing at `high`: lower `low` or raise `high`)",
            });
        }
        if self.drain_window < MIN_DRAIN_WINDOW || self.drain_window > MAX_DRAIN_WINDOW {
            return Err(ConfigError::OutOfRange {
                field: "drain_window",
                expected: "between 1 ms and 1 hour",
            });
        }
        Ok(self.assemble())
    }

    fn assemble(self) -> BacklogConfig {
        let band = (self.high / 10).max(1);
        BacklogConfig {
            high: self.high,
            low: self.low.unwrap_or(self.high.saturating_sub(band)),
            critical_reserve: self.critical_reserve.unwrap_or(self.high / 10),
            max_staleness: self.max_staleness,
            drain_window: self.drain_window,
        }
    }
}

/// The class of work asking to be enqueued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Priority {
    /// Ordinary work: refused at `high`, admitted again at `low`, refused while the depth is
    /// stale.
    #[default]
    Normal,
    /// Work that must get through a flood (e.g. a password reset beside a marketing blast):
    /// admitted while the estimate is below `high + critical_reserve`, whatever the hysteresis
    /// or staleness.
    Critical,
}

/// Why [`Backlog::try_acquire`] refused: the queue is too long, or its length is unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BacklogFull {
    /// The estimated depth is at or above the bound for this priority (or the machine is full
    /// and has not drained to `low` yet).
    Full {
        /// The estimated depth when refused.
        depth: u64,
        /// The bound that applied: `high` for normal work, `high + critical_reserve` for
        /// critical work.
        bound: u64,
    },
    /// The last observed depth is older than `max_staleness`: normal work is refused until
    /// the next [`Backlog::on_depth`].
    Stale {
        /// When the last depth was observed.
        observed_at: Instant,
    },
}

impl core::fmt::Display for BacklogFull {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BacklogFull::Full { depth, bound } => write!(
                f,
                "queue backlog full ({depth} jobs, bound {bound}): retry later (raise `high` or add workers to drain faster)"
            ),
            BacklogFull::Stale { .. } => f.write_str(
                "queue depth unknown (the last observation is stale): retry later (poll the depth more often or raise `max_staleness`)",
            ),
        }
    }
}

impl core::error::Error for BacklogFull {}

/// A transition of a [`Backlog`], for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BacklogEvent {
    /// The estimate reached `high`: normal work is refused.
    Full {
        /// When.
        at: Instant,
        /// The estimate.
        depth: u64,
    },
    /// The estimate drained to `low`: normal work is admitted again.
    Admitting {
        /// When.
        at: Instant,
        /// The estimate.
        depth: u64,
    },
    /// The last observed depth went stale: normal work is refused until the next observation.
    Stale {
        /// When it was noticed.
        at: Instant,
        /// When the depth was last observed.
        observed_at: Instant,
    },
    /// A depth was observed after the last one had gone stale.
    Fresh {
        /// When.
        at: Instant,
        /// The observed depth.
        depth: u64,
    },
}

/// Counters and gauges of a [`Backlog`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct BacklogStats {
    /// The current depth estimate.
    pub depth: u64,
    /// The highest estimate seen.
    pub peak_depth: u64,
    /// Normal admissions.
    pub admitted: u64,
    /// Critical admissions.
    pub admitted_critical: u64,
    /// Refusals because the queue was full (both priorities).
    pub refused_full: u64,
    /// Refusals of normal work because the depth was stale.
    pub refused_stale: u64,
    /// Calls to [`Backlog::on_depth`].
    pub observations: u64,
    /// Jobs reported by [`Backlog::on_enqueued`] (admissions not included).
    pub enqueued: u64,
    /// Jobs reported by [`Backlog::on_dequeued`].
    pub dequeued: u64,
    /// Times the machine became full.
    pub full_transitions: u64,
    /// The drain rate as of the last input, in thousandths of a job per second.
    pub drain_rate_milli: u64,
    /// Whether normal work is refused for depth (between `high` and the drain to `low`).
    pub full: bool,
    /// Whether the last observed depth is stale (as of the last input or timer).
    pub stale: bool,
    /// Events dropped because nobody polled.
    pub events_dropped: u64,
}

/// The drain rate: an EWMA over fixed windows (see the [module docs](self)).
#[derive(Clone, Copy, Debug)]
struct DrainRate {
    window_ns: u64,
    window_start: Instant,
    count: u64,
    /// Thousandths of a job per second.
    rate_milli: u64,
    primed: bool,
}

impl DrainRate {
    fn new(window: Duration, now: Instant) -> DrainRate {
        DrainRate {
            // At least 1 ms by validation (`max(1)` keeps the division safe regardless).
            window_ns: duration_to_nanos(window).max(1),
            window_start: now,
            count: 0,
            rate_milli: 0,
            primed: false,
        }
    }

    /// Closes every window that ended by `now`.
    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.window_start);
        let windows = duration_to_nanos(elapsed) / self.window_ns;
        if windows == 0 {
            return;
        }
        // The closed window's rate, in thousandths of a job per second.
        let sample = u128::from(self.count) * 1_000 * 1_000_000_000 / u128::from(self.window_ns);
        let sample = u64::try_from(sample).unwrap_or(u64::MAX);
        if self.primed {
            self.rate_milli = ewma(self.rate_milli, sample);
        } else {
            self.rate_milli = sample;
            self.primed = true;
        }
        let empty = windows - 1;
        if empty >= DECAY_WINDOWS_TO_ZERO {
            self.rate_milli = 0;
        } else {
            for _ in 0..empty {
                self.rate_milli = ewma(self.rate_milli, 0);
            }
        }
        self.count = 0;
        self.window_start = self
            .window_start
            .saturating_add(Duration::from_nanos(windows.saturating_mul(self.window_ns)));
    }
}

/// `old * 3/4 + sample / 4`, rounding the decay up so a small rate reaches zero.
fn ewma(old: u64, sample: u64) -> u64 {
    let decayed = old - old.div_ceil(4);
    decayed.saturating_add(sample / 4)
}

/// Queue-depth admission. See the [module docs](self) for the contract.
///
/// | group | methods |
/// | --- | --- |
/// | construct | [`new`](Self::new) |
/// | admission | [`try_acquire`](Self::try_acquire) `-> Result<(), Rejected<BacklogFull>>` (nothing to release: an admitted job is counted into the depth) |
/// | inputs | [`on_depth`](Self::on_depth), [`on_enqueued`](Self::on_enqueued), [`on_dequeued`](Self::on_dequeued) |
/// | timer | [`handle_timeout`](Self::handle_timeout), [`poll_timeout`](Self::poll_timeout) |
/// | outputs | [`poll_event`](Self::poll_event) |
/// | getters | [`depth`](Self::depth), [`is_full`](Self::is_full), [`drain_rate_milli`](Self::drain_rate_milli), [`config`](Self::config), [`stats`](Self::stats) |
#[derive(Clone, Debug)]
pub struct Backlog {
    config: BacklogConfig,
    clock: Monotonic,
    depth: u64,
    full: bool,
    /// When the last depth was observed; `None` before the first `on_depth`.
    observed_at: Option<Instant>,
    stale: bool,
    drain: DrainRate,
    stats: BacklogStats,
    events: EventRing<BacklogEvent, EVENT_QUEUE_CAPACITY>,
}

impl Backlog {
    /// An empty backlog (depth 0, admitting, no depth observed yet).
    #[must_use]
    pub fn new(config: BacklogConfig, now: Instant) -> Backlog {
        Backlog {
            config,
            clock: Monotonic::new(now),
            depth: 0,
            full: false,
            observed_at: None,
            stale: false,
            drain: DrainRate::new(config.drain_window, now),
            stats: BacklogStats::default(),
            events: EventRing::new(),
        }
    }

    /// Asks to enqueue one job of `priority`. On `Ok` the job is counted into the depth
    /// estimate (do not also report it with [`on_enqueued`](Self::on_enqueued)); on `Err` do
    /// not enqueue it: the rejection says why and, when the drain rate is known, when to retry.
    pub fn try_acquire(
        &mut self,
        now: Instant,
        priority: Priority,
    ) -> Result<(), Rejected<BacklogFull>> {
        let now = self.advance(now);
        let bound = match priority {
            Priority::Normal => {
                if self.stale {
                    self.stats.refused_stale = self.stats.refused_stale.saturating_add(1);
                    return Err(Rejected {
                        reason: BacklogFull::Stale {
                            // Stale implies an observation was made.
                            observed_at: self.observed_at.unwrap_or(Instant::ZERO),
                        },
                        retry_at: None,
                    });
                }
                self.config.high
            }
            Priority::Critical => self.config.critical_bound(),
        };
        let refused = match priority {
            Priority::Normal => self.full || self.depth >= bound,
            Priority::Critical => self.depth >= bound,
        };
        if refused {
            self.stats.refused_full = self.stats.refused_full.saturating_add(1);
            // The depth at which this request would be admitted.
            let target = match priority {
                Priority::Normal if self.full => self.config.low,
                // `bound >= 1` for both priorities (`high >= 1`).
                _ => bound.saturating_sub(1),
            };
            let excess = self.depth.saturating_sub(target);
            return Err(Rejected {
                reason: BacklogFull::Full {
                    depth: self.depth,
                    bound,
                },
                retry_at: self.drain_eta(now, excess),
            });
        }
        match priority {
            Priority::Normal => self.stats.admitted = self.stats.admitted.saturating_add(1),
            Priority::Critical => {
                self.stats.admitted_critical = self.stats.admitted_critical.saturating_add(1);
            }
        }
        self.set_depth(now, self.depth.saturating_add(1));
        Ok(())
    }

    /// An observed queue length (e.g. Redis `LLEN`), replacing the estimate. A drop from the
    /// estimate counts as drained work for the drain rate. A `now` older than one already seen
    /// is clamped (the observation is taken as made at the newest instant seen).
    pub fn on_depth(&mut self, now: Instant, depth: u64) {
        let now = self.advance(now);
        self.stats.observations = self.stats.observations.saturating_add(1);
        let drained = self.depth.saturating_sub(depth);
        self.drain.count = self.drain.count.saturating_add(drained);
        self.observed_at = Some(now);
        if self.stale {
            self.stale = false;
            self.stats.stale = false;
            self.push_event(BacklogEvent::Fresh { at: now, depth });
        }
        self.set_depth(now, depth);
    }

    /// `n` jobs enqueued without [`try_acquire`](Self::try_acquire) (retries re-enqueued by
    /// workers, other producers this process sees).
    pub fn on_enqueued(&mut self, now: Instant, n: u64) {
        let now = self.advance(now);
        self.stats.enqueued = self.stats.enqueued.saturating_add(n);
        self.set_depth(now, self.depth.saturating_add(n));
    }

    /// `n` jobs taken off the queue (by workers this process sees); they feed the drain rate.
    pub fn on_dequeued(&mut self, now: Instant, n: u64) {
        let now = self.advance(now);
        self.stats.dequeued = self.stats.dequeued.saturating_add(n);
        self.drain.count = self.drain.count.saturating_add(n);
        self.set_depth(now, self.depth.saturating_sub(n));
    }

    /// Marks the observed depth stale once it is `max_staleness` old. Early or spurious calls
    /// are no-ops.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
    }

    /// When the observed depth goes stale: `None` before the first observation, while stale,
    /// or when that instant is past the end of the clock.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.stale {
            return None;
        }
        self.observed_at
            .and_then(|t| never_at_the_end(t.saturating_add(self.config.max_staleness)))
    }

    /// The next transition, oldest first.
    pub fn poll_event(&mut self) -> Option<BacklogEvent> {
        self.events.pop()
    }

    /// The current depth estimate.
    #[must_use]
    pub const fn depth(&self) -> u64 {
        self.depth
    }

    /// Whether normal work is refused for depth (from reaching `high` until the drain to `low`).
    #[must_use]
    pub const fn is_full(&self) -> bool {
        self.full
    }

    /// Whether the last observed depth is stale (as of the last input or timer).
    #[must_use]
    pub const fn is_stale(&self) -> bool {
        self.stale
    }

    /// The drain rate as of the last input, in thousandths of a job per second (`0`: none
    /// measured, or the queue stalled).
    #[must_use]
    pub const fn drain_rate_milli(&self) -> u64 {
        self.drain.rate_milli
    }

    /// The configuration.
    #[must_use]
    pub const fn config(&self) -> &BacklogConfig {
        &self.config
    }

    /// A snapshot of the counters.
    #[must_use]
    pub fn stats(&self) -> BacklogStats {
        let mut s = self.stats;
        s.depth = self.depth;
        s.full = self.full;
        s.stale = self.stale;
        s.drain_rate_milli = self.drain.rate_milli;
        s
    }

    /// Clamps `now`, rolls the drain windows and checks staleness.
    fn advance(&mut self, now: Instant) -> Instant {
        let now = self.clock.observe(now);
        self.drain.roll(now);
        if !self.stale {
            if let Some(at) = self.poll_timeout() {
                if now >= at {
                    self.stale = true;
                    self.stats.stale = true;
                    let observed_at = self.observed_at.unwrap_or(Instant::ZERO);
                    self.push_event(BacklogEvent::Stale {
                        at: now,
                        observed_at,
                    });
                }
            }
        }
        now
    }

    /// Sets the estimate and applies the hysteresis.
    fn set_depth(&mut self, now: Instant, depth: u64) {
        self.depth = depth;
        self.stats.peak_depth = self.stats.peak_depth.max(depth);
        if self.full {
            if depth <= self.config.low {
                self.full = false;
                self.push_event(BacklogEvent::Admitting { at: now, depth });
            }
        } else if depth >= self.config.high {
            self.full = true;
            self.stats.full_transitions = self.stats.full_transitions.saturating_add(1);
            self.push_event(BacklogEvent::Full { at: now, depth });
        }
    }

    /// `now` plus the time to drain `excess` jobs at the measured rate; `None` when the rate
    /// is zero or the instant is past the end of the clock.
    fn drain_eta(&self, now: Instant, excess: u64) -> Option<Instant> {
        let rate = self.drain.rate_milli;
        if rate == 0 {
            return None;
        }
        // excess jobs / (rate / 1000 jobs per s) = excess * 10^12 / rate ns, rounded up.
        let ns = (u128::from(excess) * 1_000_000_000_000).div_ceil(u128::from(rate));
        let ns = u64::try_from(ns).unwrap_or(u64::MAX);
        never_at_the_end(now.saturating_add(Duration::from_nanos(ns)))
    }

    fn push_event(&mut self, event: BacklogEvent) {
        if self.events.push(event).is_some() {
            self.stats.events_dropped = self.stats.events_dropped.saturating_add(1);
        }
    }
}
