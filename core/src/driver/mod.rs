//! The runtime-agnostic async driver (feature `futures`).
//!
//! The accept loop, the timer driving and the call/retry/wait futures are written **once**, here,
//! generic over two small traits that each adapter crate implements for its runtime:
//!
//! - [`Runtime`]: a clock (`now()`) and a resettable [`Timer`];
//! - [`Listener`]: `poll_accept` plus a best-effort, non-blocking `shed` for shed mode;
//! - [`Spawn`] (with its [`AbortHandle`]) and [`Signals`]: what [`serve`](serve::Server) needs to
//!   run one task per connection and to hear SIGINT/SIGTERM.
//!
//! An adapter holds only that glue: `keel-tokio` maps them onto `tokio::net` and `tokio::time`
//! (so `tokio::time::pause()` works in tests), `keel-smol` onto `async-io` (its
//! `keel_smol::async_io` module, which `keel-async-std` uses too). Each adapter then writes out,
//! in its `src/lib.rs`, the names it offers with its runtime filled in (`RateLimiter` for
//! [`rate::RateLimiter<R>`], `serve` for [`Server::new`] + `shutdown_on` + [`Server::serve`]...):
//! plain type aliases and functions, no macro.
//!
//! For tests, `keel-testkit`'s `ManualRuntime` implements them on a clock the test moves by
//! hand (as tokio's paused time or governor's `FakeRelativeClock`): every future of this module
//! runs on it in no wall-clock time.
//!
//! ```
//! use core::time::Duration;
//! use keel_core::driver::{self, Runtime as _};
//! use keel_core::time::Instant;
//! use keel_testkit::ManualRuntime;
//!
//! let rt = ManualRuntime::new();
//! assert_eq!(rt.now(), Instant::ZERO);
//! let slow = core::future::pending::<()>();
//! let timed_out = rt.block_on(driver::timeout(&rt, Duration::from_secs(30), slow));
//! assert!(timed_out.is_err());
//! assert_eq!(rt.now(), Instant::from_secs(30)); // the clock jumped to the deadline
//! ```

mod accept;
pub mod adaptive;
pub mod breaker;
pub mod bulkhead;
pub mod conn;
mod instance;
#[cfg(feature = "metrics")]
pub mod metrics;
mod name;
pub mod rate;
pub mod retry;
pub mod serve;

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

use crate::time::Instant;

pub use accept::{Accepted, GuardConfig, GuardConfigBuilder, Incoming, IncomingStats, Listener};
pub use conn::{lingering_close, read_line_bounded, Busy, BusyHandle, Conn, ConnIo, Line};
pub use name::Name;
pub use serve::{
    Draining, RequestStats, RequestTimeouts, ServeHandle, ServeReport, ServeStats, Server,
};

/// A timer that can be re-armed without allocating: the runtime's sleep future.
///
/// The driver keeps one per loop, resets it only when the deadline changes, and checks
/// `now >= deadline` itself before trusting it (a timer may fire early or late).
pub trait Timer: Send + Unpin {
    /// Re-arms the timer to fire at `deadline` (on the runtime's clock, see [`Runtime::now`]).
    fn reset(&mut self, deadline: Instant);
    /// `Ready` once the deadline has passed; registers the task's waker otherwise.
    fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> Poll<()>;
}

/// A runtime's clock and timers, as the driver needs them.
pub trait Runtime: Clone + Send + Sync + Unpin + 'static {
    /// The runtime's timer (e.g. `tokio::time::Sleep`, `async_io::Timer`).
    type Timer: Timer;
    /// Now, on the runtime's monotonic clock, as a keel [`Instant`].
    fn now(&self) -> Instant;
    /// A timer armed for `deadline`.
    fn timer(&self, deadline: Instant) -> Self::Timer;
}

