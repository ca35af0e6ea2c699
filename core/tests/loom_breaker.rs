//! loom models of [`SharedBreaker`]'s lock-free closed path racing the locked machine: the
//! failure that trips, a success that resets the failure run, a reset, the event drain, and a
//! success counted without the lock in a window full of successes (quiet) racing a failure.
//! Every interleaving must end in a state one sequential order of the same calls gives, with
//! exact counts.
//!
//! ```text
//! RUSTFLAGS="--cfg keel_loom" LOOM_MAX_PREEMPTIONS=2 \
//!     cargo test --release -p keel-core --features std --test loom_breaker
//! ```
#![cfg(keel_loom)]

use keel_core::breaker::{BreakerConfig, BreakerStats, State};
use keel_core::sync::breaker::SharedBreaker;
use keel_core::Instant;
use loom::sync::Arc;
use loom::thread;

fn breaker(threshold: u32) -> Arc<SharedBreaker> {
    let config = BreakerConfig::consecutive_failures(threshold)
        .build()
        .expect("valid config");
    Arc::new(SharedBreaker::new(config, Instant::ZERO))
}

fn t(n: u64) -> Instant {
    Instant::from_secs(n)
}

/// Every admitted call was reported exactly once, as current or stale.
fn assert_reported(st: &BreakerStats) {
    assert_eq!(
        st.successes + st.failures + st.ignored + st.stale_outcomes,
        st.admitted,
        "{st:?}"
    );
}

/// The failure that reaches the threshold races an admission and a success (which resets the
/// failure run). Sequentially: the success first (closed, run 1) or the trip first (the success
/// is stale, or the call is rejected).
#[test]
fn loom_trip_races_a_success() {
    loom::model(|| {
        let b = breaker(2);
        let p = b.try_acquire(t(1)).expect("closed");
        b.on_failure(t(1), p);
        let b1 = Arc::clone(&b);
        let failing = thread::spawn(move || {
            let p = b1
                .try_acquire(t(2))
                .expect("closed until this thread's failure");
            b1.on_failure(t(2), p);
        });
        let b2 = Arc::clone(&b);
        let succeeding = thread::spawn(move || {
            if let Ok(p) = b2.try_acquire(t(3)) {
                b2.on_success(t(3), p);
            }
        });
        failing.join().expect("thread");
        succeeding.join().expect("thread");
        let st = b.stats();
        assert_reported(&st);
        assert_eq!(st.admitted + st.rejected, 3);
        assert_eq!(st.failures, 2);
        let mut events = 0;
        b.drain_events(|_| events += 1);
        match st.state {
            // The success came between the two failures.
            State::Closed => {
                assert_eq!(st.successes, 1);
                assert_eq!(st.consecutive_failures, 1);
                assert_eq!(st.transitions, 0);
                assert_eq!(events, 0);
            }
            // The trip came first: the success is stale or was never admitted.
            State::Open => {
                assert_eq!(st.successes, 0);
                assert_eq!(st.stale_outcomes + st.rejected, 1);
                assert_eq!(st.opened_count, 1);
                assert_eq!(st.consecutive_failures, 0);
                assert_eq!(events, 1);
            }
            other => panic!("unexpected state {other:?}"),
        }
    });
}

/// Two failures race from a run of one with a threshold of three: the run reaches the
/// threshold exactly once and the breaker trips exactly once, whichever thread gets there.
#[test]
fn loom_racing_failures_trip_once() {
    loom::model(|| {
        let b = breaker(3);
        let p = b.try_acquire(t(1)).expect("closed");
        b.on_failure(t(1), p);
        let permits = [
            b.try_acquire(t(1)).expect("closed"),
            b.try_acquire(t(1)).expect("closed"),
        ];
        let handles: Vec<_> = permits
            .into_iter()
            .map(|p| {
                let b = Arc::clone(&b);
                thread::spawn(move || b.on_failure(t(2), p))
            })
            .collect();
        for h in handles {
            h.join().expect("thread");
        }
        let st = b.stats();
        assert_reported(&st);
        assert_eq!(st.state, State::Open);
        assert_eq!(st.failures, 3);
        assert_eq!(st.opened_count, 1);
        assert_eq!(st.transitions, 1);
        assert_eq!(st.consecutive_failures, 0);
    });
}

/// A reset races a call: the call's outcome is current (before the reset) or stale (admitted
/// before, reported after), never lost or counted twice; the generation moves exactly once.
#[test]
fn loom_reset_races_a_call() {
    loom::model(|| reset_races_a_call(breaker(1)));
}

