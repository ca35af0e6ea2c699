//! Backoff schedules with jitter: how long to wait before the next retry, and when to give up.
//!
//! # What it protects against
//!
//! A client that retries at once, or at the same fixed intervals as every other client, turns one
//! failure into a synchronised wave of retries that keeps the dependency down. The seed's retry
//! added 0-10 % jitter (which leaves the waves intact), retried forever within the attempt count
//! whatever the elapsed time, and ignored servers that say when to come back. This module
//! spreads retries with real jitter (AWS "Exponential Backoff and Jitter", 2015), stops after a
//! number of attempts or a time budget, and honours a server's `Retry-After` hint within a cap.
//! Pair it with a [retry budget](crate::budget) so a failing dependency cannot multiply the load.
//!
//! # The contract
//!
//! [`Backoff::new(config, now)`](Backoff::new) marks the **first attempt** at `now`. After each
//! failed attempt call [`Backoff::next_delay(now)`](Backoff::next_delay) (or
//! [`next_delay_with_hint`](Backoff::next_delay_with_hint) when the server sent `Retry-After`):
//! it answers [`RetryDecision::RetryAt(t)`](RetryDecision::RetryAt), an absolute instant, or
//! [`RetryDecision::GiveUp(reason)`](RetryDecision::GiveUp). A give-up is sticky until
//! [`Backoff::reset`] starts a new operation. The machine never reads a clock, never allocates,
//! never panics; `now` going backwards is clamped; all arithmetic saturates.
//!
//! ## Schedules (the un-jittered delay `d(n)` before retry `n = 1, 2, ...`)
//!
//! | kind | `d(n)` |
//! | --- | --- |
//! | [`constant(delay)`](BackoffConfig::constant) | `delay` |
//! | [`linear(base, step)`](BackoffConfig::linear) | `min(cap, base + (n - 1) * step)` |
//! | [`exponential(base, cap)`](BackoffConfig::exponential) | `min(cap, base * (factor_percent / 100)^(n - 1))` |
//!
//! The exponential factor is an integer percentage (`200` doubles, `150` grows by half); each
//! step is computed as `ceil(d * factor_percent / 100)` in integer nanoseconds (rounded up so
//! that a 1 ns base still grows) and saturates at the cap instead of overflowing.
//!
//! ## Jitter (the delay actually returned, `cap` included in every range)
//!
//! | [`Jitter`] | delay | floor |
//! | --- | --- | --- |
//! | `None` | `d(n)` | `d(n)` |
//! | `Full` | uniform in `[0, d(n)]` | `0` |
//! | `Equal` | `floor(d(n) / 2) + uniform in [0, d(n) - floor(d(n) / 2)]` | `d(n) / 2` |
//! | `Decorrelated` | `min(cap, uniform in [base, 3 * prev])`, `prev` starting at `base` | `base` |
//!
//! Because `d(n) <= cap`, **no jittered delay ever exceeds the cap** and none goes below its
//! floor (backon, for one, adds its jitter on top of the capped delay, so its delays can pass
//! `max_delay` by up to `min_delay`). Decorrelated jitter is the AWS blog's formula
//! (`sleep = min(cap, random_between(base, sleep * 3))`); it ignores the schedule's growth and
//! takes only `base` and `cap` from it. Polly offers a smoother alternative,
//! `DecorrelatedJitterBackoffV2` (Polly.Contrib.WaitAndRetry, the default jittered exponential in
//! Polly v8), which avoids the AWS formula's clustering at the cap but needs `exp`/`tanh`-style
//! float functions; keel does not implement it.
//!
//! ## Stop conditions (both optional)
//!
//! - `max_attempts(n)`: at most `n` attempts **including the first** (AWS's meaning), so at most
//!   `n - 1` retries. A retry taken on a server hint counts as an attempt.
//! - `max_elapsed(d)`: no retry is scheduled after `first attempt + d`. If the next delay would
//!   end past that deadline the machine **gives up** rather than clamping the delay to the time
//!   left (the choice of cenkalti/backoff's `MaxElapsedTime`, which stops when
//!   `elapsed + next > max`): a retry squeezed into the last moments of the budget rarely has
//!   time to succeed, and the caller's own deadline would cut it off anyway. A retry that ends
//!   exactly at the deadline is allowed.
//!
//! ## Server hints
//!
//! [`Backoff::next_delay_with_hint`] treats the server's `Retry-After` as a **lower bound**, not
//! as a replacement for the schedule (RFC 9110 §10.2.3: the time the client "ought to wait"):
//!
//! ```text
//! hinted  = clamp(retry_after, min_retry_after, max_retry_after)
//! delay   = max(hinted, jittered schedule delay)
//! ```
//!
//! - `max_retry_after` (default: the cap) bounds what a server can impose, so the delay never
//!   exceeds `max(cap, max_retry_after)`.
//! - `min_retry_after` (default [`DEFAULT_MIN_RETRY_AFTER`], 1 ms) bounds how little it can ask
//!   for: `Retry-After: 0` means "after a timer tick", never "at once".
//! - The schedule still applies: its jittered delay is drawn and the schedule advances one step
//!   exactly as without a hint, and the longer of the two wins. A server that keeps answering
//!   `Retry-After: 0` (or a proxy that strips the header to `0`) therefore cannot turn the
//!   client's exponential backoff into a tight loop; a hint longer than the backoff is honoured
//!   as given (the server chose the time, often already spread per client, e.g. a GCRA's
//!   `retry_at`). Because the draw is always made, the delays of later retries are the same
//!   whether or not a hint came before them.
//!
//! Why 1 ms: it is the resolution of tokio's timer wheel and of gRPC's `grpc-retry-pushback-ms`
//! header, the finest wait a hint can meaningfully ask for; with it, even a zero-delay schedule
//! (`constant(0)`) fed `Retry-After: 0` makes at most 1 000 attempts per second per caller
//! (and the retry driver yields to its executor before every retry whatever the delay). It is
//! a floor against a tight loop, not a backoff: the schedule does the backing off.
//! [`min_retry_after(Duration::ZERO)`](BackoffConfigBuilder::min_retry_after) turns it off.
//!
//! # Defaults and their source
//!
//! [`BackoffConfig::builder()`] is AWS SDK for Java v2's *standard* retry mode
//! (`SdkDefaultRetrySetting.Standard`): exponential from a 100 ms base, doubling
//! (`factor_percent = 200`), capped at 20 s (`MAX_BACKOFF`), full jitter, `max_attempts = 3`
//! (the first attempt and two retries). No elapsed-time limit; `max_retry_after` = the cap;
//! `min_retry_after` = 1 ms (see *Server hints*).
//! The AWS SDK for Rust (smithy) uses the same cap and attempts with a 1 s base.
//!
//! # Example
//!
//! ```
//! use core::time::Duration;
//! use keel_core::backoff::{Backoff, BackoffConfig, GiveUpReason, Jitter, RetryDecision};
//! use keel_core::time::Instant;
//!
//! let config = BackoffConfig::exponential(Duration::from_millis(100), Duration::from_secs(1))
//!     .jitter(Jitter::None)
//!     .max_attempts(4)
//!     .seed(7)
//!     .build()?;
//! let start = Instant::from_secs(10);
//! let mut backoff = Backoff::new(config, start);
//!
//! // The first attempt failed at `start`: retry after 100 ms.
//! assert_eq!(backoff.next_delay(start), RetryDecision::RetryAt(start + Duration::from_millis(100)));
//! // The server says "Retry-After: 300 ms", longer than the schedule's 200 ms: the hint wins.
//! let t = start + Duration::from_millis(150);
//! let hint = Duration::from_millis(300);
//! assert_eq!(backoff.next_delay_with_hint(t, hint), RetryDecision::RetryAt(t + hint));
//! // The schedule kept its place: the third retry waits 400 ms.
//! let t = start + Duration::from_millis(500);
//! assert_eq!(backoff.next_delay(t), RetryDecision::RetryAt(t + Duration::from_millis(400)));
//! // Four attempts made: give up.
//! assert_eq!(backoff.next_delay(t), RetryDecision::GiveUp(GiveUpReason::MaxAttempts));
//!
//! // Simulations can read the schedule without a clock.
//! backoff.reset(t);
//! let delays: [u64; 3] = core::array::from_fn(|_| {
//!     backoff.delays().next().map_or(0, |d| d.as_millis() as u64)
//! });
//! assert_eq!(delays, [100, 200, 400]);
//! # Ok::<(), keel_core::ConfigError>(())
//! ```

