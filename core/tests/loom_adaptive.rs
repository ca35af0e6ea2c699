//! loom model of the shared adaptive limit: concurrent samples and limit reads. The limit
//! stays within `[min_limit, max_limit]`, no sample is lost from the machine's stats, the
//! in-flight count returns to zero, and the driven limit ends at the machine's limit (resizes
//! land in the order the changes happened).
//!
//! ```text
//! RUSTFLAGS="--cfg keel_loom" LOOM_MAX_PREEMPTIONS=2 \
//!     cargo test --release -p keel-core --features std --test loom_adaptive
//! ```
#![cfg(keel_loom)]

use std::time::Duration;

use keel_core::adaptive::{AdaptiveConfig, SampleOutcome};
use keel_core::limit::LimitConfig;
use keel_core::sync::adaptive::SharedAdaptive;
use keel_core::sync::limit::SharedLimit;
use keel_core::Instant;
use loom::thread;

const MIN: u32 = 1;
const MAX: u32 = 8;

fn adaptive() -> SharedAdaptive {
    // A window of 1 ns and one sample per window: every sample closes a window, so every
    // sample may move the limit (the most resizes a model can race).
    let config = AdaptiveConfig::builder()
        .min_limit(MIN)
        .max_limit(MAX)
        .initial_limit(4)
        .window(Duration::from_nanos(1))
        .min_samples(1)
        .probe_interval(None)
        .build()
        .expect("valid config");
    SharedAdaptive::new(config, Instant::ZERO)
}

fn in_range(limit: u32) {
    assert!((MIN..=MAX).contains(&limit), "limit {limit} out of range");
}

#[test]
fn loom_concurrent_samples_and_reads_keep_the_limit_in_range_and_lose_no_sample() {
    loom::model(|| {
        let adaptive = adaptive();
        let driven = SharedLimit::new(LimitConfig::builder().max(100).build().expect("valid"));
        adaptive.drive_limit(&driven);
        let outcomes = [SampleOutcome::Success, SampleOutcome::Dropped];
        let handles: Vec<_> = outcomes
            .into_iter()
            .enumerate()
            .map(|(i, outcome)| {
                let adaptive = adaptive.clone();
                thread::spawn(move || {
                    let t = i as u64 * 10;
                    let request = adaptive.start(Instant::from_millis(t + 1));
                    in_range(adaptive.limit());
                    let _ = request.finish(Instant::from_millis(t + 5), outcome);
                    let _ = adaptive.on_sample(
                        Instant::from_millis(t + 7),
                        Duration::from_millis(2),
                        outcome,
                        1,
                    );
                })
            })
            .collect();
        // A reader beside them: every read is in range.
        for _ in 0..2 {
            in_range(adaptive.limit());
            thread::yield_now();
        }
        for h in handles {
            h.join().expect("a sampler thread");
        }
        let stats = adaptive.stats();
        assert_eq!(stats.samples, 4, "a sample was lost: {stats:?}");
        assert_eq!(stats.dropped, 2);
        assert_eq!(adaptive.in_flight(), 0);
        assert_eq!(adaptive.cancelled(), 0);
        in_range(adaptive.limit());
        assert_eq!(stats.limit, adaptive.limit());
        assert_eq!(
            driven.max(),
            adaptive.limit() as usize,
            "resizes out of order"
        );
    });
}

#[test]
fn loom_a_dropped_request_feeds_no_sample_and_leaves_the_in_flight_count() {
    loom::model(|| {
        let adaptive = adaptive();
        let a = adaptive.clone();
        let h = thread::spawn(move || {
            let request = a.start(Instant::from_millis(1));
            drop(request);
        });
        let request = adaptive.start(Instant::from_millis(1));
        let _ = request.finish(Instant::from_millis(3), SampleOutcome::Success);
        h.join().expect("the cancelling thread");
        assert_eq!(adaptive.stats().samples, 1);
        assert_eq!(adaptive.cancelled(), 1);
        assert_eq!(adaptive.in_flight(), 0);
    });
}
