//! Scenario tests for the circuit breaker, on a simulated clock.

use core::time::Duration;

use keel_core::backoff::{Backoff, BackoffConfig, Jitter};
use keel_core::breaker::{
    BreakerConfig, BreakerEvent, BreakerPermit, CircuitBreaker, OpenDuration, Outcome, Rejected,
    SlidingWindow, State, TransitionReason,
};
use keel_core::{ConfigError, Instant};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn at(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

fn admit(b: &mut CircuitBreaker, now: Instant) -> BreakerPermit {
    match b.try_acquire(now) {
        Ok(p) => p,
        Err(r) => panic!("expected admission at {now:?}, got {r:?}"),
    }
}

fn fail(b: &mut CircuitBreaker, now: Instant) {
    let p = admit(b, now);
    b.on_failure(now, p);
}

fn succeed(b: &mut CircuitBreaker, now: Instant) {
    let p = admit(b, now);
    b.on_success(now, p);
}

fn transitions(b: &mut CircuitBreaker) -> Vec<(State, State, Instant, TransitionReason)> {
    let mut v = Vec::new();
    while let Some(ev) = b.poll_event() {
        match ev {
            BreakerEvent::Transition {
                from,
                to,
                at,
                reason,
            } => v.push((from, to, at, reason)),
            _ => unreachable!(),
        }
    }
    v
}

fn consecutive(n: u32, open: Duration, probes: u32) -> CircuitBreaker {
    let config = BreakerConfig::consecutive_failures(n)
        .open_duration(open)
        .permitted_calls_in_half_open(probes)
        .build()
        .unwrap();
    CircuitBreaker::new(config, Instant::ZERO)
}

#[test]
fn opens_after_5_consecutive_failures() {
    let mut b = consecutive(5, secs(30), 1);
    for i in 0..4 {
        fail(&mut b, at(i));
    }
    succeed(&mut b, at(4)); // breaks the run
    for i in 0..4 {
        fail(&mut b, at(10 + i));
    }
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.stats().consecutive_failures, 4);
    fail(&mut b, at(20));
    assert_eq!(b.state(), State::Open);
    assert_eq!(
        transitions(&mut b),
        vec![(
            State::Closed,
            State::Open,
            at(20),
            TransitionReason::ConsecutiveFailures
        )]
    );
    let s = b.stats();
    assert_eq!((s.failures, s.successes, s.opened_count), (9, 1, 1));
    assert_eq!(s.consecutive_failures, 0);
}

#[test]
fn rejection_carries_retry_at() {
    let mut b = consecutive(1, secs(30), 1);
    fail(&mut b, at(1_000));
    assert_eq!(b.poll_timeout(), Some(at(31_000)));
    assert_eq!(
        b.try_acquire(at(5_000)),
        Err(Rejected {
            retry_at: Some(at(31_000)),
            reason: State::Open
        })
    );
    assert_eq!(
        b.try_acquire(at(30_999)).unwrap_err().retry_at,
        Some(at(31_000))
    );
    assert_eq!(b.stats().rejected, 2);
    // At retry_at exactly the breaker goes half-open and admits the probe.
    let _probe = admit(&mut b, at(31_000));
    assert_eq!(b.state(), State::HalfOpen);
    // Every slot taken and no maximum wait: no instant is known.
    assert_eq!(
        b.try_acquire(at(31_001)),
        Err(Rejected {
            retry_at: None,
            reason: State::HalfOpen
        })
    );
}

#[test]
fn does_not_judge_before_the_minimum_number_of_calls() {
    let config = BreakerConfig::builder()
        .count_window(10)
        .minimum_calls(5)
        .failure_rate_threshold(50)
        .disable_slow_call_rate()
        .build()
        .unwrap();
    let mut b = CircuitBreaker::new(config, Instant::ZERO);
    for i in 0..4 {
        fail(&mut b, at(i));
    }
    assert_eq!(b.state(), State::Closed, "100 % failures, but only 4 calls");
    assert_eq!(b.stats().failure_rate_percent, None);
    assert_eq!(b.stats().window_failures, 4);
    succeed(&mut b, at(4));
    // 4 of 5 = 80 % >= 50 %: judged at the fifth call.
    assert_eq!(b.state(), State::Open);
    assert_eq!(
        transitions(&mut b)[0].3,
        TransitionReason::FailureRate,
        "tripped by the rate"
    );
}

