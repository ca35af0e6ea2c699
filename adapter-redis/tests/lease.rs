//! The fleet bulkhead on the shared real Redis: the cap holds, drop releases, a dead holder's
//! slot is freed when its lease expires, renewal keeps a long job's slot.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{redis_url, unique};
use keel_redis::{FleetBulkhead, FleetBulkheadConfig, LeaseError, LeasePolicy};

fn bulkhead(limit: u32, ttl: Duration) -> FleetBulkhead {
    named(&unique("bulkhead"), limit, ttl)
}

fn named(name: &str, limit: u32, ttl: Duration) -> FleetBulkhead {
    let config = FleetBulkheadConfig::new(name, limit)
        .unwrap()
        .lease_ttl(ttl)
        .timeout(Duration::from_secs(2));
    FleetBulkhead::connect(&redis_url(), config).unwrap()
}

async fn acquire_within(b: &FleetBulkhead, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        match b.try_acquire().await {
            Ok(lease) => {
                drop(lease);
                return start.elapsed();
            }
            Err(LeaseError::Full { .. }) => {}
            Err(e) => panic!("{e}"),
        }
        assert!(start.elapsed() < limit, "no slot within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn caps_holders_and_drop_releases_a_slot() {
    let name = unique("bulkhead");
    let b = named(&name, 3, Duration::from_secs(10));
    let other = named(&name, 3, Duration::from_secs(10));
    let leases = vec![
        b.try_acquire().await.unwrap(),
        b.try_acquire().await.unwrap(),
        b.try_acquire().await.unwrap(),
    ];
    match other.try_acquire().await {
        Err(LeaseError::Full {
            limit: 3,
            retry_after,
        }) => {
            assert!(retry_after <= Duration::from_secs(10));
        }
        other => panic!("{other:?}"),
    }
    // Another process (another bulkhead value on the same name) saw the same slots; once the
    // dropped leases' releases have run, it gets one.
    drop(leases);
    acquire_within(&other, Duration::from_secs(2)).await;
    assert!(other.stats().full >= 1);
    assert_eq!(b.stats().acquired, 3);
}

#[tokio::test]
async fn a_dead_holders_slot_is_freed_when_its_lease_expires() {
    let b = bulkhead(1, Duration::from_millis(300));
    let lease = b.try_acquire().await.unwrap();
    lease.abandon(); // no renewal, no release: a crashed process
    assert!(matches!(
        b.try_acquire().await,
        Err(LeaseError::Full { .. })
    ));
    let waited = acquire_within(&b, Duration::from_secs(3)).await;
    assert!(
        waited >= Duration::from_millis(150),
        "freed after only {waited:?}"
    );
}

#[tokio::test]
async fn renewal_keeps_a_long_jobs_slot_past_its_ttl() {
    let b = bulkhead(1, Duration::from_millis(300));
    let lease = b.try_acquire().await.unwrap();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(matches!(
            b.try_acquire().await,
            Err(LeaseError::Full { .. })
        ));
    }
    assert!(!lease.is_lost());
    lease.release().await.unwrap();
    assert!(b.try_acquire().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_holders_never_exceed_the_limit() {
    let name = unique("bulkhead-many");
    let holding = Arc::new(AtomicU32::new(0));
    let peak = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        // Each task its own bulkhead value: 16 "processes" on one name.
        let config = FleetBulkheadConfig::new(name.clone(), 4).unwrap();
        let b = FleetBulkhead::connect(&redis_url(), config).unwrap();
        let (holding, peak) = (holding.clone(), peak.clone());
        tasks.push(tokio::spawn(async move {
            let end = Instant::now() + Duration::from_secs(1);
            let mut got = 0;
            while Instant::now() < end {
                if let Ok(lease) = b.try_acquire().await {
                    let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    holding.fetch_sub(1, Ordering::SeqCst);
                    lease.release().await.unwrap();
                    got += 1;
                } else {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            got
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak <= 4, "{peak} holders at once");
    assert_eq!(
        peak, 4,
        "the cap was never reached: the test would not see an overrun"
    );
    assert!(total > 16, "only {total} leases");
}

#[tokio::test]
async fn an_unreachable_redis_follows_the_lease_policy() {
    for (policy, open) in [
        (LeasePolicy::FailClosed, false),
        (LeasePolicy::FailOpen, true),
    ] {
        let config = FleetBulkheadConfig::new("down", 1)
            .unwrap()
            .policy(policy)
            .timeout(Duration::from_millis(200));
        let b = FleetBulkhead::connect("redis://127.0.0.1:1", config).unwrap();
        match b.try_acquire().await {
            Ok(lease) => {
                assert!(open);
                assert!(!lease.is_leased());
            }
            Err(LeaseError::Unavailable(_)) => assert!(!open),
            Err(e) => panic!("{e}"),
        }
    }
}
