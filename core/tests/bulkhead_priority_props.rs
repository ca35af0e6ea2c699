//! Property tests for the bulkhead's classes and adaptive LIFO + CoDel: no lost waiter (every
//! queued call is promoted, shed or cancelled exactly once), the queue bound and the class
//! limits hold, the most important class queued is promoted first, and critical work is
//! never shed for room while less important work is queued nor shed by CoDel. Time may go
//! backwards; `max_wait` may be `Duration::MAX`.

use std::collections::HashMap;

use core::time::Duration;

use keel_core::bulkhead::{
    Admission, BulkheadConfig, BulkheadEvent, BulkheadPermit, Criticality, FifoSemaphore,
    QueueDiscipline, RejectReason, Release, WaiterId,
};
use keel_core::Instant;
use proptest::prelude::*;

#[path = "support/props.rs"]
mod props;

const QUEUE: usize = 6;

#[derive(Clone, Debug)]
enum Op {
    Request(Criticality),
    TryRequest(Criticality),
    Release(usize),
    Cancel(usize),
    Timeout,
    Resize(usize),
}

fn class() -> impl Strategy<Value = Criticality> {
    prop_oneof![
        Just(Criticality::Critical),
        Just(Criticality::Default),
        Just(Criticality::Sheddable)
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => class().prop_map(Op::Request),
        1 => class().prop_map(Op::TryRequest),
        4 => any::<usize>().prop_map(Op::Release),
        1 => any::<usize>().prop_map(Op::Cancel),
        2 => Just(Op::Timeout),
        1 => (0usize..6).prop_map(Op::Resize),
    ]
}

fn step() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => 0i64..4_000_000,
        1 => -1_000_000i64..0,
        1 => Just(i64::MAX),
    ]
}

/// What the test knows of a waiter still queued.
#[derive(Clone, Copy, Debug)]
struct Live {
    class: Criticality,
}

struct Tracker {
    live: HashMap<WaiterId, Live>,
    /// Every id ever resolved (promoted, shed or cancelled).
    resolved: HashMap<WaiterId, &'static str>,
}

impl Tracker {
    fn resolve(&mut self, id: WaiterId, how: &'static str) -> Result<Live, TestCaseError> {
        let live = self.live.remove(&id).ok_or_else(|| {
            TestCaseError::fail(format!(
                "{id} resolved ({how}) but not queued (earlier: {:?})",
                self.resolved.get(&id)
            ))
        })?;
        prop_assert!(
            self.resolved.insert(id, how).is_none(),
            "{id} resolved twice"
        );
        Ok(live)
    }

    fn queued(&self, class: Criticality) -> bool {
        self.live.values().any(|l| l.class == class)
    }

    fn most_important(&self) -> Option<Criticality> {
        self.live.values().map(|l| l.class).max()
    }
}

