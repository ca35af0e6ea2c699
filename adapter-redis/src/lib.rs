//! # keel-redis: rate limits that hold across a fleet, on Redis
//!
//! Every limiter in keel-core lives in one process: behind a load balancer, N replicas admit N
//! times the quota. A [`FleetLimiter`] keeps each key's GCRA state (one theoretical arrival
//! time) in Redis and runs the decision atomically on the server, in a Lua script loaded once
//! (`SCRIPT LOAD`) and invoked by hash (`EVALSHA`, reloaded after a `NOSCRIPT`), on the Redis
//! server's clock (`TIME`), so replicas with skewed clocks agree. One round trip per decision.
//!
//! - **The same GCRA as keel-core.** The script mirrors [`keel_core::rate::step`], the core's
//!   pure GCRA step, bit for bit (a test replays 10,000 random traces through both): burst is the
//!   most requests admitted at one instant, `check_n` admits a batch whole or not at all, a batch
//!   over the burst is `InsufficientCapacity`, rejections carry the wait, admissions carry
//!   `remaining` and the reset for headers.
//! - **Bounded memory in Redis.** A key lives only until its state equals a fresh key's
//!   (`PX` = TAT − now, rounded up to the millisecond), so Redis holds only keys active within
//!   the last `burst × T`.
//! - **Redis Cluster.** Keys are `{name}:key`: the hash tag keeps one limiter's keys in one slot.
//! - **An exact local deny cache.** A key Redis rejected is rejected locally, without a round
//!   trip, until the instant Redis would admit it, measured from when the request was sent, so
//!   the cache never rejects what Redis would admit. An abusive key costs Redis about one request
//!   per emission interval per replica. Bounded (`deny_cache_keys`).
//! - **Fleet-wide concurrency.** A [`FleetBulkhead`] caps concurrent holders across the fleet
//!   with leases that renew while the work runs, release on drop, and expire when their holder
//!   dies ([`lease`]).
//! - **When Redis fails** (slow, down, an error, a key holding garbage): a [`FailurePolicy`]
//!   per limiter (closed, open, or a local limiter with a share of the quota); keel's circuit
//!   breaker and a timeout around every call, so a dead Redis costs one timeout per breaker
//!   period, not one per request; recovery is automatic (the breaker's half-open probe, the
//!   client's reconnect, the script's reload). Every fallback decision is counted in
//!   [`FleetStats`]; failures are logged with suppression (one line per `log_interval`).
//!
//! ```no_run
//! use std::num::NonZeroU32;
//! use keel_redis::{FailurePolicy, FleetConfig, FleetLimiter};
//! use keel_core::rate::Quota;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let quota = Quota::per_second(NonZeroU32::new(200).unwrap())?.with_burst(NonZeroU32::new(20).unwrap())?;
//! let config = FleetConfig::builder("api", quota).policy(FailurePolicy::FailOpen).build()?;
//! let limiter = FleetLimiter::connect("redis://127.0.0.1:6379", config)?;
//! match limiter.check("user:42").await {
//!     Ok(admitted) => println!("ok, {} left", admitted.remaining),
//!     Err(denied) => println!("429: {denied}"),
//! }
//! # Ok(()) }
//! ```
//!
//! With feature `tower`, [`tower::FleetRateLimitLayer`] puts a fleet limiter in front of an
//! axum, hyper or tonic service.
//!
//! ## The client: redis-rs
//!
//! keel-redis uses [`redis`] (redis-rs) with only its `tokio-comp` and `connection-manager`
//! features: its `ConnectionManager` is a multiplexed connection (one socket shared by every
//! task, pipelined) that reconnects on its own, which is what a limiter called on every request
//! needs; it is the most used Redis client in Rust, maintained under the redis organisation, and
//! with default features off it adds few dependencies. `fred` has richer pooling and cluster
//! routing, but more machinery than one script call per decision needs.
//!
//! ## Clocks
//!
//! Decisions use the Redis server's `TIME` ([`FleetLimiter::check`]). The instants in a raw
//! step are nanoseconds since the Unix epoch on that clock; what callers see are durations
//! (`retry_after`, `reset_after`). [`FleetLimiter::check_at`] passes the caller's time instead,
//! for tests that replay traces. A Redis clock that steps backwards only makes every key's debt
//! look larger: it admits less, never more.
//!
//! ## Limits
//!
//! `burst × T` must be at most 2^53 ns (about 104 days): Redis runs Lua 5.1, whose numbers are
//! doubles ([`config::MAX_REPLENISH_NANOS`]). A limiter's quota is fixed: to change it, build a
//! new limiter (its deny cache starts empty).
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod config;
mod deny;
mod evalsha;
pub mod lease;
pub mod script;
#[cfg(feature = "tower")]
pub mod tower;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use keel_core::driver::Runtime as _;
use keel_core::rate::keyed::{KeyedConfig, KeyedGcra, KeyedLimited};
use keel_core::rate::RateLimited;
use keel_core::sync::breaker::SharedBreaker;
use keel_core::Instant;
use keel_core::Rejected;
use keel_tokio::TokioRuntime;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub use config::{FailurePolicy, FleetConfig, FleetConfigBuilder};
pub use keel_core;
pub use lease::{
    FleetBulkhead, FleetBulkheadConfig, FleetBulkheadStats, Lease, LeaseError, LeasePolicy,
};
pub use script::RawStep;

