//! Interleaved pairs: keel and its peer measured in alternation, round after round, for the
//! goals of issue 16: the ratios to the peers, the overhead a runtime handle adds around a
//! ready future (keel's handle against a bare `.await`: the difference per round, in ns) and
//! the guarded accept loop against a bare one (time per loopback connection, 100 ms a side).
//! A control row runs governor's `check()` on both sides: the spread two equal sides show.
//!
//! criterion measures one function for seconds, then the next: on a shared machine (a VM whose
//! two vCPUs may or may not share a core, neighbours that come and go) the two sides of a
//! ratio are then taken minutes apart, and two-thread figures moved by 2x from one run to the
//! next. Here each round measures both sides back to back (for about 20 ms each, the order
//! swapped every round) and the ratio (or difference) is taken per round; the table reports
//! its median over the rounds and its spread, beside each side's median time per operation
//! (per thread for the two-thread rows, as `util::two_threads` measures it).
//!
//! ```text
//! cargo bench -p keel-benches --bench pairs                          # 51 rounds per pair
//! KEEL_PAIRS_ROUNDS=101 cargo bench -p keel-benches --bench pairs    # more rounds
//! cargo bench -p keel-benches --bench pairs -- keyed                 # names with "keyed"
//! ```
#![allow(missing_docs)]

use std::future::Future;
use std::hint::black_box;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use futures_lite::future::block_on;
use tokio::runtime::Runtime;

use failsafe::Config;
use keel_core::rate::keyed::KeyedConfig;
use keel_core::sync::breaker::SharedBreaker;
use keel_core::sync::limit::SharedLimit;
use keel_core::time::Instant;

// The helpers of the criterion groups, shared rather than copied (the groups' `bench`
// functions are not used here).
#[allow(dead_code)]
mod groups {
    pub(crate) mod accept_throughput;
    pub(crate) mod breaker;
    pub(crate) mod handle;
    pub(crate) mod rate;
    pub(crate) mod util;
}

use groups::accept_throughput::{
    bare_accept, bare_listener, clients, guarded_accept, guarded_listener, CLIENTS,
};
use groups::breaker::keel_consecutive;
use groups::handle::{ready, ready_1k};
use groups::rate::{gov_quota, keel_quota, next_key, KEYS};
use groups::util::two_threads;

/// One side of a pair: runs `iters` operations and returns the time of one of them.
type Side = Box<dyn FnMut(u64) -> f64>;

struct Pair {
    name: &'static str,
    goal: Goal,
    /// How long one side's measurement in a round runs, about.
    target: Duration,
    keel: Side,
    peer: Side,
}

/// What a pair's round is judged by.
#[derive(Clone, Copy)]
enum Goal {
    /// keel's time over the peer's, at most this.
    Ratio(f64),
    /// keel's time less the peer's (nanoseconds), at most this: the overhead a handle adds
    /// around what the peer side runs bare.
    Overhead(f64),
}

impl Goal {
    /// A round's figure from the two sides' times.
    fn figure(self, keel: f64, peer: f64) -> f64 {
        match self {
            Goal::Ratio(_) => keel / peer,
            Goal::Overhead(_) => keel - peer,
        }
    }

    fn met(self, figure: f64) -> bool {
        match self {
            Goal::Ratio(g) | Goal::Overhead(g) => figure <= g,
        }
    }

    fn show(self, figure: f64) -> String {
        match self {
            Goal::Ratio(_) => format!("{figure:.2}x"),
            Goal::Overhead(_) => format!("{figure:+.1} ns"),
        }
    }

    fn show_goal(self) -> String {
        match self {
            Goal::Ratio(g) => format!("<= {g:.2}x"),
            Goal::Overhead(g) => format!("<= +{g:.0} ns"),
        }
    }
}

/// How long one side's measurement in a round runs, about (the accept loop's: [`ACCEPT_TARGET`]).
const TARGET: Duration = Duration::from_millis(20);

