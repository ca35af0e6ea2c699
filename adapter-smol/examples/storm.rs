//! The seed's manual accept-loop test, automated (see `keel_benches::storm`): the guarded echo
//! server under `ulimit -n 100` with max connections 150, 1000 clients for about 10 s; exits 0
//! only if the server survives, serves a fresh connection afterwards, logs "Too many open files"
//! a bounded number of times and stays under 10 % of one core.
//!
//! ```text
//! cargo run --release -p keel-smol --example storm
//! ```

#[path = "support/harness.rs"]
mod harness;

fn main() {
    keel_benches::storm::storm_main::<harness::Smol>();
}
