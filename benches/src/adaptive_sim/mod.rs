//! `adaptive-sim`: keel's adaptive concurrency controllers beside Netflix's and Envoy's, on the
//! same simulated service and the same seeds, in virtual time.
//!
//! # The model
//!
//! A service of `servers` identical servers (50 at full capacity) behind one FIFO queue without
//! a bound. A request's service time is `S × (1 + noise × u)` with `u` uniform in `[−1, 1]`
//! and `S` 10 ms unless a scenario slows the service down: at full capacity the service
//! completes 5 000 requests per second and Little's law puts the ideal concurrency limit at
//! `servers` (capacity × minimum RTT). Requests arrive as a Poisson process at a multiple of
//! the *nominal* capacity (the offered load, 0.5× to 5×). The client in front of the service
//! admits a request only while fewer than `limit` are in flight (a rejected request is shed at
//! once and gives no sample), and gives up on a request after 1 s (`TimedOut`; the server still
//! does the work). Each finished request is a sample `(now, rtt, outcome, in_flight at start)`
//! for the controller, which is all any of them sees. Everything draws from seeded [`Rng`]s:
//! the same seed gives the same table.
//!
//! # What is measured, per window of 100 ms
//!
//! - **goodput**: requests that succeeded, as a percentage of what could be served,
//!   `min(offered, capacity)`, summed over the scenario;
//! - **p99 / minRTT**: the 99th percentile of successful requests' latency over the nominal
//!   service time (10 ms);
//! - **to ideal**: the first window at whose end the limit is within 10 % of the ideal limit
//!   (the number of servers then);
//! - **recovery**: windows from the end of the scenario's disturbance (the overload ends, the
//!   capacity comes back) to the first window whose goodput is at least 90 % of what could be
//!   served;
//! - **stuck at min**: whether, after the disturbance (or after the first 20 windows when
//!   there is none), the limit sat at the controller's minimum for 3 windows in a row;
//! - **spread**: `(max − min) / mean` of the limit over the second half of the scenario;
//! - **creep**: the mean limit over the last tenth of the scenario over the mean limit over
//!   its second tenth;
//! - **limit / ideal**: the mean limit over the second half over the ideal limit (a limit far
//!   above 1 lets a queue build: Gradient2's creep ends at its maximum).

pub mod anchors;
pub mod priorities;
mod report;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use keel_core::adaptive::{
    Adaptive, AdaptiveConfig, AdaptiveDecision, AimdParams, Algorithm, SampleOutcome, VegasParams,
};
use keel_core::rng::Rng;
use keel_core::time::Instant;

pub use anchors::Controller;
pub use priorities::{priority_table, run_priorities, PriorityResult};
pub use report::{svg, table};

use anchors::{EnvoyGradient, NetflixAimd, NetflixGradient2, NetflixVegas};

/// The nominal service time (and the minimum RTT the ratios are measured against).
pub const SERVICE: Duration = Duration::from_millis(10);
/// Servers at full capacity.
pub const SERVERS: u32 = 50;
/// One measurement window.
pub const WINDOW: Duration = Duration::from_millis(100);
/// The client's timeout.
pub const TIMEOUT: Duration = Duration::from_secs(1);

/// One stretch of a scenario.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Phase {
    /// How many windows it lasts.
    pub windows: u32,
    /// Offered load as a multiple of the nominal capacity (50 servers at 10 ms).
    pub load: f64,
    /// Servers working.
    pub servers: u32,
    /// Mean service time.
    pub service: Duration,
    /// Service-time noise: `± noise` relative, uniform.
    pub noise: f64,
}

impl Phase {
    const fn new(windows: u32, load: f64) -> Phase {
        Phase {
            windows,
            load,
            servers: SERVERS,
            service: SERVICE,
            noise: 0.1,
        }
    }
    const fn servers(mut self, n: u32) -> Phase {
        self.servers = n;
        self
    }
    const fn service(mut self, s: Duration) -> Phase {
        self.service = s;
        self
    }
    const fn noise(mut self, n: f64) -> Phase {
        self.noise = n;
        self
    }
    /// Requests per second the servers complete.
    fn capacity(&self) -> f64 {
        f64::from(self.servers) / self.service.as_secs_f64()
    }
}

