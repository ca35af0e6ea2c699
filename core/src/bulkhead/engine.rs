//! The bulkhead's engine: the admission, queueing, promotion and expiry rules, written once
//! over a [`WaitQueue`] and shared by the `&mut` [`FifoSemaphore`](super::FifoSemaphore)
//! (a fixed ring) and the shared form in `sync::bulkhead` (a slab with an intrusive list).

use super::{BulkheadConfig, BulkheadStats, RejectReason, WaiterId};
use crate::time::{Instant, Monotonic};

/// The FIFO wait queue the engine drives. Implemented by the fixed ring here and by the
/// shared form's queue (a slab with an intrusive list, which carries a `Waker` per waiter as
/// payload and names its entries by a slot key, so it removes any waiter in O(1)).
pub(crate) trait WaitQueue {
    /// What the storage keeps beside each waiter.
    type Payload;
    /// How the storage names a queued waiter (for [`remove`](Self::remove)).
    type Handle: Copy;
    fn len(&self) -> usize;
    /// The oldest waiter and its deadline.
    fn front(&self) -> Option<(WaiterId, Instant)>;
    /// Appends; the engine only calls it below the bound, so it cannot fail for lack of room
    /// unless the storage is smaller than the bound (then the payload is handed back).
    fn push_back(
        &mut self,
        id: WaiterId,
        deadline: Instant,
        payload: Self::Payload,
    ) -> Result<Self::Handle, Self::Payload>;
    fn pop_front(&mut self) -> Option<(WaiterId, Self::Handle, Self::Payload)>;
    /// Removes a waiter anywhere in the queue.
    fn remove(&mut self, handle: Self::Handle) -> Option<Self::Payload>;
}

/// The bulkhead's logic, shared by [`FifoSemaphore`] and the `sync` form.
#[derive(Clone, Debug)]
pub(crate) struct Engine {
    pub(super) config: BulkheadConfig,
    pub(super) queue_bound: usize,
    pub(super) clock: Monotonic,
    pub(super) next_waiter: u64,
    pub(super) stats: BulkheadStats,
}

impl Engine {
    pub(crate) fn new(config: BulkheadConfig, queue_storage: usize, now: Instant) -> Engine {
        Engine {
            config,
            queue_bound: config.max_queue.min(queue_storage),
            clock: Monotonic::new(now),
            next_waiter: 0,
            stats: BulkheadStats::default(),
        }
    }

    pub(crate) fn config(&self) -> &BulkheadConfig {
        &self.config
    }

    pub(crate) fn queue_bound(&self) -> usize {
        self.queue_bound
    }

    pub(crate) fn stats<Q: WaitQueue>(&self, q: &Q) -> BulkheadStats {
        let mut s = self.stats;
        s.queue_len = q.len();
        s
    }

    pub(crate) fn observe(&mut self, now: Instant) -> Instant {
        self.clock.observe(now)
    }

    /// Expires every waiter whose deadline is at or before `now`.
    pub(crate) fn expire<Q: WaitQueue>(
        &mut self,
        now: Instant,
        q: &mut Q,
        mut on_expired: impl FnMut(WaiterId, Q::Handle, Q::Payload),
    ) {
        // FIFO order is deadline order: deadlines are `arrival + max_wait` with a clamped,
        // never-decreasing arrival time.
        // A deadline that saturated at the end of the clock never comes, and every later one
        // saturated too.
        while let Some((_, deadline)) = q.front() {
            if deadline > now || crate::time::never_at_the_end(deadline).is_none() {
                break;
            }
            match q.pop_front() {
                Some((id, handle, payload)) => {
                    self.stats.shed_timeout = self.stats.shed_timeout.saturating_add(1);
                    on_expired(id, handle, payload);
                }
                None => break,
            }
        }
    }

    fn admit(&mut self) {
        self.stats.in_flight = self.stats.in_flight.saturating_add(1);
        self.stats.admitted = self.stats.admitted.saturating_add(1);
        self.stats.peak = self.stats.peak.max(self.stats.in_flight);
    }

