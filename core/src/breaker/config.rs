//! The breaker's validated configuration and its builder.

use core::time::Duration;

use crate::backoff::{BackoffConfig, Jitter};
use crate::error::ConfigError;
use crate::time::duration_to_nanos;

/// The largest count-based window (in outcomes) a build without the `alloc` feature accepts:
/// outcomes are packed two bits each into an inline array of 16 words.
pub const MAX_INLINE_COUNT_WINDOW: u32 = 512;
/// The largest number of time-window buckets a build without the `alloc` feature accepts.
pub const MAX_INLINE_TIME_BUCKETS: u32 = 32;

/// The largest count-based window this build accepts (2^24 outcomes = 4 MiB with `alloc`;
/// [`MAX_INLINE_COUNT_WINDOW`] without).
#[cfg(feature = "alloc")]
pub const MAX_COUNT_WINDOW: u32 = 1 << 24;
/// The largest count-based window this build accepts (2^24 outcomes = 4 MiB with `alloc`;
/// [`MAX_INLINE_COUNT_WINDOW`] without).
#[cfg(not(feature = "alloc"))]
pub const MAX_COUNT_WINDOW: u32 = MAX_INLINE_COUNT_WINDOW;

/// The largest number of time-window buckets this build accepts (65 536 with `alloc`;
/// [`MAX_INLINE_TIME_BUCKETS`] without).
#[cfg(feature = "alloc")]
pub const MAX_TIME_BUCKETS: u32 = 1 << 16;
/// The largest number of time-window buckets this build accepts (65 536 with `alloc`;
/// [`MAX_INLINE_TIME_BUCKETS`] without).
#[cfg(not(feature = "alloc"))]
pub const MAX_TIME_BUCKETS: u32 = MAX_INLINE_TIME_BUCKETS;

#[cfg(feature = "alloc")]
const COUNT_WINDOW_RANGE: &str = "at most 16 777 216 outcomes (MAX_COUNT_WINDOW)";
#[cfg(not(feature = "alloc"))]
const COUNT_WINDOW_RANGE: &str =
    "at most 512 outcomes without the `alloc` feature (MAX_COUNT_WINDOW); enable `alloc` for more";
#[cfg(feature = "alloc")]
const TIME_BUCKETS_RANGE: &str = "at most 65 536 buckets (MAX_TIME_BUCKETS)";
#[cfg(not(feature = "alloc"))]
const TIME_BUCKETS_RANGE: &str =
    "at most 32 buckets without the `alloc` feature (MAX_TIME_BUCKETS); widen the buckets or enable `alloc`";

/// The sliding window the rate policies (failure rate, slow-call rate) are judged over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlidingWindow {
    /// The last `size` outcomes (Resilience4j `COUNT_BASED`).
    Count {
        /// How many outcomes the window holds.
        size: u32,
    },
    /// The outcomes of the last `buckets` whole buckets of `bucket_width` each, the current
    /// (partial) bucket included (Resilience4j `TIME_BASED` uses `buckets` one-second buckets).
    Time {
        /// How many buckets the window holds.
        buckets: u32,
        /// The width of one bucket.
        bucket_width: Duration,
    },
}

/// How long the breaker stays open after a trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenDuration {
    /// The same duration after every trip (Resilience4j `waitDurationInOpenState`). For a
    /// fixed but jittered duration use `Exponential` with `factor: 1` and `cap == base`.
    Fixed(Duration),
    /// `base` after the first trip, multiplied by `factor` after each further trip without the
    /// breaker closing in between (a failed half-open probe), at most `cap`, then jittered.
    /// Back to `base` once the breaker closes. The durations are the delays of a
    /// [`Backoff`](crate::backoff::Backoff) built from these fields (exponential by
    /// `factor * 100` percent, saturating at `u32::MAX` percent, unlimited attempts, the
    /// breaker's seed), so the breaker and a retry loop grow and jitter alike.
    Exponential {
        /// The first open duration.
        base: Duration,
        /// The multiplier per consecutive trip (integer, at least 1).
        factor: u32,
        /// The longest scheduled open duration (before jitter).
        cap: Duration,
        /// Random spread applied to each scheduled duration: backoff's [`Jitter`] (AWS,
        /// "Exponential Backoff and Jitter"), `None`, `Full` (uniform in `0..=d`, can be zero:
        /// the breaker then goes half-open at once) or `Equal` (`d/2` plus uniform in
        /// `0..=d/2`); `Decorrelated` needs a retry loop's previous delay and is refused by
        /// the builder.
        jitter: Jitter,
    },
}

