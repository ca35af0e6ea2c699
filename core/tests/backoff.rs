//! Scenario tests for `keel_core::backoff` on a simulated clock.

use core::time::Duration;

use keel_core::backoff::{
    Backoff, BackoffConfig, BackoffStats, GiveUpReason, Jitter, RetryDecision, Schedule,
};
use keel_core::time::Instant;
use keel_core::ConfigError;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn t0() -> Instant {
    Instant::from_secs(1_000)
}

/// The delays `next_delay` yields when each retry fails at the instant it was scheduled for.
fn delays_on_clock(backoff: &mut Backoff, start: Instant, n: usize) -> Vec<Duration> {
    let mut now = start;
    let mut out = Vec::new();
    for _ in 0..n {
        match backoff.next_delay(now) {
            RetryDecision::RetryAt(at) => {
                out.push(at - now);
                now = at;
            }
            RetryDecision::GiveUp(_) => break,
        }
    }
    out
}

#[test]
fn exponential_doubles_then_caps() {
    let config = BackoffConfig::exponential(ms(100), ms(1_000))
        .jitter(Jitter::None)
        .unlimited_attempts()
        .build()
        .unwrap();
    let mut b = Backoff::new(config, t0());
    let got = delays_on_clock(&mut b, t0(), 7);
    let want: Vec<Duration> = [100, 200, 400, 800, 1_000, 1_000, 1_000].map(ms).to_vec();
    assert_eq!(got, want);
    assert_eq!(b.attempts(), 8);
    assert_eq!(b.stats().retries, 7);
}

#[test]
fn exponential_with_factor_150_grows_by_half() {
    let config = BackoffConfig::exponential(ms(100), ms(400))
        .factor_percent(150)
        .jitter(Jitter::None)
        .unlimited_attempts()
        .build()
        .unwrap();
    let mut b = Backoff::new(config, t0());
    let got: Vec<Duration> = b.delays().take(6).collect();
    let want = vec![
        ms(100),
        ms(150),
        ms(225),
        Duration::from_nanos(337_500_000),
        ms(400),
        ms(400),
    ];
    assert_eq!(got, want);
}

#[test]
fn exponential_saturates_at_a_huge_cap_without_overflow() {
    let config = BackoffConfig::exponential(Duration::from_secs(1), Duration::MAX)
        .factor_percent(u32::MAX)
        .jitter(Jitter::None)
        .unlimited_attempts()
        .build()
        .unwrap();
    let mut b = Backoff::new(config, t0());
    let got: Vec<Duration> = b.delays().take(4).collect();
    assert_eq!(got[0], Duration::from_secs(1));
    // 1 s * 42 949 672.95 = 42 949 672.95 s
    assert_eq!(got[1], Duration::from_nanos(42_949_672_950_000_000));
    assert_eq!(got[2], Duration::from_nanos(u64::MAX));
    assert_eq!(got[3], Duration::from_nanos(u64::MAX));
    // The retry instant saturates too.
    assert_eq!(b.next_delay(t0()), RetryDecision::RetryAt(Instant::MAX));
}

#[test]
fn linear_adds_a_step_then_caps() {
    let config = BackoffConfig::linear(ms(100), ms(250))
        .cap(ms(700))
        .jitter(Jitter::None)
        .max_attempts(6)
        .build()
        .unwrap();
    let mut b = Backoff::new(config, t0());
    let got: Vec<Duration> = b.delays().collect();
    assert_eq!(got, [100, 350, 600, 700, 700].map(ms));
}

#[test]
fn constant_repeats_the_same_delay() {
    let config = BackoffConfig::constant(ms(500))
        .jitter(Jitter::None)
        .max_attempts(4)
        .build()
        .unwrap();
    let mut b = Backoff::new(config, t0());
    assert_eq!(b.delays().collect::<Vec<_>>(), [500, 500, 500].map(ms));
}

#[test]
fn full_jitter_stays_within_zero_and_the_cap() {
    let config = BackoffConfig::exponential(ms(100), ms(1_000))
        .jitter(Jitter::Full)
        .unlimited_attempts()
        .seed(42)
        .build()
        .unwrap();
    let mut b = Backoff::new(config, t0());
    let got: Vec<Duration> = b.delays().take(2_000).collect();
    let schedule = |i: usize| ms(100u64 << i.min(4)).min(ms(1_000));
    for (i, d) in got.iter().enumerate() {
        assert!(*d <= schedule(i), "retry {i}: {d:?}");
    }
    // Full jitter really spreads: both short and near-cap delays appear once capped.
    assert!(got[10..].iter().any(|d| *d < ms(100)));
    assert!(got[10..].iter().any(|d| *d > ms(900)));
}

