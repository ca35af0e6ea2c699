//! The shared bulkhead: one [`FifoSemaphore`](crate::bulkhead::FifoSemaphore) engine behind a mutex, for
//! many async tasks (feature `std`).
//!
//! [`SharedBulkhead`] is `Clone` (every clone shares one state) and hands out RAII
//! [`BulkheadGuard`]s (`Send + 'static`) that release their slot on drop and wake the oldest
//! waiting task. Waiting is poll-based and runtime-agnostic:
//!
//! 1. [`SharedBulkhead::acquire`] answers at once ([`Acquire::Ready`]) or returns a
//!    [`BulkheadWaiter`] queued FIFO with an absolute [`deadline`](BulkheadWaiter::deadline).
//! 2. The task polls [`BulkheadWaiter::poll`] with its `Context` and the current time; the
//!    waiter stores the task's `Waker`, and a release wakes it.
//! 3. The caller's timer enforces `max_wait`: race a sleep until `deadline()`; when it fires,
//!    poll again with the new `now` and get [`RejectReason::WaitedTooLong`]. A waiter **never
//!    resolves to a guard at or after its deadline** (a slot granted just before is passed on).
//! 4. Dropping a waiter cancels the wait (or passes on a slot it was granted but never took).
//!
//! The lock is held only for the bookkeeping (no I/O, no user code). Every step is O(1) in
//! the queue length: the queue is a slab threaded by a doubly-linked list, and each waiter
//! holds its entry's key, so a cancelled waiter (dropped anywhere in the queue) is unlinked
//! without a scan, and a poll finds its own entry directly. A guard dropped without a time uses the newest `now` the bulkhead has seen; use
//! [`BulkheadGuard::release`] to pass the time explicitly.
//!
//! ```
//! use core::time::Duration;
//! use keel_core::bulkhead::{BulkheadConfig, RejectReason};
//! use keel_core::sync::bulkhead::{Acquire, SharedBulkhead};
//! use keel_core::Instant;
//!
//! let config = BulkheadConfig::builder()
//!     .max_concurrent(1)
//!     .max_queue(8)
//!     .max_wait(Duration::from_millis(50))
//!     .build()?;
//! let bh = SharedBulkhead::new(config, Instant::ZERO);
//! let guard = bh.try_acquire(Instant::ZERO).expect("a free slot");
//! assert_eq!(bh.try_acquire(Instant::ZERO).unwrap_err().reason, RejectReason::Full);
//!
//! let Acquire::Wait(mut waiter) = bh.acquire(Instant::ZERO) else { unreachable!() };
//! assert_eq!(waiter.deadline(), Some(Instant::from_millis(50)));
//! drop(guard); // wakes the waiter; its next poll returns the guard
//! let waker = std::task::Waker::noop();
//! let mut cx = std::task::Context::from_waker(&waker);
//! assert!(matches!(waiter.poll(&mut cx, Instant::from_millis(1)), std::task::Poll::Ready(Ok(_))));
//! # Ok::<(), keel_core::ConfigError>(())
//! ```

use alloc::vec::Vec;
use core::fmt;
use core::task::{Context, Poll, Waker};

use super::shim::{Arc, Mutex, MutexGuard};
use super::waitlist::{Key, WaitList};
use super::wakers::WakerList;
use crate::bulkhead::{
    BulkheadConfig, BulkheadStats, Criticality, Engine, RejectReason, WaitQueue, WaiterId, Waiting,
};
use crate::time::Instant;

/// Most queue entries preallocated up front; a larger `max_queue` grows on demand.
const PREALLOCATE: usize = 1024;

use crate::bulkhead::rejected;
pub use crate::bulkhead::BulkheadRejected;

/// What became of a waiter the engine took out of the FIFO (it stays in the slab, detached,
/// until its owner polls or drops it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Queued,
    Granted,
    /// Shed while queued: its deadline came, or it was pushed out (priority, CoDel).
    Shed(RejectReason),
}

struct Entry {
    waiting: Waiting,
    waker: Option<Waker>,
    outcome: Outcome,
}

/// A waiter's place: its class's list and its key there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Place {
    class: Criticality,
    key: Key,
}

