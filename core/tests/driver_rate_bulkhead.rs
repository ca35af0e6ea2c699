//! `RateLimiter::until_ready`, `KeyedRateLimiter::until_key_ready` and `Bulkhead::run` on
//! keel-testkit's manual clock (`ManualRuntime`: `block_on` jumps the clock to the next timer
//! when every task waits, as tokio's paused time does).
#![cfg(feature = "futures")]

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_lite::future::yield_now;
use keel_core::bulkhead::{BulkheadConfig, RejectReason};
use keel_core::driver::bulkhead::Bulkhead;
use keel_core::driver::rate::{KeyedRateLimiter, RateLimiter};
use keel_core::driver::{sleep, timeout};
use keel_core::rate::keyed::{Full, KeyedConfig, KeyedLimited};
use keel_core::rate::{Quota, RateLimited};
use keel_core::Rejected;
use keel_testkit::ManualRuntime;

/// A manual runtime whose clock starts at 1 s.
fn runtime() -> ManualRuntime {
    ManualRuntime::starting_at(keel_core::Instant::from_secs(1))
}

/// `n` per second with a burst of `burst`.
fn quota(n: u32, burst: u32) -> Quota {
    Quota::per_second(NonZeroU32::new(n).unwrap())
        .unwrap()
        .with_burst(NonZeroU32::new(burst).unwrap())
        .unwrap()
}

#[test]
fn until_ready_waits_exactly_until_retry_at() {
    let rt = runtime();
    rt.block_on(async {
        // 10/s, burst 1: one token every 100 ms.
        let limiter = RateLimiter::with_runtime(quota(10, 1), rt.clone());
        limiter.until_ready().await.unwrap();
        let retry_at = limiter.check().unwrap_err().retry_at.unwrap();
        let wait = retry_at.saturating_duration_since(rt.now());
        assert_eq!(wait, Duration::from_millis(100));

        let start = rt.now();
        limiter.until_ready().await.unwrap();
        assert_eq!(rt.now() - start, Duration::from_millis(100));
        assert_eq!(rt.now(), retry_at);
        assert_eq!(limiter.stats().allowed, 2);
    });
}

#[test]
fn until_ready_returns_at_once_with_tokens_left() {
    let rt = runtime();
    rt.block_on(async {
        let limiter = RateLimiter::with_runtime(quota(3, 3), rt.clone());
        let start = rt.now();
        for _ in 0..3 {
            limiter.until_ready().await.unwrap();
        }
        assert_eq!(rt.now() - start, Duration::ZERO);
        assert_eq!(limiter.remaining(), 0);
    });
}

#[test]
fn two_waiters_on_burst_1_are_admitted_one_per_interval() {
    let rt = runtime();
    rt.block_on(async {
        let limiter = RateLimiter::with_runtime(quota(10, 1), rt.clone());
        limiter.check().unwrap(); // the burst is spent
        let start = rt.now();
        let admitted = Arc::new(Mutex::new(Vec::new()));
        let tasks: Vec<_> = (0..2)
            .map(|_| {
                let limiter = limiter.clone();
                let admitted = Arc::clone(&admitted);
                let clock = rt.clone();
                rt.spawn_joinable(async move {
                    limiter.until_ready().await.unwrap();
                    admitted.lock().unwrap().push(clock.now() - start);
                })
            })
            .collect();
        for t in tasks {
            t.await;
        }
        let mut at = admitted.lock().unwrap().clone();
        at.sort();
        assert_eq!(at, [Duration::from_millis(100), Duration::from_millis(200)]);
        // Exactly three admissions in total: the waiters spent nothing twice.
        assert_eq!(limiter.stats().allowed, 3);
        assert!(limiter.check().is_err());
    });
}

#[test]
fn many_waiters_never_exceed_the_rate() {
    let rt = runtime();
    rt.block_on(async {
        let limiter = RateLimiter::with_runtime(quota(10, 1), rt.clone());
        let done = Arc::new(AtomicUsize::new(0));
        for _ in 0..20 {
            let limiter = limiter.clone();
            let done = Arc::clone(&done);
            drop(rt.spawn_joinable(async move {
                limiter.until_ready().await.unwrap();
                done.fetch_add(1, Ordering::SeqCst);
            }));
        }
        sleep(&rt, Duration::from_millis(1)).await;
        assert_eq!(done.load(Ordering::SeqCst), 1);
        sleep(&rt, Duration::from_millis(500)).await;
        // t = 501 ms: admitted at 0, 100, ..., 500.
        assert_eq!(done.load(Ordering::SeqCst), 6);
        sleep(&rt, Duration::from_secs(2)).await;
        assert_eq!(done.load(Ordering::SeqCst), 20);
    });
}

