//! The shared connection limit: RAII [`LimitGuard`]s that wake the acceptor when dropped.
//!
//! [`SharedLimit`] is the thread-safe form of [`crate::limit::Limit`] with the same rules (see
//! that module for what it protects against, the overflow policies and the defaults). Clones
//! share one state. A [`LimitGuard`] is `Send + Sync + 'static`, so it moves into the task that
//! serves the connection, and dropping it (however the task ends) releases the slot and wakes
//! the acceptor waiting in [`SharedLimit::poll_acquire`].
//!
//! # The contract
//!
//! - **Never more permits than the limit.** `max`, `in_use` and a waiter flag live in one
//!   64-bit atomic word, so an acquisition is a compare-and-swap checked against the `max` of
//!   the same instant, even while another thread calls `set_max`.
//! - **Resizing at run time.** Shrinking never revokes a permit: holders keep theirs and new
//!   acquisitions are refused until `in_use < max`. Growing wakes the waiter.
//! - **No lost wake-up** (feature `std`). `poll_acquire` stores the task's waker and then sets
//!   the waiter flag with a compare-and-swap that only succeeds if the limit is still full, so a
//!   release between the check and the registration is seen either by the CAS (which fails and
//!   the acquisition is retried) or by the release (which sees the flag and wakes the task).
//! - **One waiting task** (the acceptor) is what this is built for: its registration lives
//!   inline, so waiting allocates nothing. Several tasks may wait; then every release (or
//!   growth) wakes all of them, one takes the slot and the rest register again. Nobody is
//!   stranded and nobody spins, but there is no queue and no fairness (use a bulkhead for that).
//!   (Keeping one slot and waking the displaced waker instead would make two waiters wake each
//!   other in a loop while the limit is full: the loom model found that busy loop.)
//! - **Cheap permits.** Taking a permit is one CAS on the state word and one counter increment
//!   on the calling thread's stripe (a cache line of its own, and for the first eight threads a
//!   plain load and store, see below); dropping it is one
//!   `fetch_sub` (releases are derived in [`SharedLimit::stats`] as `acquired - in_use`, never
//!   ahead of the truth and never going backwards); the waker mutex is only locked when the
//!   waiter flag is set. [`SharedLimit::try_acquire_ref`] hands out a [`LimitRef`] that borrows
//!   the limit, saving the `Arc` clone and drop of an owned [`LimitGuard`].
//! - **Two threads touch one shared line.** Only the state word is written by every acquire
//!   and release, and it sits alone on a 128-byte line pair (the peak, the counters and the
//!   config, read on every acquire, live on others, so reading them does not pull the state
//!   word's line away from the core about to write it). The acquisition count is striped
//!   (`super::stripe`): eight padded copies (128 bytes each) each owned by one thread at a time,
//!   which counts on it with a plain load and store (it is the only writer), plus a shared one
//!   for threads beyond eight, `stats()` summing them; about 1.3 KiB per limit in all. (An
//!   `Arc`'s reference counts sit on a line of their own too, for owned guards.)
//! - Under plain `alloc` (no `std`), [`SharedLimit::try_acquire`], guards and counts work and
//!   `poll_acquire` does not exist.
//!
//! # Example
//!
//! ```
//! use core::num::NonZeroUsize;
//! use keel_core::limit::{LimitConfig, Overflow};
//! use keel_core::sync::limit::SharedLimit;
//! use keel_core::Instant;
//!
//! let limit = SharedLimit::new(LimitConfig::builder().max(1).build()?);
//! let now = Instant::ZERO;
//! let guard = limit.try_acquire(now).expect("a slot is free");
//! let full = limit.try_acquire(now).unwrap_err(); // full: the acceptor waits in poll_acquire
//! assert_eq!((full.reason, full.retry_at), (Overflow::Backpressure, None));
//!
//! std::thread::scope(|s| {
//!     s.spawn(move || drop(guard)); // the connection ends on another thread
//! });
//! assert_eq!(limit.in_use(), 0);
//!
//! limit.set_max(NonZeroUsize::new(3).unwrap());
//! let held: Vec<_> = (0..3).filter_map(|_| limit.try_acquire(now).ok()).collect();
//! assert_eq!(held.len(), 3);
//! assert_eq!(limit.stats().peak, 3);
//! # Ok::<(), keel_core::ConfigError>(())
//! ```

use core::fmt;
use core::num::NonZeroUsize;
#[cfg(feature = "std")]
use core::task::{Context, Poll, Waker};

