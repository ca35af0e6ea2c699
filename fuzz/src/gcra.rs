//! GCRA: `Gcra` fed clamped times answers every call (decisions with their `retry_at`, `peek`,
//! `remaining`, `reset_at`, quota changes included) as its reference model
//! (`keel_testkit::models::gcra::GcraModel`, shared with the proptests), and
//! `SharedRateLimiter` fed the same times agrees with it; admissions in any window `[a, b]`
//! never exceed `burst + floor((b - a) / T)` for a shared limiter fed raw times that jump
//! backwards (between clock faults: a resynchronisation may grant one fresh burst;
//! `keel_testkit::models::gcra::WindowLog`). Fed the same raw times (jumping forward, back and
//! to both ends of the clock), the `&mut` and shared forms agree on every decision and on the
//! clock faults they count (until a quota change, where the shared form is documented as more
//! conservative), and no single check is ever told to wait more than `T + max_clock_jump`.

use core::num::NonZeroU32;

use arbitrary::Arbitrary;
use keel_core::rate::{Gcra, Quota};
use keel_core::sync::gcra::SharedRateLimiter;
use keel_core::time::{duration_to_nanos, Instant};
use keel_core::Rejected;
use keel_testkit::models::gcra::{GcraModel, WindowLog};

use crate::common::{Clock, Dur, Timed};

/// A quota, as a builder would be given it.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct QuotaSpec {
    count: u32,
    period: Dur,
    burst: Option<u32>,
}

impl QuotaSpec {
    /// The quota, if valid.
    pub fn quota(self) -> Option<Quota> {
        let mut b = Quota::builder().count(self.count).period(self.period.get());
        if let Some(burst) = self.burst {
            b = b.burst(burst);
        }
        b.build().ok()
    }
}

/// One input.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Op {
    /// `try_acquire`.
    Check,
    /// `try_acquire_n`.
    CheckN(u32),
    /// `peek`, `peek_n`, `remaining`, `reset_at`.
    Query(u32),
    /// `set_quota`.
    SetQuota(QuotaSpec),
    /// `try_acquire` until refused (at most 64 times).
    Drain,
}

/// Two limiters fed clamped time and their model, two fed raw time and their window log.
pub struct Harness {
    exact: Gcra,
    shared: SharedRateLimiter,
    /// The bare (uncounted) form fed raw time: its decisions are checked.
    raw: SharedRateLimiter,
    /// The `&mut` form fed the same raw time: it must decide exactly as `raw`.
    raw_exact: Gcra,
    /// `raw`'s clock faults when `raw_log` was last cleared.
    raw_faults: u64,
    quota: Quota,
    /// The reference model of `exact`.
    model: GcraModel,
    raw_log: WindowLog,
    /// The window bound is void near the end of time (the TAT saturates): stop checking.
    near_end: bool,
    /// A quota change happened: the shared form may be stricter than the exact one.
    diverged: bool,
}

impl Harness {
    /// `None` when the quota is invalid.
    pub fn new(q: &QuotaSpec, start: Instant) -> Option<Harness> {
        let quota = q.quota()?;
        let mut h = Harness {
            exact: Gcra::new(quota, start),
            shared: SharedRateLimiter::counted(quota, start),
            raw: SharedRateLimiter::new(quota, start),
            raw_exact: Gcra::new(quota, start),
            raw_faults: 0,
            quota,
            model: GcraModel::new(&quota, start),
            raw_log: WindowLog::new(),
            near_end: false,
            diverged: false,
        };
        h.watch_end(start.as_nanos());
        Some(h)
    }

    fn watch_end(&mut self, newest: u64) {
        let reach = duration_to_nanos(self.quota.replenish_all())
            .saturating_add(duration_to_nanos(self.quota.emission_interval()));
        if newest.saturating_add(reach) >= u64::MAX - 2 {
            self.near_end = true;
        }
    }

    fn t(&self) -> u64 {
        duration_to_nanos(self.quota.emission_interval())
    }

    fn burst(&self) -> u32 {
        self.quota.burst().get()
    }

    /// The clamped limiters' decision against the model's (and the shared form's, until a
    /// quota change); `Ok` if admitted.
    fn decide(
        &mut self,
        clamped: Instant,
        n: u32,
        a: Result<(), Rejected<keel_core::rate::RateLimited>>,
        b: Result<(), Rejected<keel_core::rate::RateLimited>>,
        peek: Result<(), Rejected<keel_core::rate::RateLimited>>,
    ) {
        assert!(self.diverged || a == b, "shared and exact disagree");
        assert_eq!(a, peek, "peek disagrees with try_acquire");
        if let Some(want) = self.model.decide_n(clamped, n) {
            assert_eq!(
                a, want,
                "{n} at {clamped:?}: the machine and its model disagree"
            );
        }
        if let Err(e) = self.model.on_decision(clamped, n, a.is_ok()) {
            panic!("{e}");
        }
    }

    fn check_n(&mut self, now: Instant, clamped: Instant, n: u32) -> bool {
        let peek = self.exact.peek_n(clamped, n);
        let a = self.exact.try_acquire_n(clamped, n);
        let b = self.shared.try_acquire_n(clamped, n);
        self.decide(clamped, n, a, b, peek);
        let r = self.raw.try_acquire_n(now, n);
        let e = self.raw_exact.try_acquire_n(now, n);
        assert!(
            self.diverged || r == e,
            "raw time: shared and exact disagree"
        );
        self.after_raw(now, r.map_err(|e| e.retry_at), n);
        a.is_ok()
    }

