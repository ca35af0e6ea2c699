//! `handle`: what a runtime handle adds around an already-ready future, keel-tokio's
//! `Breaker::call`, `Bulkhead::run`, `Retry::run` (first try succeeds) and
//! `RateLimiter::until_ready` (a token is available), each beside a bare `.await` of the same
//! ready future, all driven by the same `block_on` (its cost is in every figure; the overhead
//! is the difference to `bare_await`), and the breaker and bulkhead around a future holding
//! 1 KiB beside `bare_await_1k`.

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

/// The already-ready future every entry awaits.
pub(crate) async fn ready() -> Result<u64, ()> {
    Ok(black_box(7))
}

/// An already-ready future that holds 1 KiB across its await, as a request future holds its
/// buffers: what a wrapper that stored the future more than once would copy more than once.
pub(crate) async fn ready_1k() -> Result<u64, ()> {
    let buf = black_box([7u8; 1024]);
    std::future::ready(()).await;
    Ok(u64::from(black_box(&buf)[512]))
}

/// keel-tokio's breaker with the default config (a failure-rate window: each outcome takes
/// the lock).
pub(crate) fn breaker() -> keel_tokio::Breaker {
    keel_tokio::Breaker::new(BreakerConfig::default())
}

/// keel-tokio's breaker with a consecutive-failures config: `SharedBreaker`'s lock-free
/// closed path.
pub(crate) fn breaker_consecutive() -> keel_tokio::Breaker {
    keel_tokio::Breaker::new(
        BreakerConfig::consecutive_failures(5)
            .build()
            .expect("valid breaker config"),
    )
}

/// keel-tokio's bulkhead, 64 concurrent.
pub(crate) fn bulkhead() -> keel_tokio::Bulkhead {
    keel_tokio::Bulkhead::new(
        BulkheadConfig::builder()
            .max_concurrent(64)
            .build()
            .expect("valid bulkhead"),
    )
}

/// keel-tokio's retry: 3 attempts, a constant 10 ms backoff without jitter.
pub(crate) fn retry() -> keel_tokio::Retry {
    keel_tokio::Retry::new(
        BackoffConfig::constant(Duration::from_millis(10))
            .jitter(Jitter::None)
            .max_attempts(3)
            .build()
            .expect("valid backoff"),
    )
}

/// keel-tokio's rate limiter with a quota no benchmark can exhaust: every wait finds a token.
pub(crate) fn rate() -> keel_tokio::RateLimiter {
    let rate = NonZeroU32::new(1_000_000_000).expect("non-zero");
    keel_tokio::RateLimiter::new(Quota::per_second(rate).expect("valid quota"))
}

/// `until_ready` with a token available, then the ready future.
pub(crate) async fn until_ready_then_ready(l: &keel_tokio::RateLimiter) -> (bool, Result<u64, ()>) {
    let admitted = l.until_ready().await.is_ok();
    (admitted, ready().await)
}

pub(crate) fn bench(c: &mut Criterion) {
    let mut g = group(c, "handle");
    g.bench_function("bare_await", |b| {
        b.iter(|| black_box(block_on(async { ready().await })))
    });
    g.bench_function("keel_tokio_breaker_call", |b| {
        let br = breaker();
        b.iter(|| black_box(block_on(br.call(ready())).is_ok()))
    });
    // The same with a consecutive-failures config: `SharedBreaker`'s lock-free closed path
    // (the default config has a failure-rate window: a success is lock-free only while the
    // window is full of successes, as it is here after the first 100 calls; every other
    // outcome takes the lock).
    g.bench_function("keel_tokio_breaker_call_consecutive", |b| {
        let br = breaker_consecutive();
        b.iter(|| black_box(block_on(br.call(ready())).is_ok()))
    });
    g.bench_function("keel_tokio_bulkhead_run", |b| {
        let bh = bulkhead();
        b.iter(|| black_box(block_on(bh.run(ready())).is_ok()))
    });
    g.bench_function("keel_tokio_retry_run_first_try", |b| {
        let retry = retry();
        b.iter(|| black_box(block_on(retry.run(ready)).is_ok()))
    });
    g.bench_function("keel_tokio_rate_until_ready", |b| {
        let l = rate();
        b.iter(|| black_box(block_on(until_ready_then_ready(&l))))
    });
    // Around a future holding 1 KiB: what a wrapper adds when it holds the future once (the
    // `async fn` wrappers before held it two to seven times, and copied it as often).
    g.bench_function("bare_await_1k", |b| {
        b.iter(|| black_box(block_on(async { ready_1k().await })))
    });
    g.bench_function("keel_tokio_breaker_call_1k", |b| {
        let br = breaker();
        b.iter(|| black_box(block_on(br.call(ready_1k())).is_ok()))
    });
    g.bench_function("keel_tokio_breaker_call_timeout_1k", |b| {
        let br = breaker();
        b.iter(|| black_box(block_on(br.call_timeout(Duration::from_secs(1), ready_1k())).is_ok()))
    });
    g.bench_function("keel_tokio_bulkhead_run_1k", |b| {
        let bh = bulkhead();
        b.iter(|| black_box(block_on(bh.run(ready_1k())).is_ok()))
    });
    g.finish();
}
