//! Circuit breaker: stop calling a dependency that is failing or slow, and probe it back.
//!
//! # What it protects against
//!
//! A dependency that fails or hangs turns every caller into a waiting task holding a
//! connection, a worker and memory: failures cascade. A breaker watches the outcomes of the
//! calls it admitted and, once they look bad enough, **opens**: calls are rejected at once (the
//! caller falls back, queues, or reports) until the open duration ends. It then goes
//! **half-open** and admits a few probes; their successes close it, one failure reopens it for
//! longer.
//!
//! # States
//!
//! | state | admits | leaves when |
//! | --- | --- | --- |
//! | [`State::Closed`] | everything | a trip policy fires → `Open` |
//! | [`State::Open`] | nothing (`retry_at` = end of the open duration) | the open duration ends → `HalfOpen` |
//! | [`State::HalfOpen`] | at most `permitted_calls_in_half_open` probes | that many successes → `Closed`; one failure (or slow probe) → `Open`, longer; optional `max_wait_in_half_open` → `Open` |
//! | [`State::ForcedOpen`] | nothing (`retry_at` = `None`) | [`reset`](CircuitBreaker::reset) or [`disable`](CircuitBreaker::disable) |
//! | [`State::Disabled`] | everything, judges nothing | [`reset`](CircuitBreaker::reset) or [`force_open`](CircuitBreaker::force_open) |
//!
//! # Trip policies (any combination; the first that fires trips the breaker)
//!
//! - **consecutive failures**: `n` failures in a row (a success resets the run);
//! - **failure rate** over a sliding window: at least `failure_rate_threshold` % of the
//!   window's calls failed;
//! - **slow-call rate** over the same window: at least `slow_call_rate_threshold` % of the
//!   window's calls lasted `slow_call_duration_threshold` or more (a call's duration is the
//!   `now` of its outcome minus the `now` of its admission).
//!
//! The window is either **count-based** (the last N outcomes) or **time-based** (N buckets of
//! a configurable width, one second in Resilience4j). Rates are judged only once the window
//! holds `minimum_calls` calls. Each outcome costs O(1): totals are kept and the evicted outcome
//! or bucket is subtracted. Rates are whole percentages and compared exactly in integers
//! (`failures * 100 >= threshold * calls`).
//!
//! **Memory and `alloc`**: every policy works without `alloc`. With `alloc` the window is a
//! heap ring sized at `new` (2 bits per outcome; up to [`MAX_COUNT_WINDOW`] outcomes or
//! [`MAX_TIME_BUCKETS`] buckets). Without it the window is an inline array and the builder
//! accepts at most [`MAX_INLINE_COUNT_WINDOW`] outcomes or [`MAX_INLINE_TIME_BUCKETS`] buckets.
//! Nothing allocates after `new`.
//!
//! # The contract
//!
//! - [`try_acquire`](CircuitBreaker::try_acquire) returns a [`BreakerPermit`] stamped with the
//!   breaker's **generation** (bumped on every transition) and the admission time, or a
//!   [`Rejected`] carrying `retry_at`. Report the call's outcome with the permit:
//!   [`on_success`](CircuitBreaker::on_success), [`on_failure`](CircuitBreaker::on_failure) or
//!   [`on_ignored`](CircuitBreaker::on_ignored) (classification is the caller's; "ignored"
//!   frees a half-open probe slot without counting, e.g. a 404). A call dropped before it
//!   finished is reported with [`on_abandoned`](CircuitBreaker::on_abandoned): a failure if it
//!   had run for the config's `abandon_threshold` (default 1 s), else ignored.
//! - An outcome whose permit is from an older generation is **stale**: it is counted in
//!   [`BreakerStats::stale_outcomes`] and changes nothing, so a success that started before a
//!   trip cannot close the breaker, and a slow failure from before a reset cannot trip it.
//! - Open → HalfOpen happens in [`handle_timeout`](CircuitBreaker::handle_timeout) or lazily
//!   in the next input; [`poll_timeout`](CircuitBreaker::poll_timeout) says when.
//! - Time is an input; a `now` older than one already seen is clamped. Nothing panics,
//!   allocates (after `new`) or reads a clock.
//! - A permit that is never reported holds a half-open probe slot forever unless
//!   `max_wait_in_half_open` is set: adapters report every permit (a dropped call through
//!   `on_abandoned`).
//!
//! # Defaults (Resilience4j `BreakerConfig`)
//!
//! failure-rate threshold 50 %, count window of 100 calls, minimum 100 calls, open 60 s
//! (fixed), 10 permitted calls in half-open, slow-call threshold 60 s, slow-call-rate threshold
//! 100 %, no maximum wait in half-open. keel's own: abandoned calls count as failures after
//! 1 s ([`DEFAULT_ABANDON_THRESHOLD`], see
//! [`abandon_threshold`](BreakerConfigBuilder::abandon_threshold) for the sources).
//! Consecutive failures (Polly's classic breaker, the
//! seed's `max_failures`) is off unless set, e.g. with
//! [`BreakerConfig::consecutive_failures`].
//!
//! # Example
//!
//! ```
//! use core::time::Duration;
//! use keel_core::breaker::{CircuitBreaker, BreakerConfig, State};
//! use keel_core::Instant;
//!
//! let config = BreakerConfig::consecutive_failures(3)
//!     .open_duration(Duration::from_secs(10))
//!     .permitted_calls_in_half_open(1)
//!     .build()?;
//! let t0 = Instant::from_secs(100);
//! let mut breaker = CircuitBreaker::new(config, t0);
//!
//! for _ in 0..3 {
//!     let permit = breaker.try_acquire(t0).expect("closed admits");
//!     breaker.on_failure(t0, permit);
//! }
//! assert_eq!(breaker.state(), State::Open);
//! let rejected = breaker.try_acquire(t0).unwrap_err();
//! assert_eq!(rejected.retry_at, Some(t0 + Duration::from_secs(10)));
//!
//! // Ten seconds later one probe is admitted; its success closes the breaker.
//! let t1 = t0 + Duration::from_secs(10);
//! let probe = breaker.try_acquire(t1).expect("half-open admits one probe");
//! assert_eq!(breaker.state(), State::HalfOpen);
//! assert!(breaker.try_acquire(t1).is_err());
//! breaker.on_success(t1, probe);
//! assert_eq!(breaker.state(), State::Closed);
//! # Ok::<(), keel_core::ConfigError>(())
//! ```