#[test]
fn until_n_ready_rejects_a_batch_above_the_burst_at_once() {
    let rt = runtime();
    rt.block_on(async {
        let limiter = RateLimiter::with_runtime(quota(5, 4), rt.clone());
        let start = rt.now();
        assert_eq!(
            limiter.until_n_ready(5).await,
            Err(Rejected {
                reason: RateLimited::InsufficientCapacity { burst: 4 },
                retry_at: None
            })
        );
        limiter.until_n_ready(4).await.unwrap();
        assert_eq!(rt.now() - start, Duration::ZERO);
        // The next batch of 2 needs two emission intervals (200 ms each).
        limiter.until_n_ready(2).await.unwrap();
        assert_eq!(rt.now() - start, Duration::from_millis(400));
    });
}

#[test]
fn a_cancelled_wait_spends_nothing() {
    let rt = runtime();
    rt.block_on(async {
        let limiter = RateLimiter::with_runtime(quota(10, 1), rt.clone());
        limiter.check().unwrap();
        let r = timeout(&rt, Duration::from_millis(50), limiter.until_ready()).await;
        assert!(r.is_err());
        assert_eq!(limiter.stats().allowed, 1);
        sleep(&rt, Duration::from_millis(50)).await;
        assert!(limiter.check().is_ok());
    });
}

#[test]
fn keyed_limiter_waits_per_key() {
    let rt = runtime();
    rt.block_on(async {
        let config = KeyedConfig::builder()
            .quota(quota(10, 1))
            .max_keys(2)
            .full(Full::RejectNew)
            .build()
            .unwrap();
        let limiter = KeyedRateLimiter::<&'static str, _>::with_runtime(config, rt.clone());
        limiter.check(&"a").unwrap();
        limiter.check(&"b").unwrap();
        assert_eq!(
            limiter.check(&"c"),
            Err(Rejected {
                reason: KeyedLimited::TableFull,
                retry_at: None
            })
        );
        assert_eq!(
            limiter.until_key_ready(&"c").await,
            Err(Rejected {
                reason: KeyedLimited::TableFull,
                retry_at: None
            })
        );
        let start = rt.now();
        limiter.until_key_ready(&"a").await.unwrap();
        assert_eq!(rt.now() - start, Duration::from_millis(100));
        // "b" is idle again by now.
        assert_eq!(limiter.remaining(&"b"), 1);
    });
}

/// `KeyedRateLimiter::reset_at` reads the key's own bucket on the runtime's clock.
#[test]
fn keyed_limiter_reset_at_is_per_key_on_the_runtime_clock() {
    let rt = runtime();
    rt.block_on(async {
        let config = KeyedConfig::builder()
            .quota(quota(10, 2))
            .max_keys(4)
            .build()
            .unwrap();
        let limiter = KeyedRateLimiter::<&'static str, _>::with_runtime(config, rt.clone());
        let start = rt.now();
        assert_eq!(limiter.reset_at(&"a"), start, "untracked: full now");
        limiter.check(&"a").unwrap();
        limiter.check(&"a").unwrap();
        limiter.check(&"b").unwrap();
        assert_eq!(limiter.reset_at(&"a"), start + Duration::from_millis(200));
        assert_eq!(limiter.reset_at(&"b"), start + Duration::from_millis(100));
        sleep(&rt, Duration::from_millis(150)).await;
        assert_eq!(limiter.reset_at(&"a"), start + Duration::from_millis(200));
        assert_eq!(limiter.reset_at(&"b"), rt.now());
    });
}

fn bulkhead(
    rt: &ManualRuntime,
    max_concurrent: usize,
    max_queue: usize,
    max_wait: Duration,
) -> Bulkhead<ManualRuntime> {
    let config = BulkheadConfig::builder()
        .max_concurrent(max_concurrent)
        .max_queue(max_queue)
        .max_wait(max_wait)
        .build()
        .unwrap();
    Bulkhead::with_runtime(config, rt.clone())
}

#[test]
fn run_rejects_when_full_and_no_queue() {
    let rt = runtime();
    rt.block_on(async {
        let bh = bulkhead(&rt, 1, 0, Duration::from_secs(1));
        let held = bh.try_acquire().unwrap();
        let r = bh.run(async { 1 }).await;
        assert_eq!(r.unwrap_err().reason, RejectReason::Full);
        drop(held);
        assert_eq!(bh.run(async { 7 }).await, Ok(7));
    });
}

