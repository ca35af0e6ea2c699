//! Rate limiting: GCRA, the token bucket done exactly.
//!
//! # What it protects against
//!
//! A client (or a job producer, or an IP address) sending faster than a service can afford:
//! floods at enqueue time, retry storms, scrapers. The seed's token bucket refilled in whole
//! seconds and dropped the remainder (the real rate fell below the configured one), raced a
//! load-then-store refill against its CAS, trusted a wall clock that can step backwards and let
//! `compare_exchange_weak` reject callers that had tokens. This module fixes all of these.
//!
//! # The algorithm
//!
//! The Generic Cell Rate Algorithm (ITU-T I.371) keeps one number, the *theoretical arrival
//! time* `TAT`, in nanoseconds. With the emission interval `T = period / count` and the
//! tolerance `τ = (burst - 1) × T`, a request at `now` conforms iff `TAT - τ <= now`; a
//! conforming request moves `TAT` to `max(TAT, now) + T`. A fresh limiter has `TAT = now`.
//! It is exactly a token bucket of capacity `burst` refilled continuously at one token per `T`,
//! with nanosecond precision and no remainder ever dropped.
//!
//! # Burst semantics (exact)
//!
//! **`burst` is the most requests admitted at one instant.** A fresh limiter admits exactly
//! `burst` requests at the same `now` and rejects the next; over any window `[t0, t0 + w]` at
//! most `burst + floor(w / T)` requests are admitted. `try_acquire_n(now, n)` with `n > burst` can
//! never succeed and says so with [`RateLimited::InsufficientCapacity`] and `retry_at: None`.
//!
//! # Admission
//!
//! [`Gcra::try_acquire`] and [`Gcra::try_acquire_n`] are the admission of every keel machine:
//! `Ok(())` spends the request (a rate limiter has nothing to release), and a rejection is
//! [`Rejected<RateLimited>`](Rejected): [`RateLimited::OverRate`] with `retry_at: Some(t)`, the
//! earliest instant the same request would conform, or [`RateLimited::InsufficientCapacity`]
//! with `retry_at: None` for a batch over the burst. [`Rejected::wait_from`] is the wait.
//!
//! How the peers count it:
//! - **governor**: the same as keel. Its `Quota::allow_burst(b)` uses `τ = (b - 1) × T` and admits
//!   `b` requests at one instant (governor's `Quota::per_second(n)` also defaults the burst to
//!   `n`, as keel's [`Quota::per_second`] does). Unlike keel, governor silently clamps an
//!   emission interval that rounds to 0 ns up to 1 ns; keel rejects it with a [`ConfigError`].
//! - **redis-cell** (`CL.THROTTLE key max_burst count period`): its `max_burst` is the tolerance
//!   counted in intervals, so it admits `max_burst + 1` requests at one instant (its reported
//!   `limit` is `max_burst + 1`). keel's `burst` = redis-cell's `max_burst + 1`.
//!
//! # Rounding
//!
//! `T` is `period / count` rounded **up** to the nanosecond, so the limiter never admits more
//! than `count` per `period` beyond the burst; the shortfall is under 1 ns per request
//! (`Quota::per_second(3)` has `T = 333_333_334 ns`). A quota whose `T` would round down to
//! 0 ns (more than one request per nanosecond) is a [`ConfigError`], as is `burst × T` beyond
//! `u64::MAX` ns (about 584 years).
//!
//! # Contract
//!
//! - Time is an input. A `now` older than one seen before is decided as given, never clamped
//!   and never a rewind: after any decision at `n` the TAT is past `n`, so at an older `now` the
//!   same request conforms only if it also would at `n`, and an admission moves the TAT exactly
//!   as it would at `n`. A stale `now` can only make a decision stricter. (Clamping would hide
//!   a clock fault for good; see below.) Both forms follow this rule, so they agree on every
//!   input sequence, time jumps included.
//! - All arithmetic is `u64` nanoseconds and saturates; `Instant::MAX`, `u32::MAX` requests and
//!   584-year periods are legal inputs and never panic. (Within `τ` of `Instant::MAX`, where the
//!   TAT can no longer grow, the limiter stops limiting; `Instant::MAX` is only reached by
//!   saturation.)
//! - [`Gcra::set_quota`] never opens a window for extra requests: at the switch instant
//!   the new quota admits at most `min(new burst, what the old state still allowed)`; the
//!   used part of the burst is carried over, counted in requests.
//!
//! # Clock faults
//!
//! The caller's clock may misbehave once: a bogus `now` far in the future (a bad timestamp,
//! `Instant::MAX` from a saturating computation) or far in the past (`Instant::ZERO` by
//! mistake). Before, one such `now` turned the `&mut` limiter into an open door for good (it
//! clamped every later `now` to the bogus one, past the end of its TAT) and the shared form into
//! a closed one (its TAT sat in the far future), so the two forms disagreed and neither
//! recovered.
//!
//! Now both forms (and every key of a [`keyed::KeyedGcra`] and its overflow limiter)
//! follow one rule, in terms of the state alone. After any decision at `n`, the TAT is at most
//! `n + burst × T`. So a TAT beyond `now + burst × T + max_clock_jump` (equivalently: one
//! request would have to wait more than `T + max_clock_jump`) proves that an earlier `now` was
//! more than `max_clock_jump` after this one. That is a **clock fault**: the limiter counts it
//! ([`RateStats::clock_faults`], [`keyed::KeyedStats::clock_faults`],
//! `SharedRateLimiter::clock_faults`) and **resynchronises: it decides as a fresh limiter at
//! this `now`** (full burst), which is what it would be had the bogus instant never come.
//!
//! - A forward jump is taken at face value until the clock comes back: a real clock that
//!   jumps ahead (a suspend) never comes back, and nothing happens. A bogus one is detected at
//!   the first later check, which waits at most `T + max_clock_jump` (no rejection ever asks
//!   for a longer wait), so a limiter is never stuck closed.
//! - A jump back of at most `max_clock_jump` (a thread that read the clock and was preempted
//!   before its check) is decided as given: stricter, never a fault.
//! - The cost of a fault is bounded: a resynchronised limiter may admit one burst more than a
//!   perfect clock would have allowed (what it admitted at the bogus instant, plus the fresh
//!   burst). Limiting then goes on at the quota: never off for good.
//! - `max_clock_jump` is [`DEFAULT_MAX_CLOCK_JUMP`] (60 s: far above any scheduling delay
//!   between reading the clock and checking, far below an outage anyone would accept), set by
//!   [`Gcra::with_max_clock_jump`],
//!   `SharedRateLimiter::with_max_clock_jump` and
//!   [`KeyedConfigBuilder::max_clock_jump`](keyed::KeyedConfigBuilder::max_clock_jump).
//!   `Duration::MAX` disables detection; zero treats every `now` more than `T` behind the state
//!   as a fault (only for single-threaded callers with a trusted clock).
//! - The shared form tests for a fault only on its rejection branch (where the wait is known)
//!   and resynchronises in its out-of-line loop: the admission path is unchanged.
//! - [`peek`](Gcra::peek), [`remaining`](Gcra::remaining) and
//!   [`reset_at`](Gcra::reset_at) answer as the next check would (a faulted state reads
//!   as fresh) without counting or changing anything.
//!
//! ```
//! # #[cfg(feature = "alloc")] { // the shared form needs `alloc`
//! use core::num::NonZeroU32;
//! use keel_core::rate::{Quota, Gcra};
//! use keel_core::sync::gcra::SharedRateLimiter;
//! use keel_core::Instant;
//!
//! let quota = Quota::per_second(NonZeroU32::MIN)?; // 1/s, burst 1
//! let t = Instant::from_secs(100);
//! let mut m = Gcra::new(quota, t);
//! let s = SharedRateLimiter::new(quota, t);
//! assert!(m.try_acquire(Instant::MAX).is_ok() && s.try_acquire(Instant::MAX).is_ok()); // a bogus `now`
//! // Back on the real clock: both resynchronise (one fresh admission), then limit at 1/s.
//! let real = t + core::time::Duration::from_millis(10);
//! assert!(m.try_acquire(real).is_ok() && s.try_acquire(real).is_ok());
//! assert!(m.try_acquire(real).is_err() && s.try_acquire(real).is_err());
//! assert_eq!((m.stats().clock_faults, s.clock_faults()), (1, 1));
//! # }
//! # Ok::<(), keel_core::ConfigError>(())
//! ```
//!
//! # Defaults
//!
//! [`Quota::new`], [`Quota::per_second`], [`Quota::per_minute`] and [`Quota::per_hour`] set the
//! burst to the count (a full period's worth at once), as governor does; the seed's bucket also
//! started full at `max_tokens`. [`Quota::with_period`] is one request per interval, burst 1.
//!
//! # Forms
//!
//! - [`Gcra`]: `&mut self`, no allocation, `no_std`.
//! - [`SharedRateLimiter`](crate::sync::gcra::SharedRateLimiter) (feature `alloc`): `&self`, the
//!   same decision on one `AtomicU64` with compare-and-swap (counters opt-in, with
//!   `SharedRateLimiter::counted`).
//! - [`keyed::KeyedGcra`] (feature `alloc`): one GCRA per key with bounded memory, an
//!   OS-seeded hash key and a shared overflow limiter for a full table; [`ip::IpKeyer`] turns
//!   IP addresses into keys (IPv6 by /64 or /56), so one host cannot rotate through 2^64 keys.
//!
//! ```
//! use core::num::NonZeroU32;
//! use core::time::Duration;
//! use keel_core::rate::{Gcra, Quota, RateLimited};
//! use keel_core::{Instant, Rejected};
//!
//! // 10 requests per second, at most 3 at once.
//! let quota = Quota::per_second(NonZeroU32::new(10).unwrap())?
//!     .with_burst(NonZeroU32::new(3).unwrap())?;
//! let t0 = Instant::from_secs(1);
//! let mut limiter = Gcra::new(quota, t0);
//!
//! assert_eq!(limiter.remaining(t0), 3);
//! for _ in 0..3 {
//!     assert!(limiter.try_acquire(t0).is_ok());
//! }
//! let denied = limiter.try_acquire(t0).unwrap_err();
//! assert_eq!(denied.reason, RateLimited::OverRate);
//! let retry_at = t0 + Duration::from_millis(100); // one emission interval
//! assert_eq!(denied.retry_at, Some(retry_at));
//! assert_eq!(denied.wait_from(t0), Some(Duration::from_millis(100)));
//! assert!(limiter.try_acquire(retry_at).is_ok());
//!
//! assert_eq!(
//!     limiter.try_acquire_n(retry_at, 4),
//!     Err(Rejected { reason: RateLimited::InsufficientCapacity { burst: 3 }, retry_at: None })
//! );
//! # Ok::<(), keel_core::ConfigError>(())
//! ```

