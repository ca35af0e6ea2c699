//! The bulkhead's engine: the admission, queueing, promotion and expiry rules, written once
//! over a [`WaitQueue`] and shared by the `&mut` [`FifoSemaphore`](super::FifoSemaphore)
//! (fixed rings) and the shared form in `sync::bulkhead` (slabs with an intrusive list).
//!
//! The queue is one FIFO per [`Criticality`]; the bound (`max_queue`) is on their total.

use super::codel::CoDel;
use super::{BulkheadConfig, BulkheadStats, ClassStats, Criticality, RejectReason, WaiterId};
use crate::time::{Instant, Monotonic};

/// A queued waiter as the engine sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Waiting {
    pub(crate) id: WaiterId,
    /// When it is shed with `WaitedTooLong` (`Instant::MAX`: never).
    pub(crate) deadline: Instant,
    /// When it queued (its sojourn is measured from here).
    pub(crate) enqueued: Instant,
}

/// The per-class FIFO wait queues the engine drives. Implemented by the fixed rings here and
/// by the shared form's queues (slabs with an intrusive list, which carry a `Waker` per
/// waiter as payload and name their entries by a slot key, so they remove any waiter in O(1)).
pub(crate) trait WaitQueue {
    /// What the storage keeps beside each waiter.
    type Payload;
    /// How the storage names a queued waiter (for [`remove`](Self::remove)).
    type Handle: Copy;
    /// Waiters of every class.
    fn len(&self) -> usize;
    /// Waiters of `class`.
    fn class_len(&self, class: Criticality) -> usize;
    /// The oldest waiter of `class`.
    fn front(&self, class: Criticality) -> Option<Waiting>;
    /// Appends; the engine only calls it below the bound, so it cannot fail for lack of room
    /// unless the storage is smaller than the bound (then the payload is handed back).
    fn push_back(
        &mut self,
        class: Criticality,
        waiting: Waiting,
        payload: Self::Payload,
    ) -> Result<Self::Handle, Self::Payload>;
    /// Takes the oldest waiter of `class`.
    fn pop_front(&mut self, class: Criticality) -> Option<(Waiting, Self::Handle, Self::Payload)>;
    /// Takes the newest waiter of `class`.
    fn pop_back(&mut self, class: Criticality) -> Option<(Waiting, Self::Handle, Self::Payload)>;
    /// Removes a waiter anywhere in the queues.
    fn remove(&mut self, handle: Self::Handle) -> Option<Self::Payload>;
}

/// The bulkhead's logic, shared by [`FifoSemaphore`](super::FifoSemaphore) and the `sync` form.
#[derive(Clone, Debug)]
pub(crate) struct Engine {
    pub(super) config: BulkheadConfig,
    pub(super) queue_bound: usize,
    pub(super) clock: Monotonic,
    pub(super) next_waiter: u64,
    pub(super) stats: BulkheadStats,
    pub(super) codel: CoDel,
}

/// `n * percent / 100`, rounded down, without overflow.
fn percent_of(n: usize, percent: u8) -> usize {
    let v = (n as u128).saturating_mul(u128::from(percent)) / 100;
    usize::try_from(v).unwrap_or(usize::MAX)
}

