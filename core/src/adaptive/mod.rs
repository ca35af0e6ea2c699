//! Adaptive concurrency: a limit that follows the service's capacity instead of a guessed number.
//!
//! # What it protects against
//!
//! Every fixed concurrency limit is a guess, and capacity moves with deploys, noisy neighbours
//! and slow dependencies: too low wastes servers, too high lets a queue build until every
//! request times out. This machine measures instead. It is fed one sample per finished request
//! (its round-trip time, its outcome and how many requests were in flight) and moves a limit
//! the caller enforces (a semaphore, the bulkhead, the accept guard). It is built to avoid the
//! known failures of the controllers it learns from:
//!
//! - **Vegas stuck at its minimum after load subsides** (Netflix/concurrency-limits#35,
//!   go-concurrency-limits#117): a stale minimum RTT makes every later RTT look like a queue.
//!   Here the minimum RTT only goes up through a measurement on a drained service (a *probe*),
//!   started when the latency stops answering to cuts of the limit (three cutting windows that
//!   shrank the limit by a quarter without lowering the RTT by a tenth), when the limit sits at
//!   its minimum with an apparent queue for three windows, and on a timer.
//! - **Gradient2 creeping upward under modest overload with a queue** (discussion on Netflix
//!   PR #134): its long-term RTT average follows the queued RTT, so the queue becomes the new
//!   normal. Here the reference is a *minimum* that only a drained window can raise.
//! - **Slow ramp-up**: a slow start doubles the limit every four round trips until the first
//!   sign of a queue; after that, growth steps double for each consecutive window without a
//!   queue, so a capacity that comes back is found in a few windows, not one request per
//!   window.
//! - **Over-reaction to latency noise** (why Envoy added a 25 % buffer over its minimum RTT):
//!   decisions use the *mean* RTT of a whole window, and the minimum RTT is the lowest window
//!   mean (over windows of at least [`min_samples`](AdaptiveConfigBuilder::min_samples)), not
//!   the luckiest single request; a dead band between half the queue target and the target
//!   holds the limit still.
//!
//! # The contract
//!
//! - [`Adaptive::on_sample`]`(now, rtt, outcome, in_flight)` once per finished request:
//!   `in_flight` is the number of requests in flight when it started, itself included.
//!   Samples are aggregated into windows; a window closes with the first sample at least
//!   `max(window, 2 × min RTT)` after it opened (during the slow start, `min(window, 4 × min
//!   RTT)`), and only then may the limit move.
//! - [`Adaptive::limit`] is the limit to enforce. It is always within
//!   `[min_limit, max_limit]`, whatever the input: zero or `Duration::MAX` RTTs, `in_flight`
//!   of 0 or `u32::MAX`, time going backwards (clamped to the newest `now` seen).
//! - The periodic minimum-RTT re-measurement is a timer: call [`Adaptive::handle_timeout`] at
//!   [`Adaptive::poll_timeout`]. A probe (timer or suspicion) holds the limit at most at half
//!   its value, and at three quarters of the servers the last window kept busy, for two
//!   windows (the first lets any queue drain, the second is measured); that window's mean RTT
//!   becomes the minimum RTT and the limit before the probe comes back.
//! - Every input returns an [`AdaptiveDecision`]: `Resize` when the limit to enforce changed.
//!   [`Adaptive::poll_event`] reports the changes and their causes.
//!
//! # The controllers
//!
//! All three share the windows and the minimum RTT. With `m` the window's mean RTT, `b` the
//! minimum RTT and `n` the mean `in_flight` of the window, the queue estimate is
//! `q = n × (1 − b / m)` (Little's law: the share of the in-flight requests that are waiting).
//! A window whose largest `in_flight` is below half the limit is *application-limited*: it says
//! nothing about capacity, so it never raises the limit.
//!
//! - [`Algorithm::Gradient`] (the **default**): keep `q` near a target of 5 % of the limit (at
//!   least one request). Above the target, remove half the excess per window (never more than
//!   half the limit); below half the target, grow (slow start, then doubling steps). Dropped or
//!   timed-out requests multiply the limit by 0.9.
//! - [`Algorithm::Vegas`]: Netflix's `VegasLimit` steps on the same robust `q`: grow by
//!   `6 log10(limit)` when `q <= log10(limit)`, by `log10(limit)` when `q < 3 log10(limit)`,
//!   shrink by `log10(limit)` when `q > 6 log10(limit)`.
//! - [`Algorithm::Aimd`]: Netflix's `AIMDLimit` with a slow start: `+1` per limit-bound window,
//!   `× 0.9` on loss (a drop, a timeout, or a success slower than its `timeout`).
//!
//! **Why the gradient is the default:** it is the only one of the three whose step is
//! proportional to the error, so it converges in a handful of windows from any distance (AIMD
//! needs one window per request of distance, Vegas one per `log10(limit)`), and it reacts to
//! latency before anything is lost (AIMD only sees loss). `adaptive-sim` in keel-benches
//! measures all three beside Netflix's and Envoy's controllers.
//!
//! # Defaults and their sources
//!
//! | setting | default | source |
//! | --- | --- | --- |
//! | `min_limit` / `max_limit` | 1 / 1000 | Netflix `minLimit`, Envoy `max_concurrency_limit` |
//! | `initial_limit` | 20 | Netflix `initialLimit` |
//! | `window` | 100 ms (and at least 2 min RTTs) | Envoy's `concurrency_update_interval` example |
//! | `probe_interval` | 60 s | Envoy `min_rtt_calc_params.interval` |
//! | `min_samples` | 10 | keel: a 10-sample mean cuts uniform ±25 % noise to about ±5 % |
//! | gradient queue target / gain | 5 % / 50 % | keel: within 10 % of Little's law, half-steps |
//! | backoff on loss | 0.9 | Netflix `AIMDLimit` `backoffRatio` |
//! | Vegas alpha / beta | 3 / 6 × log10(limit) | Netflix `VegasLimit` |
//! | AIMD timeout | 5 s | Netflix `AIMDLimit` `timeout` |
//!
//! The machine allocates nothing, never panics and uses only `core` floating-point arithmetic
//! (no `libm`): every value it computes is clamped back into range before it is stored.
//!
//! # Example
//!
//! ```
//! use core::time::Duration;
//! use keel_core::adaptive::{Adaptive, AdaptiveConfig, AdaptiveDecision, SampleOutcome};
//! use keel_core::Instant;
//!
//! let config = AdaptiveConfig::builder().initial_limit(1).build()?;
//! let mut now = Instant::from_secs(1);
//! let mut limiter = Adaptive::new(config, now);
//! assert_eq!(limiter.limit(), 1);
//!
//! // A service with 40 servers and a 10 ms service time: no queue below 40 in flight.
//! for _ in 0..40 {
//!     let limit = limiter.limit();
//!     let in_flight = limit;
//!     let queue = in_flight.saturating_sub(40);
//!     let rtt = Duration::from_millis(10) + Duration::from_millis(10) * queue / 40;
//!     // One window (100 ms) of samples at this concurrency.
//!     for _ in 0..10 {
//!         now += Duration::from_millis(10);
//!         if let AdaptiveDecision::Resize { limit } = limiter.on_sample(now, rtt, SampleOutcome::Success, in_flight) {
//!             assert!((1..=1000).contains(&limit)); // resize the semaphore here
//!         }
//!     }
//! }
//! // Little's law says 40; the controller keeps a small queue on top.
//! assert!((40..=44).contains(&limiter.limit()), "{}", limiter.limit());
//! # Ok::<(), keel_core::ConfigError>(())
//! ```

