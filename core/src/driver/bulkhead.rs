//! A bulkhead on a runtime: `bulkhead.run(fut)` bounds how many calls run at once.
//!
//! # What it protects against
//!
//! One slow dependency absorbing every task (and every connection, and all memory) of a
//! service. A bulkhead caps the calls in flight; callers beyond the cap wait in a bounded FIFO
//! queue for at most `max_wait`, and beyond either bound are shed at once with the reason
//! ([`RejectReason::Full`], [`RejectReason::QueueFull`], [`RejectReason::WaitedTooLong`]).
//!
//! # Contract
//!
//! - [`Bulkhead`] is `Clone`; every clone shares one [`SharedBulkhead`].
//! - [`Bulkhead::run`] acquires a slot (or queues), runs the future, and releases the slot when
//!   the future completes **or is dropped** (cancellation releases too, and a slot granted to a
//!   waiter that was dropped is passed on to the next).
//! - `max_wait` is enforced by the runtime's timer: the waiter is raced against a sleep until
//!   its deadline, then polled again with the new `now`, so the machine itself rejects it with
//!   `WaitedTooLong` (a waiter never gets a slot at or after its deadline).
//!
//! # Priorities
//!
//! [`Bulkhead::run_with`], [`Bulkhead::acquire_with`] and [`Bulkhead::try_acquire_with`] take
//! the call's [`Criticality`]: under pressure sheddable calls are shed first, and critical ones
//! keep the share the config reserves for them and are promoted first from the queue (see
//! [`crate::bulkhead`]). `run`, `acquire` and `try_acquire` are the same for
//! [`Criticality::Default`]. With [`QueueDiscipline::AdaptiveLifo`](crate::bulkhead::QueueDiscipline),
//! a standing queue's stale non-critical waiters are shed at the next input to the bulkhead
//! (any acquire or release), which a standing queue sees often, or at their own deadline.
//!
//! # tracing (feature `tracing`)
//!
//! Target `keel::bulkhead`, `debug` level: `"bulkhead rejected"` with fields `name` (the instance
//! name, [`Bulkhead::named`]), `reason` ([`RejectReason::as_str`]) and `class`
//! ([`Criticality::as_str`]).
//!
//! ```
//! use core::time::Duration;
//! use keel_core::bulkhead::{BulkheadConfig, RejectReason};
//! use keel_core::driver::bulkhead::Bulkhead;
//! use keel_core::time::Instant;
//! use keel_testkit::ManualRuntime; // a clock the test moves
//!
//! let config = BulkheadConfig::builder()
//!     .max_concurrent(1)
//!     .max_queue(1)
//!     .max_wait(Duration::from_secs(2))
//!     .build()?;
//! let rt = ManualRuntime::new();
//! let bulkhead = Bulkhead::with_runtime(config, rt.clone()); // keel_tokio::Bulkhead::new(config) on tokio
//! let held = bulkhead.try_acquire().expect("a free slot");
//! // The slot stays taken: `run` queues, and gives up at `max_wait` on the runtime's timer.
//! let rejected = rt.block_on(bulkhead.run(async { "never ran" })).unwrap_err();
//! assert_eq!(rejected.reason, RejectReason::WaitedTooLong);
//! assert_eq!(rt.now(), Instant::from_secs(2));
//! drop(held);
//! assert_eq!(rt.block_on(bulkhead.run(async { "ran" })), Ok("ran"));
//! # Ok::<(), keel_core::ConfigError>(())
//! ```

use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

use super::{Alarm, Name, Runtime};
use crate::bulkhead::{BulkheadConfig, BulkheadStats, Criticality, RejectReason};
use crate::driver::instance::{BulkheadMetrics, Instance};
use crate::sync::bulkhead::{
    Acquire, BulkheadGuard, BulkheadRejected, BulkheadWaiter, SharedBulkhead,
};