mod config;
mod window;

use core::fmt;
use core::time::Duration;

use crate::backoff::Backoff;
use crate::ring::EventRing;
use crate::time::{duration_to_nanos, Instant, Monotonic};

pub use config::{
    BreakerConfig, BreakerConfigBuilder, OpenDuration, SlidingWindow, DEFAULT_ABANDON_THRESHOLD,
    MAX_COUNT_WINDOW, MAX_INLINE_COUNT_WINDOW, MAX_INLINE_TIME_BUCKETS, MAX_TIME_BUCKETS,
};
use window::Window;

/// How many transition events the breaker queues before dropping the oldest.
pub const EVENT_QUEUE_CAPACITY: usize = 16;

/// A breaker's state, as observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Calls flow; outcomes are judged.
    Closed,
    /// Calls are rejected until the open duration ends.
    Open,
    /// A bounded number of probes are admitted.
    HalfOpen,
    /// Calls are rejected until [`CircuitBreaker::reset`] (manual).
    ForcedOpen,
    /// Calls flow and nothing is judged until [`CircuitBreaker::reset`] (manual).
    Disabled,
}

impl State {
    /// A short lowercase name: `"closed"`, `"open"`, `"half-open"`, `"forced-open"`,
    /// `"disabled"`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half-open",
            State::ForcedOpen => "forced-open",
            State::Disabled => "disabled",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of an admitted call, as the caller classifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The call succeeded (it may still have been slow).
    Success,
    /// The call failed in a way that says the dependency is unhealthy.
    Failure,
    /// Neither: not counted (cancelled, a client error...); frees a half-open probe slot.
    Ignored,
}

/// Why the breaker changed state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransitionReason {
    /// `consecutive_failures` failures in a row.
    ConsecutiveFailures,
    /// The window's failure rate reached the threshold.
    FailureRate,
    /// The window's slow-call rate reached the threshold.
    SlowCallRate,
    /// The open duration ended.
    OpenElapsed,
    /// A half-open probe failed.
    ProbeFailed,
    /// A half-open probe was slow (slow-call policy on).
    ProbeSlow,
    /// `permitted_calls_in_half_open` probes succeeded.
    ProbesSucceeded,
    /// The breaker stayed half-open for `max_wait_in_half_open`.
    HalfOpenTimeout,
    /// [`CircuitBreaker::force_open`].
    Forced,
    /// [`CircuitBreaker::disable`].
    Disabled,
    /// [`CircuitBreaker::reset`].
    Reset,
}

impl TransitionReason {
    /// A few words on why the breaker moved, for log lines: `"consecutive failures"`,
    /// `"failure rate reached the threshold"`, `"open duration elapsed"`, ...
    ///
    /// ```
    /// use keel_core::breaker::TransitionReason;
    /// assert_eq!(TransitionReason::ProbeFailed.as_str(), "a probe failed");
    /// assert_eq!(TransitionReason::Forced.to_string(), "forced open");
    /// ```
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            TransitionReason::ConsecutiveFailures => "consecutive failures",
            TransitionReason::FailureRate => "failure rate reached the threshold",
            TransitionReason::SlowCallRate => "slow-call rate reached the threshold",
            TransitionReason::OpenElapsed => "open duration elapsed",
            TransitionReason::ProbeFailed => "a probe failed",
            TransitionReason::ProbeSlow => "a probe was slow",
            TransitionReason::ProbesSucceeded => "the probes succeeded",
            TransitionReason::HalfOpenTimeout => "half-open for too long",
            TransitionReason::Forced => "forced open",
            TransitionReason::Disabled => "disabled",
            TransitionReason::Reset => "reset",
        }
    }
}

impl fmt::Display for TransitionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something logs and metrics want to know about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BreakerEvent {
    /// The breaker changed state.
    Transition {
        /// The state it left.
        from: State,
        /// The state it entered.
        to: State,
        /// When.
        at: Instant,
        /// Why.
        reason: TransitionReason,
    },
}

