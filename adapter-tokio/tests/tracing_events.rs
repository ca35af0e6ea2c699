//! keel's tracing events, captured. Alone in its own test binary: `tracing` caches each
//! callsite's interest globally, and a test on another thread that reaches the same callsite
//! with no subscriber while this one installs its scoped subscriber can leave the callsite
//! disabled for it (seen once in CI as a missing `warn` event when this test shared a binary
//! with the other breaker and retry tests).

// The tests that pause tokio's clock and check exact durations on keel's run only where keel
// follows that clock from the start (see each); a release build without `paused-time`
// compiles the rest, and their helpers go unused there.
#![cfg_attr(
    not(any(debug_assertions, feature = "paused-time")),
    allow(dead_code, unused_imports)
)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_tokio::Retry;
use support::{breaker, constant, settle};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Error {
    Unavailable,
}

/// Records `(level, target, fields)` of every event, and its message apart.
#[derive(Clone, Default)]
struct Capture(
    Arc<Mutex<Vec<(tracing::Level, String, String)>>>,
    Arc<Mutex<Vec<String>>>,
);

impl Capture {
    /// The events under `keel::`, and their messages.
    fn keel(&self) -> (Vec<(tracing::Level, String, String)>, Vec<String>) {
        let events = self.0.lock().unwrap();
        let messages = self.1.lock().unwrap();
        events
            .iter()
            .zip(messages.iter())
            .filter(|((_, target, _), _)| target.starts_with("keel::"))
            .map(|(e, m)| (e.clone(), m.clone()))
            .unzip()
    }

    fn clear(&self) {
        self.0.lock().unwrap().clear();
        self.1.lock().unwrap().clear();
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Fields(String, String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if f.name() == "message" {
                    self.1 = format!("{v:?}");
                } else {
                    self.0 += &format!("{}={:?} ", f.name(), v);
                }
            }
        }
        let mut fields = Fields(String::new(), String::new());
        event.record(&mut fields);
        self.1.lock().unwrap().push(fields.1);
        let meta = event.metadata();
        self.0.lock().unwrap().push((
            *meta.level(),
            meta.target().to_owned(),
            fields.0.trim_end().to_owned(),
        ));
    }
}

// Exact durations on keel's clock under tokio's paused clock: the contract of debug builds and
// of the feature `paused-time` (a release build reads the TSC until a keel timer sees the
// pause; keel-tokio's docs: "turn on `paused-time` for release-mode tests that pause").
#[cfg(any(debug_assertions, feature = "paused-time"))]
#[tokio::test(start_paused = true)]
async fn transitions_log_at_info_and_give_ups_at_warn() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let capture = Capture::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    settle().await;
    // Named instances: every line says which one (an outage log that names the dependency).
    let b = breaker(2, Duration::from_secs(1), 1).named("payments");
    let retry = Retry::new(constant(10, 2)).named(String::from("checkout"));
    retry
        .run(|| b.call(async { Err::<(), _>(Error::Unavailable) }))
        .await
        .unwrap_err();
    let info = tracing::Level::INFO;
    let (debug, warn) = (tracing::Level::DEBUG, tracing::Level::WARN);
    let (got, messages) = capture.keel();
    let s = String::from;
    assert_eq!(
        got,
        vec![
            (
                debug,
                s("keel::retry"),
                s(r#"name="checkout" attempt=1 delay_ms=10 error=Inner(Unavailable)"#)
            ),
            (
                info,
                s("keel::breaker"),
                s(
                    r#"name="payments" from="closed" to="open" reason="consecutive failures" suppressed=0"#
                )
            ),
            (
                warn,
                s("keel::retry"),
                s(
                    r#"name="checkout" attempt=2 reason="max-attempts" error=Inner(Unavailable) suppressed=0"#
                )
            ),
        ]
    );
    // Constant messages: the values are in the fields.
    assert_eq!(
        messages,
        ["retrying", "circuit breaker transition", "giving up"]
    );

    // The same subscriber, in the same test (see the binary's docs): storms are rate-limited.
    capture.clear();
    give_ups_and_transitions_are_logged_once_per_second_with_a_suppressed_count(&capture).await;
}

/// 50 give-ups in 500 ms log one line; the next one, a second after the first, carries the
/// 49 in between. A breaker that flaps every 10 ms logs one transition per second the same
/// way (the issue measured 16 "giving up" lines in 1.2 s of `flaky`, every transition logged).
async fn give_ups_and_transitions_are_logged_once_per_second_with_a_suppressed_count(
    capture: &Capture,
) {
    let t0 = settle().await;
    let retry = Retry::new(constant(5, 2));
    let run = || retry.run(|| async { Err::<(), _>(Error::Unavailable) });
    for _ in 0..50 {
        run().await.unwrap_err();
    }
    assert_eq!(keel_tokio::now() - t0, Duration::from_millis(250));
    tokio::time::sleep(Duration::from_millis(750)).await;
    run().await.unwrap_err();
    let warn = tracing::Level::WARN;
    let lines: Vec<_> = capture
        .keel()
        .0
        .into_iter()
        .filter(|(l, ..)| *l == warn)
        .collect();
    let fields: Vec<_> = lines.iter().map(|(_, _, f)| f.as_str()).collect();
    assert_eq!(
        fields,
        [
            // Not named: the default name.
            r#"name="default" attempt=2 reason="max-attempts" error=Unavailable suppressed=0"#,
            r#"name="default" attempt=2 reason="max-attempts" error=Unavailable suppressed=49"#,
        ]
    );
    assert_eq!(retry.stats().gave_up_exhausted, 51);

    capture.clear();
    let b = breaker(1, Duration::from_millis(10), 1);
    for _ in 0..20 {
        // Closed -> open, then (10 ms later) open -> half-open and the failed probe reopens it.
        let _ = b.call(async { Err::<(), _>(Error::Unavailable) }).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let transitions = b.stats().transitions;
    assert_eq!(transitions, 39);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = b.call(async { Ok::<_, Error>(()) }).await;
    assert_eq!(b.stats().transitions, 41);
    let info = tracing::Level::INFO;
    let lines: Vec<_> = capture
        .keel()
        .0
        .into_iter()
        .filter(|(l, ..)| *l == info)
        .collect();
    let fields: Vec<_> = lines.iter().map(|(_, _, f)| f.as_str()).collect();
    assert_eq!(
        fields,
        [
            r#"name="default" from="closed" to="open" reason="consecutive failures" suppressed=0"#,
            // The first after the second passed (open -> half-open) carries the 38 before it.
            r#"name="default" from="open" to="half-open" reason="open duration elapsed" suppressed=38"#,
        ]
    );
}
