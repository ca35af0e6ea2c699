//! Rate limiters that wait on the runtime's timer: [`RateLimiter::until_ready`] and
//! [`KeyedRateLimiter::until_key_ready`].
//!
//! # What it protects against
//!
//! A caller that must not exceed a rate (an upstream's quota, a per-client fairness limit)
//! either polls in a loop (burning CPU) or sleeps a guessed amount (too long or too short).
//! These wait exactly until the limiter says the request conforms, on the runtime's own timer
//! (so `tokio::time::pause()` drives them in tests).
//!
//! # Contract
//!
//! - Waiting is **FIFO, by reservation, O(1) per admission** ([`crate::sync::rate_wait`] has
//!   the whole discipline): a waiter that finds the limiter spent (or others already waiting)
//!   joins a queue; the waiters at its head get slots reserved on the GCRA in advance and
//!   sleep on their own timers until their slot; an admission wakes only the next waiter that
//!   gets a slot (no herd: the old loop woke every waiter at the same `retry_at` to race for
//!   one token). A waiter woken late by a coarse timer keeps its slot, so no capacity is lost
//!   to timer granularity. A reservation is the admission, on the same GCRA as `check()`:
//!   waiters and direct callers together never exceed the quota.
//! - An uncontended `until_ready` with a token available is one plain check: no lock.
//! - Cancel-safe: dropping the future spends nothing; a slot reserved for it is handed to the
//!   next waiter in line, or given back to the GCRA when nobody else waits (unless an
//!   admission was decided on top of it since: then it is kept briefly for the next waiter
//!   and lapses). [`RateLimiter::wait_stats`] counts it all.
//! - Direct `check()` callers do not queue: they are limited by the same GCRA but are not
//!   ordered with the waiters. [`RateLimiter::until_n_ready`] keeps its place in line
//!   (head-of-line blocking rather than starving large batches).
//! - [`RateLimiter`] is `Clone`; every clone shares one counted [`SharedRateLimiter`] (one
//!   `AtomicU64`), lock-free except while a quota change ([`SharedRateLimiter::set_quota`])
//!   runs: checks spin until the change is done. [`KeyedRateLimiter`] shares one bounded
//!   [`SharedKeyedGcra`]: a table split into shards by the keys' seeded hash, each behind its
//!   own lock held only for one check, with one overflow limiter for all shards.
//! - A batch larger than the burst can never be admitted: [`RateLimiter::until_n_ready`] fails at
//!   once with [`RateLimited::InsufficientCapacity`] (`retry_at: None`) instead of waiting
//!   forever.
//! - The handles keep governor's names, `check()` / `check_n(n)` (the handle is named for its
//!   use, the machine for its mechanism: [`Gcra::try_acquire`](crate::rate::Gcra::try_acquire)),
//!   and return the machines' rejection, [`Rejected<RateLimited>`](Rejected) /
//!   [`Rejected<KeyedLimited>`](Rejected): `retry_at: Some(t)` to wait for, `None` for never.
//!
//! # tracing (feature `tracing`)
//!
//! Target `keel::rate`, `debug` level: `"rate limited; waiting"` with fields `name` (the
//! instance name, [`RateLimiter::named`]), `n` and
//! `retry_at_ns` (the waiter's slot) each time a waiter arms its timer for a new slot.
//!
//! ```
//! use core::num::NonZeroU32;
//! use keel_core::driver::rate::RateLimiter;
//! use keel_core::rate::Quota;
//! use keel_core::time::Instant;
//! use keel_testkit::ManualRuntime; // a clock the test moves
//!
//! let quota = Quota::per_second(NonZeroU32::new(2).unwrap())?;
//! let rt = ManualRuntime::new();
//! let limiter = RateLimiter::with_runtime(quota, rt.clone()); // keel_tokio::RateLimiter::new(quota) on tokio
//! let other = limiter.clone(); // shares the same budget
//! assert!(limiter.check().is_ok());
//! assert!(other.check().is_ok());
//! assert!(limiter.check().is_err());
//! rt.block_on(limiter.until_ready()).expect("a batch of 1 fits the burst");
//! assert_eq!(rt.now(), Instant::from_millis(500)); // slept until the next token, exactly
//! # Ok::<(), keel_core::ConfigError>(())
//! ```

use core::fmt;
use core::future::Future;
use core::hash::Hash;
use core::pin::Pin;
use core::task::{Context, Poll};
use std::sync::Arc;