/// The waiters, one FIFO per class: the core's O(1) wait list, so a cancelled waiter leaves
/// from anywhere in the queue without a scan. A waiter popped (granted or shed) is detached,
/// not freed: its owner learns what became of it at its next poll (or drop) from its own entry.
struct Queue {
    lists: [WaitList<Entry>; 3],
}

impl Queue {
    fn list(&self, class: Criticality) -> Option<&WaitList<Entry>> {
        self.lists.get(class.index())
    }

    fn list_mut(&mut self, class: Criticality) -> Option<&mut WaitList<Entry>> {
        self.lists.get_mut(class.index())
    }

    fn get_mut(&mut self, place: Place) -> Option<&mut Entry> {
        self.list_mut(place.class)?
            .get_mut(place.key)
            .map(|(e, _)| e)
    }

    fn free(&mut self, place: Place) {
        if let Some(list) = self.list_mut(place.class) {
            let _ = list.remove(place.key);
        }
    }

    fn detach(&mut self, class: Criticality, key: Key) -> Option<(Waiting, Place, Option<Waker>)> {
        let entry = self.list_mut(class)?.detach(key)?;
        Some((entry.waiting, Place { class, key }, entry.waker.take()))
    }

    fn set_outcome(&mut self, place: Place, outcome: Outcome) {
        if let Some(entry) = self.get_mut(place) {
            entry.outcome = outcome;
        }
    }
}

impl WaitQueue for Queue {
    type Payload = Option<Waker>;
    type Handle = Place;

    fn len(&self) -> usize {
        self.lists.iter().map(WaitList::len).sum()
    }

    fn class_len(&self, class: Criticality) -> usize {
        self.list(class).map_or(0, WaitList::len)
    }

    fn front(&self, class: Criticality) -> Option<Waiting> {
        self.list(class)?.front().map(|(_, e)| e.waiting)
    }

    fn push_back(
        &mut self,
        class: Criticality,
        waiting: Waiting,
        waker: Option<Waker>,
    ) -> Result<Place, Option<Waker>> {
        let Some(list) = self.list_mut(class) else {
            return Err(waker);
        };
        list.push_back(Entry {
            waiting,
            waker,
            outcome: Outcome::Queued,
        })
        .map(|key| Place { class, key })
        .map_err(|e| e.waker)
    }

    fn pop_front(&mut self, class: Criticality) -> Option<(Waiting, Place, Option<Waker>)> {
        let (key, _) = self.list(class)?.front()?;
        self.detach(class, key)
    }

    fn pop_back(&mut self, class: Criticality) -> Option<(Waiting, Place, Option<Waker>)> {
        let (key, _) = self.list(class)?.back()?;
        self.detach(class, key)
    }

    fn remove(&mut self, place: Place) -> Option<Option<Waker>> {
        self.list_mut(place.class)?
            .remove(place.key)
            .map(|e| e.waker)
    }
}

struct Inner {
    engine: Engine,
    queue: Queue,
}

/// Wakers to wake once the lock is released (a woken task may poll, and lock, at once), in
/// the crate's one waker list. Allocates only when a waiter expired or more than one is woken.
#[derive(Default)]
struct Wakes {
    wakers: WakerList,
    /// Scratch: the entries a sweep (or a push-out) shed, to mark once the engine lets go of
    /// the queue.
    shed: Vec<(Place, RejectReason)>,
}

impl Wakes {
    fn push(&mut self, waker: Option<Waker>) {
        if let Some(w) = waker {
            self.wakers.push(w);
        }
    }

    /// Wakes them all: call after the lock is dropped.
    fn wake(self) {
        self.wakers.wake();
    }
}

impl Inner {
    /// Expires waiters due at `now`; their wakers go to `wakes` (wake them after unlocking).
    fn expire(&mut self, now: Instant, wakes: &mut Wakes) -> Instant {
        let now = self.engine.observe(now);
        let Inner { engine, queue } = self;
        // The closure cannot reach the queue (the engine holds it): collect, then mark.
        engine.expire(now, queue, |_, place, waker, reason| {
            wakes.push(waker);
            wakes.shed.push((place, reason));
        });
        self.mark_shed(wakes);
        now
    }