#[test]
fn failure_rate_at_the_threshold_trips_it_and_below_does_not() {
    let alternate = |threshold: u8, calls: u64| {
        let config = BreakerConfig::builder()
            .count_window(10)
            .minimum_calls(10)
            .failure_rate_threshold(threshold)
            .build()
            .unwrap();
        let mut b = CircuitBreaker::new(config, Instant::ZERO);
        for i in 0..calls {
            if i % 2 == 0 {
                succeed(&mut b, at(i));
            } else {
                fail(&mut b, at(i));
            }
        }
        b
    };
    // Success, failure, ...: ten calls hold 5 failures = 50 %.
    let b = alternate(50, 10);
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.stats().opened_count, 1);
    // At 51 % it never trips, however long it runs: the window always holds 5 of 10.
    let b = alternate(51, 41);
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.stats().failure_rate_percent, Some(50));
    assert_eq!(b.stats().window_calls, 10);
    assert_eq!(b.stats().window_failures, 5);
}

#[test]
fn slow_calls_trip_it() {
    let config = BreakerConfig::builder()
        .count_window(4)
        .minimum_calls(4)
        .disable_failure_rate()
        .slow_call_rate_threshold(75)
        .slow_call_duration_threshold(Duration::from_millis(500))
        .build()
        .unwrap();
    let mut b = CircuitBreaker::new(config, Instant::ZERO);
    let mut now = 0;
    let mut call = |b: &mut CircuitBreaker, ms: u64| {
        let p = admit(b, at(now));
        now += ms;
        b.on_success(at(now), p);
    };
    call(&mut b, 500); // slow (>= threshold)
    call(&mut b, 499); // fast
    call(&mut b, 900); // slow
    assert_eq!(b.state(), State::Closed);
    call(&mut b, 10); // fast: 2 of 4 slow = 50 %
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.stats().slow_call_rate_percent, Some(50));
    call(&mut b, 600); // evicts the first slow one: [fast, slow, fast, slow] = 50 %
    assert_eq!(b.state(), State::Closed);
    call(&mut b, 600); // [slow, fast, slow, slow] = 75 %
    assert_eq!(b.state(), State::Open);
    let t = transitions(&mut b);
    assert_eq!(t[0].3, TransitionReason::SlowCallRate);
    assert_eq!(b.stats().slow, 4);
    assert_eq!(b.stats().failures, 0);
}

#[test]
fn a_slow_probe_reopens_it_when_the_slow_call_policy_is_on() {
    let config = BreakerConfig::builder()
        .consecutive_failures(1)
        .count_window(10)
        .minimum_calls(10)
        .slow_call_duration_threshold(secs(1))
        .open_duration(secs(10))
        .permitted_calls_in_half_open(2)
        .build()
        .unwrap();
    let mut b = CircuitBreaker::new(config, Instant::ZERO);
    fail(&mut b, at(0));
    let probe = admit(&mut b, at(10_000));
    b.on_success(at(11_000), probe);
    assert_eq!(b.state(), State::Open);
    assert_eq!(
        transitions(&mut b).last().unwrap().3,
        TransitionReason::ProbeSlow
    );
}

#[test]
fn admits_at_most_n_probes_while_half_open() {
    let mut b = consecutive(1, secs(10), 3);
    fail(&mut b, at(0));
    b.handle_timeout(at(9_999));
    assert_eq!(b.state(), State::Open);
    b.handle_timeout(at(10_000));
    assert_eq!(b.state(), State::HalfOpen);
    assert_eq!(b.poll_timeout(), None);
    let probes: Vec<_> = (0..3).map(|_| admit(&mut b, at(10_001))).collect();
    for _ in 0..5 {
        assert_eq!(
            b.try_acquire(at(10_002)).unwrap_err().reason,
            State::HalfOpen
        );
    }
    assert_eq!(b.stats().probes_in_use, 3);
    // An ignored probe frees its slot for another.
    b.on_ignored(at(10_003), probes[0]);
    let replacement = admit(&mut b, at(10_004));
    assert!(b.try_acquire(at(10_004)).is_err());
    // Three successes close it.
    b.on_success(at(10_005), probes[1]);
    b.on_success(at(10_005), probes[2]);
    assert_eq!(b.state(), State::HalfOpen);
    assert!(
        b.try_acquire(at(10_005)).is_err(),
        "succeeded probes keep their slot"
    );
    b.on_success(at(10_006), replacement);
    assert_eq!(b.state(), State::Closed);
    let t = transitions(&mut b);
    assert_eq!(
        t.iter().map(|e| (e.1, e.3)).collect::<Vec<_>>(),
        vec![
            (State::Open, TransitionReason::ConsecutiveFailures),
            (State::HalfOpen, TransitionReason::OpenElapsed),
            (State::Closed, TransitionReason::ProbesSucceeded),
        ]
    );
    assert_eq!(t[1].2, at(10_000));
    let s = b.stats();
    assert_eq!((s.admitted, s.rejected, s.ignored), (5, 7, 1));
}

