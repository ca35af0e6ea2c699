//! `limit`: taking and releasing one connection permit, keel beside `tokio::sync::Semaphore`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::Criterion;
use keel_core::limit::{Limit, LimitConfig};
use keel_core::sync::limit::SharedLimit;

pub(crate) fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("limit");
    let config = LimitConfig::builder()
        .max(1024)
        .build()
        .expect("valid limit");
    let shared = SharedLimit::new(config.clone());
    g.bench_function("keel/shared_acquire_release", |b| {
        b.iter(|| drop(black_box(shared.try_acquire())))
    });
    let mut local = Limit::new(config);
    g.bench_function("keel/mut_acquire_release", |b| {
        b.iter(|| {
            if black_box(local.try_acquire()) {
                local.release();
            }
        })
    });
    let sem = Arc::new(tokio::sync::Semaphore::new(1024));
    g.bench_function("tokio/semaphore_try_acquire_drop", |b| {
        b.iter(|| drop(black_box(sem.try_acquire())))
    });
    g.bench_function("tokio/semaphore_try_acquire_owned_drop", |b| {
        b.iter(|| drop(black_box(Arc::clone(&sem).try_acquire_owned())))
    });
    g.finish();
}
