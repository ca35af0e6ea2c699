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
//!   one of the most important class queued is promoted in the same call
//!   ([`Release::Promoted`]): waiters are FIFO within a class (see *Priorities* and *Queue
//!   discipline* below).
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
//! # Priorities
//!
//! A call may carry a [`Criticality`] ([`FifoSemaphore::acquire_with`],
//! [`FifoSemaphore::try_acquire_with`]; `acquire`/`try_acquire` are [`Criticality::Default`]):
//! Google SRE's criticality (*Site Reliability Engineering*, ch. 21 "Handling Overload"), with the
//! lower watermark for sheddable work of Envoy's overload manager and Uber's Cinnamon. Under
//! pressure the least important class is shed first, and critical work keeps a reserved share:
//!
//! - **Class limits** ([`FifoSemaphore::class_limit`]): critical calls may take every slot;
//!   default calls all but `reserved_critical_percent` of them (default 0 %, so untagged traffic
//!   behaves as it always did); sheddable calls only those below the watermark
//!   `max_concurrent × (100 − sheddable_headroom_percent) / 100` (default headroom 20 %). Every
//!   class keeps at least one slot. A call refused at once while slots are left for more
//!   important work is shed with [`RejectReason::Priority`] naming its class (with a queue, it
//!   waits instead).
//! - **Promotion by class**: a freed slot goes to the most important class queued (if its limit
//!   allows); a call never runs ahead of a queued waiter of its own or a more important class,
//!   but may run ahead of less important waiters.
//! - **Push-out**: with the queue full, a call sheds the oldest waiter of the least important
//!   class below its own ([`BulkheadEvent::Shed`] with [`RejectReason::Priority`]) and takes
//!   its place; critical work is never shed for room while less important work is queued.
//! - Counters per class: [`BulkheadStats::critical`], [`default`](BulkheadStats::default),
//!   [`sheddable`](BulkheadStats::sheddable) (admitted, queued, shed).
//!
//! ```
//! use core::time::Duration;
//! use keel_core::bulkhead::{Admission, BulkheadConfig, BulkheadEvent, Criticality, FifoSemaphore, RejectReason};
//! use keel_core::Instant;
//!
//! let config = BulkheadConfig::builder()
//!     .max_concurrent(10)
//!     .reserved_critical_percent(20) // 2 slots only critical work may take
//!     .sheddable_headroom_percent(50) // sheddable work stops at 5 in flight
//!     .max_queue(1)
//!     .max_wait(Duration::from_millis(50))
//!     .build()?;
//! let now = Instant::ZERO;
//! let mut bh: FifoSemaphore<1> = FifoSemaphore::new(config, now)?;
//! assert_eq!(bh.class_limit(Criticality::Sheddable), 5);
//! let mut held = Vec::new();
//! for _ in 0..8 {
//!     held.push(bh.try_acquire(now).expect("default work: 8 slots"));
//! }
//! let refused = bh.try_acquire_with(now, Criticality::Sheddable).unwrap_err();
//! assert_eq!(refused.reason, RejectReason::Priority { class: Criticality::Sheddable });
//! // A sheddable call may wait; a critical one runs in the reserved share...
//! let Admission::Queued { waiter, .. } = bh.acquire_with(now, Criticality::Sheddable) else { unreachable!() };
//! assert!(matches!(bh.acquire_with(now, Criticality::Critical), Admission::Admitted(_)));
//! // ...and a default call, with the queue full, pushes the sheddable waiter out.
//! assert!(matches!(bh.acquire(now), Admission::Queued { .. }));
//! assert_eq!(
//!     bh.poll_event(),
//!     Some(BulkheadEvent::Shed { waiter, reason: RejectReason::Priority { class: Criticality::Sheddable } })
//! );
//! assert_eq!(bh.stats().sheddable.shed, 2);
//! # Ok::<(), keel_core::ConfigError>(())
//! ```
//!
//! # Queue discipline
//!
//! [`QueueDiscipline::Fifo`] (the default) or [`QueueDiscipline::AdaptiveLifo`]: Facebook's
//! adaptive LIFO with a CoDel queue-delay target (default 5 ms over a 100 ms interval). FIFO while
//! the queue is healthy; once CoDel finds it standing (every promotion over an interval waited at
//! least the target, and no slot freed with the queue empty), the newest waiter is promoted first
//! and non-critical waiters that have queued for the target are shed
//! ([`RejectReason::QueueDelay`]); [`FifoSemaphore::poll_timeout`] reports when the next one is
//! due. The details and sources are in [`QueueDiscipline`].
//!
//! # Storage (no allocation)
//!
//! The wait queue is a fixed-capacity ring per class inside the machine: `FifoSemaphore<QUEUE>`
//! holds room for `QUEUE` waiters in all (and `QUEUE` pending events). `QUEUE` is storage, not
//! policy: the queue bound is the config's `max_queue`, and [`FifoSemaphore::new`] refuses a
//! config whose `max_queue` exceeds `QUEUE` with a [`ConfigError`] (a bulkhead built for 128
//! waiters in room for none would otherwise shed every one of them). `FifoSemaphore` (`QUEUE =
//! 0`, the default) is the bulkhead without a queue. The shared, thread-safe form for async tasks is
//! `keel_core::sync::bulkhead::SharedBulkhead` (feature `std`), which sizes its queue from the
//! config at run time.
//!
//! Cancelling a waiter costs O(queue length); everything else is O(1).
//!
//! The limit may be changed at run time ([`FifoSemaphore::set_max_concurrent`], what an adaptive
//! controller drives; then [`FifoSemaphore::promote`] fills new room from the queue).
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

