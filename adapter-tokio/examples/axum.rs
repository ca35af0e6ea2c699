//! keel's showcase: an axum app served through keel's guarded listener and graceful drain, with
//! a per-IP rate limit, a breaker + retry + retry budget around an outbound call, Prometheus
//! `/metrics`, and `/livez` + `/readyz` probes.
//!
//! ```text
//! cargo run -p keel-tokio --features tower,axum,metrics --example axum -- --addr 127.0.0.1:3000
//! curl -s http://127.0.0.1:3000/work        # an outbound call to the (fake) dependency
//! curl -s http://127.0.0.1:3000/metrics     # Prometheus text
//! curl -si http://127.0.0.1:3000/readyz     # 200/503 with the health report as JSON
//! ```
//!
//! # Routes
//!
//! - `/` answers `hello`.
//! - `/work` calls the dependency (`GET /` on a fake dependency server this example starts on a
//!   port of its own) through **retry → breaker → per-attempt timeout**: the retry (3 attempts,
//!   jittered exponential backoff, a shared retry budget) retries 5xx answers, connection errors
//!   and timeouts, never a breaker rejection; the breaker (named `dependency`) opens after 5
//!   consecutive failures for 5 s. Answers `200` with the dependency's body, `502` when the
//!   dependency failed, `503` with `Retry-After` while the breaker is open.
//! - `/slow` sleeps `--slow-ms` (default 500) in a bulkhead of 2 slots and 4 queued for 1 s
//!   (then `503`), under a 3 s timeout (then `504`): a request in flight for the drain to finish.
//! - `/metrics`: every keel metric (`keel_core::driver::metrics`, names labelled by instance) in
//!   the Prometheus text format, rendered by `metrics-exporter-prometheus` (no HTTP listener of
//!   its own: this route renders it).
//! - `/livez`, `/readyz`: keel's health report as JSON, `200` or `503`
//!   (`keel_tokio::health`).
//!
//! `/`, `/work` and `/slow` are behind the per-IP limit (`--per-second`, `--burst`): `429` with
//! `Retry-After` and `X-RateLimit-*` headers. The probes and `/metrics` are not (an orchestrator
//! or scraper behind one address must not be refused).
//!
//! # Shutdown
//!
//! On SIGTERM (or Ctrl-C) `/readyz` turns `503` at once; the server keeps accepting and
//! serving for `--drain-delay` seconds (default 0: a Kubernetes endpoint controller needs a few
//! seconds to stop sending traffic), then closes the listener and drains: requests in flight
//! finish, idle keep-alive connections are closed, and whatever still runs after `--grace`
//! seconds (default 10) is aborted. A second signal stops at once. Exit code 0 after a drain.
//!
//! # Flags
//!
//! `--addr` (default 127.0.0.1:3000), `--grace` secs, `--drain-delay` secs, `--per-second` and
//! `--burst` (the per-IP quota; default 10 and 20), `--trusted-proxy CIDR` (repeatable: the
//! proxies whose `X-Forwarded-For` is believed), `--dependency ok|fail|slow` (how the fake
//! dependency behaves; default ok), `--slow-ms`.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;
use keel_tokio::core::backoff::BackoffConfig;
use keel_tokio::core::breaker::{BreakerConfig, State as BreakerState};
use keel_tokio::core::budget::BudgetConfig;
use keel_tokio::core::bulkhead::BulkheadConfig;
use keel_tokio::core::driver::breaker::BreakerError;
use keel_tokio::core::driver::retry::RetryAction;
use keel_tokio::core::health::{BreakerImpact, ComponentState, HealthReport};
use keel_tokio::core::rate::ip::ip_key;
use keel_tokio::core::rate::keyed::{KeyedConfig, KeyedError};
use keel_tokio::core::rate::Quota;
use keel_tokio::core::sync::budget::SharedBudget;
use keel_tokio::tower::{BoxError, BulkheadLayer, KeelError, TimeoutLayer};
use keel_tokio::{
    Breaker, Draining, GuardConfig, KeyedRateLimiter, Retry, ServeHandle, ShutdownConfig, TokioConn,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tower::ServiceBuilder;

// ---- flags ----------------------------------------------------------------------------------

/// How the fake dependency answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Ok,
    Fail,
    Slow,
}

