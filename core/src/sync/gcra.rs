//! The shared GCRA rate limiter: one `AtomicU64` and compare-and-swap.
//!
//! **Progress:** checks are lock-free except while [`SharedRateLimiter::set_quota`] runs:
//! a quota change holds the state word like a spin lock (a few instructions), and every
//! check that arrives meanwhile spins until it is done. A thread preempted inside
//! `set_quota` therefore stalls every check until it is scheduled again; without quota
//! changes no check ever waits for another thread.
//!
//! [`SharedRateLimiter`] makes exactly the decision of [`Gcra`](crate::rate::Gcra)
//! (see [`crate::rate`] for the algorithm and the burst semantics) through `&self`, so one
//! limiter (in an `Arc`) can serve every task and thread.
//!
//! **Cost:** an admission is one read of the state's cache line, one add and one CAS; the
//! bare form ([`SharedRateLimiter::new`]) is as fast as governor's `check()` (0.93x in
//! `BENCHMARKS.md`), the counted form ([`SharedRateLimiter::counted`], exact `stats()`) one
//! atomic add dearer.
//!
//! # Contract
//!
//! - The state is one `AtomicU64` holding the TAT in nanoseconds, updated by a strong
//!   `compare_exchange`. A failed CAS retries with the value it read, so a request is only
//!   rejected after it has seen a real TAT that denies it; there is no spurious rejection
//!   (the seed used `compare_exchange_weak` and rejected callers that had tokens).
//! - Concurrent checks at the same `now` never admit more than `burst` (model-checked by loom in
//!   `core/tests/loom_gcra.rs`).
//! - There is no shared "newest `now`" (that would be a second contended atomic), and none is
//!   needed: a `now` older than one another thread used can only make a decision stricter (the
//!   TAT never moves backwards for it), exactly as in the `&mut` form, which no longer clamps
//!   either. A `now` more than `max_clock_jump` behind the state is a clock fault: the check
//!   resynchronises (decides as a fresh limiter at its `now`) with one CAS, in its out-of-line
//!   loop, and counts it in a counter on the cold line that every form keeps (see
//!   [`crate::rate`], "Clock faults"). The test sits on the rejection branch only, so the
//!   admission path is unchanged.
//! - [`SharedRateLimiter::set_quota`] changes the quota at run time. It briefly stores a marker
//!   (`u64::MAX`, never a TAT) in the state word while it writes the new quota; checks that see
//!   the marker spin until it is gone. Every successful write to the state word strictly
//!   increases the TAT (a check adds at least `T`, a quota change at least 1 ns: the TAT
//!   saturates at `u64::MAX - 1`, 584 years after the epoch, where this stops holding), so the word
//!   never returns to a value a check read earlier (no ABA): a check that read its quota before
//!   a change cannot commit after it, and a check that commits was decided under the quota in
//!   force at its CAS. No window admits extra requests. The one exception is a clock fault's
//!   resynchronisation, which moves the word back to `now + T`: a check that read a word before
//!   it could only find that value again after the state has grown back to it, i.e. after
//!   admissions spanning more than `max_clock_jump` (60 s by default), all while that check
//!   sat between its read and its CAS; and even then it commits a decision under the quota it
//!   read, which only a quota change in the same span could make stale.
//! - The other exception: [`SharedRateLimiter::cancel_reservation`] gives a reservation back by
//!   moving the word from exactly the value the reservation wrote to exactly the value before
//!   it (only if nothing was written since), undoing it. A check that read either value and
//!   commits on it decides on a state that is exactly current, under the same quota, except if
//!   a quota change came in between; so a quota change first moves the word past every value a
//!   give-back has taken back (recorded before the give-back's CAS), and the word never again
//!   holds, under a new quota, a value it held under an old one (loom: `loom_rate_wait`).
//!
//! ```
//! use core::num::NonZeroU32;
//! use keel_core::rate::Quota;
//! use keel_core::sync::gcra::SharedRateLimiter;
//! use keel_core::Instant;
//!
//! let quota = Quota::per_second(NonZeroU32::new(2).unwrap())?;
//! let limiter = SharedRateLimiter::new(quota, Instant::ZERO);
//! let now = Instant::from_millis(10);
//! let admitted = std::thread::scope(|s| {
//!     let checks: Vec<_> = (0..4).map(|_| s.spawn(|| limiter.try_acquire(now).is_ok())).collect();
//!     checks.into_iter().map(|c| c.join().unwrap()).filter(|ok| *ok).count()
//! });
//! assert_eq!(admitted, 2);
//! # Ok::<(), keel_core::ConfigError>(())
//! ```