/// Spawning tasks on a runtime, as [`Server`] needs it: one task per connection,
/// and a way to cancel the tasks still running when the drain deadline passes.
///
/// Contract for implementors:
///
/// - `spawn` starts `fut` as an independent task on the runtime and returns at once; it must not
///   poll `fut` on the caller's stack (the server calls it from inside its own `poll`).
/// - The returned [`AbortHandle`] **detaches** when dropped: the task runs on. Only
///   [`AbortHandle::abort`] cancels it.
///
/// keel-tokio: `tokio::spawn` and `JoinHandle::abort`. smol: keep the `Task` in the handle, drop
/// it in `abort`, call `Task::detach` in the handle's `Drop`. async-std: `task::spawn`, and
/// `abort` spawns `JoinHandle::cancel()` (or drops a `futures` `AbortHandle`).
pub trait Spawn: Runtime {
    /// The handle of a spawned task.
    type Handle: AbortHandle;
    /// Starts `fut` as a task of its own.
    fn spawn<F>(&self, fut: F) -> Self::Handle
    where
        F: Future<Output = ()> + Send + 'static;
}

/// Cancels a task started by [`Spawn::spawn`]. Dropping the handle detaches the task.
pub trait AbortHandle: Send + 'static {
    /// Cancels the task: it is not polled again and its future (with the connection it owns) is
    /// dropped, at once or at the runtime's next opportunity. A no-op if the task has ended.
    /// Must not block.
    fn abort(self);
}

/// A boxed, sendable future: what [`Signals::shutdown_signal`] returns.
pub type BoxFuture<T> = Pin<alloc::boxed::Box<dyn Future<Output = T> + Send + 'static>>;

/// The process's shutdown signals, as the runtime delivers them.
pub trait Signals {
    /// A future that resolves at the **next** SIGINT or SIGTERM (Ctrl-C on Windows) delivered
    /// after this call. The listeners must be registered by the time this returns, so a signal
    /// arriving before the first poll is not lost. If the signals cannot be listened to, log it
    /// and return a future that never resolves (the process keeps the default handling).
    fn shutdown_signal(&self) -> BoxFuture<()>;
}

/// A lazily created, reusable timer: armed only when a deadline is set, re-armed only when the
/// deadline changes.
pub(crate) struct Alarm<R: Runtime> {
    timer: Option<R::Timer>,
    armed_for: Option<Instant>,
}

impl<R: Runtime> Alarm<R> {
    pub(crate) const fn new() -> Self {
        Alarm {
            timer: None,
            armed_for: None,
        }
    }

    /// Polls until `deadline` (checking `now` first): `Ready` once the runtime's clock passed it.
    pub(crate) fn poll_until(
        &mut self,
        rt: &R,
        deadline: Instant,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        if rt.now() >= deadline {
            return Poll::Ready(());
        }
        let timer = match &mut self.timer {
            Some(t) => {
                if self.armed_for != Some(deadline) {
                    t.reset(deadline);
                }
                t
            }
            None => self.timer.insert(rt.timer(deadline)),
        };
        self.armed_for = Some(deadline);
        match timer.poll_elapsed(cx) {
            Poll::Pending => Poll::Pending,
            // Only the clock says the deadline has passed: a timer may fire early (coarse
            // timers, or a timer clock that runs ahead of `now`).
            Poll::Ready(()) if rt.now() >= deadline => Poll::Ready(()),
            Poll::Ready(()) => {
                timer.reset(deadline);
                if timer.poll_elapsed(cx).is_ready() {
                    // Early twice in a row: yield to the executor and come back, rather than
                    // spin inside this poll or return without a registered wake-up.
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            }
        }
    }
}

/// The future returned by [`Incoming::next`]: the next item of a stream.
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct Next<'a, S: ?Sized>(&'a mut S);

impl<'a, S: ?Sized> Next<'a, S> {
    pub(crate) fn new(stream: &'a mut S) -> Self {
        Next(stream)
    }
}

impl<S: futures_core::Stream + Unpin + ?Sized> Future for Next<'_, S> {
    type Output = Option<S::Item>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut *self.0).poll_next(cx)
    }
}

/// Sleeps until `deadline` on `rt`'s timer (returns at once if it has passed).
pub fn sleep_until<R: Runtime>(rt: &R, deadline: Instant) -> SleepUntil<R> {
    SleepUntil {
        rt: rt.clone(),
        deadline,
        alarm: Alarm::new(),
    }
}

/// Sleeps for `duration` on `rt`'s timer.
pub fn sleep<R: Runtime>(rt: &R, duration: core::time::Duration) -> SleepUntil<R> {
    let deadline = rt.now() + duration;
    sleep_until(rt, deadline)
}