pub(crate) mod gcra;
pub mod ip;
#[cfg(feature = "alloc")]
pub mod keyed;
mod step;
pub use step::{step, Step};

use core::num::NonZeroU32;
use core::time::Duration;

use crate::error::{ConfigError, Rejected};
use crate::time::{duration_to_nanos, Instant};

/// The default largest clock step taken at face value by every rate limiter (60 s); a larger
/// one is a clock fault (see the [module docs](self), "Clock faults").
pub const DEFAULT_MAX_CLOCK_JUMP: Duration = Duration::from_nanos(gcra::DEFAULT_MAX_CLOCK_JUMP);

/// A validated rate: `count` requests per `period`, at most `burst` at one instant.
///
/// A `Quota` cannot be invalid: every constructor checks that the emission interval
/// `T = period / count` is at least 1 ns and that `burst × T` fits in `u64` nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Quota {
    t: u64,
    burst: NonZeroU32,
}

impl Quota {
    /// `count` requests per `period`, with a burst of `count`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Zero`] for a zero `period`; [`ConfigError::Overflow`] for a period over
    /// `u64::MAX` ns or `count × T` over `u64::MAX` ns; [`ConfigError::OutOfRange`] when
    /// `count` exceeds `period` in nanoseconds (more than one request per nanosecond).
    pub fn new(count: NonZeroU32, period: Duration) -> Result<Quota, ConfigError> {
        if period.is_zero() {
            return Err(ConfigError::Zero { field: "period" });
        }
        if period.as_nanos() > u128::from(u64::MAX) {
            return Err(ConfigError::Overflow {
                field: "period",
                hint: "use a period under u64::MAX nanoseconds (about 584 years)",
            });
        }
        let period = duration_to_nanos(period);
        let c = u64::from(count.get());
        let floor = period / c;
        if floor == 0 {
            return Err(ConfigError::OutOfRange {
                field: "count",
                expected:
                    "at most one request per nanosecond: lower the count or lengthen the period",
            });
        }
        let t = if period % c == 0 { floor } else { floor + 1 };
        Quota::from_interval(t, count)
    }