/// An IP network, `addr/prefix`.
#[derive(Clone, Copy, Debug)]
struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|e| format!("--trusted-proxy {s:?}: {e}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix =
            match prefix {
                Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| {
                    format!("--trusted-proxy {s:?}: the prefix must be 0..={max}")
                })?,
                None => max,
            };
        Ok(Cidr { addr, prefix })
    }

    /// HAND-OFF(http): for the trusted-proxy rule of the "http" slice's key extractor.
    #[allow(dead_code)]
    fn contains(&self, ip: IpAddr) -> bool {
        let bits = |ip: IpAddr| match ip {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
            IpAddr::V6(v6) => (u128::from(v6), 128),
        };
        let ((net, width), (ip, ip_width)) = (bits(self.addr), bits(ip));
        if width != ip_width {
            return false;
        }
        let shift = width - u32::from(self.prefix);
        // A /0 matches everything of the family (`checked_shr` of 128 bits is `None`).
        net.checked_shr(shift).unwrap_or(0) == ip.checked_shr(shift).unwrap_or(0)
    }
}

#[derive(Debug)]
struct Flags {
    addr: SocketAddr,
    grace: Duration,
    drain_delay: Duration,
    per_second: NonZeroU32,
    burst: NonZeroU32,
    trusted_proxies: Vec<Cidr>,
    dependency: Mode,
    slow: Duration,
}

fn secs(flag: &str, v: &str) -> Result<Duration, String> {
    v.parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| format!("{flag} takes seconds (e.g. 2.5), not {v:?}"))
}

fn positive(flag: &str, v: &str) -> Result<NonZeroU32, String> {
    v.parse()
        .map_err(|_| format!("{flag} takes a whole number from 1, not {v:?}"))
}

fn parse_flags() -> Result<Flags, String> {
    let mut flags = Flags {
        addr: SocketAddr::from(([127, 0, 0, 1], 3000)),
        grace: Duration::from_secs(10),
        drain_delay: Duration::ZERO,
        per_second: NonZeroU32::new(10).ok_or("10")?,
        burst: NonZeroU32::new(20).ok_or("20")?,
        trusted_proxies: Vec::new(),
        dependency: Mode::Ok,
        slow: Duration::from_millis(500),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => {
                let v = value()?;
                flags.addr = v.parse().map_err(|e| format!("--addr {v:?}: {e}"))?;
            }
            "--grace" => flags.grace = secs("--grace", &value()?)?,
            "--drain-delay" => flags.drain_delay = secs("--drain-delay", &value()?)?,
            "--per-second" => flags.per_second = positive("--per-second", &value()?)?,
            "--burst" => flags.burst = positive("--burst", &value()?)?,
            "--trusted-proxy" => flags.trusted_proxies.push(Cidr::parse(&value()?)?),
            "--dependency" => {
                flags.dependency = match value()?.as_str() {
                    "ok" => Mode::Ok,
                    "fail" => Mode::Fail,
                    "slow" => Mode::Slow,
                    other => return Err(format!("--dependency ok|fail|slow, not {other:?}")),
                }
            }
            "--slow-ms" => {
                let v = value()?;
                let ms = v
                    .parse()
                    .map_err(|_| format!("--slow-ms takes milliseconds, not {v:?}"))?;
                flags.slow = Duration::from_millis(ms);
            }
            other => return Err(format!("unknown flag {other:?} (see the example's docs)")),
        }
    }
    Ok(flags)
}

// ---- the fake dependency --------------------------------------------------------------------

/// Starts the fake dependency on a free local port: `ok` answers 200, `fail` 503 with
/// `Retry-After: 1`, `slow` 200 after 2 s (past the per-attempt timeout).
async fn start_dependency(mode: Mode) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let service = hyper::service::service_fn(move |_req| async move {
                let (status, body) = match mode {
                    Mode::Ok => (StatusCode::OK, "dependency says hi\n"),
                    Mode::Fail => (StatusCode::SERVICE_UNAVAILABLE, "dependency is down\n"),
                    Mode::Slow => {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        (StatusCode::OK, "dependency was slow\n")
                    }
                };
                let mut r = hyper::Response::new(http_body_util::Full::new(
                    hyper::body::Bytes::from_static(body.as_bytes()),
                ));
                *r.status_mut() = status;
                if mode == Mode::Fail {
                    // A hint the "http" slice's response-aware retry honours (capped).
                    r.headers_mut().insert(
                        hyper::header::RETRY_AFTER,
                        hyper::header::HeaderValue::from_static("1"),
                    );
                }
                Ok::<_, std::convert::Infallible>(r)
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    Ok(addr)
}

// ---- the outbound call: retry -> breaker -> per-attempt timeout ------------------------------

#[derive(Debug)]
enum DependencyError {
    /// The dependency answered with this status (5xx: a failure the breaker counts).
    Status(StatusCode),
    /// Connecting or talking to it failed.
    Io(String),
}

impl std::fmt::Display for DependencyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DependencyError::Status(s) => write!(f, "the dependency answered {s}"),
            DependencyError::Io(e) => write!(f, "the dependency is unreachable: {e}"),
        }
    }
}