use deny::DenyCache;
use evalsha::CachedScript;

/// Why Redis could not decide.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// Redis did not answer within the configured timeout.
    #[error(
        "Redis did not answer within {0:?}: check the server and the network, or raise `timeout`"
    )]
    Timeout(Duration),
    /// keel's breaker around Redis is open after repeated failures; Redis was not called.
    #[error("the circuit breaker around Redis is open after repeated failures")]
    BreakerOpen,
    /// The connection or the server failed (refused, reset, an error reply).
    #[error("Redis failed: {0}")]
    Redis(String),
    /// The key holds something that is not a keel GCRA state (another program wrote it, or
    /// its type is not a string): delete the key or use another limiter name.
    #[error("the Redis key `{key}` does not hold a keel GCRA state ({detail}): delete it or rename the limiter")]
    CorruptState {
        /// The Redis key.
        key: String,
        /// What Redis or the script said.
        detail: String,
    },
    /// The script's reply had an unexpected shape (another script under the same hash?).
    #[error("unexpected reply from the keel script: {0}")]
    BadReply(&'static str),
}

impl From<redis::RedisError> for FleetError {
    fn from(e: redis::RedisError) -> Self {
        FleetError::Redis(e.to_string())
    }
}

/// Who made a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Source {
    /// The script on the Redis server.
    Redis,
    /// The local deny cache (a rejection Redis gave for this key earlier and would give now).
    DenyCache,
    /// The failure policy [`FailurePolicy::FailOpen`].
    FailOpen,
    /// The failure policy [`FailurePolicy::Local`].
    Local,
}

/// The requests are admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admitted {
    /// Single requests still admitted now (`RateLimit-Remaining`); 0 when not known
    /// ([`Source::FailOpen`]).
    pub remaining: u32,
    /// Until the whole burst is available again (`RateLimit-Reset`); zero when not known.
    pub reset_after: Duration,
    /// Who decided.
    pub by: Source,
}

/// The requests are not admitted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Denied {
    /// The key is over its rate; the same requests would be admitted after `retry_after` if
    /// nothing else is admitted first (`Retry-After`).
    #[error("rate limited: retry after {retry_after:?}")]
    Limited {
        /// How long to wait.
        retry_after: Duration,
        /// Who decided.
        by: Source,
    },
    /// A batch larger than the burst can never be admitted at once.
    #[error("a batch larger than the burst ({burst}) can never be admitted: split it or raise the burst")]
    InsufficientCapacity {
        /// The quota's burst.
        burst: u32,
    },
    /// Redis could not decide and the policy is [`FailurePolicy::FailClosed`] (or the local
    /// limiter's table is full).
    #[error("rejected because Redis could not decide: {0}")]
    Unavailable(FleetError),
}

/// A decision: admitted, or why not.
pub type Decision = Result<Admitted, Denied>;

