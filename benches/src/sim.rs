//! A deterministic discrete-event simulation of clients contending on one optimistic-concurrency
//! resource, in the style of the AWS Architecture Blog's "Exponential Backoff and Jitter"
//! (Marc Brooker, 2015), driving keel's own [`Backoff`] machines in virtual time.
//!
//! # The model
//!
//! One server holds one row with a version number. Each of `n` clients wants to update the row
//! exactly once. All clients start at time 0. A client:
//!
//! 1. sends a **read**; the server answers with the current version;
//! 2. sends a **write** carrying that version; the server accepts it only if the version is still
//!    current (then bumps it), otherwise rejects it (another client wrote in between);
//! 3. on a rejection asks its [`Backoff`] for the next retry instant, waits until then and starts
//!    again at 1; on success it stops.
//!
//! Every message crosses a network whose one-way delay is `|N(10 ms, 2 ms)|`, the blog's
//! numbers. The server is a single queue-less point: requests take effect at their arrival
//! instant. A **call** is one write; the **completion time** is the instant the last client
//! learns its write succeeded. Each configuration is run over many trials, each with its own
//! seed, and averaged.
//!
//! # The strategies
//!
//! All are keel [`BackoffConfig`]s with unlimited attempts and a 2 s cap (the blog's cap):
//!
//! | name | keel config |
//! | --- | --- |
//! | none | `constant(0)`: retry at once |
//! | exponential | `exponential(10 ms, 2 s)`, `Jitter::None` |
//! | equal jitter | the same, `Jitter::Equal` |
//! | full jitter | the same, `Jitter::Full` |
//! | decorrelated | `exponential(5 ms, 2 s)`, `Jitter::Decorrelated` |
//!
//! The blog's parameters are a 5 ms base and a 2 s cap. Its exponential schedule is
//! `min(cap, base * 2^attempt)` counting attempts from 1, so its first retry waits 10 ms; keel's
//! `d(1)` is its base, so the exponential strategies use a 10 ms base to give the same schedule.
//! Decorrelated jitter uses the base directly (`min(cap, uniform[base, 3 * prev])`, `prev`
//! starting at the base) in both, so it keeps the blog's 5 ms. Each client's machine is seeded
//! differently: clients with the same seed would draw the same jitter and retry in lockstep.
//!
//! Everything is deterministic: the network and the machines draw from [`Rng`]s seeded from the
//! trial number, so a run prints the same table every time.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt::Write as _;
use std::time::Duration;

use keel_core::backoff::{Backoff, BackoffConfig, Jitter, RetryDecision};
use keel_core::rng::Rng;
use keel_core::time::Instant;

/// The network's mean one-way delay (the blog's 10 ms).
pub const NET_MEAN: Duration = Duration::from_millis(10);
/// The standard deviation of the network's one-way delay (the blog's 2 ms).
pub const NET_SD: Duration = Duration::from_millis(2);
/// The exponential strategies' first delay.
pub const BASE: Duration = Duration::from_millis(10);
/// Decorrelated jitter's base, the floor of its draws (the blog's 5 ms base).
pub const DECORRELATED_BASE: Duration = Duration::from_millis(5);
/// Every strategy's cap (the blog's 2 s).
pub const CAP: Duration = Duration::from_secs(2);

/// A backoff strategy under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Retry at once.
    None,
    /// Capped exponential, no jitter.
    Exponential,
    /// Capped exponential, equal jitter.
    EqualJitter,
    /// Capped exponential, full jitter.
    FullJitter,
    /// Decorrelated jitter.
    Decorrelated,
}

impl Strategy {
    /// Every strategy, in the order the blog lists them.
    pub const ALL: [Strategy; 5] = [
        Strategy::None,
        Strategy::Exponential,
        Strategy::EqualJitter,
        Strategy::FullJitter,
        Strategy::Decorrelated,
    ];

