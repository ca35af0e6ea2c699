//! [`Breaker`]: a circuit breaker around futures, on any [`Runtime`].
//!
//! # What it protects against
//!
//! A dependency that fails or hangs: once its calls look bad enough the breaker opens and
//! [`Breaker::call`] fails at once with [`BreakerError::Rejected`] (carrying `retry_at`)
//! instead of sending more load to it; after the open duration a few probes decide whether it
//! closes again. The policies, states and defaults are the core machine's, see
//! [`crate::breaker`].
//!
//! # The contract
//!
//! - A `Breaker` is a cheap handle: clones share **one** breaker
//!   ([`SharedBreaker`]: a `CircuitBreaker` behind a mutex, with a lock-free closed path for
//!   configs without a rate policy). The lock is held for a few arithmetic steps, never across
//!   the call's `.await`.
//! - [`call`](Breaker::call) asks for admission at the runtime's `now()`, awaits the future,
//!   and reports the outcome at the runtime's `now()`: the difference is the call's duration
//!   for the slow-call policy, on the runtime's clock (so `tokio::time::pause()` drives it).
//!   `Ok` is a success and `Err` a failure; [`call_with`](Breaker::call_with) lets a
//!   classifier decide ([`Outcome::Ignored`] for errors that say nothing about the
//!   dependency's health: a 404, a validation error).
//! - **A timeout inside the breaker** (`breaker.call_timeout(d, fut)`, or
//!   `breaker.call(timeout(d, fut))` with your own error mapping) makes an expiry an `Err`
//!   that counts as a failure at once. **A timeout outside it** (`timeout(d,
//!   breaker.call(fut))`) drops the call's future instead; that is counted too, see the next
//!   point, so a hanging dependency opens the breaker whichever side the timeout is on.
//! - A call whose future is dropped before it finishes (cancelled, timed out by an outer
//!   `timeout`) is reported by a drop guard through
//!   [`on_abandoned`](crate::breaker::CircuitBreaker::on_abandoned), so a half-open probe slot
//!   is never leaked: as [`Outcome::Failure`] if it had already run for at least the config's
//!   [`abandon_threshold`](BreakerConfig::abandon_threshold) (default 1 s: a hanging
//!   dependency opens the breaker after at most `minimum_calls` abandoned calls, or
//!   `consecutive_failures` of them), else as [`Outcome::Ignored`] (the caller lost interest;
//!   nothing is known about the dependency).
//! - After every admission and outcome the breaker's events are drained: each transition is
//!   handed to the handle's [`on_transition`](Breaker::on_transition) hook (every one) and
//!   logged (feature `tracing`, see below). Open → half-open happens lazily, on the first
//!   admission after the open duration.
//!
//! # The recommended client stack
//!
//! From the outside in: **overall timeout → retry → breaker → per-attempt timeout →
//! bulkhead** → the call.
//!
//! - The *overall timeout* bounds what the caller waits for, retries and backoff sleeps
//!   included (every retry yields, so it always fires).
//! - *Retry* outside the breaker, so each attempt asks the breaker and an open breaker fails
//!   the remaining attempts fast (classify [`BreakerError::Rejected`] as not retryable).
//! - The *per-attempt timeout* inside the breaker ([`call_timeout`](Breaker::call_timeout))
//!   turns a hanging attempt into a failure the breaker counts at once; an abandoned call
//!   (the overall timeout firing mid-attempt) is still counted past the abandon threshold.
//! - The *bulkhead* innermost, so a call the breaker rejects never takes a slot, and a slot is
//!   held only while the dependency is actually called. (A bulkhead that queues puts its wait
//!   inside the per-attempt timeout: that wait then counts against the dependency; give the
//!   bulkhead a short `max_wait`, or no queue.)
//!
//! # tracing (feature `tracing`), target `keel::breaker`
//!
//! Transitions at `info` ("circuit breaker transition"), **rate-limited per breaker** (one
//! limiter per handle, shared by its clones; [`report_interval`](Breaker::report_interval),
//! default 1 s): the first, then at most one line per interval, with the fields `name` (the
//! instance name, [`Breaker::named`]), `from`, `to`
//! ([`State::as_str`]), `reason`
//! ([`TransitionReason::as_str`](crate::breaker::TransitionReason::as_str)) and `suppressed`
//! (transitions since the previous line that were not logged; the hook and
//! [`BreakerStats::transitions`] see every one). A flapping breaker thus logs at most one line
//! per second; the state at any moment is [`Breaker::state`].
//!
//! # Example
//!
//! ```
//! use keel_core::breaker::{BreakerConfig, State};
//! use keel_core::driver::breaker::{Breaker, BreakerError};
//! use keel_core::sync::breaker::SharedBreaker;
//! use keel_core::time::Instant;
//! use keel_testkit::ManualRuntime; // a clock the test moves; keel_tokio::Breaker on tokio
//! use core::time::Duration;
//!
//! let rt = ManualRuntime::new();
//! let config = BreakerConfig::consecutive_failures(2)
//!     .open_duration(Duration::from_secs(5))
//!     .build()?;
//! let breaker = Breaker::from_shared(SharedBreaker::new(config, rt.now()), rt.clone());
//! rt.block_on(async {
//!     for _ in 0..2 {
//!         let r = breaker.call(async { Err::<(), _>("connection refused") }).await;
//!         assert!(matches!(r, Err(BreakerError::Inner("connection refused"))));
//!     }
//!     assert_eq!(breaker.state(), State::Open);
//!     let r = breaker.call(async { Ok::<_, &str>(1) }).await;
//!     let retry_at = match r {
//!         Err(BreakerError::Rejected(rejected)) => rejected.retry_at,
//!         other => panic!("expected a rejection, got {other:?}"),
//!     };
//!     assert_eq!(retry_at, Some(Instant::from_secs(5)));
//!     rt.advance(Duration::from_secs(5)); // the open duration passes, in no time
//!     assert_eq!(breaker.call(async { Ok::<_, &str>(1) }).await.ok(), Some(1)); // a probe
//! });
//! # Ok::<(), keel_core::ConfigError>(())
//! ```

