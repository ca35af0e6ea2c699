//! Adaptive concurrency: for any configuration the builder accepts and any samples (RTTs from
//! zero to `Duration::MAX`, any `in_flight`, any outcome), timer calls and clock moves, the
//! limit stays within `[min_limit, max_limit]`; every `Resize` names the limit now in force and
//! `Unchanged` means it did not move; each change is one `LimitChanged` event within bounds;
//! after `handle_timeout(t)` the timer is never due at or before the newest instant seen; a
//! probe that started ends (the timer is back) only through windows; counters balance. And the
//! machine follows its reference model (`keel_testkit::models::adaptive`, shared with
//! `core/tests/adaptive_model_props.rs`) in lockstep: every decision, the limit, the minimum
//! RTT, the timer, every counter and flag after each input, and each event when drained.

use core::time::Duration;

use arbitrary::Arbitrary;
use keel_core::adaptive::{
    Adaptive, AdaptiveConfig, AdaptiveDecision, AdaptiveEvent, AimdParams, Algorithm,
    GradientParams, SampleOutcome, VegasParams,
};
use keel_core::time::Instant;
use keel_testkit::models::adaptive::AdaptiveModel;

use crate::common::{Clock, Dur, Step, Timed};

/// One input.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Op {
    /// One `on_sample` with an arbitrary RTT.
    Sample {
        /// The RTT.
        rtt: Dur,
        /// 0 success, 1 dropped, 2 timed out (modulo 3).
        outcome: u8,
        /// In flight at the start.
        in_flight: u32,
    },
    /// `n` plausible samples 5 ms apart (so windows close): RTT `rtt_ms` (at least 1 ms).
    Burst {
        /// Samples.
        n: u8,
        /// RTT in milliseconds.
        rtt_ms: u8,
        /// In flight at the start (0 = the current limit).
        in_flight: u16,
    },
    /// `handle_timeout(now)`.
    Timeout,
    /// Jump to `poll_timeout()` and handle it.
    WaitOut,
    /// Drain the events.
    Poll,
}

/// The controller's parameters.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum AlgoSpec {
    /// Gradient.
    Gradient(u8, u8, u8),
    /// Vegas.
    Vegas(u8, u8, u8),
    /// AIMD.
    Aimd(u32, u8, Dur),
    /// The default.
    Default,
}

/// The configuration.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct Config {
    min: u32,
    max: u32,
    initial: u32,
    window: Option<Dur>,
    min_samples: Option<u32>,
    probe: Option<Option<Dur>>,
    algorithm: AlgoSpec,
}

/// The machine and what the harness expects of it.
pub struct Harness {
    a: Adaptive,
    model: AdaptiveModel,
    min: u32,
    max: u32,
    samples: u64,
    resizes: u64,
    changes: u64,
}

impl Harness {
    /// `None` when the builder rejects the config.
    pub fn new(c: &Config, start: Instant) -> Option<Harness> {
        let algorithm = match c.algorithm {
            AlgoSpec::Gradient(q, g, b) => Algorithm::Gradient(GradientParams {
                queue_target_percent: q,
                gain_percent: g,
                backoff_percent: b,
            }),
            AlgoSpec::Vegas(alpha, beta, b) => Algorithm::Vegas(VegasParams {
                alpha,
                beta,
                backoff_percent: b,
            }),
            AlgoSpec::Aimd(increase, b, t) => Algorithm::Aimd(AimdParams {
                increase,
                backoff_percent: b,
                timeout: t.get(),
            }),
            AlgoSpec::Default => Algorithm::default(),
        };
        let mut b = AdaptiveConfig::builder()
            .min_limit(c.min % 2048)
            .max_limit(if c.max > 1 << 31 { c.max } else { c.max % 4096 })
            .initial_limit(c.initial % 4096)
            .algorithm(algorithm);
        if let Some(w) = c.window {
            b = b.window(w.get());
        }
        if let Some(n) = c.min_samples {
            b = b.min_samples(n);
        }
        if let Some(p) = c.probe {
            b = b.probe_interval(p.map(Dur::get));
        }
        let config = b.build().ok()?;
        Some(Harness {
            a: Adaptive::new(config, start),
            model: AdaptiveModel::new(&config, start),
            min: config.min_limit(),
            max: config.max_limit(),
            samples: 0,
            resizes: 0,
            changes: 0,
        })
    }