/// One `GET /` to the dependency over a fresh HTTP/1 connection.
async fn fetch(addr: SocketAddr) -> Result<String, DependencyError> {
    let io = |e: &dyn std::fmt::Display| DependencyError::Io(e.to_string());
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| io(&e))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| io(&e))?;
    tokio::spawn(conn);
    let req = hyper::Request::get("/")
        .header(hyper::header::HOST, addr.to_string())
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .map_err(|e| io(&e))?;
    let res = sender.send_request(req).await.map_err(|e| io(&e))?;
    let status = res.status();
    let body = res.into_body().collect().await.map_err(|e| io(&e))?;
    if status.is_server_error() {
        return Err(DependencyError::Status(status));
    }
    Ok(String::from_utf8_lossy(&body.to_bytes()).into_owned())
}

/// The dependency's client: its address and the machines around every call to it.
#[derive(Clone)]
struct Dependency {
    addr: SocketAddr,
    breaker: Breaker,
    retry: Retry<fn(&BreakerError<DependencyError>) -> RetryAction>,
}

/// Retry 5xx, connection errors and timeouts; never a breaker rejection (it fails fast).
fn retryable(e: &BreakerError<DependencyError>) -> RetryAction {
    match e {
        BreakerError::Rejected(_) => RetryAction::Stop,
        _ => RetryAction::Retry,
    }
}

impl Dependency {
    fn new(addr: SocketAddr) -> Result<Dependency, keel_tokio::core::ConfigError> {
        // HAND-OFF(http): with the response-aware classifier of the "http" slice this becomes a
        // tower stack (`RetryLayer` -> `BreakerLayer` -> `TimeoutLayer`) around a hyper client
        // service, honouring the dependency's `Retry-After`.
        let breaker = Breaker::new(
            BreakerConfig::consecutive_failures(5)
                .open_duration(Duration::from_secs(5))
                .build()?,
        )
        .named("dependency");
        let budget = SharedBudget::new(BudgetConfig::builder().build()?, keel_tokio::now());
        let retry = Retry::new(
            BackoffConfig::exponential(Duration::from_millis(20), Duration::from_millis(500))
                .max_attempts(3)
                .build()?,
        )
        .budget(budget)
        .named("dependency")
        .retry_if(retryable as fn(&BreakerError<DependencyError>) -> RetryAction);
        Ok(Dependency {
            addr,
            breaker,
            retry,
        })
    }

    async fn call(&self) -> Response {
        let addr = self.addr;
        let attempt = || {
            self.breaker
                .call_timeout(Duration::from_secs(1), fetch(addr))
        };
        match self.retry.run(attempt).await {
            Ok(body) => (StatusCode::OK, body).into_response(),
            Err(gave_up) => match gave_up.error {
                BreakerError::Rejected(rejected) => {
                    let wait = rejected
                        .retry_at
                        .map_or(1, |at| {
                            ceil_secs(at.saturating_duration_since(keel_tokio::now()))
                        })
                        .max(1);
                    let mut r = (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the dependency is unavailable; try again later\n",
                    )
                        .into_response();
                    set(r.headers_mut(), "retry-after", wait);
                    r
                }
                // Client-safe: the details are in the server's log, not in the answer.
                other => {
                    tracing::warn!(error = %other, attempts = gave_up.attempts, "dependency call failed");
                    (StatusCode::BAD_GATEWAY, "the dependency failed\n").into_response()
                }
            },
        }
    }
}

// ---- the per-IP limit -----------------------------------------------------------------------

/// Whole seconds, rounded up (HTTP's `Retry-After` has no fractions; rounding down would
/// invite a retry that is still limited).
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn set(headers: &mut HeaderMap, name: &'static str, value: u64) {
    headers.insert(name, HeaderValue::from(value));
}

