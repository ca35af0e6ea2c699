//! Health aggregation: readiness and liveness with reasons.

use core::time::Duration;

use keel_core::bulkhead::{Admission, BulkheadConfig, FifoSemaphore};
use keel_core::health::{BreakerImpact, ComponentState, HealthReport, Reason, MAX_LISTED};
use keel_core::shutdown::{Shutdown, ShutdownConfig};
use keel_core::Instant;

#[test]
fn an_empty_report_is_ready_and_live() {
    let r = HealthReport::new();
    assert!(r.is_ready() && r.is_live());
    assert!(r.readiness().is_ready() && r.liveness().is_live());
    assert_eq!(r.to_string(), "ready=true live=true reasons=[]");
    assert_eq!(
        (r.readiness_status_code(), r.liveness_status_code()),
        (200, 200)
    );
}

#[test]
fn accept_paused_on_a_shortage_is_not_ready_but_live() {
    let r = HealthReport::new().with("accept", ComponentState::accept_paused("EMFILE"));
    assert!(!r.is_ready());
    assert!(r.is_live());
    assert_eq!(
        r.to_string(),
        "ready=false live=true reasons=[accept: paused (EMFILE)]"
    );
}

#[test]
fn draining_is_not_ready_but_live_and_prints_the_probe_line() {
    let r = HealthReport::new()
        .with("accept", ComponentState::accept_paused("EMFILE"))
        .with("shutdown", ComponentState::draining());
    assert_eq!(
        r.to_string(),
        "ready=false live=true reasons=[accept: paused (EMFILE); shutdown: draining]"
    );
    assert_eq!(r.readiness_status_code(), 503);
    assert_eq!(r.liveness_status_code(), 200);
}

#[test]
fn only_a_fatal_listener_fails_liveness() {
    let r = HealthReport::new()
        .with("accept", ComponentState::accept_stopped("EBADF"))
        .with("bulkhead", ComponentState::bulkhead_saturated());
    assert!(!r.is_ready());
    assert!(!r.is_live());
    assert!(!r.readiness().is_ready());
    assert!(!r.liveness().is_live());
    let live: Vec<String> = r.liveness().reasons().map(|c| c.to_string()).collect();
    assert_eq!(live, vec!["accept: stopped (EBADF)"]);
    let ready: Vec<&str> = r.readiness().reasons().map(|c| c.name).collect();
    assert_eq!(ready, vec!["accept", "bulkhead"]);
    assert_eq!(r.liveness_status_code(), 503);
}

#[test]
fn an_open_breaker_degrades_by_default_and_can_deny_readiness() {
    assert_eq!(BreakerImpact::default(), BreakerImpact::Degrade);
    let r = HealthReport::new().with("db", ComponentState::breaker_open(BreakerImpact::Degrade));
    assert!(r.is_ready() && r.is_live());
    assert_eq!(r.to_string(), "ready=true live=true reasons=[db: open]");
    assert_eq!(r.readiness().reasons().count(), 0);

    let r = HealthReport::new().with("db", ComponentState::breaker_open(BreakerImpact::NotReady));
    assert!(!r.is_ready() && r.is_live());
}

#[test]
fn healthy_components_are_not_listed() {
    let r = HealthReport::new()
        .with("a", ComponentState::Healthy)
        .with(
            "b",
            ComponentState::Degraded(Reason::with_detail("slow", "p99 2s")),
        )
        .with("c", ComponentState::Healthy);
    assert_eq!(r.reasons().count(), 1);
    assert_eq!(
        r.to_string(),
        "ready=true live=true reasons=[b: slow (p99 2s)]"
    );
}

#[test]
fn components_beyond_capacity_still_count_toward_the_verdict() {
    // MAX_LISTED (8) reasons are listed; the ninth and tenth are counted, and still decide.
    const NAMES: [&str; MAX_LISTED] = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let mut r = HealthReport::new();
    for name in NAMES {
        assert!(r.add(name, ComponentState::Degraded(Reason::new("slow"))));
    }
    assert!(r.is_ready() && r.is_live());
    assert!(
        r.add("ok", ComponentState::Healthy),
        "healthy ones are never cut"
    );
    assert!(!r.add("i", ComponentState::Fatal(Reason::new("gone"))));
    assert!(!r.add("j", ComponentState::draining()));
    assert!(!r.is_ready());
    assert!(!r.is_live());
    assert_eq!(r.omitted(), 2);
    assert_eq!(r.reasons().count(), MAX_LISTED);
    assert_eq!(
        r.to_string(),
        "ready=false live=false reasons=[a: slow; b: slow; c: slow; d: slow; e: slow; \
         f: slow; g: slow; h: slow; +2 more]"
    );
    // The cut reasons are not in the verdicts' lists either: they are counted only.
    assert_eq!(r.liveness().reasons().count(), 0);
}