/// A bulkhead on a runtime; clones share one [`SharedBulkhead`]. See the [module docs](self).
///
/// ```
/// use keel_core::bulkhead::{BulkheadConfig, RejectReason};
/// use keel_core::driver::bulkhead::Bulkhead;
/// use keel_testkit::ManualRuntime; // keel_tokio::Bulkhead on tokio
///
/// let rt = ManualRuntime::new();
/// // One call at a time, nobody waits: a second concurrent call is refused at once.
/// let config = BulkheadConfig::builder().max_concurrent(1).max_queue(0).build()?;
/// let bulkhead = Bulkhead::with_runtime(config, rt.clone());
/// rt.block_on(async {
///     let held = bulkhead.acquire().await.expect("a free slot");
///     let refused = bulkhead.run(async { "work" }).await.unwrap_err();
///     assert_eq!(refused.reason, RejectReason::Full);
///     drop(held); // the slot is back
///     assert_eq!(bulkhead.run(async { "work" }).await.unwrap(), "work");
/// });
/// # Ok::<(), keel_core::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct Bulkhead<R: Runtime> {
    shared: SharedBulkhead,
    rt: R,
    id: Instance<BulkheadMetrics>,
}

impl<R: Runtime> fmt::Debug for Bulkhead<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bulkhead")
            .field("name", self.id.name())
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> Bulkhead<R> {
    /// A bulkhead with every slot free.
    #[must_use]
    pub fn new(config: BulkheadConfig) -> Self
    where
        R: Default,
    {
        Self::with_runtime(config, R::default())
    }

    /// A bulkhead on an explicit runtime handle.
    #[must_use]
    pub fn with_runtime(config: BulkheadConfig, rt: R) -> Self {
        let now = rt.now();
        Self::from_shared(SharedBulkhead::new(config, now), rt)
    }

    /// Wraps a shared bulkhead that other code also uses.
    #[must_use]
    pub fn from_shared(shared: SharedBulkhead, rt: R) -> Self {
        Bulkhead {
            shared,
            rt,
            id: Instance::new(),
        }
    }

    /// Names this bulkhead (default `"default"`; see [`Name`]): the `name` field of its log
    /// lines and the `name` label of its metrics. Applies to this handle and the clones made
    /// from it **after** this call.
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

    /// Counts an acquisition's result and sets the occupancy gauges (feature `metrics`); logs a
    /// rejection (feature `tracing`).
    fn observe(&self, r: Result<(), &BulkheadRejected>, class: Criticality) {
        #[cfg(feature = "metrics")]
        {
            let m = self.id.series(BulkheadMetrics::register);
            match r {
                Ok(_) => m.admitted.increment(1),
                Err(e) => m.rejected(e.reason),
            }
            m.occupancy(&self.shared.stats());
        }
        #[cfg(feature = "tracing")]
        if let Err(e) = r {
            tracing::debug!(
                target: "keel::bulkhead",
                name = self.id.name().as_str(),
                reason = e.reason.as_str(),
                class = class.as_str(),
                "bulkhead rejected"
            );
        }
        #[cfg(not(any(feature = "metrics", feature = "tracing")))]
        let _ = r;
        #[cfg(not(feature = "tracing"))]
        let _ = class;
    }

    /// The first request for a slot, at the runtime's `now` (`run`'s when the idle path
    /// refused, and `Acquiring`'s first poll): an answer is observed ([`observe`](Self::observe));
    /// a wait shows in the gauges.
    fn request(&self, class: Criticality) -> Acquire {
        let a = self.shared.acquire_with(self.rt.now(), class);
        match &a {
            Acquire::Ready(r) => self.observe(r.as_ref().map(|_| ()), class),
            // Queued: the gauges show it.
            Acquire::Wait(_) => self.released(),
        }
        a
    }

    /// Sets the occupancy gauges after a release or a queueing (feature `metrics`).
    pub(crate) fn released(&self) {
        #[cfg(feature = "metrics")]
        self.id
            .series(BulkheadMetrics::register)
            .occupancy(&self.shared.stats());
    }

    /// The shared bulkhead every clone uses.
    #[must_use]
    pub fn shared(&self) -> &SharedBulkhead {
        &self.shared
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> BulkheadConfig {
        self.shared.config()
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> BulkheadStats {
        self.shared.stats()
    }

    /// Takes a slot now or fails with `Full`; never waits, never jumps the queue.
    ///
    /// # Errors
    ///
    /// [`BulkheadRejected`] with [`RejectReason::Full`].
    pub fn try_acquire(&self) -> Result<BulkheadGuard, BulkheadRejected> {
        self.try_acquire_with(Criticality::Default)
    }

    /// [`try_acquire`](Self::try_acquire) for a call of `class`.
    ///
    /// # Errors
    ///
    /// [`BulkheadRejected`] with [`RejectReason::Full`], or [`RejectReason::Priority`] when the
    /// slots left are reserved for more important work.
    pub fn try_acquire_with(&self, class: Criticality) -> Result<BulkheadGuard, BulkheadRejected> {
        let r = self.shared.try_acquire_with(self.rt.now(), class);
        self.observe(r.as_ref().map(|_| ()), class);
        r
    }

    /// Takes a slot, waiting in the queue for at most `max_wait`. Lazy: nothing is requested
    /// until the first poll. Dropping the future cancels the wait.
    pub fn acquire(&self) -> Acquiring<R> {
        self.acquire_with(Criticality::Default)
    }

    /// [`acquire`](Self::acquire) for a call of `class`.
    pub fn acquire_with(&self, class: Criticality) -> Acquiring<R> {
        Acquiring {
            bulkhead: self.clone(),
            class,
            state: State::Start,
            alarm: Alarm::new(),
        }
    }

    /// Runs `fut` in a slot: acquires one (waiting at most `max_wait` in the bounded queue),
    /// runs the future, releases the slot when it completes or is dropped.
    ///
    /// The slot is asked for at the first poll; the returned [`Run`] holds `fut` once, in place.
    ///
    /// # Errors
    ///
    /// [`BulkheadRejected`] with the reason, without running `fut`.
    pub fn run<F: Future>(&self, fut: F) -> Run<'_, R, F> {
        self.run_with(Criticality::Default, fut)
    }

    /// [`run`](Self::run) for a call of `class`: shed before less important calls, promoted
    /// before them from the queue.
    ///
    /// ```
    /// use keel_core::bulkhead::{BulkheadConfig, Criticality, RejectReason};
    /// use keel_core::driver::bulkhead::Bulkhead;
    /// use keel_testkit::ManualRuntime;
    ///
    /// // Two slots; sheddable work may take only one of them (a 50 % headroom).
    /// let config = BulkheadConfig::builder()
    ///     .max_concurrent(2)
    ///     .sheddable_headroom_percent(50)
    ///     .build()?;
    /// let rt = ManualRuntime::new();
    /// let bulkhead = Bulkhead::with_runtime(config, rt.clone());
    /// let _batch = bulkhead.try_acquire_with(Criticality::Sheddable).expect("below the watermark");
    /// let refused = rt
    ///     .block_on(bulkhead.run_with(Criticality::Sheddable, async { "prefetch" }))
    ///     .unwrap_err();
    /// assert_eq!(refused.reason, RejectReason::Priority { class: Criticality::Sheddable });
    /// let served = rt.block_on(bulkhead.run_with(Criticality::Critical, async { "checkout" }));
    /// assert_eq!(served, Ok("checkout"));
    /// assert_eq!(bulkhead.stats().sheddable.shed, 1);
    /// # Ok::<(), keel_core::ConfigError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`BulkheadRejected`] with the reason, without running `fut`.
    pub fn run_with<F: Future>(&self, class: Criticality, fut: F) -> Run<'_, R, F> {
        Run {
            stage: RunStage::Start,
            fut,
            bulkhead: self,
            class,
            slot: Slot { shared: None },
        }
    }
}

