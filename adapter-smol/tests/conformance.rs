//! keel's conformance suite (`keel_benches::conformance`) run on smol.

#[path = "../examples/support/harness.rs"]
mod harness;

keel_benches::conformance_suite!(harness::Smol, keel_smol);
