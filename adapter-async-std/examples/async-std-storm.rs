//! The seed's manual accept-loop test, automated: this adapter's `async-std-echo` example (compiled into
//! this binary from `async-std-echo.rs`, started as a child with `--serve`) under `ulimit -n 100` with
//! max connections 150, and 1000 clients for about 10 s (`keel_testkit::storm`). Exits 0 only
//! if the server survives, serves a fresh connection afterwards, logs "Too many open files" a
//! bounded number of times and stays under 10 % of one core.
//!
//! ```text
//! cargo run --release -p keel-async-std --example async-std-storm
//! ```

#[path = "async-std-echo.rs"]
mod echo;

use keel_testkit::storm::{run, Plan};

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--serve") {
        // The child: the echo server itself (`--serve` is accepted and ignored by its flags).
        echo::main();
        return;
    }
    let exe = std::env::current_exe().unwrap_or_else(|e| {
        eprintln!("storm: the path of this example: {e}");
        std::process::exit(1)
    });
    let mut plan = Plan::seed(exe, vec!["--serve".into()]);
    plan.runtime = "async-std";
    std::process::exit(run(&plan));
}
