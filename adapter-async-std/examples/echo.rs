//! A guarded echo server: each line is echoed back; a connection is held until the client
//! closes it. Accept errors are classified and paused on, connections are limited.
//!
//! ```text
//! cargo run --release -p keel-async-std --example echo -- --addr 127.0.0.1:7878 --max-connections 1024
//! ```

#[path = "support/harness.rs"]
mod harness;

fn main() {
    keel_benches::storm::echo_main::<harness::AsyncStd>();
}
