//! Backpressure tokens: a connection (or concurrency) limit that issues slots.
//!
//! # What it protects against
//!
//! A server that accepts every connection it is offered runs out of file descriptors, memory or
//! downstream capacity under load, and then fails the clients it already has (seed 002: the
//! listener and the request handlers both hit `Too many open files`). A limit caps the number of
//! connections held at once. When it is full the acceptor has two choices, chosen by
//! [`Overflow`]:
//!
//! - [`Overflow::Backpressure`] (default): stop calling `accept` until a slot is released. The
//!   kernel's listen backlog holds the next clients, and once the backlog is full the kernel
//!   refuses them, which is the cheapest and fairest way to say "busy".
//! - [`Overflow::Shed`]: keep accepting, and close each connection over the limit at once,
//!   optionally after writing a short [`farewell`](LimitConfig::farewell) (an HTTP 503, a
//!   protocol's "server busy" line). Costs an accept and a close per refused client, but the
//!   client learns why at once instead of waiting in the backlog.
//!
//! # The contract
//!
//! This module holds the `&mut self` form, [`Limit`]: it counts slots and never allocates, locks
//! or panics. [`try_acquire`](Limit::try_acquire) takes a slot when fewer than `max` are in use
//! and returns a [`LimitPermit`]; [`on_release`](Limit::on_release) takes the permit back. At
//! the limit it returns a [`Rejected`] whose `reason` is the configured [`Overflow`] (stop
//! accepting, or shed) and whose `retry_at` is `None` (only a release frees a slot). `set_max`
//! changes the limit at run time: when it shrinks below the slots in use, the holders keep theirs
//! and new acquisitions are refused until `in_use` drops below the new `max`. The thread-safe
//! form with RAII permits that wake the acceptor lives in `keel_core::sync::limit` (feature
//! `alloc`; waking needs `std`); both decide through one engine (the crate-private `slots`
//! word: the same rules, one written once), so they cannot drift apart.
//!
//! # Defaults
//!
//! `max` defaults to **1024**: nginx's `worker_connections` is 512 when unset and 1024 in the
//! `nginx.conf` it ships; seed 002's `async-listen` example uses `backpressure(100)` under
//! `ulimit -n 100`. Keep `max` below the process's open-files limit (`ulimit -n`, commonly a soft
//! limit of 1024 on Linux) minus the descriptors the handlers themselves open, or the listener
//! will hit `EMFILE` before the limit does. The overflow policy defaults to
//! [`Overflow::Backpressure`], with no farewell. `max` may not exceed [`MAX_LIMIT`] (2^31 - 1),
//! so the shared form can keep `max` and `in_use` in one atomic word.
//!
//! # Example
//!
//! ```
//! use core::num::NonZeroUsize;
//! use keel_core::limit::{Limit, LimitConfig, Overflow};
//! use keel_core::Instant;
//!
//! let config = LimitConfig::builder().max(2).overflow(Overflow::Backpressure).build()?;
//! let mut limit = Limit::new(config);
//! let now = Instant::ZERO;
//!
//! let a = limit.try_acquire(now).expect("free");
//! let b = limit.try_acquire(now).expect("free");
//! let full = limit.try_acquire(now).unwrap_err(); // full: stop accepting, the backlog holds the rest
//! assert_eq!(full.reason, Overflow::Backpressure);
//!
//! limit.on_release(now, a); // a connection closed
//! let c = limit.try_acquire(now).expect("accept again");
//!
//! limit.set_max(NonZeroUsize::MIN); // shrink to 1: both holders keep their slots
//! limit.on_release(now, b);
//! assert!(limit.try_acquire(now).is_err()); // in_use 1 is not below the new max 1
//! limit.on_release(now, c);
//! let _d = limit.try_acquire(now).expect("free again");
//!
//! let stats = limit.stats();
//! assert_eq!((stats.max, stats.in_use, stats.peak), (1, 1, 2));
//! assert_eq!((stats.acquired, stats.released, stats.rejected), (4, 3, 2));
//! # Ok::<(), keel_core::ConfigError>(())
//! ```

use core::num::NonZeroUsize;

use crate::error::{ConfigError, Rejected};
use crate::time::Instant;

/// The largest limit supported: `2^31 - 1` (or `usize::MAX` where that is smaller).
///
/// The shared form packs `max`, `in_use` and a waiter flag into one 64-bit atomic so an
/// acquisition is checked against the `max` of the same instant; larger limits are rejected by
/// the builder and clamped by `set_max`. Two billion connections is beyond any real server.
pub const MAX_LIMIT: usize = if usize::BITS > 31 {
    (1usize << 31) - 1
} else {
    usize::MAX
};