    /// `count` requests per second, burst `count`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::OutOfRange`] above 10^9 per second (the interval would round to 0 ns).
    pub fn per_second(count: NonZeroU32) -> Result<Quota, ConfigError> {
        Quota::new(count, Duration::from_secs(1))
    }

    /// `count` requests per minute, burst `count`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Overflow`] if `count × T` overflows (it cannot for a minute).
    pub fn per_minute(count: NonZeroU32) -> Result<Quota, ConfigError> {
        Quota::new(count, Duration::from_secs(60))
    }

    /// `count` requests per hour, burst `count`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Overflow`] if `count × T` overflows (it cannot for an hour).
    pub fn per_hour(count: NonZeroU32) -> Result<Quota, ConfigError> {
        Quota::new(count, Duration::from_secs(3600))
    }

    /// One request per `interval`, burst 1.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Zero`] for a zero interval (use [`Quota::new`] for sub-nanosecond rates,
    /// which are rejected too), [`ConfigError::Overflow`] for one over `u64::MAX` ns.
    pub fn with_period(interval: Duration) -> Result<Quota, ConfigError> {
        Quota::new(NonZeroU32::MIN, interval)
    }

    /// The same rate with a different burst (most requests admitted at one instant).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Overflow`] when `burst × T` exceeds `u64::MAX` nanoseconds.
    pub fn with_burst(self, burst: NonZeroU32) -> Result<Quota, ConfigError> {
        Quota::from_interval(self.t, burst)
    }