/// Where a [`Run`] is.
enum RunStage<R: Runtime> {
    /// Not polled yet: the slot is asked for at the first poll.
    Start,
    /// Queued for a slot.
    Queued(Acquiring<R>),
    /// In a slot (held by the `Run`'s `slot`): the future runs.
    Running,
    /// Refused (a poll after that returns the same rejection).
    Rejected(BulkheadRejected),
    /// The future finished and the slot was released.
    Finished,
}

pin_project_lite::pin_project! {
    /// The future of [`Bulkhead::run`] and [`Bulkhead::run_with`]: takes a slot (queueing for
    /// at most `max_wait`), runs the wrapped future in it, releases the slot when the future
    /// completes or when this is dropped (a cancelled wait leaves the queue).
    ///
    /// It holds the wrapped future once, pinned in place, beside a handle reference, the
    /// class, the borrowed slot and (only while queued) the wait. A poll after it finished is
    /// handed to the wrapped future (no slot is taken again); a poll after a rejection answers
    /// the same rejection (the wrapped future never runs).
    #[must_use = "futures do nothing unless awaited"]
    pub struct Run<'a, R: Runtime, F> {
        // Dropped in this order: a queued wait leaves the queue before the wrapped future is
        // dropped (as the `async fn` did), and the slot is released after it.
        stage: RunStage<R>,
        #[pin]
        fut: F,
        bulkhead: &'a Bulkhead<R>,
        class: Criticality,
        slot: Slot<'a>,
    }
}