#[test]
fn one_failed_probe_reopens_it() {
    let mut b = consecutive(1, secs(10), 3);
    fail(&mut b, at(0));
    let p1 = admit(&mut b, at(10_000));
    let p2 = admit(&mut b, at(10_000));
    b.on_success(at(10_001), p1);
    b.on_failure(at(10_002), p2);
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.poll_timeout(), Some(at(20_002)));
    assert_eq!(
        transitions(&mut b).last().unwrap().3,
        TransitionReason::ProbeFailed
    );
}

#[test]
fn a_success_from_before_the_trip_does_not_close_it() {
    let mut b = consecutive(2, secs(10), 1);
    let slow_call = admit(&mut b, at(0));
    fail(&mut b, at(1));
    fail(&mut b, at(2));
    assert_eq!(b.state(), State::Open);
    // The call admitted before the trip succeeds while open...
    b.on_success(at(3), slow_call);
    assert_eq!(b.state(), State::Open);
    // ...and a second old permit reports during half-open: neither counts as a probe.
    let older = slow_call;
    let probe = admit(&mut b, at(10_002));
    b.on_success(at(10_003), older);
    assert_eq!(b.state(), State::HalfOpen);
    let s = b.stats();
    assert_eq!((s.stale_outcomes, s.successes), (2, 0));
    b.on_success(at(10_004), probe);
    assert_eq!(b.state(), State::Closed);
    // Trip, half-open, close: three transitions, three generations.
    assert_eq!(b.stats().generation, 3);
}

#[test]
fn a_failure_from_before_a_reset_does_not_trip_it() {
    let mut b = consecutive(1, secs(10), 1);
    let p = admit(&mut b, at(0));
    b.reset(at(1));
    b.on_failure(at(2), p);
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.stats().stale_outcomes, 1);
    assert!(
        transitions(&mut b).is_empty(),
        "reset from closed emits nothing"
    );
}

#[test]
fn open_duration_grows_then_resets() {
    let config = BreakerConfig::consecutive_failures(1)
        .exponential_open_duration(secs(1), 2, secs(5), Jitter::None)
        .permitted_calls_in_half_open(1)
        .build()
        .unwrap();
    let mut b = CircuitBreaker::new(config, Instant::ZERO);
    let mut now = at(0);
    fail(&mut b, now);
    let mut opens = Vec::new();
    for _ in 0..4 {
        let until = b.poll_timeout().unwrap();
        opens.push(until - now);
        now = until;
        b.handle_timeout(now);
        assert_eq!(b.state(), State::HalfOpen);
        fail(&mut b, now); // the probe fails: reopen, longer
    }
    opens.push(b.poll_timeout().unwrap() - now);
    assert_eq!(opens, vec![secs(1), secs(2), secs(4), secs(5), secs(5)]);
    assert_eq!(b.stats().trips_in_a_row, 5);
    // A successful probe closes it, and the next trip starts from the base again.
    now = b.poll_timeout().unwrap();
    succeed(&mut b, now);
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.stats().trips_in_a_row, 0);
    fail(&mut b, now);
    assert_eq!(b.poll_timeout(), Some(now + secs(1)));
}

#[test]
fn jittered_open_durations_stay_within_their_bounds_and_repeat_with_the_seed() {
    let run = |jitter: Jitter, seed: u64| {
        let config = BreakerConfig::consecutive_failures(1)
            .exponential_open_duration(secs(8), 1, secs(8), jitter)
            .permitted_calls_in_half_open(1)
            .seed(seed)
            .build()
            .unwrap();
        let mut b = CircuitBreaker::new(config, Instant::ZERO);
        let mut now = at(0);
        let mut out = Vec::new();
        for _ in 0..50 {
            fail(&mut b, now);
            let until = b.poll_timeout().unwrap_or(now);
            out.push(until - now);
            now = until;
            b.handle_timeout(now);
        }
        out
    };
    let full = run(Jitter::Full, 7);
    assert!(full.iter().all(|d| *d <= secs(8)));
    assert_eq!(full, run(Jitter::Full, 7));
    assert_ne!(full, run(Jitter::Full, 8));
    let equal = run(Jitter::Equal, 7);
    assert!(equal.iter().all(|d| *d >= secs(4) && *d <= secs(8)));
    assert!(equal.iter().any(|d| *d != equal[0]), "jitter varies");
}

