//! The priorities scenario: 3× offered load, 20 % critical, 50 % default, 30 % sheddable,
//! behind keel's admission (a [`FifoSemaphore`] with [`Criticality`] classes and adaptive
//! LIFO + CoDel) whose limit keel's default controller sets.
//!
//! The same service as the other scenarios (50 servers, 10 ms ± 10 %, 1 s client timeout). An
//! arrival asks the bulkhead for a slot with its class: it runs at once, waits in the queue
//! (at most [`MAX_WAIT`], fewer than [`MAX_QUEUE`] waiting), or is shed. A queued call of a
//! more important class is promoted first and pushes a less important one out of a full
//! queue; a standing queue turns LIFO and sheds non-critical waiters older than the CoDel target
//! (5 ms); critical waiters only leave at `MAX_WAIT`. The controller sees each call's time in
//! service (admission to completion; the queue wait is the bulkhead's, not the service's), and
//! its limit is the bulkhead's `max_concurrent` after every sample.
//!
//! The same run without classes (every call [`Criticality::Default`], FIFO) is the baseline:
//! the shedding then falls on every class alike.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

use keel_core::adaptive::{Adaptive, AdaptiveConfig, SampleOutcome};
use keel_core::bulkhead::{
    Admission, BulkheadConfig, BulkheadEvent, BulkheadPermit, Criticality, FifoSemaphore,
    QueueDiscipline, Release,
};
use keel_core::rng::Rng;
use keel_core::time::Instant;

use super::{Histogram, SERVERS, SERVICE, TIMEOUT, WINDOW};

/// Offered load, as a multiple of capacity.
pub const LOAD: f64 = 3.0;
/// The class mix, in percent: critical, default, sheddable.
pub const MIX: [(Criticality, u32); 3] = [
    (Criticality::Critical, 20),
    (Criticality::Default, 50),
    (Criticality::Sheddable, 30),
];
/// Windows of 100 ms simulated.
pub const WINDOWS: u32 = 300;
/// The bulkhead's queue bound.
pub const MAX_QUEUE: usize = 64;
/// The bulkhead's `max_wait`.
pub const MAX_WAIT: Duration = Duration::from_millis(100);
/// The share reserved for critical work.
pub const RESERVED_CRITICAL_PERCENT: u8 = 10;

/// One class's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ClassResult {
    /// Arrivals.
    pub offered: u64,
    /// Calls that completed within the client's timeout.
    pub succeeded: u64,
    /// Calls shed by the bulkhead (at once or from the queue).
    pub shed: u64,
    /// Calls admitted that the client gave up on.
    pub timed_out: u64,
    /// p99 latency (arrival to completion) of the successes over [`SERVICE`].
    pub p99_ratio: f64,
}

impl ClassResult {
    /// Successes over arrivals, in percent.
    #[must_use]
    pub fn success_pct(&self) -> f64 {
        100.0 * self.succeeded as f64 / (self.offered as f64).max(1.0)
    }

    /// Shed over arrivals, in percent.
    #[must_use]
    pub fn shed_pct(&self) -> f64 {
        100.0 * self.shed as f64 / (self.offered as f64).max(1.0)
    }
}

/// One run's figures.
#[derive(Clone, Debug, PartialEq)]
pub struct PriorityResult {
    /// Whether the calls carried their class (`false`: the baseline, all default, FIFO).
    pub classes: bool,
    /// Per class, in [`MIX`] order.
    pub by_class: [ClassResult; 3],
    /// Successes over capacity, in percent.
    pub goodput_pct: f64,
    /// The mean limit over the second half, over the ideal (50).
    pub limit_over_ideal: f64,
}

