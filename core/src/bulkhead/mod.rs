//! Bulkhead: bounded concurrency with an optional bounded, time-limited wait queue.
//!
//! # What it protects against
//!
//! One slow dependency or one flood of requests taking every worker, connection or memory
//! budget a service has (seed 004: job floods, slow dependencies, pool starvation). A bulkhead
//! caps how many calls run at once; beyond the cap a call may wait in a short, bounded queue
//! for at most `max_wait`, and anything beyond that is **shed at once with a reason** instead
//! of piling up: an unbounded queue only turns overload into latency and then into memory
//! exhaustion.
//!
//! # The contract
//!
//! - [`FifoSemaphore::acquire`] returns [`Admission::Admitted`] with a [`BulkheadPermit`] while
//!   fewer than `max_concurrent` permits are out; otherwise [`Admission::Queued`] with the
//!   waiter's id and absolute deadline (`now + max_wait`) while the queue has room; otherwise
//!   [`Admission::Rejected`] with [`RejectReason::Full`] (no queue configured) or
//!   [`RejectReason::QueueFull`].
//! - [`FifoSemaphore::on_release`] returns a permit. If a waiter is queued, the **oldest live**
//!   one is promoted in the same call ([`Release::Promoted`]): waiters are FIFO.
//! - A waiter is never admitted at or after its deadline. [`FifoSemaphore::handle_timeout`] (and
//!   every other input, before it decides) expires waiters whose deadline has come:
//!   [`BulkheadEvent::Expired`], counted as shed with [`RejectReason::WaitedTooLong`].
//!   [`FifoSemaphore::poll_timeout`] is the earliest waiter deadline (`None` when it never comes).
//! - [`FifoSemaphore::on_cancel`] removes a waiter that gave up.
//! - In-flight counts never go negative, the queue never exceeds its bound, and no input
//!   panics: `now` is clamped and deadlines saturate. A deadline past the end of the clock
//!   (`max_wait = Duration::MAX`) is `None` in [`Admission::Queued`] and means the waiter
//!   waits for ever: it never expires and [`FifoSemaphore::poll_timeout`] never returns it.
//!
//! # Storage (no allocation)
//!
//! The wait queue is a fixed-capacity ring inside the machine: `FifoSemaphore<QUEUE>` holds room
//! for `QUEUE` waiters (and `QUEUE` pending events). `QUEUE` is storage, not policy: the queue
//! bound is the config's `max_queue`, and [`FifoSemaphore::new`] refuses a config whose
//! `max_queue` exceeds `QUEUE` with a [`ConfigError`] (a bulkhead built for 128 waiters in room
//! for none would otherwise shed every one of them). `FifoSemaphore` (`QUEUE = 0`, the default)
//! is the bulkhead without a queue. The shared, thread-safe form for async tasks is
//! `keel_core::sync::bulkhead::SharedBulkhead` (feature `std`), which sizes its queue from the
//! config at run time.
//!
//! Cancelling a waiter costs O(queue length); everything else is O(1).
//!
//! # Defaults
//!
//! From Resilience4j's `SemaphoreBulkhead`: `max_concurrent = 25` (`maxConcurrentCalls`) and no
//! waiting (`maxWaitDuration = 0`, here `max_queue = 0`). A queue needs a positive `max_wait`.
//!
//! # Example
//!
//! ```
//! use core::time::Duration;
//! use keel_core::bulkhead::{Admission, FifoSemaphore, BulkheadConfig, RejectReason, Release};
//! use keel_core::Instant;
//!
//! let config = BulkheadConfig::builder()
//!     .max_concurrent(1)
//!     .max_queue(1)
//!     .max_wait(Duration::from_millis(100))
//!     .build()?;
//! let t0 = Instant::from_secs(1);
//! let mut bh: FifoSemaphore<4> = FifoSemaphore::new(config, t0)?;
//!
//! let Admission::Admitted(permit) = bh.acquire(t0) else { unreachable!() };
//! let Admission::Queued { waiter, deadline } = bh.acquire(t0) else { unreachable!() };
//! assert_eq!(deadline, Some(t0 + Duration::from_millis(100)));
//! let Admission::Rejected(shed) = bh.acquire(t0) else { unreachable!() };
//! assert_eq!((shed.reason, shed.retry_at), (RejectReason::QueueFull, None));
//!
//! // The running call ends: the oldest waiter takes its slot.
//! match bh.on_release(t0 + Duration::from_millis(10), permit) {
//!     Release::Promoted { waiter: w, permit } => { assert_eq!(w, waiter); drop(permit) }
//!     Release::Freed => unreachable!(),
//! }
//! # Ok::<(), keel_core::ConfigError>(())
//! ```

