//! Feature `metrics`: every name of the documented table (`keel_core::driver::metrics`) is
//! emitted, with the instance's `name` label, after the machines are exercised. Alone in its
//! binary: it installs a global recorder (a debugging recorder that snapshots every series).
#![cfg(feature = "metrics")]

use std::collections::BTreeMap;
use std::io;
use std::num::NonZeroU32;
use std::task::{Context, Poll};
use std::time::Duration;

use keel_tokio::core::backoff::{BackoffConfig, Jitter};
use keel_tokio::core::breaker::BreakerConfig;
use keel_tokio::core::budget::BudgetConfig;
use keel_tokio::core::bulkhead::BulkheadConfig;
use keel_tokio::core::driver::metrics::{self, ALL};
use keel_tokio::core::driver::{self, Listener};
use keel_tokio::core::rate::keyed::KeyedConfig;
use keel_tokio::core::rate::Quota;
use keel_tokio::core::sync::budget::SharedBudget;
use keel_tokio::{Breaker, Bulkhead, GuardConfig, KeyedRateLimiter, RateLimiter, Retry};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tokio::io::AsyncWriteExt as _;

/// A listener whose every accept fails with a per-connection error, once, then waits for ever.
struct AbortingListener(bool);

impl Listener for AbortingListener {
    type Conn = ();
    type Addr = ();
    fn poll_accept(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<((), ())>> {
        if std::mem::replace(&mut self.0, true) {
            Poll::Pending
        } else {
            Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()))
        }
    }
    fn shed(&mut self, _conn: (), _farewell: &'static [u8]) {}
}

/// `name{labels}` -> value, for every series.
fn snapshot(snapshotter: &metrics_util::debugging::Snapshotter) -> BTreeMap<String, f64> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let mut labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            let value = match value {
                DebugValue::Counter(c) => c as f64,
                DebugValue::Gauge(g) => g.into_inner(),
                DebugValue::Histogram(h) => h.len() as f64,
            };
            (format!("{}{{{}}}", key.name(), labels.join(",")), value)
        })
        .collect()
}