use super::shim::{Arc, AtomicU64, AtomicUsize, CasBackoff, Ordering};
#[cfg(feature = "std")]
use super::shim::{Mutex, MutexGuard};
use super::stripe::{bump, Padded, Striped};
#[cfg(feature = "std")]
use super::wakers::WakerList;
use crate::error::Rejected;
use crate::limit::{slots, LimitConfig, LimitStats, Overflow};
use crate::time::Instant;

// The state word and its rules are the `&mut` limit's (`crate::limit::slots`): one engine, so
// the two forms cannot drift apart. This file adds only the atomics and the waiters (the
// crate's one waker list, `super::wakers`).
const WAITER: u64 = slots::WAITER;

fn in_use_of(state: u64) -> u64 {
    slots::in_use(state)
}

fn max_of(state: u64) -> u64 {
    slots::max(state)
}

fn has_room(state: u64) -> bool {
    slots::has_room(state)
}

fn to_usize(v: u64) -> usize {
    slots::to_usize(v)
}

struct Inner {
    /// The one word every acquire and release writes, alone on its 128-byte line pair: no
    /// read of `peak`, the config or the counters below pulls that line away from the core
    /// that writes it next, and no write of theirs invalidates it.
    state: Padded<AtomicU64>,
    peak: AtomicUsize,
    /// Acquisitions, counted per stripe of threads (see `super::stripe`) so the count does not
    /// put a second write on the state word's cache line; `stats()` sums the stripes.
    acquired: Striped<AtomicU64>,
    /// The highest `released` any `stats()` reported. Releases are not counted on the hot
    /// path (one read-modify-write less per permit): `stats()` derives them as
    /// `acquired - in_use`, reading `acquired` first so the figure never exceeds the truth, and
    /// keeps this maximum so it never goes backwards either (see [`Inner::released`]).
    released_seen: AtomicU64,
    rejected: AtomicU64,
    shed: AtomicU64,
    /// Tasks registered now (mirrors `waiters.len()`, readable without the lock).
    waiting: AtomicUsize,
    config: LimitConfig,
    #[cfg(feature = "std")]
    waiters: Mutex<WakerList>,
}

impl Inner {
    /// Takes a slot if there is room (a CAS against the `max` of the same word; after a lost
    /// CAS, [`acquire_contended`](Self::acquire_contended)). Returns the state before the
    /// acquisition, or `None` when full.
    #[inline]
    fn acquire(&self) -> Option<u64> {
        let state = self.state.load(Ordering::Acquire);
        let next = slots::acquire(state)?;
        match self
            .state
            .compare_exchange(state, next, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(prev) => Some(self.won(prev)),
            Err(_) => self.acquire_contended(),
        }
    }

    /// [`acquire`](Self::acquire) after a lost CAS: the same CAS loop, with an exponential
    /// backoff before each retry, so the thread that won finishes its step (its release, its
    /// next acquire) on a line it keeps instead of losing it at once to a retry that would
    /// likely lose again. Out of line: the uncontended path stays one load and one CAS.
    #[cold]
    #[inline(never)]
    fn acquire_contended(&self) -> Option<u64> {
        let mut backoff = CasBackoff::new();
        loop {
            backoff.wait();
            let state = self.state.load(Ordering::Acquire);
            let next = slots::acquire(state)?;
            if let Ok(prev) =
                self.state
                    .compare_exchange(state, next, Ordering::AcqRel, Ordering::Acquire)
            {
                return Some(self.won(prev));
            }
        }
    }

    /// Counts the acquisition whose CAS moved the state from `prev`; returns `prev`.
    #[inline]
    fn won(&self, prev: u64) -> u64 {
        self.count_acquired(in_use_of(prev) + 1);
        prev
    }

    fn count_acquired(&self, in_use: u64) {
        // Release: a `stats()` that reads this count also sees the CAS before it.
        let mine = self.acquired.mine();
        bump(mine.owned, mine.c, Ordering::Release);
        let in_use = to_usize(in_use);
        // Only write when the mark moves, so steady traffic below the peak stays read-only here.
        if self.peak.load(Ordering::Relaxed) < in_use {
            self.peak.fetch_max(in_use, Ordering::Relaxed);
        }
    }

    fn release(&self) {
        // A permit exists for every slot counted, so the in-use field is at least 1 here and
        // the subtraction stays inside it.
        let prev = self.state.fetch_sub(1, Ordering::AcqRel);
        if prev & WAITER != 0 {
            self.wake_waiters();
        }
    }

