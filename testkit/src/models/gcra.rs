//! The GCRA ([`keel_core::rate::Gcra`], and the shared
//! [`SharedRateLimiter`](keel_core::sync::gcra::SharedRateLimiter) on one thread) as its docs
//! define it.
//!
//! - **The rule, over the history.** With `T` the emission interval and `burst` the burst, a
//!   batch of `n` (`1 ≤ n ≤ burst`) is admitted at `t` iff, for every admission instant `a`
//!   recorded so far, the requests admitted from `a` on plus `n` fit in `burst + (t − a) / T`
//!   (in real numbers: `a + T × (admitted from a on + n) ≤ t + burst × T`). A rejection's
//!   `retry_at` is the earliest `t` at which that holds. `n = 0` is always admitted; `n > burst`
//!   never is ([`RateLimited::InsufficientCapacity`], `retry_at: None`). The model keeps the
//!   admissions themselves, not the machine's one theoretical arrival time, and forgets an
//!   admission instant only once it can no longer bind (`a + T × (admitted from a on) ≤` the
//!   newest instant: every later admission then binds at least as hard); its requests still
//!   count in the windows of the instants before it.
//! - **A quota change** carries the capacity left over, counted in requests (fractions
//!   included): with `used` the requests the old quota still counts at `now`
//!   (`burst_old − available`), the new quota counts `max(0, burst_new − available)`, its time
//!   rounded up to the nanosecond. That debt is one more entry in the history.
//! - **The window guarantee** ([`WindowLog`]): admissions in any window `[a, b]` never exceed
//!   `burst + floor((b − a) / T)`, for admissions in any order (a limiter fed a clock that jumps
//!   backwards, between clock faults).
//!
//! Time is clamped as the models do: a `now` older than the newest seen counts as the newest
//! (feed the machine the same clamped instant). Within `(burst + 1) × T` of the end of the clock
//! the machine saturates and the model gives no answer ([`GcraModel::is_void`]).
//!
//! ```
//! use std::num::NonZeroU32;
//! use keel_core::rate::{Gcra, Quota};
//! use keel_core::time::Instant;
//! use keel_testkit::models::gcra::GcraModel;
//!
//! let quota = Quota::per_second(NonZeroU32::new(2).unwrap())?;
//! let (mut gcra, mut model) = (Gcra::new(quota, Instant::ZERO), GcraModel::new(&quota, Instant::ZERO));
//! for ms in [0, 0, 0, 500] {
//!     let now = Instant::from_millis(ms);
//!     let want = model.decide_n(now, 1).expect("exact");
//!     let got = gcra.try_acquire(now);
//!     assert_eq!(got, want);
//!     model.on_decision(now, 1, got.is_ok()).expect("the window guarantee holds");
//! }
//! # Ok::<(), keel_core::ConfigError>(())
//! ```

use keel_core::rate::{Quota, RateLimited};
use keel_core::time::{duration_to_nanos, Instant};
use keel_core::Rejected;

/// Most history entries kept; beyond, the model gives up ([`GcraModel::is_void`]).
pub const MAX_HISTORY: usize = 4096;

/// One admission (or a carried-over debt): at `at`, `n` requests.
#[derive(Clone, Copy, Debug)]
struct Entry {
    at: u64,
    n: u64,
}

/// The reference model of a GCRA limiter. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct GcraModel {
    t: u64,
    burst: u32,
    newest: u64,
    /// Admissions that can still bind, in the order they were made.
    history: Vec<Entry>,
    /// Near the end of the clock, or the history overflowed: no answers.
    void: bool,
}

impl GcraModel {
    /// A fresh limiter at `now` (its whole burst available).
    #[must_use]
    pub fn new(quota: &Quota, now: Instant) -> GcraModel {
        let mut m = GcraModel {
            t: duration_to_nanos(quota.emission_interval()).max(1),
            burst: quota.burst().get(),
            newest: now.as_nanos(),
            history: Vec::new(),
            void: false,
        };
        m.watch_end();
        m
    }

