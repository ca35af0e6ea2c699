//! `jobs worker`: tasks claiming jobs from the reliable queue and running them against the
//! dependency behind a bulkhead, a breaker and a per-attempt timeout.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use keel_core::backoff::{Backoff, BackoffConfig};
use keel_core::breaker::{BreakerConfig, SlidingWindow, State as BreakerState};
use keel_core::budget::BudgetConfig;
use keel_core::bulkhead::BulkheadConfig;
use keel_core::driver::breaker::BreakerError;
use keel_core::sync::budget::SharedBudget;
use keel_redis::{FleetBulkhead, FleetBulkheadConfig, LeaseError};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::pool::Pool;
use crate::store::{
    now_ms, Job, Keys, Script, CLAIM_LUA, FINISH_LUA, PROMOTE_LUA, REAP_LUA, RENEW_LUA,
};
use crate::Args;

/// The simulated dependency: its mode is read from Redis every 100 ms.
const MODE_OK: u8 = 0;
const MODE_SLOW: u8 = 1;
const MODE_FAIL: u8 = 2;
/// Its latency when healthy; 10× that when slow.
const DEPENDENCY_LATENCY: Duration = Duration::from_millis(20);
/// The job's own work, dependency or not.
const OWN_WORK: Duration = Duration::from_millis(5);
/// How long a leaking job keeps its connection before it finally drops it.
const LEAK_HOLD: Duration = Duration::from_secs(5);
/// The leak sweeper wakes at the detector's next deadline, and at least this often.
const LEAK_SWEEP: Duration = Duration::from_millis(100);

/// Reports and reclaims leaked pool connections: wakes when the leak detector's next permit
/// reaches the threshold (`poll_timeout`), at most [`LEAK_SWEEP`] apart, so a leak is reported
/// within the threshold plus one sweep interval (plus the timer's lag) whatever Redis is doing.
async fn sweep_leaks(w: Arc<Worker>) {
    loop {
        let now = keel_tokio::now();
        let cap = now.saturating_add(LEAK_SWEEP);
        let at = w
            .pool
            .next_leak_deadline()
            .map_or(cap, |d| d.min(cap).max(now));
        keel_tokio::sleep_until(at).await;
        w.pool.reclaim_leaks();
    }
}

struct Scripts {
    claim: Script,
    renew: Script,
    finish: Script,
    promote: Script,
    reap: Script,
}

struct Worker {
    a: Args,
    keys: Keys,
    scripts: Scripts,
    pool: Pool,
    fleet: FleetBulkhead,
    breaker: keel_tokio::Breaker,
    bulkhead: keel_tokio::Bulkhead,
    budget: SharedBudget,
    backoff: BackoffConfig,
    mode: AtomicU8,
    leak_permille: AtomicU32,
    /// Lease tokens handed out.
    tokens: AtomicU64,
    /// Jobs attempted, for the leak's 1 in N.
    jobs_run: AtomicU64,
    slots_held: AtomicI64,
    backlog: [AtomicU64; 2],
    /// Stops claiming (SIGTERM): running jobs finish.
    stopping: AtomicBool,
}