/// Admission to make one call: report its outcome with this token.
///
/// Small and `Copy`; it carries the breaker generation it was issued in and the admission time
/// (the start of the call's duration for the slow-call policy).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[must_use = "report the call's outcome with this permit (on_success/on_failure/on_ignored)"]
pub struct BreakerPermit {
    generation: u64,
    admitted_at: Instant,
}

impl BreakerPermit {
    /// A permit as the breaker issues it (the shared form's lock-free admission).
    #[cfg_attr(not(feature = "std"), allow(dead_code))]
    pub(crate) const fn issued(generation: u64, admitted_at: Instant) -> Self {
        BreakerPermit {
            generation,
            admitted_at,
        }
    }

    /// The breaker generation the call was admitted in.
    #[must_use]
    pub const fn generation(&self) -> u64 {
        self.generation
    }

    /// When the call was admitted.
    #[must_use]
    pub const fn admitted_at(&self) -> Instant {
        self.admitted_at
    }
}

/// A call was not admitted: the crate's one rejection shape, [`crate::Rejected`], whose
/// `reason` is the [`State`] that rejected the call.
///
/// `retry_at` is when a call may be admitted again: the end of the open duration when `Open`;
/// the half-open deadline when `HalfOpen` with every probe slot taken and
/// `max_wait_in_half_open` set (the probes may free it sooner); `None` when no instant is
/// known (`ForcedOpen`, or `HalfOpen` without a maximum wait).
pub type Rejected = crate::error::Rejected<State>;

/// Counters and the current window, a `Copy` snapshot.
///
/// `successes`, `failures`, `ignored` and `slow` count outcomes of the current generation at
/// the time they were reported (stale outcomes are only in `stale_outcomes`). The window
/// fields are as of the last recorded outcome: a time window drops its expired buckets when
/// the next outcome arrives, not when `stats` is read. The window is cleared on every
/// transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BreakerStats {
    /// The current state.
    pub state: State,
    /// The current generation (transitions since `new`, wrapping).
    pub generation: u64,
    /// Calls admitted.
    pub admitted: u64,
    /// Calls rejected.
    pub rejected: u64,
    /// Successes reported.
    pub successes: u64,
    /// Failures reported.
    pub failures: u64,
    /// Ignored outcomes reported.
    pub ignored: u64,
    /// Successes and failures that lasted at least the slow-call threshold.
    pub slow: u64,
    /// Outcomes whose permit was from an older generation (changed nothing).
    pub stale_outcomes: u64,
    /// Calls reported abandoned ([`CircuitBreaker::on_abandoned`]), stale ones included.
    pub abandoned: u64,
    /// Abandoned calls that had run at least the abandon threshold, reported as failures.
    pub abandoned_failures: u64,
    /// State transitions.
    pub transitions: u64,
    /// Transitions into `Open` (trips).
    pub opened_count: u64,
    /// Events dropped because the queue was full.
    pub events_dropped: u64,
    /// Trips since the breaker last closed (drives the exponential open duration).
    pub trips_in_a_row: u32,
    /// The current run of failures (Closed only).
    pub consecutive_failures: u32,
    /// Half-open probe slots in use (in flight or succeeded).
    pub probes_in_use: u32,
    /// Calls in the sliding window.
    pub window_calls: u64,
    /// Failures in the sliding window.
    pub window_failures: u64,
    /// Slow calls in the sliding window.
    pub window_slow: u64,
    /// The window's failure rate (percent, rounded down), once it holds `minimum_calls`.
    pub failure_rate_percent: Option<u8>,
    /// The window's slow-call rate (percent, rounded down), once it holds `minimum_calls`.
    pub slow_call_rate_percent: Option<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Inner {
    Closed,
    Open {
        until: Instant,
    },
    HalfOpen {
        since: Instant,
        used: u32,
        successes: u32,
    },
    ForcedOpen,
    Disabled,
}

