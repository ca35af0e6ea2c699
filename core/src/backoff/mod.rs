//! Backoff schedules with jitter: how long to wait before the next retry, and when to give up.
//!
//! # What it protects against
//!
//! A client that retries at once, or at the same fixed intervals as every other client, turns one
//! failure into a synchronised wave of retries that keeps the dependency down. The seed's retry
//! added 0-10 % jitter (which leaves the waves intact), retried forever within the attempt count
//! whatever the elapsed time, and ignored servers that say when to come back. This module
//! spreads retries with real jitter (AWS "Exponential Backoff and Jitter", 2015), stops after a
//! number of attempts or a time budget, and honours a server's `Retry-After` hint within a cap.
//! Pair it with a [retry budget](crate::budget) so a failing dependency cannot multiply the load.
//!
//! # The contract
//!
//! [`Backoff::new(config, now)`](Backoff::new) marks the **first attempt** at `now`. After each
//! failed attempt call [`Backoff::next_delay(now)`](Backoff::next_delay) (or
//! [`next_delay_with_hint`](Backoff::next_delay_with_hint) when the server sent `Retry-After`):
//! it answers [`RetryDecision::RetryAt(t)`](RetryDecision::RetryAt), an absolute instant, or
//! [`RetryDecision::GiveUp(reason)`](RetryDecision::GiveUp). A give-up is sticky until
//! [`Backoff::reset`] starts a new operation. The machine never reads a clock, never allocates,
//! never panics; `now` going backwards is clamped; all arithmetic saturates.
//!
//! ## Schedules (the un-jittered delay `d(n)` before retry `n = 1, 2, ...`)
//!
//! | kind | `d(n)` |
//! | --- | --- |
//! | [`constant(delay)`](BackoffConfig::constant) | `delay` |
//! | [`linear(base, step)`](BackoffConfig::linear) | `min(cap, base + (n - 1) * step)` |
//! | [`exponential(base, cap)`](BackoffConfig::exponential) | `min(cap, base * (factor_percent / 100)^(n - 1))` |
//!
//! The exponential factor is an integer percentage (`200` doubles, `150` grows by half); each
//! step is computed as `ceil(d * factor_percent / 100)` in integer nanoseconds (rounded up so
//! that a 1 ns base still grows) and saturates at the cap instead of overflowing.
//!
//! ## Jitter (the delay actually returned, `cap` included in every range)
//!
//! | [`Jitter`] | delay | floor |
//! | --- | --- | --- |
//! | `None` | `d(n)` | `d(n)` |
//! | `Full` | uniform in `[0, d(n)]` | `0` |
//! | `Equal` | `floor(d(n) / 2) + uniform in [0, d(n) - floor(d(n) / 2)]` | `d(n) / 2` |
//! | `Decorrelated` | `min(cap, uniform in [base, 3 * prev])`, `prev` starting at `base` | `base` |
//!
//! Because `d(n) <= cap`, **no jittered delay ever exceeds the cap** and none goes below its
//! floor (backon, for one, adds its jitter on top of the capped delay, so its delays can pass
//! `max_delay` by up to `min_delay`). Decorrelated jitter is the AWS blog's formula
//! (`sleep = min(cap, random_between(base, sleep * 3))`); it ignores the schedule's growth and
//! takes only `base` and `cap` from it. Polly offers a smoother alternative,
//! `DecorrelatedJitterBackoffV2` (Polly.Contrib.WaitAndRetry, the default jittered exponential in
//! Polly v8), which avoids the AWS formula's clustering at the cap but needs `exp`/`tanh`-style
//! float functions; keel does not implement it.
//!
//! ## Stop conditions (both optional)
//!
//! - `max_attempts(n)`: at most `n` attempts **including the first** (AWS's meaning), so at most
//!   `n - 1` retries. A retry taken on a server hint counts as an attempt.
//! - `max_elapsed(d)`: no retry is scheduled after `first attempt + d`. If the next delay would
//!   end past that deadline the machine **gives up** rather than clamping the delay to the time
//!   left (the choice of cenkalti/backoff's `MaxElapsedTime`, which stops when
//!   `elapsed + next > max`): a retry squeezed into the last moments of the budget rarely has
//!   time to succeed, and the caller's own deadline would cut it off anyway. A retry that ends
//!   exactly at the deadline is allowed.
//!
//! ## Server hints
//!
//! [`Backoff::next_delay_with_hint`] treats the server's `Retry-After` as a **lower bound**, not
//! as a replacement for the schedule (RFC 9110 §10.2.3: the time the client "ought to wait"):
//!
//! ```text
//! hinted  = clamp(retry_after, min_retry_after, max_retry_after)
//! delay   = max(hinted, jittered schedule delay)
//! ```
//!
//! - `max_retry_after` (default: the cap) bounds what a server can impose, so the delay never
//!   exceeds `max(cap, max_retry_after)`.
//! - `min_retry_after` (default [`DEFAULT_MIN_RETRY_AFTER`], 1 ms) bounds how little it can ask
//!   for: `Retry-After: 0` means "after a timer tick", never "at once".
//! - The schedule still applies: its jittered delay is drawn and the schedule advances one step
//!   exactly as without a hint, and the longer of the two wins. A server that keeps answering
//!   `Retry-After: 0` (or a proxy that strips the header to `0`) therefore cannot turn the
//!   client's exponential backoff into a tight loop; a hint longer than the backoff is honoured
//!   as given (the server chose the time, often already spread per client, e.g. a GCRA's
//!   `retry_at`). Because the draw is always made, the delays of later retries are the same
//!   whether or not a hint came before them.
//!
//! Why 1 ms: it is the resolution of tokio's timer wheel and of gRPC's `grpc-retry-pushback-ms`
//! header, the finest wait a hint can meaningfully ask for; with it, even a zero-delay schedule
//! (`constant(0)`) fed `Retry-After: 0` makes at most 1 000 attempts per second per caller
//! (and the retry driver yields to its executor before every retry whatever the delay). It is
//! a floor against a tight loop, not a backoff: the schedule does the backing off.
//! [`min_retry_after(Duration::ZERO)`](BackoffConfigBuilder::min_retry_after) turns it off.
//!
//! # Defaults and their source
//!
//! [`BackoffConfig::builder()`] is AWS SDK for Java v2's *standard* retry mode
//! (`SdkDefaultRetrySetting.Standard`): exponential from a 100 ms base, doubling
//! (`factor_percent = 200`), capped at 20 s (`MAX_BACKOFF`), full jitter, `max_attempts = 3`
//! (the first attempt and two retries). No elapsed-time limit; `max_retry_after` = the cap;
//! `min_retry_after` = 1 ms (see *Server hints*).
//! The AWS SDK for Rust (smithy) uses the same cap and attempts with a 1 s base.
//!
//! # Example
//!
//! ```
//! use core::time::Duration;
//! use keel_core::backoff::{Backoff, BackoffConfig, GiveUpReason, Jitter, RetryDecision};
//! use keel_core::time::Instant;
//!
//! let config = BackoffConfig::exponential(Duration::from_millis(100), Duration::from_secs(1))
//!     .jitter(Jitter::None)
//!     .max_attempts(4)
//!     .seed(7)
//!     .build()?;
//! let start = Instant::from_secs(10);
//! let mut backoff = Backoff::new(config, start);
//!
//! // The first attempt failed at `start`: retry after 100 ms.
//! assert_eq!(backoff.next_delay(start), RetryDecision::RetryAt(start + Duration::from_millis(100)));
//! // The server says "Retry-After: 300 ms", longer than the schedule's 200 ms: the hint wins.
//! let t = start + Duration::from_millis(150);
//! let hint = Duration::from_millis(300);
//! assert_eq!(backoff.next_delay_with_hint(t, hint), RetryDecision::RetryAt(t + hint));
//! // The schedule kept its place: the third retry waits 400 ms.
//! let t = start + Duration::from_millis(500);
//! assert_eq!(backoff.next_delay(t), RetryDecision::RetryAt(t + Duration::from_millis(400)));
//! // Four attempts made: give up.
//! assert_eq!(backoff.next_delay(t), RetryDecision::GiveUp(GiveUpReason::MaxAttempts));
//!
//! // Simulations can read the schedule without a clock.
//! backoff.reset(t);
//! let delays: [u64; 3] = core::array::from_fn(|_| {
//!     backoff.delays().next().map_or(0, |d| d.as_millis() as u64)
//! });
//! assert_eq!(delays, [100, 200, 400]);
//! # Ok::<(), keel_core::ConfigError>(())
//! ```

