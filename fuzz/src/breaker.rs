//! The circuit breaker: half-open admits at most `permitted_calls_in_half_open` probes (net of
//! ignored ones), open rejects until a time within the configured open duration, forced-open
//! rejects everything, closed and disabled admit everything, stale outcomes change nothing,
//! counters balance, timers never spin; an abandoned call is a failure exactly when it ran the
//! abandon threshold; the transitions, fed to a report limiter as the driver does, are
//! reported at most once per interval and every one is counted once.
//!
//! For the configurations its reference model covers (`keel_testkit::models::breaker`, shared
//! with the proptests: a count window and a fixed open duration), the breaker also matches the
//! model on every admission, retry instant, recorded outcome, counter, window and timer.
//!
//! A [`SharedBreaker`] twin gets every input too and must decide exactly as the machine: every
//! admission, rejection and permit, abandoned outcome, state, stats snapshot, timer and event
//! (its lock-free closed path, the quiet window's lock-free success included, is the machine's
//! decision on one thread).

use core::time::Duration;

use arbitrary::Arbitrary;
use keel_core::backoff::Jitter;
use keel_core::breaker::{
    BreakerConfig, BreakerEvent, BreakerPermit, CircuitBreaker, OpenDuration, Outcome, State,
    EVENT_QUEUE_CAPACITY,
};
use keel_core::report::{Report, ReportLimiter};
use keel_core::sync::breaker::SharedBreaker;
use keel_core::time::Instant;
use keel_testkit::models::breaker::{BreakerModel, ModelPermit};

use crate::common::{Clock, Dur, Timed};

/// One input.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Op {
    /// `try_acquire`.
    Acquire,
    /// `on_success` for the held permit at this index.
    Success(u8),
    /// `on_failure` for the held permit at this index.
    Failure(u8),
    /// `on_ignored` for the held permit at this index.
    Ignored(u8),
    /// `on_abandoned` for the held permit at this index.
    Abandoned(u8),
    /// `handle_timeout(now)`.
    Timeout,
    /// Jump to `poll_timeout()` and handle it.
    WaitOut,
    /// `force_open`.
    ForceOpen,
    /// `disable`.
    Disable,
    /// `reset`.
    Reset,
    /// Drain the events.
    Poll,
}

/// The sliding window.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Window {
    /// Count-based.
    Count(u16),
    /// Time-based.
    Time(u16, Dur),
    /// The default.
    Default,
}

/// The open duration.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Open {
    /// Fixed.
    Fixed(Dur),
    /// Exponential with jitter.
    Exponential(Dur, u32, Dur, u8),
}

/// The configuration.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct Config {
    consecutive: Option<u32>,
    window: Window,
    minimum_calls: Option<u16>,
    failure_rate: Option<u8>,
    slow_rate: Option<u8>,
    slow_duration: Option<Dur>,
    open: Open,
    permitted: u8,
    max_wait: Option<Dur>,
    abandon: Option<Dur>,
    report_interval: Dur,
    seed: u64,
}

/// The breaker and what the harness knows about it.
pub struct Harness {
    b: CircuitBreaker,
    /// The shared form of the same breaker, given the same inputs.
    shared: SharedBreaker,
    permitted: u32,
    max_open: Duration,
    held: Vec<BreakerPermit>,
    acquires: u64,
    outcomes: u64,
    /// Admissions and ignored outcomes in the current generation.
    gen: u64,
    admitted_in_gen: u64,
    ignored_in_gen: u64,
    /// The transitions' log limiter, as the driver uses it, and what the harness saw of it.
    reports: ReportLimiter,
    last_report: Option<Instant>,
    transitions_seen: u64,
    emitted: u64,
    carried: u64,
    /// The reference model, when it covers the config (a count window, a fixed open duration).
    model: Option<BreakerModel>,
}

