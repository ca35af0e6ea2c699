//! Scenario tests for the bulkhead's priority classes ([`Criticality`]) and its adaptive LIFO +
//! CoDel queue discipline, on a simulated clock.

use core::time::Duration;

use keel_core::bulkhead::{
    Admission, BulkheadConfig, BulkheadEvent, BulkheadPermit, Criticality, FifoSemaphore,
    QueueDiscipline, RejectReason, Release, WaiterId,
};
use keel_core::{ConfigError, Instant};

const T0: Instant = Instant::from_secs(10);
const CRITICAL: Criticality = Criticality::Critical;
const DEFAULT: Criticality = Criticality::Default;
const SHEDDABLE: Criticality = Criticality::Sheddable;

fn ms(n: u64) -> Instant {
    T0 + Duration::from_millis(n)
}

fn admitted(a: Admission) -> BulkheadPermit {
    match a {
        Admission::Admitted(p) => p,
        other => panic!("expected Admitted, got {other:?}"),
    }
}

fn queued(a: Admission) -> WaiterId {
    match a {
        Admission::Queued { waiter, .. } => waiter,
        other => panic!("expected Queued, got {other:?}"),
    }
}

fn rejected(a: Admission) -> RejectReason {
    match a {
        Admission::Rejected(r) => r.reason,
        other => panic!("expected Rejected, got {other:?}"),
    }
}

fn promoted(r: Release) -> (WaiterId, BulkheadPermit) {
    match r {
        Release::Promoted { waiter, permit } => (waiter, permit),
        Release::Freed => panic!("expected a promotion"),
    }
}

fn events<const Q: usize>(bh: &mut FifoSemaphore<Q>) -> Vec<BulkheadEvent> {
    core::iter::from_fn(|| bh.poll_event()).collect()
}

fn lifo() -> QueueDiscipline {
    QueueDiscipline::AdaptiveLifo {
        target: Duration::from_millis(5),
        interval: Duration::from_millis(100),
    }
}

#[test]
fn config_rejects_bad_shares_and_codel_settings() {
    let b = || {
        BulkheadConfig::builder()
            .max_queue(4)
            .max_wait(Duration::from_secs(1))
    };
    assert!(matches!(
        b().reserved_critical_percent(100).build(),
        Err(ConfigError::OutOfRange {
            field: "reserved_critical_percent",
            ..
        })
    ));
    assert!(matches!(
        b().sheddable_headroom_percent(100).build(),
        Err(ConfigError::OutOfRange {
            field: "sheddable_headroom_percent",
            ..
        })
    ));
    assert!(matches!(
        BulkheadConfig::builder().queue_discipline(lifo()).build(),
        Err(ConfigError::Conflict {
            field: "queue_discipline",
            other: "max_queue",
            ..
        })
    ));
    let codel = |target, interval| {
        b().queue_discipline(QueueDiscipline::AdaptiveLifo { target, interval })
            .build()
    };
    assert_eq!(
        codel(Duration::ZERO, Duration::from_millis(100)),
        Err(ConfigError::Zero {
            field: "codel_target"
        })
    );
    assert_eq!(
        codel(Duration::from_millis(5), Duration::ZERO),
        Err(ConfigError::Zero {
            field: "codel_interval"
        })
    );
    assert_eq!(
        codel(Duration::from_millis(200), Duration::from_millis(100)),
        Err(ConfigError::InvertedRange {
            min: "codel_target",
            max: "codel_interval"
        })
    );
    let ok = codel(Duration::MAX, Duration::MAX).expect("huge but ordered");
    assert_eq!(ok.reserved_critical_percent(), 0);
    assert_eq!(ok.sheddable_headroom_percent(), 20);
    let d = BulkheadConfig::default();
    assert_eq!(d.queue_discipline(), QueueDiscipline::Fifo);
    assert_eq!(BulkheadConfig::builder().build(), Ok(d));
}