use super::{Alarm, Name, Runtime};
use crate::driver::instance::{Instance, RateMetrics};
use crate::error::Rejected;
use crate::rate::keyed::{self, KeyedConfig, KeyedLimited};
use crate::rate::{Quota, RateLimited, RateStats};
use crate::sync::gcra::SharedRateLimiter;
use crate::sync::keyed::{KeyedEntry, SharedKeyedGcra};
use crate::sync::rate_wait::{self, RateWaiter, RateWaiters, WaitStats};
use crate::time::Instant;

/// A GCRA rate limiter on a runtime: `check()` on the runtime's clock and `until_ready()` on its
/// timer. Clones share one [`SharedRateLimiter`]: lock-free except while a quota change
/// ([`SharedRateLimiter::set_quota`]) runs (checks wait for it), and one FIFO of waiters
/// ([`RateWaiters`]). See the [module docs](self).
///
/// ```
/// use std::num::NonZeroU32;
/// use std::time::Duration;
/// use keel_core::driver::rate::RateLimiter;
/// use keel_core::rate::{Quota, RateLimited};
/// use keel_testkit::ManualRuntime; // a clock the test moves; keel_tokio::RateLimiter on tokio
///
/// let rt = ManualRuntime::new();
/// let start = rt.now();
/// let limiter = RateLimiter::with_runtime(Quota::per_second(NonZeroU32::new(2).unwrap())?, rt.clone());
/// assert!(limiter.check().is_ok()); // the burst: 2 at once
/// assert!(limiter.check().is_ok());
/// let limited = limiter.check().unwrap_err();
/// assert_eq!(limited.reason, RateLimited::OverRate);
/// assert_eq!(limited.retry_at, Some(start + Duration::from_millis(500))); // one per 500 ms
/// // Or wait for the next token on the runtime's timer (here: in no time).
/// rt.block_on(limiter.until_ready()).unwrap();
/// assert_eq!(rt.now(), start + Duration::from_millis(500));
/// # Ok::<(), keel_core::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct RateLimiter<R: Runtime> {
    shared: Arc<SharedRateLimiter>,
    waiters: RateWaiters,
    rt: R,
    id: Instance<RateMetrics>,
}

