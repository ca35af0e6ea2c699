//! The async breaker and retry drivers on keel-testkit's manual clock (`ManualRuntime`:
//! `block_on` jumps the clock to the next timer when every task waits, as tokio's paused time
//! does).
#![cfg(feature = "futures")]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_core::backoff::{BackoffConfig, GiveUpReason, Jitter};
use keel_core::breaker::{BreakerConfig, BreakerEvent, Outcome, State};
use keel_core::budget::BudgetConfig;
use keel_core::driver::breaker::BreakerError;
use keel_core::driver::retry::{Deposit, RetryAction, RetryInfo, StopReason};
use keel_core::driver::{sleep, timeout};
use keel_core::sync::breaker::SharedBreaker;
use keel_core::sync::budget::SharedBudget;
use keel_testkit::ManualRuntime;

type Breaker = keel_core::driver::breaker::Breaker<ManualRuntime>;
type Retry = keel_core::driver::retry::Retry<ManualRuntime>;

/// A manual runtime whose clock starts at 1 s.
fn runtime() -> ManualRuntime {
    ManualRuntime::starting_at(keel_core::Instant::from_secs(1))
}

/// A breaker on `rt` that opens after `failures` consecutive failures, for `open`, and lets
/// `probes` probes through when half-open.
fn breaker(rt: &ManualRuntime, failures: u32, open: Duration, probes: u32) -> Breaker {
    let config = BreakerConfig::consecutive_failures(failures)
        .open_duration(open)
        .permitted_calls_in_half_open(probes)
        .build()
        .unwrap();
    on(rt, config)
}

/// A breaker on `rt` with `config` (its seed as given).
fn on(rt: &ManualRuntime, config: BreakerConfig) -> Breaker {
    Breaker::from_shared(SharedBreaker::new(config, rt.now()), rt.clone())
}

/// `attempts` attempts `ms` apart, no jitter.
fn constant(ms: u64, attempts: u32) -> BackoffConfig {
    BackoffConfig::constant(Duration::from_millis(ms))
        .jitter(Jitter::None)
        .max_attempts(attempts)
        .build()
        .unwrap()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Error {
    Unavailable,
    BadRequest,
    Busy(Duration),
}

async fn fail(b: &Breaker) -> Result<(), BreakerError<Error>> {
    b.call(async { Err::<(), _>(Error::Unavailable) }).await
}

async fn succeed(b: &Breaker) -> Result<u32, BreakerError<Error>> {
    b.call(async { Ok::<_, Error>(7) }).await
}

#[test]
fn breaker_opens_after_3_failures_and_rejects_with_retry_at() {
    let rt = runtime();
    rt.block_on(async {
        let t0 = rt.now();
        let b = breaker(&rt, 3, Duration::from_secs(10), 1);
        for _ in 0..2 {
            assert_eq!(fail(&b).await, Err(BreakerError::Inner(Error::Unavailable)));
        }
        assert_eq!(b.state(), State::Closed);
        assert_eq!(fail(&b).await, Err(BreakerError::Inner(Error::Unavailable)));
        assert_eq!(b.state(), State::Open);

        let ran = AtomicU32::new(0);
        let r = b
            .call(async {
                ran.fetch_add(1, Ordering::SeqCst);
                Ok::<_, Error>(())
            })
            .await;
        let Err(BreakerError::Rejected(rejected)) = r else {
            panic!("expected a rejection, got {r:?}");
        };
        assert_eq!(rejected.retry_at, Some(t0 + Duration::from_secs(10)));
        assert_eq!(rejected.reason, State::Open);
        assert_eq!(ran.load(Ordering::SeqCst), 0, "a rejected call never runs");
        let s = b.stats();
        assert_eq!((s.admitted, s.rejected, s.failures), (3, 1, 3));
    });
}

#[test]
fn breaker_recovers_through_half_open_after_the_open_duration() {
    let rt = runtime();
    rt.block_on(async {
        let t0 = rt.now();
        let b = breaker(&rt, 2, Duration::from_secs(10), 2);
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&events);
        let b = b.on_transition(move |ev| {
            let BreakerEvent::Transition { from, to, at, .. } = *ev else {
                return;
            };
            seen.lock().unwrap().push((from, to, at));
        });
        fail(&b).await.unwrap_err();
        fail(&b).await.unwrap_err();

        rt.advance(Duration::from_millis(9_999));
        assert!(succeed(&b).await.unwrap_err().is_rejected());
        rt.advance(Duration::from_millis(1));
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(succeed(&b).await, Ok(7));
        assert_eq!(b.state(), State::HalfOpen);
        assert_eq!(succeed(&b).await, Ok(7));
        assert_eq!(b.state(), State::Closed);
        assert_eq!(
            *events.lock().unwrap(),
            vec![
                (State::Closed, State::Open, t0),
                (State::Open, State::HalfOpen, t1),
                (State::HalfOpen, State::Closed, t1),
            ]
        );
    });
}