/// The per-IP limiter and what keys it.
#[derive(Clone)]
struct PerIp {
    limiter: KeyedRateLimiter<IpAddr>,
    /// HAND-OFF(http): parsed but not used yet; the "http" slice's key extractor believes a
    /// trusted proxy's `X-Forwarded-For`. Until then every request is keyed by its peer.
    #[allow(dead_code)]
    trusted_proxies: Arc<[Cidr]>,
}

/// The per-IP limit as an axum layer.
///
/// HAND-OFF(http): replace this function's body with the "http" slice's keyed rate-limit
/// layer (429 with `Retry-After` and the IETF `RateLimit`/`RateLimit-Policy` fields, the
/// trusted-proxy key extractor); the router below needs no other change.
fn per_ip_layer(
    app: Router,
    flags: &Flags,
) -> Result<Router, Box<dyn std::error::Error + Send + Sync>> {
    let quota = Quota::per_second(flags.per_second)?.with_burst(flags.burst)?;
    let config = KeyedConfig::builder()
        .quota(quota)
        .max_keys(10_000)
        .build()?;
    let per_ip = PerIp {
        limiter: KeyedRateLimiter::<IpAddr>::new(config).named("per-ip"),
        trusted_proxies: flags.trusted_proxies.clone().into(),
    };
    Ok(app.layer(middleware::from_fn_with_state(per_ip, per_ip_limit)))
}

async fn per_ip_limit(
    State(per_ip): State<PerIp>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let limiter = &per_ip.limiter;
    // IPv4 as is, IPv6 by its /64: one host cannot rotate through its subnet's addresses.
    let ip = ip_key(peer.ip());
    let decision = limiter.check(&ip);
    let remaining = limiter.remaining(&ip);
    let now = keel_tokio::now();
    let quota = limiter.quota();
    let burst = quota.burst().get();
    let reset = quota
        .emission_interval()
        .saturating_mul(burst.saturating_sub(remaining));
    let mut response = match decision {
        Ok(()) => next.run(req).await,
        Err(KeyedError::NotUntil { retry_at }) => {
            let wait = ceil_secs(retry_at.saturating_duration_since(now)).max(1);
            let mut r = (StatusCode::TOO_MANY_REQUESTS, "rate limited\n").into_response();
            set(r.headers_mut(), "retry-after", wait);
            r
        }
        Err(_) => {
            let mut r =
                (StatusCode::SERVICE_UNAVAILABLE, "busy; try again later\n").into_response();
            set(r.headers_mut(), "retry-after", 1);
            r
        }
    };
    let headers = response.headers_mut();
    set(headers, "x-ratelimit-limit", u64::from(burst));
    set(headers, "x-ratelimit-remaining", u64::from(remaining));
    set(headers, "x-ratelimit-reset", ceil_secs(reset));
    response
}

/// Maps keel's layer errors to client-safe HTTP answers (the details go to the log).
///
/// HAND-OFF(http): the "http" slice's `KeelError: IntoResponse` replaces this.
async fn keel_error(err: BoxError) -> Response {
    tracing::debug!(error = %err, "request refused");
    match err.downcast_ref::<KeelError>() {
        Some(KeelError::TimedOut { .. }) => (StatusCode::GATEWAY_TIMEOUT, "timed out\n"),
        Some(e) if e.reject_reason().is_some() => {
            (StatusCode::SERVICE_UNAVAILABLE, "busy; try again later\n")
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n"),
    }
    .into_response()
}

// ---- serving through keel -------------------------------------------------------------------

/// Serves one accepted connection with hyper until it ends, or until the drain starts: then
/// hyper finishes the request in flight, answers it with `Connection: close`, and closes.
///
/// HAND-OFF(serving): with the "serving" slice, `axum::serve` over keel's listener (peer
/// address in the accept, keel's drain) replaces this function and the `Server` loop in `main`.
fn serve_connection(
    app: Router,
    conn: keel_tokio::Conn,
    draining: Draining,
) -> impl Future<Output = ()> + Send + 'static {
    let peer = conn
        .get_ref()
        .and_then(|s| s.peer_addr().ok())
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    async move {
        let service = ServiceBuilder::new()
            .map_request(move |mut req: Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            })
            .service(app);
        let service = hyper_util::service::TowerToHyperService::new(service);
        let io = TokioIo::new(TokioConn::from(conn));
        let mut http = pin!(hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10))
            .serve_connection(io, service));
        tokio::select! {
            _ = http.as_mut() => {}
            () = draining.draining() => {
                http.as_mut().graceful_shutdown();
                let _ = http.await;
            }
        }
    }
}

