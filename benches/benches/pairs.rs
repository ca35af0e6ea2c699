//! Interleaved pairs: keel and its peer measured in alternation, round after round, for the
//! ratios of issue 16's goals.
//!
//! criterion measures one function for seconds, then the next: on a shared machine (a VM whose
//! two vCPUs may or may not share a core, neighbours that come and go) the two sides of a
//! ratio are then taken minutes apart, and two-thread figures moved by 2x from one run to the
//! next. Here each round measures both sides back to back (for about 20 ms each, the order
//! swapped every round) and the ratio is taken per round; the table reports the median ratio
//! over the rounds and its spread, beside each side's median time per operation (per thread
//! for the two-thread rows, as `util::two_threads` measures it).
//!
//! ```text
//! cargo bench -p keel-benches --bench pairs                          # 51 rounds per pair
//! KEEL_PAIRS_ROUNDS=101 cargo bench -p keel-benches --bench pairs    # more rounds
//! cargo bench -p keel-benches --bench pairs -- keyed                 # names with "keyed"
//! ```
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant as StdInstant};

use failsafe::Config;
use keel_core::rate::keyed::KeyedConfig;
use keel_core::sync::breaker::SharedBreaker;
use keel_core::sync::limit::SharedLimit;
use keel_core::time::Instant;

// The helpers of the criterion groups, shared rather than copied (the groups' `bench`
// functions are not used here).
#[allow(dead_code)]
mod groups {
    pub(crate) mod breaker;
    pub(crate) mod rate;
    pub(crate) mod util;
}

use groups::breaker::keel_consecutive;
use groups::rate::{gov_quota, keel_quota, next_key, KEYS};
use groups::util::two_threads;

/// One side of a pair: runs `iters` operations and returns the time of one of them.
type Side = Box<dyn FnMut(u64) -> f64>;

struct Pair {
    name: &'static str,
    /// The goal: keel's time over the peer's at most this.
    goal: f64,
    keel: Side,
    peer: Side,
}

/// How long one side's measurement in a round runs, about.
const TARGET: Duration = Duration::from_millis(20);

/// A side that runs `op` on this thread.
fn one_thread(mut op: impl FnMut() + 'static) -> Side {
    Box::new(move |iters| {
        let start = StdInstant::now();
        for _ in 0..iters {
            op();
        }
        start.elapsed().as_nanos() as f64 / iters as f64
    })
}

/// A side that runs `op` on two threads at once over `state` (per-thread time per operation).
fn both_threads<S: Sync + 'static>(state: S, op: impl Fn(&S) + Sync + 'static) -> Side {
    Box::new(move |iters| two_threads(&state, iters, &op).as_nanos() as f64 / iters as f64)
}