mod codel;
mod engine;

use crate::error::ConfigError;
use crate::ring::EventRing;
use crate::time::Instant;
pub use codel::{Criticality, QueueDiscipline, DEFAULT_CODEL_INTERVAL, DEFAULT_CODEL_TARGET};
pub(crate) use engine::{Engine, WaitQueue, Waiting};

/// Default [`BulkheadConfigBuilder::reserved_critical_percent`]: 0, so a bulkhead whose callers
/// never name a class keeps every slot for them (behaviour unchanged).
pub const DEFAULT_RESERVED_CRITICAL_PERCENT: u8 = 0;
/// Default [`BulkheadConfigBuilder::sheddable_headroom_percent`]: 20 (sheddable work runs
/// only while fewer than 80 % of the slots are taken). It binds only calls tagged
/// [`Criticality::Sheddable`].
pub const DEFAULT_SHEDDABLE_HEADROOM_PERCENT: u8 = 20;

/// Default `max_concurrent`: 25, Resilience4j's `maxConcurrentCalls`.
pub const DEFAULT_MAX_CONCURRENT: usize = 25;

/// A validated bulkhead configuration. Build it with [`BulkheadConfig::builder`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BulkheadConfig {
    max_concurrent: usize,
    max_queue: usize,
    max_wait: Duration,
    reserved_critical_percent: u8,
    sheddable_headroom_percent: u8,
    queue_discipline: QueueDiscipline,
}

