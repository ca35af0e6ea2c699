//! Striped counters: hot-path counts kept off the shared cache line, written without a
//! read-modify-write by the thread that owns the stripe.
//!
//! A count every call increments (a breaker's admissions, a limit's acquisitions) would make
//! the one cache line it lives on bounce between the cores of every thread that calls, even
//! when the decision itself only reads shared state. [`Striped`] keeps [`STRIPES`] *owned*
//! copies of a set of counters plus one *shared* copy, each on its own pair of cache lines,
//! and a reader sums the copies.
//!
//! # Owned stripes
//!
//! A process-wide claim table hands each of the first [`STRIPES`] threads to ask a stripe
//! number of its own (a compare-and-swap on the number's flag, `Acquire`). While a thread holds
//! number `i`, it is the only thread that writes stripe `i` of every [`Striped`], so it counts
//! with a plain load and store ([`bump`]) instead of a locked read-modify-write: on x86 a
//! `mov`/`add`/`mov` against a `lock xadd`. Readers only load, so they see each stripe grow
//! (never go back). When the thread ends, its thread-local guard switches the thread to the
//! shared stripe and gives the number back (a `Release` store), so the next owner's claim
//! happens after every store of the previous owner: its first load reads the previous owner's
//! last count, and no count is lost across the handover.
//!
//! A thread that finds every number taken (more than [`STRIPES`] threads at once), or that
//! runs during thread-local destruction, uses the shared stripe with atomic read-modify-writes
//! and asks again every [`RETRY_EVERY`] calls. Without `std` (no thread-locals) every thread
//! uses the shared stripe.
//!
//! The hot path is one thread-local read and one comparison: the thread's number starts out as
//! the shared stripe's, so "not yet claimed" and "shared" take the same (cold) branch.
//!
//! A sum read while increments run may miss those in flight; each stripe only grows, so
//! successive sums never go backwards.

use super::shim::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// How many owned copies a [`Striped`] keeps (a power of two); it has one shared copy more.
pub(crate) const STRIPES: usize = 8;

/// The index of the shared copy (any index `>= STRIPES` means "not owned").
pub(crate) const SHARED: usize = STRIPES;

/// A thread on the shared stripe asks for an owned one again after this many calls.
#[cfg_attr(not(all(feature = "std", not(keel_loom))), allow(dead_code))]
pub(crate) const RETRY_EVERY: u32 = 1024;

/// `T` alone on 128 bytes: two cache lines, since x86's adjacent-line prefetcher pulls lines
/// in pairs.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> core::ops::Deref for Padded<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.0
    }
}

/// [`STRIPES`] owned copies of `T` and a shared one, each padded; [`Striped::mine`] is the
/// calling thread's.
#[derive(Debug)]
pub(crate) struct Striped<T> {
    /// The owned copies, then the shared one at [`SHARED`].
    stripes: [Padded<T>; STRIPES + 1],
}

/// The calling thread's copy of a [`Striped`], and whether the thread owns it (then it is the
/// only writer and may count with [`bump`]'s plain load and store).
#[derive(Debug)]
pub(crate) struct Mine<'a, T> {
    /// The copy.
    pub(crate) c: &'a T,
    /// Only this thread writes it.
    pub(crate) owned: bool,
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
    pub(crate) fn mine(&self) -> Mine<'_, T> {
        #[cfg(any(feature = "std", keel_loom))]
        let i = index();
        // Without `std` there are no thread-locals: every thread uses the shared copy.
        #[cfg(all(not(feature = "std"), not(keel_loom)))]
        let i = SHARED;
        self.at(i)
    }

    /// Copy `i`: owned for `i < STRIPES`, the shared one for any larger `i`.
    #[inline]
    fn at(&self, i: usize) -> Mine<'_, T> {
        // An index past the owned copies is the shared one; `get` falls back to it too, so
        // there is no panic path.
        let [.., shared] = &self.stripes;
        let c = self.stripes.get(i).map_or(&shared.0, |p| &p.0);
        Mine {
            c,
            owned: i < STRIPES,
        }
    }

    /// Every copy, for a reader that sums them.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.stripes.iter().map(|p| &p.0)
    }
}

