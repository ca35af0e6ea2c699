//! [`ManualRuntime`]: a deterministic keel runtime for tests, with a clock that only the test
//! moves.
//!
//! keel's futures ([`Breaker::call`](keel_core::driver::breaker::Breaker::call),
//! [`Retry::run`](keel_core::driver::retry::Retry::run),
//! [`RateLimiter::until_ready`](keel_core::driver::rate::RateLimiter::until_ready),
//! [`Bulkhead::run`](keel_core::driver::bulkhead::Bulkhead::run), [`Server`](keel_core::driver::Server))
//! are generic over keel-core's driver traits. `ManualRuntime` implements them
//! ([`Runtime`], [`Spawn`], [`Signals`]) on a simulated clock, as governor ships
//! `FakeRelativeClock` and tokio offers paused time:
//!
//! - **The clock** starts where you say ([`ManualRuntime::starting_at`], default
//!   [`Instant::ZERO`]) and moves only by [`advance`](ManualRuntime::advance) /
//!   [`advance_to`](ManualRuntime::advance_to), never backwards. Moving it wakes every timer
//!   whose deadline it reached.
//! - **Timers** ([`ManualTimer`]) fire when the clock reaches their deadline, or later if you
//!   ask for a coarse timer ([`with_timer_granularity`](ManualRuntime::with_timer_granularity),
//!   [`with_timer_lateness`](ManualRuntime::with_timer_lateness)), or at once whatever their
//!   deadline ([`with_early_timers`](ManualRuntime::with_early_timers)): the misbehaving timers a
//!   real runtime may have, to check that your code (and keel's) trusts only the clock.
//! - **An executor** on the calling thread: [`block_on`](ManualRuntime::block_on) runs a future
//!   and the tasks [spawned](Spawn::spawn) on the runtime; when all of them wait, it jumps the
//!   clock to the next timer (tokio's auto-advance), so an hour of backoff takes no time.
//!   [`run_until_idle`](ManualRuntime::run_until_idle) runs the spawned tasks without moving the
//!   clock, for tests that step time themselves.
//! - **Signals**: [`send_shutdown_signal`](ManualRuntime::send_shutdown_signal) resolves the
//!   futures from [`Signals::shutdown_signal`], as a SIGTERM would.
//!
//! Clones share one clock, one timer table and one task queue. There is deliberately no
//! `Default`: a runtime made by `R::default()` inside a keel type would have a clock nobody
//! holds. Build keel's types with the runtime you keep (`with_runtime`, `from_shared`).
//!
//! Everything is deterministic: the same test does the same polls in the same order on every
//! run (tasks run in the order they were woken; timers due at the same instant fire in the
//! order they were armed).
//!
//! # Example: a retry's backoff, without waiting for it
//!
//! ```
//! use std::time::Duration;
//! use keel_core::backoff::{BackoffConfig, Jitter};
//! use keel_core::driver::retry::Retry;
//! use keel_testkit::ManualRuntime;
//!
//! let rt = ManualRuntime::new();
//! let config = BackoffConfig::exponential(Duration::from_secs(1), Duration::from_secs(60))
//!     .jitter(Jitter::None)
//!     .max_attempts(4)
//!     .build()?;
//! let retry = Retry::with_runtime(config, rt.clone());
//! let mut calls = Vec::new();
//! let result = rt.block_on(retry.run(|| {
//!     calls.push(rt.now());
//!     async { Err::<(), _>("unavailable") }
//! }));
//! assert!(result.is_err());
//! let secs: Vec<u64> = calls.iter().map(|t| t.as_duration().as_secs()).collect();
//! assert_eq!(secs, [0, 1, 3, 7]); // 1 s, 2 s, 4 s apart, in no wall-clock time
//! # Ok::<(), keel_core::ConfigError>(())
//! ```
//!
//! # Example: stepping time by hand
//!
//! ```
//! use std::time::Duration;
//! use keel_core::driver::{self, Spawn as _};
//! use keel_testkit::ManualRuntime;
//!
//! let rt = ManualRuntime::new();
//! let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
//! let flag = done.clone();
//! let sleeper = rt.clone();
//! drop(rt.spawn(async move {
//!     driver::sleep(&sleeper, Duration::from_secs(10)).await;
//!     flag.store(true, std::sync::atomic::Ordering::SeqCst);
//! }));
//! rt.run_until_idle();
//! assert_eq!(rt.next_timer(), Some(rt.now() + Duration::from_secs(10)));
//! rt.advance(Duration::from_secs(9));
//! rt.run_until_idle();
//! assert!(!done.load(std::sync::atomic::Ordering::SeqCst));
//! rt.advance(Duration::from_secs(1));
//! rt.run_until_idle();
//! assert!(done.load(std::sync::atomic::Ordering::SeqCst));
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use keel_core::driver::{AbortHandle, BoxFuture, Runtime, Signals, Spawn, Timer};
use keel_core::time::Instant;

