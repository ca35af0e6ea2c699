//! A guarded echo server: each line is echoed back; a connection is held until the client
//! closes it. Accept errors are classified and paused on, connections are limited.
//!
//! ```text
//! cargo run --release -p keel-tokio --example echo -- --addr 127.0.0.1:7878 --max-connections 1024 --grace 5
//! ```
//!
//! - **Health probe**: the line `HEALTH` is answered with the health report line instead of an
//!   echo, e.g. `ready=true live=true reasons=[]`, or during a drain
//!   `ready=false live=true reasons=[shutdown: draining]` (components `accept`, `connections`,
//!   `shutdown`). An orchestrator's exec or TCP probe can send it:
//!   `printf 'HEALTH\n' | nc -q1 127.0.0.1 7878 | grep -q ready=true`.
//! - **Graceful shutdown**: on SIGINT or SIGTERM the listener closes at once (new connections
//!   are refused), lines in flight are finished and answered, idle connections are closed;
//!   connections still open after `--grace SECONDS` (default 5) are cut off and counted as
//!   aborted. A second signal stops at once. It then prints one `stats:` line (accept, limit and
//!   shutdown counts) and exits 0.

#[path = "support/harness.rs"]
mod harness;

fn main() {
    keel_benches::storm::echo_main::<harness::Tokio>();
}