/// Adds one to `a`, a count in the calling thread's stripe: a plain load and store when the
/// thread owns the stripe (`owned`, from [`Striped::mine`]), an atomic add otherwise. Wraps
/// after 2^64 (centuries at one per nanosecond). `order` is the store's (`Relaxed` or
/// `Release`).
#[inline]
pub(crate) fn bump(owned: bool, a: &AtomicU64, order: Ordering) {
    if owned {
        a.store(a.load(Ordering::Relaxed).wrapping_add(1), order);
    } else {
        a.fetch_add(1, order);
    }
}

/// Raises `a` (in the calling thread's stripe) to at least `n`; returns the value after. As
/// [`bump`]: a load and a store when owned, a `fetch_max` otherwise.
// Only the breaker (feature `std`) keeps a newest instant per stripe.
#[cfg_attr(not(feature = "std"), allow(dead_code))]
#[inline]
pub(crate) fn raise(owned: bool, a: &AtomicU64, n: u64, order: Ordering) -> u64 {
    if owned {
        let v = a.load(Ordering::Relaxed);
        if v >= n {
            return v;
        }
        a.store(n, order);
        n
    } else {
        a.fetch_max(n, order).max(n)
    }
}

/// A table of `N` stripe numbers, each held by at most one thread at a time. (Used by the
/// thread numbering with `std`; under loom only by its model, without `std` not at all.)
#[cfg_attr(not(all(feature = "std", not(keel_loom))), allow(dead_code))]
#[derive(Debug)]
pub(crate) struct Claims<const N: usize> {
    taken: [AtomicBool; N],
    /// Where the next claim starts looking (spreads threads round-robin).
    next: AtomicUsize,
}

#[cfg_attr(not(all(feature = "std", not(keel_loom))), allow(dead_code))]
impl<const N: usize> Claims<N> {
    /// A table with every number free.
    #[cfg(not(keel_loom))]
    pub(crate) const fn new() -> Self {
        Claims {
            taken: [const { AtomicBool::new(false) }; N],
            next: AtomicUsize::new(0),
        }
    }

    /// A table with every number free.
    #[cfg(keel_loom)]
    pub(crate) fn new() -> Self {
        Claims {
            taken: core::array::from_fn(|_| AtomicBool::new(false)),
            next: AtomicUsize::new(0),
        }
    }

    /// Takes a free number, or `None` when all `N` are held. `Acquire`: the previous holder's
    /// stores (made before its [`release`](Self::release)) happen before the new holder's.
    pub(crate) fn claim(&self) -> Option<usize> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..N).find_map(|k| {
            let i = start.wrapping_add(k) % N;
            let flag = self.taken.get(i)?;
            flag.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .ok()
                .map(|_| i)
        })
    }

    /// Gives number `i` back (its holder makes no further stores to its stripes).
    pub(crate) fn release(&self, i: usize) {
        if let Some(flag) = self.taken.get(i) {
            flag.store(false, Ordering::Release);
        }
    }
}

#[cfg(all(feature = "std", not(keel_loom)))]
mod thread {
    use super::{Claims, RETRY_EVERY, SHARED, STRIPES};
    use core::cell::Cell;

    /// The process's stripe numbers.
    static CLAIMS: Claims<STRIPES> = Claims::new();

    /// Holds the thread's number; gives it back when the thread's locals are destroyed.
    struct Owner(Cell<usize>);

    impl Drop for Owner {
        fn drop(&mut self) {
            let i = self.0.replace(SHARED);
            if i < STRIPES {
                // From now on this thread (other thread-locals' destructors may still call
                // in) counts on the shared stripe; only then may another thread take `i`.
                // `INDEX` has no destructor, so it is still there.
                let _ = INDEX.try_with(|c| c.set(SHARED));
                CLAIMS.release(i);
            }
        }
    }