    /// A short display name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Strategy::None => "none",
            Strategy::Exponential => "exponential",
            Strategy::EqualJitter => "equal jitter",
            Strategy::FullJitter => "full jitter",
            Strategy::Decorrelated => "decorrelated",
        }
    }

    /// The keel backoff configuration of this strategy, with the given seed.
    #[must_use]
    pub fn config(self, seed: u64) -> BackoffConfig {
        let builder = match self {
            Strategy::None => BackoffConfig::constant(Duration::ZERO).jitter(Jitter::None),
            Strategy::Exponential => BackoffConfig::exponential(BASE, CAP).jitter(Jitter::None),
            Strategy::EqualJitter => BackoffConfig::exponential(BASE, CAP).jitter(Jitter::Equal),
            Strategy::FullJitter => BackoffConfig::exponential(BASE, CAP).jitter(Jitter::Full),
            Strategy::Decorrelated => {
                BackoffConfig::exponential(DECORRELATED_BASE, CAP).jitter(Jitter::Decorrelated)
            }
        };
        match builder.unlimited_attempts().seed(seed).build() {
            Ok(config) => config,
            // Every strategy above is a valid configuration; a failure here is a keel bug.
            Err(e) => panic!("invalid backoff config for {}: {e}", self.name()),
        }
    }
}

/// The outcome of one trial.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trial {
    /// Writes sent (successful and rejected).
    pub calls: u64,
    /// The instant the last client learnt of its success.
    pub completion: Instant,
}

/// Means over several trials.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// The strategy.
    pub strategy: Strategy,
    /// The number of clients.
    pub clients: usize,
    /// Mean writes per trial.
    pub calls: f64,
    /// Mean completion time per trial, in milliseconds.
    pub completion_ms: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// A client's read reaches the server.
    ServerRead { client: usize },
    /// The server's answer to a read reaches the client.
    ReadReply { client: usize, version: u64 },
    /// A client's write reaches the server.
    ServerWrite { client: usize, version: u64 },
    /// The server's answer to a write reaches the client.
    WriteReply { client: usize, ok: bool },
}

/// The network: a one-way delay of `|N(mean, sd)|`, drawn with Box-Muller from a seeded [`Rng`].
struct Net {
    rng: Rng,
}

impl Net {
    fn delay(&mut self) -> Duration {
        // Box-Muller; 1 - u keeps the logarithm's argument in (0, 1].
        let u1 = 1.0 - self.rng.next_f64();
        let u2 = self.rng.next_f64();
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        let ns = (NET_MEAN.as_nanos() as f64 + z * NET_SD.as_nanos() as f64).abs();
        Duration::from_nanos(ns as u64)
    }
}

