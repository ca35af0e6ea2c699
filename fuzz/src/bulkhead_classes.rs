//! The bulkhead with [`Criticality`] classes, class shares and adaptive LIFO + CoDel: the
//! `&mut` machine and the shared form ([`SharedBulkhead`]) in lockstep (same decisions, same
//! promoted waiters, same counters), and the invariants that hold whatever the inputs:
//!
//! - no lost waiter: every queued call is promoted, shed or cancelled exactly once;
//! - the queue bound holds, and in flight grows only below the class's limit;
//! - a promotion takes the most important class queued;
//! - critical work is never pushed out nor shed by CoDel, and a critical call is never refused
//!   for room while less important work is queued.

use std::collections::HashMap;

use arbitrary::Arbitrary;
use keel_core::bulkhead::{
    Admission, BulkheadConfig, BulkheadEvent, BulkheadPermit, Criticality, FifoSemaphore,
    QueueDiscipline, RejectReason, Release, WaiterId,
};
use keel_core::sync::bulkhead::{Acquire, BulkheadGuard, BulkheadWaiter, SharedBulkhead};
use keel_core::time::Instant;

use crate::common::{Clock, Dur, Timed};

/// Room for this many waiters in the fuzzed machine.
pub const QUEUE: usize = 8;

/// A class.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Class {
    /// [`Criticality::Critical`].
    Critical,
    /// [`Criticality::Default`].
    Default,
    /// [`Criticality::Sheddable`].
    Sheddable,
}

impl Class {
    fn get(self) -> Criticality {
        match self {
            Class::Critical => Criticality::Critical,
            Class::Default => Criticality::Default,
            Class::Sheddable => Criticality::Sheddable,
        }
    }
}

/// One input.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Op {
    /// `acquire_with`.
    Request(Class),
    /// `try_acquire_with`.
    TryRequest(Class),
    /// `on_release` of the held permit at this index.
    Release(u8),
    /// `on_cancel` of the known waiter at this index.
    Cancel(u8),
    /// `handle_timeout(now)`.
    Timeout,
    /// Jump to `poll_timeout()` and handle it.
    WaitOut,
}

/// The configuration.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct Config {
    max_concurrent: u8,
    max_queue: u8,
    max_wait: Dur,
    reserved: u8,
    headroom: u8,
    codel: Option<(Dur, Dur)>,
}

/// The two forms and what the caller holds.
pub struct Harness {
    b: FifoSemaphore<QUEUE>,
    bound: usize,
    codel: bool,
    permits: Vec<BulkheadPermit>,
    shared: SharedBulkhead,
    guards: Vec<BulkheadGuard>,
    waiters: Vec<BulkheadWaiter>,
    /// Queued waiters and their class.
    live: HashMap<WaiterId, Criticality>,
    /// Every waiter ever queued.
    known: Vec<WaiterId>,
}

impl Harness {
    /// `None` when the builder rejects the config.
    pub fn new(c: &Config, start: Instant) -> Option<Harness> {
        let mut b = BulkheadConfig::builder()
            .max_concurrent(usize::from(c.max_concurrent % 8))
            .max_queue(usize::from(c.max_queue) % (QUEUE + 1))
            .max_wait(c.max_wait.get())
            .reserved_critical_percent(c.reserved)
            .sheddable_headroom_percent(c.headroom);
        if let Some((target, interval)) = c.codel {
            b = b.queue_discipline(QueueDiscipline::AdaptiveLifo {
                target: target.get(),
                interval: interval.get(),
            });
        }
        let config = b.build().ok()?;
        Some(Harness {
            b: FifoSemaphore::new(config, start).ok()?,
            bound: config.max_queue(),
            codel: c.codel.is_some(),
            permits: Vec::new(),
            shared: SharedBulkhead::new(config, start),
            guards: Vec::new(),
            waiters: Vec::new(),
            live: HashMap::new(),
            known: Vec::new(),
        })
    }

    fn resolve(&mut self, id: WaiterId) -> Criticality {
        self.live
            .remove(&id)
            .unwrap_or_else(|| panic!("{id} resolved but not queued (lost or resolved twice)"))
    }

    /// Drains the `&mut` machine's events, checking each, and has the shared form's waiters
    /// agree (a promoted one polls `Ready(Ok)`, a shed one `Ready(Err)` with the same reason).
    fn events(&mut self, now: Instant) {
        let mut cx = core::task::Context::from_waker(core::task::Waker::noop());
        while let Some(ev) = self.b.poll_event() {
            let (waiter, shed) = match ev {
                BulkheadEvent::Promoted { waiter } => {
                    let class = self.resolve(waiter);
                    let top = self.live.values().copied().max();
                    assert!(
                        top.is_none_or(|c| c <= class),
                        "promoted over a more important class"
                    );
                    (waiter, None)
                }
                BulkheadEvent::Expired { waiter } => {
                    let _ = self.resolve(waiter);
                    (waiter, Some(RejectReason::WaitedTooLong))
                }
                BulkheadEvent::Shed { waiter, reason } => {
                    let class = self.resolve(waiter);
                    assert_ne!(
                        class,
                        Criticality::Critical,
                        "critical work shed: {reason:?}"
                    );
                    match reason {
                        RejectReason::Priority { class: c } => assert_eq!(c, class),
                        RejectReason::QueueDelay { class: c } => {
                            assert_eq!(c, class);
                            assert!(self.codel, "CoDel shed without adaptive LIFO");
                        }
                        other => panic!("unexpected shed reason {other:?}"),
                    }
                    (waiter, Some(reason))
                }
                other => panic!("unexpected event {other:?}"),
            };
            let i = self
                .waiters
                .iter()
                .position(|w| w.id() == waiter)
                .expect("the shared form has the waiter");
            let mut w = self.waiters.swap_remove(i);
            match (w.poll(&mut cx, now), shed) {
                (core::task::Poll::Ready(Ok(g)), None) => self.guards.push(g),
                (core::task::Poll::Ready(Err(e)), Some(reason)) => assert_eq!(e.reason, reason),
                (other, want) => {
                    panic!("the shared form's {waiter} polled {other:?}, want {want:?}")
                }
            }
        }
    }