    /// The newest `now` seen (used by the shared form's guards, which drop without a time).
    #[cfg_attr(not(feature = "std"), allow(dead_code))]
    pub(crate) fn newest(&self) -> Instant {
        self.clock.get()
    }

    /// Admit at once or reject with `Full`; never queue, never jump the queue. `now` already
    /// observed and expired waiters already removed.
    pub(crate) fn try_admit<Q: WaitQueue>(&mut self, q: &Q) -> Result<(), RejectReason> {
        if self.stats.in_flight < self.config.max_concurrent && q.len() == 0 {
            self.admit();
            Ok(())
        } else {
            self.stats.shed_full = self.stats.shed_full.saturating_add(1);
            Err(RejectReason::Full)
        }
    }

    /// Admit, queue or reject. `now` already observed and expired waiters already removed.
    pub(crate) fn request<Q: WaitQueue>(
        &mut self,
        now: Instant,
        q: &mut Q,
        payload: Q::Payload,
    ) -> Result<Option<(WaiterId, Q::Handle, Instant)>, RejectReason> {
        if self.stats.in_flight < self.config.max_concurrent && q.len() == 0 {
            self.admit();
            return Ok(None);
        }
        if self.queue_bound == 0 {
            self.stats.shed_full = self.stats.shed_full.saturating_add(1);
            return Err(RejectReason::Full);
        }
        if q.len() >= self.queue_bound {
            self.stats.shed_queue_full = self.stats.shed_queue_full.saturating_add(1);
            return Err(RejectReason::QueueFull);
        }
        let id = WaiterId(self.next_waiter);
        let deadline = now.saturating_add(self.config.max_wait);
        let Ok(handle) = q.push_back(id, deadline, payload) else {
            self.stats.shed_queue_full = self.stats.shed_queue_full.saturating_add(1);
            return Err(RejectReason::QueueFull);
        };
        self.next_waiter = self.next_waiter.saturating_add(1);
        self.stats.queued = self.stats.queued.saturating_add(1);
        self.stats.peak_queue = self.stats.peak_queue.max(q.len());
        Ok(Some((id, handle, deadline)))
    }

    /// Returns a permit; promotes the oldest live waiter if there is one. Expired waiters must
    /// already have been removed.
    pub(crate) fn release<Q: WaitQueue>(
        &mut self,
        q: &mut Q,
    ) -> Option<(WaiterId, Q::Handle, Q::Payload)> {
        self.stats.in_flight = self.stats.in_flight.saturating_sub(1);
        if self.stats.in_flight >= self.config.max_concurrent {
            return None;
        }
        let popped = q.pop_front()?;
        self.admit();
        self.stats.promoted = self.stats.promoted.saturating_add(1);
        Some(popped)
    }

    /// Sets `max_concurrent` (the builder's rule: at least 1) and admits, oldest first, the
    /// waiters that now fit; each goes to `on_promoted`. Shrinking revokes nothing: calls in
    /// flight finish, and nobody is admitted until `in_flight` is below the new bound. Expired
    /// waiters must already have been removed.
    pub(crate) fn resize<Q: WaitQueue>(
        &mut self,
        max_concurrent: core::num::NonZeroUsize,
        q: &mut Q,
        mut on_promoted: impl FnMut(WaiterId, Q::Handle, Q::Payload),
    ) {
        self.config.max_concurrent = max_concurrent.get();
        while self.stats.in_flight < self.config.max_concurrent {
            let Some((id, handle, payload)) = q.pop_front() else {
                break;
            };
            self.admit();
            self.stats.promoted = self.stats.promoted.saturating_add(1);
            on_promoted(id, handle, payload);
        }
    }

    pub(crate) fn cancel<Q: WaitQueue>(
        &mut self,
        q: &mut Q,
        handle: Q::Handle,
    ) -> Option<Q::Payload> {
        let payload = q.remove(handle)?;
        self.stats.cancelled = self.stats.cancelled.saturating_add(1);
        Some(payload)
    }

    pub(crate) fn count_dropped_events(&mut self, n: u64) {
        self.stats.events_dropped = self.stats.events_dropped.saturating_add(n);
    }
}
