//! `breaker`: admission + outcome on a closed breaker, and rejection on an open one, keel beside
//! failsafe.
//!
//! failsafe's `StateMachine` is an `Arc<Mutex<..>>` used through `&self` and reads
//! `std::time::Instant::now()` itself where its policy needs time (its rejection path, its
//! default success-rate policy); keel is given the time. Entries suffixed `+std_now` add keel's
//! own clock read, so those compare like for like where failsafe reads the clock. The
//! `keel_tokio_call` / `keel_smol_call` entries go through the adapters' async
//! `Breaker::call` (clock reads, admission, outcome), run to completion by `block_on`.

use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;
use failsafe::{CircuitBreaker as _, Config};
use keel_core::breaker::{BreakerConfig, CircuitBreaker};
use keel_core::sync::breaker::SharedBreaker;
use keel_core::time::Instant;

use crate::groups::util::{group, std_now, two_threads};

pub(crate) fn keel_consecutive() -> BreakerConfig {
    BreakerConfig::consecutive_failures(5)
        .build()
        .expect("valid breaker config")
}

pub(crate) fn bench(c: &mut Criterion) {
    let now = Instant::from_secs(1);
    let mut g = group(c, "breaker");

    // --- closed, consecutive-failures policy (5), a successful call ---
    g.bench_function("closed_consecutive/keel_mut", |b| {
        let mut br = CircuitBreaker::new(keel_consecutive(), now);
        b.iter(|| {
            if let Ok(p) = br.try_acquire(black_box(now)) {
                br.on_success(now, p);
            }
        })
    });
    g.bench_function("closed_consecutive/keel_shared", |b| {
        let br = SharedBreaker::new(keel_consecutive(), now);
        b.iter(|| {
            if let Ok(p) = br.try_acquire(black_box(now)) {
                br.on_success(now, p);
            }
        })
    });
    // The same with the closed path taken away: a mutex around the `&mut` machine, locked for
    // the admission and for the outcome (what `SharedBreaker` was before its lock-free path).
    g.bench_function("closed_consecutive/keel_locked", |b| {
        let br = std::sync::Mutex::new(CircuitBreaker::new(keel_consecutive(), now));
        b.iter(|| {
            let p = br.lock().expect("not poisoned").try_acquire(black_box(now));
            if let Ok(p) = p {
                br.lock().expect("not poisoned").on_success(now, p);
            }
        })
    });
    g.bench_function("closed_consecutive/failsafe_permitted_on_success", |b| {
        let sm = Config::new()
            .failure_policy(failsafe::failure_policy::consecutive_failures(
                5,
                failsafe::backoff::constant(Duration::from_secs(60)),
            ))
            .build();
        b.iter(|| {
            if black_box(sm.is_call_permitted()) {
                sm.on_success();
            }
        })
    });
    g.bench_function("closed_consecutive/failsafe_call", |b| {
        let sm = Config::new()
            .failure_policy(failsafe::failure_policy::consecutive_failures(
                5,
                failsafe::backoff::constant(Duration::from_secs(60)),
            ))
            .build();
        b.iter(|| black_box(sm.call(|| Ok::<(), ()>(())).is_ok()))
    });

    // --- the same on two threads sharing one breaker (per-thread time per call) ---
    g.bench_function("closed_consecutive_2_threads/keel_shared", |b| {
        let br = SharedBreaker::new(keel_consecutive(), now);
        b.iter_custom(|iters| {
            two_threads(&br, iters, |br| {
                if let Ok(p) = br.try_acquire(black_box(now)) {
                    br.on_success(now, p);
                }
            })
        })
    });
    g.bench_function("closed_consecutive_2_threads/keel_locked", |b| {
        let br = std::sync::Mutex::new(CircuitBreaker::new(keel_consecutive(), now));
        b.iter_custom(|iters| {
            two_threads(&br, iters, |br| {
                let p = br.lock().expect("not poisoned").try_acquire(black_box(now));
                if let Ok(p) = p {
                    br.lock().expect("not poisoned").on_success(now, p);
                }
            })
        })
    });
    g.bench_function(
        "closed_consecutive_2_threads/failsafe_permitted_on_success",
        |b| {
            let sm = Config::new()
                .failure_policy(failsafe::failure_policy::consecutive_failures(
                    5,
                    failsafe::backoff::constant(Duration::from_secs(60)),
                ))
                .build();
            b.iter_custom(|iters| {
                two_threads(&sm, iters, |sm| {
                    if black_box(sm.is_call_permitted()) {
                        sm.on_success();
                    }
                })
            })
        },
    );
    // The adapter's clock read per call (std `Instant::now()`), one thread.
    g.bench_function("closed_consecutive/keel_shared+std_now", |b| {
        let br = SharedBreaker::new(keel_consecutive(), std_now());
        b.iter(|| {
            let now = std_now();
            if let Ok(p) = br.try_acquire(now) {
                br.on_success(now, p);
            }
        })
    });

    // --- the same, through the adapters' async `Breaker::call` (clock read included) ---
    g.bench_function("closed_consecutive/keel_tokio_call", |b| {
        let br = keel_tokio::Breaker::new(keel_consecutive());
        b.iter(|| {
            black_box(futures_lite::future::block_on(br.call(async { Ok::<(), ()>(()) })).is_ok())
        })
    });
    g.bench_function("closed_consecutive/keel_smol_call", |b| {
        let br = keel_smol::Breaker::new(keel_consecutive());
        b.iter(|| {
            black_box(futures_lite::future::block_on(br.call(async { Ok::<(), ()>(()) })).is_ok())
        })
    });

    // --- closed, each library's default policy, a successful call ---
    g.bench_function("closed_default/keel_mut", |b| {
        let mut br = CircuitBreaker::new(BreakerConfig::default(), now);
        b.iter(|| {
            if let Ok(p) = br.try_acquire(black_box(now)) {
                br.on_success(now, p);
            }
        })
    });
    g.bench_function("closed_default/keel_shared", |b| {
        let br = SharedBreaker::new(BreakerConfig::default(), now);
        b.iter(|| {
            if let Ok(p) = br.try_acquire(black_box(now)) {
                br.on_success(now, p);
            }
        })
    });
    g.bench_function("closed_default/keel_shared+std_now", |b| {
        let br = SharedBreaker::new(BreakerConfig::default(), std_now());
        b.iter(|| {
            let now = std_now();
            if let Ok(p) = br.try_acquire(now) {
                br.on_success(now, p);
            }
        })
    });
    g.bench_function("closed_default/failsafe_call", |b| {
        let sm = Config::new().build();
        b.iter(|| black_box(sm.call(|| Ok::<(), ()>(())).is_ok()))
    });

    // --- open: the call is rejected ---
    g.bench_function("open/keel_mut", |b| {
        let mut br = CircuitBreaker::new(keel_consecutive(), now);
        br.force_open(now);
        b.iter(|| black_box(br.try_acquire(black_box(now)).is_err()))
    });
    g.bench_function("open/keel_shared", |b| {
        let br = SharedBreaker::new(keel_consecutive(), now);
        br.force_open(now);
        b.iter(|| black_box(br.try_acquire(black_box(now)).is_err()))
    });
    g.bench_function("open/keel_shared+std_now", |b| {
        let br = SharedBreaker::new(keel_consecutive(), std_now());
        br.force_open(std_now());
        b.iter(|| black_box(br.try_acquire(std_now()).is_err()))
    });
    g.bench_function("open/failsafe_is_call_permitted", |b| {
        let sm = Config::new()
            .failure_policy(failsafe::failure_policy::consecutive_failures(
                1,
                failsafe::backoff::constant(Duration::from_secs(3600)),
            ))
            .build();
        sm.on_error();
        assert!(!sm.is_call_permitted(), "failsafe breaker should be open");
        b.iter(|| black_box(sm.is_call_permitted()))
    });
    g.finish();
}