#[test]
fn equal_jitter_stays_within_half_and_the_delay() {
    let config = BackoffConfig::exponential(ms(100), ms(800))
        .jitter(Jitter::Equal)
        .unlimited_attempts()
        .seed(9)
        .build()
        .unwrap();
    let mut b = Backoff::new(config, t0());
    let got: Vec<Duration> = b.delays().take(1_000).collect();
    for (i, d) in got.iter().enumerate() {
        let full = ms(100u64 << i.min(3));
        assert!(*d >= full / 2 && *d <= full, "retry {i}: {d:?}");
    }
    // Equal jitter really spreads over the upper half: once capped (800 ms), delays near
    // both ends of [400 ms, 800 ms] appear.
    assert!(got[10..].iter().any(|d| *d < ms(450)));
    assert!(got[10..].iter().any(|d| *d > ms(750)));
}

#[test]
fn decorrelated_stays_within_base_and_cap() {
    let config = BackoffConfig::exponential(ms(100), ms(2_000))
        .jitter(Jitter::Decorrelated)
        .unlimited_attempts()
        .seed(5)
        .build()
        .unwrap();
    let mut b = Backoff::new(config, t0());
    let got: Vec<Duration> = b.delays().take(5_000).collect();
    // The first sleep is drawn from [base, 3 * base].
    assert!(got[0] >= ms(100) && got[0] <= ms(300), "{:?}", got[0]);
    let mut prev = ms(100);
    for d in &got {
        assert!(*d >= ms(100) && *d <= ms(2_000), "{d:?}");
        assert!(*d <= (prev * 3).min(ms(2_000)), "{d:?} after {prev:?}");
        prev = *d;
    }
    // The AWS formula piles up at the cap (min(cap, ..)): it is reached.
    assert!(got.contains(&ms(2_000)));
}

#[test]
fn jitter_never_exceeds_the_cap_even_when_base_equals_cap() {
    for jitter in [
        Jitter::None,
        Jitter::Full,
        Jitter::Equal,
        Jitter::Decorrelated,
    ] {
        let config = BackoffConfig::exponential(ms(300), ms(300))
            .jitter(jitter)
            .unlimited_attempts()
            .seed(1)
            .build()
            .unwrap();
        let mut b = Backoff::new(config, t0());
        assert!(b.delays().take(500).all(|d| d <= ms(300)), "{jitter:?}");
    }
}

#[test]
fn retry_after_overrides_the_next_delay_but_is_capped() {
    let config = BackoffConfig::exponential(ms(100), ms(10_000))
        .jitter(Jitter::None)
        .max_retry_after(ms(3_000))
        .unlimited_attempts()
        .build()
        .unwrap();
    let mut b = Backoff::new(config, t0());
    let now = t0();
    assert_eq!(
        b.next_delay_with_hint(now, ms(1_500)),
        RetryDecision::RetryAt(now + ms(1_500))
    );
    let now = now + ms(1_500);
    assert_eq!(
        b.next_delay_with_hint(now, ms(60_000)),
        RetryDecision::RetryAt(now + ms(3_000))
    );
    // A zero hint does not skip the backoff: the schedule's third delay (400 ms) is longer.
    assert_eq!(
        b.next_delay_with_hint(now, Duration::ZERO),
        RetryDecision::RetryAt(now + ms(400))
    );
    // The schedule kept its place: this is the fourth retry, 100 * 2^3.
    assert_eq!(b.next_delay(now), RetryDecision::RetryAt(now + ms(800)));
    let s = b.stats();
    assert_eq!(
        (s.retries, s.hints, s.hints_capped, s.hints_raised),
        (4, 3, 1, 1)
    );
}

