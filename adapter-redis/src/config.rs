//! The configuration of a [`FleetLimiter`](crate::FleetLimiter).

use std::time::Duration;

use keel_core::breaker::BreakerConfig;
use keel_core::rate::Quota;
use keel_core::ConfigError;

/// The largest `burst × T` the server-side script computes exactly: 2^53 ns (about 104 days).
///
/// Redis scripts run Lua 5.1, whose numbers are doubles; see [`crate::script`].
pub const MAX_REPLENISH_NANOS: u64 = 1 << 53;

/// The longest [`FleetConfigBuilder::timeout`] accepted: one hour.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// What a limiter decides when Redis cannot (slow, down, an error, a key holding garbage, or
/// keel's breaker open around Redis).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Reject the request ([`Denied::Unavailable`](crate::Denied::Unavailable)): the limit is
    /// never exceeded, and an outage of Redis is an outage of the service.
    FailClosed,
    /// Admit the request: the service stays up, without a limit while Redis is away.
    FailOpen,
    /// Decide with an in-process keyed limiter holding `quota` per key, typically the fleet
    /// quota divided by the number of replicas, so the fleet as a whole stays near its limit.
    /// At most `max_keys` keys are tracked; beyond that, new keys are rejected.
    Local {
        /// This process's share of the quota, per key.
        quota: Quota,
        /// The most keys the local limiter tracks.
        max_keys: usize,
    },
}

/// The configuration of a [`FleetLimiter`](crate::FleetLimiter), validated by
/// [`FleetConfigBuilder::build`].
#[derive(Clone, Debug)]
pub struct FleetConfig {
    pub(crate) name: String,
    pub(crate) quota: Quota,
    pub(crate) policy: FailurePolicy,
    pub(crate) timeout: Duration,
    pub(crate) breaker: BreakerConfig,
    pub(crate) deny_cache_keys: usize,
    pub(crate) expire_idle_keys: bool,
    pub(crate) log_interval: Duration,
}

impl FleetConfig {
    /// A builder for the limiter called `name` (the Redis key prefix `{name}:`) with `quota`
    /// per key.
    #[must_use]
    pub fn builder(name: impl Into<String>, quota: Quota) -> FleetConfigBuilder {
        FleetConfigBuilder {
            name: name.into(),
            quota,
            policy: FailurePolicy::FailClosed,
            timeout: Duration::from_millis(50),
            breaker: None,
            deny_cache_keys: 10_000,
            expire_idle_keys: true,
            log_interval: Duration::from_secs(10),
        }
    }

    /// The limiter's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The quota per key.
    #[must_use]
    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// The failure policy.
    #[must_use]
    pub fn policy(&self) -> FailurePolicy {
        self.policy
    }

    /// The longest a decision waits for Redis.
    #[must_use]
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// Builds a [`FleetConfig`]. Defaults: [`FailurePolicy::FailClosed`], a 50 ms timeout, a breaker
/// that opens after 3 consecutive failures for 1 s and probes with one call, a deny cache of
/// 10,000 keys, idle keys expire, one failure log line per 10 s (with the count suppressed).
#[derive(Clone, Debug)]
pub struct FleetConfigBuilder {
    name: String,
    quota: Quota,
    policy: FailurePolicy,
    timeout: Duration,
    breaker: Option<BreakerConfig>,
    deny_cache_keys: usize,
    expire_idle_keys: bool,
    log_interval: Duration,
}

impl FleetConfigBuilder {
    /// What to decide when Redis cannot.
    #[must_use]
    pub fn policy(mut self, policy: FailurePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The longest one decision waits for Redis (connecting, a script reload and the call
    /// included) before the failure policy decides (> 0).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The circuit breaker around Redis (default: open after 3 consecutive failures for 1 s,
    /// one probe). While it is open, decisions go to the failure policy without touching Redis.
    #[must_use]
    pub fn breaker(mut self, config: BreakerConfig) -> Self {
        self.breaker = Some(config);
        self
    }

    /// The most keys the local deny cache holds (0 turns it off).
    #[must_use]
    pub fn deny_cache_keys(mut self, max_keys: usize) -> Self {
        self.deny_cache_keys = max_keys;
        self
    }

    /// Whether keys get a time to live (default: yes). Turn it off only to replay traces on a
    /// virtual clock with [`FleetLimiter::check_at`](crate::FleetLimiter::check_at), where a
    /// time to live measured on the server's real clock would not match the trace's time.
    #[must_use]
    pub fn expire_idle_keys(mut self, on: bool) -> Self {
        self.expire_idle_keys = on;
        self
    }

    /// At most one failure log line per `interval`; the lines in between are counted and the
    /// count is reported with the next line.
    #[must_use]
    pub fn log_interval(mut self, interval: Duration) -> Self {
        self.log_interval = interval;
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Zero`] for an empty name, a zero timeout or a `Local` policy with
    /// `max_keys` 0; [`ConfigError::OutOfRange`] for a timeout over [`MAX_TIMEOUT`] or
    /// `burst × T` over [`MAX_REPLENISH_NANOS`] (the script's exact range); the breaker's own
    /// errors for the default breaker.
    pub fn build(self) -> Result<FleetConfig, ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::Zero { field: "name" });
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::Zero { field: "timeout" });
        }
        if self.timeout > MAX_TIMEOUT {
            return Err(ConfigError::OutOfRange {
                field: "timeout",
                expected: "at most one hour: a limiter that waits longer for Redis is not limiting",
            });
        }
        if self.quota.replenish_all().as_nanos() > u128::from(MAX_REPLENISH_NANOS) {
            return Err(ConfigError::OutOfRange {
                field: "quota",
                expected: "burst × (period / count) at most 2^53 ns (about 104 days): lower the burst or raise the rate",
            });
        }
        if let FailurePolicy::Local { max_keys: 0, .. } = self.policy {
            return Err(ConfigError::Zero {
                field: "policy.max_keys",
            });
        }
        let breaker = match self.breaker {
            Some(b) => b,
            None => BreakerConfig::consecutive_failures(3)
                .open_duration(Duration::from_secs(1))
                .permitted_calls_in_half_open(1)
                .build()?,
        };
        Ok(FleetConfig {
            name: self.name,
            quota: self.quota,
            policy: self.policy,
            timeout: self.timeout,
            breaker,
            deny_cache_keys: self.deny_cache_keys,
            expire_idle_keys: self.expire_idle_keys,
            log_interval: self.log_interval,
        })
    }
}
