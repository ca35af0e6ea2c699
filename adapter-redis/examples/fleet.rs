//! One replica of a fleet sharing a rate limit on Redis.
//!
//! ```sh
//! cargo run --release -p keel-redis --example fleet -- --redis redis://127.0.0.1:6379 \
//!     --key demo --per-second 200 --burst 20 --for 5 --concurrency 8 [--policy closed|open|local]
//! ```
//!
//! Runs `--concurrency` tasks that check the limiter as fast as they can for `--for` seconds,
//! then prints one line: `admitted=N rejected=M errors=E fallback=F from_us=A to_us=Z`, where
//! `A` and `Z` are the wall-clock microseconds (since the Unix epoch) before its first check was
//! sent and after its last answer came: the run's span on the clock of a Redis on the same host.
//! Several processes started together against one Redis together admit at most `R × SECONDS + B`
//! (`SECONDS` the span from the earliest `from_us` to the latest `to_us`: a check sent just
//! before the end is decided a little after it, more so on a loaded machine; plus what the
//! failure policy allows while Redis fails). `--start-at UNIX_MS` makes processes start their run at
//! the same wall-clock instant; `--local-share F` is the fraction of the quota the `local`
//! policy keeps in this process (default 0.25); `--timeout-ms` bounds each Redis call (default
//! 500: the example's tasks spin on the CPU, and on a small machine they compete with Redis).

use std::num::NonZeroU32;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keel_core::rate::Quota;
use keel_redis::{Denied, FailurePolicy, FleetConfig, FleetLimiter};

struct Args {
    redis: String,
    key: String,
    per_second: u32,
    burst: u32,
    seconds: f64,
    concurrency: usize,
    policy: String,
    local_share: f64,
    start_at_ms: Option<u64>,
    timeout_ms: u64,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        redis: "redis://127.0.0.1:6379".into(),
        key: "fleet".into(),
        per_second: 200,
        burst: 20,
        seconds: 5.0,
        concurrency: 8,
        policy: "closed".into(),
        local_share: 0.25,
        start_at_ms: None,
        timeout_ms: 500,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let bad = |e: &dyn std::fmt::Display| format!("{flag}: {e}");
        match flag.as_str() {
            "--redis" => a.redis = value()?,
            "--key" => a.key = value()?,
            "--per-second" => a.per_second = value()?.parse().map_err(|e| bad(&e))?,
            "--burst" => a.burst = value()?.parse().map_err(|e| bad(&e))?,
            "--for" => a.seconds = value()?.parse().map_err(|e| bad(&e))?,
            "--concurrency" => a.concurrency = value()?.parse().map_err(|e| bad(&e))?,
            "--policy" => a.policy = value()?,
            "--local-share" => a.local_share = value()?.parse().map_err(|e| bad(&e))?,
            "--timeout-ms" => a.timeout_ms = value()?.parse().map_err(|e| bad(&e))?,
            "--start-at" => a.start_at_ms = Some(value()?.parse().map_err(|e| bad(&e))?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if !(a.seconds > 0.0 && a.seconds < 86_400.0) {
        return Err("--for must be between 0 and 86400 seconds".into());
    }
    if a.concurrency == 0 || a.concurrency > 10_000 {
        return Err("--concurrency must be between 1 and 10000".into());
    }
    Ok(a)
}

fn quota(per_second: u32, burst: u32) -> Result<Quota, String> {
    let rate = NonZeroU32::new(per_second).ok_or("--per-second must be > 0")?;
    let burst = NonZeroU32::new(burst).ok_or("--burst must be > 0")?;
    Quota::per_second(rate)
        .and_then(|q| q.with_burst(burst))
        .map_err(|e| e.to_string())
}

fn config(a: &Args) -> Result<FleetConfig, String> {
    let policy = match a.policy.as_str() {
        "closed" => FailurePolicy::FailClosed,
        "open" => FailurePolicy::FailOpen,
        "local" => {
            let share = a.local_share.clamp(0.0, 1.0);
            let rate = ((f64::from(a.per_second) * share).ceil() as u32).max(1);
            let burst = ((f64::from(a.burst) * share).ceil() as u32).max(1);
            FailurePolicy::Local {
                quota: quota(rate, burst)?,
                max_keys: 10_000,
            }
        }
        other => return Err(format!("--policy {other}: use closed, open or local")),
    };
    FleetConfig::builder("keel-fleet-example", quota(a.per_second, a.burst)?)
        .policy(policy)
        .timeout(Duration::from_millis(a.timeout_ms))
        .build()
        .map_err(|e| e.to_string())
}

async fn run(a: Args) -> Result<(), String> {
    let limiter = FleetLimiter::connect(&a.redis, config(&a)?).map_err(|e| e.to_string())?;
    if let Some(at) = a.start_at_ms {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let wait = Duration::from_millis(at).saturating_sub(now);
        tokio::time::sleep(wait).await;
    }
    let from_us = unix_micros();
    let end = tokio::time::Instant::now() + Duration::from_secs_f64(a.seconds);
    let (admitted, rejected, errors) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut tasks = Vec::new();
    for _ in 0..a.concurrency {
        let (l, key) = (limiter.clone(), a.key.clone());
        let (ok, no, err) = (admitted.clone(), rejected.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            while tokio::time::Instant::now() < end {
                match l.check(&key).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(Denied::Unavailable(_)) => err.fetch_add(1, Ordering::Relaxed),
                    Err(_) => no.fetch_add(1, Ordering::Relaxed),
                };
                // A rejection from the local cache costs no I/O: let the other tasks run.
                tokio::task::yield_now().await;
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())?;
    }
    let to_us = unix_micros();
    let stats = limiter.stats();
    println!(
        "admitted={} rejected={} errors={} fallback={} from_us={from_us} to_us={to_us}",
        admitted.load(Ordering::Relaxed),
        rejected.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        stats.fallbacks
    );
    eprintln!("{stats:?}");
    Ok(())
}

/// Microseconds since the Unix epoch on the wall clock (the clock Redis's `TIME` reads).
fn unix_micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros()
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fleet: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fleet: cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleet: {e}");
            ExitCode::FAILURE
        }
    }
}