use core::time::Duration;

use crate::error::ConfigError;
use crate::rng::Rng;
use crate::time::{duration_to_nanos, Instant, Monotonic};

/// Default base delay: 100 ms (AWS SDK for Java v2, standard retry mode `BASE_DELAY`).
pub const DEFAULT_BASE: Duration = Duration::from_millis(100);
/// Default cap on any delay: 20 s (AWS SDK standard retry mode `MAX_BACKOFF`).
pub const DEFAULT_CAP: Duration = Duration::from_secs(20);
/// Default growth of an exponential schedule: 200 %, i.e. doubling (AWS SDKs, backon, Polly).
pub const DEFAULT_FACTOR_PERCENT: u32 = 200;
/// Default attempts, the first one included: 3 (AWS SDK standard retry mode `MAX_ATTEMPTS`).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Default shortest delay a server's retry-after hint can ask for: 1 ms (see the module docs,
/// *Server hints*).
pub const DEFAULT_MIN_RETRY_AFTER: Duration = Duration::from_millis(1);

/// How the un-jittered delay grows from one retry to the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Schedule {
    /// The same delay before every retry.
    Constant {
        /// The delay.
        delay: Duration,
    },
    /// `base`, then `base + step`, `base + 2 * step`, ... up to the cap.
    Linear {
        /// The first delay.
        base: Duration,
        /// Added at each retry.
        step: Duration,
    },
    /// `base`, then multiplied by `factor_percent / 100` at each retry, up to the cap.
    Exponential {
        /// The first delay.
        base: Duration,
        /// Growth per retry in percent: 200 doubles. At least 100.
        factor_percent: u32,
    },
}

