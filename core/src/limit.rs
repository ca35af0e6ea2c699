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
//! or panics. `try_acquire` takes a slot when fewer than `max` are in use; `release` gives one
//! back (a release with nothing in use is ignored and counted in
//! [`LimitStats::unmatched_releases`], never an underflow). `set_max` changes the limit at run
//! time: when it shrinks below the slots in use, the holders keep theirs and new acquisitions
//! are refused until `in_use` drops below the new `max`. The thread-safe form with RAII permits
//! that wake the acceptor lives in `keel_core::sync::limit` (feature `alloc`; waking needs
//! `std`) and follows the same rules.
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
//!
//! let config = LimitConfig::builder().max(2).overflow(Overflow::Backpressure).build()?;
//! let mut limit = Limit::new(config);
//!
//! assert!(limit.try_acquire());
//! assert!(limit.try_acquire());
//! assert!(!limit.try_acquire()); // full: stop accepting, the backlog holds the rest
//!
//! limit.release(); // a connection closed
//! assert!(limit.try_acquire()); // accept again
//!
//! limit.set_max(NonZeroUsize::MIN); // shrink to 1: both holders keep their slots
//! limit.release();
//! assert!(!limit.try_acquire()); // in_use 1 is not below the new max 1
//! limit.release();
//! assert!(limit.try_acquire());
//!
//! let stats = limit.stats();
//! assert_eq!((stats.max, stats.in_use, stats.peak), (1, 1, 2));
//! assert_eq!((stats.acquired, stats.released, stats.rejected), (4, 3, 2));
//! # Ok::<(), keel_core::ConfigError>(())
//! ```

use core::num::NonZeroUsize;

use crate::error::ConfigError;

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
    /// [`farewell`](LimitConfig::farewell) if any. Report each one with `record_shed`.
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
    /// Connections accepted and closed at once because the limit was full (`record_shed`).
    pub shed: u64,
    /// `release` calls with nothing in use, ignored (a caller bug; always 0 for the shared form,
    /// whose permits release exactly once).
    pub unmatched_releases: u64,
}

/// The `&mut self` connection limit: counts slots, never allocates or locks.
///
/// Getters: [`in_use`](Self::in_use), [`max`](Self::max), [`available`](Self::available),
/// [`overflow`](Self::overflow), [`farewell`](Self::farewell), [`config`](Self::config),
/// [`stats`](Self::stats). Inputs: [`try_acquire`](Self::try_acquire),
/// [`release`](Self::release), [`record_shed`](Self::record_shed). Commands:
/// [`set_max`](Self::set_max). See the [module docs](self) for the contract.
#[derive(Clone, Debug)]
pub struct Limit {
    config: LimitConfig,
    in_use: usize,
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
            config,
            in_use: 0,
            peak: 0,
            acquired: 0,
            released: 0,
            rejected: 0,
            shed: 0,
            unmatched_releases: 0,
            waiting: false,
        }
    }

    /// Takes a slot if fewer than `max` are in use. `true` means a slot was taken and must be
    /// given back with [`release`](Self::release); `false` means the limit is full: stop
    /// accepting ([`Overflow::Backpressure`]) or shed the connection ([`Overflow::Shed`]).
    #[must_use = "`true` means a slot was taken and must be released"]
    pub fn try_acquire(&mut self) -> bool {
        if self.in_use < self.config.max {
            self.in_use += 1;
            self.peak = self.peak.max(self.in_use);
            self.acquired = self.acquired.saturating_add(1);
            self.waiting = false;
            true
        } else {
            self.rejected = self.rejected.saturating_add(1);
            self.waiting = self.config.overflow == Overflow::Backpressure;
            false
        }
    }

    /// Gives a slot back. With nothing in use this is a no-op counted in
    /// [`LimitStats::unmatched_releases`].
    pub fn release(&mut self) {
        if let Some(n) = self.in_use.checked_sub(1) {
            self.in_use = n;
            self.released = self.released.saturating_add(1);
        } else {
            self.unmatched_releases = self.unmatched_releases.saturating_add(1);
        }
    }

    /// Changes the limit (clamped to [`MAX_LIMIT`]). Shrinking below `in_use` takes no slot
    /// back: holders keep theirs and acquisitions are refused until `in_use < max`.
    pub fn set_max(&mut self, max: NonZeroUsize) {
        self.config = self.config.with_max(max.get());
    }

    /// Counts a connection shed because the limit was full (the caller closed it).
    pub fn record_shed(&mut self) {
        self.shed = self.shed.wrapping_add(1);
    }

    /// Slots held now.
    pub fn in_use(&self) -> usize {
        self.in_use
    }

    /// The current limit.
    pub fn max(&self) -> usize {
        self.config.max
    }

    /// Slots that can be taken now (`max - in_use`, 0 when over the limit after a shrink).
    pub fn available(&self) -> usize {
        self.config.max.saturating_sub(self.in_use)
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
            in_use: self.in_use,
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
