//! The one place the shared forms get their atomics from: std/core normally, loom's under
//! `--cfg keel_loom` so the loom models exercise every interleaving of the real code.
#![allow(unused_imports)]

#[cfg(not(keel_loom))]
pub(crate) use alloc::sync::Arc;
#[cfg(not(keel_loom))]
pub(crate) use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(all(not(keel_loom), feature = "std"))]
pub(crate) use std::sync::{Mutex, MutexGuard};

#[cfg(keel_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(keel_loom)]
pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};

/// A spin hint that becomes a loom yield under the model checker, so CAS loops terminate there.
// Not every feature combination has a CAS loop that needs it.
#[allow(dead_code)]
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(keel_loom)]
    loom::thread::yield_now();
    #[cfg(not(keel_loom))]
    core::hint::spin_loop();
}