    fn mark_shed(&mut self, wakes: &mut Wakes) {
        for (place, reason) in wakes.shed.drain(..) {
            self.queue.set_outcome(place, Outcome::Shed(reason));
        }
    }

    /// Releases a slot; the waker of the waiter that got it (and of any shed) go to `wakes`.
    fn release(&mut self, now: Instant, wakes: &mut Wakes) {
        let now = self.expire(now, wakes);
        if let Some((_, place, waker)) = self.engine.release(now, &mut self.queue) {
            self.queue.set_outcome(place, Outcome::Granted);
            wakes.push(waker);
        }
    }
}

/// A bulkhead many tasks share. See the [module docs](self).
#[derive(Clone)]
pub struct SharedBulkhead {
    inner: Arc<Mutex<Inner>>,
}

impl fmt::Debug for SharedBulkhead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBulkhead")
            .field("stats", &self.stats())
            .finish()
    }
}

/// The answer to [`SharedBulkhead::acquire`].
#[derive(Debug)]
#[must_use]
pub enum Acquire {
    /// Admitted or shed at once.
    Ready(Result<BulkheadGuard, BulkheadRejected>),
    /// Queued: poll the waiter until it resolves, racing a timer to its deadline.
    Wait(BulkheadWaiter),
}

impl SharedBulkhead {
    /// A bulkhead with every slot free; its queue holds `config.max_queue()` waiters.
    #[must_use]
    pub fn new(config: BulkheadConfig, now: Instant) -> SharedBulkhead {
        let prealloc = config.max_queue().min(PREALLOCATE);
        let inner = Inner {
            engine: Engine::new(config, usize::MAX, now),
            queue: Queue {
                lists: [
                    WaitList::with_capacity(0),
                    WaitList::with_capacity(prealloc),
                    WaitList::with_capacity(0),
                ],
            },
        };
        SharedBulkhead {
            inner: Arc::new(Mutex::new(inner)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> BulkheadConfig {
        *self.lock().engine.config()
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> BulkheadStats {
        let inner = self.lock();
        inner.engine.stats(&inner.queue)
    }

    /// Takes a slot now or fails with [`RejectReason::Full`]; never waits and never jumps
    /// ahead of queued waiters. Like every input, it first expires (and wakes) the waiters
    /// whose deadline is at or before `now`, as
    /// [`FifoSemaphore::try_acquire`](crate::bulkhead::FifoSemaphore::try_acquire) does.
    ///
    /// # Errors
    ///
    /// [`RejectReason::Full`] when every slot is taken or tasks are already waiting.
    pub fn try_acquire(&self, now: Instant) -> Result<BulkheadGuard, BulkheadRejected> {
        self.try_acquire_with(now, Criticality::Default)
    }

    /// [`try_acquire`](Self::try_acquire) for a call of `class` (see
    /// [`FifoSemaphore::try_acquire_with`](crate::bulkhead::FifoSemaphore::try_acquire_with)).
    ///
    /// # Errors
    ///
    /// [`RejectReason::Full`] when every slot is taken or a call at least as important is
    /// waiting; [`RejectReason::Priority`] when the slots left are reserved for more important
    /// work.
    pub fn try_acquire_with(
        &self,
        now: Instant,
        class: Criticality,
    ) -> Result<BulkheadGuard, BulkheadRejected> {
        let mut wakes = Wakes::default();
        let mut inner = self.lock();
        let _ = inner.expire(now, &mut wakes);
        let Inner { engine, queue, .. } = &mut *inner;
        let admitted = match engine.try_admit(queue, class) {
            Ok(()) => Ok(self.guard()),
            Err(reason) => Err(rejected(reason)),
        };
        drop(inner);
        wakes.wake();
        admitted
    }

    /// Takes a slot now, queues for one, or sheds the call (see
    /// [`FifoSemaphore::acquire`](crate::bulkhead::FifoSemaphore::acquire)).
    pub fn acquire(&self, now: Instant) -> Acquire {
        self.acquire_with(now, Criticality::Default)
    }

    /// [`acquire`](Self::acquire) for a call of `class` (see
    /// [`FifoSemaphore::acquire_with`](crate::bulkhead::FifoSemaphore::acquire_with)): a
    /// less important waiter it pushes out of a full queue resolves to
    /// [`RejectReason::Priority`].
    pub fn acquire_with(&self, now: Instant, class: Criticality) -> Acquire {
        let mut wakes = Wakes::default();
        let mut inner = self.lock();
        let now = inner.expire(now, &mut wakes);
        let Inner { engine, queue, .. } = &mut *inner;
        let decision = engine.request(now, queue, class, None, |_, place, waker, reason| {
            wakes.push(waker);
            wakes.shed.push((place, reason));
        });
        inner.mark_shed(&mut wakes);
        let acquire = match decision {
            Ok(None) => Acquire::Ready(Ok(self.guard())),
            Ok(Some((id, place, deadline))) => Acquire::Wait(BulkheadWaiter {
                bulkhead: self.clone(),
                id,
                place,
                deadline,
                done: false,
            }),
            Err(reason) => Acquire::Ready(Err(rejected(reason))),
        };
        drop(inner);
        wakes.wake();
        acquire
    }

    /// Expires waiters whose deadline is at or before `now` and wakes them. Optional: waiters
    /// expire themselves when polled after their deadline.
    pub fn handle_timeout(&self, now: Instant) {
        let mut wakes = Wakes::default();
        let _ = self.lock().expire(now, &mut wakes);
        wakes.wake();
    }

    /// Changes `max_concurrent` at run time (the resizing hook an
    /// [`AdaptiveLimit`](crate::sync::adaptive::SharedAdaptive) drives). Growing admits the
    /// oldest waiters that now fit and wakes them; shrinking revokes nothing (calls in flight
    /// finish, and new ones queue until `in_flight` is below the new bound).
    pub fn set_max_concurrent(&self, max_concurrent: core::num::NonZeroUsize) {
        let mut wakes = Wakes::default();
        {
            let mut inner = self.lock();
            let now = inner.engine.newest();
            let _ = inner.expire(now, &mut wakes);
            let Inner { engine, queue } = &mut *inner;
            let mut granted = Vec::new();
            engine.resize(now, max_concurrent, queue, |_, key, waker| {
                wakes.push(waker);
                granted.push(key);
            });
            for key in granted {
                queue.set_outcome(key, Outcome::Granted);
            }
        }
        wakes.wake();
    }

    /// The uncontended admission, which needs no time: with nobody queued there is no waiter
    /// to expire and no deadline to set, so when `class` may take a slot this is exactly
    /// [`acquire_with`](Self::acquire_with) at the newest time the bulkhead has seen (an
    /// input at that time moves no clock). `true`: admitted, and the caller owes a release
    /// ([`release_idle`](Self::release_idle) or [`release_slot`](Self::release_slot)).
    /// `false`: nothing changed (no shed counted); make the full request with the time.
    #[cfg_attr(not(feature = "futures"), allow(dead_code))]
    pub(crate) fn admit_idle(&self, class: Criticality) -> bool {
        let mut inner = self.lock();
        let Inner { engine, queue } = &mut *inner;
        queue.len() == 0 && engine.admit_if_free(queue, class)
    }

    /// The uncontended release, which needs no time: with nobody queued a release expires
    /// nobody and promotes nobody, so this is exactly a release at the newest time the
    /// bulkhead has seen (as a dropped guard's). `true`: released. `false`: nothing changed
    /// (someone is queued); release with the time ([`release_slot`](Self::release_slot)).
    #[cfg_attr(not(feature = "futures"), allow(dead_code))]
    pub(crate) fn release_idle(&self) -> bool {
        let mut inner = self.lock();
        let Inner { engine, queue } = &mut *inner;
        if queue.len() != 0 {
            return false;
        }
        // `Inner::release` at the newest time, without its sweep: with nobody queued the
        // sweep expires nobody (and observing the newest time again moves no clock), and the
        // engine promotes nobody (so there is nobody to wake).
        let now = engine.newest();
        let promoted = engine.release(now, queue);
        debug_assert!(promoted.is_none(), "nobody queued, nobody promoted");
        true
    }

    /// Releases a slot taken by [`admit_idle`](Self::admit_idle) (or a guard
    /// [`disarm`](BulkheadGuard::disarm)ed), at `now` (`None`: the newest time seen), as a
    /// guard's release does.
    #[cfg_attr(not(feature = "futures"), allow(dead_code))]
    pub(crate) fn release_slot(&self, now: Option<Instant>) {
        Self::release(&self.inner, now);
    }

    fn guard(&self) -> BulkheadGuard {
        BulkheadGuard {
            inner: Some(Arc::clone(&self.inner)),
        }
    }

    fn release(inner: &Arc<Mutex<Inner>>, now: Option<Instant>) {
        let mut wakes = Wakes::default();
        {
            let mut inner = lock(inner);
            let now = now.unwrap_or_else(|| inner.engine.newest());
            inner.release(now, &mut wakes);
        }
        wakes.wake();
    }
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    // A panic while holding the lock cannot leave the counters half-updated in a way that
    // matters more than refusing service: keep going with the inner state.
    match inner.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// A slot in a [`SharedBulkhead`]; released on drop (waking the oldest waiter).
#[must_use = "the slot is released when the guard is dropped"]
pub struct BulkheadGuard {
    inner: Option<Arc<Mutex<Inner>>>,
}

impl fmt::Debug for BulkheadGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadGuard").finish_non_exhaustive()
    }
}

impl BulkheadGuard {
    /// Releases the slot at `now` (dropping the guard releases it at the newest time the
    /// bulkhead has seen).
    pub fn release(mut self, now: Instant) {
        if let Some(inner) = self.inner.take() {
            SharedBulkhead::release(&inner, Some(now));
        }
    }
}

impl BulkheadGuard {
    /// Gives up the guard without releasing its slot: the caller now owes the release
    /// ([`SharedBulkhead::release_slot`] or [`SharedBulkhead::release_idle`] on the same
    /// bulkhead). The driver's `run` holds one borrowed slot type for both of its paths.
    #[cfg_attr(not(feature = "futures"), allow(dead_code))]
    pub(crate) fn disarm(mut self) {
        self.inner = None;
    }
}

impl Drop for BulkheadGuard {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            SharedBulkhead::release(&inner, None);
        }
    }
}

/// A queued call. Poll it until it resolves; drop it to give up.
#[must_use = "a waiter does nothing unless polled; dropping it cancels the wait"]
pub struct BulkheadWaiter {
    bulkhead: SharedBulkhead,
    id: WaiterId,
    /// Its entry in its class's slab.
    place: Place,
    deadline: Instant,
    done: bool,
}

impl fmt::Debug for BulkheadWaiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadWaiter")
            .field("id", &self.id)
            .field("deadline", &self.deadline)
            .field("done", &self.done)
            .finish()
    }
}

