//! Property tests: `Limit` against its reference model (`keel_testkit::models::limit`, shared
//! with the fuzz target), and `SharedLimit` against `Limit`.

// The model is `keel_testkit::models::limit`. keel-testkit is left out of the `no_std` test
// runs (`--cfg keel_no_testkit`, see core/Cargo.toml), so there the same source file is
// compiled into this test instead: it uses only keel-core's public API (this test crate links
// std; keel-core is built without it). The shared form's test needs `std`.

use core::num::NonZeroUsize;

use keel_core::limit::{Limit, LimitConfig, LimitPermit, Overflow, MAX_LIMIT};
use keel_core::Instant;
#[cfg(not(keel_no_testkit))]
use keel_testkit::models::limit::LimitModel;
#[cfg(keel_no_testkit)]
use limit_model::LimitModel;
use proptest::prelude::*;

#[path = "support/props.rs"]
mod props;

#[cfg(keel_no_testkit)]
#[path = "../../testkit/src/models/limit.rs"]
#[allow(dead_code, unreachable_pub)] // a library module here: items this test does not use
mod limit_model;

const T0: Instant = Instant::ZERO;

#[derive(Clone, Debug)]
enum Op {
    Acquire,
    /// `SharedLimit::poll_acquire` for the shared form; `try_acquire` for the others.
    Poll,
    Release,
    SetMax(usize),
    Shed,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => Just(Op::Acquire),
        2 => Just(Op::Poll),
        5 => Just(Op::Release),
        2 => (1usize..=8).prop_map(Op::SetMax),
        1 => prop_oneof![Just(MAX_LIMIT), Just(MAX_LIMIT + 1), Just(usize::MAX)].prop_map(Op::SetMax),
        1 => Just(Op::Shed),
    ]
}

fn config(max: usize, shed: bool) -> LimitConfig {
    let overflow = if shed {
        Overflow::Shed
    } else {
        Overflow::Backpressure
    };
    LimitConfig::builder()
        .max(max)
        .overflow(overflow)
        .build()
        .expect("max in 1..=8")
}

proptest! {
    #![proptest_config(props::config(512, "proptest-regressions/limit_props.txt"))]

    #[test]
    fn limit_matches_the_reference_model(
        max in 1usize..=8,
        shed in any::<bool>(),
        ops in prop::collection::vec(op(), 0..200),
    ) {
        let mut limit = Limit::new(config(max, shed));
        let mut model = LimitModel::new(&config(max, shed));
        let mut attempts = 0u64;
        let mut held: Vec<LimitPermit> = Vec::new();
        // Mints permits of another limit: handed back with nothing in use they are the
        // unmatched releases the model counts.
        let mut stray = Limit::new(config(MAX_LIMIT, false));
        for op in ops {
            match op {
                Op::Acquire | Op::Poll => {
                    attempts += 1;
                    let before = limit.in_use();
                    let got = limit.try_acquire(T0);
                    if let Err(rejected) = got {
                        prop_assert_eq!(rejected.reason, limit.overflow());
                        prop_assert_eq!(rejected.retry_at, None);
                    }
                    let reason = got.as_ref().err().map(|r| r.reason);
                    prop_assert_eq!(reason, model.try_acquire().err());
                    let got = got.map(|p| held.push(p)).is_ok();
                    prop_assert_eq!(got, before < limit.max(), "admits iff below the limit");
                    if got {
                        prop_assert!(limit.in_use() <= limit.max(), "never more than the limit at acquire time");
                    }
                }
                Op::Release => {
                    let permit = match held.pop() {
                        Some(p) => p,
                        None => stray.try_acquire(T0).expect("the stray limit has room"),
                    };
                    limit.on_release(T0, permit);
                    model.on_release();
                }
                Op::SetMax(n) => {
                    let n = NonZeroUsize::new(n).expect("ops use 1..");
                    limit.set_max(n);
                    model.set_max(n);
                }
                Op::Shed => {
                    limit.on_shed(T0);
                    model.on_shed();
                }
            }
            let s = limit.stats();
            prop_assert_eq!(s, model.stats());
            prop_assert!(s.peak >= s.in_use);
            prop_assert_eq!(s.acquired - s.released, s.in_use as u64);
            prop_assert_eq!(s.acquired + s.rejected, attempts);
            prop_assert_eq!(limit.available(), s.max.saturating_sub(s.in_use));
        }
    }
}

