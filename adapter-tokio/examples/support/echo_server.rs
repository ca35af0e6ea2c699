//! The guarded echo server shared by the `echo` and `storm` examples.
//!
//! Each line is echoed back, except the line `HEALTH`, answered with the server's health
//! report line (`ready=true live=true reasons=[]`; see `ServeHandle::health`). On SIGINT or
//! SIGTERM it stops accepting, finishes the lines in flight, closes idle connections, aborts
//! what still runs after the grace period (`--grace SECONDS`, default 5), prints a `stats:` line
//! and exits 0.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use keel_tokio::core::driver::GuardConfig;
use keel_tokio::{Draining, ServeHandle, ShutdownConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Command-line options of the echo server.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub(crate) addr: String,
    pub(crate) max_connections: usize,
    pub(crate) grace: Duration,
}

impl Options {
    /// Parses `--addr HOST:PORT`, `--max-connections N` and `--grace SECONDS` (defaults
    /// 127.0.0.1:7878, 1024 and 5).
    pub(crate) fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
        let mut opts = Options {
            addr: "127.0.0.1:7878".into(),
            max_connections: 1024,
            grace: Duration::from_secs(5),
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
            match arg.as_str() {
                "--addr" => opts.addr = value("--addr")?,
                "--max-connections" => {
                    let v = value("--max-connections")?;
                    opts.max_connections = v
                        .parse()
                        .map_err(|_| format!("--max-connections: `{v}` is not a count"))?;
                }
                "--grace" => {
                    let v = value("--grace")?;
                    opts.grace = v
                        .parse::<f64>()
                        .ok()
                        .and_then(|s| Duration::try_from_secs_f64(s).ok())
                        .ok_or(format!("--grace: `{v}` is not a number of seconds"))?;
                }
                "--serve" => {}
                other => {
                    return Err(format!(
                        "unknown argument `{other}` (try --addr, --max-connections, --grace)"
                    ))
                }
            }
        }
        Ok(opts)
    }
}

/// Logs to stderr, `info` by default (`RUST_LOG` overrides).
pub(crate) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(false)
        .init();
}

/// Binds, prints `listening on ADDR` on stdout, and echoes lines until SIGINT or SIGTERM; then
/// drains for at most the grace period and prints `stats: ...` on stdout.
pub(crate) async fn run(opts: Options) -> io::Result<()> {
    let invalid = |e| io::Error::new(io::ErrorKind::InvalidInput, e);
    let config = GuardConfig::builder()
        .max_connections(opts.max_connections)
        .build()
        .map_err(invalid)?;
    let shutdown = ShutdownConfig::builder()
        .grace_period(opts.grace)
        .build()
        .map_err(invalid)?;
    let incoming = keel_tokio::bind(&opts.addr, &config).await?;
    let local: SocketAddr = incoming.get_ref().0.local_addr()?;
    println!("listening on {local}");
    tracing::info!(addr = %local, max_connections = opts.max_connections, grace_ms = opts.grace.as_millis() as u64, "echo server listening");
    let server = keel_tokio::Server::new(incoming)
        .config(shutdown)
        .shutdown_on(keel_tokio::shutdown_signal);
    let handle = server.handle();
    let report = server
        .serve(move |stream, draining| echo(stream, draining, handle.clone()))
        .await;
    println!("stats: {report}");
    tracing::info!(%report, "echo server stopped");
    match report.error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Echoes lines; answers `HEALTH` with the health line. When the drain starts, an idle
/// connection is closed at once and a line in flight is finished first.
async fn echo(stream: TcpStream, draining: Draining, server: ServeHandle) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut line = Vec::with_capacity(128);
    loop {
        line.clear();
        // `read_until` keeps what it read when interrupted, so nothing is lost.
        let read = match draining
            .run_until_draining(lines.read_until(b'\n', &mut line))
            .await
        {
            Some(read) => read,
            None if line.is_empty() && lines.buffer().is_empty() => break,
            None => lines.read_until(b'\n', &mut line).await,
        };
        match read {
            Ok(_) if line.is_empty() => break,
            Err(_) => break,
            Ok(_) => {}
        }
        let reply = if line.trim_ascii() == b"HEALTH" {
            format!("{}\n", server.health()).into_bytes()
        } else {
            std::mem::take(&mut line)
        };
        if write.write_all(&reply).await.is_err() || draining.is_draining() {
            break;
        }
        if line.capacity() == 0 {
            line = reply;
        }
    }
}