impl BulkheadWaiter {
    /// The waiter's id.
    #[must_use]
    pub const fn id(&self) -> WaiterId {
        self.id
    }

    /// When the wait ends in [`RejectReason::WaitedTooLong`]: arm a timer for it and poll
    /// again when it fires. `None` when the wait never ends (a `max_wait` that reaches past
    /// the end of the clock, such as `Duration::MAX`): arm no timer.
    #[must_use]
    pub fn deadline(&self) -> Option<Instant> {
        crate::time::never_at_the_end(self.deadline)
    }

    /// Polls for the slot. `Ready(Ok)` hands over the guard; `Ready(Err)` carries
    /// [`RejectReason::WaitedTooLong`] once `now` reaches the deadline, or
    /// [`RejectReason::Priority`] / [`RejectReason::QueueDelay`] when the waiter was pushed out
    /// by a more important call or shed by adaptive LIFO + CoDel (its waker is woken then); `Pending` stores the
    /// task's waker (a release wakes it). After `Ready`, further polls return
    /// `Ready(Err(WaitedTooLong))`.
    pub fn poll(
        &mut self,
        cx: &mut Context<'_>,
        now: Instant,
    ) -> Poll<Result<BulkheadGuard, BulkheadRejected>> {
        let timed_out = Poll::Ready(Err(rejected(RejectReason::WaitedTooLong)));
        if self.done {
            return timed_out;
        }
        let mut wakes = Wakes::default();
        let mut inner = self.bulkhead.lock();
        let now = inner.expire(now, &mut wakes);
        let outcome = match inner.queue.get_mut(self.place) {
            Some(entry) => {
                if entry.outcome == Outcome::Queued {
                    match &mut entry.waker {
                        Some(w) => w.clone_from(cx.waker()),
                        slot @ None => *slot = Some(cx.waker().clone()),
                    }
                }
                entry.outcome
            }
            // Only the owner frees its entry; not reached.
            None => Outcome::Shed(RejectReason::WaitedTooLong),
        };
        let polled = match outcome {
            Outcome::Queued => Poll::Pending,
            Outcome::Shed(reason) => {
                self.done = true;
                inner.queue.free(self.place);
                Poll::Ready(Err(rejected(reason)))
            }
            Outcome::Granted => {
                self.done = true;
                inner.queue.free(self.place);
                if self.deadline().is_some_and(|d| now >= d) {
                    // Granted, but collected too late: pass the slot on.
                    inner.release(now, &mut wakes);
                    timed_out
                } else {
                    Poll::Ready(Ok(self.bulkhead.guard()))
                }
            }
        };
        drop(inner);
        wakes.wake();
        polled
    }
}

