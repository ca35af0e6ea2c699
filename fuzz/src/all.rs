//! Every machine driven from one byte stream on one shared clock: the operations of all the
//! machines interleave, so time moves under each machine while the others act.

use arbitrary::Arbitrary;
use keel_core::time::Instant;

use crate::common::{Clock, Start, Step, Timed, MAX_OPS};
use crate::{accept, adaptive, backoff, breaker, budget, bulkhead, gcra, keyed, limit, shutdown};

/// An operation on one of the machines.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum AnyOp {
    /// Accept loop.
    Accept(accept::Op),
    /// Connection limit (both forms).
    Limit(limit::Op),
    /// Circuit breaker.
    Breaker(breaker::Op),
    /// Backoff.
    Backoff(backoff::Op),
    /// Retry budget.
    Budget(budget::Op),
    /// GCRA (three limiters).
    Gcra(gcra::Op),
    /// Keyed GCRA.
    Keyed(keyed::Op),
    /// Shutdown.
    Shutdown(shutdown::Op),
    /// Bulkhead.
    Bulkhead(bulkhead::Op),
    /// Adaptive concurrency limit.
    Adaptive(adaptive::Op),
}

/// Every machine's configuration, the start, and the interleaved operations.
#[derive(Arbitrary, Debug)]
pub struct Input {
    accept: accept::Config,
    limit: limit::Config,
    breaker: breaker::Config,
    backoff: backoff::Config,
    budget: budget::Config,
    gcra: gcra::QuotaSpec,
    keyed: keyed::Config,
    shutdown: shutdown::Config,
    bulkhead: bulkhead::Config,
    adaptive: adaptive::Config,
    start: Start,
    ops: Vec<(Step, AnyOp)>,
}

/// Runs one input. A machine whose config is invalid sits out; the others run.
pub fn run(input: &Input) {
    let start_ns = input.start.nanos();
    let start = Instant::from_nanos(start_ns);
    let mut accept = accept::Harness::new(&input.accept, start);
    let mut limit = limit::Harness::new(&input.limit, start);
    let mut breaker = breaker::Harness::new(&input.breaker, start);
    let mut backoff = backoff::Harness::new(&input.backoff, start);
    let mut budget = budget::Harness::new(&input.budget, start);
    let mut gcra = gcra::Harness::new(&input.gcra, start);
    let mut keyed = keyed::Harness::new(&input.keyed, start);
    let mut shutdown = shutdown::Harness::new(&input.shutdown, start);
    let mut bulkhead = bulkhead::Harness::new(&input.bulkhead, start);
    let mut adaptive = adaptive::Harness::new(&input.adaptive, start);
    // Each machine sees only its own inputs, but on the shared clock: its `newest` is the
    // newest instant *it* was given, so each keeps its own view.
    let mut clocks = [Clock::new(start_ns); 10];
    let mut shared = Clock::new(start_ns);
    for &(step, op) in input.ops.iter().take(MAX_OPS) {
        let now = shared.step(step);
        macro_rules! go {
            ($h:expr, $i:expr, $op:expr) => {
                if let Some(h) = $h.as_mut() {
                    let c = &mut clocks[$i];
                    let now = if $op.timed() {
                        c.jump(now)
                    } else {
                        Instant::from_nanos(c.caller)
                    };
                    h.apply(c, now, $op);
                    // A machine that jumped to its own deadline moves the shared clock too.
                    shared.jump(Instant::from_nanos(c.caller));
                }
            };
        }
        match op {
            AnyOp::Accept(o) => go!(accept, 0, o),
            AnyOp::Limit(o) => go!(limit, 1, o),
            AnyOp::Breaker(o) => go!(breaker, 2, o),
            AnyOp::Backoff(o) => go!(backoff, 3, o),
            AnyOp::Budget(o) => go!(budget, 4, o),
            AnyOp::Gcra(o) => go!(gcra, 5, o),
            AnyOp::Keyed(o) => go!(keyed, 6, o),
            AnyOp::Shutdown(o) => go!(shutdown, 7, o),
            AnyOp::Bulkhead(o) => go!(bulkhead, 8, o),
            AnyOp::Adaptive(o) => go!(adaptive, 9, o),
        }
    }
    macro_rules! fin {
        ($($h:ident),*) => { $( if let Some(h) = $h.as_mut() { h.finish(); } )* };
    }
    fin!(accept, limit, breaker, backoff, budget, gcra, keyed, shutdown, bulkhead, adaptive);
}
