//! The Redis script and keel-core's pure GCRA step agree on 10,000 random traces (client
//! time): every decision, every retry instant, every stored TAT and every time to live.

mod common;

use std::num::NonZeroU32;
use std::time::Duration;

use common::{redis_url, unique, Rng};
use keel_core::rate::{step, Quota, RateLimited};
use keel_core::Instant;
use keel_core::Rejected;
use keel_redis::config::MAX_REPLENISH_NANOS;
use keel_redis::{FleetConfig, FleetLimiter};

const TRACES: u64 = 10_000;
const TASKS: u64 = 8;

fn random_quota(rng: &mut Rng) -> Quota {
    loop {
        let count = rng.range(1, 1_000_000) as u32;
        let period = match rng.range(0, 2) {
            0 => rng.range(u64::from(count), u64::from(count) * 1000),
            1 => rng.range(1_000_000, 60_000_000_000),
            _ => rng.range(1_000_000_000, 86_400_000_000_000),
        };
        let Ok(q) = Quota::new(
            NonZeroU32::new(count).unwrap(),
            Duration::from_nanos(period),
        ) else {
            continue;
        };
        let t = q.emission_interval().as_nanos() as u64;
        let max_burst = (MAX_REPLENISH_NANOS / t).clamp(1, 500);
        let burst = NonZeroU32::new(rng.range(1, max_burst) as u32).unwrap();
        if let Ok(q) = q.with_burst(burst) {
            if q.replenish_all().as_nanos() <= u128::from(MAX_REPLENISH_NANOS) {
                return q;
            }
        }
    }
}

async fn run_traces(limiter: FleetLimiter, task: u64) -> u64 {
    let url = redis_url();
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut rng = Rng(0x6b65_656c ^ task.wrapping_mul(0x1234_5678_9abc));
    let mut steps = 0;
    for trace in (task..TRACES).step_by(TASKS as usize) {
        let quota = random_quota(&mut rng);
        let t = quota.emission_interval().as_nanos() as u64;
        let burst = u64::from(quota.burst().get());
        let span = t.saturating_mul(burst);
        let mut now = match rng.range(0, 9) {
            0 | 1 => u64::MAX - rng.range(0, span.saturating_mul(3)),
            2 | 3 => rng.range(0, span.saturating_mul(10)),
            _ => rng.range(0, 1 << 62),
        };
        let key = format!("trace-{trace}");
        let mut tat = Instant::ZERO;
        for _ in 0..rng.range(1, 12) {
            now = match rng.range(0, 9) {
                0 => now.saturating_sub(rng.range(0, span)),
                1 => now.saturating_add(rng.range(0, span.saturating_mul(2))),
                _ => now.saturating_add(rng.range(0, t.saturating_mul(2))),
            };
            let n = match rng.range(0, 9) {
                0..=5 => 1,
                6 | 7 => rng.range(0, burst) as u32,
                _ => rng.range(burst, burst + 3) as u32,
            };
            let at = Instant::from_nanos(now);
            let want = step(&quota, tat, at, n);
            let got = limiter
                .raw_step_with(&key, quota, Some(at), n)
                .await
                .unwrap();
            let ctx = || format!("trace {trace}: quota {quota:?}, tat {tat:?}, now {at:?}, n {n}");
            assert_eq!(got.decision, want.decision, "{}", ctx());
            assert_eq!(got.tat, want.tat, "{}", ctx());
            assert_eq!(got.now, at, "{}", ctx());
            let want_ms = if want.decision.is_ok() && n > 0 {
                want.idle_after(at).as_nanos().div_ceil(1_000_000) as u64
            } else {
                0
            };
            assert_eq!(got.pttl_ms, want_ms, "{}", ctx());
            if let Err(Rejected {
                reason: RateLimited::OverRate,
                retry_at: Some(retry_at),
            }) = want.decision
            {
                assert!(retry_at > at, "{}", ctx());
            }
            tat = want.tat;
            steps += 1;
        }
        let _: () = redis::cmd("DEL")
            .arg(limiter.redis_key(&key))
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    steps
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_script_and_the_core_step_agree_on_10000_random_traces() {
    let quota = Quota::per_second(NonZeroU32::new(1).unwrap()).unwrap();
    // `raw_step_with` has no timeout of its own, but the connection's response timeout is the
    // limiter's (at least 100 ms): a production latency bound, not one for 8 tasks on a loaded
    // 2-core machine. This test checks answers, not latency.
    let config = FleetConfig::builder(unique("conformance"), quota)
        .timeout(Duration::from_secs(10))
        .expire_idle_keys(false)
        .build()
        .unwrap();
    let limiter = FleetLimiter::connect(&redis_url(), config).unwrap();
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        tasks.push(tokio::spawn(run_traces(limiter.clone(), task)));
    }
    let mut steps = 0;
    for t in tasks {
        steps += t.await.unwrap();
    }
    assert!(steps > TRACES * 3, "only {steps} steps");
    println!("{TRACES} traces, {steps} steps: identical");
}
