//! keel's conformance suite (`keel_benches::conformance`) run on async-std.

#[path = "../examples/support/harness.rs"]
mod harness;

keel_benches::conformance_suite!(harness::AsyncStd, keel_async_std);
