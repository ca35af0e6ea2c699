//! The driver trusts the runtime's clock, not its timers: on a runtime whose timers claim to
//! have fired at once (keel-testkit's `ManualRuntime::with_early_timers`), a sleep still ends
//! only at its deadline, and a zero-delay retry still yields between attempts.
#![cfg(feature = "futures")]

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};
use core::time::Duration;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Wake;

use keel_core::backoff::{BackoffConfig, Jitter};
use keel_core::driver::retry::Retry;
use keel_core::driver::sleep_until;
use keel_core::Instant;
use keel_testkit::ManualRuntime;

/// A waker that counts its wakes.
#[derive(Default)]
struct CountWakes(AtomicUsize);
impl Wake for CountWakes {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_timer_that_fires_early_never_ends_a_sleep_before_its_deadline() {
    let rt = ManualRuntime::new().with_early_timers();
    let wakes = Arc::new(CountWakes::default());
    let waker = Waker::from(Arc::clone(&wakes));
    let mut cx = Context::from_waker(&waker);
    let mut sleep = sleep_until(&rt, Instant::from_nanos(100));
    for polls in 1..=3 {
        assert!(Pin::new(&mut sleep).poll(&mut cx).is_pending());
        // It yields (asks to be polled again) instead of spinning or hanging unwoken.
        assert_eq!(wakes.0.load(Ordering::SeqCst), polls);
    }
    rt.advance_to(Instant::from_nanos(100));
    assert!(Pin::new(&mut sleep).poll(&mut cx).is_ready());
}

/// Each poll of a zero-delay run makes at most one attempt, then returns `Pending` having
/// woken itself (the operation would succeed at the 1000th attempt: without the yield the
/// first poll makes all of them and returns `Ready`). The clock never moves and every timer is
/// due at once: every delay is already over.
#[test]
fn a_zero_delay_retry_returns_pending_after_each_attempt_and_wakes_itself() {
    let rt = ManualRuntime::starting_at(Instant::from_secs(1)).with_early_timers();
    let config = BackoffConfig::constant(Duration::ZERO)
        .jitter(Jitter::None)
        .unlimited_attempts()
        .build()
        .unwrap();
    let retry = Retry::with_runtime(config, rt.clone());
    let attempts = AtomicU64::new(0);
    let run = retry.run(|| {
        let n = attempts.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            if n >= 1_000 {
                Ok(n)
            } else {
                Err("down")
            }
        }
    });
    let mut run = core::pin::pin!(run);
    let wakes = Arc::new(CountWakes::default());
    let waker = Waker::from(Arc::clone(&wakes));
    let mut cx = Context::from_waker(&waker);
    for poll in 1..1_000u64 {
        assert!(run.as_mut().poll(&mut cx).is_pending(), "poll {poll}");
        assert_eq!(attempts.load(Ordering::SeqCst), poll);
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            usize::try_from(poll).unwrap()
        );
    }
    assert_eq!(run.as_mut().poll(&mut cx), Poll::Ready(Ok(1_000)));
    assert_eq!(rt.now(), Instant::from_secs(1));
}
