//! The adaptive limit's validated configuration and its builder.

use core::time::Duration;

use crate::error::ConfigError;

/// Default lower bound of the limit: 1 (Netflix `VegasLimit`/`AIMDLimit` `minLimit`).
pub const DEFAULT_MIN_LIMIT: u32 = 1;
/// Default upper bound of the limit: 1000 (Envoy `max_concurrency_limit`, Netflix
/// `maxConcurrency`).
pub const DEFAULT_MAX_LIMIT: u32 = 1000;
/// Default starting limit: 20 (Netflix `initialLimit`).
pub const DEFAULT_INITIAL_LIMIT: u32 = 20;
/// Default sample window: 100 ms (the `concurrency_update_interval` of Envoy's documented
/// example); a window is never shorter than two minimum RTTs.
pub const DEFAULT_WINDOW: Duration = Duration::from_millis(100);
/// Default number of samples a window needs before it may move the minimum RTT: 10.
pub const DEFAULT_MIN_SAMPLES: u32 = 10;
/// Default period of the minimum-RTT re-measurement: 60 s (Envoy `min_rtt_calc_params.interval`).
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(60);

/// Parameters of keel's gradient controller (the default). See the [module docs](super).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GradientParams {
    /// The queue the controller aims to keep, in percent of the limit (at least one request).
    /// Default 5: a queue is what keeps the servers busy between arrivals, but every queued
    /// request adds latency, and the target is to sit within 10 % of Little's law.
    pub queue_target_percent: u8,
    /// How much of the measured excess queue one window removes, in percent. Default 50: the
    /// smoothing Netflix's gradient limits use (`smoothing 0.2` per sample) scaled to a
    /// window, and half a step never overshoots a correct estimate.
    pub gain_percent: u8,
    /// The factor applied on a window with dropped or timed-out requests, in percent.
    /// Default 90 (Netflix `AIMDLimit` `backoffRatio 0.9`).
    pub backoff_percent: u8,
}

impl GradientParams {
    /// The defaults, in a `const` for [`AdaptiveConfig::builder`].
    const DEFAULT: GradientParams = GradientParams {
        queue_target_percent: 5,
        gain_percent: 50,
        backoff_percent: 90,
    };
}

impl Default for GradientParams {
    fn default() -> Self {
        GradientParams::DEFAULT
    }
}

/// Parameters of the Vegas-style controller (TCP Vegas, Brakmo and Peterson 1994, as Netflix's
/// `VegasLimit` applies it): `alpha = 3 log10(limit)`, `beta = 6 log10(limit)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VegasParams {
    /// Multiplier of `log10(limit)` below which the queue is "too small" (Netflix 3).
    pub alpha: u8,
    /// Multiplier of `log10(limit)` above which the queue is "too large" (Netflix 6).
    pub beta: u8,
    /// The factor applied on a window with dropped or timed-out requests, in percent
    /// (default 90).
    pub backoff_percent: u8,
}

impl Default for VegasParams {
    fn default() -> Self {
        VegasParams {
            alpha: 3,
            beta: 6,
            backoff_percent: 90,
        }
    }
}

/// Parameters of the AIMD controller (Netflix `AIMDLimit`, with a slow start).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AimdParams {
    /// Added to the limit after a limit-bound window without loss (default 1).
    pub increase: u32,
    /// The factor applied on a window with dropped or timed-out requests, in percent
    /// (Netflix `backoffRatio 0.9`, default 90).
    pub backoff_percent: u8,
    /// A success slower than this counts as a drop (Netflix `timeout`, default 5 s).
    pub timeout: Duration,
}