fn pairs() -> Vec<Pair> {
    let now = Instant::from_secs(1);
    let keyed = || {
        keel_tokio::KeyedRateLimiter::<u64>::new(
            KeyedConfig::builder()
                .quota(keel_quota())
                .max_keys(KEYS as usize)
                .build()
                .expect("valid keyed config"),
        )
    };
    let limit = || {
        SharedLimit::new(
            keel_core::limit::LimitConfig::builder()
                .max(1024)
                .build()
                .expect("valid limit"),
        )
    };
    let failsafe = || {
        Config::new()
            .failure_policy(failsafe::failure_policy::consecutive_failures(
                5,
                failsafe::backoff::constant(Duration::from_secs(60)),
            ))
            .build()
    };
    let breaker_op = move |br: &SharedBreaker| {
        if let Ok(p) = br.try_acquire(black_box(now)) {
            br.on_success(now, p);
        }
    };
    let failsafe_op = |sm: &failsafe::StateMachine<_, ()>| {
        if black_box(sm.is_call_permitted()) {
            sm.on_success();
        }
    };
    let mut out = Vec::new();
    {
        let (l, g) = (
            keel_tokio::RateLimiter::new(keel_quota()),
            governor::RateLimiter::direct(gov_quota()),
        );
        out.push(Pair {
            name: "RateLimiter::check() vs governor check()",
            goal: 1.0,
            keel: one_thread(move || {
                black_box(l.check().is_ok());
            }),
            peer: one_thread(move || {
                black_box(g.check().is_ok());
            }),
        });
    }
    {
        let (l, g) = (keyed(), governor::RateLimiter::keyed(gov_quota()));
        let (mut a, mut b) = (0u64, 0u64);
        out.push(Pair {
            name: "keyed check, 1000 keys, 1 thread",
            goal: 1.0,
            keel: one_thread(move || {
                a = if a + 1 == KEYS { 0 } else { a + 1 };
                black_box(l.check(&a).is_ok());
            }),
            peer: one_thread(move || {
                b = if b + 1 == KEYS { 0 } else { b + 1 };
                black_box(g.check_key(&b).is_ok());
            }),
        });
    }
    out.push(Pair {
        name: "keyed check, 1000 keys, 2 threads",
        goal: 1.0,
        keel: both_threads(keyed(), |l| {
            black_box(l.check(&next_key()).is_ok());
        }),
        peer: both_threads(governor::RateLimiter::keyed(gov_quota()), |g| {
            black_box(g.check_key(&next_key()).is_ok());
        }),
    });
    {
        let (l, s) = (limit(), tokio::sync::Semaphore::new(1024));
        out.push(Pair {
            name: "SharedLimit acquire + release vs Semaphore, 1 thread",
            goal: 0.6,
            keel: one_thread(move || drop(black_box(l.try_acquire_ref(Instant::ZERO)))),
            peer: one_thread(move || drop(black_box(s.try_acquire()))),
        });
    }
    out.push(Pair {
        name: "SharedLimit acquire + release vs Semaphore, 2 threads",
        goal: 1.0,
        keel: both_threads(limit(), |l| {
            drop(black_box(l.try_acquire_ref(Instant::ZERO)))
        }),
        peer: both_threads(tokio::sync::Semaphore::new(1024), |s| {
            drop(black_box(s.try_acquire()))
        }),
    });
    // Context, not a goal: the same with some work while the permit is held (64 rounds of a
    // dependent multiply, about 60-100 ns here), as a service holds one, so the two threads'
    // writes to the state word no longer come back to back.
    out.push(Pair {
        name: "(context) SharedLimit vs Semaphore, 2 threads, work while held",
        goal: 1.0,
        keel: both_threads(limit(), |l| {
            let p = black_box(l.try_acquire_ref(Instant::ZERO));
            work();
            drop(p);
        }),
        peer: both_threads(tokio::sync::Semaphore::new(1024), |s| {
            let p = black_box(s.try_acquire());
            work();
            drop(p);
        }),
    });
    {
        let (br, sm) = (SharedBreaker::new(keel_consecutive(), now), failsafe());
        out.push(Pair {
            name: "SharedBreaker admission + outcome vs failsafe, 1 thread",
            goal: 0.5,
            keel: one_thread(move || breaker_op(&br)),
            peer: one_thread(move || failsafe_op(&sm)),
        });
    }
    out.push(Pair {
        name: "SharedBreaker admission + outcome vs failsafe, 2 threads",
        goal: 1.0,
        keel: both_threads(SharedBreaker::new(keel_consecutive(), now), breaker_op),
        peer: both_threads(failsafe(), failsafe_op),
    });
    out
}

/// Some work that the compiler cannot remove or reorder across the permit: 64 dependent
/// multiply-adds.
fn work() {
    let mut x = black_box(1u64);
    for _ in 0..64 {
        x = black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
    }
    black_box(x);
}

/// The iteration count for which `side` runs about [`TARGET`].
fn calibrate(side: &mut Side) -> u64 {
    let mut iters = 1_000u64;
    loop {
        let ns = side(iters);
        let took = ns * iters as f64;
        if took >= TARGET.as_nanos() as f64 / 4.0 || iters >= 1 << 32 {
            let per = (TARGET.as_nanos() as f64 / ns.max(0.01)) as u64;
            return per.clamp(1_000, 1 << 32);
        }
        iters *= 4;
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn main() {
    let rounds: usize = std::env::var("KEEL_PAIRS_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .filter(|&r| r > 0)
        .unwrap_or(51);
    // `cargo bench` passes `--bench`; any other argument filters the pairs by name.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    println!("| pair | goal | keel ns | peer ns | ratio (median) | ratio (min - max) | rounds under goal |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for mut p in pairs() {
        if !filter.is_empty() && !filter.iter().any(|f| p.name.contains(f.as_str())) {
            continue;
        }
        // Warm both sides (first keys inserted, threads and lines warm), then size the rounds.
        let iters = calibrate(&mut p.keel).min(calibrate(&mut p.peer));
        let (mut keel, mut peer, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let (k, q) = if round % 2 == 0 {
                let k = (p.keel)(iters);
                (k, (p.peer)(iters))
            } else {
                let q = (p.peer)(iters);
                ((p.keel)(iters), q)
            };
            keel.push(k);
            peer.push(q);
            ratios.push(k / q);
        }
        let under = ratios.iter().filter(|&&r| r <= p.goal).count();
        let (lo, hi) = ratios
            .iter()
            .fold((f64::INFINITY, 0f64), |(lo, hi), &r| (lo.min(r), hi.max(r)));
        println!(
            "| {} | <= {:.1}x | {:.2} | {:.2} | {:.2}x | {:.2}x - {:.2}x | {under}/{rounds} |",
            p.name,
            p.goal,
            median(&mut keel),
            median(&mut peer),
            median(&mut ratios),
            lo,
            hi,
        );
    }
}
