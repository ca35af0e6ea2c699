//! Fleet-wide concurrency: a distributed bulkhead with leases.
//!
//! A [`FleetBulkhead`] caps how many holders, across every process using the same name and
//! Redis, hold a slot at once: concurrent jobs of a queue, connections to a shared dependency.
//! The slots are one sorted set (`{name}:leases`) of lease ids scored by their expiry on the
//! Redis server's clock. Acquiring first drops expired leases, so a slot held by a process that
//! died is free once its lease expires (`lease_ttl`, default 10 s). A [`Lease`] renews itself
//! every third of its time to live while the work runs and is released on drop. If renewals
//! fail until the lease has expired, [`Lease::is_lost`] says so: the slot may already be someone
//! else's, and long work should check it.
//!
//! The set's own time to live follows its latest lease, so an idle bulkhead leaves nothing in
//! Redis.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Value;

use crate::evalsha::CachedScript;
use crate::FleetError;

/// The lease script: `KEYS[1]` the set; `ARGV` op (`acquire`, `renew`, `release`), lease id,
/// limit, time to live in ms. Reply `{ok, ms, holders}`: for a full `acquire`, `ms` is when the
/// earliest lease expires.
pub const LEASE_LUA: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
local key, op, id = KEYS[1], ARGV[1], ARGV[2]
local limit, ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
local result
if op == 'release' then
  redis.call('ZREM', key, id)
  result = {1, 0, redis.call('ZCARD', key)}
elseif op == 'renew' or redis.call('ZSCORE', key, id) then
  if not redis.call('ZSCORE', key, id) then return {0, 0, redis.call('ZCARD', key)} end
  redis.call('ZADD', key, 'XX', now + ttl, id)
  result = {1, ttl, redis.call('ZCARD', key)}
else
  local n = redis.call('ZCARD', key)
  if n >= limit then
    local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    return {0, tonumber(first[2]) - now, n}
  end
  redis.call('ZADD', key, now + ttl, id)
  result = {1, ttl, n + 1}
end
local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
if last[2] then redis.call('PEXPIREAT', key, tonumber(last[2]) + 1) end
return result
"#;

/// What [`FleetBulkhead::try_acquire`] decides when Redis cannot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeasePolicy {
    /// No slot: the cap is never exceeded.
    FailClosed,
    /// A slot that Redis does not count ([`Lease::is_leased`] is false).
    FailOpen,
}

/// The configuration of a [`FleetBulkhead`].
#[derive(Clone, Debug)]
pub struct FleetBulkheadConfig {
    name: String,
    limit: u32,
    lease_ttl: Duration,
    timeout: Duration,
    policy: LeasePolicy,
}

impl FleetBulkheadConfig {
    /// At most `limit` holders of `name` at once, fleet-wide. Defaults: leases live 10 s
    /// (renewed every 3.3 s), calls time out after 250 ms, [`LeasePolicy::FailClosed`].
    ///
    /// # Errors
    ///
    /// [`keel_core::ConfigError::Zero`] for an empty name or a zero limit.
    pub fn new(
        name: impl Into<String>,
        limit: u32,
    ) -> Result<FleetBulkheadConfig, keel_core::ConfigError> {
        let name = name.into();
        if name.is_empty() {
            return Err(keel_core::ConfigError::Zero { field: "name" });
        }
        if limit == 0 {
            return Err(keel_core::ConfigError::Zero { field: "limit" });
        }
        Ok(FleetBulkheadConfig {
            name,
            limit,
            lease_ttl: Duration::from_secs(10),
            timeout: Duration::from_millis(250),
            policy: LeasePolicy::FailClosed,
        })
    }

    /// How long a lease outlives its holder's last renewal (between 30 ms and one day;
    /// rounded to ms).
    #[must_use]
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl.clamp(Duration::from_millis(30), Duration::from_secs(86_400));
        self
    }

    /// The longest one call to Redis waits (between 1 ms and one hour).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.clamp(Duration::from_millis(1), Duration::from_secs(3600));
        self
    }

    /// What to decide when Redis cannot.
    #[must_use]
    pub fn policy(mut self, policy: LeasePolicy) -> Self {
        self.policy = policy;
        self
    }
}

/// Why no slot was given.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// Every slot is held; the earliest lease expires within `retry_after` (a release may free
    /// one sooner).
    #[error("all {limit} fleet slots are held: retry within {retry_after:?}")]
    Full {
        /// The cap.
        limit: u32,
        /// When the earliest lease expires unless renewed.
        retry_after: Duration,
    },
    /// Redis could not decide and the policy is [`LeasePolicy::FailClosed`].
    #[error("no slot because Redis could not decide: {0}")]
    Unavailable(FleetError),
}