impl Default for AimdParams {
    fn default() -> Self {
        AimdParams {
            increase: 1,
            backoff_percent: 90,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Which controller moves the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// keel's gradient controller (the default): a queue estimate from a robust minimum RTT.
    Gradient(GradientParams),
    /// A Vegas-style controller: step the limit by `log10(limit)` to keep the queue between
    /// `alpha` and `beta`.
    Vegas(VegasParams),
    /// Additive increase, multiplicative decrease on loss.
    Aimd(AimdParams),
}

impl Default for Algorithm {
    fn default() -> Self {
        Algorithm::Gradient(GradientParams::default())
    }
}

/// A validated adaptive-limit configuration: see [`AdaptiveConfig::builder`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AdaptiveConfig {
    pub(crate) min_limit: u32,
    pub(crate) max_limit: u32,
    pub(crate) initial_limit: u32,
    pub(crate) window: Duration,
    pub(crate) min_samples: u32,
    pub(crate) probe_interval: Option<Duration>,
    pub(crate) algorithm: Algorithm,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        AdaptiveConfig::DEFAULT
    }
}

impl AdaptiveConfig {
    /// The defaults, written once: [`Default`] and [`builder`](Self::builder) start here.
    const DEFAULT: AdaptiveConfig = AdaptiveConfig {
        min_limit: DEFAULT_MIN_LIMIT,
        max_limit: DEFAULT_MAX_LIMIT,
        initial_limit: DEFAULT_INITIAL_LIMIT,
        window: DEFAULT_WINDOW,
        min_samples: DEFAULT_MIN_SAMPLES,
        probe_interval: Some(DEFAULT_PROBE_INTERVAL),
        algorithm: Algorithm::Gradient(GradientParams::DEFAULT),
    };

    /// A builder starting from the defaults (see the [module docs](super)).
    pub const fn builder() -> AdaptiveConfigBuilder {
        AdaptiveConfigBuilder {
            config: AdaptiveConfig::DEFAULT,
        }
    }

    /// The lowest limit the controller may set.
    #[must_use]
    pub const fn min_limit(&self) -> u32 {
        self.min_limit
    }

    /// The highest limit the controller may set.
    #[must_use]
    pub const fn max_limit(&self) -> u32 {
        self.max_limit
    }

    /// The limit before the first sample.
    #[must_use]
    pub const fn initial_limit(&self) -> u32 {
        self.initial_limit
    }

    /// The shortest sample window.
    #[must_use]
    pub const fn window(&self) -> Duration {
        self.window
    }

    /// Samples a window needs before it may move the minimum RTT.
    #[must_use]
    pub const fn min_samples(&self) -> u32 {
        self.min_samples
    }

    /// The period of the minimum-RTT re-measurement, if on.
    #[must_use]
    pub const fn probe_interval(&self) -> Option<Duration> {
        self.probe_interval
    }

    /// The controller.
    #[must_use]
    pub const fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

/// Builds an [`AdaptiveConfig`]; every setter is checked by [`build`](Self::build).
#[derive(Clone, Copy, Debug)]
#[must_use = "a builder does nothing until `build()` is called"]
pub struct AdaptiveConfigBuilder {
    /// The values set so far, unchecked until [`build`](Self::build).
    config: AdaptiveConfig,
}

impl AdaptiveConfigBuilder {
    /// The lowest limit (default 1). Must be at least 1: a limit of 0 admits nothing and so
    /// never measures anything again.
    pub const fn min_limit(mut self, min: u32) -> Self {
        self.config.min_limit = min;
        self
    }

    /// The highest limit (default 1000).
    pub const fn max_limit(mut self, max: u32) -> Self {
        self.config.max_limit = max;
        self
    }

    /// The limit before the first sample (default 20, Netflix's). It must lie within
    /// `[min_limit, max_limit]`: [`build`](Self::build) rejects it otherwise rather than
    /// silently clamping it. Use 1 with the slow start to find the limit from scratch.
    pub const fn initial_limit(mut self, initial: u32) -> Self {
        self.config.initial_limit = initial;
        self
    }