    /// Releases so far, and the state word read after them.
    ///
    /// `acquired` is read before `state`. An acquisition is counted right after its CAS, and
    /// its permit exists only after that, so at the moment `state` is read, `acquired` (as
    /// read) is at most the number of CAS acquisitions and `acquired - in_use` is at most the
    /// number of releases: never over the truth, and exact whenever no acquisition is between
    /// its CAS and its count. The maximum over every snapshot (each also at most the truth of
    /// its time, and releases only grow) makes the figure monotonic.
    fn released(&self) -> (u64, u64, u64) {
        // Each stripe only grows and is read before `state`, so the sum is at most the CAS
        // acquisitions made when `state` is read, as one counter read first would be.
        let acquired = self
            .acquired
            .iter()
            .fold(0u64, |a, c| a.saturating_add(c.load(Ordering::Acquire)));
        let state = self.state.load(Ordering::Acquire);
        let derived = acquired.saturating_sub(in_use_of(state));
        let seen = self.released_seen.fetch_max(derived, Ordering::Relaxed);
        (acquired, derived.max(seen), state)
    }

    /// Clears the waiter flag, then wakes every registered task outside the lock.
    ///
    /// A task registering between the two steps sets the flag again and is woken here anyway;
    /// a spurious wake-up, never a lost one.
    fn wake_waiters(&self) {
        #[cfg(feature = "std")]
        {
            self.state.fetch_and(!WAITER, Ordering::AcqRel);
            let woken = {
                let mut waiters = self.lock_waiters();
                self.waiting.store(0, Ordering::Relaxed);
                waiters.take()
            };
            woken.wake();
        }
    }

    #[cfg(feature = "std")]
    fn lock_waiters(&self) -> MutexGuard<'_, WakerList> {
        // A panic while holding this lock cannot leave the list half-written.
        self.waiters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// With the lock held and `waker` registered: sets the waiter flag if the limit is still
    /// full, so the next release or growth wakes the task; or, when a release or growth since
    /// the caller's check freed a slot (the flag's CAS then fails), takes that slot and forgets
    /// the registration. `true` if a slot was taken.
    #[cfg(feature = "std")]
    #[inline]
    fn take_or_flag(&self, waiters: &mut WakerList, waker: &Waker) -> bool {
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            let next = slots::acquire(state).unwrap_or(state | WAITER);
            match self
                .state
                .compare_exchange(state, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) if has_room(state) => {
                    self.count_acquired(in_use_of(next));
                    self.deregister(waiters, waker);
                    return true;
                }
                Ok(_) => return false,
                Err(actual) => state = actual,
            }
        }
    }

    /// Forgets `waker`'s registration after its task acquired; clears the flag if nobody else
    /// waits. Under the lock, so no registration can slip in between.
    #[cfg(feature = "std")]
    fn deregister(&self, waiters: &mut WakerList, waker: &Waker) {
        waiters.remove(waker);
        if waiters.len() == 0 {
            self.state.fetch_and(!WAITER, Ordering::AcqRel);
        }
        self.waiting.store(waiters.len(), Ordering::Relaxed);
    }
}

/// A thread-safe connection limit handing out RAII [`LimitGuard`]s. Clones share one state.
///
/// Getters: [`in_use`](Self::in_use), [`max`](Self::max), [`available`](Self::available),
/// [`config`](Self::config), [`overflow`](Self::overflow), [`farewell`](Self::farewell),
/// [`stats`](Self::stats). Acquiring: [`try_acquire`](Self::try_acquire),
/// [`poll_acquire`](Self::poll_acquire) (feature `std`). Commands: [`set_max`](Self::set_max),
/// [`on_shed`](Self::on_shed). See the [module docs](self) for the contract.
#[derive(Clone)]
pub struct SharedLimit {
    inner: Arc<Inner>,
}