/// A deterministic runtime whose clock the test moves. See the [module docs](self).
#[derive(Clone)]
pub struct ManualRuntime {
    shared: Arc<Shared>,
}

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

struct Shared {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    now: Instant,
    /// How timers fire: see [`ManualRuntime::with_timer_granularity`] and friends.
    granularity: Duration,
    lateness: Duration,
    early: bool,
    /// Armed timers waiting for the clock: (fire instant, timer id) → the waker to wake.
    timers: BTreeMap<(Instant, u64), Waker>,
    next_timer: u64,
    /// Spawned tasks not currently being polled (a task being polled is taken out).
    tasks: HashMap<u64, Task>,
    /// Tasks that are alive (spawned, not finished, not aborted), polled or not.
    alive: std::collections::HashSet<u64>,
    /// Woken tasks in wake order, each at most once.
    ready: VecDeque<u64>,
    queued: std::collections::HashSet<u64>,
    next_task: u64,
    /// Shutdown signals sent so far, and the signal futures waiting for the next one.
    signals: u64,
    signal_waiters: Vec<Waker>,
}

impl State {
    /// When a timer armed for `deadline` fires on this runtime.
    fn fires_at(&self, deadline: Instant) -> Instant {
        let nanos = deadline.as_nanos();
        let step = u64::try_from(self.granularity.as_nanos()).unwrap_or(u64::MAX);
        let rounded = if step > 1 {
            nanos.div_ceil(step).saturating_mul(step)
        } else {
            nanos
        };
        Instant::from_nanos(rounded).saturating_add(self.lateness)
    }
}

impl fmt::Debug for ManualRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.lock();
        f.debug_struct("ManualRuntime")
            .field("now", &s.now)
            .field("armed_timers", &s.timers.len())
            .field("tasks", &s.alive.len())
            .finish_non_exhaustive()
    }
}

impl ManualRuntime {
    /// A runtime whose clock reads [`Instant::ZERO`], with exact timers and no tasks.
    // No `Default` on purpose (see the module docs): `R::default()` inside a keel type would
    // make a clock the test does not hold.
    #[allow(clippy::new_without_default)]
    #[must_use]
    pub fn new() -> Self {
        ManualRuntime::starting_at(Instant::ZERO)
    }