    /// Starts a [`QuotaBuilder`] (the `XConfig::builder()` form of the constructors).
    #[must_use]
    pub fn builder() -> QuotaBuilder {
        QuotaBuilder::default()
    }

    fn from_interval(t: u64, burst: NonZeroU32) -> Result<Quota, ConfigError> {
        if t.checked_mul(u64::from(burst.get())).is_none() {
            return Err(ConfigError::Overflow {
                field: "burst",
                hint: "burst × (period / count) must stay under about 584 years: lower the burst or the period",
            });
        }
        Ok(Quota { t, burst })
    }

    /// The emission interval `T`: one request's worth of time.
    #[must_use]
    pub const fn emission_interval(&self) -> Duration {
        Duration::from_nanos(self.t)
    }

    /// The most requests admitted at one instant.
    #[must_use]
    pub const fn burst(&self) -> NonZeroU32 {
        self.burst
    }

    /// The tolerance `τ = (burst - 1) × T`.
    #[must_use]
    pub const fn tolerance(&self) -> Duration {
        Duration::from_nanos(self.tau())
    }

    /// The time a fully drained limiter needs to refill its whole burst (`burst × T`).
    #[must_use]
    pub const fn replenish_all(&self) -> Duration {
        Duration::from_nanos(self.t * self.burst.get() as u64)
    }

    /// For fields read back from a valid `Quota` (the shared and keyed forms).
    #[cfg(feature = "alloc")]
    pub(crate) const fn from_parts(t: u64, burst: NonZeroU32) -> Quota {
        Quota { t, burst }
    }

    pub(crate) const fn t_nanos(&self) -> u64 {
        self.t
    }

    // Cannot overflow: `burst × t` was checked at construction.
    pub(crate) const fn tau(&self) -> u64 {
        self.t * (self.burst.get() as u64 - 1)
    }
}

