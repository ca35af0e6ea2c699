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

fn main() {
    // Started with `--serve`, this binary is the echo server above; otherwise it starts itself
    // with `--serve` under `ulimit -n 100` and storms it.
    keel_testkit::storm::serve_or_storm("async-std", echo::main);
}
