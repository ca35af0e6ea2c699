//! A job system on Redis that a flood, a slow dependency, a leak and a killed worker cannot take
//! down (seed 004): an enqueue API and worker processes.
//!
//! ```sh
//! cargo run --release -p keel-redis --example jobs -- api    --redis redis://127.0.0.1:6379 --listen 127.0.0.1:8080
//! cargo run --release -p keel-redis --example jobs -- worker --redis redis://127.0.0.1:6379 --listen 127.0.0.1:8081
//! curl -XPOST -H 'x-user: alice' 'http://127.0.0.1:8080/enqueue?priority=default&dependency=1'
//! ```
//!
//! - `api`: `POST /enqueue` (user in the `x-user` header; `priority=critical|default` and
//!   `dependency=0|1` in the query) behind a fleet-wide per-user rate limit
//!   ([`keel_redis::FleetLimiter`], 429 with `Retry-After`) and the queue-depth guard
//!   ([`keel_core::backlog::Backlog`] over both queues' depth, polled every 100 ms; 503 with a
//!   `Retry-After` from the measured drain rate; the enqueue script enforces the same bound
//!   exactly). `POST /admin/dependency?mode=ok|slow|fail` and
//!   `POST /admin/leak?permille=N` switch the simulated dependency and the leak for every worker.
//! - `worker`: `--concurrency` tasks claiming jobs from the reliable queue (see `jobs/store.rs`),
//!   each holding a slot of a fleet-wide cap ([`keel_redis::FleetBulkhead`]) sized against the
//!   process's bounded Redis connection pool; the dependency call runs in a bulkhead, through the
//!   breaker named `dependency`, under a per-attempt timeout; failures retry with backoff while a
//!   retry budget allows, then go to the dead-letter list with the reason and attempt count.
//!   The worker logs one line per job start and end on stdout (`jobs-load` counts them).
//! - Both: `GET /metrics` (Prometheus text) and `GET /readyz` (503 when the backlog is over 90 %
//!   of `--backlog-high`, or, on a worker, when the breaker is open).
//!
//! The alert rules over these metrics are in `examples/jobs/README.md`; `jobs-load` runs the
//! seed's scenarios against this program and checks them.

// An example binary: its items are documented where it helps the reader.
#![allow(unreachable_pub, missing_docs)]

use std::process::ExitCode;
use std::time::Duration;

#[path = "jobs/api.rs"]
mod api;
#[path = "jobs/pool.rs"]
mod pool;
#[path = "jobs/store.rs"]
mod store;
#[path = "jobs/worker.rs"]
mod worker;

/// The flags of both subcommands.
#[derive(Clone, Debug)]
pub struct Args {
    pub redis: String,
    pub listen: String,
    pub prefix: String,
    /// Worker: tasks in this process.
    pub concurrency: usize,
    /// Worker: fleet-wide cap on running tasks (every worker process must be given the same).
    pub fleet_concurrency: u32,
    /// Worker: Redis connections in this process's pool (at least `concurrency + 2`).
    pub pool: usize,
    /// Worker: a name for the logs.
    pub name: String,
    /// Api: per-user quota (jobs per second, and burst).
    pub user_rate: u32,
    pub user_burst: u32,
    /// Queue-depth admission (`keel_core::backlog`) over both queues: refuse default jobs from
    /// `high` until drained to `low`; critical jobs may use `critical_reserve` more.
    pub backlog_high: u64,
    pub backlog_low: u64,
    pub critical_reserve: u64,
    /// Worker: attempts before the dead-letter list.
    pub max_attempts: u32,
    /// Worker: the per-attempt timeout around the dependency.
    pub attempt_timeout: Duration,
    /// Worker: how long a job's lease outlives its last renewal.
    pub lease_ttl: Duration,
    /// Worker: a pool connection held longer than this is reported as leaked and reclaimed.
    pub leak_threshold: Duration,
}