#[test]
fn open_durations_are_the_delays_of_the_equivalent_backoff() {
    // The breaker draws its exponential open durations from a `Backoff`: exponential from
    // `base` by `factor * 100` %, capped, the same jitter and seed, unlimited attempts; reset
    // (not re-seeded) when the breaker closes. Computed here independently by a Backoff.
    for jitter in [Jitter::None, Jitter::Full, Jitter::Equal] {
        let config = BreakerConfig::consecutive_failures(1)
            .exponential_open_duration(Duration::from_millis(300), 3, secs(20), jitter)
            .permitted_calls_in_half_open(1)
            .seed(42)
            .build()
            .unwrap();
        let schedule = BackoffConfig::exponential(Duration::from_millis(300), secs(20))
            .factor_percent(300)
            .jitter(jitter)
            .unlimited_attempts()
            .seed(42)
            .build()
            .unwrap();
        let mut expected = Backoff::new(schedule, Instant::ZERO);
        let mut b = CircuitBreaker::new(config, Instant::ZERO);
        let mut now = at(0);
        let mut seen = Vec::new();
        for round in 0..3 {
            fail(&mut b, now);
            for trip in 0..7 {
                assert_eq!(b.state(), State::Open, "{jitter:?}, round {round}");
                let until = b
                    .poll_timeout()
                    .expect("an open breaker has a timer for its half-open probe");
                let want = expected.delays().next().unwrap();
                assert_eq!(until - now, want, "{jitter:?}, round {round}, trip {trip}");
                seen.push(until - now);
                now = until;
                b.handle_timeout(now);
                assert_eq!(b.state(), State::HalfOpen);
                if trip < 6 {
                    fail(&mut b, now); // the probe fails: open again, longer
                }
            }
            // A successful probe closes it; the schedule starts over, the draws go on.
            succeed(&mut b, now);
            assert_eq!(b.state(), State::Closed);
            expected.reset(now);
        }
        // Anchored independently of `Backoff`: without jitter the open durations are the
        // exponential schedule itself (×3 from 300 ms, capped at 20 s), starting over after
        // each close; with jitter they vary and stay within it.
        let ms = Duration::from_millis;
        let schedule = [
            ms(300),
            ms(900),
            ms(2700),
            ms(8100),
            secs(20),
            secs(20),
            secs(20),
        ];
        match jitter {
            Jitter::None => assert_eq!(seen, schedule.repeat(3)),
            _ => {
                for (d, cap) in seen.iter().zip(schedule.iter().cycle()) {
                    assert!(d <= cap, "{jitter:?}: {d:?} over {cap:?}");
                }
                assert_ne!(seen, schedule.repeat(3), "{jitter:?}: no jitter applied");
            }
        }
    }
}

#[test]
fn forced_open_rejects_everything() {
    let mut b = consecutive(1, secs(1), 1);
    let before = admit(&mut b, at(0));
    b.force_open(at(1));
    for t in [at(2), at(1_000_000), Instant::MAX] {
        assert_eq!(
            b.try_acquire(t),
            Err(Rejected {
                retry_at: None,
                reason: State::ForcedOpen
            })
        );
        b.handle_timeout(t);
        assert_eq!(b.poll_timeout(), None);
    }
    b.on_success(Instant::MAX, before);
    assert_eq!(b.state(), State::ForcedOpen);
    b.reset(Instant::MAX);
    assert_eq!(b.state(), State::Closed);
    let t = transitions(&mut b);
    assert_eq!(
        t.iter().map(|e| (e.0, e.1, e.3)).collect::<Vec<_>>(),
        vec![
            (State::Closed, State::ForcedOpen, TransitionReason::Forced),
            (State::ForcedOpen, State::Closed, TransitionReason::Reset),
        ]
    );
}

#[test]
fn disabled_admits_everything() {
    let mut b = consecutive(1, secs(1), 1);
    fail(&mut b, at(0));
    assert_eq!(b.state(), State::Open);
    b.disable(at(1));
    for i in 0..1_000 {
        fail(&mut b, at(2 + i));
    }
    assert_eq!(b.state(), State::Disabled);
    assert_eq!(b.poll_timeout(), None);
    let s = b.stats();
    assert_eq!((s.admitted, s.failures, s.opened_count), (1_001, 1_001, 1));
    b.reset(at(5_000));
    assert_eq!(b.state(), State::Closed);
    fail(&mut b, at(5_001));
    assert_eq!(b.state(), State::Open);
}

#[test]
fn time_window_forgets_old_buckets() {
    let config = BreakerConfig::builder()
        .time_window(10, secs(1))
        .minimum_calls(4)
        .failure_rate_threshold(50)
        .disable_slow_call_rate()
        .build()
        .unwrap();
    assert_eq!(
        config.sliding_window(),
        SlidingWindow::Time {
            buckets: 10,
            bucket_width: secs(1)
        }
    );
    let mut b = CircuitBreaker::new(config, Instant::ZERO);
    // Three failures at t = 0..0.3 s: under the minimum.
    for i in 0..3 {
        fail(&mut b, at(i * 100));
    }
    assert_eq!(b.stats().window_calls, 3);
    // Ten seconds later those buckets have left the window: one more failure is 1 call, not 4.
    fail(&mut b, at(10_000));
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.stats().window_calls, 1);
    assert_eq!(b.stats().window_failures, 1);
    // Within the window the calls add up: 2 failures + 2 successes = 50 % at 4 calls.
    succeed(&mut b, at(12_000));
    succeed(&mut b, at(15_000));
    assert_eq!(b.state(), State::Closed);
    fail(&mut b, at(19_999));
    assert_eq!(b.stats().window_calls, 0, "cleared on the trip");
    assert_eq!(b.state(), State::Open);
}