/// How the delay is randomised so that clients do not retry in lockstep.
///
/// See the [module docs](self) for the exact formulas and floors. Every variant stays within
/// `[floor, cap]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Jitter {
    /// The schedule's delay, unchanged.
    None,
    /// Uniform in `[0, d]` (AWS "Full Jitter"): the best spread, the default.
    #[default]
    Full,
    /// `d / 2` plus uniform in `[0, d / 2]` (AWS "Equal Jitter"): never shorter than half.
    Equal,
    /// `min(cap, uniform in [base, 3 * previous delay])` (AWS "Decorrelated Jitter").
    Decorrelated,
}

/// Why a [`Backoff`] stopped scheduling retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GiveUpReason {
    /// `max_attempts` attempts (the first one included) have been made.
    MaxAttempts,
    /// The next retry would start after `first attempt + max_elapsed`.
    MaxElapsed,
}

/// What to do after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[must_use]
pub enum RetryDecision {
    /// Retry at this instant (absolute, on the caller's clock).
    RetryAt(Instant),
    /// Do not retry: report the last error.
    GiveUp(GiveUpReason),
}

impl RetryDecision {
    /// The instant to retry at, or `None` for a give-up.
    #[inline]
    #[must_use]
    pub const fn retry_at(self) -> Option<Instant> {
        match self {
            RetryDecision::RetryAt(t) => Some(t),
            RetryDecision::GiveUp(_) => None,
        }
    }
}

/// A validated backoff configuration. Build one with [`BackoffConfig::builder`],
/// [`BackoffConfig::exponential`], [`BackoffConfig::linear`] or [`BackoffConfig::constant`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffConfig {
    schedule: Schedule,
    cap: Duration,
    jitter: Jitter,
    max_attempts: Option<u32>,
    max_elapsed: Option<Duration>,
    max_retry_after: Duration,
    min_retry_after: Duration,
    seed: u64,
    // Pre-computed nanoseconds for the hot path.
    base_ns: u64,
    step_ns: u64,
    cap_ns: u64,
    max_retry_after_ns: u64,
    min_retry_after_ns: u64,
}

impl Default for BackoffConfig {
    /// The AWS standard-mode defaults (see the [module docs](self)), seed 0.
    fn default() -> Self {
        BackoffConfig::from_parts(
            Schedule::Exponential {
                base: DEFAULT_BASE,
                factor_percent: DEFAULT_FACTOR_PERCENT,
            },
            DEFAULT_CAP,
            Jitter::Full,
            Some(DEFAULT_MAX_ATTEMPTS),
            None,
            0,
        )
        .with_hint_bounds(DEFAULT_MIN_RETRY_AFTER, DEFAULT_CAP)
    }
}

