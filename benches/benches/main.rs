//! One criterion entry point gathering every bench group; keel and its peer side by side in the
//! same group, so the ratio is measured in one run on one machine.
//!
//! ```text
//! cargo bench -p keel-benches                 # everything
//! cargo bench -p keel-benches -- --quick      # a short run
//! cargo bench -p keel-benches -- limit        # one group
//! cargo bench -p keel-benches -- keyed_flood  # the keyed check under hash flooding
//! ```
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main};

// The groups live in `groups/` so that cargo does not take each file for a bench target.
mod groups {
    pub(crate) mod accept;
    pub(crate) mod accept_throughput;
    pub(crate) mod backoffs;
    pub(crate) mod breaker;
    pub(crate) mod handle;
    pub(crate) mod keyed_flood;
    pub(crate) mod limit;
    pub(crate) mod rate;
    pub(crate) mod util;
}

use groups::{accept, accept_throughput, backoffs, breaker, handle, keyed_flood, limit, rate};

criterion_group!(
    benches,
    rate::bench,
    limit::bench,
    breaker::bench,
    handle::bench,
    backoffs::bench,
    accept::bench,
    accept_throughput::bench,
    keyed_flood::bench
);
criterion_main!(benches);