#[test]
fn clones_share_one_breaker_state() {
    let rt = runtime();
    rt.block_on(async {
        let a = breaker(&rt, 2, Duration::from_secs(5), 1);
        let b = a.clone();
        let c = b.clone();
        fail(&a).await.unwrap_err();
        fail(&b).await.unwrap_err();
        assert_eq!(c.state(), State::Open);
        assert!(succeed(&c).await.unwrap_err().is_rejected());
        assert_eq!(a.stats().rejected, 1);

        // Across tasks too.
        rt.advance(Duration::from_secs(5));
        let task = rt.spawn_joinable(async move { succeed(&c).await });
        assert_eq!(task.await, Ok(7));
        assert_eq!(a.state(), State::Closed);
    });
}

#[test]
fn a_cancelled_call_releases_the_half_open_probe() {
    let rt = runtime();
    rt.block_on(async {
        let b = breaker(&rt, 1, Duration::from_secs(10), 1);
        fail(&b).await.unwrap_err();
        rt.advance(Duration::from_secs(10));

        let hung = b.call(async {
            sleep(&rt, Duration::from_secs(3600)).await;
            Ok::<_, Error>(0)
        });
        // Cancelled well before the abandon threshold (1 s): ignored, not a failed probe.
        assert!(timeout(&rt, Duration::from_millis(100), hung)
            .await
            .is_err());
        let s = b.stats();
        assert_eq!(
            (s.state, s.probes_in_use, s.ignored),
            (State::HalfOpen, 0, 1)
        );

        // The probe slot is free again: the next call is admitted and closes the breaker.
        assert_eq!(succeed(&b).await, Ok(7));
        assert_eq!(b.state(), State::Closed);
    });
}

#[test]
fn the_classifier_decides_which_errors_count() {
    let rt = runtime();
    rt.block_on(async {
        let b = breaker(&rt, 2, Duration::from_secs(10), 1);
        let classify = |r: &Result<(), Error>| match r {
            Err(Error::BadRequest) => Outcome::Ignored,
            Err(_) => Outcome::Failure,
            Ok(()) => Outcome::Success,
        };
        for _ in 0..5 {
            let r = b
                .call_with(async { Err(Error::BadRequest) }, classify)
                .await;
            assert_eq!(r, Err(BreakerError::Inner(Error::BadRequest)));
        }
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.stats().ignored, 5);
        b.call_with(async { Err(Error::Unavailable) }, classify)
            .await
            .unwrap_err();
        b.call_with(async { Err(Error::Unavailable) }, classify)
            .await
            .unwrap_err();
        assert_eq!(b.state(), State::Open);
    });
}

#[test]
fn slow_calls_are_timed_on_the_runtime_clock() {
    let rt = runtime();
    rt.block_on(async {
        let config = BreakerConfig::builder()
            .count_window(4)
            .minimum_calls(4)
            .disable_failure_rate()
            .slow_call_rate_threshold(50)
            .slow_call_duration_threshold(Duration::from_secs(2))
            .build()
            .unwrap();
        let b = on(&rt, config);
        let call = |secs: u64| {
            let rt = rt.clone();
            b.call(async move {
                sleep(&rt, Duration::from_secs(secs)).await;
                Ok::<_, Error>(())
            })
        };
        call(1).await.unwrap();
        call(1).await.unwrap();
        call(2).await.unwrap();
        assert_eq!(b.state(), State::Closed);
        call(3).await.unwrap();
        let s = b.stats();
        assert_eq!((s.state, s.slow), (State::Open, 2));
    });
}

#[test]
fn retry_gives_up_after_max_attempts() {
    let rt = runtime();
    rt.block_on(async {
        let t0 = rt.now();
        let retry = Retry::with_runtime(constant(100, 4), rt.clone());
        let calls = AtomicU32::new(0);
        let err = retry
            .run(|| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err::<(), _>(Error::Unavailable) }
            })
            .await
            .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert_eq!(err.attempts, 4);
        assert_eq!(err.reason, StopReason::Exhausted(GiveUpReason::MaxAttempts));
        assert_eq!(err.error, Error::Unavailable);
        assert_eq!(rt.now() - t0, Duration::from_millis(300));
        let s = retry.stats();
        assert_eq!((s.runs, s.retries, s.gave_up_exhausted), (1, 3, 1));
    });
}

