//! loom models of the lock-based shared forms (`SharedBreaker`, `SharedBudget`): their mutex
//! comes from the same shim as the atomics, so loom checks every interleaving of them too.
//!
//! ```text
//! RUSTFLAGS="--cfg keel_loom" LOOM_MAX_PREEMPTIONS=2 \
//!     cargo test --release -p keel-core --features std --test loom_locked
//! ```
#![cfg(keel_loom)]

use core::time::Duration;

use keel_core::breaker::{BreakerConfig, State};
use keel_core::budget::BudgetConfig;
use keel_core::sync::breaker::SharedBreaker;
use keel_core::sync::budget::SharedBudget;
use keel_core::Instant;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

/// Two threads probing a half-open breaker that permits one probe: exactly one is admitted.
#[test]
fn loom_half_open_admits_exactly_the_permitted_probes() {
    loom::model(|| {
        let config = BreakerConfig::consecutive_failures(1)
            .open_duration(Duration::from_secs(1))
            .permitted_calls_in_half_open(1)
            .build()
            .expect("valid config");
        let t0 = Instant::from_secs(1);
        let breaker = Arc::new(SharedBreaker::new(config, t0));
        let p = breaker.try_acquire(t0).expect("closed admits");
        breaker.on_failure(t0, p);
        assert_eq!(breaker.state(), State::Open);
        let t1 = t0 + Duration::from_secs(1);
        let admitted = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (b, a) = (Arc::clone(&breaker), Arc::clone(&admitted));
                thread::spawn(move || {
                    if b.try_acquire(t1).is_ok() {
                        a.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread");
        }
        assert_eq!(admitted.load(Ordering::Relaxed), 1);
        assert_eq!(breaker.stats().probes_in_use, 1);
    });
}

/// Two threads withdrawing from a budget whose floor is one retry: exactly one retry.
#[test]
fn loom_budget_grants_each_retry_once() {
    loom::model(|| {
        let config = BudgetConfig::builder()
            .ttl(Duration::from_secs(1))
            .min_per_sec(1)
            .build()
            .expect("valid config");
        let now = Instant::from_secs(1);
        let budget = Arc::new(SharedBudget::new(config, now));
        let granted = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (b, g) = (Arc::clone(&budget), Arc::clone(&granted));
                thread::spawn(move || {
                    if b.try_acquire(now).is_ok() {
                        g.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread");
        }
        assert_eq!(granted.load(Ordering::Relaxed), 1);
        let s = budget.stats();
        assert_eq!((s.withdrawals, s.exhausted), (1, 1));
    });
}

/// Two threads reporting through clones of one shared report limiter: exactly one report is
/// emitted within the interval, and every occurrence is counted once.
#[test]
fn loom_shared_report_limiter_emits_once_per_interval_and_counts_everything() {
    use keel_core::report::Report;
    use keel_core::sync::report::SharedReportLimiter;
    loom::model(|| {
        let t = Instant::from_secs(1);
        let reports = SharedReportLimiter::new(Duration::from_secs(1), Instant::ZERO);
        let emitted = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (r, e) = (reports.clone(), Arc::clone(&emitted));
                thread::spawn(move || {
                    if let Report::Emit { suppressed } = r.on_occurrence(t) {
                        assert_eq!(suppressed, 0);
                        e.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread");
        }
        assert_eq!(emitted.load(Ordering::Relaxed), 1);
        let s = reports.stats();
        assert_eq!(
            (s.occurrences, s.reports, s.suppressed, s.unreported),
            (2, 1, 1, 1)
        );
        assert_eq!(
            reports.on_occurrence(t + Duration::from_secs(1)),
            Report::Emit { suppressed: 1 }
        );
    });
}
