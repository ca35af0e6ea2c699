//! The circuit breaker ([`keel_core::breaker::CircuitBreaker`]) as its docs define it, written
//! the obvious way: the count window is a list of the last `size` outcomes and every rate is
//! recomputed from it.
//!
//! - **Closed** admits everything. A current-generation success or failure extends the run of
//!   failures (a success ends it) and, when a rate policy is on, joins the window. The breaker
//!   trips when the run reaches `consecutive_failures`, or, once the window holds
//!   `minimum_calls`, when `failures × 100 ≥ failure_rate × calls` (or the same for slow calls).
//!   A call is slow when it ran (`now - admitted_at`, on the clamped clock) at least the
//!   slow-call threshold.
//! - **Open** rejects with `retry_at` = the end of the open duration (`now + open_duration`,
//!   saturating at `Instant::MAX`); at that instant any input turns it **half-open**.
//! - **HalfOpen** admits `permitted_calls_in_half_open` probes (an ignored probe frees its slot);
//!   that many successes close it, one failure (or a slow probe, with the slow-call policy on)
//!   trips it again; with `max_wait_in_half_open` it trips when the wait ends, and a rejection
//!   names that instant.
//! - **ForcedOpen** rejects with no instant; **Disabled** admits and judges nothing.
//! - Every transition (and a `reset` from Closed) starts a new generation and clears the run
//!   and the window; an outcome with an older generation's permit is only counted as stale.
//!   `reset` also forgets the trips in a row.
//! - An abandoned call is a failure once it ran the abandon threshold, else ignored; it counts
//!   as an abandoned failure when its permit was current before the timers ran.
//! - Every input clamps `now` to the newest seen; inputs other than `try_acquire` in Closed or
//!   Disabled and `force_open`/`disable`/`reset` first run the due timers (and an outcome runs
//!   them again after it, for a trip that is already due).
//!
//! What the model deliberately leaves out ([`BreakerModel::new`] returns `None` for such a
//! config): **time windows** (buckets aligned to the breaker's start) and the **exponential
//! open duration** (its growth and jitter are the backoff's, checked by
//! [`backoff`](super::backoff)). It does not queue events: a harness checks the event stream
//! itself.
//!
//! ```
//! use std::time::Duration;
//! use keel_core::breaker::{BreakerConfig, CircuitBreaker, Outcome};
//! use keel_core::time::Instant;
//! use keel_testkit::models::breaker::BreakerModel;
//!
//! let config = BreakerConfig::consecutive_failures(1)
//!     .open_duration(Duration::from_secs(1))
//!     .build()?;
//! let mut breaker = CircuitBreaker::new(config, Instant::ZERO);
//! let mut model = BreakerModel::new(&config, Instant::ZERO).expect("a count window, fixed open");
//! let permit = breaker.try_acquire(Instant::ZERO).expect("closed");
//! let modelled = model.try_acquire(Instant::ZERO).expect("closed");
//! breaker.on_failure(Instant::ZERO, permit);
//! model.on_outcome(Instant::ZERO, modelled, Outcome::Failure);
//! assert_eq!(model.check(&breaker.stats(), breaker.poll_timeout()), Ok(()));
//! # Ok::<(), keel_core::ConfigError>(())
//! ```

use std::collections::VecDeque;
use std::string::String;

use keel_core::breaker::{
    BreakerConfig, BreakerStats, OpenDuration, Outcome, SlidingWindow, State,
};
use keel_core::time::{duration_to_nanos, Instant};

/// What the model knows of a permit it handed out: its generation and admission instant (the
/// machine's `BreakerPermit::generation()` and `admitted_at()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelPermit {
    /// The generation the permit was issued in.
    pub generation: u64,
    /// The (clamped) instant of admission.
    pub admitted_at: Instant,
}

/// The model's state; the instants are the machine's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelState {
    /// Closed.
    Closed,
    /// Open until this instant.
    Open {
        /// The end of the open duration.
        until: Instant,
    },
    /// Half-open since this instant, with probe slots used and successes so far.
    HalfOpen {
        /// When it went half-open.
        since: Instant,
        /// Probe slots taken (in flight or succeeded).
        used: u32,
        /// Probes that succeeded.
        successes: u32,
    },
    /// Forced open.
    Forced,
    /// Disabled.
    Disabled,
}

impl ModelState {
    /// The public state.
    #[must_use]
    pub fn state(self) -> State {
        match self {
            ModelState::Closed => State::Closed,
            ModelState::Open { .. } => State::Open,
            ModelState::HalfOpen { .. } => State::HalfOpen,
            ModelState::Forced => State::ForcedOpen,
            ModelState::Disabled => State::Disabled,
        }
    }
}

