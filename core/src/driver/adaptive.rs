//! An adaptive concurrency limit on a runtime: `limit.run(fut)` admits calls under a limit
//! that follows the service's capacity (see [`crate::adaptive`] for the controller).
//!
//! # What it protects against
//!
//! A fixed concurrency limit is a guess: too low wastes the service, too high lets a queue
//! build until every call times out. [`AdaptiveLimit`] is a [`Bulkhead`] whose
//! `max_concurrent` is moved by a [`SharedAdaptive`] fed one sample per call: the time from
//! the grant of the slot to its release (the RTT of the protected work, not the time spent
//! waiting for the slot), the outcome and the calls in flight.
//!
//! # Contract
//!
//! - [`AdaptiveLimit`] is `Clone`; every clone shares one machine and one bulkhead.
//! - [`AdaptiveLimit::acquire`] waits for a slot under the current limit in the bulkhead's
//!   bounded FIFO queue (at most its `max_wait`; with `max_queue(0)` a call over the limit is
//!   rejected at once, as Netflix's limiters do). Rejections are [`BulkheadRejected`].
//! - The [`AdaptivePermit`] it returns measures the RTT from the grant to its drop. Its outcome
//!   is [`SampleOutcome::Success`] unless the caller sets another
//!   ([`dropped`](AdaptivePermit::dropped), [`timed_out`](AdaptivePermit::timed_out),
//!   [`set_outcome`](AdaptivePermit::set_outcome)) or [`ignore`](AdaptivePermit::ignore)s it.
//! - [`AdaptiveLimit::run`] and [`run_classified`](AdaptiveLimit::run_classified) feed a sample
//!   when the future completes; **a call cancelled mid-way (its future dropped) feeds no
//!   sample**: the caller lost interest, which says nothing about the service (counting it as
//!   dropped would let cancelling clients cut the limit). It still releases its slot.
//! - The periodic minimum-RTT re-measurement needs no task of its own: it is due on the
//!   runtime's clock and started by the first sample at or after its due time (a
//!   re-measurement measures samples, so with no traffic there is nothing to do).
//! - [`AdaptiveLimit::drive_limit`] makes the same limit resize a [`SharedLimit`] too, e.g.
//!   the accept guard's (`incoming.limit()`).
//!
//! ```
//! use core::time::Duration;
//! use keel_core::adaptive::{AdaptiveConfig, SampleOutcome};
//! use keel_core::bulkhead::{BulkheadConfig, RejectReason};
//! use keel_core::driver::adaptive::AdaptiveLimit;
//! use keel_core::driver::Runtime as _;
//! use keel_testkit::ManualRuntime; // keel_tokio::AdaptiveLimit::new(..) on tokio
//!
//! let rt = ManualRuntime::new();
//! let config = AdaptiveConfig::builder().initial_limit(2).build()?;
//! let queue = BulkheadConfig::builder().max_queue(0).build()?; // over the limit: rejected
//! let limit = AdaptiveLimit::with_runtime(config, queue, rt.clone());
//! assert_eq!(limit.limit(), 2);
//! rt.block_on(async {
//!     let a = limit.acquire().await.expect("under the limit");
//!     let mut b = limit.acquire().await.expect("under the limit");
//!     let refused = limit.acquire().await.unwrap_err();
//!     assert_eq!(refused.reason, RejectReason::Full);
//!     b.set_outcome(SampleOutcome::Dropped); // the service shed it
//!     drop((a, b)); // two samples: a success and a drop
//!     assert_eq!(limit.run(async { "ran" }).await, Ok("ran"));
//! });
//! assert_eq!(limit.stats().samples, 3);
//! assert_eq!(limit.stats().dropped, 1);
//! # Ok::<(), keel_core::ConfigError>(())
//! ```

use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

use super::bulkhead::{Acquiring, Bulkhead};
use super::Runtime;
use crate::adaptive::{AdaptiveConfig, AdaptiveStats, SampleOutcome};
use crate::bulkhead::BulkheadConfig;
use crate::sync::adaptive::{InFlight, SharedAdaptive};
use crate::sync::bulkhead::{BulkheadGuard, BulkheadRejected, SharedBulkhead};
use crate::sync::limit::SharedLimit;