impl BackoffConfig {
    /// A builder holding the defaults: exponential from 100 ms, doubling, capped at 20 s, full
    /// jitter, 3 attempts (AWS SDK standard retry mode), seed 0.
    pub fn builder() -> BackoffConfigBuilder {
        BackoffConfig::exponential(DEFAULT_BASE, DEFAULT_CAP)
    }

    /// An exponential schedule from `base`, doubling (change with
    /// [`factor_percent`](BackoffConfigBuilder::factor_percent)), never above `cap`.
    /// Other settings take their defaults.
    pub fn exponential(base: Duration, cap: Duration) -> BackoffConfigBuilder {
        BackoffConfigBuilder::new(
            Schedule::Exponential {
                base,
                factor_percent: DEFAULT_FACTOR_PERCENT,
            },
            cap,
        )
    }

    /// A linear schedule: `base`, `base + step`, ... capped at 20 s unless
    /// [`cap`](BackoffConfigBuilder::cap) says otherwise. Other settings take their defaults.
    pub fn linear(base: Duration, step: Duration) -> BackoffConfigBuilder {
        BackoffConfigBuilder::new(Schedule::Linear { base, step }, DEFAULT_CAP)
    }

    /// The same `delay` before every retry (the cap is `delay`). Other settings take their
    /// defaults; with no jitter this is the seed's fixed pause.
    pub fn constant(delay: Duration) -> BackoffConfigBuilder {
        BackoffConfigBuilder::new(Schedule::Constant { delay }, delay)
    }

    fn from_parts(
        schedule: Schedule,
        cap: Duration,
        jitter: Jitter,
        max_attempts: Option<u32>,
        max_elapsed: Option<Duration>,
        seed: u64,
    ) -> BackoffConfig {
        let (base, step) = match schedule {
            Schedule::Constant { delay } => (delay, Duration::ZERO),
            Schedule::Linear { base, step } => (base, step),
            Schedule::Exponential { base, .. } => (base, Duration::ZERO),
        };
        BackoffConfig {
            schedule,
            cap,
            jitter,
            max_attempts,
            max_elapsed,
            max_retry_after: cap,
            min_retry_after: Duration::ZERO,
            seed,
            base_ns: duration_to_nanos(base),
            step_ns: duration_to_nanos(step),
            cap_ns: duration_to_nanos(cap),
            max_retry_after_ns: duration_to_nanos(cap),
            min_retry_after_ns: 0,
        }
    }

    /// The same configuration with these bounds on a server's hint.
    fn with_hint_bounds(mut self, min: Duration, max: Duration) -> BackoffConfig {
        self.min_retry_after = min;
        self.max_retry_after = max;
        self.min_retry_after_ns = duration_to_nanos(min);
        self.max_retry_after_ns = duration_to_nanos(max);
        self
    }

    /// The schedule.
    #[inline]
    #[must_use]
    pub const fn schedule(&self) -> Schedule {
        self.schedule
    }

    /// The largest delay the schedule and every jitter can produce.
    #[inline]
    #[must_use]
    pub const fn cap(&self) -> Duration {
        self.cap
    }

    /// The jitter.
    #[inline]
    #[must_use]
    pub const fn jitter(&self) -> Jitter {
        self.jitter
    }

    /// The most attempts, the first one included; `None` = unlimited.
    #[inline]
    #[must_use]
    pub const fn max_attempts(&self) -> Option<u32> {
        self.max_attempts
    }

    /// The time budget from the first attempt; `None` = unlimited.
    #[inline]
    #[must_use]
    pub const fn max_elapsed(&self) -> Option<Duration> {
        self.max_elapsed
    }

    /// The largest delay a server's retry-after hint can ask for.
    #[inline]
    #[must_use]
    pub const fn max_retry_after(&self) -> Duration {
        self.max_retry_after
    }

    /// The shortest delay a server's retry-after hint can ask for (shorter hints are raised to
    /// it).
    #[inline]
    #[must_use]
    pub const fn min_retry_after(&self) -> Duration {
        self.min_retry_after
    }

