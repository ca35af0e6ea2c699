//! Queue-depth admission against its reference model: every decision (reason and `retry_at`),
//! the estimate, the full and stale flags, the timer, the drain rate, every event and the
//! counters are the model's; an admission never takes the estimate past its priority's bound;
//! after `handle_timeout(t)` the next deadline is later than `t`.

use arbitrary::Arbitrary;
use keel_core::backlog::{Backlog, BacklogConfig, Priority};
use keel_core::time::Instant;
use keel_testkit::models::backlog::BacklogModel;

use crate::common::{Clock, Dur, Timed};

/// One input.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Op {
    /// `try_acquire(now, Normal)`.
    Normal,
    /// `try_acquire(now, Critical)`.
    Critical,
    /// `try_acquire` until refused (at most 64 times), normal or critical.
    Flood(bool),
    /// `on_depth` with a small depth.
    Depth(u16),
    /// `on_depth(now, u64::MAX)`.
    DepthMax,
    /// `on_enqueued`.
    Enqueued(u16),
    /// `on_dequeued`.
    Dequeued(u16),
    /// `on_dequeued(now, u64::MAX)`.
    DequeuedMax,
    /// `handle_timeout`.
    Timer,
}

/// The configuration.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct Config {
    high: Option<u16>,
    high_max: bool,
    low: Option<u16>,
    critical_reserve: Option<u16>,
    max_staleness: Option<Dur>,
    drain_window: Option<Dur>,
}

/// The backlog beside its reference model (`keel_testkit::models::backlog`, shared with the
/// proptests).
pub struct Harness {
    b: Backlog,
    model: BacklogModel,
}

impl Harness {
    /// `None` when the builder rejects the config.
    pub fn new(c: &Config, start: Instant) -> Option<Harness> {
        let mut b = BacklogConfig::builder();
        if c.high_max {
            b = b.high(u64::MAX);
        } else if let Some(h) = c.high {
            b = b.high(u64::from(h));
        }
        if let Some(l) = c.low {
            b = b.low(u64::from(l));
        }
        if let Some(r) = c.critical_reserve {
            b = b.critical_reserve(u64::from(r));
        }
        if let Some(d) = c.max_staleness {
            b = b.max_staleness(d.get());
        }
        if let Some(d) = c.drain_window {
            b = b.drain_window(d.get());
        }
        let config = b.build().ok()?;
        Some(Harness {
            b: Backlog::new(config, start),
            model: BacklogModel::new(&config, start),
        })
    }

    fn acquire(&mut self, now: Instant, p: Priority) -> bool {
        let before = self.b.depth();
        let got = self.b.try_acquire(now, p);
        assert_eq!(
            got,
            self.model.try_acquire(now, p),
            "{p:?} disagrees with the model"
        );
        if got.is_ok() {
            let bound = match p {
                Priority::Normal => self.b.config().high(),
                Priority::Critical => self.b.config().critical_bound(),
            };
            assert!(
                before < bound && self.b.depth() <= bound,
                "an admission broke the bound"
            );
        }
        got.is_ok()
    }

    /// Applies `op` at `now` and checks the invariants.
    pub fn apply(&mut self, clock: &mut Clock, now: Instant, op: Op) {
        match op {
            Op::Normal => {
                self.acquire(now, Priority::Normal);
            }
            Op::Critical => {
                self.acquire(now, Priority::Critical);
            }
            Op::Flood(critical) => {
                let p = if critical {
                    Priority::Critical
                } else {
                    Priority::Normal
                };
                for _ in 0..64 {
                    if !self.acquire(now, p) {
                        break;
                    }
                }
            }
            Op::Depth(d) => {
                self.b.on_depth(now, u64::from(d));
                self.model.on_depth(now, u64::from(d));
            }
            Op::DepthMax => {
                self.b.on_depth(now, u64::MAX);
                self.model.on_depth(now, u64::MAX);
            }
            Op::Enqueued(n) => {
                self.b.on_enqueued(now, u64::from(n));
                self.model.on_enqueued(now, u64::from(n));
            }
            Op::Dequeued(n) => {
                self.b.on_dequeued(now, u64::from(n));
                self.model.on_dequeued(now, u64::from(n));
            }
            Op::DequeuedMax => {
                self.b.on_dequeued(now, u64::MAX);
                self.model.on_dequeued(now, u64::MAX);
            }
            Op::Timer => {
                self.b.handle_timeout(now);
                self.model.handle_timeout(now);
                if let Some(next) = self.b.poll_timeout() {
                    assert!(
                        next > clock.newest(),
                        "poll_timeout after handle_timeout is not later"
                    );
                }
            }
        }
        assert_eq!(self.b.depth(), self.model.depth(), "the estimate disagrees");
        assert_eq!(self.b.is_full(), self.model.is_full(), "full disagrees");
        assert_eq!(self.b.is_stale(), self.model.is_stale(), "stale disagrees");
        assert_eq!(
            self.b.poll_timeout(),
            self.model.poll_timeout(),
            "the timer disagrees"
        );
        assert_eq!(
            self.b.drain_rate_milli(),
            self.model.drain_rate_milli(),
            "the drain rate disagrees"
        );
        let events: Vec<_> = core::iter::from_fn(|| self.b.poll_event()).collect();
        assert_eq!(events, self.model.take_events(), "the events disagree");
        let s = self.b.stats();
        assert_eq!(
            (
                s.admitted,
                s.admitted_critical,
                s.refused_full,
                s.refused_stale
            ),
            self.model.totals(),
            "the counters disagree"
        );
        assert_eq!(s.full_transitions, self.model.full_transitions());
        assert_eq!(
            s.events_dropped, 0,
            "events polled after every step were dropped"
        );
    }

    /// Nothing more to check at the end.
    pub fn finish(&mut self) {}
}

impl Timed for Op {
    fn timed(&self) -> bool {
        true
    }
}

crate::single_machine_target!("backlog", Config);