#[tokio::test(flavor = "current_thread")]
async fn every_documented_metric_is_emitted_with_its_instance_name() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this binary");
    metrics::describe();

    // A breaker that opens after two failures, and a retry with a budget of one retry.
    let breaker = Breaker::new(
        BreakerConfig::consecutive_failures(2)
            .open_duration(Duration::from_secs(10))
            .build()
            .unwrap(),
    )
    .named("payments");
    let budget = SharedBudget::new(
        BudgetConfig::builder()
            .min_per_sec(0)
            .retry_percent(0)
            .build()
            .unwrap(),
        keel_tokio::now(),
    );
    let retry = Retry::new(
        BackoffConfig::constant(Duration::from_millis(10))
            .jitter(Jitter::None)
            .max_attempts(3)
            .build()
            .unwrap(),
    )
    .budget(budget)
    .named("payments");
    // Attempt 1 fails; the budget (empty: no floor, no deposits) refuses the retry.
    let err = retry
        .run(|| breaker.call(async { Err::<(), _>("down") }))
        .await
        .unwrap_err();
    assert_eq!(err.attempts, 1);
    let no_budget = Retry::new(
        BackoffConfig::constant(Duration::from_millis(10))
            .jitter(Jitter::None)
            .max_attempts(2)
            .build()
            .unwrap(),
    )
    .named("payments");
    // Two attempts: the breaker opens on the second failure.
    let _ = no_budget
        .run(|| breaker.call(async { Err::<(), _>("down") }))
        .await;
    assert!(breaker.call(async { Ok::<_, &str>(()) }).await.is_err());

    // Rate limiters: one admitted, one refused.
    let quota = Quota::per_second(NonZeroU32::new(1).unwrap()).unwrap();
    let limiter = RateLimiter::new(quota).named("api");
    assert!(limiter.check().is_ok());
    assert!(limiter.check().is_err());
    let keyed = KeyedRateLimiter::new(
        KeyedConfig::builder()
            .quota(quota)
            .max_keys(16)
            .build()
            .unwrap(),
    )
    .named("per-ip");
    assert!(keyed.check(&1u8).is_ok());
    assert!(keyed.check(&1u8).is_err());

    // A bulkhead of one slot and no queue: one admitted, one shed.
    let bulkhead =
        Bulkhead::new(BulkheadConfig::builder().max_concurrent(1).build().unwrap()).named("pool");
    let held = bulkhead.try_acquire().unwrap();
    assert!(bulkhead.run(async {}).await.is_err());
    drop(held);
    assert!(bulkhead.run(async {}).await.is_ok());

    // A server that serves one connection, then stops.
    let config = GuardConfig::builder().max_connections(4).build().unwrap();
    let incoming = keel_tokio::bind("127.0.0.1:0", &config).await.unwrap();
    let addr = incoming.get_ref().0.local_addr().unwrap();
    let server = keel_tokio::Server::new(incoming).named("edge");
    let handle = server.handle();
    // Its handler counts a request timeout as a protocol would (the HTTP server's own are
    // tested in http_server.rs).
    let serving = tokio::spawn(server.serve(|conn, _draining| async move {
        conn.request_timeouts().body_timed_out();
    }));
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    client.write_all(b"hi").await.unwrap();
    drop(client);
    let served = async {
        while handle.stats().shutdown.completed == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), served)
        .await
        .expect("the connection is served within 30 s");
    handle.shutdown();
    serving.await.unwrap();

    // An accept error, on a listener of its own.
    let mut aborting =
        driver::Incoming::new(AbortingListener(false), keel_tokio::TokioRuntime, &config)
            .named("edge");
    // One poll: the error is counted and skipped, then the listener has nothing.
    let polled =
        futures_lite::future::poll_once(futures_lite::StreamExt::next(&mut aborting)).await;
    assert!(polled.is_none(), "pending after the per-connection error");

    // The tower layers forward their names.
    {
        use tower::{Service as _, ServiceBuilder, ServiceExt as _};
        let mut svc = ServiceBuilder::new()
            .layer(keel_tokio::tower::RetryLayer::new(constant_once()).named("edge"))
            .layer(
                keel_tokio::tower::BreakerLayer::new(BreakerConfig::builder().build().unwrap())
                    .named("edge"),
            )
            .layer(keel_tokio::tower::RateLimitLayer::new(quota).named("edge"))
            .layer(
                keel_tokio::tower::BulkheadLayer::new(BulkheadConfig::builder().build().unwrap())
                    .named("edge"),
            )
            .service(tower::service_fn(|x: u32| async move {
                Ok::<_, std::convert::Infallible>(x)
            }));
        assert_eq!(svc.ready().await.unwrap().call(7).await.unwrap(), 7);
    }

    // The HTTP keyed limit counts its decisions in its limiter's series: one admitted, one 429.
    #[cfg(feature = "http")]
    {
        use keel_tokio::http::{KeyedRateLimitLayer, PeerAddr, PeerIp};
        use tower::{Layer as _, ServiceExt as _};
        let limiter = KeyedRateLimiter::new(
            KeyedConfig::builder()
                .quota(quota)
                .max_keys(16)
                .build()
                .unwrap(),
        )
        .named("http-per-ip");
        let svc = KeyedRateLimitLayer::from_limiter(limiter, PeerIp::default()).layer(
            tower::service_fn(|_req: http::Request<()>| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
            }),
        );
        for expected in [200, 429] {
            let mut req = http::Request::new(());
            req.extensions_mut()
                .insert(PeerAddr(std::net::SocketAddr::from(([192, 0, 2, 1], 1234))));
            let answer = svc.clone().oneshot(req).await.unwrap();
            assert_eq!(answer.status().as_u16(), expected);
        }
    }

    let got = snapshot(&snapshotter);
    let listing = got
        .iter()
        .map(|(k, v)| format!("{k} {v}\n"))
        .collect::<String>();
    for name in ALL {
        let series: Vec<_> = got
            .iter()
            .filter(|(k, _)| k.split('{').next() == Some(name))
            .collect();
        assert!(!series.is_empty(), "{name} was never emitted:\n{listing}");
        assert!(
            series.iter().all(|(k, _)| k.contains("name=")),
            "{name} without a name label:\n{listing}"
        );
        if name.ends_with("_total") {
            assert!(
                series.iter().any(|(_, v)| **v > 0.0),
                "{name} never counted:\n{listing}"
            );
        }
    }
    let value = |k: &str| {
        *got.get(k)
            .unwrap_or_else(|| panic!("no {k} in:\n{listing}"))
    };
    assert_eq!(value("keel_breaker_state{name=payments}"), 1.0, "open");
    assert_eq!(
        value("keel_breaker_calls_total{name=payments,outcome=failure}"),
        2.0
    );
    assert_eq!(
        value("keel_breaker_calls_total{name=payments,outcome=rejected}"),
        2.0
    );
    assert_eq!(
        value("keel_breaker_calls_total{name=payments,outcome=success}"),
        0.0
    );
    assert_eq!(
        value("keel_breaker_transitions_total{name=payments,to=open}"),
        1.0
    );
    assert_eq!(value("keel_retry_attempts_total{name=payments}"), 3.0);
    assert_eq!(value("keel_retry_retries_total{name=payments}"), 1.0);
    assert_eq!(
        value("keel_retry_budget_exhausted_total{name=payments}"),
        1.0
    );
    assert_eq!(
        value("keel_retry_gave_up_total{name=payments,reason=budget-exhausted}"),
        1.0
    );
    assert_eq!(
        value("keel_retry_gave_up_total{name=payments,reason=max-attempts}"),
        1.0
    );
    assert_eq!(value("keel_rate_allowed_total{name=api}"), 1.0);
    assert_eq!(value("keel_rate_limited_total{name=api}"), 1.0);
    assert_eq!(value("keel_rate_allowed_total{name=per-ip}"), 1.0);
    assert_eq!(value("keel_rate_limited_total{name=per-ip}"), 1.0);
    #[cfg(feature = "http")]
    {
        assert_eq!(value("keel_rate_allowed_total{name=http-per-ip}"), 1.0);
        assert_eq!(value("keel_rate_limited_total{name=http-per-ip}"), 1.0);
    }
    assert_eq!(value("keel_bulkhead_admitted_total{name=pool}"), 2.0);
    assert_eq!(
        value("keel_bulkhead_rejected_total{name=pool,reason=full}"),
        1.0
    );
    assert_eq!(
        value("keel_bulkhead_rejected_total{name=pool,reason=queue_full}"),
        0.0
    );
    assert_eq!(value("keel_bulkhead_in_flight{name=pool}"), 0.0);
    assert_eq!(value("keel_connections_accepted_total{name=edge}"), 1.0);
    assert_eq!(value("keel_connections_active{name=edge}"), 0.0);
    assert_eq!(value("keel_shutdown_phase{name=edge}"), 2.0, "stopped");
    assert_eq!(
        value("keel_accept_errors_total{kind=per-connection,name=edge}"),
        1.0
    );
    assert_eq!(value("keel_accept_errors_total{kind=fatal,name=edge}"), 0.0);
    for through_layers in [
        "keel_retry_attempts_total{name=edge}",
        "keel_breaker_calls_total{name=edge,outcome=success}",
        "keel_rate_allowed_total{name=edge}",
        "keel_bulkhead_admitted_total{name=edge}",
    ] {
        assert_eq!(value(through_layers), 1.0, "{through_layers}");
    }
}

