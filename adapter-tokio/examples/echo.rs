//! A guarded echo server on tokio, written against keel-tokio's API: each line is echoed back;
//! a connection is held until the client closes it. Accept errors are classified and paused on
//! (a shortage such as "Too many open files" is logged with a hint), connections are limited.
//!
//! ```text
//! cargo run --release -p keel-tokio --example echo -- --addr 127.0.0.1:7878 --max-connections 1024 --grace 5 \
//!     --idle-timeout 60 --max-line 65536 --line-timeout 10
//! ```
//!
//! - **Health probe**: the line `HEALTH` is answered with the health report line instead of an
//!   echo, e.g. `ready=true live=true reasons=[]`, or during a drain
//!   `ready=false live=true reasons=[shutdown: draining]` (components `accept`, `connections`, `clients`,
//!   `shutdown`). An orchestrator's exec or TCP probe can send it:
//!   `printf 'HEALTH\n' | nc -q1 127.0.0.1 7878 | grep -q ready=true`.
//! - **Graceful shutdown**: on SIGINT or SIGTERM the listener closes at once (new connections
//!   are refused), lines in flight are finished and answered, idle connections are closed;
//!   connections still open after `--grace SECONDS` (default 5) are cut off and counted as
//!   aborted. A second signal stops at once. It then prints one `stats:` line (accept, limit and
//!   shutdown counts) and exits 0.
//! - **Hostile clients**: a connection silent for `--idle-timeout SECONDS` (default 60; 0: off)
//!   is closed; a line must arrive within `--line-timeout SECONDS` of its first byte (default
//!   10; 0: off), so a trickler that never sends the newline is closed; a line longer than
//!   `--max-line BYTES` (default 65536) is answered with `ERR line longer than N bytes` and the
//!   connection is closed; at `--max-connections` a newcomer gets the slot of the connection
//!   idle the longest (idle at least 1 s). Every connection ends with a lingering close (the
//!   write side shut down, the peer's input drained for at most 2 s / 1 MiB), so a reply is
//!   never lost to a reset, also during the drain.
//!
//! How it is built, top to bottom: the flags become three validated configs (`GuardConfig` for
//! the listener, `ShutdownConfig` for the drain, `ConnConfig` for idle connections);
//! `keel_tokio::bind` binds the guarded listener; `keel_tokio::Server` serves it, one task per
//! connection, and drains on `keel_tokio::shutdown_signal` (SIGINT or SIGTERM); each connection is
//! handed to the line echo `keel_testkit::echo::echo_conn` (the same in every adapter's
//! example), which reads lines with `read_line_bounded`, arms each line's read deadline with
//! `Conn::set_read_deadline`, answers `HEALTH` from the server's `ServeHandle::health` and
//! stops at the drain; when the handler returns, the server closes the connection with a
//! lingering close. `serve` returns the drain report, printed as the `stats:` line.
//!
//! Exit codes: 0 after a drain, 1 if the server failed (e.g. the address is taken), 2 on a bad
//! flag.

use std::io;

use keel_testkit::echo::{echo_conn, Options};
use keel_tokio::core::conn::ConnConfig;
use keel_tokio::{Draining, GuardConfig, Server, ShutdownConfig};
use tracing_subscriber::EnvFilter;

pub(crate) fn main() {
    // keel logs through `tracing` (accept errors, shortages with their hint, the drain): to
    // stderr, `info` unless `RUST_LOG` says otherwise.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(false)
        .init();
    let opts = Options::from_args_or_exit();
    let served = {
        let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| {
            eprintln!("echo: cannot start tokio: {e}");
            std::process::exit(1)
        });
        runtime.block_on(serve(opts))
    };
    if let Err(e) = served {
        eprintln!("echo: {e}");
        std::process::exit(1);
    }
}

/// Binds, prints `listening on ADDR` on stdout, and echoes lines until SIGINT or SIGTERM; then
/// drains for at most the grace period and prints `stats: ...` on stdout.
async fn serve(opts: Options) -> Result<(), Box<dyn std::error::Error>> {
    let config = GuardConfig::builder()
        .max_connections(opts.max_connections)
        .build()?;
    let shutdown = ShutdownConfig::builder().grace_period(opts.grace).build()?;
    let conns = ConnConfig::builder()
        .idle_timeout(opts.idle_timeout)
        .build()?;

    let incoming = keel_tokio::bind(&opts.addr, &config).await?;
    let local = incoming.get_ref().0.local_addr()?;
    println!("listening on {local}");
    tracing::info!(addr = %local, runtime = "tokio", ?opts, "echo server listening");

    let server = Server::new(incoming)
        .config(shutdown)
        .conn_config(conns)
        .shutdown_on(keel_tokio::shutdown_signal);
    let handle = server.handle();
    let report = server
        .serve(move |conn, _: Draining| echo_conn(conn, Some(handle.clone()), opts.limits))
        .await;

    println!("stats: {report}");
    tracing::info!(%report, "echo server stopped");
    match report.error {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
