//! The accept loop's error policy ([`keel_core::accept::AcceptLoop`]) as its docs define it,
//! written with plain `u128` arithmetic (no saturation helpers from the crate).
//!
//! - **Per-connection** errors: `Continue`. **Fatal** errors (and unknown codes under
//!   `UnknownErrorPolicy::Stop`): `Stop`, for ever after, with one `Fatal` event.
//! - **Shortages** (and unknown codes under `UnknownErrorPolicy::Pause`): pause until
//!   `now + initial × (growth / 100)^consecutive`, capped at `max_pause` (a pause never
//!   shortens one already running); the first shortage of a quiet spell and the first after
//!   each `report_interval` are reported (a `Shortage` event carrying how many were suppressed
//!   since), the rest counted as suppressed.
//! - **An accepted connection** ends the pause and the streak, and (if the episode was
//!   reported) queues `Resumed` with the time paused and the suppressed count.
//! - The event queue holds [`EVENT_QUEUE_CAPACITY`] events; beyond that the oldest fold into
//!   one ([`check_events`](AcceptModel::check_events) checks the fold by counts).
//!
//! ```
//! use std::time::Duration;
//! use keel_core::accept::{AcceptConfig, AcceptErrorKind, AcceptLoop, Shortage};
//! use keel_core::time::Instant;
//! use keel_testkit::models::accept::AcceptModel;
//!
//! let config = AcceptConfig::builder().initial_pause(Duration::from_millis(10)).build()?;
//! let (mut accept, mut model) = (AcceptLoop::new(config, Instant::ZERO), AcceptModel::new(&config, Instant::ZERO));
//! let emfile = AcceptErrorKind::Shortage(Shortage::ProcessFileLimit);
//! assert_eq!(accept.on_error(Instant::ZERO, emfile), model.on_error(Instant::ZERO, emfile));
//! let events: Vec<_> = std::iter::from_fn(|| accept.poll_event()).collect();
//! model.check_events(&events).expect("one Shortage report");
//! # Ok::<(), keel_core::ConfigError>(())
//! ```

use core::time::Duration;

use keel_core::accept::{
    AcceptConfig, AcceptDecision, AcceptErrorKind, AcceptEvent, Shortage, UnknownErrorPolicy,
    EVENT_QUEUE_CAPACITY,
};
use keel_core::time::Instant;

/// The reference model of an accept loop. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct AcceptModel {
    config: AcceptConfig,
    newest: u128,
    consecutive: u32,
    until: Option<u128>,
    last_report: Option<u128>,
    stopped: bool,
    unreported: u64,
    episode: Option<(u128, bool)>,
    /// Events expected since the last poll, oldest first (Fatal excluded).
    events: Vec<AcceptEvent>,
    fatal: bool,
}

const END: u128 = u64::MAX as u128;

/// The nanoseconds of a pause or a span of the clock (at most about 2^65 ns, whose seconds
/// fit a `u64` many times over) as a `Duration`.
fn nanos_to_duration(n: u128) -> Duration {
    let secs = u64::try_from(n / 1_000_000_000).unwrap_or(u64::MAX);
    Duration::new(secs, (n % 1_000_000_000) as u32)
}

/// An instant of the clock, saturated at its end.
fn instant(n: u128) -> Instant {
    Instant::from_nanos(u64::try_from(n.min(END)).unwrap_or(u64::MAX))
}

impl AcceptModel {
    /// The model of `AcceptLoop::new(*config, start)`.
    #[must_use]
    pub fn new(config: &AcceptConfig, start: Instant) -> Self {
        let (config, start) = (*config, start.as_nanos());
        AcceptModel {
            config,
            newest: u128::from(start),
            consecutive: 0,
            until: None,
            last_report: None,
            stopped: false,
            unreported: 0,
            episode: None,
            events: Vec::new(),
            fatal: false,
        }
    }

    fn pause_nanos(&self) -> u128 {
        // initial * (growth/100)^consecutive, capped at max: recomputed from scratch.
        let max = self.config.max_pause().as_nanos();
        let mut p = self.config.initial_pause().as_nanos();
        for _ in 0..self.consecutive {
            if p >= max {
                break;
            }
            p = p * u128::from(self.config.growth_percent()) / 100;
        }
        p.min(max)
    }

    fn observe(&mut self, now: Instant) -> u128 {
        let now = now.as_nanos();
        self.newest = self.newest.max(u128::from(now));
        self.newest
    }

