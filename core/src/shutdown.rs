//! Graceful shutdown: stop accepting, drain in-flight work until a deadline, then stop.
//!
//! # What it protects against
//!
//! A process told to stop (SIGTERM from an orchestrator, Ctrl-C from an operator) that either
//! drops every in-flight request on the floor, or waits forever for one hung task. The seed's
//! shutdown manager (seed 003) checked its timeout only after a task ended, so a single task
//! that never ended blocked shutdown forever. Here the deadline is a timer the caller drives
//! through [`Shutdown::poll_timeout`] / [`Shutdown::handle_timeout`]: it fires whether or not any
//! task ever finishes.
//!
//! # The contract
//!
//! ```text
//! Running --signal / begin_drain--> Draining { deadline } --in-flight reaches 0--> Stopped (drained)
//!    |                                   |--deadline passes (handle_timeout)------> Stopped (aborted = in-flight)
//!    '--stop_now-------------------------'--second signal / stop_now-------------> Stopped (aborted = in-flight)
//!
//! with a drain delay (drain_delay > 0), the first signal goes through Delaying first:
//! Running --signal--> Delaying { until } --until passes (handle_timeout) / begin_drain--> Draining { .. }
//!                        '--second signal / stop_now--> Stopped (aborted = in-flight)
//! ```
//!
//! # Drain delay (Kubernetes)
//!
//! When a pod is deleted, Kubernetes sends SIGTERM and removes the pod from the Service's
//! endpoints **at the same time**; load balancers and kube-proxy learn of it a few seconds later
//! and keep sending new connections meanwhile. A server that refuses them at once turns a
//! routine rollout into connection errors. With [`ShutdownConfigBuilder::drain_delay`], the first
//! signal enters [`ShutdownState::Delaying`] instead: the machine still admits work
//! ([`is_accepting`](Shutdown::is_accepting) stays `true`) but reports **not ready**
//! ([`is_ready`](Shutdown::is_ready) is `false` from the signal on, so `/readyz` turns 503 at
//! once), and only when the delay has passed (`handle_timeout` at
//! [`poll_timeout`](Shutdown::poll_timeout)) does it refuse and drain as usual, with the
//! deadline `end of delay + grace_period`. Budget both against the pod's
//! `terminationGracePeriodSeconds` (default 30 s): `drain_delay + grace_period` should fit in
//! it. A second signal during the delay stops at once, like a second signal during the drain;
//! [`begin_drain`](Shutdown::begin_drain) during the delay cuts it short and drains now.
//!
//! - While `Running`, [`Shutdown::try_acquire`] admits work and hands out a [`ShutdownPermit`];
//!   the caller returns it with [`Shutdown::on_work_finished`].
//! - The first signal (or [`Shutdown::begin_drain`]) stops admitting **at once** (every later
//!   `try_acquire` returns a [`Rejected`]) and sets `deadline = now + grace_period`.
//! - When the last in-flight ticket comes back during the drain, the machine is `Stopped` and
//!   reports how many items completed during the drain.
//! - When `handle_timeout(now)` sees `now >= deadline`, the machine is `Stopped` and the items
//!   still in flight are counted as aborted: the caller cancels them.
//! - A second signal stops at once ([`ShutdownDecision::StopNow`]) with the in-flight count as
//!   aborted, like most servers do on a second Ctrl-C. The caller decides what a unit of work
//!   spans: keel's server returns a connection's ticket once its lingering close is over, so a
//!   connection cut while it lingers (its reply written, maybe not yet read) is aborted (see
//!   the drain of `driver::Server`, feature `futures`).
//! - Tickets returned after the stop (the aborted tasks winding down) are ignored: they were
//!   already counted as aborted, and counts never go negative.
//!
//! The machine allocates nothing and never panics; `now` is clamped so it never runs backwards,
//! and a grace period that reaches past the end of the clock (`Duration::MAX`) means *no*
//! deadline. `deadline` is then `None` in the state, decision and
//! event, and [`Shutdown::poll_timeout`] is `None`: the drain ends only when the work finishes
//! or [`Shutdown::stop_now`] is called.
//!
//! # Defaults
//!
//! `grace_period` defaults to **30 s**, Kubernetes' `terminationGracePeriodSeconds` default: the
//! time the kubelet waits between SIGTERM and SIGKILL, so a drain longer than that is cut short
//! by the kernel anyway. Interactive services (the echo example) use something like 5 s.
//!
//! # Example
//!
//! ```
//! use core::time::Duration;
//! use keel_core::shutdown::{Shutdown, ShutdownConfig, ShutdownDecision, ShutdownEvent, ShutdownState};
//! use keel_core::Instant;
//!
//! let config = ShutdownConfig::builder().grace_period(Duration::from_secs(5)).build()?;
//! let t0 = Instant::from_secs(100);
//! let mut sd = Shutdown::new(config, t0);
//!
//! let ticket = sd.try_acquire(t0).expect("running: admitted");
//! let hung = sd.try_acquire(t0).expect("running: admitted");
//!
//! // SIGTERM: stop accepting, drain until t0 + 5 s.
//! assert_eq!(
//!     sd.on_signal(t0),
//!     ShutdownDecision::Drain { deadline: Some(t0 + Duration::from_secs(5)), in_flight: 2 }
//! );
//! let refused = sd.try_acquire(t0).unwrap_err();
//! assert!(matches!(refused.reason, ShutdownState::Draining { .. }));
//! assert_eq!(refused.retry_at, None);
//! assert_eq!(sd.poll_timeout(), Some(t0 + Duration::from_secs(5)));
//!
//! // One task finishes; the other hangs. The deadline still fires.
//! assert_eq!(sd.on_work_finished(t0 + Duration::from_secs(1), ticket), ShutdownDecision::Continue);
//! sd.handle_timeout(t0 + Duration::from_secs(5));
//! assert!(sd.is_stopped());
//! assert_eq!(sd.poll_event(), Some(ShutdownEvent::DrainStarted { deadline: Some(t0 + Duration::from_secs(5)), in_flight: 2 }));
//! assert_eq!(sd.poll_event(), Some(ShutdownEvent::DeadlineExceeded { aborted: 1 }));
//!
//! let summary = sd.summary();
//! assert_eq!((summary.completed, summary.aborted), (1, 1));
//! assert_eq!(summary.drained_in, Some(Duration::from_secs(5)));
//! drop(hung); // the caller cancels the hung task; its ticket no longer matters
//! # Ok::<(), keel_core::ConfigError>(())
//! ```

