//! Graceful shutdown ([`keel_core::shutdown::Shutdown`]) as its docs define it.
//!
//! - **Running**: work is admitted (ticket ids count from 0). The first signal starts the drain
//!   delay when one is configured (`Delay { until }`, still admitting), else the drain.
//! - **The drain** (a signal, `begin_drain`, or the delay's end at a `handle_timeout`) stops
//!   admission and sets the deadline `now + grace_period` (`None` when it reaches the end of
//!   the clock); with nothing in flight it stops at once (`StopNow { aborted: 0 }`), else
//!   `Drain { deadline, in_flight }`. The last ticket returned stops it
//!   (`StopNow { aborted: 0 }`, event `Drained` with the completions since the drain began).
//! - **Forced stops**: `stop_now`, a second signal (while delaying or draining) and a
//!   `handle_timeout` at or after the deadline abort whatever is in flight.
//! - **Stopped** is final: every input answers `Continue`, admissions are refused, a ticket
//!   returned late counts in `finished_after_stop`.
//!
//! [`on_signal`](ShutdownModel::on_signal) and the other inputs return the decision the
//! machine must return; [`events`](ShutdownModel::events) are the events it must have queued
//! (oldest first), [`stats`](ShutdownModel::stats) its counters.
//!
//! ```
//! use std::time::Duration;
//! use keel_core::shutdown::{Shutdown, ShutdownConfig};
//! use keel_core::time::Instant;
//! use keel_testkit::models::shutdown::ShutdownModel;
//!
//! let config = ShutdownConfig::builder().grace_period(Duration::from_secs(5)).build()?;
//! let (mut sd, mut model) = (Shutdown::new(config, Instant::ZERO), ShutdownModel::new(&config, Instant::ZERO));
//! let ticket = sd.try_acquire(Instant::ZERO).expect("running");
//! assert_eq!(model.try_acquire(Instant::ZERO), Ok(0));
//! let t1 = Instant::from_secs(1);
//! assert_eq!(sd.on_signal(t1), model.on_signal(t1));
//! assert_eq!(sd.on_work_finished(t1, ticket), model.on_work_finished(t1));
//! assert_eq!(sd.stats(), model.stats());
//! # Ok::<(), keel_core::ConfigError>(())
//! ```

use core::time::Duration;

use keel_core::shutdown::{
    ShutdownConfig, ShutdownDecision, ShutdownEvent, ShutdownState, ShutdownStats,
};
use keel_core::time::Instant;

/// The reference model of a graceful shutdown. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct ShutdownModel {
    grace: Duration,
    delay: Duration,
    newest: Instant,
    state: ShutdownState,
    completed_at_drain: u64,
    stats: ShutdownStats,
    events: Vec<ShutdownEvent>,
}

/// `at + d`, `None` when it reaches the end of the clock (a time that never comes).
fn after(at: Instant, d: Duration) -> Option<Instant> {
    Some(at.saturating_add(d)).filter(|t| *t != Instant::MAX)
}

impl ShutdownModel {
    /// The model of `Shutdown::new(*config, start)`.
    #[must_use]
    pub fn new(config: &ShutdownConfig, start: Instant) -> Self {
        ShutdownModel {
            grace: config.grace_period(),
            delay: config.drain_delay(),
            newest: start,
            state: ShutdownState::Running,
            completed_at_drain: 0,
            stats: ShutdownStats::default(),
            events: Vec::new(),
        }
    }

    fn observe(&mut self, now: Instant) -> Instant {
        self.newest = self.newest.max(now);
        self.newest
    }

    fn accepting(&self) -> bool {
        matches!(
            self.state,
            ShutdownState::Running | ShutdownState::Delaying { .. }
        )
    }

    /// The state the machine must be in.
    #[must_use]
    pub fn state(&self) -> ShutdownState {
        self.state
    }

    /// The counters the machine's `stats()` must return.
    #[must_use]
    pub fn stats(&self) -> ShutdownStats {
        self.stats
    }

    /// Work in flight.
    #[must_use]
    pub fn in_flight(&self) -> u64 {
        self.stats.in_flight
    }

