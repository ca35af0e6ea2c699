//! proptest invariants of the rate waiting queue ([`RateWaiters`]) under arbitrary arrivals,
//! polls, cancellations, direct checks and clock steps:
//!
//! - waiters and direct checks together never exceed the GCRA: over any window `[a, b]` of
//!   the instants admissions are accounted at (a waiter's slot, a check's `now`), at most
//!   `burst + floor((b - a) / T)` requests;
//! - single requests are served in order: their slots follow their arrival order;
//! - no lost wake-up: a waiter whose slot appears or moves earlier has been woken;
//! - nobody is stranded: in the end every waiter still queued is admitted.
// Runs with `std` only: `keel_core::sync::rate_wait` exists only there (its queue sits behind
// a mutex, and keel-core has no mutex without std), so the `no_std` runs, `alloc` included,
// compile this file to nothing.
#![cfg(feature = "std")]

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use keel_core::rate::Quota;
use keel_core::sync::gcra::SharedRateLimiter;
use keel_core::sync::rate_wait::{Acquire, RateWaiter, RateWaiters};
use keel_core::Instant;
use proptest::prelude::*;

#[path = "support/props.rs"]
mod props;

#[derive(Clone, Debug)]
enum Op {
    /// A waiter for a batch of `n` (or `n > burst`, which fails at once).
    Arrive(u32),
    /// Polls waiter `i % live`.
    Poll(usize),
    /// Drops waiter `i % live`.
    Cancel(usize),
    /// A direct check of `n`.
    Check(u32),
    /// Moves the clock forward (µs).
    Advance(u64),
}

fn op(batches: bool) -> impl Strategy<Value = Op> {
    let n = if batches { 1u32..=4 } else { 1u32..=1 };
    prop_oneof![
        4 => n.clone().prop_map(Op::Arrive),
        4 => any::<usize>().prop_map(Op::Poll),
        2 => any::<usize>().prop_map(Op::Cancel),
        1 => n.prop_map(Op::Check),
        3 => (0u64..3_000).prop_map(Op::Advance),
    ]
}

/// `count` per `period_ms` ms (T from 0.2 ms to 10 ms, around the look-ahead), burst 1..=4.
fn quota() -> impl Strategy<Value = Quota> {
    (1u32..=5, 1u64..=10, 1u32..=4).prop_filter_map("valid quota", |(count, period, burst)| {
        Quota::new(NonZeroU32::new(count)?, Duration::from_millis(period))
            .ok()?
            .with_burst(NonZeroU32::new(burst)?)
            .ok()
    })
}

#[derive(Default)]
struct Count(AtomicUsize);
impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

struct Live {
    /// Arrival order.
    seq: usize,
    n: u32,
    waiter: RateWaiter,
    wakes: Arc<Count>,
    waker: Waker,
    /// Wake count and slot as of the last poll (or the arrival).
    seen: (usize, Option<Instant>),
}

struct Sim {
    now: Instant,
    queue: RateWaiters,
    live: Vec<Live>,
    next_seq: usize,
    /// `(accounted instant, n, arrival seq of a waiter)`.
    admitted: Vec<(Instant, u32, Option<usize>)>,
}

impl Sim {
    fn poll(&mut self, i: usize) -> Result<(), TestCaseError> {
        let now = self.now;
        let live = &mut self.live[i];
        let woken = live.wakes.0.load(Ordering::SeqCst) > live.seen.0;
        // What others did to this waiter's slot since its last poll: a slot that appeared or
        // moved earlier must have come with a wake (one it reserves on its own poll needs none).
        let before = live.waiter.slot();
        let earlier = match (live.seen.1, before) {
            (None, Some(_)) => true,
            (Some(old), Some(new)) => new < old,
            _ => false,
        };
        prop_assert!(
            !earlier || woken,
            "waiter {} got slot {before:?} unwoken",
            live.seq
        );
        let polled = live.waiter.poll(&mut Context::from_waker(&live.waker), now);
        let slot = live.waiter.slot();
        live.seen = (live.wakes.0.load(Ordering::SeqCst), slot);
        match polled {
            Poll::Ready(Ok(())) => {
                let at = slot.expect("an admitted waiter had a slot");
                prop_assert!(at <= now, "admitted before its slot");
                let live = self.live.swap_remove(i);
                self.admitted.push((at, live.n, Some(live.seq)));
            }
            Poll::Ready(Err(_)) => {
                self.live.swap_remove(i);
            }
            Poll::Pending => {}
        }
        Ok(())
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Arrive(n) => match self.queue.acquire(self.now, n) {
                Acquire::Ready(Ok(())) => self.admitted.push((self.now, n, None)),
                Acquire::Ready(Err(_)) => {}
                Acquire::Wait(waiter) => {
                    let wakes = Arc::new(Count::default());
                    let waker = Waker::from(Arc::clone(&wakes));
                    let seen = (0, waiter.slot());
                    self.live.push(Live {
                        seq: self.next_seq,
                        n,
                        waiter,
                        wakes,
                        waker,
                        seen,
                    });
                    self.next_seq += 1;
                    // As the driver does: the first poll follows at once and stores the waker.
                    self.poll(self.live.len() - 1)?;
                }
            },
            Op::Poll(i) if !self.live.is_empty() => self.poll(i % self.live.len())?,
            Op::Cancel(i) if !self.live.is_empty() => {
                let i = i % self.live.len();
                drop(self.live.swap_remove(i));
            }
            Op::Check(n) => {
                if self.queue.limiter().try_acquire_n(self.now, n).is_ok() {
                    self.admitted.push((self.now, n, None));
                }
            }
            Op::Advance(us) => self.now += Duration::from_micros(us),
            Op::Poll(_) | Op::Cancel(_) => {}
        }
        Ok(())
    }

    /// Runs the clock on, polling every waiter, until all are admitted.
    fn finish(&mut self, t: Duration) -> Result<(), TestCaseError> {
        for _ in 0..10_000 {
            if self.live.is_empty() {
                return Ok(());
            }
            self.now += t;
            for i in (0..self.live.len()).rev() {
                self.poll(i)?;
            }
        }
        prop_assert!(false, "{} waiters stranded", self.live.len());
        Ok(())
    }
}

