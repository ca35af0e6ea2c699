//! Time as an input.
//!
//! The core never reads a clock. [`Instant`] is a count of nanoseconds on the caller's own
//! monotonic clock (its epoch is the caller's choice, typically process start); durations are
//! [`core::time::Duration`]. Every operation saturates: adding [`Duration::MAX`] to an instant
//! gives [`Instant::MAX`], subtracting a later instant gives [`Duration::ZERO`].
//!
//! Machines keep a [`Monotonic`] to clamp a `now` older than the newest one seen, so a clock
//! that steps backwards (or two threads racing to report the time) never rewinds a machine.
//!
//! ```
//! use core::time::Duration;
//! use keel_core::time::{Instant, Monotonic};
//!
//! let t = Instant::from_nanos(1_000);
//! assert_eq!(t + Duration::from_nanos(500), Instant::from_nanos(1_500));
//! assert_eq!(t + Duration::MAX, Instant::MAX); // saturates, never panics
//! assert_eq!(Instant::ZERO.saturating_duration_since(t), Duration::ZERO);
//!
//! let mut clock = Monotonic::new(t);
//! assert_eq!(clock.observe(Instant::from_nanos(10)), t); // a step back is clamped
//! ```

use core::ops::{Add, AddAssign, Sub};
use core::time::Duration;

/// A point in time: nanoseconds since an epoch chosen by the caller, on a monotonic clock.
///
/// `u64` nanoseconds cover about 584 years. Arithmetic saturates at [`Instant::ZERO`] and
/// [`Instant::MAX`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

impl Instant {
    /// The epoch of the caller's clock.
    pub const ZERO: Instant = Instant(0);
    /// The latest representable instant (about 584 years after the epoch). Only reached by
    /// saturation, e.g. `now + Duration::MAX`.
    pub const MAX: Instant = Instant(u64::MAX);

    /// An instant `nanos` nanoseconds after the epoch.
    #[inline]
    #[must_use]
    pub const fn from_nanos(nanos: u64) -> Instant {
        Instant(nanos)
    }

    /// An instant `millis` milliseconds after the epoch (saturating).
    #[inline]
    #[must_use]
    pub const fn from_millis(millis: u64) -> Instant {
        Instant(millis.saturating_mul(1_000_000))
    }

    /// An instant `secs` seconds after the epoch (saturating).
    #[inline]
    #[must_use]
    pub const fn from_secs(secs: u64) -> Instant {
        Instant(secs.saturating_mul(1_000_000_000))
    }

    /// An instant `since_epoch` after the epoch (saturating).
    #[inline]
    #[must_use]
    pub const fn from_duration(since_epoch: Duration) -> Instant {
        Instant(duration_to_nanos(since_epoch))
    }

    /// Nanoseconds since the epoch.
    #[inline]
    #[must_use]
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time since the epoch.
    #[inline]
    #[must_use]
    pub const fn as_duration(self) -> Duration {
        Duration::from_nanos(self.0)
    }

    /// `self + d`, saturating at [`Instant::MAX`].
    #[inline]
    #[must_use]
    pub const fn saturating_add(self, d: Duration) -> Instant {
        Instant(self.0.saturating_add(duration_to_nanos(d)))
    }

    /// `self - d`, saturating at [`Instant::ZERO`].
    #[inline]
    #[must_use]
    pub const fn saturating_sub(self, d: Duration) -> Instant {
        Instant(self.0.saturating_sub(duration_to_nanos(d)))
    }

    /// `self + d`, or `None` if it would pass [`Instant::MAX`].
    #[inline]
    #[must_use]
    pub const fn checked_add(self, d: Duration) -> Option<Instant> {
        let nanos = d.as_nanos();
        if nanos > u64::MAX as u128 {
            return None;
        }
        match self.0.checked_add(nanos as u64) {
            Some(n) => Some(Instant(n)),
            None => None,
        }
    }

    /// Time elapsed from `earlier` to `self`, or zero if `earlier` is later.
    #[inline]
    #[must_use]
    pub const fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// The later of two instants.
    #[inline]
    #[must_use]
    pub fn max(self, other: Instant) -> Instant {
        Ord::max(self, other)
    }