use core::fmt;
use core::time::Duration;

use crate::error::{ConfigError, Rejected};
use crate::ring::EventRing;
use crate::time::{Instant, Monotonic};

/// The default grace period: 30 s, Kubernetes' `terminationGracePeriodSeconds` default.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(30);

/// A validated shutdown configuration. Build it with [`ShutdownConfig::builder`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShutdownConfig {
    grace_period: Duration,
    drain_delay: Duration,
}

impl ShutdownConfig {
    /// A builder starting from the defaults (30 s grace period, no drain delay).
    pub const fn builder() -> ShutdownConfigBuilder {
        ShutdownConfigBuilder {
            grace_period: DEFAULT_GRACE_PERIOD,
            drain_delay: Duration::ZERO,
        }
    }

    /// How long in-flight work may run after the drain starts.
    #[must_use]
    pub const fn grace_period(&self) -> Duration {
        self.grace_period
    }

    /// How long after the first signal the machine still admits work while reporting not
    /// ready, before it drains (zero: drain at once). See the [module docs](self).
    #[must_use]
    pub const fn drain_delay(&self) -> Duration {
        self.drain_delay
    }
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            grace_period: DEFAULT_GRACE_PERIOD,
            drain_delay: Duration::ZERO,
        }
    }
}

/// Builds a [`ShutdownConfig`].
#[derive(Clone, Copy, Debug)]
#[must_use]
pub struct ShutdownConfigBuilder {
    grace_period: Duration,
    drain_delay: Duration,
}

impl ShutdownConfigBuilder {
    /// How long in-flight work may run after the first signal before it is aborted
    /// (default 30 s). `Duration::MAX` means "wait for the work, however long it takes".
    pub const fn grace_period(mut self, grace_period: Duration) -> Self {
        self.grace_period = grace_period;
        self
    }