fn run(quota: Quota, ops: &[Op]) -> Result<Sim, TestCaseError> {
    run_checking(quota, ops, |_| Ok(()))
}

/// [`run`], checking `invariant` after every step.
fn run_checking(
    quota: Quota,
    ops: &[Op],
    invariant: impl Fn(&Sim) -> Result<(), TestCaseError>,
) -> Result<Sim, TestCaseError> {
    let t0 = Instant::from_secs(1);
    let limiter = Arc::new(SharedRateLimiter::counted(quota, t0));
    let mut sim = Sim {
        now: t0,
        queue: RateWaiters::new(limiter),
        live: Vec::new(),
        next_seq: 0,
        admitted: Vec::new(),
    };
    for op in ops {
        sim.step(op)?;
        invariant(&sim)?;
    }
    sim.finish(quota.emission_interval())?;
    Ok(sim)
}

/// Over every window of accounted instants, at most `burst + floor(width / T)` requests.
fn check_window_bound(
    quota: Quota,
    admitted: &[(Instant, u32, Option<usize>)],
) -> Result<(), TestCaseError> {
    let mut events: Vec<(u64, u32)> = admitted
        .iter()
        .map(|&(at, n, _)| (at.as_nanos(), n))
        .collect();
    events.sort_unstable();
    let t = quota.emission_interval().as_nanos() as u64;
    let burst = u64::from(quota.burst().get());
    for i in 0..events.len() {
        let mut total = 0u64;
        for j in i..events.len() {
            total += u64::from(events[j].1);
            let width = events[j].0 - events[i].0;
            prop_assert!(
                total <= burst + width / t,
                "{total} admitted in {width} ns (T = {t} ns, burst {burst})"
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(props::config(300, "proptest-regressions/rate_wait_props.txt"))]

    /// Waiters (batches included) and direct checks never exceed the GCRA, no wake-up is lost
    /// and nobody is stranded.
    #[test]
    fn waiters_and_checks_never_exceed_the_gcra(
        quota in quota(),
        ops in prop::collection::vec(op(true), 1..200),
    ) {
        let sim = run(quota, &ops)?;
        check_window_bound(quota, &sim.admitted)?;
    }

    /// Single requests are admitted in slots that follow their arrival order.
    #[test]
    fn single_requests_are_served_in_arrival_order(
        quota in quota(),
        ops in prop::collection::vec(op(false), 1..200),
    ) {
        let sim = run_checking(quota, &ops, |sim| {
            // The queued waiters' slots follow their arrival order (no slot: behind them all).
            let mut live: Vec<(usize, Option<Instant>)> =
                sim.live.iter().map(|l| (l.seq, l.waiter.slot())).collect();
            live.sort_unstable_by_key(|l| l.0);
            for w in live.windows(2) {
                let ordered = match (w[0].1, w[1].1) {
                    (Some(a), Some(b)) => a <= b,
                    (None, Some(_)) => false,
                    _ => true,
                };
                prop_assert!(ordered, "queued out of order: {live:?}");
            }
            Ok(())
        })?;
        check_window_bound(quota, &sim.admitted)?;
        let mut by_arrival: Vec<(usize, Instant)> = sim
            .admitted
            .iter()
            .filter_map(|&(at, _, seq)| seq.map(|s| (s, at)))
            .collect();
        by_arrival.sort_unstable();
        // Without cancellations, admissions follow arrival order too. (With them, a slot in
        // the past freed by a waiter that was never polled goes to the next one in line,
        // which may then hold an earlier slot than one admitted before it: FIFO is about
        // the waiters still queued, checked above.)
        if !ops.iter().any(|op| matches!(op, Op::Cancel(_))) {
            for w in by_arrival.windows(2) {
                prop_assert!(w[0].1 <= w[1].1, "waiter {} slot {:?} after waiter {} slot {:?}", w[0].0, w[0].1, w[1].0, w[1].1);
            }
        }
    }
}