/// The default limit, 1024 (nginx ships `worker_connections 1024`; see the module docs).
pub const DEFAULT_MAX: usize = 1024;

/// What the acceptor does when the limit is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Stop accepting until a slot is released; the kernel backlog holds the rest (seed 002's
    /// `backpressure` helper). The default.
    #[default]
    Backpressure,
    /// Accept and close at once, after writing the configured
    /// [`farewell`](LimitConfig::farewell) if any. Report each one with `on_shed`.
    Shed,
}

/// A validated limit configuration. Build it with [`LimitConfig::builder`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitConfig {
    max: usize,
    overflow: Overflow,
    farewell: &'static [u8],
}

impl LimitConfig {
    /// A builder with the defaults: `max` 1024, [`Overflow::Backpressure`], no farewell.
    pub fn builder() -> LimitConfigBuilder {
        LimitConfigBuilder::default()
    }

    /// The most slots held at once (1..=[`MAX_LIMIT`]).
    pub fn max(&self) -> usize {
        self.max
    }

    /// What to do when the limit is full.
    pub fn overflow(&self) -> Overflow {
        self.overflow
    }

    /// The bytes to write to a shed connection before closing it; empty for none (always empty
    /// with [`Overflow::Backpressure`]).
    pub fn farewell(&self) -> &'static [u8] {
        self.farewell
    }

    /// This configuration with `max` replaced (clamped to [`MAX_LIMIT`]).
    pub(crate) fn with_max(&self, max: usize) -> Self {
        Self {
            max: max.clamp(1, MAX_LIMIT),
            ..self.clone()
        }
    }
}

impl Default for LimitConfig {
    /// `max` 1024, [`Overflow::Backpressure`], no farewell.
    fn default() -> Self {
        Self {
            max: DEFAULT_MAX,
            overflow: Overflow::Backpressure,
            farewell: &[],
        }
    }
}

/// Builds a [`LimitConfig`]; see [`LimitConfig::builder`].
#[derive(Clone, Debug, Default)]
#[must_use = "a builder does nothing until `.build()`"]
pub struct LimitConfigBuilder {
    max: Option<usize>,
    overflow: Overflow,
    farewell: Option<&'static [u8]>,
}

impl LimitConfigBuilder {
    /// The most slots held at once. Zero is rejected ([`ConfigError::Zero`]), and so is anything
    /// above [`MAX_LIMIT`] ([`ConfigError::OutOfRange`]). Default 1024.
    pub fn max(mut self, max: usize) -> Self {
        self.max = Some(max);
        self
    }

    /// What to do when the limit is full. Default [`Overflow::Backpressure`].
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// Bytes written to a shed connection before it is closed (e.g.
    /// `b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"`).
    /// Only meaningful with [`Overflow::Shed`]: setting one with
    /// [`Overflow::Backpressure`] is a [`ConfigError::Conflict`].
    pub fn farewell(mut self, farewell: &'static [u8]) -> Self {
        self.farewell = Some(farewell);
        self
    }

    /// Validates the settings.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Zero`] for `max` 0, [`ConfigError::OutOfRange`] for `max` above
    /// [`MAX_LIMIT`], [`ConfigError::Conflict`] for a farewell without [`Overflow::Shed`].
    pub fn build(self) -> Result<LimitConfig, ConfigError> {
        let max = self.max.unwrap_or(DEFAULT_MAX);
        if max == 0 {
            return Err(ConfigError::Zero { field: "max" });
        }
        if max > MAX_LIMIT {
            return Err(ConfigError::OutOfRange {
                field: "max",
                expected: "at most 2147483647 (keel_core::limit::MAX_LIMIT)",
            });
        }
        if self.farewell.is_some() && self.overflow != Overflow::Shed {
            return Err(ConfigError::Conflict {
                field: "farewell",
                other: "overflow",
                hint: "a farewell is only written when shedding: set `.overflow(Overflow::Shed)` or drop the farewell",
            });
        }
        Ok(LimitConfig {
            max,
            overflow: self.overflow,
            farewell: self.farewell.unwrap_or(&[]),
        })
    }
}