use core::time::Duration;

mod config;

use crate::rng::Rng;
use crate::time::{duration_to_nanos, Instant, Monotonic};
pub use config::{
    BackoffConfig, BackoffConfigBuilder, Jitter, Schedule, DEFAULT_BASE, DEFAULT_CAP,
    DEFAULT_FACTOR_PERCENT, DEFAULT_MAX_ATTEMPTS, DEFAULT_MIN_RETRY_AFTER,
};

/// Why a [`Backoff`] stopped scheduling retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GiveUpReason {
    /// `max_attempts` attempts (the first one included) have been made.
    MaxAttempts,
    /// The next retry would start after `first attempt + max_elapsed`.
    MaxElapsed,
}

/// What to do after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[must_use]
pub enum RetryDecision {
    /// Retry at this instant (absolute, on the caller's clock).
    RetryAt(Instant),
    /// Do not retry: report the last error.
    GiveUp(GiveUpReason),
}

impl RetryDecision {
    /// The instant to retry at, or `None` for a give-up.
    #[inline]
    #[must_use]
    pub const fn retry_at(self) -> Option<Instant> {
        match self {
            RetryDecision::RetryAt(t) => Some(t),
            RetryDecision::GiveUp(_) => None,
        }
    }
}

/// Counters of a [`Backoff`], across resets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct BackoffStats {
    /// Retries scheduled (`RetryAt` answers and delays yielded by [`Backoff::delays`]).
    pub retries: u64,
    /// Retries whose delay came from a server hint.
    pub hints: u64,
    /// Hints longer than `max_retry_after`, cut to it.
    pub hints_capped: u64,
    /// Hints shorter than `min_retry_after`, raised to it.
    pub hints_raised: u64,
    /// Operations that gave up after `max_attempts`.
    pub gave_up_max_attempts: u64,
    /// Operations that gave up because the next retry would pass `max_elapsed`.
    pub gave_up_max_elapsed: u64,
    /// Calls to [`Backoff::reset`].
    pub resets: u64,
}

