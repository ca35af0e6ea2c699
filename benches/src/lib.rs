//! Support code for keel's criterion benches (not published).
//!
//! - [`sim`]: the AWS jitter study replayed in virtual time (`src/bin/jitter-sim.rs`).
//!
//! The conformance suite, the storm harness and the deterministic test runtime live in
//! `keel-testkit` (`testkit/`).

pub mod sim;