    /// The Kubernetes drain delay (default zero: none): after the first signal, keep admitting
    /// work for this long while [`Shutdown::is_ready`] is `false` (so load balancers stop
    /// sending before the listener closes), then drain. `Duration::MAX` delays until
    /// [`Shutdown::begin_drain`] or a second signal (which stops at once). See the
    /// [module docs](self).
    ///
    /// ```
    /// use core::time::Duration;
    /// use keel_core::shutdown::{Shutdown, ShutdownConfig, ShutdownDecision, ShutdownState};
    /// use keel_core::Instant;
    ///
    /// let config = ShutdownConfig::builder()
    ///     .drain_delay(Duration::from_secs(5))
    ///     .grace_period(Duration::from_secs(20))
    ///     .build()?;
    /// let t0 = Instant::from_secs(100);
    /// let mut sd = Shutdown::new(config, t0);
    /// let _in_flight = sd.try_acquire(t0).expect("running");
    ///
    /// // SIGTERM: not ready at once, still admitting until t0 + 5 s.
    /// let until = Some(t0 + Duration::from_secs(5));
    /// assert_eq!(sd.on_signal(t0), ShutdownDecision::Delay { until });
    /// assert!(!sd.is_ready() && sd.is_accepting());
    /// let _late = sd.try_acquire(t0 + Duration::from_secs(1)).expect("still admitted");
    ///
    /// // The delay ends (the caller's timer, from poll_timeout): the drain starts.
    /// assert_eq!(sd.poll_timeout(), until);
    /// sd.handle_timeout(t0 + Duration::from_secs(5));
    /// assert_eq!(
    ///     sd.state(),
    ///     ShutdownState::Draining { deadline: Some(t0 + Duration::from_secs(25)) }
    /// );
    /// assert!(sd.try_acquire(t0 + Duration::from_secs(5)).is_err());
    /// # Ok::<(), keel_core::ConfigError>(())
    /// ```
    pub const fn drain_delay(mut self, drain_delay: Duration) -> Self {
        self.drain_delay = drain_delay;
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Zero`] for a zero grace period: it would abort all in-flight work the
    /// moment the drain starts. Use [`Shutdown::stop_now`] for that on purpose.
    pub const fn build(self) -> Result<ShutdownConfig, ConfigError> {
        if self.grace_period.is_zero() {
            return Err(ConfigError::Zero {
                field: "grace_period",
            });
        }
        Ok(ShutdownConfig {
            grace_period: self.grace_period,
            drain_delay: self.drain_delay,
        })
    }
}

/// Where the machine is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShutdownState {
    /// Accepting work.
    Running,
    /// A signal arrived and the drain delay runs: still accepting work, but not ready (see
    /// [`Shutdown::is_ready`]); the drain starts at `until`.
    Delaying {
        /// When the drain starts; `None` when never by itself (a delay past the end of the
        /// clock: only [`Shutdown::begin_drain`] or a second signal end it).
        until: Option<Instant>,
    },
    /// Refusing new work; in-flight work may finish until `deadline`.
    Draining {
        /// When the remaining in-flight work is aborted; `None` when never (a grace period
        /// past the end of the clock).
        deadline: Option<Instant>,
    },
    /// Done: nothing is accepted, nothing is waited for.
    Stopped,
}

/// Proof that a unit of work was admitted; hand it back to [`Shutdown::on_work_finished`].
///
/// Not `Clone`, so one admission finishes at most once.
#[derive(Debug, PartialEq, Eq, Hash)]
#[must_use = "hand the ticket back to `Shutdown::on_work_finished` when the work ends"]
pub struct ShutdownPermit {
    id: u64,
}

impl ShutdownPermit {
    /// The sequence number of this admission (0 for the first), for logs.
    #[must_use]
    pub const fn id(&self) -> u64 {
        self.id
    }
}

/// What the caller must do after an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[must_use]
pub enum ShutdownDecision {
    /// Nothing changes.
    Continue,
    /// The drain delay started: report not ready now, keep accepting, and call
    /// [`Shutdown::handle_timeout`] at `until` (the drain starts then).
    Delay {
        /// When the drain starts; `None` when never by itself.
        until: Option<Instant>,
    },
    /// Stop accepting now; let in-flight work finish; call [`Shutdown::handle_timeout`] at
    /// `deadline`.
    Drain {
        /// When remaining work is aborted; `None` when never (a grace period past the end of
        /// the clock).
        deadline: Option<Instant>,
        /// Work in flight when the drain started.
        in_flight: u64,
    },
    /// The machine is stopped: cancel the `aborted` units of work still running (0 when the
    /// drain completed) and tear down.
    StopNow {
        /// Work still in flight, now counted as aborted.
        aborted: u64,
    },
}

/// A transition, for logs and metrics. See [`Shutdown::poll_event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ShutdownEvent {
    /// The drain delay started (a signal with a drain delay configured): not ready, still
    /// accepting.
    DelayStarted {
        /// When the drain starts; `None` when never by itself.
        until: Option<Instant>,
    },
    /// The drain started.
    DrainStarted {
        /// When remaining work will be aborted; `None` when never.
        deadline: Option<Instant>,
        /// Work in flight at that moment.
        in_flight: u64,
    },
    /// Every in-flight item finished before the deadline; the machine is stopped.
    Drained {
        /// Items that finished during the drain.
        completed: u64,
    },
    /// The deadline passed with work still in flight; the machine is stopped.
    DeadlineExceeded {
        /// Items still in flight, counted as aborted.
        aborted: u64,
    },
    /// A second signal or [`Shutdown::stop_now`] stopped the machine at once.
    ForcedStop {
        /// Items still in flight, counted as aborted.
        aborted: u64,
    },
}

/// Counters since the machine was created. See [`Shutdown::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ShutdownStats {
    /// Units of work admitted.
    pub started: u64,
    /// Units of work that finished (returned their ticket before the stop), not counting
    /// those that ended in a reset.
    pub completed: u64,
    /// Units of work that finished before the stop but ended in a reset (a connection whose
    /// lingering close hit its cap or deadline while the peer still sent, or failed).
    pub reset: u64,
    /// Units of work still in flight at the stop.
    pub aborted: u64,
    /// Units of work refused because the machine was draining or stopped.
    pub refused: u64,
    /// Units of work in flight now.
    pub in_flight: u64,
    /// Tickets returned after the stop (already counted in `aborted`).
    pub finished_after_stop: u64,
    /// Shutdown signals received.
    pub signals: u64,
}

/// What a shutdown achieved, for the final log line of a server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ShutdownSummary {
    /// Units of work that finished normally (over the whole life of the machine).
    pub completed: u64,
    /// Units of work that finished in a reset (never counted in `completed`).
    pub reset: u64,
    /// Units of work aborted at the stop.
    pub aborted: u64,
    /// Units of work refused while draining or stopped.
    pub refused: u64,
    /// Time from the start of the drain to the stop; `None` until stopped. A stop without
    /// a drain ([`Shutdown::stop_now`] while running) reports zero.
    pub drained_in: Option<Duration>,
}

