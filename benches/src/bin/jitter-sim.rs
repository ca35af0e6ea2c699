//! The jitter simulation: N clients contending on one optimistic-concurrency resource, each
//! retrying with a keel backoff machine in virtual time (see `keel_benches::sim`).
//!
//! ```text
//! cargo run --release -p keel-benches --bin jitter-sim [-- --trials 100 --out benches/jitter-sim.svg]
//! ```
//!
//! Prints a Markdown table (calls and completion time at 10, 50 and 100 clients, per strategy)
//! and writes an SVG plot of both against the number of clients (10 to 100).

use std::process::ExitCode;

use keel_benches::cli::{write_plot, Args};
use keel_benches::sim::{run, svg, table, Strategy};

const PLOT_CLIENTS: [usize; 10] = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100];
const TABLE_CLIENTS: [usize; 3] = [10, 50, 100];

fn main() -> ExitCode {
    let defaults = Args {
        number: 100,
        out: "benches/jitter-sim.svg".into(),
    };
    let Some(Args {
        number: trials,
        out,
    }) = Args::parse("jitter-sim", "--trials", defaults, std::env::args().skip(1))
    else {
        return ExitCode::FAILURE;
    };
    let mut results = Vec::new();
    for &clients in &PLOT_CLIENTS {
        for strategy in Strategy::ALL {
            results.push(run(strategy, clients, trials, 0x6b65_656c));
        }
    }
    println!("Mean of {trials} seeded trials per cell (network delay |N(10 ms, 2 ms)| per hop).\n");
    print!("{}", table(&results, &TABLE_CLIENTS));
    write_plot(&out, &svg(&results, trials))
}