/// A validated circuit-breaker configuration: see [`BreakerConfig::builder`].
///
/// Defaults follow Resilience4j's `BreakerConfig`: failure-rate threshold 50 %, a
/// count-based window of 100 calls, minimum 100 calls, 60 s open, 10 permitted calls in
/// half-open, slow-call threshold 60 s, slow-call-rate threshold 100 %, no maximum wait in
/// half-open. The consecutive-failures policy (not in Resilience4j; Polly's classic breaker
/// and the seed's) is off by default. keel's own: an abandoned call counts as a failure once it
/// has run [`DEFAULT_ABANDON_THRESHOLD`] (1 s), see
/// [`abandon_threshold`](BreakerConfigBuilder::abandon_threshold).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) window: SlidingWindow,
    pub(crate) minimum_calls: u32,
    pub(crate) failure_rate_threshold: Option<u8>,
    pub(crate) slow_call_rate_threshold: Option<u8>,
    pub(crate) slow_call_duration: Duration,
    pub(crate) open_duration: OpenDuration,
    pub(crate) permitted_calls_in_half_open: u32,
    pub(crate) max_wait_in_half_open: Option<Duration>,
    pub(crate) abandon_threshold: Duration,
    pub(crate) seed: u64,
}

/// Default abandon threshold: a call dropped before it finished, after running at least 1 s,
/// counts as a failure (see
/// [`abandon_threshold`](BreakerConfigBuilder::abandon_threshold) for why 1 s).
pub const DEFAULT_ABANDON_THRESHOLD: Duration = Duration::from_secs(1);

impl Default for BreakerConfig {
    /// The Resilience4j defaults (see the type's docs).
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: None,
            window: SlidingWindow::Count { size: 100 },
            minimum_calls: 100,
            failure_rate_threshold: Some(50),
            slow_call_rate_threshold: Some(100),
            slow_call_duration: Duration::from_secs(60),
            open_duration: OpenDuration::Fixed(Duration::from_secs(60)),
            permitted_calls_in_half_open: 10,
            max_wait_in_half_open: None,
            abandon_threshold: DEFAULT_ABANDON_THRESHOLD,
            seed: 0x6b65_656c_6272_6b72,
        }
    }
}

impl BreakerConfig {
    /// A builder starting from the Resilience4j defaults.
    pub fn builder() -> BreakerConfigBuilder {
        BreakerConfigBuilder {
            config: BreakerConfig::default(),
        }
    }

    /// A builder for the classic breaker: trip after `n` consecutive failures, nothing else
    /// (the failure-rate and slow-call-rate policies are off, so no window is allocated).
    /// `n == 0` is rejected by `build()`.
    ///
    /// ```
    /// use keel_core::breaker::BreakerConfig;
    /// let config = BreakerConfig::consecutive_failures(5).build().unwrap();
    /// assert_eq!(config.consecutive_failures_threshold(), Some(5));
    /// assert_eq!(config.failure_rate_threshold(), None);
    /// ```
    pub fn consecutive_failures(n: u32) -> BreakerConfigBuilder {
        BreakerConfig::builder()
            .consecutive_failures(n)
            .disable_failure_rate()
            .disable_slow_call_rate()
    }

    /// Trip after this many consecutive failures, if that policy is on.
    #[must_use]
    pub fn consecutive_failures_threshold(&self) -> Option<u32> {
        self.consecutive_failures
    }

    /// The sliding window of the rate policies.
    #[must_use]
    pub fn sliding_window(&self) -> SlidingWindow {
        self.window
    }

    /// Calls the window must hold before a rate is judged.
    #[must_use]
    pub fn minimum_calls(&self) -> u32 {
        self.minimum_calls
    }

    /// Trip when the failure rate (percent) reaches this, if that policy is on.
    #[must_use]
    pub fn failure_rate_threshold(&self) -> Option<u8> {
        self.failure_rate_threshold
    }

    /// Trip when the slow-call rate (percent) reaches this, if that policy is on.
    #[must_use]
    pub fn slow_call_rate_threshold(&self) -> Option<u8> {
        self.slow_call_rate_threshold
    }