/// Counters of a [`FleetLimiter`], a `Copy` snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FleetStats {
    /// Decisions admitted (by any source).
    pub admitted: u64,
    /// Decisions rejected (by any source, `InsufficientCapacity` and `Unavailable` included).
    pub rejected: u64,
    /// Script calls that returned a decision.
    pub redis_decisions: u64,
    /// Rejections by the deny cache (round trips saved).
    pub deny_cache_hits: u64,
    /// `SCRIPT LOAD`s (the first call, and after a restart or `SCRIPT FLUSH`).
    pub script_loads: u64,
    /// Calls that failed (timeouts, connection and server errors, garbage in a key).
    pub errors: u64,
    /// Of `errors`, the timeouts.
    pub timeouts: u64,
    /// Decisions taken without calling Redis because the breaker was open.
    pub breaker_rejections: u64,
    /// Decisions made by the failure policy (every one of them; the sum of the next three).
    pub fallbacks: u64,
    /// Of `fallbacks`, admitted by [`FailurePolicy::FailOpen`].
    pub fallback_open: u64,
    /// Of `fallbacks`, rejected by [`FailurePolicy::FailClosed`].
    pub fallback_closed: u64,
    /// Of `fallbacks`, decided by [`FailurePolicy::Local`].
    pub fallback_local: u64,
    /// Keys in the deny cache now.
    pub deny_cache_len: u64,
}

#[derive(Default)]
struct Counters {
    admitted: AtomicU64,
    rejected: AtomicU64,
    redis_decisions: AtomicU64,
    deny_cache_hits: AtomicU64,
    script_loads: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    breaker_rejections: AtomicU64,
    fallback_open: AtomicU64,
    fallback_closed: AtomicU64,
    fallback_local: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

struct LogGate {
    last: Option<Instant>,
    suppressed: u64,
}

struct Inner {
    conn: ConnectionManager,
    script: CachedScript,
    config: FleetConfig,
    prefix: String,
    breaker: SharedBreaker,
    deny: Mutex<DenyCache>,
    local: Option<Mutex<KeyedGcra<String>>>,
    counters: Counters,
    log: Mutex<LogGate>,
    key_hash: std::collections::hash_map::RandomState,
}

/// A GCRA rate limiter whose state is in Redis, shared by every process that uses the same
/// name and server. Cheap to clone (one shared state); `Send + Sync`.
///
/// Create it inside a tokio runtime (the connection's tasks run there).
#[derive(Clone)]
pub struct FleetLimiter {
    inner: Arc<Inner>,
}

impl core::fmt::Debug for FleetLimiter {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FleetLimiter")
            .field("name", &self.inner.config.name)
            .field("quota", &self.inner.config.quota)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The data behind these locks stays consistent at every await-free step, so a panic in
    // another thread while holding one leaves nothing half-done: keep going.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FleetLimiter {
    /// A limiter on the Redis server at `url` (`redis://host:port/db`). The connection is made
    /// lazily and re-made after failures, so this succeeds while Redis is down (decisions then
    /// follow the failure policy). Must be called within a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`FleetError::Redis`] for a URL redis-rs cannot parse.
    pub fn connect(url: &str, config: FleetConfig) -> Result<FleetLimiter, FleetError> {
        let client = redis::Client::open(url)?;
        // The limiter's own timeout bounds every call; these keep a dead socket from lingering.
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout.max(Duration::from_millis(100))))
            .set_response_timeout(Some(config.timeout.max(Duration::from_millis(100))))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_lazy_with_config(client, manager_config)?;
        let now = TokioRuntime.now();
        let local = match config.policy {
            FailurePolicy::Local { quota, max_keys } => {
                let keyed = KeyedConfig::builder()
                    .quota(quota)
                    .max_keys(max_keys)
                    .build()
                    .map_err(|e| FleetError::Redis(format!("local policy: {e}")))?;
                Some(Mutex::new(KeyedGcra::new(keyed, now)))
            }
            _ => None,
        };
        Ok(FleetLimiter {
            inner: Arc::new(Inner {
                conn,
                script: CachedScript::new(script::GCRA_LUA),
                prefix: format!("{{{}}}:", config.name),
                breaker: SharedBreaker::new(config.breaker, now),
                deny: Mutex::new(DenyCache::new(config.deny_cache_keys)),
                local,
                counters: Counters::default(),
                key_hash: std::collections::hash_map::RandomState::new(),
                log: Mutex::new(LogGate {
                    last: None,
                    suppressed: 0,
                }),
                config,
            }),
        })
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &FleetConfig {
        &self.inner.config
    }

    /// The Redis key holding `key`'s state: `{name}:key`.
    #[must_use]
    pub fn redis_key(&self, key: &str) -> String {
        format!("{}{key}", self.inner.prefix)
    }

    /// Admits one request for `key`, on the Redis server's clock.
    pub async fn check(&self, key: &str) -> Decision {
        self.decide(key, 1, None).await
    }

