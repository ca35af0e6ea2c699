//! The seed-002 storm against keel-core's `event_loop` example: the echo server built on the
//! sans-IO machines in a hand-written mio loop, with no async runtime. The same plan as the
//! adapters' `storm` examples (`ulimit -n 100`, max connections 150, 1000 clients for about
//! 10 s; the server must survive, serve a fresh connection afterwards, log "Too many open
//! files" a bounded number of times and stay under 10 % of one core).
//!
//! ```text
//! cargo run --release -p keel-testkit --example storm_event_loop [-- PATH_TO_EVENT_LOOP]
//! ```
//!
//! Without a path it builds the server first (`cargo build -p keel-core --example event_loop`,
//! in this example's profile) and runs `examples/event_loop` from this example's directory.

use std::path::PathBuf;
use std::process::Command;

use keel_testkit::storm::{run, Plan};

fn main() {
    let server = match std::env::args_os().nth(1) {
        Some(path) => PathBuf::from(path),
        None => build_event_loop().unwrap_or_else(|e| {
            eprintln!("storm_event_loop: {e}");
            std::process::exit(1)
        }),
    };
    let mut plan = Plan::seed(server, Vec::new());
    plan.runtime = "event-loop";
    std::process::exit(run(&plan));
}

/// Builds keel-core's `event_loop` example in this binary's profile; returns its path (beside
/// this binary: both are examples of one workspace).
fn build_event_loop() -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "-p", "keel-core", "--example", "event_loop"]);
    if !cfg!(debug_assertions) {
        build.arg("--release");
    }
    let status = build.status().map_err(|e| format!("running cargo: {e}"))?;
    if !status.success() {
        return Err(format!(
            "cargo build -p keel-core --example event_loop: {status}"
        ));
    }
    let me = std::env::current_exe().map_err(|e| format!("the path of this example: {e}"))?;
    let server = me.with_file_name("event_loop");
    if server.exists() {
        Ok(server)
    } else {
        Err(format!("no {} after the build", server.display()))
    }
}