/// The getters return what the builder was given, not the defaults (the defaults above are 0
/// and 20, so a getter that ignored its field could still pass them).
#[test]
fn config_getters_return_the_built_values() {
    let lifo = QueueDiscipline::AdaptiveLifo {
        target: Duration::from_millis(7),
        interval: Duration::from_millis(70),
    };
    let c = BulkheadConfig::builder()
        .max_concurrent(40)
        .max_queue(6)
        .max_wait(Duration::from_millis(250))
        .reserved_critical_percent(30)
        .sheddable_headroom_percent(45)
        .queue_discipline(lifo)
        .build()
        .expect("valid config");
    assert_eq!(
        (
            c.max_concurrent(),
            c.max_queue(),
            c.max_wait(),
            c.reserved_critical_percent(),
            c.sheddable_headroom_percent(),
            c.queue_discipline(),
        ),
        (40, 6, Duration::from_millis(250), 30, 45, lifo)
    );
}

#[test]
fn each_class_stops_at_its_own_limit() {
    let config = BulkheadConfig::builder()
        .max_concurrent(10)
        .reserved_critical_percent(20)
        .sheddable_headroom_percent(50)
        .build()
        .unwrap();
    let mut bh: FifoSemaphore = FifoSemaphore::new(config, T0).expect("max_queue fits the ring");
    assert_eq!(bh.class_limit(CRITICAL), 10);
    assert_eq!(bh.class_limit(DEFAULT), 8);
    assert_eq!(bh.class_limit(SHEDDABLE), 5);
    let mut held = vec![];
    for _ in 0..5 {
        held.push(bh.try_acquire_with(T0, SHEDDABLE).unwrap());
    }
    let shed = bh.try_acquire_with(T0, SHEDDABLE).unwrap_err();
    assert_eq!(shed.reason, RejectReason::Priority { class: SHEDDABLE });
    assert_eq!(shed.retry_at, None);
    for _ in 0..3 {
        held.push(bh.try_acquire(T0).unwrap());
    }
    assert_eq!(
        rejected(bh.acquire(T0)),
        RejectReason::Priority { class: DEFAULT }
    );
    // The reserved share is critical work's.
    held.push(admitted(bh.acquire_with(T0, CRITICAL)));
    held.push(bh.try_acquire_with(T0, CRITICAL).unwrap());
    assert_eq!(
        bh.try_acquire_with(T0, CRITICAL).unwrap_err().reason,
        RejectReason::Full
    );
    let s = bh.stats();
    assert_eq!((s.critical.admitted, s.critical.shed), (2, 1));
    assert_eq!((s.default.admitted, s.default.shed), (3, 1));
    assert_eq!((s.sheddable.admitted, s.sheddable.shed), (5, 1));
    assert_eq!((s.shed_priority, s.shed_full, s.shed()), (2, 1, 3));
    assert_eq!(s.class(SHEDDABLE), s.sheddable);
    assert_eq!(s.admitted, 10);
}

#[test]
fn small_limits_keep_a_slot_for_every_class() {
    // 1 slot: 99 % reserved rounds down to 0, the watermark up to 1: nobody is locked out.
    let config = BulkheadConfig::builder()
        .max_concurrent(1)
        .reserved_critical_percent(99)
        .sheddable_headroom_percent(99)
        .build()
        .unwrap();
    let mut bh: FifoSemaphore = FifoSemaphore::new(config, T0).expect("max_queue fits the ring");
    for class in [CRITICAL, DEFAULT, SHEDDABLE] {
        assert_eq!(bh.class_limit(class), 1);
        let p = bh.try_acquire_with(T0, class).unwrap();
        let _ = bh.on_release(T0, p);
    }
    // Huge limits do not overflow the share arithmetic.
    let config = BulkheadConfig::builder()
        .max_concurrent(usize::MAX)
        .reserved_critical_percent(10)
        .build()
        .unwrap();
    let bh: FifoSemaphore = FifoSemaphore::new(config, T0).expect("max_queue fits the ring");
    assert!(bh.class_limit(DEFAULT) < usize::MAX);
    assert!(bh.class_limit(SHEDDABLE) <= bh.class_limit(DEFAULT));
}

#[test]
fn untagged_calls_behave_as_before_with_the_default_config() {
    let config = BulkheadConfig::builder()
        .max_concurrent(10)
        .build()
        .unwrap();
    let mut bh: FifoSemaphore = FifoSemaphore::new(config, T0).expect("max_queue fits the ring");
    for _ in 0..10 {
        let _ = admitted(bh.acquire(T0));
    }
    assert_eq!(rejected(bh.acquire(T0)), RejectReason::Full);
}