mod config;

use core::time::Duration;

pub use config::{
    AdaptiveConfig, AdaptiveConfigBuilder, AimdParams, Algorithm, GradientParams, VegasParams,
    DEFAULT_INITIAL_LIMIT, DEFAULT_MAX_LIMIT, DEFAULT_MIN_LIMIT, DEFAULT_MIN_SAMPLES,
    DEFAULT_PROBE_INTERVAL, DEFAULT_WINDOW,
};

use crate::time::{duration_to_nanos, Instant, Monotonic};

/// How many events the machine queues before dropping the oldest.
pub const EVENT_QUEUE_CAPACITY: usize = 8;

/// Cutting windows in a row after which an unchanged RTT means the minimum RTT is stale.
const STALE_AFTER_CUTS: u32 = 3;
/// Windows at the minimum limit, with a queue estimate, after which the minimum RTT is stale.
const STALE_AT_MIN: u32 = 3;

/// How a request ended, as the controller needs to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SampleOutcome {
    /// The request succeeded (or failed for a reason unrelated to load, e.g. a 404).
    Success,
    /// The service shed it because it was overloaded (a 503, a rejected connection).
    Dropped,
    /// The caller gave up waiting for it. Its `rtt` is the time waited.
    TimedOut,
}

/// The answer to every input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[must_use = "resize the enforced limit on `Resize`"]
pub enum AdaptiveDecision {
    /// The limit to enforce is unchanged.
    Unchanged,
    /// Enforce this limit from now on (already within `[min_limit, max_limit]`).
    Resize {
        /// The new limit.
        limit: u32,
    },
}

