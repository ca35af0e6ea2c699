//! The adaptive concurrency limit ([`keel_core::adaptive::Adaptive`]) as its docs define it.
//!
//! The machine keeps running sums of its open window; this model keeps the window's samples
//! and recomputes everything from them when the window closes, one documented rule at a time:
//!
//! - **Time** is clamped to the newest `now` seen.
//! - **Samples**: an RTT counts as at least 1 ns. A dropped or timed-out sample is a loss; under
//!   AIMD so is a success slower than its `timeout`.
//! - **Windows**: a window closes with the first sample at least `max(window, 2 × min RTT)`
//!   after it opened (in slow start `min(window, 4 × min RTT)`; just `window` before there is a
//!   minimum RTT). The next window opens at that sample.
//! - **A closed window's numbers**: `m` its mean RTT (integer nanoseconds, at least 1), `n` its
//!   mean `in_flight` (integer mean), "full" when it holds at least `min_samples` samples, and
//!   its noise: two standard errors of the mean.
//! - **The minimum RTT `b`**: the first window's mean; replaced by a later window's mean while
//!   no full window has set it (by a full window, or a lower mean); after that only lowered, by
//!   a full window whose `m + noise < b`, to `m + noise`.
//! - **The queue**: `q = n × (1 − b / max(m − noise, b))` (Little's law over the part of the RTT
//!   above the noise band); the servers the window kept busy are `n × b / m`. A window whose
//!   largest `in_flight` is below half the limit is application-limited.
//! - **The controllers** (a loss in the window overrides them: limit × `backoff_percent` / 100):
//!   gradient (cut half the excess over its target, never below half the limit; grow by
//!   doubling in slow start, then by a step that doubles per growing window; hold in the dead
//!   band), Vegas (`log10` steps around `alpha`/`beta`), AIMD (double in slow start, then
//!   `+increase`). Growth needs a limit-bound window. A cut or a loss ends the slow start.
//! - **Stale minimum RTT** (gradient and Vegas): three cutting windows in a row that took the
//!   limit to three quarters of where the cuts began while the RTT stayed above 90 % of where
//!   it was; or three windows in a row at `min_limit` with a queue above one half. Either
//!   starts a probe.
//! - **The probe** (a stale minimum RTT, or the timer at `poll_timeout`): the limit is held at
//!   `min(limit / 2, 3/4 × busy)` for two windows (the open window is dropped); the second
//!   window's mean becomes the minimum RTT, the limit before the probe comes back and the timer
//!   is set `probe_interval` after the newest `now`.
//! - **The limit to enforce** is the exact limit clamped into `[min_limit, max_limit]`, rounded
//!   down. Each change is one `LimitChanged` event; each new minimum RTT one `MinRttChanged`;
//!   each probe one `ProbeStarted`. The event queue holds [`EVENT_QUEUE_CAPACITY`] events and
//!   drops the oldest.
//!
//! The arithmetic is done in the order the rules state it, and the square root is the one the
//! machine documents (Newton's method from the halved exponent, six steps): `f64::sqrt`
//! differs from it in the last bit for about a quarter of the inputs, which would let the
//! model's limit and the machine's round to different integers, so the comparison could not be
//! exact.
//!
//! ```
//! use core::time::Duration;
//! use keel_core::adaptive::{Adaptive, AdaptiveConfig, SampleOutcome};
//! use keel_core::time::Instant;
//! use keel_testkit::models::adaptive::AdaptiveModel;
//!
//! let config = AdaptiveConfig::builder().initial_limit(10).build()?;
//! let (mut a, mut model) = (Adaptive::new(config, Instant::ZERO), AdaptiveModel::new(&config, Instant::ZERO));
//! for ms in 1..=300 {
//!     let now = Instant::from_millis(ms);
//!     let rtt = Duration::from_millis(10);
//!     let _ = a.on_sample(now, rtt, SampleOutcome::Success, 10);
//!     model.on_sample(now, rtt, SampleOutcome::Success, 10);
//!     model.check(&a).expect("the machine follows its documented rules");
//! }
//! assert!(a.limit() > 10); // limit-bound windows with no queue: the slow start doubled it
//! # Ok::<(), keel_core::ConfigError>(())
//! ```