/// The accept loop's round: a few thousand loopback connections a side.
const ACCEPT_TARGET: Duration = Duration::from_millis(100);

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
    let (tokio, smol, gov) = (
        keel_tokio::RateLimiter::new(keel_quota()),
        keel_smol::RateLimiter::new(keel_quota()),
        governor::RateLimiter::direct(gov_quota()),
    );
    out.extend([
        vs_governor("RateLimiter::check() vs governor check()", move || {
            tokio.check().is_ok()
        }),
        // keel-smol's check on the same counter: what keel-tokio's costs beyond it is the test
        // of its paused-time switch (see `adapter-tokio/src/clock.rs`).
        vs_governor(
            "(context) keel-smol RateLimiter::check() vs governor check()",
            move || smol.check().is_ok(),
        ),
        // The harness's floor: the same operation on both sides reads 1.00x, with the spread
        // this machine gives two equal sides.
        vs_governor("(control) governor check() vs itself", move || {
            gov.check().is_ok()
        }),
    ]);
    {
        let (l, g) = (keyed(), governor::RateLimiter::keyed(gov_quota()));
        let (mut a, mut b) = (0u64, 0u64);
        out.push(Pair {
            name: "keyed check, 1000 keys, 1 thread",
            goal: Goal::Ratio(1.0),
            target: TARGET,
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
        goal: Goal::Ratio(1.0),
        target: TARGET,
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
            goal: Goal::Ratio(0.6),
            target: TARGET,
            keel: one_thread(move || drop(black_box(l.try_acquire_ref(Instant::ZERO)))),
            peer: one_thread(move || drop(black_box(s.try_acquire()))),
        });
    }
    out.push(Pair {
        name: "SharedLimit acquire + release vs Semaphore, 2 threads",
        goal: Goal::Ratio(1.0),
        target: TARGET,
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
        goal: Goal::Ratio(1.0),
        target: TARGET,
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
            goal: Goal::Ratio(0.5),
            target: TARGET,
            keel: one_thread(move || breaker_op(&br)),
            peer: one_thread(move || failsafe_op(&sm)),
        });
    }
    out.push(Pair {
        name: "SharedBreaker admission + outcome vs failsafe, 2 threads",
        goal: Goal::Ratio(1.0),
        target: TARGET,
        keel: both_threads(SharedBreaker::new(keel_consecutive(), now), breaker_op),
        peer: both_threads(failsafe(), failsafe_op),
    });
    // What a runtime handle adds around an already-ready future, against a bare `.await` of
    // it (both driven by the same `block_on`): the difference per round.
    let overhead = |name, keel| Pair {
        name,
        goal: Goal::Overhead(50.0),
        target: TARGET,
        keel,
        peer: one_thread(|| {
            black_box(block_on(async { ready().await }).is_ok());
        }),
    };
    let (br, br_consecutive) = (
        groups::handle::breaker(),
        groups::handle::breaker_consecutive(),
    );
    let (bh, retry, rate) = (
        groups::handle::bulkhead(),
        groups::handle::retry(),
        groups::handle::rate(),
    );
    out.extend([
        overhead(
            "Breaker::call (default config) over a bare .await",
            one_thread(move || {
                black_box(block_on(br.call(ready())).is_ok());
            }),
        ),
        overhead(
            "(context) Breaker::call, consecutive failures, over a bare .await",
            one_thread(move || {
                black_box(block_on(br_consecutive.call(ready())).is_ok());
            }),
        ),
        overhead(
            "Bulkhead::run over a bare .await",
            one_thread(move || {
                black_box(block_on(bh.run(ready())).is_ok());
            }),
        ),
        overhead(
            "Retry::run, first try succeeds, over a bare .await",
            one_thread(move || {
                black_box(block_on(retry.run(ready)).is_ok());
            }),
        ),
        overhead(
            "RateLimiter::until_ready, a token available, over a bare .await",
            one_thread(move || {
                let _ = black_box(block_on(groups::handle::until_ready_then_ready(&rate)));
            }),
        ),
    ]);
    // Context, not goals: the same wrappers around a future holding 1 KiB, against a bare
    // `.await` of it (a wrapper that stored the future more than once copied it as often).
    let overhead_1k = |name, keel| Pair {
        name,
        goal: Goal::Overhead(50.0),
        target: TARGET,
        keel,
        peer: one_thread(|| {
            black_box(block_on(async { ready_1k().await }).is_ok());
        }),
    };
    let (br, bh) = (groups::handle::breaker(), groups::handle::bulkhead());
    let br_timeout = br.clone();
    out.extend([
        overhead_1k(
            "(context) Breaker::call around a 1 KiB future, over a bare .await of it",
            one_thread(move || {
                black_box(block_on(br.call(ready_1k())).is_ok());
            }),
        ),
        overhead_1k(
            "(context) Breaker::call_timeout (1 s) around a 1 KiB future, over a bare .await of it",
            one_thread(move || {
                black_box(
                    block_on(br_timeout.call_timeout(Duration::from_secs(1), ready_1k())).is_ok(),
                );
            }),
        ),
        overhead_1k(
            "(context) Bulkhead::run around a 1 KiB future, over a bare .await of it",
            one_thread(move || {
                black_box(block_on(bh.run(ready_1k())).is_ok());
            }),
        ),
    ]);
    {
        // Time per connection, so ">= 98 % of the bare loop's connections per second" is a
        // ratio of at most 1/0.98. Both loops run on one two-worker runtime, one at a time.
        let rt = Arc::new(groups::accept_throughput::runtime());
        let bare = rt.block_on(bare_listener());
        let guarded = rt.block_on(guarded_listener());
        let (bare_addr, guarded_addr) = (
            bare.local_addr().expect("local addr"),
            guarded.get_ref().0.local_addr().expect("local addr"),
        );
        out.push(Pair {
            name: "guarded accept loop vs bare, time per connection (>= 98 % of its rate)",
            goal: Goal::Ratio(1.0 / 0.98),
            target: ACCEPT_TARGET,
            keel: accept_side(rt.clone(), guarded, guarded_addr, |l| {
                Box::pin(guarded_accept(l))
            }),
            peer: accept_side(rt, bare, bare_addr, |l| Box::pin(bare_accept(l))),
        });
    }
    out
}

