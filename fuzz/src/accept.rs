//! The accept loop against its reference model (`keel_testkit::models::accept`, shared with the
//! proptests): every decision, pause, report and event is the model's; pauses within
//! `[0, max_pause]`, shortage reports are counted exactly once, the event queue is bounded,
//! timers never spin.

use arbitrary::Arbitrary;
use keel_core::accept::{
    classify_os_error, AcceptConfig, AcceptDecision, AcceptErrorKind, AcceptEvent, AcceptLoop,
    Platform, Shortage, UnknownErrorPolicy, EVENT_QUEUE_CAPACITY,
};
use keel_core::time::Instant;
use keel_testkit::models::accept::{event_count, AcceptModel};

use crate::common::{Clock, Dur, Timed};

/// An error the listener reported.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Kind {
    /// Aborted handshake and the like.
    PerConnection,
    /// EMFILE, ENFILE, ENOBUFS, ENOMEM, ENOSR.
    Shortage(u8),
    /// The listener is broken.
    Fatal,
    /// A code no table knows.
    Unknown,
    /// A raw code classified for a platform.
    Raw(i32, u8),
}

/// One input.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Op {
    /// A connection was accepted.
    Accepted,
    /// `accept` failed.
    Error(Kind),
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
    initial: Dur,
    max: Dur,
    growth_percent: u32,
    report_interval: Dur,
    stop_on_unknown: bool,
}

fn kind(k: Kind) -> AcceptErrorKind {
    match k {
        Kind::PerConnection => AcceptErrorKind::PerConnection,
        Kind::Shortage(s) => AcceptErrorKind::Shortage(match s % 5 {
            0 => Shortage::ProcessFileLimit,
            1 => Shortage::SystemFileLimit,
            2 => Shortage::Buffers,
            3 => Shortage::Streams,
            _ => Shortage::Memory,
        }),
        Kind::Fatal => AcceptErrorKind::Fatal,
        Kind::Unknown => AcceptErrorKind::Unknown,
        Kind::Raw(code, p) => {
            let platform = match p % 3 {
                0 => Platform::Linux,
                1 => Platform::Bsd,
                _ => Platform::Windows,
            };
            classify_os_error(code, platform)
        }
    }
}

/// The machine and its reference model (`keel_testkit::models::accept`, shared with the
/// proptests).
pub struct Harness {
    machine: AcceptLoop,
    model: AcceptModel,
    config: AcceptConfig,
    counted: u64,
    reports: u64,
}

impl Harness {
    /// `None` when the builder rejects the config (which it must do without panicking).
    pub fn new(c: &Config, start: Instant) -> Option<Harness> {
        let config = AcceptConfig::builder()
            .initial_pause(c.initial.get())
            .max_pause(c.max.get())
            .growth_percent(c.growth_percent)
            .report_interval(c.report_interval.get())
            .unknown_errors(if c.stop_on_unknown {
                UnknownErrorPolicy::Stop
            } else {
                UnknownErrorPolicy::Pause
            })
            .build()
            .ok()?;
        Some(Harness {
            machine: AcceptLoop::new(config, start),
            model: AcceptModel::new(&config, start),
            config,
            counted: 0,
            reports: 0,
        })
    }

    fn drain_events(&mut self) {
        let events: Vec<AcceptEvent> = core::iter::from_fn(|| self.machine.poll_event()).collect();
        assert!(events.len() <= EVENT_QUEUE_CAPACITY + 1, "event queue grew");
        if let Err(broken) = self.model.check_events(&events) {
            panic!("{broken}");
        }
        for e in &events {
            self.counted = self.counted.saturating_add(event_count(e));
            if let AcceptEvent::Shortage { pause, .. } = e {
                self.reports += 1;
                assert!(*pause <= self.config.max_pause());
            }
        }
    }

    /// Applies `op` at `now` and checks it against the model.
    pub fn apply(&mut self, clock: &mut Clock, now: Instant, op: Op) {
        let m = &mut self.machine;
        match op {
            Op::Accepted => {
                m.on_accepted(now);
                self.model.on_accepted(now);
                if !self.model.is_stopped() {
                    assert_eq!(m.next_pause(), self.config.initial_pause());
                }
            }
            Op::Error(k) => {
                let k = kind(k);
                let decision = m.on_error(now, k);
                assert_eq!(
                    decision,
                    self.model.on_error(now, k),
                    "the model decides otherwise"
                );
                if let AcceptDecision::PauseUntil(t) = decision {
                    let newest = clock.newest();
                    assert!(t >= newest, "PauseUntil before now");
                    assert!(t - newest <= self.config.max_pause(), "pause above max");
                }
            }
            Op::Timeout => {
                m.handle_timeout(now);
                self.model.handle_timeout(now);
                if let Some(t) = m.poll_timeout() {
                    assert!(t > clock.newest(), "poll_timeout not after t");
                }
            }
            Op::WaitOut => {
                if let Some(t) = m.poll_timeout() {
                    clock.jump(t);
                    m.handle_timeout(t);
                    self.model.handle_timeout(t);
                    assert!(m.poll_timeout().is_none_or(|u| u > t));
                }
            }
            Op::Poll => self.drain_events(),
        }
        let m = &self.machine;
        assert_eq!(
            m.poll_timeout(),
            self.model.poll_timeout(),
            "the pause disagrees"
        );
        assert_eq!(m.is_stopped(), self.model.is_stopped());
        let s = m.stats();
        assert_eq!(s.unreported, self.model.unreported());
        assert_eq!(s.reports + s.suppressed, s.shortages);
        assert!(s.unreported <= s.suppressed);
        assert!(s.fatal <= 1);
        assert!(s.pauses <= s.shortages);
    }

    /// End-of-run checks: every shortage was reported or counted exactly once.
    pub fn finish(&mut self) {
        self.drain_events();
        let s = self.machine.stats();
        assert_eq!(
            self.counted + s.unreported,
            s.shortages,
            "a shortage was lost or double-counted"
        );
        assert_eq!(self.reports, s.reports);
    }
}

impl Timed for Op {
    fn timed(&self) -> bool {
        matches!(self, Op::Accepted | Op::Error(_) | Op::Timeout)
    }
}

crate::single_machine_target!("accept", Config);