/// The backoff state machine for one operation and its retries. See the [module docs](self).
///
/// | group | methods |
/// | --- | --- |
/// | construct | [`new`](Self::new) |
/// | inputs | [`next_delay`](Self::next_delay), [`next_delay_with_hint`](Self::next_delay_with_hint) after each failed attempt |
/// | commands | [`reset`](Self::reset) to start a new operation |
/// | simulation | [`delays`](Self::delays) yields the same delays without a clock |
/// | getters | [`attempts`](Self::attempts), [`deadline`](Self::deadline), [`gave_up`](Self::gave_up), [`stats`](Self::stats), [`config`](Self::config) |
///
/// No timer and no events: the caller sleeps for the returned delay.
///
/// ```
/// use core::time::Duration;
/// use keel_core::backoff::{Backoff, BackoffConfig, Jitter, RetryDecision};
/// use keel_core::time::Instant;
///
/// let t0 = Instant::ZERO;
/// let config = BackoffConfig::exponential(Duration::from_millis(100), Duration::from_secs(1))
///     .jitter(Jitter::None)
///     .max_attempts(3)
///     .build()?;
/// let mut backoff = Backoff::new(config, t0);
/// assert_eq!(backoff.next_delay(t0), RetryDecision::RetryAt(t0 + Duration::from_millis(100)));
/// assert_eq!(backoff.next_delay(t0), RetryDecision::RetryAt(t0 + Duration::from_millis(200)));
/// assert!(matches!(backoff.next_delay(t0), RetryDecision::GiveUp(_))); // 3 attempts made
/// # Ok::<(), keel_core::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Backoff {
    config: BackoffConfig,
    rng: Rng,
    clock: Monotonic,
    deadline: Option<Instant>,
    /// The un-jittered delay of the next retry, in ns; always `<= cap_ns`.
    next_ns: u64,
    /// The previous decorrelated sleep, in ns; always in `[base_ns, cap_ns]`.
    prev_ns: u64,
    /// Attempts made, the first included.
    attempts: u32,
    gave_up: Option<GiveUpReason>,
    stats: BackoffStats,
}

