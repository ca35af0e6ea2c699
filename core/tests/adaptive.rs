//! The adaptive limit on a simulated clock: each controller against a deterministic service
//! model (`servers` busy at `base` RTT each, a queue beyond them), config validation, the
//! probe timer, loss, application-limited windows and hostile inputs.

use core::time::Duration;

use keel_core::adaptive::{
    Adaptive, AdaptiveConfig, AdaptiveDecision, AdaptiveEvent, AimdParams, Algorithm,
    GradientParams, LimitCause, MinRttCause, ProbeReason, SampleOutcome, VegasParams,
};
use keel_core::rng::Rng;
use keel_core::{ConfigError, Instant};

const MS: Duration = Duration::from_millis(1);

/// A closed-loop service: the client keeps `min(limit, demand)` requests in flight; with more
/// than `servers` in flight the excess queues, so the RTT is `base × max(1, in_flight /
/// servers)` (Little's law), times an optional uniform noise.
struct Service {
    servers: f64,
    base: Duration,
    demand: u32,
    noise: f64,
    rng: Rng,
    /// Every event the machine reported while driven.
    events: Vec<AdaptiveEvent>,
}

impl Service {
    fn new(servers: u32, base: Duration, demand: u32) -> Service {
        Service {
            servers: f64::from(servers),
            base,
            demand,
            noise: 0.0,
            rng: Rng::new(7),
            events: Vec::new(),
        }
    }

    fn rtt(&mut self, in_flight: u32) -> Duration {
        let load = (f64::from(in_flight) / self.servers).max(1.0);
        let noise = 1.0 + self.noise * (self.rng.next_f64() * 2.0 - 1.0);
        self.base.mul_f64(load * noise)
    }
}

/// Drives `windows` windows of 100 ms, 20 samples each (one every 5 ms), firing the timer when
/// due. Returns the limit at the end of each window and checks every decision against
/// `limit()` and the bounds.
fn drive(a: &mut Adaptive, now: &mut Instant, svc: &mut Service, windows: u32) -> Vec<u32> {
    let (min, max) = (a.config().min_limit(), a.config().max_limit());
    let mut limits = Vec::new();
    for _ in 0..windows {
        for _ in 0..20 {
            *now += 5 * MS;
            if a.poll_timeout().is_some_and(|t| t <= *now) {
                check(a, a.clone().handle_timeout(*now));
                let d = a.handle_timeout(*now);
                check(a, d);
            }
            let in_flight = a.limit().min(svc.demand);
            let rtt = svc.rtt(in_flight);
            let d = a.on_sample(*now, rtt, SampleOutcome::Success, in_flight);
            check(a, d);
            assert!((min..=max).contains(&a.limit()));
            svc.events.extend(core::iter::from_fn(|| a.poll_event()));
        }
        limits.push(a.limit());
    }
    limits
}

fn check(a: &Adaptive, d: AdaptiveDecision) {
    if let AdaptiveDecision::Resize { limit } = d {
        assert_eq!(limit, a.limit());
    }
}

fn gradient(initial: u32) -> Adaptive {
    let config = AdaptiveConfig::builder()
        .initial_limit(initial)
        .build()
        .expect("valid");
    Adaptive::new(config, Instant::from_secs(1))
}

fn spread(limits: &[u32]) -> f64 {
    let max = *limits.iter().max().unwrap();
    let min = *limits.iter().min().unwrap();
    let mean = limits.iter().map(|&l| f64::from(l)).sum::<f64>() / limits.len() as f64;
    f64::from(max - min) / mean
}