    /// The seed of the jitter's [`Rng`].
    #[inline]
    #[must_use]
    pub const fn seed(&self) -> u64 {
        self.seed
    }

    /// The same configuration with another jitter seed (every seed is valid).
    #[inline]
    #[must_use]
    pub const fn with_seed(mut self, seed: u64) -> BackoffConfig {
        self.seed = seed;
        self
    }
}

/// Builds a [`BackoffConfig`]; [`build`](BackoffConfigBuilder::build) validates it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct BackoffConfigBuilder {
    schedule: Schedule,
    cap: Duration,
    factor_percent: Option<u32>,
    jitter: Jitter,
    max_attempts: Option<u32>,
    max_elapsed: Option<Duration>,
    max_retry_after: Option<Duration>,
    min_retry_after: Duration,
    seed: u64,
}

impl BackoffConfigBuilder {
    fn new(schedule: Schedule, cap: Duration) -> BackoffConfigBuilder {
        BackoffConfigBuilder {
            schedule,
            cap,
            factor_percent: None,
            jitter: Jitter::Full,
            max_attempts: Some(DEFAULT_MAX_ATTEMPTS),
            max_elapsed: None,
            max_retry_after: None,
            min_retry_after: DEFAULT_MIN_RETRY_AFTER,
            seed: 0,
        }
    }

    /// Growth per retry of an exponential schedule, in percent: 200 doubles (the default),
    /// 150 grows by half, 100 keeps the delay constant. Below 100 is rejected; on a linear or
    /// constant schedule it is a [`ConfigError::Conflict`].
    pub fn factor_percent(mut self, factor_percent: u32) -> Self {
        self.factor_percent = Some(factor_percent);
        self
    }

    /// The largest delay (default 20 s; for [`BackoffConfig::constant`], the delay itself).
    pub fn cap(mut self, cap: Duration) -> Self {
        self.cap = cap;
        self
    }

    /// The jitter (default [`Jitter::Full`]).
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// At most `n` attempts, the first one included (default 3): `n - 1` retries.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }

    /// No limit on the number of attempts (set [`max_elapsed`](Self::max_elapsed) instead).
    pub fn unlimited_attempts(mut self) -> Self {
        self.max_attempts = None;
        self
    }

    /// Schedule no retry after `first attempt + max_elapsed` (default: no limit).
    pub fn max_elapsed(mut self, max_elapsed: Duration) -> Self {
        self.max_elapsed = Some(max_elapsed);
        self
    }

    /// The longest delay a server's retry-after hint can impose (default: the cap, or
    /// `min_retry_after` if the cap is shorter). Longer hints are cut to this.
    pub fn max_retry_after(mut self, max_retry_after: Duration) -> Self {
        self.max_retry_after = Some(max_retry_after);
        self
    }

    /// The shortest delay a server's retry-after hint can ask for (default 1 ms,
    /// [`DEFAULT_MIN_RETRY_AFTER`]): shorter hints, `Retry-After: 0` included, are raised to
    /// it. Zero lets a hint of zero retry at once (the retry driver still yields to its
    /// executor first). See the module docs, *Server hints*.
    pub fn min_retry_after(mut self, min_retry_after: Duration) -> Self {
        self.min_retry_after = min_retry_after;
        self
    }

