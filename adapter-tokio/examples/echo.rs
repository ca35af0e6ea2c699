//! A guarded echo server: each line is echoed back; a connection is held until the client
//! closes it. Accept errors are classified and paused on, connections are limited.
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

#[path = "support/harness.rs"]
mod harness;

fn main() {
    keel_benches::storm::echo_main::<harness::Tokio>();
}
