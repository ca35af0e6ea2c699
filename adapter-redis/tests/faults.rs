//! Faults on a real redis-server of the test's own: SIGSTOP for 2 s mid-run, kill and restart.

mod common;

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{unique, OwnRedis};
use keel_core::breaker::BreakerConfig;
use keel_core::rate::Quota;
use keel_redis::{FailurePolicy, FleetConfig, FleetLimiter, Source};

const TIMEOUT: Duration = Duration::from_millis(100);
const OPEN: Duration = Duration::from_secs(1);

fn limiter(url: &str, policy: FailurePolicy) -> FleetLimiter {
    let quota = Quota::per_second(NonZeroU32::new(1000).unwrap()).unwrap();
    let config = FleetConfig::builder(unique("faults"), quota)
        .policy(policy)
        .timeout(TIMEOUT)
        .breaker(
            BreakerConfig::consecutive_failures(3)
                .open_duration(OPEN)
                .permitted_calls_in_half_open(1)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    FleetLimiter::connect(url, config).unwrap()
}

/// Waits until a decision comes from Redis again; returns how long that took.
async fn until_redis(l: &FleetLimiter, key: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if let Ok(a) = l.check(key).await {
            if a.by == Source::Redis {
                return start.elapsed();
            }
        }
        assert!(
            start.elapsed() < limit,
            "decisions did not return to Redis within {limit:?}: {:?}",
            l.stats()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_for_2s_costs_no_task_more_than_the_timeout_and_redis_returns_within_a_breaker_period(
) {
    let redis = OwnRedis::start();
    let l = limiter(&redis.url(), FailurePolicy::FailOpen);
    until_redis(&l, "warm", Duration::from_secs(5)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let worst = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (l, stop, worst) = (l.clone(), stop.clone(), worst.clone());
        tasks.push(tokio::spawn(async move {
            let key = format!("task-{i}");
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let _ = l.check(&key).await;
                worst.fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.pause();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = l.stats();
    redis.resume();
    let back = until_redis(&l, "probe", OPEN + Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let worst = Duration::from_micros(worst.load(Ordering::Relaxed));
    // The timeout bounds every call (without it a call would wait out the 2 s stop); the
    // generous margin is for a loaded 2-core machine.
    assert!(
        worst < TIMEOUT + Duration::from_secs(1),
        "a task waited {worst:?}"
    );
    assert!(during.timeouts >= 1, "{during:?}");
    assert!(
        during.fallback_open > during.timeouts,
        "the breaker did not spare Redis: {during:?}"
    );
    assert!(during.breaker_rejections > 0, "{during:?}");
    // A stopped Redis cost about one timeout per breaker period, not one per request.
    assert!(during.errors <= 3 + 2 * 8, "{during:?}");
    println!(
        "worst wait {worst:?}, back on Redis {back:?} after SIGCONT, stats {:?}",
        l.stats()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_and_restart_reconnects_and_reloads_the_script() {
    let mut redis = OwnRedis::start();
    let l = limiter(&redis.url(), FailurePolicy::FailClosed);
    until_redis(&l, "k", Duration::from_secs(5)).await;
    assert_eq!(l.stats().script_loads, 1);
    redis.kill();
    for _ in 0..10 {
        assert!(
            l.check("k").await.is_err(),
            "fail closed while Redis is down"
        );
    }
    assert!(l.stats().fallback_closed >= 10);
    redis.restart();
    let back = until_redis(&l, "k", OPEN + Duration::from_secs(4)).await;
    let s = l.stats();
    assert!(s.script_loads >= 2, "the script was not reloaded: {s:?}");
    println!("back on Redis {back:?} after restart, stats {s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_flush_is_recovered_by_reloading_on_noscript() {
    let redis = OwnRedis::start();
    let l = limiter(&redis.url(), FailurePolicy::FailClosed);
    until_redis(&l, "k", Duration::from_secs(5)).await;
    let mut c = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(l.check("k").await.unwrap().by, Source::Redis);
    let s = l.stats();
    assert_eq!(s.script_loads, 2);
    assert_eq!(s.errors, 0);
}