/// A hint exactly at `max_retry_after` or exactly at `min_retry_after` is within the bounds:
/// it is taken as it is, neither capped nor raised.
#[test]
fn hints_exactly_at_the_bounds_are_neither_capped_nor_raised() {
    let config = BackoffConfig::constant(ms(1))
        .jitter(Jitter::None)
        .min_retry_after(ms(5))
        .max_retry_after(ms(3_000))
        .unlimited_attempts()
        .build()
        .unwrap();
    let mut b = Backoff::new(config, t0());
    let now = t0();
    assert_eq!(
        b.next_delay_with_hint(now, ms(3_000)),
        RetryDecision::RetryAt(now + ms(3_000))
    );
    assert_eq!(
        b.next_delay_with_hint(now, ms(5)),
        RetryDecision::RetryAt(now + ms(5))
    );
    let s = b.stats();
    assert_eq!(
        (s.retries, s.hints, s.hints_capped, s.hints_raised),
        (2, 2, 0, 0)
    );
    // One nanosecond beyond either bound is counted.
    let _ = b.next_delay_with_hint(now, ms(3_000) + Duration::from_nanos(1));
    let _ = b.next_delay_with_hint(now, ms(5) - Duration::from_nanos(1));
    let s = b.stats();
    assert_eq!((s.hints, s.hints_capped, s.hints_raised), (4, 1, 1));
}

#[test]
fn retry_after_zero_waits_at_least_min_retry_after_even_on_a_zero_schedule() {
    let config = BackoffConfig::constant(Duration::ZERO)
        .unlimited_attempts()
        .build()
        .unwrap();
    assert_eq!(config.min_retry_after(), ms(1));
    // The cap (zero) is below the floor: hints are held at the floor, not rejected.
    assert_eq!(config.max_retry_after(), ms(1));
    let mut b = Backoff::new(config, t0());
    let mut now = t0();
    for _ in 0..1_000 {
        let at = b
            .next_delay_with_hint(now, Duration::ZERO)
            .retry_at()
            .unwrap();
        assert_eq!(at, now + ms(1));
        now = at;
    }
    // Without a hint the (zero) schedule is the caller's own choice.
    assert_eq!(b.next_delay(now), RetryDecision::RetryAt(now));
    assert_eq!(b.stats().hints_raised, 1_000);

    let opt_out = BackoffConfig::constant(Duration::ZERO)
        .min_retry_after(Duration::ZERO)
        .build()
        .unwrap();
    let mut b = Backoff::new(opt_out, t0());
    assert_eq!(
        b.next_delay_with_hint(t0(), Duration::ZERO),
        RetryDecision::RetryAt(t0())
    );
}

#[test]
fn a_hint_is_a_floor_under_the_jittered_schedule_never_above_the_caps() {
    let config = BackoffConfig::exponential(ms(100), ms(2_000))
        .jitter(Jitter::Equal)
        .min_retry_after(ms(5))
        .max_retry_after(ms(500))
        .unlimited_attempts()
        .seed(3)
        .build()
        .unwrap();
    let mut hinted = Backoff::new(config, t0());
    let mut plain = Backoff::new(config, t0());
    for hint in [0, 1, 5, 50, 300, 499, 500, 501, 10_000, 0, 0, 7] {
        let scheduled = plain.next_delay(t0()).retry_at().unwrap() - t0();
        let got = hinted
            .next_delay_with_hint(t0(), ms(hint))
            .retry_at()
            .unwrap()
            - t0();
        let floor = ms(hint).clamp(ms(5), ms(500));
        assert_eq!(got, floor.max(scheduled), "hint {hint} ms");
        assert!(got <= ms(2_000));
    }
}

#[test]
fn max_retry_after_defaults_to_the_cap() {
    let config = BackoffConfig::exponential(ms(100), ms(5_000))
        .jitter(Jitter::None)
        .build()
        .unwrap();
    assert_eq!(config.max_retry_after(), ms(5_000));
    let mut b = Backoff::new(config, t0());
    assert_eq!(
        b.next_delay_with_hint(t0(), Duration::MAX),
        RetryDecision::RetryAt(t0() + ms(5_000))
    );
}

#[test]
fn a_hint_counts_as_an_attempt() {
    let config = BackoffConfig::builder()
        .jitter(Jitter::None)
        .max_attempts(3)
        .build()
        .unwrap();
    let mut b = Backoff::new(config, t0());
    assert!(b.next_delay_with_hint(t0(), ms(1)).retry_at().is_some());
    assert!(b.next_delay_with_hint(t0(), ms(1)).retry_at().is_some());
    assert_eq!(
        b.next_delay_with_hint(t0(), ms(1)),
        RetryDecision::GiveUp(GiveUpReason::MaxAttempts)
    );
    assert_eq!(b.attempts(), 3);
}

