//! Property tests for the bulkhead against its reference model
//! (`keel_testkit::models::bulkhead`, shared with the fuzz target): the queue never exceeds its
//! bound, a waiter is never admitted at or after its deadline, in-flight never goes negative
//! or above the limit, FIFO promotion, and no input panics (time going back, `Duration::MAX`).

// The model is `keel_testkit::models::bulkhead`. keel-testkit is left out of the `no_std` test
// runs (`--cfg keel_no_testkit`, see core/Cargo.toml: it would turn keel-core's `std` feature on
// in the test build), so there the same source file is compiled into this test instead: it uses
// only keel-core's public API and std's collections (this test crate links std; keel-core is
// built without it). One model, two ways in.

use core::time::Duration;

#[cfg(keel_no_testkit)]
use bulkhead_model::{BulkheadModel, ModelAdmission, ModelEvent, ModelWaiter};
use keel_core::bulkhead::{
    Admission, BulkheadConfig, BulkheadEvent, BulkheadPermit, FifoSemaphore, Release, WaiterId,
};
use keel_core::{Instant, Rejected};
#[cfg(not(keel_no_testkit))]
use keel_testkit::models::bulkhead::{BulkheadModel, ModelAdmission, ModelEvent, ModelWaiter};
use proptest::prelude::*;

#[path = "support/props.rs"]
mod props;

#[cfg(keel_no_testkit)]
#[path = "../../testkit/src/models/bulkhead.rs"]
#[allow(dead_code, unreachable_pub)] // a library module here: getters this test does not call
mod bulkhead_model;

#[derive(Clone, Debug)]
enum Op {
    Request,
    TryRequest,
    Release(usize),
    Cancel(usize),
    Timeout,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => Just(Op::Request),
        1 => Just(Op::TryRequest),
        4 => any::<usize>().prop_map(Op::Release),
        1 => any::<usize>().prop_map(Op::Cancel),
        2 => Just(Op::Timeout),
    ]
}

fn step() -> impl Strategy<Value = i64> {
    prop_oneof![
        3 => 0i64..50,
        1 => -50i64..0,
        1 => Just(i64::MAX),
    ]
}

fn max_wait() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (1u64..100).prop_map(Duration::from_nanos),
        Just(Duration::MAX)
    ]
}