    /// Admits `n` requests for `key` at once (all or none). `n = 0` is admitted and consumes
    /// nothing (a peek at `remaining`); `n` over the burst is
    /// [`Denied::InsufficientCapacity`] without a round trip.
    pub async fn check_n(&self, key: &str, n: u32) -> Decision {
        self.decide(key, n, None).await
    }

    /// [`check_n`](Self::check_n) at the caller's time `now` (nanoseconds on a clock every
    /// caller of this limiter shares) instead of the server's `TIME`. For tests and trace
    /// replays; production callers want the server's clock.
    pub async fn check_at(&self, key: &str, now: Instant, n: u32) -> Decision {
        self.decide(key, n, Some(now)).await
    }

    /// Runs the script once and returns its raw answer: no deny cache, breaker, timeout or
    /// failure policy. `now` is the caller's time, or `None` for the server's `TIME`.
    ///
    /// # Errors
    ///
    /// Any [`FleetError`] except `Timeout` and `BreakerOpen`.
    pub async fn raw_step(
        &self,
        key: &str,
        now: Option<Instant>,
        n: u32,
    ) -> Result<RawStep, FleetError> {
        let redis_key = self.redis_key(key);
        self.eval(&redis_key, self.inner.config.quota, now, n).await
    }

    /// [`raw_step`](Self::raw_step) with a quota other than the limiter's (for conformance
    /// tests and tools).
    ///
    /// # Errors
    ///
    /// [`FleetError::BadReply`] for a quota whose `burst × T` exceeds
    /// [`config::MAX_REPLENISH_NANOS`] (the script would not be exact), and the errors of
    /// [`raw_step`](Self::raw_step).
    pub async fn raw_step_with(
        &self,
        key: &str,
        quota: keel_core::rate::Quota,
        now: Option<Instant>,
        n: u32,
    ) -> Result<RawStep, FleetError> {
        if quota.replenish_all().as_nanos() > u128::from(config::MAX_REPLENISH_NANOS) {
            return Err(FleetError::BadReply(
                "a quota whose burst × T exceeds 2^53 ns cannot be computed exactly by the script",
            ));
        }
        let redis_key = self.redis_key(key);
        self.eval(&redis_key, quota, now, n).await
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> FleetStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (open, closed, local) = (
            get(&c.fallback_open),
            get(&c.fallback_closed),
            get(&c.fallback_local),
        );
        FleetStats {
            admitted: get(&c.admitted),
            rejected: get(&c.rejected),
            redis_decisions: get(&c.redis_decisions),
            deny_cache_hits: get(&c.deny_cache_hits),
            script_loads: get(&c.script_loads),
            errors: get(&c.errors),
            timeouts: get(&c.timeouts),
            breaker_rejections: get(&c.breaker_rejections),
            fallbacks: open.saturating_add(closed).saturating_add(local),
            fallback_open: open,
            fallback_closed: closed,
            fallback_local: local,
            deny_cache_len: u64::try_from(lock(&self.inner.deny).len()).unwrap_or(u64::MAX),
        }
    }

    /// Forgets every cached rejection (for example after the quota was raised elsewhere).
    pub fn clear_deny_cache(&self) {
        lock(&self.inner.deny).clear();
    }

    async fn decide(&self, key: &str, n: u32, client_now: Option<Instant>) -> Decision {
        let inner = &*self.inner;
        let quota = inner.config.quota;
        let burst = quota.burst().get();
        let decision = self.decide_inner(key, n, client_now, burst).await;
        match &decision {
            Ok(_) => bump(&inner.counters.admitted),
            Err(_) => bump(&inner.counters.rejected),
        }
        decision
    }