use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use core::time::Duration;

use alloc::sync::Arc;

use crate::breaker::{
    BreakerConfig, BreakerEvent, BreakerPermit, BreakerStats, Outcome, Rejected, State,
};
use crate::driver::instance::{BreakerMetrics, Instance};
use crate::driver::{Elapsed, Name, Runtime};
use crate::report::DEFAULT_REPORT_INTERVAL;
use crate::sync::breaker::SharedBreaker;
use crate::sync::report::SharedReportLimiter;
use crate::time::Instant;

/// A transition hook: see [`Breaker::on_transition`] and [`Breaker::on_named_transition`].
type Hook = Arc<dyn Fn(&Name, &BreakerEvent) + Send + Sync>;

/// A circuit breaker around futures; clones share one breaker. See the [module docs](self).
///
/// On keel-testkit's manual clock (an adapter's `Breaker` is this type on its runtime):
///
/// ```
/// use std::time::Duration;
/// use keel_core::breaker::{BreakerConfig, State};
/// use keel_core::driver::breaker::{Breaker, BreakerError};
/// use keel_core::sync::breaker::SharedBreaker;
/// use keel_testkit::ManualRuntime;
///
/// let rt = ManualRuntime::new();
/// let config = BreakerConfig::consecutive_failures(2).open_duration(Duration::from_secs(5)).build()?;
/// let breaker = Breaker::from_shared(SharedBreaker::new(config, rt.now()), rt.clone());
/// rt.block_on(async {
///     for _ in 0..2 {
///         let failed = breaker.call(async { Err::<(), _>("down") }).await;
///         assert!(matches!(failed, Err(BreakerError::Inner("down"))));
///     }
///     // Open: the next call is not made.
///     let rejected = breaker.call(async { Ok::<_, &str>(()) }).await;
///     assert!(matches!(rejected, Err(BreakerError::Rejected(_))));
/// });
/// assert_eq!(breaker.state(), State::Open);
/// # Ok::<(), keel_core::ConfigError>(())
/// ```
pub struct Breaker<R: Runtime> {
    shared: SharedBreaker,
    rt: R,
    hook: Option<Hook>,
    /// Which transitions are logged (shared by clones).
    reports: SharedReportLimiter,
    id: Instance<BreakerMetrics>,
}

impl<R: Runtime> Clone for Breaker<R> {
    fn clone(&self) -> Self {
        Breaker {
            shared: self.shared.clone(),
            rt: self.rt.clone(),
            hook: self.hook.clone(),
            reports: self.reports.clone(),
            id: self.id.clone(),
        }
    }
}