impl Backoff {
    /// A machine whose first attempt starts at `now`.
    #[must_use]
    pub fn new(config: BackoffConfig, now: Instant) -> Backoff {
        let mut backoff = Backoff {
            config,
            rng: Rng::new(config.seed),
            clock: Monotonic::new(now),
            deadline: None,
            next_ns: 0,
            prev_ns: 0,
            attempts: 1,
            gave_up: None,
            stats: BackoffStats::default(),
        };
        backoff.restart(now);
        backoff
    }

    fn restart(&mut self, now: Instant) {
        let c = &self.config;
        self.deadline = c.max_elapsed.map(|d| now + d);
        // `base_ns <= cap_ns` holds for every built config; `min` keeps it true regardless.
        self.next_ns = c.base_ns.min(c.cap_ns);
        self.prev_ns = self.next_ns;
        self.attempts = 1;
        self.gave_up = None;
    }

    /// Starts a new operation whose first attempt is at `now`: the attempt count, the schedule
    /// and the elapsed-time budget start over. The random sequence continues (it is not
    /// re-seeded), so consecutive operations get different jitter.
    pub fn reset(&mut self, now: Instant) {
        let now = self.clock.observe(now);
        self.restart(now);
        self.stats.resets = self.stats.resets.saturating_add(1);
    }

    /// The attempt at `now` failed: when to retry, or give up.
    #[inline]
    pub fn next_delay(&mut self, now: Instant) -> RetryDecision {
        let now = self.clock.observe(now);
        match self.step() {
            Ok(delay_ns) => self.schedule(now, delay_ns),
            Err(reason) => RetryDecision::GiveUp(reason),
        }
    }

    /// The attempt at `now` failed and the server asked to wait `retry_after`: retry after
    /// `max(clamp(retry_after, min_retry_after, max_retry_after), jittered schedule delay)`
    /// (see the module docs, *Server hints*). The hint counts as an attempt and the schedule
    /// advances one step, as without a hint.
    pub fn next_delay_with_hint(&mut self, now: Instant, retry_after: Duration) -> RetryDecision {
        let now = self.clock.observe(now);
        let scheduled_ns = match self.step() {
            Ok(d) => d,
            Err(reason) => return RetryDecision::GiveUp(reason),
        };
        let hint_ns = duration_to_nanos(retry_after);
        let (min, max) = (
            self.config.min_retry_after_ns,
            self.config.max_retry_after_ns,
        );
        // `min <= max` holds for every built config; `min(max)` last keeps the cap regardless.
        let hinted_ns = hint_ns.max(min).min(max);
        let decision = self.schedule(now, hinted_ns.max(scheduled_ns));
        if let RetryDecision::RetryAt(_) = decision {
            self.stats.hints = self.stats.hints.saturating_add(1);
            if hint_ns > max {
                self.stats.hints_capped = self.stats.hints_capped.saturating_add(1);
            } else if hint_ns < min {
                self.stats.hints_raised = self.stats.hints_raised.saturating_add(1);
            }
        }
        decision
    }