/// Why the limit changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LimitCause {
    /// The controller grew the limit (no queue, limit-bound).
    Increase,
    /// The controller cut the limit (a queue above target).
    Decrease,
    /// Requests were dropped or timed out.
    Loss,
    /// The minimum-RTT re-measurement halved the limit.
    ProbeStarted,
    /// The minimum-RTT re-measurement ended and restored the limit.
    ProbeEnded,
}

/// Why the minimum RTT changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MinRttCause {
    /// A window was faster than the minimum so far (or it is the first estimate).
    Lower,
    /// A re-measurement on a drained service (see [`ProbeReason`]).
    Probe,
}

/// Why a minimum-RTT re-measurement started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProbeReason {
    /// The periodic timer (see [`AdaptiveConfigBuilder::probe_interval`]).
    Timer,
    /// The RTT did not answer to cuts of the limit: the minimum RTT may be stale (the
    /// service itself got slower).
    Unresponsive,
    /// The limit sat at its minimum with an apparent queue: the minimum RTT may be stale.
    StuckAtMin,
}

/// A change, for logs and metrics. See [`Adaptive::poll_event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AdaptiveEvent {
    /// The limit to enforce changed.
    LimitChanged {
        /// The old limit.
        from: u32,
        /// The new limit.
        to: u32,
        /// Why.
        cause: LimitCause,
    },
    /// A minimum-RTT re-measurement started: the limit is held down for two windows.
    ProbeStarted {
        /// Why.
        reason: ProbeReason,
        /// The limit held during the measurement.
        limit: u32,
    },
    /// The minimum RTT (the no-queue reference) changed.
    MinRttChanged {
        /// The old estimate, if any.
        from: Option<Duration>,
        /// The new estimate.
        to: Duration,
        /// Why.
        cause: MinRttCause,
    },
}

/// Counters and the current estimates. See [`Adaptive::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct AdaptiveStats {
    /// The limit to enforce.
    pub limit: u32,
    /// The minimum-RTT estimate, once there is one.
    pub min_rtt: Option<Duration>,
    /// Samples seen.
    pub samples: u64,
    /// Samples that were [`SampleOutcome::Dropped`].
    pub dropped: u64,
    /// Samples that were [`SampleOutcome::TimedOut`].
    pub timed_out: u64,
    /// Windows closed.
    pub windows: u64,
    /// Windows that raised the limit.
    pub increases: u64,
    /// Windows that lowered the limit (loss included).
    pub decreases: u64,
    /// Minimum-RTT re-measurements started (for any reason).
    pub probes: u64,
    /// Re-measurements started because the minimum RTT looked stale (not by the timer).
    pub stale_min_rtt: u64,
    /// `true` during the slow start.
    pub slow_start: bool,
    /// `true` while a minimum-RTT re-measurement holds the limit down.
    pub probing: bool,
    /// Events dropped because nobody polled them.
    pub events_dropped: u64,
}

/// A fixed ring of events: no allocation, the oldest is dropped when full.
#[derive(Clone, Debug)]
struct Events {
    buf: [Option<AdaptiveEvent>; EVENT_QUEUE_CAPACITY],
    head: usize,
    len: usize,
}

impl Events {
    const fn new() -> Self {
        Events {
            buf: [None; EVENT_QUEUE_CAPACITY],
            head: 0,
            len: 0,
        }
    }