#[test]
fn retry_succeeds_on_the_third_attempt() {
    let rt = runtime();
    rt.block_on(async {
        let t0 = rt.now();
        let retry = Retry::with_runtime(constant(250, 5), rt.clone());
        let calls = AtomicU32::new(0);
        let v = retry
            .run(|| {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    if n < 3 {
                        Err(Error::Unavailable)
                    } else {
                        Ok(n)
                    }
                }
            })
            .await
            .unwrap();
        assert_eq!(v, 3);
        assert_eq!(rt.now() - t0, Duration::from_millis(500));
        assert_eq!(retry.stats().successes, 1);
    });
}

#[test]
fn retry_honours_the_retry_after_hint() {
    let rt = runtime();
    rt.block_on(async {
        let t0 = rt.now();
        let config = BackoffConfig::constant(Duration::from_millis(100))
            .jitter(Jitter::None)
            .max_attempts(3)
            .max_retry_after(Duration::from_secs(5))
            .build()
            .unwrap();
        let retry = Retry::with_runtime(config, rt.clone()).retry_if(|e: &Error| match e {
            Error::Busy(after) => RetryAction::RetryAfter(*after),
            Error::BadRequest => RetryAction::Stop,
            Error::Unavailable => RetryAction::Retry,
        });
        let calls = AtomicU32::new(0);
        let v = retry
            .run(|| {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    match n {
                        0 => Err(Error::Busy(Duration::from_millis(750))),
                        1 => Err(Error::Unavailable),
                        _ => Ok(n),
                    }
                }
            })
            .await
            .unwrap();
        assert_eq!(v, 2);
        assert_eq!(rt.now() - t0, Duration::from_millis(750 + 100));
    });
}

#[test]
fn a_retry_after_hint_is_capped_at_max_retry_after() {
    let rt = runtime();
    rt.block_on(async {
        let t0 = rt.now();
        let config = BackoffConfig::constant(Duration::from_millis(100))
            .jitter(Jitter::None)
            .max_attempts(2)
            .max_retry_after(Duration::from_secs(2))
            .build()
            .unwrap();
        let retry = Retry::with_runtime(config, rt.clone())
            .retry_if(|_: &Error| RetryAction::RetryAfter(Duration::MAX));
        let err = retry
            .run(|| async { Err::<(), _>(Error::Unavailable) })
            .await
            .unwrap_err();
        assert_eq!(err.attempts, 2);
        assert_eq!(rt.now() - t0, Duration::from_secs(2));
    });
}

#[test]
fn a_non_retryable_error_stops_at_once() {
    let rt = runtime();
    rt.block_on(async {
        let t0 = rt.now();
        let retry =
            Retry::with_runtime(constant(100, 10), rt.clone()).retry_if(|e: &Error| match e {
                Error::BadRequest => RetryAction::Stop,
                _ => RetryAction::Retry,
            });
        let calls = AtomicU32::new(0);
        let err = retry
            .run(|| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err::<(), _>(Error::BadRequest) }
            })
            .await
            .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!((err.attempts, err.reason), (1, StopReason::NotRetryable));
        assert_eq!(rt.now(), t0);
        assert_eq!(retry.stats().not_retryable, 1);
    });
}

#[test]
fn a_budget_refusal_stops_retries() {
    let rt = runtime();
    rt.block_on(async {
        let t0 = rt.now();
        let config = BudgetConfig::builder()
            .ttl(Duration::from_secs(2))
            .min_per_sec(1)
            .retry_percent(20)
            .build()
            .unwrap();
        let budget = SharedBudget::new(config, t0);
        let retry = Retry::with_runtime(constant(10, 10), rt.clone()).budget(budget.clone());
        let err = retry
            .run(|| async { Err::<(), _>(Error::Unavailable) })
            .await
            .unwrap_err();
        // The floor is 2 retries per 2 s: 1 attempt + 2 retries, the third retry is refused.
        assert_eq!((err.attempts, err.reason), (3, StopReason::BudgetExhausted));
        assert_eq!(rt.now() - t0, Duration::from_millis(20));
        let err = retry
            .run(|| async { Err::<(), _>(Error::Unavailable) })
            .await
            .unwrap_err();
        assert_eq!((err.attempts, err.reason), (1, StopReason::BudgetExhausted));
        let s = budget.stats();
        assert_eq!((s.deposits, s.withdrawals, s.exhausted), (0, 2, 2));
        assert_eq!(retry.stats().gave_up_budget, 2);
    });
}

