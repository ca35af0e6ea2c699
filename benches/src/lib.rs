//! Support code for keel's criterion benches and simulators (not published).
//!
//! - [`sim`]: the AWS jitter study replayed in virtual time (`src/bin/jitter-sim.rs`).
//! - [`adaptive_sim`]: `adaptive-sim`, keel's adaptive concurrency controllers beside Netflix's
//!   and Envoy's on a simulated service in virtual time.
//! - [`cli`]: the flags, plot writing and SVG frame both simulators share.
//!
//! The conformance suite, the storm harness and the deterministic test runtime live in
//! `keel-testkit` (`testkit/`).

pub mod adaptive_sim;
pub mod cli;
pub mod sim;