use std::collections::VecDeque;
use std::time::Duration;

use keel_core::adaptive::{
    Adaptive, AdaptiveConfig, AdaptiveEvent, Algorithm, LimitCause, MinRttCause, ProbeReason,
    SampleOutcome, EVENT_QUEUE_CAPACITY,
};
use keel_core::time::{duration_to_nanos, Instant};

/// Cutting windows in a row after which an unchanged RTT means a stale minimum RTT.
const STALE_AFTER_CUTS: u32 = 3;
/// Windows at `min_limit` with a queue after which the minimum RTT is stale.
const STALE_AT_MIN: u32 = 3;

/// One sample of the open window.
#[derive(Clone, Copy, Debug)]
struct Sample {
    rtt: u64,
    in_flight: u32,
    loss: bool,
}

/// The counters the machine reports in its `AdaptiveStats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModelStats {
    /// Samples seen.
    pub samples: u64,
    /// Dropped samples.
    pub dropped: u64,
    /// Timed-out samples.
    pub timed_out: u64,
    /// Windows closed.
    pub windows: u64,
    /// Windows that raised the limit.
    pub increases: u64,
    /// Windows that lowered it (loss included).
    pub decreases: u64,
    /// Probes started.
    pub probes: u64,
    /// Probes started because the minimum RTT looked stale.
    pub stale_min_rtt: u64,
    /// Events dropped from the full queue.
    pub events_dropped: u64,
}

/// The reference model of an adaptive limit. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct AdaptiveModel {
    config: AdaptiveConfig,
    newest: Instant,
    /// The exact limit, within `[min_limit, max_limit]`.
    limit: f64,
    /// The minimum RTT (ns) and whether a full window set it.
    min_rtt: Option<(u64, bool)>,
    window_start: Instant,
    window: Vec<Sample>,
    slow_start: bool,
    step: f64,
    /// Cutting windows in a row, and the limit and RTT when they began.
    cuts: u32,
    cuts_from: (f64, f64),
    at_min: u32,
    busy: f64,
    /// `Some((windows left, limit to restore))` while probing.
    probe: Option<(u8, f64)>,
    due: Option<Instant>,
    stats: ModelStats,
    events: VecDeque<AdaptiveEvent>,
}

/// The machine's square root (see the module docs): Newton's method from the halved exponent.
fn newton_sqrt(x: f64) -> f64 {
    if x == f64::INFINITY {
        return x;
    }
    if !(x > 0.0 && x.is_finite()) {
        return 0.0;
    }
    let mut y = f64::from_bits((x.to_bits() >> 1) + (1023u64 << 51));
    for _ in 0..6 {
        y = 0.5 * (y + x / y);
    }
    y
}

/// `max(1, floor(log10(floor(limit))))`.
fn log10_floor(limit: f64) -> f64 {
    let mut digits = 0u32;
    let mut n = limit as u64;
    while n >= 10 {
        n /= 10;
        digits += 1;
    }
    f64::from(digits.max(1))
}

impl AdaptiveModel {
    /// The model of `Adaptive::new(*config, now)`.
    #[must_use]
    pub fn new(config: &AdaptiveConfig, now: Instant) -> Self {
        let limit = f64::from(config.initial_limit());
        let slow_start = !matches!(config.algorithm(), Algorithm::Vegas(_));
        AdaptiveModel {
            config: *config,
            newest: now,
            limit,
            min_rtt: None,
            window_start: now,
            window: Vec::new(),
            slow_start,
            step: 1.0,
            cuts: 0,
            cuts_from: (limit, 0.0),
            at_min: 0,
            busy: limit,
            probe: None,
            due: config.probe_interval().map(|p| now.saturating_add(p)),
            stats: ModelStats::default(),
            events: VecDeque::new(),
        }
    }

    /// The limit to enforce.
    #[must_use]
    pub fn limit(&self) -> u32 {
        let (min, max) = (self.config.min_limit(), self.config.max_limit());
        (self.limit as u32).clamp(min, max)
    }

