//! `RateLimiter::until_ready`, `KeyedRateLimiter::until_key_ready` and `Bulkhead::run` on
//! tokio's paused clock.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_tokio::core::bulkhead::{BulkheadConfig, RejectReason};
use keel_tokio::core::driver::rate::InsufficientCapacity;
use keel_tokio::core::rate::keyed::{Full, KeyedConfig, KeyedError};
use keel_tokio::core::rate::Quota;
use keel_tokio::{Bulkhead, KeyedRateLimiter, RateLimiter};
use tokio::time::Instant;

/// `n` per second with a burst of `burst`.
fn quota(n: u32, burst: u32) -> Quota {
    Quota::per_second(NonZeroU32::new(n).unwrap())
        .unwrap()
        .with_burst(NonZeroU32::new(burst).unwrap())
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn until_ready_waits_exactly_until_retry_at() {
    // 10/s, burst 1: one token every 100 ms.
    let limiter = RateLimiter::new(quota(10, 1));
    limiter.until_ready().await.unwrap();
    let retry_at = limiter.check().unwrap_err().retry_at;
    let wait = retry_at.saturating_duration_since(keel_tokio::now());
    assert_eq!(wait, Duration::from_millis(100));

    let start = Instant::now();
    limiter.until_ready().await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert_eq!(keel_tokio::now(), retry_at);
    assert_eq!(limiter.stats().allowed, 2);
}

#[tokio::test(start_paused = true)]
async fn until_ready_returns_at_once_with_tokens_left() {
    let limiter = RateLimiter::new(quota(3, 3));
    let start = Instant::now();
    for _ in 0..3 {
        limiter.until_ready().await.unwrap();
    }
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(limiter.remaining(), 0);
}

#[tokio::test(start_paused = true)]
async fn two_waiters_on_burst_1_are_admitted_one_per_interval() {
    let limiter = RateLimiter::new(quota(10, 1));
    limiter.check().unwrap(); // the burst is spent
    let start = Instant::now();
    let admitted = Arc::new(std::sync::Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let limiter = limiter.clone();
            let admitted = Arc::clone(&admitted);
            tokio::spawn(async move {
                limiter.until_ready().await.unwrap();
                admitted.lock().unwrap().push(start.elapsed());
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let mut at = admitted.lock().unwrap().clone();
    at.sort();
    assert_eq!(at, [Duration::from_millis(100), Duration::from_millis(200)]);
    // Exactly three admissions in total: the waiters spent nothing twice.
    assert_eq!(limiter.stats().allowed, 3);
    assert!(limiter.check().is_err());
}

#[tokio::test(start_paused = true)]
async fn many_waiters_never_exceed_the_rate() {
    let limiter = RateLimiter::new(quota(10, 1));
    let done = Arc::new(AtomicUsize::new(0));
    for _ in 0..20 {
        let limiter = limiter.clone();
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            limiter.until_ready().await.unwrap();
            done.fetch_add(1, Ordering::SeqCst);
        });
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(done.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // t = 501 ms: admitted at 0, 100, ..., 500.
    assert_eq!(done.load(Ordering::SeqCst), 6);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(done.load(Ordering::SeqCst), 20);
}

#[tokio::test(start_paused = true)]
async fn until_n_ready_rejects_a_batch_above_the_burst_at_once() {
    let limiter = RateLimiter::new(quota(5, 4));
    let start = Instant::now();
    assert_eq!(
        limiter.until_n_ready(5).await,
        Err(InsufficientCapacity { burst: 4 })
    );
    limiter.until_n_ready(4).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    // The next batch of 2 needs two emission intervals (200 ms each).
    limiter.until_n_ready(2).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(400));
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_wait_spends_nothing() {
    let limiter = RateLimiter::new(quota(10, 1));
    limiter.check().unwrap();
    let r = tokio::time::timeout(Duration::from_millis(50), limiter.until_ready()).await;
    assert!(r.is_err());
    assert_eq!(limiter.stats().allowed, 1);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(limiter.check().is_ok());
}

#[tokio::test(start_paused = true)]
async fn keyed_limiter_waits_per_key() {
    let config = KeyedConfig::builder()
        .quota(quota(10, 1))
        .max_keys(2)
        .full(Full::RejectNew)
        .build()
        .unwrap();
    let limiter = KeyedRateLimiter::<&'static str>::new(config);
    limiter.check(&"a").unwrap();
    limiter.check(&"b").unwrap();
    assert_eq!(limiter.check(&"c"), Err(KeyedError::TableFull));
    assert_eq!(
        limiter.until_key_ready(&"c").await,
        Err(KeyedError::TableFull)
    );
    let start = Instant::now();
    limiter.until_key_ready(&"a").await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    // "b" is idle again by now.
    assert_eq!(limiter.remaining(&"b"), 1);
}

fn bulkhead(max_concurrent: usize, max_queue: usize, max_wait: Duration) -> Bulkhead {
    let config = BulkheadConfig::builder()
        .max_concurrent(max_concurrent)
        .max_queue(max_queue)
        .max_wait(max_wait)
        .build()
        .unwrap();
    Bulkhead::new(config)
}

#[tokio::test(start_paused = true)]
async fn run_rejects_when_full_and_no_queue() {
    let bh = bulkhead(1, 0, Duration::from_secs(1));
    let held = bh.try_acquire().unwrap();
    let r = bh.run(async { 1 }).await;
    assert_eq!(r.unwrap_err().reason, RejectReason::Full);
    drop(held);
    assert_eq!(bh.run(async { 7 }).await, Ok(7));
}

#[tokio::test(start_paused = true)]
async fn queue_full_rejects_with_reason() {
    let bh = bulkhead(1, 1, Duration::from_secs(1));
    let held = bh.try_acquire().unwrap();
    let queued = tokio::spawn({
        let bh = bh.clone();
        async move { bh.run(async { "ran" }).await }
    });
    tokio::task::yield_now().await;
    let err = bh.run(async { "never" }).await.unwrap_err();
    assert_eq!(err.reason, RejectReason::QueueFull);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(held);
    assert_eq!(queued.await.unwrap(), Ok("ran"));
    assert_eq!(start.elapsed(), Duration::from_millis(300));
}

#[tokio::test(start_paused = true)]
async fn waiter_past_max_wait_is_rejected_at_its_deadline() {
    let bh = bulkhead(1, 4, Duration::from_millis(250));
    let _held = bh.try_acquire().unwrap();
    let start = Instant::now();
    let err = bh.run(async {}).await.unwrap_err();
    assert_eq!(err.reason, RejectReason::WaitedTooLong);
    assert_eq!(start.elapsed(), Duration::from_millis(250));
    assert_eq!(bh.stats().queue_len, 0);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_run_releases_its_slot() {
    let bh = bulkhead(1, 1, Duration::from_secs(10));
    let slow = bh.run(tokio::time::sleep(Duration::from_secs(5)));
    assert!(tokio::time::timeout(Duration::from_millis(10), slow)
        .await
        .is_err());
    // The slot came back when the future was dropped.
    assert_eq!(bh.run(async { 3 }).await, Ok(3));
    // A waiter that gives up leaves the queue.
    let held = bh.try_acquire().unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(10), bh.run(async {}))
            .await
            .is_err()
    );
    drop(held);
    assert_eq!(bh.run(async { 4 }).await, Ok(4));
}

/// Polls a future once with a no-op waker.
fn poll_once<F: std::future::Future + Unpin>(f: &mut F) -> std::task::Poll<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    std::pin::Pin::new(f).poll(&mut cx)
}

#[tokio::test(start_paused = true)]
async fn until_ready_polled_after_completion_returns_ok_again_without_spending() {
    let limiter = RateLimiter::new(quota(3, 3));
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
}

#[tokio::test(start_paused = true)]
async fn acquiring_polled_after_completion_says_already_completed() {
    let config = BulkheadConfig::builder().max_concurrent(1).build().unwrap();
    let bulkhead = Bulkhead::new(config);
    let mut fut = Box::pin(bulkhead.acquire());
    let guard = match poll_once(&mut fut) {
        std::task::Poll::Ready(Ok(g)) => g,
        other => panic!("expected a slot, got {other:?}"),
    };
    match poll_once(&mut fut) {
        std::task::Poll::Ready(Err(e)) => assert_eq!(e.reason, RejectReason::AlreadyCompleted),
        other => panic!("expected AlreadyCompleted, got {other:?}"),
    }
    assert_eq!(bulkhead.stats().in_flight, 1);
    drop(guard);
}