#[test]
fn config_defaults_and_rejections() {
    let c = AdaptiveConfig::default();
    assert_eq!(
        (c.min_limit(), c.max_limit(), c.initial_limit()),
        (1, 1000, 20)
    );
    assert_eq!(c.window(), Duration::from_millis(100));
    assert_eq!(c.probe_interval(), Some(Duration::from_secs(60)));
    assert_eq!(
        c.algorithm(),
        Algorithm::Gradient(GradientParams::default())
    );
    assert_eq!(AdaptiveConfig::builder().build(), Ok(c));

    let b = AdaptiveConfig::builder;
    assert_eq!(
        b().min_limit(0).initial_limit(1).build(),
        Err(ConfigError::Zero { field: "min_limit" })
    );
    assert!(matches!(
        b().min_limit(10).max_limit(5).build(),
        Err(ConfigError::InvertedRange { .. })
    ));
    assert!(matches!(
        b().initial_limit(1001).build(),
        Err(ConfigError::OutOfRange {
            field: "initial_limit",
            ..
        })
    ));
    assert!(matches!(
        b().min_limit(30).build(),
        Err(ConfigError::OutOfRange {
            field: "initial_limit",
            ..
        })
    ));
    assert_eq!(
        b().window(Duration::ZERO).build(),
        Err(ConfigError::Zero { field: "window" })
    );
    assert_eq!(
        b().min_samples(0).build(),
        Err(ConfigError::Zero {
            field: "min_samples"
        })
    );
    assert_eq!(
        b().probe_interval(Some(Duration::ZERO)).build(),
        Err(ConfigError::Zero {
            field: "probe_interval"
        })
    );
    assert!(b().probe_interval(None).build().is_ok());
    let g = GradientParams::default();
    for bad in [
        GradientParams {
            gain_percent: 0,
            ..g
        },
        GradientParams {
            gain_percent: 101,
            ..g
        },
        GradientParams {
            queue_target_percent: 101,
            ..g
        },
        GradientParams {
            backoff_percent: 0,
            ..g
        },
        GradientParams {
            backoff_percent: 100,
            ..g
        },
    ] {
        assert!(
            matches!(
                b().algorithm(Algorithm::Gradient(bad)).build(),
                Err(ConfigError::OutOfRange { .. })
            ),
            "{bad:?}"
        );
    }
    let v = VegasParams::default();
    assert!(b()
        .algorithm(Algorithm::Vegas(VegasParams { alpha: 6, ..v }))
        .build()
        .is_err());
    assert!(b()
        .algorithm(Algorithm::Vegas(VegasParams { alpha: 0, ..v }))
        .build()
        .is_err());
    let a = AimdParams::default();
    assert_eq!(
        b().algorithm(Algorithm::Aimd(AimdParams { increase: 0, ..a }))
            .build(),
        Err(ConfigError::Zero { field: "increase" })
    );
    assert_eq!(
        b().algorithm(Algorithm::Aimd(AimdParams {
            timeout: Duration::ZERO,
            ..a
        }))
        .build(),
        Err(ConfigError::Zero { field: "timeout" })
    );
}

#[test]
fn config_getters_return_what_was_set_and_every_bound_is_inclusive() {
    let b = AdaptiveConfig::builder;
    let vegas = VegasParams {
        alpha: 2,
        beta: 5,
        backoff_percent: 80,
    };
    let c = b()
        .min_limit(3)
        .max_limit(7)
        .initial_limit(5)
        .window(Duration::from_millis(250))
        .min_samples(4)
        .probe_interval(Some(Duration::from_secs(9)))
        .algorithm(Algorithm::Vegas(vegas))
        .build()
        .expect("a valid config");
    assert_eq!(
        (
            c.min_limit(),
            c.max_limit(),
            c.initial_limit(),
            c.min_samples()
        ),
        (3, 7, 5, 4)
    );
    assert_eq!(c.window(), Duration::from_millis(250));
    assert_eq!(c.probe_interval(), Some(Duration::from_secs(9)));
    assert_eq!(c.algorithm(), Algorithm::Vegas(vegas));

    // Each documented range includes its ends.
    let ok = |builder: keel_core::adaptive::AdaptiveConfigBuilder| {
        let built = builder.build();
        assert!(built.is_ok(), "{builder:?}: {built:?}");
    };
    ok(b().min_limit(5).max_limit(5).initial_limit(5)); // min == initial == max
    ok(b().min_limit(20)); // initial (20) == min
    ok(b().max_limit(20)); // initial (20) == max
    let g = GradientParams::default();
    for good in [
        GradientParams {
            gain_percent: 1,
            ..g
        },
        GradientParams {
            gain_percent: 100,
            ..g
        },
        GradientParams {
            queue_target_percent: 0,
            ..g
        },
        GradientParams {
            queue_target_percent: 100,
            ..g
        },
        GradientParams {
            backoff_percent: 1,
            ..g
        },
        GradientParams {
            backoff_percent: 99,
            ..g
        },
    ] {
        ok(b().algorithm(Algorithm::Gradient(good)));
    }
    ok(b().algorithm(Algorithm::Vegas(VegasParams {
        alpha: 1,
        beta: 2,
        backoff_percent: 99,
    })));
    let a = AimdParams::default();
    ok(b().algorithm(Algorithm::Aimd(AimdParams {
        increase: 1,
        backoff_percent: 1,
        timeout: Duration::from_nanos(1),
    })));
    ok(b().algorithm(Algorithm::Aimd(AimdParams {
        backoff_percent: 99,
        ..a
    })));
    // ... and one past each end is refused with the field to change.
    assert!(matches!(
        b().min_limit(6).max_limit(5).initial_limit(5).build(),
        Err(ConfigError::InvertedRange { .. })
    ));
    assert!(matches!(
        b().min_limit(5).max_limit(9).initial_limit(4).build(),
        Err(ConfigError::OutOfRange {
            field: "initial_limit",
            ..
        })
    ));
    assert!(matches!(
        b().min_limit(5).max_limit(9).initial_limit(10).build(),
        Err(ConfigError::OutOfRange {
            field: "initial_limit",
            ..
        })
    ));
}