    /// A call lasting at least this long is slow.
    #[must_use]
    pub fn slow_call_duration_threshold(&self) -> Duration {
        self.slow_call_duration
    }

    /// How long the breaker stays open.
    #[must_use]
    pub fn open_duration(&self) -> OpenDuration {
        self.open_duration
    }

    /// Probes admitted while half-open (and successes needed to close).
    #[must_use]
    pub fn permitted_calls_in_half_open(&self) -> u32 {
        self.permitted_calls_in_half_open
    }

    /// The longest the breaker stays half-open before reopening, if bounded.
    #[must_use]
    pub fn max_wait_in_half_open(&self) -> Option<Duration> {
        self.max_wait_in_half_open
    }

    /// A call abandoned (dropped before its outcome was reported) after running at least this
    /// long counts as a failure; a shorter one is ignored.
    #[must_use]
    pub fn abandon_threshold(&self) -> Duration {
        self.abandon_threshold
    }

    /// The seed of the jitter generator.
    #[must_use]
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The same configuration with another jitter seed (every seed is valid).
    #[must_use]
    pub const fn with_seed(mut self, seed: u64) -> BreakerConfig {
        self.seed = seed;
        self
    }

    /// The [`Backoff`](crate::backoff::Backoff) schedule of an exponential open duration
    /// (`None` for a fixed one): exponential from `base` by `factor * 100` percent (saturating
    /// at `u32::MAX` percent), capped at `cap`, with the open duration's jitter and this
    /// config's seed, unlimited attempts. `base` and `cap` are read in whole nanoseconds, as
    /// the breaker's clock does.
    pub(crate) fn open_backoff(&self) -> Result<Option<BackoffConfig>, ConfigError> {
        let OpenDuration::Exponential {
            base,
            factor,
            cap,
            jitter,
        } = self.open_duration
        else {
            return Ok(None);
        };
        let nanos = |d: Duration| Duration::from_nanos(duration_to_nanos(d));
        BackoffConfig::exponential(nanos(base), nanos(cap))
            .factor_percent(factor.saturating_mul(100))
            .jitter(jitter)
            .unlimited_attempts()
            .seed(self.seed)
            .build()
            .map(Some)
    }

    pub(crate) fn window_needed(&self) -> bool {
        self.failure_rate_threshold.is_some() || self.slow_call_rate_threshold.is_some()
    }
}

/// Builds a [`BreakerConfig`]; every setter is checked by [`build`](Self::build).
#[derive(Clone, Copy, Debug)]
#[must_use = "a builder does nothing until `build()` is called"]
pub struct BreakerConfigBuilder {
    config: BreakerConfig,
}