    /// Applies `op` at `now` and checks both forms.
    pub fn apply(&mut self, clock: &mut Clock, now: Instant, op: Op) {
        let before = self.b.in_flight();
        let mut critical_refused = false;
        match op {
            Op::Request(class) => {
                let class = class.get();
                let limit = self.b.class_limit(class);
                let got = self.b.acquire_with(now, class);
                match (got, self.shared.acquire_with(now, class)) {
                    (Admission::Admitted(p), Acquire::Ready(Ok(g))) => {
                        assert!(before < limit, "admitted above the class limit");
                        self.permits.push(p);
                        self.guards.push(g);
                    }
                    (Admission::Queued { waiter, deadline }, Acquire::Wait(w)) => {
                        assert_eq!(w.id(), waiter);
                        assert_eq!(w.deadline(), deadline);
                        self.waiters.push(w);
                        self.live.insert(waiter, class);
                        self.known.push(waiter);
                    }
                    (Admission::Rejected(r), Acquire::Ready(Err(e))) => {
                        assert_eq!(r, e, "the forms reject differently");
                        critical_refused = class == Criticality::Critical;
                    }
                    (a, b) => panic!("the forms disagree on a request: {a:?} vs {b:?}"),
                }
            }
            Op::TryRequest(class) => {
                let class = class.get();
                let mine = self.b.try_acquire_with(now, class);
                self.shared.handle_timeout(now);
                let shared = self.shared.try_acquire_with(now, class);
                match (mine, shared) {
                    (Ok(p), Ok(g)) => {
                        self.permits.push(p);
                        self.guards.push(g);
                    }
                    (Err(a), Err(b)) => {
                        assert_eq!(a, b);
                        critical_refused =
                            class == Criticality::Critical && a.reason != RejectReason::Full;
                    }
                    (a, b) => panic!("the forms disagree on try_acquire: {a:?} vs {b:?}"),
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
                if let Release::Promoted { permit, .. } = got {
                    self.permits.push(permit);
                }
            }
            Op::Cancel(i) => {
                if self.known.is_empty() {
                    clock.unseen();
                    return;
                }
                let id = self.known[usize::from(i) % self.known.len()];
                let got = self.b.on_cancel(now, id);
                // The sweep before the cancel may have shed others: the shared form sweeps too.
                self.shared.handle_timeout(now);
                self.events(now);
                if got {
                    let _ = self.resolve(id);
                    if let Some(i) = self.waiters.iter().position(|w| w.id() == id) {
                        drop(self.waiters.swap_remove(i));
                    }
                } else {
                    assert!(
                        !self.live.contains_key(&id),
                        "a queued waiter would not cancel"
                    );
                }
            }
            Op::Timeout => {
                self.b.handle_timeout(now);
                self.shared.handle_timeout(now);
                assert!(self.b.poll_timeout().is_none_or(|t| t > clock.newest()));
            }
            Op::WaitOut => {
                if let Some(t) = self.b.poll_timeout() {
                    clock.jump(t);
                    self.b.handle_timeout(t);
                    self.shared.handle_timeout(t);
                    assert!(self.b.poll_timeout().is_none_or(|u| u > t));
                }
            }
        }
        self.events(now);
        if critical_refused {
            assert!(
                self.live.values().all(|c| *c == Criticality::Critical),
                "a critical call was refused while less important work is queued"
            );
        }
        let s = self.b.stats();
        let mut shared = self.shared.stats();
        shared.events_dropped = s.events_dropped;
        assert_eq!(shared, s, "the shared form's counters disagree");
        assert_eq!(s.events_dropped, 0);
        assert_eq!(s.in_flight, self.permits.len());
        assert_eq!(self.guards.len(), self.permits.len());
        assert!(s.in_flight <= before || s.in_flight <= self.b.config().max_concurrent());
        assert!(s.queue_len <= self.bound, "queue above its bound");
        assert_eq!(s.queue_len, self.live.len(), "a waiter was lost");
        assert_eq!(self.waiters.len(), self.live.len());
        assert_eq!(
            s.admitted,
            s.critical.admitted + s.default.admitted + s.sheddable.admitted
        );
        assert_eq!(
            s.shed(),
            s.critical.shed + s.default.shed + s.sheddable.shed
        );
    }

    /// Every waiter still queued cancels exactly once.
    pub fn finish(&mut self) {
        // Clamped to the newest instant either form has seen.
        let now = Instant::ZERO;
        for id in self.known.clone() {
            let got = self.b.on_cancel(now, id);
            self.shared.handle_timeout(now);
            self.events(now);
            if got {
                let _ = self.resolve(id);
                if let Some(i) = self.waiters.iter().position(|w| w.id() == id) {
                    drop(self.waiters.swap_remove(i));
                }
            } else {
                assert!(
                    !self.live.contains_key(&id),
                    "a queued waiter would not cancel"
                );
            }
        }
        assert!(self.live.is_empty(), "waiters left behind: {:?}", self.live);
        assert_eq!(self.b.stats(), {
            let mut s = self.shared.stats();
            s.events_dropped = self.b.stats().events_dropped;
            s
        });
    }
}

impl Timed for Op {
    fn timed(&self) -> bool {
        !matches!(self, Op::WaitOut)
    }
}

crate::single_machine_target!("bulkhead_classes", Config);