impl fmt::Display for ShutdownSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "completed={} aborted={} refused={}",
            self.completed, self.aborted, self.refused
        )?;
        match self.drained_in {
            Some(d) => write!(f, " drained_in={d:?}"),
            None => f.write_str(" drained_in=-"),
        }
    }
}

/// The graceful-shutdown state machine. See the [module docs](self).
///
/// | group | methods |
/// | --- | --- |
/// | construct | [`new`](Self::new) |
/// | admission | [`try_acquire`](Self::try_acquire): a [`ShutdownPermit`] while running, else a [`Rejected`] |
/// | release (consumes the permit) | [`on_work_finished`](Self::on_work_finished), [`on_work_reset`](Self::on_work_reset) |
/// | other inputs | [`on_signal`](Self::on_signal) |
/// | timer | [`handle_timeout`](Self::handle_timeout), [`poll_timeout`](Self::poll_timeout) |
/// | commands | [`begin_drain`](Self::begin_drain), [`stop_now`](Self::stop_now) |
/// | outputs | [`poll_event`](Self::poll_event) |
/// | getters | [`state`](Self::state), [`is_accepting`](Self::is_accepting), [`is_ready`](Self::is_ready), [`is_delaying`](Self::is_delaying), [`is_draining`](Self::is_draining), [`is_stopped`](Self::is_stopped), [`in_flight`](Self::in_flight), [`stats`](Self::stats), [`summary`](Self::summary) |
///
/// After every input, drain [`poll_event`](Self::poll_event) and re-arm the timer from
/// [`poll_timeout`](Self::poll_timeout).
///
/// ```
/// use core::time::Duration;
/// use keel_core::shutdown::{Shutdown, ShutdownConfig, ShutdownDecision};
/// use keel_core::time::Instant;
///
/// let t0 = Instant::ZERO;
/// let config = ShutdownConfig::builder().grace_period(Duration::from_secs(10)).build()?;
/// let mut shutdown = Shutdown::new(config, t0);
/// let work = shutdown.try_acquire(t0).expect("serving");
/// let decision = shutdown.on_signal(t0);
/// assert!(matches!(
///     decision,
///     ShutdownDecision::Drain { deadline: Some(d), in_flight: 1 } if d == t0 + Duration::from_secs(10)
/// ));
/// assert!(shutdown.try_acquire(t0).is_err()); // no new work once draining
/// let _ = shutdown.on_work_finished(t0 + Duration::from_secs(1), work);
/// assert!(shutdown.is_stopped()); // the last one finished: drained
/// # Ok::<(), keel_core::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Shutdown {
    config: ShutdownConfig,
    clock: Monotonic,
    state: ShutdownState,
    drain_started: Option<Instant>,
    stopped_at: Option<Instant>,
    completed_at_drain: u64,
    stats: ShutdownStats,
    events: EventRing<ShutdownEvent, 3>,
}