impl BreakerConfigBuilder {
    /// Trip after `n` consecutive failures (off by default). Must be at least 1.
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.config.consecutive_failures = Some(n);
        self
    }

    /// Turn the consecutive-failures policy off.
    pub fn disable_consecutive_failures(mut self) -> Self {
        self.config.consecutive_failures = None;
        self
    }

    /// Judge rates over the last `size` outcomes (default: 100).
    pub fn count_window(mut self, size: u32) -> Self {
        self.config.window = SlidingWindow::Count { size };
        self
    }

    /// Judge rates over the last `buckets` buckets of `bucket_width` each.
    pub fn time_window(mut self, buckets: u32, bucket_width: Duration) -> Self {
        self.config.window = SlidingWindow::Time {
            buckets,
            bucket_width,
        };
        self
    }

    /// Judge rates over `secs` one-second buckets (Resilience4j's
    /// `TIME_BASED` window of that many seconds).
    pub fn time_window_secs(self, secs: u32) -> Self {
        self.time_window(secs, Duration::from_secs(1))
    }

    /// Do not judge a rate until the window holds this many calls (default: 100).
    pub fn minimum_calls(mut self, n: u32) -> Self {
        self.config.minimum_calls = n;
        self
    }

    /// Trip when at least `percent` % of the window's calls failed (1..=100, default 50).
    pub fn failure_rate_threshold(mut self, percent: u8) -> Self {
        self.config.failure_rate_threshold = Some(percent);
        self
    }

    /// Turn the failure-rate policy off.
    pub fn disable_failure_rate(mut self) -> Self {
        self.config.failure_rate_threshold = None;
        self
    }

    /// Trip when at least `percent` % of the window's calls were slow (1..=100, default 100).
    /// With this policy on, one slow half-open probe also reopens the breaker.
    pub fn slow_call_rate_threshold(mut self, percent: u8) -> Self {
        self.config.slow_call_rate_threshold = Some(percent);
        self
    }

    /// Turn the slow-call-rate policy off (slow calls are still counted in the stats).
    pub fn disable_slow_call_rate(mut self) -> Self {
        self.config.slow_call_rate_threshold = None;
        self
    }

    /// A call lasting at least `d` (from admission to outcome) is slow (default 60 s).
    pub fn slow_call_duration_threshold(mut self, d: Duration) -> Self {
        self.config.slow_call_duration = d;
        self
    }

    /// Stay open for `d` after every trip (default 60 s).
    pub fn open_duration(mut self, d: Duration) -> Self {
        self.config.open_duration = OpenDuration::Fixed(d);
        self
    }

    /// Stay open `base`, then `base * factor`, ... up to `cap` while trips follow each other
    /// without the breaker closing; back to `base` once it closes.
    pub fn exponential_open_duration(
        mut self,
        base: Duration,
        factor: u32,
        cap: Duration,
        jitter: Jitter,
    ) -> Self {
        self.config.open_duration = OpenDuration::Exponential {
            base,
            factor,
            cap,
            jitter,
        };
        self
    }

    /// Admit at most `n` probes while half-open; close after `n` successes (default 10).
    pub fn permitted_calls_in_half_open(mut self, n: u32) -> Self {
        self.config.permitted_calls_in_half_open = n;
        self
    }

    /// Reopen if still half-open after `d` (default: wait for the probes indefinitely).
    /// Bounds the damage of a probe whose outcome is never reported.
    pub fn max_wait_in_half_open(mut self, d: Duration) -> Self {
        self.config.max_wait_in_half_open = Some(d);
        self
    }

    /// A call abandoned before it finished (its future dropped: a timeout *outside* the
    /// breaker, a cancelled request) counts as a **failure** once it has run at least `d`
    /// (default 1 s, [`DEFAULT_ABANDON_THRESHOLD`]); abandoned sooner it is **ignored** (the
    /// caller lost interest; nothing is known about the dependency) and frees its half-open
    /// probe slot. See [`CircuitBreaker::on_abandoned`](crate::breaker::CircuitBreaker::on_abandoned).
    ///
    /// Why: with the timeout outside the breaker (`timeout(d, breaker.call(fut))`, the order
    /// that makes the timeout also cover waiting in a queue), every call to a hanging
    /// dependency ends by being dropped. Counting only completed calls (Resilience4j and
    /// Polly treat cancellation as "not recorded": a `CancellationException` releases the
    /// permit, an `OperationCanceledException` is not handled by default) or only calls past
    /// the 60 s slow-call threshold means the breaker never opens on the outage it exists
    /// for. Why 1 s: it is Resilience4j `TimeLimiter`'s default timeout and well below the
    /// timeouts abandoned calls usually come from (Envoy's route timeout 15 s, Polly's 30 s,
    /// typical client timeouts of 1-30 s), so an outer timeout of 1 s or more is counted, while
    /// a healthy call (tens of milliseconds) cancelled by a caller that went away, or the
    /// loser of a hedged request, is not. Set it to (or below) your outer timeout if that is
    /// shorter; `Duration::MAX` never counts abandoned calls; zero counts every one.
    pub fn abandon_threshold(mut self, d: Duration) -> Self {
        self.config.abandon_threshold = d;
        self
    }

    /// Seed of the jitter generator. The runtime `Breaker` (keel-tokio, keel-smol, ...) mixes
    /// OS randomness into it, so processes sharing a configuration do not reopen in step;
    /// `SharedBreaker` / `CircuitBreaker` built by hand use it as given (reproducible).
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = seed;
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Zero`] for a zero window, bucket width, minimum calls, open duration,
    /// factor, probe count, consecutive-failures threshold or maximum half-open wait;
    /// [`ConfigError::OutOfRange`] for a rate outside 1..=100 or a window larger than this
    /// build supports; [`ConfigError::Conflict`] for a minimum above a count window's size or
    /// no trip policy at all; [`ConfigError::InvertedRange`] for a cap below the base;
    /// [`ConfigError::OutOfRange`] for [`Jitter::Decorrelated`] on the open duration;
    /// [`ConfigError::Overflow`] for a time window longer than about 584 years.
    pub fn build(self) -> Result<BreakerConfig, ConfigError> {
        let c = self.config;
        if c.consecutive_failures == Some(0) {
            return Err(ConfigError::Zero {
                field: "consecutive_failures",
            });
        }
        for (field, rate) in [
            ("failure_rate_threshold", c.failure_rate_threshold),
            ("slow_call_rate_threshold", c.slow_call_rate_threshold),
        ] {
            if let Some(r) = rate {
                if !(1..=100).contains(&r) {
                    return Err(ConfigError::OutOfRange {
                        field,
                        expected: "a percentage between 1 and 100",
                    });
                }
            }
        }
        if c.consecutive_failures.is_none() && !c.window_needed() {
            return Err(ConfigError::Conflict {
                field: "failure_rate_threshold",
                other: "consecutive_failures",
                hint: "every trip policy is off so the breaker could never open; enable one, or \
                       use `disable()` on the breaker if that is what you want",
            });
        }
        if c.minimum_calls == 0 {
            return Err(ConfigError::Zero {
                field: "minimum_calls",
            });
        }
        match c.window {
            SlidingWindow::Count { size } => {
                if size == 0 {
                    return Err(ConfigError::Zero {
                        field: "sliding_window_size",
                    });
                }
                if size > MAX_COUNT_WINDOW {
                    return Err(ConfigError::OutOfRange {
                        field: "sliding_window_size",
                        expected: COUNT_WINDOW_RANGE,
                    });
                }
                if c.window_needed() && c.minimum_calls > size {
                    return Err(ConfigError::Conflict {
                        field: "minimum_calls",
                        other: "sliding_window_size",
                        hint: "a count window never holds more than its size, so the rate would \
                               never be judged; lower minimum_calls or widen the window",
                    });
                }
            }
            SlidingWindow::Time {
                buckets,
                bucket_width,
            } => {
                if buckets == 0 {
                    return Err(ConfigError::Zero {
                        field: "sliding_window_size",
                    });
                }
                if bucket_width.is_zero() {
                    return Err(ConfigError::Zero {
                        field: "bucket_width",
                    });
                }
                if buckets > MAX_TIME_BUCKETS {
                    return Err(ConfigError::OutOfRange {
                        field: "sliding_window_size",
                        expected: TIME_BUCKETS_RANGE,
                    });
                }
                let width = bucket_width.as_nanos();
                if width.saturating_mul(u128::from(buckets)) > u128::from(u64::MAX) {
                    return Err(ConfigError::Overflow {
                        field: "bucket_width",
                        hint: "buckets * bucket_width must stay under about 584 years; use \
                               fewer or narrower buckets",
                    });
                }
            }
        }
        match c.open_duration {
            OpenDuration::Fixed(d) => {
                if d.is_zero() {
                    return Err(ConfigError::Zero {
                        field: "open_duration",
                    });
                }
            }
            OpenDuration::Exponential {
                base,
                factor,
                cap,
                jitter,
            } => {
                if jitter == Jitter::Decorrelated {
                    return Err(ConfigError::OutOfRange {
                        field: "jitter",
                        expected: "Jitter::None, Full or Equal for an open duration \
                                   (Decorrelated jitter needs a retry loop's previous delay)",
                    });
                }
                if base.is_zero() {
                    return Err(ConfigError::Zero {
                        field: "open_duration_base",
                    });
                }
                if factor == 0 {
                    return Err(ConfigError::Zero {
                        field: "open_duration_factor",
                    });
                }
                if duration_to_nanos(cap) < duration_to_nanos(base) {
                    return Err(ConfigError::InvertedRange {
                        min: "open_duration_base",
                        max: "open_duration_cap",
                    });
                }
            }
        }
        // The backoff schedule the breaker draws its open durations from: the checks above
        // leave it nothing to refuse; built here so `CircuitBreaker::new` never meets one that
        // fails.
        c.open_backoff()?;
        if c.permitted_calls_in_half_open == 0 {
            return Err(ConfigError::Zero {
                field: "permitted_calls_in_half_open",
            });
        }
        if c.max_wait_in_half_open == Some(Duration::ZERO) {
            return Err(ConfigError::Zero {
                field: "max_wait_in_half_open",
            });
        }
        Ok(c)
    }
}
