//! The connection limit: `Limit` matches its reference model (`keel_testkit::models::limit`,
//! shared with the proptests) on every answer and counter; `Limit` and `SharedLimit` driven by
//! the same operations agree; a slot is only ever taken while `in_use < max`; counts balance.

use core::num::NonZeroUsize;
use core::task::{Context, Poll, Waker};

use arbitrary::Arbitrary;
use keel_core::limit::{Limit, LimitConfig, LimitPermit, Overflow, MAX_LIMIT};
use keel_core::sync::limit::{LimitGuard, SharedLimit};
use keel_core::time::Instant;
use keel_testkit::models::limit::LimitModel;

use crate::common::{Clock, Start, Step, Timed};

/// One input.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Op {
    /// `try_acquire` on both.
    Acquire,
    /// `try_acquire` on the plain form, `poll_acquire` on the shared one.
    PollAcquire,
    /// Release the held slot at this index (a plain `release` with none held).
    Release(u16),
    /// `set_max` (0 is skipped; huge values are clamped).
    SetMax(u32),
    /// `set_max(usize::MAX)`.
    SetMaxHuge,
    /// `on_shed`.
    Shed,
}

/// The configuration.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct Config {
    max: u32,
    shed: bool,
    farewell: bool,
}

/// Both forms and the permits held.
pub struct Harness {
    plain: Limit,
    shared: SharedLimit,
    permits: Vec<LimitGuard>,
    /// The plain form's permits, as many as the shared form's.
    plain_permits: Vec<LimitPermit>,
    /// Mints permits of another limit: handed to `plain` with nothing in use, they are its
    /// unmatched releases.
    stray: Limit,
    unmatched: u64,
    /// The plain form's reference model (`keel_testkit::models::limit`, shared with the
    /// proptests).
    model: LimitModel,
}

impl Harness {
    /// `None` when the builder rejects the config.
    pub fn new(c: &Config, _start: Instant) -> Option<Harness> {
        let mut b = LimitConfig::builder()
            .max(c.max as usize % (MAX_LIMIT + 2))
            .overflow(if c.shed {
                Overflow::Shed
            } else {
                Overflow::Backpressure
            });
        if c.farewell {
            b = b.farewell(b"HTTP/1.1 503 Service Unavailable\r\n\r\n");
        }
        let config = b.build().ok()?;
        Some(Harness {
            model: LimitModel::new(&config),
            plain: Limit::new(config.clone()),
            shared: SharedLimit::new(config),
            permits: Vec::new(),
            plain_permits: Vec::new(),
            stray: Limit::new(LimitConfig::builder().max(MAX_LIMIT).build().ok()?),
            unmatched: 0,
        })
    }

