//! The tower layers: shared state across clones, reject modes, and timeouts that cover the
//! wait for readiness. Runs on tokio's paused clock.
#![cfg(feature = "tower")]

use std::convert::Infallible;
use std::num::NonZeroU32;
use std::time::Duration;

use keel_tokio::core::bulkhead::{BulkheadConfig, RejectReason};
use keel_tokio::core::rate::Quota;
use keel_tokio::tower::{BoxError, BulkheadLayer, KeelError, RateLimitLayer, TimeoutLayer};
use tokio::time::Instant;
use tower::{service_fn, Layer, Service, ServiceBuilder, ServiceExt};

/// `n` per second with a burst of `burst`.
fn quota(n: u32, burst: u32) -> Quota {
    Quota::per_second(NonZeroU32::new(n).unwrap())
        .unwrap()
        .with_burst(NonZeroU32::new(burst).unwrap())
        .unwrap()
}

fn echo() -> impl Service<u32, Response = u32, Error = Infallible, Future: Send> + Clone + Send {
    service_fn(|x: u32| async move { Ok::<_, Infallible>(x) })
}

/// A service that takes `d` to answer.
fn slow(
    d: Duration,
) -> impl Service<u32, Response = u32, Error = Infallible, Future: Send> + Clone + Send {
    service_fn(move |x: u32| async move {
        tokio::time::sleep(d).await;
        Ok::<_, Infallible>(x)
    })
}

async fn call<S>(svc: &mut S, x: u32) -> Result<u32, BoxError>
where
    S: Service<u32, Response = u32, Error = BoxError>,
{
    svc.ready().await?.call(x).await
}

fn keel(err: &BoxError) -> KeelError {
    *err.downcast_ref::<KeelError>()
        .unwrap_or_else(|| panic!("not a KeelError: {err}"))
}

#[tokio::test(start_paused = true)]
async fn clones_share_one_rate_limit() {
    let layer = RateLimitLayer::new(quota(1, 2)).reject_when_limited();
    let mut a = layer.layer(echo());
    let mut b = a.clone();
    let mut c = layer.layer(echo()); // a second service from the same layer
    assert_eq!(call(&mut a, 1).await.unwrap(), 1);
    assert_eq!(call(&mut b, 2).await.unwrap(), 2);
    let err = call(&mut c, 3).await.unwrap_err();
    let start = keel_tokio::now();
    assert_eq!(
        keel(&err),
        KeelError::RateLimited {
            retry_at: start + Duration::from_secs(1)
        }
    );
    assert_eq!(keel(&err).retry_after(), Some(Duration::from_secs(1)));
    assert_eq!(layer.limiter().stats().allowed, 2);
    assert_eq!(layer.limiter().stats().limited, 1);
}

#[tokio::test(start_paused = true)]
async fn reject_mode_fails_at_once() {
    let mut svc = RateLimitLayer::new(quota(1, 1))
        .reject_when_limited()
        .layer(echo());
    call(&mut svc, 1).await.unwrap();
    let start = Instant::now();
    let err = call(&mut svc, 2).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert!(matches!(keel(&err), KeelError::RateLimited { .. }));
    assert!(err
        .to_string()
        .starts_with("rate limited: a call would conform in "));
}

/// Waiting, bounded loosely enough that these tests only see the wait itself.
fn waiting(quota: Quota) -> RateLimitLayer {
    RateLimitLayer::new(quota).wait_when_limited(Duration::from_secs(60), 1_000)
}

/// The item 9: the layer used to wait by default with no cap on waiters, so without an
/// outer timeout a flood piled up waiting requests. Now it rejects by default: 100 concurrent
/// calls over a spent quota are all answered at once, none waits.
#[tokio::test(start_paused = true)]
async fn the_layer_rejects_by_default_so_a_flood_piles_up_nothing() {
    let layer = RateLimitLayer::new(quota(1, 1));
    let mut svc = layer.layer(echo());
    call(&mut svc, 0).await.unwrap();
    let start = Instant::now();
    let calls: Vec<_> = (0..100)
        .map(|i| {
            let mut svc = svc.clone();
            tokio::spawn(async move { call(&mut svc, i).await })
        })
        .collect();
    for c in calls {
        let err = c.await.unwrap().unwrap_err();
        assert!(matches!(keel(&err), KeelError::RateLimited { .. }), "{err}");
    }
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(layer.waiting(), 0);
    assert_eq!(layer.limiter().stats().limited, 100);
}

