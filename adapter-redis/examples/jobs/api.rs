//! `jobs api`: the enqueue endpoint behind the per-user fleet limit and the queue-depth guard.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use keel_core::backlog::{Backlog, BacklogConfig, BacklogEvent, BacklogFull};
use keel_core::rate::Quota;

use keel_redis::{Denied, FailurePolicy, FleetConfig, FleetLimiter};
use metrics_exporter_prometheus::PrometheusHandle;
use redis::aio::ConnectionManager;

use crate::store::{now_ms, Keys, Priority, Script, ENQUEUE_LUA};
use crate::Args;

struct Api {
    keys: Keys,
    redis: ConnectionManager,
    enqueue: Script,
    limiter: FleetLimiter,
    /// Queue-depth admission over both queues, fed the depth every 100 ms.
    backlog: Mutex<Backlog>,
    high: u64,
    reserve: u64,
    /// Both queues' length as last read, for `/readyz`.
    depth: AtomicU64,
    prometheus: PrometheusHandle,
}

impl Api {
    fn backlog(&self) -> MutexGuard<'_, Backlog> {
        // The machine never panics; a poisoned lock still holds a consistent machine.
        self.backlog.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The hard cap the enqueue script enforces for `p`.
    fn cap(&self, p: Priority) -> u64 {
        match p {
            Priority::Critical => self.high.saturating_add(self.reserve),
            Priority::Default => self.high,
        }
    }
}

pub async fn run(a: Args, prometheus: PrometheusHandle) -> Result<(), String> {
    let rate = NonZeroU32::new(a.user_rate).ok_or("--user-rate must be > 0")?;
    let burst = NonZeroU32::new(a.user_burst).ok_or("--user-burst must be > 0")?;
    let quota = Quota::per_second(rate)
        .and_then(|q| q.with_burst(burst))
        .map_err(|e| e.to_string())?;
    // Fail closed: a flood must not get through because Redis is slow.
    let config = FleetConfig::builder(format!("{}:enqueue", a.prefix), quota)
        .policy(FailurePolicy::FailClosed)
        .timeout(Duration::from_millis(250))
        .build()
        .map_err(|e| e.to_string())?;
    let limiter = FleetLimiter::connect(&a.redis, config).map_err(|e| e.to_string())?;
    let backlog_config = BacklogConfig::builder()
        .high(a.backlog_high)
        .low(a.backlog_low)
        .critical_reserve(a.critical_reserve)
        .max_staleness(Duration::from_secs(1))
        .drain_window(Duration::from_millis(500))
        .build()
        .map_err(|e| e.to_string())?;
    let client = redis::Client::open(a.redis.as_str()).map_err(|e| e.to_string())?;
    let redis = ConnectionManager::new(client)
        .await
        .map_err(|e| format!("redis {}: {e}", a.redis))?;
    let api = Arc::new(Api {
        keys: Keys::new(&a.prefix),
        redis,
        enqueue: Script(ENQUEUE_LUA),
        limiter,
        backlog: Mutex::new(Backlog::new(backlog_config, keel_tokio::now())),
        high: a.backlog_high,
        reserve: a.critical_reserve,
        depth: AtomicU64::new(0),
        prometheus,
    });
    metrics::gauge!("jobs_backlog_high").set(a.backlog_high as f64);
    tokio::spawn(watch_depth(api.clone()));
    let app = Router::new()
        .route("/enqueue", post(enqueue))
        .route("/admin/dependency", post(admin_dependency))
        .route("/admin/leak", post(admin_leak))
        .route("/metrics", get(metrics_text))
        .route("/readyz", get(readyz))
        .with_state(api);
    let listener = crate::bind(&a.listen).await?;
    axum::serve(listener, app).await.map_err(|e| e.to_string())
}