    /// No answers any more: near the end of the clock (where the machine saturates) or after
    /// [`MAX_HISTORY`] binding admissions.
    #[must_use]
    pub fn is_void(&self) -> bool {
        self.void
    }

    /// The burst in force.
    #[must_use]
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// The emission interval in force, in nanoseconds.
    #[must_use]
    pub fn t_nanos(&self) -> u64 {
        self.t
    }

    fn watch_end(&mut self) {
        let reach = u128::from(self.t) * (u128::from(self.burst) + 1);
        if u128::from(self.newest) + reach >= u128::from(u64::MAX - 2) {
            self.void = true;
        }
    }

    fn clamp(&self, now: Instant) -> u64 {
        now.as_nanos().max(self.newest)
    }

    /// `a + T × (requests from this entry on)` for every entry, newest first.
    fn bounds(&self) -> impl Iterator<Item = u128> + '_ {
        let t = u128::from(self.t);
        let mut after = 0u128;
        self.history.iter().rev().map(move |e| {
            after += u128::from(e.n);
            u128::from(e.at) + t * after
        })
    }

    /// The theoretical arrival time: the latest bound, or `now` with nothing owed.
    fn tat(&self, now: u64) -> u128 {
        self.bounds().max().unwrap_or(0).max(u128::from(now))
    }

    /// The machine's answer to `try_acquire_n(now, n)` (`try_acquire` for `n = 1`), or `None`
    /// once the model [is void](Self::is_void). Changes nothing.
    #[must_use]
    pub fn decide_n(&self, now: Instant, n: u32) -> Option<Result<(), Rejected<RateLimited>>> {
        if self.void {
            return None;
        }
        if n == 0 {
            return Some(Ok(()));
        }
        if n > self.burst {
            return Some(Err(Rejected {
                reason: RateLimited::InsufficientCapacity { burst: self.burst },
                retry_at: None,
            }));
        }
        let now = self.clamp(now);
        let (t, burst) = (u128::from(self.t), u128::from(self.burst));
        // The earliest instant at which every entry's window has room for `n` more.
        let earliest = self
            .bounds()
            .map(|b| (b + t * u128::from(n)).saturating_sub(t * burst))
            .max()
            .unwrap_or(0);
        if earliest <= u128::from(now) {
            return Some(Ok(()));
        }
        let at = u64::try_from(earliest).unwrap_or(u64::MAX);
        Some(Err(Rejected {
            reason: RateLimited::OverRate,
            retry_at: Some(Instant::from_nanos(at)),
        }))
    }

    /// How many single requests would be admitted at `now` (0 to the burst), or `None` once
    /// void.
    #[must_use]
    pub fn remaining(&self, now: Instant) -> Option<u32> {
        if self.void {
            return None;
        }
        let now = self.clamp(now);
        let (t, burst) = (u128::from(self.t), u128::from(self.burst));
        let horizon = u128::from(now) + t * burst;
        let tat = self.tat(now);
        let fit = horizon.saturating_sub(tat) / t;
        Some(u32::try_from(fit.min(burst)).unwrap_or(self.burst))
    }

    /// When the whole burst is available again (`now` if it is), or `None` once void.
    #[must_use]
    pub fn reset_at(&self, now: Instant) -> Option<Instant> {
        if self.void {
            return None;
        }
        let tat = self.tat(self.clamp(now));
        Some(Instant::from_nanos(u64::try_from(tat).unwrap_or(u64::MAX)))
    }

    /// Records the machine's decision on `n` requests at `now` (admitted or not) and checks it:
    /// while the model is exact, `admitted` must be the model's answer.
    ///
    /// # Errors
    ///
    /// What went wrong, when the machine admitted what the rule forbids or refused what it
    /// allows.
    pub fn on_decision(&mut self, now: Instant, n: u32, admitted: bool) -> Result<(), String> {
        if let Some(want) = self.decide_n(now, n) {
            if want.is_ok() != admitted {
                return Err(format!(
                    "{n} at {now:?}: the machine {} but the rule says {want:?}",
                    if admitted { "admitted" } else { "refused" }
                ));
            }
        }
        self.newest = self.clamp(now);
        self.watch_end();
        if admitted && n > 0 {
            self.history.push(Entry {
                at: self.newest,
                n: u64::from(n),
            });
        }
        self.forget();
        Ok(())
    }

    /// Drops the entries that can no longer bind (see the module docs). A dropped entry's
    /// requests still count for every older entry's window: they are added to the entry
    /// before it.
    fn forget(&mut self) {
        let newest = u128::from(self.newest);
        let mut bounds: Vec<u128> = self.bounds().collect();
        bounds.reverse();
        let mut kept: Vec<Entry> = Vec::with_capacity(self.history.len());
        for (e, b) in self.history.iter().zip(bounds) {
            if b > newest {
                kept.push(*e);
            } else if let Some(older) = kept.last_mut() {
                older.n += e.n;
            }
        }
        self.history = kept;
        if self.history.len() > MAX_HISTORY {
            self.void = true;
            self.history.clear();
        }
    }

    /// Switches to `quota` at `now`, carrying the used capacity over in requests (see the
    /// module docs): the machine's `set_quota`.
    pub fn set_quota(&mut self, now: Instant, quota: &Quota) {
        let now = self.clamp(now);
        self.newest = now;
        let (t_old, b_old) = (u128::from(self.t), u128::from(self.burst));
        let t_new = u128::from(duration_to_nanos(quota.emission_interval()).max(1));
        let b_new = u128::from(quota.burst().get());
        let debt = self.tat(now) - u128::from(now);
        // (burst_new − available_old) × t_old, available_old = burst_old − debt / t_old.
        let used = (b_new * t_old + debt).saturating_sub(b_old * t_old);
        let new_debt = used
            .checked_mul(t_new)
            .map_or(u128::MAX, |x| x.div_ceil(t_old));
        self.t = u64::try_from(t_new).unwrap_or(u64::MAX);
        self.burst = quota.burst().get();
        self.history.clear();
        match u64::try_from(u128::from(now) + new_debt) {
            Ok(at) if new_debt > 0 => self.history.push(Entry { at, n: 0 }),
            Ok(_) => {}
            Err(_) => self.void = true,
        }
        self.watch_end();
    }
}

