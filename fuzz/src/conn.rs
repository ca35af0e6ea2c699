//! Connection bookkeeping (`keel_core::conn::ConnTable`): reclamation picks the longest-idle
//! eligible connection and never one idle less than the minimum, one at a time; the linger
//! deadline is never past the drain deadline nor before now; every expiry is due; counts add
//! up; timers never spin.

use arbitrary::Arbitrary;
use keel_core::conn::{CloseReason, ConnConfig, ConnEnd, ConnTable};
use keel_core::time::Instant;
use keel_testkit::models::conn::ConnModel;

use crate::common::{Clock, Dur, Timed};

/// One input.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Op {
    /// `on_open(id)`.
    Open(u8),
    /// `on_activity(id, now - back)`.
    Activity(u8, Dur),
    /// `on_read_deadline(id, now + d)`, or cleared.
    ReadDeadline(u8, Option<Dur>),
    /// `on_handler_done(id, drain = now + d)`.
    HandlerDone(u8, Option<Dur>),
    /// `on_closed(id, end)`.
    Closed(u8, u8),
    /// `on_close(id, idle or read deadline)`.
    Close(u8, bool),
    /// `reclaim()`.
    Reclaim,
    /// `handle_timeout(now)`.
    Timeout,
    /// Jump to `poll_timeout()` and handle it.
    WaitOut,
}

/// The configuration.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct Config {
    idle: Option<Dur>,
    min_idle: Option<Dur>,
    linger: Dur,
}

/// The machine and its reference model (`keel_testkit::models::conn`, shared with the
/// proptests).
pub struct Harness {
    t: ConnTable,
    model: ConnModel,
}

impl Harness {
    /// `None` when the builder rejects the config.
    pub fn new(c: &Config, start: Instant) -> Option<Harness> {
        let config = ConnConfig::builder()
            .idle_timeout(c.idle.map(Dur::get))
            .reclaim_min_idle(c.min_idle.map(Dur::get))
            .linger_time(c.linger.get())
            .build()
            .ok()?;
        Some(Harness {
            t: ConnTable::new(config, start),
            model: ConnModel::new(&config, start),
        })
    }

    fn expire(&mut self, now: Instant) {
        self.t.handle_timeout(now);
        let mut got = Vec::new();
        while let Some(e) = self.t.poll_event() {
            got.push(e);
        }
        assert_eq!(
            got,
            self.model.handle_timeout(now),
            "expiries disagree with the model"
        );
        assert!(
            self.t.poll_timeout().is_none_or(|t| t > now),
            "timer would spin"
        );
    }

    /// Applies `op` at `now` and checks it against the model.
    pub fn apply(&mut self, clock: &mut Clock, now: Instant, op: Op) {
        let newest = clock.newest();
        match op {
            Op::Open(id) => {
                self.t.on_open(now, u64::from(id));
                self.model.on_open(now, u64::from(id));
            }
            Op::Activity(id, back) => {
                let at = Instant::from_nanos(
                    now.as_nanos().saturating_sub(back.get().as_nanos() as u64),
                );
                self.t.on_activity(now, u64::from(id), at);
                self.model.on_activity(now, u64::from(id), at);
            }
            Op::ReadDeadline(id, d) => {
                let d = d.map(|d| now + d.get());
                self.t.on_read_deadline(now, u64::from(id), d);
                self.model.on_read_deadline(now, u64::from(id), d);
            }
            Op::HandlerDone(id, drain) => {
                let drain = drain.map(|d| now + d.get());
                let got = self.t.on_handler_done(now, u64::from(id), drain);
                if let Err(broken) = self.model.on_handler_done(now, u64::from(id), drain, got) {
                    panic!("{broken}");
                }
            }
            Op::Closed(id, e) => {
                let end = match e % 4 {
                    0 => ConnEnd::Clean,
                    1 => ConnEnd::LingerTimeout,
                    2 => ConnEnd::Reset,
                    _ => ConnEnd::Aborted,
                };
                self.t.on_closed(now, u64::from(id), end);
                self.model.on_closed(now, u64::from(id));
            }
            Op::Close(id, idle) => {
                let reason = if idle {
                    CloseReason::Idle
                } else {
                    CloseReason::ReadDeadline
                };
                self.t.on_close(now, u64::from(id), reason);
                self.model.on_close(now, u64::from(id), reason);
            }
            Op::Reclaim => {
                assert_eq!(self.t.reclaim_at(), self.model.reclaim_at());
                assert_eq!(
                    self.t.reclaim(now),
                    self.model.reclaim(now),
                    "not the longest-idle eligible connection"
                );
            }
            // The machine decides at the newest instant it has seen (a stale `now` is clamped).
            Op::Timeout => self.expire(now.max(newest)),
            Op::WaitOut => {
                if let Some(t) = self.t.poll_timeout() {
                    let t = clock.jump(t);
                    self.expire(t.max(newest));
                }
            }
        }
        if let Err(broken) = self.model.check_stats(&self.t.stats()) {
            panic!("{broken}");
        }
    }

    /// Nothing more to check at the end.
    pub fn finish(&mut self) {}
}

impl Timed for Op {
    fn timed(&self) -> bool {
        !matches!(self, Op::WaitOut)
    }
}

crate::single_machine_target!("conn", Config);

#[cfg(test)]
mod tests {
    use super::*;

    /// The harness's reclamation check bites: three connections, different idle times.
    #[test]
    fn harness_drives_a_reclamation_and_an_expiry() {
        let config = Config {
            idle: Some(Dur::Secs(10)),
            min_idle: Some(Dur::Secs(1)),
            linger: Dur::Secs(2),
        };
        let mut h = Harness::new(&config, Instant::ZERO).expect("valid");
        let mut clock = Clock::new(0);
        let ops = [
            (crate::common::Step::Stall, Op::Open(1)),
            (crate::common::Step::Leap(1), Op::Open(2)),
            (crate::common::Step::Leap(1), Op::Open(3)),
            (crate::common::Step::Leap(2), Op::Activity(1, Dur::Zero)),
            (crate::common::Step::Stall, Op::Reclaim),
            (crate::common::Step::Stall, Op::Closed(2, 0)),
            (crate::common::Step::Stall, Op::Reclaim),
            (
                crate::common::Step::Stall,
                Op::HandlerDone(1, Some(Dur::Millis(500))),
            ),
            (crate::common::Step::Stall, Op::WaitOut),
        ];
        for (step, op) in ops {
            let now = if op.timed() {
                clock.step(step)
            } else {
                Instant::from_nanos(clock.caller)
            };
            h.apply(&mut clock, now, op);
        }
        assert_eq!(h.t.stats().reclaimed, 2);
    }
}