use core::fmt;
use core::time::Duration;

mod engine;

use crate::error::ConfigError;
use crate::ring::EventRing;
use crate::time::Instant;
pub(crate) use engine::{Engine, WaitQueue};

/// Default `max_concurrent`: 25, Resilience4j's `maxConcurrentCalls`.
pub const DEFAULT_MAX_CONCURRENT: usize = 25;

/// A validated bulkhead configuration. Build it with [`BulkheadConfig::builder`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BulkheadConfig {
    max_concurrent: usize,
    max_queue: usize,
    max_wait: Duration,
}

impl BulkheadConfig {
    /// A builder starting from the defaults (25 concurrent calls, no queue).
    pub const fn builder() -> BulkheadConfigBuilder {
        BulkheadConfigBuilder {
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            max_queue: 0,
            max_wait: Duration::ZERO,
        }
    }

    /// Most calls running at once.
    #[must_use]
    pub const fn max_concurrent(&self) -> usize {
        self.max_concurrent
    }

    /// Most calls waiting for a slot (0: no queue, shed at once).
    #[must_use]
    pub const fn max_queue(&self) -> usize {
        self.max_queue
    }

    /// Longest a call may wait in the queue.
    #[must_use]
    pub const fn max_wait(&self) -> Duration {
        self.max_wait
    }
}

impl Default for BulkheadConfig {
    fn default() -> Self {
        BulkheadConfig {
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            max_queue: 0,
            max_wait: Duration::ZERO,
        }
    }
}

/// Builds a [`BulkheadConfig`].
#[derive(Clone, Copy, Debug)]
#[must_use]
pub struct BulkheadConfigBuilder {
    max_concurrent: usize,
    max_queue: usize,
    max_wait: Duration,
}

impl BulkheadConfigBuilder {
    /// Most calls running at once (default 25). Must be positive.
    pub const fn max_concurrent(mut self, n: usize) -> Self {
        self.max_concurrent = n;
        self
    }

    /// Most calls waiting for a slot (default 0: no queue, shed at once).
    pub const fn max_queue(mut self, n: usize) -> Self {
        self.max_queue = n;
        self
    }

    /// Longest a call may wait in the queue (default zero). Must be positive when
    /// `max_queue > 0`; `Duration::MAX` waits for ever.
    pub const fn max_wait(mut self, d: Duration) -> Self {
        self.max_wait = d;
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    ///
    /// - [`ConfigError::Zero`] for `max_concurrent == 0` (nothing could ever run).
    /// - [`ConfigError::Conflict`] for a queue with a zero `max_wait` (every waiter would be shed
    ///   the moment it queued).
    pub const fn build(self) -> Result<BulkheadConfig, ConfigError> {
        if self.max_concurrent == 0 {
            return Err(ConfigError::Zero {
                field: "max_concurrent",
            });
        }
        if self.max_queue > 0 && self.max_wait.is_zero() {
            return Err(ConfigError::Conflict {
                field: "max_queue",
                other: "max_wait",
                hint: "a wait queue needs a positive max_wait; use max_queue(0) to shed at once",
            });
        }
        Ok(BulkheadConfig {
            max_concurrent: self.max_concurrent,
            max_queue: self.max_queue,
            max_wait: self.max_wait,
        })
    }
}

/// Identifies one queued call. Ids are unique per machine and increase in arrival order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WaiterId(u64);

impl WaiterId {
    /// The sequence number (0 for the first waiter), for logs.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for WaiterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "waiter#{}", self.0)
    }
}