proptest! {
    #![proptest_config(props::config(512, "proptest-regressions/bulkhead_priority_props.txt"))]

    #[test]
    fn classes_and_codel_lose_no_waiter(
        max_concurrent in 1usize..5,
        max_queue in 1usize..=QUEUE,
        max_wait in prop_oneof![(1u64..20).prop_map(Duration::from_millis), Just(Duration::MAX)],
        reserved in prop_oneof![Just(0u8), 0u8..100],
        headroom in prop_oneof![Just(20u8), 0u8..100],
        codel in prop_oneof![
            Just(None),
            (1u64..10, 10u64..50).prop_map(|(t, i)| Some((Duration::from_millis(t), Duration::from_millis(i))))
        ],
        start in prop_oneof![Just(0u64), any::<u64>()],
        ops in proptest::collection::vec((op(), step()), 0..120),
    ) {
        let mut b = BulkheadConfig::builder()
            .max_concurrent(max_concurrent)
            .max_queue(max_queue)
            .max_wait(max_wait)
            .reserved_critical_percent(reserved)
            .sheddable_headroom_percent(headroom);
        if let Some((target, interval)) = codel {
            b = b.queue_discipline(QueueDiscipline::AdaptiveLifo { target, interval });
        }
        let config = b.build().unwrap();
        // max_queue never exceeds the ring (a larger one is a ConfigError, tests/bulkhead.rs).
        let mut bh: FifoSemaphore<QUEUE> =
            FifoSemaphore::new(config, Instant::from_nanos(start)).expect("max_queue <= QUEUE");
        let bound = max_queue.min(QUEUE);
        let mut limit = max_concurrent;
        let mut t = Tracker { live: HashMap::new(), resolved: HashMap::new() };
        let mut permits: Vec<BulkheadPermit> = vec![];
        let mut ids: Vec<WaiterId> = vec![];
        let mut raw = start;
        for (op, step) in ops {
            raw = if step >= 0 { raw.saturating_add(step as u64) } else { raw.saturating_sub(step.unsigned_abs()) };
            let now = Instant::from_nanos(raw);
            let before = bh.in_flight();
            let mut promoted: Option<WaiterId> = None;
            let mut critical_refused = false;
            match op {
                Op::Request(class) => match bh.acquire_with(now, class) {
                    Admission::Admitted(p) => {
                        prop_assert!(before < bh.class_limit(class), "admitted above its class limit");
                        permits.push(p);
                    }
                    Admission::Queued { waiter, .. } => {
                        let fresh = t.live.insert(waiter, Live { class }).is_none();
                        prop_assert!(fresh);
                        ids.push(waiter);
                    }
                    Admission::Rejected(r) => {
                        prop_assert_eq!(r.retry_at, None);
                        critical_refused = class == Criticality::Critical;
                        if let RejectReason::Priority { class: c } = r.reason {
                            prop_assert_eq!(c, class);
                        }
                    }
                },
                Op::TryRequest(class) => match bh.try_acquire_with(now, class) {
                    Ok(p) => permits.push(p),
                    Err(r) => {
                        critical_refused = class == Criticality::Critical
                            && r.reason != RejectReason::Full;
                        let known = matches!(r.reason, RejectReason::Full | RejectReason::Priority { .. });
                        prop_assert!(known);
                    }
                },
                Op::Release(i) => {
                    if !permits.is_empty() {
                        let p = permits.swap_remove(i % permits.len());
                        if let Release::Promoted { waiter, permit } = bh.on_release(now, p) {
                            promoted = Some(waiter);
                            permits.push(permit);
                        }
                    }
                }
                Op::Cancel(i) => {
                    if !ids.is_empty() {
                        let id = ids[i % ids.len()];
                        if bh.on_cancel(now, id) {
                            t.resolve(id, "cancelled")?;
                        }
                    }
                }
                Op::Timeout => {
                    bh.handle_timeout(now);
                    if let Some(at) = bh.poll_timeout() {
                        prop_assert!(at > now, "poll_timeout not after handle_timeout");
                        prop_assert!(at != Instant::MAX);
                    }
                }
                Op::Resize(n) => {
                    limit = n.max(1);
                    bh.set_max_concurrent(now, n);
                    while let Some((waiter, permit)) = bh.promote(now) {
                        permits.push(permit);
                        // Resolved with the event below.
                        let _ = waiter;
                    }
                }
            }
            // Events in order: sheds (sweep, push-out) then the promotion.
            for ev in core::iter::from_fn(|| bh.poll_event()) {
                match ev {
                    BulkheadEvent::Promoted { waiter } => {
                        let live = t.resolve(waiter, "promoted")?;
                        // The most important class still queued is never more important.
                        prop_assert!(t.most_important().is_none_or(|c| c <= live.class),
                            "{:?} promoted over a more important waiter", live.class);
                    }
                    BulkheadEvent::Expired { waiter } => {
                        t.resolve(waiter, "expired")?;
                    }
                    BulkheadEvent::Shed { waiter, reason } => {
                        let live = t.resolve(waiter, "shed")?;
                        match reason {
                            RejectReason::Priority { class } => {
                                prop_assert_eq!(class, live.class);
                                prop_assert!(class != Criticality::Critical, "critical pushed out");
                            }
                            RejectReason::QueueDelay { class } => {
                                prop_assert_eq!(class, live.class);
                                prop_assert!(class != Criticality::Critical, "CoDel shed critical work");
                                prop_assert!(codel.is_some());
                            }
                            other => prop_assert!(false, "unexpected shed reason {other:?}"),
                        }
                    }
                    other => prop_assert!(false, "unexpected event {other:?}"),
                }
            }
            if let Some(w) = promoted {
                prop_assert!(t.resolved.get(&w) == Some(&"promoted"));
            }
            if critical_refused {
                prop_assert!(!t.queued(Criticality::Sheddable) && !t.queued(Criticality::Default),
                    "critical refused while less important work is queued");
            }
            let s = bh.stats();
            prop_assert_eq!(s.events_dropped, 0);
            prop_assert_eq!(s.in_flight, permits.len());
            // Shrinking takes no permit back; growth only happens below the limit.
            prop_assert!(s.in_flight <= before || s.in_flight <= limit, "in flight above the limit");
            prop_assert_eq!(s.queue_len, t.live.len());
            prop_assert!(s.queue_len <= bound);
            prop_assert_eq!(s.queued, ids.len() as u64);
            prop_assert_eq!(
                s.admitted,
                s.critical.admitted + s.default.admitted + s.sheddable.admitted
            );
            prop_assert_eq!(s.shed(), s.critical.shed + s.default.shed + s.sheddable.shed);
            prop_assert_eq!(
                s.queued,
                s.critical.queued + s.default.queued + s.sheddable.queued
            );
        }
        // Every waiter still queued can be cancelled exactly once: none is lost.
        for id in ids {
            let was_live = t.live.contains_key(&id);
            prop_assert_eq!(bh.on_cancel(Instant::from_nanos(raw), id), was_live);
            if was_live { t.resolve(id, "cancelled")?; }
            while let Some(ev) = bh.poll_event() {
                prop_assert!(false, "a cancel at the last instant produced {ev:?}");
            }
        }
        prop_assert!(t.live.is_empty());
        prop_assert_eq!(bh.queue_len(), 0);
    }
}