impl Engine {
    pub(crate) fn new(config: BulkheadConfig, queue_storage: usize, now: Instant) -> Engine {
        Engine {
            config,
            queue_bound: config.max_queue.min(queue_storage),
            clock: Monotonic::new(now),
            next_waiter: 0,
            stats: BulkheadStats::default(),
            codel: CoDel::new(config.queue_discipline),
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

    /// The most calls of `class` running at once: every slot for critical work, all but the
    /// reserved share for default work, the sheddable watermark for sheddable work (never
    /// below one slot, never above default's).
    pub(crate) fn cap(&self, class: Criticality) -> usize {
        let n = self.config.max_concurrent;
        // `reserved_critical_percent < 100` (validated), so this leaves at least one slot.
        let default = n
            .saturating_sub(percent_of(n, self.config.reserved_critical_percent))
            .max(1);
        match class {
            Criticality::Critical => n,
            Criticality::Default => default,
            Criticality::Sheddable => {
                let keep = 100u8.saturating_sub(self.config.sheddable_headroom_percent);
                percent_of(n, keep).clamp(1, default)
            }
        }
    }

    fn class_stats(&mut self, class: Criticality) -> &mut ClassStats {
        match class {
            Criticality::Critical => &mut self.stats.critical,
            Criticality::Default => &mut self.stats.default,
            Criticality::Sheddable => &mut self.stats.sheddable,
        }
    }

    fn count_shed(&mut self, class: Criticality, reason: RejectReason) {
        let s = &mut self.stats;
        let counter = match reason {
            RejectReason::Full => &mut s.shed_full,
            RejectReason::QueueFull => &mut s.shed_queue_full,
            RejectReason::WaitedTooLong => &mut s.shed_timeout,
            RejectReason::Priority { .. } => &mut s.shed_priority,
            RejectReason::QueueDelay { .. } => &mut s.shed_queue_delay,
            RejectReason::AlreadyCompleted => return,
        };
        *counter = counter.saturating_add(1);
        let c = self.class_stats(class);
        c.shed = c.shed.saturating_add(1);
    }

    /// Sheds every waiter whose deadline is at or before `now`, then (adaptive LIFO, queue
    /// standing) every non-critical waiter that has queued for `target`.
    pub(crate) fn expire<Q: WaitQueue>(
        &mut self,
        now: Instant,
        q: &mut Q,
        mut on_shed: impl FnMut(WaiterId, Q::Handle, Q::Payload, RejectReason),
    ) {
        for class in Criticality::BY_IMPORTANCE {
            // Per class, FIFO order is deadline order: deadlines are `arrival + max_wait` with
            // a clamped, never-decreasing arrival time. A deadline that saturated at the end
            // of the clock never comes, and every later one saturated too.
            while let Some(w) = q.front(class) {
                if w.deadline > now || crate::time::never_at_the_end(w.deadline).is_none() {
                    break;
                }
                let Some((w, handle, payload)) = q.pop_front(class) else {
                    break;
                };
                self.count_shed(class, RejectReason::WaitedTooLong);
                on_shed(w.id, handle, payload, RejectReason::WaitedTooLong);
            }
        }
        if let Some(target) = self.codel.target() {
            if self.codel.standing(now) {
                for class in [Criticality::Default, Criticality::Sheddable] {
                    while let Some(w) = q.front(class) {
                        // A shed instant saturated at the end of the clock never comes.
                        let due = w.enqueued.saturating_add(target);
                        if due > now || crate::time::never_at_the_end(due).is_none() {
                            break;
                        }
                        let Some((w, handle, payload)) = q.pop_front(class) else {
                            break;
                        };
                        let reason = RejectReason::QueueDelay { class };
                        self.count_shed(class, reason);
                        on_shed(w.id, handle, payload, reason);
                    }
                }
            }
        }
    }

    /// When [`expire`](Self::expire) next has work: the earliest deadline, and with adaptive
    /// LIFO the instant the oldest non-critical waiter would be shed for its queue delay.
    pub(crate) fn poll_timeout<Q: WaitQueue>(&self, q: &Q) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut earliest = |t: Instant| {
            next = Some(next.map_or(t, |n: Instant| n.min(t)));
        };
        for class in Criticality::BY_IMPORTANCE {
            if let Some(d) = q
                .front(class)
                .and_then(|w| crate::time::never_at_the_end(w.deadline))
            {
                earliest(d);
            }
        }
        if let Some(target) = self.codel.target() {
            let stale = [Criticality::Default, Criticality::Sheddable]
                .into_iter()
                .filter_map(|c| q.front(c))
                .map(|w| w.enqueued.saturating_add(target))
                .min();
            let now = self.clock.get();
            match (stale, self.codel.first_above()) {
                (Some(s), Some(_)) if self.codel.standing(now) => earliest(s),
                // Not standing yet: it becomes standing at `t`, and sheds from then on.
                (Some(s), Some(t)) => earliest(s.max(t)),
                _ => {}
            }
        }
        next.and_then(crate::time::never_at_the_end)
    }

    fn admit(&mut self, class: Criticality) {
        self.stats.in_flight = self.stats.in_flight.saturating_add(1);
        self.stats.admitted = self.stats.admitted.saturating_add(1);
        self.stats.peak = self.stats.peak.max(self.stats.in_flight);
        let c = self.class_stats(class);
        c.admitted = c.admitted.saturating_add(1);
    }

    /// The newest `now` seen (used by the shared form's guards, which drop without a time).
    #[cfg_attr(not(feature = "std"), allow(dead_code))]
    pub(crate) fn newest(&self) -> Instant {
        self.clock.get()
    }

    /// Whether a waiter at least as important as `class` is queued (nobody jumps it).
    fn queued_at_or_above<Q: WaitQueue>(q: &Q, class: Criticality) -> bool {
        Criticality::BY_IMPORTANCE
            .into_iter()
            .filter(|&c| c >= class)
            .any(|c| q.class_len(c) > 0)
    }

    /// Whether `class` may take a slot now.
    fn may_admit<Q: WaitQueue>(&self, q: &Q, class: Criticality) -> bool {
        self.stats.in_flight < self.cap(class) && !Self::queued_at_or_above(q, class)
    }

    /// Why `class` is refused a slot at once: the room left is another class's
    /// ([`RejectReason::Priority`]), or there is none ([`RejectReason::Full`]).
    fn refusal<Q: WaitQueue>(&self, q: &Q, class: Criticality) -> RejectReason {
        if self.stats.in_flight < self.config.max_concurrent && !Self::queued_at_or_above(q, class)
        {
            RejectReason::Priority { class }
        } else {
            RejectReason::Full
        }
    }

    /// Admit at once or reject; never queue, never jump a waiter of the same or a more
    /// important class. `now` already observed and expired waiters already removed.
    pub(crate) fn try_admit<Q: WaitQueue>(
        &mut self,
        q: &Q,
        class: Criticality,
    ) -> Result<(), RejectReason> {
        if self.may_admit(q, class) {
            self.admit(class);
            Ok(())
        } else {
            let reason = self.refusal(q, class);
            self.count_shed(class, reason);
            Err(reason)
        }
    }

    /// Admits `class` if it may take a slot now, as [`try_admit`](Self::try_admit) does; if it
    /// may not, changes nothing (no shed is counted): the caller then makes the full request.
    /// The shared form's uncontended path, which reads no clock while the queue is empty.
    #[cfg_attr(not(feature = "futures"), allow(dead_code))]
    pub(crate) fn admit_if_free<Q: WaitQueue>(&mut self, q: &Q, class: Criticality) -> bool {
        let free = self.may_admit(q, class);
        if free {
            self.admit(class);
        }
        free
    }

    /// Admit, queue or reject. `now` already observed and expired waiters already removed.
    /// When the queue is full, a less important waiter (the oldest of the least important
    /// class queued) is shed to make room ([`RejectReason::Priority`], through `on_shed`).
    pub(crate) fn request<Q: WaitQueue>(
        &mut self,
        now: Instant,
        q: &mut Q,
        class: Criticality,
        payload: Q::Payload,
        mut on_shed: impl FnMut(WaiterId, Q::Handle, Q::Payload, RejectReason),
    ) -> Result<Option<(WaiterId, Q::Handle, Instant)>, RejectReason> {
        if self.may_admit(q, class) {
            self.admit(class);
            return Ok(None);
        }
        if self.queue_bound == 0 {
            let reason = self.refusal(q, class);
            self.count_shed(class, reason);
            return Err(reason);
        }
        if q.len() >= self.queue_bound {
            // The least important class queued, if it is less important than this call.
            let victim = Criticality::BY_IMPORTANCE
                .into_iter()
                .rev()
                .find(|&c| c < class && q.class_len(c) > 0);
            let popped = victim.and_then(|c| q.pop_front(c).map(|p| (c, p)));
            match popped {
                Some((c, (w, handle, p))) => {
                    let reason = RejectReason::Priority { class: c };
                    self.count_shed(c, reason);
                    on_shed(w.id, handle, p, reason);
                }
                None => {
                    self.count_shed(class, RejectReason::QueueFull);
                    return Err(RejectReason::QueueFull);
                }
            }
        }
        let id = WaiterId(self.next_waiter);
        let deadline = now.saturating_add(self.config.max_wait);
        let waiting = Waiting {
            id,
            deadline,
            enqueued: now,
        };
        let Ok(handle) = q.push_back(class, waiting, payload) else {
            self.count_shed(class, RejectReason::QueueFull);
            return Err(RejectReason::QueueFull);
        };
        self.next_waiter = self.next_waiter.saturating_add(1);
        self.stats.queued = self.stats.queued.saturating_add(1);
        let c = self.class_stats(class);
        c.queued = c.queued.saturating_add(1);
        self.stats.peak_queue = self.stats.peak_queue.max(q.len());
        Ok(Some((id, handle, deadline)))
    }

    /// Returns a permit; promotes a waiter if one may take the slot (see
    /// [`promote`](Self::promote)). Expired waiters must already have been removed.
    pub(crate) fn release<Q: WaitQueue>(
        &mut self,
        now: Instant,
        q: &mut Q,
    ) -> Option<(WaiterId, Q::Handle, Q::Payload)> {
        self.stats.in_flight = self.stats.in_flight.saturating_sub(1);
        self.promote(now, q)
    }

    /// Gives a free slot to the most important class queued, if its cap allows: its oldest
    /// waiter (FIFO), or its newest while the queue is standing (adaptive LIFO). A free slot
    /// that finds the queue empty is CoDel's "queue empty at dequeue": the queue is healthy.
    pub(crate) fn promote<Q: WaitQueue>(
        &mut self,
        now: Instant,
        q: &mut Q,
    ) -> Option<(WaiterId, Q::Handle, Q::Payload)> {
        let Some(class) = Criticality::BY_IMPORTANCE
            .into_iter()
            .find(|&c| q.class_len(c) > 0)
        else {
            if self.stats.in_flight < self.config.max_concurrent {
                self.codel.on_empty();
            }
            return None;
        };
        // Caps shrink with importance: if the most important class queued may not run, no
        // less important one may.
        if self.stats.in_flight >= self.cap(class) {
            return None;
        }
        let lifo = self.codel.standing(now);
        let (w, handle, payload) = if lifo {
            q.pop_back(class)?
        } else {
            q.pop_front(class)?
        };
        self.codel.on_dequeue(now, w.enqueued);
        self.admit(class);
        self.stats.promoted = self.stats.promoted.saturating_add(1);
        Some((w.id, handle, payload))
    }

    /// Changes `max_concurrent` (at least 1); the caller promotes waiters into new room with
    /// [`promote`](Self::promote).
    pub(crate) fn set_max_concurrent(&mut self, n: usize) {
        self.config.max_concurrent = n.max(1);
    }

    /// Sets `max_concurrent` (the builder's rule: at least 1) and admits the waiters that now
    /// fit, as a freed slot would ([`promote`](Self::promote): the most important class first);
    /// each goes to `on_promoted`. Shrinking revokes nothing: calls in flight finish, and nobody
    /// is admitted until `in_flight` is below the new bound. Expired waiters must already have
    /// been removed.
    #[cfg_attr(not(feature = "std"), allow(dead_code))]
    pub(crate) fn resize<Q: WaitQueue>(
        &mut self,
        now: Instant,
        max_concurrent: core::num::NonZeroUsize,
        q: &mut Q,
        mut on_promoted: impl FnMut(WaiterId, Q::Handle, Q::Payload),
    ) {
        self.set_max_concurrent(max_concurrent.get());
        while self.stats.in_flight < self.config.max_concurrent {
            let Some((id, handle, payload)) = self.promote(now, q) else {
                break;
            };
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