/// One attempt, no retry.
fn constant_once() -> BackoffConfig {
    BackoffConfig::constant(Duration::ZERO)
        .jitter(Jitter::None)
        .max_attempts(1)
        .build()
        .unwrap()
}

/// An `AdaptivePermit` dropped (not run through `run`) sets its bulkhead's occupancy gauges at
/// once, as the bulkhead's own guard release does: before, they showed it in flight until the
/// next call through the bulkhead. On a local recorder (this thread only).
#[test]
fn a_dropped_adaptive_permit_updates_the_bulkhead_gauges() {
    use keel_tokio::core::adaptive::AdaptiveConfig;
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let in_flight = "keel_bulkhead_in_flight{name=adaptive-gauges}";
    ::metrics::with_local_recorder(&recorder, || {
        let config = AdaptiveConfig::builder().initial_limit(4).build().unwrap();
        let queue = BulkheadConfig::builder().max_queue(0).build().unwrap();
        let limit = keel_tokio::AdaptiveLimit::new(config, queue).named("adaptive-gauges");
        let a = limit.try_acquire().unwrap();
        let b = limit.try_acquire().unwrap();
        assert_eq!(snapshot(&snapshotter).get(in_flight), Some(&2.0));
        drop(a);
        assert_eq!(limit.bulkhead().stats().in_flight, 1);
        assert_eq!(snapshot(&snapshotter).get(in_flight), Some(&1.0));
        drop(b);
        assert_eq!(snapshot(&snapshotter).get(in_flight), Some(&0.0));
    });
}
