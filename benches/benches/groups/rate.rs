//! `rate`: one GCRA decision, keel beside governor.
//!
//! Both sides are given the time the same way. With a fake clock: keel receives a fixed
//! `Instant`, governor reads a `FakeRelativeClock` that never moves (one atomic load). With real
//! clocks: governor's default `check()` reads its default clock (quanta, a TSC read), keel-tokio's
//! `RateLimiter::check()` / `KeyedRateLimiter::check()` read the adapter's clock
//! (`tokio::time::Instant::now`, i.e. `std::time::Instant::now`), as keel-smol's `check()` reads
//! its own (`std::time::Instant::now` through the `async-io` runtime); keel's shared check is also
//! shown on a bare std clock and on quanta's clock, and the clock reads are measured alone.
//!
//! The quota is 10^9 per second with a burst of 10^9 on both sides (a fresh limiter per sample),
//! so every check is admitted (the common path: the CAS/store of the new TAT happens every time).
//! The `reject` entries measure the other path: a burst of 1, already spent, at a fixed time.
//!
//! keel's shared limiter appears twice: `keel_shared_check` is `SharedRateLimiter::new`, which
//! keeps no counters (as governor's `check()` keeps none); `keel_shared_counted_check` is
//! `SharedRateLimiter::counted` (exact `allowed`/`limited` counters: one more atomic add per
//! decision), the form keel-tokio's limiter wraps.

use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::Duration;

use criterion::Criterion;
use governor::clock::{Clock as _, FakeRelativeClock, QuantaClock};
use keel_core::rate::keyed::{KeyedConfig, KeyedGcra};
use keel_core::rate::{Gcra, Quota};
use keel_core::sync::gcra::SharedRateLimiter;
use keel_core::sync::keyed::SharedKeyedGcra;
use keel_core::time::Instant;

use crate::groups::util::{group, std_now, two_threads};

pub(crate) const KEYS: u64 = 1000;

/// 10^9 per second (an emission interval of 1 ns) with a burst of 10^9: far more than any one
/// sample's checks, so every check in a sample is admitted.
const FAST: NonZeroU32 = match NonZeroU32::new(1_000_000_000) {
    Some(n) => n,
    None => NonZeroU32::MIN,
};

pub(crate) fn keel_quota() -> Quota {
    Quota::per_second(FAST).expect("valid quota")
}

pub(crate) fn gov_quota() -> governor::Quota {
    governor::Quota::per_second(FAST)
}

fn keel_tight() -> Quota {
    Quota::per_second(NonZeroU32::MIN).expect("valid quota")
}

fn gov_tight() -> governor::Quota {
    governor::Quota::per_second(NonZeroU32::MIN)
}

/// governor's direct limiter on its fake clock, as the bench builds it.
type GovernorDirect = governor::RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    FakeRelativeClock,
    governor::middleware::NoOpMiddleware<governor::nanos::Nanos>,
>;

// Each single-limiter check is measured as one out-of-line call, the way a service calls it
// (once per request, from other code). Inlined into criterion's loop instead, the figures
// moved by up to 2 ns between builds that changed only *other* benchmark functions (code
// layout), and the compiler could hoist the quota's loads out of the loop for one side
// and not the other.

#[inline(never)]
fn keel_mut_check(l: &mut Gcra, now: Instant) -> bool {
    l.try_acquire(now).is_ok()
}

#[inline(never)]
fn keel_shared_check(l: &SharedRateLimiter, now: Instant) -> bool {
    l.try_acquire(now).is_ok()
}

#[inline(never)]
fn keel_counted_check(l: &SharedRateLimiter, now: Instant) -> bool {
    l.try_acquire(now).is_ok()
}

#[inline(never)]
fn governor_check(l: &GovernorDirect) -> bool {
    l.check().is_ok()
}

/// The next of `KEYS` keys, cycled per thread (no shared counter to contend on).
pub(crate) fn next_key() -> u64 {
    thread_local!(static KEY: std::cell::Cell<u64> = const { std::cell::Cell::new(0) });
    KEY.with(|k| {
        let next = if k.get() + 1 >= KEYS { 0 } else { k.get() + 1 };
        k.set(next);
        next
    })
}