    /// Logs a raw-time decision; a clock fault starts a new window log (after checking the
    /// old one): the resynchronised limiter is fresh.
    fn after_raw(&mut self, now: Instant, decision: Result<(), Option<Instant>>, n: u32) {
        let faults = self.raw.clock_faults();
        if !self.diverged {
            assert_eq!(
                faults,
                self.raw_exact.stats().clock_faults,
                "the forms count different clock faults"
            );
        }
        if faults != self.raw_faults {
            self.raw_faults = faults;
            self.finish();
            self.raw_log.clear();
        }
        match decision {
            Ok(()) if n > 0 => self.raw_log.push(now, n),
            Err(Some(retry_at)) if n == 1 => {
                let wait = retry_at.as_nanos().saturating_sub(now.as_nanos());
                let limit = self
                    .t()
                    .saturating_add(duration_to_nanos(self.raw.max_clock_jump()));
                assert!(
                    wait <= limit,
                    "told to wait {wait} ns, past T + max_clock_jump"
                );
            }
            _ => {}
        }
    }

    /// Applies `op` and compares the limiters.
    pub fn apply(&mut self, clock: &mut Clock, now: Instant, op: Op) {
        let clamped = clock.newest();
        self.watch_end(clock.newest);
        match op {
            Op::Check => {
                let peek = self.exact.peek(clamped);
                let a = self.exact.try_acquire(clamped);
                let b = self.shared.try_acquire(clamped);
                self.decide(clamped, 1, a, b, peek);
                let r = self.raw.try_acquire(now);
                let e = self.raw_exact.try_acquire(now);
                assert!(
                    self.diverged || r == e,
                    "raw time: shared and exact disagree"
                );
                self.after_raw(now, r.map_err(|e| e.retry_at), 1);
            }
            Op::CheckN(n) => {
                let n = if n > 1024 { n } else { n % 8 };
                self.check_n(now, clamped, n);
            }
            Op::Drain => {
                for _ in 0..64 {
                    if !self.check_n(now, clamped, 1) {
                        break;
                    }
                }
            }
            Op::Query(n) => {
                let r = self.exact.remaining(clamped);
                assert!(r <= self.burst());
                assert!(self.exact.reset_at(clamped) >= clamped);
                // `now` can be newer than `clamped` when an earlier op moved the caller's clock
                // but never reached the machine (`clock.unseen()`), so ask at `max(now, clamped)`.
                let at = now.max(clamped);
                if !self.model.is_void() {
                    assert_eq!(Some(r), self.model.remaining(clamped), "remaining");
                    assert_eq!(
                        Some(self.exact.reset_at(clamped)),
                        self.model.reset_at(clamped)
                    );
                    assert_eq!(Some(self.exact.peek(at)), self.model.decide_n(at, 1));
                    assert_eq!(Some(self.exact.peek_n(at, n)), self.model.decide_n(at, n));
                }
                if !self.diverged {
                    // Both forms are fed the clamped clock.
                    assert_eq!(self.exact.peek(at), self.shared.peek(at));
                    assert_eq!(self.exact.peek_n(at, n), self.shared.peek_n(at, n));
                    assert_eq!(r, self.shared.remaining(clamped));
                    assert_eq!(self.exact.reset_at(clamped), self.shared.reset_at(clamped));
                }
            }
            Op::SetQuota(q) => {
                if let Some(quota) = q.quota() {
                    let before = self.exact.remaining(clamped);
                    let shared_before = self.shared.remaining(clamped);
                    self.exact.set_quota(clamped, quota);
                    self.model.set_quota(clamped, &quota);
                    self.shared.set_quota(clamped, quota);
                    self.raw.set_quota(now, quota);
                    self.raw_exact.set_quota(now, quota);
                    self.quota = quota;
                    self.watch_end(clock.newest);
                    let cap = quota.burst().get();
                    let after = self.exact.remaining(clamped);
                    assert!(
                        self.near_end || after <= before.min(cap),
                        "set_quota opened a window: {before} -> {after}"
                    );
                    // The shared form's change is documented as conservative (it never moves
                    // the TAT back); from here on the two forms may differ.
                    let s = self.shared.remaining(clamped);
                    assert!(
                        self.near_end || s <= shared_before.min(cap),
                        "shared set_quota opened a window: {shared_before} -> {s}"
                    );
                    self.diverged = true;
                    self.raw_log.clear();
                    self.raw_faults = self.raw.clock_faults();
                    self.watch_end(clock.newest);
                } else {
                    clock.unseen();
                }
            }
        }
        assert_eq!(self.exact.quota(), self.shared.quota());
        if !self.diverged {
            assert_eq!(self.exact.stats(), self.shared.stats());
        }
    }

    /// Checks every window of the raw-time limiter.
    pub fn finish(&mut self) {
        if !self.near_end {
            if let Err(e) = self.raw_log.check(self.t(), self.burst()) {
                panic!("raw times: {e}");
            }
        }
    }
}

impl Timed for Op {
    fn timed(&self) -> bool {
        !matches!(self, Op::Query(_))
    }
}

crate::single_machine_target!("gcra", QuotaSpec);

/// `NonZeroU32` helper for other harnesses.
pub fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}