/// The counters the model keeps, named as in [`BreakerStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModelCounters {
    /// `admitted`.
    pub admitted: u64,
    /// `rejected`.
    pub rejected: u64,
    /// `successes`.
    pub successes: u64,
    /// `failures`.
    pub failures: u64,
    /// `ignored`.
    pub ignored: u64,
    /// `slow`.
    pub slow: u64,
    /// `stale_outcomes`.
    pub stale_outcomes: u64,
    /// `abandoned`.
    pub abandoned: u64,
    /// `abandoned_failures`.
    pub abandoned_failures: u64,
    /// `transitions`.
    pub transitions: u64,
    /// `opened_count`.
    pub opened_count: u64,
}

/// The reference model of a circuit breaker. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct BreakerModel {
    consecutive_threshold: Option<u32>,
    /// The count window's size; `None` when no rate policy is on (no window).
    window_size: Option<usize>,
    minimum_calls: u64,
    failure_rate: Option<u8>,
    slow_rate: Option<u8>,
    slow_nanos: u128,
    open_nanos: u64,
    probes: u32,
    max_wait: Option<core::time::Duration>,
    abandon: core::time::Duration,
    newest: Instant,
    state: ModelState,
    generation: u64,
    consecutive: u32,
    trips_in_a_row: u32,
    /// The window: `(failed, slow)` per outcome, oldest first.
    window: VecDeque<(bool, bool)>,
    counters: ModelCounters,
}

impl BreakerModel {
    /// The model of `CircuitBreaker::new(*config, start)`; `None` for a time window or an
    /// exponential open duration (see the [module docs](self)).
    #[must_use]
    pub fn new(config: &BreakerConfig, start: Instant) -> Option<Self> {
        let SlidingWindow::Count { size } = config.sliding_window() else {
            return None;
        };
        let OpenDuration::Fixed(open) = config.open_duration() else {
            return None;
        };
        let rates = config.failure_rate_threshold().is_some()
            || config.slow_call_rate_threshold().is_some();
        Some(BreakerModel {
            consecutive_threshold: config.consecutive_failures_threshold(),
            window_size: rates.then_some(size as usize),
            minimum_calls: u64::from(config.minimum_calls()),
            failure_rate: config.failure_rate_threshold(),
            slow_rate: config.slow_call_rate_threshold(),
            slow_nanos: config.slow_call_duration_threshold().as_nanos(),
            open_nanos: duration_to_nanos(open),
            probes: config.permitted_calls_in_half_open(),
            max_wait: config.max_wait_in_half_open(),
            abandon: config.abandon_threshold(),
            newest: start,
            state: ModelState::Closed,
            generation: 0,
            consecutive: 0,
            trips_in_a_row: 0,
            window: VecDeque::new(),
            counters: ModelCounters::default(),
        })
    }

    /// The newest instant seen (what every input clamps to).
    #[must_use]
    pub fn newest(&self) -> Instant {
        self.newest
    }

    /// The state.
    #[must_use]
    pub fn state(&self) -> ModelState {
        self.state
    }

    /// The current generation.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The counters.
    #[must_use]
    pub fn counters(&self) -> ModelCounters {
        self.counters
    }

    /// The window's `(calls, failures, slow)`.
    #[must_use]
    pub fn window(&self) -> (u64, u64, u64) {
        let calls = self.window.len() as u64;
        let failures = self.window.iter().filter(|o| o.0).count() as u64;
        let slow = self.window.iter().filter(|o| o.1).count() as u64;
        (calls, failures, slow)
    }

    fn observe(&mut self, now: Instant) -> Instant {
        self.newest = self.newest.max(now);
        self.newest
    }

    fn go(&mut self, to: ModelState) {
        self.state = to;
        self.generation = self.generation.wrapping_add(1);
        self.consecutive = 0;
        self.window.clear();
        self.counters.transitions += 1;
    }

    fn trip(&mut self) {
        self.trips_in_a_row = self.trips_in_a_row.saturating_add(1);
        self.counters.opened_count += 1;
        let until = Instant::from_nanos(self.newest.as_nanos().saturating_add(self.open_nanos));
        self.go(ModelState::Open { until });
    }

    fn close(&mut self) {
        self.trips_in_a_row = 0;
        self.go(ModelState::Closed);
    }