impl BulkheadConfig {
    /// A builder starting from the defaults (25 concurrent calls, no queue).
    pub const fn builder() -> BulkheadConfigBuilder {
        BulkheadConfigBuilder {
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            max_queue: 0,
            max_wait: Duration::ZERO,
            reserved_critical_percent: DEFAULT_RESERVED_CRITICAL_PERCENT,
            sheddable_headroom_percent: DEFAULT_SHEDDABLE_HEADROOM_PERCENT,
            queue_discipline: QueueDiscipline::Fifo,
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

    /// The share of the slots only [`Criticality::Critical`] calls may take, in percent.
    #[must_use]
    pub const fn reserved_critical_percent(&self) -> u8 {
        self.reserved_critical_percent
    }

    /// The share of the slots [`Criticality::Sheddable`] calls may not take, in percent.
    #[must_use]
    pub const fn sheddable_headroom_percent(&self) -> u8 {
        self.sheddable_headroom_percent
    }

    /// The order the queue is served in.
    #[must_use]
    pub const fn queue_discipline(&self) -> QueueDiscipline {
        self.queue_discipline
    }
}

impl Default for BulkheadConfig {
    fn default() -> Self {
        BulkheadConfig {
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            max_queue: 0,
            max_wait: Duration::ZERO,
            reserved_critical_percent: DEFAULT_RESERVED_CRITICAL_PERCENT,
            sheddable_headroom_percent: DEFAULT_SHEDDABLE_HEADROOM_PERCENT,
            queue_discipline: QueueDiscipline::Fifo,
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
    reserved_critical_percent: u8,
    sheddable_headroom_percent: u8,
    queue_discipline: QueueDiscipline,
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

    /// The share of the slots, in percent of `max_concurrent` (rounded down), that only
    /// [`Criticality::Critical`] calls may take: default work stops at `max_concurrent -
    /// reserved` (at least one slot). Default 0 ([`DEFAULT_RESERVED_CRITICAL_PERCENT`]); must be
    /// below 100. Google SRE's criticality and Netflix concurrency-limits' partitions reserve
    /// capacity for the traffic that matters most; how much is the service's to say (the
    /// `adaptive-sim` priorities scenario uses 10).
    pub const fn reserved_critical_percent(mut self, percent: u8) -> Self {
        self.reserved_critical_percent = percent;
        self
    }

    /// The share of the slots, in percent of `max_concurrent`, that [`Criticality::Sheddable`]
    /// calls may not take: they run only while fewer than `max_concurrent × (100 − headroom) /
    /// 100` (rounded down, at least 1, at most default work's share) slots are taken, so
    /// sheddable work is the first shed as load rises (the lower watermark of Envoy's overload
    /// manager and Uber Cinnamon's priority shedding). Default 20
    /// ([`DEFAULT_SHEDDABLE_HEADROOM_PERCENT`]); must be below 100.
    pub const fn sheddable_headroom_percent(mut self, percent: u8) -> Self {
        self.sheddable_headroom_percent = percent;
        self
    }

    /// The order the queue is served in (default [`QueueDiscipline::Fifo`]); see
    /// [`QueueDiscipline::AdaptiveLifo`] for Facebook's adaptive LIFO with CoDel.
    pub const fn queue_discipline(mut self, discipline: QueueDiscipline) -> Self {
        self.queue_discipline = discipline;
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    ///
    /// - [`ConfigError::Zero`] for `max_concurrent == 0` (nothing could ever run).
    /// - [`ConfigError::Conflict`] for a queue with a zero `max_wait` (every waiter would be shed
    ///   the moment it queued), and for [`QueueDiscipline::AdaptiveLifo`] without a queue.
    /// - [`ConfigError::OutOfRange`] for `reserved_critical_percent` or
    ///   `sheddable_headroom_percent` of 100 or more.
    /// - [`ConfigError::Zero`] for a zero CoDel `target` or `interval`, and
    ///   [`ConfigError::InvertedRange`] for a `target` above the `interval`.
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
        if self.reserved_critical_percent >= 100 {
            return Err(ConfigError::OutOfRange {
                field: "reserved_critical_percent",
                expected: "a percentage below 100 (default work needs a share of the slots)",
            });
        }
        if self.sheddable_headroom_percent >= 100 {
            return Err(ConfigError::OutOfRange {
                field: "sheddable_headroom_percent",
                expected: "a percentage below 100",
            });
        }
        if let QueueDiscipline::AdaptiveLifo { target, interval } = self.queue_discipline {
            if self.max_queue == 0 {
                return Err(ConfigError::Conflict {
                    field: "queue_discipline",
                    other: "max_queue",
                    hint: "adaptive LIFO orders a queue: set max_queue (and max_wait), or use Fifo",
                });
            }
            if target.is_zero() {
                return Err(ConfigError::Zero {
                    field: "codel_target",
                });
            }
            if interval.is_zero() {
                return Err(ConfigError::Zero {
                    field: "codel_interval",
                });
            }
            if target.as_nanos() > interval.as_nanos() {
                return Err(ConfigError::InvertedRange {
                    min: "codel_target",
                    max: "codel_interval",
                });
            }
        }
        Ok(BulkheadConfig {
            max_concurrent: self.max_concurrent,
            max_queue: self.max_queue,
            max_wait: self.max_wait,
            reserved_critical_percent: self.reserved_critical_percent,
            sheddable_headroom_percent: self.sheddable_headroom_percent,
            queue_discipline: self.queue_discipline,
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
    /// A call of `class` was shed to keep room for more critical work: the slots left are
    /// reserved for more important classes (`reserved_critical_percent`,
    /// `sheddable_headroom_percent`), or, queued, it was pushed out of a full queue by a more
    /// important call.
    Priority {
        /// The class that was shed.
        class: Criticality,
    },
    /// A queued call of `class` was shed by adaptive LIFO + CoDel: the queue was standing and
    /// the call had queued for the CoDel target ([`QueueDiscipline::AdaptiveLifo`]).
    QueueDelay {
        /// The class that was shed (never [`Criticality::Critical`]).
        class: Criticality,
    },
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
            RejectReason::Priority { .. } => "priority",
            RejectReason::QueueDelay { .. } => "queue_delay",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::Full => f.write_str(
                "bulkhead full: every slot is in use; raise max_concurrent or add a queue",
            ),
            RejectReason::QueueFull => {
                f.write_str("bulkhead queue full: raise max_queue or max_concurrent")
            }
            RejectReason::WaitedTooLong => f.write_str(
                "waited max_wait for a bulkhead slot; raise max_wait or max_concurrent",
            ),
            RejectReason::AlreadyCompleted => f.write_str(
                "the bulkhead acquire future was polled after it completed; poll it until Ready only",
            ),
            RejectReason::Priority { class } => write!(
                f,
                "bulkhead shed {class} work to keep room for more critical calls; raise \
                 max_concurrent or lower reserved_critical_percent / sheddable_headroom_percent"
            ),
            RejectReason::QueueDelay { class } => write!(
                f,
                "bulkhead shed queued {class} work: the queue stood above the CoDel target; \
                 raise max_concurrent or the CoDel target"
            ),
        }
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
    /// A waiter was shed before its deadline: pushed out of a full queue by a more important
    /// call ([`RejectReason::Priority`]) or by adaptive LIFO + CoDel
    /// ([`RejectReason::QueueDelay`]).
    Shed {
        /// The waiter.
        waiter: WaiterId,
        /// Why.
        reason: RejectReason,
    },
}

/// One class's counters in [`BulkheadStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ClassStats {
    /// Permits issued to the class (at once or by promotion).
    pub admitted: u64,
    /// Calls of the class that had to wait in the queue.
    pub queued: u64,
    /// Calls of the class shed, whatever the reason.
    pub shed: u64,
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
    /// Calls shed to keep room for more critical work ([`RejectReason::Priority`]).
    pub shed_priority: u64,
    /// Waiters shed by adaptive LIFO + CoDel ([`RejectReason::QueueDelay`]).
    pub shed_queue_delay: u64,
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
    /// [`Criticality::Critical`] calls.
    pub critical: ClassStats,
    /// [`Criticality::Default`] calls (every call admitted without a class).
    pub default: ClassStats,
    /// [`Criticality::Sheddable`] calls.
    pub sheddable: ClassStats,
}

impl BulkheadStats {
    /// All shed calls, whatever the reason.
    #[must_use]
    pub const fn shed(&self) -> u64 {
        self.shed_full
            .saturating_add(self.shed_queue_full)
            .saturating_add(self.shed_timeout)
            .saturating_add(self.shed_priority)
            .saturating_add(self.shed_queue_delay)
    }

    /// The counters of one class.
    #[must_use]
    pub const fn class(&self, class: Criticality) -> ClassStats {
        match class {
            Criticality::Critical => self.critical,
            Criticality::Default => self.default,
            Criticality::Sheddable => self.sheddable,
        }
    }
}

const EMPTY_SLOT: Waiting = Waiting {
    id: WaiterId(0),
    deadline: Instant::ZERO,
    enqueued: Instant::ZERO,
};

/// A fixed ring of `N` waiters (one class).
#[derive(Clone, Debug)]
struct Ring<const N: usize> {
    slots: [Waiting; N],
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

    fn get(&self, offset: usize) -> Option<Waiting> {
        if offset >= self.len {
            return None;
        }
        self.slots.get(self.index(offset)).copied()
    }

    fn push_back(&mut self, w: Waiting) -> Result<(), ()> {
        if self.len >= N {
            return Err(());
        }
        let i = self.index(self.len);
        let slot = self.slots.get_mut(i).ok_or(())?;
        *slot = w;
        self.len += 1;
        Ok(())
    }

    fn pop_front(&mut self) -> Option<Waiting> {
        let front = self.get(0)?;
        self.head = self.index(1);
        self.len -= 1;
        Some(front)
    }

    fn pop_back(&mut self) -> Option<Waiting> {
        let back = self.get(self.len.checked_sub(1)?)?;
        self.len -= 1;
        Some(back)
    }

    fn remove(&mut self, id: WaiterId) -> bool {
        let Some(pos) = (0..self.len).find(|&k| self.get(k).is_some_and(|s| s.id == id)) else {
            return false;
        };
        for k in pos..self.len.saturating_sub(1) {
            let Some(next) = self.get(k + 1) else {
                return false;
            };
            let i = self.index(k);
            if let Some(slot) = self.slots.get_mut(i) {
                *slot = next;
            }
        }
        self.len -= 1;
        true
    }
}

/// One ring per [`Criticality`], indexed by [`Criticality::index`].
#[derive(Clone, Debug)]
struct Rings<const N: usize>([Ring<N>; 3]);

impl<const N: usize> Rings<N> {
    fn ring(&self, class: Criticality) -> Option<&Ring<N>> {
        self.0.get(class.index())
    }

    fn ring_mut(&mut self, class: Criticality) -> Option<&mut Ring<N>> {
        self.0.get_mut(class.index())
    }
}

impl<const N: usize> WaitQueue for Rings<N> {
    type Payload = ();
    /// The fixed rings are searched by id: `N` is a compile-time bound, the `&mut` form's
    /// queue is small by construction (the shared form's queue removes in O(1)).
    type Handle = WaiterId;

    fn len(&self) -> usize {
        self.0.iter().map(|r| r.len).sum()
    }

    fn class_len(&self, class: Criticality) -> usize {
        self.ring(class).map_or(0, |r| r.len)
    }

    fn front(&self, class: Criticality) -> Option<Waiting> {
        self.ring(class)?.get(0)
    }

    fn push_back(&mut self, class: Criticality, w: Waiting, (): ()) -> Result<WaiterId, ()> {
        // The bound is on the total: each ring has room for all `N`.
        if self.len() >= N {
            return Err(());
        }
        self.ring_mut(class).ok_or(())?.push_back(w).map(|()| w.id)
    }

    fn pop_front(&mut self, class: Criticality) -> Option<(Waiting, WaiterId, ())> {
        let w = self.ring_mut(class)?.pop_front()?;
        Some((w, w.id, ()))
    }

    fn pop_back(&mut self, class: Criticality) -> Option<(Waiting, WaiterId, ())> {
        let w = self.ring_mut(class)?.pop_back()?;
        Some((w, w.id, ()))
    }

    fn remove(&mut self, id: WaiterId) -> Option<()> {
        self.0.iter_mut().any(|r| r.remove(id)).then_some(())
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
    queue: Rings<QUEUE>,
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
            queue: Rings([Ring::new(), Ring::new(), Ring::new()]),
            events: EventRing::new(),
        })
    }

    /// The configuration (with the current `max_concurrent`, see
    /// [`set_max_concurrent`](Self::set_max_concurrent)).
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

    /// Waiters queued now, every class (expired waiters leave at the next input).
    #[must_use]
    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    /// The most calls of `class` that may run at once: `max_concurrent` for critical work,
    /// less the reserved share for default work, the sheddable watermark for sheddable work.
    #[must_use]
    pub fn class_limit(&self, class: Criticality) -> usize {
        self.engine.cap(class)
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> BulkheadStats {
        self.engine.stats(&self.queue)
    }

    /// A call wants a slot and may wait for one: admitted, queued or rejected (see
    /// [`Admission`]). The call is [`Criticality::Default`]; see
    /// [`acquire_with`](Self::acquire_with).
    pub fn acquire(&mut self, now: Instant) -> Admission {
        self.acquire_with(now, Criticality::Default)
    }

    /// [`acquire`](Self::acquire) for a call of `class`: it runs only below its class's
    /// limit ([`class_limit`](Self::class_limit)) and never ahead of a queued waiter of the same
    /// or a more important class; queued, it is promoted before every less important waiter;
    /// with the queue full it pushes out the oldest waiter of the least important class below
    /// its own ([`BulkheadEvent::Shed`] with [`RejectReason::Priority`]).
    pub fn acquire_with(&mut self, now: Instant, class: Criticality) -> Admission {
        let now = self.expire(now);
        let FifoSemaphore {
            engine,
            queue,
            events,
        } = self;
        let mut dropped = 0u64;
        let decision = engine.request(now, queue, class, (), |waiter, _, (), reason| {
            if events
                .push(BulkheadEvent::Shed { waiter, reason })
                .is_some()
            {
                dropped += 1;
            }
        });
        engine.count_dropped_events(dropped);
        match decision {
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
    /// promote them). The call is [`Criticality::Default`]; see
    /// [`try_acquire_with`](Self::try_acquire_with).
    pub fn try_acquire(&mut self, now: Instant) -> Result<BulkheadPermit, BulkheadRejected> {
        self.try_acquire_with(now, Criticality::Default)
    }

    /// [`try_acquire`](Self::try_acquire) for a call of `class`: rejected with
    /// [`RejectReason::Priority`] when the slots left are reserved for more important work.
    pub fn try_acquire_with(
        &mut self,
        now: Instant,
        class: Criticality,
    ) -> Result<BulkheadPermit, BulkheadRejected> {
        let _ = self.expire(now);
        self.engine
            .try_admit(&self.queue, class)
            .map(|()| BulkheadPermit { _private: () })
            .map_err(rejected)
    }

    /// A call ended: its slot goes to a waiter of the most important class queued whose
    /// deadline has not come, if its class's limit allows (the oldest, or the newest while an
    /// adaptive-LIFO queue is standing).
    pub fn on_release(&mut self, now: Instant, permit: BulkheadPermit) -> Release {
        let _ = permit;
        let now = self.expire(now);
        match self.engine.release(now, &mut self.queue) {
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

    /// Changes `max_concurrent` (an adaptive limit drives it; at least 1, a zero is read as
    /// 1). Shrinking never takes a permit back: calls running beyond the new limit finish and
    /// their slots are not reused. Growing makes room for waiters: call
    /// [`promote`](Self::promote) until it returns `None`.
    pub fn set_max_concurrent(&mut self, now: Instant, max_concurrent: usize) {
        let _ = self.expire(now);
        self.engine.set_max_concurrent(max_concurrent);
    }

    /// Gives a free slot to a waiter, as [`on_release`](Self::on_release) would, if one may
    /// take it (after [`set_max_concurrent`](Self::set_max_concurrent) grew the limit);
    /// `None` when nobody waits or there is no room.
    pub fn promote(&mut self, now: Instant) -> Option<(WaiterId, BulkheadPermit)> {
        let now = self.expire(now);
        let (waiter, _, ()) = self.engine.promote(now, &mut self.queue)?;
        self.push_event(BulkheadEvent::Promoted { waiter });
        Some((waiter, BulkheadPermit { _private: () }))
    }

    /// A waiter gave up. Returns `true` if it was still queued (`false`: it was already
    /// promoted, expired or cancelled, or never existed).
    #[must_use]
    pub fn on_cancel(&mut self, now: Instant, waiter: WaiterId) -> bool {
        let _ = self.expire(now);
        self.engine.cancel(&mut self.queue, waiter).is_some()
    }

    /// Expires the waiters whose deadline is at or before `now` (and, with adaptive LIFO, sheds
    /// the stale ones of a standing queue). Early calls are no-ops.
    pub fn handle_timeout(&mut self, now: Instant) {
        let _ = self.expire(now);
    }

    /// When a waiter is next shed: the earliest deadline, or with adaptive LIFO the instant a
    /// standing queue's oldest non-critical waiter reaches the CoDel target. `None` when nobody
    /// waits, or when no waiter's deadline can come (a deadline at the end of the clock).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.engine.poll_timeout(&self.queue)
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
        engine.expire(now, queue, |waiter, _, (), reason| {
            let ev = match reason {
                RejectReason::WaitedTooLong => BulkheadEvent::Expired { waiter },
                reason => BulkheadEvent::Shed { waiter, reason },
            };
            if events.push(ev).is_some() {
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
