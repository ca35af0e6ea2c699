//! `jobs api`: the enqueue endpoint behind the per-user fleet limit and the queue-depth guard.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
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
    critical_bound: u64,
    default_bound: u64,
    /// The queue lengths as last read (every 100 ms), for `/readyz` and a fast 503.
    critical_len: AtomicU64,
    default_len: AtomicU64,
    prometheus: PrometheusHandle,
}

impl Api {
    fn bound(&self, p: Priority) -> u64 {
        match p {
            Priority::Critical => self.critical_bound,
            Priority::Default => self.default_bound,
        }
    }

    fn len(&self, p: Priority) -> u64 {
        match p {
            Priority::Critical => self.critical_len.load(Ordering::Relaxed),
            Priority::Default => self.default_len.load(Ordering::Relaxed),
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
    let client = redis::Client::open(a.redis.as_str()).map_err(|e| e.to_string())?;
    let redis = ConnectionManager::new(client)
        .await
        .map_err(|e| format!("redis {}: {e}", a.redis))?;
    let api = Arc::new(Api {
        keys: Keys::new(&a.prefix),
        redis,
        enqueue: Script(ENQUEUE_LUA),
        limiter,
        critical_bound: a.critical_bound,
        default_bound: a.default_bound,
        critical_len: AtomicU64::new(0),
        default_len: AtomicU64::new(0),
        prometheus,
    });
    metrics::gauge!("jobs_queue_bound", "queue" => "critical").set(a.critical_bound as f64);
    metrics::gauge!("jobs_queue_bound", "queue" => "default").set(a.default_bound as f64);
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
            api.critical_len.store(c, Ordering::Relaxed);
            api.default_len.store(d, Ordering::Relaxed);
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
    // The queue-depth guard: refused at once when the last reading is at the bound, and
    // decided exactly by the enqueue script otherwise.
    let bound = api.bound(priority);
    let full = || {
        rejected("backlog");
        reply(
            StatusCode::SERVICE_UNAVAILABLE,
            Some(Duration::from_secs(1)),
            format!("the {} queue holds {bound} jobs\n", priority.as_str()),
        )
    };
    if api.len(priority) >= bound {
        return full();
    }
    let mut conn = api.redis.clone();
    let r: Result<i64, _> = api
        .enqueue
        .key(api.keys.queue(priority))
        .key(&api.keys.seq)
        .arg(bound)
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
        Ok(_) => full(),
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

/// Not ready while either queue is over 90 % of its bound: a load balancer sends enqueues to
/// another region instead of collecting 503s.
async fn readyz(State(api): State<Arc<Api>>) -> Response {
    let over = [Priority::Critical, Priority::Default]
        .into_iter()
        .find(|&p| api.len(p).saturating_mul(10) >= api.bound(p).saturating_mul(9));
    match over {
        Some(p) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            format!(
                "backlog: the {} queue is over 90 % of its bound\n",
                p.as_str()
            ),
        ),
        None => reply(StatusCode::OK, None, "ready\n".into()),
    }
}

/// Whole seconds rounded up, as `Retry-After` wants.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}