impl<R: Runtime> fmt::Debug for Breaker<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("name", self.id.name())
            .field("shared", &self.shared)
            .field("hook", &self.hook.is_some())
            .finish_non_exhaustive()
    }
}

/// The error of [`Breaker::call`]: the call was not made, or it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BreakerError<E> {
    /// The breaker did not admit the call; nothing was sent. `retry_at` says when it may.
    #[error("call not made: the circuit breaker is {} ({})", .0.reason, RetryAt(*.0))]
    Rejected(Rejected),
    /// The call was made and returned this error.
    #[error("call failed: {0}")]
    Inner(E),
    /// The call was made and ran past the timeout of [`Breaker::call_timeout`] (counted as a
    /// failure).
    #[error("call timed out: {0}")]
    TimedOut(Elapsed),
}

/// When (or on what) a rejected call may be retried, worded per state.
struct RetryAt(Rejected);

impl fmt::Display for RetryAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0.retry_at, self.0.reason) {
            (Some(t), _) => write!(f, "retry at {:?} on the runtime's clock", t.as_duration()),
            (None, State::ForcedOpen) => {
                f.write_str("forced open: it admits calls again only when reset or disabled by hand")
            }
            (None, State::HalfOpen) => f.write_str(
                "every half-open probe slot is taken: retry when the probes finish (they close or reopen it)",
            ),
            (None, _) => f.write_str("no retry instant known"),
        }
    }
}

impl<E> BreakerError<E> {
    /// The call's own error, if it was made.
    pub fn into_inner(self) -> Option<E> {
        match self {
            BreakerError::Inner(e) => Some(e),
            BreakerError::Rejected(_) | BreakerError::TimedOut(_) => None,
        }
    }

    /// The call's own error, if it was made.
    pub fn inner(&self) -> Option<&E> {
        match self {
            BreakerError::Inner(e) => Some(e),
            BreakerError::Rejected(_) | BreakerError::TimedOut(_) => None,
        }
    }

    /// `true` if the breaker refused the call.
    pub fn is_rejected(&self) -> bool {
        matches!(self, BreakerError::Rejected(_))
    }

    /// When the breaker may admit a call again, for a rejection that knows it.
    pub fn retry_at(&self) -> Option<Instant> {
        match self {
            BreakerError::Rejected(r) => r.retry_at,
            BreakerError::Inner(_) | BreakerError::TimedOut(_) => None,
        }
    }
}

impl<R: Runtime + Default> Breaker<R> {
    /// A closed breaker on the runtime `R::default()`.
    ///
    /// The config's jitter seed is mixed with OS randomness (as [`Retry`](super::retry::Retry)
    /// does), so breakers in processes that share a configuration and trip together do not
    /// all probe the dependency at the same instant. For a reproducible breaker, build the
    /// [`SharedBreaker`] yourself and use [`Breaker::from_shared`].
    #[must_use]
    pub fn new(config: BreakerConfig) -> Self {
        let rt = R::default();
        let now = rt.now();
        let config = config.with_seed(config.seed() ^ super::os_seed());
        Breaker::from_shared(SharedBreaker::new(config, now), rt)
    }
}

impl<R: Runtime> Breaker<R> {
    /// Wraps an existing shared breaker (e.g. one also driven by hand, or by another runtime).
    #[must_use]
    pub fn from_shared(shared: SharedBreaker, rt: R) -> Self {
        Breaker {
            shared,
            rt,
            hook: None,
            reports: SharedReportLimiter::new(DEFAULT_REPORT_INTERVAL, Instant::ZERO),
            id: Instance::new(),
        }
    }

    /// Names this breaker (default `"default"`; see [`Name`]): the `name` field of its log lines
    /// and the `name` label of its metrics. Applies to this handle and the clones made from it
    /// **after** this call: name it before cloning.
    #[must_use]
    pub fn named(mut self, name: impl Into<Name>) -> Self {
        self.id.rename(name.into());
        self
    }

    /// The instance name (see [`named`](Self::named)).
    #[must_use]
    pub fn name(&self) -> &Name {
        self.id.name()
    }

    /// Logs at most one transition per `interval` (default 1 s; zero logs every one) for this
    /// handle and the clones made from it **after** this call; the lines carry a `suppressed`
    /// count (see the [module docs](self)). The hook still sees every transition.
    #[must_use]
    pub fn report_interval(mut self, interval: Duration) -> Self {
        self.reports = SharedReportLimiter::new(interval, Instant::ZERO);
        self
    }

