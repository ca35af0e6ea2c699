//! Striped counters: hot-path counts kept off the shared cache line.
//!
//! A count every call increments (a breaker's admissions, a limit's acquisitions) would make
//! the one cache line it lives on bounce between the cores of every thread that calls, even
//! when the decision itself only reads shared state. [`Striped`] keeps [`STRIPES`] copies of a
//! set of counters, each on its own pair of cache lines; a thread increments the copy its
//! [`index`] picks (threads are numbered round-robin on first use, so the first [`STRIPES`]
//! threads of the process never share one) and a reader sums the copies.
//!
//! Two threads may share a stripe (more threads than stripes), so an increment is still an
//! atomic read-modify-write, but on a line that is almost always already in the calling core's
//! cache. A sum read while increments run may miss those in flight; each stripe only grows, so
//! successive sums never go backwards.

#[cfg(keel_loom)]
use super::shim::Ordering;

/// How many copies a [`Striped`] keeps (a power of two).
pub(crate) const STRIPES: usize = 8;

/// `T` alone on 128 bytes: two cache lines, since x86's adjacent-line prefetcher pulls lines
/// in pairs.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

/// [`STRIPES`] copies of `T`, each padded; [`Striped::mine`] is the calling thread's.
#[derive(Debug)]
pub(crate) struct Striped<T> {
    stripes: [Padded<T>; STRIPES],
}

impl<T> Striped<T> {
    /// Builds each copy with `f`.
    pub(crate) fn new(mut f: impl FnMut() -> T) -> Self {
        Striped {
            stripes: core::array::from_fn(|_| Padded(f())),
        }
    }

    /// The calling thread's copy.
    #[inline]
    pub(crate) fn mine(&self) -> &T {
        // The mask keeps the index in bounds (`STRIPES` is a power of two); the first copy
        // stands in for the case that cannot happen, so there is no panic path.
        let [first, ..] = &self.stripes;
        self.stripes
            .get(index() & (STRIPES - 1))
            .map_or(&first.0, |p| &p.0)
    }

    /// Every copy, for a reader that sums them.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.stripes.iter().map(|p| &p.0)
    }
}

/// The calling thread's stripe: threads are numbered on first use, round-robin over
/// [`STRIPES`]. Without `std` (no thread-locals) every thread uses stripe 0.
#[cfg(all(feature = "std", not(keel_loom)))]
#[inline]
pub(crate) fn index() -> usize {
    use core::cell::Cell;
    use core::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    std::thread_local! {
        static INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    // `try_with` fails only while the thread's locals are being destroyed: use stripe 0 then.
    INDEX
        .try_with(|i| {
            let v = i.get();
            if v != usize::MAX {
                return v;
            }
            let v = NEXT.fetch_add(1, core::sync::atomic::Ordering::Relaxed) & (STRIPES - 1);
            i.set(v);
            v
        })
        .unwrap_or(0)
}

/// The calling loom thread's stripe: numbered in spawn order within each model run, so loom's
/// replays are deterministic and racing threads use different stripes.
#[cfg(keel_loom)]
#[inline]
pub(crate) fn index() -> usize {
    loom::lazy_static! {
        static ref NEXT: loom::sync::atomic::AtomicUsize = loom::sync::atomic::AtomicUsize::new(0);
    }
    loom::thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) & (STRIPES - 1);
    }
    INDEX.with(|i| *i)
}

/// Without `std` there are no thread-locals: every thread uses stripe 0.
#[cfg(all(not(feature = "std"), not(keel_loom)))]
#[inline]
pub(crate) fn index() -> usize {
    0
}

#[cfg(all(test, feature = "std", not(keel_loom)))]
mod tests {
    use super::*;
    use core::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn threads_spread_over_stripes_and_sums_are_exact() {
        let s: Striped<AtomicU64> = Striped::new(|| AtomicU64::new(0));
        std::thread::scope(|sc| {
            for _ in 0..(STRIPES * 2) {
                sc.spawn(|| {
                    for _ in 0..1000 {
                        s.mine().fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        let total: u64 = s.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        assert_eq!(total, (STRIPES as u64) * 2 * 1000);
        assert!(core::mem::align_of::<Padded<AtomicU64>>() >= 128);
    }
}
