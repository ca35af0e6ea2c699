//! `limit`: taking and releasing one connection permit, keel beside `tokio::sync::Semaphore`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::Criterion;
use keel_core::limit::{Limit, LimitConfig};
use keel_core::sync::limit::SharedLimit;
use keel_core::Instant;

use crate::groups::util::{group, two_threads};

pub(crate) fn bench(c: &mut Criterion) {
    let mut g = group(c, "limit");
    let config = LimitConfig::builder()
        .max(1024)
        .build()
        .expect("valid limit");
    g.bench_function("keel/shared_acquire_release", |b| {
        let shared = SharedLimit::new(config.clone());
        b.iter(|| drop(black_box(shared.try_acquire(Instant::ZERO))))
    });
    g.bench_function("keel/shared_acquire_ref_release", |b| {
        let shared = SharedLimit::new(config.clone());
        b.iter(|| drop(black_box(shared.try_acquire_ref(Instant::ZERO))))
    });
    g.bench_function("keel/mut_acquire_release", |b| {
        let mut local = Limit::new(config.clone());
        b.iter(|| {
            if let Ok(p) = black_box(local.try_acquire(Instant::ZERO)) {
                local.on_release(Instant::ZERO, p);
            }
        })
    });
    g.bench_function("tokio/semaphore_try_acquire_drop", |b| {
        let sem = tokio::sync::Semaphore::new(1024);
        b.iter(|| drop(black_box(sem.try_acquire())))
    });
    g.bench_function("tokio/semaphore_try_acquire_owned_drop", |b| {
        let sem = Arc::new(tokio::sync::Semaphore::new(1024));
        b.iter(|| drop(black_box(Arc::clone(&sem).try_acquire_owned())))
    });

    // Two threads taking and releasing permits of one limit (per-thread time per pair).
    g.bench_function("2_threads/keel_shared_acquire_release", |b| {
        b.iter_custom(|iters| {
            let shared = SharedLimit::new(config.clone());
            two_threads(&shared, iters, |s| {
                drop(black_box(s.try_acquire(Instant::ZERO)))
            })
        })
    });
    g.bench_function("2_threads/keel_shared_acquire_ref_release", |b| {
        b.iter_custom(|iters| {
            let shared = SharedLimit::new(config.clone());
            two_threads(&shared, iters, |s| {
                drop(black_box(s.try_acquire_ref(Instant::ZERO)))
            })
        })
    });
    g.bench_function("2_threads/tokio_semaphore_try_acquire_drop", |b| {
        b.iter_custom(|iters| {
            let sem = tokio::sync::Semaphore::new(1024);
            two_threads(&sem, iters, |s| drop(black_box(s.try_acquire())))
        })
    });
    g.finish();
}