    /// The earlier of two instants.
    #[inline]
    #[must_use]
    pub fn min(self, other: Instant) -> Instant {
        Ord::min(self, other)
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    /// Saturating: never panics.
    #[inline]
    fn add(self, d: Duration) -> Instant {
        self.saturating_add(d)
    }
}

impl AddAssign<Duration> for Instant {
    #[inline]
    fn add_assign(&mut self, d: Duration) {
        *self = self.saturating_add(d);
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    /// Saturating: zero when `rhs` is later.
    #[inline]
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_duration_since(rhs)
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;
    /// Saturating at [`Instant::ZERO`].
    #[inline]
    fn sub(self, d: Duration) -> Instant {
        self.saturating_sub(d)
    }
}

/// A duration's length in nanoseconds, saturating at `u64::MAX` (about 584 years).
#[inline]
#[must_use]
pub const fn duration_to_nanos(d: Duration) -> u64 {
    let n = d.as_nanos();
    if n > u64::MAX as u128 {
        u64::MAX
    } else {
        n as u64
    }
}

/// The newest instant a machine has seen: clamps a `now` that went backwards.
///
/// Every machine owns one and passes each incoming `now` through [`Monotonic::observe`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Monotonic {
    newest: Instant,
}

impl Monotonic {
    /// Starts at `now`.
    #[inline]
    #[must_use]
    pub const fn new(now: Instant) -> Monotonic {
        Monotonic { newest: now }
    }

    /// Records `now` and returns it, or the newest instant seen so far if `now` is older.
    #[inline]
    pub fn observe(&mut self, now: Instant) -> Instant {
        if now > self.newest {
            self.newest = now;
        }
        self.newest
    }

    /// The newest instant seen.
    #[inline]
    #[must_use]
    pub const fn get(&self) -> Instant {
        self.newest
    }
}

/// A deadline computed as `now + d` (saturating) that reached the end of the clock never comes:
/// `None`. Every machine reads "never" this way, so none uses [`Instant::MAX`] as a sentinel in
/// what it returns.
pub(crate) fn never_at_the_end(deadline: Instant) -> Option<Instant> {
    Some(deadline).filter(|d| *d != Instant::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_at_both_ends() {
        let t = Instant::from_nanos(10);
        assert_eq!(t + Duration::MAX, Instant::MAX);
        assert_eq!(Instant::MAX + Duration::from_nanos(1), Instant::MAX);
        assert_eq!(t - Duration::from_secs(1), Instant::ZERO);
        assert_eq!(t - Instant::MAX, Duration::ZERO);
        assert_eq!(Instant::MAX - Instant::ZERO, Duration::from_nanos(u64::MAX));
        assert_eq!(t.checked_add(Duration::MAX), None);
        assert_eq!(Instant::MAX.checked_add(Duration::from_nanos(1)), None);
        assert_eq!(
            t.checked_add(Duration::from_nanos(5)),
            Some(Instant::from_nanos(15))
        );
        assert_eq!(Instant::from_secs(u64::MAX), Instant::MAX);
        assert_eq!(Instant::from_millis(3).as_nanos(), 3_000_000);
        assert_eq!(Instant::from_duration(Duration::MAX), Instant::MAX);
    }

    #[test]
    fn does_not_rewind_on_bad_instant() {
        let mut m = Monotonic::new(Instant::from_secs(5));
        assert_eq!(m.observe(Instant::from_secs(1)), Instant::from_secs(5));
        assert_eq!(m.observe(Instant::from_secs(6)), Instant::from_secs(6));
        assert_eq!(m.observe(Instant::ZERO), Instant::from_secs(6));
        assert_eq!(m.get(), Instant::from_secs(6));
    }

    /// Durations just past `u64::MAX` nanoseconds: their low 64 bits are small (`Duration::MAX`
    /// happens to truncate to `u64::MAX`, which hides a truncation), so these pin the edges.
    #[test]
    fn durations_past_the_end_of_the_clock_saturate_not_truncate() {
        let max = Duration::from_nanos(u64::MAX);
        let past = max + Duration::from_nanos(2); // 2^64 + 1 ns, truncates to 1
        assert_eq!(duration_to_nanos(max), u64::MAX);
        assert_eq!(duration_to_nanos(past), u64::MAX);
        assert_eq!(Instant::ZERO.checked_add(max), Some(Instant::MAX));
        assert_eq!(Instant::ZERO.checked_add(past), None);
        assert_eq!(Instant::from_nanos(1).checked_add(max), None);
        let mut t = Instant::from_secs(1);
        t += Duration::from_millis(500);
        assert_eq!(t, Instant::from_millis(1_500));
        t += past;
        assert_eq!(t, Instant::MAX);
    }
}
