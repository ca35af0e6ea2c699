//! The GCRA decision as one pure function, for limiters whose state lives elsewhere.
//!
//! [`Gcra`](super::Gcra) keeps its theoretical arrival time (TAT) in memory. A
//! limiter shared by a fleet keeps it in a store (keel-redis keeps it in Redis and runs the
//! decision in a server-side script). [`step`] is that decision with the state passed in and
//! returned: the reference the store's implementation mirrors and is tested against.
//!
//! The state of a stream is one [`Instant`], its TAT. A stream with no stored state, or with a
//! TAT at or before `now`, is a fresh stream with its whole burst available, so a store may drop
//! a state once `now` reaches its TAT ([`Step::idle_after`]): its memory is bounded by the
//! streams active in the last `burst × T`.
//!
//! The step does not clamp `now` (the in-memory limiters do): a store that sees its clock step
//! backwards only grows every stream's debt, so it admits less, never more.
//!
//! ```
//! use core::num::NonZeroU32;
//! use keel_core::rate::{step, Quota};
//! use keel_core::Instant;
//!
//! let quota = Quota::per_second(NonZeroU32::new(10).unwrap())?.with_burst(NonZeroU32::new(2).unwrap())?;
//! let now = Instant::from_secs(100);
//! let first = step(&quota, Instant::ZERO, now, 1); // no stored state: a fresh stream
//! assert!(first.decision.is_ok());
//! assert_eq!(first.remaining, 1);
//! let second = step(&quota, first.tat, now, 1);
//! assert!(second.decision.is_ok());
//! let third = step(&quota, second.tat, now, 1);
//! assert!(third.decision.is_err());
//! assert_eq!(third.tat, second.tat); // a rejection changes nothing
//! # Ok::<(), keel_core::ConfigError>(())
//! ```

use super::{gcra, over_burst, over_rate, Quota, RateLimited};
use crate::error::Rejected;
use crate::time::Instant;

/// The outcome of one [`step`]: the decision, the state to store, and the header values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "the decision and the new state must be used"]
pub struct Step {
    /// `Ok(())` if the `n` requests are admitted.
    pub decision: Result<(), Rejected<RateLimited>>,
    /// The TAT to store (the one passed in when nothing was admitted).
    pub tat: Instant,
    /// How many single requests would be admitted at `now` after this step
    /// (`X-RateLimit-Remaining`), between 0 and the burst.
    pub remaining: u32,
    /// When the whole burst is available again (`X-RateLimit-Reset`); `now` if it already is.
    pub reset_at: Instant,
}

impl Step {
    /// How long after `now` the stored state is the same as no state at all: the time to live
    /// of the stored TAT. Zero means the state need not be stored.
    #[must_use]
    pub fn idle_after(&self, now: Instant) -> core::time::Duration {
        self.tat.saturating_duration_since(now)
    }
}

/// Decides `n` requests at `now` for a stream whose stored TAT is `tat` (`Instant::ZERO`, or
/// anything at or before `now`, for a stream with no state).
///
/// The same decision as [`Gcra::try_acquire_n`](super::Gcra::try_acquire_n) (and, for
/// `n = 1`, [`Gcra::try_acquire`](super::Gcra::try_acquire)) on a limiter holding `tat`, with
/// the same rejections: `n = 0` is admitted and changes nothing; `n` above the burst is
/// [`RateLimited::InsufficientCapacity`] (`retry_at: None`); otherwise all `n` are admitted or none, and a
/// rejection carries the earliest instant at which the batch would be admitted. All arithmetic
/// saturates; a TAT never exceeds `u64::MAX - 1` ns.
pub fn step(quota: &Quota, tat: Instant, now: Instant, n: u32) -> Step {
    let (t, tau, burst) = (quota.t_nanos(), quota.tau(), quota.burst().get());
    let (old, at) = (tat.as_nanos(), now.as_nanos());
    let result = if n == 0 {
        Ok(old)
    } else if n > burst {
        Err(over_burst(burst))
    } else if n == 1 {
        gcra::conform(old, at, t, tau).map_err(over_rate)
    } else {
        gcra::conform_n(old, at, t, tau, n).map_err(over_rate)
    };
    let (decision, new) = match result {
        Ok(new) => (Ok(()), new),
        Err(e) => (Err(e), old),
    };
    Step {
        decision,
        tat: Instant::from_nanos(new),
        remaining: gcra::remaining(new, at, t, tau, burst),
        reset_at: Instant::from_nanos(new.max(at)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate::Gcra;
    use core::num::NonZeroU32;
    use core::time::Duration;
    use proptest::prelude::*;

    fn quota(count: u32, period_ms: u64, burst: u32) -> Quota {
        Quota::new(
            NonZeroU32::new(count).unwrap(),
            Duration::from_millis(period_ms),
        )
        .unwrap()
        .with_burst(NonZeroU32::new(burst).unwrap())
        .unwrap()
    }

    #[test]
    fn admits_the_burst_at_one_instant_then_rejects_with_the_next_interval() {
        let q = quota(10, 1000, 3);
        let now = Instant::from_secs(5);
        let mut tat = Instant::ZERO;
        for left in (0..3).rev() {
            let s = step(&q, tat, now, 1);
            assert_eq!(s.decision, Ok(()));
            assert_eq!(s.remaining, left);
            tat = s.tat;
        }
        let s = step(&q, tat, now, 1);
        assert_eq!(
            s.decision,
            Err(Rejected {
                reason: RateLimited::OverRate,
                retry_at: Some(now + Duration::from_millis(100))
            })
        );
        assert_eq!(s.tat, tat);
        assert_eq!(s.reset_at, now + Duration::from_millis(300));
        assert_eq!(s.idle_after(now), Duration::from_millis(300));
        assert_eq!(
            step(&q, tat, now, 4).decision,
            Err(Rejected {
                reason: RateLimited::InsufficientCapacity { burst: 3 },
                retry_at: None
            })
        );
        assert_eq!(step(&q, tat, now, 0).decision, Ok(()));
    }

    #[test]
    fn saturates_at_the_end_of_the_clock() {
        let q = quota(1, 1000, 5);
        let s = step(&q, Instant::MAX, Instant::MAX, 1);
        assert!(s.tat.as_nanos() < u64::MAX);
        let s = step(&q, Instant::ZERO, Instant::MAX, 5);
        assert_eq!(s.decision, Ok(()));
        assert_eq!(s.tat.as_nanos(), u64::MAX - 1);
    }

    proptest! {
        /// On non-decreasing times, storing the TAT between steps is the in-memory limiter.
        #[test]
        fn matches_the_in_memory_limiter(
            count in 1u32..50, period_ms in 1u64..5000, burst in 1u32..20,
            start in 0u64..u64::MAX / 2,
            ops in proptest::collection::vec((0u64..400_000_000, 0u32..25), 1..200),
        ) {
            let q = quota(count, period_ms, burst);
            let mut now = Instant::from_nanos(start);
            let mut limiter = Gcra::new(q, now);
            let mut tat = Instant::ZERO;
            for (dt, n) in ops {
                now += Duration::from_nanos(dt);
                let s = step(&q, tat, now, n);
                let expected = if n == 1 {
                    limiter.try_acquire(now)
                } else {
                    limiter.try_acquire_n(now, n)
                };
                prop_assert_eq!(s.decision, expected);
                prop_assert_eq!(s.remaining, limiter.remaining(now));
                prop_assert_eq!(s.reset_at, limiter.reset_at(now));
                tat = s.tat;
            }
        }
    }
}
