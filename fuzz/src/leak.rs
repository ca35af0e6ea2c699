//! Leak detection against its reference model: every tracking and release decision, every
//! report and the timer are the model's; the counters balance (every tracked permit is released
//! in time, leaked, or still out within the threshold); at the end, after the reports are
//! drained, the model's ledger holds (no permit lost, none reported twice).

use arbitrary::Arbitrary;
use keel_core::leak::{LeakConfig, LeakDetector};
use keel_core::time::Instant;
use keel_testkit::models::leak::LeakModel;

use crate::common::{Clock, Dur, Timed};

/// The table's capacity: small, so overflow and forgetting happen.
pub const CAPACITY: usize = 8;

/// One input.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Op {
    /// `on_acquire` of a small id (duplicates are common).
    Acquire(u8),
    /// `on_acquire` of any id.
    AcquireAny(u64),
    /// `on_release` of a small id (double and unknown releases are common).
    Release(u8),
    /// `on_release` of any id.
    ReleaseAny(u64),
    /// `handle_timeout`.
    Timer,
    /// `poll_event` once.
    Poll,
}

/// The configuration.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct Config {
    threshold: Option<Dur>,
}

/// The detector beside its reference model (`keel_testkit::models::leak`, shared with the
/// proptests).
pub struct Harness {
    d: LeakDetector<CAPACITY>,
    model: LeakModel,
}

impl Harness {
    /// `None` when the builder rejects the config.
    pub fn new(c: &Config, start: Instant) -> Option<Harness> {
        let mut b = LeakConfig::builder();
        if let Some(t) = c.threshold {
            b = b.threshold(t.get());
        }
        let config = b.build().ok()?;
        Some(Harness {
            d: LeakDetector::new(config, start),
            model: LeakModel::new(&config, CAPACITY, start),
        })
    }

    /// Applies `op` at `now` and checks the invariants.
    pub fn apply(&mut self, clock: &mut Clock, now: Instant, op: Op) {
        match op {
            Op::Acquire(_) | Op::AcquireAny(_) => {
                let id = match op {
                    Op::Acquire(id) => u64::from(id),
                    Op::AcquireAny(id) => id,
                    _ => unreachable!(),
                };
                assert_eq!(self.d.on_acquire(now, id), self.model.on_acquire(now, id));
            }
            Op::Release(_) | Op::ReleaseAny(_) => {
                let id = match op {
                    Op::Release(id) => u64::from(id),
                    Op::ReleaseAny(id) => id,
                    _ => unreachable!(),
                };
                assert_eq!(self.d.on_release(now, id), self.model.on_release(now, id));
            }
            Op::Timer => {
                self.d.handle_timeout(now);
                self.model.handle_timeout(now);
                if let Some(next) = self.d.poll_timeout() {
                    assert!(
                        next > clock.newest(),
                        "poll_timeout after handle_timeout is not later"
                    );
                }
            }
            Op::Poll => assert_eq!(self.d.poll_event(), self.model.poll_event()),
        }
        assert_eq!(
            self.d.poll_timeout(),
            self.model.poll_timeout(),
            "the timer disagrees"
        );
        let s = self.d.stats();
        assert_eq!(s.leaked_total, self.model.leaked_total());
        assert_eq!(
            (s.outstanding, s.outstanding_leaked),
            self.model.outstanding()
        );
        assert_eq!(
            s.acquired,
            s.released + s.leaked_total + (s.outstanding - s.outstanding_leaked),
            "a tracked permit is unaccounted for"
        );
        assert!(s.outstanding <= CAPACITY as u64);
    }

    /// Drains the reports and checks the ledger.
    pub fn finish(&mut self) {
        loop {
            let got = self.d.poll_event();
            assert_eq!(got, self.model.poll_event(), "a report disagrees");
            if got.is_none() {
                break;
            }
        }
        if let Err(lost) = self.model.check_ledger() {
            panic!("{lost}");
        }
    }
}

impl Timed for Op {
    fn timed(&self) -> bool {
        !matches!(self, Op::Poll)
    }
}

crate::single_machine_target!("leak", Config);