/// Builds a [`Quota`]: `Quota::builder().count(100).period(Duration::from_secs(60)).burst(10).build()`.
#[derive(Clone, Copy, Debug, Default)]
pub struct QuotaBuilder {
    count: u32,
    period: Duration,
    burst: Option<u32>,
}

impl QuotaBuilder {
    /// Requests per period (required, > 0).
    #[must_use]
    pub fn count(mut self, count: u32) -> Self {
        self.count = count;
        self
    }

    /// The period `count` is measured over (required, > 0).
    #[must_use]
    pub fn period(mut self, period: Duration) -> Self {
        self.period = period;
        self
    }

    /// Most requests admitted at one instant (default: `count`).
    #[must_use]
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    /// Validates the quota.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Zero`] for a zero count, period or burst, and the errors of [`Quota::new`]
    /// and [`Quota::with_burst`].
    pub fn build(self) -> Result<Quota, ConfigError> {
        let count = NonZeroU32::new(self.count).ok_or(ConfigError::Zero { field: "count" })?;
        let quota = Quota::new(count, self.period)?;
        match self.burst {
            None => Ok(quota),
            Some(b) => {
                quota.with_burst(NonZeroU32::new(b).ok_or(ConfigError::Zero { field: "burst" })?)
            }
        }
    }
}

/// Why a [`Gcra`] (or a [`SharedRateLimiter`](crate::sync::gcra::SharedRateLimiter)) rejected a
/// request: the `reason` of its [`Rejected`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum RateLimited {
    /// Over the rate: the request (or batch) would conform at the rejection's `retry_at`
    /// (always `Some`), if nothing else is admitted first.
    #[error("rate limited: retry later or raise the quota")]
    OverRate,
    /// The batch is larger than the burst and can never be admitted at once (`retry_at` is
    /// `None`).
    #[error("a batch larger than the burst ({burst}) can never be admitted: split it or raise the burst")]
    InsufficientCapacity {
        /// The quota's burst: the largest batch that can ever be admitted.
        burst: u32,
    },
}

/// A request over the rate, admitted at `at` nanoseconds.
pub(crate) const fn over_rate(at: u64) -> Rejected<RateLimited> {
    Rejected {
        reason: RateLimited::OverRate,
        retry_at: Some(Instant::from_nanos(at)),
    }
}

/// A batch over the burst: never admitted.
pub(crate) const fn over_burst(burst: u32) -> Rejected<RateLimited> {
    Rejected {
        reason: RateLimited::InsufficientCapacity { burst },
        retry_at: None,
    }
}

/// Counters of a [`Gcra`] or a counted
/// [`SharedRateLimiter`](crate::sync::gcra::SharedRateLimiter::counted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateStats {
    /// Admissions (a `try_acquire_n` batch counts once).
    pub allowed: u64,
    /// Rejections, `InsufficientCapacity` included.
    pub limited: u64,
    /// Clock faults detected and resynchronised (see the [module docs](self), "Clock faults").
    pub clock_faults: u64,
}

/// A GCRA rate limiter for one stream of requests (`&mut self`, no allocation).
///
/// | group | methods |
/// | --- | --- |
/// | construct | [`new`](Self::new), [`with_max_clock_jump`](Self::with_max_clock_jump) |
/// | admission | [`try_acquire`](Self::try_acquire), [`try_acquire_n`](Self::try_acquire_n) `-> Result<(), Rejected<RateLimited>>` (nothing to release: a conforming request is spent) |
/// | commands | [`set_quota`](Self::set_quota) |
/// | getters | [`peek`](Self::peek), [`peek_n`](Self::peek_n), [`remaining`](Self::remaining), [`reset_at`](Self::reset_at), [`quota`](Self::quota), [`max_clock_jump`](Self::max_clock_jump), [`stats`](Self::stats) |
///
/// A rate limiter has no timers and no events: it only answers when asked.
///
/// ```
/// use std::num::NonZeroU32;
/// use core::time::Duration;
/// use keel_core::rate::{Gcra, Quota, RateLimited};
/// use keel_core::time::Instant;
///
/// let t0 = Instant::from_secs(1);
/// let mut gcra = Gcra::new(Quota::per_second(NonZeroU32::new(10).unwrap())?, t0);
/// for _ in 0..10 {
///     assert!(gcra.try_acquire(t0).is_ok()); // the burst (10) at once
/// }
/// let limited = gcra.try_acquire(t0).unwrap_err();
/// assert_eq!(limited.reason, RateLimited::OverRate);
/// assert_eq!(limited.retry_at, Some(t0 + Duration::from_millis(100))); // one per 100 ms
/// assert!(gcra.try_acquire(t0 + Duration::from_millis(100)).is_ok());
/// # Ok::<(), keel_core::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Gcra {
    tat: u64,
    t: u64,
    tau: u64,
    burst: NonZeroU32,
    jump: u64,
    stats: RateStats,
}