/// The window guarantee over admissions in any order: in every window `[a, b]`, at most
/// `burst + floor((b − a) / T)` requests. Holds at most [`WindowLog::CAPACITY`] admissions
/// (then checks nothing more until [`clear`](Self::clear)).
#[derive(Clone, Debug, Default)]
pub struct WindowLog {
    entries: Vec<(u64, u64)>,
    full: bool,
}

impl WindowLog {
    /// Admissions held before the log stops checking.
    pub const CAPACITY: usize = 384;

    /// An empty log.
    #[must_use]
    pub fn new() -> WindowLog {
        WindowLog::default()
    }

    /// Forgets every admission (after a quota change or a clock fault: a fresh start).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.full = false;
    }

    /// Records `n` requests admitted at `at`.
    pub fn push(&mut self, at: Instant, n: u32) {
        if n == 0 {
            return;
        }
        if self.entries.len() >= Self::CAPACITY {
            self.full = true;
        } else {
            self.entries.push((at.as_nanos(), u64::from(n)));
        }
    }

    /// Checks every window under a limit of `burst` per instant and one request per `t_ns`.
    ///
    /// # Errors
    ///
    /// The first window that holds too many.
    pub fn check(&mut self, t_ns: u64, burst: u32) -> Result<(), String> {
        if self.full {
            return Ok(());
        }
        let t = u128::from(t_ns.max(1));
        self.entries.sort_unstable();
        for (j, &(b, _)) in self.entries.iter().enumerate() {
            let mut count = 0u128;
            for &(a, n) in self.entries[..=j].iter().rev() {
                count += u128::from(n);
                let allowed = u128::from(burst) + u128::from(b - a) / t;
                if count > allowed {
                    return Err(format!(
                        "{count} admitted in [{a}, {b}] ns, at most {allowed} (burst {burst}, T {t_ns} ns)"
                    ));
                }
            }
        }
        Ok(())
    }
}
