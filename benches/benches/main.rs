//! One criterion entry point gathering every bench group; keel and its peer side by side in the
//! same group, so the ratio is measured in one run on one machine.
//!
//! ```text
//! cargo bench -p keel-benches                 # everything
//! cargo bench -p keel-benches -- --quick      # a short run
//! cargo bench -p keel-benches -- limit        # one group
//! ```
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main};

mod accept;
mod limit;

criterion_group!(benches, accept::bench, limit::bench);
criterion_main!(benches);
