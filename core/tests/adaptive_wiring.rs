//! The adaptive limit wired to what it drives: the shared bulkhead's resize, `SharedAdaptive`
//! resizing a `SharedLimit` and a bulkhead, and the driver's `AdaptiveLimit` permits (outcomes,
//! cancellation, the minimum-RTT timer) on a manual clock.

// The driver and the shared forms: std builds only (the no_std test runs leave this file out).
#![cfg(feature = "futures")]

use core::num::NonZeroUsize;
use core::task::{Context, Poll, Waker};
use core::time::Duration;

use keel_core::adaptive::{AdaptiveConfig, AdaptiveEvent, ProbeReason, SampleOutcome};
use keel_core::bulkhead::{BulkheadConfig, RejectReason};
use keel_core::driver::adaptive::AdaptiveLimit;
use keel_core::limit::LimitConfig;
use keel_core::sync::adaptive::SharedAdaptive;
use keel_core::sync::bulkhead::{Acquire, SharedBulkhead};
use keel_core::sync::limit::SharedLimit;
use keel_core::Instant;
use keel_testkit::ManualRuntime;

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("non-zero")
}

fn bulkhead(max: usize, queue: usize) -> SharedBulkhead {
    let config = BulkheadConfig::builder()
        .max_concurrent(max)
        .max_queue(queue)
        .max_wait(Duration::from_secs(10))
        .build()
        .expect("valid bulkhead");
    SharedBulkhead::new(config, Instant::ZERO)
}

#[test]
fn growing_a_shared_bulkhead_admits_the_oldest_waiters_and_shrinking_revokes_nothing() {
    let bh = bulkhead(1, 8);
    let held = bh.try_acquire(Instant::ZERO).expect("a free slot");
    let Acquire::Wait(mut first) = bh.acquire(Instant::ZERO) else {
        panic!("queued")
    };
    let Acquire::Wait(mut second) = bh.acquire(Instant::ZERO) else {
        panic!("queued")
    };
    let Acquire::Wait(mut third) = bh.acquire(Instant::ZERO) else {
        panic!("queued")
    };
    let mut cx = Context::from_waker(Waker::noop());
    bh.set_max_concurrent(nz(3));
    assert_eq!(bh.config().max_concurrent(), 3);
    assert_eq!(bh.stats().in_flight, 3);
    let now = Instant::from_millis(1);
    let a = match first.poll(&mut cx, now) {
        Poll::Ready(Ok(g)) => g,
        other => panic!("the oldest waiter is admitted: {other:?}"),
    };
    let b = match second.poll(&mut cx, now) {
        Poll::Ready(Ok(g)) => g,
        other => panic!("the next waiter is admitted: {other:?}"),
    };
    assert!(
        third.poll(&mut cx, now).is_pending(),
        "only two slots were added"
    );

    // Shrinking to 1 with 3 in flight: nobody loses a slot, nobody new gets one.
    bh.set_max_concurrent(nz(1));
    assert_eq!(bh.stats().in_flight, 3);
    drop(a);
    drop(b);
    assert!(third.poll(&mut cx, now).is_pending(), "2 in flight > 1");
    drop(held);
    let Poll::Ready(Ok(_c)) = third.poll(&mut cx, now) else {
        panic!("admitted once in flight is below the bound")
    };
    assert_eq!(
        bh.try_acquire(Instant::ZERO).unwrap_err().reason,
        RejectReason::Full
    );
}

fn config(initial: u32) -> AdaptiveConfig {
    AdaptiveConfig::builder()
        .initial_limit(initial)
        .window(Duration::from_millis(100))
        .build()
        .expect("valid adaptive config")
}

/// Feeds `windows` windows of samples from a service with no queue, at the limit.
fn no_queue(adaptive: &SharedAdaptive, now: &mut Instant, windows: usize) {
    for _ in 0..windows {
        for _ in 0..10 {
            let requests: Vec<_> = (0..adaptive.limit())
                .map(|_| adaptive.start(*now))
                .collect();
            *now += Duration::from_millis(10);
            for r in requests {
                let _ = r.finish(*now, SampleOutcome::Success);
            }
        }
    }
}