impl SharedLimit {
    /// A limit with no permits out.
    pub fn new(config: LimitConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Padded(AtomicU64::new(slots::new(config.max()))),
                peak: AtomicUsize::new(0),
                acquired: Striped::new(|| AtomicU64::new(0)),
                released_seen: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
                shed: AtomicU64::new(0),
                waiting: AtomicUsize::new(0),
                config,
                #[cfg(feature = "std")]
                waiters: Mutex::new(WakerList::default()),
            }),
        }
    }

    /// Takes a slot if fewer than `max` are out, as [`Limit::try_acquire`] does: the guard
    /// releases it when dropped. Never waits and never registers a waker. `now` is taken so
    /// every admission reads the same; no rule of the limit reads time.
    ///
    /// # Errors
    ///
    /// [`Rejected<Overflow>`](Rejected) when the limit is full: the `reason` is the configured
    /// [`Overflow`] (stop accepting, or shed and report it with [`on_shed`](Self::on_shed)),
    /// `retry_at` is `None` (only a release frees a slot).
    ///
    /// [`Limit::try_acquire`]: crate::limit::Limit::try_acquire
    pub fn try_acquire(&self, now: Instant) -> Result<LimitGuard, Rejected<Overflow>> {
        let _ = now;
        if self.inner.acquire().is_some() {
            Ok(self.guard())
        } else {
            self.inner.rejected.fetch_add(1, Ordering::Relaxed);
            Err(Rejected {
                reason: self.inner.config.overflow(),
                retry_at: None,
            })
        }
    }

    /// [`try_acquire`](Self::try_acquire) for a permit that lives no longer than this handle:
    /// the [`LimitRef`] borrows the limit instead of holding an `Arc` of it, so taking and
    /// dropping it costs no reference-count updates (two atomic read-modify-writes less).
    /// Counts, wake-ups and rules are the same as `try_acquire`'s.
    ///
    /// # Errors
    ///
    /// As [`try_acquire`](Self::try_acquire): [`Rejected<Overflow>`](Rejected) when full.
    ///
    /// ```
    /// use keel_core::limit::LimitConfig;
    /// use keel_core::sync::limit::SharedLimit;
    /// use keel_core::Instant;
    ///
    /// let limit = SharedLimit::new(LimitConfig::builder().max(1).build()?);
    /// {
    ///     let _slot = limit.try_acquire_ref(Instant::ZERO).expect("free");
    ///     assert!(limit.try_acquire_ref(Instant::ZERO).is_err()); // full while it lives
    /// }
    /// assert_eq!((limit.in_use(), limit.stats().released), (0, 1));
    /// # Ok::<(), keel_core::ConfigError>(())
    /// ```
    #[inline]
    pub fn try_acquire_ref(&self, now: Instant) -> Result<LimitRef<'_>, Rejected<Overflow>> {
        let _ = now;
        if self.inner.acquire().is_some() {
            Ok(LimitRef { inner: &self.inner })
        } else {
            self.inner.rejected.fetch_add(1, Ordering::Relaxed);
            Err(Rejected {
                reason: self.inner.config.overflow(),
                retry_at: None,
            })
        }
    }

    /// Takes a permit, or registers `cx`'s waker and returns `Pending` until a permit is
    /// dropped or the limit grows.
    ///
    /// The waker is stored before the limit is checked again, so a release racing with this
    /// call is never lost. Meant for one waiting task (the acceptor); several tasks may wait,
    /// and each release or growth wakes all of them (they re-poll and the losers register
    /// again), so nobody is stranded, but there is no queue and no fairness among them.
    ///
    /// `stats().rejected` counts one rejection per wait: when this call registers a waker that
    /// was not registered (the first `Pending`, or the first after a wake-up that another task
    /// won), not every `Pending` poll.
    #[cfg(feature = "std")]
    pub fn poll_acquire(&self, cx: &mut Context<'_>) -> Poll<LimitGuard> {
        let inner = &*self.inner;
        if let Some(prev) = inner.acquire() {
            if prev & WAITER != 0 {
                let mut waiters = inner.lock_waiters();
                inner.deregister(&mut waiters, cx.waker());
            }
            return Poll::Ready(self.guard());
        }

        let mut waiters = inner.lock_waiters();
        let new_wait = waiters.register(cx.waker());
        if inner.take_or_flag(&mut waiters, cx.waker()) {
            return Poll::Ready(self.guard());
        }
        inner.waiting.store(waiters.len(), Ordering::Relaxed);
        drop(waiters);
        if new_wait {
            // One rejection per wait, not per poll: a re-poll with the waker still registered
            // is the same wait.
            inner.rejected.fetch_add(1, Ordering::Relaxed);
        }
        Poll::Pending
    }

    fn guard(&self) -> LimitGuard {
        LimitGuard {
            inner: Arc::clone(&self.inner),
        }
    }

    /// Changes the limit (clamped to [`MAX_LIMIT`](crate::limit::MAX_LIMIT)). Shrinking revokes nothing: holders keep
    /// their permits and acquisitions are refused until `in_use < max`. Growing wakes the
    /// waiting task if there is now room.
    pub fn set_max(&self, max: NonZeroUsize) {
        let mut state = self.inner.state.load(Ordering::Acquire);
        loop {
            let next = slots::resize(state, max.get());
            match self.inner.state.compare_exchange(
                state,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    if next & WAITER != 0 && has_room(next) {
                        self.inner.wake_waiters();
                    }
                    return;
                }
                Err(actual) => state = actual,
            }
        }
    }

    /// Counts a connection shed because the limit was full (the driver closed it), as
    /// [`Limit::on_shed`](crate::limit::Limit::on_shed) does.
    pub fn on_shed(&self, now: Instant) {
        let _ = now;
        self.inner.shed.fetch_add(1, Ordering::Relaxed);
    }

    /// Permits out now.
    pub fn in_use(&self) -> usize {
        to_usize(in_use_of(self.inner.state.load(Ordering::Acquire)))
    }

    /// The current limit.
    pub fn max(&self) -> usize {
        to_usize(max_of(self.inner.state.load(Ordering::Acquire)))
    }

    /// Permits that can be taken now (0 when over the limit after a shrink).
    pub fn available(&self) -> usize {
        let state = self.inner.state.load(Ordering::Acquire);
        to_usize(slots::available(state))
    }

    /// What to do when the limit is full.
    pub fn overflow(&self) -> Overflow {
        self.inner.config.overflow()
    }

    /// The bytes to write to a shed connection; empty for none.
    pub fn farewell(&self) -> &'static [u8] {
        self.inner.config.farewell()
    }

    /// The configuration, with the current `max`.
    pub fn config(&self) -> LimitConfig {
        self.inner.config.with_max(self.max())
    }

    /// A snapshot of the counters. Each field is read atomically; the snapshot as a whole is
    /// not one instant, except that `peak >= in_use` always holds in it.
    ///
    /// `released` is derived (`acquired - in_use`, see the module docs): exact whenever no
    /// acquisition is in flight, otherwise at most a few behind, never ahead of the releases
    /// made and never lower than an earlier snapshot's.
    pub fn stats(&self) -> LimitStats {
        let (acquired, released, state) = self.inner.released();
        let in_use = to_usize(in_use_of(state));
        LimitStats {
            max: to_usize(max_of(state)),
            in_use,
            peak: self.inner.peak.load(Ordering::Relaxed).max(in_use),
            acquired,
            released,
            rejected: self.inner.rejected.load(Ordering::Relaxed),
            waiting: self.inner.waiting.load(Ordering::Relaxed),
            shed: self.inner.shed.load(Ordering::Relaxed),
            unmatched_releases: 0,
        }
    }
}

