//! Fair, O(1) waiting on a shared GCRA limiter (feature `std`): the queue behind
//! [`RateLimiter::until_ready`](crate::driver::rate::RateLimiter::until_ready).
//!
//! # What it protects against
//!
//! Tasks that wait for a rate limiter by sleeping until the `retry_at` a rejection reported
//! all wake at the same instant and race for the token: one wins, every other one checks again
//! and sleeps again (a thundering herd: with 16k waiters, about 3,200 re-checks per
//! admission). With a burst of 1 a waiter woken late by a coarse timer also loses the slot's
//! time, because the GCRA cannot bank it (1,000 waiters at 1,000/s on tokio's 1 ms timer got
//! 466 admissions a second). And nobody is served in order.
//!
//! # The waiting discipline
//!
//! - **FIFO.** Waiters queue in arrival order; a waiter is admitted only in its turn. A batch
//!   ([`RateWaiters::acquire`] with `n > 1`) waits its turn too and is never overtaken by a
//!   smaller request behind it: the price is head-of-line blocking (a large batch at the head
//!   holds up the small ones behind it until its `n` slots come round), the gain is that a
//!   large batch is never starved by a stream of small ones.
//! - **Reservations.** Only the waiters at the head hold a slot: the limiter is advanced for
//!   them in advance ([`SharedRateLimiter::reserve_n`]), which says at what instant the slot
//!   conforms. The head keeps at least two slots reserved, and up to 32 while their
//!   slots are at most 25 ms ahead, so a waiter woken late by a coarse timer (tokio's is 1 ms)
//!   or a busy executor still finds the next slots reserved and no capacity is lost. A
//!   reservation *is* the admission, so waiters and direct
//!   [`try_acquire`](SharedRateLimiter::try_acquire) callers share one GCRA and together never
//!   exceed it. A reserved waiter sleeps on its own timer until its slot (see
//!   [`RateWaiter::slot`]) and is admitted at its next poll at or after it; one woken late
//!   still counts at its slot's instant, so start times can bunch by at most the timer's
//!   lateness (over any window longer than that, the quota holds).
//! - **O(1) per admission, no herd.** An admission removes its waiter and reserves for (and
//!   wakes) only the next waiter that gets a slot. Waiters further back are not woken at all
//!   until they get a slot. Nothing scans: the queue is the core's slab list, each waiter
//!   holds its entry's key.
//! - **Cancellation spends nothing.** Dropping a waiter that holds no slot just unlinks it.
//!   A dropped waiter's slot is handed on: the reserved waiters behind it (same batch size)
//!   each move up to the earlier slot (and are woken to re-arm their timers; at an equal
//!   instant they swap reservations without a wake-up, so the newest is the one freed), and
//!   the last freed slot goes to the next waiter in line, which is woken and takes it on its poll (a
//!   drop has no clock, so the queue reserves nothing fresh during one: the next waiter does,
//!   on its own poll's `now`).
//!   When no waiter is left to take it, it is **given back** to the limiter
//!   ([`SharedRateLimiter::cancel_reservation`]) if nothing was admitted or reserved on top of
//!   it since: the state returns exactly to what it was, and direct `try_acquire` callers can use
//!   the slot too. What is not returned: a slot the limiter has moved on from (a later
//!   admission was decided on top of it and cannot be rewound), or one freed while waiters of
//!   another batch size wait. Such a slot is kept for the next waiter of its size until one
//!   emission interval after its instant, and then lapses, as an unused token does in the
//!   GCRA (at most one reservation per cancelled wait). [`WaitStats`] counts slots handed on,
//!   given back and lapsed.
//! - An uncontended wait with a token available is a plain check: no lock, no allocation. The
//!   queue's lock is taken only when someone waits, and held only for the bookkeeping.
//! - Direct [`try_acquire`](SharedRateLimiter::try_acquire) callers do not queue: they are
//!   limited by the same GCRA (the reservations have already advanced it) but are not ordered with the
//!   waiters.
//! - A batch larger than the burst resolves at once to
//!   [`RateLimited::InsufficientCapacity`] (`retry_at: None`); a waiter
//!   whose batch a quota change made too large fails the same way when its turn comes. Slots
//!   reserved before a quota change keep their instants (they were admissions under the old
//!   quota, carried over like a check's); later ones follow the new quota.
//! - A reserved waiter that is neither polled nor dropped (a leaked future) keeps its slot, which
//!   is spent. It does not stall the queue: the first waiter without a slot is told when the
//!   last slot handed out passes ([`RateWaiter::retry_at`]); if by then the slot holders have
//!   not come back, the bounds on slots ahead lift and it reserves past them. Drop a wait you
//!   no longer poll (dropping is cancelling).
//!
//! ```
//! use core::num::NonZeroU32;
//! use core::task::{Context, Poll, Waker};
//! use keel_core::rate::Quota;
//! use keel_core::sync::gcra::SharedRateLimiter;
//! use keel_core::sync::rate_wait::{Acquire, RateWaiters};
//! use keel_core::Instant;
//! use std::sync::Arc;
//!
//! let quota = Quota::per_second(NonZeroU32::new(10).unwrap())?.with_burst(NonZeroU32::MIN)?;
//! let waiters = RateWaiters::new(Arc::new(SharedRateLimiter::counted(quota, Instant::ZERO)));
//! assert!(matches!(waiters.acquire(Instant::ZERO, 1), Acquire::Ready(Ok(()))));
//! let Acquire::Wait(mut waiter) = waiters.acquire(Instant::ZERO, 1) else { unreachable!() };
//! assert_eq!(waiter.slot(), Some(Instant::from_millis(100))); // sleep until then
//! let mut cx = Context::from_waker(Waker::noop());
//! assert!(waiter.poll(&mut cx, Instant::from_millis(99)).is_pending());
//! assert_eq!(waiter.poll(&mut cx, Instant::from_millis(100)), Poll::Ready(Ok(())));
//! # Ok::<(), keel_core::ConfigError>(())
//! ```