/// Mixes a trial seed and a client index into a machine seed.
fn client_seed(trial_seed: u64, client: usize) -> u64 {
    let mut rng = Rng::new(trial_seed ^ (client as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    rng.next_u64()
}

/// Runs one trial: `clients` clients, one strategy, one seed.
#[must_use]
pub fn run_trial(strategy: Strategy, clients: usize, seed: u64) -> Trial {
    let start = Instant::ZERO;
    let mut net = Net {
        rng: Rng::new(seed),
    };
    let mut machines: Vec<Backoff> = (0..clients)
        .map(|c| Backoff::new(strategy.config(client_seed(seed, c)), start))
        .collect();
    // (time, sequence, event): the sequence number keeps ties in send order (FIFO).
    let mut queue: BinaryHeap<Reverse<(Instant, u64, Event)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut send = |queue: &mut BinaryHeap<_>, at: Instant, event: Event| {
        seq += 1;
        queue.push(Reverse((at, seq, event)));
    };
    for client in 0..clients {
        let at = start + net.delay();
        send(&mut queue, at, Event::ServerRead { client });
    }
    let mut version = 0u64;
    let mut trial = Trial::default();
    while let Some(Reverse((now, _, event))) = queue.pop() {
        match event {
            Event::ServerRead { client } => {
                let at = now + net.delay();
                send(&mut queue, at, Event::ReadReply { client, version });
            }
            Event::ReadReply { client, version } => {
                let at = now + net.delay();
                send(&mut queue, at, Event::ServerWrite { client, version });
            }
            Event::ServerWrite {
                client,
                version: seen,
            } => {
                trial.calls += 1;
                let ok = seen == version;
                if ok {
                    version += 1;
                }
                let at = now + net.delay();
                send(&mut queue, at, Event::WriteReply { client, ok });
            }
            Event::WriteReply { client, ok } => {
                if ok {
                    trial.completion = trial.completion.max(now);
                    continue;
                }
                let Some(machine) = machines.get_mut(client) else {
                    continue;
                };
                match machine.next_delay(now) {
                    RetryDecision::RetryAt(t) => {
                        let at = t + net.delay();
                        send(&mut queue, at, Event::ServerRead { client });
                    }
                    // Unlimited attempts and no elapsed-time budget: never happens.
                    RetryDecision::GiveUp(reason) => {
                        panic!("client {client} gave up ({reason:?}) with unlimited attempts")
                    }
                }
            }
        }
    }
    trial
}

/// Runs `trials` trials (seeds `base_seed`, `base_seed + 1`, ...) and averages them.
#[must_use]
pub fn run(strategy: Strategy, clients: usize, trials: u64, base_seed: u64) -> Summary {
    let mut calls = 0u64;
    let mut time_ns = 0u128;
    for t in 0..trials.max(1) {
        let trial = run_trial(strategy, clients, base_seed.wrapping_add(t));
        calls += trial.calls;
        time_ns += u128::from(trial.completion.as_nanos());
    }
    let n = trials.max(1) as f64;
    Summary {
        strategy,
        clients,
        calls: calls as f64 / n,
        completion_ms: time_ns as f64 / n / 1e6,
    }
}

/// A Markdown table: one row per client count, calls and completion time per strategy.
#[must_use]
pub fn table(results: &[Summary], clients: &[usize]) -> String {
    let mut out = String::new();
    let _ = write!(out, "| clients | metric |");
    for s in Strategy::ALL {
        let _ = write!(out, " {} |", s.name());
    }
    out.push('\n');
    out.push_str("| ---: | --- |");
    for _ in Strategy::ALL {
        out.push_str(" ---: |");
    }
    out.push('\n');
    for &n in clients {
        for (metric, pick) in [
            ("calls", (|s: &Summary| s.calls) as fn(&Summary) -> f64),
            ("completion (ms)", |s: &Summary| s.completion_ms),
        ] {
            let _ = write!(out, "| {n} | {metric} |");
            for s in Strategy::ALL {
                match results.iter().find(|r| r.strategy == s && r.clients == n) {
                    Some(r) => {
                        let _ = write!(out, " {:.0} |", pick(r));
                    }
                    None => out.push_str(" - |"),
                }
            }
            out.push('\n');
        }
    }
    out
}

const COLOURS: [&str; 5] = ["#d62728", "#7f7f7f", "#2ca02c", "#1f77b4", "#ff7f0e"];

/// A plain SVG with two panels (completion time and calls against clients), one line per
/// strategy.
#[must_use]
pub fn svg(results: &[Summary], trials: u64) -> String {
    let (w, h) = (960.0, 440.0);
    let mut out = String::new();
    crate::cli::svg_start(
        &mut out,
        (w, h),
        12,
        20.0,
        &format!("OCC contention, keel backoff machines in virtual time (mean of {trials} seeded trials)"),
    );
    panel(&mut out, results, 60.0, "completion time (ms)", |s| {
        s.completion_ms
    });
    panel(&mut out, results, 540.0, "total calls (writes)", |s| {
        s.calls
    });
    // Legend.
    for (i, s) in Strategy::ALL.iter().enumerate() {
        let x = 80.0 + i as f64 * 170.0;
        let y = h - 14.0;
        let _ = writeln!(
            out,
            r#"<line x1="{x}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-width="3"/><text x="{}" y="{y}">{}</text>"#,
            y - 4.0,
            x + 24.0,
            y - 4.0,
            COLOURS[i],
            x + 30.0,
            s.name()
        );
    }
    out.push_str("</svg>\n");
    out
}

fn panel(out: &mut String, results: &[Summary], x0: f64, title: &str, value: fn(&Summary) -> f64) {
    let (pw, ph, top) = (380.0, 320.0, 50.0);
    let max_clients = results.iter().map(|r| r.clients).max().unwrap_or(1) as f64;
    // A log scale: plain exponential takes ten times longer than the jittered strategies.
    let lo = decade_floor(results.iter().map(value).fold(f64::MAX, f64::min));
    let hi = decade_ceiling(results.iter().map(value).fold(1.0, f64::max)).max(lo + 1);
    let px = |c: usize| x0 + c as f64 / max_clients * pw;
    let py = |v: f64| top + ph - (v.max(1.0).log10() - f64::from(lo)) / f64::from(hi - lo) * ph;
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle" font-size="13">{title}, log scale</text>"#,
        x0 + pw / 2.0,
        top - 10.0
    );
    let _ = writeln!(
        out,
        r##"<rect x="{x0}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##
    );
    for e in lo..=hi {
        let v = 10f64.powi(e);
        let y = py(v);
        let _ = writeln!(
            out,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            x0 + pw,
            x0 - 4.0,
            y + 4.0,
            format_axis(v)
        );
    }
    let mut ticks: Vec<usize> = results.iter().map(|r| r.clients).collect();
    ticks.sort_unstable();
    ticks.dedup();
    for c in &ticks {
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">{c}</text>"#,
            px(*c),
            top + ph + 16.0
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">clients</text>"#,
        x0 + pw / 2.0,
        top + ph + 32.0
    );
    for (i, s) in Strategy::ALL.iter().enumerate() {
        let mut points: Vec<&Summary> = results.iter().filter(|r| r.strategy == *s).collect();
        points.sort_by_key(|r| r.clients);
        let path: Vec<String> = points
            .iter()
            .map(|r| format!("{:.1},{:.1}", px(r.clients), py(value(r))))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>"#,
            path.join(" "),
            COLOURS[i]
        );
        for r in points {
            let _ = writeln!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{}"/>"#,
                px(r.clients),
                py(value(r)),
                COLOURS[i]
            );
        }
    }
}

