//! An axum router served through keel: the guarded listener (connection limit, accept errors
//! handled), the client's address in `ConnectInfo`, a readiness probe that turns 503 from
//! SIGTERM on, the Kubernetes drain delay, then keel's drain (in-flight requests finish, idle
//! keep-alive connections close, what still runs at the deadline is aborted and counted; a
//! second signal stops at once).
//!
//! ```text
//! cargo run -p keel-tokio --features axum,hyper --example axum_serve -- \
//!     --addr 127.0.0.1:3000 --max-connections 1024 --grace 25 --drain-delay 5
//! curl -s localhost:3000/            # hello 127.0.0.1:53124
//! curl -s localhost:3000/slow        # answers after 2 s (try a SIGTERM meanwhile)
//! curl -si localhost:3000/readyz     # 200 ready=true ..., 503 from SIGTERM on
//! ```
//!
//! It prints the report when it stops (`completed=.. aborted=.. refused=.. drained_in=..`) and
//! exits 0 (1 if the listener failed, 2 on a bad flag).

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use keel_tokio::{GuardConfig, ServeHandle, Server, ShutdownConfig};

struct Options {
    addr: String,
    max_connections: usize,
    grace: Duration,
    drain_delay: Duration,
}

fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
    let mut opts = Options {
        addr: "127.0.0.1:3000".into(),
        max_connections: 1024,
        grace: Duration::from_secs(25),
        drain_delay: Duration::ZERO,
    };
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let seconds = || {
            value
                .parse::<f64>()
                .ok()
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
                .ok_or(format!("{flag}: `{value}` is not a number of seconds"))
        };
        match flag.as_str() {
            "--addr" => opts.addr = value.clone(),
            "--max-connections" => {
                opts.max_connections = value
                    .parse()
                    .map_err(|_| format!("{flag}: `{value}` is not a count"))?;
            }
            "--grace" => opts.grace = seconds()?,
            "--drain-delay" => opts.drain_delay = seconds()?,
            _ => {
                return Err(format!(
                "unknown argument `{flag}` (try --addr, --max-connections, --grace, --drain-delay)"
            ))
            }
        }
    }
    Ok(opts)
}

/// `/readyz`: 200 while ready; 503 from the first signal on (the drain delay included), or when
/// accepting is paused or every connection slot is taken. The body is the health line.
async fn readyz(server: ServeHandle) -> (StatusCode, String) {
    let health = server.health();
    let status = if health.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, format!("{health}\n"))
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let opts = match parse(std::env::args().skip(1)) {
        Ok(opts) => opts,
        Err(e) => {
            eprintln!("axum_serve: {e}");
            std::process::exit(2);
        }
    };
    let configs = GuardConfig::builder()
        .max_connections(opts.max_connections)
        .build()
        .and_then(|guard| {
            ShutdownConfig::builder()
                .grace_period(opts.grace)
                .drain_delay(opts.drain_delay)
                .build()
                .map(|shutdown| (guard, shutdown))
        });
    let (guard, shutdown) = match configs {
        Ok(configs) => configs,
        Err(e) => {
            eprintln!("axum_serve: {e}");
            std::process::exit(2);
        }
    };
    let incoming = match keel_tokio::bind(&opts.addr, &guard).await {
        Ok(incoming) => incoming,
        Err(e) => {
            eprintln!("axum_serve: cannot listen on {}: {e}", opts.addr);
            std::process::exit(1);
        }
    };
    if let Ok(local) = incoming.get_ref().0.local_addr() {
        println!("listening on {local}");
    }

    let server = Server::new(incoming)
        .config(shutdown)
        .shutdown_on(keel_tokio::shutdown_signal);
    let handle = server.handle();
    let app =
        Router::new()
            .route(
                "/",
                get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                    format!("hello {peer}\n")
                }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    "slow and done\n"
                }),
            )
            .route("/readyz", get(move || readyz(handle.clone())));

    let report = keel_tokio::http_server::serve_with(server, app).await;
    println!("{report}");
    std::process::exit(if report.error.is_some() { 1 } else { 0 });
}