#[derive(Debug)]
enum Attempt {
    Ok,
    Failed(&'static str),
}

pub async fn run(a: Args, prometheus: PrometheusHandle) -> Result<(), String> {
    let client = redis::Client::open(a.redis.as_str()).map_err(|e| e.to_string())?;
    let pool = Pool::new(client, a.pool, Duration::from_millis(500), a.leak_threshold)?;
    let fleet_config =
        FleetBulkheadConfig::new(format!("{}:workers", a.prefix), a.fleet_concurrency)
            .map_err(|e| e.to_string())?
            .lease_ttl(Duration::from_secs(2))
            .timeout(Duration::from_millis(250));
    let fleet = FleetBulkhead::connect(&a.redis, fleet_config).map_err(|e| e.to_string())?;
    let breaker_config = BreakerConfig::builder()
        .count_window(20)
        .minimum_calls(10)
        .failure_rate_threshold(50)
        .disable_slow_call_rate()
        .open_duration(Duration::from_secs(2))
        .permitted_calls_in_half_open(3)
        .build()
        .map_err(|e| e.to_string())?;
    let breaker = keel_tokio::Breaker::new(breaker_config).named("dependency");
    // Half the tasks at most wait on the dependency: the others keep running jobs that do not
    // need it (the critical ones).
    let bulkhead_config = BulkheadConfig::builder()
        .max_concurrent((a.concurrency / 2).max(1))
        .max_queue(a.concurrency)
        .max_wait(Duration::from_millis(50))
        .build()
        .map_err(|e| e.to_string())?;
    let bulkhead = keel_tokio::Bulkhead::new(bulkhead_config).named("dependency");
    let budget_config = BudgetConfig::builder()
        .ttl(Duration::from_secs(10))
        .min_per_sec(2)
        .retry_percent(20)
        .build()
        .map_err(|e| e.to_string())?;
    let backoff = BackoffConfig::exponential(Duration::from_millis(100), Duration::from_secs(2))
        .max_attempts(a.max_attempts)
        .build()
        .map_err(|e| e.to_string())?;
    // The configuration the load script checks the run against (its bounds come from these).
    let window = match breaker_config.sliding_window() {
        SlidingWindow::Count { size } => size,
        // Not this example's: the load script then has no count to check against.
        _ => 0,
    };
    eprintln!(
        "config: breaker minimum_calls={} count_window={window} failure_rate={}",
        breaker_config.minimum_calls(),
        breaker_config.failure_rate_threshold().unwrap_or(0)
    );
    eprintln!(
        "config: budget ttl_ns={} slot_ns={} floor={} retry_percent={} min_per_sec={}",
        budget_config.ttl().as_nanos(),
        budget_config.slot().as_nanos(),
        budget_config.floor(),
        budget_config.retry_percent(),
        budget_config.min_per_sec()
    );
    eprintln!(
        "config: bulkhead max_concurrent={} concurrency={}",
        bulkhead_config.max_concurrent(),
        a.concurrency
    );
    eprintln!(
        "config: leak threshold_ms={} sweep_ms={}",
        a.leak_threshold.as_millis(),
        LEAK_SWEEP.as_millis()
    );
    let w = Arc::new(Worker {
        keys: Keys::new(&a.prefix),
        scripts: Scripts {
            claim: Script(CLAIM_LUA),
            renew: Script(RENEW_LUA),
            finish: Script(FINISH_LUA),
            promote: Script(PROMOTE_LUA),
            reap: Script(REAP_LUA),
        },
        pool,
        fleet,
        breaker,
        bulkhead,
        budget: SharedBudget::new(budget_config, keel_tokio::now()),
        backoff,
        mode: AtomicU8::new(MODE_OK),
        leak_permille: AtomicU32::new(0),
        tokens: AtomicU64::new(0),
        jobs_run: AtomicU64::new(0),
        slots_held: AtomicI64::new(0),
        backlog: [AtomicU64::new(0), AtomicU64::new(0)],
        stopping: AtomicBool::new(false),
        a,
    });
    tokio::spawn(maintain(w.clone()));
    tokio::spawn(sweep_leaks(w.clone()));
    for task in 0..w.a.concurrency {
        tokio::spawn(task_loop(w.clone(), task));
    }
    let app = Router::new()
        .route("/metrics", get(move || async move { prometheus.render() }))
        .route("/readyz", get(readyz))
        .with_state(w.clone());
    let listener = crate::bind(&w.a.listen).await?;
    let stop = w.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = keel_tokio::shutdown_signal().await;
            stop.stopping.store(true, Ordering::Relaxed);
            // Running jobs finish within one attempt timeout plus a Redis call or two.
            tokio::time::sleep(stop.a.attempt_timeout + Duration::from_millis(500)).await;
        })
        .await
        .map_err(|e| e.to_string())
}

impl Worker {
    /// A lease token no other run of any job shares (the process's name, the task, a count).
    fn token(&self, task: usize) -> String {
        let n = self.tokens.fetch_add(1, Ordering::Relaxed);
        format!("{}-{}-{task}-{n}", self.a.name, std::process::id())
    }
}