impl BulkheadWaiter {
    /// Gives up the wait at `now`, as [`FifoSemaphore::on_cancel`] does: a waiter whose
    /// deadline has passed at `now` is counted as timed out (`shed_timeout`, expired first),
    /// one still in time as `cancelled`; a slot granted to it meanwhile is passed on.
    /// Dropping the waiter does the same at the newest time the bulkhead has seen (it reads no
    /// clock), which counts a waiter dropped after its deadline as `cancelled` unless some
    /// input reached the deadline first: call this when the time is at hand.
    ///
    /// [`FifoSemaphore::on_cancel`]: crate::bulkhead::FifoSemaphore::on_cancel
    pub fn cancel(mut self, now: Instant) {
        self.give_up(Some(now));
    }

    fn give_up(&mut self, now: Option<Instant>) {
        if self.done {
            return;
        }
        self.done = true;
        let mut wakes = Wakes::default();
        {
            let mut inner = self.bulkhead.lock();
            if let Some(now) = now {
                // A waiter due at `now` is shed as `WaitedTooLong` here, as the `&mut` form's
                // `on_cancel` expires before it cancels.
                let _ = inner.expire(now, &mut wakes);
            }
            match inner.queue.get_mut(self.place).map(|e| e.outcome) {
                Some(Outcome::Queued) => {
                    let Inner { engine, queue } = &mut *inner;
                    let _ = engine.cancel(queue, self.place);
                }
                Some(Outcome::Granted) => {
                    inner.queue.free(self.place);
                    let now = inner.engine.newest();
                    inner.release(now, &mut wakes);
                }
                Some(Outcome::Shed(_)) => {
                    inner.queue.free(self.place);
                }
                None => {}
            }
        }
        wakes.wake();
    }
}