#[test]
fn a_release_promotes_the_most_important_class_first() {
    let config = BulkheadConfig::builder()
        .max_concurrent(1)
        .max_queue(3)
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    let mut bh: FifoSemaphore<3> = FifoSemaphore::new(config, T0).expect("max_queue fits the ring");
    let p = admitted(bh.acquire(T0));
    let s = queued(bh.acquire_with(ms(1), SHEDDABLE));
    let d = queued(bh.acquire_with(ms(2), DEFAULT));
    let c = queued(bh.acquire_with(ms(3), CRITICAL));
    let (w, p) = promoted(bh.on_release(ms(4), p));
    assert_eq!(w, c);
    let (w, p) = promoted(bh.on_release(ms(5), p));
    assert_eq!(w, d);
    let (w, p) = promoted(bh.on_release(ms(6), p));
    assert_eq!(w, s);
    assert_eq!(bh.on_release(ms(7), p), Release::Freed);
}

#[test]
fn a_critical_call_runs_past_queued_sheddable_work_when_there_is_room() {
    let config = BulkheadConfig::builder()
        .max_concurrent(2)
        .max_queue(2)
        .max_wait(Duration::from_secs(1))
        .sheddable_headroom_percent(50)
        .build()
        .unwrap();
    let mut bh: FifoSemaphore<2> = FifoSemaphore::new(config, T0).expect("max_queue fits the ring");
    let _held = admitted(bh.acquire_with(T0, SHEDDABLE));
    // The watermark is 1: the next sheddable call waits, though a slot is free.
    let s = queued(bh.acquire_with(T0, SHEDDABLE));
    let _c = admitted(bh.acquire_with(T0, CRITICAL));
    assert!(bh.on_cancel(T0, s));
}

#[test]
fn a_full_queue_sheds_its_least_important_waiter_for_a_more_important_call() {
    let config = BulkheadConfig::builder()
        .max_concurrent(1)
        .max_queue(2)
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    let mut bh: FifoSemaphore<2> = FifoSemaphore::new(config, T0).expect("max_queue fits the ring");
    let p = admitted(bh.acquire(T0));
    let d = queued(bh.acquire_with(ms(1), DEFAULT));
    let s = queued(bh.acquire_with(ms(2), SHEDDABLE));
    // Full: a critical call pushes out the sheddable one, then the default one.
    let c1 = queued(bh.acquire_with(ms(3), CRITICAL));
    assert_eq!(
        events(&mut bh),
        [BulkheadEvent::Shed {
            waiter: s,
            reason: RejectReason::Priority { class: SHEDDABLE }
        }]
    );
    let c2 = queued(bh.acquire_with(ms(4), CRITICAL));
    assert_eq!(
        events(&mut bh),
        [BulkheadEvent::Shed {
            waiter: d,
            reason: RejectReason::Priority { class: DEFAULT }
        }]
    );
    // Nothing below critical is left: the next calls are refused, not pushed out.
    assert_eq!(
        rejected(bh.acquire_with(ms(5), CRITICAL)),
        RejectReason::QueueFull
    );
    assert_eq!(
        rejected(bh.acquire_with(ms(5), SHEDDABLE)),
        RejectReason::QueueFull
    );
    assert!(!bh.on_cancel(ms(5), s), "a pushed-out waiter is gone");
    let s_stats = bh.stats();
    assert_eq!(s_stats.sheddable.shed, 2);
    assert_eq!(s_stats.default.shed, 1);
    assert_eq!(s_stats.critical.shed, 1);
    assert_eq!(s_stats.shed_priority, 2);
    let (w, p) = promoted(bh.on_release(ms(6), p));
    assert_eq!(w, c1);
    let (w, _) = promoted(bh.on_release(ms(7), p));
    assert_eq!(w, c2);
}

/// A push-out's `Shed` event goes into the event ring like any other: with the ring full (room
/// for `QUEUE = 1` event, not drained), the oldest event is dropped and counted.
#[test]
fn a_push_out_into_a_full_event_ring_counts_the_dropped_event() {
    let config = BulkheadConfig::builder()
        .max_concurrent(1)
        .max_queue(1)
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    let mut bh: FifoSemaphore<1> = FifoSemaphore::new(config, T0).expect("max_queue fits the ring");
    let _p = admitted(bh.acquire(T0));
    let s = queued(bh.acquire_with(ms(1), SHEDDABLE));
    let d = queued(bh.acquire_with(ms(2), DEFAULT));
    assert_eq!(bh.stats().events_dropped, 0, "one event, room for one");
    let _c = queued(bh.acquire_with(ms(3), CRITICAL));
    assert_eq!(bh.stats().events_dropped, 1, "the shed of {s} was dropped");
    assert_eq!(
        events(&mut bh),
        [BulkheadEvent::Shed {
            waiter: d,
            reason: RejectReason::Priority { class: DEFAULT }
        }]
    );
}

