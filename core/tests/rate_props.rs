//! proptest invariants for GCRA: both forms against their reference model
//! (`keel_testkit::models::gcra`, shared with the fuzz target: the rule over the admission
//! history, quota changes included), the window bound, exact `retry_at`, the keyed table against
//! `keel_testkit::models::keyed` and its bound, and no panics.

// Runs in the `alloc` and `std` configurations only: the keyed and shared limiters need `alloc`.
// The models are `keel_testkit::models::{gcra,keyed}`. keel-testkit is left out of the `no_std`
// test runs (`--cfg keel_no_testkit`, see core/Cargo.toml), so there the same source files are
// compiled into this test instead (they use only keel-core's public API and std, which this
// test crate links). The keyed model names the other as `super::gcra`, so both sit at the root.
#![cfg(feature = "alloc")]

use std::num::NonZeroU32;
use std::time::Duration;

#[cfg(keel_no_testkit)]
use gcra::{GcraModel, WindowLog};
use keel_core::rate::keyed::{DecidedBy, Full, KeyedConfig, KeyedGcra, KeyedLimited};
use keel_core::rate::{Gcra, Quota, RateLimited};
use keel_core::sync::gcra::SharedRateLimiter;
use keel_core::Instant;
use keel_core::Rejected;
#[cfg(not(keel_no_testkit))]
use keel_testkit::models::gcra::{GcraModel, WindowLog};
#[cfg(not(keel_no_testkit))]
use keel_testkit::models::keyed::KeyedModel;
#[cfg(keel_no_testkit)]
use keyed::KeyedModel;
use proptest::prelude::*;

#[path = "support/props.rs"]
mod props;

#[cfg(keel_no_testkit)]
#[path = "../../testkit/src/models/gcra.rs"]
#[allow(dead_code, unreachable_pub)] // a library module here: items this test does not use
mod gcra;
#[cfg(keel_no_testkit)]
#[path = "../../testkit/src/models/keyed.rs"]
#[allow(dead_code, unreachable_pub)] // a library module here: items this test does not use
mod keyed;

/// A small quota: `count` per `period_ns` ns (so T is a few ns to a few µs), burst 1..=8.
fn quota() -> impl Strategy<Value = Quota> {
    (1u32..=20, 1u64..=20_000, 1u32..=8).prop_filter_map("valid quota", |(count, period, burst)| {
        Quota::new(NonZeroU32::new(count)?, Duration::from_nanos(period))
            .ok()?
            .with_burst(NonZeroU32::new(burst)?)
            .ok()
    })
}

/// Gaps between requests (ns) and batch sizes; time never goes back.
fn steps(max_gap: u64) -> impl Strategy<Value = Vec<(u64, u32)>> {
    prop::collection::vec(
        (0..max_gap, prop_oneof![4 => Just(1u32), 1 => 0u32..=4]),
        1..150,
    )
}

/// One move of the caller's clock: a gap forward, a jump forward or back (past small
/// `max_clock_jump` values or within them), or a bogus instant at either end of the clock.
#[derive(Clone, Copy, Debug)]
enum Step {
    Gap(u64),
    Forward(u64),
    Back(u64),
    To(u64),
}

impl Step {
    fn apply(self, now: u64) -> u64 {
        match self {
            Step::Gap(g) => now.saturating_add(g),
            Step::Forward(j) => now.saturating_add(j),
            Step::Back(j) => now.saturating_sub(j),
            Step::To(t) => t,
        }
    }
}

fn jumpy_steps() -> impl Strategy<Value = Vec<(Step, u32)>> {
    let step = prop_oneof![
        12 => (0u64..3_000).prop_map(Step::Gap),
        1 => (0u64..100_000).prop_map(Step::Forward),
        1 => (0u64..100_000).prop_map(Step::Back),
        1 => prop_oneof![Just(0u64), Just(u64::MAX), Just(u64::MAX - 1), any::<u64>()].prop_map(Step::To),
    ];
    prop::collection::vec((step, prop_oneof![4 => Just(1u32), 1 => 0u32..=4]), 1..150)
}

fn t_ns(q: &Quota) -> u64 {
    q.emission_interval().as_nanos() as u64
}