#[test]
fn time_window_at_the_edge_keeps_the_last_full_buckets() {
    let config = BreakerConfig::builder()
        .time_window_secs(3)
        .minimum_calls(1)
        .failure_rate_threshold(100)
        .disable_slow_call_rate()
        .build()
        .unwrap();
    let mut b = CircuitBreaker::new(config, Instant::ZERO);
    succeed(&mut b, at(999)); // bucket 0
    fail(&mut b, at(2_999)); // bucket 2: window holds buckets 0..=2
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.stats().failure_rate_percent, Some(50));
    fail(&mut b, at(3_000)); // bucket 3: bucket 0 leaves; 2 failures of 2
    assert_eq!(b.state(), State::Open);
}

#[test]
fn max_wait_in_half_open_reopens_a_stuck_breaker() {
    let config = BreakerConfig::consecutive_failures(1)
        .open_duration(secs(10))
        .permitted_calls_in_half_open(1)
        .max_wait_in_half_open(secs(5))
        .build()
        .unwrap();
    let mut b = CircuitBreaker::new(config, Instant::ZERO);
    fail(&mut b, at(0));
    let lost_probe = admit(&mut b, at(12_000)); // half-open since 12 s; never reported
    assert_eq!(
        b.try_acquire(at(13_000)).unwrap_err().retry_at,
        Some(at(17_000))
    );
    assert_eq!(b.poll_timeout(), Some(at(17_000)));
    b.handle_timeout(at(17_000));
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.poll_timeout(), Some(at(27_000)));
    b.on_success(at(17_001), lost_probe);
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.stats().stale_outcomes, 1);
    assert_eq!(
        transitions(&mut b).last().unwrap().3,
        TransitionReason::HalfOpenTimeout
    );
}

#[test]
fn on_outcome_matches_the_named_methods_and_time_going_back_is_clamped() {
    let mut b = consecutive(2, secs(10), 1);
    let p = admit(&mut b, at(5_000));
    b.on_outcome(at(1), p, Outcome::Failure);
    let p = admit(&mut b, at(0));
    assert_eq!(
        p.admitted_at(),
        at(5_000),
        "clamped to the newest instant seen"
    );
    b.on_outcome(at(0), p, Outcome::Failure);
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.poll_timeout(), Some(at(15_000)));
    b.handle_timeout(at(14_999));
    assert_eq!(b.poll_timeout(), Some(at(15_000)));
}

#[test]
fn stats_count_what_happened() {
    let mut b = consecutive(3, secs(1), 1);
    succeed(&mut b, at(0));
    let p = admit(&mut b, at(0));
    b.on_ignored(at(0), p);
    fail(&mut b, at(0));
    let s = b.stats();
    assert_eq!(s.state, State::Closed);
    assert_eq!(
        (s.admitted, s.successes, s.failures, s.ignored, s.rejected),
        (3, 1, 1, 1, 0)
    );
    assert_eq!(
        (s.transitions, s.stale_outcomes, s.events_dropped),
        (0, 0, 0)
    );
    assert_eq!(s.window_calls, 0, "no rate policy: no window");
    assert_eq!(s.failure_rate_percent, None);
}

#[test]
fn defaults_are_resilience4j_s() {
    let c = BreakerConfig::builder().build().unwrap();
    assert_eq!(c, BreakerConfig::default());
    assert_eq!(c.failure_rate_threshold(), Some(50));
    assert_eq!(c.sliding_window(), SlidingWindow::Count { size: 100 });
    assert_eq!(c.minimum_calls(), 100);
    assert_eq!(c.open_duration(), OpenDuration::Fixed(secs(60)));
    assert_eq!(c.permitted_calls_in_half_open(), 10);
    assert_eq!(c.slow_call_duration_threshold(), secs(60));
    assert_eq!(c.slow_call_rate_threshold(), Some(100));
    assert_eq!(c.max_wait_in_half_open(), None);
    assert_eq!(c.consecutive_failures_threshold(), None);
}

