//! Property tests: the adaptive limit against its reference model
//! (`keel_testkit::models::adaptive`, shared with the fuzz target), in lockstep on a simulated
//! clock. A closed-loop service (servers, a base RTT, a demand, jitter, loss) produces the
//! samples; hostile samples, timer calls and clock jumps (backwards too) are mixed in. After
//! every input the decision, the limit, the minimum RTT, the timer, every counter and flag
//! agree; the events agree one by one whenever they are drained.

// The model is `keel_testkit::models::adaptive`. keel-testkit is left out of the `no_std` test
// runs (`--cfg keel_no_testkit`, see core/Cargo.toml), so there the same source file is compiled
// into this test instead (it uses only keel-core's public API and std, which this test crate
// links; keel-core is built without it). One model, two ways in.

use core::time::Duration;

use keel_core::adaptive::{
    Adaptive, AdaptiveConfig, AdaptiveDecision, AimdParams, Algorithm, GradientParams,
    SampleOutcome, VegasParams,
};
use keel_core::Instant;
#[cfg(not(keel_no_testkit))]
use keel_testkit::models::adaptive::AdaptiveModel;
use proptest::prelude::*;

#[path = "support/props.rs"]
mod props;

#[cfg(keel_no_testkit)]
#[path = "../../testkit/src/models/adaptive.rs"]
#[allow(dead_code, unreachable_pub)] // a library module here: items this test does not use
mod adaptive_model;
#[cfg(keel_no_testkit)]
use adaptive_model::AdaptiveModel;

#[derive(Clone, Debug)]
enum Op {
    /// `n` samples `gap_ms` apart from a service with `servers` servers of `base_ms` each:
    /// `min(limit, demand)` in flight, RTT `base × max(1, in_flight / servers)` times a
    /// uniform jitter of `jitter` percent; every `loss_every`-th sample is dropped or times out.
    Load {
        n: u8,
        gap_ms: u8,
        servers: u16,
        base_ms: u8,
        demand: u16,
        jitter: u8,
        loss_every: Option<u8>,
        seed: u64,
    },
    /// One sample with any RTT and `in_flight`.
    Raw {
        rtt: Duration,
        outcome: SampleOutcome,
        in_flight: u32,
    },
    /// `handle_timeout(now)`.
    Timeout,
    /// Jump to `poll_timeout()` and handle it.
    WaitOut,
    /// Move the clock (backwards for a negative step).
    Step(i64),
    /// Drain and compare the events.
    Poll,
}

fn outcome() -> impl Strategy<Value = SampleOutcome> {
    prop_oneof![
        6 => Just(SampleOutcome::Success),
        1 => Just(SampleOutcome::Dropped),
        1 => Just(SampleOutcome::TimedOut),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (
            1u8..60,
            prop_oneof![1u8..10, any::<u8>()],
            1u16..300,
            1u8..50,
            prop_oneof![1u16..400, Just(u16::MAX)],
            prop_oneof![Just(0u8), 1u8..60],
            prop_oneof![3 => Just(None), 1 => (1u8..40).prop_map(Some)],
            any::<u64>(),
        )
            .prop_map(|(n, gap_ms, servers, base_ms, demand, jitter, loss_every, seed)| Op::Load {
                n, gap_ms, servers, base_ms, demand, jitter, loss_every, seed
            }),
        1 => (
            prop_oneof![
                (0u64..200_000_000).prop_map(Duration::from_nanos),
                Just(Duration::ZERO),
                Just(Duration::MAX),
                any::<u64>().prop_map(Duration::from_nanos),
            ],
            outcome(),
            prop_oneof![0u32..300, any::<u32>()],
        )
            .prop_map(|(rtt, outcome, in_flight)| Op::Raw { rtt, outcome, in_flight }),
        1 => Just(Op::Timeout),
        1 => Just(Op::WaitOut),
        1 => prop_oneof![
            0i64..2_000_000_000,
            -2_000_000_000i64..0,
            Just(i64::MAX),
        ]
        .prop_map(Op::Step),
        2 => Just(Op::Poll),
    ]
}

fn algorithm() -> impl Strategy<Value = Algorithm> {
    prop_oneof![
        2 => Just(Algorithm::default()),
        2 => (0u8..=30, 1u8..=100, 1u8..=99).prop_map(|(q, g, b)| Algorithm::Gradient(
            GradientParams { queue_target_percent: q, gain_percent: g, backoff_percent: b }
        )),
        2 => (1u8..6, 1u8..6, 1u8..=99).prop_map(|(alpha, d, b)| Algorithm::Vegas(VegasParams {
            alpha,
            beta: alpha + d,
            backoff_percent: b,
        })),
        2 => (1u32..5, 1u8..=99, 1u64..200).prop_map(|(increase, b, t)| Algorithm::Aimd(
            AimdParams { increase, backoff_percent: b, timeout: Duration::from_millis(t) }
        )),
    ]
}