#[test]
fn a_shared_adaptive_limit_resizes_the_limits_and_bulkheads_it_drives() {
    let adaptive = SharedAdaptive::new(config(4), Instant::ZERO);
    let connections = SharedLimit::new(LimitConfig::builder().max(1000).build().expect("valid"));
    let bh = bulkhead(25, 0);
    adaptive.drive_limit(&connections);
    adaptive.drive_bulkhead(&bh);
    assert_eq!((connections.max(), bh.config().max_concurrent()), (4, 4));

    let mut now = Instant::ZERO;
    no_queue(&adaptive, &mut now, 5);
    let grown = adaptive.limit();
    assert!(grown > 4, "{:?}", adaptive.stats());
    assert_eq!(connections.max(), grown as usize);
    assert_eq!(bh.config().max_concurrent(), grown as usize);

    // Losses cut it, and the targets follow down.
    for _ in 0..30 {
        now += Duration::from_millis(10);
        let _ = adaptive.on_sample(now, Duration::from_millis(10), SampleOutcome::Dropped, 1);
    }
    let cut = adaptive.limit();
    assert!(cut < grown, "{:?}", adaptive.stats());
    assert_eq!(connections.max(), cut as usize);
    assert_eq!(bh.config().max_concurrent(), cut as usize);
    assert_eq!(adaptive.in_flight(), 0);
    assert_eq!(adaptive.cancelled(), 0);
    assert!(adaptive.poll_event().is_some());
}

#[test]
fn permits_feed_success_by_default_their_set_outcome_or_nothing_when_ignored_or_cancelled() {
    let rt = ManualRuntime::new();
    let queue = BulkheadConfig::builder()
        .max_queue(4)
        .max_wait(Duration::from_secs(1))
        .build()
        .expect("valid");
    let limit = AdaptiveLimit::with_runtime(config(2), queue, rt.clone());
    assert_eq!(limit.bulkhead().config().max_concurrent(), 2);
    rt.block_on(async {
        let a = limit.acquire().await.expect("a slot");
        let mut b = limit.try_acquire().expect("a slot");
        assert_eq!(limit.adaptive().in_flight(), 2);
        b.timed_out();
        drop(a);
        drop(b);
        let mut c = limit.acquire().await.expect("a slot");
        c.ignore();
        drop(c);
    });
    let stats = limit.stats();
    assert_eq!((stats.samples, stats.timed_out), (2, 1), "{stats:?}");

    // A `run` cancelled mid-way: the slot comes back, no sample.
    let fut = limit.run(keel_core::driver::sleep(&rt, Duration::from_secs(1)));
    let cancelled = rt.block_on(keel_core::driver::timeout(
        &rt,
        Duration::from_millis(5),
        fut,
    ));
    assert!(cancelled.is_err());
    assert_eq!(limit.stats().samples, 2);
    assert_eq!(
        limit.adaptive().cancelled(),
        2,
        "the ignored permit and the cancelled run"
    );
    assert_eq!(limit.bulkhead().stats().in_flight, 0);
    assert_eq!(limit.adaptive().in_flight(), 0);

    // The RTT is the time from the grant to the drop, on the runtime's clock.
    rt.block_on(async {
        let permit = limit.acquire().await.expect("a slot");
        keel_core::driver::sleep(&rt, Duration::from_millis(30)).await;
        drop(permit);
    });
    let stats = limit.stats();
    assert_eq!(stats.samples, 3);
    assert_eq!(stats.min_rtt, None, "no window closed yet (100 ms)");
}

#[test]
fn the_minimum_rtt_timer_starts_a_re_measurement_at_the_first_sample_after_it_is_due() {
    let rt = ManualRuntime::new();
    let config = AdaptiveConfig::builder()
        .initial_limit(8)
        .window(Duration::from_millis(100))
        .probe_interval(Some(Duration::from_secs(1)))
        .build()
        .expect("valid");
    let queue = BulkheadConfig::builder()
        .max_queue(64)
        .max_wait(Duration::from_secs(1))
        .build()
        .expect("valid");
    let limit = AdaptiveLimit::with_runtime(config, queue, rt.clone());
    let due = limit.adaptive().poll_timeout().expect("a timer");
    assert_eq!(due, Instant::from_secs(1));
    let mut probed = false;
    while rt.now() < Instant::from_secs(2) && !probed {
        rt.block_on(limit.run(keel_core::driver::sleep(&rt, Duration::from_millis(10))))
            .expect("a slot");
        while let Some(ev) = limit.adaptive().poll_event() {
            if let AdaptiveEvent::ProbeStarted { reason, .. } = ev {
                assert_eq!(reason, ProbeReason::Timer);
                assert!(rt.now() >= due);
                probed = true;
            }
        }
    }
    assert!(probed, "{:?}", limit.stats());
    assert_eq!(
        limit.bulkhead().config().max_concurrent(),
        limit.limit() as usize,
        "the probe's held limit is enforced"
    );
}