#[test]
fn the_reason_names_the_class() {
    let r = RejectReason::Priority { class: SHEDDABLE };
    assert_eq!(r.as_str(), "priority");
    assert!(r.to_string().contains("sheddable"), "{r}");
    let r = RejectReason::QueueDelay { class: DEFAULT };
    assert_eq!(r.as_str(), "queue_delay");
    assert!(r.to_string().contains("default"), "{r}");
    assert_eq!(CRITICAL.to_string(), "critical");
    assert!(SHEDDABLE < DEFAULT && DEFAULT < CRITICAL);
}

#[test]
fn a_grown_limit_promotes_waiters_and_a_shrunk_one_takes_nothing_back() {
    let config = BulkheadConfig::builder()
        .max_concurrent(2)
        .max_queue(4)
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    let mut bh: FifoSemaphore<4> = FifoSemaphore::new(config, T0).expect("max_queue fits the ring");
    let a = admitted(bh.acquire(T0));
    let b = admitted(bh.acquire(T0));
    let w1 = queued(bh.acquire(T0));
    let w2 = queued(bh.acquire(T0));
    assert!(bh.promote(ms(1)).is_none(), "no room yet");
    bh.set_max_concurrent(ms(1), 3);
    assert_eq!(bh.promote(ms(1)).map(|(w, _)| w), Some(w1));
    assert!(bh.promote(ms(1)).is_none());
    bh.set_max_concurrent(ms(2), 0);
    assert_eq!(bh.config().max_concurrent(), 1, "zero reads as one");
    assert_eq!(bh.in_flight(), 3);
    // Releases above the new limit free nothing for the waiter.
    assert_eq!(bh.on_release(ms(3), a), Release::Freed);
    assert_eq!(bh.on_release(ms(3), b), Release::Freed);
    assert_eq!(bh.in_flight(), 1);
    assert_eq!(bh.queue_len(), 1);
    assert!(bh.on_cancel(ms(3), w2));
}

/// A bulkhead with adaptive LIFO: 1 slot, a queue of 16, `max_wait` 1 s, CoDel 5 ms / 100 ms.
fn lifo_bulkhead() -> FifoSemaphore<16> {
    let config = BulkheadConfig::builder()
        .max_concurrent(1)
        .max_queue(16)
        .max_wait(Duration::from_secs(1))
        .queue_discipline(lifo())
        .build()
        .unwrap();
    FifoSemaphore::new(config, T0).expect("max_queue fits the ring")
}

#[test]
fn adaptive_lifo_is_fifo_while_the_queue_is_healthy() {
    let mut bh = lifo_bulkhead();
    let p = admitted(bh.acquire(T0));
    let a = queued(bh.acquire(ms(0)));
    let b = queued(bh.acquire(ms(1)));
    // Short sojourns: FIFO.
    let (w, p) = promoted(bh.on_release(ms(2), p));
    assert_eq!(w, a);
    let (w, _) = promoted(bh.on_release(ms(3), p));
    assert_eq!(w, b);
    assert_eq!(bh.poll_timeout(), None);
}