/// The exponent of the largest power of ten at or below `v` (at least 0).
fn decade_floor(v: f64) -> i32 {
    let mut e = 0;
    while 10f64.powi(e + 1) <= v {
        e += 1;
    }
    e
}

/// The exponent of the smallest power of ten at or above `v` (at least 0).
fn decade_ceiling(v: f64) -> i32 {
    let mut e = 0;
    while 10f64.powi(e) < v {
        e += 1;
    }
    e
}

fn format_axis(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.0}k", v / 1000.0)
    } else {
        format!("{v:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trial_is_deterministic() {
        let a = run_trial(Strategy::FullJitter, 20, 42);
        let b = run_trial(Strategy::FullJitter, 20, 42);
        assert_eq!(a, b);
        assert_ne!(a, run_trial(Strategy::FullJitter, 20, 43));
    }

    #[test]
    fn one_client_writes_once_in_four_network_hops() {
        let t = run_trial(Strategy::Exponential, 1, 7);
        assert_eq!(t.calls, 1);
        // Four hops of about 10 ms each.
        let ms = t.completion.as_nanos() / 1_000_000;
        assert!((20..=60).contains(&ms), "{ms} ms");
    }

    #[test]
    fn every_client_succeeds_once_so_calls_are_at_least_clients() {
        for s in Strategy::ALL {
            let t = run_trial(s, 10, 1);
            assert!(t.calls >= 10, "{s:?}: {}", t.calls);
        }
    }

    #[test]
    fn jitter_finishes_sooner_than_plain_exponential_and_full_jitter_works_least() {
        let expo = run(Strategy::Exponential, 50, 20, 0);
        let full = run(Strategy::FullJitter, 50, 20, 0);
        let equal = run(Strategy::EqualJitter, 50, 20, 0);
        assert!(full.completion_ms < expo.completion_ms);
        assert!(full.calls < expo.calls);
        assert!(full.calls < equal.calls);
    }

    #[test]
    fn decades_bracket_the_values() {
        assert_eq!(decade_floor(380.0), 2);
        assert_eq!(decade_ceiling(380.0), 3);
        assert_eq!(decade_floor(1000.0), 3);
        assert_eq!(decade_ceiling(1000.0), 3);
        assert_eq!(decade_floor(0.5), 0);
    }
}