/// A scenario: phases run back to back.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// Its name in the table.
    pub name: &'static str,
    /// The controllers' initial limit.
    pub initial_limit: u32,
    /// The phases.
    pub phases: Vec<Phase>,
    /// The phase whose start ends the disturbance (recovery is measured from there).
    pub recovery_phase: Option<usize>,
}

impl Scenario {
    /// The scenarios, in table order.
    #[must_use]
    pub fn all() -> Vec<Scenario> {
        let slow = SERVICE * 3;
        vec![
            Scenario {
                name: "cold-start",
                initial_limit: 1,
                phases: vec![Phase::new(100, 1.5)],
                recovery_phase: None,
            },
            Scenario {
                name: "overload-3x",
                initial_limit: 20,
                phases: vec![Phase::new(300, 3.0)],
                recovery_phase: None,
            },
            Scenario {
                name: "overload-ends",
                initial_limit: 20,
                phases: vec![
                    Phase::new(30, 1.0),
                    Phase::new(100, 3.0),
                    Phase::new(120, 1.0),
                ],
                recovery_phase: Some(2),
            },
            Scenario {
                name: "noise-25%",
                initial_limit: 20,
                phases: vec![Phase::new(200, 1.5).noise(0.25)],
                recovery_phase: None,
            },
            Scenario {
                name: "capacity-drop",
                initial_limit: 20,
                phases: vec![
                    Phase::new(60, 1.2),
                    Phase::new(80, 1.2).servers(SERVERS / 2),
                    Phase::new(110, 1.2),
                ],
                recovery_phase: Some(2),
            },
            Scenario {
                name: "slow-dependency",
                initial_limit: 20,
                phases: vec![
                    Phase::new(60, 1.2),
                    Phase::new(80, 1.2).service(slow),
                    Phase::new(110, 0.8),
                ],
                recovery_phase: Some(2),
            },
            Scenario {
                name: "load-sweep",
                initial_limit: 20,
                phases: vec![
                    Phase::new(40, 0.5),
                    Phase::new(40, 1.0),
                    Phase::new(40, 2.0),
                    Phase::new(40, 3.0),
                    Phase::new(40, 5.0),
                    Phase::new(40, 1.0),
                    Phase::new(40, 0.5),
                ],
                recovery_phase: Some(5),
            },
        ]
    }

    /// Windows in total.
    #[must_use]
    pub fn windows(&self) -> u32 {
        self.phases.iter().map(|p| p.windows).sum()
    }

    /// The phase of window `w` (the last phase past the end).
    fn phase_at(&self, w: u32) -> &Phase {
        let mut end = 0;
        for p in &self.phases {
            end += p.windows;
            if w < end {
                return p;
            }
        }
        // `all()` never builds an empty scenario; a hand-made one gets a default phase.
        self.phases.last().unwrap_or(&DEFAULT_PHASE)
    }

    /// The first window of phase `i`.
    fn phase_start(&self, i: usize) -> u32 {
        self.phases.iter().take(i).map(|p| p.windows).sum()
    }
}

const DEFAULT_PHASE: Phase = Phase::new(1, 1.0);

/// A controller under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algo {
    /// keel's default: [`Algorithm::Gradient`].
    KeelGradient,
    /// keel's [`Algorithm::Vegas`].
    KeelVegas,
    /// keel's [`Algorithm::Aimd`].
    KeelAimd,
    /// Netflix `VegasLimit`.
    NetflixVegas,
    /// Netflix `Gradient2Limit`.
    NetflixGradient2,
    /// Netflix `AIMDLimit`.
    NetflixAimd,
    /// Envoy `GradientController`.
    EnvoyGradient,
}

impl Algo {
    /// Every controller, keel's first.
    pub const ALL: [Algo; 7] = [
        Algo::KeelGradient,
        Algo::KeelVegas,
        Algo::KeelAimd,
        Algo::NetflixVegas,
        Algo::NetflixGradient2,
        Algo::NetflixAimd,
        Algo::EnvoyGradient,
    ];
    /// The re-implemented anchors.
    pub const ANCHORS: [Algo; 4] = [
        Algo::NetflixVegas,
        Algo::NetflixGradient2,
        Algo::NetflixAimd,
        Algo::EnvoyGradient,
    ];

