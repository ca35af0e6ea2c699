//! keel's showcase: an axum app served through keel's guarded listener and graceful drain, with
//! a per-IP rate limit, a breaker + retry + retry budget around an outbound call, Prometheus
//! `/metrics`, and `/livez` + `/readyz` probes.
//!
//! ```text
//! cargo run -p keel-tokio --features tower,axum,metrics,hyper --example axum -- --addr 127.0.0.1:3000
//! curl -s http://127.0.0.1:3000/work        # an outbound call to the (fake) dependency
//! curl -s http://127.0.0.1:3000/metrics     # Prometheus text
//! curl -si http://127.0.0.1:3000/readyz     # 200/503 with the health report as JSON
//! ```
//!
//! # Routes
//!
//! - `/` answers `hello`.
//! - `/work` calls the dependency (`GET /` on a fake dependency server this example starts on a
//!   port of its own) through keel's tower stack **`RetryLayer` → `BreakerLayer` →
//!   `TimeoutLayer`** around a hyper client service: the retry (3 attempts, jittered exponential
//!   backoff, a shared retry budget) retries 429/500/502/503/504 answers after their
//!   `Retry-After` (honoured up to 2 s), connection errors and timeouts, never a breaker
//!   rejection; the breaker (named `dependency`) counts 5xx and 429 answers, errors and
//!   timeouts (1 s per attempt) as failures and opens after 5 consecutive ones for 5 s (both
//!   through `keel_tokio::http::HttpClassifier`). Answers `200` with the dependency's body,
//!   `502` when the dependency failed, `503` with `Retry-After` while the breaker is open.
//! - `/slow` sleeps `--slow-ms` (default 500) in a bulkhead of 2 slots and 4 queued for 1 s
//!   (then `503`), under a 3 s timeout (then `504`): a request in flight for the drain to finish.
//! - `/metrics`: every keel metric (`keel_core::driver::metrics`, names labelled by instance) in
//!   the Prometheus text format, rendered by `metrics-exporter-prometheus` (no HTTP listener of
//!   its own: this route renders it).
//! - `/livez`, `/readyz`: keel's health report as JSON, `200` or `503`
//!   (`keel_tokio::health`).
//!
//! `/`, `/work` and `/slow` are behind the per-IP limit (`--per-second`, `--burst`;
//! `keel_tokio::http::KeyedRateLimitLayer`): `429` with `Retry-After` and the IETF
//! `RateLimit-Policy` / `RateLimit` fields (on admitted answers too). Keyed by the peer's IP
//! (IPv6 by /64), or, for a peer in a `--trusted-proxy` network, by the client its
//! `X-Forwarded-For` names. The probes and `/metrics` are not limited (an orchestrator or
//! scraper behind one address must not be refused).
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

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;

use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;
use keel_tokio::core::backoff::BackoffConfig;
use keel_tokio::core::breaker::{BreakerConfig, State as BreakerState};
use keel_tokio::core::budget::BudgetConfig;
use keel_tokio::core::bulkhead::BulkheadConfig;
use keel_tokio::core::health::{BreakerImpact, ComponentState, HealthReport};
use keel_tokio::core::rate::keyed::KeyedConfig;
use keel_tokio::core::rate::Quota;
use keel_tokio::core::sync::budget::SharedBudget;
use keel_tokio::http::{
    error_response, Cidr, ForwardedIp, HttpClassifier, KeyedRateLimitLayer, PeerIp,
};
use keel_tokio::tower::{
    BoxError, BreakerLayer, BulkheadLayer, KeelError, RetryLayer, TimeoutLayer,
};
use keel_tokio::{Breaker, GuardConfig, KeyedRateLimiter, ServeHandle, ShutdownConfig};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt as _};

// ---- flags ----------------------------------------------------------------------------------

/// How the fake dependency answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Ok,
    Fail,
    Slow,
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
            "--trusted-proxy" => {
                let v = value()?;
                let cidr = v
                    .parse()
                    .map_err(|e| format!("--trusted-proxy {v:?}: {e}"))?;
                flags.trusted_proxies.push(cidr);
            }
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
                    // A hint the retry honours (up to its 2 s `max_retry_after`).
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

