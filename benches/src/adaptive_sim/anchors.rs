//! Re-implementations of the controllers keel measures itself against, written from their
//! published sources and documentation (our own code, same arithmetic):
//!
//! - [`NetflixVegas`]: `com.netflix.concurrency.limits.limit.VegasLimit` (defaults: initial
//!   limit 20, `maxConcurrency` 1000, `alpha = 3 log10`, `beta = 6 log10`,
//!   `threshold = log10`, `increase = +log10`, `decrease = −log10`, smoothing 1.0,
//!   `probeMultiplier` 30 with a jitter of 0.5..1.0). Updates on every sample.
//! - [`NetflixGradient2`]: `Gradient2Limit` (smoothing 0.2, `rttTolerance` 1.5, `longWindow`
//!   600 with a 10-sample warm-up, queue size 4, the long RTT decayed by 0.95 when it is twice
//!   the short one, application-limited samples ignored). Updates on every sample.
//! - [`NetflixAimd`]: `AIMDLimit` (`backoffRatio` 0.9, `timeout` 5 s, `+1` when
//!   `inflight * 2 >= limit`). Updates on every sample.
//! - [`EnvoyGradient`]: Envoy's adaptive concurrency `GradientController` (a 100 ms
//!   `concurrency_update_interval`, the p50 of each interval's samples, `gradient =
//!   clamp((1 + buffer) × minRTT / sampleRTT, 0.5, 2)`, `limit = limit × gradient +
//!   sqrt(limit × gradient)`, buffer 25 %, minRTT re-measured every 60 s plus up to 15 %
//!   jitter as the p50 of 50 requests at `min_concurrency` 3, the previous limit restored
//!   afterwards, samples of requests sent before the last measurement started ignored,
//!   `max_concurrency_limit` 1000). Envoy has no initial limit (it restores
//!   `min_concurrency` after its first measurement); ours restores the scenario's initial
//!   limit, a head start in every scenario but `cold-start`.
//!
//! To compare like with like, every controller's lower bound is 1 (Envoy's 3, its measuring
//! concurrency), its upper bound 1000 and its initial limit the scenario's.

use std::time::Duration;

use keel_core::adaptive::SampleOutcome;
use keel_core::rng::Rng;
use keel_core::time::Instant;

/// A concurrency-limit controller as the simulator drives it.
pub trait Controller {
    /// The limit to enforce now.
    fn limit(&self) -> u32;
    /// The controller's lower bound (for "sat at its minimum").
    fn min_limit(&self) -> u32;
    /// One finished request.
    fn on_sample(&mut self, now: Instant, rtt: Duration, outcome: SampleOutcome, in_flight: u32);
    /// When [`handle_timeout`](Self::handle_timeout) next has work.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Timer work.
    fn handle_timeout(&mut self, now: Instant);
}

/// `max(1, (int) log10(limit))`, Netflix's `Log10RootFunction`.
fn log10_root(limit: f64) -> f64 {
    let l = limit.max(1.0).log10().floor();
    l.max(1.0)
}

/// Netflix `VegasLimit`.
#[derive(Debug)]
pub struct NetflixVegas {
    estimated: f64,
    rtt_noload: u64,
    probe_count: u64,
    probe_jitter: f64,
    rng: Rng,
}

impl NetflixVegas {
    /// Starts at `initial`.
    #[must_use]
    pub fn new(initial: u32, seed: u64) -> NetflixVegas {
        let mut rng = Rng::new(seed);
        let probe_jitter = 0.5 + rng.next_f64() * 0.5;
        NetflixVegas {
            estimated: f64::from(initial),
            rtt_noload: 0,
            probe_count: 0,
            probe_jitter,
            rng,
        }
    }
}