fn config() -> impl Strategy<Value = Option<AdaptiveConfig>> {
    (
        prop_oneof![3 => 1u32..4, 1 => 1u32..100],
        prop_oneof![3 => 10u32..2000, 1 => Just(u32::MAX)],
        1u32..300,
        (1u64..300).prop_map(Duration::from_millis),
        1u32..30,
        prop_oneof![
            Just(None),
            (100u64..5_000).prop_map(|ms| Some(Duration::from_millis(ms))),
        ],
        algorithm(),
    )
        .prop_map(|(min, max, initial, window, samples, probe, algorithm)| {
            AdaptiveConfig::builder()
                .min_limit(min)
                .max_limit(max)
                .initial_limit(initial.max(min).min(max)) // min > max: rejected below
                .window(window)
                .min_samples(samples)
                .probe_interval(probe)
                .algorithm(algorithm)
                .build()
                .ok()
        })
}

/// The machine and the model side by side.
struct Pair {
    a: Adaptive,
    model: AdaptiveModel,
    newest: u64,
}

impl Pair {
    fn same(&self, d: AdaptiveDecision, m: Option<u32>) -> Result<(), TestCaseError> {
        let machine = match d {
            AdaptiveDecision::Resize { limit } => Some(limit),
            AdaptiveDecision::Unchanged => None,
        };
        prop_assert_eq!(machine, m, "decision");
        self.model.check(&self.a).map_err(TestCaseError::fail)
    }

    fn sample(
        &mut self,
        now: u64,
        rtt: Duration,
        outcome: SampleOutcome,
        in_flight: u32,
    ) -> Result<(), TestCaseError> {
        self.newest = self.newest.max(now);
        let now = Instant::from_nanos(now);
        let d = self.a.on_sample(now, rtt, outcome, in_flight);
        let m = self.model.on_sample(now, rtt, outcome, in_flight);
        self.same(d, m)
    }

    fn timeout(&mut self, now: u64) -> Result<(), TestCaseError> {
        self.newest = self.newest.max(now);
        let now = Instant::from_nanos(now);
        let d = self.a.handle_timeout(now);
        let m = self.model.handle_timeout(now);
        self.same(d, m)
    }

    fn drain(&mut self) -> Result<(), TestCaseError> {
        loop {
            let (e, m) = (self.a.poll_event(), self.model.pop_event());
            prop_assert_eq!(e, m, "event");
            if e.is_none() {
                return Ok(());
            }
        }
    }
}

/// A small xorshift for the service's jitter (deterministic per `Load`).
fn next_unit(s: &mut u64) -> f64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    (*s >> 11) as f64 / (1u64 << 53) as f64
}

proptest! {
    #![proptest_config(props::config(128, "proptest-regressions/adaptive_model_props.txt"))]

    #[test]
    fn machine_follows_its_reference_model(
        config in config(),
        start in 0u64..1_000_000_000_000,
        ops in proptest::collection::vec(op(), 0..120),
    ) {
        let Some(config) = config else { return Ok(()) };
        let t0 = Instant::from_nanos(start);
        let mut p = Pair { a: Adaptive::new(config, t0), model: AdaptiveModel::new(&config, t0), newest: start };
        // The raw clock: may be behind `newest` (the machine clamps it).
        let mut raw = start;
        p.model.check(&p.a).map_err(TestCaseError::fail)?;
        for op in ops {
            match op {
                Op::Load { n, gap_ms, servers, base_ms, demand, jitter, loss_every, seed } => {
                    let mut s = seed | 1;
                    for i in 0..n {
                        raw = raw.saturating_add(u64::from(gap_ms) * 1_000_000);
                        let in_flight = p.a.limit().min(u32::from(demand));
                        let load = (f64::from(in_flight) / f64::from(servers)).max(1.0);
                        let noise = 1.0 + f64::from(jitter) / 100.0 * (next_unit(&mut s) * 2.0 - 1.0);
                        let rtt = Duration::from_millis(u64::from(base_ms)).mul_f64(load * noise);
                        let outcome = match loss_every {
                            Some(k) if u32::from(i) % u32::from(k) == u32::from(k) - 1 => {
                                if i % 2 == 0 { SampleOutcome::Dropped } else { SampleOutcome::TimedOut }
                            }
                            _ => SampleOutcome::Success,
                        };
                        p.sample(raw, rtt, outcome, in_flight)?;
                    }
                }
                Op::Raw { rtt, outcome, in_flight } => p.sample(raw, rtt, outcome, in_flight)?,
                Op::Timeout => p.timeout(raw)?,
                Op::WaitOut => {
                    if let Some(t) = p.a.poll_timeout() {
                        raw = raw.max(t.as_nanos());
                        p.timeout(t.as_nanos())?;
                    }
                }
                Op::Step(ns) => {
                    raw = if ns >= 0 {
                        raw.saturating_add(ns.unsigned_abs())
                    } else {
                        raw.saturating_sub(ns.unsigned_abs())
                    };
                }
                Op::Poll => p.drain()?,
            }
        }
        p.drain()?;
    }
}
