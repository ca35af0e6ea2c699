//! A fleet limiter on the shared real Redis: the server's clock, key expiry, the deny cache,
//! garbage in a key.

mod common;

use std::num::NonZeroU32;
use std::time::Duration;

use common::{redis_url, unique};
use keel_core::rate::Quota;
use keel_redis::{Denied, FailurePolicy, FleetConfig, FleetError, FleetLimiter, Source};

fn quota(per_second: u32, burst: u32) -> Quota {
    Quota::per_second(NonZeroU32::new(per_second).unwrap())
        .unwrap()
        .with_burst(NonZeroU32::new(burst).unwrap())
        .unwrap()
}

fn limiter(name: &str, q: Quota, policy: FailurePolicy) -> FleetLimiter {
    let config = FleetConfig::builder(unique(name), q)
        .policy(policy)
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    FleetLimiter::connect(&redis_url(), config).unwrap()
}

async fn conn() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test]
async fn admits_the_burst_on_the_server_clock_then_rejects_with_the_wait() {
    // 1 per 10 s: nothing refills during the test.
    let q = Quota::new(NonZeroU32::new(1).unwrap(), Duration::from_secs(10))
        .unwrap()
        .with_burst(NonZeroU32::new(3).unwrap())
        .unwrap();
    let l = limiter("burst", q, FailurePolicy::FailClosed);
    for left in [2, 1, 0] {
        let a = l.check("k").await.unwrap();
        assert_eq!(a.by, Source::Redis);
        assert_eq!(a.remaining, left);
    }
    match l.check("k").await {
        Err(Denied::Limited { retry_after, by }) => {
            assert_eq!(by, Source::Redis);
            assert!(retry_after > Duration::from_secs(9) && retry_after <= Duration::from_secs(10));
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    // Another key is independent; a batch over the burst is its own error.
    assert!(l.check("other").await.is_ok());
    assert_eq!(
        l.check_n("other", 4).await,
        Err(Denied::InsufficientCapacity { burst: 3 })
    );
    // The state lives until it equals a fresh key's: 3 intervals from the first admission.
    let pttl: i64 = redis::cmd("PTTL")
        .arg(l.redis_key("k"))
        .query_async(&mut conn().await)
        .await
        .unwrap();
    assert!(pttl > 25_000 && pttl <= 30_000, "pttl {pttl}");
    let stats = l.stats();
    assert_eq!(stats.admitted, 4);
    assert_eq!(stats.rejected, 2);
    assert_eq!(stats.redis_decisions, 5);
}

#[tokio::test]
async fn an_idle_key_expires_when_its_state_equals_a_fresh_one() {
    // 20 per second, burst 2: two admissions leave a state that is fresh again after 100 ms.
    let l = limiter("expiry", quota(20, 2), FailurePolicy::FailClosed);
    assert!(l.check("k").await.is_ok());
    assert!(l.check("k").await.is_ok());
    let mut c = conn().await;
    let exists: i64 = redis::cmd("EXISTS")
        .arg(l.redis_key("k"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(exists, 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let exists: i64 = redis::cmd("EXISTS")
        .arg(l.redis_key("k"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(exists, 0, "the key outlived its TTL");
    // And the fresh key has its whole burst.
    assert_eq!(l.check("k").await.unwrap().remaining, 1);
}

#[tokio::test]
async fn the_deny_cache_rejects_without_a_round_trip_until_redis_would_admit() {
    // One per 2 s, burst 1: a rejection lasts up to 2 s (ample for 100 local checks on a
    // loaded machine).
    let q = Quota::with_period(Duration::from_secs(2)).unwrap();
    let l = limiter("deny", q, FailurePolicy::FailClosed);
    assert!(l.check("abuser").await.is_ok());
    assert!(matches!(
        l.check("abuser").await,
        Err(Denied::Limited {
            by: Source::Redis,
            ..
        })
    ));
    let before = l.stats().redis_decisions;
    for _ in 0..100 {
        match l.check("abuser").await {
            Err(Denied::Limited {
                by: Source::DenyCache,
                retry_after,
            }) => {
                assert!(retry_after <= Duration::from_secs(2));
            }
            other => panic!("expected the deny cache, got {other:?}"),
        }
    }
    let s = l.stats();
    assert_eq!(s.redis_decisions, before, "the cache made round trips");
    assert_eq!(s.deny_cache_hits, 100);
    assert_eq!(s.deny_cache_len, 1);
    // Once the wait is over the key goes back to Redis and is admitted.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(l.check("abuser").await.unwrap().by, Source::Redis);
    // Off, every check is a round trip.
    let config = FleetConfig::builder(unique("nocache"), quota(5, 1))
        .deny_cache_keys(0)
        .build()
        .unwrap();
    let off = FleetLimiter::connect(&redis_url(), config).unwrap();
    for _ in 0..5 {
        let _ = off.check("abuser").await;
    }
    assert_eq!(off.stats().redis_decisions, 5);
    assert_eq!(off.stats().deny_cache_hits, 0);
}

#[tokio::test]
async fn the_deny_cache_never_rejects_what_redis_would_admit() {
    // Two limiters (two replicas) on one key, 50 per second, burst 1: replica B is denied and
    // caches it; at every instant afterwards, whatever B's cache rejects, Redis rejects too.
    let name = unique("exact");
    let make = || {
        // Keys stay, so Redis's view of the TAT is there to compare with after the fact.
        let config = FleetConfig::builder(name.clone(), quota(50, 1))
            .expire_idle_keys(false)
            .build()
            .unwrap();
        FleetLimiter::connect(&redis_url(), config).unwrap()
    };
    let (a, b) = (make(), make());
    let mut cached = 0;
    for _ in 0..300 {
        let _ = a.check("k").await;
        let before = std::time::Instant::now();
        if let Err(Denied::Limited {
            by: Source::DenyCache,
            ..
        }) = b.check("k").await
        {
            cached += 1;
            // Redis's own view: the key was still limited when the cache said so. The
            // server's clock at the cache's decision is at least its clock now minus the
            // time elapsed since before the check.
            let raw = b.raw_step("k", None, 0).await.unwrap();
            let elapsed = before.elapsed().as_nanos() as u64;
            let q = b.config().quota();
            let single = raw
                .tat
                .as_nanos()
                .saturating_sub(q.tolerance().as_nanos() as u64);
            assert!(
                single > raw.now.as_nanos().saturating_sub(elapsed),
                "the cache rejected an admissible key: single {single} now {} elapsed {elapsed} raw {raw:?}", raw.now.as_nanos()
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(cached > 0, "the cache was never used");
    let _: () = redis::cmd("DEL")
        .arg(a.redis_key("k"))
        .query_async(&mut conn().await)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_key_holding_garbage_is_a_typed_error_the_policy_handles() {
    let mut c = conn().await;
    for policy in [FailurePolicy::FailClosed, FailurePolicy::FailOpen] {
        let l = limiter("garbage", quota(10, 2), policy);
        let _: () = redis::cmd("SET")
            .arg(l.redis_key("text"))
            .arg("hello")
            .query_async(&mut c)
            .await
            .unwrap();
        let _: () = redis::cmd("HSET")
            .arg(l.redis_key("hash"))
            .arg("f")
            .arg("v")
            .query_async(&mut c)
            .await
            .unwrap();
        let _: () = redis::cmd("SET")
            .arg(l.redis_key("huge"))
            .arg("99999999999999999999")
            .query_async(&mut c)
            .await
            .unwrap();
        for key in ["text", "hash", "huge"] {
            let err = l.raw_step(key, None, 1).await.unwrap_err();
            assert!(
                matches!(err, FleetError::CorruptState { .. }),
                "{key}: {err:?}"
            );
            match (policy, l.check(key).await) {
                (
                    FailurePolicy::FailClosed,
                    Err(Denied::Unavailable(FleetError::CorruptState { .. })),
                ) => {}
                (FailurePolicy::FailOpen, Ok(a)) => assert_eq!(a.by, Source::FailOpen),
                (_, other) => panic!("{policy:?} {key}: {other:?}"),
            }
        }
        let s = l.stats();
        assert_eq!(s.errors, 3);
        assert_eq!(s.fallbacks, 3);
        // One bad key says nothing about Redis: the breaker stays closed, others still work.
        assert_eq!(l.check("good").await.unwrap().by, Source::Redis);
    }
}

#[tokio::test]
async fn the_local_policy_decides_with_its_share_when_redis_is_unreachable() {
    // Nothing listens on port 1.
    let config = FleetConfig::builder(unique("local"), quota(100, 10))
        .policy(FailurePolicy::Local {
            quota: quota(10, 2),
            max_keys: 100,
        })
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let l = FleetLimiter::connect("redis://127.0.0.1:1", config).unwrap();
    let mut admitted = 0;
    for _ in 0..20 {
        match l.check("k").await {
            Ok(a) => {
                assert_eq!(a.by, Source::Local);
                admitted += 1;
            }
            Err(Denied::Limited {
                by: Source::Local, ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(
        (2..=3).contains(&admitted),
        "the local share admitted {admitted}"
    );
    let s = l.stats();
    assert_eq!(s.fallback_local, 20);
    assert!(
        s.breaker_rejections >= 15,
        "the breaker did not open: {s:?}"
    );
}

#[test]
fn a_quota_the_script_cannot_compute_exactly_is_a_config_error() {
    let q = Quota::new(NonZeroU32::new(1).unwrap(), Duration::from_secs(86_400))
        .unwrap()
        .with_burst(NonZeroU32::new(200).unwrap())
        .unwrap();
    assert!(FleetConfig::builder("x", q).build().is_err());
    assert!(FleetConfig::builder("", quota(1, 1)).build().is_err());
    assert!(FleetConfig::builder("x", quota(1, 1))
        .timeout(Duration::ZERO)
        .build()
        .is_err());
    assert!(FleetConfig::builder("x", quota(1, 1))
        .timeout(Duration::MAX)
        .build()
        .is_err());
}

#[cfg(feature = "tower")]
#[tokio::test]
async fn the_tower_layer_rejects_over_the_fleet_limit_with_a_boxed_denied() {
    use keel_redis::tower::FleetRateLimitLayer;
    use tower::{Layer, ServiceExt};

    let l = limiter("tower", quota(1, 2), FailurePolicy::FailClosed);
    let layer = FleetRateLimitLayer::new(l.clone(), |req: &String| req.clone());
    let svc = layer.layer(tower::service_fn(|req: String| async move {
        Ok::<_, std::convert::Infallible>(format!("hello {req}"))
    }));
    for _ in 0..2 {
        let out = svc.clone().oneshot("alice".to_string()).await.unwrap();
        assert_eq!(out, "hello alice");
    }
    let err = svc.clone().oneshot("alice".to_string()).await.unwrap_err();
    match err.downcast_ref::<Denied>() {
        Some(Denied::Limited { retry_after, .. }) => assert!(*retry_after > Duration::ZERO),
        other => panic!("{other:?}"),
    }
    // Another key, and another service value on the same limiter, are unaffected.
    assert!(svc.oneshot("bob".to_string()).await.is_ok());
    assert_eq!(l.stats().admitted, 3);
}