/// `wait_when_limited(max_wait, max_waiters)`: at most `max_waiters` wait, each at most
/// `max_wait`; the rest, and calls whose token is further than `max_wait`, fail at once.
#[tokio::test(start_paused = true)]
async fn wait_mode_bounds_the_waiters_and_the_wait() {
    let layer = RateLimitLayer::new(quota(1, 1)).wait_when_limited(Duration::from_millis(2_500), 2);
    let svc = layer.layer(echo());
    call(&mut svc.clone(), 0).await.unwrap();
    let start = Instant::now();
    let calls: Vec<_> = (1..=5)
        .map(|i| {
            let mut svc = svc.clone();
            tokio::spawn(async move { (call(&mut svc, i).await, Instant::now()) })
        })
        .collect();
    tokio::task::yield_now().await;
    assert_eq!(layer.waiting(), 2);
    let mut admitted = Vec::new();
    let mut rejected = Vec::new();
    for c in calls {
        match c.await.unwrap() {
            (Ok(_), at) => admitted.push(at - start),
            (Err(e), at) => {
                assert!(matches!(keel(&e), KeelError::RateLimited { .. }), "{e}");
                rejected.push(at - start);
            }
        }
    }
    // Two waiters get the tokens at 1 s and 2 s; three found the waiting room full.
    admitted.sort();
    assert_eq!(admitted, [Duration::from_secs(1), Duration::from_secs(2)]);
    assert_eq!(rejected, [Duration::ZERO; 3]);
    assert_eq!(layer.waiting(), 0);

    // A token 3 s away is beyond max_wait (2.5 s): the call fails fast instead of waiting.
    let one_per_3s = Quota::new(NonZeroU32::new(1).unwrap(), Duration::from_secs(3)).unwrap();
    let slow_quota =
        RateLimitLayer::new(one_per_3s).wait_when_limited(Duration::from_millis(2_500), 2);
    let mut slow = slow_quota.layer(echo());
    call(&mut slow, 0).await.unwrap();
    let start = Instant::now();
    let err = call(&mut slow, 1).await.unwrap_err();
    assert!(matches!(keel(&err), KeelError::RateLimited { .. }));
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn wait_mode_waits_for_the_token() {
    let mut svc = waiting(quota(4, 1)).layer(echo());
    let start = Instant::now();
    for i in 0..3 {
        assert_eq!(call(&mut svc, i).await.unwrap(), i);
    }
    assert_eq!(start.elapsed(), Duration::from_millis(500));
}

#[tokio::test(start_paused = true)]
async fn timeout_covers_the_wait_for_a_rate_limit_token() {
    let layer = waiting(quota(1, 1));
    let limiter = layer.limiter().clone();
    let mut svc = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_millis(100)))
        .layer(layer)
        .service(echo());
    call(&mut svc, 1).await.unwrap();
    let start = Instant::now();
    let err = call(&mut svc, 2).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert_eq!(
        keel(&err),
        KeelError::TimedOut {
            after: Duration::from_millis(100)
        }
    );
    // The abandoned wait spent nothing.
    assert_eq!(limiter.stats().allowed, 1);
}

#[tokio::test(start_paused = true)]
async fn towers_own_timeout_also_covers_the_wait() {
    let mut svc = ServiceBuilder::new()
        .timeout(Duration::from_millis(100))
        .layer(waiting(quota(1, 1)))
        .service(echo());
    call(&mut svc, 1).await.unwrap();
    let start = Instant::now();
    let err = call(&mut svc, 2).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert!(err.is::<tower::timeout::error::Elapsed>());
}

