//! Fuzz harnesses for every keel-core machine.
//!
//! Each module holds one machine's `Harness`: it builds the machine from an arbitrary config
//! (invalid configs must be rejected by the builder, never panic), applies arbitrary operations
//! at times that jump forward, stall, go back or hit either end of time, and asserts the
//! machine's invariants after every step (not only "no panic"). The `fuzz_targets/` binaries
//! are one line each; `all` drives every machine from one byte stream on one shared clock.
#![allow(clippy::missing_panics_doc)]

/// Declares a single-machine target's input (its config, the start instant and the timed
/// operations) and `run`, which drives the module's `Harness` through [`drive`].
#[macro_export]
macro_rules! single_machine_target {
    ($target:literal, $config:ty) => {
        #[doc = concat!("A whole input for the `", $target, "` target.")]
        #[derive(arbitrary::Arbitrary, Debug)]
        pub struct Input {
            config: $config,
            start: $crate::common::Start,
            ops: Vec<($crate::common::Step, Op)>,
        }

        /// Runs one input.
        pub fn run(input: &Input) {
            $crate::drive(
                &input.config,
                input.start,
                &input.ops,
                Harness::new,
                Harness::apply,
                Harness::finish,
            );
        }
    };
}

pub mod accept;
pub mod adaptive;
pub mod all;
pub mod backlog;
pub mod backoff;
pub mod breaker;
pub mod budget;
pub mod bulkhead;
pub mod bulkhead_classes;
pub mod common;
pub mod conn;
pub mod gcra;
pub mod keyed;
pub mod leak;
pub mod limit;
pub mod shutdown;

use common::{Clock, Start, Step, Timed, MAX_OPS};
use keel_core::time::Instant;

/// Builds a harness and drives it through `ops` on one clock.
pub fn drive<C, O: Copy + Timed, H>(
    config: &C,
    start: Start,
    ops: &[(Step, O)],
    new: fn(&C, Instant) -> Option<H>,
    apply: fn(&mut H, &mut Clock, Instant, O),
    finish: fn(&mut H),
) {
    let start = start.nanos();
    let Some(mut h) = new(config, Instant::from_nanos(start)) else {
        return;
    };
    let mut clock = Clock::new(start);
    for &(step, op) in ops.iter().take(MAX_OPS) {
        let now = if op.timed() {
            clock.step(step)
        } else {
            Instant::from_nanos(clock.caller)
        };
        apply(&mut h, &mut clock, now, op);
    }
    finish(&mut h);
}