#[test]
fn invalid_configs_are_rejected_with_the_field_to_change() {
    let b = BreakerConfig::builder;
    assert_eq!(
        b().count_window(0).build(),
        Err(ConfigError::Zero {
            field: "sliding_window_size"
        })
    );
    assert!(matches!(
        b().count_window(10).minimum_calls(11).build(),
        Err(ConfigError::Conflict {
            field: "minimum_calls",
            other: "sliding_window_size",
            ..
        })
    ));
    // With no rate policy the window is unused, so its size does not conflict.
    assert!(BreakerConfig::consecutive_failures(3)
        .count_window(10)
        .minimum_calls(11)
        .build()
        .is_ok());
    for bad in [0u8, 101, 255] {
        assert!(matches!(
            b().failure_rate_threshold(bad).build(),
            Err(ConfigError::OutOfRange {
                field: "failure_rate_threshold",
                ..
            })
        ));
        assert!(matches!(
            b().slow_call_rate_threshold(bad).build(),
            Err(ConfigError::OutOfRange {
                field: "slow_call_rate_threshold",
                ..
            })
        ));
    }
    assert_eq!(
        BreakerConfig::consecutive_failures(0).build(),
        Err(ConfigError::Zero {
            field: "consecutive_failures"
        })
    );
    assert!(matches!(
        b().disable_failure_rate().disable_slow_call_rate().build(),
        Err(ConfigError::Conflict { .. })
    ));
    assert_eq!(
        b().time_window(10, Duration::ZERO).build(),
        Err(ConfigError::Zero {
            field: "bucket_width"
        })
    );
    assert!(matches!(
        b().time_window(30, Duration::MAX).build(),
        Err(ConfigError::Overflow { .. })
    ));
    // A window of exactly u64::MAX ns (3 * (u64::MAX / 3), as u64::MAX is a multiple of 3)
    // still fits; one nanosecond more per bucket does not.
    assert!(b()
        .time_window(3, Duration::from_nanos(u64::MAX / 3))
        .build()
        .is_ok());
    assert!(matches!(
        b().time_window(3, Duration::from_nanos(u64::MAX / 3 + 1))
            .build(),
        Err(ConfigError::Overflow { .. })
    ));
    assert!(matches!(
        b().time_window(u32::MAX, secs(1)).build(),
        Err(ConfigError::OutOfRange { .. })
    ));
    assert!(matches!(
        b().count_window(u32::MAX).minimum_calls(1).build(),
        Err(ConfigError::OutOfRange { .. })
    ));
    assert_eq!(
        b().open_duration(Duration::ZERO).build(),
        Err(ConfigError::Zero {
            field: "open_duration"
        })
    );
    assert_eq!(
        b().exponential_open_duration(secs(2), 2, secs(1), Jitter::None)
            .build(),
        Err(ConfigError::InvertedRange {
            min: "open_duration_base",
            max: "open_duration_cap"
        })
    );
    assert_eq!(
        b().permitted_calls_in_half_open(0).build(),
        Err(ConfigError::Zero {
            field: "permitted_calls_in_half_open"
        })
    );
    assert_eq!(
        b().minimum_calls(0).build(),
        Err(ConfigError::Zero {
            field: "minimum_calls"
        })
    );
    let msg = b()
        .count_window(10)
        .minimum_calls(11)
        .build()
        .unwrap_err()
        .to_string();
    assert!(msg.contains("lower minimum_calls"), "{msg}");
}

#[cfg(feature = "std")]
#[test]
fn shared_breaker_is_one_breaker_across_clones() {
    use keel_core::sync::breaker::SharedBreaker;
    let config = BreakerConfig::consecutive_failures(2)
        .open_duration(secs(5))
        .build()
        .unwrap();
    let a = SharedBreaker::new(config, Instant::ZERO);
    let b = a.clone();
    let p = a.try_acquire(at(0)).unwrap();
    b.on_failure(at(0), p);
    let p = b.try_acquire(at(0)).unwrap();
    a.on_outcome(at(0), p, Outcome::Failure);
    assert_eq!(b.state(), State::Open);
    assert_eq!(a.poll_timeout(), Some(at(5_000)));
    assert_eq!(a.try_acquire(at(1)).unwrap_err().retry_at, Some(at(5_000)));
    a.force_open(at(2));
    assert_eq!(b.stats().state, State::ForcedOpen);
    let mut seen = Vec::new();
    b.drain_events(|e| seen.push(e));
    assert_eq!(seen.len(), 2);
    assert_eq!(a.poll_event(), None);
    a.disable(at(3));
    assert!(b.try_acquire(at(3)).is_ok());
    b.reset(at(4));
    b.handle_timeout(at(5));
    assert_eq!(a.state(), State::Closed);
}

#[cfg(feature = "std")]
#[test]
fn shared_breaker_named_outcomes_count_and_a_success_ends_the_run() {
    use keel_core::sync::breaker::SharedBreaker;
    let config = BreakerConfig::consecutive_failures(2).build().unwrap();
    let b = SharedBreaker::new(config, Instant::ZERO);
    let p = b.try_acquire(at(0)).unwrap();
    b.on_failure(at(1), p);
    assert_eq!(b.stats().consecutive_failures, 1);
    let p = b.try_acquire(at(2)).unwrap();
    b.on_success(at(3), p);
    let p = b.try_acquire(at(4)).unwrap();
    b.on_ignored(at(5), p);
    let st = b.stats();
    assert_eq!(
        (
            st.consecutive_failures,
            st.successes,
            st.failures,
            st.ignored
        ),
        (0, 1, 1, 1)
    );
    // The success ended the run: one more failure does not trip it.
    let p = b.try_acquire(at(6)).unwrap();
    b.on_failure(at(7), p);
    assert_eq!(b.state(), State::Closed);
}