#[test]
fn queue_full_rejects_with_reason() {
    let rt = runtime();
    rt.block_on(async {
        let bh = bulkhead(&rt, 1, 1, Duration::from_secs(1));
        let held = bh.try_acquire().unwrap();
        let queued = rt.spawn_joinable({
            let bh = bh.clone();
            async move { bh.run(async { "ran" }).await }
        });
        yield_now().await;
        let err = bh.run(async { "never" }).await.unwrap_err();
        assert_eq!(err.reason, RejectReason::QueueFull);
        let start = rt.now();
        sleep(&rt, Duration::from_millis(300)).await;
        drop(held);
        assert_eq!(queued.await, Ok("ran"));
        assert_eq!(rt.now() - start, Duration::from_millis(300));
    });
}

#[test]
fn waiter_past_max_wait_is_rejected_at_its_deadline() {
    let rt = runtime();
    rt.block_on(async {
        let bh = bulkhead(&rt, 1, 4, Duration::from_millis(250));
        let _held = bh.try_acquire().unwrap();
        let start = rt.now();
        let err = bh.run(async {}).await.unwrap_err();
        assert_eq!(err.reason, RejectReason::WaitedTooLong);
        assert_eq!(rt.now() - start, Duration::from_millis(250));
        assert_eq!(bh.stats().queue_len, 0);
    });
}

#[test]
fn a_cancelled_run_releases_its_slot() {
    let rt = runtime();
    rt.block_on(async {
        let bh = bulkhead(&rt, 1, 1, Duration::from_secs(10));
        let slow = bh.run(sleep(&rt, Duration::from_secs(5)));
        assert!(timeout(&rt, Duration::from_millis(10), slow).await.is_err());
        // The slot came back when the future was dropped.
        assert_eq!(bh.run(async { 3 }).await, Ok(3));
        // A waiter that gives up leaves the queue.
        let held = bh.try_acquire().unwrap();
        assert!(timeout(&rt, Duration::from_millis(10), bh.run(async {}))
            .await
            .is_err());
        drop(held);
        assert_eq!(bh.run(async { 4 }).await, Ok(4));
    });
}

/// A queued `acquire` dropped after its deadline (before the timer's poll saw it) counts as
/// timed out, as the `&mut` form's `on_cancel` does; one dropped in time as cancelled.
#[test]
fn a_wait_dropped_after_its_deadline_counts_as_timed_out_not_cancelled() {
    let rt = runtime();
    let bh = bulkhead(&rt, 1, 4, Duration::from_millis(100));
    let _held = bh.try_acquire().unwrap();
    let mut late = bh.acquire();
    assert!(poll_once(&mut late).is_pending());
    let mut early = bh.acquire();
    assert!(poll_once(&mut early).is_pending());
    assert_eq!(bh.stats().queue_len, 2);
    rt.advance(Duration::from_millis(50));
    drop(early);
    rt.advance(Duration::from_millis(100));
    drop(late);
    let s = bh.stats();
    assert_eq!(
        (s.shed_timeout, s.cancelled, s.queue_len),
        (1, 1, 0),
        "{s:?}"
    );
}

/// Polls a future once with a no-op waker.
fn poll_once<F: std::future::Future + Unpin>(f: &mut F) -> std::task::Poll<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    std::pin::Pin::new(f).poll(&mut cx)
}

#[test]
fn until_ready_polled_after_completion_returns_ok_again_without_spending() {
    let rt = runtime();
    rt.block_on(async {
        let limiter = RateLimiter::with_runtime(quota(3, 3), rt.clone());
        let mut fut = limiter.until_ready();
        assert!(matches!(
            poll_once(&mut fut),
            std::task::Poll::Ready(Ok(()))
        ));
        assert_eq!(limiter.remaining(), 2);
        assert!(matches!(
            poll_once(&mut fut),
            std::task::Poll::Ready(Ok(()))
        ));
        assert_eq!(limiter.remaining(), 2, "a second poll spends nothing");
        assert_eq!(limiter.stats().allowed, 1);
    });
}