    /// The shortest sample window (default 100 ms). A window also lasts at least two
    /// minimum RTTs, so slow services still get several samples per window.
    pub const fn window(mut self, window: Duration) -> Self {
        self.config.window = window;
        self
    }

    /// Samples a window needs before it may move the minimum RTT (default 10).
    pub const fn min_samples(mut self, n: u32) -> Self {
        self.config.min_samples = n;
        self
    }

    /// Re-measure the minimum RTT this often (default 60 s, Envoy's interval): the limit is
    /// halved for one window so any queue drains, and that window's mean RTT becomes the new
    /// minimum. `None` turns the timer off (the minimum is then only re-measured when the
    /// latency stops answering to cuts of the limit).
    pub const fn probe_interval(mut self, interval: Option<Duration>) -> Self {
        self.config.probe_interval = interval;
        self
    }

    /// The controller (default [`Algorithm::Gradient`] with its defaults).
    pub const fn algorithm(mut self, algorithm: Algorithm) -> Self {
        self.config.algorithm = algorithm;
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    ///
    /// - [`ConfigError::Zero`] for a zero `min_limit`, `window`, `min_samples`,
    ///   `probe_interval` (use `None` to turn it off) or a zero AIMD `increase` or `timeout`;
    /// - [`ConfigError::InvertedRange`] when `min_limit > max_limit`;
    /// - [`ConfigError::OutOfRange`] for an `initial_limit` outside `[min_limit, max_limit]`
    ///   or a percentage outside its range (a backoff must be in 1..=99, a gain in 1..=100, a
    ///   queue target in 0..=100, Vegas `alpha` at least 1 and below `beta`).
    pub const fn build(self) -> Result<AdaptiveConfig, ConfigError> {
        let c = self.config;
        if c.min_limit == 0 {
            return Err(ConfigError::Zero { field: "min_limit" });
        }
        if c.min_limit > c.max_limit {
            return Err(ConfigError::InvertedRange {
                min: "min_limit",
                max: "max_limit",
            });
        }
        if c.initial_limit < c.min_limit || c.initial_limit > c.max_limit {
            return Err(ConfigError::OutOfRange {
                field: "initial_limit",
                expected: "between min_limit and max_limit",
            });
        }
        if c.window.is_zero() {
            return Err(ConfigError::Zero { field: "window" });
        }
        if c.min_samples == 0 {
            return Err(ConfigError::Zero {
                field: "min_samples",
            });
        }
        if let Some(p) = c.probe_interval {
            if p.is_zero() {
                return Err(ConfigError::Zero {
                    field: "probe_interval",
                });
            }
        }
        let backoff = match c.algorithm {
            Algorithm::Gradient(g) => {
                if g.gain_percent == 0 || g.gain_percent > 100 {
                    return Err(ConfigError::OutOfRange {
                        field: "gain_percent",
                        expected: "a percentage in 1..=100",
                    });
                }
                if g.queue_target_percent > 100 {
                    return Err(ConfigError::OutOfRange {
                        field: "queue_target_percent",
                        expected: "a percentage in 0..=100",
                    });
                }
                g.backoff_percent
            }
            Algorithm::Vegas(v) => {
                if v.alpha == 0 || v.alpha >= v.beta {
                    return Err(ConfigError::OutOfRange {
                        field: "alpha",
                        expected: "at least 1 and below beta (Netflix: alpha 3, beta 6)",
                    });
                }
                v.backoff_percent
            }
            Algorithm::Aimd(a) => {
                if a.increase == 0 {
                    return Err(ConfigError::Zero { field: "increase" });
                }
                if a.timeout.is_zero() {
                    return Err(ConfigError::Zero { field: "timeout" });
                }
                a.backoff_percent
            }
        };
        if backoff == 0 || backoff >= 100 {
            return Err(ConfigError::OutOfRange {
                field: "backoff_percent",
                expected: "a percentage in 1..=99 (Netflix: 90)",
            });
        }
        Ok(c)
    }
}