    /// Calls `hook` with every transition event this handle drains (after the lock is
    /// released). The hook belongs to the handle and is copied into clones made **after** it is
    /// set; set it before cloning. Events are drained by whichever handle reports next, so give
    /// every handle the same hook (or none).
    #[must_use]
    pub fn on_transition(mut self, hook: impl Fn(&BreakerEvent) + Send + Sync + 'static) -> Self {
        self.hook = Some(Arc::new(move |_: &Name, ev: &BreakerEvent| hook(ev)));
        self
    }

    /// As [`on_transition`](Self::on_transition), with the breaker's [`name`](Self::named)
    /// (one hook for several breakers can tell them apart).
    #[must_use]
    pub fn on_named_transition(
        mut self,
        hook: impl Fn(&Name, &BreakerEvent) + Send + Sync + 'static,
    ) -> Self {
        self.hook = Some(Arc::new(hook));
        self
    }

    /// Runs `fut` if the breaker admits it: `Ok` counts as a success, `Err` as a failure.
    ///
    /// Admission is asked at the first poll (as an `async fn` would); the returned [`Call`]
    /// holds `fut` once, in place.
    ///
    /// # Errors
    ///
    /// [`BreakerError::Rejected`] (nothing was run) or [`BreakerError::Inner`] (the future's
    /// error).
    pub fn call<T, E, F>(&self, fut: F) -> Call<'_, R, F, OkIsSuccess<T, E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        self.call_with(fut, ok_is_success)
    }

    /// Runs `fut` for at most `timeout` if the breaker admits it: `Ok` counts as a success,
    /// `Err` and an expired timeout as failures. This is the right way round: the timeout is
    /// inside the breaker, so a hanging dependency opens it (see the [module docs](self)).
    ///
    /// # Errors
    ///
    /// [`BreakerError::Rejected`] (nothing was run), [`BreakerError::TimedOut`] (the call ran
    /// past `timeout`; its future was dropped) or [`BreakerError::Inner`] (the future's error).
    pub fn call_timeout<T, E, F>(&self, timeout: Duration, fut: F) -> CallTimeout<'_, R, T, E, F>
    where
        F: Future<Output = Result<T, E>>,
    {
        CallTimeout {
            call: self.call_with(
                crate::driver::timeout(&self.rt, timeout, fut),
                timed_ok_is_success,
            ),
        }
    }

    /// Runs `fut` if the breaker admits it; `classify` decides what its result says about the
    /// dependency (e.g. [`Outcome::Ignored`] for a client error).
    ///
    /// # Errors
    ///
    /// [`BreakerError::Rejected`] (nothing was run) or [`BreakerError::Inner`] (the future's
    /// error).
    pub fn call_with<T, E, F, C>(&self, fut: F, classify: C) -> Call<'_, R, F, C>
    where
        F: Future<Output = Result<T, E>>,
        C: FnOnce(&Result<T, E>) -> Outcome,
    {
        Call {
            fut,
            classify: Some(classify),
            stage: Stage::Start,
            guard: Reported {
                breaker: self,
                permit: None,
            },
        }
    }

    /// Asks for admission at the runtime's `now` and drains the events it queued.
    fn admit(&self) -> Result<BreakerPermit, Rejected> {
        let admitted = self.shared.try_acquire(self.rt.now());
        self.drain();
        #[cfg(feature = "metrics")]
        if admitted.is_err() {
            self.metrics().rejected.increment(1);
        }
        admitted
    }

    /// The current state.
    #[must_use]
    pub fn state(&self) -> State {
        self.shared.state()
    }

    /// A snapshot of the counters.
    #[must_use]
    pub fn stats(&self) -> BreakerStats {
        self.shared.stats()
    }

    /// The transition log limiter's counters (this handle and its clones): `occurrences` are
    /// the transitions this handle drained, `reports` the lines logged, `suppressed` the ones
    /// folded into a later line's `suppressed` field.
    #[must_use]
    pub fn report_stats(&self) -> crate::report::ReportStats {
        self.reports.stats()
    }

    /// The shared machine: for `force_open`, `disable`, `reset`, or driving it by hand.
    #[must_use]
    pub fn shared(&self) -> &SharedBreaker {
        &self.shared
    }

    /// The runtime whose clock times the calls.
    #[must_use]
    pub fn runtime(&self) -> &R {
        &self.rt
    }

    fn drain(&self) {
        self.shared.drain_events(|ev| {
            log(&self.reports, self.id.name(), &ev);
            #[cfg(feature = "metrics")]
            #[allow(irrefutable_let_patterns)]
            if let BreakerEvent::Transition { to, .. } = ev {
                self.metrics().transition(to);
            }
            if let Some(hook) = &self.hook {
                hook(self.id.name(), &ev);
            }
        });
    }

    /// The registered series (at first use, with the state as it is then).
    #[cfg(feature = "metrics")]
    fn metrics(&self) -> &BreakerMetrics {
        self.id.series(|label| {
            let m = BreakerMetrics::register(label);
            m.state.set(crate::driver::metrics::breaker_state_value(
                self.shared.state(),
            ));
            m
        })
    }
}