#[test]
fn later_delays_do_not_depend_on_earlier_hints() {
    let config = BackoffConfig::builder()
        .unlimited_attempts()
        .seed(77)
        .build()
        .unwrap();
    let mut plain = Backoff::new(config, t0());
    let mut hinted = Backoff::new(config, t0());
    let _ = plain.next_delay(t0());
    let _ = hinted.next_delay_with_hint(t0(), ms(5));
    let a: Vec<Duration> = plain.delays().take(10).collect();
    let b: Vec<Duration> = hinted.delays().take(10).collect();
    assert_eq!(a, b);
}

#[test]
fn gives_up_after_max_attempts() {
    // Defaults: 3 attempts (AWS standard mode), i.e. two retries.
    let config = BackoffConfig::builder().seed(3).build().unwrap();
    let mut b = Backoff::new(config, t0());
    assert_eq!(b.attempts(), 1);
    assert!(b.next_delay(t0()).retry_at().is_some());
    assert!(b.next_delay(t0()).retry_at().is_some());
    assert_eq!(b.attempts(), 3);
    assert_eq!(
        b.next_delay(t0()),
        RetryDecision::GiveUp(GiveUpReason::MaxAttempts)
    );
    // Sticky until reset, and counted once.
    assert_eq!(
        b.next_delay(t0()),
        RetryDecision::GiveUp(GiveUpReason::MaxAttempts)
    );
    assert_eq!(b.gave_up(), Some(GiveUpReason::MaxAttempts));
    assert_eq!(b.stats().gave_up_max_attempts, 1);
    assert_eq!(b.stats().retries, 2);
}

#[test]
fn max_attempts_of_one_never_retries() {
    let config = BackoffConfig::builder().max_attempts(1).build().unwrap();
    let mut b = Backoff::new(config, t0());
    assert_eq!(
        b.next_delay(t0()),
        RetryDecision::GiveUp(GiveUpReason::MaxAttempts)
    );
    assert_eq!(b.delays().next(), None);
}

#[test]
fn gives_up_when_the_elapsed_budget_would_be_exceeded() {
    // 100, 200, 400, 800: after 700 ms of sleeping the next sleep (800 ms) would end at
    // 1.5 s > 1 s, so the machine gives up instead of clamping.
    let config = BackoffConfig::exponential(ms(100), ms(10_000))
        .jitter(Jitter::None)
        .unlimited_attempts()
        .max_elapsed(ms(1_000))
        .build()
        .unwrap();
    let mut b = Backoff::new(config, t0());
    assert_eq!(b.deadline(), Some(t0() + ms(1_000)));
    let got = delays_on_clock(&mut b, t0(), 10);
    assert_eq!(got, [100, 200, 400].map(ms));
    assert_eq!(b.gave_up(), Some(GiveUpReason::MaxElapsed));
    assert_eq!(b.stats().gave_up_max_elapsed, 1);
}

#[test]
fn a_retry_ending_exactly_at_the_deadline_is_allowed() {
    let config = BackoffConfig::constant(ms(250))
        .jitter(Jitter::None)
        .unlimited_attempts()
        .max_elapsed(ms(500))
        .build()
        .unwrap();
    let mut b = Backoff::new(config, t0());
    assert_eq!(delays_on_clock(&mut b, t0(), 5), [250, 250].map(ms));
}

#[test]
fn elapsed_time_counts_the_attempts_too() {
    // Each attempt itself takes 300 ms: the third retry would start after the 1 s deadline.
    let config = BackoffConfig::constant(ms(100))
        .jitter(Jitter::None)
        .unlimited_attempts()
        .max_elapsed(ms(1_000))
        .build()
        .unwrap();
    let mut b = Backoff::new(config, t0());
    assert_eq!(
        b.next_delay(t0() + ms(300)),
        RetryDecision::RetryAt(t0() + ms(400))
    );
    assert_eq!(
        b.next_delay(t0() + ms(700)),
        RetryDecision::RetryAt(t0() + ms(800))
    );
    assert_eq!(
        b.next_delay(t0() + ms(1_100)),
        RetryDecision::GiveUp(GiveUpReason::MaxElapsed)
    );
}

#[test]
fn a_hint_beyond_the_deadline_gives_up() {
    let config = BackoffConfig::builder()
        .max_elapsed(ms(1_000))
        .build()
        .unwrap();
    let mut b = Backoff::new(config, t0());
    assert_eq!(
        b.next_delay_with_hint(t0(), ms(1_001)),
        RetryDecision::GiveUp(GiveUpReason::MaxElapsed)
    );
    assert_eq!(b.stats().hints, 0);
}