    /// `on_error(now, kind)`: the decision the machine must return.
    pub fn on_error(&mut self, now: Instant, kind: AcceptErrorKind) -> AcceptDecision {
        let now = self.observe(now);
        // An unknown code is a shortage of unknown cause, or fatal, as the policy says.
        let kind = match (kind, self.config.unknown_errors()) {
            (AcceptErrorKind::Unknown, UnknownErrorPolicy::Pause) => {
                AcceptErrorKind::Shortage(Shortage::Unrecognized)
            }
            (AcceptErrorKind::Unknown, _) => AcceptErrorKind::Fatal,
            (kind, _) => kind,
        };
        if self.stopped {
            return AcceptDecision::Stop;
        }
        if self.until.is_some_and(|u| now >= u) {
            self.until = None;
        }
        match kind {
            AcceptErrorKind::PerConnection => AcceptDecision::Continue,
            AcceptErrorKind::Shortage(shortage) => {
                let pause = self.pause_nanos();
                self.consecutive = self.consecutive.saturating_add(1);
                let until = (now + pause).min(END);
                let until = self.until.map_or(until, |u| u.max(until));
                self.until = Some(until);
                let interval = self.config.report_interval().as_nanos();
                let episode = self.episode.get_or_insert((now, false));
                if self
                    .last_report
                    .is_none_or(|last| now >= (last + interval).min(END))
                {
                    self.last_report = Some(now);
                    episode.1 = true;
                    self.events.push(AcceptEvent::Shortage {
                        shortage,
                        pause: nanos_to_duration(pause),
                        until: instant(until),
                        suppressed: core::mem::take(&mut self.unreported),
                    });
                } else {
                    self.unreported += 1;
                }
                AcceptDecision::PauseUntil(instant(until))
            }
            _ => {
                self.stopped = true;
                self.until = None;
                self.fatal = true;
                AcceptDecision::Stop
            }
        }
    }

    /// `on_accepted(now)`.
    pub fn on_accepted(&mut self, now: Instant) {
        let now = self.observe(now);
        if self.stopped {
            return;
        }
        self.until = None;
        self.consecutive = 0;
        if let Some((start, true)) = self.episode.take() {
            self.events.push(AcceptEvent::Resumed {
                paused_for: nanos_to_duration(now - start),
                suppressed: core::mem::take(&mut self.unreported),
            });
        }
    }

    /// `handle_timeout(now)`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.observe(now);
        if !self.stopped && self.until.is_some_and(|u| now >= u) {
            self.until = None;
        }
    }

    /// The machine's `poll_timeout()`: the end of the current pause.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.until.map(instant)
    }

    /// Compares the machine's queued events with the expected ones: exact when nothing was
    /// folded; when more than the queue holds were expected, the newest `CAPACITY - 1` exactly
    /// and the oldest kept one by kind, the folded counts by their total.
    /// `Err` says what differs.
    pub fn check_events(&mut self, got: &[AcceptEvent]) -> Result<(), String> {
        let expected = core::mem::take(&mut self.events);
        let fatal = core::mem::take(&mut self.fatal);
        let (got, got_fatal) = match got.split_last() {
            Some((AcceptEvent::Fatal, rest)) => (rest, true),
            _ => (got, false),
        };
        if got_fatal != fatal {
            return Err(format!("a Fatal event: {got_fatal}, the model {fatal}"));
        }
        if expected.len() <= EVENT_QUEUE_CAPACITY {
            if got != &expected[..] {
                return Err(format!("events {got:?}, the model {expected:?}"));
            }
        } else {
            let skip = expected.len() - EVENT_QUEUE_CAPACITY;
            let total: u64 = expected[..=skip].iter().map(event_count).sum();
            if got.len() != EVENT_QUEUE_CAPACITY
                || got[1..] != expected[skip + 1..]
                || event_count(&got[0]) != total
            {
                return Err(format!(
                    "folded events {got:?}, the model {expected:?} (the oldest {} fold into one counting {total})",
                    skip + 1
                ));
            }
        }
        Ok(())
    }
}

/// How many shortages an event accounts for: a report counts itself and the suppressed ones
/// before it; a `Resumed` counts the suppressed ones since the last report.
#[must_use]
pub fn event_count(e: &AcceptEvent) -> u64 {
    match *e {
        AcceptEvent::Shortage { suppressed, .. } => suppressed.saturating_add(1),
        AcceptEvent::Resumed { suppressed, .. } => suppressed,
        _ => 0,
    }
}

impl AcceptModel {
    /// Whether the loop has stopped (a fatal error).
    #[must_use]
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Shortages neither reported nor folded into a `Resumed` yet (`stats().unreported`).
    #[must_use]
    pub fn unreported(&self) -> u64 {
        self.unreported
    }

    /// The newest instant seen (every input's `now` is clamped to it).
    #[must_use]
    pub fn newest(&self) -> Instant {
        instant(self.newest)
    }
}
