//! A guarded echo server: each line is echoed back; a connection is held until the client
//! closes it. Accept errors are classified and paused on, connections are limited. The line
//! `HEALTH` is answered with the health report line; on SIGINT or SIGTERM the server drains
//! (lines in flight finished, idle connections closed, the rest cut off after `--grace SECONDS`,
//! default 5), prints a `stats:` line and exits 0 (see `keel_benches::storm`).
//!
//! ```text
//! cargo run --release -p keel-smol --example echo -- --addr 127.0.0.1:7878 --max-connections 1024 --grace 5
//! ```

#[path = "support/harness.rs"]
mod harness;

fn main() {
    keel_benches::storm::echo_main::<harness::Smol>();
}