/// Reads the queue lengths every 100 ms: the gauges and the fast path of the guard.
async fn watch_depth(api: Arc<Api>) {
    let mut conn = api.redis.clone();
    loop {
        let r: Result<(u64, u64, u64, u64, u64), _> = redis::pipe()
            .llen(&api.keys.critical)
            .llen(&api.keys.default)
            .llen(&api.keys.processing)
            .zcard(&api.keys.delayed)
            .llen(&api.keys.dead)
            .query_async(&mut conn)
            .await;
        if let Ok((c, d, p, z, dead)) = r {
            let depth = c.saturating_add(d);
            api.depth.store(depth, Ordering::Relaxed);
            let stats = {
                let mut b = api.backlog();
                let now = keel_tokio::now();
                b.on_depth(now, depth);
                b.handle_timeout(now);
                while let Some(e) = b.poll_event() {
                    match e {
                        BacklogEvent::Full { depth, .. } => {
                            eprintln!("backlog: full at {depth} jobs: refusing default jobs")
                        }
                        BacklogEvent::Admitting { depth, .. } => {
                            eprintln!("backlog: drained to {depth} jobs: admitting again")
                        }
                        other => eprintln!("backlog: {other:?}"),
                    }
                }
                b.stats()
            };
            metrics::gauge!("jobs_backlog_full").set(if stats.full { 1.0 } else { 0.0 });
            metrics::gauge!("jobs_backlog_drain_rate").set(stats.drain_rate_milli as f64 / 1000.0);
            metrics::gauge!("jobs_queue_length", "queue" => "critical").set(c as f64);
            metrics::gauge!("jobs_queue_length", "queue" => "default").set(d as f64);
            metrics::gauge!("jobs_processing").set(p as f64);
            metrics::gauge!("jobs_delayed").set(z as f64);
            metrics::gauge!("jobs_dead_letter_length").set(dead as f64);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn query<'a>(uri: &'a Uri, name: &str) -> Option<&'a str> {
    uri.query()?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn reply(status: StatusCode, retry_after: Option<Duration>, body: String) -> Response {
    let mut r = (status, body).into_response();
    if let Some(d) = retry_after {
        r.headers_mut()
            .insert("retry-after", ceil_secs(d).max(1).into());
    }
    r
}

fn rejected(reason: &'static str) {
    metrics::counter!("jobs_enqueue_rejected_total", "reason" => reason).increment(1);
}

async fn enqueue(State(api): State<Arc<Api>>, headers: HeaderMap, uri: Uri) -> Response {
    let user = headers
        .get("x-user")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if user.is_empty() || user.len() > 64 || user.contains('|') {
        rejected("bad_request");
        return reply(
            StatusCode::BAD_REQUEST,
            None,
            "x-user: 1 to 64 characters, no '|'\n".into(),
        );
    }
    let Some(priority) = Priority::parse(query(&uri, "priority").unwrap_or("")) else {
        rejected("bad_request");
        return reply(
            StatusCode::BAD_REQUEST,
            None,
            "priority: critical or default\n".into(),
        );
    };
    let dependency = query(&uri, "dependency").unwrap_or("1") == "1";
    // The rate limit first: a flooding user is refused without touching the queue.
    match api.limiter.check(user).await {
        Ok(_) => {}
        Err(Denied::Limited { retry_after, .. }) => {
            rejected("rate_limited");
            return reply(
                StatusCode::TOO_MANY_REQUESTS,
                Some(retry_after),
                "rate limited\n".into(),
            );
        }
        Err(e) => {
            rejected("limiter_unavailable");
            return reply(
                StatusCode::SERVICE_UNAVAILABLE,
                Some(Duration::from_secs(1)),
                format!("{e}\n"),
            );
        }
    }
    // The queue-depth guard: the machine's estimate first (it counts this process's
    // admissions between two polls), then the exact cap in the enqueue script.
    let class = match priority {
        Priority::Critical => keel_core::backlog::Priority::Critical,
        Priority::Default => keel_core::backlog::Priority::Normal,
    };
    let now = keel_tokio::now();
    let decision = api.backlog().try_acquire(now, class);
    if let Err(refused) = decision {
        let wait = refused.retry_at.map_or(Duration::from_secs(1), |at| {
            at.saturating_duration_since(now)
        });
        let label = match refused.reason {
            BacklogFull::Stale { .. } => "backlog_stale",
            _ => "backlog",
        };
        rejected(label);
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            Some(wait),
            format!("{}\n", refused.reason),
        );
    }
    let cap = api.cap(priority);
    let mut conn = api.redis.clone();
    let r: Result<i64, _> = api
        .enqueue
        .key(api.keys.queue(priority))
        .key(api.keys.other_queue(priority))
        .key(&api.keys.seq)
        .arg(cap)
        .arg(user)
        .arg(priority.as_str())
        .arg(if dependency { "1" } else { "0" })
        .arg(now_ms())
        .invoke_async(&mut conn)
        .await;
    match r {
        Ok(id) if id > 0 => {
            metrics::counter!("jobs_enqueued_total", "queue" => priority.as_str()).increment(1);
            reply(StatusCode::OK, None, format!("{id}\n"))
        }
        Ok(_) => {
            rejected("backlog");
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                Some(Duration::from_secs(1)),
                format!("the queues hold {cap} jobs\n"),
            )
        }
        Err(e) => {
            rejected("redis_error");
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                Some(Duration::from_secs(1)),
                format!("redis: {e}\n"),
            )
        }
    }
}

async fn admin_dependency(State(api): State<Arc<Api>>, uri: Uri) -> Response {
    let mode = query(&uri, "mode").unwrap_or("");
    if !matches!(mode, "ok" | "slow" | "fail") {
        return reply(
            StatusCode::BAD_REQUEST,
            None,
            "mode: ok, slow or fail\n".into(),
        );
    }
    set(&api, &api.keys.dep_mode, mode).await
}

async fn admin_leak(State(api): State<Arc<Api>>, uri: Uri) -> Response {
    match query(&uri, "permille").and_then(|v| v.parse::<u32>().ok()) {
        Some(p) if p <= 1000 => set(&api, &api.keys.leak, &p.to_string()).await,
        _ => reply(
            StatusCode::BAD_REQUEST,
            None,
            "permille: 0 to 1000\n".into(),
        ),
    }
}

async fn set(api: &Api, key: &str, value: &str) -> Response {
    let mut conn = api.redis.clone();
    match redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async::<()>(&mut conn)
        .await
    {
        Ok(()) => reply(StatusCode::OK, None, format!("{key}={value}\n")),
        Err(e) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            format!("redis: {e}\n"),
        ),
    }
}

async fn metrics_text(State(api): State<Arc<Api>>) -> String {
    api.prometheus.render()
}

/// Not ready while the backlog is full, its depth stale, or over 90 % of `high`: a load balancer sends enqueues to
/// another region instead of collecting 503s.
async fn readyz(State(api): State<Arc<Api>>) -> Response {
    let depth = api.depth.load(Ordering::Relaxed);
    let stats = api.backlog().stats();
    if stats.full || stats.stale || depth.saturating_mul(10) >= api.high.saturating_mul(9) {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            format!(
                "backlog: {depth} jobs queued (high {}, full {}, stale {})\n",
                api.high, stats.full, stats.stale
            ),
        );
    }
    reply(StatusCode::OK, None, "ready\n".into())
}

/// Whole seconds rounded up, as `Retry-After` wants.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}