proptest! {
    #![proptest_config(props::config(200, "proptest-regressions/rate_props.txt"))]

    /// Over any window [t0, t1] at most burst + floor((t1 - t0) / T) requests are admitted.
    #[test]
    fn admits_at_most_burst_plus_rate_times_window(q in quota(), raw in steps(3_000)) {
        let t = t_ns(&q);
        let burst = q.burst().get();
        let mut l = Gcra::new(q, Instant::ZERO);
        let mut now = 0u64;
        let mut admitted = WindowLog::new();
        for (gap, n) in raw {
            now += gap % (3 * t + 1);
            if l.try_acquire_n(Instant::from_nanos(now), n).is_ok() && n > 0 {
                admitted.push(Instant::from_nanos(now), n);
            }
        }
        admitted.check(t, burst).map_err(TestCaseError::fail)?;
    }

    /// A rejected request is admitted at exactly its `retry_at` (not 1 ns earlier), and at
    /// any later instant, if nothing else was admitted in between.
    #[test]
    fn retry_at_is_exact(q in quota(), raw in steps(2_000), later in 0u64..10_000) {
        let mut l = Gcra::new(q, Instant::ZERO);
        let mut now = 0u64;
        for (gap, n) in raw {
            now += gap;
            let at = Instant::from_nanos(now);
            let before = l.clone();
            match l.try_acquire_n(at, n) {
                Ok(()) => {}
                Err(Rejected { reason: RateLimited::OverRate, retry_at }) => {
                    let retry_at = retry_at.expect("a request over the rate conforms later");
                    prop_assert!(retry_at > at);
                    let mut a = before.clone();
                    prop_assert!(a.try_acquire_n(retry_at, n).is_ok());
                    let mut b = before.clone();
                    prop_assert!(b.try_acquire_n(retry_at + Duration::from_nanos(later), n).is_ok());
                    let mut c = before.clone();
                    prop_assert_eq!(
                        c.try_acquire_n(Instant::from_nanos(retry_at.as_nanos() - 1), n),
                        Err(Rejected { reason: RateLimited::OverRate, retry_at: Some(retry_at) })
                    );
                    // try_acquire and try_acquire_n(1) agree.
                    if n == 1 {
                        let mut d = before.clone();
                        prop_assert_eq!(d.try_acquire(at).map_err(|e| e.retry_at), Err(Some(retry_at)));
                    }
                }
                Err(Rejected { reason: RateLimited::InsufficientCapacity { burst }, retry_at }) => {
                    prop_assert_eq!(retry_at, None);
                    prop_assert!(n > burst);
                    prop_assert_eq!(burst, q.burst().get());
                }
                Err(e) => prop_assert!(false, "unexpected {e:?}"),
            }
            // peek agrees with check, and remaining is consistent with peek.
            let p = l.peek(at).is_ok();
            prop_assert_eq!(p, l.remaining(at) > 0);
            prop_assert!(l.remaining(at) <= q.burst().get());
            prop_assert!(l.reset_at(at) >= at);
        }
    }

    /// remaining(now) is exactly the number of consecutive checks admitted at `now`.
    #[test]
    fn remaining_counts_the_checks_that_would_pass(q in quota(), raw in steps(2_000)) {
        let mut l = Gcra::new(q, Instant::ZERO);
        let mut now = 0u64;
        for (gap, n) in raw {
            now += gap;
            let at = Instant::from_nanos(now);
            let mut probe = l.clone();
            let mut passed = 0;
            while probe.try_acquire(at).is_ok() {
                passed += 1;
            }
            prop_assert_eq!(passed, l.remaining(at));
            let _ = l.try_acquire_n(at, n);
        }
    }

    /// Switching quota never admits, at the switch instant, more than the new burst or more
    /// than the old state still allowed; afterwards the window bound of the new quota holds.
    #[test]
    fn set_quota_opens_no_window(
        q1 in quota(), q2 in quota(), before in steps(2_000), after in steps(2_000),
    ) {
        let mut l = Gcra::new(q1, Instant::ZERO);
        let mut now = 0u64;
        for (gap, n) in before {
            now += gap;
            let _ = l.try_acquire_n(Instant::from_nanos(now), n);
        }
        let at = Instant::from_nanos(now);
        let old_remaining = l.remaining(at);
        l.set_quota(at, q2);
        prop_assert_eq!(l.quota(), q2);
        let mut probe = l.clone();
        let mut passed = 0;
        while probe.try_acquire(at).is_ok() {
            passed += 1;
        }
        prop_assert!(passed <= q2.burst().get());
        prop_assert!(passed <= old_remaining, "{passed} > old remaining {old_remaining}");

        let t = t_ns(&q2);
        let burst = q2.burst().get();
        let mut admitted = WindowLog::new();
        for (gap, n) in after {
            now += gap;
            if l.try_acquire_n(Instant::from_nanos(now), n).is_ok() && n > 0 {
                admitted.push(Instant::from_nanos(now), n);
            }
        }
        admitted.check(t, burst).map_err(TestCaseError::fail)?;
    }

    /// On the same single-threaded input (time never going back) the shared form, counted or
    /// not, makes the same decisions, with the same `retry_at`, as the `&mut` form, and both
    /// answer as the reference model (`keel_testkit::models::gcra`).
    #[test]
    fn shared_form_agrees_with_mut_form(q in quota(), raw in steps(3_000), start in 0u64..1_000_000) {
        let mut m = Gcra::new(q, Instant::from_nanos(start));
        let s = SharedRateLimiter::counted(q, Instant::from_nanos(start));
        let u = SharedRateLimiter::new(q, Instant::from_nanos(start));
        let mut model = GcraModel::new(&q, Instant::from_nanos(start));
        let mut now = start;
        for (gap, n) in raw {
            now += gap;
            let at = Instant::from_nanos(now);
            prop_assert_eq!(Some(m.remaining(at)), model.remaining(at));
            prop_assert_eq!(Some(m.reset_at(at)), model.reset_at(at));
            prop_assert_eq!(Some(m.peek_n(at, n)), model.decide_n(at, n));
            prop_assert_eq!(Some(m.peek(at)), model.decide_n(at, 1));
            prop_assert_eq!(m.remaining(at), s.remaining(at));
            prop_assert_eq!(m.peek(at), s.peek(at));
            prop_assert_eq!(m.peek_n(at, n), s.peek_n(at, n));
            prop_assert_eq!(m.reset_at(at), s.reset_at(at));
            prop_assert_eq!(m.remaining(at), u.remaining(at));
            let want = model.decide_n(at, n);
            if n == 1 {
                let decision = m.try_acquire(at);
                prop_assert_eq!(Some(decision), want);
                prop_assert_eq!(decision, s.try_acquire(at));
                prop_assert_eq!(decision, u.try_acquire(at));
                model.on_decision(at, n, decision.is_ok()).map_err(TestCaseError::fail)?;
            } else {
                let decision = m.try_acquire_n(at, n);
                prop_assert_eq!(Some(decision), want);
                prop_assert_eq!(decision, s.try_acquire_n(at, n));
                prop_assert_eq!(decision, u.try_acquire_n(at, n));
                model.on_decision(at, n, decision.is_ok()).map_err(TestCaseError::fail)?;
            }
        }
        prop_assert_eq!(m.stats(), s.stats());
    }

    /// The `&mut` form answers every call as the reference model does
    /// (`keel_testkit::models::gcra`: the rule over the admission history, the used capacity
    /// carried over in requests at a quota change), quota changes included, and the window
    /// bound holds between quota changes.
    #[test]
    fn mut_form_decides_as_the_model_across_quota_changes(
        q in quota(),
        ops in prop::collection::vec(
            (0u64..3_000, prop_oneof![4 => Just(1u32), 1 => 0u32..=9], prop::option::weighted(0.05, quota())),
            1..200,
        ),
        start in 0u64..1_000_000,
    ) {
        let mut m = Gcra::new(q, Instant::from_nanos(start));
        let mut model = GcraModel::new(&q, Instant::from_nanos(start));
        let mut window = WindowLog::new();
        let mut now = start;
        for (gap, n, change) in ops {
            now += gap;
            let at = Instant::from_nanos(now);
            if let Some(q2) = change {
                window.check(model.t_nanos(), model.burst()).map_err(TestCaseError::fail)?;
                window.clear();
                m.set_quota(at, q2);
                model.set_quota(at, &q2);
            }
            prop_assert_eq!(Some(m.remaining(at)), model.remaining(at), "remaining at {}", now);
            prop_assert_eq!(Some(m.reset_at(at)), model.reset_at(at), "reset_at at {}", now);
            let want = model.decide_n(at, n);
            let decision = m.try_acquire_n(at, n);
            prop_assert_eq!(Some(decision), want, "{} at {}", n, now);
            model.on_decision(at, n, decision.is_ok()).map_err(TestCaseError::fail)?;
            if decision.is_ok() {
                window.push(at, n);
            }
        }
        window.check(model.t_nanos(), model.burst()).map_err(TestCaseError::fail)?;
    }

    /// With clock jumps forward and back (some past `max_clock_jump`, some within it, some to
    /// the ends of the clock), the shared form, counted or not, still makes exactly the `&mut`
    /// form's decisions, answers and clock-fault count.
    #[test]
    fn shared_form_agrees_with_mut_form_across_clock_jumps(
        q in quota(), raw in jumpy_steps(), start in 0u64..1_000_000, jump in 0u64..20_000,
    ) {
        let j = Duration::from_nanos(jump);
        let mut m = Gcra::new(q, Instant::from_nanos(start)).with_max_clock_jump(j);
        let s = SharedRateLimiter::counted(q, Instant::from_nanos(start)).with_max_clock_jump(j);
        let u = SharedRateLimiter::new(q, Instant::from_nanos(start)).with_max_clock_jump(j);
        let mut now = start;
        for (step, n) in raw {
            now = step.apply(now);
            let at = Instant::from_nanos(now);
            prop_assert_eq!(m.remaining(at), s.remaining(at));
            prop_assert_eq!(m.peek(at), s.peek(at));
            prop_assert_eq!(m.peek_n(at, n), u.peek_n(at, n));
            prop_assert_eq!(m.reset_at(at), s.reset_at(at));
            if n == 1 {
                let decision = m.try_acquire(at);
                prop_assert_eq!(decision, s.try_acquire(at));
                prop_assert_eq!(decision, u.try_acquire(at));
            } else {
                let decision = m.try_acquire_n(at, n);
                prop_assert_eq!(decision, s.try_acquire_n(at, n));
                prop_assert_eq!(decision, u.try_acquire_n(at, n));
            }
            prop_assert_eq!(m.stats(), s.stats());
            prop_assert_eq!(m.stats().clock_faults, u.clock_faults());
        }
    }

    /// Limiting is never off for good, nor stuck on: after any bogus instants, (a) no single
    /// check is ever told to wait more than `T + max_clock_jump`, and (b) over the real,
    /// monotone checks after the last bogus one, every window obeys the quota's bound
    /// `burst + floor(w / T)`, in both forms.
    #[test]
    fn after_bogus_instants_limiting_resumes_at_the_quota(
        q in quota(), before in steps(3_000), bogus in prop::collection::vec(any::<u64>(), 1..4),
        after in steps(3_000), jump in 0u64..50_000,
    ) {
        let t = t_ns(&q);
        let burst = q.burst().get();
        let j = Duration::from_nanos(jump);
        let mut m = Gcra::new(q, Instant::ZERO).with_max_clock_jump(j);
        let s = SharedRateLimiter::new(q, Instant::ZERO).with_max_clock_jump(j);
        let mut real = 1u64 << 40;
        let mut check = |at: Instant, n: u32| -> Result<bool, TestCaseError> {
            let d = if n == 1 {
                let d = m.try_acquire(at);
                prop_assert_eq!(d, s.try_acquire(at));
                d
            } else {
                let d = m.try_acquire_n(at, n);
                prop_assert_eq!(d, s.try_acquire_n(at, n));
                d
            };
            if let Err(Rejected { reason: RateLimited::OverRate, retry_at: Some(retry_at) }) = d {
                if n == 1 {
                    prop_assert!(retry_at.as_nanos() - at.as_nanos() <= t.saturating_add(jump));
                }
            }
            Ok(d.is_ok() && n > 0)
        };
        for (gap, n) in before {
            real += gap;
            check(Instant::from_nanos(real), n)?;
        }
        for b in bogus {
            check(Instant::from_nanos(b), 1)?;
        }
        let mut admitted = WindowLog::new();
        for (gap, n) in after {
            real += gap % (3 * t + 1);
            if check(Instant::from_nanos(real), n)? {
                admitted.push(Instant::from_nanos(real), n);
            }
        }
        admitted.check(t, burst).map_err(TestCaseError::fail)?;
    }

    /// No input panics: any times (backwards too), any batch size, any quota.
    #[test]
    fn no_panic_on_any_input(
        count in any::<u32>(), period in any::<u64>(), burst in any::<u32>(), start in any::<u64>(),
        ops in prop::collection::vec((any::<u64>(), any::<u32>(), 0u8..6, any::<u32>(), any::<u64>()), 1..40),
    ) {
        let q = NonZeroU32::new(count)
            .and_then(|c| Quota::new(c, Duration::from_nanos(period)).ok())
            .and_then(|q| NonZeroU32::new(burst).and_then(|b| q.with_burst(b).ok()))
            .unwrap_or_else(|| Quota::with_period(Duration::from_nanos(u64::MAX)).unwrap());
        let mut l = Gcra::new(q, Instant::from_nanos(start));
        let s = SharedRateLimiter::new(q, Instant::from_nanos(start));
        for (t, n, op, c2, p2) in ops {
            let at = Instant::from_nanos(t);
            match op {
                0 => { let _ = l.try_acquire(at); let _ = s.try_acquire(at); }
                1 => { let _ = l.try_acquire_n(at, n); let _ = s.try_acquire_n(at, n); }
                2 => { let _ = (l.peek(at), l.peek_n(at, n), s.peek(at)); }
                3 => {
                    prop_assert!(l.remaining(at) <= l.quota().burst().get());
                    prop_assert!(s.remaining(at) <= s.quota().burst().get());
                    let _ = (l.reset_at(at), s.reset_at(at));
                }
                _ => {
                    if let Some(q2) = NonZeroU32::new(c2)
                        .and_then(|c| Quota::new(c, Duration::from_nanos(p2)).ok())
                    {
                        l.set_quota(at, q2);
                        s.set_quota(at, q2);
                    }
                }
            }
        }
    }

    /// The keyed table never holds more than `max_keys`, its memory never changes, and (when
    /// the table is large enough never to be full) every key decides exactly like its own
    /// `Gcra`, reclamation notwithstanding.
    #[test]
    fn keyed_matches_one_limiter_per_key_and_stays_bounded(
        q in quota(),
        max_keys in 1usize..12,
        policy in 0u8..3,
        ops in prop::collection::vec((0u64..4_000, 0u32..12, prop_oneof![4 => Just(1u32), 1 => 0u32..=4]), 1..200),
    ) {
        let full = [Full::EvictLeastRecentlyUsed, Full::RejectNew, Full::Overflow][policy as usize];
        let evict = full == Full::EvictLeastRecentlyUsed;
        let config = KeyedConfig::builder().quota(q).max_keys(max_keys).full(full).hash_seed(7).build().unwrap();
        let mut keyed = KeyedGcra::<u32>::new(config, Instant::ZERO);
        let memory = keyed.memory_bytes();
        prop_assert!(memory <= KeyedGcra::<u32>::memory_bound(max_keys));
        let mut model = KeyedModel::<u32>::new(&config, Instant::ZERO);
        let mut now = 0u64;
        let mut evicted = 0;
        for (gap, key, n) in ops {
            now += gap;
            let at = Instant::from_nanos(now);
            let d = keyed.decide_n(at, &key, n);
            prop_assert!(keyed.len() <= max_keys);
            prop_assert_eq!(keyed.memory_bytes(), memory);
            if d.result == Err(Rejected { reason: KeyedLimited::TableFull, retry_at: None })
                || d.by == DecidedBy::Overflow
            {
                prop_assert_eq!(keyed.len(), max_keys, "a policy answered for a table with room");
            }
            model.on_decision(at, &key, n, &d).map_err(TestCaseError::fail)?;
            evicted += model.on_evictions(at, |k| keyed.remaining(at, k));
            prop_assert_eq!(keyed.stats().evicted, evicted, "evictions miscounted");
            if !evict {
                prop_assert!(model.active(at) <= keyed.len(), "an active key was forgotten");
            }
        }
        let s = keyed.stats();
        if !evict {
            prop_assert_eq!(s.evicted, 0);
        } else {
            prop_assert_eq!(s.rejected_full, 0);
        }
        if full != Full::RejectNew {
            prop_assert_eq!(s.rejected_full, 0);
        }
        if full != Full::Overflow {
            prop_assert_eq!(s.overflow_allowed + s.overflow_limited, 0);
        }
    }

    /// With clock jumps and any policy, the keyed table stays bounded, a full table never
    /// answers `TableFull` unless the policy is `RejectNew`, no check waits more than
    /// `T + max_clock_jump` (per key and in the overflow limiter), and only `Full::Overflow`
    /// decides by the overflow limiter.
    #[test]
    fn keyed_across_clock_jumps_stays_bounded_and_never_stuck(
        q in quota(),
        oq in quota(),
        max_keys in 1usize..6,
        policy in 0u8..3,
        jump in 0u64..20_000,
        raw in jumpy_steps(),
        keys in prop::collection::vec(0u32..10, 150),
    ) {
        let full = [Full::EvictLeastRecentlyUsed, Full::RejectNew, Full::Overflow][policy as usize];
        let config = KeyedConfig::builder()
            .quota(q)
            .overflow_quota(oq)
            .max_keys(max_keys)
            .full(full)
            .max_clock_jump(Duration::from_nanos(jump))
            .hash_seed(9)
            .build()
            .unwrap();
        let mut keyed = KeyedGcra::<u32>::new(config, Instant::ZERO);
        let memory = keyed.memory_bytes();
        let mut now = 0u64;
        for ((step, n), key) in raw.into_iter().zip(keys) {
            now = step.apply(now);
            let at = Instant::from_nanos(now);
            let d = keyed.decide_n(at, &key, n);
            prop_assert!(keyed.len() <= max_keys);
            prop_assert_eq!(keyed.memory_bytes(), memory);
            match d.result {
                Err(Rejected { reason: KeyedLimited::TableFull, retry_at: None }) => prop_assert_eq!(full, Full::RejectNew),
                Err(Rejected { reason: KeyedLimited::OverRate, retry_at: Some(retry_at) }) if n == 1 => {
                    let t = match d.by {
                        DecidedBy::Overflow => t_ns(&oq),
                        _ => t_ns(&q),
                    };
                    prop_assert!(retry_at.as_nanos() - now <= t.saturating_add(jump),
                        "{:?} waits {} ns", d.by, retry_at.as_nanos() - now);
                }
                _ => {}
            }
            if d.by == DecidedBy::Overflow {
                prop_assert_eq!(full, Full::Overflow);
            }
        }
    }
}

