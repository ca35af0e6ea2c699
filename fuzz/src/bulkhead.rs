//! The bulkhead against an exact reference model: in-flight never exceeds `max_concurrent`
//! (nor goes negative), the queue never exceeds its bound, waiters are FIFO, never promoted at or
//! after their deadline, expire exactly at it, and every counter balances.
//!
//! The shared form ([`SharedBulkhead`], whose queue is the core's O(1) slab list) runs in
//! lockstep with the `&mut` machine: the same requests, releases, cancellations (dropped
//! waiters) and timeouts must give the same answers, the same promoted waiters (collected by
//! polling them) and the same counters.

use std::collections::VecDeque;

use arbitrary::Arbitrary;
use keel_core::bulkhead::{
    Admission, BulkheadConfig, BulkheadEvent, BulkheadPermit, FifoSemaphore, RejectReason, Release,
    WaiterId,
};
use keel_core::sync::bulkhead::{Acquire, BulkheadGuard, BulkheadWaiter, SharedBulkhead};
use keel_core::time::Instant;

use crate::common::{Clock, Dur, Timed};

/// Room for this many waiters in the fuzzed machine.
pub const QUEUE: usize = 8;

/// One input.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Op {
    /// `acquire`.
    Request,
    /// `try_acquire`.
    TryRequest,
    /// `on_release` of the held permit at this index.
    Release(u8),
    /// `on_cancel` of the known waiter at this index (or a bogus id).
    Cancel(u8),
    /// `handle_timeout(now)`.
    Timeout,
    /// Jump to `poll_timeout()` and handle it.
    WaitOut,
    /// Drain the events.
    Poll,
}

/// The configuration.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct Config {
    max_concurrent: Option<u8>,
    max_queue: u8,
    max_wait: Dur,
}

/// The machine, its model, and what the caller holds.
pub struct Harness {
    b: FifoSemaphore<QUEUE>,
    max: usize,
    bound: usize,
    max_wait: core::time::Duration,
    permits: Vec<BulkheadPermit>,
    /// The model's queue: `(id, deadline)`, FIFO.
    queue: VecDeque<(WaiterId, Option<Instant>)>,
    /// Waiters ever queued (for cancels of stale ids).
    known: Vec<WaiterId>,
    /// Promoted waiters' permits handed out by the model.
    in_flight: usize,
    expired: u64,
    promoted: u64,
    cancelled: u64,
    events: u64,
    /// The shared form, in lockstep.
    shared: SharedBulkhead,
    guards: Vec<BulkheadGuard>,
    /// The shared form's waiters still queued (or granted and not yet collected).
    waiters: Vec<BulkheadWaiter>,
}

impl Harness {
    /// `None` when the builder rejects the config.
    pub fn new(c: &Config, start: Instant) -> Option<Harness> {
        let mut b = BulkheadConfig::builder()
            .max_queue(usize::from(c.max_queue) % (QUEUE + 2))
            .max_wait(c.max_wait.get());
        if let Some(n) = c.max_concurrent {
            b = b.max_concurrent(usize::from(n % 16));
        }
        let config = b.build().ok()?;
        // A queue the ring has no room for is refused, never cut down.
        let built = FifoSemaphore::<QUEUE>::new(config, start);
        assert_eq!(built.is_err(), config.max_queue() > QUEUE, "{built:?}");
        let bh = built.ok()?;
        assert_eq!(bh.queue_capacity(), config.max_queue());
        Some(Harness {
            b: bh,
            max: config.max_concurrent(),
            bound: config.max_queue(),
            max_wait: config.max_wait(),
            permits: Vec::new(),
            queue: VecDeque::new(),
            known: Vec::new(),
            in_flight: 0,
            expired: 0,
            promoted: 0,
            cancelled: 0,
            events: 0,
            shared: SharedBulkhead::new(config, start),
            guards: Vec::new(),
            waiters: Vec::new(),
        })
    }

    /// Collects the shared waiter `id` the `&mut` machine promoted: it must poll `Ready(Ok)`.
    fn collect_promoted(&mut self, id: WaiterId, now: Instant) {
        let i = self
            .waiters
            .iter()
            .position(|w| w.id() == id)
            .expect("the shared form has the promoted waiter");
        let mut w = self.waiters.swap_remove(i);
        let mut cx = core::task::Context::from_waker(core::task::Waker::noop());
        match w.poll(&mut cx, now) {
            core::task::Poll::Ready(Ok(g)) => self.guards.push(g),
            other => panic!("the shared form did not grant waiter {id}: {other:?}"),
        }
    }

