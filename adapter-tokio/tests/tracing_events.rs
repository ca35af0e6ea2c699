//! keel's tracing events, captured. Alone in its own test binary: `tracing` caches each
//! callsite's interest globally, and a test on another thread that reaches the same callsite
//! with no subscriber while this one installs its scoped subscriber can leave the callsite
//! disabled for it (seen once in CI as a missing `warn` event when this test shared a binary
//! with the other breaker and retry tests).

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_tokio::Retry;
use support::{breaker, constant, settle};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Error {
    Unavailable,
}

/// Records `(level, target, fields)` of every event.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<(tracing::Level, String, String)>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if f.name() != "message" {
                    self.0 += &format!("{}={:?} ", f.name(), v);
                }
            }
        }
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        let meta = event.metadata();
        self.0.lock().unwrap().push((
            *meta.level(),
            meta.target().to_owned(),
            fields.0.trim_end().to_owned(),
        ));
    }
}

#[tokio::test(start_paused = true)]
async fn transitions_log_at_info_and_give_ups_at_warn() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let capture = Capture::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    settle().await;
    let b = breaker(2, Duration::from_secs(1), 1);
    let retry = Retry::new(constant(10, 2));
    retry
        .run(|| b.call(async { Err::<(), _>(Error::Unavailable) }))
        .await
        .unwrap_err();
    let info = tracing::Level::INFO;
    let (debug, warn) = (tracing::Level::DEBUG, tracing::Level::WARN);
    let got: Vec<_> = capture
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, target, _)| target.starts_with("keel::"))
        .cloned()
        .collect();
    let s = String::from;
    assert_eq!(
        got,
        vec![
            (
                debug,
                s("keel::retry"),
                s("attempt=1 delay_ms=10 error=Inner(Unavailable)")
            ),
            (
                info,
                s("keel::breaker"),
                s(r#"from="closed" to="open" reason=ConsecutiveFailures"#)
            ),
            (
                warn,
                s("keel::retry"),
                s(r#"attempt=2 reason="max-attempts" error=Inner(Unavailable)"#)
            ),
        ]
    );
}