#[test]
fn successful_runs_deposit_by_default_and_every_request_deposits_first() {
    let rt = runtime();
    rt.block_on(async {
        let t0 = rt.now();
        let budget = SharedBudget::new(BudgetConfig::default(), t0);
        let on_success = Retry::with_runtime(constant(10, 3), rt.clone()).budget(budget.clone());
        on_success
            .run(|| async { Ok::<_, Error>(()) })
            .await
            .unwrap();
        on_success
            .run(|| async { Err::<(), _>(Error::BadRequest) })
            .await
            .unwrap_err();
        // The failed run retried twice (the default predicate retries every error) and deposited
        // nothing.
        let s = budget.stats();
        assert_eq!((s.deposits, s.withdrawals), (1, 2));

        let every = on_success.clone().deposit(Deposit::EveryRequest);
        every
            .run(|| async { Err::<(), _>(Error::Unavailable) })
            .await
            .unwrap_err();
        let s = budget.stats();
        assert_eq!((s.deposits, s.withdrawals), (2, 4));
    });
}

#[test]
fn the_notify_hook_sees_every_scheduled_retry() {
    let rt = runtime();
    rt.block_on(async {
        let t0 = rt.now();
        let config = BackoffConfig::exponential(Duration::from_millis(100), Duration::from_secs(1))
            .jitter(Jitter::None)
            .max_attempts(4)
            .build()
            .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let retry =
            Retry::with_runtime(config, rt.clone()).notify(move |e: &Error, info: RetryInfo| {
                log.lock()
                    .unwrap()
                    .push((*e, info.attempt, info.delay, info.at));
            });
        retry
            .run(|| async { Err::<(), _>(Error::Unavailable) })
            .await
            .unwrap_err();
        let ms = Duration::from_millis;
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                (Error::Unavailable, 1, ms(100), t0 + ms(100)),
                (Error::Unavailable, 2, ms(200), t0 + ms(300)),
                (Error::Unavailable, 3, ms(400), t0 + ms(700)),
            ]
        );
    });
}

#[test]
fn concurrent_runs_do_not_jitter_in_lockstep() {
    let rt = runtime();
    rt.block_on(async {
        let config =
            BackoffConfig::exponential(Duration::from_millis(100), Duration::from_secs(10))
                .jitter(Jitter::Full)
                .max_attempts(2)
                .seed(42)
                .build()
                .unwrap();
        let delays = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&delays);
        let retry =
            Retry::with_runtime(config, rt.clone()).notify(move |_: &Error, info: RetryInfo| {
                log.lock().unwrap().push(info.delay);
            });
        let runs = (0..8).map(|_| {
            let retry = retry.clone();
            rt.spawn_joinable(async move {
                retry
                    .run(|| async { Err::<(), _>(Error::Unavailable) })
                    .await
            })
        });
        for r in runs.collect::<Vec<_>>() {
            r.await.unwrap_err();
        }
        let mut d = delays.lock().unwrap().clone();
        assert_eq!(d.len(), 8);
        d.sort();
        d.dedup();
        assert_eq!(d.len(), 8, "every run drew its own jitter: {d:?}");
    });
}

#[test]
fn retry_around_a_breaker_stops_on_rejection() {
    let rt = runtime();
    rt.block_on(async {
        let b = breaker(&rt, 2, Duration::from_secs(30), 1);
        let retry = Retry::with_runtime(constant(50, 10), rt.clone()).retry_if(
            |e: &BreakerError<Error>| {
                if e.is_rejected() {
                    RetryAction::Stop
                } else {
                    RetryAction::Retry
                }
            },
        );
        let calls = AtomicU32::new(0);
        let err = retry
            .run(|| {
                calls.fetch_add(1, Ordering::SeqCst);
                b.call(async { Err::<(), _>(Error::Unavailable) })
            })
            .await
            .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!((err.attempts, err.reason), (3, StopReason::NotRetryable));
        assert!(err.error.is_rejected());
        assert_eq!(b.stats().rejected, 1);
    });
}