/// Every 100 ms: the dependency's mode and the leak rate from Redis, due retries back to their
/// queue, expired leases reaped (every 300 ms), leaks reclaimed, gauges.
async fn maintain(w: Arc<Worker>) {
    let mut tick: u64 = 0;
    loop {
        tick = tick.wrapping_add(1);
        if let Ok(mut c) = w.pool.get().await {
            let k = &w.keys;
            let r: Result<(Option<String>, Option<u32>, u64, u64), _> = redis::pipe()
                .get(&k.dep_mode)
                .get(&k.leak)
                .llen(&k.critical)
                .llen(&k.default)
                .query_async(&mut *c)
                .await;
            if let Ok((mode, leak, crit, def)) = r {
                let mode = match mode.as_deref() {
                    Some("slow") => MODE_SLOW,
                    Some("fail") => MODE_FAIL,
                    _ => MODE_OK,
                };
                w.mode.store(mode, Ordering::Relaxed);
                w.leak_permille
                    .store(leak.unwrap_or(0).min(1000), Ordering::Relaxed);
                w.backlog[0].store(crit, Ordering::Relaxed);
                w.backlog[1].store(def, Ordering::Relaxed);
                metrics::gauge!("jobs_dependency_mode").set(f64::from(mode));
            }
            let promoted: Result<u64, _> = w
                .scripts
                .promote
                .key(&k.delayed)
                .key(&k.critical)
                .key(&k.default)
                .arg(now_ms())
                .invoke_async(&mut *c)
                .await;
            if let Ok(n) = promoted {
                metrics::counter!("jobs_retries_promoted_total").increment(n);
            }
            if tick % 3 == 0 {
                let reaped: Result<u64, _> = w
                    .scripts
                    .reap
                    .key(&k.processing)
                    .key(&k.critical)
                    .key(&k.default)
                    .key(&k.reaped)
                    .arg(&k.prefix)
                    .invoke_async(&mut *c)
                    .await;
                if let Ok(n) = reaped {
                    if n > 0 {
                        eprintln!("reaper: {n} job(s) whose lease expired put back on their queue");
                        metrics::counter!("jobs_reaped_total").increment(n);
                    }
                }
            }
        }
        let state = match w.breaker.state() {
            BreakerState::Closed | BreakerState::Disabled => 0.0,
            BreakerState::Open | BreakerState::ForcedOpen => 1.0,
            BreakerState::HalfOpen => 2.0,
        };
        metrics::gauge!("jobs_breaker_state", "name" => "dependency").set(state);
        let bh = w.bulkhead.stats();
        metrics::gauge!("jobs_bulkhead_in_flight", "name" => "dependency").set(bh.in_flight as f64);
        metrics::gauge!("jobs_fleet_slots_held").set(w.slots_held.load(Ordering::Relaxed) as f64);
        metrics::gauge!("jobs_fleet_slots_limit").set(f64::from(w.a.fleet_concurrency));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn readyz(State(w): State<Arc<Worker>>) -> (StatusCode, String) {
    let state = w.breaker.state();
    if matches!(state, BreakerState::Open | BreakerState::ForcedOpen) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "breaker dependency is open\n".into(),
        );
    }
    let depth = w.backlog[0]
        .load(Ordering::Relaxed)
        .saturating_add(w.backlog[1].load(Ordering::Relaxed));
    if depth.saturating_mul(10) >= w.a.backlog_high.saturating_mul(9) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "backlog: {depth} jobs queued, over 90 % of {}\n",
                w.a.backlog_high
            ),
        );
    }
    (StatusCode::OK, "ready\n".into())
}

