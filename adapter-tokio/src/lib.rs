//! # keel-tokio: keel's reliability machines on tokio
//!
//! The thin binding of [`keel_core`] to tokio's listeners, timers and signals.
//! The core is re-exported as [`core`] so an application depends on this one crate.

/// The runtime-agnostic core, re-exported.
pub use keel_core as core;