/// A direct limiter's `check` against governor's default `check()` (both sides monomorphised
/// alike: a boxed closure on one side alone read 1.15x in the control row).
fn vs_governor(name: &'static str, mut check: impl FnMut() -> bool + 'static) -> Pair {
    let g = governor::RateLimiter::direct(gov_quota());
    Pair {
        name,
        goal: Goal::Ratio(1.0),
        target: TARGET,
        keel: one_thread(move || {
            black_box(check());
        }),
        peer: one_thread(move || {
            black_box(g.check().is_ok());
        }),
    }
}

/// Accepts one connection on `L`; `false` if the accept failed (not counted).
type AcceptOne<L> = for<'a> fn(&'a mut L) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>>;

/// A side that accepts `iters` loopback connections (rounded down to a multiple of the client
/// tasks) on `listener` in a server task on `rt` while the client tasks make and reset them,
/// as the criterion group `accept_throughput` does; the time per connection.
fn accept_side<L: Send + 'static>(
    rt: Arc<Runtime>,
    listener: L,
    addr: SocketAddr,
    accept_one: AcceptOne<L>,
) -> Side {
    let mut slot = Some(listener);
    Box::new(move |iters| {
        let conns = (iters / CLIENTS).max(1) * CLIENTS;
        let mut l = slot.take().expect("the listener is back after each round");
        let start = StdInstant::now();
        let l = rt.block_on(async move {
            let server = tokio::spawn(async move {
                let mut n = 0;
                while n < conns {
                    if accept_one(&mut l).await {
                        n += 1;
                    }
                }
                l
            });
            clients(addr, conns).await;
            server.await.expect("server task")
        });
        let took = start.elapsed();
        slot = Some(l);
        took.as_nanos() as f64 / conns as f64
    })
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

/// The iteration count for which `side` runs about `target`.
fn calibrate(side: &mut Side, target: Duration) -> u64 {
    let target = target.as_nanos() as f64;
    let mut iters = 1_000u64;
    loop {
        let ns = side(iters);
        let took = ns * iters as f64;
        if took >= target / 4.0 || iters >= 1 << 32 {
            let per = (target / ns.max(0.01)) as u64;
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
    println!("| pair | goal | keel ns | peer ns | median | min - max | rounds meeting the goal |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for mut p in pairs() {
        if !filter.is_empty() && !filter.iter().any(|f| p.name.contains(f.as_str())) {
            continue;
        }
        // Warm both sides (first keys inserted, threads and lines warm), then size the rounds.
        let iters = calibrate(&mut p.keel, p.target).min(calibrate(&mut p.peer, p.target));
        let (mut keel, mut peer, mut figures) = (Vec::new(), Vec::new(), Vec::new());
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
            figures.push(p.goal.figure(k, q));
        }
        let met = figures.iter().filter(|&&f| p.goal.met(f)).count();
        let (lo, hi) = figures
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &f| {
                (lo.min(f), hi.max(f))
            });
        println!(
            "| {} | {} | {:.2} | {:.2} | {} | {} - {} | {met}/{rounds} |",
            p.name,
            p.goal.show_goal(),
            median(&mut keel),
            median(&mut peer),
            p.goal.show(median(&mut figures)),
            p.goal.show(lo),
            p.goal.show(hi),
        );
    }
}