/// The keyed limiter as keel-tokio built it before sharding: one mutex around the table.
fn locked_keyed() -> std::sync::Mutex<KeyedGcra<u64>> {
    let config = KeyedConfig::builder()
        .quota(keel_quota())
        .max_keys(KEYS as usize)
        .build()
        .expect("valid keyed config");
    std::sync::Mutex::new(KeyedGcra::new(config, keel_tokio::now()))
}

fn locked_check(l: &std::sync::Mutex<KeyedGcra<u64>>, k: &u64) -> bool {
    let now = keel_tokio::now();
    match l.lock() {
        Ok(mut table) => table.try_acquire(now, k).is_ok(),
        Err(poisoned) => poisoned.into_inner().try_acquire(now, k).is_ok(),
    }
}

pub(crate) fn bench(c: &mut Criterion) {
    let now = Instant::from_secs(1);
    let mut g = group(c, "rate");

    // --- fake clock: both given the time ---
    g.bench_function("fake_clock/keel_mut_check", |b| {
        let mut l = Gcra::new(keel_quota(), now);
        b.iter(|| keel_mut_check(&mut l, black_box(now)))
    });
    g.bench_function("fake_clock/keel_shared_check", |b| {
        let l = SharedRateLimiter::new(keel_quota(), now);
        b.iter(|| keel_shared_check(&l, black_box(now)))
    });
    g.bench_function("fake_clock/keel_shared_counted_check", |b| {
        let l = SharedRateLimiter::counted(keel_quota(), now);
        b.iter(|| keel_counted_check(&l, black_box(now)))
    });
    g.bench_function("fake_clock/governor_direct_check", |b| {
        let l = governor::RateLimiter::direct_with_clock(gov_quota(), FakeRelativeClock::default());
        b.iter(|| governor_check(&l))
    });

    // --- fake clock, two threads on one limiter (per-thread time per check) ---
    g.bench_function("fake_clock_2_threads/keel_shared_check", |b| {
        b.iter_custom(|iters| {
            let l = SharedRateLimiter::new(keel_quota(), now);
            two_threads(&l, iters, |l| {
                black_box(keel_shared_check(l, black_box(now)));
            })
        })
    });
    g.bench_function("fake_clock_2_threads/keel_shared_counted_check", |b| {
        b.iter_custom(|iters| {
            let l = SharedRateLimiter::counted(keel_quota(), now);
            two_threads(&l, iters, |l| {
                black_box(keel_counted_check(l, black_box(now)));
            })
        })
    });
    g.bench_function("fake_clock_2_threads/governor_direct_check", |b| {
        b.iter_custom(|iters| {
            let l =
                governor::RateLimiter::direct_with_clock(gov_quota(), FakeRelativeClock::default());
            two_threads(&l, iters, |l| {
                black_box(governor_check(l));
            })
        })
    });

    // --- rejection at a fixed time ---
    g.bench_function("reject/keel_mut_check", |b| {
        let mut l = Gcra::new(keel_tight(), now);
        let _ = l.try_acquire(now);
        b.iter(|| !keel_mut_check(&mut l, black_box(now)))
    });
    g.bench_function("reject/keel_shared_check", |b| {
        let l = SharedRateLimiter::new(keel_tight(), now);
        let _ = l.try_acquire(now);
        b.iter(|| !keel_shared_check(&l, black_box(now)))
    });
    g.bench_function("reject/keel_shared_counted_check", |b| {
        let l = SharedRateLimiter::counted(keel_tight(), now);
        let _ = l.try_acquire(now);
        b.iter(|| !keel_counted_check(&l, black_box(now)))
    });
    g.bench_function("reject/governor_direct_check", |b| {
        let l = governor::RateLimiter::direct_with_clock(gov_tight(), FakeRelativeClock::default());
        let _ = l.check();
        b.iter(|| !governor_check(&l))
    });

    // --- keyed, 1000 keys in turn, fake clock ---
    g.bench_function("keyed_1000/keel_mut_check", |b| {
        let config = KeyedConfig::builder()
            .quota(keel_quota())
            .max_keys(KEYS as usize)
            .build()
            .expect("valid keyed config");
        let mut l = KeyedGcra::<u64>::new(config, now);
        let mut k = 0u64;
        b.iter(|| {
            k = if k + 1 == KEYS { 0 } else { k + 1 };
            black_box(l.try_acquire(black_box(now), &k).is_ok())
        })
    });
    g.bench_function("keyed_1000/governor_dashmap_check_key", |b| {
        let l =
            governor::RateLimiter::dashmap_with_clock(gov_quota(), FakeRelativeClock::default());
        let mut k = 0u64;
        b.iter(|| {
            k = if k + 1 == KEYS { 0 } else { k + 1 };
            black_box(l.check_key(&k).is_ok())
        })
    });
    g.bench_function("keyed_1000/governor_hashmap_check_key", |b| {
        let l =
            governor::RateLimiter::hashmap_with_clock(gov_quota(), FakeRelativeClock::default());
        let mut k = 0u64;
        b.iter(|| {
            k = if k + 1 == KEYS { 0 } else { k + 1 };
            black_box(l.check_key(&k).is_ok())
        })
    });
    // The sharded table behind keel-tokio's `KeyedRateLimiter` (`SharedKeyedGcra`, `&self`,
    // a lock per shard), on the same fixed instant: the table's share of the adapter's check.
    g.bench_function("keyed_1000/keel_shared_check", |b| {
        let config = KeyedConfig::builder()
            .quota(keel_quota())
            .max_keys(KEYS as usize)
            .build()
            .expect("valid keyed config");
        let l = SharedKeyedGcra::<u64>::new(config, now);
        let mut k = 0u64;
        b.iter(|| {
            k = if k + 1 == KEYS { 0 } else { k + 1 };
            black_box(l.try_acquire(black_box(now), &k).is_ok())
        })
    });
    g.bench_function("keyed_1000_2_threads/keel_shared_check", |b| {
        b.iter_custom(|iters| {
            let config = KeyedConfig::builder()
                .quota(keel_quota())
                .max_keys(KEYS as usize)
                .build()
                .expect("valid keyed config");
            let l = SharedKeyedGcra::<u64>::new(config, now);
            two_threads(&l, iters, |l| {
                let k = next_key();
                black_box(l.try_acquire(black_box(now), &k).is_ok());
            })
        })
    });
    g.bench_function("keyed_1000_2_threads/governor_dashmap_check_key", |b| {
        b.iter_custom(|iters| {
            let l = governor::RateLimiter::dashmap_with_clock(
                gov_quota(),
                FakeRelativeClock::default(),
            );
            two_threads(&l, iters, |l| {
                let k = next_key();
                black_box(l.check_key(&k).is_ok());
            })
        })
    });

    // --- real clocks: each side reads its own clock ---
    g.bench_function("real_clock/keel_tokio_rate_limiter_check", |b| {
        let l = keel_tokio::RateLimiter::new(keel_quota());
        b.iter(|| black_box(l.check().is_ok()))
    });
    g.bench_function("real_clock/keel_smol_rate_limiter_check", |b| {
        let l = keel_smol::RateLimiter::new(keel_quota());
        b.iter(|| black_box(l.check().is_ok()))
    });
    g.bench_function("real_clock/keel_std_now_shared_check", |b| {
        let l = SharedRateLimiter::new(keel_quota(), std_now());
        b.iter(|| black_box(l.try_acquire(std_now()).is_ok()))
    });
    g.bench_function("real_clock/keel_quanta_now_shared_check", |b| {
        let clock = quanta::Clock::new();
        let start = clock.raw();
        let quanta_now = || Instant::from_nanos(clock.delta_as_nanos(start, clock.raw()));
        let l = SharedRateLimiter::new(keel_quota(), quanta_now());
        b.iter(|| black_box(l.try_acquire(quanta_now()).is_ok()))
    });
    // The adapter's check taken apart (issue 16): keel-tokio's clock with the bare shared
    // limiter, then with the counted one (`RateLimiter` is counted for its `stats()`: one
    // atomic add after the CAS), against the adapter's `check()` above.
    g.bench_function("real_clock/keel_tokio_now_bare_shared_check", |b| {
        let l = SharedRateLimiter::new(keel_quota(), keel_tokio::now());
        b.iter(|| black_box(l.try_acquire(keel_tokio::now()).is_ok()))
    });
    g.bench_function("real_clock/keel_tokio_now_counted_shared_check", |b| {
        let l = SharedRateLimiter::counted(keel_quota(), keel_tokio::now());
        b.iter(|| black_box(l.try_acquire(keel_tokio::now()).is_ok()))
    });
    g.bench_function("real_clock/governor_direct_check", |b| {
        let l = governor::RateLimiter::direct(gov_quota());
        b.iter(|| black_box(l.check().is_ok()))
    });
    g.bench_function("real_clock/keel_tokio_keyed_1000_check", |b| {
        let config = KeyedConfig::builder()
            .quota(keel_quota())
            .max_keys(KEYS as usize)
            .build()
            .expect("valid keyed config");
        let l = keel_tokio::KeyedRateLimiter::<u64>::new(config);
        let mut k = 0u64;
        b.iter(|| {
            k = if k + 1 == KEYS { 0 } else { k + 1 };
            black_box(l.check(&k).is_ok())
        })
    });
    // The design before issue 16's sharding, kept for the before/after ratio in one run: one
    // mutex around the whole `&mut` table, keel-tokio's clock read as the adapter reads it.
    g.bench_function("real_clock/keel_tokio_keyed_locked_1000_check", |b| {
        let l = locked_keyed();
        let mut k = 0u64;
        b.iter(|| {
            k = if k + 1 == KEYS { 0 } else { k + 1 };
            black_box(locked_check(&l, &k))
        })
    });
    g.bench_function("real_clock/governor_keyed_1000_check_key", |b| {
        let l = governor::RateLimiter::keyed(gov_quota());
        let mut k = 0u64;
        b.iter(|| {
            k = if k + 1 == KEYS { 0 } else { k + 1 };
            black_box(l.check_key(&k).is_ok())
        })
    });

    // --- the keyed checks on two threads (real clocks; per-thread time per check) ---
    g.bench_function("real_clock_2_threads/keel_tokio_keyed_1000_check", |b| {
        b.iter_custom(|iters| {
            let config = KeyedConfig::builder()
                .quota(keel_quota())
                .max_keys(KEYS as usize)
                .build()
                .expect("valid keyed config");
            let l = keel_tokio::KeyedRateLimiter::<u64>::new(config);
            two_threads(&l, iters, |l| {
                let k = next_key();
                black_box(l.check(&k).is_ok());
            })
        })
    });
    g.bench_function(
        "real_clock_2_threads/keel_tokio_keyed_locked_1000_check",
        |b| {
            b.iter_custom(|iters| {
                let l = locked_keyed();
                two_threads(&l, iters, |l| {
                    let k = next_key();
                    black_box(locked_check(l, &k));
                })
            })
        },
    );
    g.bench_function("real_clock_2_threads/governor_keyed_1000_check_key", |b| {
        b.iter_custom(|iters| {
            let l = governor::RateLimiter::keyed(gov_quota());
            two_threads(&l, iters, |l| {
                let k = next_key();
                black_box(l.check_key(&k).is_ok());
            })
        })
    });

    // --- the clock reads alone ---
    g.bench_function("clock/keel_tokio_now", |b| {
        b.iter(|| black_box(keel_tokio::now()))
    });
    g.bench_function("clock/keel_smol_now", |b| {
        b.iter(|| black_box(keel_smol::now()))
    });
    g.bench_function("clock/std_instant_now", |b| {
        b.iter(|| black_box(std::time::Instant::now()))
    });
    g.bench_function("clock/governor_quanta_clock_now", |b| {
        let clock = QuantaClock::default();
        b.iter(|| black_box(clock.now()))
    });
    g.bench_function("clock/governor_fake_clock_now", |b| {
        let clock = FakeRelativeClock::default();
        clock.advance(Duration::from_nanos(1));
        b.iter(|| black_box(clock.now()))
    });
    g.finish();
}