    /// Returns `true` if an older event was dropped to make room.
    fn push(&mut self, ev: AdaptiveEvent) -> bool {
        let dropped = self.len == EVENT_QUEUE_CAPACITY;
        if dropped {
            self.head = (self.head + 1) % EVENT_QUEUE_CAPACITY;
            self.len -= 1;
        }
        let tail = (self.head + self.len) % EVENT_QUEUE_CAPACITY;
        if let Some(slot) = self.buf.get_mut(tail) {
            *slot = Some(ev);
            self.len += 1;
        }
        dropped
    }

    fn pop(&mut self) -> Option<AdaptiveEvent> {
        if self.len == 0 {
            return None;
        }
        let ev = self.buf.get_mut(self.head).and_then(Option::take);
        self.head = (self.head + 1) % EVENT_QUEUE_CAPACITY;
        self.len -= 1;
        ev
    }
}

/// The samples of the open window.
#[derive(Clone, Copy, Debug)]
struct Window {
    start: Instant,
    count: u64,
    rtt_sum: u128,
    /// Sum of squared RTTs (ns²), for the standard error of the window's mean.
    rtt_sq_sum: f64,
    in_flight_sum: u128,
    max_in_flight: u32,
    losses: u64,
}

impl Window {
    const fn new(start: Instant) -> Window {
        Window {
            start,
            count: 0,
            rtt_sum: 0,
            rtt_sq_sum: 0.0,
            in_flight_sum: 0,
            max_in_flight: 0,
            losses: 0,
        }
    }
}

/// The periodic minimum-RTT re-measurement.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Probe {
    /// Not measuring; the next one is due then (never if `None`).
    Idle { due: Option<Instant> },
    /// Measuring: `windows_left` windows to go, then restore `restore`.
    Measuring { windows_left: u8, restore: f64 },
}

/// The adaptive concurrency limit (see the [module docs](self)).
///
/// Methods by group:
/// - getters: [`limit`](Self::limit), [`min_rtt`](Self::min_rtt), [`stats`](Self::stats),
///   [`config`](Self::config);
/// - inputs: [`on_sample`](Self::on_sample), [`handle_timeout`](Self::handle_timeout);
/// - outputs: [`poll_timeout`](Self::poll_timeout), then [`poll_event`](Self::poll_event)
///   until `None`.
///
/// ```
/// use core::time::Duration;
/// use keel_core::adaptive::{Adaptive, AdaptiveConfig, AdaptiveDecision, SampleOutcome};
/// use keel_core::Instant;
///
/// let config = AdaptiveConfig::builder().initial_limit(100).build()?;
/// let mut now = Instant::from_secs(1);
/// let mut limiter = Adaptive::new(config, now);
/// assert_eq!(limiter.limit(), 100);
///
/// // A window (100 ms) of requests at the limit that the dependency dropped: the limit is
/// // cut by the loss factor (0.9), and the decision says to resize what enforces it.
/// let mut resized = None;
/// for _ in 0..11 {
///     now += Duration::from_millis(10);
///     let rtt = Duration::from_millis(10);
///     if let AdaptiveDecision::Resize { limit } =
///         limiter.on_sample(now, rtt, SampleOutcome::Dropped, 100)
///     {
///         resized = Some(limit);
///     }
/// }
/// assert_eq!(resized, Some(90));
/// assert_eq!(limiter.limit(), 90);
/// assert_eq!(limiter.stats().dropped, 11);
/// # Ok::<(), keel_core::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Adaptive {
    config: AdaptiveConfig,
    clock: Monotonic,
    /// The exact limit; always finite and within `[min_limit, max_limit]`.
    limit: f64,
    /// The minimum RTT in nanoseconds (at least 1) and whether a full window measured it.
    min_rtt: Option<(u64, bool)>,
    window: Window,
    slow_start: bool,
    /// The next growth step (doubles per window without a queue).
    step: f64,
    cuts: u32,
    cuts_from_limit: f64,
    cuts_from_rtt: f64,
    at_min: u32,
    /// Servers the last window kept busy (`in_flight × min RTT / RTT`).
    busy: f64,
    probe: Probe,
    stats: AdaptiveStats,
    events: Events,
}