/// A snapshot of a limit's counters. Counters only grow (they wrap after `u64::MAX`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct LimitStats {
    /// The current limit.
    pub max: usize,
    /// Slots held now. May exceed `max` just after the limit shrank, until holders release.
    pub in_use: usize,
    /// The most slots ever held at once (the high-water mark); always `>= in_use`.
    pub peak: usize,
    /// Slots handed out.
    pub acquired: u64,
    /// Slots given back.
    pub released: u64,
    /// Acquisitions refused because the limit was full (each refused `try_acquire`, and each
    /// `poll_acquire` of the shared form that returned `Pending`).
    pub rejected: u64,
    /// Acquirers waiting for a slot. For [`Limit`], 1 when its last acquisition was refused
    /// under [`Overflow::Backpressure`] and it has not acquired since, else 0. For the shared
    /// form, the tasks registered by `poll_acquire` and not yet woken (normally 0 or 1: the
    /// acceptor).
    pub waiting: usize,
    /// Connections accepted and closed at once because the limit was full (`on_shed`).
    pub shed: u64,
    /// `on_release` calls with nothing in use, ignored (a permit of another [`Limit`] handed
    /// back here: a caller bug; always 0 for the shared form, whose permits release exactly once).
    pub unmatched_releases: u64,
}

/// A slot of a [`Limit`]; hand it back with [`Limit::on_release`]. Not `Clone`, so a slot is
/// released at most once.
#[derive(Debug, PartialEq, Eq, Hash)]
#[must_use = "return the permit with `Limit::on_release` when the connection ends"]
pub struct LimitPermit {
    _private: (),
}

/// The limit's rules, written once: [`Limit`] keeps this word in a plain `u64`, the shared form
/// (`sync::limit::SharedLimit`) in an `AtomicU64` that it changes by compare-and-swap with these
/// same functions. Bits 0..32: slots in use; bits 32..63: `max`; bit 63: a task waits (used by
/// the shared form only).
pub(crate) mod slots {
    use super::MAX_LIMIT;

    const IN_USE_MASK: u64 = 0xFFFF_FFFF;
    const MAX_SHIFT: u32 = 32;
    const MAX_MASK: u64 = 0x7FFF_FFFF << MAX_SHIFT;
    /// Set while a task waits for a slot (shared form).
    #[cfg_attr(not(feature = "alloc"), allow(dead_code))]
    pub(crate) const WAITER: u64 = 1 << 63;

    /// A word with `max` (clamped to `1..=MAX_LIMIT`) and nothing in use.
    pub(crate) fn new(max: usize) -> u64 {
        max_field(max)
    }

    /// Slots in use.
    pub(crate) fn in_use(state: u64) -> u64 {
        state & IN_USE_MASK
    }

    /// The limit.
    pub(crate) fn max(state: u64) -> u64 {
        (state & MAX_MASK) >> MAX_SHIFT
    }

    /// The admission rule: a slot is free while fewer than `max` are in use.
    pub(crate) fn has_room(state: u64) -> bool {
        in_use(state) < max(state)
    }

    /// The word after taking a slot, or `None` at the limit.
    pub(crate) fn acquire(state: u64) -> Option<u64> {
        // in_use < max <= MAX_LIMIT < 2^31: the increment stays inside the in-use field.
        has_room(state).then_some(state + 1)
    }

    /// The word after giving a slot back, or `None` with nothing in use.
    pub(crate) fn release(state: u64) -> Option<u64> {
        (in_use(state) > 0).then(|| state - 1)
    }

    /// The word with `max` replaced (clamped to `1..=MAX_LIMIT`); holders keep their slots.
    pub(crate) fn resize(state: u64, max: usize) -> u64 {
        (state & !MAX_MASK) | max_field(max)
    }

    /// Slots that can be taken now (0 when over the limit after a shrink).
    pub(crate) fn available(state: u64) -> u64 {
        max(state).saturating_sub(in_use(state))
    }

    fn max_field(max: usize) -> u64 {
        let clamped = max.clamp(1, MAX_LIMIT);
        // MAX_LIMIT < 2^31 fits in u64 on every target; the fallback is never taken.
        u64::try_from(clamped).unwrap_or(0x7FFF_FFFF) << MAX_SHIFT
    }

    /// A count as `usize` (counts are at most `MAX_LIMIT`, which fits).
    pub(crate) fn to_usize(v: u64) -> usize {
        usize::try_from(v).unwrap_or(usize::MAX)
    }
}

