//! Graceful shutdown: admission stops at the first signal, `started = completed + aborted +
//! in_flight`, the drain ends exactly when the last ticket returns or the deadline passes, at
//! most two events, stop is final, the deadline never moves, timers never spin.

use arbitrary::Arbitrary;
use keel_core::shutdown::{
    Shutdown, ShutdownConfig, ShutdownDecision, ShutdownEvent, ShutdownState,
    ShutdownPermit,
};
use keel_core::time::Instant;

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

/// The machine, the tickets held and the expected state.
pub struct Harness {
    s: Shutdown,
    tickets: Vec<ShutdownPermit>,
    started: u64,
    events: u64,
    /// `Some(deadline)` once the drain started; the deadline is `None` when it never comes.
    deadline: Option<Option<Instant>>,
    stopped: bool,
    grace: core::time::Duration,
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
            tickets: Vec::new(),
            started: 0,
            events: 0,
            deadline: None,
            stopped: false,
            grace: config.grace_period(),
        })
    }

    fn check_decision(&mut self, d: ShutdownDecision, newest: Instant, in_flight: u64) {
        match d {
            ShutdownDecision::Continue => {}
            ShutdownDecision::Drain {
                deadline,
                in_flight: n,
            } => {
                assert!(self.deadline.is_none(), "drain started twice");
                let expected = Some(newest + self.grace).filter(|d| *d != Instant::MAX);
                assert_eq!(deadline, expected);
                assert_eq!(n, in_flight);
                assert!(n > 0);
                self.deadline = Some(deadline);
            }
            ShutdownDecision::Delay { .. } => {
                panic!("a drain delay, but the harness configures none");
            }
            ShutdownDecision::StopNow { aborted } => {
                assert!(!self.stopped, "stopped twice");
                assert!(aborted <= in_flight);
                self.stopped = true;
            }
        }
    }

    /// Applies `op` at `now` and checks the invariants.
    pub fn apply(&mut self, clock: &mut Clock, now: Instant, op: Op) {
        let newest = clock.newest();
        let in_flight = self.s.in_flight();
        let was_running = self.s.is_accepting();
        match op {
            Op::Start => match self.s.try_acquire(now) {
                Ok(t) => {
                    assert!(was_running, "admitted after the drain began");
                    assert_eq!(t.id(), self.started);
                    self.started += 1;
                    if self.tickets.len() < 1024 {
                        self.tickets.push(t);
                    } else {
                        let d = self.s.on_work_finished(now, t);
                        assert_eq!(d, ShutdownDecision::Continue);
                    }
                }
                Err(r) => {
                    assert!(!was_running, "refused while running");
                    assert_eq!((r.reason, r.retry_at), (self.s.state(), None));
                }
            },
            Op::Finish(i) => {
                if self.tickets.is_empty() {
                    clock.unseen();
                    return;
                }
                let t = self
                    .tickets
                    .swap_remove(usize::from(i) % self.tickets.len());
                let draining = self.s.is_draining();
                let d = self.s.on_work_finished(now, t);
                if draining && in_flight == 1 {
                    assert_eq!(d, ShutdownDecision::StopNow { aborted: 0 });
                } else {
                    assert_eq!(d, ShutdownDecision::Continue);
                }
                self.check_decision(d, newest, in_flight);
            }
            Op::Signal | Op::Drain | Op::StopNow => {
                let d = match op {
                    Op::Signal => self.s.on_signal(now),
                    Op::Drain => self.s.begin_drain(now),
                    _ => self.s.stop_now(now),
                };
                if was_running && !matches!(op, Op::StopNow) {
                    if in_flight == 0 {
                        assert_eq!(d, ShutdownDecision::StopNow { aborted: 0 });
                        self.deadline = Some(Some(newest + self.grace).filter(|d| *d != Instant::MAX));
                    } else {
                        assert!(matches!(d, ShutdownDecision::Drain { .. }));
                    }
                } else if self.stopped || matches!(op, Op::Drain) {
                    assert_eq!(d, ShutdownDecision::Continue);
                } else {
                    assert_eq!(d, ShutdownDecision::StopNow { aborted: in_flight });
                }
                self.check_decision(d, newest, in_flight);
            }
            Op::Timeout => {
                self.s.handle_timeout(now);
                if let Some(Some(deadline)) = self.deadline {
                    if !self.stopped && newest >= deadline {
                        assert!(self.s.is_stopped(), "deadline passed but still draining");
                        self.stopped = true;
                    }
                }
                assert!(self.s.poll_timeout().is_none_or(|t| t > now));
            }
            Op::WaitOut => {
                if let Some(t) = self.s.poll_timeout() {
                    assert_eq!(Some(Some(t)), self.deadline, "the deadline moved");
                    clock.jump(t);
                    self.s.handle_timeout(t);
                    assert!(self.s.is_stopped(), "deadline did not fire");
                    self.stopped = true;
                    assert_eq!(self.s.poll_timeout(), None);
                }
            }
            Op::Poll => {
                while let Some(e) = self.s.poll_event() {
                    self.events += 1;
                    if let ShutdownEvent::DrainStarted { deadline, .. } = e {
                        assert_eq!(Some(deadline), self.deadline);
                    }
                }
                assert!(self.events <= 2, "more than two events");
            }
        }
        let st = self.s.stats();
        assert_eq!(st.started, self.started);
        assert_eq!(
            st.completed + st.aborted + st.in_flight,
            st.started,
            "started != completed + aborted + in_flight"
        );
        assert_eq!(self.s.is_stopped(), self.stopped);
        if self.stopped {
            assert_eq!(st.in_flight, 0);
            assert_eq!(self.s.state(), ShutdownState::Stopped);
            assert_eq!(self.s.poll_timeout(), None);
        } else {
            assert_eq!(st.in_flight, self.tickets.len() as u64);
        }
        if let (ShutdownState::Draining { deadline }, Some(d)) = (self.s.state(), self.deadline) {
            assert_eq!(deadline, d);
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