/// One task: holds a fleet slot, claims and runs jobs while it holds it.
async fn task_loop(w: Arc<Worker>, task: usize) {
    while !w.stopping.load(Ordering::Relaxed) {
        let lease = match w.fleet.try_acquire().await {
            Ok(l) => l,
            Err(LeaseError::Full { retry_after, .. }) => {
                tokio::time::sleep(
                    retry_after.clamp(Duration::from_millis(50), Duration::from_millis(500)),
                )
                .await;
                continue;
            }
            Err(e) => {
                eprintln!("{}: no fleet slot: {e}", w.a.name);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        w.slots_held.fetch_add(1, Ordering::Relaxed);
        while !lease.is_lost() && !w.stopping.load(Ordering::Relaxed) {
            let token = w.token(task);
            match claim(&w, &token).await {
                Ok(Some((job, attempt))) => process(&w, job, attempt, token).await,
                Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => {
                    eprintln!("{}: claim: {e}", w.a.name);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        w.slots_held.fetch_sub(1, Ordering::Relaxed);
        let _ = lease.release().await;
    }
}

async fn claim(w: &Worker, token: &str) -> Result<Option<(Job, u32)>, String> {
    let mut c = w.pool.get().await?;
    let k = &w.keys;
    let r: Option<(String, u32)> = w
        .scripts
        .claim
        .key(&k.critical)
        .key(&k.default)
        .key(&k.processing)
        .key(&k.attempts)
        .arg(&k.prefix)
        .arg(token)
        .arg(u64::try_from(w.a.lease_ttl.as_millis()).unwrap_or(u64::MAX))
        .invoke_async(&mut *c)
        .await
        .map_err(|e| e.to_string())?;
    drop(c);
    match r {
        None => Ok(None),
        Some((raw, attempt)) => match Job::parse(&raw) {
            Some(job) => Ok(Some((job, attempt))),
            None => Err(format!("a malformed job in the queue: {raw:?}")),
        },
    }
}

/// Renews the job's lease every quarter of its TTL until aborted; sets `lost` if it is gone.
async fn renew(w: Arc<Worker>, id: u64, token: String, lost: Arc<AtomicBool>) {
    let ttl = u64::try_from(w.a.lease_ttl.as_millis()).unwrap_or(u64::MAX);
    loop {
        tokio::time::sleep(w.a.lease_ttl / 4).await;
        let Ok(mut c) = w.pool.get().await else {
            continue;
        };
        let r: Result<u32, _> = w
            .scripts
            .renew
            .key(w.keys.lease(id))
            .arg(&token)
            .arg(ttl)
            .invoke_async(&mut *c)
            .await;
        if let Ok(0) = r {
            lost.store(true, Ordering::Relaxed);
            return;
        }
    }
}

async fn dependency(mode: u8) -> Result<(), &'static str> {
    match mode {
        MODE_SLOW => {
            tokio::time::sleep(DEPENDENCY_LATENCY * 10).await;
            Ok(())
        }
        MODE_FAIL => {
            tokio::time::sleep(Duration::from_millis(2)).await;
            Err("dependency failed")
        }
        _ => {
            tokio::time::sleep(DEPENDENCY_LATENCY).await;
            Ok(())
        }
    }
}

async fn attempt(w: &Arc<Worker>, job: &Job) -> Attempt {
    tokio::time::sleep(OWN_WORK).await;
    // Exactly `permille` of every 1000 jobs this process runs, evenly spread.
    let n = w.jobs_run.fetch_add(1, Ordering::Relaxed);
    let permille = u64::from(w.leak_permille.load(Ordering::Relaxed));
    if permille > 0 && n.wrapping_mul(permille) % 1000 < permille {
        // The seed's careless worker: takes a connection and forgets to give it back promptly.
        if let Ok(conn) = w.pool.get().await {
            metrics::counter!("jobs_leaky_jobs_total").increment(1);
            tokio::spawn(async move {
                tokio::time::sleep(LEAK_HOLD).await;
                drop(conn);
            });
        }
    }
    if !job.needs_dependency {
        return Attempt::Ok;
    }
    let mode = w.mode.load(Ordering::Relaxed);
    let call = w
        .breaker
        .call_timeout(w.a.attempt_timeout, dependency(mode));
    let r = w.bulkhead.run(call).await;
    if let Ok(Err(BreakerError::TimedOut(_) | BreakerError::Inner(_))) = &r {
        // A failure the breaker recorded: the breaker's counters right after it (the load
        // script measures how many failures it took to open).
        let st = w.breaker.stats();
        println!(
            "dep failed {} {} {} {}",
            w.a.name,
            now_ms(),
            st.failures,
            st.opened_count
        );
    }
    match r {
        Err(_) => Attempt::Failed("bulkhead_full"),
        Ok(Ok(())) => Attempt::Ok,
        Ok(Err(BreakerError::Rejected(_))) => Attempt::Failed("breaker_open"),
        Ok(Err(BreakerError::TimedOut(_))) => Attempt::Failed("timeout"),
        Ok(Err(BreakerError::Inner(_))) => Attempt::Failed("dependency_error"),
        // BreakerError is non_exhaustive.
        Ok(Err(_)) => Attempt::Failed("dependency_error"),
    }
}

async fn process(w: &Arc<Worker>, job: Job, attempt_no: u32, token: String) {
    let name = &w.a.name;
    println!("start {} {attempt_no} {name} {}", job.id, now_ms());
    let lost = Arc::new(AtomicBool::new(false));
    let renewal = tokio::spawn(renew(w.clone(), job.id, token.clone(), lost.clone()));
    let now = keel_tokio::now();
    if attempt_no == 1 {
        // The clock is read under the budget's lock, so the logged instant is the one the
        // budget recorded (the load script checks the budget's bound from these lines).
        let at = w.budget.with(|b| {
            let t = keel_tokio::now();
            b.deposit(t);
            t
        });
        println!("budget deposit {name} {}", at.as_nanos());
        metrics::counter!("jobs_first_attempts_total").increment(1);
    }
    let (outcome, reason, due) = if attempt_no > w.a.max_attempts {
        // Its earlier holders died mid-job (the lease expired each time).
        ("dead", "attempts_exhausted_by_lost_workers", 0)
    } else {
        let result = attempt(w, &job).await;
        let label = match result {
            Attempt::Ok => "ok",
            Attempt::Failed(r) => r,
        };
        metrics::counter!("jobs_attempts_total", "result" => label).increment(1);
        match result {
            Attempt::Ok => ("done", "", 0),
            Attempt::Failed(reason) if attempt_no >= w.a.max_attempts => ("dead", reason, 0),
            Attempt::Failed(reason) => match w.budget.with(|b| {
                let t = keel_tokio::now();
                b.try_acquire(t).map(|()| t)
            }) {
                Ok(at) => {
                    println!("budget retry {name} {}", at.as_nanos());
                    let mut b = Backoff::new(w.backoff, now);
                    let skip = usize::try_from(attempt_no.saturating_sub(1)).unwrap_or(0);
                    let delay = b.delays().nth(skip).unwrap_or(Duration::from_secs(1));
                    metrics::counter!("jobs_retries_total").increment(1);
                    let due =
                        now_ms().saturating_add(u64::try_from(delay.as_millis()).unwrap_or(0));
                    ("retry", reason, due)
                }
                Err(_) => {
                    metrics::counter!("jobs_retry_budget_exhausted_total").increment(1);
                    let why = match reason {
                        "timeout" => "retry_budget_exhausted_after_timeout",
                        "breaker_open" => "retry_budget_exhausted_after_breaker_open",
                        "bulkhead_full" => "retry_budget_exhausted_after_bulkhead_full",
                        _ => "retry_budget_exhausted_after_dependency_error",
                    };
                    ("dead", why, 0)
                }
            },
        }
    };
    renewal.abort();
    if lost.load(Ordering::Relaxed) {
        println!("lost {} {attempt_no} {name} {}", job.id, now_ms());
        return;
    }
    // The finish must land: a finish that fails leaves the job in processing, and the reaper
    // puts it back once the lease expires (it runs again: at least once, never concurrently).
    let k = &w.keys;
    let mut finished = None;
    for _ in 0..3 {
        let Ok(mut c) = w.pool.get().await else {
            continue;
        };
        let r: Result<u32, _> = w
            .scripts
            .finish
            .key(k.lease(job.id))
            .key(&k.processing)
            .key(&k.final_)
            .key(&k.dead)
            .key(&k.delayed)
            .key(&k.dup)
            .key(&k.attempts)
            .arg(&token)
            .arg(&job.raw)
            .arg(outcome)
            .arg(reason)
            .arg(attempt_no)
            .arg(due)
            .arg(job.id)
            .invoke_async(&mut *c)
            .await;
        if let Ok(n) = r {
            finished = Some(n);
            break;
        }
    }
    match finished {
        Some(1) => {
            println!("end {} {attempt_no} {outcome} {name} {}", job.id, now_ms());
            match outcome {
                "done" => {
                    metrics::counter!("jobs_done_total", "queue" => job.priority.as_str())
                        .increment(1);
                    let latency = now_ms().saturating_sub(job.enqueued_ms);
                    metrics::histogram!("jobs_latency_seconds", "queue" => job.priority.as_str())
                        .record(latency as f64 / 1000.0);
                }
                "dead" => metrics::counter!("jobs_dead_total", "reason" => reason).increment(1),
                _ => {}
            }
        }
        Some(_) => println!("lost {} {attempt_no} {name} {}", job.id, now_ms()),
        None => println!("unfinished {} {attempt_no} {name} {}", job.id, now_ms()),
    }
}