impl<R: Runtime, F> fmt::Debug for Run<'_, R, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stage = match &self.stage {
            RunStage::Start => "start",
            RunStage::Queued(_) => "queued",
            RunStage::Running => "running",
            RunStage::Rejected(_) => "rejected",
            RunStage::Finished => "finished",
        };
        f.debug_struct("Run")
            .field("class", &self.class)
            .field("stage", &stage)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime, F: Future> Future for Run<'_, R, F> {
    type Output = Result<F::Output, BulkheadRejected>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let b: &Bulkhead<R> = this.bulkhead;
        let class = *this.class;
        loop {
            let guard = match this.stage {
                RunStage::Start => {
                    // The first request is made here rather than through an `Acquiring` future,
                    // so a call that finds a free slot clones no handle (the `Acquiring` future
                    // owns one, to be `'static`); only a call that must queue builds one around
                    // its waiter. Uncontended (nobody queued, a slot free) it reads no clock
                    // either: the admission needs no time then (see
                    // `SharedBulkhead::admit_idle`). Otherwise `Acquiring`'s first request.
                    if b.shared.admit_idle(class) {
                        b.observe(Ok(()), class);
                        *this.slot = Slot::new(&b.shared);
                        *this.stage = RunStage::Running;
                        continue;
                    }
                    match b.request(class) {
                        Acquire::Ready(r) => r,
                        Acquire::Wait(w) => {
                            *this.stage = RunStage::Queued(Acquiring {
                                bulkhead: b.clone(),
                                class,
                                state: State::Waiting(w),
                                alarm: Alarm::new(),
                            });
                            continue;
                        }
                    }
                }
                RunStage::Queued(acquiring) => match Pin::new(acquiring).poll(cx) {
                    Poll::Ready(r) => r,
                    Poll::Pending => return Poll::Pending,
                },
                RunStage::Running => {
                    let out = match this.fut.poll(cx) {
                        Poll::Ready(out) => out,
                        Poll::Pending => return Poll::Pending,
                    };
                    this.slot.release(&b.rt);
                    b.released();
                    *this.stage = RunStage::Finished;
                    return Poll::Ready(Ok(out));
                }
                RunStage::Rejected(r) => return Poll::Ready(Err(*r)),
                // Polled again after it finished: the wrapped future decides what that means
                // (no slot is taken again).
                RunStage::Finished => return this.fut.poll(cx).map(Ok),
            };
            match guard {
                Ok(guard) => {
                    // One slot type for both paths: the borrowed one takes no reference count.
                    guard.disarm();
                    *this.slot = Slot::new(&b.shared);
                    *this.stage = RunStage::Running;
                }
                Err(r) => {
                    *this.stage = RunStage::Rejected(r);
                    return Poll::Ready(Err(r));
                }
            }
        }
    }
}