/// An adaptive concurrency limit on a runtime; clones share one state. See the
/// [module docs](self).
#[derive(Clone)]
pub struct AdaptiveLimit<R: Runtime> {
    adaptive: SharedAdaptive,
    bulkhead: Bulkhead<R>,
    rt: R,
}

impl<R: Runtime> fmt::Debug for AdaptiveLimit<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveLimit")
            .field("adaptive", &self.adaptive)
            .field("bulkhead", &self.bulkhead)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> AdaptiveLimit<R> {
    /// An adaptive limit starting at `config`'s initial limit. `queue` says how calls over the
    /// limit wait (`max_queue`, `max_wait`); its `max_concurrent` is replaced by the adaptive
    /// limit at once.
    #[must_use]
    pub fn new(config: AdaptiveConfig, queue: BulkheadConfig) -> Self
    where
        R: Default,
    {
        Self::with_runtime(config, queue, R::default())
    }

    /// [`new`](Self::new) on an explicit runtime handle.
    #[must_use]
    pub fn with_runtime(config: AdaptiveConfig, queue: BulkheadConfig, rt: R) -> Self {
        let now = rt.now();
        let adaptive = SharedAdaptive::new(config, now);
        Self::from_parts(adaptive, SharedBulkhead::new(queue, now), rt)
    }

    /// Wires an existing adaptive limit to an existing shared bulkhead (whose
    /// `max_concurrent` it resizes from now on), on `rt`.
    #[must_use]
    pub fn from_parts(adaptive: SharedAdaptive, bulkhead: SharedBulkhead, rt: R) -> Self {
        adaptive.drive_bulkhead(&bulkhead);
        let bulkhead = Bulkhead::from_shared(bulkhead, rt.clone());
        AdaptiveLimit {
            adaptive,
            bulkhead,
            rt,
        }
    }

    /// Names this limit (default `"default"`; see [`Name`](super::Name)): its bulkhead's log
    /// lines and metrics carry it. Applies to this handle and the clones made from it
    /// **after** this call.
    #[must_use]
    pub fn named(mut self, name: impl Into<super::Name>) -> Self {
        self.bulkhead = self.bulkhead.named(name);
        self
    }

    /// The instance name (see [`named`](Self::named)).
    #[must_use]
    pub fn name(&self) -> &super::Name {
        self.bulkhead.name()
    }

    /// The shared machine (samples, events, stats).
    #[must_use]
    pub fn adaptive(&self) -> &SharedAdaptive {
        &self.adaptive
    }

    /// The bulkhead that enforces the limit.
    #[must_use]
    pub fn bulkhead(&self) -> &Bulkhead<R> {
        &self.bulkhead
    }

    /// The limit enforced now.
    #[must_use]
    pub fn limit(&self) -> u32 {
        self.adaptive.limit()
    }

    /// The machine's counters and estimates.
    #[must_use]
    pub fn stats(&self) -> AdaptiveStats {
        self.adaptive.stats()
    }

    /// Makes the adaptive limit resize `limit` too (e.g. the accept guard's, `incoming.limit()`).
    pub fn drive_limit(&self, limit: &SharedLimit) {
        self.adaptive.drive_limit(limit);
    }

    /// Takes a slot now or fails with `Full`; never waits.
    ///
    /// # Errors
    ///
    /// [`BulkheadRejected`] with [`RejectReason::Full`](crate::bulkhead::RejectReason::Full).
    pub fn try_acquire(&self) -> Result<AdaptivePermit<R>, BulkheadRejected> {
        let guard = self.bulkhead.try_acquire()?;
        Ok(self.permit(guard))
    }

    /// Takes a slot under the current limit, waiting in the bounded queue for at most
    /// `max_wait`. Dropping the future cancels the wait.
    pub fn acquire(&self) -> AdaptiveAcquiring<R> {
        AdaptiveAcquiring {
            limit: self.clone(),
            acquiring: self.bulkhead.acquire(),
        }
    }

    fn permit(&self, guard: BulkheadGuard) -> AdaptivePermit<R> {
        let now = self.rt.now();
        AdaptivePermit {
            in_flight: Some(self.adaptive.start(now)),
            guard: Some(guard),
            outcome: Some(SampleOutcome::Success),
            limit: self.clone(),
        }
    }

    /// Runs `fut` in a slot and feeds a [`SampleOutcome::Success`] sample when it completes
    /// (none if it is cancelled).
    ///
    /// The slot is asked for at the first poll; the returned [`Run`] holds `fut` once, in place.
    ///
    /// # Errors
    ///
    /// [`BulkheadRejected`] with the reason, without running `fut`.
    pub fn run<F: Future>(&self, fut: F) -> Run<'_, R, F, AlwaysSuccess<F::Output>> {
        self.run_classified(fut, always_success)
    }

    /// Runs `fut` in a slot and feeds a sample with the outcome `classify` gives its output
    /// (e.g. [`SampleOutcome::Dropped`] for a `503` from the service), none if it is cancelled.
    ///
    /// # Errors
    ///
    /// [`BulkheadRejected`] with the reason, without running `fut`.
    pub fn run_classified<F, C>(&self, fut: F, classify: C) -> Run<'_, R, F, C>
    where
        F: Future,
        C: FnOnce(&F::Output) -> SampleOutcome,
    {
        Run {
            stage: RunStage::Start,
            fut,
            limit: self,
            classify: Some(classify),
            permit: None,
        }
    }

    /// Feeds a sample at the runtime's `now` and starts a due re-measurement.
    fn finish(&self, in_flight: InFlight, outcome: Option<SampleOutcome>) {
        let now = self.rt.now();
        match outcome {
            Some(outcome) => {
                let _ = in_flight.finish(now, outcome);
            }
            None => drop(in_flight),
        }
        if self.adaptive.poll_timeout().is_some_and(|due| due <= now) {
            let _ = self.adaptive.handle_timeout(now);
        }
    }
}

