//! Shared helpers: group timing defaults, a two-thread contention harness and a std clock.

use std::sync::{Barrier, OnceLock};
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion};
use keel_core::time::Instant;

/// A group with short default timings (warm-up 1 s, measurement 2 s) so the whole suite runs in
/// a few minutes; `-- --quick` shortens it further.
pub(crate) fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(2));
    g
}

/// Runs `op` `iters` times on each of two threads at once (released together by a barrier) and
/// returns the mean of the two threads' elapsed times: criterion divides it by `iters`, so the
/// figure is the time of one operation on one thread while another thread contends.
pub(crate) fn two_threads<S: Sync>(shared: &S, iters: u64, op: impl Fn(&S) + Sync) -> Duration {
    let barrier = Barrier::new(2);
    let (a, b) = std::thread::scope(|s| {
        let run = || {
            barrier.wait();
            let start = std::time::Instant::now();
            for _ in 0..iters {
                op(shared);
            }
            start.elapsed()
        };
        let h = s.spawn(run);
        let mine = run();
        (mine, h.join().unwrap_or(mine))
    });
    (a + b) / 2
}

/// A keel instant from `std::time::Instant` (nanoseconds since a process-wide origin): the
/// cheapest honest std clock read, for comparing against peers that read the clock themselves.
#[inline]
pub(crate) fn std_now() -> Instant {
    static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(std::time::Instant::now);
    Instant::from_duration(origin.elapsed())
}
