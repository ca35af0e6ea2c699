//! The job store in Redis: key names, the Lua scripts that move a job between lists atomically,
//! and the job's wire form. Shared by `jobs` (api, worker) and `jobs-load` (which counts from
//! the same keys).
//!
//! A job is the string `ID|USER|PRIORITY|DEP|ENQUEUED_MS` (`DEP` is 1 when the job calls the
//! dependency). Its life:
//!
//! - enqueue: `RPUSH` onto `P:q:critical` or `P:q:default` unless the two lists together
//!   already hold the bound (the hard cap of the queue-depth guard, decided in the same script
//!   so no race between api processes lets it overflow);
//! - claim: `LMOVE` from the head of the first non-empty queue (critical first) to
//!   `P:processing` **and** `SET P:lease:ID TOKEN PX TTL` in one script, so a job is never in
//!   processing without a lease; the attempt number is `HINCRBY P:attempts ID 1`;
//! - while it runs the worker renews the lease (only if it still holds `TOKEN`);
//! - finish: only the lease holder may finish: `done` and `dead` are written once to `P:final`
//!   (`HSETNX`; a second finish counts in `P:dup`), `dead` also goes to `P:dead` with the reason
//!   and attempt count, `retry` goes to the `P:delayed` sorted set at its due time;
//! - the reaper puts back at the head of its queue every job in processing whose lease expired
//!   (its worker died), counting `P:reaped`; the mover puts due retries back on their queue.

#![allow(dead_code)]

/// The keys of one job system (one `--prefix`).
#[derive(Clone, Debug)]
pub struct Keys {
    pub prefix: String,
    pub critical: String,
    pub default: String,
    pub processing: String,
    pub delayed: String,
    pub attempts: String,
    pub final_: String,
    pub dead: String,
    pub seq: String,
    pub dup: String,
    pub reaped: String,
    /// The dependency's mode (`ok`, `slow`, `fail`), set by `POST /admin/dependency`.
    pub dep_mode: String,
    /// Per mille of jobs that leak a pool connection, set by `POST /admin/leak`.
    pub leak: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        let k = |s: &str| format!("{prefix}:{s}");
        Keys {
            prefix: prefix.to_string(),
            critical: k("q:critical"),
            default: k("q:default"),
            processing: k("processing"),
            delayed: k("delayed"),
            attempts: k("attempts"),
            final_: k("final"),
            dead: k("dead"),
            seq: k("seq"),
            dup: k("dup"),
            reaped: k("reaped"),
            dep_mode: k("dependency"),
            leak: k("leak_permille"),
        }
    }

    pub fn lease(&self, id: u64) -> String {
        format!("{}:lease:{id}", self.prefix)
    }

    pub fn queue(&self, priority: Priority) -> &str {
        match priority {
            Priority::Critical => &self.critical,
            Priority::Default => &self.default,
        }
    }

    pub fn other_queue(&self, priority: Priority) -> &str {
        match priority {
            Priority::Critical => &self.default,
            Priority::Default => &self.critical,
        }
    }
}

/// The two queues; critical is always claimed first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    Critical,
    Default,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::Default => "default",
        }
    }

    pub fn parse(s: &str) -> Option<Priority> {
        match s {
            "critical" => Some(Priority::Critical),
            "default" | "" => Some(Priority::Default),
            _ => None,
        }
    }
}

/// A job as read back from a queue.
#[derive(Clone, Debug)]
pub struct Job {
    pub raw: String,
    pub id: u64,
    pub user: String,
    pub priority: Priority,
    pub needs_dependency: bool,
    pub enqueued_ms: u64,
}

impl Job {
    pub fn parse(raw: &str) -> Option<Job> {
        let mut it = raw.split('|');
        let id = it.next()?.parse().ok()?;
        let user = it.next()?.to_string();
        let priority = Priority::parse(it.next()?)?;
        let needs_dependency = it.next()? == "1";
        let enqueued_ms = it.next()?.parse().ok()?;
        Some(Job {
            raw: raw.to_string(),
            id,
            user,
            priority,
            needs_dependency,
            enqueued_ms,
        })
    }
}

/// Milliseconds since the Unix epoch (the processes share one machine's clock).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// KEYS: queue, the other queue, seq. ARGV: bound, user, priority, dep, now_ms.
/// Returns the new id, or -1 when the two queues hold `bound` jobs already (the hard cap behind
/// the api's [`keel_core::backlog::Backlog`] estimate, which other api processes cannot see).
pub const ENQUEUE_LUA: &str = r#"
if redis.call('LLEN', KEYS[1]) + redis.call('LLEN', KEYS[2]) >= tonumber(ARGV[1]) then return -1 end
local id = redis.call('INCR', KEYS[3])
redis.call('RPUSH', KEYS[1], id .. '|' .. ARGV[2] .. '|' .. ARGV[3] .. '|' .. ARGV[4] .. '|' .. ARGV[5])
return id
"#;