    /// A runtime whose clock reads `start`.
    #[must_use]
    pub fn starting_at(start: Instant) -> Self {
        ManualRuntime {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    now: start,
                    ..State::default()
                }),
            }),
        }
    }

    /// Timers fire at their deadline rounded **up** to a multiple of `granularity` (a timer
    /// wheel's tick: tokio's is 1 ms). Zero (the default): at the deadline exactly.
    #[must_use]
    pub fn with_timer_granularity(self, granularity: Duration) -> Self {
        self.lock().granularity = granularity;
        self
    }

    /// Timers fire `lateness` after their (rounded) deadline: a loaded runtime's late wake-up.
    #[must_use]
    pub fn with_timer_lateness(self, lateness: Duration) -> Self {
        self.lock().lateness = lateness;
        self
    }

    /// Every timer says it has fired as soon as it is polled, whatever its deadline (a timer
    /// whose clock runs ahead of [`Runtime::now`]). Code that trusts the timer over the clock
    /// ends its sleeps early on this runtime; keel's driver checks the clock and does not.
    #[must_use]
    pub fn with_early_timers(self) -> Self {
        self.lock().early = true;
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held (a failed assertion in a test) leaves a consistent
        // state: every critical section is a few plain field updates.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Now, on this runtime's clock.
    #[must_use]
    pub fn now(&self) -> Instant {
        self.lock().now
    }

    /// Moves the clock forward by `by` (saturating) and wakes the timers it reached. Tasks are
    /// not polled here: see [`run_until_idle`](Self::run_until_idle) and
    /// [`block_on`](Self::block_on).
    pub fn advance(&self, by: Duration) {
        let to = self.now().saturating_add(by);
        self.advance_to(to);
    }

    /// Moves the clock to `to` and wakes the timers it reached; a `to` before now is ignored
    /// (the clock never goes back).
    pub fn advance_to(&self, to: Instant) {
        let due = {
            let mut s = self.lock();
            if to <= s.now {
                // Timers armed for now or earlier fired when polled; nothing to wake.
                return;
            }
            s.now = to;
            let later = match to.checked_add(Duration::from_nanos(1)) {
                Some(after) => s.timers.split_off(&(after, 0)),
                None => BTreeMap::new(),
            };
            std::mem::replace(&mut s.timers, later)
        };
        for waker in due.into_values() {
            waker.wake();
        }
    }

    /// When the next armed timer fires, if any (after its granularity and lateness).
    #[must_use]
    pub fn next_timer(&self) -> Option<Instant> {
        self.lock().timers.keys().next().map(|&(at, _)| at)
    }

    /// How many timers are armed and waiting for the clock (polled, pending, not dropped).
    #[must_use]
    pub fn armed_timers(&self) -> usize {
        self.lock().timers.len()
    }

    /// How many spawned tasks are alive (not finished, not aborted).
    #[must_use]
    pub fn tasks(&self) -> usize {
        self.lock().alive.len()
    }

    /// Resolves every future from [`Signals::shutdown_signal`] created before this call, as
    /// a SIGTERM would (a [`Server`](keel_core::driver::Server) starts its drain; a second
    /// call stops it at once).
    pub fn send_shutdown_signal(&self) {
        let waiters = {
            let mut s = self.lock();
            s.signals = s.signals.saturating_add(1);
            std::mem::take(&mut s.signal_waiters)
        };
        for waker in waiters {
            waker.wake();
        }
    }

    /// Spawns `fut` as a task (as [`Spawn::spawn`] does) and returns a [`Join`]: a future that
    /// resolves to the task's output, to await in [`block_on`](Self::block_on) or in another
    /// task (tokio's `JoinHandle`). Dropping the `Join` detaches the task.
    pub fn spawn_joinable<T, F>(&self, fut: F) -> Join<T>
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let slot = Arc::new(Mutex::new(JoinSlot {
            output: None,
            waker: None,
        }));
        let out = Arc::clone(&slot);
        drop(self.spawn(async move {
            let v = fut.await;
            let waker = {
                let mut s = out.lock().unwrap_or_else(|p| p.into_inner());
                s.output = Some(v);
                s.waker.take()
            };
            if let Some(w) = waker {
                w.wake();
            }
        }));
        Join { slot }
    }

    /// Polls the spawned tasks that are ready, and those they wake, until none is ready;
    /// returns how many polls that took. The clock does not move.
    pub fn run_until_idle(&self) -> u64 {
        let mut polls = 0u64;
        while let Some(id) = self.pop_ready() {
            self.poll_task(id);
            polls = polls.saturating_add(1);
        }
        polls
    }

    /// Runs `fut` to completion on this thread, with the spawned tasks beside it; whenever
    /// everything waits, moves the clock to the next timer. Returns the future's output.
    ///
    /// The clock moves only when nothing is ready to run: a future that wakes itself on every
    /// poll (a `yield_now` loop waiting for a task that sleeps) keeps it still for ever. Wait
    /// for a task with [`spawn_joinable`](Self::spawn_joinable)'s [`Join`] instead.
    ///
    /// # Panics
    ///
    /// If everything waits and no timer is armed: nothing could ever wake the future (a
    /// deadlock in the test, e.g. waiting for a signal never sent). Panicking with that
    /// message beats hanging the test run.
    pub fn block_on<F: Future>(&self, fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        let main = Arc::new(MainWaker(AtomicBool::new(true)));
        let waker = Waker::from(Arc::clone(&main));
        let mut cx = Context::from_waker(&waker);
        loop {
            if main.0.swap(false, Ordering::SeqCst) {
                if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                    return out;
                }
            }
            // One round: the tasks ready now (a task that wakes itself runs again next round,
            // after the main future had its turn).
            let round = self.lock().ready.len();
            for _ in 0..round {
                match self.pop_ready() {
                    Some(id) => self.poll_task(id),
                    None => break,
                }
            }
            if main.0.load(Ordering::SeqCst) || !self.lock().ready.is_empty() {
                continue;
            }
            match self.next_timer() {
                Some(at) => self.advance_to(at),
                None => panic!(
                    "ManualRuntime::block_on: the future waits, no task is ready and no timer \
                     is armed, so nothing can ever wake it (at {:?}; {} tasks alive)",
                    self.now(),
                    self.tasks()
                ),
            }
        }
    }

    fn pop_ready(&self) -> Option<u64> {
        let mut s = self.lock();
        let id = s.ready.pop_front()?;
        s.queued.remove(&id);
        Some(id)
    }

    fn poll_task(&self, id: u64) {
        let Some(mut task) = self.lock().tasks.remove(&id) else {
            // Aborted, finished, or being polled further up this stack.
            return;
        };
        let waker = Waker::from(Arc::new(TaskWaker {
            id,
            shared: Arc::downgrade(&self.shared),
        }));
        let done = task
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_ready();
        let mut s = self.lock();
        if done || !s.alive.contains(&id) {
            s.alive.remove(&id);
            // Dropped outside the lock: the task's future may own keel handles whose drop
            // wakes other tasks.
            drop(s);
            drop(task);
        } else {
            s.tasks.insert(id, task);
        }
    }
}

/// A task's output, when it has one, and the waker of whoever awaits it.
struct JoinSlot<T> {
    output: Option<T>,
    waker: Option<Waker>,
}