#[test]
fn a_standing_queue_turns_lifo_and_sheds_its_stale_waiters() {
    let mut bh = lifo_bulkhead();
    let mut p = admitted(bh.acquire(T0));
    // Each call holds the slot 10 ms and one arrives every 5 ms: the queue stands.
    let mut t = 0;
    let mut first = None;
    let mut arm_at = None;
    while t < 100 {
        let w = queued(bh.acquire(ms(t)));
        first.get_or_insert(w);
        let _ = queued(bh.acquire(ms(t + 5)));
        t += 10;
        let (_, next) = promoted(bh.on_release(ms(t), p));
        p = next;
        // The first promotion over the target arms CoDel's first_above_time.
        arm_at.get_or_insert(t);
    }
    assert!(
        bh.stats().shed_queue_delay == 0,
        "nothing shed before the interval"
    );
    let _ = events(&mut bh);
    let armed = arm_at.unwrap();
    // Standing at armed + 100 ms: the next input sheds every waiter queued 5 ms or longer,
    // and the next promotion is the newest waiter.
    let standing = ms(armed + 100);
    let newest = queued(bh.acquire(standing));
    let ev = events(&mut bh);
    assert!(
        !ev.is_empty(),
        "stale waiters are shed once the queue stands"
    );
    for e in &ev {
        assert!(
            matches!(
                e,
                BulkheadEvent::Shed {
                    reason: RejectReason::QueueDelay { class: DEFAULT },
                    ..
                }
            ),
            "{e:?}"
        );
    }
    assert_eq!(bh.queue_len(), 1, "only the fresh waiter is left");
    assert!(bh.stats().shed_queue_delay > 0);
    assert!(!bh.on_cancel(standing, first.unwrap()));
    // The fresh one expires for its queue delay at standing + 5 ms, unless promoted first.
    assert_eq!(bh.poll_timeout(), Some(standing + Duration::from_millis(5)));
    let also = queued(bh.acquire(standing + Duration::from_millis(1)));
    let (w, p) = promoted(bh.on_release(standing + Duration::from_millis(2), p));
    assert_eq!(w, also, "LIFO while standing");
    bh.handle_timeout(standing + Duration::from_millis(5));
    assert_eq!(
        events(&mut bh),
        [
            BulkheadEvent::Promoted { waiter: also },
            BulkheadEvent::Shed {
                waiter: newest,
                reason: RejectReason::QueueDelay { class: DEFAULT }
            }
        ]
    );
    // Shed empty, the queue still stands: a waiter queued now is shed at the target.
    let t1 = standing + Duration::from_millis(6);
    let z = queued(bh.acquire(t1));
    assert_eq!(bh.poll_timeout(), Some(t1 + Duration::from_millis(5)));
    assert!(bh.on_cancel(t1, z));
    // A slot frees with nobody waiting: healthy again, FIFO, nothing shed for delay.
    assert_eq!(bh.on_release(t1, p), Release::Freed);
    let p = admitted(bh.acquire(t1));
    let x = queued(bh.acquire(t1));
    let y = queued(bh.acquire(t1));
    let later = t1 + Duration::from_millis(50);
    bh.handle_timeout(later);
    assert_eq!(bh.queue_len(), 2, "healthy queue: only max_wait sheds");
    let (w, _) = promoted(bh.on_release(later, p));
    assert_eq!(w, x);
    assert!(bh.on_cancel(later, y));
}

#[test]
fn codel_never_sheds_critical_waiters() {
    let mut bh = lifo_bulkhead();
    let mut p = admitted(bh.acquire(T0));
    let mut t = 0;
    // Arm CoDel with a standing queue of default work.
    while t < 40 {
        let _ = queued(bh.acquire(ms(t)));
        let _ = queued(bh.acquire(ms(t + 5)));
        t += 10;
        p = promoted(bh.on_release(ms(t), p)).1;
    }
    let c = queued(bh.acquire_with(ms(t), CRITICAL));
    let s = queued(bh.acquire_with(ms(t), SHEDDABLE));
    bh.handle_timeout(ms(t + 500));
    assert!(bh.stats().shed_queue_delay > 0);
    assert!(
        !bh.on_cancel(ms(t + 500), s),
        "stale sheddable work is shed"
    );
    assert_eq!(bh.stats().critical.shed, 0);
    assert!(
        bh.on_cancel(ms(t + 500), c),
        "critical work waits its max_wait"
    );
    let _ = p;
}