impl Inner {
    fn state(self) -> State {
        match self {
            Inner::Closed => State::Closed,
            Inner::Open { .. } => State::Open,
            Inner::HalfOpen { .. } => State::HalfOpen,
            Inner::ForcedOpen => State::ForcedOpen,
            Inner::Disabled => State::Disabled,
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    admitted: u64,
    rejected: u64,
    successes: u64,
    failures: u64,
    ignored: u64,
    slow: u64,
    stale: u64,
    abandoned: u64,
    abandoned_failures: u64,
    transitions: u64,
    opened: u64,
    events_dropped: u64,
}

/// A circuit breaker (see the [module docs](self)).
///
/// | group | methods |
/// | --- | --- |
/// | construct | [`new`](Self::new) |
/// | admission | [`try_acquire`](Self::try_acquire): a [`BreakerPermit`] or a [`Rejected`] with `retry_at` |
/// | outcome (consumes the permit) | [`on_success`](Self::on_success), [`on_failure`](Self::on_failure), [`on_ignored`](Self::on_ignored), [`on_abandoned`](Self::on_abandoned), [`on_outcome`](Self::on_outcome) |
/// | timer | [`handle_timeout`](Self::handle_timeout), [`poll_timeout`](Self::poll_timeout) |
/// | commands | [`force_open`](Self::force_open), [`disable`](Self::disable), [`reset`](Self::reset) |
/// | outputs | [`poll_event`](Self::poll_event) until `None` |
/// | getters | [`state`](Self::state), [`stats`](Self::stats), [`config`](Self::config) |
///
/// After every input, call [`poll_timeout`](Self::poll_timeout), then
/// [`poll_event`](Self::poll_event) until `None`.
///
/// ```
/// use core::time::Duration;
/// use keel_core::breaker::{BreakerConfig, CircuitBreaker, State};
/// use keel_core::Instant;
///
/// let config = BreakerConfig::consecutive_failures(3)
///     .open_duration(Duration::from_secs(10))
///     .build()?;
/// let mut now = Instant::ZERO;
/// let mut breaker = CircuitBreaker::new(config, now);
/// for _ in 0..3 {
///     let permit = breaker.try_acquire(now).expect("closed: calls go through");
///     breaker.on_failure(now, permit); // the call failed
/// }
/// assert_eq!(breaker.state(), State::Open);
/// let rejected = breaker.try_acquire(now).unwrap_err();
/// assert_eq!(rejected.retry_at, Some(now + Duration::from_secs(10)));
///
/// now = breaker.poll_timeout().expect("the open period ends");
/// breaker.handle_timeout(now);
/// assert!(breaker.try_acquire(now).is_ok()); // half-open: a probe goes through
/// # Ok::<(), keel_core::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    clock: Monotonic,
    inner: Inner,
    generation: u64,
    consecutive_failures: u32,
    window: Option<Window>,
    /// The schedule of an exponential open duration: a [`Backoff`] with unlimited attempts,
    /// one delay drawn per trip, reset when the breaker closes. `None` for a fixed duration.
    open_backoff: Option<Backoff>,
    trips_in_a_row: u32,
    /// `config.slow_call_duration` in nanoseconds (`u128`: a threshold above `u64::MAX` ns is
    /// never reached, exactly as the `Duration` comparison it replaces).
    slow_nanos: u128,
    events: EventRing<BreakerEvent, EVENT_QUEUE_CAPACITY>,
    counters: Counters,
}

impl CircuitBreaker {
    /// A closed breaker. Allocates the sliding window (with `alloc`) if a rate policy is on.
    #[must_use]
    pub fn new(config: BreakerConfig, now: Instant) -> Self {
        let window = if config.window_needed() {
            Some(Window::new(config.window, now))
        } else {
            None
        };
        CircuitBreaker {
            clock: Monotonic::new(now),
            inner: Inner::Closed,
            generation: 0,
            consecutive_failures: 0,
            window,
            open_backoff: open_backoff(&config, now),
            trips_in_a_row: 0,
            slow_nanos: config.slow_call_duration.as_nanos(),
            events: EventRing::new(),
            counters: Counters::default(),
            config,
        }
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The state as of the last input (an open duration that has ended since is only noticed
    /// by the next input or [`handle_timeout`](Self::handle_timeout)).
    #[must_use]
    pub fn state(&self) -> State {
        self.inner.state()
    }

    /// The hooks of [`SharedBreaker`](crate::sync::breaker::SharedBreaker)'s lock-free closed
    /// path: it keeps the newest `now`, the failure run and the closed-path counts in atomics
    /// while the breaker is closed and hands them back here before the machine runs.
    #[cfg_attr(not(feature = "std"), allow(dead_code))]
    pub(crate) fn shared_hooks(&mut self) -> SharedHooks<'_> {
        SharedHooks(self)
    }

    /// Admits a call, or says why not and until when.
    ///
    /// # Errors
    ///
    /// [`Rejected`] while `Open`, `ForcedOpen`, or `HalfOpen` with every probe slot taken.
    #[inline]
    #[must_use = "a permit must be reported; a rejection must be handled"]
    pub fn try_acquire(&mut self, now: Instant) -> Result<BreakerPermit, Rejected> {
        // Fast path: no timer is armed while Closed or Disabled (`run_timers` only acts on
        // Open and HalfOpen) and both admit everything, so admission is a clamp and a count.
        if matches!(self.inner, Inner::Closed | Inner::Disabled) {
            let now = self.clock.observe(now);
            self.counters.admitted = self.counters.admitted.saturating_add(1);
            return Ok(BreakerPermit {
                generation: self.generation,
                admitted_at: now,
            });
        }
        self.try_acquire_slow(now)
    }

    /// [`try_acquire`](Self::try_acquire) in every state (the fast path's states included).
    #[inline(never)]
    fn try_acquire_slow(&mut self, now: Instant) -> Result<BreakerPermit, Rejected> {
        let now = self.advance(now);
        let permitted = self.config.permitted_calls_in_half_open;
        let retry_at = match &mut self.inner {
            Inner::Closed | Inner::Disabled => None,
            Inner::HalfOpen { used, .. } if *used < permitted => {
                *used += 1;
                None
            }
            Inner::HalfOpen { since, .. } => Some(
                self.config
                    .max_wait_in_half_open
                    .map(|w| since.saturating_add(w)),
            ),
            Inner::Open { until } => Some(Some(*until)),
            Inner::ForcedOpen => Some(None),
        };
        match retry_at {
            None => {
                self.counters.admitted = self.counters.admitted.saturating_add(1);
                Ok(BreakerPermit {
                    generation: self.generation,
                    admitted_at: now,
                })
            }
            Some(retry_at) => {
                self.counters.rejected = self.counters.rejected.saturating_add(1);
                Err(Rejected {
                    retry_at,
                    reason: self.inner.state(),
                })
            }
        }
    }

    /// Reports that the call admitted with `permit` succeeded.
    #[inline]
    pub fn on_success(&mut self, now: Instant, permit: BreakerPermit) {
        self.on_outcome(now, permit, Outcome::Success);
    }

    /// Reports that the call admitted with `permit` failed.
    #[inline]
    pub fn on_failure(&mut self, now: Instant, permit: BreakerPermit) {
        self.on_outcome(now, permit, Outcome::Failure);
    }

    /// Reports that the call admitted with `permit` should not count (it frees its half-open
    /// probe slot).
    pub fn on_ignored(&mut self, now: Instant, permit: BreakerPermit) {
        self.on_outcome(now, permit, Outcome::Ignored);
    }

    /// Reports that the call admitted with `permit` was abandoned: dropped before it finished
    /// (cancelled, or timed out by a timeout *outside* the breaker). Having run for at least
    /// the config's [`abandon_threshold`](BreakerConfig::abandon_threshold) (from
    /// `permit.admitted_at()` to `now`), it is a [`Outcome::Failure`]: a dependency that hangs
    /// until the caller gives up is failing. Abandoned sooner it is [`Outcome::Ignored`] (it
    /// frees its half-open probe slot). Returns the outcome recorded.
    pub fn on_abandoned(&mut self, now: Instant, permit: BreakerPermit) -> Outcome {
        let ran = now
            .max(self.clock.get())
            .saturating_duration_since(permit.admitted_at);
        let c = &mut self.counters;
        c.abandoned = c.abandoned.saturating_add(1);
        let outcome = if ran >= self.config.abandon_threshold {
            if permit.generation == self.generation {
                c.abandoned_failures = c.abandoned_failures.saturating_add(1);
            }
            Outcome::Failure
        } else {
            Outcome::Ignored
        };
        self.on_outcome(now, permit, outcome);
        outcome
    }

    /// Reports the outcome of the call admitted with `permit`. The call's duration is
    /// `now - permit.admitted_at()`. Report each permit once: the breaker cannot tell a
    /// duplicate from a second call. A permit from another breaker is undefined (but safe).
    #[inline]
    pub fn on_outcome(&mut self, now: Instant, permit: BreakerPermit, outcome: Outcome) {
        // Fast path: a current-generation success or failure while Closed. No timer is armed
        // while Closed, so the timer run before the outcome is a no-op; the one after it only
        // matters if this outcome tripped the breaker.
        if matches!(self.inner, Inner::Closed)
            && permit.generation == self.generation
            && outcome != Outcome::Ignored
        {
            let now = self.clock.observe(now);
            let failed = outcome == Outcome::Failure;
            let slow = self.is_slow(now, permit);
            let c = &mut self.counters;
            if failed {
                c.failures = c.failures.saturating_add(1);
            } else {
                c.successes = c.successes.saturating_add(1);
            }
            if slow {
                c.slow = c.slow.saturating_add(1);
            }
            self.judge(now, failed, slow);
            if !matches!(self.inner, Inner::Closed) {
                // A trip whose (jittered) open duration is zero is already due.
                self.run_timers(now);
            }
            return;
        }
        self.on_outcome_slow(now, permit, outcome);
    }

    /// Did the call admitted with `permit` last at least the slow-call threshold?
    #[inline]
    fn is_slow(&self, now: Instant, permit: BreakerPermit) -> bool {
        u128::from(now.as_nanos().saturating_sub(permit.admitted_at.as_nanos())) >= self.slow_nanos
    }

    /// [`on_outcome`](Self::on_outcome) in every state (the fast path's case included).
    #[inline(never)]
    fn on_outcome_slow(&mut self, now: Instant, permit: BreakerPermit, outcome: Outcome) {
        let now = self.advance(now);
        let c = &mut self.counters;
        if permit.generation != self.generation {
            c.stale = c.stale.saturating_add(1);
            return;
        }
        let failed = match outcome {
            Outcome::Ignored => {
                c.ignored = c.ignored.saturating_add(1);
                if let Inner::HalfOpen { used, .. } = &mut self.inner {
                    *used = used.saturating_sub(1);
                }
                return;
            }
            Outcome::Success => {
                c.successes = c.successes.saturating_add(1);
                false
            }
            Outcome::Failure => {
                c.failures = c.failures.saturating_add(1);
                true
            }
        };
        let slow = self.is_slow(now, permit);
        if slow {
            self.counters.slow = self.counters.slow.saturating_add(1);
        }
        match self.inner {
            Inner::Closed => self.judge(now, failed, slow),
            Inner::HalfOpen {
                since,
                used,
                successes,
            } => {
                if failed {
                    self.trip(now, TransitionReason::ProbeFailed);
                } else if slow && self.config.slow_call_rate_threshold.is_some() {
                    self.trip(now, TransitionReason::ProbeSlow);
                } else {
                    let successes = successes.saturating_add(1);
                    if successes >= self.config.permitted_calls_in_half_open {
                        self.close(now, TransitionReason::ProbesSucceeded);
                    } else {
                        self.inner = Inner::HalfOpen {
                            since,
                            used,
                            successes,
                        };
                    }
                }
            }
            // Disabled judges nothing; Open and ForcedOpen issue no permits of their generation.
            Inner::Disabled | Inner::Open { .. } | Inner::ForcedOpen => {}
        }
        // A trip whose (jittered) open duration is zero is already due.
        self.run_timers(now);
    }

    /// Runs the timers due at `now`: Open → HalfOpen when the open duration has ended, and
    /// HalfOpen → Open after `max_wait_in_half_open`. Early or spurious calls are no-ops.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has work: the end of the open
    /// duration, or the half-open deadline. `None` in the other states. Always later than the
    /// newest `now` seen.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let t = match self.inner {
            Inner::Open { until } => Some(until),
            Inner::HalfOpen { since, .. } => self
                .config
                .max_wait_in_half_open
                .map(|w| since.saturating_add(w)),
            _ => None,
        };
        t.filter(|t| *t > self.clock.get())
    }