    std::thread_local! {
        /// The thread's stripe: [`SHARED`] until it claims one (no destructor: readable
        /// while other locals are destroyed).
        static INDEX: Cell<usize> = const { Cell::new(SHARED) };
        /// Calls left on the shared stripe before asking again.
        static WAIT: Cell<u32> = const { Cell::new(0) };
        static OWNER: Owner = const { Owner(Cell::new(SHARED)) };
    }

    /// The calling thread's stripe (see the module docs).
    #[inline]
    pub(crate) fn index() -> usize {
        let i = INDEX.try_with(Cell::get).unwrap_or(SHARED);
        if i < STRIPES {
            return i;
        }
        claim()
    }

    #[cold]
    #[inline(never)]
    fn claim() -> usize {
        let wait = WAIT.try_with(Cell::get).unwrap_or(u32::MAX);
        if wait > 0 {
            let _ = WAIT.try_with(|w| w.set(wait - 1));
            return SHARED;
        }
        let _ = WAIT.try_with(|w| w.set(RETRY_EVERY));
        // `try_with` fails once `OWNER` was destroyed (the thread is ending): stay shared
        // then, since nothing would give the number back.
        OWNER
            .try_with(|o| {
                if o.0.get() < STRIPES {
                    // Given back already (cannot happen while `INDEX` says shared).
                    return SHARED;
                }
                match CLAIMS.claim() {
                    Some(i) => {
                        o.0.set(i);
                        let _ = INDEX.try_with(|c| c.set(i));
                        i
                    }
                    None => SHARED,
                }
            })
            .unwrap_or(SHARED)
    }
}

#[cfg(all(feature = "std", not(keel_loom)))]
pub(crate) use thread::index;

/// The calling loom thread's stripe: numbered in spawn order within each model run, so loom's
/// replays are deterministic and racing threads own different stripes (a thread past the
/// [`STRIPES`]th uses the shared one). The claim table's handover is modelled on its own
/// (`loom_claims_hand_over_counts`).
#[cfg(keel_loom)]
#[inline]
pub(crate) fn index() -> usize {
    loom::lazy_static! {
        static ref NEXT: loom::sync::atomic::AtomicUsize = loom::sync::atomic::AtomicUsize::new(0);
    }
    loom::thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed).min(SHARED);
    }
    INDEX.with(|i| *i)
}

#[cfg(test)]
#[cfg(all(feature = "std", not(keel_loom)))]
mod tests {
    use super::*;
    use core::sync::atomic::Ordering;

    fn count(s: &Striped<AtomicU64>) {
        let m = s.mine();
        bump(m.owned, m.c, Ordering::Relaxed);
    }

    #[test]
    fn each_owned_copy_is_its_own_and_any_other_index_is_the_shared_one() {
        let s: Striped<AtomicU64> = Striped::new(|| AtomicU64::new(0));
        assert_eq!(s.iter().count(), STRIPES + 1);
        let shared = s.at(SHARED);
        assert!(!shared.owned);
        for i in 0..STRIPES {
            let m = s.at(i);
            assert!(m.owned, "copy {i} is owned");
            assert!(!core::ptr::eq(m.c, shared.c), "copy {i} is the shared one");
            for j in 0..i {
                assert!(!core::ptr::eq(m.c, s.at(j).c), "copies {j} and {i} are one");
            }
        }
        for i in [SHARED + 1, usize::MAX] {
            let m = s.at(i);
            assert!(!m.owned);
            assert!(core::ptr::eq(m.c, shared.c));
        }
    }