fn bulkhead(max_concurrent: usize, max_queue: usize, max_wait: Duration) -> BulkheadLayer {
    BulkheadLayer::new(
        BulkheadConfig::builder()
            .max_concurrent(max_concurrent)
            .max_queue(max_queue)
            .max_wait(max_wait)
            .build()
            .unwrap(),
    )
}

#[tokio::test(start_paused = true)]
async fn bulkhead_without_queue_rejects_while_a_response_is_pending() {
    let layer = bulkhead(1, 0, Duration::ZERO);
    let mut a = layer.layer(slow(Duration::from_secs(1)));
    let mut b = a.clone();
    let first = tokio::spawn(async move { call(&mut a, 1).await.unwrap() });
    tokio::task::yield_now().await;
    let err = call(&mut b, 2).await.unwrap_err();
    assert_eq!(keel(&err).reject_reason(), Some(RejectReason::Full));
    assert_eq!(first.await.unwrap(), 1);
    // The slot came back when the response resolved.
    assert_eq!(layer.bulkhead().stats().in_flight, 0);
    assert_eq!(call(&mut b, 3).await.unwrap(), 3);
}

#[tokio::test(start_paused = true)]
async fn bulkhead_queue_full_rejects_with_reason() {
    let layer = bulkhead(1, 1, Duration::from_secs(10));
    let svc = layer.layer(slow(Duration::from_secs(1)));
    let start = Instant::now();
    let running = tokio::spawn(svc.clone().oneshot(1));
    let queued = tokio::spawn(svc.clone().oneshot(2));
    tokio::task::yield_now().await;
    let err = svc.clone().oneshot(3).await.unwrap_err();
    assert_eq!(keel(&err).reject_reason(), Some(RejectReason::QueueFull));
    assert_eq!(
        err.to_string(),
        "bulkhead queue full: raise max_queue or max_concurrent"
    );
    assert_eq!(running.await.unwrap().unwrap(), 1);
    assert_eq!(queued.await.unwrap().unwrap(), 2);
    assert_eq!(start.elapsed(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn bulkhead_waiter_past_max_wait_is_rejected() {
    let layer = bulkhead(1, 4, Duration::from_millis(300));
    let svc = layer.layer(slow(Duration::from_secs(1)));
    let running = tokio::spawn(svc.clone().oneshot(1));
    tokio::task::yield_now().await;
    let start = Instant::now();
    let err = svc.clone().oneshot(2).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    assert_eq!(
        keel(&err).reject_reason(),
        Some(RejectReason::WaitedTooLong)
    );
    assert_eq!(running.await.unwrap().unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn timeout_covers_the_wait_for_a_bulkhead_slot() {
    let bh = bulkhead(1, 4, Duration::from_secs(10));
    let svc = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_millis(200)))
        .layer(bh.clone())
        .service(slow(Duration::from_millis(150)));
    let first = tokio::spawn(svc.clone().oneshot(1));
    tokio::task::yield_now().await;
    let start = Instant::now();
    // Waits 150 ms for the slot, then would need 150 ms more: the 200 ms budget runs out.
    let err = svc.clone().oneshot(2).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(200));
    assert_eq!(
        keel(&err),
        KeelError::TimedOut {
            after: Duration::from_millis(200)
        }
    );
    assert_eq!(first.await.unwrap().unwrap(), 1);
    assert_eq!(bh.bulkhead().stats().in_flight, 0);
    assert_eq!(bh.bulkhead().stats().queue_len, 0);
}

#[tokio::test(start_paused = true)]
async fn inner_errors_pass_through_unchanged() {
    #[derive(Debug)]
    struct Boom;
    impl std::fmt::Display for Boom {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("boom")
        }
    }
    impl std::error::Error for Boom {}
    let inner = service_fn(|_: u32| async { Err::<u32, _>(Boom) });
    let mut svc = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_secs(1)))
        .layer(RateLimitLayer::new(quota(10, 10)))
        .layer(bulkhead(2, 0, Duration::ZERO))
        .service(inner);
    let err = call(&mut svc, 1).await.unwrap_err();
    assert!(err.is::<Boom>());
}