/// Reports the permit exactly once: with the classified outcome, or, if dropped, through
/// `on_abandoned` (`Failure` past the abandon threshold, `Ignored` before).
struct Reported<'a, R: Runtime> {
    breaker: &'a Breaker<R>,
    permit: Option<BreakerPermit>,
}

impl<R: Runtime> Reported<'_, R> {
    fn report(&mut self, outcome: Outcome) {
        if let Some(permit) = self.permit.take() {
            let b = self.breaker;
            b.shared.on_outcome(b.rt.now(), permit, outcome);
            #[cfg(feature = "metrics")]
            b.metrics().outcome(outcome);
            b.drain();
        }
    }
}

impl<R: Runtime> Drop for Reported<'_, R> {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            let b = self.breaker;
            // A call abandoned after running past the threshold is a hanging dependency, not
            // a caller that lost interest: it counts, or an outer timeout hides the outage.
            let outcome = b.shared.on_abandoned(b.rt.now(), permit);
            #[cfg(feature = "metrics")]
            b.metrics().outcome(outcome);
            #[cfg(not(feature = "metrics"))]
            let _ = outcome;
            b.drain();
        }
    }
}

/// The classifier of [`Breaker::call`] (`Ok` is a success, `Err` a failure), as the type of
/// its [`Call`].
pub type OkIsSuccess<T, E> = fn(&Result<T, E>) -> Outcome;

/// The classifier of [`Breaker::call_timeout`] (`Ok` is a success, an error or an expiry a
/// failure), as the type of the [`Call`] inside its [`CallTimeout`].
pub type TimedOkIsSuccess<T, E> = fn(&Result<Result<T, E>, Elapsed>) -> Outcome;

/// [`Breaker::call`]'s classifier: `Ok` is a success, `Err` a failure.
fn ok_is_success<T, E>(r: &Result<T, E>) -> Outcome {
    match r {
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Failure,
    }
}

/// [`Breaker::call_timeout`]'s classifier: `Ok` is a success, an error or an expiry a failure.
fn timed_ok_is_success<T, E>(r: &Result<Result<T, E>, Elapsed>) -> Outcome {
    match r {
        Ok(Ok(_)) => Outcome::Success,
        Ok(Err(_)) | Err(_) => Outcome::Failure,
    }
}

/// Where a [`Call`] is.
#[derive(Debug)]
enum Stage {
    /// Not polled yet: admission is asked at the first poll.
    Start,
    /// Admitted: the permit is in the guard, the future runs.
    Running,
    /// Refused at the first poll (a poll after that returns the same rejection).
    Rejected(Rejected),
    /// The future finished and its outcome was reported.
    Finished,
}

pin_project_lite::pin_project! {
    /// The future of [`Breaker::call`] and [`Breaker::call_with`]: asks for admission at its
    /// first poll, runs the wrapped future, reports the classified outcome when it finishes,
    /// or (if dropped first) reports it as abandoned (see the [module docs](self)).
    ///
    /// It holds the wrapped future once, pinned in place, beside a handle reference, the
    /// classifier, the stage and the permit: about `size_of::<F>()` plus 70 bytes. (An
    /// `async fn` around it stored the future two or three times over.) A poll after it
    /// finished is handed to the wrapped future (nothing is reported again); a poll after a
    /// rejection answers the same rejection (the wrapped future never runs).
    #[must_use = "futures do nothing unless awaited"]
    pub struct Call<'a, R: Runtime, F, C> {
        #[pin]
        fut: F,
        classify: Option<C>,
        stage: Stage,
        guard: Reported<'a, R>,
    }
}