#[test]
#[cfg(feature = "std")]
fn shared_form_takes_classes_and_pushes_out_less_important_waiters() {
    use keel_core::sync::bulkhead::{Acquire, SharedBulkhead};
    use std::task::{Context, Poll, Waker};

    let config = BulkheadConfig::builder()
        .max_concurrent(1)
        .max_queue(1)
        .max_wait(Duration::from_secs(1))
        .sheddable_headroom_percent(50)
        .build()
        .unwrap();
    let bh = SharedBulkhead::new(config, T0);
    let waker = Waker::noop();
    let mut cx = Context::from_waker(waker);
    let guard = bh
        .try_acquire_with(T0, SHEDDABLE)
        .expect("the watermark is at least one slot");
    assert_eq!(
        bh.try_acquire_with(T0, DEFAULT).unwrap_err().reason,
        RejectReason::Full
    );
    let Acquire::Wait(mut s) = bh.acquire_with(T0, SHEDDABLE) else {
        panic!("queued")
    };
    assert!(s.poll(&mut cx, T0).is_pending());
    let Acquire::Wait(mut c) = bh.acquire_with(ms(1), CRITICAL) else {
        panic!("queued, pushing the sheddable waiter out")
    };
    match s.poll(&mut cx, ms(1)) {
        Poll::Ready(Err(r)) => assert_eq!(r.reason, RejectReason::Priority { class: SHEDDABLE }),
        other => panic!("expected a push-out, got {other:?}"),
    }
    drop(s);
    drop(guard);
    assert!(matches!(c.poll(&mut cx, ms(2)), Poll::Ready(Ok(_))));
    let st = bh.stats();
    assert_eq!((st.critical.admitted, st.sheddable.shed), (1, 1));
    assert_eq!(st.queue_len, 0);
}

/// Armed but not yet standing: the timer is the instant the queue becomes standing (the oldest
/// non-critical waiter is past the target long before), not that waiter's own target; a second
/// slow promotion does not re-arm (push back) `first_above_time`; and the queue stands at that
/// instant exactly.
#[test]
fn an_armed_queue_times_out_when_it_starts_standing() {
    let mut bh = lifo_bulkhead();
    let p = admitted(bh.acquire(ms(0)));
    let a = queued(bh.acquire(ms(0)));
    let b = queued(bh.acquire(ms(0)));
    let c = queued(bh.acquire(ms(0)));
    // A 10 ms sojourn, over the 5 ms target: CoDel arms first_above_time = 10 + 100 ms.
    let (w, p) = promoted(bh.on_release(ms(10), p));
    assert_eq!(w, a);
    // A second slow dequeue keeps the first arming.
    let (w, _p) = promoted(bh.on_release(ms(20), p));
    assert_eq!(w, b);
    let _ = events(&mut bh);
    // `c` passed its 5 ms target long ago, but the queue stands only from 110 ms (its
    // max_wait deadline is at 1 s).
    assert_eq!(bh.poll_timeout(), Some(ms(110)));
    bh.handle_timeout(ms(109));
    assert_eq!(
        bh.queue_len(),
        1,
        "not standing yet: nothing shed for delay"
    );
    bh.handle_timeout(ms(110));
    assert_eq!(
        events(&mut bh),
        [BulkheadEvent::Shed {
            waiter: c,
            reason: RejectReason::QueueDelay { class: DEFAULT }
        }]
    );
}

/// A sojourn of exactly the target counts as above it (CoDel: "at or above target" arms).
#[test]
fn a_sojourn_of_exactly_the_target_arms_codel() {
    let mut bh = lifo_bulkhead();
    let p = admitted(bh.acquire(ms(0)));
    let _a = queued(bh.acquire(ms(0)));
    let b = queued(bh.acquire(ms(0)));
    let (_, _p) = promoted(bh.on_release(ms(5), p));
    assert_eq!(bh.poll_timeout(), Some(ms(105)), "armed at 5 + 100 ms");
    bh.handle_timeout(ms(105));
    assert!(!bh.on_cancel(ms(105), b), "shed for its queue delay");
}

/// `promote` with no free slot and nobody queued is not CoDel's "queue empty at dequeue": no
/// slot was free, so the queue is not shown healthy and CoDel stays armed.
#[test]
fn a_promote_without_a_free_slot_leaves_codel_armed() {
    let mut bh = lifo_bulkhead();
    let p = admitted(bh.acquire(ms(0)));
    let _a = queued(bh.acquire(ms(0)));
    // Armed at 10 + 100 ms; the promoted call holds the only slot.
    let (_, _p) = promoted(bh.on_release(ms(10), p));
    assert!(bh.promote(ms(20)).is_none(), "no slot and nobody waiting");
    let c = queued(bh.acquire(ms(20)));
    assert_eq!(bh.poll_timeout(), Some(ms(110)), "still armed");
    bh.handle_timeout(ms(110));
    assert!(!bh.on_cancel(ms(110), c), "shed once the queue stands");
}