#[test]
fn the_retry_free_function_retries_every_error() {
    let rt = runtime();
    rt.block_on(async {
        let t0 = rt.now();
        let calls = AtomicU32::new(0);
        let err = keel_core::driver::retry::retry(&rt, constant(40, 3), None, || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(Error::BadRequest) }
        })
        .await
        .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(err.reason, StopReason::Exhausted(GiveUpReason::MaxAttempts));
        assert_eq!(rt.now() - t0, Duration::from_millis(80));
    });
}

fn hanging_breaker(rt: &ManualRuntime) -> Breaker {
    let config = BreakerConfig::consecutive_failures(2)
        .open_duration(Duration::from_secs(10))
        .abandon_threshold(Duration::from_secs(1))
        .build()
        .unwrap();
    on(rt, config)
}

#[test]
fn outer_timeout_around_a_hanging_call_past_the_abandon_threshold_counts_as_failure() {
    let rt = runtime();
    rt.block_on(async {
        let b = hanging_breaker(&rt);
        for _ in 0..2 {
            let hang = b.call(std::future::pending::<Result<(), Error>>());
            let r = timeout(&rt, Duration::from_secs(2), hang).await;
            assert!(r.is_err());
        }
        assert_eq!(b.state(), State::Open);
        let s = b.stats();
        assert_eq!((s.failures, s.ignored), (2, 0));
    });
}

#[test]
fn outer_timeout_shorter_than_the_abandon_threshold_is_ignored() {
    let rt = runtime();
    rt.block_on(async {
        let b = hanging_breaker(&rt);
        for _ in 0..3 {
            let hang = b.call(std::future::pending::<Result<(), Error>>());
            let r = timeout(&rt, Duration::from_millis(500), hang).await;
            assert!(r.is_err());
        }
        assert_eq!(b.state(), State::Closed);
        let s = b.stats();
        assert_eq!(
            (s.failures, s.ignored, s.abandoned, s.abandoned_failures),
            (0, 3, 3, 0)
        );
    });
}

/// The measurement: with the timeout *outside* the breaker (the order that lets it
/// cover queueing too) and the default (Resilience4j) config, 200 of 200 calls reached a
/// hanging dependency and the breaker stayed closed, because an abandoned call counted only
/// past the 60 s slow-call threshold. Now each abandoned call counts once it has run the
/// abandon threshold (default 1 s), so the breaker opens after `minimum_calls` of them.
#[test]
fn a_hanging_dependency_with_the_timeout_outside_trips_after_at_most_minimum_calls() {
    let rt = runtime();
    rt.block_on(async {
        let config = BreakerConfig::default();
        assert_eq!(config.abandon_threshold(), Duration::from_secs(1));
        let minimum = config.minimum_calls();
        let b = on(&rt, config);
        let reached = AtomicU32::new(0);
        for _ in 0..2 * minimum {
            let call = b.call(async {
                reached.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<Result<(), Error>>().await
            });
            let r = timeout(&rt, Duration::from_secs(2), call).await;
            if let Ok(Err(e)) = r {
                assert!(e.is_rejected(), "{e:?}");
            }
        }
        assert!(reached.load(Ordering::SeqCst) <= minimum);
        assert_eq!(b.state(), State::Open);
        let s = b.stats();
        assert_eq!(s.abandoned_failures, u64::from(minimum));
        assert_eq!(s.rejected, u64::from(minimum));
    });
}

#[test]
fn abandoned_calls_never_count_with_an_unbounded_abandon_threshold() {
    let rt = runtime();
    rt.block_on(async {
        let config = BreakerConfig::consecutive_failures(1)
            .abandon_threshold(Duration::MAX)
            .build()
            .unwrap();
        let b = on(&rt, config);
        for _ in 0..5 {
            let hang = b.call(std::future::pending::<Result<(), Error>>());
            assert!(timeout(&rt, Duration::from_secs(3600), hang).await.is_err());
        }
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.stats().ignored, 5);
    });
}

#[test]
fn call_timeout_counts_an_expiry_as_a_failure_and_says_timed_out() {
    let rt = runtime();
    rt.block_on(async {
        let t0 = rt.now();
        let b = breaker(&rt, 2, Duration::from_secs(10), 1);
        for i in 0..2u64 {
            let r = b
                .call_timeout(
                    Duration::from_millis(100),
                    std::future::pending::<Result<(), Error>>(),
                )
                .await;
            let Err(BreakerError::TimedOut(e)) = r else {
                panic!("expected a timeout, got {r:?}");
            };
            assert_eq!(e.deadline, t0 + Duration::from_millis(100 * (i + 1)));
        }
        assert_eq!(b.state(), State::Open);
        let ok = b
            .call_timeout(Duration::from_secs(1), async { Ok::<_, Error>(1) })
            .await;
        assert!(matches!(ok, Err(BreakerError::Rejected(_))));
    });
}