/// `SharedLimit` (in `keel_core::sync`, behind `std`) against `Limit`.
#[cfg(feature = "std")]
mod shared {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};

    use keel_core::limit::LimitStats;
    use keel_core::sync::limit::{LimitGuard, SharedLimit};

    use super::*;

    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }

    proptest! {
        #![proptest_config(props::config(512, "proptest-regressions/limit_props.txt"))]

        #[test]
        fn shared_limit_agrees_with_limit_on_one_thread(
            max in 1usize..=8,
            shed in any::<bool>(),
            ops in prop::collection::vec(op(), 0..200),
        ) {
            let mut limit = Limit::new(config(max, shed));
            let shared = SharedLimit::new(config(max, shed));
            let waker = Waker::from(Arc::new(Noop));
            let mut held: Vec<LimitGuard> = Vec::new();
            let mut limit_held: Vec<LimitPermit> = Vec::new();
            // Rejections by `try_acquire`, and whether any poll was `Pending`.
            let mut try_rejected = 0u64;
            let mut polled_pending = false;
            for op in ops {
                match op {
                    Op::Acquire => {
                        let got = shared.try_acquire(T0);
                        try_rejected += u64::from(got.is_err());
                        let mine = limit.try_acquire(T0);
                        // The same rejection: the configured overflow, no retry instant.
                        prop_assert_eq!(got.as_ref().err(), mine.as_ref().err());
                        limit_held.extend(mine.ok());
                        held.extend(got.ok());
                    }
                    Op::Poll => {
                        let got = shared.poll_acquire(&mut Context::from_waker(&waker));
                        polled_pending |= got.is_pending();
                        let mine = limit.try_acquire(T0).map(|p| limit_held.push(p)).is_ok();
                        prop_assert_eq!(got.is_ready(), mine);
                        if let Poll::Ready(p) = got {
                            held.push(p);
                        }
                    }
                    Op::Release => {
                        // Only permits can release the shared form: release one if any is held.
                        if let Some(p) = held.pop() {
                            drop(p);
                            limit.on_release(T0, limit_held.pop().expect("both forms hold as many"));
                        }
                    }
                    Op::SetMax(n) => {
                        let n = NonZeroUsize::new(n).expect("ops use 1..");
                        limit.set_max(n);
                        shared.set_max(n);
                    }
                    Op::Shed => {
                        limit.on_shed(T0);
                        shared.on_shed(T0);
                    }
                }
                let (a, b) = (limit.stats(), shared.stats());
                // `waiting` differs by design: the shared form clears it when it wakes the task.
                // `rejected` too: the shared form counts one per wait, not one per Pending poll.
                prop_assert_eq!(
                    {
                        let mut s: LimitStats = a;
                        s.waiting = 0;
                        s.rejected = 0;
                        s
                    },
                    {
                        let mut s: LimitStats = b;
                        s.waiting = 0;
                        s.rejected = 0;
                        s
                    }
                );
                prop_assert!(b.rejected <= a.rejected, "never more than one per failed attempt");
                prop_assert!(b.rejected >= try_rejected + u64::from(polled_pending));
                prop_assert_eq!(b.in_use, held.len());
                prop_assert_eq!(shared.available(), limit.available());
                prop_assert_eq!(shared.config().max(), limit.config().max());
            }
            drop(held);
            prop_assert_eq!(shared.in_use(), 0);
            prop_assert_eq!(shared.stats().waiting, 0, "the last release cleared any registration");
        }
    }
}
