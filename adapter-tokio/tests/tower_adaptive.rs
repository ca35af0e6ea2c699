//! The adaptive concurrency layer: rejections as the bulkhead's keel error, samples by
//! outcome, cancellations ignored, and a limit that follows a queueing inner service. Runs on
//! tokio's paused clock.
#![cfg(feature = "tower")]

use std::sync::Arc;
use std::time::Duration;

use keel_tokio::core::adaptive::AdaptiveConfig;
use keel_tokio::core::bulkhead::{BulkheadConfig, RejectReason};
use keel_tokio::tower::{AdaptiveLimitLayer, BoxError, KeelError};
use tower::{service_fn, Layer, ServiceExt};

fn layer(initial: u32, max_queue: usize) -> AdaptiveLimitLayer {
    AdaptiveLimitLayer::new(
        AdaptiveConfig::builder()
            .initial_limit(initial)
            .build()
            .expect("valid adaptive config"),
        BulkheadConfig::builder()
            .max_queue(max_queue)
            .max_wait(Duration::from_secs(60))
            .build()
            .expect("valid queue"),
    )
}

/// Answers after `x` ms; `Err` for odd `x`.
async fn work(x: u64) -> Result<u64, BoxError> {
    tokio::time::sleep(Duration::from_millis(x)).await;
    if x % 2 == 1 {
        Err("overloaded".into())
    } else {
        Ok(x)
    }
}

#[tokio::test(start_paused = true)]
async fn over_the_limit_is_the_bulkhead_error_failures_are_drops_cancellations_feed_nothing() {
    let layer = layer(2, 0);
    let limit = layer.limit().clone();
    let svc = layer.layer(service_fn(work));
    // Two slow calls take both slots; the third is rejected at once.
    let a = tokio::spawn(svc.clone().oneshot(1000));
    let b = tokio::spawn(svc.clone().oneshot(1001));
    tokio::time::sleep(Duration::from_millis(1)).await;
    let err = svc.clone().oneshot(2).await.expect_err("over the limit");
    match err.downcast_ref::<KeelError>() {
        Some(KeelError::BulkheadRejected(r)) => assert_eq!(r.reason, RejectReason::Full),
        other => panic!("expected the bulkhead rejection, got {other:?}"),
    }
    assert_eq!(a.await.expect("join").expect("even: ok"), 1000);
    assert!(b.await.expect("join").is_err());
    let stats = limit.stats();
    assert_eq!((stats.samples, stats.dropped), (2, 1), "{stats:?}");

    // A call dropped mid-way releases its slot and feeds no sample.
    let cancelled = tokio::time::timeout(Duration::from_millis(5), svc.clone().oneshot(100)).await;
    assert!(cancelled.is_err());
    assert_eq!(limit.stats().samples, 2);
    assert_eq!(limit.adaptive().cancelled(), 1);
    assert_eq!(limit.adaptive().in_flight(), 0);
    assert_eq!(limit.bulkhead().stats().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn the_limit_falls_to_an_inner_service_that_queues_beyond_four_workers() {
    let layer = layer(32, 64);
    let limit = layer.limit().clone();
    let workers = Arc::new(tokio::sync::Semaphore::new(4));
    let svc = layer.layer(service_fn(move |_: u32| {
        let workers = Arc::clone(&workers);
        async move {
            let _worker = workers.acquire().await.expect("never closed");
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok::<_, std::convert::Infallible>(())
        }
    }));
    let clients: Vec<_> = (0..32)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move {
                for _ in 0..500 {
                    svc.clone()
                        .oneshot(0)
                        .await
                        .expect("queued, never rejected");
                }
            })
        })
        .collect();
    for c in clients {
        c.await.expect("a client");
    }
    let stats = limit.stats();
    // Little's law says 4 (plus the queue target of at least one request).
    assert!((4..=6).contains(&stats.limit), "{stats:?}");
    assert!(stats.decreases > 0, "{stats:?}");
}