impl Controller for NetflixVegas {
    fn limit(&self) -> u32 {
        self.estimated as u32
    }
    fn min_limit(&self) -> u32 {
        1
    }
    fn on_sample(&mut self, _now: Instant, rtt: Duration, outcome: SampleOutcome, in_flight: u32) {
        let rtt = rtt.as_nanos() as u64;
        let did_drop = outcome != SampleOutcome::Success;
        self.probe_count += 1;
        if self.probe_jitter * 30.0 * self.estimated <= self.probe_count as f64 {
            self.probe_jitter = 0.5 + self.rng.next_f64() * 0.5;
            self.probe_count = 0;
            self.rtt_noload = rtt;
            return;
        }
        if self.rtt_noload == 0 || rtt < self.rtt_noload {
            self.rtt_noload = rtt;
            return;
        }
        let limit = self.estimated;
        let lg = log10_root(limit);
        let new = if did_drop {
            limit - lg
        } else if f64::from(in_flight) * 2.0 < limit {
            return;
        } else {
            let queue = (limit * (1.0 - self.rtt_noload as f64 / rtt as f64)).ceil();
            if queue <= lg {
                limit + 6.0 * lg
            } else if queue < 3.0 * lg {
                limit + lg
            } else if queue > 6.0 * lg {
                limit - lg
            } else {
                return;
            }
        };
        self.estimated = new.clamp(1.0, 1000.0);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn handle_timeout(&mut self, _now: Instant) {}
}

/// Netflix `Gradient2Limit`.
#[derive(Debug)]
pub struct NetflixGradient2 {
    estimated: f64,
    long_rtt: f64,
    long_count: u32,
}

impl NetflixGradient2 {
    /// Starts at `initial`.
    #[must_use]
    pub fn new(initial: u32) -> NetflixGradient2 {
        NetflixGradient2 {
            estimated: f64::from(initial),
            long_rtt: 0.0,
            long_count: 0,
        }
    }

    /// `ExpAvgMeasurement(600, 10)`: a plain mean for 10 samples, then an EMA.
    fn add_long(&mut self, rtt: f64) -> f64 {
        if self.long_count < 10 {
            self.long_count += 1;
            self.long_rtt += (rtt - self.long_rtt) / f64::from(self.long_count);
        } else {
            let factor = 2.0 / (600.0 + 1.0);
            self.long_rtt = self.long_rtt * (1.0 - factor) + rtt * factor;
        }
        self.long_rtt
    }
}

impl Controller for NetflixGradient2 {
    fn limit(&self) -> u32 {
        self.estimated as u32
    }
    fn min_limit(&self) -> u32 {
        1
    }
    fn on_sample(&mut self, _now: Instant, rtt: Duration, _outcome: SampleOutcome, in_flight: u32) {
        let short = (rtt.as_nanos() as f64).max(1.0);
        let long = self.add_long(short);
        if long / short > 2.0 {
            self.long_rtt *= 0.95;
        }
        if f64::from(in_flight) < self.estimated / 2.0 {
            return;
        }
        let gradient = (1.5 * long / short).clamp(0.5, 1.0);
        let mut new = self.estimated * gradient + 4.0;
        new = self.estimated * 0.8 + new * 0.2;
        self.estimated = new.clamp(1.0, 1000.0);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn handle_timeout(&mut self, _now: Instant) {}
}

/// Netflix `AIMDLimit`.
#[derive(Debug)]
pub struct NetflixAimd {
    limit: u32,
}

impl NetflixAimd {
    /// Starts at `initial`.
    #[must_use]
    pub fn new(initial: u32) -> NetflixAimd {
        NetflixAimd { limit: initial }
    }
}

impl Controller for NetflixAimd {
    fn limit(&self) -> u32 {
        self.limit
    }
    fn min_limit(&self) -> u32 {
        1
    }
    fn on_sample(&mut self, _now: Instant, rtt: Duration, outcome: SampleOutcome, in_flight: u32) {
        let did_drop = outcome != SampleOutcome::Success;
        if did_drop || rtt > Duration::from_secs(5) {
            self.limit = (f64::from(self.limit) * 0.9) as u32;
        } else if in_flight.saturating_mul(2) >= self.limit {
            self.limit += 1;
        }
        self.limit = self.limit.clamp(1, 1000);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn handle_timeout(&mut self, _now: Instant) {}
}

/// Envoy's `GradientController`.
#[derive(Debug)]
pub struct EnvoyGradient {
    limit: u32,
    min_rtt: Option<u64>,
    samples: Vec<u64>,
    /// `Some(limit to restore)` while measuring the minimum RTT.
    measuring: Option<u32>,
    /// When the last minimum-RTT measurement started: older requests' samples are ignored.
    epoch: Instant,
    next_update: Instant,
    next_min_rtt: Option<Instant>,
    rng: Rng,
}

/// Envoy's `concurrency_update_interval` as configured in its documentation example.
const ENVOY_UPDATE: Duration = Duration::from_millis(100);
const ENVOY_MIN_CONCURRENCY: u32 = 3;

impl EnvoyGradient {
    /// Starts measuring the minimum RTT (as Envoy does at start), then `initial`.
    #[must_use]
    pub fn new(initial: u32, now: Instant, seed: u64) -> EnvoyGradient {
        EnvoyGradient {
            limit: ENVOY_MIN_CONCURRENCY,
            min_rtt: None,
            samples: Vec::new(),
            measuring: Some(initial.max(ENVOY_MIN_CONCURRENCY)),
            epoch: now,
            next_update: now + ENVOY_UPDATE,
            next_min_rtt: None,
            rng: Rng::new(seed),
        }
    }