impl Shutdown {
    /// A running machine.
    #[must_use]
    pub fn new(config: ShutdownConfig, now: Instant) -> Shutdown {
        Shutdown {
            config,
            clock: Monotonic::new(now),
            state: ShutdownState::Running,
            drain_started: None,
            stopped_at: None,
            completed_at_drain: 0,
            stats: ShutdownStats::default(),
            events: EventRing::new(),
        }
    }

    /// The configuration.
    #[must_use]
    pub const fn config(&self) -> &ShutdownConfig {
        &self.config
    }

    /// The current state.
    #[must_use]
    pub const fn state(&self) -> ShutdownState {
        self.state
    }

    /// `true` while running or in the drain delay: new work is admitted.
    #[must_use]
    pub const fn is_accepting(&self) -> bool {
        matches!(
            self.state,
            ShutdownState::Running | ShutdownState::Delaying { .. }
        )
    }

    /// `true` only while running and no signal has arrived: what a readiness probe should
    /// report. `false` from the first signal on, through the drain delay (while work is still
    /// admitted), the drain and the stop.
    #[must_use]
    pub const fn is_ready(&self) -> bool {
        matches!(self.state, ShutdownState::Running)
    }

    /// `true` during the drain delay.
    #[must_use]
    pub const fn is_delaying(&self) -> bool {
        matches!(self.state, ShutdownState::Delaying { .. })
    }

    /// `true` while draining.
    #[must_use]
    pub const fn is_draining(&self) -> bool {
        matches!(self.state, ShutdownState::Draining { .. })
    }

    /// `true` once stopped.
    #[must_use]
    pub const fn is_stopped(&self) -> bool {
        matches!(self.state, ShutdownState::Stopped)
    }

    /// Units of work in flight.
    #[must_use]
    pub const fn in_flight(&self) -> u64 {
        self.stats.in_flight
    }

    /// Counters.
    #[must_use]
    pub const fn stats(&self) -> ShutdownStats {
        self.stats
    }

    /// What the shutdown achieved so far (final once stopped).
    #[must_use]
    pub fn summary(&self) -> ShutdownSummary {
        let drained_in = match (self.stopped_at, self.drain_started) {
            (Some(stop), Some(start)) => Some(stop.saturating_duration_since(start)),
            (Some(_), None) => Some(Duration::ZERO),
            _ => None,
        };
        ShutdownSummary {
            completed: self.stats.completed,
            reset: self.stats.reset,
            aborted: self.stats.aborted,
            refused: self.stats.refused,
            drained_in,
        }
    }