impl Gcra {
    /// A limiter with its full burst available at `now`, resynchronising after a clock jump of
    /// more than [`DEFAULT_MAX_CLOCK_JUMP`] (see [`with_max_clock_jump`](Self::with_max_clock_jump)).
    #[must_use]
    pub fn new(quota: Quota, now: Instant) -> Gcra {
        Gcra {
            tat: now.as_nanos().min(gcra::TAT_MAX),
            t: quota.t_nanos(),
            tau: quota.tau(),
            burst: quota.burst(),
            jump: gcra::DEFAULT_MAX_CLOCK_JUMP,
            stats: RateStats::default(),
        }
    }

    /// The largest clock step (forward then back) taken at face value; a larger one is a clock
    /// fault, counted in [`RateStats::clock_faults`], after which the limiter behaves as
    /// a fresh one at the new `now` (see the [module docs](self), "Clock faults"). Any value is
    /// legal: zero treats every `now` more than `T` behind the state as a fault;
    /// `Duration::MAX` never resynchronises.
    #[must_use]
    pub fn with_max_clock_jump(mut self, jump: Duration) -> Gcra {
        self.jump = duration_to_nanos(jump);
        self
    }

    /// The largest clock step taken at face value.
    #[must_use]
    pub fn max_clock_jump(&self) -> Duration {
        Duration::from_nanos(self.jump)
    }