    /// The jitter's seed (default 0). The adapters' `Retry` mixes in per-instance randomness
    /// from the OS unless made deterministic; tests and simulations use constants.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    ///
    /// - [`ConfigError::Zero`]: an exponential schedule, or decorrelated jitter, with a zero
    ///   `base` (it would never grow); `max_attempts(0)`; a zero `max_elapsed`; an explicit
    ///   zero `max_retry_after`.
    /// - [`ConfigError::InvertedRange`]: `base` (or the constant delay) above `cap`; an
    ///   explicit `max_retry_after` below `min_retry_after`.
    /// - [`ConfigError::OutOfRange`]: `factor_percent` below 100.
    /// - [`ConfigError::Conflict`]: `factor_percent` on a linear or constant schedule.
    pub fn build(self) -> Result<BackoffConfig, ConfigError> {
        let schedule = match (self.schedule, self.factor_percent) {
            (Schedule::Exponential { base, .. }, Some(factor_percent)) => Schedule::Exponential {
                base,
                factor_percent,
            },
            (Schedule::Exponential { .. }, None) => self.schedule,
            (Schedule::Linear { .. }, Some(_)) => {
                return Err(ConfigError::Conflict {
                    field: "factor_percent",
                    other: "linear",
                    hint: "a growth factor only applies to an exponential schedule",
                })
            }
            (Schedule::Constant { .. }, Some(_)) => {
                return Err(ConfigError::Conflict {
                    field: "factor_percent",
                    other: "constant",
                    hint: "a growth factor only applies to an exponential schedule",
                })
            }
            (_, None) => self.schedule,
        };
        let (base, base_field) = match schedule {
            Schedule::Constant { delay } => (delay, "delay"),
            Schedule::Linear { base, .. } => (base, "base"),
            Schedule::Exponential {
                base,
                factor_percent,
            } => {
                if base.is_zero() {
                    return Err(ConfigError::Zero { field: "base" });
                }
                if factor_percent < 100 {
                    return Err(ConfigError::OutOfRange {
                        field: "factor_percent",
                        expected: "at least 100 (100 keeps the delay constant, 200 doubles it)",
                    });
                }
                (base, "base")
            }
        };
        if self.jitter == Jitter::Decorrelated && base.is_zero() {
            return Err(ConfigError::Zero { field: base_field });
        }
        if base > self.cap {
            return Err(ConfigError::InvertedRange {
                min: base_field,
                max: "cap",
            });
        }
        if self.max_attempts == Some(0) {
            return Err(ConfigError::Zero {
                field: "max_attempts",
            });
        }
        if self.max_elapsed.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::Zero {
                field: "max_elapsed",
            });
        }
        if self.max_retry_after.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::Zero {
                field: "max_retry_after",
            });
        }
        let max_retry_after = match self.max_retry_after {
            Some(max) if max < self.min_retry_after => {
                return Err(ConfigError::InvertedRange {
                    min: "min_retry_after",
                    max: "max_retry_after",
                })
            }
            Some(max) => max,
            // A cap below the floor (e.g. a zero constant delay) leaves hints at the floor.
            None => self.cap.max(self.min_retry_after),
        };
        Ok(BackoffConfig::from_parts(
            schedule,
            self.cap,
            self.jitter,
            self.max_attempts,
            self.max_elapsed,
            self.seed,
        )
        .with_hint_bounds(self.min_retry_after, max_retry_after))
    }
}

/// Counters of a [`Backoff`], across resets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BackoffStats {
    /// Retries scheduled (`RetryAt` answers and delays yielded by [`Backoff::delays`]).
    pub retries: u64,
    /// Retries whose delay came from a server hint.
    pub hints: u64,
    /// Hints longer than `max_retry_after`, cut to it.
    pub hints_capped: u64,
    /// Hints shorter than `min_retry_after`, raised to it.
    pub hints_raised: u64,
    /// Operations that gave up after `max_attempts`.
    pub gave_up_max_attempts: u64,
    /// Operations that gave up because the next retry would pass `max_elapsed`.
    pub gave_up_max_elapsed: u64,
    /// Calls to [`Backoff::reset`].
    pub resets: u64,
}

/// The backoff state machine for one operation and its retries. See the [module docs](self).
///
/// | group | methods |
/// | --- | --- |
/// | construct | [`new`](Self::new) |
/// | inputs | [`next_delay`](Self::next_delay), [`next_delay_with_hint`](Self::next_delay_with_hint) after each failed attempt |
/// | commands | [`reset`](Self::reset) to start a new operation |
/// | simulation | [`delays`](Self::delays) yields the same delays without a clock |
/// | getters | [`attempts`](Self::attempts), [`deadline`](Self::deadline), [`gave_up`](Self::gave_up), [`stats`](Self::stats), [`config`](Self::config) |
///
/// No timer and no events: the caller sleeps for the returned delay.
#[derive(Clone, Debug)]
pub struct Backoff {
    config: BackoffConfig,
    rng: Rng,
    clock: Monotonic,
    deadline: Option<Instant>,
    /// The un-jittered delay of the next retry, in ns; always `<= cap_ns`.
    next_ns: u64,
    /// The previous decorrelated sleep, in ns; always in `[base_ns, cap_ns]`.
    prev_ns: u64,
    /// Attempts made, the first included.
    attempts: u32,
    gave_up: Option<GiveUpReason>,
    stats: BackoffStats,
}