#[test]
fn acquiring_polled_after_completion_says_already_completed() {
    let rt = runtime();
    rt.block_on(async {
        let config = BulkheadConfig::builder().max_concurrent(1).build().unwrap();
        let bulkhead = Bulkhead::with_runtime(config, rt.clone());
        let mut fut = Box::pin(bulkhead.acquire());
        let guard = match poll_once(&mut fut) {
            std::task::Poll::Ready(Ok(g)) => g,
            other => panic!("expected a slot, got {other:?}"),
        };
        match poll_once(&mut fut) {
            std::task::Poll::Ready(Err(e)) => {
                assert_eq!(e.reason, RejectReason::AlreadyCompleted)
            }
            other => panic!("expected AlreadyCompleted, got {other:?}"),
        }
        assert_eq!(bulkhead.stats().in_flight, 1);
        drop(guard);
    });
}

/// `KeyedRateLimiter::decide_with` decides one request and hands `f` the key's entry at the
/// same `now`, so what `f` reads agrees with the decision.
#[test]
fn keyed_decide_with_reads_the_state_the_decision_left() {
    let rt = runtime();
    let config = KeyedConfig::builder()
        .quota(quota(10, 2))
        .max_keys(4)
        .build()
        .unwrap();
    let limiter = KeyedRateLimiter::<&'static str, _>::with_runtime(config, rt.clone());
    let decide = || {
        limiter.decide_with(&"a", |entry, decision| {
            (decision.result, entry.remaining(), entry.now())
        })
    };
    let start = rt.now();
    assert_eq!(decide(), (Ok(()), 1, start));
    assert_eq!(decide(), (Ok(()), 0, start));
    assert_eq!(
        decide(),
        (
            Err(Rejected {
                reason: KeyedLimited::OverRate,
                retry_at: Some(start + Duration::from_millis(100))
            }),
            0,
            start
        )
    );
    // Another key is untouched.
    assert_eq!(limiter.remaining(&"b"), 2);
}

/// The manual runtime, counting its clock reads.
#[derive(Clone, Debug)]
struct Counting {
    rt: ManualRuntime,
    reads: Arc<AtomicUsize>,
}

impl keel_core::driver::Runtime for Counting {
    type Timer = <ManualRuntime as keel_core::driver::Runtime>::Timer;
    fn now(&self) -> keel_core::Instant {
        self.reads.fetch_add(1, Ordering::Relaxed);
        keel_core::driver::Runtime::now(&self.rt)
    }
    fn timer(&self, deadline: keel_core::Instant) -> Self::Timer {
        keel_core::driver::Runtime::timer(&self.rt, deadline)
    }
}

/// Issue 16: `run` on a bulkhead nobody queues on reads no clock (the admission and the
/// release need no time then); the counters are those of a timed run.
#[test]
fn an_uncontended_run_reads_no_clock() {
    let rt = runtime();
    let counting = Counting {
        rt: rt.clone(),
        reads: Arc::new(AtomicUsize::new(0)),
    };
    let config = BulkheadConfig::builder()
        .max_concurrent(2)
        .max_queue(1)
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    let bh = Bulkhead::with_runtime(config, counting.clone());
    let before = counting.reads.load(Ordering::Relaxed);
    assert_eq!(rt.block_on(bh.run(async { 5 })), Ok(5));
    assert_eq!(rt.block_on(bh.run(async { 6 })), Ok(6));
    assert_eq!(counting.reads.load(Ordering::Relaxed) - before, 0);
    let stats = bh.stats();
    assert_eq!((stats.admitted, stats.in_flight, stats.peak), (2, 0, 1));
}

/// Issue 16: with a waiter queued, the release at the end of `run` is judged at the runtime's
/// `now` (not the newest time the bulkhead saw): a waiter whose deadline passed while the
/// call ran is shed as timed out, not handed the slot.
#[test]
fn a_run_ending_with_a_queue_hands_over_at_the_runtime_clock() {
    let rt = runtime();
    rt.block_on(async {
        let bh = bulkhead(&rt, 1, 1, Duration::from_millis(100));
        let mut run = Box::pin(bh.run(async {
            sleep(&rt, Duration::from_secs(1)).await;
            "done"
        }));
        assert!(poll_once(&mut run).is_pending());
        assert_eq!(bh.stats().in_flight, 1);
        // A waiter nobody polls: only the release judges it.
        let keel_core::sync::bulkhead::Acquire::Wait(waiter) = bh.shared().acquire(rt.now()) else {
            panic!("the slot is taken: the call queues");
        };
        assert_eq!(run.await, Ok("done"));
        let stats = bh.stats();
        assert_eq!((stats.shed_timeout, stats.promoted), (1, 0), "{stats:?}");
        assert_eq!(stats.in_flight, 0);
        drop(waiter);
        assert_eq!(bh.stats().in_flight, 0);
    });
}