impl fmt::Debug for SharedLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.state.load(Ordering::Acquire);
        f.debug_struct("SharedLimit")
            .field("max", &max_of(state))
            .field("in_use", &in_use_of(state))
            .field("waiting", &self.inner.waiting.load(Ordering::Relaxed))
            .field("overflow", &self.inner.config.overflow())
            .finish_non_exhaustive()
    }
}

/// One slot of a [`SharedLimit`]: the RAII form of [`LimitPermit`](crate::limit::LimitPermit)
/// (as [`BulkheadGuard`](crate::sync::bulkhead::BulkheadGuard) is of the bulkhead's permit).
/// Dropping it releases the slot and wakes the waiting acquirer. `Send + Sync + 'static`: move
/// it into the task serving the connection.
#[must_use = "dropping a guard releases its slot at once"]
pub struct LimitGuard {
    inner: Arc<Inner>,
}

/// The former name of [`LimitGuard`], kept so existing imports compile.
pub type Permit = LimitGuard;

impl Drop for LimitGuard {
    fn drop(&mut self) {
        self.inner.release();
    }
}

impl fmt::Debug for LimitGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.state.load(Ordering::Acquire);
        f.debug_struct("LimitGuard")
            .field("in_use", &in_use_of(state))
            .field("max", &max_of(state))
            .finish()
    }
}

/// One slot of a [`SharedLimit`], borrowed from it (see [`SharedLimit::try_acquire_ref`]):
/// [`LimitGuard`] without the `Arc`, for a permit held within the scope that holds the limit.
/// Dropping it releases the slot and wakes the waiting acquirer.
#[must_use = "dropping a guard releases its slot at once"]
pub struct LimitRef<'a> {
    inner: &'a Inner,
}

impl Drop for LimitRef<'_> {
    #[inline]
    fn drop(&mut self) {
        self.inner.release();
    }
}

