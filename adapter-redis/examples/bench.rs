//! keel-redis beside a plain `EVALSHA` of a float GCRA script, against the same server.
//!
//! ```sh
//! cargo run --release -p keel-redis --example bench -- --redis redis://127.0.0.1:6379 [--ops 200000] [--concurrency 32]
//! ```
//!
//! Prints, for each: decisions per second and p50/p99 latency of one decision with
//! `--concurrency` tasks on one multiplexed connection; then Redis commands per decision
//! (`INFO commandstats`) with and without keel-redis's deny cache, under a workload where 90 %
//! of requests come from 10 abusive keys (10/s, burst 1) and 10 % from 10,000 others.
//!
//! The baseline is the GCRA as the widely used Lua scripts write it (redis_rate,
//! redis-gcra): the TAT as float seconds since a recent epoch, `GET`, then `SET .. EX` on
//! admission, one `EVALSHA` per decision. It is written here from the algorithm, not copied.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_core::rate::Quota;
use keel_redis::{FleetConfig, FleetLimiter};
use redis::aio::ConnectionManager;

const FLOAT_GCRA: &str = r#"
local t = redis.call('TIME')
local now = (tonumber(t[1]) - 1700000000) + tonumber(t[2]) / 1e6
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat - tolerance
if allow_at > now then return {0, tostring(allow_at - now)} end
local new = tat + interval
redis.call('SET', KEYS[1], tostring(new), 'EX', math.ceil(new - now))
return {1, '0'}
"#;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

fn report(name: &str, mut lat: Vec<Duration>, wall: Duration) {
    lat.sort_unstable();
    let pick = |q: f64| lat[((lat.len() as f64 - 1.0) * q) as usize];
    println!(
        "{name:<34} {:>9.0} decisions/s   p50 {:>7.1} us   p99 {:>7.1} us",
        lat.len() as f64 / wall.as_secs_f64(),
        pick(0.50).as_secs_f64() * 1e6,
        pick(0.99).as_secs_f64() * 1e6
    );
}

async fn run_tasks<F, Fut>(ops: usize, concurrency: usize, f: F) -> (Vec<Duration>, Duration)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let f = Arc::new(f);
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..concurrency {
        let f = f.clone();
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(ops / concurrency + 1);
            for i in (t..ops).step_by(concurrency) {
                let s = Instant::now();
                f(i).await;
                lat.push(s.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::with_capacity(ops);
    for h in handles {
        all.extend(h.await.expect("bench task"));
    }
    (all, start.elapsed())
}

async fn evalsha_calls(conn: &mut ConnectionManager) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn abusive(url: &str, cache: bool, ops: usize, conn: &mut ConnectionManager) -> f64 {
    let quota = Quota::per_second(NonZeroU32::new(10).expect("10"))
        .expect("quota")
        .with_burst(NonZeroU32::MIN)
        .expect("burst");
    let name = format!("bench-abuse-{}-{cache}", std::process::id());
    let config = FleetConfig::builder(name, quota)
        .deny_cache_keys(if cache { 10_000 } else { 0 })
        .timeout(Duration::from_secs(2))
        .build()
        .expect("config");
    let l = FleetLimiter::connect(url, config).expect("connect");
    let _ = l.check("warm").await;
    let before = evalsha_calls(conn).await;
    let (_, wall) = run_tasks(ops, 32, move |i| {
        let l = l.clone();
        async move {
            let key = if i % 10 != 0 {
                format!("abuser-{}", i % 10)
            } else {
                format!("user-{}", i % 10_000)
            };
            let _ = l.check(&key).await;
        }
    })
    .await;
    let calls = evalsha_calls(conn).await.saturating_sub(before);
    let per = calls as f64 / ops as f64;
    println!(
        "90 % abusive keys, deny cache {:<4} {per:>6.3} Redis commands per decision ({calls} EVALSHA for {ops} decisions in {wall:.2?})",
        if cache { "on" } else { "off" }
    );
    per
}

#[tokio::main]
async fn main() {
    let url = arg("--redis", "redis://127.0.0.1:6379");
    let ops: usize = arg("--ops", "200000").parse().expect("--ops");
    let concurrency: usize = arg("--concurrency", "32").parse().expect("--concurrency");
    let client = redis::Client::open(url.as_str()).expect("redis url");
    let mut conn = ConnectionManager::new(client)
        .await
        .expect("connect to Redis");

    // Generous quota over 1,000 keys: mostly admissions, the path that writes.
    let quota = Quota::per_second(NonZeroU32::new(1_000_000).expect("n")).expect("quota");
    let config = FleetConfig::builder(format!("bench-{}", std::process::id()), quota)
        .timeout(Duration::from_secs(2))
        .build()
        .expect("config");
    let keel = FleetLimiter::connect(&url, config).expect("connect");
    let _ = keel.check("warm").await;
    let (lat, wall) = run_tasks(ops, concurrency, move |i| {
        let keel = keel.clone();
        async move {
            let _ = keel.check(&format!("k{}", i % 1000)).await;
        }
    })
    .await;
    report("keel-redis FleetLimiter::check", lat, wall);

    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(FLOAT_GCRA)
        .query_async(&mut conn)
        .await
        .expect("load");
    let interval = 1.0 / 1_000_000.0;
    let tolerance = interval * 999_999.0;
    let prefix = format!("bench-plain-{}", std::process::id());
    let (lat, wall) = run_tasks(ops, concurrency, move |i| {
        let mut conn = conn.clone();
        let (sha, prefix) = (sha.clone(), prefix.clone());
        async move {
            let _: redis::Value = redis::cmd("EVALSHA")
                .arg(&sha)
                .arg(1)
                .arg(format!("{prefix}:k{}", i % 1000))
                .arg(interval)
                .arg(tolerance)
                .query_async(&mut conn)
                .await
                .expect("evalsha");
        }
    })
    .await;
    report("plain EVALSHA of a float Lua GCRA", lat, wall);

    let client = redis::Client::open(url.as_str()).expect("redis url");
    let mut conn = ConnectionManager::new(client)
        .await
        .expect("connect to Redis");
    let abusive_ops = ops / 2;
    abusive(&url, false, abusive_ops, &mut conn).await;
    abusive(&url, true, abusive_ops, &mut conn).await;
}
