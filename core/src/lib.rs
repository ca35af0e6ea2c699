//! # keel-core: sans-IO reliability state machines
//!
//! keel-core is deterministic. It **never reads a clock, sleeps, spawns, or panics on input**.
//! Time is an input ([`time::Instant`], a `u64` count of nanoseconds on the caller's monotonic
//! clock) and randomness is an input (a small SplitMix64 PRNG seeded from the configuration; the
//! only default seeds, hash keys and jitter salts, come from the OS through `getrandom`).
//! The same seed and the same inputs give the same outputs, bit for bit, on every platform.
//!
//! The adapter crates (`keel-tokio`, `keel-async-std`, `keel-smol`) bind these machines to a
//! runtime's listeners, timers and signals; everything that two adapters would share lives here.
//!
//! ## Vocabulary (every machine follows it)
//!
//! | call | meaning |
//! | --- | --- |
//! | `X::new(config, now)` | cannot fail: configs are validated once by `XConfig::builder()...build()` |
//! | `on_*(&mut self, now, ..)` | an input; returns a `#[must_use]` decision |
//! | `handle_timeout(&mut self, now)` | advance timers; early or spurious calls are no-ops |
//! | `poll_timeout(&self) -> Option<Instant>` | when `handle_timeout` next has work; never a "far future" sentinel |
//! | `poll_event(&mut self) -> Option<Event>` | transitions for logs and metrics |
//! | `stats(&self) -> Stats` | a `Copy` snapshot of counters |
//!
//! A `now` older than one already seen is clamped to the newest seen (the rate limiters decide
//! it as given instead, which is never more permissive, and resynchronise after a clock fault:
//! see [`rate`]), and all arithmetic saturates: `Duration::MAX`, `u64::MAX` nanoseconds and zero are legal inputs everywhere.
//! After `handle_timeout(t)`, `poll_timeout()` is `None` or later than `t`, so an event loop
//! driving a machine can never spin.
//!
//! ## Driving the machines yourself
//!
//! Nothing here needs an async runtime: a loop that reads its own clock, feeds each machine
//! its inputs, calls `handle_timeout(now)` and sleeps until the earliest `poll_timeout()` is
//! enough. `examples/event_loop.rs` is that loop (an echo server on `mio` with the accept
//! classifier, connection permits, the connection table, a per-client-IP GCRA and graceful
//! shutdown); it passes the same seed-002 storm as the adapters:
//! `cargo run -p keel-core --example event_loop`.
//!
//! ## Features
//!
//! - `alloc`: heap-backed machines and the shared (atomic) forms in `sync`.
//! - `std` (default, implies `alloc`): `std::io::Error` classification, `std::error::Error`.
//! - `futures` (implies `std`): the runtime-agnostic async driver used by the adapters.
//! - `tracing`: the driver emits `tracing` events.
//!
//! `cargo build -p keel-core --no-default-features` builds the pure `core` machines.
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]
// Links to items behind a feature resolve in the full build (docs.rs's, `--all-features`, which
// CI documents with `-D warnings`); a build without `futures` keeps their text unlinked rather
// than failing `cargo doc --no-default-features`.
#![cfg_attr(not(feature = "futures"), allow(rustdoc::broken_intra_doc_links))]
#![warn(clippy::std_instead_of_core, clippy::alloc_instead_of_core)]
#![cfg_attr(
    not(test),
    warn(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod accept;
pub mod adaptive;
pub mod backlog;
pub mod backoff;
pub mod breaker;
pub mod budget;
pub mod bulkhead;
#[cfg(feature = "alloc")]
pub mod conn;
pub mod error;
pub mod health;
pub mod leak;
pub mod limit;
pub mod rate;
pub mod report;
mod ring;
// Hidden, not private: keel-benches's simulations and core/tests/adaptive.rs draw from the
// same seeded `Rng` as the machines. Users pass seeds (`u64`/`u128`), never an `Rng`.
#[doc(hidden)]
pub mod rng;
pub mod shutdown;
pub mod time;

#[cfg(feature = "futures")]
pub mod driver;
#[cfg(feature = "alloc")]
pub mod sync;

pub use error::{ConfigError, Rejected};
pub use time::Instant;

/// The crate README's code blocks, compiled as doctests so the README stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct CrateReadmeDoctests;