use core::num::NonZeroU32;

use super::shim::{spin_hint, AtomicU64, Ordering};
use crate::error::Rejected;
use crate::rate::gcra::{self, TAT_MAX};
use crate::rate::{over_burst, over_rate, Quota, RateLimited, RateStats};
use crate::time::Instant;

/// The state word while a quota change is in progress. Never a TAT (those stop at `TAT_MAX`).
const CHANGING: u64 = u64::MAX;

/// A slot reserved by [`SharedRateLimiter::reserve_n`]: the admission of a batch at
/// [`at`](Self::at). Use it (proceed at that instant) or give it back with
/// [`SharedRateLimiter::cancel_reservation`]; it is neither `Copy` nor `Clone`, so it can be
/// given back at most once.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a reservation is an admission: use it or give it back"]
pub struct Reservation {
    at: Instant,
    /// The state before and after the reservation.
    before: u64,
    after: u64,
}

impl Reservation {
    /// The instant the reserved batch conforms: proceed at or after it.
    #[must_use]
    pub const fn at(&self) -> Instant {
        self.at
    }
}

/// The words every check reads and an admission writes, alone on one cache line.
///
/// An admission writes `tat` (its CAS) and, in the counted form, `allowed` right after it, on
/// the line the CAS has just taken exclusively; the quota (written only by `set_quota`) is read
/// after `tat`, from the same line. One line per admitted check, even under contention.
#[derive(Debug)]
#[repr(C, align(64))]
struct Hot {
    tat: AtomicU64,
    allowed: AtomicU64,
    t: AtomicU64,
    /// `(burst - 1) × t`, kept so a check needs no multiplication (written with `t`).
    tau: AtomicU64,
    burst: AtomicU64,
    /// The largest clock step taken at face value, in ns (fixed at construction; read only on
    /// the rejection path).
    jump: u64,
    /// Whether decisions are counted (fixed at construction; on the line every check reads,
    /// so testing it costs a predictable branch and no memory access).
    counted: bool,
}

/// The rejection counter (counted form only), on a line of its own: a rejection only reads
/// the hot line, so a saturated limiter's rejections do not take it away from the threads
/// that are admitted.
#[derive(Debug)]
#[repr(align(64))]
struct Cold {
    limited: AtomicU64,
    /// Clock faults resynchronised (every form counts them: they are rare and out of line).
    clock_faults: AtomicU64,
    /// The highest state a cancelled reservation was taken back from (see
    /// [`SharedRateLimiter::cancel_reservation`]): a quota change moves the state past it.
    given_back: AtomicU64,
}