#[test]
fn same_seed_same_delays() {
    let config = BackoffConfig::builder()
        .unlimited_attempts()
        .seed(1234)
        .build()
        .unwrap();
    let mut a = Backoff::new(config, t0());
    let mut b = Backoff::new(config, t0());
    let da = delays_on_clock(&mut a, t0(), 50);
    let db = delays_on_clock(&mut b, t0(), 50);
    assert_eq!(da, db);
    let other = BackoffConfig::builder()
        .unlimited_attempts()
        .seed(1235)
        .build()
        .unwrap();
    let mut c = Backoff::new(other, t0());
    assert_ne!(da, delays_on_clock(&mut c, t0(), 50));
}

#[test]
fn delays_iterator_and_clock_api_share_one_engine() {
    let config = BackoffConfig::builder()
        .max_attempts(6)
        .seed(8)
        .build()
        .unwrap();
    let mut a = Backoff::new(config, t0());
    let mut b = Backoff::new(config, t0());
    let from_iter: Vec<Duration> = a.delays().collect();
    assert_eq!(from_iter.len(), 5);
    assert_eq!(from_iter, delays_on_clock(&mut b, t0(), 10));
    assert_eq!(a.stats(), b.stats());
}

#[test]
fn reset_starts_a_new_operation() {
    let config = BackoffConfig::exponential(ms(100), ms(1_000))
        .jitter(Jitter::None)
        .max_attempts(3)
        .max_elapsed(ms(10_000))
        .build()
        .unwrap();
    let mut b = Backoff::new(config, t0());
    assert_eq!(delays_on_clock(&mut b, t0(), 5), [100, 200].map(ms));
    let later = t0() + Duration::from_secs(60);
    b.reset(later);
    assert_eq!(b.attempts(), 1);
    assert_eq!(b.gave_up(), None);
    assert_eq!(b.deadline(), Some(later + ms(10_000)));
    assert_eq!(delays_on_clock(&mut b, later, 5), [100, 200].map(ms));
    assert_eq!(b.stats(), {
        let mut s: BackoffStats = Default::default();
        s.retries = 4;
        s.gave_up_max_attempts = 2;
        s.resets = 1;
        s
    });
}

#[test]
fn time_going_backwards_is_clamped() {
    let config = BackoffConfig::constant(ms(100))
        .jitter(Jitter::None)
        .max_attempts(5)
        .build()
        .unwrap();
    let mut b = Backoff::new(config, t0());
    assert_eq!(
        b.next_delay(t0() + ms(500)),
        RetryDecision::RetryAt(t0() + ms(600))
    );
    // A stale `now` is treated as the newest one seen.
    assert_eq!(
        b.next_delay(Instant::ZERO),
        RetryDecision::RetryAt(t0() + ms(600))
    );
    b.reset(Instant::ZERO);
    assert_eq!(
        b.next_delay(Instant::ZERO),
        RetryDecision::RetryAt(t0() + ms(600))
    );
}

#[test]
fn extreme_instants_do_not_panic() {
    let config = BackoffConfig::builder()
        .unlimited_attempts()
        .max_elapsed(Duration::MAX)
        .build()
        .unwrap();
    let mut b = Backoff::new(config, Instant::MAX);
    assert_eq!(b.deadline(), Some(Instant::MAX));
    assert_eq!(
        b.next_delay(Instant::MAX),
        RetryDecision::RetryAt(Instant::MAX)
    );
    assert_eq!(
        b.next_delay_with_hint(Instant::MAX, Duration::MAX),
        RetryDecision::RetryAt(Instant::MAX)
    );
}

#[test]
fn defaults_are_aws_standard_mode() {
    let c = BackoffConfig::builder().build().unwrap();
    assert_eq!(c, BackoffConfig::default());
    assert_eq!(
        c.schedule(),
        Schedule::Exponential {
            base: ms(100),
            factor_percent: 200
        }
    );
    assert_eq!(c.cap(), Duration::from_secs(20));
    assert_eq!(c.jitter(), Jitter::Full);
    assert_eq!(c.max_attempts(), Some(3));
    assert_eq!(c.max_elapsed(), None);
    assert_eq!(c.max_retry_after(), Duration::from_secs(20));
    assert_eq!(c.min_retry_after(), ms(1));
    assert_eq!(c.seed(), 0);
}