/// Near the end of the clock, a standing queue keeps a waiter whose shed instant (`enqueued +
/// target`) saturated at `Instant::MAX`: that instant never comes, even at `Instant::MAX`.
#[test]
fn a_codel_shed_instant_saturated_at_the_end_of_the_clock_never_comes() {
    let config = BulkheadConfig::builder()
        .max_concurrent(1)
        .max_queue(4)
        .max_wait(Duration::MAX)
        .queue_discipline(lifo())
        .build()
        .unwrap();
    let end = Instant::MAX;
    let t = |before_end_ms: u64| end - Duration::from_millis(before_end_ms);
    let mut bh: FifoSemaphore<4> = FifoSemaphore::new(config, t(1000)).unwrap();
    let p = admitted(bh.acquire(t(1000)));
    let _a = queued(bh.acquire(t(1000)));
    // Armed at t(990) + 100 ms = t(890): standing from then on.
    let (_, _p) = promoted(bh.on_release(t(990), p));
    let b = queued(bh.acquire(t(1)));
    assert_eq!(bh.poll_timeout(), None, "b's shed instant saturated");
    let _ = events(&mut bh);
    bh.handle_timeout(end);
    assert!(events(&mut bh).is_empty());
    assert!(bh.on_cancel(end, b), "still queued at the end of the clock");
}

/// The shared form's `set_max_concurrent`: growing admits the waiters that now fit, the most
/// important class first, and leaves the rest queued; shrinking takes no slot back.
#[test]
#[cfg(feature = "std")]
fn shared_form_resize_admits_the_waiters_that_fit_most_important_first() {
    use core::num::NonZeroUsize;
    use keel_core::sync::bulkhead::{Acquire, SharedBulkhead};
    use std::task::{Context, Poll, Waker};

    let config = BulkheadConfig::builder()
        .max_concurrent(1)
        .max_queue(4)
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    let bh = SharedBulkhead::new(config, T0);
    let mut cx = Context::from_waker(Waker::noop());
    let _g = bh.try_acquire(T0).expect("a free slot");
    let wait = |a: Acquire| match a {
        Acquire::Wait(w) => w,
        Acquire::Ready(r) => panic!("expected to queue, got {r:?}"),
    };
    let mut d1 = wait(bh.acquire_with(T0, DEFAULT));
    let mut d2 = wait(bh.acquire_with(T0, DEFAULT));
    let mut c1 = wait(bh.acquire_with(ms(1), CRITICAL));
    bh.set_max_concurrent(NonZeroUsize::new(3).unwrap());
    assert_eq!((bh.stats().in_flight, bh.stats().queue_len), (3, 1));
    let _c = match c1.poll(&mut cx, ms(2)) {
        Poll::Ready(Ok(g)) => g,
        other => panic!("critical first: {other:?}"),
    };
    let _d = match d1.poll(&mut cx, ms(2)) {
        Poll::Ready(Ok(g)) => g,
        other => panic!("then the oldest default waiter: {other:?}"),
    };
    assert!(d2.poll(&mut cx, ms(2)).is_pending(), "no room left");
    bh.set_max_concurrent(NonZeroUsize::MIN);
    assert_eq!(bh.stats().in_flight, 3, "shrinking revokes nothing");
    assert_eq!(bh.config().max_concurrent(), 1);
    assert!(d2.poll(&mut cx, ms(3)).is_pending());
}

/// The shared form's `set_max_concurrent` promotes at the newest instant the bulkhead has seen:
/// a standing adaptive-LIFO queue hands the new slot to its newest waiter.
#[test]
#[cfg(feature = "std")]
fn shared_form_resize_promotes_lifo_while_the_queue_stands() {
    use core::num::NonZeroUsize;
    use keel_core::sync::bulkhead::{Acquire, SharedBulkhead};
    use std::task::{Context, Poll, Waker};

    let config = BulkheadConfig::builder()
        .max_concurrent(1)
        .max_queue(4)
        .max_wait(Duration::from_secs(1))
        .queue_discipline(lifo())
        .build()
        .unwrap();
    let bh = SharedBulkhead::new(config, T0);
    let mut cx = Context::from_waker(Waker::noop());
    let wait = |a: Acquire| match a {
        Acquire::Wait(w) => w,
        Acquire::Ready(r) => panic!("expected to queue, got {r:?}"),
    };
    let g = bh.try_acquire(ms(0)).expect("a free slot");
    let mut a = wait(bh.acquire(ms(0)));
    // A 10 ms sojourn arms CoDel: standing from 110 ms.
    g.release(ms(10));
    let _ga = match a.poll(&mut cx, ms(10)) {
        Poll::Ready(Ok(g)) => g,
        other => panic!("promoted: {other:?}"),
    };
    let mut b = wait(bh.acquire(ms(200)));
    let mut c = wait(bh.acquire(ms(201)));
    bh.set_max_concurrent(NonZeroUsize::new(2).unwrap());
    let _gc = match c.poll(&mut cx, ms(201)) {
        Poll::Ready(Ok(g)) => g,
        other => panic!("LIFO: the newest waiter gets the new slot, got {other:?}"),
    };
    assert!(b.poll(&mut cx, ms(201)).is_pending());
}