/// A GCRA rate limiter shared by reference (`Send + Sync`); see the [module docs](self).
///
/// Counting is opt-in, chosen at construction, as in governor (whose `check()` keeps no
/// counters; its middleware adds them): an exact count is one more atomic add per decision,
/// about 1 ns uncontended on the bench machine, as much as the CAS itself.
/// [`SharedRateLimiter::new`] makes the bare limiter; [`SharedRateLimiter::counted`] the same
/// decisions with `allowed` / `limited` counters (the async `RateLimiter` uses it for its
/// `stats()`). Both are the same type ([`is_counted`](Self::is_counted) tells them apart).
///
/// | group | methods |
/// | --- | --- |
/// | construct | [`new`](Self::new), [`counted`](Self::counted), [`with_max_clock_jump`](Self::with_max_clock_jump) |
/// | admission | [`try_acquire`](Self::try_acquire), [`try_acquire_n`](Self::try_acquire_n) `-> Result<(), Rejected<RateLimited>>`; [`reserve_n`](Self::reserve_n) / [`cancel_reservation`](Self::cancel_reservation) (for waiting queues) |
/// | commands | [`set_quota`](Self::set_quota) |
/// | getters | [`peek`](Self::peek), [`peek_n`](Self::peek_n), [`remaining`](Self::remaining), [`reset_at`](Self::reset_at), [`quota`](Self::quota), [`max_clock_jump`](Self::max_clock_jump), [`is_counted`](Self::is_counted), [`clock_faults`](Self::clock_faults), [`stats`](Self::stats) |
///
/// ```
/// use core::num::NonZeroU32;
/// use keel_core::rate::Quota;
/// use keel_core::sync::gcra::SharedRateLimiter;
/// use keel_core::Instant;
///
/// let quota = Quota::per_second(NonZeroU32::new(1).unwrap())?;
/// let bare = SharedRateLimiter::new(quota, Instant::ZERO);
/// let counted = SharedRateLimiter::counted(quota, Instant::ZERO);
/// for _ in 0..2 {
///     assert_eq!(bare.try_acquire(Instant::ZERO), counted.try_acquire(Instant::ZERO));
/// }
/// assert_eq!((counted.stats().allowed, counted.stats().limited), (1, 1));
/// assert_eq!((bare.stats().allowed, bare.stats().limited), (0, 0)); // not counted
/// # Ok::<(), keel_core::ConfigError>(())
/// ```
#[derive(Debug)]
pub struct SharedRateLimiter {
    hot: Hot,
    cold: Cold,
}

impl SharedRateLimiter {
    /// A limiter with its full burst available at `now`, keeping no counters (its
    /// [`stats`](Self::stats) count clock faults only).
    #[must_use]
    pub fn new(quota: Quota, now: Instant) -> SharedRateLimiter {
        SharedRateLimiter::build(quota, now, false)
    }

    /// A limiter with its full burst available at `now` that counts its decisions: the same
    /// decisions as [`SharedRateLimiter::new`]'s, one atomic add dearer each.
    #[must_use]
    pub fn counted(quota: Quota, now: Instant) -> SharedRateLimiter {
        SharedRateLimiter::build(quota, now, true)
    }

    /// Whether this limiter counts its decisions (made by [`counted`](Self::counted)).
    #[must_use]
    pub fn is_counted(&self) -> bool {
        self.hot.counted
    }

    /// Counters (relaxed: each is exact, the set is not a snapshot). `allowed` and `limited`
    /// stay 0 unless the limiter was made by [`counted`](Self::counted); `clock_faults` is
    /// counted by every limiter.
    #[must_use]
    pub fn stats(&self) -> RateStats {
        RateStats {
            allowed: self.hot.allowed.load(Ordering::Relaxed),
            limited: self.cold.limited.load(Ordering::Relaxed),
            clock_faults: self.clock_faults(),
        }
    }

    fn build(quota: Quota, now: Instant, counted: bool) -> SharedRateLimiter {
        SharedRateLimiter {
            hot: Hot {
                tat: AtomicU64::new(now.as_nanos().min(TAT_MAX)),
                allowed: AtomicU64::new(0),
                t: AtomicU64::new(quota.t_nanos()),
                tau: AtomicU64::new(quota.tau()),
                burst: AtomicU64::new(u64::from(quota.burst().get())),
                jump: gcra::DEFAULT_MAX_CLOCK_JUMP,
                counted,
            },
            cold: Cold {
                limited: AtomicU64::new(0),
                clock_faults: AtomicU64::new(0),
                given_back: AtomicU64::new(0),
            },
        }
    }