#[test]
fn gradient_cold_start_reaches_littles_law_by_slow_start() {
    let mut a = gradient(1);
    let mut now = Instant::from_secs(1);
    let mut svc = Service::new(40, 10 * MS, 400);
    let limits = drive(&mut a, &mut now, &mut svc, 30);
    // The first window (100 ms) measures the min RTT; then the limit doubles every 4 RTTs.
    assert!(limits[1] >= 4, "{limits:?}");
    let first = limits
        .iter()
        .position(|&l| (36..=44).contains(&l))
        .expect("reaches within 10 % of 40");
    assert!(first <= 8, "took {first} windows: {limits:?}");
    assert!(
        limits[10..].iter().all(|&l| (40..=44).contains(&l)),
        "{limits:?}"
    );
    assert!(!a.stats().slow_start);
    assert_eq!(a.min_rtt(), Some(10 * MS));
}

#[test]
fn gradient_does_not_creep_under_overload() {
    let mut a = gradient(20);
    let mut now = Instant::from_secs(1);
    let mut svc = Service::new(40, 10 * MS, 120);
    let limits = drive(&mut a, &mut now, &mut svc, 300);
    let early = &limits[20..40];
    let late = &limits[280..];
    let mean = |l: &[u32]| l.iter().map(|&x| f64::from(x)).sum::<f64>() / l.len() as f64;
    assert!(mean(late) <= 44.0, "{late:?}");
    assert!(
        (mean(late) - mean(early)).abs() <= 1.0,
        "{early:?} -> {late:?}"
    );
    assert_eq!(a.min_rtt(), Some(10 * MS));
}

#[test]
fn gradient_holds_still_under_25_percent_noise() {
    let mut a = gradient(20);
    let mut now = Instant::from_secs(1);
    let mut svc = Service::new(40, 10 * MS, 80);
    svc.noise = 0.25;
    let limits = drive(&mut a, &mut now, &mut svc, 200);
    let steady = &limits[30..];
    assert!(
        spread(steady) <= 0.10,
        "spread {} {steady:?}",
        spread(steady)
    );
    let mean = steady.iter().map(|&x| f64::from(x)).sum::<f64>() / steady.len() as f64;
    assert!((36.0..=48.0).contains(&mean), "{mean}");
}

#[test]
fn slower_service_is_remeasured_and_the_limit_is_not_stuck_at_min() {
    let mut a = gradient(20);
    let mut now = Instant::from_secs(1);
    let mut svc = Service::new(40, 10 * MS, 120);
    let _ = drive(&mut a, &mut now, &mut svc, 30);
    svc.events.clear();
    // The dependency gets three times slower: capacity in requests per second drops, but
    // Little's law still wants 40 in flight.
    svc.base = 30 * MS;
    let limits = drive(&mut a, &mut now, &mut svc, 60);
    let mut reasons = Vec::new();
    let mut remeasured = None;
    for &ev in &svc.events {
        match ev {
            AdaptiveEvent::ProbeStarted { reason, .. } => reasons.push(reason),
            AdaptiveEvent::MinRttChanged {
                to,
                cause: MinRttCause::Probe,
                ..
            } => {
                remeasured = Some(to);
            }
            _ => {}
        }
    }
    assert!(reasons.contains(&ProbeReason::Unresponsive), "{reasons:?}");
    assert_eq!(a.min_rtt(), Some(30 * MS));
    assert!(remeasured.is_some());
    assert!(a.stats().stale_min_rtt >= 1);
    assert!(
        limits.iter().all(|&l| l > 1),
        "sat at the minimum: {limits:?}"
    );
    assert!((40..=44).contains(&a.limit()), "{limits:?}");
}