    /// A unit of work wants to start. Admitted only while running: hand the permit back with
    /// [`on_work_finished`](Self::on_work_finished) (or
    /// [`on_work_reset`](Self::on_work_reset)). While draining or stopped the rejection's
    /// `reason` is the state (do not start the work: close the connection, answer 503, ...) and
    /// its `retry_at` is `None`: a shutdown never accepts again.
    pub fn try_acquire(&mut self, now: Instant) -> Result<ShutdownPermit, Rejected<ShutdownState>> {
        self.clock.observe(now);
        if self.is_accepting() {
            let id = self.stats.started;
            self.stats.started = self.stats.started.saturating_add(1);
            self.stats.in_flight = self.stats.in_flight.saturating_add(1);
            Ok(ShutdownPermit { id })
        } else {
            self.stats.refused = self.stats.refused.saturating_add(1);
            Err(Rejected {
                reason: self.state,
                retry_at: None,
            })
        }
    }

    /// A unit of work ended (successfully or not: it is no longer running).
    ///
    /// Returns [`ShutdownDecision::StopNow`] `{ aborted: 0 }` when this was the last item of a
    /// drain, [`ShutdownDecision::Continue`] otherwise. After the stop, tickets are ignored.
    pub fn on_work_finished(&mut self, now: Instant, ticket: ShutdownPermit) -> ShutdownDecision {
        self.work_ended(now, ticket, false)
    }

    /// A unit of work ended, but in a reset (e.g. a connection whose reply may not have been
    /// delivered): exactly as [`on_work_finished`](Self::on_work_finished), counted in `reset`
    /// instead of `completed`.
    pub fn on_work_reset(&mut self, now: Instant, ticket: ShutdownPermit) -> ShutdownDecision {
        self.work_ended(now, ticket, true)
    }

    fn work_ended(
        &mut self,
        now: Instant,
        ticket: ShutdownPermit,
        reset: bool,
    ) -> ShutdownDecision {
        let _ = ticket;
        let now = self.clock.observe(now);
        if self.is_stopped() {
            self.stats.finished_after_stop = self.stats.finished_after_stop.saturating_add(1);
            return ShutdownDecision::Continue;
        }
        self.stats.in_flight = self.stats.in_flight.saturating_sub(1);
        let counter = if reset {
            &mut self.stats.reset
        } else {
            &mut self.stats.completed
        };
        *counter = counter.saturating_add(1);
        if self.is_draining() && self.stats.in_flight == 0 {
            self.finish_drain(now);
            return ShutdownDecision::StopNow { aborted: 0 };
        }
        ShutdownDecision::Continue
    }

    /// A shutdown signal (SIGTERM, SIGINT, Ctrl-C). The first starts the drain delay if one
    /// is configured ([`ShutdownDecision::Delay`]), else the drain, exactly as
    /// [`begin_drain`](Self::begin_drain); a second one (during the delay or the drain) stops
    /// at once, exactly as [`stop_now`](Self::stop_now). Once stopped, signals change nothing.
    pub fn on_signal(&mut self, now: Instant) -> ShutdownDecision {
        self.stats.signals = self.stats.signals.saturating_add(1);
        match self.state {
            ShutdownState::Running if !self.config.drain_delay.is_zero() => {
                let now = self.clock.observe(now);
                // A delay to the end of the clock never ends by itself: `None`.
                let until =
                    crate::time::never_at_the_end(now.saturating_add(self.config.drain_delay));
                self.state = ShutdownState::Delaying { until };
                self.push_event(ShutdownEvent::DelayStarted { until });
                ShutdownDecision::Delay { until }
            }
            ShutdownState::Running => self.begin_drain(now),
            ShutdownState::Delaying { .. } | ShutdownState::Draining { .. } => self.stop_now(now),
            ShutdownState::Stopped => {
                self.clock.observe(now);
                ShutdownDecision::Continue
            }
        }
    }