    /// The next queued event (at most [`EVENT_QUEUE_CAPACITY`] are kept; older ones are
    /// dropped and counted in [`BreakerStats::events_dropped`]).
    #[must_use]
    pub fn poll_event(&mut self) -> Option<BreakerEvent> {
        self.events.pop()
    }

    /// Opens the breaker until [`reset`](Self::reset) (or [`disable`](Self::disable)).
    /// Outcomes of calls admitted before are ignored. No-op if already forced open.
    pub fn force_open(&mut self, now: Instant) {
        let now = self.clock.observe(now);
        if self.inner != Inner::ForcedOpen {
            self.transition(now, Inner::ForcedOpen, TransitionReason::Forced);
        }
    }

    /// Admits everything and judges nothing until [`reset`](Self::reset) (or
    /// [`force_open`](Self::force_open)). No-op if already disabled.
    pub fn disable(&mut self, now: Instant) {
        let now = self.clock.observe(now);
        if self.inner != Inner::Disabled {
            self.transition(now, Inner::Disabled, TransitionReason::Disabled);
        }
    }

    /// Back to a fresh `Closed` breaker: the window, the failure run and the open-duration
    /// growth are forgotten, and outcomes of calls admitted before are ignored. From `Closed`
    /// this emits no event but still starts a new generation.
    pub fn reset(&mut self, now: Instant) {
        let now = self.clock.observe(now);
        if self.inner == Inner::Closed {
            self.generation = self.generation.wrapping_add(1);
            self.clear_metrics(now);
            self.restart_open_duration(now);
        } else {
            self.close(now, TransitionReason::Reset);
        }
    }