/// A slot in the bulkhead; hand it back with [`FifoSemaphore::on_release`]. Not `Clone`.
#[derive(Debug, PartialEq, Eq, Hash)]
#[must_use = "return the permit with `FifoSemaphore::on_release` when the call ends"]
pub struct BulkheadPermit {
    _private: (),
}

/// Why a call was shed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// Every slot is taken and there is no queue (or the caller asked not to wait).
    Full,
    /// Every slot is taken and the wait queue is full.
    QueueFull,
    /// The call waited `max_wait` without getting a slot.
    WaitedTooLong,
    /// An acquire future was polled again after it had resolved (a caller bug): the slot, if
    /// it got one, was handed over by the first `Ready`.
    AlreadyCompleted,
}

impl RejectReason {
    /// A short, stable name for logs and metrics labels.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            RejectReason::Full => "full",
            RejectReason::QueueFull => "queue_full",
            RejectReason::WaitedTooLong => "waited_too_long",
            RejectReason::AlreadyCompleted => "already_completed",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RejectReason::Full => {
                "bulkhead full: every slot is in use; raise max_concurrent or add a queue"
            }
            RejectReason::QueueFull => "bulkhead queue full: raise max_queue or max_concurrent",
            RejectReason::WaitedTooLong => {
                "waited max_wait for a bulkhead slot; raise max_wait or max_concurrent"
            }
            RejectReason::AlreadyCompleted => {
                "the bulkhead acquire future was polled after it completed; poll it until Ready only"
            }
        })
    }
}

/// A call was shed: the crate's one rejection shape, [`crate::Rejected`], whose `reason` says
/// why; `retry_at` is always `None` (a slot frees when some call ends, at no instant the
/// bulkhead knows).
pub type BulkheadRejected = crate::error::Rejected<RejectReason>;

/// A rejection for `reason`.
pub(crate) const fn rejected(reason: RejectReason) -> BulkheadRejected {
    BulkheadRejected {
        reason,
        retry_at: None,
    }
}

/// The answer to [`FifoSemaphore::acquire`].
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub enum Admission {
    /// Run the call now; return the permit when it ends.
    Admitted(BulkheadPermit),
    /// Wait: the call is queued. It is promoted by a later [`FifoSemaphore::on_release`], or expires
    /// at `deadline`.
    Queued {
        /// The waiter, for [`FifoSemaphore::on_cancel`] and the promotion.
        waiter: WaiterId,
        /// When the wait ends in [`RejectReason::WaitedTooLong`]; `None` when never (a
        /// `max_wait` that reaches the end of the clock).
        deadline: Option<Instant>,
    },
    /// Shed the call now: the same [`BulkheadRejected`] (`Rejected<RejectReason>`) that
    /// [`FifoSemaphore::try_acquire`] returns, so both admissions reject in one shape.
    Rejected(BulkheadRejected),
}

/// The answer to [`FifoSemaphore::on_release`].
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub enum Release {
    /// The slot is free; nobody was waiting.
    Freed,
    /// The slot went straight to the oldest live waiter: run its call with `permit`.
    Promoted {
        /// The waiter that now holds the slot.
        waiter: WaiterId,
        /// Its permit.
        permit: BulkheadPermit,
    },
}

/// A transition, for logs, metrics and sans-IO drivers. See [`FifoSemaphore::poll_event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BulkheadEvent {
    /// A waiter got a slot (also returned by [`FifoSemaphore::on_release`]).
    Promoted {
        /// The waiter.
        waiter: WaiterId,
    },
    /// A waiter reached its deadline and was shed ([`RejectReason::WaitedTooLong`]).
    Expired {
        /// The waiter.
        waiter: WaiterId,
    },
}