    /// Its name in the table.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Algo::KeelGradient => "keel gradient (default)",
            Algo::KeelVegas => "keel vegas",
            Algo::KeelAimd => "keel aimd",
            Algo::NetflixVegas => "netflix Vegas",
            Algo::NetflixGradient2 => "netflix Gradient2",
            Algo::NetflixAimd => "netflix AIMD",
            Algo::EnvoyGradient => "envoy gradient",
        }
    }

    fn build(self, initial: u32, now: Instant, seed: u64) -> Box<dyn Controller> {
        let keel = |algorithm: Algorithm| -> Box<dyn Controller> {
            let config = AdaptiveConfig::builder()
                .initial_limit(initial)
                .algorithm(algorithm)
                .build();
            // The defaults with an initial limit in [1, 1000]: every scenario's is.
            let config = config.unwrap_or_default();
            Box::new(Keel(Adaptive::new(config, now)))
        };
        match self {
            Algo::KeelGradient => keel(Algorithm::default()),
            Algo::KeelVegas => keel(Algorithm::Vegas(VegasParams::default())),
            Algo::KeelAimd => keel(Algorithm::Aimd(AimdParams::default())),
            Algo::NetflixVegas => Box::new(NetflixVegas::new(initial, seed)),
            Algo::NetflixGradient2 => Box::new(NetflixGradient2::new(initial)),
            Algo::NetflixAimd => Box::new(NetflixAimd::new(initial)),
            Algo::EnvoyGradient => Box::new(EnvoyGradient::new(initial, now, seed)),
        }
    }
}

/// keel's machine behind the simulator's trait.
struct Keel(Adaptive);

impl Controller for Keel {
    fn limit(&self) -> u32 {
        self.0.limit()
    }
    fn min_limit(&self) -> u32 {
        self.0.config().min_limit()
    }
    fn on_sample(&mut self, now: Instant, rtt: Duration, outcome: SampleOutcome, in_flight: u32) {
        // The simulator reads the limit back with `limit()`; the decision says the same.
        let _: AdaptiveDecision = self.0.on_sample(now, rtt, outcome, in_flight);
        while self.0.poll_event().is_some() {}
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.0.poll_timeout()
    }
    fn handle_timeout(&mut self, now: Instant) {
        let _: AdaptiveDecision = self.0.handle_timeout(now);
        while self.0.poll_event().is_some() {}
    }
}

/// One window's measurements.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct WindowStats {
    /// The limit at the window's end.
    pub limit: u32,
    /// Arrivals.
    pub offered: u64,
    /// Requests the servers could complete in the window.
    pub capacity: f64,
    /// Successful requests that finished in the window.
    pub goodput: u64,
    /// Mean latency of the successes that finished in the window (ms), if any.
    pub mean_latency_ms: Option<f64>,
    /// The ideal limit (servers × service time / nominal... = servers).
    pub ideal: f64,
}