/// The future of [`AdaptiveLimit::acquire`]: resolves to a permit or the reason the call was
/// shed. Dropping it cancels the wait.
#[must_use = "futures do nothing unless awaited"]
pub struct AdaptiveAcquiring<R: Runtime> {
    limit: AdaptiveLimit<R>,
    acquiring: Acquiring<R>,
}

impl<R: Runtime> fmt::Debug for AdaptiveAcquiring<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveAcquiring")
            .field("acquiring", &self.acquiring)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> Future for AdaptiveAcquiring<R> {
    type Output = Result<AdaptivePermit<R>, BulkheadRejected>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match Pin::new(&mut this.acquiring).poll(cx) {
            Poll::Ready(Ok(guard)) => Poll::Ready(Ok(this.limit.permit(guard))),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The classifier of [`AdaptiveLimit::run`] (every completed call is a success), as the type
/// of its [`Run`].
pub type AlwaysSuccess<O> = fn(&O) -> SampleOutcome;

/// [`AdaptiveLimit::run`]'s classifier: every completed call is a success.
fn always_success<O>(_: &O) -> SampleOutcome {
    SampleOutcome::Success
}

/// Where a [`Run`] is.
enum RunStage<R: Runtime> {
    /// Not polled yet: the slot is asked for at the first poll.
    Start,
    /// Waiting for a slot.
    Acquiring(AdaptiveAcquiring<R>),
    /// In a slot (the `Run`'s `permit`): the future runs.
    Running,
    /// Refused (a poll after that returns the same rejection).
    Rejected(BulkheadRejected),
    /// The future finished, the sample was fed and the slot released.
    Finished,
}

pin_project_lite::pin_project! {
    /// The future of [`AdaptiveLimit::run`] and [`AdaptiveLimit::run_classified`]: takes a
    /// slot under the limit (queueing for at most `max_wait`), runs the wrapped future in it,
    /// then releases the slot and feeds the sample with the classified outcome. Dropped
    /// first, it releases the slot (or leaves the queue) and feeds no sample.
    ///
    /// It holds the wrapped future once, pinned in place, beside a handle reference, the
    /// classifier and the permit (or, while queued, the wait). A poll after it finished is
    /// handed to the wrapped future (no slot is taken, no sample fed again); a poll after a
    /// rejection answers the same rejection (the wrapped future never runs).
    #[must_use = "futures do nothing unless awaited"]
    pub struct Run<'a, R: Runtime, F, C> {
        // Dropped in this order: a wait leaves the queue before the wrapped future is dropped
        // (as the `async fn` did), and the permit (the slot, no sample: its outcome is `None`
        // until the future finishes) after it.
        stage: RunStage<R>,
        #[pin]
        fut: F,
        limit: &'a AdaptiveLimit<R>,
        classify: Option<C>,
        permit: Option<AdaptivePermit<R>>,
    }
}

impl<R: Runtime, F, C> fmt::Debug for Run<'_, R, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stage = match &self.stage {
            RunStage::Start => "start",
            RunStage::Acquiring(_) => "acquiring",
            RunStage::Running => "running",
            RunStage::Rejected(_) => "rejected",
            RunStage::Finished => "finished",
        };
        f.debug_struct("Run")
            .field("stage", &stage)
            .finish_non_exhaustive()
    }
}