/// The output of a task spawned by [`ManualRuntime::spawn_joinable`]: a future resolving when
/// the task ends. Dropping it detaches the task.
#[must_use = "futures do nothing unless awaited"]
pub struct Join<T> {
    slot: Arc<Mutex<JoinSlot<T>>>,
}

impl<T> fmt::Debug for Join<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Join").finish_non_exhaustive()
    }
}

impl<T> Future for Join<T> {
    type Output = T;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut s = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        match s.output.take() {
            Some(v) => Poll::Ready(v),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// Wakes `block_on`'s own future.
struct MainWaker(AtomicBool);

impl Wake for MainWaker {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Queues a spawned task to be polled (once, however often it is woken before its poll).
struct TaskWaker {
    id: u64,
    shared: Weak<Shared>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let mut s = shared.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.alive.contains(&self.id) && s.queued.insert(self.id) {
            s.ready.push_back(self.id);
        }
    }
}

impl Runtime for ManualRuntime {
    type Timer = ManualTimer;

    fn now(&self) -> Instant {
        ManualRuntime::now(self)
    }

    fn timer(&self, deadline: Instant) -> ManualTimer {
        let id = {
            let mut s = self.lock();
            s.next_timer = s.next_timer.wrapping_add(1);
            s.next_timer
        };
        ManualTimer {
            rt: self.clone(),
            id,
            deadline,
            registered: None,
        }
    }
}

/// A timer of [`ManualRuntime`]: ready once the runtime's clock reaches its deadline (see the
/// runtime's timer options); while pending, its waker is woken by the
/// [`advance`](ManualRuntime::advance) that reaches it.
pub struct ManualTimer {
    rt: ManualRuntime,
    id: u64,
    deadline: Instant,
    /// The key under which this timer's waker waits in the runtime's table.
    registered: Option<(Instant, u64)>,
}

impl fmt::Debug for ManualTimer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualTimer")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl ManualTimer {
    /// The deadline it is armed for.
    #[must_use]
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    fn unregister(&mut self, s: &mut State) {
        if let Some(key) = self.registered.take() {
            s.timers.remove(&key);
        }
    }
}

impl Timer for ManualTimer {
    fn reset(&mut self, deadline: Instant) {
        self.deadline = deadline;
        let rt = self.rt.clone();
        self.unregister(&mut rt.lock());
    }

    fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let rt = self.rt.clone();
        let mut s = rt.lock();
        self.unregister(&mut s);
        let at = s.fires_at(self.deadline);
        if s.early || s.now >= at {
            return Poll::Ready(());
        }
        s.timers.insert((at, self.id), cx.waker().clone());
        self.registered = Some((at, self.id));
        Poll::Pending
    }
}

impl Drop for ManualTimer {
    fn drop(&mut self) {
        if self.registered.is_some() {
            let rt = self.rt.clone();
            self.unregister(&mut rt.lock());
        }
    }
}

impl Spawn for ManualRuntime {
    type Handle = ManualTask;

    /// Queues `fut` as a task; it first runs in the next [`block_on`](Self::block_on) or
    /// [`run_until_idle`](Self::run_until_idle) (never on the caller's stack).
    fn spawn<F>(&self, fut: F) -> ManualTask
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut s = self.lock();
        s.next_task = s.next_task.wrapping_add(1);
        let id = s.next_task;
        s.tasks.insert(id, Box::pin(fut));
        s.alive.insert(id);
        s.queued.insert(id);
        s.ready.push_back(id);
        ManualTask {
            id,
            shared: Arc::downgrade(&self.shared),
        }
    }
}

/// A task spawned on a [`ManualRuntime`]: detached when dropped, cancelled by
/// [`AbortHandle::abort`].
#[derive(Debug)]
pub struct ManualTask {
    id: u64,
    shared: Weak<Shared>,
}

impl AbortHandle for ManualTask {
    /// Drops the task's future at once (or, if it is being polled, right after that poll).
    fn abort(self) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let task = {
            let mut s = shared.state.lock().unwrap_or_else(|p| p.into_inner());
            s.alive.remove(&self.id);
            s.tasks.remove(&self.id)
        };
        drop(task);
    }
}

impl Signals for ManualRuntime {
    /// Resolves at the next [`send_shutdown_signal`](ManualRuntime::send_shutdown_signal) after
    /// this call.
    fn shutdown_signal(&self) -> BoxFuture<()> {
        let rt = self.clone();
        let seen = self.lock().signals;
        Box::pin(std::future::poll_fn(move |cx| {
            let mut s = rt.lock();
            if s.signals > seen {
                Poll::Ready(())
            } else {
                if !s.signal_waiters.iter().any(|w| w.will_wake(cx.waker())) {
                    s.signal_waiters.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }))
    }
}