impl Harness {
    /// `None` when the builder rejects the config.
    pub fn new(c: &Config, start: Instant) -> Option<Harness> {
        let mut b = BreakerConfig::builder().seed(c.seed);
        if let Some(n) = c.consecutive {
            b = b.consecutive_failures(n % 64);
        }
        b = match c.window {
            Window::Count(n) => b.count_window(u32::from(n)),
            Window::Time(n, w) => b.time_window(u32::from(n), w.get()),
            Window::Default => b,
        };
        if let Some(n) = c.minimum_calls {
            b = b.minimum_calls(u32::from(n));
        }
        b = match c.failure_rate {
            Some(p) => b.failure_rate_threshold(p),
            None => b.disable_failure_rate(),
        };
        b = match c.slow_rate {
            Some(p) => b.slow_call_rate_threshold(p),
            None => b.disable_slow_call_rate(),
        };
        if let Some(d) = c.slow_duration {
            b = b.slow_call_duration_threshold(d.get());
        }
        b = match c.open {
            Open::Fixed(d) => b.open_duration(d.get()),
            Open::Exponential(base, factor, cap, j) => b.exponential_open_duration(
                base.get(),
                factor,
                cap.get(),
                match j % 3 {
                    0 => Jitter::None,
                    1 => Jitter::Full,
                    _ => Jitter::Equal,
                },
            ),
        };
        b = b.permitted_calls_in_half_open(u32::from(c.permitted));
        if let Some(d) = c.max_wait {
            b = b.max_wait_in_half_open(d.get());
        }
        if let Some(d) = c.abandon {
            b = b.abandon_threshold(d.get());
        }
        let config = b.build().ok()?;
        let max_open = match config.open_duration() {
            OpenDuration::Fixed(d) => d,
            OpenDuration::Exponential { cap, .. } => cap,
        };
        Some(Harness {
            model: BreakerModel::new(&config, start),
            b: CircuitBreaker::new(config, start),
            shared: SharedBreaker::new(config, start),
            permitted: config.permitted_calls_in_half_open(),
            max_open,
            held: Vec::new(),
            acquires: 0,
            outcomes: 0,
            gen: 0,
            admitted_in_gen: 0,
            ignored_in_gen: 0,
            reports: ReportLimiter::new(c.report_interval.get(), start),
            last_report: None,
            transitions_seen: 0,
            emitted: 0,
            carried: 0,
        })
    }

    fn take(&mut self, i: u8) -> Option<BreakerPermit> {
        if self.held.is_empty() {
            None
        } else {
            Some(self.held.swap_remove(usize::from(i) % self.held.len()))
        }
    }