/// A reset (a locked step that moves the generation and reopens the path with it) races a
/// call on `b`, a closed breaker: the outcome is current or stale, never lost or counted
/// twice, and a permit admitted after the reset is of the new generation.
fn reset_races_a_call(b: Arc<SharedBreaker>) {
    let b1 = Arc::clone(&b);
    let resetting = thread::spawn(move || b1.reset(t(1)));
    let b2 = Arc::clone(&b);
    let calling = thread::spawn(move || {
        let p = b2.try_acquire(t(2)).expect("closed throughout");
        b2.on_success(t(2), p);
        p.generation()
    });
    resetting.join().expect("thread");
    let generation = calling.join().expect("thread");
    let st = b.stats();
    assert_reported(&st);
    assert_eq!(st.state, State::Closed);
    assert_eq!(st.generation, 1);
    assert_eq!(st.admitted, 1);
    assert_eq!(st.successes + st.stale_outcomes, 1);
    // Stale exactly when admitted before the reset and reported after.
    assert_eq!(st.stale_outcomes == 1, generation == 0 && st.successes == 0);
    let p = b.try_acquire(t(3)).expect("closed");
    assert_eq!(p.generation(), 1);
}

/// A thread drains events while another trips the breaker: the one transition is delivered
/// exactly once, by that drain or by the one after both threads finished.
#[test]
fn loom_trip_event_is_drained_exactly_once() {
    loom::model(|| {
        let b = breaker(1);
        let b1 = Arc::clone(&b);
        let tripping = thread::spawn(move || {
            let p = b1.try_acquire(t(1)).expect("closed");
            b1.on_failure(t(1), p);
        });
        let b2 = Arc::clone(&b);
        let draining = thread::spawn(move || {
            let mut n = 0;
            b2.drain_events(|_| n += 1);
            n
        });
        tripping.join().expect("thread");
        let mut events = draining.join().expect("thread");
        b.drain_events(|_| events += 1);
        assert_eq!(events, 1);
        assert_eq!(b.state(), State::Open);
    });
}

/// The closed path counts on per-thread stripes: two threads admit and report lock-free, each
/// on its own stripe, while `with` folds the stripes into the machine (a swap per stripe) and
/// `stats` sums them. No count is lost or counted twice, and a snapshot taken meanwhile never
/// reports more outcomes than calls admitted so far, nor more than were made.
#[test]
fn loom_striped_counts_fold_exactly() {
    loom::model(|| {
        let b = breaker(3);
        let workers: Vec<_> = [true, false]
            .into_iter()
            .map(|ok| {
                let b = Arc::clone(&b);
                thread::spawn(move || {
                    let p = b.try_acquire(t(1)).expect("closed throughout");
                    if ok {
                        b.on_success(t(2), p);
                    } else {
                        b.on_failure(t(2), p);
                    }
                })
            })
            .collect();
        let folded = b.with(|m| m.stats());
        assert!(folded.admitted <= 2 && folded.successes <= 1 && folded.failures <= 1);
        let mid = b.stats();
        assert!(mid.admitted >= folded.admitted, "{folded:?} -> {mid:?}");
        assert!(mid.successes + mid.failures <= 2, "{mid:?}");
        for w in workers {
            w.join().expect("thread");
        }
        let st = b.stats();
        assert_reported(&st);
        assert_eq!(st.state, State::Closed);
        assert_eq!((st.admitted, st.successes, st.failures), (2, 1, 1));
        assert!(st.consecutive_failures <= 1);
        // The stripes' newest instants reach the machine's clock under the lock.
        assert_eq!(b.with(|m| m.stats().admitted), 2);
    });
}

/// A breaker with a failure-rate window (the default config's policy, small): a count window
/// of 2, judged from 2 calls, tripping at 60 % failures. Its closed admissions are lock-free,
/// and so is a quick success while the window holds two successes (quiet); every other
/// outcome takes the lock and does not close the path first (the lock holder is the word's
/// only writer).
fn windowed() -> Arc<SharedBreaker> {
    let config = BreakerConfig::builder()
        .count_window(2)
        .minimum_calls(2)
        .failure_rate_threshold(60)
        .build()
        .expect("valid config");
    Arc::new(SharedBreaker::new(config, Instant::ZERO))
}