    fn p50(samples: &mut [u64]) -> Option<u64> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        samples.get(samples.len() / 2).copied()
    }

    fn schedule_min_rtt(&mut self, now: Instant) {
        // 60 s, jittered by up to 15 %.
        let jitter = self.rng.next_f64() * 0.15 * 60.0;
        self.next_min_rtt = Some(now + Duration::from_secs_f64(60.0 + jitter));
    }
}

impl Controller for EnvoyGradient {
    fn limit(&self) -> u32 {
        self.limit
    }
    fn min_limit(&self) -> u32 {
        ENVOY_MIN_CONCURRENCY
    }
    fn on_sample(&mut self, now: Instant, rtt: Duration, _outcome: SampleOutcome, _in_flight: u32) {
        if now - rtt < self.epoch {
            return;
        }
        self.samples.push(rtt.as_nanos() as u64);
        if let Some(restore) = self.measuring {
            if self.samples.len() >= 50 {
                self.min_rtt = Self::p50(&mut self.samples);
                self.samples.clear();
                self.measuring = None;
                self.limit = restore;
                self.next_update = now + ENVOY_UPDATE;
                self.schedule_min_rtt(now);
            }
        }
    }
    fn poll_timeout(&self) -> Option<Instant> {
        match (self.measuring, self.next_min_rtt) {
            (Some(_), _) => None,
            (None, Some(m)) => Some(m.min(self.next_update)),
            (None, None) => Some(self.next_update),
        }
    }
    fn handle_timeout(&mut self, now: Instant) {
        if self.measuring.is_some() {
            return;
        }
        if self.next_min_rtt.is_some_and(|m| now >= m) {
            self.measuring = Some(self.limit);
            self.epoch = now;
            self.limit = ENVOY_MIN_CONCURRENCY;
            self.samples.clear();
            self.next_min_rtt = None;
            return;
        }
        if now < self.next_update {
            return;
        }
        self.next_update = now + ENVOY_UPDATE;
        let (Some(sample), Some(min_rtt)) = (Self::p50(&mut self.samples), self.min_rtt) else {
            return;
        };
        self.samples.clear();
        let buffered = min_rtt as f64 * 1.25;
        let gradient = (buffered / sample.max(1) as f64).clamp(0.5, 2.0);
        let limit = f64::from(self.limit) * gradient;
        let new = limit + limit.sqrt();
        self.limit = (new as u32).clamp(ENVOY_MIN_CONCURRENCY, 1000);
    }
}