    /// Drops the shared waiters the model no longer has queued (expired). A drop is no input
    /// (a poll would be: it expires at its `now`, where a waiter queued at the end of the
    /// clock is already due, and the forms would no longer see the same inputs): the counters
    /// compared after it show they had expired (dropping one still queued counts a cancel).
    fn drop_expired(&mut self) {
        let queue = &self.queue;
        self.waiters
            .retain(|w| queue.iter().any(|(id, _)| *id == w.id()));
    }

    fn expire(&mut self, now: Instant) {
        // `None`: a deadline at the end of the clock, which never comes.
        while let Some(&(_, deadline)) = self.queue.front() {
            if deadline.is_none_or(|d| d > now) {
                break;
            }
            self.queue.pop_front();
            self.expired += 1;
        }
    }

    /// Applies `op` at `now` and checks against the model.
    pub fn apply(&mut self, clock: &mut Clock, now: Instant, op: Op) {
        let newest = clock.newest();
        match op {
            Op::Request => {
                self.expire(newest);
                let got = self.b.acquire(now);
                match (&got, self.shared.acquire(now)) {
                    (Admission::Admitted(_), Acquire::Ready(Ok(g))) => self.guards.push(g),
                    (Admission::Queued { waiter, deadline }, Acquire::Wait(w)) => {
                        assert_eq!(w.id(), *waiter, "the shared form queued another id");
                        assert_eq!(w.deadline(), *deadline);
                        self.waiters.push(w);
                    }
                    (Admission::Rejected(rejected), Acquire::Ready(Err(e))) => {
                        assert_eq!(e, *rejected, "the forms reject in different shapes");
                    }
                    (a, b) => panic!("the forms disagree on a request: {a:?} vs {b:?}"),
                }
                match got {
                    Admission::Admitted(p) => {
                        assert!(
                            self.in_flight < self.max && self.queue.is_empty(),
                            "admitted over the limit"
                        );
                        self.in_flight += 1;
                        self.permits.push(p);
                    }
                    Admission::Queued { waiter, deadline } => {
                        assert!(self.in_flight >= self.max || !self.queue.is_empty());
                        assert!(self.queue.len() < self.bound, "queued beyond the bound");
                        let expected = Some(newest + self.max_wait).filter(|d| *d != Instant::MAX);
                        assert_eq!(deadline, expected);
                        assert!(
                            self.queue.iter().all(|(w, _)| *w < waiter),
                            "waiter ids not increasing"
                        );
                        self.queue.push_back((waiter, deadline));
                        self.known.push(waiter);
                    }
                    Admission::Rejected(rejected) => {
                        assert_eq!(rejected.retry_at, None, "a shed call has no retry instant");
                        let reason = rejected.reason;
                        assert!(self.in_flight >= self.max || !self.queue.is_empty());
                        if self.bound == 0 {
                            assert_eq!(reason, RejectReason::Full);
                        } else {
                            assert_eq!(reason, RejectReason::QueueFull);
                            assert_eq!(self.queue.len(), self.bound);
                        }
                    }
                }
            }
            Op::TryRequest => {
                self.expire(newest);
                let shared = self.shared.try_acquire(now);
                let mine = self.b.try_acquire(now);
                assert_eq!(
                    mine.is_ok(),
                    shared.is_ok(),
                    "the forms disagree on try_request"
                );
                if let Ok(g) = shared {
                    self.guards.push(g);
                }
                match mine {
                    Ok(p) => {
                        assert!(self.in_flight < self.max && self.queue.is_empty());
                        self.in_flight += 1;
                        self.permits.push(p);
                    }
                    Err(rejected) => {
                        assert_eq!(rejected.reason, RejectReason::Full);
                        assert_eq!(rejected.retry_at, None);
                        assert!(self.in_flight >= self.max || !self.queue.is_empty());
                    }
                }
            }
            Op::Release(i) => {
                if self.permits.is_empty() {
                    clock.unseen();
                    return;
                }
                let p = self
                    .permits
                    .swap_remove(usize::from(i) % self.permits.len());
                self.expire(newest);
                let got = self.b.on_release(now, p);
                let guard = self.guards.pop().expect("as many guards as permits");
                guard.release(now);
                if let Release::Promoted { waiter, .. } = &got {
                    self.collect_promoted(*waiter, now);
                }
                self.in_flight -= 1;
                match got {
                    Release::Freed => {
                        assert!(
                            self.queue.is_empty() || self.in_flight >= self.max,
                            "a waiter was left behind"
                        );
                    }
                    Release::Promoted { waiter, permit } => {
                        let (front, deadline) = self
                            .queue
                            .pop_front()
                            .expect("promoted from an empty queue");
                        assert_eq!(waiter, front, "not FIFO");
                        assert!(
                            deadline.is_none_or(|d| d > newest),
                            "promoted at or after its deadline"
                        );
                        self.in_flight += 1;
                        self.promoted += 1;
                        self.permits.push(permit);
                    }
                }
            }
            Op::Cancel(i) => {
                self.expire(newest);
                if self.known.is_empty() {
                    clock.unseen();
                    return;
                }
                let id = self.known[usize::from(i) % self.known.len()];
                let queued = self.queue.iter().position(|(w, _)| *w == id);
                let got = self.b.on_cancel(now, id);
                assert_eq!(got, queued.is_some(), "cancel disagrees with the model");
                // The shared form: expire as the `&mut` machine just did, then drop the waiter.
                self.shared.handle_timeout(now);
                if let Some(i) = self.waiters.iter().position(|w| w.id() == id) {
                    drop(self.waiters.swap_remove(i));
                }
                if let Some(pos) = queued {
                    self.queue.remove(pos);
                    self.cancelled += 1;
                }
            }
            Op::Timeout => {
                self.expire(newest);
                self.b.handle_timeout(now);
                self.shared.handle_timeout(now);
                assert!(self.b.poll_timeout().is_none_or(|t| t > now));
            }
            Op::WaitOut => {
                if let Some(t) = self.b.poll_timeout() {
                    assert_eq!(Some(t), self.queue.front().and_then(|(_, d)| *d));
                    clock.jump(t);
                    let newest = clock.newest();
                    self.expire(newest);
                    self.b.handle_timeout(t);
                    self.shared.handle_timeout(t);
                    assert!(self.b.poll_timeout().is_none_or(|u| u > t));
                }
            }
            Op::Poll => {
                while let Some(e) = self.b.poll_event() {
                    self.events += 1;
                    // `BulkheadEvent` is #[non_exhaustive]: every event, known or later added.
                    assert!(matches!(
                        e,
                        BulkheadEvent::Promoted { .. } | BulkheadEvent::Expired { .. }
                    ));
                }
            }
        }
        self.drop_expired();
        let s = self.b.stats();
        let mut shared = self.shared.stats();
        shared.events_dropped = s.events_dropped;
        assert_eq!(shared, s, "the shared form's counters disagree");
        assert_eq!(self.guards.len(), self.permits.len());
        assert_eq!(self.waiters.len(), self.queue.len());
        assert!(s.in_flight <= self.max, "in_flight above max_concurrent");
        assert!(s.queue_len <= self.bound, "queue above its bound");
        assert_eq!(
            s.in_flight, self.in_flight,
            "in_flight disagrees with the model"
        );
        assert_eq!(
            s.queue_len,
            self.queue.len(),
            "queue disagrees with the model"
        );
        assert_eq!(self.b.in_flight(), s.in_flight);
        assert_eq!(self.b.queue_len(), s.queue_len);
        assert_eq!(s.in_flight, self.permits.len());
        assert_eq!(s.promoted, self.promoted);
        assert_eq!(s.shed_timeout, self.expired);
        assert_eq!(s.cancelled, self.cancelled);
        assert_eq!(
            s.queued,
            s.promoted + s.shed_timeout + s.cancelled + s.queue_len as u64,
            "every waiter is promoted, expired, cancelled or still queued"
        );
        assert!(s.peak >= s.in_flight && s.peak <= self.max);
        assert!(s.peak_queue >= s.queue_len && s.peak_queue <= self.bound);
        // Deadlines never decrease along the queue (same max_wait, clamped time), so the oldest
        // is the next timeout; `None` (at the end of the clock) is no deadline at all.
        assert_eq!(
            self.b.poll_timeout(),
            self.queue.front().and_then(|(_, d)| *d),
            "poll_timeout is not the oldest (reachable) deadline"
        );
    }

    /// Nothing more to check at the end.
    pub fn finish(&mut self) {}
}

impl Timed for Op {
    fn timed(&self) -> bool {
        !matches!(self, Op::WaitOut | Op::Poll)
    }
}

crate::single_machine_target!("bulkhead", Config);