impl fmt::Debug for LimitRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.state.load(Ordering::Acquire);
        f.debug_struct("LimitRef")
            .field("in_use", &in_use_of(state))
            .field("max", &max_of(state))
            .finish()
    }
}

// The window between a release's `fetch_sub` (a slot is free, the waiter flag still set) and
// its wake-up, which only threads racing can open: these tests open it by hand (the first
// half of `Inner::release`, then `poll_acquire`) to pin what an acquirer does inside it.
#[cfg(test)]
#[cfg(all(feature = "std", not(keel_loom)))]
mod tests {
    use super::*;
    use std::sync::Arc as StdArc;
    use std::task::Wake;

    #[derive(Default)]
    struct Wakes(core::sync::atomic::AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: StdArc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &StdArc<Self>) {
            self.0.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        }
    }

    fn waker() -> (StdArc<Wakes>, Waker) {
        let w = StdArc::new(Wakes::default());
        (StdArc::clone(&w), Waker::from(w))
    }

    fn wakes(w: &Wakes) -> usize {
        w.0.load(core::sync::atomic::Ordering::Relaxed)
    }

    fn full_limit_of_one() -> SharedLimit {
        let limit = SharedLimit::new(LimitConfig::builder().max(1).build().expect("valid"));
        // The holder's slot, taken without a guard: the test releases it by hand.
        assert!(limit.inner.acquire().is_some());
        limit
    }

    fn poll(limit: &SharedLimit, waker: &Waker) -> Poll<LimitGuard> {
        limit.poll_acquire(&mut Context::from_waker(waker))
    }

    /// The first half of a release: the slot is free, the waiter flag is still set.
    fn free_the_slot_without_waking(limit: &SharedLimit) {
        let prev = limit.inner.state.fetch_sub(1, Ordering::AcqRel);
        assert_ne!(prev & WAITER, 0, "someone waits");
    }

    fn flagged(limit: &SharedLimit) -> bool {
        limit.inner.state.load(Ordering::Acquire) & WAITER != 0
    }

    /// A release between `poll_acquire`'s first check and its locked re-check: the flag is
    /// not set yet, so the release wakes nobody, and the re-check must take the slot.
    #[test]
    fn a_slot_freed_while_the_waiter_registers_is_taken_at_once() {
        let limit = full_limit_of_one();
        let (a_wakes, a) = waker();
        let inner = &*limit.inner;
        let mut waiters = inner.lock_waiters();
        assert!(waiters.register(&a));
        inner.release();
        assert!(inner.take_or_flag(&mut waiters, &a));
        drop(waiters);
        assert_eq!((limit.in_use(), limit.stats().waiting), (1, 0));
        assert_eq!(limit.stats().acquired, 2);
        assert!(!flagged(&limit));
        assert_eq!(wakes(&a_wakes), 0);
    }

    #[test]
    fn a_waiter_taking_a_slot_freed_before_the_wake_up_forgets_its_registration() {
        let limit = full_limit_of_one();
        let (a_wakes, a) = waker();
        assert!(poll(&limit, &a).is_pending());
        assert_eq!(limit.stats().waiting, 1);
        free_the_slot_without_waking(&limit);

        let Poll::Ready(guard) = poll(&limit, &a) else {
            panic!("the free slot is taken");
        };
        // Registration gone, and with nobody left waiting, the flag too; the word's other
        // fields untouched.
        assert_eq!(limit.stats().waiting, 0);
        assert!(!flagged(&limit));
        assert_eq!((limit.in_use(), limit.max()), (1, 1));
        // A later waiter's wake-up does not reach the task that holds its slot.
        let (b_wakes, b) = waker();
        assert!(poll(&limit, &b).is_pending());
        drop(guard);
        assert_eq!((wakes(&a_wakes), wakes(&b_wakes)), (0, 1));
    }

    #[test]
    fn a_waiter_taking_a_slot_freed_before_the_wake_up_keeps_the_flag_for_the_others() {
        let limit = full_limit_of_one();
        let (_, a) = waker();
        let (b_wakes, b) = waker();
        assert!(poll(&limit, &a).is_pending());
        assert!(poll(&limit, &b).is_pending());
        free_the_slot_without_waking(&limit);

        let Poll::Ready(guard) = poll(&limit, &a) else {
            panic!("the free slot is taken");
        };
        // B still waits, so the flag stays set and B's wake-up cannot be lost.
        assert_eq!(limit.stats().waiting, 1);
        assert!(flagged(&limit));
        drop(guard);
        assert_eq!(wakes(&b_wakes), 1);
    }
}