impl<R: Runtime, F, C> fmt::Debug for Call<'_, R, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("stage", &self.stage)
            .field("permit", &self.guard.permit)
            .finish_non_exhaustive()
    }
}

impl<R, F, C, T, E> Future for Call<'_, R, F, C>
where
    R: Runtime,
    F: Future<Output = Result<T, E>>,
    C: FnOnce(&Result<T, E>) -> Outcome,
{
    type Output = Result<T, BreakerError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match *this.stage {
            Stage::Start => match this.guard.breaker.admit() {
                Ok(permit) => {
                    this.guard.permit = Some(permit);
                    *this.stage = Stage::Running;
                }
                Err(r) => {
                    *this.stage = Stage::Rejected(r);
                    return Poll::Ready(Err(BreakerError::Rejected(r)));
                }
            },
            Stage::Running => {}
            Stage::Rejected(r) => return Poll::Ready(Err(BreakerError::Rejected(r))),
            // Polled again after it finished: the wrapped future decides what that means
            // (nothing more is reported).
            Stage::Finished => return this.fut.poll(cx).map(|r| r.map_err(BreakerError::Inner)),
        }
        let result = match this.fut.poll(cx) {
            Poll::Ready(result) => result,
            Poll::Pending => return Poll::Pending,
        };
        *this.stage = Stage::Finished;
        if let Some(classify) = this.classify.take() {
            this.guard.report(classify(&result));
        }
        Poll::Ready(result.map_err(BreakerError::Inner))
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Breaker::call_timeout`]: a [`Call`] around a
    /// [`Timeout`](crate::driver::Timeout) of the wrapped future, whose expiry is a failure
    /// and reads [`BreakerError::TimedOut`].
    #[must_use = "futures do nothing unless awaited"]
    pub struct CallTimeout<'a, R: Runtime, T, E, F> {
        #[pin]
        call: Call<'a, R, crate::driver::Timeout<R, F>, TimedOkIsSuccess<T, E>>,
    }
}

impl<R: Runtime, T, E, F> fmt::Debug for CallTimeout<'_, R, T, E, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallTimeout")
            .field("call", &self.call)
            .finish()
    }
}

impl<R, T, E, F> Future for CallTimeout<'_, R, T, E, F>
where
    R: Runtime,
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<T, BreakerError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().call.poll(cx).map(|r| match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(BreakerError::Inner(e)),
            Err(BreakerError::Inner(elapsed)) | Err(BreakerError::TimedOut(elapsed)) => {
                Err(BreakerError::TimedOut(elapsed))
            }
            Err(BreakerError::Rejected(r)) => Err(BreakerError::Rejected(r)),
        })
    }
}

/// Logs a transition if the handle's report limiter allows it (every transition counts as an
/// occurrence, with or without `tracing`, so the limiter's stats are the same).
fn log(reports: &SharedReportLimiter, name: &Name, ev: &BreakerEvent) {
    // `BreakerEvent` is non-exhaustive: other events are not logged here.
    #[allow(irrefutable_let_patterns)]
    if let BreakerEvent::Transition {
        from,
        to,
        reason,
        at,
    } = *ev
    {
        let report = reports.on_occurrence(at);
        #[cfg(feature = "tracing")]
        if let crate::report::Report::Emit { suppressed } = report {
            tracing::info!(
                target: "keel::breaker",
                name = name.as_str(),
                from = from.as_str(),
                to = to.as_str(),
                reason = reason.as_str(),
                suppressed,
                "circuit breaker transition",
            );
        }
        #[cfg(not(feature = "tracing"))]
        let _ = (report, name, from, to, reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn rejection_messages_say_what_ends_each_state() {
        let msg = |retry_at, state| {
            BreakerError::<&str>::Rejected(Rejected {
                retry_at,
                reason: state,
            })
            .to_string()
        };
        assert_eq!(
            msg(None, State::HalfOpen),
            "call not made: the circuit breaker is half-open (every half-open probe slot is taken: \
             retry when the probes finish (they close or reopen it))"
        );
        assert_eq!(
            msg(None, State::ForcedOpen),
            "call not made: the circuit breaker is forced-open (forced open: it admits calls again \
             only when reset or disabled by hand)"
        );
        assert_eq!(
            msg(Some(Instant::from_nanos(2_000_000_000)), State::Open),
            "call not made: the circuit breaker is open (retry at 2s on the runtime's clock)"
        );
    }
}