    /// A snapshot of the counters and the window.
    #[must_use]
    pub fn stats(&self) -> BreakerStats {
        let c = self.counters;
        let totals = self.window.as_ref().map(Window::totals).unwrap_or_default();
        let judged = self.window.is_some() && totals.calls >= u64::from(self.config.minimum_calls);
        let rate = |n: u64| {
            if judged && totals.calls > 0 {
                Some((u128::from(n) * 100 / u128::from(totals.calls)).min(100) as u8)
            } else {
                None
            }
        };
        BreakerStats {
            state: self.state(),
            generation: self.generation,
            admitted: c.admitted,
            rejected: c.rejected,
            successes: c.successes,
            failures: c.failures,
            ignored: c.ignored,
            slow: c.slow,
            stale_outcomes: c.stale,
            abandoned: c.abandoned,
            abandoned_failures: c.abandoned_failures,
            transitions: c.transitions,
            opened_count: c.opened,
            events_dropped: c.events_dropped,
            trips_in_a_row: self.trips_in_a_row,
            consecutive_failures: self.consecutive_failures,
            probes_in_use: match self.inner {
                Inner::HalfOpen { used, .. } => used,
                _ => 0,
            },
            window_calls: totals.calls,
            window_failures: totals.failures,
            window_slow: totals.slow,
            failure_rate_percent: rate(totals.failures),
            slow_call_rate_percent: rate(totals.slow),
        }
    }

    /// Clamps `now` and runs due timers. Bounded: each step moves forward, and at most three
    /// run (Open → HalfOpen → Open → HalfOpen only when durations saturate at `Instant::MAX`).
    fn advance(&mut self, now: Instant) -> Instant {
        let now = self.clock.observe(now);
        self.run_timers(now);
        now
    }

    fn run_timers(&mut self, now: Instant) {
        for _ in 0..3 {
            match self.inner {
                Inner::Open { until } if now >= until => {
                    self.transition(
                        now,
                        Inner::HalfOpen {
                            since: now,
                            used: 0,
                            successes: 0,
                        },
                        TransitionReason::OpenElapsed,
                    );
                }
                Inner::HalfOpen { since, .. } => match self.config.max_wait_in_half_open {
                    Some(w) if now >= since.saturating_add(w) => {
                        self.trip(now, TransitionReason::HalfOpenTimeout);
                    }
                    _ => break,
                },
                _ => break,
            }
        }
    }

    #[inline]
    fn judge(&mut self, now: Instant, failed: bool, slow: bool) {
        if failed {
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        } else {
            self.consecutive_failures = 0;
        }
        if let Some(w) = &mut self.window {
            w.record(now, failed, slow);
        }
        if let Some(n) = self.config.consecutive_failures {
            if self.consecutive_failures >= n {
                self.trip(now, TransitionReason::ConsecutiveFailures);
                return;
            }
        }
        if self.window.is_some() {
            self.judge_rates(now);
        }
    }