    async fn decide_inner(
        &self,
        key: &str,
        n: u32,
        client_now: Option<Instant>,
        burst: u32,
    ) -> Decision {
        let inner = &*self.inner;
        if n > burst {
            return Err(Denied::InsufficientCapacity { burst });
        }
        let sent = TokioRuntime.now();
        let t = inner.config.quota.emission_interval();
        if n > 0 {
            if let Some(until) = lock(&inner.deny).get(key, sent) {
                bump(&inner.counters.deny_cache_hits);
                // A batch of n waits (n - 1) intervals longer than one request.
                let extra = t.saturating_mul(n - 1);
                let retry_after = until.saturating_duration_since(sent).saturating_add(extra);
                return Err(Denied::Limited {
                    retry_after,
                    by: Source::DenyCache,
                });
            }
        }
        let permit = match inner.breaker.try_acquire(sent) {
            Ok(p) => p,
            Err(_) => {
                bump(&inner.counters.breaker_rejections);
                return self.fallback(key, n, FleetError::BreakerOpen, sent);
            }
        };
        let redis_key = self.redis_key(key);
        let outcome = match tokio::time::timeout(
            inner.config.timeout,
            self.eval(&redis_key, inner.config.quota, client_now, n),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(FleetError::Timeout(inner.config.timeout)),
        };
        let done = TokioRuntime.now();
        match outcome {
            Ok(raw) => {
                inner.breaker.on_success(done, permit);
                bump(&inner.counters.redis_decisions);
                self.interpret(key, &raw, sent, done)
            }
            Err(e) => {
                bump(&inner.counters.errors);
                if matches!(e, FleetError::Timeout(_)) {
                    bump(&inner.counters.timeouts);
                }
                if matches!(e, FleetError::CorruptState { .. }) {
                    // Redis itself answered: one bad key says nothing about the server.
                    inner.breaker.on_ignored(done, permit);
                } else {
                    inner.breaker.on_failure(done, permit);
                }
                self.fallback(key, n, e, done)
            }
        }
    }

    fn interpret(&self, key: &str, raw: &RawStep, sent: Instant, done: Instant) -> Decision {
        let quota = self.inner.config.quota;
        match raw.decision {
            Ok(()) => {
                let s = keel_core::rate::step(&quota, raw.tat, raw.now, 0);
                Ok(Admitted {
                    remaining: s.remaining,
                    reset_after: s.reset_at.saturating_duration_since(raw.now),
                    by: Source::Redis,
                })
            }
            Err(Rejected {
                reason: RateLimited::OverRate,
                retry_at: Some(retry_at),
            }) => {
                // A single request is rejected until TAT - τ; cache that from the send instant
                // (the decision came later, so the cache expires no later than Redis would
                // admit).
                let single =
                    Instant::from_nanos(raw.tat.as_nanos().saturating_sub(quota.tau_nanos()));
                let wait_single = single.saturating_duration_since(raw.now);
                if !wait_single.is_zero() {
                    lock(&self.inner.deny).insert(key, sent + wait_single, done);
                }
                Err(Denied::Limited {
                    retry_after: retry_at.saturating_duration_since(raw.now),
                    by: Source::Redis,
                })
            }
            Err(Rejected {
                reason: RateLimited::InsufficientCapacity { burst },
                ..
            }) => Err(Denied::InsufficientCapacity { burst }),
            Err(_) => Err(Denied::Unavailable(FleetError::BadReply(
                "an unknown rejection",
            ))),
        }
    }

    fn fallback(&self, key: &str, n: u32, cause: FleetError, now: Instant) -> Decision {
        let inner = &*self.inner;
        self.log_failure(&cause, now);
        match (&inner.config.policy, &inner.local) {
            (FailurePolicy::FailOpen, _) => {
                bump(&inner.counters.fallback_open);
                Ok(Admitted {
                    remaining: 0,
                    reset_after: Duration::ZERO,
                    by: Source::FailOpen,
                })
            }
            (FailurePolicy::Local { .. }, Some(local)) => {
                bump(&inner.counters.fallback_local);
                let mut local = lock(local);
                // Long keys are stored by a keyed hash, so `max_keys` bounds bytes too.
                let owned = if key.len() > deny::MAX_KEY_BYTES {
                    use std::hash::BuildHasher;
                    format!("#{:016x}", inner.key_hash.hash_one(key))
                } else {
                    key.to_owned()
                };
                match local.try_acquire_n(now, &owned, n) {
                    Ok(()) => Ok(Admitted {
                        remaining: local.remaining(now, &owned),
                        reset_after: Duration::ZERO,
                        by: Source::Local,
                    }),
                    Err(Rejected {
                        reason: KeyedLimited::OverRate,
                        retry_at: Some(retry_at),
                    }) => Err(Denied::Limited {
                        retry_after: retry_at.saturating_duration_since(now),
                        by: Source::Local,
                    }),
                    Err(Rejected {
                        reason: KeyedLimited::InsufficientCapacity { burst },
                        ..
                    }) => Err(Denied::InsufficientCapacity { burst }),
                    Err(_) => Err(Denied::Unavailable(cause)),
                }
            }
            _ => {
                bump(&inner.counters.fallback_closed);
                Err(Denied::Unavailable(cause))
            }
        }
    }