impl Drop for BulkheadWaiter {
    fn drop(&mut self) {
        self.give_up(None);
    }
}

#[cfg(test)]
#[cfg(not(keel_loom))]
mod tests {
    //! The driver's uncontended path (`admit_idle`, `release_idle`, `release_slot`) against
    //! the timed inputs it stands in for: the same decisions and the same counters, step by
    //! step, for random schedules on a clock that never goes back (a runtime's).

    use super::*;
    use crate::bulkhead::QueueDiscipline;
    use core::time::Duration;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Acquire(u8),
        Release(usize),
        DropGuard(usize),
        Poll(usize),
        Cancel(usize),
        DropWaiter(usize),
        Timeout,
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..3).prop_map(Op::Acquire),
            3 => any::<usize>().prop_map(Op::Release),
            1 => any::<usize>().prop_map(Op::DropGuard),
            2 => any::<usize>().prop_map(Op::Poll),
            1 => any::<usize>().prop_map(Op::Cancel),
            1 => any::<usize>().prop_map(Op::DropWaiter),
            1 => Just(Op::Timeout),
            3 => (0u64..30).prop_map(Op::Advance),
        ]
    }

    fn class(i: u8) -> Criticality {
        match i {
            0 => Criticality::Critical,
            1 => Criticality::Default,
            _ => Criticality::Sheddable,
        }
    }

    /// What a step answered, comparable across the two forms.
    fn answer(p: &Poll<Result<BulkheadGuard, BulkheadRejected>>) -> Option<Option<RejectReason>> {
        match p {
            Poll::Pending => None,
            Poll::Ready(Ok(_)) => Some(None),
            Poll::Ready(Err(e)) => Some(Some(e.reason)),
        }
    }

    fn take<T>(v: &mut Vec<T>, i: usize) -> Option<T> {
        if v.is_empty() {
            None
        } else {
            let n = v.len();
            Some(v.remove(i % n))
        }
    }

    proptest! {
        #[test]
        fn the_untimed_uncontended_path_agrees_with_the_timed_one(
            max_concurrent in 1usize..4,
            max_queue in 0usize..4,
            max_wait_ms in 1u64..40,
            reserved in 0u8..60,
            headroom in 0u8..60,
            lifo in any::<bool>(),
            ops in proptest::collection::vec(op(), 1..80),
        ) {
            let discipline = if lifo && max_queue > 0 {
                QueueDiscipline::AdaptiveLifo {
                    target: Duration::from_millis(5),
                    interval: Duration::from_millis(10),
                }
            } else {
                QueueDiscipline::Fifo
            };
            let config = BulkheadConfig::builder()
                .max_concurrent(max_concurrent)
                .max_queue(max_queue)
                .max_wait(Duration::from_millis(max_wait_ms))
                .reserved_critical_percent(reserved)
                .sheddable_headroom_percent(headroom)
                .queue_discipline(discipline)
                .build()
                .expect("valid config");
            let start = Instant::from_millis(3);
            // `timed`: every input with the time. `untimed`: the driver's `run` (no time while
            // nobody is queued; borrowed slots, released through the bulkhead).
            let timed = SharedBulkhead::new(config, start);
            let untimed = SharedBulkhead::new(config, start);
            let mut now = start;
            let mut guards: Vec<BulkheadGuard> = Vec::new();
            let mut slots = 0usize;
            let mut waiters: Vec<(BulkheadWaiter, BulkheadWaiter)> = Vec::new();
            let waker = Waker::noop();
            let mut cx = Context::from_waker(waker);
            for op in ops {
                match op {
                    Op::Acquire(c) => {
                        let c = class(c);
                        let a = timed.acquire_with(now, c);
                        let b = if untimed.admit_idle(c) {
                            None
                        } else {
                            Some(untimed.acquire_with(now, c))
                        };
                        match (a, b) {
                            (Acquire::Ready(Ok(g)), None) => {
                                guards.push(g);
                                slots += 1;
                            }
                            (Acquire::Ready(Ok(g)), Some(Acquire::Ready(Ok(h)))) => {
                                guards.push(g);
                                h.disarm();
                                slots += 1;
                            }
                            (Acquire::Ready(Err(e)), Some(Acquire::Ready(Err(f)))) => {
                                prop_assert_eq!(e.reason, f.reason);
                            }
                            (Acquire::Wait(w), Some(Acquire::Wait(v))) => {
                                prop_assert_eq!(w.deadline(), v.deadline());
                                waiters.push((w, v));
                            }
                            (a, b) => prop_assert!(false, "{a:?} vs {b:?}"),
                        }
                    }
                    Op::Release(i) => {
                        if let Some(g) = take(&mut guards, i) {
                            g.release(now);
                            slots -= 1;
                            if !untimed.release_idle() {
                                untimed.release_slot(Some(now));
                            }
                        }
                    }
                    Op::DropGuard(i) => {
                        if let Some(g) = take(&mut guards, i) {
                            drop(g);
                            slots -= 1;
                            untimed.release_slot(None);
                        }
                    }
                    Op::Poll(i) => {
                        if !waiters.is_empty() {
                            let n = waiters.len();
                            let (w, v) = &mut waiters[i % n];
                            let a = w.poll(&mut cx, now);
                            let b = v.poll(&mut cx, now);
                            prop_assert_eq!(answer(&a), answer(&b));
                            let resolved = answer(&a).is_some();
                            if let (Poll::Ready(Ok(g)), Poll::Ready(Ok(h))) = (a, b) {
                                guards.push(g);
                                h.disarm();
                                slots += 1;
                            }
                            if resolved {
                                // Polling again would only repeat the answer.
                                let _ = waiters.remove(i % n);
                            }
                        }
                    }
                    Op::Cancel(i) => {
                        if let Some((w, v)) = take(&mut waiters, i) {
                            w.cancel(now);
                            v.cancel(now);
                        }
                    }
                    Op::DropWaiter(i) => {
                        if let Some((w, v)) = take(&mut waiters, i) {
                            drop((w, v));
                        }
                    }
                    Op::Timeout => {
                        timed.handle_timeout(now);
                        untimed.handle_timeout(now);
                    }
                    Op::Advance(ms) => now = now.saturating_add(Duration::from_millis(ms)),
                }
                prop_assert_eq!(timed.stats(), untimed.stats());
                // A waiter granted a slot holds it before it collects it.
                prop_assert!(timed.stats().in_flight >= slots);
            }
            // Everything back: both end with every slot free and the same counters.
            for g in guards.drain(..) {
                g.release(now);
                if !untimed.release_idle() {
                    untimed.release_slot(Some(now));
                }
            }
            drop(waiters);
            prop_assert_eq!(timed.stats(), untimed.stats());
            prop_assert_eq!(timed.stats().in_flight, 0);
        }
    }
}

