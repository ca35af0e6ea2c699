//! Shared, thread-safe forms of the machines (feature `alloc`).
//!
//! The `&mut self` machines elsewhere in this crate own no `Arc`, lock or channel. The types
//! here are the shared forms an application hands to many tasks: they are built on atomics,
//! import their atomics only through the crate-private `shim` module (which swaps in `loom`'s
//! under `--cfg keel_loom`), and are model-checked by loom:
//!
//! ```text
//! RUSTFLAGS="--cfg keel_loom" cargo test --release -p keel-core --features std loom
//! ```

pub(crate) mod shim;
mod stripe;

#[cfg(feature = "std")]
pub mod adaptive;
#[cfg(feature = "std")]
pub mod breaker;
#[cfg(feature = "std")]
pub mod budget;
#[cfg(feature = "std")]
pub mod bulkhead;
pub mod gcra;
#[cfg(feature = "std")]
pub mod keyed;
pub mod limit;
#[cfg(feature = "std")]
pub mod rate_wait;
#[cfg(feature = "std")]
pub mod report;
#[cfg(feature = "std")]
mod waitlist;
#[cfg(feature = "std")]
mod wakers;

pub use limit::{LimitGuard, LimitRef, Permit, SharedLimit};