    /// The largest clock step (forward then back) taken at face value; a larger one is a clock
    /// fault, after which the limiter behaves as a fresh one at the new `now`, exactly as
    /// [`Gcra::with_max_clock_jump`](crate::rate::Gcra::with_max_clock_jump)
    /// (default [`DEFAULT_MAX_CLOCK_JUMP`](crate::rate::DEFAULT_MAX_CLOCK_JUMP); see
    /// [`crate::rate`], "Clock faults").
    #[must_use]
    pub fn with_max_clock_jump(mut self, jump: core::time::Duration) -> Self {
        self.hot.jump = crate::time::duration_to_nanos(jump);
        self
    }

    /// The largest clock step taken at face value.
    #[must_use]
    pub fn max_clock_jump(&self) -> core::time::Duration {
        core::time::Duration::from_nanos(self.hot.jump)
    }

    /// Clock faults detected and resynchronised so far (counted by every form).
    #[must_use]
    pub fn clock_faults(&self) -> u64 {
        self.cold.clock_faults.load(Ordering::Relaxed)
    }

    /// Counts an admission (in a counted limiter).
    #[inline(always)]
    fn count_allowed(&self) {
        if self.hot.counted {
            self.hot.allowed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a rejection (in a counted limiter).
    #[inline(always)]
    fn count_limited(&self) {
        if self.hot.counted {
            self.cold.limited.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The check's read: a TAT that is not the change marker, and the `(t, tau)` in force
    /// for it (see [`load`](Self::load); the caller's CAS validates it).
    #[inline(always)]
    fn load_check(&self) -> (u64, u64, u64) {
        loop {
            let tat = self.hot.tat.load(Ordering::Acquire);
            if tat == CHANGING {
                spin_hint();
                continue;
            }
            // Written together by `new` / `set_quota` from one validated `Quota`, so `tau` is
            // `(burst - 1) × t` for the `t` beside it (or a later change's pair, which the
            // caller's CAS then rejects, as in `load`).
            let t = self.hot.t.load(Ordering::Acquire);
            let tau = self.hot.tau.load(Ordering::Acquire);
            return (tat, t, tau);
        }
    }

    /// Loads a TAT that is not the change marker, and the quota (t, tau, burst) in force for it.
    ///
    /// With `validate`, the TAT is loaded again after the quota and the whole read is retried
    /// unless it is unchanged (for readers that do not finish with a CAS on the TAT).
    #[inline]
    fn load(&self, validate: bool) -> (u64, u64, u64, u32) {
        loop {
            let tat = self.hot.tat.load(Ordering::Acquire);
            if tat == CHANGING {
                spin_hint();
                continue;
            }
            // The Acquire load above synchronises with the Release store that ended the last
            // quota change (or with a check's CAS in its release sequence), so these see that
            // change's values or a later change's. A later change is caught by the caller's CAS
            // (or by `validate`): these Acquire loads then synchronise with its Release stores,
            // so its marker CAS happens before the caller's next access to the TAT.
            let t = self.hot.t.load(Ordering::Acquire).max(1);
            let burst = u32::try_from(self.hot.burst.load(Ordering::Acquire))
                .unwrap_or(u32::MAX)
                .max(1);
            if validate && self.hot.tat.load(Ordering::Acquire) != tat {
                spin_hint();
                continue;
            }
            let tau = self.hot.tau.load(Ordering::Acquire);
            return (tat, t, tau, burst);
        }
    }

    /// Admits one request at `now`, or says when it would be admitted
    /// ([`RateLimited::OverRate`] with `retry_at: Some(..)`): the decision of
    /// [`Gcra::try_acquire`](crate::rate::Gcra::try_acquire).
    ///
    /// The uncontended path (no quota change running, the CAS wins) is one read of the hot
    /// line, the decision and one CAS; a lost CAS, a running quota change or a TAT at the end
    /// of the clock goes to an out-of-line retry loop.
    #[inline]
    #[must_use = "a rejected request must not proceed"]
    pub fn try_acquire(&self, now: Instant) -> Result<(), Rejected<RateLimited>> {
        let now = now.as_nanos();
        let tat = self.hot.tat.load(Ordering::Acquire);
        // Read after the TAT, as `load_check` does; discarded with it if it is the marker.
        let t = self.hot.t.load(Ordering::Acquire);
        let tau = self.hot.tau.load(Ordering::Acquire);
        if tat != CHANGING {
            match gcra::conform_unsaturated(tat, now, t, tau) {
                Some(Ok(next)) => {
                    let won = self.commit(tat, next);
                    if won {
                        return Ok(());
                    }
                }
                // A wait beyond `T + jump` is a clock fault: resynchronised out of line.
                Some(Err(at)) if !gcra::fault_at(at, now, t, self.hot.jump) => {
                    return Err(self.rejected(at))
                }
                // The TAT saturates (or a clock fault): decided by the out-of-line loop.
                _ => {}
            }
        }
        self.check_contended(now)
    }

    /// [`try_acquire`](Self::try_acquire) after a lost CAS, while a quota change runs, where the
    /// TAT saturates or on a clock fault: retries with the TAT it finds (and the quota in force
    /// for it) until it commits or is rejected.
    #[cold]
    #[inline(never)]
    fn check_contended(&self, now: u64) -> Result<(), Rejected<RateLimited>> {
        loop {
            let (tat, t, tau) = self.load_check();
            let base = gcra::resync(tat, now, t, tau, self.hot.jump);
            match gcra::conform(base, now, t, tau) {
                Ok(next) => {
                    if self.commit(tat, next) {
                        self.count_fault(base != tat);
                        return Ok(());
                    }
                    // The TAT moved: read it again with the quota in force for it (a quota
                    // change may have completed since).
                }
                Err(at) => return Err(self.rejected(at)),
            }
        }
    }

    /// An admission's commit: moves the TAT from `tat` (the value the decision read) to `next`
    /// and counts it; `false` if the TAT moved meanwhile (the caller decides again).
    #[inline(always)]
    fn commit(&self, tat: u64, next: u64) -> bool {
        let won = self
            .hot
            .tat
            .compare_exchange(tat, next, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if won {
            self.count_allowed();
        }
        won
    }

    /// Counts a clock fault whose resynchronisation was committed.
    #[inline(always)]
    fn count_fault(&self, fault: bool) {
        if fault {
            self.cold.clock_faults.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a rejection and says when to come back.
    #[inline(always)]
    fn rejected(&self, at: u64) -> Rejected<RateLimited> {
        self.count_limited();
        over_rate(at)
    }

    /// Admits `n` requests at once (all or none). `n = 0` is always admitted and changes
    /// nothing; `n > burst` is [`RateLimited::InsufficientCapacity`] with `retry_at: None`.
    #[must_use = "a rejected batch must not proceed"]
    pub fn try_acquire_n(&self, now: Instant, n: u32) -> Result<(), Rejected<RateLimited>> {
        if n == 0 {
            return Ok(());
        }
        let now = now.as_nanos();
        let (mut tat, mut t, mut tau, mut burst) = self.load(false);
        loop {
            if n > burst {
                self.count_limited();
                return Err(over_burst(burst));
            }
            let base = gcra::resync(tat, now, t, tau, self.hot.jump);
            match gcra::conform_n(base, now, t, tau, n) {
                Ok(next) => {
                    if self.commit(tat, next) {
                        self.count_fault(base != tat);
                        return Ok(());
                    }
                    (tat, t, tau, burst) = self.load(false);
                }
                Err(at) => return Err(self.rejected(at)),
            }
        }
    }

    /// Reserves the earliest slot for a batch of `n` at or after `now` and returns its instant
    /// (`now` if the batch conforms now), unless that slot would come after `latest`.
    ///
    /// The reservation is the admission: the state moves exactly as
    /// [`try_acquire_n`](Self::try_acquire_n)
    /// at the returned instant would move it, so checks and reservations together never admit
    /// more than the quota (each is counted in `allowed` once). The caller proceeds at the
    /// returned instant; one woken late by a coarse timer still owns its slot, since later
    /// callers were placed after it. A caller that gives up hands the reservation to another
    /// caller (the waiting queue of [`rate_wait`](crate::sync::rate_wait) does) or gives it
    /// back ([`cancel_reservation`](Self::cancel_reservation), which works while nothing
    /// was admitted since).
    ///
    /// `n = 0` is always a reservation at `now` and changes nothing.
    ///
    /// # Errors
    ///
    /// [`RateLimited::InsufficientCapacity`] (`retry_at: None`) when `n` exceeds the burst (no
    /// slot ever fits); [`RateLimited::OverRate`] with the slot's instant as `retry_at` when it
    /// is after `latest` (nothing is reserved). Neither is counted in `limited`.
    pub fn reserve_n(
        &self,
        now: Instant,
        n: u32,
        latest: Instant,
    ) -> Result<Reservation, Rejected<RateLimited>> {
        if n == 0 {
            return Ok(Reservation {
                at: now,
                before: 0,
                after: 0,
            });
        }
        let now = now.as_nanos();
        loop {
            let (tat, t, tau, burst) = self.load(false);
            if n > burst {
                return Err(over_burst(burst));
            }
            // After a clock fault, reserve as a fresh limiter would (as `try_acquire_n` decides).
            let base = gcra::resync(tat, now, t, tau, self.hot.jump);
            let at = match gcra::conform_n(base, now, t, tau, n) {
                Ok(_) => now,
                Err(at) => at,
            };
            if at > latest.as_nanos() {
                return Err(over_rate(at));
            }
            // At `at` the batch conforms by construction (`at` is where `conform_n` said it
            // would); the arm keeps the loop panic-free all the same.
            let Ok(next) = gcra::conform_n(base, at, t, tau, n) else {
                spin_hint();
                continue;
            };
            if self.commit(tat, next) {
                self.count_fault(base != tat);
                return Ok(Reservation {
                    at: Instant::from_nanos(at),
                    before: tat,
                    after: next,
                });
            }
        }
    }

    /// Gives a reservation back: `Ok` if the state was still exactly where the reservation
    /// left it (nothing was admitted or reserved since), and is now exactly where it was
    /// before (the slot is free again, for checks and reservations alike, and `allowed` is
    /// one less).
    ///
    /// # Errors
    ///
    /// The reservation, unchanged and still valid, if the limiter has moved on (a later
    /// admission was decided on top of it and cannot be rewound) or it reserved nothing
    /// (`n = 0`, or at the end of the clock): keep it, hand it on, or let it lapse.
    ///
    /// Pass only a reservation of this limiter that will not be used.
    ///
    /// A give-back is the one write that moves the state backwards. So that a check which read
    /// the state before it cannot commit under a quota that changed in between (the state could
    /// otherwise return to a value the check read), [`set_quota`](Self::set_quota) moves the
    /// state past every value a give-back has taken back: a quota change soon after a give-back
    /// starts no earlier than the end of the slot given back (stricter, never looser).
    pub fn cancel_reservation(&self, reservation: Reservation) -> Result<(), Reservation> {
        let (before, after) = (reservation.before, reservation.after);
        if after <= before {
            // n = 0, or saturated at the end of the clock: nothing to give back.
            return Err(reservation);
        }
        // Published before the state moves back: a quota change that sees the state moved
        // back (its marker CAS reads it) also sees this.
        self.cold.given_back.fetch_max(after, Ordering::AcqRel);
        let given = self
            .hot
            .tat
            .compare_exchange(after, before, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if !given {
            return Err(reservation);
        }
        if self.hot.counted {
            self.hot.allowed.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Would one request be admitted at `now`? Consumes nothing.
    #[must_use = "peeking has no effect unless the answer is used"]
    pub fn peek(&self, now: Instant) -> Result<(), Rejected<RateLimited>> {
        let now = now.as_nanos();
        let (tat, t, tau, _) = self.load(true);
        let tat = gcra::resync(tat, now, t, tau, self.hot.jump);
        gcra::conform(tat, now, t, tau)
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
        let (tat, t, tau, burst) = self.load(true);
        if n > burst {
            return Err(over_burst(burst));
        }
        let tat = gcra::resync(tat, now, t, tau, self.hot.jump);
        gcra::conform_n(tat, now, t, tau, n)
            .map(|_| ())
            .map_err(over_rate)
    }

    /// How many single requests would be admitted at `now`, between 0 and the burst.
    #[must_use]
    pub fn remaining(&self, now: Instant) -> u32 {
        let now = now.as_nanos();
        let (tat, t, tau, burst) = self.load(true);
        let tat = gcra::resync(tat, now, t, tau, self.hot.jump);
        gcra::remaining(tat, now, t, tau, burst)
    }

    /// When the full burst is available again; `now` if it already is.
    #[must_use]
    pub fn reset_at(&self, now: Instant) -> Instant {
        let (tat, t, tau, _) = self.load(true);
        let tat = gcra::resync(tat, now.as_nanos(), t, tau, self.hot.jump);
        Instant::from_nanos(tat).max(now)
    }

    /// Switches to `quota` at `now`, with the guarantees of
    /// [`Gcra::set_quota`](crate::rate::Gcra::set_quota).
    ///
    /// One difference, always on the conservative side: the shared form never moves the TAT
    /// backwards and moves it at least 1 ns forward (see the module docs: every write must
    /// advance the word). So where the `&mut` form would carry the debt over as fewer
    /// nanoseconds (a faster rate, or a burst lowered below the debt), the shared form keeps
    /// the old TAT until it drains: it may admit less than the `&mut` form for up to the old
    /// `burst × T`, never more. Except where keeping it would leave a state the new quota
    /// reads as a clock fault (the old debt exceeds the new `burst × T` by more than
    /// `max_clock_jump`): then it takes the `&mut` form's exact state, so a quota change never
    /// looks like a fault and never opens a window.
    ///
    /// Ordering: the change is linearised at the store that ends it. Checks that commit before
    /// it were decided under the old quota and are carried over as debt; checks after it use
    /// the new quota. Checks that arrive while it runs spin for the few instructions it takes;
    /// concurrent changes are serialised the same way.
    pub fn set_quota(&self, now: Instant, quota: Quota) {
        let tat = loop {
            let tat = self.hot.tat.load(Ordering::Acquire);
            if tat != CHANGING
                && self
                    .hot
                    .tat
                    .compare_exchange(tat, CHANGING, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                break tat;
            }
            spin_hint();
        };
        let now = now.as_nanos();
        let t_old = self.hot.t.load(Ordering::Relaxed).max(1);
        let tau_old = self.hot.tau.load(Ordering::Relaxed);
        let burst_old = u32::try_from(self.hot.burst.load(Ordering::Relaxed))
            .unwrap_or(u32::MAX)
            .max(1);
        let base = gcra::resync(tat, now, t_old, tau_old, self.hot.jump);
        let fault = base != tat;
        let carried = gcra::requota(
            base,
            now,
            t_old,
            burst_old,
            quota.t_nanos(),
            quota.burst().get(),
        );
        // The state word must move forward, or a check that read the old quota before the
        // marker could find its old TAT again and commit after this change (ABA); past every
        // value a cancelled reservation took back, too. It moves back only where moving forward
        // would leave a state the new quota reads as a clock fault (after a fault, or when the
        // old debt exceeds what the new quota can ever owe by more than `max_clock_jump`): it
        // then takes the `&mut` form's exact carried-over state, as a resynchronisation does
        // (see the module docs).
        let given_back = self.cold.given_back.load(Ordering::Acquire);
        let forward = carried
            .max(tat.saturating_add(1))
            .max(given_back.saturating_add(1))
            .min(TAT_MAX);
        let next = if fault
            || gcra::clock_fault(forward, now, quota.t_nanos(), quota.tau(), self.hot.jump)
        {
            carried
        } else {
            forward
        };
        self.count_fault(fault);
        self.hot.t.store(quota.t_nanos(), Ordering::Release);
        self.hot.tau.store(quota.tau(), Ordering::Release);
        self.hot
            .burst
            .store(u64::from(quota.burst().get()), Ordering::Release);
        self.hot.tat.store(next, Ordering::Release);
    }

    /// The quota in force.
    #[must_use]
    pub fn quota(&self) -> Quota {
        let (_, t, _, burst) = self.load(true);
        // A validated read sees the fields one `Quota` wrote together.
        Quota::from_parts(t, NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN))
    }
}

// A quota change holds the state word at `CHANGING` between its first and last store; only
// threads racing open that window. These tests hold the marker by hand (as a change in progress
// would) and pin that every other writer waits for it instead of deciding against the marker.
#[cfg(test)]
#[cfg(all(feature = "std", not(keel_loom)))]
mod tests {
    use super::*;
    use std::thread;

    /// Runs `op` on another thread while the test holds the change marker, and says whether it
    /// finished before the marker was given back (it must not), then gives the marker back
    /// (storing `restore`) and returns the operation's result.
    fn while_a_change_runs<T: Send>(
        limiter: &SharedRateLimiter,
        restore: u64,
        op: impl FnOnce(&SharedRateLimiter) -> T + Send,
    ) -> (bool, T) {
        assert_ne!(limiter.hot.tat.swap(CHANGING, Ordering::AcqRel), CHANGING);
        thread::scope(|s| {
            let h = s.spawn(|| op(limiter));
            // Many scheduler turns for the other thread to start and reach the marker (no
            // sleep: the core's code, tests included, reads no clock); a correct operation is
            // still waiting when they end, however loaded the machine.
            let mut finished = false;
            for _ in 0..200_000 {
                if h.is_finished() {
                    finished = true;
                    break;
                }
                thread::yield_now();
            }
            limiter.hot.tat.store(restore, Ordering::Release);
            (finished, h.join().expect("the operation does not panic"))
        })
    }

    #[test]
    fn a_second_quota_change_waits_for_the_first() {
        let quota = Quota::per_second(NonZeroU32::new(10).expect("non-zero")).expect("valid");
        let limiter = SharedRateLimiter::new(quota, Instant::ZERO);
        let now = Instant::from_millis(1);
        let (finished, ()) = while_a_change_runs(&limiter, now.as_nanos(), |l| {
            l.set_quota(
                now,
                Quota::per_second(NonZeroU32::new(20).expect("non-zero")).expect("valid"),
            );
        });
        assert!(
            !finished,
            "set_quota went on while another change held the state word"
        );
        // It then changed the quota from the TAT the first change left: no clock fault (a
        // change that took the marker for a TAT resynchronises from `u64::MAX`).
        assert_eq!(limiter.clock_faults(), 0);
        assert_eq!(limiter.quota().burst().get(), 20);
        assert!(limiter.hot.tat.load(Ordering::Acquire) < TAT_MAX);
    }

    #[test]
    fn a_check_at_the_end_of_the_clock_waits_for_a_quota_change() {
        // Near the end of the clock the marker read as a TAT owes less than `T + jump`, so a
        // check that decided against it would reject without a clock fault instead of waiting.
        let quota = Quota::per_second(NonZeroU32::new(1).expect("non-zero")).expect("valid");
        let limiter = SharedRateLimiter::new(quota, Instant::ZERO);
        let end = Instant::from_nanos(TAT_MAX - 2 * quota.t_nanos());
        let (finished, decided) =
            while_a_change_runs(&limiter, end.as_nanos(), |l| l.try_acquire(end));
        assert!(
            !finished,
            "a check decided while a quota change held the state word"
        );
        assert!(
            decided.is_ok(),
            "the change left a TAT at `now`: {decided:?}"
        );
    }
}