    /// Applies `op` at `now` and checks the invariants.
    pub fn apply(&mut self, clock: &mut Clock, now: Instant, op: Op) {
        match op {
            Op::Acquire => {
                self.acquires += 1;
                let r = self.b.try_acquire(now);
                assert_eq!(
                    self.shared.try_acquire(now),
                    r,
                    "the shared form decided otherwise"
                );
                if let Some(m) = &mut self.model {
                    match (&r, m.try_acquire(now)) {
                        (Ok(p), Ok(mp)) => {
                            assert_eq!(model_permit(p), mp, "admitted unlike the model");
                        }
                        (Err(rej), Err(retry)) => {
                            assert_eq!(rej.retry_at, retry, "retry instant unlike the model's");
                            assert_eq!(rej.reason, m.state().state());
                        }
                        (r, m) => panic!("the machine says {r:?}, the model {m:?}"),
                    }
                }
                let state = self.b.state();
                let newest = clock.newest();
                self.sync_gen();
                match r {
                    Ok(p) => {
                        assert!(
                            matches!(state, State::Closed | State::Disabled | State::HalfOpen),
                            "admitted while {state:?}"
                        );
                        assert_eq!(p.generation(), self.gen);
                        assert_eq!(p.admitted_at(), newest);
                        self.admitted_in_gen += 1;
                        if self.held.len() < 256 {
                            self.held.push(p);
                        }
                    }
                    Err(rej) => {
                        assert_eq!(rej.reason, state);
                        match state {
                            State::Open => {
                                let t = rej.retry_at.expect("open rejects with a retry time");
                                // At the end of time an open duration can never end:
                                // `retry_at == Instant::MAX == now` is the only honest answer.
                                assert!(
                                    t > newest || newest == Instant::MAX,
                                    "open but its time has come"
                                );
                                assert!(t - newest <= self.max_open, "open longer than the cap");
                            }
                            State::ForcedOpen => assert_eq!(rej.retry_at, None),
                            State::HalfOpen => {
                                assert!(
                                    self.admitted_in_gen - self.ignored_in_gen
                                        >= u64::from(self.permitted),
                                    "half-open rejected with a free probe slot"
                                );
                            }
                            State::Closed | State::Disabled => panic!("rejected while {state:?}"),
                        }
                    }
                }
            }
            Op::Abandoned(i) => {
                let Some(p) = self.take(i) else {
                    clock.unseen();
                    return;
                };
                self.outcomes += 1;
                let current = p.generation() == self.b.stats().generation;
                let before = self.b.stats();
                let ran = clock.newest().saturating_duration_since(p.admitted_at());
                let outcome = self.b.on_abandoned(now, p);
                assert_eq!(self.shared.on_abandoned(now, p), outcome);
                if let Some(m) = &mut self.model {
                    assert_eq!(m.on_abandoned(now, model_permit(&p)), outcome);
                }
                let after = self.b.stats();
                let threshold = self.b.config().abandon_threshold();
                let want = if ran >= threshold {
                    Outcome::Failure
                } else {
                    Outcome::Ignored
                };
                assert_eq!(
                    outcome, want,
                    "abandoned after {ran:?}, threshold {threshold:?}"
                );
                assert_eq!(after.abandoned, before.abandoned + 1);
                let counted = u64::from(current && outcome == Outcome::Failure);
                assert_eq!(
                    after.abandoned_failures,
                    before.abandoned_failures + counted
                );
                if current && outcome == Outcome::Ignored && p.generation() == after.generation {
                    self.ignored_in_gen += 1;
                }
            }
            Op::Success(i) | Op::Failure(i) | Op::Ignored(i) => {
                let Some(p) = self.take(i) else {
                    clock.unseen();
                    return;
                };
                self.outcomes += 1;
                let current = p.generation() == self.b.stats().generation;
                let before = self.b.stats();
                if let Some(m) = &mut self.model {
                    let outcome = match op {
                        Op::Success(_) => Outcome::Success,
                        Op::Failure(_) => Outcome::Failure,
                        _ => Outcome::Ignored,
                    };
                    m.on_outcome(now, model_permit(&p), outcome);
                }
                match op {
                    Op::Success(_) => {
                        self.b.on_success(now, p);
                        self.shared.on_success(now, p);
                    }
                    Op::Failure(_) => {
                        self.b.on_failure(now, p);
                        self.shared.on_failure(now, p);
                    }
                    _ => {
                        self.b.on_ignored(now, p);
                        self.shared.on_ignored(now, p);
                        if current && p.generation() == self.b.stats().generation {
                            self.ignored_in_gen += 1;
                        }
                    }
                }
                let after = self.b.stats();
                if !current && before.generation == after.generation {
                    // A stale outcome is counted and changes nothing else.
                    assert_eq!(after.stale_outcomes, before.stale_outcomes + 1);
                    assert_eq!(after.state, before.state);
                    assert_eq!(
                        (after.successes, after.failures, after.ignored),
                        (before.successes, before.failures, before.ignored)
                    );
                }
            }
            Op::Timeout => {
                self.b.handle_timeout(now);
                self.shared.handle_timeout(now);
                if let Some(m) = &mut self.model {
                    m.handle_timeout(now);
                }
                assert!(self.b.poll_timeout().is_none_or(|t| t > now));
            }
            Op::WaitOut => {
                if let Some(t) = self.b.poll_timeout() {
                    clock.jump(t);
                    self.b.handle_timeout(t);
                    self.shared.handle_timeout(t);
                    if let Some(m) = &mut self.model {
                        m.handle_timeout(t);
                    }
                    assert!(self.b.poll_timeout().is_none_or(|u| u > t));
                }
            }
            Op::ForceOpen => {
                self.b.force_open(now);
                self.shared.force_open(now);
                if let Some(m) = &mut self.model {
                    m.force_open(now);
                }
                assert_eq!(self.b.state(), State::ForcedOpen);
            }
            Op::Disable => {
                self.b.disable(now);
                self.shared.disable(now);
                if let Some(m) = &mut self.model {
                    m.disable(now);
                }
                assert_eq!(self.b.state(), State::Disabled);
            }
            Op::Reset => {
                self.b.reset(now);
                self.shared.reset(now);
                if let Some(m) = &mut self.model {
                    m.reset(now);
                }
                assert_eq!(self.b.state(), State::Closed);
            }
            Op::Poll => {
                let mut events = Vec::new();
                while let Some(ev) = self.b.poll_event() {
                    events.push(ev);
                }
                let mut shared = Vec::new();
                self.shared.drain_events(|ev| shared.push(ev));
                assert_eq!(shared, events, "the shared form's events differ");
                assert!(events.len() <= EVENT_QUEUE_CAPACITY);
                for ev in events {
                    if let BreakerEvent::Transition { from, to, at, .. } = ev {
                        assert_ne!(from, to);
                        assert!(at <= clock.newest());
                        self.report(at);
                    }
                }
            }
        }
        self.sync_gen();
        let s = self.b.stats();
        assert_eq!(self.shared.stats(), s, "the shared form's stats differ");
        assert_eq!(self.shared.state(), s.state);
        assert_eq!(self.shared.poll_timeout(), self.b.poll_timeout());
        if let Some(m) = &self.model {
            if let Err(e) = m.check(&s, self.b.poll_timeout()) {
                panic!("the breaker disagrees with the model: {e}");
            }
        }
        assert_eq!(s.state, self.b.state());
        assert_eq!(
            s.admitted + s.rejected,
            self.acquires,
            "acquisitions do not balance"
        );
        assert_eq!(
            s.successes + s.failures + s.ignored + s.stale_outcomes,
            self.outcomes,
            "outcomes do not balance"
        );
        assert!(s.slow <= s.successes + s.failures);
        assert!(
            s.probes_in_use <= self.permitted,
            "more probes than permitted"
        );
        if s.state == State::HalfOpen {
            assert!(
                self.admitted_in_gen - self.ignored_in_gen <= u64::from(self.permitted),
                "half-open admitted {} probes (net of {} ignored), {} permitted",
                self.admitted_in_gen,
                self.ignored_in_gen,
                self.permitted
            );
        }
        if let Some(n) = self.b.config().consecutive_failures_threshold() {
            if s.state == State::Closed {
                assert!(
                    s.consecutive_failures < n,
                    "closed after {n} failures in a row"
                );
            }
        }
        if let (Some(r), true) = (s.failure_rate_percent, s.state == State::Closed) {
            assert!(r <= 100);
        }
        assert!(s.window_failures <= s.window_calls && s.window_slow <= s.window_calls);
        assert!(self.b.poll_timeout().is_none_or(|t| t > clock.newest()));
        if let (State::Open, Some(t)) = (s.state, self.b.poll_timeout()) {
            assert!(t - clock.newest() <= self.max_open);
        }
    }