/// Counters since the machine was created. See [`FifoSemaphore::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct BulkheadStats {
    /// Permits issued (at once or by promotion).
    pub admitted: u64,
    /// Calls that had to wait in the queue.
    pub queued: u64,
    /// Waiters promoted to a slot (included in `admitted`).
    pub promoted: u64,
    /// Calls shed because every slot was taken and there was no queue.
    pub shed_full: u64,
    /// Calls shed because the queue was full.
    pub shed_queue_full: u64,
    /// Waiters shed because they waited `max_wait`.
    pub shed_timeout: u64,
    /// Waiters that gave up ([`FifoSemaphore::on_cancel`]).
    pub cancelled: u64,
    /// Permits out now.
    pub in_flight: usize,
    /// Waiters queued now.
    pub queue_len: usize,
    /// Most permits out at once.
    pub peak: usize,
    /// Most waiters queued at once.
    pub peak_queue: usize,
    /// Events dropped because [`FifoSemaphore::poll_event`] was not called often enough.
    pub events_dropped: u64,
}

impl BulkheadStats {
    /// All shed calls, whatever the reason.
    #[must_use]
    pub const fn shed(&self) -> u64 {
        self.shed_full
            .saturating_add(self.shed_queue_full)
            .saturating_add(self.shed_timeout)
    }
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    id: WaiterId,
    deadline: Instant,
}

const EMPTY_SLOT: Slot = Slot {
    id: WaiterId(0),
    deadline: Instant::ZERO,
};

/// A fixed ring of `N` waiters.
#[derive(Clone, Debug)]
struct Ring<const N: usize> {
    slots: [Slot; N],
    head: usize,
    len: usize,
}

impl<const N: usize> Ring<N> {
    const fn new() -> Self {
        Ring {
            slots: [EMPTY_SLOT; N],
            head: 0,
            len: 0,
        }
    }

    fn index(&self, offset: usize) -> usize {
        // `N > 0` whenever `len > 0`; `checked_rem` keeps N == 0 panic-free.
        self.head.wrapping_add(offset).checked_rem(N).unwrap_or(0)
    }

    fn get(&self, offset: usize) -> Option<Slot> {
        if offset >= self.len {
            return None;
        }
        self.slots.get(self.index(offset)).copied()
    }
}

impl<const N: usize> WaitQueue for Ring<N> {
    type Payload = ();
    /// The fixed ring is searched by id: `N` is a compile-time bound, the `&mut` form's
    /// queue is small by construction (the shared form's queue removes in O(1)).
    type Handle = WaiterId;

    fn len(&self) -> usize {
        self.len
    }

    fn front(&self) -> Option<(WaiterId, Instant)> {
        self.get(0).map(|s| (s.id, s.deadline))
    }

    fn push_back(&mut self, id: WaiterId, deadline: Instant, (): ()) -> Result<WaiterId, ()> {
        if self.len >= N {
            return Err(());
        }
        let i = self.index(self.len);
        let slot = self.slots.get_mut(i).ok_or(())?;
        *slot = Slot { id, deadline };
        self.len += 1;
        Ok(id)
    }

    fn pop_front(&mut self) -> Option<(WaiterId, WaiterId, ())> {
        let front = self.get(0)?;
        self.head = self.index(1);
        self.len -= 1;
        Some((front.id, front.id, ()))
    }

    fn remove(&mut self, id: WaiterId) -> Option<()> {
        let pos = (0..self.len).find(|&k| self.get(k).is_some_and(|s| s.id == id))?;
        for k in pos..self.len.saturating_sub(1) {
            let next = self.get(k + 1)?;
            let i = self.index(k);
            if let Some(slot) = self.slots.get_mut(i) {
                *slot = next;
            }
        }
        self.len -= 1;
        Some(())
    }
}

