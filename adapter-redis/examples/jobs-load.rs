//! Runs seed 004's attacks against the `jobs` example on loopback and checks it survives them.
//!
//! ```sh
//! cargo build --release -p keel-redis --example jobs --example jobs-load
//! cargo run --release -p keel-redis --example jobs-load -- --redis redis://127.0.0.1:6379 [--short]
//! ```
//!
//! Starts one `jobs api` and two `jobs worker` processes (the `jobs` binary next to this one),
//! scrapes their `/metrics` every 500 ms, and runs, after a quiet baseline: (a) a flood from 3
//! users beside 100 normal users; (b) a legitimate spike from 500 users; (c) the dependency 10×
//! slower, then failing, then recovered; (d) 1 % of jobs leaking a pool connection; (e) a worker
//! SIGKILLed mid-job (a replacement starts 3 s later). Then it drains the queues and counts,
//! from Redis and from the workers' logs, what became of every job. It prints one table and a
//! last line `jobs: enqueued=N done=D dead=L lost=X duplicated=Y normal_enqueue_ok=P% alerts=K/5`,
//! and exits non-zero if a job was lost or ran twice, if normal users' enqueues during the flood
//! succeeded less than 99 % of the time, if an alert did not fire during its scenario or
//! fired during the baseline, or if one of the bounds in `jobs/checks.rs` was broken (Redis
//! memory under the queue-depth guard's bound, flooding users held to their quota, each
//! worker's breaker opening within its minimum calls, its retries within the retry budget's
//! exact bound, critical jobs flowing while the dependency fails, leaks reported within one
//! sweep of the threshold). `--short` halves every phase; `tests/jobs.rs` runs the whole script
//! (about 1 min 45 s in a debug build on a loaded 2-core machine).

#![allow(unreachable_pub, missing_docs, dead_code)]

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "jobs/alerts.rs"]
mod alerts;
#[path = "jobs/checks.rs"]
mod checks;
#[path = "jobs/http.rs"]
mod http;
#[path = "jobs/store.rs"]
mod store;

use alerts::{History, Scrape, RULES};
use checks::{BreakerCheck, BudgetCheck, MemSample};
use http::Http;
use store::{now_ms, Keys};

const PHASES: [&str; 7] = [
    "baseline",
    "a flood",
    "b spike",
    "c dependency",
    "d leak",
    "e kill",
    "drain",
];
/// `spike` also counts the steady extra load of the leak scenario.
const CLASSES: [&str; 3] = ["normal", "flood", "spike"];
/// Outcomes counted per phase and class: 200, 429, 503, other.
const OUTCOMES: usize = 4;

/// Everything the generators and the scraper share.
struct Shared {
    start: Instant,
    phase: AtomicUsize,
    /// Stops the load generators.
    stop: AtomicBool,
    /// Stops the scraper (after the drain).
    stop_scraping: AtomicBool,
    /// [phase][class][outcome]
    counts: Vec<AtomicU64>,
    history: Mutex<History>,
    targets: Mutex<Vec<(String, SocketAddr)>>,
    peak_memory: AtomicU64,
    /// Redis's memory and the job keys' sizes, every 500 ms.
    memory: Mutex<Vec<MemSample>>,
    /// Enqueues accepted (200) per flooding user.
    flood_ok: [AtomicU64; 3],
}

impl Shared {
    fn count(&self, class: usize, status: Option<u16>) {
        let o = match status {
            Some(200) => 0,
            Some(429) => 1,
            Some(503) => 2,
            _ => 3,
        };
        let p = self.phase.load(Ordering::Relaxed);
        self.counts[(p * CLASSES.len() + class) * OUTCOMES + o].fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self, phase: usize, class: usize, o: usize) -> u64 {
        self.counts[(phase * CLASSES.len() + class) * OUTCOMES + o].load(Ordering::Relaxed)
    }