/// One run's figures.
#[derive(Clone, Debug, PartialEq)]
pub struct RunResult {
    /// The controller.
    pub algo: Algo,
    /// The scenario's name.
    pub scenario: &'static str,
    /// Per window.
    pub windows: Vec<WindowStats>,
    /// Goodput over what could be served, in percent.
    pub goodput_pct: f64,
    /// p99 latency of successes over [`SERVICE`].
    pub p99_ratio: f64,
    /// First window within 10 % of the ideal limit.
    pub to_ideal: Option<u32>,
    /// Windows to recover after the disturbance (`None` if it never did or there is none).
    pub recovery: Option<u32>,
    /// Whether the scenario has a disturbance to recover from.
    pub has_recovery: bool,
    /// Whether the limit sat at its minimum for 3 windows after the disturbance.
    pub stuck_at_min: bool,
    /// `(max − min) / mean` of the limit over the second half.
    pub spread: f64,
    /// Mean limit over the last tenth / mean limit over the second tenth.
    pub creep: f64,
    /// Mean limit over the second half / the ideal limit.
    pub limit_over_ideal: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Done {
    at: u64,
    start: u64,
    in_flight: u32,
    timed_out: bool,
}

/// Latency histogram: 50 µs buckets up to the timeout.
struct Histogram {
    buckets: Vec<u64>,
    count: u64,
}

impl Histogram {
    const BUCKET_NS: u64 = 50_000;
    fn new() -> Histogram {
        let n = (TIMEOUT.as_nanos() as u64 / Self::BUCKET_NS + 1) as usize;
        Histogram {
            buckets: vec![0; n],
            count: 0,
        }
    }
    fn record(&mut self, nanos: u64) {
        let i = ((nanos / Self::BUCKET_NS) as usize).min(self.buckets.len() - 1);
        if let Some(b) = self.buckets.get_mut(i) {
            *b += 1;
        }
        self.count += 1;
    }
    fn quantile_nanos(&self, q: f64) -> u64 {
        let rank = (self.count as f64 * q).ceil() as u64;
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b;
            if seen >= rank.max(1) {
                return (i as u64 + 1) * Self::BUCKET_NS;
            }
        }
        TIMEOUT.as_nanos() as u64
    }
}

/// Runs one controller through one scenario.
#[must_use]
pub fn run(algo: Algo, scenario: &Scenario, seed: u64) -> RunResult {
    let t0 = Instant::from_secs(1);
    let window_ns = WINDOW.as_nanos() as u64;
    let total = scenario.windows();
    let mut controller = algo.build(scenario.initial_limit, t0, seed ^ 0xada9);
    let mut arrivals = Rng::new(seed);
    let mut service = Rng::new(seed.rotate_left(17) ^ 0x5e41);
    let mut free_at: Vec<u64> = vec![t0.as_nanos(); SERVERS as usize * 2];
    let mut done: BinaryHeap<Reverse<Done>> = BinaryHeap::new();
    let mut in_flight: u32 = 0;
    let mut hist = Histogram::new();
    let mut windows = Vec::with_capacity(total as usize);
    let mut cur = WindowStats::default();
    let mut lat_sum = 0.0;
    let mut lat_n = 0u64;
    let mut window_idx = 0u32;
    let mut window_end = t0.as_nanos() + window_ns;

    let next_gap = |rng: &mut Rng, phase: &Phase| -> u64 {
        let rate = phase.load * f64::from(SERVERS) / SERVICE.as_secs_f64();
        let u = 1.0 - rng.next_f64(); // (0, 1]
        (-u.ln() / rate * 1e9) as u64
    };
    let mut next_arrival = t0.as_nanos() + next_gap(&mut arrivals, scenario.phase_at(0));

    loop {
        let next_done = done.peek().map_or(u64::MAX, |d| d.0.at);
        let next_timer = controller
            .poll_timeout()
            .map_or(u64::MAX, Instant::as_nanos);
        let now = next_arrival.min(next_done).min(next_timer).min(window_end);
        if now == window_end {
            let phase = scenario.phase_at(window_idx);
            cur.limit = controller.limit();
            cur.capacity = phase.capacity() * WINDOW.as_secs_f64();
            cur.ideal = f64::from(phase.servers);
            cur.mean_latency_ms = (lat_n > 0).then(|| lat_sum / lat_n as f64 / 1e6);
            windows.push(cur);
            cur = WindowStats::default();
            lat_sum = 0.0;
            lat_n = 0;
            window_idx += 1;
            window_end += window_ns;
            if window_idx >= total {
                break;
            }
            continue;
        }
        let phase = *scenario.phase_at(window_idx);
        if now == next_done {
            let Some(Reverse(d)) = done.pop() else { break };
            in_flight = in_flight.saturating_sub(1);
            let rtt = d.at - d.start;
            let outcome = if d.timed_out {
                SampleOutcome::TimedOut
            } else {
                cur.goodput += 1;
                hist.record(rtt);
                lat_sum += rtt as f64;
                lat_n += 1;
                SampleOutcome::Success
            };
            controller.on_sample(
                Instant::from_nanos(now),
                Duration::from_nanos(rtt),
                outcome,
                d.in_flight,
            );
        } else if now == next_timer {
            controller.handle_timeout(Instant::from_nanos(now));
        } else {
            // An arrival.
            cur.offered += 1;
            next_arrival = now + next_gap(&mut arrivals, &phase);
            if in_flight >= controller.limit() {
                continue;
            }
            in_flight += 1;
            let active = (phase.servers as usize).clamp(1, free_at.len());
            let (slot, free) = free_at
                .iter()
                .take(active)
                .copied()
                .enumerate()
                .min_by_key(|&(_, t)| t)
                .unwrap_or((0, now));
            let start = free.max(now);
            let noise = (service.next_f64() * 2.0 - 1.0) * phase.noise;
            let s = (phase.service.as_nanos() as f64 * (1.0 + noise)).max(1.0) as u64;
            let complete = start + s;
            if let Some(f) = free_at.get_mut(slot) {
                *f = complete;
            }
            let deadline = now + TIMEOUT.as_nanos() as u64;
            done.push(Reverse(Done {
                at: complete.min(deadline),
                start: now,
                in_flight,
                timed_out: complete > deadline,
            }));
        }
    }
    summarise(algo, scenario, windows, &hist, controller.min_limit())
}