/// The hyper client, as a tower service: one `GET path` to the dependency over a fresh HTTP/1
/// connection, its body read whole. A 5xx is an `Ok` answer here; the layers around it judge it.
async fn fetch(addr: SocketAddr, path: Uri) -> Result<Response<String>, BoxError> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())?;
    let (parts, body) = sender.send_request(req).await?.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Response::from_parts(
        parts,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

/// The dependency's client: the layered service, and its breaker for the health report.
#[derive(Clone)]
struct Dependency {
    service: BoxCloneSyncService<Uri, Response<String>, BoxError>,
    breaker: Breaker,
}

impl Dependency {
    fn new(addr: SocketAddr) -> Result<Dependency, keel_tokio::core::ConfigError> {
        let breaker = Breaker::new(
            BreakerConfig::consecutive_failures(5)
                .open_duration(Duration::from_secs(5))
                .build()?,
        )
        .named("dependency");
        let budget = SharedBudget::new(BudgetConfig::builder().build()?, keel_tokio::now());
        let backoff =
            BackoffConfig::exponential(Duration::from_millis(20), Duration::from_millis(500))
                .max_attempts(3)
                // The dependency's `Retry-After` is honoured, up to 2 s.
                .max_retry_after(Duration::from_secs(2))
                .build()?;
        let service = ServiceBuilder::new()
            // Retries 429/500/502/503/504 answers (after their `Retry-After`), connection
            // errors and timeouts; never the breaker's rejection (it fails fast).
            .layer(
                RetryLayer::new(backoff)
                    .budget(budget)
                    .named("dependency")
                    .retry_responses(HttpClassifier),
            )
            // 5xx and 429 answers, errors and timeouts count as failures.
            .layer(BreakerLayer::from_breaker(breaker.clone()).classify_result(HttpClassifier))
            .layer(TimeoutLayer::new(Duration::from_secs(1)))
            .service_fn(move |path| fetch(addr, path));
        Ok(Dependency {
            service: BoxCloneSyncService::new(service),
            breaker,
        })
    }

    async fn call(&self) -> Response {
        match self.service.clone().oneshot(Uri::from_static("/")).await {
            Ok(answer) if answer.status().is_success() => {
                (StatusCode::OK, answer.into_body()).into_response()
            }
            // The last answer after the retry gave up (or one not worth retrying).
            Ok(answer) => {
                tracing::warn!(status = %answer.status(), "the dependency failed");
                (StatusCode::BAD_GATEWAY, "the dependency failed\n").into_response()
            }
            // The breaker is open: `503` with `Retry-After` until it lets a probe through.
            Err(e) if breaker_open(&*e) => error_response(&*e),
            // Client-safe: the details are in the server's log, not in the answer.
            Err(e) => {
                tracing::warn!(error = %e, "the dependency failed");
                (StatusCode::BAD_GATEWAY, "the dependency failed\n").into_response()
            }
        }
    }
}

/// Whether the breaker's rejection is in `error`'s `source()` chain (under the retry's
/// `RetryGaveUp`).
fn breaker_open(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if matches!(e.downcast_ref(), Some(KeelError::BreakerOpen { .. })) {
            return true;
        }
        next = e.source();
    }
    false
}

// ---- the per-IP limit -----------------------------------------------------------------------

/// The per-IP limit (`--per-second`, `--burst`) as an axum layer: `429` with `Retry-After` and
/// the IETF `RateLimit` / `RateLimit-Policy` fields. Keyed by the peer's IP (IPv6 by /64), or,
/// with `--trusted-proxy`, by the client a trusted proxy names in `X-Forwarded-For` (an
/// untrusted peer's header is ignored).
fn per_ip_layer(
    app: Router,
    flags: &Flags,
) -> Result<Router, Box<dyn std::error::Error + Send + Sync>> {
    let quota = Quota::per_second(flags.per_second)?.with_burst(flags.burst)?;
    let config = KeyedConfig::builder()
        .quota(quota)
        .max_keys(10_000)
        .build()?;
    let limiter = KeyedRateLimiter::<IpAddr>::new(config).named("per-ip");
    Ok(if flags.trusted_proxies.is_empty() {
        app.layer(KeyedRateLimitLayer::from_limiter(
            limiter,
            PeerIp::default(),
        ))
    } else {
        let forwarded = ForwardedIp::x_forwarded_for(flags.trusted_proxies.iter().copied());
        app.layer(KeyedRateLimitLayer::from_limiter(limiter, forwarded))
    })
}

/// Answers keel's layer errors (`503` from the bulkhead, `504` from the timeout) with
/// client-safe bodies; the details go to the log.
async fn keel_error(err: BoxError) -> Response {
    tracing::debug!(error = %err, "request refused");
    error_response(&*err)
}

// ---- serving through keel -------------------------------------------------------------------
//
// `keel_tokio::http_server::serve_with` serves the router over HTTP/1 on keel's `Server`: one
// hyper connection per accepted (and permitted) connection, the peer address as axum's
// `ConnectInfo` and keel's `PeerAddr`, and on SIGTERM the shutdown machine's drain delay (not
// ready, still serving), then the drain (hyper's graceful shutdown on every connection:
// requests in flight finish and are answered with `Connection: close`), the grace deadline
// (what is left is aborted and counted) and a second signal that stops at once.

/// The health report of `/livez` and `/readyz`: the server's (not ready from the shutdown
/// signal on: during the drain delay and the drain) and the dependency's breaker (open:
/// degraded, still ready).
fn health(handle: &ServeHandle, breaker: &Breaker) -> HealthReport {
    let mut report = handle.health();
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
    let server = keel_tokio::Server::new(incoming)
        .named("http")
        .config(
            ShutdownConfig::builder()
                .grace_period(flags.grace)
                .drain_delay(flags.drain_delay)
                .build()?,
        )
        .shutdown_on(keel_tokio::shutdown_signal);
    let handle = server.handle();

    let report = {
        let (handle, breaker) = (handle.clone(), dependency.breaker.clone());
        move || health(&handle, &breaker)
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

    println!("listening on {local}");
    let report = keel_tokio::http_server::serve_with(server, app).await;
    eprintln!("stats: {:?}", report.summary);
    match report.error {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