impl Backoff {
    /// A machine whose first attempt starts at `now`.
    #[must_use]
    pub fn new(config: BackoffConfig, now: Instant) -> Backoff {
        let mut backoff = Backoff {
            config,
            rng: Rng::new(config.seed),
            clock: Monotonic::new(now),
            deadline: None,
            next_ns: 0,
            prev_ns: 0,
            attempts: 1,
            gave_up: None,
            stats: BackoffStats::default(),
        };
        backoff.restart(now);
        backoff
    }

    fn restart(&mut self, now: Instant) {
        let c = &self.config;
        self.deadline = c.max_elapsed.map(|d| now + d);
        // `base_ns <= cap_ns` holds for every built config; `min` keeps it true regardless.
        self.next_ns = c.base_ns.min(c.cap_ns);
        self.prev_ns = self.next_ns;
        self.attempts = 1;
        self.gave_up = None;
    }

    /// Starts a new operation whose first attempt is at `now`: the attempt count, the schedule
    /// and the elapsed-time budget start over. The random sequence continues (it is not
    /// re-seeded), so consecutive operations get different jitter.
    pub fn reset(&mut self, now: Instant) {
        let now = self.clock.observe(now);
        self.restart(now);
        self.stats.resets = self.stats.resets.saturating_add(1);
    }

    /// The attempt at `now` failed: when to retry, or give up.
    #[inline]
    pub fn next_delay(&mut self, now: Instant) -> RetryDecision {
        let now = self.clock.observe(now);
        match self.step() {
            Ok(delay_ns) => self.schedule(now, delay_ns),
            Err(reason) => RetryDecision::GiveUp(reason),
        }
    }

    /// The attempt at `now` failed and the server asked to wait `retry_after`: retry after
    /// `max(clamp(retry_after, min_retry_after, max_retry_after), jittered schedule delay)`
    /// (see the module docs, *Server hints*). The hint counts as an attempt and the schedule
    /// advances one step, as without a hint.
    pub fn next_delay_with_hint(&mut self, now: Instant, retry_after: Duration) -> RetryDecision {
        let now = self.clock.observe(now);
        let scheduled_ns = match self.step() {
            Ok(d) => d,
            Err(reason) => return RetryDecision::GiveUp(reason),
        };
        let hint_ns = duration_to_nanos(retry_after);
        let (min, max) = (
            self.config.min_retry_after_ns,
            self.config.max_retry_after_ns,
        );
        // `min <= max` holds for every built config; `min(max)` last keeps the cap regardless.
        let hinted_ns = hint_ns.max(min).min(max);
        let decision = self.schedule(now, hinted_ns.max(scheduled_ns));
        if let RetryDecision::RetryAt(_) = decision {
            self.stats.hints = self.stats.hints.saturating_add(1);
            if hint_ns > max {
                self.stats.hints_capped = self.stats.hints_capped.saturating_add(1);
            } else if hint_ns < min {
                self.stats.hints_raised = self.stats.hints_raised.saturating_add(1);
            }
        }
        decision
    }