/// The bulkhead machine, with room for `QUEUE` waiters. See the [module docs](self).
///
/// | group | methods |
/// | --- | --- |
/// | construct | [`new`](Self::new) |
/// | admission | [`try_acquire`](Self::try_acquire) (never waits: a [`BulkheadPermit`] or a [`BulkheadRejected`]), [`acquire`](Self::acquire) (may queue: an [`Admission`]) |
/// | release (consumes the permit) | [`on_release`](Self::on_release) |
/// | other inputs | [`on_cancel`](Self::on_cancel) |
/// | timer | [`handle_timeout`](Self::handle_timeout), [`poll_timeout`](Self::poll_timeout) |
/// | outputs | [`poll_event`](Self::poll_event) |
/// | getters | [`stats`](Self::stats), [`in_flight`](Self::in_flight), [`queue_len`](Self::queue_len), [`queue_capacity`](Self::queue_capacity), [`config`](Self::config) |
///
/// After every input, drain [`poll_event`](Self::poll_event) (it holds at most `QUEUE` events
/// and drops the oldest beyond that, counted in [`BulkheadStats::events_dropped`]) and re-arm
/// the timer from [`poll_timeout`](Self::poll_timeout).
///
/// ```
/// use keel_core::bulkhead::{BulkheadConfig, FifoSemaphore, RejectReason};
/// use keel_core::time::Instant;
///
/// let now = Instant::ZERO;
/// let config = BulkheadConfig::builder().max_concurrent(1).max_queue(0).build()?;
/// let mut semaphore: FifoSemaphore = FifoSemaphore::new(config, now)?;
/// let permit = semaphore.try_acquire(now).expect("a free slot");
/// assert_eq!(semaphore.try_acquire(now).unwrap_err().reason, RejectReason::Full);
/// let _ = semaphore.on_release(now, permit);
/// assert!(semaphore.try_acquire(now).is_ok());
/// # Ok::<(), keel_core::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct FifoSemaphore<const QUEUE: usize = 0> {
    engine: Engine,
    queue: Ring<QUEUE>,
    events: EventRing<BulkheadEvent, QUEUE>,
}

impl<const QUEUE: usize> FifoSemaphore<QUEUE> {
    /// A bulkhead with every slot free, queueing up to `config.max_queue()` waiters in its
    /// room for `QUEUE`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::OutOfRange`] (field `max_queue`) when `config.max_queue()` exceeds
    /// `QUEUE`: declare `FifoSemaphore<N>` with `N >= max_queue`, or use the shared form,
    /// which sizes its queue at run time.
    ///
    /// ```
    /// use core::time::Duration;
    /// use keel_core::bulkhead::{BulkheadConfig, FifoSemaphore};
    /// use keel_core::{ConfigError, Instant};
    ///
    /// let config = BulkheadConfig::builder().max_queue(128).max_wait(Duration::from_secs(1)).build()?;
    /// // The default `FifoSemaphore` has room for no waiter: refused, not silently shedding.
    /// let refused = FifoSemaphore::<0>::new(config, Instant::ZERO).unwrap_err();
    /// assert!(matches!(refused, ConfigError::OutOfRange { field: "max_queue", .. }));
    /// assert!(FifoSemaphore::<128>::new(config, Instant::ZERO).is_ok());
    /// # Ok::<(), ConfigError>(())
    /// ```
    pub fn new(config: BulkheadConfig, now: Instant) -> Result<Self, ConfigError> {
        if config.max_queue() > QUEUE {
            return Err(ConfigError::OutOfRange {
                field: "max_queue",
                expected: "at most the FifoSemaphore's QUEUE (its room for waiters): declare \
                           FifoSemaphore<N> with N >= max_queue, or use \
                           sync::bulkhead::SharedBulkhead, sized at run time",
            });
        }
        Ok(FifoSemaphore {
            engine: Engine::new(config, QUEUE, now),
            queue: Ring::new(),
            events: EventRing::new(),
        })
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &BulkheadConfig {
        self.engine.config()
    }

    /// The queue bound: `config.max_queue()` (at most `QUEUE`, as [`new`](Self::new) checks).
    #[must_use]
    pub fn queue_capacity(&self) -> usize {
        self.engine.queue_bound()
    }

    /// Permits out now.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.engine.stats.in_flight
    }