    /// Admits one request at `now`, or says when it would be admitted
    /// ([`RateLimited::OverRate`] with `retry_at: Some(..)`).
    #[inline]
    #[must_use = "a rejected request must not proceed"]
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), Rejected<RateLimited>> {
        let now = now.as_nanos();
        match gcra::conform_unsaturated(self.tat, now, self.t, self.tau) {
            Some(Ok(tat)) => {
                self.admit(tat);
                Ok(())
            }
            Some(Err(at)) => {
                if gcra::fault_at(at, now, self.t, self.jump) {
                    return self.check_after_fault(now);
                }
                self.stats.limited = self.stats.limited.saturating_add(1);
                Err(over_rate(at))
            }
            None => {
                self.admit_at_end_of_clock();
                Ok(())
            }
        }
    }

    /// A clock fault on a single check (out of line): resynchronise, then a fresh limiter
    /// admits one request.
    #[cold]
    #[inline(never)]
    fn check_after_fault(&mut self, now: u64) -> Result<(), Rejected<RateLimited>> {
        self.resync(now);
        let tat = gcra::conform(self.tat, now, self.t, self.tau).unwrap_or(gcra::TAT_MAX);
        self.admit(tat);
        Ok(())
    }

    /// Rebases the state at `now` if it proves a clock fault (and counts the fault).
    fn resync(&mut self, now: u64) {
        let tat = gcra::resync(self.tat, now, self.t, self.tau, self.jump);
        if tat != self.tat {
            self.tat = tat;
            self.stats.clock_faults = self.stats.clock_faults.saturating_add(1);
        }
    }

    /// The state as a decision at `now` sees it (a clock fault reads as a fresh limiter).
    fn tat_at(&self, now: u64) -> u64 {
        gcra::resync(self.tat, now, self.t, self.tau, self.jump)
    }

    /// Commits an admission (a single check or a batch): the new TAT and the count.
    #[inline(always)]
    fn admit(&mut self, tat: u64) {
        self.tat = tat;
        self.stats.allowed = self.stats.allowed.saturating_add(1);
    }

    /// An admission whose TAT saturates (see `gcra::conform_unsaturated`), out of line.
    #[cold]
    #[inline(never)]
    fn admit_at_end_of_clock(&mut self) {
        self.admit(gcra::TAT_MAX);
    }

    /// Admits `n` requests at once (all or none). `n = 0` is always admitted and changes
    /// nothing; `n > burst` is [`RateLimited::InsufficientCapacity`] with `retry_at: None`
    /// (it can never conform).
    #[must_use = "a rejected batch must not proceed"]
    pub fn try_acquire_n(&mut self, now: Instant, n: u32) -> Result<(), Rejected<RateLimited>> {
        if n == 0 {
            return Ok(());
        }
        let now = now.as_nanos();
        if n <= self.burst.get() {
            // As the shared form: a batch that can never conform changes no state.
            self.resync(now);
        }
        match self.decide_n(self.tat, now, n) {
            Ok(tat) => {
                self.admit(tat);
                Ok(())
            }
            Err(e) => {
                self.stats.limited = self.stats.limited.saturating_add(1);
                Err(e)
            }
        }
    }

    fn decide_n(&self, tat: u64, now: u64, n: u32) -> Result<u64, Rejected<RateLimited>> {
        if n > self.burst.get() {
            return Err(over_burst(self.burst.get()));
        }
        gcra::conform_n(tat, now, self.t, self.tau, n).map_err(over_rate)
    }

    /// Would one request be admitted at `now`? Consumes nothing.
    #[must_use = "peeking has no effect unless the answer is used"]
    pub fn peek(&self, now: Instant) -> Result<(), Rejected<RateLimited>> {
        let now = now.as_nanos();
        gcra::conform(self.tat_at(now), now, self.t, self.tau)
            .map(|_| ())
            .map_err(over_rate)
    }

    /// Would a batch of `n` be admitted at `now`? Consumes nothing.
    #[must_use = "peeking has no effect unless the answer is used"]
    pub fn peek_n(&self, now: Instant, n: u32) -> Result<(), Rejected<RateLimited>> {
        if n == 0 {
            return Ok(());
        }
        let now = now.as_nanos();
        self.decide_n(self.tat_at(now), now, n).map(|_| ())
    }

    /// How many single requests would be admitted at `now` (`X-RateLimit-Remaining`), between
    /// 0 and the burst.
    #[must_use]
    pub fn remaining(&self, now: Instant) -> u32 {
        let now = now.as_nanos();
        gcra::remaining(self.tat_at(now), now, self.t, self.tau, self.burst.get())
    }

    /// When the full burst is available again (`X-RateLimit-Reset`); `now` if it already is.
    #[must_use]
    pub fn reset_at(&self, now: Instant) -> Instant {
        let now = now.as_nanos();
        Instant::from_nanos(self.tat_at(now).max(now))
    }

    /// Switches to `quota` at `now` without a window for extra requests.
    ///
    /// The capacity left is carried over, counted in requests (fractions included): if the old
    /// quota still allowed `a` requests at `now` (`a` = [`remaining`](Self::remaining) plus the
    /// fraction of the next one), the new quota allows `min(a, new burst)`, rounded against the
    /// caller, and then refills at the new rate. So at the switch instant the limiter never
    /// admits more than the new burst, nor more than the old state still allowed: raising the
    /// burst adds capacity only as time passes; lowering it caps what is left. The debt is kept
    /// in requests, not in time, so a faster rate makes the used requests drain faster.
    pub fn set_quota(&mut self, now: Instant, quota: Quota) {
        let now = now.as_nanos();
        self.resync(now);
        self.tat = gcra::requota(
            self.tat,
            now,
            self.t,
            self.burst.get(),
            quota.t_nanos(),
            quota.burst().get(),
        );
        self.t = quota.t_nanos();
        self.tau = quota.tau();
        self.burst = quota.burst();
    }

    /// The quota in force.
    #[must_use]
    pub fn quota(&self) -> Quota {
        Quota {
            t: self.t,
            burst: self.burst,
        }
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> RateStats {
        self.stats
    }
}