impl Adaptive {
    /// A controller starting at `initial_limit`, in slow start.
    #[must_use]
    pub fn new(config: AdaptiveConfig, now: Instant) -> Adaptive {
        let due = config.probe_interval.map(|p| now.saturating_add(p));
        let limit = f64::from(config.initial_limit);
        // Vegas has no slow start: its own steps are its ramp.
        let slow_start = !matches!(config.algorithm, Algorithm::Vegas(_));
        Adaptive {
            config,
            clock: Monotonic::new(now),
            limit,
            min_rtt: None,
            window: Window::new(now),
            slow_start,
            step: 1.0,
            cuts: 0,
            cuts_from_limit: limit,
            cuts_from_rtt: 0.0,
            at_min: 0,
            busy: limit,
            probe: Probe::Idle { due },
            stats: AdaptiveStats {
                limit: config.initial_limit,
                slow_start,
                ..AdaptiveStats::default()
            },
            events: Events::new(),
        }
    }

    /// The configuration.
    #[must_use]
    pub const fn config(&self) -> &AdaptiveConfig {
        &self.config
    }

    /// The limit to enforce, within `[min_limit, max_limit]`.
    #[must_use]
    pub const fn limit(&self) -> u32 {
        self.stats.limit
    }

    /// The minimum-RTT estimate (the no-queue reference), once there is one.
    #[must_use]
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt.map(|(n, _)| Duration::from_nanos(n))
    }

    /// Counters and estimates.
    #[must_use]
    pub const fn stats(&self) -> AdaptiveStats {
        self.stats
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<AdaptiveEvent> {
        self.events.pop()
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has work: the next minimum-RTT
    /// re-measurement. `None` while one runs (it ends with the samples, not on a timer) or
    /// when the timer is off.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.probe {
            Probe::Idle { due } => due,
            Probe::Measuring { .. } => None,
        }
    }

    /// Starts the minimum-RTT re-measurement if it is due; early calls change nothing.
    pub fn handle_timeout(&mut self, now: Instant) -> AdaptiveDecision {
        let now = self.clock.observe(now);
        let Probe::Idle { due: Some(due) } = self.probe else {
            return AdaptiveDecision::Unchanged;
        };
        if now < due {
            return AdaptiveDecision::Unchanged;
        }
        let before = self.stats.limit;
        self.begin_probe(now, ProbeReason::Timer);
        self.announce(before, LimitCause::ProbeStarted)
    }

    /// Holds the limit down for two windows: the first drains the queue, the second is
    /// measured. The held limit is three quarters of the servers the last window kept busy
    /// (`in_flight × min RTT / RTT`, Little's law), at most half the limit, so a queue drains
    /// even when the minimum RTT is stale.
    fn begin_probe(&mut self, now: Instant, reason: ProbeReason) {
        self.stats.probes = self.stats.probes.saturating_add(1);
        if reason != ProbeReason::Timer {
            self.stats.stale_min_rtt = self.stats.stale_min_rtt.saturating_add(1);
        }
        self.probe = Probe::Measuring {
            windows_left: 2,
            restore: self.limit,
        };
        self.stats.probing = true;
        self.cuts = 0;
        self.at_min = 0;
        // A fresh window: the samples before the cut say nothing about the drained service.
        self.window = Window::new(now);
        let held = (self.limit * 0.5).min(self.busy * 0.75);
        self.set_limit(held);
        self.push(AdaptiveEvent::ProbeStarted {
            reason,
            limit: self.stats.limit,
        });
    }

    /// One finished request: its round-trip time, how it ended, and how many requests were in
    /// flight when it started (itself included). Closes the window when it is due.
    pub fn on_sample(
        &mut self,
        now: Instant,
        rtt: Duration,
        outcome: SampleOutcome,
        in_flight: u32,
    ) -> AdaptiveDecision {
        let now = self.clock.observe(now);
        let rtt = duration_to_nanos(rtt).max(1);
        let s = &mut self.stats;
        s.samples = s.samples.saturating_add(1);
        let mut loss = false;
        match outcome {
            SampleOutcome::Success => {
                if let Algorithm::Aimd(a) = self.config.algorithm {
                    loss = rtt > duration_to_nanos(a.timeout);
                }
            }
            SampleOutcome::Dropped => {
                s.dropped = s.dropped.saturating_add(1);
                loss = true;
            }
            SampleOutcome::TimedOut => {
                s.timed_out = s.timed_out.saturating_add(1);
                loss = true;
            }
        }
        let w = &mut self.window;
        w.count = w.count.saturating_add(1);
        w.rtt_sum = w.rtt_sum.saturating_add(u128::from(rtt));
        w.rtt_sq_sum += (rtt as f64) * (rtt as f64);
        w.in_flight_sum = w.in_flight_sum.saturating_add(u128::from(in_flight));
        w.max_in_flight = w.max_in_flight.max(in_flight);
        if loss {
            w.losses = w.losses.saturating_add(1);
        }
        let length = self.window_length();
        if now.saturating_duration_since(self.window.start) < length {
            return AdaptiveDecision::Unchanged;
        }
        let closed = core::mem::replace(&mut self.window, Window::new(now));
        self.close_window(&closed)
    }

    /// `max(window, 2 × min RTT)`; in slow start, once a minimum RTT is known,
    /// `min(window, 4 × min RTT)` (the limit then doubles every four round trips: TCP's slow
    /// start doubles every one, but its feedback is not a mean over a window).
    fn window_length(&self) -> Duration {
        let rtt = self.min_rtt.map_or(0, |(n, _)| n);
        let rtt2 = self
            .min_rtt
            .map(|_| Duration::from_nanos(rtt.saturating_mul(2)));
        match rtt2 {
            Some(_) if self.slow_start => {
                Duration::from_nanos(rtt.saturating_mul(4)).min(self.config.window)
            }
            Some(rtt2) => self.config.window.max(rtt2),
            None => self.config.window,
        }
    }

    fn close_window(&mut self, w: &Window) -> AdaptiveDecision {
        if w.count == 0 {
            return AdaptiveDecision::Unchanged;
        }
        self.stats.windows = self.stats.windows.saturating_add(1);
        let count = u128::from(w.count);
        // At least 1 ns, at most u64::MAX: the sum is of u64 values, so the mean fits.
        let mean = u64::try_from(w.rtt_sum / count).unwrap_or(u64::MAX).max(1);
        let mean_in_flight = (w.in_flight_sum / count) as f64;
        let full = w.count >= u64::from(self.config.min_samples);
        // Two standard errors of the mean: a difference smaller than that is noise.
        let m = mean as f64;
        let variance = (w.rtt_sq_sum / count as f64 - m * m).max(0.0);
        let noise = 2.0 * sqrt(variance / count as f64);

        if let Probe::Measuring {
            windows_left,
            restore,
        } = self.probe
        {
            if windows_left > 1 {
                self.probe = Probe::Measuring {
                    windows_left: windows_left - 1,
                    restore,
                };
                return AdaptiveDecision::Unchanged;
            }
            self.set_min_rtt(mean, full, MinRttCause::Probe);
            let due = self
                .config
                .probe_interval
                .map(|p| self.clock.get().saturating_add(p));
            self.probe = Probe::Idle { due };
            self.stats.probing = false;
            let before = self.stats.limit;
            self.set_limit(restore);
            return self.announce(before, LimitCause::ProbeEnded);
        }

        // The minimum RTT: the first window's mean, replaced by the first full window's, then
        // lowered only by a window whose mean is lower by more than its noise (to the top of
        // that window's noise band, so that the luckiest of many windows does not set it).
        match self.min_rtt {
            None => self.set_min_rtt(mean, full, MinRttCause::Lower),
            Some((b, was_full)) => {
                if !was_full && (full || mean < b) {
                    self.set_min_rtt(mean, full, MinRttCause::Lower);
                } else if full && m + noise < b as f64 {
                    // `m + noise < b <= u64::MAX`, so the cast cannot saturate.
                    self.set_min_rtt((m + noise) as u64, true, MinRttCause::Lower);
                }
            }
        }
        let b = self.min_rtt.map_or(mean, |(b, _)| b) as f64;
        // Only the part of the RTT above the noise band counts as a queue.
        let queued_rtt = (m - noise).max(b);
        let queue = (mean_in_flight * (1.0 - b / queued_rtt)).max(0.0);
        self.busy = mean_in_flight * (b / m);
        let limit = self.limit;
        let limited = f64::from(w.max_in_flight) * 2.0 >= limit;
        let before = self.stats.limit;

        let (next, cause) = if w.losses > 0 {
            let backoff = match self.config.algorithm {
                Algorithm::Gradient(g) => g.backoff_percent,
                Algorithm::Vegas(v) => v.backoff_percent,
                Algorithm::Aimd(a) => a.backoff_percent,
            };
            (limit * f64::from(backoff) / 100.0, Some(LimitCause::Loss))
        } else {
            match self.config.algorithm {
                Algorithm::Gradient(g) => self.gradient(g, queue, limited),
                Algorithm::Vegas(v) => vegas(v, limit, queue, limited),
                Algorithm::Aimd(a) => {
                    if !limited {
                        (limit, None)
                    } else if self.slow_start {
                        (limit * 2.0, Some(LimitCause::Increase))
                    } else {
                        (limit + f64::from(a.increase), Some(LimitCause::Increase))
                    }
                }
            }
        };
        if matches!(cause, Some(LimitCause::Loss | LimitCause::Decrease)) {
            self.slow_start = false;
            self.stats.slow_start = false;
            self.step = 1.0;
        }
        self.set_limit(next);

        // Is the minimum RTT stale? Only the latency-driven controllers care.
        let mut cause = cause;
        if !matches!(self.config.algorithm, Algorithm::Aimd(_)) {
            if let Some(reason) = self.check_stale(cause, limit, mean, queue) {
                self.begin_probe(self.clock.get(), reason);
                cause = Some(LimitCause::ProbeStarted);
            }
        }

        match cause {
            Some(LimitCause::Increase) => {
                self.stats.increases = self.stats.increases.saturating_add(1);
            }
            Some(LimitCause::Decrease | LimitCause::Loss) => {
                self.stats.decreases = self.stats.decreases.saturating_add(1);
            }
            _ => {}
        }
        match cause {
            Some(cause) => self.announce(before, cause),
            None => AdaptiveDecision::Unchanged,
        }
    }

    fn gradient(
        &mut self,
        g: GradientParams,
        queue: f64,
        limited: bool,
    ) -> (f64, Option<LimitCause>) {
        let limit = self.limit;
        let target = (limit * f64::from(g.queue_target_percent) / 100.0).max(1.0);
        if queue > target {
            let cut = f64::from(g.gain_percent) / 100.0 * (queue - target);
            ((limit - cut).max(limit * 0.5), Some(LimitCause::Decrease))
        } else if !limited {
            (limit, None)
        } else if queue <= target * 0.5 {
            if self.slow_start {
                (limit * 2.0, Some(LimitCause::Increase))
            } else {
                let step = self.step;
                self.step = (step * 2.0).min(limit.max(1.0));
                (limit + step, Some(LimitCause::Increase))
            }
        } else {
            self.step = 1.0;
            (limit, None)
        }
    }

    /// Whether the minimum RTT looks stale. `before` is the limit before this window's change.
    fn check_stale(
        &mut self,
        cause: Option<LimitCause>,
        before: f64,
        mean: u64,
        queue: f64,
    ) -> Option<ProbeReason> {
        let m = mean as f64;
        if cause == Some(LimitCause::Decrease) {
            if self.cuts == 0 {
                self.cuts_from_limit = before;
                self.cuts_from_rtt = m;
            }
            self.cuts = self.cuts.saturating_add(1);
            if self.cuts >= STALE_AFTER_CUTS
                && self.limit <= 0.75 * self.cuts_from_limit
                && m >= 0.9 * self.cuts_from_rtt
            {
                return Some(ProbeReason::Unresponsive);
            }
        } else {
            self.cuts = 0;
        }
        let at_min = self.limit <= f64::from(self.config.min_limit);
        if at_min && queue > 0.5 {
            self.at_min = self.at_min.saturating_add(1);
            if self.at_min >= STALE_AT_MIN {
                return Some(ProbeReason::StuckAtMin);
            }
        } else {
            self.at_min = 0;
        }
        None
    }

    fn set_min_rtt(&mut self, nanos: u64, full: bool, cause: MinRttCause) {
        let from = self.min_rtt.map(|(n, _)| Duration::from_nanos(n));
        let nanos = nanos.max(1);
        self.min_rtt = Some((nanos, full));
        let to = Duration::from_nanos(nanos);
        self.stats.min_rtt = Some(to);
        if from != Some(to) {
            self.push(AdaptiveEvent::MinRttChanged { from, to, cause });
        }
    }

    /// Stores `next` clamped into `[min_limit, max_limit]` (a non-finite value keeps the old
    /// limit).
    fn set_limit(&mut self, next: f64) {
        let min = f64::from(self.config.min_limit);
        let max = f64::from(self.config.max_limit);
        let next = if next.is_finite() { next } else { self.limit };
        self.limit = next.clamp(min, max);
        // `as` saturates and the value is within [min, max] ⊂ u32.
        self.stats.limit = (self.limit as u32).clamp(self.config.min_limit, self.config.max_limit);
    }

    fn announce(&mut self, before: u32, cause: LimitCause) -> AdaptiveDecision {
        let to = self.stats.limit;
        if to == before {
            return AdaptiveDecision::Unchanged;
        }
        self.push(AdaptiveEvent::LimitChanged {
            from: before,
            to,
            cause,
        });
        AdaptiveDecision::Resize { limit: to }
    }

    fn push(&mut self, ev: AdaptiveEvent) {
        if self.events.push(ev) {
            self.stats.events_dropped = self.stats.events_dropped.saturating_add(1);
        }
    }
}