    /// The rate policies, once the window holds `minimum_calls` calls.
    #[inline]
    fn judge_rates(&mut self, now: Instant) {
        let Some(totals) = self.window.as_ref().map(Window::totals) else {
            return;
        };
        if totals.calls < u64::from(self.config.minimum_calls) {
            return;
        }
        let reached = |n: u64, threshold: Option<u8>| {
            threshold
                .is_some_and(|t| u128::from(n) * 100 >= u128::from(t) * u128::from(totals.calls))
        };
        if reached(totals.failures, self.config.failure_rate_threshold) {
            self.trip(now, TransitionReason::FailureRate);
        } else if reached(totals.slow, self.config.slow_call_rate_threshold) {
            self.trip(now, TransitionReason::SlowCallRate);
        }
    }

    #[inline(never)]
    fn trip(&mut self, now: Instant, reason: TransitionReason) {
        let d = self.scheduled_open_duration();
        self.trips_in_a_row = self.trips_in_a_row.saturating_add(1);
        self.counters.opened = self.counters.opened.saturating_add(1);
        let until = now.saturating_add(Duration::from_nanos(d));
        self.transition(now, Inner::Open { until }, reason);
    }

    fn close(&mut self, now: Instant, reason: TransitionReason) {
        self.restart_open_duration(now);
        self.transition(now, Inner::Closed, reason);
    }

    /// The open-duration growth starts over (the jitter's random sequence continues).
    fn restart_open_duration(&mut self, now: Instant) {
        if let Some(b) = &mut self.open_backoff {
            b.reset(now);
        }
        self.trips_in_a_row = 0;
    }

    /// The open duration for this trip (jittered), and the growth for the next one: the next
    /// delay of the open-duration [`Backoff`] (one schedule and one jitter for keel).
    fn scheduled_open_duration(&mut self) -> u64 {
        match (self.config.open_duration, &mut self.open_backoff) {
            (OpenDuration::Fixed(d), _) => duration_to_nanos(d),
            (OpenDuration::Exponential { cap, .. }, Some(b)) => {
                // Unlimited attempts: the iterator never ends; the cap if it ever did.
                b.delays()
                    .next()
                    .map_or(duration_to_nanos(cap), duration_to_nanos)
            }
            (OpenDuration::Exponential { cap, .. }, None) => {
                debug_assert!(false, "a built exponential open duration has its backoff");
                duration_to_nanos(cap)
            }
        }
    }

    fn clear_metrics(&mut self, now: Instant) {
        self.consecutive_failures = 0;
        if let Some(w) = &mut self.window {
            w.reset(now);
        }
    }

    fn transition(&mut self, now: Instant, to: Inner, reason: TransitionReason) {
        let from = self.inner.state();
        self.inner = to;
        self.generation = self.generation.wrapping_add(1);
        self.clear_metrics(now);
        self.counters.transitions = self.counters.transitions.saturating_add(1);
        let ev = BreakerEvent::Transition {
            from,
            to: to.state(),
            at: now,
            reason,
        };
        if self.events.push(ev).is_some() {
            self.counters.events_dropped = self.counters.events_dropped.saturating_add(1);
        }
    }
}

/// See [`CircuitBreaker::shared_hooks`].
#[cfg_attr(not(feature = "std"), allow(dead_code))]
pub(crate) struct SharedHooks<'a>(&'a mut CircuitBreaker);

#[cfg_attr(not(feature = "std"), allow(dead_code))]
impl SharedHooks<'_> {
    /// Clamps the machine's clock to at least `now` (returns the newest instant).
    pub(crate) fn observe(&mut self, now: Instant) -> Instant {
        self.0.clock.observe(now)
    }

    /// The newest instant the machine has seen.
    pub(crate) fn newest(&self) -> Instant {
        self.0.clock.get()
    }

    /// The current generation.
    pub(crate) fn generation(&self) -> u64 {
        self.0.generation
    }

    /// Closed with no rate policy: the only state and config whose admissions and outcomes
    /// are a count, a clamp and the failure run (what the shared form does without the lock).
    pub(crate) fn lock_free_closed(&self) -> bool {
        matches!(self.0.inner, Inner::Closed)
            && self.0.window.is_none()
            && self.0.config.consecutive_failures != Some(0)
    }

    /// Closed, with a count window full of successes and no failure run: a success that is
    /// not slow changes nothing then but the counts. Its judgement finds the same totals (no
    /// failure, no slow call, the window full) and a rate threshold is at least 1 %, so it
    /// cannot trip; the failure run stays zero; the ring only moves its position, and every
    /// slot holds a success. (What the shared form records without the lock.)
    pub(crate) fn success_changes_only_counts(&self) -> bool {
        matches!(self.0.inner, Inner::Closed)
            && self.0.consecutive_failures == 0
            && self
                .0
                .window
                .as_ref()
                .is_some_and(Window::full_of_successes)
    }

    /// The failure run.
    pub(crate) fn consecutive_failures(&self) -> u32 {
        self.0.consecutive_failures
    }

    /// Sets the failure run (kept outside while the shared form's closed path was open).
    pub(crate) fn set_consecutive_failures(&mut self, n: u32) {
        self.0.consecutive_failures = n;
    }

    /// Events are queued.
    pub(crate) fn has_events(&self) -> bool {
        !self.0.events.is_empty()
    }

    /// The slow-call threshold in nanoseconds.
    pub(crate) fn slow_nanos(&self) -> u128 {
        self.0.slow_nanos
    }

    /// Folds counts made outside the machine into its counters.
    pub(crate) fn add_counts(
        &mut self,
        admitted: u64,
        successes: u64,
        failures: u64,
        ignored: u64,
        slow: u64,
    ) {
        let c = &mut self.0.counters;
        c.admitted = c.admitted.saturating_add(admitted);
        c.successes = c.successes.saturating_add(successes);
        c.failures = c.failures.saturating_add(failures);
        c.ignored = c.ignored.saturating_add(ignored);
        c.slow = c.slow.saturating_add(slow);
    }
}