/// A key whose hash is only its `tag`: keys with the same tag collide on every bit of the
/// hash (the same home slot and the same 64-bit hash), so the table's linear probing, its
/// backward-shift deletion (wrapping past the index's end when a tag's home slot is near it)
/// and the key comparison behind the hash comparison all decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Colliding {
    id: u32,
    tag: u32,
}

impl std::hash::Hash for Colliding {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.tag.hash(h);
    }
}

proptest! {
    #![proptest_config(props::config(256, "proptest-regressions/rate_props.txt"))]

    /// The keyed table against its model under heavy collisions: twelve keys on three hash
    /// values, any seed (so any home slots), any policy. Every decision is the model's, the
    /// table stays bounded, and no active key is lost by a deletion that breaks a probe chain.
    #[test]
    fn keyed_matches_its_model_when_keys_collide(
        q in quota(),
        max_keys in 1usize..12,
        policy in 0u8..3,
        seed in any::<u64>(),
        ops in prop::collection::vec((0u64..4_000, 0u32..12, prop_oneof![4 => Just(1u32), 1 => 0u32..=4]), 1..200),
    ) {
        let full = [Full::EvictLeastRecentlyUsed, Full::RejectNew, Full::Overflow][policy as usize];
        let evict = full == Full::EvictLeastRecentlyUsed;
        let config = KeyedConfig::builder()
            .quota(q)
            .max_keys(max_keys)
            .full(full)
            .hash_seed(u128::from(seed) << 7 | u128::from(seed))
            .build()
            .unwrap();
        let mut keyed = KeyedGcra::<Colliding>::new(config, Instant::ZERO);
        let mut model = KeyedModel::<Colliding>::new(&config, Instant::ZERO);
        let mut now = 0u64;
        let mut evicted = 0;
        for (gap, id, n) in ops {
            now += gap;
            let at = Instant::from_nanos(now);
            let key = Colliding { id, tag: id % 3 };
            let d = keyed.decide_n(at, &key, n);
            prop_assert!(keyed.len() <= max_keys);
            model.on_decision(at, &key, n, &d).map_err(TestCaseError::fail)?;
            evicted += model.on_evictions(at, |k| keyed.remaining(at, k));
            prop_assert_eq!(keyed.stats().evicted, evicted, "evictions miscounted");
            if !evict {
                prop_assert!(model.active(at) <= keyed.len(), "an active key was forgotten");
            }
            // Every key the model holds with debt is found with exactly that debt.
            for other in 0..12 {
                let k = Colliding { id: other, tag: other % 3 };
                if let Some(r) = model.key(&k).and_then(|m| m.remaining(at)) {
                    prop_assert_eq!(keyed.remaining(at, &k), r, "key {}", other);
                }
            }
        }
    }
}
