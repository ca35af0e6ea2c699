//! The adaptive concurrency simulation: keel's controllers beside re-implementations of
//! Netflix's and Envoy's on one simulated service, in virtual time (see
//! `keel_benches::adaptive_sim`).
//!
//! ```text
//! cargo run --release -p keel-benches --bin adaptive-sim [-- --seed 1 --out benches/adaptive-sim.svg]
//! ```
//!
//! Prints a Markdown table (one row per controller × scenario), the priorities table (one row
//! per class, with and without classes) and writes an SVG of the limit and the mean latency
//! over time.

use std::process::ExitCode;

use keel_benches::adaptive_sim::{priority_table, run_all, run_priorities, svg, table, Algo};
use keel_benches::cli::{write_plot, Args};

fn main() -> ExitCode {
    let defaults = Args {
        number: 1,
        out: "benches/adaptive-sim.svg".into(),
    };
    let Some(Args { number: seed, out }) =
        Args::parse("adaptive-sim", "--seed", defaults, std::env::args().skip(1))
    else {
        return ExitCode::FAILURE;
    };
    let results = run_all(&Algo::ALL, seed);
    println!(
        "Seed {seed}; windows of 100 ms; 50 servers, 10 ms service time, 1 s client timeout.\n"
    );
    print!("{}", table(&results));
    println!(
        "\nPriorities at 3x load (20 % critical, 50 % default, 30 % sheddable), keel's default \
         controller setting a bulkhead's limit:\n"
    );
    let priorities = [run_priorities(seed, true), run_priorities(seed, false)];
    print!("{}", priority_table(&priorities));
    let plotted = [
        Algo::KeelGradient,
        Algo::NetflixVegas,
        Algo::NetflixGradient2,
        Algo::NetflixAimd,
        Algo::EnvoyGradient,
    ];
    write_plot(&out, &svg(&results, &plotted))
}