    fn log_failure(&self, cause: &FleetError, now: Instant) {
        let inner = &*self.inner;
        let mut gate = lock(&inner.log);
        let due = match gate.last {
            None => true,
            Some(last) => now.saturating_duration_since(last) >= inner.config.log_interval,
        };
        if due {
            let suppressed = gate.suppressed;
            gate.last = Some(now);
            gate.suppressed = 0;
            drop(gate);
            tracing::warn!(
                limiter = %inner.config.name,
                policy = ?inner.config.policy,
                suppressed,
                "fleet limiter: Redis could not decide, the failure policy did: {cause}"
            );
        } else {
            gate.suppressed = gate.suppressed.saturating_add(1);
        }
    }

    async fn eval(
        &self,
        redis_key: &str,
        quota: keel_core::rate::Quota,
        now: Option<Instant>,
        n: u32,
    ) -> Result<RawStep, FleetError> {
        let inner = &*self.inner;
        let mut conn = inner.conn.clone();
        let now_arg = now.map(|t| t.as_nanos().to_string()).unwrap_or_default();
        let args = |cmd: &mut redis::Cmd| {
            cmd.arg(1)
                .arg(redis_key)
                .arg(&now_arg)
                .arg(quota.t_nanos_public())
                .arg(quota.tau_nanos())
                .arg(quota.burst().get())
                .arg(n)
                .arg(if inner.config.expire_idle_keys {
                    "1"
                } else {
                    "0"
                });
        };
        let loaded = || bump(&inner.counters.script_loads);
        let reply = inner.script.eval(&mut conn, args, loaded).await?;
        match reply {
            Ok(v) => script::decode(&v, quota.burst().get()),
            Err(e) if e.code() == Some("KEEL_BADSTATE") || e.code() == Some("WRONGTYPE") => {
                Err(FleetError::CorruptState {
                    key: redis_key.to_owned(),
                    detail: e.to_string(),
                })
            }
            // The client's own response timeout (a backstop) is the limiter's timeout too.
            Err(e) if e.is_timeout() => Err(FleetError::Timeout(inner.config.timeout)),
            Err(e) => Err(e.into()),
        }
    }
}

/// The quota's fields in nanoseconds, as the script takes them.
trait QuotaNanos {
    fn t_nanos_public(&self) -> u64;
    fn tau_nanos(&self) -> u64;
}

impl QuotaNanos for keel_core::rate::Quota {
    fn t_nanos_public(&self) -> u64 {
        u64::try_from(self.emission_interval().as_nanos()).unwrap_or(u64::MAX)
    }
    fn tau_nanos(&self) -> u64 {
        u64::try_from(self.tolerance().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// The README's "Across a fleet" example, compiled here (keel-tokio compiles the README's other
/// blocks but does not depend on keel-redis):
///
/// ```no_run
/// use std::num::NonZeroU32;
/// use keel_redis::keel_core::rate::Quota;
/// use keel_redis::{Denied, FailurePolicy, FleetConfig, FleetLimiter};
///
/// async fn handle(limiter: &FleetLimiter, user: &str) -> u16 {
///     match limiter.check(user).await {
///         Ok(_) => 200,
///         Err(Denied::Limited { retry_after, .. }) => {
///             println!("Retry-After: {}", retry_after.as_secs().max(1));
///             429
///         }
///         Err(_) => 503, // FailClosed, and Redis could not decide
///     }
/// }
///
/// async fn setup() -> Result<FleetLimiter, Box<dyn std::error::Error>> {
///     let per_second = |n| NonZeroU32::new(n).ok_or("zero");
///     let quota = Quota::per_second(per_second(200)?)?.with_burst(per_second(20)?)?;
///     let share = Quota::per_second(per_second(50)?)?.with_burst(per_second(5)?)?;
///     let config = FleetConfig::builder("api", quota)
///         .policy(FailurePolicy::Local { quota: share, max_keys: 10_000 })
///         .build()?;
///     Ok(FleetLimiter::connect("redis://127.0.0.1:6379", config)?)
/// }
/// ```
#[cfg(doctest)]
pub struct ReadmeFleetExample;

/// The crate README's code blocks, compiled as doctests so the README stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct CrateReadmeDoctests;