use alloc::sync::Arc as StdArc;
use alloc::vec::Vec;
use core::fmt;
use core::task::{Context, Poll, Waker};
use core::time::Duration;

use super::gcra::{Reservation, SharedRateLimiter};
use super::shim::{Arc, AtomicUsize, Mutex, MutexGuard, Ordering};
use super::waitlist::{Key, WaitList};
use crate::error::Rejected;
use crate::rate::{over_burst, RateLimited};
use crate::time::Instant;

/// Slots the head of the queue always keeps reserved (when that many wait).
const MIN_AHEAD: usize = 2;
/// Most slots reserved at once (bounds the work a cancellation does to move slots down).
const MAX_AHEAD: usize = 32;
/// Beyond [`MIN_AHEAD`], slots are reserved only this far ahead of `now`. The pipeline loses
/// capacity only when a waiter is admitted later than the reserved slots reach (the next slot
/// is then reserved from `now`): 25 ms covers a 1 ms timer wheel's rounding plus an executor
/// thread the OS did not run for a while. Measured with 1,000 waiters at 1,000/s (burst 1) on
/// a 2-core machine at load 6-11: with 2 ms the last waiter was admitted 1.06-1.14 s after the
/// start; with 10 ms the slots given out spanned 1.001-1.037 s on tokio (1.001 s on smol and
/// async-std); with 25 ms, 1.001 s on all three.
const LOOKAHEAD: Duration = Duration::from_millis(25);

/// Counters of a [`RateWaiters`] queue (a snapshot taken under its lock).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WaitStats {
    /// Waiters queued now.
    pub waiting: usize,
    /// Waiters that queued and were admitted.
    pub admitted: u64,
    /// Waiters dropped before they were admitted.
    pub cancelled: u64,
    /// Slots reserved on the limiter for waiters.
    pub reserved: u64,
    /// Slots of dropped waiters that another waiter took.
    pub handed_on: u64,
    /// Slots of dropped waiters that nobody took in time (see the module docs).
    pub lapsed: u64,
    /// Slots of dropped waiters given back to the limiter (nobody else was waiting).
    pub given_back: u64,
    /// Wake-ups the queue issued (to a waiter that got a slot or an earlier one, or failed).
    pub wakes: u64,
}

struct Waiter {
    n: u32,
    slot: Option<Reservation>,
    waker: Option<Waker>,
    /// Set (with the burst) when the waiter was failed and detached.
    failed: Option<u32>,
}