proptest! {
    #![proptest_config(props::config(512, "proptest-regressions/bulkhead_props.txt"))]

    #[test]
    fn bulkhead_matches_the_reference_model(
        max_concurrent in 1usize..4,
        max_queue in 0usize..6,
        max_wait in max_wait(),
        start in prop_oneof![Just(0u64), any::<u64>()],
        ops in proptest::collection::vec((op(), step()), 0..80),
    ) {
        let mut b = BulkheadConfig::builder().max_concurrent(max_concurrent).max_queue(max_queue);
        if max_queue > 0 { b = b.max_wait(max_wait); }
        let config = b.build().unwrap();
        let built = FifoSemaphore::<4>::new(config, Instant::from_nanos(start));
        // A queue the ring has no room for is refused, never cut down.
        prop_assert_eq!(built.is_err(), max_queue > 4);
        let Ok(mut bh) = built else { return Ok(()) };
        let mut model = BulkheadModel::new(&config, Instant::from_nanos(start)).expect("one class, FIFO");
        prop_assert_eq!(bh.queue_capacity(), max_queue);
        let mut permits: Vec<BulkheadPermit> = vec![];
        // The machine's waiter ids, paired with the model's names.
        let mut ids: Vec<(WaiterId, ModelWaiter)> = vec![];
        let name = |ids: &[(WaiterId, ModelWaiter)], w: ModelWaiter| ids.iter().find(|(_, m)| *m == w).map(|(id, _)| *id);
        let mut raw = start;
        for (op, step) in ops {
            raw = if step >= 0 { raw.saturating_add(step as u64) } else { raw.saturating_sub(step.unsigned_abs()) };
            let now = Instant::from_nanos(raw);
            match op {
                Op::Request => {
                    let got = bh.acquire(now);
                    let want = model.acquire(now);
                    match (&got, want) {
                        (Admission::Admitted(_), ModelAdmission::Admitted) => {}
                        (Admission::Queued { waiter, deadline }, ModelAdmission::Queued { waiter: m, deadline: d }) => {
                            prop_assert_eq!(*deadline, d);
                            prop_assert_eq!(*deadline, Some(model.newest() + max_wait).filter(|d| *d != Instant::MAX));
                            ids.push((*waiter, m));
                        }
                        (Admission::Rejected(r), ModelAdmission::Rejected(reason)) => {
                            prop_assert_eq!(r, &Rejected { reason, retry_at: None });
                        }
                        (got, want) => prop_assert!(false, "machine {:?}, model {:?}", got, want),
                    }
                    if let Admission::Admitted(p) = got { permits.push(p); }
                }
                Op::TryRequest => {
                    let want = model.try_acquire(now);
                    match bh.try_acquire(now) {
                        Ok(p) => {
                            prop_assert_eq!(want, Ok(()));
                            permits.push(p);
                        }
                        Err(r) => {
                            prop_assert_eq!(Err(r.reason), want);
                            prop_assert_eq!(r.retry_at, None);
                        }
                    }
                }
                Op::Release(i) => {
                    if !permits.is_empty() {
                        let p = permits.swap_remove(i % permits.len());
                        let promoted = model.on_release(now);
                        match bh.on_release(now, p) {
                            Release::Freed => prop_assert_eq!(promoted, None),
                            Release::Promoted { waiter, permit } => {
                                let m = promoted.expect("the model promotes too");
                                prop_assert_eq!(Some(waiter), name(&ids, m), "not the model's waiter");
                                permits.push(permit);
                            }
                        }
                    }
                }
                Op::Cancel(i) => {
                    if !ids.is_empty() {
                        let (id, m) = ids[i % ids.len()];
                        prop_assert_eq!(bh.on_cancel(now, id), model.on_cancel(now, m));
                    } else {
                        prop_assert!(!bh.on_cancel(now, fake_id()));
                        model.handle_timeout(now);
                    }
                }
                Op::Timeout => {
                    bh.handle_timeout(now);
                    model.handle_timeout(now);
                    if let Some(t) = bh.poll_timeout() {
                        prop_assert!(t > model.newest(), "poll_timeout not after handle_timeout");
                        prop_assert!(t != Instant::MAX, "poll_timeout returned the never sentinel");
                    }
                }
            }
            let evs: Vec<BulkheadEvent> = core::iter::from_fn(|| bh.poll_event()).collect();
            let want: Vec<BulkheadEvent> = core::iter::from_fn(|| model.poll_event())
                .map(|e| match e {
                    ModelEvent::Expired(w) => name(&ids, w).map(|waiter| BulkheadEvent::Expired { waiter }),
                    ModelEvent::Promoted(w) => name(&ids, w).map(|waiter| BulkheadEvent::Promoted { waiter }),
                })
                .collect::<Option<_>>()
                .expect("every waiter of the model has the machine's id");
            prop_assert_eq!(evs, want);
            let s = bh.stats();
            if let Err(e) = model.check(&s, bh.poll_timeout()) {
                prop_assert!(false, "the bulkhead disagrees with the model: {}", e);
            }
            prop_assert_eq!(s.in_flight, permits.len());
            prop_assert!(s.in_flight <= max_concurrent);
            prop_assert!(s.queue_len <= max_queue);
            // A waiter is never promoted at or after its deadline (the model's rule, restated).
            prop_assert!(model.queue().iter().all(|(_, d)| d.is_none_or(|d| d > model.newest())));
            prop_assert_eq!(s.queued, s.promoted + s.shed_timeout + s.cancelled + s.queue_len as u64);
        }
    }
}

fn fake_id() -> WaiterId {
    let config = BulkheadConfig::builder()
        .max_concurrent(1)
        .max_queue(1)
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    let mut bh: FifoSemaphore<1> =
        FifoSemaphore::new(config, Instant::ZERO).expect("max_queue fits the ring");
    let _p = bh.acquire(Instant::ZERO);
    match bh.acquire(Instant::ZERO) {
        Admission::Queued { waiter, .. } => waiter,
        other => panic!("{other:?}"),
    }
}

/// The shared form (`SharedBulkhead`, its queue the core's O(1) slab list) against the
/// `&mut` form, in lockstep: the same requests, releases, cancellations (dropped waiters) and
/// timeouts give the same answers, the same promoted waiters (collected by polling them),
/// the same expired ones, and the same counters.
#[cfg(feature = "std")]
mod shared_lockstep {
    use super::*;
    use core::task::{Context, Poll, Waker};
    use keel_core::bulkhead::RejectReason;
    use keel_core::sync::bulkhead::{Acquire, BulkheadGuard, BulkheadWaiter, SharedBulkhead};