    /// Starts the drain: refuse new work at once, give in-flight work until
    /// `now + grace_period`. If nothing is in flight the machine stops at once
    /// ([`ShutdownDecision::StopNow`] `{ aborted: 0 }`). No drain delay applies (it belongs to
    /// signals); during the delay, this cuts it short. Idempotent: while draining or stopped it
    /// returns [`ShutdownDecision::Continue`].
    pub fn begin_drain(&mut self, now: Instant) -> ShutdownDecision {
        let now = self.clock.observe(now);
        if !self.is_accepting() {
            return ShutdownDecision::Continue;
        }
        // A deadline at the end of the clock (the sum saturated) never comes: `None`.
        let deadline = crate::time::never_at_the_end(now.saturating_add(self.config.grace_period));
        let in_flight = self.stats.in_flight;
        self.drain_started = Some(now);
        self.completed_at_drain = self.stats.completed;
        self.state = ShutdownState::Draining { deadline };
        self.push_event(ShutdownEvent::DrainStarted {
            deadline,
            in_flight,
        });
        if in_flight == 0 {
            self.finish_drain(now);
            return ShutdownDecision::StopNow { aborted: 0 };
        }
        ShutdownDecision::Drain {
            deadline,
            in_flight,
        }
    }

    /// Stops at once, from any state: the work in flight is counted as aborted and returned in
    /// [`ShutdownDecision::StopNow`]. Once stopped, returns [`ShutdownDecision::Continue`].
    pub fn stop_now(&mut self, now: Instant) -> ShutdownDecision {
        let now = self.clock.observe(now);
        if self.is_stopped() {
            return ShutdownDecision::Continue;
        }
        let aborted = self.abort_all(now);
        self.push_event(ShutdownEvent::ForcedStop { aborted });
        ShutdownDecision::StopNow { aborted }
    }

    /// Advances the timers: at or after the end of the drain delay, the drain starts (as
    /// [`begin_drain`](Self::begin_drain): [`ShutdownEvent::DrainStarted`], and a stop at once
    /// if nothing is in flight; read [`is_accepting`](Self::is_accepting) or the events to
    /// close the listener); at or after the drain deadline, the machine stops and the work still
    /// in flight is counted as aborted ([`ShutdownEvent::DeadlineExceeded`]). Early or spurious
    /// calls are no-ops.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.observe(now);
        if let ShutdownState::Delaying { until: Some(until) } = self.state {
            if now >= until {
                let _ = self.begin_drain(now);
            }
            return;
        }
        if let ShutdownState::Draining {
            deadline: Some(deadline),
        } = self.state
        {
            if now >= deadline {
                let aborted = self.abort_all(now);
                self.push_event(ShutdownEvent::DeadlineExceeded { aborted });
            }
        }
    }

    /// The end of the drain delay while delaying, the drain deadline while draining; `None`
    /// otherwise, and when the delay or the drain has no end (past the end of the clock; see
    /// the [module docs](self)).
    #[must_use]
    pub const fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            ShutdownState::Delaying { until } => until,
            ShutdownState::Draining { deadline } => deadline,
            _ => None,
        }
    }

    /// The next transition, oldest first. A machine emits at most three in its life:
    /// [`ShutdownEvent::DelayStarted`] (with a drain delay), [`ShutdownEvent::DrainStarted`],
    /// then one of `Drained`, `DeadlineExceeded` or `ForcedStop` (any prefix may be missing:
    /// `ForcedStop` alone after `stop_now` while running).
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ShutdownEvent> {
        self.events.pop()
    }

    fn finish_drain(&mut self, now: Instant) {
        let completed = self.stats.completed.saturating_sub(self.completed_at_drain);
        self.state = ShutdownState::Stopped;
        self.stopped_at = Some(now);
        self.push_event(ShutdownEvent::Drained { completed });
    }

    fn abort_all(&mut self, now: Instant) -> u64 {
        let aborted = self.stats.in_flight;
        self.stats.aborted = self.stats.aborted.saturating_add(aborted);
        self.stats.in_flight = 0;
        self.state = ShutdownState::Stopped;
        self.stopped_at = Some(now);
        aborted
    }

    fn push_event(&mut self, ev: ShutdownEvent) {
        // At most three events are ever produced (DelayStarted, DrainStarted, then one stop),
        // so a slot is always free.
        let lost = self.events.push(ev);
        debug_assert!(lost.is_none(), "a shutdown machine produced a third event");
    }
}