    /// An iterator over the next delays, ignoring the elapsed-time budget (there is no clock):
    /// for simulations and schedules computed ahead. It shares the engine with
    /// [`next_delay`](Self::next_delay): each item counts as an attempt, and it ends when
    /// `max_attempts` is reached (never, if unlimited).
    pub fn delays(&mut self) -> Delays<'_> {
        Delays { backoff: self }
    }

    /// Attempts made or scheduled in the current operation, the first one included (1 after
    /// [`new`](Self::new) or [`reset`](Self::reset)).
    #[inline]
    #[must_use]
    pub const fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The instant after which no retry is scheduled (`first attempt + max_elapsed`), if any.
    #[inline]
    #[must_use]
    pub const fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Why the current operation gave up, if it did.
    #[inline]
    #[must_use]
    pub const fn gave_up(&self) -> Option<GiveUpReason> {
        self.gave_up
    }

    /// The configuration.
    #[inline]
    #[must_use]
    pub const fn config(&self) -> &BackoffConfig {
        &self.config
    }

    /// A snapshot of the counters.
    #[inline]
    #[must_use]
    pub const fn stats(&self) -> BackoffStats {
        self.stats
    }

    /// The engine: checks the attempt limit, draws the next (jittered) delay and advances the
    /// schedule. Does not count the attempt (see [`Self::commit`]).
    #[inline]
    fn step(&mut self) -> Result<u64, GiveUpReason> {
        if let Some(reason) = self.gave_up {
            return Err(reason);
        }
        if let Some(max) = self.config.max_attempts {
            if self.attempts >= max {
                return Err(self.give_up(GiveUpReason::MaxAttempts));
            }
        }
        let c = &self.config;
        let d = self.next_ns;
        if d < c.cap_ns {
            self.next_ns = match c.schedule {
                Schedule::Constant { .. } => d,
                Schedule::Linear { .. } => d.saturating_add(c.step_ns).min(c.cap_ns),
                Schedule::Exponential { factor_percent, .. } => {
                    grow(d, factor_percent).min(c.cap_ns)
                }
            };
        }
        Ok(match c.jitter {
            Jitter::None => d,
            Jitter::Full => self.rng.up_to(d),
            Jitter::Equal => {
                let half = d >> 1;
                half + self.rng.up_to(d - half)
            }
            Jitter::Decorrelated => {
                let high = self.prev_ns.saturating_mul(3);
                let sleep = self.rng.between(c.base_ns, high).min(c.cap_ns);
                self.prev_ns = sleep;
                sleep
            }
        })
    }

    #[inline]
    fn schedule(&mut self, now: Instant, delay_ns: u64) -> RetryDecision {
        let at = Instant::from_nanos(now.as_nanos().saturating_add(delay_ns));
        if let Some(deadline) = self.deadline {
            if at > deadline {
                return RetryDecision::GiveUp(self.give_up(GiveUpReason::MaxElapsed));
            }
        }
        self.commit();
        RetryDecision::RetryAt(at)
    }

    #[inline]
    fn commit(&mut self) {
        self.attempts = self.attempts.saturating_add(1);
        self.stats.retries = self.stats.retries.saturating_add(1);
    }

    #[cold]
    fn give_up(&mut self, reason: GiveUpReason) -> GiveUpReason {
        self.gave_up = Some(reason);
        let counter = match reason {
            GiveUpReason::MaxAttempts => &mut self.stats.gave_up_max_attempts,
            GiveUpReason::MaxElapsed => &mut self.stats.gave_up_max_elapsed,
        };
        *counter = counter.saturating_add(1);
        reason
    }
}

/// `ceil(d * factor_percent / 100)`, saturating at `u64::MAX` nanoseconds.
#[inline]
fn grow(d: u64, factor_percent: u32) -> u64 {
    match d.checked_mul(u64::from(factor_percent)) {
        // Division by a constant compiles to a multiply and a shift.
        Some(p) => p / 100 + u64::from(p % 100 != 0),
        None => grow_wide(d, factor_percent),
    }
}

#[cold]
fn grow_wide(d: u64, factor_percent: u32) -> u64 {
    let p = u128::from(d) * u128::from(factor_percent);
    let q = p / 100 + u128::from(p % 100 != 0);
    u64::try_from(q).unwrap_or(u64::MAX)
}

/// The delays of a [`Backoff`], without a clock: see [`Backoff::delays`].
#[derive(Debug)]
#[must_use = "iterators are lazy"]
pub struct Delays<'a> {
    backoff: &'a mut Backoff,
}

impl Iterator for Delays<'_> {
    type Item = Duration;

    #[inline]
    fn next(&mut self) -> Option<Duration> {
        let delay_ns = self.backoff.step().ok()?;
        self.backoff.commit();
        Some(Duration::from_nanos(delay_ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grow_rounds_up_and_saturates() {
        assert_eq!(grow(1, 150), 2);
        assert_eq!(grow(2, 150), 3);
        assert_eq!(grow(100, 200), 200);
        assert_eq!(grow(7, 100), 7);
        assert_eq!(grow(u64::MAX, 200), u64::MAX);
        assert_eq!(grow(u64::MAX / 2, u32::MAX), u64::MAX);
        assert_eq!(grow(u64::MAX / 4, 200), u64::MAX / 2 - 1);
    }
}
