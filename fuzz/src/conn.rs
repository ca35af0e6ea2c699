//! Connection bookkeeping (`keel_core::conn::ConnTable`): reclamation picks the longest-idle
//! eligible connection and never one idle less than the minimum, one at a time; the linger
//! deadline is never past the drain deadline nor before now; every expiry is due; counts add
//! up; timers never spin.

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use keel_core::conn::{CloseReason, ConnConfig, ConnEnd, ConnEvent, ConnTable};
use keel_core::time::Instant;

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Serving,
    Closing(CloseReason),
    Lingering,
}

/// The machine and the expected state of each connection.
pub struct Harness {
    t: ConnTable,
    conns: BTreeMap<u64, (Instant, Phase)>,
    config: ConnConfig,
    reclaimed: u64,
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
            conns: BTreeMap::new(),
            config,
            reclaimed: 0,
        })
    }

    fn expire(&mut self, now: Instant) {
        self.t.handle_timeout(now);
        while let Some(ConnEvent::Close { id, reason }) = self.t.poll_event() {
            let c = self
                .conns
                .get_mut(&id)
                .expect("a close for a known connection");
            assert_eq!(c.1, Phase::Serving, "closed twice or while lingering");
            assert_ne!(reason, CloseReason::Reclaimed);
            if reason == CloseReason::Idle {
                let idle = self
                    .config
                    .idle_timeout()
                    .expect("idle close without a timeout");
                assert!(now >= c.0 + idle, "closed idle before its timeout");
            }
            c.1 = Phase::Closing(reason);
        }
        assert!(
            self.t.poll_timeout().is_none_or(|t| t > now),
            "timer would spin"
        );
    }

    /// Applies `op` at `now` and checks the invariants.
    pub fn apply(&mut self, clock: &mut Clock, now: Instant, op: Op) {
        let newest = clock.newest();
        match op {
            Op::Open(id) => {
                self.t.on_open(now, u64::from(id));
                self.conns.insert(u64::from(id), (newest, Phase::Serving));
            }
            Op::Activity(id, back) => {
                let at = Instant::from_nanos(
                    now.as_nanos().saturating_sub(back.get().as_nanos() as u64),
                );
                self.t.on_activity(now, u64::from(id), at);
                if let Some(c) = self.conns.get_mut(&u64::from(id)) {
                    c.0 = c.0.max(at.min(newest));
                }
            }
            Op::ReadDeadline(id, d) => {
                let d = d.map(|d| now + d.get());
                self.t.on_read_deadline(now, u64::from(id), d);
            }
            Op::HandlerDone(id, drain) => {
                let drain = drain.map(|d| now + d.get());
                let was_serving = self
                    .conns
                    .get(&u64::from(id))
                    .is_some_and(|c| c.1 == Phase::Serving);
                let got = self.t.on_handler_done(now, u64::from(id), drain);
                if let Some(deadline) = got {
                    // A second call for a lingering connection repeats its deadline (cut to the
                    // drain's), which may have passed since: the caller then closes at once.
                    if was_serving {
                        assert!(deadline >= newest, "linger deadline in the past");
                    }
                    assert!(deadline <= newest + self.config.linger_time());
                    if let Some(d) = drain {
                        assert!(deadline <= d.max(newest), "linger past the drain deadline");
                    }
                }
                match self.conns.get_mut(&u64::from(id)) {
                    Some(c) if c.1 == Phase::Serving && !self.config.linger_time().is_zero() => {
                        assert!(got.is_some());
                        c.1 = Phase::Lingering;
                    }
                    Some(c) if c.1 == Phase::Lingering => assert!(got.is_some()),
                    _ => assert_eq!(got, None),
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
                self.conns.remove(&u64::from(id));
            }
            Op::Close(id, idle) => {
                let reason = if idle {
                    CloseReason::Idle
                } else {
                    CloseReason::ReadDeadline
                };
                self.t.on_close(now, u64::from(id), reason);
                if let Some(c) = self.conns.get_mut(&u64::from(id)) {
                    if c.1 == Phase::Serving {
                        c.1 = Phase::Closing(reason);
                    }
                }
            }
            Op::Reclaim => {
                let pending = self
                    .conns
                    .values()
                    .any(|c| c.1 == Phase::Closing(CloseReason::Reclaimed));
                match self.t.reclaim(now) {
                    Some(id) => {
                        assert!(!pending, "two reclamations at once");
                        let min = self.config.reclaim_min_idle().expect("reclaimed while off");
                        let (last, phase) = self.conns[&id];
                        assert_eq!(phase, Phase::Serving);
                        assert!(
                            newest.saturating_duration_since(last) >= min,
                            "reclaimed too soon"
                        );
                        for (&other, &(t, p)) in &self.conns {
                            if p == Phase::Serving && other != id {
                                assert!((last, id) < (t, other), "not the longest idle");
                            }
                        }
                        self.conns.get_mut(&id).expect("known").1 =
                            Phase::Closing(CloseReason::Reclaimed);
                        self.reclaimed += 1;
                    }
                    None => {
                        if let (Some(min), false) = (self.config.reclaim_min_idle(), pending) {
                            assert!(
                                !self.conns.values().any(|&(t, p)| p == Phase::Serving
                                    && newest.saturating_duration_since(t) >= min),
                                "an eligible connection was not reclaimed"
                            );
                        }
                    }
                }
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
        let s = self.t.stats();
        assert_eq!(s.open, self.conns.len() as u64);
        assert_eq!(
            s.lingering,
            self.conns
                .values()
                .filter(|c| c.1 == Phase::Lingering)
                .count() as u64
        );
        assert_eq!(s.reclaimed, self.reclaimed);
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
