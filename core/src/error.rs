//! Configuration errors, shared by every machine's builder.
//!
//! Configs are validated once, in `XConfig::builder()...build()`; after that `X::new(config,
//! now)` cannot fail and no input can make a machine panic. Each variant names the offending
//! field and says what to change.
//!
//! ```
//! use keel_core::ConfigError;
//!
//! let e = ConfigError::Zero { field: "max_connections" };
//! assert_eq!(e.to_string(), "`max_connections` must be greater than zero");
//! ```

/// A configuration was rejected by its builder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A count, capacity or duration that must be positive was zero.
    #[error("`{field}` must be greater than zero")]
    Zero {
        /// The builder field, e.g. `"max_connections"`.
        field: &'static str,
    },
    /// A lower bound exceeded its upper bound.
    #[error("`{min}` must not exceed `{max}`: lower `{min}` or raise `{max}`")]
    InvertedRange {
        /// The lower-bound field.
        min: &'static str,
        /// The upper-bound field.
        max: &'static str,
    },
    /// A value is outside the range the machine supports.
    #[error("`{field}` is out of range: {expected}")]
    OutOfRange {
        /// The builder field.
        field: &'static str,
        /// What the field must be, e.g. `"a ratio between 0.0 and 1.0"`.
        expected: &'static str,
    },
    /// A combination of values would overflow the machine's arithmetic.
    #[error("`{field}` overflows: {hint}")]
    Overflow {
        /// The builder field.
        field: &'static str,
        /// What to change, e.g. `"use a longer period or a smaller burst"`.
        hint: &'static str,
    },
    /// A setting that has no safe default here must be given.
    #[error("`{field}` must be set: {hint}")]
    Missing {
        /// The builder field.
        field: &'static str,
        /// How to set it.
        hint: &'static str,
    },
    /// Two settings cannot be used together.
    #[error("`{field}` conflicts with `{other}`: {hint}")]
    Conflict {
        /// The field that was set.
        field: &'static str,
        /// The field it conflicts with.
        other: &'static str,
        /// What to change.
        hint: &'static str,
    },
}

/// A request a machine did not admit: why, and when to try again.
///
/// The one rejection shape of every admission in keel (`try_acquire(now)` on the breaker, the
/// limit, the bulkhead, shutdown and the rate limiters): `reason` is the machine's own reason
/// type, and `retry_at` is the absolute instant at which the same request would be admitted,
/// when the machine knows one (a rate limiter always does, unless the request can never
/// conform). `None` means no instant is known (a slot frees when some holder releases it) or the
/// request can never be admitted; the reason says which.
///
/// ```
/// use keel_core::limit::{Limit, LimitConfig, Overflow};
/// use keel_core::{Instant, Rejected};
///
/// let mut limit = Limit::new(LimitConfig::builder().max(1).build()?);
/// let permit = limit.try_acquire(Instant::ZERO).expect("a slot is free");
/// let rejected: Rejected<Overflow> = limit.try_acquire(Instant::ZERO).unwrap_err();
/// assert_eq!(rejected.reason, Overflow::Backpressure); // stop accepting until a release
/// assert_eq!(rejected.retry_at, None); // only a release frees a slot
/// limit.on_release(Instant::ZERO, permit);
/// # Ok::<(), keel_core::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[must_use = "a rejection says why and when to try again"]
pub struct Rejected<R> {
    /// Why the request was not admitted.
    pub reason: R,
    /// When the same request would be admitted, if the machine knows; `None` when no instant
    /// is known or it never will be.
    pub retry_at: Option<crate::Instant>,
}

impl<R> Rejected<R> {
    /// How long from `now` until [`retry_at`](Self::retry_at) (zero if it has passed), or
    /// `None` when no instant is known or the request can never be admitted: the wait a rate
    /// limiter's caller sleeps (governor's `NotUntil::wait_time_from`).
    ///
    /// ```
    /// use core::time::Duration;
    /// use keel_core::{Instant, Rejected};
    ///
    /// let r = Rejected { reason: (), retry_at: Some(Instant::from_millis(300)) };
    /// assert_eq!(r.wait_from(Instant::from_millis(100)), Some(Duration::from_millis(200)));
    /// assert_eq!(r.wait_from(Instant::from_secs(1)), Some(Duration::ZERO));
    /// assert_eq!(Rejected { reason: (), retry_at: None }.wait_from(Instant::ZERO), None);
    /// ```
    #[must_use]
    pub fn wait_from(&self, now: crate::Instant) -> Option<core::time::Duration> {
        self.retry_at.map(|t| t.saturating_duration_since(now))
    }
}

/// The reason's own message (which says what to change), then the retry instant when known.
impl<R: core::fmt::Display> core::fmt::Display for Rejected<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}", self.reason)?;
        if let Some(t) = self.retry_at {
            write!(f, " (retry at {:?})", t.as_duration())?;
        }
        Ok(())
    }
}

impl<R: core::fmt::Debug + core::fmt::Display> core::error::Error for Rejected<R> {}

#[cfg(test)]
mod tests {
    use core::fmt::Write;
    use core::time::Duration;

    use super::Rejected;
    use crate::Instant;

    /// A fixed buffer, so the test also runs without `alloc`.
    struct Buf {
        bytes: [u8; 128],
        len: usize,
    }

    impl Write for Buf {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            let end = self.len + s.len();
            let dst = self.bytes.get_mut(self.len..end).ok_or(core::fmt::Error)?;
            dst.copy_from_slice(s.as_bytes());
            self.len = end;
            Ok(())
        }
    }

    fn shown(r: &Rejected<&str>, expected: &str) {
        let mut buf = Buf {
            bytes: [0; 128],
            len: 0,
        };
        write!(buf, "{r}").expect("fits the buffer");
        assert_eq!(buf.bytes.get(..buf.len), Some(expected.as_bytes()));
    }

    #[test]
    fn display_is_the_reason_then_the_retry_instant_when_known() {
        let at = Some(Instant::from_millis(1_500));
        shown(
            &Rejected {
                reason: "full",
                retry_at: at,
            },
            "full (retry at 1.5s)",
        );
        shown(
            &Rejected {
                reason: "full",
                retry_at: None,
            },
            "full",
        );
    }

    #[test]
    fn wait_from_is_the_time_left_until_retry_at() {
        let r = Rejected {
            reason: (),
            retry_at: Some(Instant::from_millis(300)),
        };
        assert_eq!(
            r.wait_from(Instant::from_millis(100)),
            Some(Duration::from_millis(200))
        );
        assert_eq!(r.wait_from(Instant::from_secs(1)), Some(Duration::ZERO));
        let never = Rejected {
            reason: (),
            retry_at: None,
        };
        assert_eq!(never.wait_from(Instant::ZERO), None);
    }
}
