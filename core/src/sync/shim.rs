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

/// The most spin hints [`CasBackoff::wait`] gives in one wait (64: a few hundred nanoseconds).
// Under loom a wait is one yield whatever the count.
#[cfg_attr(keel_loom, allow(dead_code))]
const MAX_SPINS: u32 = 64;

/// Exponential backoff after a lost compare-and-swap: 1, 2, 4 ... [`MAX_SPINS`] spin hints, so
/// the thread that won keeps the cache line for its next step (a release right after its
/// acquire, say) instead of losing it at once to a retry that will likely lose again. Under
/// loom one yield, as [`spin_hint`].
#[allow(dead_code)]
#[derive(Debug)]
pub(crate) struct CasBackoff {
    spins: u32,
}

#[allow(dead_code)]
impl CasBackoff {
    pub(crate) const fn new() -> CasBackoff {
        CasBackoff { spins: 1 }
    }

    #[inline]
    pub(crate) fn wait(&mut self) {
        #[cfg(keel_loom)]
        loom::thread::yield_now();
        #[cfg(not(keel_loom))]
        {
            for _ in 0..self.spins {
                core::hint::spin_loop();
            }
            self.spins = (self.spins * 2).min(MAX_SPINS);
        }
    }
}