/// `QueueDiscipline::adaptive_lifo()` is CoDel's (and wangle's) 5 ms target over 100 ms.
#[test]
fn adaptive_lifo_defaults_are_codels() {
    use keel_core::bulkhead::{DEFAULT_CODEL_INTERVAL, DEFAULT_CODEL_TARGET};
    assert_eq!(DEFAULT_CODEL_TARGET, Duration::from_millis(5));
    assert_eq!(DEFAULT_CODEL_INTERVAL, Duration::from_millis(100));
    assert_eq!(
        QueueDiscipline::adaptive_lifo(),
        QueueDiscipline::AdaptiveLifo {
            target: DEFAULT_CODEL_TARGET,
            interval: DEFAULT_CODEL_INTERVAL,
        }
    );
    assert_eq!(lifo(), QueueDiscipline::adaptive_lifo());
}

/// The class labels are part of the API (metrics labels): each is pinned, and `Display` is
/// the label.
#[test]
fn criticality_labels_are_stable() {
    for (class, label) in [
        (CRITICAL, "critical"),
        (DEFAULT, "default"),
        (SHEDDABLE, "sheddable"),
    ] {
        assert_eq!(class.as_str(), label);
        assert_eq!(class.to_string(), label);
    }
}

/// An adaptive-LIFO queue CoDel has not armed (short sojourns) is timed by `max_wait` only.
#[test]
fn an_unarmed_lifo_queue_times_out_at_max_wait() {
    let mut bh = lifo_bulkhead();
    let _p = admitted(bh.acquire(ms(0)));
    let w = queued(bh.acquire(ms(0)));
    assert_eq!(bh.poll_timeout(), Some(ms(1000)), "the waiter's deadline");
    bh.handle_timeout(ms(999));
    assert_eq!(bh.queue_len(), 1, "not shed for its queue delay");
    bh.handle_timeout(ms(1000));
    assert_eq!(events(&mut bh), [BulkheadEvent::Expired { waiter: w }]);
}

/// Room made by `set_max_concurrent` before `promote` hands it out: a newcomer does not jump a
/// waiter of its own or a more important class (it queues, or `try_acquire` is refused with
/// `Full`), while a more important newcomer may take it.
#[test]
fn a_newcomer_never_jumps_a_queued_waiter_of_its_class_or_above() {
    let config = BulkheadConfig::builder()
        .max_concurrent(1)
        .max_queue(4)
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    let mut bh: FifoSemaphore<4> = FifoSemaphore::new(config, T0).expect("max_queue fits the ring");
    let _a = admitted(bh.acquire(T0));
    let w = queued(bh.acquire(T0));
    bh.set_max_concurrent(ms(1), 3);
    assert_eq!(
        bh.try_acquire(ms(1)).unwrap_err().reason,
        RejectReason::Full,
        "the free slot is the queued waiter's"
    );
    assert_eq!(
        bh.try_acquire_with(ms(1), SHEDDABLE).unwrap_err().reason,
        RejectReason::Full
    );
    let late = queued(bh.acquire(ms(1)));
    assert_eq!(bh.in_flight(), 1);
    // A critical call is more important than the queued default work: it runs.
    let _c = admitted(bh.acquire_with(ms(1), CRITICAL));
    assert_eq!(bh.promote(ms(2)).map(|(w, _)| w), Some(w));
    assert!(bh.promote(ms(2)).is_none(), "the limit is reached");
    assert!(bh.on_cancel(ms(2), late));
}