/// The open-duration [`Backoff`] of an exponential open duration, starting at `now`.
fn open_backoff(config: &BreakerConfig, now: Instant) -> Option<Backoff> {
    let backoff = config.open_backoff();
    debug_assert!(
        backoff.is_ok(),
        "the builder checked the open-duration schedule"
    );
    backoff.ok().flatten().map(|c| Backoff::new(c, now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_queue_drops_the_oldest_when_full() {
        let mut q: EventRing<BreakerEvent, EVENT_QUEUE_CAPACITY> = EventRing::new();
        let ev = |n: u64| BreakerEvent::Transition {
            from: State::Closed,
            to: State::Open,
            at: Instant::from_nanos(n),
            reason: TransitionReason::Forced,
        };
        let mut dropped = 0;
        for n in 0..(EVENT_QUEUE_CAPACITY as u64 + 3) {
            dropped += u32::from(q.push(ev(n)).is_some());
        }
        assert_eq!(dropped, 3);
        assert_eq!(q.pop(), Some(ev(3)));
        let mut rest = 1;
        while q.pop().is_some() {
            rest += 1;
        }
        assert_eq!(rest, EVENT_QUEUE_CAPACITY);
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn event_queue_keeps_fifo_order_across_drains_and_wraps() {
        let mut q: EventRing<BreakerEvent, EVENT_QUEUE_CAPACITY> = EventRing::new();
        let ev = |n: u64| BreakerEvent::Transition {
            from: State::Closed,
            to: State::Open,
            at: Instant::from_nanos(n),
            reason: TransitionReason::Forced,
        };
        // Fill, drain, and refill with a different count each round so the head walks all the
        // way around the ring (three times) and stops at every offset.
        let mut next = 0;
        for round in 1..=(EVENT_QUEUE_CAPACITY as u64 * 3) {
            let n = round % (EVENT_QUEUE_CAPACITY as u64) + 1;
            for k in 0..n {
                assert!(q.push(ev(next + k)).is_none(), "no drop below capacity");
            }
            for k in 0..n {
                assert_eq!(q.pop(), Some(ev(next + k)), "round {round}");
            }
            assert_eq!(q.pop(), None, "drained after round {round}");
            next += n;
        }
        // Full after a drain: the oldest goes first, exactly one per extra event.
        for k in 0..EVENT_QUEUE_CAPACITY as u64 {
            assert!(q.push(ev(k)).is_none());
        }
        assert!(q.push(ev(100)).is_some());
        assert_eq!(q.pop(), Some(ev(1)));
        assert!(q.push(ev(101)).is_none());
        assert!(q.push(ev(102)).is_some());
        assert_eq!(q.pop(), Some(ev(3)));
    }

    #[test]
    fn slow_call_threshold_compares_exactly_at_the_end_of_the_clock() {
        let slow_after = |d: Duration| {
            let config = BreakerConfig::consecutive_failures(5)
                .slow_call_duration_threshold(d)
                .build()
                .unwrap();
            let mut b = CircuitBreaker::new(config, Instant::ZERO);
            let p = b.try_acquire(Instant::ZERO).unwrap();
            b.on_success(Instant::MAX, p);
            b.stats().slow
        };
        // The longest call is u64::MAX ns: it reaches a threshold of exactly that, never more.
        assert_eq!(slow_after(Duration::from_nanos(u64::MAX)), 1);
        assert_eq!(
            slow_after(Duration::from_nanos(u64::MAX) + Duration::from_nanos(1)),
            0
        );
        assert_eq!(slow_after(Duration::MAX), 0);
    }

    #[test]
    fn does_not_panic_on_bad_instant() {
        let config = BreakerConfig::consecutive_failures(1)
            .exponential_open_duration(
                Duration::MAX,
                u32::MAX,
                Duration::MAX,
                crate::backoff::Jitter::Full,
            )
            .max_wait_in_half_open(Duration::MAX)
            .build()
            .unwrap();
        let mut b = CircuitBreaker::new(config, Instant::MAX);
        let p = b.try_acquire(Instant::ZERO).unwrap();
        b.on_failure(Instant::ZERO, p);
        b.handle_timeout(Instant::MAX);
        assert!(b.poll_timeout().is_none_or(|t| t > Instant::MAX));
        let _ = b.try_acquire(Instant::MAX);
    }
}