    /// Applies `op` to both forms and compares them.
    pub fn apply(&mut self, _clock: &mut Clock, now: Instant, op: Op) {
        let before = self.plain.stats();
        match op {
            Op::Acquire | Op::PollAcquire => {
                let expected = self.model.try_acquire();
                let took = match self.plain.try_acquire(now) {
                    Ok(p) => {
                        self.plain_permits.push(p);
                        true
                    }
                    Err(rejected) => {
                        assert_eq!(Err(rejected.reason), expected, "the model admits");
                        assert_eq!(rejected.retry_at, None);
                        false
                    }
                };
                assert_eq!(took, expected.is_ok(), "the model rejects");
                let permit = if let Op::Acquire = op {
                    match self.shared.try_acquire(now) {
                        Ok(p) => Some(p),
                        Err(rejected) => {
                            assert_eq!(rejected.reason, self.plain.overflow());
                            assert_eq!(rejected.retry_at, None);
                            None
                        }
                    }
                } else {
                    match self
                        .shared
                        .poll_acquire(&mut Context::from_waker(Waker::noop()))
                    {
                        Poll::Ready(p) => Some(p),
                        Poll::Pending => None,
                    }
                };
                assert_eq!(took, permit.is_some(), "the two forms disagree");
                assert_eq!(
                    took,
                    before.in_use < before.max,
                    "acquire ignored the limit"
                );
                if let Some(p) = permit {
                    // Keep the harness bounded: release the oldest first if many are held.
                    if self.permits.len() >= 4096 {
                        if let Some(p) = self.plain_permits.pop() {
                            self.plain.on_release(now, p);
                            self.model.on_release();
                        }
                        drop(self.permits.swap_remove(0));
                    }
                    self.permits.push(p);
                }
            }
            Op::Release(i) => {
                if let Some(p) = self.plain_permits.pop() {
                    self.plain.on_release(now, p);
                    self.model.on_release();
                } else if let Ok(p) = self.stray.try_acquire(now) {
                    self.plain.on_release(now, p);
                    self.model.on_release();
                }
                if self.permits.is_empty() {
                    self.unmatched += 1;
                } else {
                    drop(
                        self.permits
                            .swap_remove(usize::from(i) % self.permits.len()),
                    );
                }
            }
            Op::SetMax(m) => {
                if let Some(m) = NonZeroUsize::new(m as usize) {
                    self.plain.set_max(m);
                    self.shared.set_max(m);
                    self.model.set_max(m);
                    assert_eq!(self.plain.max(), (m.get()).min(MAX_LIMIT));
                }
            }
            Op::SetMaxHuge => {
                self.plain.set_max(NonZeroUsize::MAX);
                self.shared.set_max(NonZeroUsize::MAX);
                self.model.set_max(NonZeroUsize::MAX);
                assert_eq!(self.plain.max(), MAX_LIMIT);
            }
            Op::Shed => {
                self.plain.on_shed(now);
                self.shared.on_shed(now);
                self.model.on_shed();
            }
        }
        let p = self.plain.stats();
        let s = self.shared.stats();
        assert_eq!(
            p,
            self.model.stats(),
            "the plain form disagrees with the model"
        );
        assert_eq!(p.in_use, self.permits.len());
        assert_eq!(s.in_use, self.permits.len());
        assert_eq!((p.max, p.peak), (s.max, s.peak));
        assert_eq!(
            (p.acquired, p.released, p.shed),
            (s.acquired, s.released, s.shed)
        );
        // The shared form counts one rejection per wait (re-polls of one wait are not new
        // rejections), the plain form one per refused acquire: never more on the shared side.
        assert!(
            s.rejected <= p.rejected,
            "shared rejections exceed the plain form's"
        );
        assert_eq!(p.unmatched_releases, self.unmatched);
        assert_eq!(s.unmatched_releases, 0);
        assert!(p.peak >= p.in_use && p.max <= MAX_LIMIT);
        assert_eq!(
            p.acquired - p.released,
            p.in_use as u64,
            "counts do not balance"
        );
        assert_eq!(self.plain.available(), p.max.saturating_sub(p.in_use));
        assert_eq!(self.shared.available(), self.plain.available());
        // A slot is only taken below the limit, so in_use can pass max only by shrinking.
        if p.in_use > before.in_use {
            assert!(p.in_use <= p.max);
        }
    }

    /// Dropping every permit releases every slot.
    pub fn finish(&mut self) {
        let n = self.permits.len();
        self.permits.clear();
        assert_eq!(self.plain_permits.len(), n);
        for p in self.plain_permits.drain(..) {
            self.plain.on_release(Instant::ZERO, p);
            self.model.on_release();
        }
        assert_eq!(self.plain.stats(), self.model.stats());
        assert_eq!(self.shared.in_use(), 0);
        assert_eq!(self.plain.in_use(), 0);
        assert_eq!(self.shared.stats().released, self.plain.stats().released);
    }
}

impl Timed for Op {
    fn timed(&self) -> bool {
        false
    }
}

/// A whole input for the `limit` target.
#[derive(Arbitrary, Debug)]
pub struct Input {
    config: Config,
    ops: Vec<(Step, Op)>,
}

/// Runs one input.
pub fn run(input: &Input) {
    crate::drive(
        &input.config,
        Start::Epoch,
        &input.ops,
        Harness::new,
        Harness::apply,
        Harness::finish,
    );
}