#[cfg(feature = "std")]
#[test]
fn shared_breaker_poll_event_hands_out_each_queued_event_in_order() {
    use keel_core::sync::breaker::SharedBreaker;
    let config = BreakerConfig::consecutive_failures(1).build().unwrap();
    let b = SharedBreaker::new(config, Instant::ZERO);
    assert_eq!(b.poll_event(), None);
    let p = b.try_acquire(at(0)).unwrap();
    b.on_failure(at(1), p);
    b.force_open(at(2));
    let to = |e: Option<BreakerEvent>| match e {
        Some(BreakerEvent::Transition { from, to, .. }) => Some((from, to)),
        None => None,
        Some(other) => panic!("not a transition: {other:?}"),
    };
    assert_eq!(to(b.poll_event()), Some((State::Closed, State::Open)));
    assert_eq!(to(b.poll_event()), Some((State::Open, State::ForcedOpen)));
    assert_eq!(b.poll_event(), None);
}

#[cfg(feature = "std")]
#[test]
fn shared_breaker_counts_a_long_failure_run_exactly() {
    use keel_core::sync::breaker::SharedBreaker;
    // A threshold no run reaches here: every failure below it is the closed path's.
    let config = BreakerConfig::consecutive_failures(u32::MAX)
        .build()
        .unwrap();
    let b = SharedBreaker::new(config, Instant::ZERO);
    for n in 1..=5u32 {
        let p = b.try_acquire(at(u64::from(n))).unwrap();
        b.on_failure(at(u64::from(n)), p);
        assert_eq!(b.stats().consecutive_failures, n);
    }
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn window_capacity_depends_on_alloc() {
    let count = |n| {
        BreakerConfig::builder()
            .count_window(n)
            .minimum_calls(1)
            .build()
    };
    let time = |n| {
        BreakerConfig::builder()
            .time_window(n, secs(1))
            .minimum_calls(1)
            .build()
    };
    assert!(count(512).is_ok());
    assert!(time(32).is_ok());
    let big = (count(513).is_ok(), time(33).is_ok());
    if cfg!(feature = "alloc") {
        assert_eq!(big, (true, true));
        assert!(count(1 << 24).is_ok());
        assert!(count((1 << 24) + 1).is_err());
        assert!(time(1 << 16).is_ok());
        assert!(time((1 << 16) + 1).is_err());
    } else {
        assert_eq!(big, (false, false));
        let msg = count(513).unwrap_err().to_string();
        assert!(msg.contains("enable `alloc`"), "{msg}");
    }
}

#[test]
fn a_full_inline_window_still_evicts_exactly() {
    // 512 outcomes is the largest window every build accepts.
    let config = BreakerConfig::builder()
        .count_window(512)
        .minimum_calls(512)
        .failure_rate_threshold(100)
        .disable_slow_call_rate()
        .build()
        .unwrap();
    let mut b = CircuitBreaker::new(config, Instant::ZERO);
    succeed(&mut b, at(0));
    for i in 0..511 {
        fail(&mut b, at(i));
    }
    assert_eq!(b.stats().window_failures, 511);
    assert_eq!(b.state(), State::Closed);
    fail(&mut b, at(600)); // evicts the success: 512 of 512 failed
    assert_eq!(b.state(), State::Open);
}

#[test]
fn decorrelated_jitter_is_refused_for_the_open_duration() {
    let err = BreakerConfig::consecutive_failures(1)
        .exponential_open_duration(secs(1), 2, secs(8), Jitter::Decorrelated)
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::OutOfRange {
                field: "jitter",
                ..
            }
        ),
        "{err:?}"
    );
}

/// The label strings are part of the API (logs, metrics labels): each is pinned.
#[test]
fn state_and_reason_labels_are_stable() {
    for (s, label) in [
        (State::Closed, "closed"),
        (State::Open, "open"),
        (State::HalfOpen, "half-open"),
        (State::ForcedOpen, "forced-open"),
        (State::Disabled, "disabled"),
    ] {
        assert_eq!(s.as_str(), label);
        assert_eq!(s.to_string(), label);
    }
    for (r, label) in [
        (
            TransitionReason::ConsecutiveFailures,
            "consecutive failures",
        ),
        (
            TransitionReason::FailureRate,
            "failure rate reached the threshold",
        ),
        (
            TransitionReason::SlowCallRate,
            "slow-call rate reached the threshold",
        ),
        (TransitionReason::OpenElapsed, "open duration elapsed"),
        (TransitionReason::ProbeFailed, "a probe failed"),
        (TransitionReason::ProbeSlow, "a probe was slow"),
        (TransitionReason::ProbesSucceeded, "the probes succeeded"),
        (TransitionReason::HalfOpenTimeout, "half-open for too long"),
        (TransitionReason::Forced, "forced open"),
        (TransitionReason::Disabled, "disabled"),
        (TransitionReason::Reset, "reset"),
    ] {
        assert_eq!(r.as_str(), label);
        assert_eq!(r.to_string(), label);
    }
}

