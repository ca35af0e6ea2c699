//! `backoff`: the next jittered delay, keel beside backon and backoff.
//!
//! All three are exponential with jitter (keel and backon full jitter; backoff its default
//! ±50 % randomisation), unlimited attempts, and run into their cap
//! (the steady state of a long retry loop). keel is given the time (a fixed `Instant`); backon
//! needs no time; backoff 0.4 reads its `Clock` on every call, so it is given a fixed fake clock
//! (and measured once more with its default `SystemClock`).

use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;
use keel_core::backoff::{Backoff, BackoffConfig, Jitter};
use keel_core::time::Instant;

use crate::groups::util::group;

#[derive(Clone, Copy, Debug)]
struct FixedClock(std::time::Instant);

impl Default for FixedClock {
    fn default() -> Self {
        FixedClock(std::time::Instant::now())
    }
}

impl backoff::Clock for FixedClock {
    fn now(&self) -> std::time::Instant {
        self.0
    }
}

fn keel(jitter: Jitter) -> Backoff {
    let config = BackoffConfig::exponential(Duration::from_secs(1), Duration::from_secs(60))
        .jitter(jitter)
        .unlimited_attempts()
        .seed(7)
        .build()
        .expect("valid backoff config");
    Backoff::new(config, Instant::from_secs(1))
}

pub(crate) fn bench(c: &mut Criterion) {
    let now = Instant::from_secs(1);
    let mut g = group(c, "backoff");
    g.bench_function("keel/next_delay_full_jitter", |b| {
        let mut bo = keel(Jitter::Full);
        b.iter(|| black_box(bo.next_delay(black_box(now))))
    });
    g.bench_function("keel/next_delay_equal_jitter", |b| {
        let mut bo = keel(Jitter::Equal);
        b.iter(|| black_box(bo.next_delay(black_box(now))))
    });
    g.bench_function("keel/next_delay_decorrelated_jitter", |b| {
        let mut bo = keel(Jitter::Decorrelated);
        b.iter(|| black_box(bo.next_delay(black_box(now))))
    });
    g.bench_function("keel/delays_next_full_jitter", |b| {
        let mut bo = keel(Jitter::Full);
        b.iter(|| black_box(bo.delays().next()))
    });
    g.bench_function("backon/exponential_jitter_next", |b| {
        use backon::BackoffBuilder as _;
        let mut it = backon::ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(Duration::from_secs(1))
            .with_max_delay(Duration::from_secs(60))
            .without_max_times()
            .build();
        b.iter(|| black_box(it.next()))
    });
    g.bench_function("backoff/exponential_next_backoff_fixed_clock", |b| {
        use backoff::backoff::Backoff as _;
        let mut bo = backoff::exponential::ExponentialBackoffBuilder::<FixedClock>::new()
            .with_initial_interval(Duration::from_secs(1))
            .with_max_interval(Duration::from_secs(60))
            .with_max_elapsed_time(None)
            .build();
        b.iter(|| black_box(bo.next_backoff()))
    });
    g.bench_function("backoff/exponential_next_backoff_system_clock", |b| {
        use backoff::backoff::Backoff as _;
        let mut bo = backoff::exponential::ExponentialBackoffBuilder::<backoff::SystemClock>::new()
            .with_initial_interval(Duration::from_secs(1))
            .with_max_interval(Duration::from_secs(60))
            .with_max_elapsed_time(None)
            .build();
        b.iter(|| black_box(bo.next_backoff()))
    });
    g.finish();
}