/// KEYS: critical, default, processing, attempts. ARGV: prefix, token, ttl_ms.
/// Returns {job, attempt} or nil.
pub const CLAIM_LUA: &str = r#"
for i = 1, 2 do
  local job = redis.call('LMOVE', KEYS[i], KEYS[3], 'LEFT', 'RIGHT')
  if job then
    local id = string.match(job, '^(%d+)|')
    redis.call('SET', ARGV[1] .. ':lease:' .. id, ARGV[2], 'PX', ARGV[3])
    local n = redis.call('HINCRBY', KEYS[4], id, 1)
    return {job, n}
  end
end
return false
"#;

/// KEYS: lease. ARGV: token, ttl_ms. 1 when renewed, 0 when the lease is no longer ours.
pub const RENEW_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

/// KEYS: lease, processing, final, dead, delayed, dup, attempts.
/// ARGV: token, job, outcome (done|dead|retry), reason, attempts, due_ms, id.
/// 1 when finished, 0 when the lease is no longer ours (nothing is changed). A final outcome
/// drops the job's attempt count (its dead-letter entry keeps it), so `P:attempts` holds only
/// the jobs in flight.
pub const FINISH_LUA: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('LREM', KEYS[2], 1, ARGV[2])
if ARGV[3] == 'retry' then
  redis.call('ZADD', KEYS[5], ARGV[6], ARGV[2])
  return 1
end
redis.call('HDEL', KEYS[7], ARGV[7])
if redis.call('HSETNX', KEYS[3], ARGV[7], ARGV[3]) == 0 then redis.call('INCR', KEYS[6]) end
if ARGV[3] == 'dead' then
  redis.call('RPUSH', KEYS[4], ARGV[7] .. '|' .. ARGV[5] .. '|' .. ARGV[4])
end
return 1
"#;

/// KEYS: delayed, critical, default. ARGV: now_ms. Moves due retries to their queue's tail.
pub const PROMOTE_LUA: &str = r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 200)
for _, job in ipairs(due) do
  redis.call('ZREM', KEYS[1], job)
  local q = KEYS[3]
  if string.find(job, '|critical|', 1, true) then q = KEYS[2] end
  redis.call('RPUSH', q, job)
end
return #due
"#;

/// KEYS: processing, critical, default, reaped. ARGV: prefix.
/// Puts every job whose lease expired back at the head of its queue.
pub const REAP_LUA: &str = r#"
local jobs = redis.call('LRANGE', KEYS[1], 0, -1)
local n = 0
for _, job in ipairs(jobs) do
  local id = string.match(job, '^(%d+)|')
  if redis.call('EXISTS', ARGV[1] .. ':lease:' .. id) == 0 then
    redis.call('LREM', KEYS[1], 1, job)
    local q = KEYS[3]
    if string.find(job, '|critical|', 1, true) then q = KEYS[2] end
    redis.call('LPUSH', q, job)
    n = n + 1
  end
end
if n > 0 then redis.call('INCRBY', KEYS[4], n) end
return n
"#;

/// A Lua script run with `EVAL` (keel-redis builds redis-rs without its script-hashing feature;
/// the scripts are short, so sending them each time costs little on loopback).
pub struct Script(pub &'static str);

/// One call of a [`Script`], built like redis-rs's `ScriptInvocation`.
pub struct Invocation {
    src: &'static str,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl Script {
    pub fn key<T: redis::ToRedisArgs>(&self, key: T) -> Invocation {
        Invocation {
            src: self.0,
            keys: Vec::new(),
            args: Vec::new(),
        }
        .key(key)
    }
}

impl Invocation {
    pub fn key<T: redis::ToRedisArgs>(mut self, key: T) -> Invocation {
        self.keys.extend(key.to_redis_args());
        self
    }

    pub fn arg<T: redis::ToRedisArgs>(mut self, arg: T) -> Invocation {
        self.args.extend(arg.to_redis_args());
        self
    }

    pub async fn invoke_async<T: redis::FromRedisValue>(
        self,
        conn: &mut impl redis::aio::ConnectionLike,
    ) -> redis::RedisResult<T> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(self.src)
            .arg(self.keys.len())
            .arg(self.keys)
            .arg(self.args);
        cmd.query_async(conn).await
    }
}