impl<R: Runtime> fmt::Debug for RateLimiter<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("name", self.id.name())
            .field("quota", &self.shared.quota())
            .field("stats", &self.shared.stats())
            .field("waiting", &self.waiters.stats().waiting)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> RateLimiter<R> {
    /// A limiter with its full burst available now.
    #[must_use]
    pub fn new(quota: Quota) -> Self
    where
        R: Default,
    {
        Self::with_runtime(quota, R::default())
    }

    /// A limiter on an explicit runtime handle.
    #[must_use]
    pub fn with_runtime(quota: Quota, rt: R) -> Self {
        let now = rt.now();
        Self::from_shared(Arc::new(SharedRateLimiter::counted(quota, now)), rt)
    }

    /// Wraps a shared limiter that other code (threads, other runtimes' tasks) also checks.
    ///
    /// The new limiter (and its clones) queue their waiters in a new FIFO: two limiters made
    /// by separate `from_shared` calls share the budget but not the queue (they never admit
    /// more than the budget together, but do not take turns with each other). Clone one
    /// limiter to share the queue.
    #[must_use]
    pub fn from_shared(shared: Arc<SharedRateLimiter>, rt: R) -> Self {
        RateLimiter {
            waiters: RateWaiters::new(Arc::clone(&shared)),
            shared,
            rt,
            id: Instance::new(),
        }
    }

    /// Names this limiter (default `"default"`; see [`Name`]): the `name` field of its log
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

    /// The registered series (at first use).
    #[cfg(feature = "metrics")]
    fn metrics(&self) -> &RateMetrics {
        self.id.series(RateMetrics::register)
    }

    /// The shared limiter every clone uses.
    #[must_use]
    pub fn shared(&self) -> &Arc<SharedRateLimiter> {
        &self.shared
    }

    /// The runtime handle.
    #[must_use]
    pub fn runtime(&self) -> &R {
        &self.rt
    }

    /// Admits one request now, or says when it would be admitted
    /// ([`SharedRateLimiter::try_acquire`] on the runtime's clock).
    ///
    /// # Errors
    ///
    /// [`RateLimited::OverRate`] with `retry_at: Some(..)`, the earliest instant the request
    /// would conform ([`Rejected::wait_from`] is the wait).
    #[inline]
    pub fn check(&self) -> Result<(), Rejected<RateLimited>> {
        let r = self.shared.try_acquire(self.rt.now());
        #[cfg(feature = "metrics")]
        self.metrics().record(&r);
        r
    }

    /// Admits `n` requests now (all or none).
    ///
    /// # Errors
    ///
    /// [`RateLimited::OverRate`] to retry at `retry_at`, [`RateLimited::InsufficientCapacity`]
    /// (`retry_at: None`) when `n` exceeds the burst.
    pub fn check_n(&self, n: u32) -> Result<(), Rejected<RateLimited>> {
        let r = self.shared.try_acquire_n(self.rt.now(), n);
        #[cfg(feature = "metrics")]
        self.metrics().record(&r);
        r
    }

    /// Waits in line until one request is admitted, and admits it (see the
    /// [module docs](self) for the discipline: FIFO, reserved slots, no herd).
    pub fn until_ready(&self) -> UntilReady<R> {
        self.until_n_ready(1)
    }

    /// Waits in line until a batch of `n` is admitted, and admits it. Resolves at once to
    /// [`RateLimited::InsufficientCapacity`] (`retry_at: None`) when `n` exceeds the burst (it
    /// would never be admitted).
    /// A batch keeps its place in the FIFO: smaller requests behind it wait for it.
    pub fn until_n_ready(&self, n: u32) -> UntilReady<R> {
        UntilReady {
            // The parts the wait uses, not a whole `RateLimiter` clone: the queue holds the
            // shared limiter already, so this is one reference count less to take and drop.
            waiters: self.waiters.clone(),
            rt: self.rt.clone(),
            id: self.id.clone(),
            n,
            waiter: None,
            alarm: Alarm::new(),
            done: None,
        }
    }

    /// Counters of the waiting queue (waiting now, admitted after waiting, cancelled, slots
    /// handed on or lapsed, wake-ups).
    #[must_use]
    pub fn wait_stats(&self) -> WaitStats {
        self.waiters.stats()
    }

    /// How many single requests would be admitted now.
    #[must_use]
    pub fn remaining(&self) -> u32 {
        self.shared.remaining(self.rt.now())
    }

    /// When the full burst is available again (now if it already is).
    #[must_use]
    pub fn reset_at(&self) -> Instant {
        self.shared.reset_at(self.rt.now())
    }

    /// The quota in force.
    #[must_use]
    pub fn quota(&self) -> Quota {
        self.shared.quota()
    }

    /// Switches to `quota` now (see [`SharedRateLimiter::set_quota`]).
    pub fn set_quota(&self, quota: Quota) {
        self.shared.set_quota(self.rt.now(), quota);
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> RateStats {
        self.shared.stats()
    }
}

/// The future of [`RateLimiter::until_ready`] and [`RateLimiter::until_n_ready`]: `'static`
/// (it holds a clone of the limiter), cancel-safe (dropped before it resolves, it spends
/// nothing: a slot reserved for it is handed on, see [`rate_wait`]). Polled again after it
/// resolved, it returns the same result again and spends nothing more.
#[must_use = "futures do nothing unless awaited"]
pub struct UntilReady<R: Runtime> {
    /// The limiter's queue (which holds the shared limiter), runtime and instance name.
    waiters: RateWaiters,
    rt: R,
    // Read only for the metrics series and the log lines.
    #[cfg_attr(not(any(feature = "metrics", feature = "tracing")), allow(dead_code))]
    id: Instance<RateMetrics>,
    n: u32,
    /// Its place in the queue, once it had to wait.
    waiter: Option<RateWaiter>,
    alarm: Alarm<R>,
    /// The result, once resolved.
    done: Option<Result<(), Rejected<RateLimited>>>,
}

impl<R: Runtime> fmt::Debug for UntilReady<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UntilReady")
            .field("n", &self.n)
            .field("armed_for", &self.alarm.armed_for)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> Future for UntilReady<R> {
    type Output = Result<(), Rejected<RateLimited>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(done) = this.done {
            return Poll::Ready(done);
        }
        let rt = &this.rt;
        loop {
            let waiter = match &mut this.waiter {
                Some(waiter) => waiter,
                None => match this.waiters.acquire(rt.now(), this.n) {
                    rate_wait::Acquire::Ready(r) => {
                        #[cfg(feature = "metrics")]
                        this.id.series(RateMetrics::register).record(&r);
                        this.done = Some(r);
                        return Poll::Ready(r);
                    }
                    rate_wait::Acquire::Wait(w) => {
                        // Made to wait: limited once, admitted (or not) when it resolves.
                        #[cfg(feature = "metrics")]
                        this.id.series(RateMetrics::register).limited.increment(1);
                        this.waiter.insert(w)
                    }
                },
            };
            if let Poll::Ready(r) = waiter.poll(cx, rt.now()) {
                #[cfg(feature = "metrics")]
                if r.is_ok() {
                    this.id.series(RateMetrics::register).allowed.increment(1);
                }
                this.done = Some(r);
                this.waiter = None;
                return Poll::Ready(r);
            }
            // No slot yet: the queue wakes this task when it gets one (and the first in line
            // polls again when the last slot handed out passes, see `RateWaiter::retry_at`).
            let Some(slot) = waiter.polled_slot().or(waiter.retry_at()) else {
                return Poll::Pending;
            };
            #[cfg(feature = "tracing")]
            if this.alarm.armed_for != Some(slot) {
                tracing::debug!(
                    target: "keel::rate",
                    name = this.id.name().as_str(),
                    n = this.n,
                    retry_at_ns = slot.as_nanos(),
                    "rate limited; waiting"
                );
            }
            // Ready only once the clock has passed the slot: the next poll then admits.
            if this.alarm.poll_until(rt, slot, cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

/// A keyed (per IP, per user) rate limiter on a runtime, with bounded memory (see
/// [`crate::rate::keyed`]). Clones share one [`SharedKeyedGcra`]: the table split into
/// shards, each behind its own lock held only for one check (see [`crate::sync::keyed`]).
///
/// ```
/// use std::num::NonZeroU32;
/// use keel_core::driver::rate::KeyedRateLimiter;
/// use keel_core::rate::keyed::{KeyedConfig, KeyedLimited};
/// use keel_core::rate::Quota;
/// use keel_testkit::ManualRuntime; // keel_tokio::KeyedRateLimiter on tokio
///
/// let rt = ManualRuntime::new();
/// let config = KeyedConfig::builder()
///     .quota(Quota::per_second(NonZeroU32::new(1).unwrap())?)
///     .max_keys(10_000) // memory is bounded by construction
///     .build()?;
/// let per_user = KeyedRateLimiter::<&str, _>::with_runtime(config, rt.clone());
/// assert!(per_user.check(&"alice").is_ok());
/// let limited = per_user.check(&"alice").unwrap_err();
/// assert_eq!(limited.reason, KeyedLimited::OverRate);
/// assert!(per_user.check(&"bob").is_ok()); // every key has its own budget
/// # Ok::<(), keel_core::ConfigError>(())
/// ```
pub struct KeyedRateLimiter<K, R: Runtime> {
    inner: Arc<SharedKeyedGcra<K>>,
    rt: R,
    id: Instance<RateMetrics>,
}

impl<K, R: Runtime> Clone for KeyedRateLimiter<K, R> {
    fn clone(&self) -> Self {
        KeyedRateLimiter {
            inner: Arc::clone(&self.inner),
            rt: self.rt.clone(),
            id: self.id.clone(),
        }
    }
}

impl<K, R: Runtime> fmt::Debug for KeyedRateLimiter<K, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimiter")
            .field("name", self.id.name())
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone, R: Runtime> KeyedRateLimiter<K, R> {
    /// A keyed limiter with every key fresh; all its memory is allocated here.
    #[must_use]
    pub fn new(config: KeyedConfig) -> Self
    where
        R: Default,
    {
        Self::with_runtime(config, R::default())
    }

    /// A keyed limiter on an explicit runtime handle.
    #[must_use]
    pub fn with_runtime(config: KeyedConfig, rt: R) -> Self {
        let now = rt.now();
        KeyedRateLimiter {
            inner: Arc::new(SharedKeyedGcra::new(config, now)),
            rt,
            id: Instance::new(),
        }
    }

    /// Names this limiter (default `"default"`; see [`Name`]): the `name` field of its log
    /// lines and the `name` label of its metrics (one series for the whole table, not one per
    /// key). Applies to this handle and the clones made from it **after** this call.
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

    /// The shared table (for its getters, e.g. [`SharedKeyedGcra::len`] and
    /// [`SharedKeyedGcra::memory_bytes`], or to decide on a clock of your own).
    #[must_use]
    pub fn shared(&self) -> &Arc<SharedKeyedGcra<K>> {
        &self.inner
    }

    /// Decides one request for `key` now, then runs `f` on a read-only view of the key
    /// ([`KeyedEntry`]: its quota, `remaining`, `reset_at`, the decision's `now`) and the
    /// decision under the key's shard lock (for an answer that reports the key's state with its
    /// decision, e.g. the IETF `RateLimit` fields). The decision is counted in the metrics as
    /// [`check`](Self::check)'s is.
    pub fn decide_with<T>(
        &self,
        key: &K,
        f: impl FnOnce(KeyedEntry<'_, K>, keyed::KeyedDecision) -> T,
    ) -> T {
        let now = self.rt.now();
        self.inner.decide_n_with(now, key, 1, |entry, decision| {
            #[cfg(feature = "metrics")]
            self.id
                .series(RateMetrics::register)
                .record(&decision.result);
            f(entry, decision)
        })
    }

    /// Switches every key to `quota` now ([`SharedKeyedGcra::set_quota`]: shard by shard,
    /// each key at one instant; the overflow limiter follows unless its quota was set).
    pub fn set_quota(&self, quota: Quota) {
        self.inner.set_quota(self.rt.now(), quota);
    }

    /// Switches the overflow limiter to `quota` now ([`SharedKeyedGcra::set_overflow_quota`]).
    pub fn set_overflow_quota(&self, quota: Quota) {
        self.inner.set_overflow_quota(self.rt.now(), quota);
    }

    /// Admits one request for `key` now ([`keyed::KeyedGcra::try_acquire`] on the runtime's
    /// clock).
    ///
    /// # Errors
    ///
    /// [`KeyedLimited::OverRate`] to retry at `retry_at`; [`KeyedLimited::TableFull`]
    /// (`retry_at: None`) when the table is full of active keys and the policy rejects new ones.
    pub fn check(&self, key: &K) -> Result<(), Rejected<KeyedLimited>> {
        let now = self.rt.now();
        let r = self.inner.try_acquire(now, key);
        #[cfg(feature = "metrics")]
        self.id.series(RateMetrics::register).record(&r);
        r
    }

    /// Admits `n` requests for `key` now (all or none).
    ///
    /// # Errors
    ///
    /// As [`check`](Self::check), plus [`KeyedLimited::InsufficientCapacity`] (`retry_at: None`).
    pub fn check_n(&self, key: &K, n: u32) -> Result<(), Rejected<KeyedLimited>> {
        let now = self.rt.now();
        let r = self.inner.try_acquire_n(now, key, n);
        #[cfg(feature = "metrics")]
        self.id.series(RateMetrics::register).record(&r);
        r
    }

    /// How many single requests `key` could make now.
    #[must_use]
    pub fn remaining(&self, key: &K) -> u32 {
        let now = self.rt.now();
        self.inner.remaining(now, key)
    }

    /// When `key`'s full burst is available again (now if it already is, or if the key is not
    /// tracked): [`KeyedGcra::reset_at`](keyed::KeyedGcra::reset_at) on the runtime's clock.
    #[must_use]
    pub fn reset_at(&self, key: &K) -> Instant {
        let now = self.rt.now();
        self.inner.reset_at(now, key)
    }

    /// The quota every key gets.
    #[must_use]
    pub fn quota(&self) -> Quota {
        self.inner.quota()
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> keyed::KeyedStats {
        self.inner.stats()
    }

    /// Waits until one request for `key` is admitted, and admits it. The check is the spend:
    /// the wait re-checks at the `retry_at` each rejection reports and sleeps again if it lost.
    /// Unlike [`RateLimiter::until_ready`] this wait is **not** queued: several waiters on one
    /// key wake at the same `retry_at` and race for it (one wins, the others sleep again), so
    /// it is neither FIFO nor O(1) per admission when many tasks wait on one key.
    ///
    /// # Errors
    ///
    /// [`KeyedLimited::TableFull`] at once (waiting would not free a slot for certain).
    pub async fn until_key_ready(&self, key: &K) -> Result<(), Rejected<KeyedLimited>> {
        self.until_key_n_ready(key, 1).await
    }

    /// Waits until a batch of `n` for `key` is admitted, and admits it.
    ///
    /// # Errors
    ///
    /// [`KeyedLimited::TableFull`] or [`KeyedLimited::InsufficientCapacity`], at once (every
    /// rejection with `retry_at: None`).
    pub async fn until_key_n_ready(&self, key: &K, n: u32) -> Result<(), Rejected<KeyedLimited>> {
        let mut alarm = Alarm::<R>::new();
        core::future::poll_fn(|cx| loop {
            let retry_at = match self.check_n(key, n) {
                Err(Rejected {
                    retry_at: Some(retry_at),
                    ..
                }) => retry_at,
                done => return Poll::Ready(done),
            };
            #[cfg(feature = "tracing")]
            if alarm.armed_for != Some(retry_at) {
                tracing::debug!(
                    target: "keel::rate",
                    name = self.id.name().as_str(),
                    n,
                    retry_at_ns = retry_at.as_nanos(),
                    "rate limited; waiting"
                );
            }
            if alarm.poll_until(&self.rt, retry_at, cx).is_pending() {
                return Poll::Pending;
            }
        })
        .await
    }
}