#[cfg(test)]
#[cfg(not(keel_loom))]
mod entries {
    //! A waiter's entry stays in its class's slab (detached) until its owner learns the
    //! outcome, and is freed then: nothing holds a slot of the slab after every waiter resolved.

    use super::*;
    use alloc::format;
    use core::task::Waker;
    use core::time::Duration;

    fn live(bh: &SharedBulkhead, w: &BulkheadWaiter) -> bool {
        let inner = bh.lock();
        inner
            .queue
            .list(w.place.class)
            .and_then(|l| l.get(w.place.key))
            .is_some()
    }

    fn wait(a: Acquire) -> BulkheadWaiter {
        match a {
            Acquire::Wait(w) => w,
            Acquire::Ready(r) => panic!("expected to wait, got {r:?}"),
        }
    }

    #[test]
    fn an_entry_is_freed_when_its_owner_learns_the_outcome() {
        let config = BulkheadConfig::builder()
            .max_concurrent(1)
            .max_queue(4)
            .max_wait(Duration::from_millis(100))
            .build()
            .expect("valid");
        let t0 = Instant::ZERO;
        let bh = SharedBulkhead::new(config, t0);
        let guard = bh.try_acquire(t0).expect("a free slot");
        assert_eq!(format!("{guard:?}"), "BulkheadGuard { .. }");
        assert_eq!(
            format!("{bh:?}"),
            format!("SharedBulkhead {{ stats: {:?} }}", bh.stats())
        );
        let mut cx = Context::from_waker(Waker::noop());
        // Granted: detached when the slot is handed over, freed at the owner's poll.
        let mut granted = wait(bh.acquire(t0));
        assert_eq!(
            format!("{granted:?}"),
            format!(
                "BulkheadWaiter {{ id: {:?}, deadline: {:?}, done: false }}",
                granted.id(),
                Instant::from_millis(100)
            )
        );
        let mut shed = wait(bh.acquire(t0));
        guard.release(Instant::from_millis(1));
        assert!(live(&bh, &granted), "kept until its owner polls");
        let Poll::Ready(Ok(guard)) = granted.poll(&mut cx, Instant::from_millis(1)) else {
            panic!("granted");
        };
        assert!(!live(&bh, &granted), "freed once polled");
        // Shed at its deadline: detached by the sweep, freed at the owner's poll.
        bh.handle_timeout(Instant::from_millis(100));
        assert!(live(&bh, &shed));
        assert!(matches!(
            shed.poll(&mut cx, Instant::from_millis(100)),
            Poll::Ready(Err(_))
        ));
        assert!(!live(&bh, &shed));
        // Granted, then dropped without a poll: freed by the drop (the slot passes on).
        let dropped = wait(bh.acquire(Instant::from_millis(100)));
        let place = dropped.place;
        drop(guard);
        assert!(live(&bh, &dropped));
        drop(dropped);
        assert!(bh
            .lock()
            .queue
            .list(place.class)
            .and_then(|l| l.get(place.key))
            .is_none());
        assert_eq!(bh.stats().in_flight, 0);
    }
}