/// Counters of a [`FleetBulkhead`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FleetBulkheadStats {
    /// Leases granted by Redis.
    pub acquired: u64,
    /// Acquisitions refused because every slot was held.
    pub full: u64,
    /// Leases lost (renewals failed until they expired, or Redis no longer knew them).
    pub lost: u64,
    /// Calls that failed (timeouts, connection errors, a key of the wrong type).
    pub errors: u64,
    /// Slots given by [`LeasePolicy::FailOpen`] without a lease.
    pub fallback_open: u64,
    /// Acquisitions refused by [`LeasePolicy::FailClosed`].
    pub fallback_closed: u64,
}

#[derive(Default)]
struct Counters {
    acquired: AtomicU64,
    full: AtomicU64,
    lost: AtomicU64,
    errors: AtomicU64,
    fallback_open: AtomicU64,
    fallback_closed: AtomicU64,
}

struct Inner {
    conn: ConnectionManager,
    script: CachedScript,
    config: FleetBulkheadConfig,
    key: String,
    counters: Counters,
    next_id: AtomicU64,
    salt: u64,
}

/// A fleet-wide cap on concurrent holders, kept in Redis with leases. Cheap to clone.
#[derive(Clone)]
pub struct FleetBulkhead {
    inner: Arc<Inner>,
}

impl core::fmt::Debug for FleetBulkhead {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FleetBulkhead")
            .field("name", &self.inner.config.name)
            .field("limit", &self.inner.config.limit)
            .finish_non_exhaustive()
    }
}

enum Reply {
    Granted,
    Refused(Duration),
}

impl FleetBulkhead {
    /// A bulkhead on the Redis server at `url`, connected lazily (see
    /// [`FleetLimiter::connect`](crate::FleetLimiter::connect)). Must be called within a tokio
    /// runtime.
    ///
    /// # Errors
    ///
    /// [`FleetError::Redis`] for a URL redis-rs cannot parse.
    pub fn connect(url: &str, config: FleetBulkheadConfig) -> Result<FleetBulkhead, FleetError> {
        let client = redis::Client::open(url)?;
        let t = config.timeout.max(Duration::from_millis(100));
        let conn = ConnectionManager::new_lazy_with_config(
            client,
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(t))
                .set_response_timeout(Some(t))
                .set_number_of_retries(1),
        )?;
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        Ok(FleetBulkhead {
            inner: Arc::new(Inner {
                conn,
                script: CachedScript::new(LEASE_LUA),
                key: format!("{{{}}}:leases", config.name),
                config,
                counters: Counters::default(),
                next_id: AtomicU64::new(0),
                salt: h.finish(),
            }),
        })
    }

    /// The Redis key of the lease set.
    #[must_use]
    pub fn redis_key(&self) -> &str {
        &self.inner.key
    }

    /// Takes a slot if one is free, without waiting.
    ///
    /// # Errors
    ///
    /// [`LeaseError::Full`] when every slot is held; [`LeaseError::Unavailable`] when Redis
    /// cannot decide and the policy is [`LeasePolicy::FailClosed`].
    pub async fn try_acquire(&self) -> Result<Lease, LeaseError> {
        let inner = &*self.inner;
        let n = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:016x}-{n:x}", inner.salt);
        match self.call("acquire", &id).await {
            Ok(Reply::Granted) => {
                inner.counters.acquired.fetch_add(1, Ordering::Relaxed);
                Ok(Lease::start(self.clone(), id))
            }
            Ok(Reply::Refused(retry_after)) => {
                inner.counters.full.fetch_add(1, Ordering::Relaxed);
                Err(LeaseError::Full {
                    limit: inner.config.limit,
                    retry_after,
                })
            }
            Err(e) => {
                inner.counters.errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(bulkhead = %inner.config.name, "fleet bulkhead: {e}");
                match inner.config.policy {
                    LeasePolicy::FailOpen => {
                        inner.counters.fallback_open.fetch_add(1, Ordering::Relaxed);
                        Ok(Lease::unleased(self.clone()))
                    }
                    LeasePolicy::FailClosed => {
                        inner
                            .counters
                            .fallback_closed
                            .fetch_add(1, Ordering::Relaxed);
                        Err(LeaseError::Unavailable(e))
                    }
                }
            }
        }
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> FleetBulkheadStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        FleetBulkheadStats {
            acquired: get(&c.acquired),
            full: get(&c.full),
            lost: get(&c.lost),
            errors: get(&c.errors),
            fallback_open: get(&c.fallback_open),
            fallback_closed: get(&c.fallback_closed),
        }
    }

    async fn call(&self, op: &str, id: &str) -> Result<Reply, FleetError> {
        let inner = &*self.inner;
        match tokio::time::timeout(inner.config.timeout, self.eval(op, id)).await {
            Ok(r) => r,
            Err(_) => Err(FleetError::Timeout(inner.config.timeout)),
        }
    }

    async fn eval(&self, op: &str, id: &str) -> Result<Reply, FleetError> {
        let inner = &*self.inner;
        let mut conn = inner.conn.clone();
        let ttl_ms = u64::try_from(inner.config.lease_ttl.as_millis()).unwrap_or(u64::MAX);
        let args = |cmd: &mut redis::Cmd| {
            cmd.arg(1)
                .arg(&inner.key)
                .arg(op)
                .arg(id)
                .arg(inner.config.limit)
                .arg(ttl_ms);
        };
        let reply = inner.script.eval(&mut conn, args, || {}).await?;
        let v = match reply {
            Ok(v) => v,
            Err(e) if e.code() == Some("WRONGTYPE") => {
                return Err(FleetError::CorruptState {
                    key: inner.key.clone(),
                    detail: e.to_string(),
                })
            }
            Err(e) => return Err(e.into()),
        };
        let Value::Array(items) = v else {
            return Err(FleetError::BadReply(
                "the lease script did not return an array",
            ));
        };
        match items.as_slice() {
            [Value::Int(1), ..] => Ok(Reply::Granted),
            [Value::Int(0), Value::Int(ms), ..] => Ok(Reply::Refused(Duration::from_millis(
                u64::try_from(*ms).unwrap_or(0),
            ))),
            _ => Err(FleetError::BadReply("an unexpected lease reply")),
        }
    }
}