/// The `&mut self` connection limit: counts slots, never allocates or locks.
///
/// | group | methods |
/// | --- | --- |
/// | construct | [`new`](Self::new) |
/// | inputs | [`try_acquire`](Self::try_acquire) (admission: a [`LimitPermit`] or a [`Rejected`]), [`on_release`](Self::on_release) (takes the permit back), [`on_shed`](Self::on_shed) |
/// | commands | [`set_max`](Self::set_max) |
/// | getters | [`in_use`](Self::in_use), [`max`](Self::max), [`available`](Self::available), [`overflow`](Self::overflow), [`farewell`](Self::farewell), [`config`](Self::config), [`stats`](Self::stats) |
///
/// The limit has no timer (no `poll_timeout`/`handle_timeout`) and no events. Every input takes
/// `now` like every other machine's, though no rule of the limit depends on time. See the
/// [module docs](self) for the contract.
///
/// ```
/// use keel_core::limit::{Limit, LimitConfig};
/// use keel_core::time::Instant;
///
/// let now = Instant::ZERO;
/// let mut limit = Limit::new(LimitConfig::builder().max(1).build()?);
/// let permit = limit.try_acquire(now).expect("a free slot");
/// assert!(limit.try_acquire(now).is_err()); // full: back off (or shed)
/// limit.on_release(now, permit); // the permit is consumed: a slot is returned once
/// assert!(limit.try_acquire(now).is_ok());
/// # Ok::<(), keel_core::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Limit {
    config: LimitConfig,
    slots: u64,
    peak: usize,
    acquired: u64,
    released: u64,
    rejected: u64,
    shed: u64,
    unmatched_releases: u64,
    waiting: bool,
}

impl Limit {
    /// A limit with no slots in use.
    pub fn new(config: LimitConfig) -> Self {
        Self {
            slots: slots::new(config.max),
            config,
            peak: 0,
            acquired: 0,
            released: 0,
            rejected: 0,
            shed: 0,
            unmatched_releases: 0,
            waiting: false,
        }
    }

    /// Takes a slot if fewer than `max` are in use: hand the permit back with
    /// [`on_release`](Self::on_release). At the limit the rejection's `reason` is the
    /// configured [`Overflow`]: stop accepting ([`Overflow::Backpressure`]) or shed the
    /// connection ([`Overflow::Shed`], then [`on_shed`](Self::on_shed)); its `retry_at` is
    /// `None`, since only a release frees a slot.
    pub fn try_acquire(&mut self, now: Instant) -> Result<LimitPermit, Rejected<Overflow>> {
        let _ = now;
        if let Some(next) = slots::acquire(self.slots) {
            self.slots = next;
            self.peak = self.peak.max(self.in_use());
            self.acquired = self.acquired.saturating_add(1);
            self.waiting = false;
            Ok(LimitPermit { _private: () })
        } else {
            self.rejected = self.rejected.saturating_add(1);
            self.waiting = self.config.overflow == Overflow::Backpressure;
            Err(Rejected {
                reason: self.config.overflow,
                retry_at: None,
            })
        }
    }

    /// Takes a slot back. With nothing in use (a permit of another limit) this is a no-op
    /// counted in [`LimitStats::unmatched_releases`].
    pub fn on_release(&mut self, now: Instant, permit: LimitPermit) {
        let LimitPermit { _private: () } = permit;
        let _ = now;
        if let Some(next) = slots::release(self.slots) {
            self.slots = next;
            self.released = self.released.saturating_add(1);
        } else {
            self.unmatched_releases = self.unmatched_releases.saturating_add(1);
        }
    }

    /// Changes the limit (clamped to [`MAX_LIMIT`]). Shrinking below `in_use` takes no slot
    /// back: holders keep theirs and acquisitions are refused until `in_use < max`.
    pub fn set_max(&mut self, max: NonZeroUsize) {
        self.config = self.config.with_max(max.get());
        self.slots = slots::resize(self.slots, max.get());
    }

    /// Counts a connection shed because the limit was full (the caller closed it).
    pub fn on_shed(&mut self, now: Instant) {
        let _ = now;
        self.shed = self.shed.wrapping_add(1);
    }

    /// Slots held now.
    pub fn in_use(&self) -> usize {
        slots::to_usize(slots::in_use(self.slots))
    }

    /// The current limit.
    pub fn max(&self) -> usize {
        self.config.max
    }

    /// Slots that can be taken now (`max - in_use`, 0 when over the limit after a shrink).
    pub fn available(&self) -> usize {
        slots::to_usize(slots::available(self.slots))
    }

    /// What to do when the limit is full.
    pub fn overflow(&self) -> Overflow {
        self.config.overflow
    }

    /// The bytes to write to a shed connection; empty for none.
    pub fn farewell(&self) -> &'static [u8] {
        self.config.farewell
    }

    /// The configuration, with the current `max`.
    pub fn config(&self) -> &LimitConfig {
        &self.config
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> LimitStats {
        LimitStats {
            max: self.config.max,
            in_use: self.in_use(),
            peak: self.peak,
            acquired: self.acquired,
            released: self.released,
            rejected: self.rejected,
            waiting: usize::from(self.waiting),
            shed: self.shed,
            unmatched_releases: self.unmatched_releases,
        }
    }
}