fn summarise(
    algo: Algo,
    scenario: &Scenario,
    windows: Vec<WindowStats>,
    hist: &Histogram,
    min_limit: u32,
) -> RunResult {
    let good: u64 = windows.iter().map(|w| w.goodput).sum();
    let servable: f64 = windows
        .iter()
        .map(|w| (w.offered as f64).min(w.capacity))
        .sum();
    let goodput_pct = 100.0 * good as f64 / servable.max(1.0);
    let p99_ratio = hist.quantile_nanos(0.99) as f64 / SERVICE.as_nanos() as f64;
    let to_ideal = windows
        .iter()
        .position(|w| (f64::from(w.limit) - w.ideal).abs() <= 0.1 * w.ideal)
        .map(|i| i as u32 + 1);
    let from = scenario
        .recovery_phase
        .map_or(20, |p| scenario.phase_start(p));
    let recovery = scenario.recovery_phase.and_then(|_| {
        windows
            .iter()
            .skip(from as usize)
            .position(|w| w.goodput as f64 >= 0.9 * (w.offered as f64).min(w.capacity))
            .map(|i| i as u32)
    });
    let mut run = 0;
    let mut stuck_at_min = false;
    for w in windows.iter().skip(from as usize) {
        if w.limit <= min_limit {
            run += 1;
            stuck_at_min |= run >= 3;
        } else {
            run = 0;
        }
    }
    let half = &windows[windows.len() / 2..];
    let mean = |ws: &[WindowStats]| {
        ws.iter().map(|w| f64::from(w.limit)).sum::<f64>() / ws.len().max(1) as f64
    };
    let max = half.iter().map(|w| w.limit).max().unwrap_or(0);
    let min = half.iter().map(|w| w.limit).min().unwrap_or(0);
    let spread = f64::from(max - min) / mean(half).max(1.0);
    let ideal = half.iter().map(|w| w.ideal).sum::<f64>() / half.len().max(1) as f64;
    let limit_over_ideal = mean(half) / ideal.max(1.0);
    let tenth = windows.len() / 10;
    let creep = mean(&windows[windows.len() - tenth..]) / mean(&windows[tenth..2 * tenth]).max(1.0);
    RunResult {
        algo,
        scenario: scenario.name,
        windows,
        goodput_pct,
        p99_ratio,
        to_ideal,
        recovery,
        has_recovery: scenario.recovery_phase.is_some(),
        stuck_at_min,
        spread,
        creep,
        limit_over_ideal,
    }
}

/// Runs every controller through every scenario with `seed`.
#[must_use]
pub fn run_all(algos: &[Algo], seed: u64) -> Vec<RunResult> {
    let mut out = Vec::new();
    for scenario in Scenario::all() {
        for &algo in algos {
            out.push(run(algo, &scenario, seed));
        }
    }
    out
}
