//! Backoff: every jittered delay lies in `[floor, d(n)]` of the documented table (so never above
//! the cap), `d(n)` follows a reference model of the schedule, a hint clamped to
//! `[min_retry_after, max_retry_after]` is a floor under the jittered delay (never above
//! `max(cap, max_retry_after)`), no retry passes the deadline or the attempt limit, give-ups are
//! sticky.

use arbitrary::Arbitrary;
use keel_core::backoff::{Backoff, BackoffConfig, GiveUpReason, Jitter, RetryDecision, Schedule};
use keel_core::time::{duration_to_nanos, Instant};
use keel_testkit::models::backoff::BackoffModel;

use crate::common::{Clock, Dur, Timed};

/// One input.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Op {
    /// `next_delay`.
    Next,
    /// `next_delay_with_hint`.
    Hint(Dur),
    /// `reset`.
    Reset,
    /// Take up to this many items from `delays()`.
    Delays(u8),
}

/// The schedule.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Kind {
    /// `exponential(base, cap)`, optional factor.
    Exponential(Dur, Dur, Option<u32>),
    /// `linear(base, step)`, optional cap.
    Linear(Dur, Dur, Option<Dur>),
    /// `constant(delay)`.
    Constant(Dur),
    /// The defaults.
    Default,
}

/// The configuration.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct Config {
    kind: Kind,
    jitter: u8,
    attempts: Option<u32>,
    unlimited: bool,
    max_elapsed: Option<Dur>,
    max_retry_after: Option<Dur>,
    min_retry_after: Option<Dur>,
    seed: u64,
}

/// The machine and a reference model of its un-jittered schedule.
pub struct Harness {
    b: Backoff,
    config: BackoffConfig,
    /// The schedule and its jitter bounds (`keel_testkit::models::backoff`, shared with the
    /// proptests).
    model: BackoffModel,
    attempts: u32,
    retries: u64,
    gave_up: Option<GiveUpReason>,
}

impl Harness {
    /// `None` when the builder rejects the config.
    pub fn new(c: &Config, start: Instant) -> Option<Harness> {
        let mut b = match c.kind {
            Kind::Exponential(base, cap, f) => {
                let b = BackoffConfig::exponential(base.get(), cap.get());
                match f {
                    Some(f) => b.factor_percent(f),
                    None => b,
                }
            }
            Kind::Linear(base, step, cap) => {
                let b = BackoffConfig::linear(base.get(), step.get());
                match cap {
                    Some(cap) => b.cap(cap.get()),
                    None => b,
                }
            }
            Kind::Constant(d) => BackoffConfig::constant(d.get()),
            Kind::Default => BackoffConfig::builder(),
        };
        b = b.jitter(match c.jitter % 4 {
            0 => Jitter::None,
            1 => Jitter::Full,
            2 => Jitter::Equal,
            _ => Jitter::Decorrelated,
        });
        if let Some(n) = c.attempts {
            b = b.max_attempts(n % 40);
        }
        if c.unlimited {
            b = b.unlimited_attempts();
        }
        if let Some(d) = c.max_elapsed {
            b = b.max_elapsed(d.get());
        }
        if let Some(d) = c.max_retry_after {
            b = b.max_retry_after(d.get());
        }
        if let Some(d) = c.min_retry_after {
            b = b.min_retry_after(d.get());
        }
        let config = b.seed(c.seed).build().ok()?;
        if let Schedule::Linear { base, .. } | Schedule::Exponential { base, .. } =
            config.schedule()
        {
            assert!(base <= config.cap(), "the builder accepted base > cap");
        }
        Some(Harness {
            b: Backoff::new(config, start),
            model: BackoffModel::new(&config),
            config,
            attempts: 1,
            retries: 0,
            gave_up: None,
        })
    }