/// The future returned by [`sleep_until`] and [`sleep`].
#[must_use = "futures do nothing unless awaited"]
pub struct SleepUntil<R: Runtime> {
    rt: R,
    deadline: Instant,
    alarm: Alarm<R>,
}

impl<R: Runtime> SleepUntil<R> {
    /// When it ends.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

impl<R: Runtime> core::fmt::Debug for SleepUntil<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SleepUntil")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> Future for SleepUntil<R> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        this.alarm.poll_until(&this.rt, this.deadline, cx)
    }
}

/// The error of [`timeout`]: the deadline passed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deadline elapsed at {deadline:?} before the operation finished: raise the timeout or find out why it is slow")]
pub struct Elapsed {
    /// The deadline that passed.
    pub deadline: Instant,
}

/// Runs `fut` until `deadline`; `Err(Elapsed)` if the deadline comes first. The future is
/// polled before the clock is checked, so an already-ready future always wins.
pub fn timeout_at<R: Runtime, F: Future>(rt: &R, deadline: Instant, fut: F) -> Timeout<R, F> {
    Timeout {
        fut: Some(fut),
        rt: rt.clone(),
        deadline: Deadline::At(deadline),
        alarm: Alarm::new(),
    }
}

/// Runs `fut` for at most `duration`, counted from the first poll (an `async fn`'s start).
pub fn timeout<R: Runtime, F: Future>(
    rt: &R,
    duration: core::time::Duration,
    fut: F,
) -> Timeout<R, F> {
    Timeout {
        fut: Some(fut),
        rt: rt.clone(),
        deadline: Deadline::In(duration),
        alarm: Alarm::new(),
    }
}

/// When a [`Timeout`] ends: a duration until its first poll fixes it, then an instant.
#[derive(Clone, Copy, Debug)]
enum Deadline {
    In(core::time::Duration),
    At(Instant),
}

pin_project_lite::pin_project! {
    /// The future returned by [`timeout`] and [`timeout_at`]: `fut`'s output, or [`Elapsed`]
    /// once the deadline passed first (`fut` is dropped then, at once; a poll after that
    /// answers the same `Elapsed`).
    ///
    /// It holds `fut` once, in place (about `size_of::<F>()` plus the runtime handle, the
    /// deadline and a timer slot), and arms the runtime's timer only if `fut` is still pending
    /// before the deadline.
    #[must_use = "futures do nothing unless awaited"]
    pub struct Timeout<R: Runtime, F> {
        #[pin]
        fut: Option<F>,
        rt: R,
        deadline: Deadline,
        alarm: Alarm<R>,
    }
}

impl<R: Runtime, F> Timeout<R, F> {
    /// The deadline, once the first poll fixed it (`None` before it for [`timeout`]).
    pub fn deadline(&self) -> Option<Instant> {
        match self.deadline {
            Deadline::At(at) => Some(at),
            Deadline::In(_) => None,
        }
    }
}

impl<R: Runtime, F> core::fmt::Debug for Timeout<R, F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Timeout")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime, F: Future> Future for Timeout<R, F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let deadline = match *this.deadline {
            Deadline::At(at) => at,
            Deadline::In(d) => {
                let at = this.rt.now() + d;
                *this.deadline = Deadline::At(at);
                at
            }
        };
        let Some(fut) = this.fut.as_mut().as_pin_mut() else {
            // The deadline won before (and `fut` was dropped): it still has.
            return Poll::Ready(Err(Elapsed { deadline }));
        };
        if let Poll::Ready(v) = fut.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        match this.alarm.poll_until(this.rt, deadline, cx) {
            Poll::Ready(()) => {
                // Dropped now, as the `async fn` this replaces dropped it on return: a
                // timed-out call stops at its deadline (and lets go of what it holds) before
                // the caller hears of the expiry.
                this.fut.set(None);
                Poll::Ready(Err(Elapsed { deadline }))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// 64 bits of per-call randomness from the OS (`getrandom`): the salt of retry and
/// breaker jitter seeds. Should the OS source fail, std's `RandomState` keys stand in (jitter
/// needs decorrelation, not secrecy).
pub(crate) fn os_seed() -> u64 {
    match crate::rng::os_seed() {
        Some(seed) => seed as u64 ^ (seed >> 64) as u64,
        None => {
            use core::hash::{BuildHasher as _, Hasher as _};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u8(0x72);
            h.finish()
        }
    }
}