    #[test]
    fn claims_hand_out_each_number_once_until_it_is_given_back() {
        let c = Claims::<3>::new();
        let mut got: std::vec::Vec<usize> = (0..3).filter_map(|_| c.claim()).collect();
        got.sort_unstable();
        assert_eq!(got, [0, 1, 2]);
        assert_eq!(c.claim(), None);
        c.release(1);
        assert_eq!(c.claim(), Some(1));
        assert_eq!(c.claim(), None);
        // Not a number of the table: nothing to give back.
        c.release(3);
        assert_eq!(c.claim(), None);
    }

    #[test]
    fn two_live_threads_never_own_the_same_stripe() {
        let barrier = std::sync::Barrier::new(2);
        let run = || {
            let i = index();
            // Both threads hold their number (neither has ended) when both have asked.
            barrier.wait();
            (i, index())
        };
        let (a, b) = std::thread::scope(|sc| {
            let (a, b) = (sc.spawn(run), sc.spawn(run));
            (a.join().expect("thread"), b.join().expect("thread"))
        });
        for (first, again) in [a, b] {
            if first < STRIPES {
                assert_eq!(again, first, "an owned number is kept");
            }
        }
        // Other tests' threads may hold every number, leaving these two on the shared stripe.
        if a.0 < STRIPES && b.0 < STRIPES {
            assert_ne!(a.0, b.0);
        }
    }

    #[test]
    fn threads_spread_over_stripes_and_sums_are_exact() {
        let s: Striped<AtomicU64> = Striped::new(|| AtomicU64::new(0));
        // More threads than stripes at once: some share the shared stripe.
        std::thread::scope(|sc| {
            for _ in 0..(STRIPES * 2) {
                sc.spawn(|| {
                    for _ in 0..1000 {
                        count(&s);
                    }
                });
            }
        });
        let total: u64 = s.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        assert_eq!(total, (STRIPES as u64) * 2 * 1000);
        assert!(core::mem::align_of::<Padded<AtomicU64>>() >= 128);
    }

    #[test]
    fn an_ended_thread_gives_its_stripe_back_and_no_count_is_lost() {
        let s: Striped<AtomicU64> = Striped::new(|| AtomicU64::new(0));
        // Many more short-lived threads, one after another, than stripes: each claims a
        // number (the previous owner gave it back when it ended) and counts on it.
        let mut owned = 0;
        for _ in 0..(STRIPES * 4) {
            owned += std::thread::scope(|sc| {
                sc.spawn(|| {
                    count(&s);
                    let m = s.mine();
                    bump(m.owned, m.c, Ordering::Relaxed);
                    usize::from(m.owned)
                })
                .join()
                .unwrap_or(0)
            });
        }
        let total: u64 = s.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        assert_eq!(total, (STRIPES as u64) * 4 * 2);
        // Other tests' threads may hold numbers meanwhile, but never all of them for long.
        assert!(owned > STRIPES, "only {owned} threads got an owned stripe");
    }
}

#[cfg(test)]
#[cfg(keel_loom)]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    /// Two threads share one stripe number: each takes it if free (else counts on the shared
    /// stripe with a read-modify-write), counts with a plain load and store, gives it back.
    /// The handover (`Release` store, `Acquire` claim) loses no count.
    #[test]
    fn loom_claims_hand_over_counts() {
        loom::model(|| {
            let claims = Arc::new(Claims::<1>::new());
            let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
            let worker = || {
                let (claims, counts) = (Arc::clone(&claims), Arc::clone(&counts));
                loom::thread::spawn(move || {
                    let i = claims.claim();
                    let owned = i.is_some();
                    let [own, shared] = &*counts;
                    let c = if owned { own } else { shared };
                    bump(owned, c, Ordering::Relaxed);
                    bump(owned, c, Ordering::Relaxed);
                    if let Some(i) = i {
                        claims.release(i);
                    }
                })
            };
            let (a, b) = (worker(), worker());
            a.join().expect("thread");
            b.join().expect("thread");
            let total: u64 = counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
            assert_eq!(total, 4);
        });
    }
}