    /// Feeds a transition to the report limiter, as the breaker driver does, and checks it.
    fn report(&mut self, at: Instant) {
        self.transitions_seen += 1;
        let interval = self.reports.interval();
        // The limiter clamps `at` to the newest it saw; transitions arrive in order anyway.
        let at = self.last_report.map_or(at, |l| at.max(l));
        match self.reports.on_occurrence(at) {
            Report::Emit { suppressed } => {
                if let Some(last) = self.last_report {
                    assert!(
                        at >= last.saturating_add(interval),
                        "two reports within the interval"
                    );
                }
                self.last_report = Some(at);
                self.emitted += 1;
                self.carried += suppressed;
            }
            Report::Suppress => {
                let last = self.last_report.expect("the first occurrence is reported");
                assert!(
                    at < last.saturating_add(interval),
                    "a due report was suppressed"
                );
            }
        }
        let s = self.reports.stats();
        assert_eq!(s.occurrences, self.transitions_seen);
        assert_eq!(s.reports, self.emitted);
        assert_eq!(s.reports + s.suppressed, s.occurrences);
        assert_eq!(self.carried + s.unreported, s.suppressed);
    }

    fn sync_gen(&mut self) {
        let g = self.b.stats().generation;
        if g != self.gen {
            self.gen = g;
            self.admitted_in_gen = 0;
            self.ignored_in_gen = 0;
        }
    }

    /// Nothing more to check at the end.
    pub fn finish(&mut self) {}
}

/// What the model knows of `p`.
fn model_permit(p: &BreakerPermit) -> ModelPermit {
    ModelPermit {
        generation: p.generation(),
        admitted_at: p.admitted_at(),
    }
}

impl Timed for Op {
    fn timed(&self) -> bool {
        !matches!(self, Op::WaitOut | Op::Poll)
    }
}

crate::single_machine_target!("breaker", Config);