/// On SIGTERM: not ready at once, keep serving for the drain delay, then drain; a second
/// signal stops at once.
///
/// HAND-OFF(serving): the "serving" slice's drain delay (readiness false on SIGTERM for a
/// delay) replaces this task and the `not_ready` flag.
fn shut_down_on_signals(handle: ServeHandle, not_ready: Arc<AtomicBool>, drain_delay: Duration) {
    tokio::spawn(async move {
        keel_tokio::shutdown_signal().await;
        not_ready.store(true, Ordering::SeqCst);
        tracing::info!(
            delay_ms = drain_delay.as_millis() as u64,
            "not ready; draining after the delay"
        );
        tokio::select! {
            () = tokio::time::sleep(drain_delay) => {}
            () = keel_tokio::shutdown_signal() => {}
        }
        handle.shutdown();
        keel_tokio::shutdown_signal().await;
        handle.shutdown();
    });
}

/// The health report of `/livez` and `/readyz`: the server's, plus the shutdown signal during
/// the drain delay and the dependency's breaker (open: degraded, still ready).
fn health(handle: &ServeHandle, not_ready: &AtomicBool, breaker: &Breaker) -> HealthReport {
    let mut report = handle.health();
    if not_ready.load(Ordering::SeqCst) && !handle.is_draining() {
        let _ = report.add("shutdown", ComponentState::draining());
    }
    if matches!(
        breaker.state(),
        BreakerState::Open | BreakerState::ForcedOpen
    ) {
        let _ = report.add(
            "dependency",
            ComponentState::breaker_open(BreakerImpact::Degrade),
        );
    }
    report
}

fn metrics_recorder() -> Result<PrometheusHandle, Box<dyn std::error::Error + Send + Sync>> {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)?;
    keel_tokio::core::driver::metrics::describe();
    Ok(handle)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let flags = parse_flags()?;
    // Before any keel handle is used: handles register their series at first use.
    let prometheus = metrics_recorder()?;

    let dependency = Dependency::new(start_dependency(flags.dependency).await?)?;
    let slow_for = flags.slow;
    let slow = get(move || async move {
        tokio::time::sleep(slow_for).await;
        "slow answer\n"
    })
    .layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(keel_error))
            .layer(TimeoutLayer::new(Duration::from_secs(3)))
            .layer(
                BulkheadLayer::new(
                    BulkheadConfig::builder()
                        .max_concurrent(2)
                        .max_queue(4)
                        .max_wait(Duration::from_secs(1))
                        .build()?,
                )
                .named("slow"),
            ),
    );

    let config = GuardConfig::builder().max_connections(1024).build()?;
    let incoming = keel_tokio::bind(flags.addr, &config).await?;
    let local = incoming.get_ref().0.local_addr()?;
    let server = keel_tokio::Server::new(incoming).named("http").config(
        ShutdownConfig::builder()
            .grace_period(flags.grace)
            .build()?,
    );
    let handle = server.handle();
    let not_ready = Arc::new(AtomicBool::new(false));

    let report = {
        let (handle, not_ready, breaker) = (
            handle.clone(),
            Arc::clone(&not_ready),
            dependency.breaker.clone(),
        );
        move || health(&handle, &not_ready, &breaker)
    };
    let work = {
        let dependency = dependency.clone();
        get(move || {
            let dependency = dependency.clone();
            async move { dependency.call().await }
        })
    };
    let app = Router::new()
        .route("/", get(|| async { "hello\n" }))
        .route("/work", work)
        .route("/slow", slow);
    // The probes and the scrape are not rate-limited: an orchestrator behind one address must
    // not be told 429.
    let ops = Router::new()
        .route(
            "/metrics",
            get(move || std::future::ready(prometheus.render())),
        )
        .route("/livez", get(keel_tokio::health::livez(report.clone())))
        .route("/readyz", get(keel_tokio::health::readyz(report)));
    let app = per_ip_layer(app, &flags)?.merge(ops);

    shut_down_on_signals(handle, not_ready, flags.drain_delay);
    println!("listening on {local}");
    let report = server
        .serve(move |conn, draining| serve_connection(app.clone(), conn, draining))
        .await;
    eprintln!("stats: {:?}", report.summary);
    match report.error {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
