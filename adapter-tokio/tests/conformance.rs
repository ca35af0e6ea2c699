//! keel's conformance suite (`keel_benches::conformance`) run on tokio.

#[path = "../examples/support/harness.rs"]
mod harness;

keel_benches::conformance_suite!(harness::Tokio, keel_tokio);