/// A held slot: renewed in the background while it lives, released on drop.
///
/// Dropping a lease outside a tokio runtime cannot release it in Redis; it then expires after
/// its time to live.
#[derive(Debug)]
#[must_use = "the slot is released when the lease is dropped"]
pub struct Lease {
    bulkhead: FleetBulkhead,
    id: Option<String>,
    lost: Arc<AtomicBool>,
    renew: Option<tokio::task::JoinHandle<()>>,
}

impl Lease {
    fn start(bulkhead: FleetBulkhead, id: String) -> Lease {
        let lost = Arc::new(AtomicBool::new(false));
        let renew = tokio::spawn(renew_loop(bulkhead.clone(), id.clone(), lost.clone()));
        Lease {
            bulkhead,
            id: Some(id),
            lost,
            renew: Some(renew),
        }
    }

    fn unleased(bulkhead: FleetBulkhead) -> Lease {
        Lease {
            bulkhead,
            id: None,
            lost: Arc::new(AtomicBool::new(false)),
            renew: None,
        }
    }

    /// Whether Redis counts this slot (false for a [`LeasePolicy::FailOpen`] slot).
    #[must_use]
    pub fn is_leased(&self) -> bool {
        self.id.is_some()
    }

    /// Whether the lease was lost: renewals failed until it expired, or Redis no longer had it.
    /// The slot may be someone else's now.
    #[must_use]
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// Releases the slot now and waits for Redis to confirm.
    ///
    /// # Errors
    ///
    /// The [`FleetError`] of the release call; the lease then expires after its time to live.
    pub async fn release(mut self) -> Result<(), FleetError> {
        if let Some(r) = self.renew.take() {
            r.abort();
        }
        match self.id.take() {
            Some(id) => self.bulkhead.call("release", &id).await.map(|_| ()),
            None => Ok(()),
        }
    }

    /// Stops renewing without releasing, as a crashed holder would: the slot stays taken until
    /// the lease expires. For tests and for handing a slot's fate to its time to live.
    pub fn abandon(mut self) {
        if let Some(r) = self.renew.take() {
            r.abort();
        }
        self.id = None;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(r) = self.renew.take() {
            r.abort();
        }
        if let Some(id) = self.id.take() {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                let bulkhead = self.bulkhead.clone();
                handle.spawn(async move {
                    let _ = bulkhead.call("release", &id).await;
                });
            }
        }
    }
}

async fn renew_loop(bulkhead: FleetBulkhead, id: String, lost: Arc<AtomicBool>) {
    let ttl = bulkhead.inner.config.lease_ttl;
    let every = ttl / 3;
    let mut expires = tokio::time::Instant::now() + ttl;
    loop {
        tokio::time::sleep(every).await;
        let sent = tokio::time::Instant::now();
        match bulkhead.call("renew", &id).await {
            Ok(Reply::Granted) => expires = sent + ttl,
            Ok(Reply::Refused(_)) => break,
            Err(_) if tokio::time::Instant::now() < expires => continue,
            Err(_) => break,
        }
    }
    lost.store(true, Ordering::Relaxed);
    bulkhead.inner.counters.lost.fetch_add(1, Ordering::Relaxed);
}