#[test]
fn stuck_at_min_probes_and_climbs_back() {
    // A minimum RTT that is stale from the start: 1 ms measured, then the service is 10 ms.
    let config = AdaptiveConfig::builder()
        .initial_limit(1)
        .probe_interval(None)
        .build()
        .unwrap();
    let mut now = Instant::from_secs(1);
    let mut a = Adaptive::new(config, now);
    let mut svc = Service::new(40, MS, 1);
    let _ = drive(&mut a, &mut now, &mut svc, 2);
    assert_eq!(a.min_rtt(), Some(MS));
    svc.base = 10 * MS;
    svc.demand = 400;
    // Drive a few samples at in_flight 2 with a 10 ms RTT: a queue estimate of 1.8 > target.
    let limits = drive(&mut a, &mut now, &mut svc, 40);
    assert!(a.stats().stale_min_rtt >= 1 || a.min_rtt() == Some(10 * MS));
    assert_eq!(a.min_rtt(), Some(10 * MS));
    assert!((40..=44).contains(&a.limit()), "{limits:?}");
}

#[test]
fn timer_probe_holds_the_limit_down_measures_and_restores() {
    let config = AdaptiveConfig::builder()
        .initial_limit(20)
        .probe_interval(Some(Duration::from_secs(10)))
        .build()
        .unwrap();
    let t0 = Instant::from_secs(1);
    let mut a = Adaptive::new(config, t0);
    assert_eq!(a.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    let mut now = t0;
    let mut svc = Service::new(40, 10 * MS, 400);
    let _ = drive(&mut a, &mut now, &mut svc, 20);
    // Early: nothing (and the clock moves on to 9 s).
    assert_eq!(
        a.handle_timeout(t0 + Duration::from_secs(9)),
        AdaptiveDecision::Unchanged
    );
    assert_eq!(a.stats().probes, 0);
    let before = a.limit();
    assert!((40..=44).contains(&before));
    while a.poll_event().is_some() {}
    // Fire it by hand at the due time.
    let due = a.poll_timeout().unwrap();
    let mut now = due;
    let AdaptiveDecision::Resize { limit: held } = a.handle_timeout(now) else {
        panic!("the probe lowers the limit")
    };
    assert!(held <= before / 2, "{held} vs {before}");
    assert_eq!(a.poll_timeout(), None, "no timer while measuring");
    assert!(a.stats().probing);
    assert_eq!(
        a.poll_event(),
        Some(AdaptiveEvent::ProbeStarted {
            reason: ProbeReason::Timer,
            limit: held
        })
    );
    // Slower service meanwhile: the probe measures it.
    svc.base = 12 * MS;
    for _ in 0..2 {
        for _ in 0..20 {
            now += 5 * MS;
            let in_flight = a.limit();
            let _ = a.on_sample(now, svc.rtt(in_flight), SampleOutcome::Success, in_flight);
        }
    }
    now += 5 * MS;
    let d = a.on_sample(now, svc.rtt(held), SampleOutcome::Success, held);
    assert!(!a.stats().probing, "two windows measure");
    assert_eq!(
        d,
        AdaptiveDecision::Unchanged,
        "the last window already restored it"
    );
    assert_eq!(a.limit(), before);
    assert_eq!(a.min_rtt(), Some(12 * MS));
    assert!(a.poll_timeout().unwrap() >= due + Duration::from_secs(10));
    assert_eq!(a.stats().probes, 1);
    assert_eq!(a.stats().stale_min_rtt, 0);
}

#[test]
fn loss_backs_off_by_the_ratio() {
    for outcome in [SampleOutcome::Dropped, SampleOutcome::TimedOut] {
        let mut a = gradient(100);
        let t0 = Instant::from_secs(1);
        let mut last = AdaptiveDecision::Unchanged;
        for i in 1..=20u32 {
            last = a.on_sample(t0 + 5 * MS * i, 10 * MS, outcome, 100);
        }
        assert_eq!(last, AdaptiveDecision::Resize { limit: 90 }, "{outcome:?}");
        let ev = core::iter::from_fn(|| a.poll_event())
            .find(|e| matches!(e, AdaptiveEvent::LimitChanged { .. }));
        assert_eq!(
            ev,
            Some(AdaptiveEvent::LimitChanged {
                from: 100,
                to: 90,
                cause: LimitCause::Loss
            })
        );
        assert_eq!(a.stats().samples, 20);
        assert!(a.stats().dropped + a.stats().timed_out == 20);
    }
}

#[test]
fn application_limited_windows_never_raise_the_limit() {
    for algorithm in [
        Algorithm::Gradient(GradientParams::default()),
        Algorithm::Vegas(VegasParams::default()),
        Algorithm::Aimd(AimdParams::default()),
    ] {
        let config = AdaptiveConfig::builder()
            .initial_limit(100)
            .algorithm(algorithm)
            .build()
            .unwrap();
        let mut now = Instant::from_secs(1);
        let mut a = Adaptive::new(config, now);
        let mut svc = Service::new(40, 10 * MS, 10);
        let limits = drive(&mut a, &mut now, &mut svc, 50);
        assert!(
            limits.iter().all(|&l| l == 100),
            "{algorithm:?}: {limits:?}"
        );
    }
}

#[test]
fn vegas_steps_by_log10_of_the_limit() {
    let config = AdaptiveConfig::builder()
        .initial_limit(100)
        .algorithm(Algorithm::Vegas(VegasParams::default()))
        .build()
        .unwrap();
    let t0 = Instant::from_secs(1);
    let mut a = Adaptive::new(config, t0);
    // No queue: q = 0 <= log10(100) = 2, so + 6 × 2.
    let mut d = AdaptiveDecision::Unchanged;
    for i in 1..=20u32 {
        d = a.on_sample(t0 + 5 * MS * i, 10 * MS, SampleOutcome::Success, 100);
    }
    assert_eq!(d, AdaptiveDecision::Resize { limit: 112 });
    // A big queue (RTT doubled): q = 56 > 12, so − 2.
    for i in 21..=40u32 {
        d = a.on_sample(t0 + 5 * MS * i, 20 * MS, SampleOutcome::Success, 112);
    }
    assert_eq!(d, AdaptiveDecision::Resize { limit: 110 });
}

#[test]
fn vegas_converges_near_littles_law() {
    let config = AdaptiveConfig::builder()
        .initial_limit(1)
        .algorithm(Algorithm::Vegas(VegasParams::default()))
        .build()
        .unwrap();
    let mut now = Instant::from_secs(1);
    let mut a = Adaptive::new(config, now);
    let mut svc = Service::new(40, 10 * MS, 400);
    let limits = drive(&mut a, &mut now, &mut svc, 60);
    assert!(
        limits[40..].iter().all(|&l| (40..=48).contains(&l)),
        "{limits:?}"
    );
}

#[test]
fn aimd_slow_start_then_additive_and_timeout_is_loss() {
    let config = AdaptiveConfig::builder()
        .initial_limit(1)
        .algorithm(Algorithm::Aimd(AimdParams {
            timeout: 50 * MS,
            ..AimdParams::default()
        }))
        .build()
        .unwrap();
    let mut now = Instant::from_secs(1);
    let mut a = Adaptive::new(config, now);
    let mut svc = Service::new(40, 10 * MS, 1000);
    // Slow start: doubles every window (4 RTTs = 40 ms, shorter than the 100 ms window).
    let limits = drive(&mut a, &mut now, &mut svc, 4);
    assert!(limits[3] >= 16, "{limits:?}");
    // AIMD does not look at latency: it grows until the RTT passes the timeout (at 5x the
    // servers, 50 ms), backs off by 0.9, and grows by one per window after that.
    let limits = drive(&mut a, &mut now, &mut svc, 60);
    assert!(!a.stats().slow_start);
    assert!(a.stats().decreases >= 1);
    assert!(limits.iter().all(|&l| l <= 400), "{limits:?}");
    let w = limits.windows(2).filter(|w| w[1] == w[0] + 1).count();
    assert!(w >= 10, "additive steps: {limits:?}");
}

#[test]
fn hostile_inputs_keep_the_limit_in_bounds() {
    for algorithm in [
        Algorithm::Gradient(GradientParams::default()),
        Algorithm::Vegas(VegasParams::default()),
        Algorithm::Aimd(AimdParams::default()),
    ] {
        let config = AdaptiveConfig::builder()
            .min_limit(3)
            .max_limit(50)
            .initial_limit(3)
            .algorithm(algorithm)
            .build()
            .unwrap();
        let mut a = Adaptive::new(config, Instant::from_secs(5));
        let times = [
            Instant::from_secs(5),
            Instant::ZERO,
            Instant::from_secs(6),
            Instant::MAX,
            Instant::from_secs(1),
            Instant::MAX,
        ];
        let rtts = [
            Duration::ZERO,
            Duration::MAX,
            Duration::from_nanos(1),
            10 * MS,
        ];
        let flights = [0, 1, u32::MAX, 3];
        let outcomes = [
            SampleOutcome::Success,
            SampleOutcome::Dropped,
            SampleOutcome::TimedOut,
        ];
        let mut n = 0usize;
        for &t in &times {
            for &r in &rtts {
                for &f in &flights {
                    for &o in &outcomes {
                        n += 1;
                        let d = a.on_sample(t, r, o, f);
                        check(&a, d);
                        assert!((3..=50).contains(&a.limit()), "{algorithm:?} {t:?} {r:?}");
                        let d = a.handle_timeout(t);
                        check(&a, d);
                        if let Some(next) = a.poll_timeout() {
                            // After handle_timeout(t), the timer is in the future (or the
                            // clock's end, where nothing can be later).
                            assert!(next > t || t == Instant::MAX || next == Instant::MAX);
                        }
                    }
                }
            }
        }
        assert_eq!(a.stats().samples, n as u64);
    }
}

#[test]
fn every_resize_is_an_event() {
    let mut a = gradient(1);
    let mut now = Instant::from_secs(1);
    let mut svc = Service::new(40, 10 * MS, 400);
    let mut last = a.limit();
    for _ in 0..400 {
        now += 5 * MS;
        let in_flight = a.limit().min(svc.demand);
        let d = a.on_sample(now, svc.rtt(in_flight), SampleOutcome::Success, in_flight);
        let changes: Vec<_> = core::iter::from_fn(|| a.poll_event())
            .filter_map(|e| match e {
                AdaptiveEvent::LimitChanged { from, to, .. } => Some((from, to)),
                _ => None,
            })
            .collect();
        match d {
            AdaptiveDecision::Resize { limit } => {
                assert_eq!(changes, vec![(last, limit)]);
                last = limit;
            }
            AdaptiveDecision::Unchanged => assert!(changes.is_empty()),
        }
    }
    assert_eq!(a.stats().events_dropped, 0);
}

/// `count` samples of `rtt` at `in_flight`, one every `gap`; the last decision.
fn feed(
    a: &mut Adaptive,
    now: &mut Instant,
    rtt: Duration,
    in_flight: u32,
    count: u32,
    gap: Duration,
) -> AdaptiveDecision {
    let mut last = AdaptiveDecision::Unchanged;
    for _ in 0..count {
        *now += gap;
        last = a.on_sample(*now, rtt, SampleOutcome::Success, in_flight);
    }
    last
}

// The exact boundaries of the documented rules. Each window below has one RTT (no noise) and
// one `in_flight`, so its queue estimate `n × (1 − b / m)` is an exact binary fraction: a rule
// that compares it with its threshold by `>` rather than `>=` (or `<` rather than `<=`) gives a
// different answer, which random tests almost never see (cargo-mutants' `>` -> `>=` mutants).

/// Gradient: a queue exactly at the target (one request) is not above it: no cut, so the slow
/// start goes on and nothing is counted as a decrease.
#[test]
fn gradient_queue_exactly_at_target_is_not_cut() {
    let mut now = Instant::from_secs(1);
    let mut a = gradient(20);
    // b = 10 ms from a full window (application-limited: 2 in flight, limit 20).
    let _ = feed(&mut a, &mut now, 10 * MS, 2, 10, 10 * MS);
    assert_eq!(a.min_rtt(), Some(10 * MS));
    // m = 20 ms, n = 2: q = 2 × (1 − 10/20) = 1 = max(5 % of 20, 1).
    let _ = feed(&mut a, &mut now, 20 * MS, 2, 8, 5 * MS);
    let s = a.stats();
    assert_eq!(s.windows, 2);
    assert_eq!((s.decreases, s.slow_start, a.limit()), (0, true, 20));
}

/// Vegas: a queue exactly at `beta × log10(limit)` (6) is not above it (hold), and a queue
/// exactly at `alpha × log10(limit)` (3) is not below it (hold).
#[test]
fn vegas_queue_exactly_at_alpha_or_beta_holds() {
    let config = AdaptiveConfig::builder()
        .initial_limit(20)
        .algorithm(Algorithm::Vegas(VegasParams::default()))
        .build()
        .unwrap();
    // b = 10 ms from an application-limited window, then q = 12 × (1 − 10/20) = 6 = beta
    // (12 in flight: limit-bound).
    let mut now = Instant::from_secs(1);
    let mut a = Adaptive::new(config, now);
    let _ = feed(&mut a, &mut now, 10 * MS, 2, 10, 10 * MS);
    assert_eq!((a.min_rtt(), a.limit()), (Some(10 * MS), 20));
    let _ = feed(&mut a, &mut now, 20 * MS, 12, 20, 5 * MS);
    assert_eq!(a.stats().windows, 2);
    assert_eq!(a.limit(), 20, "q = beta exactly: hold");
    // q = 12 × (1 − 30/40) = 3 = alpha (b = 30 ms).
    let mut now = Instant::from_secs(1);
    let mut a = Adaptive::new(config, now);
    let _ = feed(&mut a, &mut now, 30 * MS, 2, 10, 10 * MS);
    assert_eq!((a.min_rtt(), a.limit()), (Some(30 * MS), 20));
    let _ = feed(&mut a, &mut now, 40 * MS, 12, 20, 5 * MS);
    assert_eq!(a.stats().windows, 2);
    assert_eq!(a.limit(), 20, "q = alpha exactly: hold");
}

/// A queue of exactly one half at the minimum limit is not "an apparent queue": three such
/// windows start no probe.
#[test]
fn half_a_request_of_queue_at_the_minimum_is_not_stuck() {
    let config = AdaptiveConfig::builder()
        .min_limit(1)
        .max_limit(1)
        .initial_limit(1)
        .probe_interval(None)
        .build()
        .unwrap();
    let mut now = Instant::from_secs(1);
    let mut a = Adaptive::new(config, now);
    let _ = feed(&mut a, &mut now, 10 * MS, 1, 10, 10 * MS);
    assert_eq!(a.min_rtt(), Some(10 * MS));
    // q = 1 × (1 − 10/20) = 0.5 for five windows (each 40 ms in slow start).
    let _ = feed(&mut a, &mut now, 20 * MS, 1, 50, 5 * MS);
    let s = a.stats();
    assert!(s.windows >= 5, "{s:?}");
    assert_eq!((s.probes, s.stale_min_rtt), (0, 0));
}

/// The minimum RTT is lowered only by a window whose mean is below it; equal is not lower,
/// even where the two round to the same `f64` (RTTs above 2^53 ns).
#[test]
fn a_window_equal_to_the_minimum_rtt_in_f64_does_not_move_it() {
    let mut now = Instant::from_secs(1);
    let mut a = gradient(20);
    let b = Duration::from_nanos((1u64 << 60) + 1);
    let _ = feed(&mut a, &mut now, b, 2, 10, 10 * MS);
    assert_eq!(a.min_rtt(), Some(b));
    while a.poll_event().is_some() {}
    // 2^60 < b, but `2^60 as f64 == b as f64`: no window is lower by more than its noise.
    let _ = feed(
        &mut a,
        &mut now,
        Duration::from_nanos(1 << 60),
        2,
        10,
        10 * MS,
    );
    assert_eq!(a.stats().windows, 2);
    assert_eq!(a.min_rtt(), Some(b));
    assert_eq!(a.poll_event(), None);
}