    proptest! {
        #![proptest_config(props::config(512, "proptest-regressions/bulkhead_props.txt"))]

        #[test]
        fn the_shared_bulkhead_decides_like_the_mut_form(
            max_concurrent in 1usize..4,
            max_queue in 0usize..6,
            max_wait in max_wait(),
            ops in proptest::collection::vec((op(), 0u64..50), 0..120),
        ) {
            let mut b = BulkheadConfig::builder().max_concurrent(max_concurrent).max_queue(max_queue.min(4));
            if max_queue > 0 { b = b.max_wait(max_wait); }
            let config = b.build().unwrap();
            let start = Instant::from_secs(1);
            let mut bh: FifoSemaphore<4> = FifoSemaphore::new(config, start).expect("max_queue fits the ring");
            let shared = SharedBulkhead::new(config, start);
            let mut permits: Vec<BulkheadPermit> = vec![];
            let mut guards: Vec<BulkheadGuard> = vec![];
            let mut waiters: Vec<BulkheadWaiter> = vec![];
            let mut ids: Vec<WaiterId> = vec![];
            let mut cx = Context::from_waker(Waker::noop());
            let mut now = start;
            for (op, step) in ops {
                now += Duration::from_nanos(step);
                match op {
                    Op::Request => match (bh.acquire(now), shared.acquire(now)) {
                        (Admission::Admitted(p), Acquire::Ready(Ok(g))) => {
                            permits.push(p);
                            guards.push(g);
                        }
                        (Admission::Queued { waiter, .. }, Acquire::Wait(w)) => {
                            prop_assert_eq!(w.id(), waiter);
                            ids.push(waiter);
                            waiters.push(w);
                        }
                        (Admission::Rejected(r), Acquire::Ready(Err(e))) => prop_assert_eq!(e, r),
                        (a, b) => prop_assert!(false, "request: {:?} vs {:?}", a, b),
                    },
                    Op::TryRequest => {
                        match (bh.try_acquire(now), shared.try_acquire(now)) {
                            (Ok(p), Ok(g)) => {
                                permits.push(p);
                                guards.push(g);
                            }
                            (Err(r), Err(e)) => prop_assert_eq!(e, r),
                            (a, b) => prop_assert!(false, "try_request: {:?} vs {:?}", a, b),
                        }
                    }
                    Op::Release(i) if !permits.is_empty() => {
                        let p = permits.swap_remove(i % permits.len());
                        let g = guards.swap_remove(i % guards.len());
                        g.release(now);
                        if let Release::Promoted { waiter, permit } = bh.on_release(now, p) {
                            permits.push(permit);
                            let k = waiters.iter().position(|w| w.id() == waiter);
                            prop_assert!(k.is_some(), "shared form lost waiter {}", waiter);
                            let mut w = waiters.swap_remove(k.unwrap_or(0));
                            match w.poll(&mut cx, now) {
                                Poll::Ready(Ok(g)) => guards.push(g),
                                other => prop_assert!(false, "waiter {} not granted: {:?}", waiter, other),
                            }
                        }
                    }
                    Op::Cancel(i) if !ids.is_empty() => {
                        let id = ids[i % ids.len()];
                        let _ = bh.on_cancel(now, id);
                        // `on_cancel(now, ..)` expires at `now` first; a dropped waiter has no
                        // `now`, so the shared form sees the time first (a waiter dropped after
                        // its deadline counts as expired in both).
                        shared.handle_timeout(now);
                        if let Some(k) = waiters.iter().position(|w| w.id() == id) {
                            drop(waiters.swap_remove(k));
                        }
                    }
                    Op::Timeout => {
                        bh.handle_timeout(now);
                    }
                    Op::Release(_) | Op::Cancel(_) => {
                        // Nothing to release or cancel: both still see the time.
                        bh.handle_timeout(now);
                    }
                }
                while bh.poll_event().is_some() {}
                // Both forms have expired at `now`: the shared waiters the `&mut` form expired
                // answer WaitedTooLong, the others are still pending.
                let mut k = 0;
                while k < waiters.len() {
                    match waiters[k].poll(&mut cx, now) {
                        Poll::Ready(Err(e)) => {
                            prop_assert_eq!(e.reason, RejectReason::WaitedTooLong);
                            drop(waiters.swap_remove(k));
                        }
                        Poll::Pending => k += 1,
                        Poll::Ready(Ok(_)) => prop_assert!(false, "a waiter granted without a release"),
                    }
                }
                let mut s = bh.stats();
                let mut t = shared.stats();
                s.events_dropped = 0;
                t.events_dropped = 0;
                prop_assert_eq!(s, t, "counters disagree");
                prop_assert_eq!(waiters.len(), s.queue_len);
                prop_assert_eq!(guards.len(), permits.len());
            }
        }
    }
}
