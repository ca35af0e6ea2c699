//! Backoff configuration: the schedules, the jitter, the defaults and the validating builder.
//! The machine that uses them is [`Backoff`](super::Backoff).

use core::time::Duration;

use crate::error::ConfigError;
use crate::time::duration_to_nanos;

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
/// See the [module docs](super) for the exact formulas and floors. Every variant stays within
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

/// A validated backoff configuration. Build one with [`BackoffConfig::builder`],
/// [`BackoffConfig::exponential`], [`BackoffConfig::linear`] or [`BackoffConfig::constant`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffConfig {
    pub(super) schedule: Schedule,
    pub(super) cap: Duration,
    pub(super) jitter: Jitter,
    pub(super) max_attempts: Option<u32>,
    pub(super) max_elapsed: Option<Duration>,
    pub(super) max_retry_after: Duration,
    pub(super) min_retry_after: Duration,
    pub(super) seed: u64,
    // Pre-computed nanoseconds for the hot path.
    pub(super) base_ns: u64,
    pub(super) step_ns: u64,
    pub(super) cap_ns: u64,
    pub(super) max_retry_after_ns: u64,
    pub(super) min_retry_after_ns: u64,
}

impl Default for BackoffConfig {
    /// The AWS standard-mode defaults (see the [module docs](super)), seed 0.
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

    /// The seed of the jitter's PRNG.
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