impl PriorityResult {
    /// The figures of `class`.
    #[must_use]
    pub fn class(&self, class: Criticality) -> ClassResult {
        MIX.iter()
            .zip(self.by_class)
            .find(|((c, _), _)| *c == class)
            .map(|(_, r)| r)
            .unwrap_or_default()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Done {
    at: u64,
    admitted: u64,
    arrived: u64,
    class: usize,
    timed_out: bool,
}

fn class_index(class: Criticality) -> usize {
    MIX.iter().position(|(c, _)| *c == class).unwrap_or(1)
}

/// Runs the scenario with `seed`, with the calls' classes (`classes`) or all default (the
/// baseline).
#[must_use]
pub fn run_priorities(seed: u64, classes: bool) -> PriorityResult {
    let t0 = Instant::from_secs(1);
    let window_ns = WINDOW.as_nanos() as u64;
    let end = t0.as_nanos() + window_ns * u64::from(WINDOWS);
    let config = AdaptiveConfig::builder().initial_limit(20).build();
    // The defaults with an initial limit of 20 are valid; the fallback is the same defaults.
    let mut controller = Adaptive::new(config.unwrap_or_default(), t0);
    let limit = |c: &Adaptive| usize::try_from(c.limit()).unwrap_or(usize::MAX);
    let mut builder = BulkheadConfig::builder()
        .max_concurrent(limit(&controller))
        .max_queue(MAX_QUEUE)
        .max_wait(MAX_WAIT);
    if classes {
        builder = builder
            .reserved_critical_percent(RESERVED_CRITICAL_PERCENT)
            .queue_discipline(QueueDiscipline::adaptive_lifo());
    }
    // Every setting above is in range (checked by the tests, which run this).
    let built = builder
        .build()
        .and_then(|config| FifoSemaphore::<MAX_QUEUE>::new(config, t0));
    let Ok(mut bh) = built else {
        return PriorityResult {
            classes,
            by_class: [ClassResult::default(); 3],
            goodput_pct: 0.0,
            limit_over_ideal: 0.0,
        };
    };
    let mut permits: Vec<BulkheadPermit> = Vec::new();
    let mut waiting: HashMap<u64, (u64, usize)> = HashMap::new();
    let mut arrivals = Rng::new(seed);
    let mut mix = Rng::new(seed.rotate_left(29) ^ 0xc1a5);
    let mut service = Rng::new(seed.rotate_left(17) ^ 0x5e41);
    let mut free_at: Vec<u64> = vec![t0.as_nanos(); SERVERS as usize];
    let mut done: BinaryHeap<Reverse<Done>> = BinaryHeap::new();
    let mut by_class = [ClassResult::default(); 3];
    let mut hists = [Histogram::new(), Histogram::new(), Histogram::new()];
    let rate = LOAD * f64::from(SERVERS) / SERVICE.as_secs_f64();
    let gap = |rng: &mut Rng| -> u64 {
        let u = 1.0 - rng.next_f64();
        (-u.ln() / rate * 1e9) as u64
    };
    let mut next_arrival = t0.as_nanos() + gap(&mut arrivals);
    let mut next_window = t0.as_nanos() + window_ns;
    let mut limits: Vec<u32> = Vec::new();

    // Starts the service of a call admitted at `now`.
    let mut start = |now: u64, arrived: u64, class: usize, done: &mut BinaryHeap<Reverse<Done>>| {
        let (slot, free) = free_at
            .iter()
            .copied()
            .enumerate()
            .min_by_key(|&(_, t)| t)
            .unwrap_or((0, now));
        let begin = free.max(now);
        let noise = (service.next_f64() * 2.0 - 1.0) * 0.1;
        let s = (SERVICE.as_nanos() as f64 * (1.0 + noise)).max(1.0) as u64;
        if let Some(f) = free_at.get_mut(slot) {
            *f = begin + s;
        }
        let deadline = arrived + TIMEOUT.as_nanos() as u64;
        let complete = begin + s;
        done.push(Reverse(Done {
            at: complete.min(deadline).max(now),
            admitted: now,
            arrived,
            class,
            timed_out: complete > deadline,
        }));
    };

    loop {
        let next_done = done.peek().map_or(u64::MAX, |d| d.0.at);
        let next_ctl = controller
            .poll_timeout()
            .map_or(u64::MAX, Instant::as_nanos);
        let next_bh = bh.poll_timeout().map_or(u64::MAX, Instant::as_nanos);
        let now = next_arrival
            .min(next_done)
            .min(next_ctl)
            .min(next_bh)
            .min(next_window);
        if now >= end {
            break;
        }
        let at = Instant::from_nanos(now);
        if now == next_window {
            limits.push(controller.limit());
            next_window += window_ns;
        } else if now == next_done {
            let Some(Reverse(d)) = done.pop() else { break };
            let outcome = if d.timed_out {
                if let Some(r) = by_class.get_mut(d.class) {
                    r.timed_out += 1;
                }
                SampleOutcome::TimedOut
            } else {
                if let Some(r) = by_class.get_mut(d.class) {
                    r.succeeded += 1;
                }
                if let Some(h) = hists.get_mut(d.class) {
                    h.record(now - d.arrived);
                }
                SampleOutcome::Success
            };
            let in_flight = u32::try_from(bh.in_flight()).unwrap_or(u32::MAX);
            let _ = controller.on_sample(
                at,
                Duration::from_nanos(now - d.admitted),
                outcome,
                in_flight,
            );
            while controller.poll_event().is_some() {}
            if let Some(p) = permits.pop() {
                if let Release::Promoted { permit, .. } = bh.on_release(at, p) {
                    permits.push(permit);
                }
            }
            bh.set_max_concurrent(at, limit(&controller));
            while let Some((_, permit)) = bh.promote(at) {
                permits.push(permit);
            }
        } else if now == next_ctl {
            let _ = controller.handle_timeout(at);
            while controller.poll_event().is_some() {}
            bh.set_max_concurrent(at, limit(&controller));
            while let Some((_, permit)) = bh.promote(at) {
                permits.push(permit);
            }
        } else if now == next_bh {
            bh.handle_timeout(at);
        } else {
            next_arrival = now + gap(&mut arrivals);
            let pick = (mix.next_f64() * 100.0) as u32;
            let mut acc = 0;
            let class = MIX
                .iter()
                .find(|(_, pct)| {
                    acc += pct;
                    pick < acc
                })
                .map_or(Criticality::Sheddable, |(c, _)| *c);
            let ci = class_index(class);
            if let Some(r) = by_class.get_mut(ci) {
                r.offered += 1;
            }
            let asked = if classes { class } else { Criticality::Default };
            match bh.acquire_with(at, asked) {
                Admission::Admitted(p) => {
                    permits.push(p);
                    start(now, now, ci, &mut done);
                }
                Admission::Queued { waiter, .. } => {
                    waiting.insert(waiter.get(), (now, ci));
                }
                Admission::Rejected(_) => {
                    if let Some(r) = by_class.get_mut(ci) {
                        r.shed += 1;
                    }
                }
            }
        }
        // Promotions start their calls; sheds count against their class.
        while let Some(ev) = bh.poll_event() {
            match ev {
                BulkheadEvent::Promoted { waiter } => {
                    if let Some((arrived, ci)) = waiting.remove(&waiter.get()) {
                        start(now, arrived, ci, &mut done);
                    }
                }
                BulkheadEvent::Expired { waiter } | BulkheadEvent::Shed { waiter, .. } => {
                    if let Some((_, ci)) = waiting.remove(&waiter.get()) {
                        if let Some(r) = by_class.get_mut(ci) {
                            r.shed += 1;
                        }
                    }
                }
                _ => {}
            }
        }
    }
    for (r, h) in by_class.iter_mut().zip(&hists) {
        r.p99_ratio = h.quantile_nanos(0.99) as f64 / SERVICE.as_nanos() as f64;
    }
    let good: u64 = by_class.iter().map(|r| r.succeeded).sum();
    let capacity = f64::from(SERVERS) / SERVICE.as_secs_f64() * WINDOW.as_secs_f64();
    let goodput_pct = 100.0 * good as f64 / (capacity * f64::from(WINDOWS));
    let half = &limits[limits.len() / 2..];
    let mean = half.iter().map(|&l| f64::from(l)).sum::<f64>() / half.len().max(1) as f64;
    PriorityResult {
        classes,
        by_class,
        goodput_pct,
        limit_over_ideal: mean / f64::from(SERVERS),
    }
}

/// The priorities table: one row per class, with classes and without.
#[must_use]
pub fn priority_table(results: &[PriorityResult]) -> String {
    use std::fmt::Write as _;
    let mut out = String::from(
        "| scenario | admission | class | offered | succeeded % | shed % | p99 / minRTT | goodput % | limit / ideal |\n\
         | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in results {
        let admission = if r.classes {
            "keel gradient + classes, adaptive LIFO"
        } else {
            "keel gradient, no classes (FIFO)"
        };
        for ((class, pct), c) in MIX.iter().zip(r.by_class) {
            let _ = writeln!(
                out,
                "| priorities-3x | {admission} | {class} ({pct} %) | {} | {:.1} | {:.1} | {:.2} | {:.1} | {:.2} |",
                c.offered,
                c.success_pct(),
                c.shed_pct(),
                c.p99_ratio,
                r.goodput_pct,
                r.limit_over_ideal,
            );
        }
    }
    out
}