fn parse() -> Result<(String, Args), String> {
    let mut it = std::env::args().skip(1);
    let cmd = it.next().ok_or("usage: jobs api|worker [--flags]")?;
    let mut a = Args {
        redis: "redis://127.0.0.1:6379".into(),
        listen: "127.0.0.1:0".into(),
        prefix: "jobs".into(),
        concurrency: 4,
        fleet_concurrency: 6,
        pool: 0,
        name: format!("worker-{}", std::process::id()),
        user_rate: 10,
        user_burst: 20,
        backlog_high: 1000,
        backlog_low: 800,
        critical_reserve: 300,
        max_attempts: 4,
        attempt_timeout: Duration::from_millis(100),
        lease_ttl: Duration::from_millis(1500),
        leak_threshold: Duration::from_secs(1),
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let bad = |e: &dyn std::fmt::Display| format!("{flag}: {e}");
        match flag.as_str() {
            "--redis" => a.redis = value()?,
            "--listen" => a.listen = value()?,
            "--prefix" => a.prefix = value()?,
            "--name" => a.name = value()?,
            "--concurrency" => a.concurrency = value()?.parse().map_err(|e| bad(&e))?,
            "--fleet-concurrency" => a.fleet_concurrency = value()?.parse().map_err(|e| bad(&e))?,
            "--pool" => a.pool = value()?.parse().map_err(|e| bad(&e))?,
            "--user-rate" => a.user_rate = value()?.parse().map_err(|e| bad(&e))?,
            "--user-burst" => a.user_burst = value()?.parse().map_err(|e| bad(&e))?,
            "--backlog-high" => a.backlog_high = value()?.parse().map_err(|e| bad(&e))?,
            "--backlog-low" => a.backlog_low = value()?.parse().map_err(|e| bad(&e))?,
            "--critical-reserve" => a.critical_reserve = value()?.parse().map_err(|e| bad(&e))?,
            "--max-attempts" => a.max_attempts = value()?.parse().map_err(|e| bad(&e))?,
            "--attempt-timeout-ms" => {
                a.attempt_timeout = Duration::from_millis(value()?.parse().map_err(|e| bad(&e))?)
            }
            "--lease-ttl-ms" => {
                a.lease_ttl = Duration::from_millis(value()?.parse().map_err(|e| bad(&e))?)
            }
            "--leak-threshold-ms" => {
                a.leak_threshold = Duration::from_millis(value()?.parse().map_err(|e| bad(&e))?)
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.pool == 0 {
        a.pool = a.concurrency.saturating_add(2);
    }
    if a.concurrency == 0 || a.concurrency > 1024 {
        return Err("--concurrency must be between 1 and 1024".into());
    }
    // Every task holds a connection for each Redis call, the lease renewals and the reaper need
    // one each: a pool smaller than that starves the renewals and jobs lose their leases.
    if a.pool < a.concurrency.saturating_add(2) {
        return Err(format!(
            "--pool {} is too small for --concurrency {}: give it at least {}",
            a.pool,
            a.concurrency,
            a.concurrency + 2
        ));
    }
    if a.fleet_concurrency == 0 {
        return Err("--fleet-concurrency must be at least 1".into());
    }
    if a.max_attempts == 0 || a.max_attempts > 100 {
        return Err("--max-attempts must be between 1 and 100".into());
    }
    if a.lease_ttl < Duration::from_millis(100) || a.lease_ttl <= a.attempt_timeout * 2 {
        return Err(
            "--lease-ttl-ms must be at least 100 and more than twice the attempt timeout".into(),
        );
    }
    if a.prefix.is_empty() || a.prefix.contains('|') {
        return Err("--prefix must be non-empty and free of '|'".into());
    }
    Ok((cmd, a))
}

/// Installs the Prometheus recorder; the handle renders `/metrics`.
fn metrics_recorder() -> Result<metrics_exporter_prometheus::PrometheusHandle, String> {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&[
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ])
        .map_err(|e| e.to_string())?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| e.to_string())?;
    Ok(handle)
}

/// Binds `--listen` and prints `listening ADDR` (the load script reads it).
async fn bind(listen: &str) -> Result<tokio::net::TcpListener, String> {
    let l = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("bind {listen}: {e}"))?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    println!("listening {addr}");
    Ok(l)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let (cmd, args) = match parse() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("jobs: {e}");
            return ExitCode::from(2);
        }
    };
    let r = async move {
        let prometheus = metrics_recorder()?;
        match cmd.as_str() {
            "api" => api::run(args, prometheus).await,
            "worker" => worker::run(args, prometheus).await,
            other => Err(format!("unknown subcommand {other}: use api or worker")),
        }
    }
    .await;
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jobs: {e}");
            ExitCode::FAILURE
        }
    }
}