/// A slot `run` holds, borrowed from the bulkhead (no reference count taken or dropped).
/// Released when the future completes ([`release`](Self::release), at the runtime's `now` if
/// someone is queued) or, if the `run` future is dropped (or the future panics) first, on drop
/// at the newest time the bulkhead has seen, as a dropped [`BulkheadGuard`] is.
struct Slot<'a> {
    shared: Option<&'a SharedBulkhead>,
}

impl<'a> Slot<'a> {
    fn new(shared: &'a SharedBulkhead) -> Self {
        Slot {
            shared: Some(shared),
        }
    }

    /// Releases the slot: without a clock read when nobody is queued (the release needs no
    /// time then, see `SharedBulkhead::release_idle`), else at the runtime's `now`, which the
    /// hand-over to the next waiter (expiry, queue delay) is judged at.
    fn release<R: Runtime>(&mut self, rt: &R) {
        if let Some(shared) = self.shared.take() {
            if !shared.release_idle() {
                shared.release_slot(Some(rt.now()));
            }
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.release_slot(None);
        }
    }
}

enum State {
    Start,
    Waiting(BulkheadWaiter),
    Done,
}

/// The future of [`Bulkhead::acquire`]: resolves to the slot's guard or the reason it was
/// shed. `'static`; dropping it cancels the wait. Polled again after it resolved, it returns
/// `Err` with [`RejectReason::AlreadyCompleted`] (the slot, if any, was handed over already).
#[must_use = "futures do nothing unless awaited"]
pub struct Acquiring<R: Runtime> {
    bulkhead: Bulkhead<R>,
    class: Criticality,
    state: State,
    alarm: Alarm<R>,
}

impl<R: Runtime> fmt::Debug for Acquiring<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Start => "start",
            State::Waiting(_) => "waiting",
            State::Done => "done",
        };
        f.debug_struct("Acquiring")
            .field("class", &self.class)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

fn traced<R: Runtime>(
    bulkhead: &Bulkhead<R>,
    r: Result<BulkheadGuard, BulkheadRejected>,
    class: Criticality,
) -> Poll<Result<BulkheadGuard, BulkheadRejected>> {
    bulkhead.observe(r.as_ref().map(|_| ()), class);
    Poll::Ready(r)
}

impl<R: Runtime> Drop for Acquiring<R> {
    fn drop(&mut self) {
        // Dropped while queued: give up at the runtime's `now`, so a wait dropped after its
        // deadline counts as timed out (as the `&mut` form's `on_cancel`), not cancelled; the
        // gauges show the queue without it.
        if let State::Waiting(waiter) = core::mem::replace(&mut self.state, State::Done) {
            waiter.cancel(self.bulkhead.rt.now());
            self.bulkhead.released();
        }
    }
}

impl<R: Runtime> Future for Acquiring<R> {
    type Output = Result<BulkheadGuard, BulkheadRejected>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let rt = &this.bulkhead.rt;
        if let State::Start = this.state {
            match this.bulkhead.request(this.class) {
                Acquire::Ready(r) => {
                    this.state = State::Done;
                    return Poll::Ready(r);
                }
                Acquire::Wait(w) => this.state = State::Waiting(w),
            }
        }
        let State::Waiting(waiter) = &mut this.state else {
            // Polled after completion: the slot (if any) was handed over already. Say so,
            // rather than pend for ever with no waker.
            return Poll::Ready(Err(crate::bulkhead::rejected(
                RejectReason::AlreadyCompleted,
            )));
        };
        let polled = match waiter.poll(cx, rt.now()) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => match waiter.deadline() {
                Some(deadline) => match this.alarm.poll_until(rt, deadline, cx) {
                    // The deadline passed: with the new `now` the machine rejects (or hands
                    // over a slot granted just before; it never grants at or after the deadline).
                    Poll::Ready(()) => waiter.poll(cx, rt.now()),
                    Poll::Pending => Poll::Pending,
                },
                // It waits for ever: only a release wakes it.
                None => Poll::Pending,
            },
        };
        match polled {
            Poll::Ready(r) => {
                this.state = State::Done;
                traced(&this.bulkhead, r, this.class)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