    /// Waiters queued now (expired waiters leave at the next input).
    #[must_use]
    pub fn queue_len(&self) -> usize {
        self.queue.len
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> BulkheadStats {
        self.engine.stats(&self.queue)
    }

    /// A call wants a slot and may wait for one: admitted, queued or rejected (see
    /// [`Admission`]).
    pub fn acquire(&mut self, now: Instant) -> Admission {
        let now = self.expire(now);
        match self.engine.request(now, &mut self.queue, ()) {
            Ok(None) => Admission::Admitted(BulkheadPermit { _private: () }),
            Ok(Some((waiter, _, deadline))) => Admission::Queued {
                waiter,
                deadline: crate::time::never_at_the_end(deadline),
            },
            Err(reason) => Admission::Rejected(rejected(reason)),
        }
    }

    /// A call wants a slot but will not wait: admitted, or rejected with
    /// [`RejectReason::Full`] (and no `retry_at`: a slot frees when a call ends). Queued
    /// waiters keep their place (a free slot with waiters queued cannot happen: releases
    /// promote them).
    pub fn try_acquire(&mut self, now: Instant) -> Result<BulkheadPermit, BulkheadRejected> {
        let _ = self.expire(now);
        self.engine
            .try_admit(&self.queue)
            .map(|()| BulkheadPermit { _private: () })
            .map_err(rejected)
    }

    /// A call ended: its slot goes to the oldest waiter whose deadline has not come, if any.
    pub fn on_release(&mut self, now: Instant, permit: BulkheadPermit) -> Release {
        let _ = permit;
        let _ = self.expire(now);
        match self.engine.release(&mut self.queue) {
            Some((waiter, _, ())) => {
                self.push_event(BulkheadEvent::Promoted { waiter });
                Release::Promoted {
                    waiter,
                    permit: BulkheadPermit { _private: () },
                }
            }
            None => Release::Freed,
        }
    }

    /// A waiter gave up. Returns `true` if it was still queued (`false`: it was already
    /// promoted, expired or cancelled, or never existed).
    #[must_use]
    pub fn on_cancel(&mut self, now: Instant, waiter: WaiterId) -> bool {
        let _ = self.expire(now);
        self.engine.cancel(&mut self.queue, waiter).is_some()
    }

    /// Expires the waiters whose deadline is at or before `now`. Early calls are no-ops.
    pub fn handle_timeout(&mut self, now: Instant) {
        let _ = self.expire(now);
    }

    /// The earliest waiter deadline; `None` when nobody waits, or when the oldest waiter waits
    /// for ever (its deadline reached the end of the clock; deadlines are in FIFO order, so
    /// every later waiter's did too).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.queue
            .front()
            .and_then(|(_, deadline)| crate::time::never_at_the_end(deadline))
    }

    /// The next event, oldest first.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<BulkheadEvent> {
        self.events.pop()
    }

    fn expire(&mut self, now: Instant) -> Instant {
        let now = self.engine.observe(now);
        let FifoSemaphore {
            engine,
            queue,
            events,
        } = self;
        let mut dropped = 0u64;
        engine.expire(now, queue, |waiter, _, ()| {
            if events.push(BulkheadEvent::Expired { waiter }).is_some() {
                dropped += 1;
            }
        });
        engine.count_dropped_events(dropped);
        now
    }

    fn push_event(&mut self, ev: BulkheadEvent) {
        if self.events.push(ev).is_some() {
            self.engine.count_dropped_events(1);
        }
    }
}