struct Queue {
    list: WaitList<Waiter>,
    /// How many waiters hold a slot: always a prefix of the list.
    reserved: usize,
    /// The first waiter without a slot.
    cursor: Option<Key>,
    /// Freed slots nobody could take yet, at most [`MAX_AHEAD`].
    spare: Vec<(u32, Reservation)>,
    /// The newest `now` seen: an older one is clamped to it.
    newest: Instant,
    /// The latest slot handed out. Once it has passed, the reserved waiters that still hold
    /// slots are late or leaked: the bounds on slots ahead no longer apply.
    last_at: Instant,
    stats: WaitStats,
}

struct Shared {
    /// Always std's `Arc` (the public API's type, also under loom: the limiter's own atomics
    /// come from the shim).
    limiter: StdArc<SharedRateLimiter>,
    /// Waiters in the list; read without the lock by the fast path.
    queued: AtomicUsize,
    queue: Mutex<Queue>,
}

/// The FIFO of tasks waiting on one shared GCRA limiter; see the [module docs](self).
///
/// Clones share one queue (and one limiter).
pub struct RateWaiters {
    shared: Arc<Shared>,
}

impl Clone for RateWaiters {
    fn clone(&self) -> Self {
        RateWaiters {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl fmt::Debug for RateWaiters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateWaiters")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// The answer to [`RateWaiters::acquire`].
#[derive(Debug)]
#[must_use]
pub enum Acquire {
    /// Admitted at once, or a batch that can never be admitted.
    Ready(Result<(), Rejected<RateLimited>>),
    /// Queued: poll the waiter until it resolves, sleeping until its [`slot`](RateWaiter::slot).
    Wait(RateWaiter),
}

/// Wakers to wake once the lock is released: the crate's one waker list.
use super::wakers::WakerList as Wakes;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every step leaves the queue consistent before it can panic (it cannot: no user code runs
    // under the lock); a poisoned lock still holds a usable queue.
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl RateWaiters {
    /// An empty queue in front of `limiter`.
    #[must_use]
    pub fn new(limiter: StdArc<SharedRateLimiter>) -> Self {
        RateWaiters {
            shared: Arc::new(Shared {
                limiter,
                queued: AtomicUsize::new(0),
                queue: Mutex::new(Queue {
                    list: WaitList::with_capacity(0),
                    reserved: 0,
                    cursor: None,
                    spare: Vec::new(),
                    newest: Instant::ZERO,
                    last_at: Instant::ZERO,
                    stats: WaitStats::default(),
                }),
            }),
        }
    }

    /// The limiter the waiters reserve on.
    #[must_use]
    pub fn limiter(&self) -> &StdArc<SharedRateLimiter> {
        &self.shared.limiter
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> WaitStats {
        let q = lock(&self.shared.queue);
        let mut s = q.stats;
        s.waiting = q.list.len();
        s
    }

    /// Admits a batch of `n` at `now` if nobody is waiting and it conforms; otherwise queues
    /// it. `n = 0` is admitted at once; `n` above the burst is
    /// [`RateLimited::InsufficientCapacity`] (`retry_at: None`) at once.
    pub fn acquire(&self, now: Instant, n: u32) -> Acquire {
        if n == 0 {
            return Acquire::Ready(Ok(()));
        }
        let limiter = &self.shared.limiter;
        if self.shared.queued.load(Ordering::Acquire) == 0 {
            match limiter.try_acquire_n(now, n) {
                Ok(()) => return Acquire::Ready(Ok(())),
                Err(rejected) => match rejected.reason {
                    RateLimited::InsufficientCapacity { .. } => {
                        return Acquire::Ready(Err(rejected))
                    }
                    RateLimited::OverRate => {}
                },
            }
        } else {
            let burst = limiter.quota().burst().get();
            if n > burst {
                return Acquire::Ready(Err(over_burst(burst)));
            }
        }
        let mut wakes = Wakes::default();
        let mut q = lock(&self.shared.queue);
        let now = q.observe(now);
        let waiter = Waiter {
            n,
            slot: None,
            waker: None,
            failed: None,
        };
        let key = match q.list.push_back(waiter) {
            Ok(key) => key,
            // Four billion waiters at once, or no memory: the caller's turn never comes.
            Err(_) => {
                drop(q);
                let burst = limiter.quota().burst().get();
                return Acquire::Ready(Err(over_burst(burst)));
            }
        };
        self.shared.queued.fetch_add(1, Ordering::Release);
        if q.cursor.is_none() {
            q.cursor = Some(key);
        }
        q.pump(&self.shared, now, Some(key), &mut wakes);
        let slot = q
            .list
            .get(key)
            .and_then(|(w, _)| w.slot.as_ref().map(Reservation::at));
        drop(q);
        wakes.wake();
        Acquire::Wait(RateWaiter {
            waiters: self.clone(),
            key,
            slot,
            retry_at: None,
            done: None,
        })
    }
}

impl Queue {
    fn observe(&mut self, now: Instant) -> Instant {
        self.newest = self.newest.max(now);
        self.newest
    }

    /// Gives slots to the waiters after the reserved prefix while the prefix is short, and
    /// wakes them (not `me`, the caller's own waiter, which is being polled).
    fn pump(&mut self, shared: &Shared, now: Instant, me: Option<Key>, wakes: &mut Wakes) {
        let limiter = &shared.limiter;
        let t = limiter.quota().emission_interval();
        let before = self.spare.len();
        self.spare.retain(|(_, r)| r.at().saturating_add(t) >= now);
        self.stats.lapsed = self
            .stats
            .lapsed
            .saturating_add((before - self.spare.len()) as u64);
        while let Some(key) = self.cursor {
            // Every slot handed out has passed: whoever still holds one is late or leaked
            // (polled once, then neither polled nor dropped) and must not stall the waiters
            // behind. One slot reserved past them ends it (it is at or after `now`).
            let stalled = self.last_at < now;
            if self.reserved >= MAX_AHEAD && !stalled {
                break;
            }
            let Some((waiter, _)) = self.list.get_mut(key) else {
                debug_assert!(false, "the cursor names a waiter in the list");
                self.cursor = None;
                break;
            };
            let n = waiter.n;
            let spare = self
                .spare
                .iter()
                .enumerate()
                .filter(|(_, s)| s.0 == n)
                .min_by_key(|(_, s)| s.1.at())
                .map(|(i, _)| i);
            let slot = if let Some(i) = spare {
                self.stats.handed_on = self.stats.handed_on.saturating_add(1);
                self.spare.swap_remove(i).1
            } else {
                let latest = if self.reserved < MIN_AHEAD || stalled {
                    Instant::MAX
                } else {
                    now.saturating_add(LOOKAHEAD)
                };
                match limiter.reserve_n(now, n, latest) {
                    Ok(r) => {
                        self.stats.reserved = self.stats.reserved.saturating_add(1);
                        r
                    }
                    Err(Rejected {
                        reason: RateLimited::OverRate,
                        ..
                    }) => break,
                    Err(Rejected {
                        reason: RateLimited::InsufficientCapacity { burst },
                        ..
                    }) => {
                        // A quota change made the batch too large: fail it, in its turn.
                        let next = self.list.next(key);
                        if let Some(waiter) = self.list.detach(key) {
                            shared.queued.fetch_sub(1, Ordering::Release);
                            waiter.failed = Some(burst);
                            if Some(key) != me {
                                if let Some(w) = waiter.waker.take() {
                                    wakes.push(w);
                                    self.stats.wakes = self.stats.wakes.saturating_add(1);
                                }
                            }
                        }
                        self.cursor = next;
                        continue;
                    }
                }
            };
            self.last_at = self.last_at.max(slot.at());
            if let Some((waiter, _)) = self.list.get_mut(key) {
                waiter.slot = Some(slot);
                if Some(key) != me {
                    if let Some(w) = waiter.waker.take() {
                        wakes.push(w);
                        self.stats.wakes = self.stats.wakes.saturating_add(1);
                    }
                }
            }
            self.reserved += 1;
            self.cursor = self.list.next(key);
        }
    }

    /// Removes a queued waiter (admitted or cancelled). The caller pumps (with a fresh `now`)
    /// or wakes the next waiter to.
    fn leave(&mut self, shared: &Shared, key: Key) {
        let next = self.list.next(key);
        if self.cursor == Some(key) {
            self.cursor = next;
        }
        let Some(waiter) = self.list.remove(key) else {
            return;
        };
        shared.queued.fetch_sub(1, Ordering::Release);
        if waiter.slot.is_some() {
            self.reserved = self.reserved.saturating_sub(1);
        }
    }

    /// A cancelled waiter's slot moves down the reserved prefix (each waiter of the same size
    /// behind it takes the earlier slot), and the last one freed becomes a spare for the pump.
    fn hand_on(
        &mut self,
        shared: &Shared,
        from: Option<Key>,
        n: u32,
        slot: Reservation,
        wakes: &mut Wakes,
    ) {
        let mut freed = slot;
        let mut at = from;
        while let Some(key) = at {
            if Some(key) == self.cursor {
                break;
            }
            let Some((waiter, _)) = self.list.get_mut(key) else {
                break;
            };
            let Some(theirs) = waiter.slot.as_mut() else {
                break;
            };
            // At an equal instant too (reservations made by one pump at its `now`): the waiter
            // keeps its instant, and the newest reservation moves to the end of the line, the
            // only one the limiter can take back (`cancel_reservation`). Such a waiter holds no
            // waker (its slot is due at every later poll, which admits it), so no wake-up.
            if waiter.n == n && theirs.at() >= freed.at() {
                core::mem::swap(theirs, &mut freed);
                if let Some(w) = waiter.waker.take() {
                    wakes.push(w);
                    self.stats.wakes = self.stats.wakes.saturating_add(1);
                }
            }
            at = self.list.next(key);
        }
        if self.spare.len() >= MAX_AHEAD {
            // Keep the newest: drop (lapse) the earliest.
            if let Some(i) = self
                .spare
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| s.1.at())
                .map(|(i, _)| i)
            {
                drop(self.spare.swap_remove(i));
                self.stats.lapsed = self.stats.lapsed.saturating_add(1);
            }
        }
        if self.cursor.is_none() {
            // Nobody waits for a slot: give it back to the limiter (for direct checks too),
            // which works while nothing was admitted since; otherwise keep it for the next
            // waiter (it lapses one interval after its instant).
            match shared.limiter.cancel_reservation(freed) {
                Ok(()) => {
                    self.stats.given_back = self.stats.given_back.saturating_add(1);
                    return;
                }
                Err(kept) => freed = kept,
            }
        }
        self.spare.push((n, freed));
    }
}

/// A queued request. Poll it until it resolves; drop it to give up (its slot, if it had one,
/// is handed on: see the [module docs](self)).
#[must_use = "a waiter does nothing unless polled; dropping it cancels the wait"]
pub struct RateWaiter {
    waiters: RateWaiters,
    key: Key,
    slot: Option<Instant>,
    /// When to poll again without a slot (first in line, behind stalled slots).
    retry_at: Option<Instant>,
    /// The result, once resolved (nothing to cancel on drop then).
    done: Option<Result<(), Rejected<RateLimited>>>,
}

impl fmt::Debug for RateWaiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateWaiter")
            .field("slot", &self.slot)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl RateWaiter {
    /// The slot as of the last poll (no lock): what the driver sleeps until.
    #[cfg_attr(not(feature = "futures"), allow(dead_code))]
    pub(crate) const fn polled_slot(&self) -> Option<Instant> {
        self.slot
    }

    /// When a waiter that had no slot at its last poll should poll again anyway: set only for
    /// the first waiter in line without a slot, just after the instant of the last slot handed
    /// out (if the waiters holding slots never come back for them, that poll reserves past
    /// them). `None` otherwise: the queue wakes it. One waiter at a time has it, so it
    /// is no herd.
    #[must_use]
    pub const fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// The instant of the slot reserved for this waiter: sleep until then and poll again.
    /// `None` while it has no slot yet (it is woken when it gets one, or an earlier one), or
    /// after it failed. Once admitted, the slot it was admitted in. Takes the queue's lock
    /// while the waiter is queued.
    #[must_use]
    pub fn slot(&self) -> Option<Instant> {
        if self.done.is_some() {
            return self.slot;
        }
        let q = lock(&self.waiters.shared.queue);
        q.list
            .get(self.key)
            .and_then(|(w, _)| w.slot.as_ref().map(Reservation::at))
    }

    /// Polls for admission at `now`. `Ready(Ok)` once the waiter's slot has come;
    /// `Ready(Err)` if a quota change made its batch larger than the burst; `Pending`
    /// otherwise, with the task's waker stored (the queue wakes it when it gets a slot or an
    /// earlier one; sleeping until [`slot`](Self::slot) is the caller's). After `Ready`, further
    /// polls return `Ready(Ok)` and admit nothing more.
    pub fn poll(
        &mut self,
        cx: &mut Context<'_>,
        now: Instant,
    ) -> Poll<Result<(), Rejected<RateLimited>>> {
        if let Some(done) = self.done {
            return Poll::Ready(done);
        }
        let shared = &*self.waiters.shared;
        let mut wakes = Wakes::default();
        let mut q = lock(&shared.queue);
        let now = q.observe(now);
        let mut pumped = false;
        let polled = loop {
            let (slot, linked, failed) = match q.list.get(self.key) {
                Some((w, linked)) => (w.slot.as_ref().map(Reservation::at), linked, w.failed),
                None => {
                    // Only the owner removes its entry: not reached. Fail safe (admit nothing).
                    debug_assert!(false, "a queued waiter's entry is gone");
                    self.slot = None;
                    break Err(over_burst(shared.limiter.quota().burst().get()));
                }
            };
            if !linked {
                let _ = q.list.remove(self.key);
                self.slot = None;
                break Err(over_burst(failed.unwrap_or(1)));
            }
            match slot {
                Some(at) if at <= now => {
                    self.slot = Some(at);
                    q.leave(shared, self.key);
                    q.pump(shared, now, None, &mut wakes);
                    q.stats.admitted = q.stats.admitted.saturating_add(1);
                    break Ok(());
                }
                // First in line for a slot: reserve on this poll's (fresh) clock. A
                // cancellation hands slots on without a clock and wakes this waiter for it.
                None if !pumped && q.cursor == Some(self.key) => {
                    pumped = true;
                    q.pump(shared, now, Some(self.key), &mut wakes);
                }
                slot => {
                    self.slot = slot;
                    // First in line without a slot: if the waiters ahead never come back for
                    // theirs, poll again once the last slot has passed (then the bounds lift).
                    self.retry_at = match slot {
                        None if q.cursor == Some(self.key) && q.last_at >= now => {
                            Some(q.last_at.saturating_add(Duration::from_nanos(1)))
                        }
                        _ => None,
                    };
                    if let Some((waiter, _)) = q.list.get_mut(self.key) {
                        match &mut waiter.waker {
                            Some(w) => w.clone_from(cx.waker()),
                            none @ None => *none = Some(cx.waker().clone()),
                        }
                    }
                    drop(q);
                    wakes.wake();
                    return Poll::Pending;
                }
            }
        };
        drop(q);
        wakes.wake();
        self.done = Some(polled);
        Poll::Ready(polled)
    }
}

impl Drop for RateWaiter {
    fn drop(&mut self) {
        if self.done.is_some() {
            return;
        }
        let shared = &*self.waiters.shared;
        let mut wakes = Wakes::default();
        {
            let mut q = lock(&shared.queue);
            match q.list.get_mut(self.key) {
                Some((_, true)) => {
                    let next = q.list.next(self.key);
                    let taken = q
                        .list
                        .get_mut(self.key)
                        .and_then(|(w, _)| w.slot.take().map(|s| (w.n, s)));
                    let freed = taken.is_some();
                    if let Some((n, slot)) = taken {
                        q.reserved = q.reserved.saturating_sub(1);
                        q.hand_on(shared, next, n, slot, &mut wakes);
                    }
                    q.leave(shared, self.key);
                    q.stats.cancelled = q.stats.cancelled.saturating_add(1);
                    if freed {
                        // A drop has no clock: the first waiter without a slot takes the spare
                        // (or reserves a fresh slot) on its own poll, with its own `now`.
                        if let Some(cursor) = q.cursor {
                            if let Some(w) =
                                q.list.get_mut(cursor).and_then(|(w, _)| w.waker.take())
                            {
                                wakes.push(w);
                                q.stats.wakes = q.stats.wakes.saturating_add(1);
                            }
                        }
                    }
                }
                Some((_, false)) => {
                    let _ = q.list.remove(self.key);
                }
                None => {}
            }
        }
        wakes.wake();
    }
}