    /// An iterator over the next delays, ignoring the elapsed-time budget (there is no clock):
    /// for simulations and schedules computed ahead. It shares the engine with
    /// [`next_delay`](Self::next_delay): each item counts as an attempt, and it ends when
    /// `max_attempts` is reached (never, if unlimited).
    pub fn delays(&mut self) -> Delays<'_> {
        Delays { backoff: self }
    }

    /// Attempts made or scheduled in the current operation, the first one included (1 after
    /// [`new`](Self::new) or [`reset`](Self::reset)).
    #[inline]
    #[must_use]
    pub const fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The instant after which no retry is scheduled (`first attempt + max_elapsed`), if any.
    #[inline]
    #[must_use]
    pub const fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Why the current operation gave up, if it did.
    #[inline]
    #[must_use]
    pub const fn gave_up(&self) -> Option<GiveUpReason> {
        self.gave_up
    }

    /// The configuration.
    #[inline]
    #[must_use]
    pub const fn config(&self) -> &BackoffConfig {
        &self.config
    }

    /// A snapshot of the counters.
    #[inline]
    #[must_use]
    pub const fn stats(&self) -> BackoffStats {
        self.stats
    }

    /// The engine: checks the attempt limit, draws the next (jittered) delay and advances the
    /// schedule. Does not count the attempt (see [`Self::commit`]).
    #[inline]
    fn step(&mut self) -> Result<u64, GiveUpReason> {
        if let Some(reason) = self.gave_up {
            return Err(reason);
        }
        if let Some(max) = self.config.max_attempts {
            if self.attempts >= max {
                return Err(self.give_up(GiveUpReason::MaxAttempts));
            }
        }
        let c = &self.config;
        let d = self.next_ns;
        if d < c.cap_ns {
            self.next_ns = match c.schedule {
                Schedule::Constant { .. } => d,
                Schedule::Linear { .. } => d.saturating_add(c.step_ns).min(c.cap_ns),
                Schedule::Exponential { factor_percent, .. } => {
                    grow(d, factor_percent).min(c.cap_ns)
                }
            };
        }
        Ok(match c.jitter {
            Jitter::None => d,
            Jitter::Full => self.rng.up_to(d),
            Jitter::Equal => {
                let half = d >> 1;
                half + self.rng.up_to(d - half)
            }
            Jitter::Decorrelated => {
                let high = self.prev_ns.saturating_mul(3);
                let sleep = self.rng.between(c.base_ns, high).min(c.cap_ns);
                self.prev_ns = sleep;
                sleep
            }
        })
    }

    #[inline]
    fn schedule(&mut self, now: Instant, delay_ns: u64) -> RetryDecision {
        let at = Instant::from_nanos(now.as_nanos().saturating_add(delay_ns));
        if let Some(deadline) = self.deadline {
            if at > deadline {
                return RetryDecision::GiveUp(self.give_up(GiveUpReason::MaxElapsed));
            }
        }
        self.commit();
        RetryDecision::RetryAt(at)
    }

    #[inline]
    fn commit(&mut self) {
        self.attempts = self.attempts.saturating_add(1);
        self.stats.retries = self.stats.retries.saturating_add(1);
    }

    #[cold]
    fn give_up(&mut self, reason: GiveUpReason) -> GiveUpReason {
        self.gave_up = Some(reason);
        let counter = match reason {
            GiveUpReason::MaxAttempts => &mut self.stats.gave_up_max_attempts,
            GiveUpReason::MaxElapsed => &mut self.stats.gave_up_max_elapsed,
        };
        *counter = counter.saturating_add(1);
        reason
    }
}

/// `ceil(d * factor_percent / 100)`, saturating at `u64::MAX` nanoseconds.
#[inline]
fn grow(d: u64, factor_percent: u32) -> u64 {
    match d.checked_mul(u64::from(factor_percent)) {
        // Division by a constant compiles to a multiply and a shift.
        Some(p) => p / 100 + u64::from(p % 100 != 0),
        None => grow_wide(d, factor_percent),
    }
}

#[cold]
fn grow_wide(d: u64, factor_percent: u32) -> u64 {
    let p = u128::from(d) * u128::from(factor_percent);
    let q = p / 100 + u128::from(p % 100 != 0);
    u64::try_from(q).unwrap_or(u64::MAX)
}

/// The delays of a [`Backoff`], without a clock: see [`Backoff::delays`].
#[derive(Debug)]
#[must_use = "iterators are lazy"]
pub struct Delays<'a> {
    backoff: &'a mut Backoff,
}

impl Iterator for Delays<'_> {
    type Item = Duration;

    #[inline]
    fn next(&mut self) -> Option<Duration> {
        let delay_ns = self.backoff.step().ok()?;
        self.backoff.commit();
        Some(Duration::from_nanos(delay_ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grow_rounds_up_and_saturates() {
        assert_eq!(grow(1, 150), 2);
        assert_eq!(grow(2, 150), 3);
        assert_eq!(grow(100, 200), 200);
        assert_eq!(grow(7, 100), 7);
        assert_eq!(grow(u64::MAX, 200), u64::MAX);
        assert_eq!(grow(u64::MAX / 2, u32::MAX), u64::MAX);
        assert_eq!(grow(u64::MAX / 4, 200), u64::MAX / 2 - 1);
    }
}
