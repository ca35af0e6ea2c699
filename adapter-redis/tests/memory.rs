//! Redis memory is bounded by active keys: a flood of distinct keys (20,000 here;
//! `KEEL_REDIS_FLOOD_KEYS` and `KEEL_REDIS_FLOOD_TTL_SECS` raise it) costs a bounded number of
//! bytes per key, and every key expires after its TTL (checked with `DBSIZE` and `INFO memory`
//! on a server of the test's own).

mod common;

use std::time::{Duration, Instant};

use common::{unique, OwnRedis};
use keel_core::rate::Quota;
use keel_redis::{FleetConfig, FleetLimiter, Source};

async fn info_field(c: &mut redis::aio::MultiplexedConnection, section: &str, field: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query_async(c)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(field).and_then(|v| v.strip_prefix(':')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in INFO {section}"))
}

async fn dbsize(c: &mut redis::aio::MultiplexedConnection) -> u64 {
    redis::cmd("DBSIZE").query_async(c).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_distinct_keys_costs_bounded_bytes_per_key_and_all_expire() {
    let keys: u64 = std::env::var("KEEL_REDIS_FLOOD_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let ttl_secs: u64 = std::env::var("KEEL_REDIS_FLOOD_TTL_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let redis = OwnRedis::start();
    let mut c = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // One per TTL, burst 1: every key's state equals a fresh key's TTL after its admission, so
    // (for a flood shorter than the TTL) every key is live at the end of the flood.
    let quota = Quota::with_period(Duration::from_secs(ttl_secs)).unwrap();
    let config = FleetConfig::builder(unique("flood"), quota)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let limiter = FleetLimiter::connect(&redis.url(), config).unwrap();
    assert_eq!(limiter.check("warm").await.unwrap().by, Source::Redis);
    let before = info_field(&mut c, "memory", "used_memory").await;

    let tasks = 64;
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let l = limiter.clone();
        handles.push(tokio::spawn(async move {
            for i in (t..keys).step_by(tasks as usize) {
                let key = format!("ip-{i:08}");
                assert_eq!(l.check(&key).await.unwrap().by, Source::Redis);
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let flood = start.elapsed();
    let peak_keys = dbsize(&mut c).await;
    let peak_mem = info_field(&mut c, "memory", "used_memory").await;
    let per_key = peak_mem.saturating_sub(before) / peak_keys.max(1);
    println!(
        "{keys} keys in {flood:?}; {peak_keys} keys live, {} bytes over baseline, {per_key} bytes per live key",
        peak_mem.saturating_sub(before)
    );
    if flood < Duration::from_secs(ttl_secs) {
        assert!(
            peak_keys > keys,
            "keys expired before their TTL: {peak_keys} live"
        );
    }
    // A key of ~40 bytes holding a 19-digit TAT with a TTL: Redis 7 spends about 100 bytes.
    assert!((40..=250).contains(&per_key), "{per_key} bytes per key");

    // Every key is logically gone one TTL after the flood, and reclaimed by Redis's active
    // expiry soon after.
    let sample = format!("{{{}}}:ip-{:08}", limiter.config().name(), keys - 1);
    tokio::time::sleep(Duration::from_secs(ttl_secs) + Duration::from_millis(100)).await;
    let exists: u64 = redis::cmd("EXISTS")
        .arg(&sample)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(exists, 0, "the last key outlived its TTL");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = dbsize(&mut c).await;
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} keys still in Redis 60 s after their TTL"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = info_field(&mut c, "memory", "used_memory").await;
    println!("after expiry: used_memory {after} (baseline {before})");
}