/// The square root by Newton's method (`core` has no `f64::sqrt` without `std`); 0 for
/// anything not positive and finite except `+inf`.
fn sqrt(x: f64) -> f64 {
    if x == f64::INFINITY {
        return x;
    }
    if x.is_nan() || x <= 0.0 || !x.is_finite() {
        return 0.0;
    }
    // Halving the exponent gives a first guess within a factor of 1.5; each step doubles the
    // correct digits.
    let mut y = f64::from_bits((x.to_bits() >> 1) + (1023u64 << 51));
    for _ in 0..6 {
        y = 0.5 * (y + x / y);
    }
    y
}

/// `max(1, floor(log10(limit)))`, as Netflix's `Log10RootFunction` table.
fn log10_floor(limit: f64) -> f64 {
    let mut n = limit as u64;
    let mut lg = 0u32;
    while n >= 10 {
        n /= 10;
        lg += 1;
    }
    f64::from(lg.max(1))
}

fn vegas(v: VegasParams, limit: f64, queue: f64, limited: bool) -> (f64, Option<LimitCause>) {
    let lg = log10_floor(limit);
    let alpha = f64::from(v.alpha) * lg;
    let beta = f64::from(v.beta) * lg;
    if queue > beta {
        (limit - lg, Some(LimitCause::Decrease))
    } else if !limited {
        (limit, None)
    } else if queue <= lg {
        (limit + beta, Some(LimitCause::Increase))
    } else if queue < alpha {
        (limit + lg, Some(LimitCause::Increase))
    } else {
        (limit, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqrt_is_exact_enough() {
        for x in [1e-9, 0.25, 2.0, 1e6, 1e14, 3.4e38, f64::MAX] {
            let y = sqrt(x);
            // `y / (x / y)` rather than `y * y / x`: `y * y` overflows near `f64::MAX`.
            assert!((y / (x / y) - 1.0).abs() < 1e-12, "{x} {y}");
        }
        assert_eq!(sqrt(0.0), 0.0);
        assert_eq!(sqrt(-1.0), 0.0);
        assert_eq!(sqrt(f64::NAN), 0.0);
        assert_eq!(sqrt(f64::INFINITY), f64::INFINITY);
    }

    #[test]
    fn log10_floor_matches_netflix_table() {
        assert_eq!(log10_floor(0.0), 1.0);
        assert_eq!(log10_floor(9.9), 1.0);
        assert_eq!(log10_floor(100.0), 2.0);
        assert_eq!(log10_floor(1000.0), 3.0);
        assert_eq!(log10_floor(f64::MAX), 19.0);
    }

    #[test]
    fn events_ring_drops_oldest() {
        let mut e = Events::new();
        for i in 0..(EVENT_QUEUE_CAPACITY as u32 + 2) {
            let _ = e.push(AdaptiveEvent::LimitChanged {
                from: i,
                to: i + 1,
                cause: LimitCause::Increase,
            });
        }
        assert!(matches!(
            e.pop(),
            Some(AdaptiveEvent::LimitChanged { from: 2, .. })
        ));
    }
}