impl<R, F, C> Future for Run<'_, R, F, C>
where
    R: Runtime,
    F: Future,
    C: FnOnce(&F::Output) -> SampleOutcome,
{
    type Output = Result<F::Output, BulkheadRejected>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.stage {
                RunStage::Start => *this.stage = RunStage::Acquiring(this.limit.acquire()),
                RunStage::Acquiring(acquiring) => match Pin::new(acquiring).poll(cx) {
                    Poll::Ready(Ok(mut permit)) => {
                        // Dropped with this future (a cancellation): no sample, the slot is
                        // released.
                        permit.outcome = None;
                        *this.permit = Some(permit);
                        *this.stage = RunStage::Running;
                    }
                    Poll::Ready(Err(r)) => {
                        *this.stage = RunStage::Rejected(r);
                        return Poll::Ready(Err(r));
                    }
                    Poll::Pending => return Poll::Pending,
                },
                RunStage::Running => {
                    let out = match this.fut.as_mut().poll(cx) {
                        Poll::Ready(out) => out,
                        Poll::Pending => return Poll::Pending,
                    };
                    *this.stage = RunStage::Finished;
                    if let Some(mut permit) = this.permit.take() {
                        if let Some(classify) = this.classify.take() {
                            permit.set_outcome(classify(&out));
                        }
                        // Dropped: the slot is released, the sample fed.
                        drop(permit);
                    }
                    return Poll::Ready(Ok(out));
                }
                RunStage::Rejected(r) => return Poll::Ready(Err(*r)),
                // Polled again after it finished: the wrapped future decides what that means
                // (no slot is taken again).
                RunStage::Finished => return this.fut.as_mut().poll(cx).map(Ok),
            }
        }
    }
}

/// A slot under the adaptive limit. Dropping it releases the slot and feeds the sample: the
/// time since the grant, with the outcome set here (default [`SampleOutcome::Success`]).
#[must_use = "the slot is released (and the sample fed) when the permit is dropped"]
pub struct AdaptivePermit<R: Runtime> {
    in_flight: Option<InFlight>,
    guard: Option<BulkheadGuard>,
    outcome: Option<SampleOutcome>,
    limit: AdaptiveLimit<R>,
}

impl<R: Runtime> fmt::Debug for AdaptivePermit<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptivePermit")
            .field("in_flight", &self.in_flight)
            .field("outcome", &self.outcome)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> AdaptivePermit<R> {
    /// The outcome the sample will carry (`None`: no sample).
    #[must_use]
    pub fn outcome(&self) -> Option<SampleOutcome> {
        self.outcome
    }

    /// Sets the outcome the sample will carry.
    pub fn set_outcome(&mut self, outcome: SampleOutcome) {
        self.outcome = Some(outcome);
    }

    /// The service shed the call (a `503`, a refused connection): the sample is
    /// [`SampleOutcome::Dropped`].
    pub fn dropped(&mut self) {
        self.set_outcome(SampleOutcome::Dropped);
    }

    /// The caller gave up waiting: the sample is [`SampleOutcome::TimedOut`].
    pub fn timed_out(&mut self) {
        self.set_outcome(SampleOutcome::TimedOut);
    }

    /// Feed no sample for this call (it says nothing about the service's capacity).
    pub fn ignore(&mut self) {
        self.outcome = None;
    }
}

impl<R: Runtime> Drop for AdaptivePermit<R> {
    fn drop(&mut self) {
        // The slot first: the sample may resize the bulkhead, and the slot should count as
        // free by then.
        if let Some(guard) = self.guard.take() {
            guard.release(self.limit.rt.now());
        }
        if let Some(in_flight) = self.in_flight.take() {
            self.limit.finish(in_flight, self.outcome);
        }
        // The occupancy gauges, as the bulkhead's own release sets them (after the sample,
        // which may have resized it): not left showing this slot until the next call.
        self.limit.bulkhead.released();
    }
}