/// Every getter reads back what the builder was told (no default stands in for a setting), and
/// the machine hands back the configuration it was built with.
#[test]
fn a_config_reads_back_every_setting() {
    let c = BackoffConfig::linear(ms(50), ms(25))
        .cap(ms(700))
        .jitter(Jitter::Equal)
        .max_attempts(7)
        .max_elapsed(Duration::from_secs(9))
        .min_retry_after(ms(3))
        .max_retry_after(ms(4_000))
        .seed(1234)
        .build()
        .unwrap();
    assert_eq!(
        c.schedule(),
        Schedule::Linear {
            base: ms(50),
            step: ms(25)
        }
    );
    assert_eq!(c.cap(), ms(700));
    assert_eq!(c.jitter(), Jitter::Equal);
    assert_eq!(c.max_attempts(), Some(7));
    assert_eq!(c.max_elapsed(), Some(Duration::from_secs(9)));
    assert_eq!(c.min_retry_after(), ms(3));
    assert_eq!(c.max_retry_after(), ms(4_000));
    assert_eq!(c.seed(), 1234);
    let reseeded = c.with_seed(77);
    assert_eq!(reseeded.seed(), 77);
    assert_eq!(reseeded.with_seed(1234), c, "only the seed changed");
    let b = Backoff::new(c, t0());
    assert_eq!(*b.config(), c);
    assert_ne!(*b.config(), BackoffConfig::default());
}

#[test]
fn invalid_configs_are_rejected() {
    assert_eq!(
        BackoffConfig::exponential(ms(500), ms(100)).build(),
        Err(ConfigError::InvertedRange {
            min: "base",
            max: "cap"
        })
    );
    assert_eq!(
        BackoffConfig::linear(ms(500), ms(1)).cap(ms(100)).build(),
        Err(ConfigError::InvertedRange {
            min: "base",
            max: "cap"
        })
    );
    assert_eq!(
        BackoffConfig::constant(ms(500)).cap(ms(100)).build(),
        Err(ConfigError::InvertedRange {
            min: "delay",
            max: "cap"
        })
    );
    assert_eq!(
        BackoffConfig::exponential(Duration::ZERO, ms(100)).build(),
        Err(ConfigError::Zero { field: "base" })
    );
    assert!(matches!(
        BackoffConfig::builder().factor_percent(99).build(),
        Err(ConfigError::OutOfRange {
            field: "factor_percent",
            ..
        })
    ));
    assert!(matches!(
        BackoffConfig::linear(ms(1), ms(1))
            .factor_percent(200)
            .build(),
        Err(ConfigError::Conflict {
            field: "factor_percent",
            ..
        })
    ));
    assert_eq!(
        BackoffConfig::builder().max_attempts(0).build(),
        Err(ConfigError::Zero {
            field: "max_attempts"
        })
    );
    assert_eq!(
        BackoffConfig::builder().max_elapsed(Duration::ZERO).build(),
        Err(ConfigError::Zero {
            field: "max_elapsed"
        })
    );
    assert_eq!(
        BackoffConfig::builder()
            .max_retry_after(Duration::ZERO)
            .build(),
        Err(ConfigError::Zero {
            field: "max_retry_after"
        })
    );
    assert_eq!(
        BackoffConfig::builder()
            .min_retry_after(ms(10))
            .max_retry_after(ms(9))
            .build(),
        Err(ConfigError::InvertedRange {
            min: "min_retry_after",
            max: "max_retry_after"
        })
    );
    assert_eq!(
        BackoffConfig::linear(Duration::ZERO, ms(1))
            .jitter(Jitter::Decorrelated)
            .build(),
        Err(ConfigError::Zero { field: "base" })
    );
    // Zero delays are fine without decorrelated jitter: "retry at once".
    assert!(BackoffConfig::constant(Duration::ZERO).build().is_ok());
    assert!(BackoffConfig::builder().factor_percent(100).build().is_ok());
    // Equal hint bounds are a range of one value, not an inverted one.
    let pinned = BackoffConfig::builder()
        .min_retry_after(ms(9))
        .max_retry_after(ms(9))
        .build()
        .unwrap();
    assert_eq!(
        (pinned.min_retry_after(), pinned.max_retry_after()),
        (ms(9), ms(9))
    );
}

#[test]
fn zero_delay_constant_retries_at_once() {
    let config = BackoffConfig::constant(Duration::ZERO)
        .max_attempts(3)
        .build()
        .unwrap();
    let mut b = Backoff::new(config, t0());
    assert_eq!(b.next_delay(t0()), RetryDecision::RetryAt(t0()));
}