    /// The half-open deadline, if `max_wait_in_half_open` is set.
    fn half_open_deadline(&self, since: Instant) -> Option<Instant> {
        self.max_wait.map(|w| since.saturating_add(w))
    }

    /// Runs the due timers at the newest instant: Open → HalfOpen at the end of the open
    /// duration, HalfOpen → Open at the end of the maximum wait (each at most once more when
    /// durations saturate at the end of the clock).
    fn run_timers(&mut self) {
        let now = self.newest;
        for _ in 0..3 {
            match self.state {
                ModelState::Open { until } if now >= until => self.go(ModelState::HalfOpen {
                    since: now,
                    used: 0,
                    successes: 0,
                }),
                ModelState::HalfOpen { since, .. }
                    if self.half_open_deadline(since).is_some_and(|d| now >= d) =>
                {
                    self.trip();
                }
                _ => break,
            }
        }
    }

    /// Clamps `now` and runs the due timers (`handle_timeout(now)`).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.observe(now);
        self.run_timers();
    }

    /// `try_acquire(now)`: the permit, or the rejection's `retry_at` (its reason is
    /// [`state`](Self::state)`().state()`).
    pub fn try_acquire(&mut self, now: Instant) -> Result<ModelPermit, Option<Instant>> {
        self.handle_timeout(now);
        let permit = ModelPermit {
            generation: self.generation,
            admitted_at: self.newest,
        };
        let deadline = match self.state {
            ModelState::HalfOpen { since, .. } => self.half_open_deadline(since),
            _ => None,
        };
        let result = match &mut self.state {
            ModelState::Closed | ModelState::Disabled => Ok(permit),
            ModelState::HalfOpen { used, .. } if *used < self.probes => {
                *used += 1;
                Ok(permit)
            }
            ModelState::HalfOpen { .. } => Err(deadline),
            ModelState::Open { until } => Err(Some(*until)),
            ModelState::Forced => Err(None),
        };
        match result {
            Ok(_) => self.counters.admitted += 1,
            Err(_) => self.counters.rejected += 1,
        }
        result
    }

    /// `on_outcome(now, permit, outcome)` (and `on_success`, `on_failure`, `on_ignored`).
    pub fn on_outcome(&mut self, now: Instant, permit: ModelPermit, outcome: Outcome) {
        self.handle_timeout(now);
        if permit.generation != self.generation {
            self.counters.stale_outcomes += 1;
            return;
        }
        let failed = match outcome {
            Outcome::Ignored => {
                self.counters.ignored += 1;
                if let ModelState::HalfOpen { used, .. } = &mut self.state {
                    *used = used.saturating_sub(1);
                }
                return;
            }
            Outcome::Success => {
                self.counters.successes += 1;
                false
            }
            Outcome::Failure => {
                self.counters.failures += 1;
                true
            }
        };
        let ran = self
            .newest
            .as_nanos()
            .saturating_sub(permit.admitted_at.as_nanos());
        let slow = u128::from(ran) >= self.slow_nanos;
        if slow {
            self.counters.slow += 1;
        }
        match self.state {
            ModelState::Closed => self.judge(failed, slow),
            ModelState::HalfOpen {
                since,
                used,
                successes,
            } => {
                if failed || (slow && self.slow_rate.is_some()) {
                    self.trip();
                } else if successes.saturating_add(1) >= self.probes {
                    self.close();
                } else {
                    self.state = ModelState::HalfOpen {
                        since,
                        used,
                        successes: successes + 1,
                    };
                }
            }
            ModelState::Open { .. } | ModelState::Forced | ModelState::Disabled => {}
        }
        // A trip already due (an open duration saturated at the end of the clock).
        self.run_timers();
    }

    fn judge(&mut self, failed: bool, slow: bool) {
        self.consecutive = if failed {
            self.consecutive.saturating_add(1)
        } else {
            0
        };
        if let Some(size) = self.window_size {
            self.window.push_back((failed, slow));
            if self.window.len() > size {
                self.window.pop_front();
            }
        }
        if self
            .consecutive_threshold
            .is_some_and(|n| self.consecutive >= n)
        {
            self.trip();
            return;
        }
        let (calls, failures, slows) = self.window();
        if self.window_size.is_none() || calls < self.minimum_calls {
            return;
        }
        let over = |n: u64, t: Option<u8>| {
            t.is_some_and(|t| u128::from(n) * 100 >= u128::from(t) * u128::from(calls))
        };
        if over(failures, self.failure_rate) || over(slows, self.slow_rate) {
            self.trip();
        }
    }

    /// `on_abandoned(now, permit)`: the outcome recorded (a failure once the call ran the
    /// abandon threshold, else ignored).
    pub fn on_abandoned(&mut self, now: Instant, permit: ModelPermit) -> Outcome {
        // The rule as a deadline: the call turned into a failure at `admitted_at + abandon`
        // (never, past the end of time); abandoned at or after it, on the clamped clock, it is
        // one, sooner it is ignored. Whether it is an abandoned failure is judged on the
        // permit's generation before the timers run.
        let failure_from = permit.admitted_at.checked_add(self.abandon);
        let failed = failure_from.is_some_and(|t| now.max(self.newest) >= t);
        let current = permit.generation == self.generation;
        self.counters.abandoned += 1;
        self.counters.abandoned_failures += u64::from(failed && current);
        let outcome = if failed {
            Outcome::Failure
        } else {
            Outcome::Ignored
        };
        self.on_outcome(now, permit, outcome);
        outcome
    }

    /// `force_open(now)` (no timers run).
    pub fn force_open(&mut self, now: Instant) {
        self.observe(now);
        if self.state != ModelState::Forced {
            self.go(ModelState::Forced);
        }
    }

    /// `disable(now)` (no timers run).
    pub fn disable(&mut self, now: Instant) {
        self.observe(now);
        if self.state != ModelState::Disabled {
            self.go(ModelState::Disabled);
        }
    }

    /// `reset(now)`: from Closed a new generation without a transition, else a transition to
    /// Closed; the trips in a row are forgotten either way.
    pub fn reset(&mut self, now: Instant) {
        self.observe(now);
        if self.state == ModelState::Closed {
            self.generation = self.generation.wrapping_add(1);
            self.consecutive = 0;
            self.window.clear();
            self.trips_in_a_row = 0;
        } else {
            self.close();
        }
    }

    /// What `poll_timeout()` must return: the end of the open duration or the half-open
    /// deadline, if later than the newest instant seen.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let t = match self.state {
            ModelState::Open { until } => Some(until),
            ModelState::HalfOpen { since, .. } => self.half_open_deadline(since),
            _ => None,
        };
        t.filter(|t| *t > self.newest)
    }

    /// Compares the machine's `stats()` and `poll_timeout()` with the model: every field but
    /// `events_dropped` (the model keeps no event queue). `Err` names the first difference.
    ///
    /// # Errors
    ///
    /// A message naming the field that differs and both values.
    pub fn check(&self, s: &BreakerStats, poll_timeout: Option<Instant>) -> Result<(), String> {
        let c = self.counters;
        let (calls, failures, slows) = self.window();
        let judged = self.window_size.is_some() && calls >= self.minimum_calls && calls > 0;
        let rate =
            |n: u64| judged.then(|| (u128::from(n) * 100 / u128::from(calls)).min(100) as u8);
        let probes = match self.state {
            ModelState::HalfOpen { used, .. } => used,
            _ => 0,
        };
        macro_rules! same {
            ($($field:literal: $machine:expr, $model:expr;)*) => {$(
                if $machine != $model {
                    return Err(format!(
                        "{}: the machine has {:?}, the model {:?} (model state {:?})",
                        $field, $machine, $model, self.state
                    ));
                }
            )*};
        }
        same! {
            "state": s.state, self.state.state();
            "generation": s.generation, self.generation;
            "admitted": s.admitted, c.admitted;
            "rejected": s.rejected, c.rejected;
            "successes": s.successes, c.successes;
            "failures": s.failures, c.failures;
            "ignored": s.ignored, c.ignored;
            "slow": s.slow, c.slow;
            "stale_outcomes": s.stale_outcomes, c.stale_outcomes;
            "abandoned": s.abandoned, c.abandoned;
            "abandoned_failures": s.abandoned_failures, c.abandoned_failures;
            "transitions": s.transitions, c.transitions;
            "opened_count": s.opened_count, c.opened_count;
            "trips_in_a_row": s.trips_in_a_row, self.trips_in_a_row;
            "consecutive_failures": s.consecutive_failures, self.consecutive;
            "probes_in_use": s.probes_in_use, probes;
            "window_calls": s.window_calls, calls;
            "window_failures": s.window_failures, failures;
            "window_slow": s.window_slow, slows;
            "failure_rate_percent": s.failure_rate_percent, rate(failures);
            "slow_call_rate_percent": s.slow_call_rate_percent, rate(slows);
            "poll_timeout": poll_timeout, self.poll_timeout();
        }
        Ok(())
    }
}