/// Full jitter can draw a zero open duration: the breaker is then half-open at once (the
/// trip's own instant admits a probe), and `poll_timeout` never names an instant already
/// reached. A 1 ns duration is the other draw: rejected until then, half-open at it.
#[test]
fn a_zero_open_duration_is_half_open_at_once() {
    let ns = Duration::from_nanos(1);
    let config = BreakerConfig::consecutive_failures(1)
        .exponential_open_duration(ns, 1, ns, Jitter::Full)
        .permitted_calls_in_half_open(1)
        .seed(3)
        .build()
        .unwrap();
    let mut b = CircuitBreaker::new(config, Instant::ZERO);
    let mut now = at(1_000);
    let (mut zero, mut one) = (0, 0);
    for _ in 0..64 {
        // From Closed, then from HalfOpen: the call (a probe) is admitted at `now` and fails.
        fail(&mut b, now);
        match b.state() {
            State::HalfOpen => {
                zero += 1;
                assert!(b.poll_timeout().is_none_or(|t| t > now));
            }
            State::Open => {
                one += 1;
                let t = now + ns;
                assert_eq!(b.poll_timeout(), Some(t));
                assert_eq!(b.try_acquire(now).unwrap_err().retry_at, Some(t));
                now = t;
            }
            s => panic!("unexpected {s:?}"),
        }
    }
    assert!(
        zero > 0 && one > 0,
        "both draws seen: {zero} zero, {one} one"
    );
}

/// Every getter returns what was set, away from the defaults (a getter that returned the
/// default would pass `defaults_are_resilience4j_s`), and the breaker hands back its config.
#[test]
fn config_getters_return_what_was_set() {
    let c = BreakerConfig::builder()
        .consecutive_failures(7)
        .time_window(12, secs(5))
        .minimum_calls(9)
        .failure_rate_threshold(35)
        .slow_call_rate_threshold(65)
        .slow_call_duration_threshold(secs(3))
        .open_duration(secs(45))
        .permitted_calls_in_half_open(4)
        .max_wait_in_half_open(secs(20))
        .abandon_threshold(secs(2))
        .seed(99)
        .build()
        .unwrap();
    assert_eq!(c.consecutive_failures_threshold(), Some(7));
    assert_eq!(
        c.sliding_window(),
        SlidingWindow::Time {
            buckets: 12,
            bucket_width: secs(5)
        }
    );
    assert_eq!(c.minimum_calls(), 9);
    assert_eq!(c.failure_rate_threshold(), Some(35));
    assert_eq!(c.slow_call_rate_threshold(), Some(65));
    assert_eq!(c.slow_call_duration_threshold(), secs(3));
    assert_eq!(c.open_duration(), OpenDuration::Fixed(secs(45)));
    assert_eq!(c.permitted_calls_in_half_open(), 4);
    assert_eq!(c.max_wait_in_half_open(), Some(secs(20)));
    assert_eq!(c.abandon_threshold(), secs(2));
    assert_eq!(c.seed(), 99);
    let b = CircuitBreaker::new(c, Instant::ZERO);
    assert_eq!(*b.config(), c);
    // `with_seed` changes the seed and nothing else.
    let reseeded = c.with_seed(5);
    assert_eq!(reseeded.seed(), 5);
    assert_eq!(reseeded.with_seed(99), c);
}

/// With both rate policies off the breaker keeps no sliding window: the window's settings are
/// not checked against `minimum_calls` (no rate is ever judged), and no outcome is counted in
/// it, while the consecutive-failures policy trips as usual.
#[test]
fn a_consecutive_failures_only_breaker_keeps_no_window() {
    let c = BreakerConfig::consecutive_failures(3)
        .count_window(10)
        .minimum_calls(11)
        .build()
        .expect("no rate policy: minimum_calls above the window size is not a conflict");
    let mut b = CircuitBreaker::new(c, Instant::ZERO);
    succeed(&mut b, at(0));
    fail(&mut b, at(1));
    fail(&mut b, at(2));
    let s = b.stats();
    assert_eq!(
        (s.window_calls, s.window_failures, s.window_slow),
        (0, 0, 0)
    );
    assert_eq!(b.state(), State::Closed);
    fail(&mut b, at(3));
    assert_eq!(b.state(), State::Open);
}
