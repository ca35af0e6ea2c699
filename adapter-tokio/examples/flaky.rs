//! A client protected by a circuit breaker, retries with backoff and a retry budget, calling a
//! simulated dependency that is down for its first 700 ms and then recovers.
//!
//! 120 requests are sent, one every 10 ms (about 1.5 s of real time). It prints every breaker
//! transition as it happens (through the breaker's hook, which sees every one) and a summary,
//! and exits 0 only if every protection engaged: the budget refused retries during the outage,
//! the breaker opened and rejected calls, and it closed again after the dependency recovered,
//! with the last requests succeeding; and keel's own log stayed quiet: at most one "giving up"
//! warning and one breaker-transition line per second, each with a `suppressed` count.
//!
//! ```text
//! cargo run -p keel-tokio --example flaky
//! RUST_LOG=keel=debug cargo run -p keel-tokio --example flaky   # keel's tracing events too
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_tokio::core::backoff::{BackoffConfig, Jitter};
use keel_tokio::core::breaker::{BreakerConfig, BreakerEvent, State};
use keel_tokio::core::budget::BudgetConfig;
use keel_tokio::core::driver::breaker::BreakerError;
use keel_tokio::core::driver::retry::{RetryAction, StopReason};
use keel_tokio::core::sync::budget::SharedBudget;
use keel_tokio::core::time::Instant;
use keel_tokio::{now, Breaker, Retry};

const REQUESTS: u64 = 120;
const EVERY: Duration = Duration::from_millis(10);
const DOWN_FOR: Duration = Duration::from_millis(700);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DepError {
    Unavailable,
}

impl std::fmt::Display for DepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("503 service unavailable")
    }
}

/// The dependency: 5 ms per call, failing until `recover_at`.
struct Dependency {
    recover_at: Instant,
    calls: AtomicU64,
}

impl Dependency {
    async fn get(&self, id: u64) -> Result<u64, DepError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(5)).await;
        if now() < self.recover_at {
            Err(DepError::Unavailable)
        } else {
            Ok(id)
        }
    }
}

fn ms_since(start: Instant) -> u128 {
    (now() - start).as_millis()
}

#[tokio::main]
async fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    tracing_subscriber::fmt().with_env_filter(filter).init();

    let start = now();
    let dep = Arc::new(Dependency {
        recover_at: start + DOWN_FOR,
        calls: AtomicU64::new(0),
    });

    // Trips when half of the last 20 calls failed; probes again after 300 ms with 2 calls.
    let breaker_config = BreakerConfig::builder()
        .count_window(20)
        .minimum_calls(20)
        .failure_rate_threshold(50)
        .open_duration(Duration::from_millis(300))
        .permitted_calls_in_half_open(2)
        .build()
        .expect("valid breaker config");
    let breaker = Breaker::new(breaker_config).on_transition(move |ev| {
        if let BreakerEvent::Transition {
            from, to, reason, ..
        } = *ev
        {
            println!(
                "[{:>5} ms] breaker {from} -> {to}: {reason}",
                ms_since(start)
            );
        }
    });

    // Retries in any 1 s: 5, plus 20 % of the requests that succeeded.
    let budget_config = BudgetConfig::builder()
        .ttl(Duration::from_secs(1))
        .min_per_sec(5)
        .retry_percent(20)
        .build()
        .expect("valid budget config");
    let budget = SharedBudget::new(budget_config, start);

    // Up to 4 attempts, 20 ms doubling to 200 ms, full jitter; a breaker rejection fails fast.
    let backoff = BackoffConfig::exponential(Duration::from_millis(20), Duration::from_millis(200))
        .jitter(Jitter::Full)
        .max_attempts(4)
        .seed(0x5eed)
        .build()
        .expect("valid backoff config");
    let retry =
        Retry::new(backoff)
            .budget(budget.clone())
            .retry_if(|e: &BreakerError<DepError>| match e {
                BreakerError::Inner(DepError::Unavailable) => RetryAction::Retry,
                _ => RetryAction::Stop,
            });

    println!(
        "dependency down for the first {} ms; {REQUESTS} requests, one every {} ms",
        DOWN_FOR.as_millis(),
        EVERY.as_millis()
    );
    let mut clients = Vec::new();
    let mut tick = tokio::time::interval(EVERY);
    for id in 0..REQUESTS {
        tick.tick().await;
        let (retry, breaker, dep) = (retry.clone(), breaker.clone(), Arc::clone(&dep));
        clients.push(tokio::spawn(async move {
            retry
                .run(|| breaker.call(dep.get(id)))
                .await
                .map_err(|e| e.reason)
        }));
    }
    let (mut ok, mut rejected_requests, mut budget_gave_up, mut exhausted) = (0, 0, 0, 0);
    let mut last_ok = Vec::new();
    for client in clients {
        match client.await.expect("client task") {
            Ok(_) => {
                ok += 1;
                last_ok.push(true);
            }
            Err(reason) => {
                last_ok.push(false);
                match reason {
                    StopReason::NotRetryable => rejected_requests += 1,
                    StopReason::BudgetExhausted => budget_gave_up += 1,
                    _ => exhausted += 1,
                }
            }
        }
    }

    let b = breaker.stats();
    let r = retry.stats();
    let budget_stats = budget.stats();
    let tail_ok = last_ok.iter().rev().take(20).all(|ok| *ok);
    println!();
    println!("summary after {} ms", ms_since(start));
    println!("  requests            {REQUESTS} ({ok} ok, {rejected_requests} failed fast on an open breaker, {budget_gave_up} out of retry budget, {exhausted} out of attempts)");
    println!(
        "  calls made          {} (dependency invocations)",
        dep.calls.load(Ordering::Relaxed)
    );
    println!(
        "  calls rejected      {} (by the breaker, never sent)",
        b.rejected
    );
    println!("  retries spent       {}", r.retries);
    println!("  budget refusals     {}", budget_stats.exhausted);
    println!(
        "  breaker             {} now, opened {} time(s), {} transitions",
        b.state, b.opened_count, b.transitions
    );
    let (give_ups, transitions) = (retry.report_stats(), breaker.report_stats());
    println!(
        "  log lines           {} of {} give-ups, {} of {} transitions (at most one per second each)",
        give_ups.reports, give_ups.occurrences, transitions.reports, transitions.occurrences
    );

    let mut problems = Vec::new();
    if budget_stats.exhausted == 0 {
        problems.push("the retry budget never refused a retry");
    }
    if b.rejected == 0 || b.opened_count == 0 {
        problems.push("the breaker never opened and rejected calls");
    }
    if b.state != State::Closed {
        problems.push("the breaker did not close after the dependency recovered");
    }
    if !tail_ok {
        problems.push("the last 20 requests did not all succeed");
    }
    // One line at once, then at most one per second (the run lasts under a few seconds).
    let seconds = (now() - start).as_secs();
    if give_ups.reports > seconds + 1 || transitions.reports > seconds + 1 {
        problems.push("keel logged more than one give-up or transition line per second");
    }
    if problems.is_empty() {
        println!("ok: budget, breaker and recovery all engaged");
    } else {
        for p in &problems {
            eprintln!("FAILED: {p}");
        }
        std::process::exit(1);
    }
}