    fn t(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
}

/// A child process and the lines it printed (stdout: the job log; stderr: reports).
struct Proc {
    name: String,
    child: Child,
    addr: SocketAddr,
    out: Arc<Mutex<Vec<String>>>,
    err: Arc<Mutex<Vec<String>>>,
}

fn spawn(bin: &std::path::Path, name: &str, args: &[String]) -> Result<Proc, String> {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("run {}: {e}", bin.display()))?;
    let out = Arc::new(Mutex::new(Vec::new()));
    let err = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let o = out.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(a) = line.strip_prefix("listening ") {
                let _ = tx.send(a.to_string());
            }
            lock(&o).push(line);
        }
    });
    let e = err.clone();
    let tag = name.to_string();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if std::env::var_os("JOBS_LOAD_VERBOSE").is_some() {
                eprintln!("[{tag}] {line}");
            }
            lock(&e).push(line);
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .map_err(|_| {
            let _ = child.kill();
            format!("{name} did not start: {:?}", lock(&err))
        })?
        .parse()
        .map_err(|e| format!("{name}: {e}"))?;
    Ok(Proc {
        name: name.to_string(),
        child,
        addr,
        out,
        err,
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Args {
    redis: String,
    short: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        redis: "redis://127.0.0.1:6379".into(),
        short: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--redis" => a.redis = it.next().ok_or("--redis needs a value")?,
            "--short" => a.short = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("jobs-load: {e}");
            return ExitCode::from(2);
        }
    };
    match run(a).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("jobs-load: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Every 500 ms: every live process's `/metrics`, and Redis's memory.
async fn scraper(s: Arc<Shared>, mut redis: redis::aio::MultiplexedConnection, keys: Keys) {
    let mut clients: HashMap<String, Http> = HashMap::new();
    while !s.stop_scraping.load(Ordering::Relaxed) {
        let targets = lock(&s.targets).clone();
        for (name, addr) in targets {
            let c = clients
                .entry(name.clone())
                .or_insert_with(|| Http::new(addr));
            if let Ok((200, body)) = c.request("GET", "/metrics", "").await {
                let scrape = Scrape {
                    t: s.t(),
                    target: name,
                    series: alerts::parse(&body),
                };
                lock(&s.history).scrapes.push(scrape);
            }
        }
        let info: Result<String, _> = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut redis)
            .await;
        if let Ok(info) = info {
            let field = |name: &str| -> Option<u64> {
                info.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.trim().parse().ok())
            };
            if let Some(v) = field("used_memory:") {
                s.peak_memory.fetch_max(v, Ordering::Relaxed);
                let sizes: Result<(u64, u64, u64, u64, u64, u64), _> = redis::pipe()
                    .llen(&keys.critical)
                    .llen(&keys.default)
                    .llen(&keys.processing)
                    .zcard(&keys.delayed)
                    .hlen(&keys.final_)
                    .llen(&keys.dead)
                    .query_async(&mut redis)
                    .await;
                if let Ok((c, d, processing, delayed, finals, dead)) = sizes {
                    lock(&s.memory).push(MemSample {
                        t: s.t(),
                        used: v,
                        clients: field("mem_clients_normal:").unwrap_or(0),
                        queued: c + d,
                        processing,
                        delayed,
                        finals,
                        dead,
                    });
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn enqueue_path(critical: bool) -> &'static str {
    if critical {
        "/enqueue?priority=critical&dependency=0"
    } else {
        "/enqueue?priority=default&dependency=1"
    }
}

/// 100 normal users, `per_sec` enqueues a second in all, one in five critical, until stopped.
async fn normal_users(s: Arc<Shared>, api: SocketAddr, per_sec: u32) {
    let mut tasks = Vec::new();
    for lane in 0..4u64 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Http::new(api);
            let mut n: u64 = lane;
            let gap = Duration::from_secs_f64(4.0 / f64::from(per_sec.max(1)));
            let mut next = tokio::time::Instant::now();
            while !s.stop.load(Ordering::Relaxed) {
                n = n.wrapping_add(4);
                let user = format!("user-{}", n % 100);
                let headers = format!("x-user: {user}\r\n");
                let r = c.request("POST", enqueue_path(n % 5 == 0), &headers).await;
                s.count(0, r.ok().map(|(st, _)| st));
                next += gap;
                tokio::time::sleep_until(next).await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// 3 users enqueueing as fast as 4 connections each allow, until `until`.
async fn flood(s: Arc<Shared>, api: SocketAddr, until: Instant) {
    let mut tasks = Vec::new();
    for attacker in 0..3 {
        for _ in 0..4 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let mut c = Http::new(api);
                let headers = format!("x-user: attacker-{attacker}\r\n");
                while Instant::now() < until {
                    let r = c.request("POST", enqueue_path(false), &headers).await;
                    let st = r.ok().map(|(st, _)| st);
                    if st == Some(200) {
                        s.flood_ok[attacker].fetch_add(1, Ordering::Relaxed);
                    }
                    s.count(1, st);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// 200 users, `per_sec` jobs a second in all (1 in 10 critical), until `until`.
async fn steady(s: Arc<Shared>, api: SocketAddr, per_sec: u32, until: Instant) {
    let mut tasks = Vec::new();
    for lane in 0..4u64 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Http::new(api);
            let gap = Duration::from_secs_f64(4.0 / f64::from(per_sec.max(1)));
            let mut next = tokio::time::Instant::now();
            let mut n = lane;
            while Instant::now() < until {
                n = n.wrapping_add(4);
                let headers = format!("x-user: steady-{}\r\n", n % 200);
                let r = c.request("POST", enqueue_path(n % 10 == 0), &headers).await;
                s.count(2, r.ok().map(|(st, _)| st));
                next += gap;
                tokio::time::sleep_until(next).await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// `users` new users, `each` jobs each, over about 1.5 s (every user within its quota).
async fn spike(s: Arc<Shared>, api: SocketAddr, users: u32, each: u32) {
    let mut tasks = Vec::new();
    for lane in 0..32u32 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Http::new(api);
            let mine: Vec<u32> = (0..users).filter(|u| u % 32 == lane).collect();
            let gap = Duration::from_secs_f64(1.5 / f64::from((mine.len() as u32 * each).max(1)));
            for u in mine {
                let headers = format!("x-user: spike-{u}\r\n");
                for j in 0..each {
                    let r = c
                        .request("POST", enqueue_path(j == 0 && u % 10 == 0), &headers)
                        .await;
                    s.count(2, r.ok().map(|(st, _)| st));
                    tokio::time::sleep(gap).await;
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

async fn admin(api: SocketAddr, path: &str) -> Result<(), String> {
    match Http::new(api).request("POST", path, "").await? {
        (200, _) => Ok(()),
        (st, body) => Err(format!("POST {path}: {st} {body}")),
    }
}

/// One job's run in a worker's log: `start ID ATTEMPT WORKER MS`, then `end ID ATTEMPT OUTCOME
/// WORKER MS` (or `lost`/`unfinished` when its lease was gone).
#[derive(Debug)]
struct Run {
    worker: String,
    start: u64,
    end: Option<u64>,
    outcome: Option<String>,
}

fn runs(procs: &[&Proc], killed: &HashMap<String, u64>) -> HashMap<u64, Vec<Run>> {
    let mut by_id: HashMap<u64, Vec<Run>> = HashMap::new();
    for p in procs {
        let mut open: HashMap<u64, usize> = HashMap::new();
        for line in lock(&p.out).iter() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
            match f.first().copied() {
                Some("start") => {
                    if let (Some(id), Some(ms)) = (num(1), num(4)) {
                        let runs = by_id.entry(id).or_default();
                        runs.push(Run {
                            worker: p.name.clone(),
                            start: ms,
                            end: None,
                            outcome: None,
                        });
                        open.insert(id, runs.len() - 1);
                    }
                }
                Some("end") => {
                    if let (Some(id), Some(ms)) = (num(1), num(5)) {
                        if let (Some(i), Some(runs)) = (open.remove(&id), by_id.get_mut(&id)) {
                            runs[i].end = Some(ms);
                            runs[i].outcome = f.get(3).map(|s| s.to_string());
                        }
                    }
                }
                Some("lost") | Some("unfinished") => {
                    if let (Some(id), Some(ms)) = (num(1), num(4)) {
                        if let (Some(i), Some(runs)) = (open.remove(&id), by_id.get_mut(&id)) {
                            runs[i].end = Some(ms);
                        }
                    }
                }
                _ => {}
            }
        }
        // A killed worker's open runs ended when it died.
        if let Some(&at) = killed.get(&p.name) {
            for (id, i) in open {
                if let Some(r) = by_id.get_mut(&id) {
                    r[i].end = Some(at);
                }
            }
        }
    }
    by_id
}

async fn run(a: Args) -> Result<bool, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin = exe
        .parent()
        .ok_or("no directory for this binary")?
        .join(format!("jobs{}", std::env::consts::EXE_SUFFIX));
    if !bin.exists() {
        return Err(format!(
            "{} is missing: build it with `cargo build [--release] -p keel-redis --example jobs`",
            bin.display()
        ));
    }
    let scale = if a.short { 0.5 } else { 1.0 };
    let secs = |s: f64| Duration::from_secs_f64(s * scale);
    let prefix = format!("jobsload-{}-{}", std::process::id(), now_ms());
    let keys = Keys::new(&prefix);
    let client = redis::Client::open(a.redis.as_str()).map_err(|e| e.to_string())?;
    let mut redis = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("redis {}: {e}", a.redis))?;

    let common = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        v.extend(
            [
                "--redis",
                &a.redis,
                "--prefix",
                &prefix,
                "--listen",
                "127.0.0.1:0",
            ]
            .map(String::from),
        );
        // The limits the checks compute their bounds from (`jobs/checks.rs`).
        v.extend([
            "--backlog-high".to_string(),
            checks::BACKLOG_HIGH.to_string(),
            "--backlog-low".to_string(),
            checks::BACKLOG_LOW.to_string(),
            "--critical-reserve".to_string(),
            checks::CRITICAL_RESERVE.to_string(),
        ]);
        v
    };
    let fleet = checks::FLEET_CONCURRENCY.to_string();
    let (rate, burst) = (
        checks::USER_RATE.to_string(),
        checks::USER_BURST.to_string(),
    );
    let worker_args = |name: &str| {
        common(&[
            "worker",
            "--name",
            name,
            "--concurrency",
            "4",
            "--fleet-concurrency",
            &fleet,
        ])
    };
    let api = spawn(
        &bin,
        "api",
        &common(&["api", "--user-rate", &rate, "--user-burst", &burst]),
    )?;
    let mut workers = vec![
        spawn(&bin, "w1", &worker_args("w1"))?,
        spawn(&bin, "w2", &worker_args("w2"))?,
    ];
    let s = Arc::new(Shared {
        start: Instant::now(),
        phase: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        stop_scraping: AtomicBool::new(false),
        counts: (0..PHASES.len() * CLASSES.len() * OUTCOMES)
            .map(|_| AtomicU64::new(0))
            .collect(),
        history: Mutex::new(History {
            scrapes: Vec::new(),
        }),
        targets: Mutex::new(
            std::iter::once(&api)
                .chain(workers.iter())
                .map(|p| (p.name.clone(), p.addr))
                .collect(),
        ),
        peak_memory: AtomicU64::new(0),
        memory: Mutex::new(Vec::new()),
        flood_ok: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
    });
    let scraping = tokio::spawn(scraper(s.clone(), redis.clone(), keys.clone()));
    let normal = tokio::spawn(normal_users(s.clone(), api.addr, 30));
    let mut bounds: Vec<(usize, f64, f64)> = Vec::new();
    let mut phase = |s: &Shared, i: usize| {
        let t = s.t();
        if let Some(last) = bounds.last_mut() {
            last.2 = t;
        }
        bounds.push((i, t, f64::INFINITY));
        s.phase.store(i, Ordering::Relaxed);
        eprintln!("jobs-load: {:>6.1}s {}", t, PHASES[i]);
    };
    let mut killed: HashMap<String, u64> = HashMap::new();
    let mut notes: Vec<String> = Vec::new();

    // The quiet baseline: normal users only.
    phase(&s, 0);
    tokio::time::sleep(secs(10.0)).await;
    // (a) the flood.
    phase(&s, 1);
    flood(s.clone(), api.addr, Instant::now() + secs(12.0)).await;
    // (b) a legitimate spike, then time to drain some of it.
    phase(&s, 2);
    spike(s.clone(), api.addr, 500, 4).await;
    tokio::time::sleep(secs(8.0)).await;
    // (c) the dependency: 10× slower, failing, recovered.
    phase(&s, 3);
    let breaker_before = sum_now(&s, "jobs_breaker_state");
    // Wall-clock ms (the workers' log lines carry the same clock): the dependency starts failing
    // (10× slower is over the per-attempt timeout) no earlier than this.
    let c_start_ms = now_ms();
    admin(api.addr, "/admin/dependency?mode=slow").await?;
    tokio::time::sleep(secs(6.0)).await;
    let fail_from = s.t();
    admin(api.addr, "/admin/dependency?mode=fail").await?;
    let mut breaker_opened = false;
    let fail_until = Instant::now() + secs(6.0);
    while Instant::now() < fail_until {
        tokio::time::sleep(Duration::from_millis(250)).await;
        breaker_opened |= sum_now(&s, "jobs_breaker_state") >= 1.0;
    }
    let fail_to = s.t();
    admin(api.addr, "/admin/dependency?mode=ok").await?;
    tokio::time::sleep(secs(6.0)).await;
    notes.push(format!(
        "c: breaker `dependency` {} while the dependency failed (state before: {breaker_before})",
        if breaker_opened {
            "opened"
        } else {
            "did NOT open"
        }
    ));
    // (d) 1 % of jobs leak a pool connection (held 5 s, reclaimed after 1 s).
    phase(&s, 4);
    admin(api.addr, "/admin/leak?permille=10").await?;
    steady(s.clone(), api.addr, 120, Instant::now() + secs(12.0)).await;
    admin(api.addr, "/admin/leak?permille=0").await?;
    // (e) SIGKILL a worker mid-job.
    phase(&s, 5);
    let victim = &mut workers[0];
    let wait_until = Instant::now() + Duration::from_secs(10);
    let mut in_flight = None;
    while Instant::now() < wait_until && in_flight.is_none() {
        in_flight = open_job(&victim.out);
        if in_flight.is_none() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let _ = victim.child.kill(); // SIGKILL on Unix
    let _ = victim.child.wait();
    let kill_ms = now_ms();
    killed.insert(victim.name.clone(), kill_ms);
    lock(&s.targets).retain(|(n, _)| n != "w1");
    notes.push(match in_flight {
        Some(id) => format!("e: w1 SIGKILLed while running job {id}"),
        None => "e: w1 SIGKILLed (no job seen in flight within 10 s)".into(),
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let w3 = spawn(&bin, "w3", &worker_args("w3"))?;
    lock(&s.targets).push((w3.name.clone(), w3.addr));
    workers.push(w3);
    tokio::time::sleep(secs(10.0)).await;
    // Drain: load off, everything must end as done or dead.
    phase(&s, 6);
    s.stop.store(true, Ordering::Relaxed);
    let _ = normal.await;
    let drain_until = Instant::now() + Duration::from_secs(60);
    let mut quiet = 0;
    while Instant::now() < drain_until && quiet < 3 {
        let r: Result<(u64, u64, u64, u64), _> = redis::pipe()
            .llen(&keys.critical)
            .llen(&keys.default)
            .llen(&keys.processing)
            .zcard(&keys.delayed)
            .query_async(&mut redis)
            .await;
        match r {
            Ok((0, 0, 0, 0)) => quiet += 1,
            _ => quiet = 0,
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Let the last scrape land, then stop everything.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let end_t = s.t();
    if let Some(last) = bounds.last_mut() {
        last.2 = end_t;
    }
    s.stop_scraping.store(true, Ordering::Relaxed);
    let _ = scraping.await;
    let mut children: Vec<&mut Proc> = workers.iter_mut().collect();
    for p in children.iter_mut() {
        let _ = p.child.kill();
        let _ = p.child.wait();
    }
    let mut api = api;
    let _ = api.child.kill();
    let _ = api.child.wait();

    // Count from Redis.
    let seq: Option<u64> = redis::cmd("GET")
        .arg(&keys.seq)
        .query_async(&mut redis)
        .await
        .map_err(|e| e.to_string())?;
    let enqueued = seq.unwrap_or(0);
    let finals: HashMap<u64, String> = redis::cmd("HGETALL")
        .arg(&keys.final_)
        .query_async(&mut redis)
        .await
        .map_err(|e| e.to_string())?;
    let dup: Option<u64> = redis::cmd("GET")
        .arg(&keys.dup)
        .query_async(&mut redis)
        .await
        .map_err(|e| e.to_string())?;
    let reaped: Option<u64> = redis::cmd("GET")
        .arg(&keys.reaped)
        .query_async(&mut redis)
        .await
        .map_err(|e| e.to_string())?;
    let dead_list: Vec<String> = redis::cmd("LRANGE")
        .arg(&keys.dead)
        .arg(0)
        .arg(-1)
        .query_async(&mut redis)
        .await
        .map_err(|e| e.to_string())?;
    let redis_finals = &finals;
    let done = finals.values().filter(|v| *v == "done").count() as u64;
    let dead = finals.values().filter(|v| *v == "dead").count() as u64;
    let missing: Vec<u64> = (1..=enqueued)
        .filter(|id| !finals.contains_key(id))
        .collect();
    // Count from the workers' logs.
    let procs: Vec<&Proc> = workers.iter().collect();
    let by_id = runs(&procs, &killed);
    let mut log_lost = 0u64;
    let mut log_dup: HashSet<u64> = HashSet::new();
    let mut overlaps = 0u64;
    let mut retried_after_kill = 0u64;
    for id in 1..=enqueued {
        let runs = by_id.get(&id);
        let finals = runs.map_or(0, |r| {
            r.iter()
                .filter(|r| matches!(r.outcome.as_deref(), Some("done" | "dead")))
                .count()
        });
        // The killed worker may have finished a job in Redis and died before logging it: such
        // a job's last run is cut by the kill, and Redis (counted above) has its final state.
        let cut_by_kill = runs
            .and_then(|r| r.iter().max_by_key(|r| r.start))
            .is_some_and(|r| killed.contains_key(&r.worker) && r.outcome.is_none());
        if finals == 0 && !(cut_by_kill && redis_finals.contains_key(&id)) {
            log_lost += 1;
        }
        if finals > 1 {
            log_dup.insert(id);
        }
        if let Some(runs) = runs {
            let mut spans: Vec<(u64, u64)> = runs
                .iter()
                .map(|r| (r.start, r.end.unwrap_or(u64::MAX)))
                .collect();
            spans.sort_unstable();
            if spans.windows(2).any(|w| w[1].0 < w[0].1) {
                overlaps += 1;
                log_dup.insert(id);
            }
            if runs
                .iter()
                .any(|r| killed.contains_key(&r.worker) && r.outcome.is_none())
                && finals == 1
            {
                retried_after_kill += 1;
            }
        }
    }
    let lost = (missing.len() as u64).max(log_lost);
    let duplicated = dup.unwrap_or(0).max(log_dup.len() as u64);
    // Dead-letter entries carry the reason and attempt count.
    let mut reasons: HashMap<String, u64> = HashMap::new();
    for e in &dead_list {
        let reason = e.splitn(3, '|').nth(2).unwrap_or("?").to_string();
        *reasons.entry(reason).or_default() += 1;
    }
    // Counted: the run's keys go (the job records, the limiter's and the fleet cap's keys).
    let mut cursor: u64 = 0;
    loop {
        let r: Result<(u64, Vec<String>), _> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("*{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut redis)
            .await;
        let Ok((next, found)) = r else { break };
        if !found.is_empty() {
            let _: Result<u64, _> = redis::cmd("DEL").arg(&found).query_async(&mut redis).await;
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    // The workers' reports: leaks with their age.
    let mut leak_reports = 0u64;
    let mut leak_max_age = String::from("-");
    for p in &procs {
        for l in lock(&p.err)
            .iter()
            .filter(|l| l.starts_with("leak:") && l.contains("held for"))
        {
            leak_reports += 1;
            if let Some(age) = l
                .split("held for ")
                .nth(1)
                .and_then(|r| r.split([' ', ':']).next())
            {
                leak_max_age = age.to_string();
            }
        }
    }

    // Alerts: each must fire during its scenario and never during the baseline.
    let history = lock(&s.history);
    let fired_in = |rule: &alerts::Rule, phase: usize| -> (bool, f64) {
        let (_, from, to) = bounds
            .iter()
            .find(|b| b.0 == phase)
            .copied()
            .unwrap_or((0, 0.0, 0.0));
        let mut max = 0.0f64;
        let mut fired = false;
        for sc in history.scrapes.iter().filter(|x| x.t >= from && x.t <= to) {
            let v = (rule.value)(&history, sc.t);
            max = max.max(v);
            fired |= v > rule.threshold;
        }
        (fired, max)
    };
    let mut alerts_ok = 0;
    let mut alert_rows = Vec::new();
    for (i, rule) in RULES.iter().enumerate() {
        let (in_baseline, base_max) = fired_in(rule, 0);
        let (in_scenario, max) = fired_in(rule, i + 1);
        let ok = in_scenario && !in_baseline;
        alerts_ok += usize::from(ok);
        alert_rows.push(format!(
            "  {:<20} {:<13} fired={:<5} max={:<8.2} baseline={:<5} (max {:.2}) {}",
            rule.name,
            rule.scenario,
            in_scenario,
            max,
            in_baseline,
            base_max,
            if ok { "ok" } else { "FAIL" }
        ));
    }
    // Retries against the budget, and critical jobs done while the dependency was down.
    let total = |name: &'static str| {
        history.total(&alerts::Sel {
            name,
            eq: &[],
            ne: &[],
        })
    };
    let (c_from, c_to) = bounds
        .iter()
        .find(|b| b.0 == 3)
        .map_or((0.0, 0.0), |b| (b.1, b.2));
    // The most dependency calls one worker had in flight during (c): its bulkhead's cap (half
    // its tasks) leaves the other tasks free for jobs that do not need the dependency.
    let in_flight_c = history
        .scrapes
        .iter()
        .filter(|x| x.t >= c_from && x.t <= c_to)
        .map(|x| {
            alerts::Sel {
                name: "jobs_bulkhead_in_flight",
                eq: &[],
                ne: &[],
            }
            .sum_of(x)
        })
        .fold(0.0f64, f64::max);
    let critical_done_c = history.increase(
        &alerts::Sel {
            name: "jobs_done_total",
            eq: &[("queue", "critical")],
            ne: &[],
        },
        c_to,
        c_to - c_from,
    );
    let retries = total("jobs_retries_total");
    let first_attempts = total("jobs_first_attempts_total");
    let budget_refusals = total("jobs_retry_budget_exhausted_total");
    let exhausted = total("jobs_pool_exhausted_total");
    // Each worker process's budget: 20 % of its first attempts plus 2 a second over its life.
    let budget_bound = 0.2 * first_attempts + 2.0 * end_t * procs.len() as f64;
    // Critical jobs (no dependency) done per second: the quiet baseline against the window in
    // which the dependency failed outright.
    let critical = alerts::Sel {
        name: "jobs_done_total",
        eq: &[("queue", "critical")],
        ne: &[],
    };
    let (b_from, b_to) = bounds
        .iter()
        .find(|b| b.0 == 0)
        .map_or((0.0, 0.0), |b| (b.1, b.2));
    let critical_base_rate =
        history.increase(&critical, b_to, b_to - b_from) / (b_to - b_from).max(1e-9);
    let critical_fail_rate =
        history.increase(&critical, fail_to, fail_to - fail_from) / (fail_to - fail_from).max(1e-9);
    drop(history);
    let (f_from, f_to) = bounds
        .iter()
        .find(|b| b.0 == 1)
        .map_or((0.0, 0.0), |b| (b.1, b.2));
    let samples = lock(&s.memory).clone();
    let flood_ok: Vec<u64> = s
        .flood_ok
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .collect();
    // Memory is checked through the flood and the spike: the flood is what the seed fears, the
    // spike is what fills the queues to the guard's bound.
    let spike_to = bounds.iter().find(|b| b.0 == 2).map_or(f_to, |b| b.2);
    let mem = checks::memory_check(
        &samples,
        (b_from, b_to),
        (f_from, spike_to),
        &flood_ok,
        f_to - f_from,
        // The flooding users and the spike's (`spike(.., 500, ..)`).
        3 + 500,
    );
    let worker_procs: Vec<&Proc> = workers.iter().collect();
    let breakers: Vec<BreakerCheck> = worker_procs
        .iter()
        .filter(|p| p.name != "w3")
        .map(|p| checks::breaker_check(&p.name, &lock(&p.out), &lock(&p.err), c_start_ms))
        .collect();
    let budgets: Vec<BudgetCheck> = worker_procs
        .iter()
        .map(|p| checks::budget_check(&p.name, &lock(&p.out), &lock(&p.err)))
        .collect();
    let errs: Vec<Vec<String>> = worker_procs.iter().map(|p| lock(&p.err).clone()).collect();
    let err_refs: Vec<&[String]> = errs.iter().map(|e| e.as_slice()).collect();
    let leaks = checks::leak_check(&err_refs);
    let bulkhead_cap = worker_procs
        .first()
        .and_then(|p| checks::config(&lock(&p.err), "bulkhead", "max_concurrent"))
        .unwrap_or(0) as f64;
    let tasks = worker_procs
        .first()
        .and_then(|p| checks::config(&lock(&p.err), "bulkhead", "concurrency"))
        .unwrap_or(0) as f64;

    // The table.
    println!();
    println!(
        "{:<14} {:>8} {:>10} {:>9} {:>9} {:>9} {:>9}",
        "phase", "seconds", "normal ok", "normal n", "other ok", "other 429", "other 503"
    );
    for &(p, from, to) in &bounds {
        let n: u64 = (0..OUTCOMES).map(|o| s.get(p, 0, o)).sum();
        let ok = s.get(p, 0, 0);
        let pct = if n == 0 {
            100.0
        } else {
            100.0 * ok as f64 / n as f64
        };
        let other = |o| s.get(p, 1, o) + s.get(p, 2, o);
        println!(
            "{:<14} {:>8.1} {:>9.2}% {:>9} {:>9} {:>9} {:>9}",
            PHASES[p],
            to - from,
            pct,
            n,
            other(0),
            other(1),
            other(2)
        );
    }
    println!();
    println!("alerts (each must fire during its scenario and not during the baseline):");
    for r in &alert_rows {
        println!("{r}");
    }
    println!();
    for n in &notes {
        println!("{n}");
    }
    println!(
        "c: critical jobs (no dependency) done during the dependency scenario: {critical_done_c:.0}; most dependency calls in flight in one worker: {in_flight_c:.0} of its 4 tasks"
    );
    println!(
        "c: retries {retries:.0} (budget bound 20 % of {first_attempts:.0} first attempts + 2/s per worker: {budget_bound:.0}: {}), refused by the budget {budget_refusals:.0}",
        if retries <= budget_bound { "within" } else { "OVER" }
    );
    println!("d: leaks reported {leak_reports} (last age {leak_max_age}, threshold 1s); pool checkouts that found it dry: {exhausted:.0}");
    println!("e: jobs put back by the reaper {}; jobs the killed worker had started that later ended exactly once: {retried_after_kill}", reaped.unwrap_or(0));
    println!("dead letters by reason: {reasons:?}");
    println!(
        "redis peak used_memory {} KiB (backlog bound: 1000 jobs + 300 critical)",
        s.peak_memory.load(Ordering::Relaxed) / 1024
    );
    for l in &mem.lines {
        println!("{l}");
    }
    for b in &breakers {
        println!("{}", b.line);
    }
    for b in &budgets {
        println!("{}", b.line);
    }
    println!("{}", leaks.line);
    println!(
        "c: critical jobs done per second: baseline {critical_base_rate:.2}/s, while the dependency failed {critical_fail_rate:.2}/s (must be >= half the baseline); dependency calls in flight in one worker at most {in_flight_c:.0} (its bulkhead's cap {bulkhead_cap:.0} of {tasks:.0} tasks)"
    );
    if !missing.is_empty() {
        println!(
            "lost job ids (first 10): {:?}",
            &missing[..missing.len().min(10)]
        );
    }
    if overlaps > 0 {
        println!("jobs that ran twice at once (from the logs): {overlaps}");
    }
    let flood_n: u64 = (0..OUTCOMES).map(|o| s.get(1, 0, o)).sum();
    let flood_ok = s.get(1, 0, 0);
    let normal_ok = if flood_n == 0 {
        0.0
    } else {
        100.0 * flood_ok as f64 / flood_n as f64
    };
    let checks = [
        ("no job lost", lost == 0),
        ("no job ran twice", duplicated == 0),
        (
            "normal users' enqueues during the flood >= 99 % ok",
            normal_ok >= 99.0,
        ),
        (
            "every alert fired during its scenario and none during the baseline",
            alerts_ok == 5,
        ),
        (
            "the breaker opened while the dependency failed",
            breaker_opened,
        ),
        ("retries within the retry budget", retries <= budget_bound),
        ("the leak was reported", leak_reports > 0),
        ("the pool never ran dry", exhausted == 0.0),
        (
            "critical jobs kept flowing while the dependency was down",
            critical_done_c > 0.0,
        ),
        (
            "workers were not all stuck on the dependency",
            in_flight_c <= 2.0,
        ),
        ("jobs were enqueued", enqueued > 0),
        (
            "redis memory stayed under the bound the queue-depth guard implies (flood and spike)",
            mem.memory_ok,
        ),
        (
            "the queues never held more than the guard's cap",
            mem.queue_ok,
        ),
        ("each flooding user was held to its quota", mem.quota_ok),
        (
            "each worker's breaker opened within its minimum calls",
            !breakers.is_empty() && breakers.iter().all(|b| b.ok),
        ),
        (
            "each worker's retries within its retry budget's exact bound",
            !budgets.is_empty() && budgets.iter().all(|b| b.ok),
        ),
        (
            "every leak reported at >= the threshold and within one sweep of it",
            leaks.ok,
        ),
        (
            "critical jobs done per second while the dependency failed >= half the baseline's",
            critical_base_rate > 0.0 && critical_fail_rate >= 0.5 * critical_base_rate,
        ),
        (
            "no worker had more dependency calls in flight than its bulkhead's cap (< its tasks)",
            bulkhead_cap > 0.0 && bulkhead_cap < tasks && in_flight_c <= bulkhead_cap,
        ),
    ];
    let failed: Vec<&str> = checks.iter().filter(|c| !c.1).map(|c| c.0).collect();
    if !failed.is_empty() {
        eprintln!("jobs-load: FAILED: {}", failed.join("; "));
    }
    println!(
        "jobs: enqueued={enqueued} done={done} dead={dead} lost={lost} duplicated={duplicated} normal_enqueue_ok={normal_ok:.2}% alerts={alerts_ok}/5"
    );
    Ok(failed.is_empty())
}

/// `sum(name)` over the latest scrapes.
fn sum_now(s: &Shared, name: &'static str) -> f64 {
    let h = lock(&s.history);
    let t = s.t();
    h.sum(
        &alerts::Sel {
            name,
            eq: &[],
            ne: &[],
        },
        t,
    )
}

/// A job the worker has started and not ended, from its log.
fn open_job(out: &Mutex<Vec<String>>) -> Option<u64> {
    let lines = lock(out);
    let mut open: HashSet<u64> = HashSet::new();
    for l in lines
        .iter()
        .rev()
        .take(200)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        let f: Vec<&str> = l.split_whitespace().collect();
        let id = f.get(1).and_then(|v| v.parse::<u64>().ok());
        match (f.first().copied(), id) {
            (Some("start"), Some(id)) => {
                open.insert(id);
            }
            (Some(_), Some(id)) => {
                open.remove(&id);
            }
            _ => {}
        }
    }
    open.into_iter().next()
}
