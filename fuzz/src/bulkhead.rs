//! The bulkhead against its reference model (`keel_testkit::models::bulkhead`, shared with the
//! proptests): in-flight never exceeds `max_concurrent`
//! (nor goes negative), the queue never exceeds its bound, waiters are FIFO, never promoted at or
//! after their deadline, expire exactly at it, and every counter balances.
//!
//! The shared form ([`SharedBulkhead`], whose queue is the core's O(1) slab list) runs in
//! lockstep with the `&mut` machine: the same requests, releases, cancellations (dropped
//! waiters) and timeouts must give the same answers, the same promoted waiters (collected by
//! polling them) and the same counters.

use arbitrary::Arbitrary;
use keel_core::bulkhead::{
    Admission, BulkheadConfig, BulkheadEvent, BulkheadPermit, FifoSemaphore, Release, WaiterId,
};
use keel_core::sync::bulkhead::{Acquire, BulkheadGuard, BulkheadWaiter, SharedBulkhead};
use keel_core::time::Instant;
use keel_testkit::models::bulkhead::{BulkheadModel, ModelAdmission, ModelEvent, ModelWaiter};

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
    permits: Vec<BulkheadPermit>,
    /// The reference model (`keel_testkit::models::bulkhead`, shared with the proptests).
    model: BulkheadModel,
    /// Every waiter ever queued: the machine's id and the model's name (cancels of stale ids
    /// included).
    known: Vec<(WaiterId, ModelWaiter)>,
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
            permits: Vec::new(),
            model: BulkheadModel::new(&config, start)
                .expect("one class, FIFO: the model covers every config this target builds"),
            known: Vec::new(),
            shared: SharedBulkhead::new(config, start),
            guards: Vec::new(),
            waiters: Vec::new(),
        })
    }

    /// The machine's id of the model's waiter `w`.
    fn id(&self, w: ModelWaiter) -> WaiterId {
        self.known
            .iter()
            .find(|(_, m)| *m == w)
            .map(|(id, _)| *id)
            .expect("every waiter of the model has the machine's id")
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
        let queued: Vec<WaiterId> = self
            .model
            .queue()
            .into_iter()
            .map(|(w, _)| self.id(w))
            .collect();
        self.waiters.retain(|w| queued.contains(&w.id()));
    }

    /// Applies `op` at `now` and checks against the model.
    pub fn apply(&mut self, clock: &mut Clock, now: Instant, op: Op) {
        match op {
            Op::Request => {
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
                let want = self.model.acquire(now);
                match (got, want) {
                    (Admission::Admitted(p), ModelAdmission::Admitted) => self.permits.push(p),
                    (
                        Admission::Queued { waiter, deadline },
                        ModelAdmission::Queued {
                            waiter: m,
                            deadline: d,
                        },
                    ) => {
                        assert_eq!(deadline, d, "a deadline unlike the model's");
                        assert!(
                            self.known.iter().all(|(w, _)| *w < waiter),
                            "waiter ids not increasing"
                        );
                        self.known.push((waiter, m));
                    }
                    (Admission::Rejected(rejected), ModelAdmission::Rejected(reason)) => {
                        assert_eq!(rejected.reason, reason, "shed unlike the model");
                        assert_eq!(rejected.retry_at, None, "a shed call has no retry instant");
                    }
                    (got, want) => panic!("the machine says {got:?}, the model {want:?}"),
                }
            }
            Op::TryRequest => {
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
                let want = self.model.try_acquire(now);
                match mine {
                    Ok(p) => {
                        assert_eq!(want, Ok(()), "admitted unlike the model");
                        self.permits.push(p);
                    }
                    Err(rejected) => {
                        assert_eq!(Err(rejected.reason), want, "refused unlike the model");
                        assert_eq!(rejected.retry_at, None);
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
                let got = self.b.on_release(now, p);
                let guard = self.guards.pop().expect("as many guards as permits");
                guard.release(now);
                if let Release::Promoted { waiter, .. } = &got {
                    self.collect_promoted(*waiter, now);
                }
                let promoted = self.model.on_release(now);
                match got {
                    Release::Freed => {
                        assert_eq!(promoted, None, "a waiter was left behind");
                    }
                    Release::Promoted { waiter, permit } => {
                        let m = promoted.expect("promoted where the model frees");
                        assert_eq!(waiter, self.id(m), "not FIFO");
                        self.permits.push(permit);
                    }
                }
            }
            Op::Cancel(i) => {
                if self.known.is_empty() {
                    clock.unseen();
                    return;
                }
                let (id, m) = self.known[usize::from(i) % self.known.len()];
                let got = self.b.on_cancel(now, id);
                assert_eq!(
                    got,
                    self.model.on_cancel(now, m),
                    "cancel disagrees with the model"
                );
                // The shared form: expire as the `&mut` machine just did, then drop the waiter.
                self.shared.handle_timeout(now);
                if let Some(i) = self.waiters.iter().position(|w| w.id() == id) {
                    drop(self.waiters.swap_remove(i));
                }
            }
            Op::Timeout => {
                self.b.handle_timeout(now);
                self.shared.handle_timeout(now);
                self.model.handle_timeout(now);
                assert!(self.b.poll_timeout().is_none_or(|t| t > now));
            }
            Op::WaitOut => {
                if let Some(t) = self.b.poll_timeout() {
                    assert_eq!(Some(t), self.model.poll_timeout());
                    clock.jump(t);
                    self.b.handle_timeout(t);
                    self.shared.handle_timeout(t);
                    self.model.handle_timeout(t);
                    assert!(self.b.poll_timeout().is_none_or(|u| u > t));
                }
            }
            Op::Poll => {
                let mut got = Vec::new();
                while let Some(e) = self.b.poll_event() {
                    // `BulkheadEvent` is #[non_exhaustive]: every event, known or later added.
                    assert!(matches!(
                        e,
                        BulkheadEvent::Promoted { .. } | BulkheadEvent::Expired { .. }
                    ));
                    got.push(e);
                }
                let want: Vec<BulkheadEvent> = core::iter::from_fn(|| self.model.poll_event())
                    .collect::<Vec<_>>()
                    .into_iter()
                    .map(|e| match e {
                        ModelEvent::Expired(w) => BulkheadEvent::Expired { waiter: self.id(w) },
                        ModelEvent::Promoted(w) => BulkheadEvent::Promoted { waiter: self.id(w) },
                    })
                    .collect();
                // The model's queue is unbounded: compare while the machine dropped none.
                if self.b.stats().events_dropped == 0 {
                    assert_eq!(got, want, "events unlike the model's");
                }
            }
        }
        assert_eq!(self.model.newest(), clock.newest());
        self.drop_expired();
        let s = self.b.stats();
        if let Err(e) = self.model.check(&s, self.b.poll_timeout()) {
            panic!("the bulkhead disagrees with the model: {e}");
        }
        let mut shared = self.shared.stats();
        shared.events_dropped = s.events_dropped;
        assert_eq!(shared, s, "the shared form's counters disagree");
        assert_eq!(self.guards.len(), self.permits.len());
        assert_eq!(self.waiters.len(), s.queue_len);
        assert!(s.in_flight <= self.max, "in_flight above max_concurrent");
        assert!(s.queue_len <= self.bound, "queue above its bound");
        assert_eq!(self.b.in_flight(), s.in_flight);
        assert_eq!(self.b.queue_len(), s.queue_len);
        assert_eq!(s.in_flight, self.permits.len());
        assert_eq!(
            s.queued,
            s.promoted + s.shed_timeout + s.cancelled + s.queue_len as u64,
            "every waiter is promoted, expired, cancelled or still queued"
        );
        assert!(s.peak >= s.in_flight && s.peak <= self.max);
        assert!(s.peak_queue >= s.queue_len && s.peak_queue <= self.bound);
        // No waiter is left queued at or after its deadline (so none is promoted there).
        let newest = clock.newest();
        assert!(
            self.model
                .queue()
                .iter()
                .all(|(_, d)| d.is_none_or(|d| d > newest)),
            "a waiter queued past its deadline"
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