    /// The minimum-RTT estimate.
    #[must_use]
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt.map(|(b, _)| Duration::from_nanos(b))
    }

    /// When the timer is due: never while probing.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.probe.is_some() {
            None
        } else {
            self.due
        }
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> ModelStats {
        self.stats
    }

    /// `true` during the slow start.
    #[must_use]
    pub fn slow_start(&self) -> bool {
        self.slow_start
    }

    /// `true` while a probe holds the limit down.
    #[must_use]
    pub fn probing(&self) -> bool {
        self.probe.is_some()
    }

    /// The oldest queued event.
    pub fn pop_event(&mut self) -> Option<AdaptiveEvent> {
        self.events.pop_front()
    }

    /// `on_sample(now, rtt, outcome, in_flight)`: the new limit when it changed.
    pub fn on_sample(
        &mut self,
        now: Instant,
        rtt: Duration,
        outcome: SampleOutcome,
        in_flight: u32,
    ) -> Option<u32> {
        let now = self.observe(now);
        let rtt = duration_to_nanos(rtt).max(1);
        self.stats.samples += 1;
        let loss = match outcome {
            SampleOutcome::Dropped => {
                self.stats.dropped += 1;
                true
            }
            SampleOutcome::TimedOut => {
                self.stats.timed_out += 1;
                true
            }
            SampleOutcome::Success => match self.config.algorithm() {
                Algorithm::Aimd(a) => rtt > duration_to_nanos(a.timeout),
                _ => false,
            },
        };
        self.window.push(Sample {
            rtt,
            in_flight,
            loss,
        });
        if now.saturating_duration_since(self.window_start) < self.window_length() {
            return None;
        }
        let samples = std::mem::take(&mut self.window);
        self.window_start = now;
        self.close(&samples)
    }

    /// `handle_timeout(now)`: the new limit when a probe started and moved it.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<u32> {
        let now = self.observe(now);
        match (self.probe, self.due) {
            (None, Some(due)) if now >= due => {
                let before = self.limit();
                self.start_probe(ProbeReason::Timer);
                self.changed(before, LimitCause::ProbeStarted)
            }
            _ => None,
        }
    }

    /// Compares the machine's observable state (limit, minimum RTT, timer, counters, flags)
    /// with the model's. The events are compared one by one with [`pop_event`](Self::pop_event).
    ///
    /// # Errors
    ///
    /// The first difference, described.
    pub fn check(&self, a: &Adaptive) -> Result<(), String> {
        let s = a.stats();
        let m = &self.stats;
        let pairs = [
            ("limit", u64::from(a.limit()), u64::from(self.limit())),
            ("stats.limit", u64::from(s.limit), u64::from(self.limit())),
            ("samples", s.samples, m.samples),
            ("dropped", s.dropped, m.dropped),
            ("timed_out", s.timed_out, m.timed_out),
            ("windows", s.windows, m.windows),
            ("increases", s.increases, m.increases),
            ("decreases", s.decreases, m.decreases),
            ("probes", s.probes, m.probes),
            ("stale_min_rtt", s.stale_min_rtt, m.stale_min_rtt),
            ("events_dropped", s.events_dropped, m.events_dropped),
            (
                "slow_start",
                u64::from(s.slow_start),
                u64::from(self.slow_start),
            ),
            ("probing", u64::from(s.probing), u64::from(self.probing())),
        ];
        for (what, machine, model) in pairs {
            if machine != model {
                return Err(format!("{what}: machine {machine}, model {model}"));
            }
        }
        if a.min_rtt() != self.min_rtt() || s.min_rtt != self.min_rtt() {
            return Err(format!(
                "min RTT: machine {:?} (stats {:?}), model {:?}",
                a.min_rtt(),
                s.min_rtt,
                self.min_rtt()
            ));
        }
        if a.poll_timeout() != self.poll_timeout() {
            return Err(format!(
                "poll_timeout: machine {:?}, model {:?}",
                a.poll_timeout(),
                self.poll_timeout()
            ));
        }
        Ok(())
    }

    fn observe(&mut self, now: Instant) -> Instant {
        self.newest = self.newest.max(now);
        self.newest
    }

    fn window_length(&self) -> Duration {
        let window = self.config.window();
        match self.min_rtt {
            None => window,
            Some((b, _)) if self.slow_start => {
                window.min(Duration::from_nanos(b.saturating_mul(4)))
            }
            Some((b, _)) => window.max(Duration::from_nanos(b.saturating_mul(2))),
        }
    }

    fn close(&mut self, samples: &[Sample]) -> Option<u32> {
        self.stats.windows += 1;
        let count = samples.len() as u64;
        let rtt_total: u128 = samples.iter().map(|s| u128::from(s.rtt)).sum();
        let in_flight_total: u128 = samples.iter().map(|s| u128::from(s.in_flight)).sum();
        let mean = u64::try_from(rtt_total / u128::from(count))
            .unwrap_or(u64::MAX)
            .max(1);
        let n = (in_flight_total / u128::from(count)) as f64;
        let full = count >= u64::from(self.config.min_samples());
        let m = mean as f64;
        let squares = samples
            .iter()
            .fold(0.0f64, |acc, s| acc + (s.rtt as f64) * (s.rtt as f64));
        let variance = (squares / count as f64 - m * m).max(0.0);
        let noise = 2.0 * newton_sqrt(variance / count as f64);

        if let Some((left, restore)) = self.probe {
            if left >= 2 {
                // The first probe window lets the queue drain.
                self.probe = Some((left - 1, restore));
                return None;
            }
            self.new_min_rtt(mean, full, MinRttCause::Probe);
            self.probe = None;
            self.due = self
                .config
                .probe_interval()
                .map(|p| self.newest.saturating_add(p));
            let before = self.limit();
            self.set_limit(restore);
            return self.changed(before, LimitCause::ProbeEnded);
        }

        match self.min_rtt {
            None => self.new_min_rtt(mean, full, MinRttCause::Lower),
            Some((_, false)) if full => self.new_min_rtt(mean, full, MinRttCause::Lower),
            Some((b, false)) if mean < b => self.new_min_rtt(mean, full, MinRttCause::Lower),
            Some((b, _)) if full && m + noise < b as f64 => {
                self.new_min_rtt((m + noise) as u64, true, MinRttCause::Lower);
            }
            Some(_) => {}
        }
        let b = self.min_rtt.map_or(mean, |(b, _)| b) as f64;
        let queue = (n * (1.0 - b / (m - noise).max(b))).max(0.0);
        self.busy = n * (b / m);
        let largest = samples.iter().map(|s| s.in_flight).max().unwrap_or(0);
        let limit = self.limit;
        let limit_bound = f64::from(largest) * 2.0 >= limit;
        let before = self.limit();

        let (next, mut cause) = if samples.iter().any(|s| s.loss) {
            let percent = match self.config.algorithm() {
                Algorithm::Gradient(g) => g.backoff_percent,
                Algorithm::Vegas(v) => v.backoff_percent,
                Algorithm::Aimd(a) => a.backoff_percent,
            };
            (limit * f64::from(percent) / 100.0, Some(LimitCause::Loss))
        } else {
            match self.config.algorithm() {
                Algorithm::Gradient(g) => {
                    let target = (limit * f64::from(g.queue_target_percent) / 100.0).max(1.0);
                    if queue > target {
                        let excess = queue - target;
                        let cut = f64::from(g.gain_percent) / 100.0 * excess;
                        ((limit - cut).max(limit * 0.5), Some(LimitCause::Decrease))
                    } else if !limit_bound {
                        (limit, None)
                    } else if queue <= target * 0.5 && self.slow_start {
                        (limit * 2.0, Some(LimitCause::Increase))
                    } else if queue <= target * 0.5 {
                        let grown = limit + self.step;
                        self.step = (self.step * 2.0).min(limit.max(1.0));
                        (grown, Some(LimitCause::Increase))
                    } else {
                        // The dead band: hold, and growth starts over from one step.
                        self.step = 1.0;
                        (limit, None)
                    }
                }
                Algorithm::Vegas(v) => {
                    let lg = log10_floor(limit);
                    let alpha = f64::from(v.alpha) * lg;
                    let beta = f64::from(v.beta) * lg;
                    if queue > beta {
                        (limit - lg, Some(LimitCause::Decrease))
                    } else if !limit_bound {
                        (limit, None)
                    } else if queue <= lg {
                        (limit + beta, Some(LimitCause::Increase))
                    } else if queue < alpha {
                        (limit + lg, Some(LimitCause::Increase))
                    } else {
                        (limit, None)
                    }
                }
                Algorithm::Aimd(a) => match (limit_bound, self.slow_start) {
                    (false, _) => (limit, None),
                    (true, true) => (limit * 2.0, Some(LimitCause::Increase)),
                    (true, false) => (limit + f64::from(a.increase), Some(LimitCause::Increase)),
                },
            }
        };
        if cause == Some(LimitCause::Loss) || cause == Some(LimitCause::Decrease) {
            self.slow_start = false;
            self.step = 1.0;
        }
        self.set_limit(next);

        if !matches!(self.config.algorithm(), Algorithm::Aimd(_)) {
            if let Some(reason) = self.stale(cause, limit, m, queue) {
                self.start_probe(reason);
                cause = Some(LimitCause::ProbeStarted);
            }
        }
        match cause {
            Some(LimitCause::Increase) => self.stats.increases += 1,
            Some(LimitCause::Decrease | LimitCause::Loss) => self.stats.decreases += 1,
            _ => {}
        }
        cause.and_then(|cause| self.changed(before, cause))
    }

    /// The stale-minimum-RTT rules. `limit` is the exact limit before this window's change.
    fn stale(
        &mut self,
        cause: Option<LimitCause>,
        limit: f64,
        m: f64,
        queue: f64,
    ) -> Option<ProbeReason> {
        if cause == Some(LimitCause::Decrease) {
            if self.cuts == 0 {
                self.cuts_from = (limit, m);
            }
            self.cuts += 1;
            let (from_limit, from_rtt) = self.cuts_from;
            let cut_a_quarter = self.limit <= 0.75 * from_limit;
            let rtt_unmoved = m >= 0.9 * from_rtt;
            if self.cuts >= STALE_AFTER_CUTS && cut_a_quarter && rtt_unmoved {
                return Some(ProbeReason::Unresponsive);
            }
        } else {
            self.cuts = 0;
        }
        if self.limit <= f64::from(self.config.min_limit()) && queue > 0.5 {
            self.at_min += 1;
            if self.at_min >= STALE_AT_MIN {
                return Some(ProbeReason::StuckAtMin);
            }
        } else {
            self.at_min = 0;
        }
        None
    }

    fn start_probe(&mut self, reason: ProbeReason) {
        self.stats.probes += 1;
        if reason != ProbeReason::Timer {
            self.stats.stale_min_rtt += 1;
        }
        self.probe = Some((2, self.limit));
        self.cuts = 0;
        self.at_min = 0;
        self.window.clear();
        self.window_start = self.newest;
        let half = self.limit * 0.5;
        let three_quarters_busy = self.busy * 0.75;
        self.set_limit(half.min(three_quarters_busy));
        let limit = self.limit();
        self.push(AdaptiveEvent::ProbeStarted { reason, limit });
    }

    fn new_min_rtt(&mut self, nanos: u64, full: bool, cause: MinRttCause) {
        let from = self.min_rtt();
        let nanos = nanos.max(1);
        self.min_rtt = Some((nanos, full));
        let to = Duration::from_nanos(nanos);
        if from != Some(to) {
            self.push(AdaptiveEvent::MinRttChanged { from, to, cause });
        }
    }

    fn set_limit(&mut self, next: f64) {
        if next.is_finite() {
            let min = f64::from(self.config.min_limit());
            let max = f64::from(self.config.max_limit());
            self.limit = next.clamp(min, max);
        }
    }

    fn changed(&mut self, from: u32, cause: LimitCause) -> Option<u32> {
        let to = self.limit();
        if to == from {
            return None;
        }
        self.push(AdaptiveEvent::LimitChanged { from, to, cause });
        Some(to)
    }

    fn push(&mut self, ev: AdaptiveEvent) {
        if self.events.len() == EVENT_QUEUE_CAPACITY {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        self.events.push_back(ev);
    }
}