#[test]
fn a_run_cancelled_during_its_backoff_sleep_spends_no_budget() {
    let rt = runtime();
    rt.block_on(async {
        let t0 = rt.now();
        let budget = SharedBudget::new(BudgetConfig::default(), t0);
        let retry = Retry::with_runtime(constant(1000, 10), rt.clone()).budget(budget.clone());
        let calls = AtomicU32::new(0);
        let run = retry.run(|| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(Error::Unavailable) }
        });
        // The first attempt fails at once; the run then sleeps 1 s and is cancelled at 500 ms.
        assert!(timeout(&rt, Duration::from_millis(500), run).await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let s = budget.stats();
        assert_eq!((s.withdrawals, s.exhausted), (0, 0));
    });
}

/// The first retry delay a `Retry` draws for an always-failing operation.
async fn first_delay(retry: Retry) -> Duration {
    let seen = Arc::new(Mutex::new(None));
    let sink = Arc::clone(&seen);
    let retry = retry.notify(move |_: &Error, info: RetryInfo| {
        sink.lock().unwrap().get_or_insert(info.delay);
    });
    let _ = retry
        .run(|| async { Err::<(), _>(Error::Unavailable) })
        .await;
    let delay = *seen.lock().unwrap();
    delay.expect("one retry was scheduled")
}

#[test]
fn two_processes_with_one_config_do_not_jitter_in_lockstep_unless_deterministic() {
    let rt = runtime();
    rt.block_on(async {
        let config =
            BackoffConfig::exponential(Duration::from_millis(100), Duration::from_secs(10))
                .jitter(Jitter::Full)
                .max_attempts(2)
                .seed(7)
                .build()
                .unwrap();
        // Two `Retry`s stand for two processes started with the same configuration.
        let mut delays = Vec::new();
        for _ in 0..4 {
            delays.push(first_delay(Retry::with_runtime(config, rt.clone())).await);
        }
        delays.sort();
        delays.dedup();
        assert!(
            delays.len() > 1,
            "OS randomness must de-synchronise instances: {delays:?}"
        );
        // Deterministic instances reproduce the same delay from the seed.
        let a = first_delay(Retry::with_runtime(config, rt.clone()).deterministic()).await;
        let b = first_delay(Retry::with_runtime(config, rt.clone()).deterministic()).await;
        assert_eq!(a, b);
    });
}

/// An error prints its inner error or returns it as `source()`, not both: a chain printer
/// (anyhow's `{:#}`, tracing's error chains) would show the inner error twice.
#[test]
fn retry_error_returns_the_last_error_as_source_and_does_not_print_it() {
    use std::error::Error as _;

    #[derive(Debug)]
    struct Down;
    impl std::fmt::Display for Down {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("dependency down")
        }
    }
    impl std::error::Error for Down {}

    let rt = runtime();
    let config = constant(10, 2);
    let err = rt
        .block_on(keel_core::driver::retry::retry(
            &rt,
            config,
            None,
            || async { Err::<(), _>(Down) },
        ))
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with("gave up after 2 attempt(s)"),
        "{message}"
    );
    assert!(!message.contains("dependency down"), "{message}");
    assert_eq!(err.source().unwrap().to_string(), "dependency down");
}

/// `max_elapsed` counts from the run's start, the first attempt's duration included: the run
/// reads its start before the first attempt whenever an elapsed-time limit is set (a run
/// without one reads no clock before a first-try success).
#[test]
fn max_elapsed_counts_the_first_attempt() {
    let rt = runtime();
    rt.block_on(async {
        let config = BackoffConfig::constant(Duration::from_millis(100))
            .jitter(Jitter::None)
            .max_attempts(10)
            .max_elapsed(Duration::from_secs(1))
            .build()
            .unwrap();
        let retry = Retry::with_runtime(config, rt.clone());
        let calls = AtomicU32::new(0);
        let err = retry
            .run(|| {
                calls.fetch_add(1, Ordering::SeqCst);
                let rt = rt.clone();
                async move {
                    // The attempt takes 2 s: past the limit before the first retry.
                    sleep(&rt, Duration::from_secs(2)).await;
                    Err::<(), _>(Error::Unavailable)
                }
            })
            .await
            .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(err.reason, StopReason::Exhausted(GiveUpReason::MaxElapsed));
    });
}
