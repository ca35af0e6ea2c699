//! `handle`: what a runtime handle adds around an already-ready future, keel-tokio's
//! `Breaker::call`, `Bulkhead::run`, `Retry::run` (first try succeeds) and
//! `RateLimiter::until_ready` (a token is available), each beside a bare `.await` of the same
//! ready future, all driven by the same `block_on` (its cost is in every figure; the overhead
//! is the difference to `bare_await`).

use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::Duration;

use criterion::Criterion;
use futures_lite::future::block_on;
use keel_core::backoff::{BackoffConfig, Jitter};
use keel_core::breaker::BreakerConfig;
use keel_core::bulkhead::BulkheadConfig;
use keel_core::rate::Quota;

use crate::groups::util::group;

async fn ready() -> Result<u64, ()> {
    Ok(black_box(7))
}

pub(crate) fn bench(c: &mut Criterion) {
    let mut g = group(c, "handle");
    g.bench_function("bare_await", |b| {
        b.iter(|| black_box(block_on(async { ready().await })))
    });
    g.bench_function("keel_tokio_breaker_call", |b| {
        let br = keel_tokio::Breaker::new(BreakerConfig::default());
        b.iter(|| black_box(block_on(br.call(ready())).is_ok()))
    });
    // The same with a consecutive-failures config: `SharedBreaker`'s lock-free closed path
    // (the default config has a failure-rate window, so every call takes the lock).
    g.bench_function("keel_tokio_breaker_call_consecutive", |b| {
        let br = keel_tokio::Breaker::new(
            BreakerConfig::consecutive_failures(5)
                .build()
                .expect("valid breaker config"),
        );
        b.iter(|| black_box(block_on(br.call(ready())).is_ok()))
    });
    g.bench_function("keel_tokio_bulkhead_run", |b| {
        let bh = keel_tokio::Bulkhead::new(
            BulkheadConfig::builder()
                .max_concurrent(64)
                .build()
                .expect("valid bulkhead"),
        );
        b.iter(|| black_box(block_on(bh.run(ready())).is_ok()))
    });
    g.bench_function("keel_tokio_retry_run_first_try", |b| {
        let retry = keel_tokio::Retry::new(
            BackoffConfig::constant(Duration::from_millis(10))
                .jitter(Jitter::None)
                .max_attempts(3)
                .build()
                .expect("valid backoff"),
        );
        b.iter(|| black_box(block_on(retry.run(ready)).is_ok()))
    });
    g.bench_function("keel_tokio_rate_until_ready", |b| {
        // A quota no benchmark can exhaust: every wait finds a token.
        let rate = NonZeroU32::new(1_000_000_000).expect("non-zero");
        let quota = Quota::per_second(rate).expect("valid quota");
        let l = keel_tokio::RateLimiter::new(quota);
        b.iter(|| {
            block_on(async {
                let admitted = l.until_ready().await.is_ok();
                black_box((admitted, ready().await))
            })
        })
    });
    g.finish();
}