    fn check(&mut self, before: u32, d: AdaptiveDecision, model: Option<u32>) {
        let machine = match d {
            AdaptiveDecision::Resize { limit } => Some(limit),
            AdaptiveDecision::Unchanged => None,
        };
        assert_eq!(
            machine, model,
            "the machine's decision and the model's differ"
        );
        if let Err(e) = self.model.check(&self.a) {
            panic!("machine and model differ: {e}");
        }
        let limit = self.a.limit();
        assert!(
            (self.min..=self.max).contains(&limit),
            "{limit} out of bounds"
        );
        assert_eq!(self.a.stats().limit, limit);
        match d {
            AdaptiveDecision::Resize { limit: l } => {
                assert_eq!(l, limit);
                assert_ne!(l, before, "a resize to the same limit");
                self.resizes += 1;
            }
            AdaptiveDecision::Unchanged => assert_eq!(limit, before, "moved silently"),
        }
    }

    fn sample(&mut self, now: Instant, rtt: Duration, outcome: SampleOutcome, in_flight: u32) {
        let before = self.a.limit();
        let d = self.a.on_sample(now, rtt, outcome, in_flight);
        let m = self.model.on_sample(now, rtt, outcome, in_flight);
        self.samples += 1;
        self.check(before, d, m);
    }

    /// Applies `op` at `now` and checks the invariants.
    pub fn apply(&mut self, clock: &mut Clock, now: Instant, op: Op) {
        match op {
            Op::Sample {
                rtt,
                outcome,
                in_flight,
            } => {
                let outcome = match outcome % 3 {
                    0 => SampleOutcome::Success,
                    1 => SampleOutcome::Dropped,
                    _ => SampleOutcome::TimedOut,
                };
                self.sample(now, rtt.get(), outcome, in_flight);
            }
            Op::Burst {
                n,
                rtt_ms,
                in_flight,
            } => {
                if n == 0 {
                    // `now` never reached the machine.
                    clock.unseen();
                }
                let rtt = Duration::from_millis(u64::from(rtt_ms.max(1)));
                for i in 0..n {
                    // The first sample at `now`, each next one 5 ms later.
                    let t = if i == 0 {
                        now
                    } else {
                        clock.step(Step::Millis(5))
                    };
                    let f = if in_flight == 0 {
                        self.a.limit()
                    } else {
                        u32::from(in_flight)
                    };
                    self.sample(t, rtt, SampleOutcome::Success, f);
                }
            }
            Op::Timeout => {
                let before = self.a.limit();
                let d = self.a.handle_timeout(now);
                let m = self.model.handle_timeout(now);
                self.check(before, d, m);
                if let Some(next) = self.a.poll_timeout() {
                    assert!(
                        next > clock.newest() || next == Instant::MAX,
                        "timer due at {next:?}, newest {:?}",
                        clock.newest()
                    );
                }
            }
            Op::WaitOut => {
                if let Some(t) = self.a.poll_timeout() {
                    clock.jump(t);
                    let before = self.a.limit();
                    let d = self.a.handle_timeout(t);
                    let m = self.model.handle_timeout(t);
                    self.check(before, d, m);
                    if t >= clock.newest() {
                        // The probe started: no timer until its windows close.
                        assert!(self.a.stats().probing);
                        assert_eq!(self.a.poll_timeout(), None);
                    }
                }
            }
            Op::Poll => {
                while let Some(e) = self.a.poll_event() {
                    assert_eq!(Some(e), self.model.pop_event(), "the events differ");
                    if let AdaptiveEvent::LimitChanged { from, to, .. } = e {
                        assert!((self.min..=self.max).contains(&from));
                        assert!((self.min..=self.max).contains(&to));
                        assert_ne!(from, to);
                        self.changes += 1;
                    }
                }
                assert_eq!(self.model.pop_event(), None, "the model has more events");
            }
        }
        let s = self.a.stats();
        assert_eq!(s.samples, self.samples);
        assert!(s.dropped + s.timed_out <= s.samples);
        assert!(s.windows <= s.samples);
        assert!(s.stale_min_rtt <= s.probes);
        assert!(self.changes <= self.resizes);
        if s.events_dropped == 0 && matches!(op, Op::Poll) {
            assert_eq!(self.changes, self.resizes, "a resize without its event");
        }
        if let Some(rtt) = self.a.min_rtt() {
            assert!(rtt >= Duration::from_nanos(1));
        }
    }

    /// Nothing more to check at the end.
    pub fn finish(&mut self) {}
}

impl Timed for Op {
    fn timed(&self) -> bool {
        !matches!(self, Op::WaitOut | Op::Poll)
    }
}

crate::single_machine_target!("adaptive", Config);
