//! Graceful shutdown: admission stops at the first signal, `started = completed + aborted +
//! in_flight`, the drain ends exactly when the last ticket returns or the deadline passes, at
//! most two events, stop is final, the deadline never moves, timers never spin.

use arbitrary::Arbitrary;
use keel_core::shutdown::{Shutdown, ShutdownConfig, ShutdownPermit, ShutdownState};
use keel_core::time::Instant;
use keel_testkit::models::shutdown::ShutdownModel;

use crate::common::{Clock, Dur, Timed};

/// One input.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Op {
    /// `try_acquire`.
    Start,
    /// `on_work_finished` for the held ticket at this index.
    Finish(u8),
    /// `on_signal`.
    Signal,
    /// `begin_drain`.
    Drain,
    /// `stop_now`.
    StopNow,
    /// `handle_timeout(now)`.
    Timeout,
    /// Jump to `poll_timeout()` and handle it.
    WaitOut,
    /// Drain the events.
    Poll,
}

/// The configuration.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct Config {
    grace: Option<Dur>,
}

/// The machine, the tickets held and its reference model (`keel_testkit::models::shutdown`,
/// shared with the proptests).
pub struct Harness {
    s: Shutdown,
    model: ShutdownModel,
    tickets: Vec<ShutdownPermit>,
    events: u64,
}

impl Harness {
    /// `None` when the builder rejects the config.
    pub fn new(c: &Config, start: Instant) -> Option<Harness> {
        let mut b = ShutdownConfig::builder();
        if let Some(d) = c.grace {
            b = b.grace_period(d.get());
        }
        let config = b.build().ok()?;
        Some(Harness {
            s: Shutdown::new(config, start),
            model: ShutdownModel::new(&config, start),
            tickets: Vec::new(),
            events: 0,
        })
    }

    /// Applies `op` at `now` and checks it against the model.
    pub fn apply(&mut self, clock: &mut Clock, now: Instant, op: Op) {
        let was_running = self.s.is_accepting();
        match op {
            Op::Start => match (self.s.try_acquire(now), self.model.try_acquire(now)) {
                (Ok(t), Ok(id)) => {
                    assert!(was_running, "admitted after the drain began");
                    assert_eq!(t.id(), id);
                    if self.tickets.len() < 1024 {
                        self.tickets.push(t);
                    } else {
                        assert_eq!(
                            self.s.on_work_finished(now, t),
                            self.model.on_work_finished(now)
                        );
                    }
                }
                (Err(r), Err(state)) => {
                    assert!(!was_running, "refused while running");
                    assert_eq!((r.reason, r.retry_at), (state, None));
                }
                (a, b) => panic!("try_acquire: {a:?}, the model {b:?}"),
            },
            Op::Finish(i) => {
                if self.tickets.is_empty() {
                    clock.unseen();
                    return;
                }
                let t = self
                    .tickets
                    .swap_remove(usize::from(i) % self.tickets.len());
                assert_eq!(
                    self.s.on_work_finished(now, t),
                    self.model.on_work_finished(now)
                );
            }
            Op::Signal => assert_eq!(self.s.on_signal(now), self.model.on_signal(now)),
            Op::Drain => assert_eq!(self.s.begin_drain(now), self.model.begin_drain(now)),
            Op::StopNow => assert_eq!(self.s.stop_now(now), self.model.stop_now(now)),
            Op::Timeout => {
                self.s.handle_timeout(now);
                self.model.handle_timeout(now);
                assert!(self.s.poll_timeout().is_none_or(|t| t > now));
            }
            Op::WaitOut => {
                if let Some(t) = self.s.poll_timeout() {
                    clock.jump(t);
                    self.s.handle_timeout(t);
                    self.model.handle_timeout(t);
                    assert!(self.s.is_stopped(), "deadline did not fire");
                }
            }
            Op::Poll => {
                let mut fresh = Vec::new();
                while let Some(e) = self.s.poll_event() {
                    fresh.push(e);
                }
                assert_eq!(fresh, self.model.events(), "events disagree with the model");
                self.events += fresh.len() as u64;
                assert!(self.events <= 2, "more than two events");
            }
        }
        let st = self.s.stats();
        assert_eq!(st, self.model.stats(), "counters disagree with the model");
        assert_eq!(self.s.state(), self.model.state());
        assert_eq!(
            self.s.poll_timeout(),
            self.model.poll_timeout(),
            "the timer moved"
        );
        assert_eq!(
            st.completed + st.aborted + st.in_flight,
            st.started,
            "started != completed + aborted + in_flight"
        );
        if self.s.is_stopped() {
            assert_eq!(st.in_flight, 0);
            assert_eq!(self.s.poll_timeout(), None);
        } else {
            assert_eq!(st.in_flight, self.tickets.len() as u64);
        }
        if let ShutdownState::Draining { .. } = self.s.state() {
            assert!(st.in_flight > 0);
        }
    }

    /// Summary consistency.
    pub fn finish(&mut self) {
        let sum = self.s.summary();
        let st = self.s.stats();
        assert_eq!(
            (sum.completed, sum.aborted, sum.refused),
            (st.completed, st.aborted, st.refused)
        );
    }
}

impl Timed for Op {
    fn timed(&self) -> bool {
        !matches!(self, Op::WaitOut | Op::Poll)
    }
}

crate::single_machine_target!("shutdown", Config);