    fn check_retry(&mut self, now: Instant, decision: RetryDecision, hint: Option<u64>) {
        let max_attempts = self.config.max_attempts();
        if let Some(reason) = self.gave_up {
            assert_eq!(
                decision,
                RetryDecision::GiveUp(reason),
                "give-up not sticky"
            );
            return;
        }
        if max_attempts.is_some_and(|m| self.attempts >= m) {
            assert_eq!(decision, RetryDecision::GiveUp(GiveUpReason::MaxAttempts));
            self.gave_up = Some(GiveUpReason::MaxAttempts);
            return;
        }
        // The machine's next decorrelated window is [base, 3 * this draw]; the draw is only
        // visible when it is the delay returned (no hint, no saturation): the model keeps it
        // hidden until `check_draw` sees it.
        let d = self.model.step();
        match decision {
            RetryDecision::RetryAt(at) => {
                assert!(at >= now, "retry in the past");
                let delay = duration_to_nanos(at - now);
                let saturated = at == Instant::MAX;
                if let Some(h) = hint {
                    // The hint, clamped to [min_retry_after, max_retry_after], is a floor under
                    // the jittered schedule: the longer of the two wins.
                    let lo = duration_to_nanos(self.config.min_retry_after());
                    let hi = duration_to_nanos(self.config.max_retry_after());
                    assert!(
                        lo <= hi,
                        "the builder accepted min_retry_after > max_retry_after"
                    );
                    let floor = h.clamp(lo, hi);
                    assert!(delay >= floor || saturated, "hint floor not honoured");
                    assert!(
                        delay <= floor.max(self.model.cap()),
                        "hinted delay above both caps"
                    );
                    if delay > floor {
                        // The schedule's draw won: it is visible, and obeys the jitter.
                        self.check_draw(d, delay, saturated);
                    }
                } else {
                    self.check_draw(d, delay, saturated);
                }
                if let Some(deadline) = self.b.deadline() {
                    assert!(at <= deadline, "retry after the deadline");
                }
                self.attempts += 1;
                self.retries += 1;
            }
            RetryDecision::GiveUp(reason) => {
                assert_eq!(reason, GiveUpReason::MaxElapsed, "gave up early");
                assert!(self.b.deadline().is_some());
                self.gave_up = Some(reason);
            }
        }
    }

    fn check_draw(&mut self, d: u64, delay: u64, saturated: bool) {
        if let Err(broken) = self.model.check_draw(d, delay, saturated) {
            panic!("{broken}");
        }
    }

    /// Applies `op` at `now` and checks the invariants.
    pub fn apply(&mut self, clock: &mut Clock, now: Instant, op: Op) {
        let _ = now;
        let newest = clock.newest();
        match op {
            Op::Next => {
                let d = self.b.next_delay(now);
                self.check_retry(newest, d, None);
            }
            Op::Hint(h) => {
                let d = self.b.next_delay_with_hint(now, h.get());
                self.check_retry(newest, d, Some(duration_to_nanos(h.get())));
            }
            Op::Reset => {
                self.b.reset(now);
                self.model.reset();
                self.attempts = 1;
                self.gave_up = None;
                let deadline = self.config.max_elapsed().map(|d| newest + d);
                assert_eq!(self.b.deadline(), deadline);
            }
            Op::Delays(n) => {
                for _ in 0..n {
                    if self.gave_up.is_some() {
                        break;
                    }
                    let item = self.b.delays().next();
                    if self
                        .config
                        .max_attempts()
                        .is_some_and(|m| self.attempts >= m)
                    {
                        assert_eq!(item, None);
                        self.gave_up = Some(GiveUpReason::MaxAttempts);
                        break;
                    }
                    let d = self.model.step();
                    let delay = duration_to_nanos(item.expect("delays ended early"));
                    self.check_draw(d, delay, false);
                    self.attempts += 1;
                    self.retries += 1;
                }
            }
        }
        assert_eq!(self.b.attempts(), self.attempts);
        assert_eq!(self.b.gave_up(), self.gave_up);
        assert_eq!(self.b.stats().retries, self.retries);
        if let Some(m) = self.config.max_attempts() {
            assert!(self.b.attempts() <= m.max(1));
        }
    }

    /// Nothing more to check at the end.
    pub fn finish(&mut self) {}
}

impl Timed for Op {
    fn timed(&self) -> bool {
        !matches!(self, Op::Delays(_))
    }
}

crate::single_machine_target!("backoff", Config);