#[tokio::test(start_paused = true)]
async fn breaker_shared_by_clones_opens_and_rejects_with_retry_at() {
    use keel_tokio::core::breaker::{BreakerConfig, State};
    use keel_tokio::tower::BreakerLayer;

    let config = BreakerConfig::consecutive_failures(2)
        .permitted_calls_in_half_open(1)
        .build()
        .unwrap();
    let layer = BreakerLayer::new(config);
    let failing = service_fn(|x: u32| async move {
        if x == 0 {
            Err::<u32, BoxError>("down".into())
        } else {
            Ok(x)
        }
    });
    let mut a = layer.layer(failing);
    let mut b = a.clone();
    assert_eq!(call(&mut a, 0).await.unwrap_err().to_string(), "down");
    assert_eq!(call(&mut b, 0).await.unwrap_err().to_string(), "down");
    assert_eq!(layer.breaker().state(), State::Open);
    let err = call(&mut a, 5).await.unwrap_err();
    let KeelError::BreakerOpen { retry_at } = keel(&err) else {
        panic!("expected BreakerOpen, got {err}");
    };
    let retry_at = retry_at.unwrap();
    assert!(retry_at > keel_tokio::now());
    tokio::time::sleep(retry_at.saturating_duration_since(keel_tokio::now())).await;
    // The probe succeeds and closes the breaker.
    assert_eq!(call(&mut b, 5).await.unwrap(), 5);
    assert_eq!(layer.breaker().state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn retry_layer_retries_with_backoff_until_success() {
    use keel_tokio::core::backoff::{BackoffConfig, Jitter};
    use keel_tokio::tower::RetryLayer;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    let config = BackoffConfig::constant(Duration::from_millis(100))
        .jitter(Jitter::None)
        .max_attempts(3)
        .build()
        .unwrap();
    let attempts = Arc::new(AtomicU32::new(0));
    let flaky = {
        let attempts = Arc::clone(&attempts);
        service_fn(move |x: u32| {
            let n = attempts.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 2 {
                    Err::<u32, BoxError>("flaky".into())
                } else {
                    Ok(x)
                }
            }
        })
    };
    let mut svc = RetryLayer::new(config).layer(flaky);
    let start = Instant::now();
    assert_eq!(call(&mut svc, 9).await.unwrap(), 9);
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    assert_eq!(start.elapsed(), Duration::from_millis(200));
    // Three failures in a row exhaust max_attempts: the error says so.
    let always = service_fn(|_: u32| async { Err::<u32, BoxError>("down".into()) });
    let mut svc = RetryLayer::new(config).layer(always);
    let err = call(&mut svc, 1).await.unwrap_err();
    assert!(
        err.to_string().starts_with("gave up after 3 attempt(s)"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn keel_error_messages_give_a_relative_wait_not_a_private_instant() {
    let now = keel_tokio::now();
    let open = KeelError::BreakerOpen {
        retry_at: Some(now + Duration::from_millis(1500)),
    };
    assert_eq!(
        open.to_string(),
        "circuit breaker open because the dependency keeps failing: a probe call is let through in 1.5s"
    );
    let unknown = KeelError::BreakerOpen { retry_at: None };
    assert_eq!(
        unknown.to_string(),
        "circuit breaker open with no known reopening time: forced open by hand, or every \
         half-open probe is in flight (retry when the probes finish)"
    );
    let limited = KeelError::RateLimited {
        retry_at: now + Duration::from_millis(20),
    };
    assert_eq!(
        limited.to_string(),
        "rate limited: a call would conform in 20ms, or raise the quota"
    );
    let passed = KeelError::RateLimited { retry_at: now };
    assert_eq!(
        passed.to_string(),
        "rate limited: a call would conform now, or raise the quota"
    );
}

#[tokio::test(start_paused = true)]
async fn breaker_over_a_rejecting_rate_limit_does_not_open_on_local_throttling() {
    use keel_tokio::core::breaker::{BreakerConfig, State};
    use keel_tokio::tower::BreakerLayer;

    let config = BreakerConfig::consecutive_failures(2).build().unwrap();
    let breaker = BreakerLayer::new(config);
    let mut svc = ServiceBuilder::new()
        .layer(breaker.clone())
        .layer(RateLimitLayer::new(quota(1, 1)).reject_when_limited())
        .service(echo());
    call(&mut svc, 1).await.unwrap();
    for _ in 0..5 {
        let err = call(&mut svc, 2).await.unwrap_err();
        assert!(matches!(keel(&err), KeelError::RateLimited { .. }));
    }
    assert_eq!(breaker.breaker().state(), State::Closed);
    let s = breaker.breaker().stats();
    assert_eq!((s.successes, s.failures, s.ignored), (1, 0, 5));
}

#[tokio::test(start_paused = true)]
async fn breaker_counts_an_inner_timeout_as_a_failure_and_classify_overrides() {
    use keel_tokio::core::breaker::{BreakerConfig, Outcome, State};
    use keel_tokio::tower::BreakerLayer;

    let config = BreakerConfig::consecutive_failures(2).build().unwrap();
    let breaker = BreakerLayer::new(config);
    let hang = service_fn(|_: u32| std::future::pending::<Result<u32, Infallible>>());
    let mut svc = ServiceBuilder::new()
        .layer(breaker.clone())
        .layer(TimeoutLayer::new(Duration::from_millis(10)))
        .service(hang);
    for _ in 0..2 {
        let err = call(&mut svc, 1).await.unwrap_err();
        assert!(matches!(keel(&err), KeelError::TimedOut { .. }));
    }
    assert_eq!(breaker.breaker().state(), State::Open);

    let config = BreakerConfig::consecutive_failures(1).build().unwrap();
    let lenient = BreakerLayer::new(config).classify(|_| Outcome::Ignored);
    let mut svc = lenient.layer(service_fn(|_: u32| async {
        Err::<u32, BoxError>("404".into())
    }));
    call(&mut svc, 1).await.unwrap_err();
    assert_eq!(lenient.breaker().state(), State::Closed);
    assert_eq!(lenient.breaker().stats().ignored, 1);
}

#[tokio::test(start_paused = true)]
async fn retry_layer_fails_fast_on_keel_rejections_and_exposes_them_as_source() {
    use keel_tokio::core::backoff::{BackoffConfig, Jitter};
    use keel_tokio::core::driver::retry::StopReason;
    use keel_tokio::tower::{RetryGaveUp, RetryLayer};

    let config = BackoffConfig::constant(Duration::from_millis(100))
        .jitter(Jitter::None)
        .max_attempts(3)
        .build()
        .unwrap();
    let limiter = RateLimitLayer::new(quota(1, 1)).reject_when_limited();
    let mut svc = ServiceBuilder::new()
        .layer(RetryLayer::new(config))
        .layer(limiter.clone())
        .service(echo());
    call(&mut svc, 1).await.unwrap();
    let start = Instant::now();
    let err = call(&mut svc, 2).await.unwrap_err();
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "no backoff sleep: it failed fast"
    );
    let gave_up = err.downcast_ref::<RetryGaveUp>().expect("a RetryGaveUp");
    assert_eq!(
        (gave_up.attempts(), gave_up.reason()),
        (1, StopReason::NotRetryable)
    );
    let source = std::error::Error::source(gave_up).expect("the last error is the source");
    assert!(matches!(
        source.downcast_ref::<KeelError>(),
        Some(KeelError::RateLimited { .. })
    ));

    // Exhausted retries keep the chain too.
    let always = service_fn(|_: u32| async {
        Err::<u32, BoxError>(Box::new(KeelError::TimedOut {
            after: Duration::from_millis(5),
        }))
    });
    let mut svc = RetryLayer::new(config).layer(always);
    let err = call(&mut svc, 1).await.unwrap_err();
    let gave_up = err.downcast_ref::<RetryGaveUp>().unwrap();
    assert_eq!(gave_up.attempts(), 3);
    assert!(gave_up.error().downcast_ref::<KeelError>().is_some());
    assert!(std::error::Error::source(gave_up)
        .and_then(|s| s.downcast_ref::<KeelError>())
        .is_some());
}

/// `RetryGaveUp` returns the last attempt's error as its `source()` and does not print it too
/// (a chain printer would show it twice).
#[tokio::test(start_paused = true)]
async fn retry_gave_up_returns_the_last_error_as_source_and_does_not_print_it() {
    use keel_tokio::core::backoff::{BackoffConfig, Jitter};
    use keel_tokio::tower::RetryLayer;

    let config = BackoffConfig::constant(Duration::from_millis(100))
        .jitter(Jitter::None)
        .max_attempts(2)
        .build()
        .unwrap();
    let always = service_fn(|_: u32| async { Err::<u32, BoxError>("dependency down".into()) });
    let mut svc = RetryLayer::new(config).layer(always);
    let err = call(&mut svc, 1).await.unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with("gave up after 2 attempt(s)"),
        "{message}"
    );
    assert!(!message.contains("dependency down"), "{message}");
    assert_eq!(err.source().unwrap().to_string(), "dependency down");
}

#[tokio::test(start_paused = true)]
async fn bulkhead_layer_sheds_sheddable_requests_first() {
    use keel_tokio::core::bulkhead::Criticality;
    // Two slots; sheddable requests (odd numbers here) may take one.
    let layer = BulkheadLayer::new(
        BulkheadConfig::builder()
            .max_concurrent(2)
            .sheddable_headroom_percent(50)
            .build()
            .unwrap(),
    )
    .classify_by(|x: &u32| {
        if x % 2 == 1 {
            Criticality::Sheddable
        } else {
            Criticality::Critical
        }
    });
    let svc = layer.layer(slow(Duration::from_secs(1)));
    let running = tokio::spawn(svc.clone().oneshot(1));
    tokio::task::yield_now().await;
    let err = svc.clone().oneshot(3).await.unwrap_err();
    assert_eq!(
        keel(&err).reject_reason(),
        Some(RejectReason::Priority {
            class: Criticality::Sheddable
        })
    );
    assert!(err.to_string().contains("sheddable"), "{err}");
    assert_eq!(svc.clone().oneshot(2).await.unwrap(), 2);
    assert_eq!(running.await.unwrap().unwrap(), 1);
    let stats = layer.bulkhead().stats();
    assert_eq!((stats.sheddable.shed, stats.critical.admitted), (1, 1));
}

#[cfg(feature = "http")]
#[tokio::test(start_paused = true)]
async fn bulkhead_layer_reads_the_criticality_request_extension() {
    use keel_tokio::core::bulkhead::Criticality;
    use keel_tokio::tower::FromExtension;

    let layer = BulkheadLayer::new(
        BulkheadConfig::builder()
            .max_concurrent(2)
            .reserved_critical_percent(50)
            .build()
            .unwrap(),
    )
    .classify_by(FromExtension);
    let svc = layer.layer(service_fn(|_: http::Request<()>| async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok::<_, Infallible>(())
    }));
    let tagged = |class: Option<Criticality>| {
        let mut req = http::Request::new(());
        if let Some(c) = class {
            req.extensions_mut().insert(c);
        }
        req
    };
    // An untagged request is default work: it takes the unreserved slot...
    let running = tokio::spawn(svc.clone().oneshot(tagged(None)));
    tokio::task::yield_now().await;
    // ...and the reserved one is critical work's.
    let err = svc.clone().oneshot(tagged(None)).await.unwrap_err();
    assert_eq!(
        keel(&err).reject_reason(),
        Some(RejectReason::Priority {
            class: Criticality::Default
        })
    );
    svc.clone()
        .oneshot(tagged(Some(Criticality::Critical)))
        .await
        .unwrap();
    running.await.unwrap().unwrap();
    assert_eq!(layer.bulkhead().stats().critical.admitted, 1);
}