    /// The machine's `poll_timeout()`: the delay's end or the drain's deadline.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            ShutdownState::Delaying { until } => until,
            ShutdownState::Draining { deadline } => deadline,
            _ => None,
        }
    }

    /// Takes the events the machine must have queued since the last call, oldest first.
    pub fn events(&mut self) -> Vec<ShutdownEvent> {
        core::mem::take(&mut self.events)
    }

    /// `try_acquire(now)`: `Ok(ticket id)` or `Err(state)` (the rejection's reason).
    pub fn try_acquire(&mut self, now: Instant) -> Result<u64, ShutdownState> {
        self.observe(now);
        if self.accepting() {
            let id = self.stats.started;
            self.stats.started += 1;
            self.stats.in_flight += 1;
            Ok(id)
        } else {
            self.stats.refused += 1;
            Err(self.state)
        }
    }

    /// `on_work_finished(now, ticket)` for a ticket this machine issued.
    pub fn on_work_finished(&mut self, now: Instant) -> ShutdownDecision {
        self.work_ended(now, false)
    }

    /// `on_work_reset(now, ticket)` for a ticket this machine issued.
    pub fn on_work_reset(&mut self, now: Instant) -> ShutdownDecision {
        self.work_ended(now, true)
    }

    fn work_ended(&mut self, now: Instant, reset: bool) -> ShutdownDecision {
        self.observe(now);
        if self.state == ShutdownState::Stopped {
            self.stats.finished_after_stop += 1;
            return ShutdownDecision::Continue;
        }
        self.stats.in_flight -= 1;
        if reset {
            self.stats.reset += 1;
        } else {
            self.stats.completed += 1;
        }
        if matches!(self.state, ShutdownState::Draining { .. }) && self.stats.in_flight == 0 {
            self.drained();
            return ShutdownDecision::StopNow { aborted: 0 };
        }
        ShutdownDecision::Continue
    }

    /// `on_signal(now)`.
    pub fn on_signal(&mut self, now: Instant) -> ShutdownDecision {
        self.stats.signals += 1;
        let now = self.observe(now);
        match self.state {
            ShutdownState::Running if !self.delay.is_zero() => {
                let until = after(now, self.delay);
                self.state = ShutdownState::Delaying { until };
                self.events.push(ShutdownEvent::DelayStarted { until });
                ShutdownDecision::Delay { until }
            }
            ShutdownState::Running => self.begin_drain(now),
            ShutdownState::Stopped => ShutdownDecision::Continue,
            _ => self.stop_now(now),
        }
    }

    /// `begin_drain(now)`.
    pub fn begin_drain(&mut self, now: Instant) -> ShutdownDecision {
        let now = self.observe(now);
        if !self.accepting() {
            return ShutdownDecision::Continue;
        }
        let deadline = after(now, self.grace);
        let in_flight = self.stats.in_flight;
        self.completed_at_drain = self.stats.completed;
        self.state = ShutdownState::Draining { deadline };
        self.events.push(ShutdownEvent::DrainStarted {
            deadline,
            in_flight,
        });
        if in_flight == 0 {
            self.drained();
            return ShutdownDecision::StopNow { aborted: 0 };
        }
        ShutdownDecision::Drain {
            deadline,
            in_flight,
        }
    }

    /// `stop_now(now)`.
    pub fn stop_now(&mut self, now: Instant) -> ShutdownDecision {
        self.observe(now);
        if self.state == ShutdownState::Stopped {
            return ShutdownDecision::Continue;
        }
        let aborted = self.abort_all();
        self.events.push(ShutdownEvent::ForcedStop { aborted });
        ShutdownDecision::StopNow { aborted }
    }

    /// `handle_timeout(now)`: the delay's end starts the drain; the deadline aborts the rest.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.observe(now);
        match self.state {
            ShutdownState::Delaying { until: Some(until) } if now >= until => {
                let _ = self.begin_drain(now);
            }
            ShutdownState::Draining {
                deadline: Some(deadline),
            } if now >= deadline => {
                let aborted = self.abort_all();
                self.events
                    .push(ShutdownEvent::DeadlineExceeded { aborted });
            }
            _ => {}
        }
    }

    fn drained(&mut self) {
        let completed = self.stats.completed - self.completed_at_drain;
        self.state = ShutdownState::Stopped;
        self.events.push(ShutdownEvent::Drained { completed });
    }

    fn abort_all(&mut self) -> u64 {
        let aborted = self.stats.in_flight;
        self.stats.aborted += aborted;
        self.stats.in_flight = 0;
        self.state = ShutdownState::Stopped;
        aborted
    }
}