#[test]
fn maps_a_shutdown_machine_state() {
    let config = ShutdownConfig::builder()
        .grace_period(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut sd = Shutdown::new(config, Instant::ZERO);
    assert_eq!(
        ComponentState::from_shutdown(sd.state()),
        ComponentState::Healthy
    );
    let _t = sd.try_acquire(Instant::ZERO);
    let _ = sd.on_signal(Instant::ZERO);
    assert_eq!(
        ComponentState::from_shutdown(sd.state()),
        ComponentState::draining()
    );
    let _ = sd.stop_now(Instant::ZERO);
    let stopped = ComponentState::from_shutdown(sd.state());
    assert!(!stopped.is_ready() && stopped.is_live());
    assert_eq!(stopped.reason(), Some(Reason::new("stopped")));
}

#[test]
fn maps_a_bulkhead_saturation() {
    let config = BulkheadConfig::builder()
        .max_concurrent(1)
        .max_queue(1)
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    let mut bh: FifoSemaphore<1> =
        FifoSemaphore::new(config, Instant::ZERO).expect("max_queue fits the ring");
    let state = |bh: &FifoSemaphore<1>| ComponentState::from_bulkhead(&bh.stats(), bh.config());
    assert_eq!(state(&bh), ComponentState::Healthy);
    let _p = bh.acquire(Instant::ZERO);
    assert_eq!(state(&bh), ComponentState::Healthy);
    assert!(matches!(
        bh.acquire(Instant::ZERO),
        Admission::Queued { .. }
    ));
    assert_eq!(state(&bh), ComponentState::bulkhead_saturated());
    assert!(!state(&bh).is_ready());

    // Calls waiting in a queue with room left: degraded ("queueing"), still ready.
    let config = BulkheadConfig::builder()
        .max_concurrent(1)
        .max_queue(2)
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    let mut bh: FifoSemaphore<2> =
        FifoSemaphore::new(config, Instant::ZERO).expect("max_queue fits the ring");
    let state = |bh: &FifoSemaphore<2>| ComponentState::from_bulkhead(&bh.stats(), bh.config());
    let _p = bh.acquire(Instant::ZERO);
    assert!(matches!(
        bh.acquire(Instant::ZERO),
        Admission::Queued { .. }
    ));
    let queueing = state(&bh);
    assert_eq!(queueing, ComponentState::Degraded(Reason::new("queueing")));
    assert!(queueing.is_ready() && queueing.is_live());
    assert!(matches!(
        bh.acquire(Instant::ZERO),
        Admission::Queued { .. }
    ));
    assert_eq!(state(&bh), ComponentState::bulkhead_saturated());
}

#[test]
fn maps_a_connection_limit_at_and_near_its_max() {
    use keel_core::limit::{Limit, LimitConfig};
    let mut limit = Limit::new(LimitConfig::builder().max(10).build().expect("valid"));
    let now = keel_core::Instant::ZERO;
    for _ in 0..8 {
        assert!(limit.try_acquire(now).is_ok());
    }
    assert_eq!(
        ComponentState::from_limit(&limit.stats()),
        ComponentState::Healthy
    );
    assert!(limit.try_acquire(now).is_ok()); // 9 of 10: 90 %
    assert_eq!(
        ComponentState::from_limit(&limit.stats()),
        ComponentState::Degraded(Reason::new("near limit"))
    );
    assert!(limit.try_acquire(now).is_ok()); // 10 of 10
    let at_limit = ComponentState::from_limit(&limit.stats());
    assert_eq!(at_limit, ComponentState::Unhealthy(Reason::new("at limit")));
    assert!(!at_limit.is_ready() && at_limit.is_live());
}

/// A reason's parts read back as given.
#[test]
fn a_reason_reads_back_its_word_and_detail() {
    let r = Reason::with_detail("paused", "EMFILE");
    assert_eq!((r.what(), r.detail()), ("paused", Some("EMFILE")));
    let r = Reason::new("draining");
    assert_eq!((r.what(), r.detail()), ("draining", None));
}