/// With a window, the outcome that trips races a lock-free admission, its success and a
/// `state` read (both lock-free while the path is open). Sequentially: the success first
/// (window `[S, F]`, 50 %: closed) or the trip first (the success is stale, or the call is
/// rejected); the path ends open exactly when the breaker is closed.
#[test]
fn loom_window_trip_races_an_admission() {
    loom::model(|| {
        let b = windowed();
        let p = b.try_acquire(t(1)).expect("closed");
        b.on_failure(t(1), p);
        let b1 = Arc::clone(&b);
        let failing = thread::spawn(move || {
            let p = b1
                .try_acquire(t(2))
                .expect("closed until this thread's failure");
            b1.on_failure(t(2), p);
        });
        let b2 = Arc::clone(&b);
        let succeeding = thread::spawn(move || {
            let seen = b2.state();
            if let Ok(p) = b2.try_acquire(t(3)) {
                b2.on_success(t(3), p);
            }
            seen
        });
        failing.join().expect("thread");
        let seen = succeeding.join().expect("thread");
        let st = b.stats();
        assert_reported(&st);
        assert_eq!(st.admitted + st.rejected, 3);
        assert_eq!(st.failures, 2);
        let mut events = 0;
        b.drain_events(|_| events += 1);
        match st.state {
            State::Closed => {
                assert_eq!(seen, State::Closed);
                assert_eq!(st.successes, 1);
                assert_eq!(st.transitions, 0);
                assert_eq!(events, 0);
                // The path is open: admitted without the lock, in the current generation.
                let p = b.try_acquire(t(4)).expect("closed");
                assert_eq!(p.generation(), st.generation);
                b.on_success(t(4), p);
                assert_eq!(b.stats().successes, 2);
            }
            State::Open => {
                assert_eq!(st.successes, 0);
                assert_eq!(st.stale_outcomes + st.rejected, 1);
                assert_eq!(st.opened_count, 1);
                assert_eq!(st.transitions, 1);
                assert_eq!(events, 1);
                // The trip shut the path: rejected (by the machine, under the lock).
                assert!(b.try_acquire(t(4)).is_err());
                assert_eq!(b.state(), State::Open);
            }
            other => panic!("unexpected state {other:?}"),
        }
    });
}

/// With a window, a reset races a call: the same contract as without one
/// ([`reset_races_a_call`]).
#[test]
fn loom_window_reset_races_a_call() {
    loom::model(|| reset_races_a_call(windowed()));
}

/// With a window full of successes (quiet), a quick success is counted without the lock while
/// a failure (recorded under the lock, clearing the quiet) races it, and a second failure
/// follows. Window of 2, 60 %: sequentially, the success before the first failure gives
/// `[S, S] -> [S, F] -> [F, F]`, open; between the failures `[S, F] -> [F, S] -> [S, F]`,
/// closed; after both, open (the success is stale or rejected). Counts are exact in each.
#[test]
fn loom_window_quiet_success_races_a_failure() {
    loom::model(|| {
        let b = windowed();
        for n in 0..2 {
            let p = b.try_acquire(t(n)).expect("closed");
            b.on_success(t(n), p);
        }
        let b1 = Arc::clone(&b);
        let failing = thread::spawn(move || {
            for n in [2, 3] {
                if let Ok(p) = b1.try_acquire(t(n)) {
                    b1.on_failure(t(n), p);
                }
            }
        });
        let b2 = Arc::clone(&b);
        let succeeding = thread::spawn(move || {
            if let Ok(p) = b2.try_acquire(t(2)) {
                b2.on_success(t(2), p);
            }
        });
        failing.join().expect("thread");
        succeeding.join().expect("thread");
        let st = b.stats();
        assert_reported(&st);
        assert_eq!(st.admitted + st.rejected, 5);
        let mut events = 0;
        b.drain_events(|_| events += 1);
        match st.state {
            // The success came between the failures.
            State::Closed => {
                assert_eq!((st.successes, st.failures), (3, 2));
                assert_eq!((st.transitions, events), (0, 0));
            }
            // Before both (3 successes) or after the trip (stale or rejected).
            State::Open => {
                assert_eq!(st.failures, 2);
                assert_eq!(st.successes + st.stale_outcomes + st.rejected, 3);
                assert_eq!((st.opened_count, st.transitions, events), (1, 1, 1));
                assert!(b.try_acquire(t(4)).is_err());
            }
            other => panic!("unexpected state {other:?}"),
        }
        // One more success after the race: locked or quiet, the stats stay exact.
        if st.state == State::Closed {
            let p = b.try_acquire(t(4)).expect("closed");
            b.on_success(t(4), p);
            assert_eq!(b.stats().successes, 4);
            assert_eq!(b.with(|m| m.stats()), b.stats());
        }
    });
}
