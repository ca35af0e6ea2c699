//! Retry budget: retries allowed as a fraction of recent requests, plus a small floor.
//!
//! # What it protects against
//!
//! "Retry up to 3 times" quadruples the load on a dependency exactly when it is failing, and
//! compounds through every layer that retries. A budget bounds retries **across all operations**
//! instead: over the last `ttl`, at most `retry_percent` % of the requests made, plus a floor of
//! `min_per_sec` retries per second for clients that send little traffic. When the dependency
//! fails everything, the extra load is at most `retry_percent` %, not 300 %. This is Finagle's
//! `RetryBudget` and tower's `TpsBudget`, in integer arithmetic, without a lock or an allocation.
//!
//! # The contract
//!
//! - [`RetryBudget::deposit(now)`](RetryBudget::deposit): call once per **original** request
//!   (never for a retry). keel follows tower's semantics: `TpsBudget` is fed by `deposit()` and
//!   its documented `Policy` calls it for each request that completes successfully, so the
//!   budget is a fraction of recent *successful* requests and an outage that fails every request
//!   leaves only the floor. Finagle deposits for every request instead; do that if you want
//!   retries to scale with the request rate during an outage: the machine does not know the
//!   outcome, the caller chooses.
//! - [`RetryBudget::try_acquire(now)`](RetryBudget::try_acquire): call before each retry;
//!   `Err(Rejected<Exhausted>)` means do not retry (the refusal is counted in
//!   [`BudgetStats::exhausted`]); its `retry_at` is the first instant at which the budget would
//!   allow a retry if nothing else happened (`None`: only a deposit would).
//! - Time is an input; `now` going backwards is clamped; no call can panic or allocate.
//!
//! # How it counts
//!
//! Tokens are kept in milli-retries: a deposit adds `retry_percent * 10`, a withdrawal costs
//! `1000`, and the floor is a constant reserve of `floor(min_per_sec * ttl * 1000)` that
//! withdrawals may dip into. Deposits and withdrawals land in the current slot of a ring of
//! [`SLOTS`] + 1 slots, each `w = ceil(ttl / SLOTS)` long, aligned on the instant the budget was
//! created. When time moves into a new slot, the slots that fell out of the ring are forgotten
//! (O(1): at most `SLOTS + 1` slots are touched, however long the budget sat idle). A withdrawal
//! succeeds when `reserve + sum(slots) >= 1000`.
//!
//! So an event is remembered from the moment it happens until the end of the `SLOTS`-th slot
//! after its own: **more than `SLOTS * w >= ttl`, at most `(SLOTS + 1) * w`** (`ttl + w` when
//! `ttl` is a multiple of 10 ns), as in tower, whose ten slots sit beside a current one. The
//! guarantee, for any window `[a, a + ttl)`:
//!
//! ```text
//! 1000 * withdrawals in [a, a + ttl)
//!     <= reserve + 10 * retry_percent * deposits in (a - (SLOTS + 1) * w, a + ttl)
//! ```
//!
//! i.e. retries in any `ttl` window never exceed `floor(min_per_sec * ttl)` plus
//! `retry_percent` % of the deposits made in that window **and in the `(SLOTS + 1) * w` before
//! it** (earlier deposits are still remembered, which is the point of a window). That is the
//! only slot-granularity slack; the floor is never counted twice. Conversely, a withdrawal at
//! `t` is refused only when `1000 * withdrawals in (t - (SLOTS + 1) * w, t] + 1000 > reserve +
//! 10 * retry_percent * deposits in [t - ttl, t]`. Both inequalities are checked by proptest
//! (`core/tests/budget_props.rs`), beside an exact reference model of the ring.
//!
//! # Defaults and their source
//!
//! `ttl` 10 s, `min_per_sec` 10, `retry_percent` 20: Finagle's `RetryBudget()` and tower's
//! `TpsBudget::default()`. [`SLOTS`] = 10, as in tower.
//!
//! # Example
//!
//! ```
//! use core::time::Duration;
//! use keel_core::budget::{BudgetConfig, RetryBudget};
//! use keel_core::time::Instant;
//!
//! let config = BudgetConfig::builder()
//!     .ttl(Duration::from_secs(10))
//!     .min_per_sec(1) // a floor of 10 retries per 10 s
//!     .retry_percent(20)
//!     .build()?;
//! let t = Instant::from_secs(100);
//! let mut budget = RetryBudget::new(config, t);
//!
//! for _ in 0..50 {
//!     budget.deposit(t); // 50 successful requests: 20 % of them is 10 more retries
//! }
//! let granted = (0..100).filter(|_| budget.try_acquire(t).is_ok()).count();
//! assert_eq!(granted, 10 + 10);
//! assert_eq!(budget.stats().exhausted, 80);
//!
//! // Spent. The withdrawals are forgotten with their slot, 11 s after it started; the refusal
//! // says so.
//! let refused = budget.try_acquire(t).unwrap_err();
//! assert_eq!(refused.retry_at, Some(t + Duration::from_secs(11)));
//!
//! // Eleven seconds later the requests are forgotten; the floor is available again.
//! let later = t + Duration::from_secs(11);
//! assert_eq!(budget.remaining(later), 10);
//! # Ok::<(), keel_core::ConfigError>(())
//! ```

use core::time::Duration;

use crate::error::{ConfigError, Rejected};
use crate::time::{duration_to_nanos, Instant, Monotonic};

/// Default window: 10 s (Finagle `RetryBudget`, tower `TpsBudget::default`).
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// Default floor: 10 retries per second (Finagle, tower).
pub const DEFAULT_MIN_PER_SEC: u32 = 10;
/// Default ratio: 20 % of deposits (Finagle, tower).
pub const DEFAULT_RETRY_PERCENT: u32 = 20;
/// The window is divided into this many slots (tower uses 10); the ring holds one more, the
/// current slot.
pub const SLOTS: usize = 10;
/// The smallest `ttl`: 1 ms.
pub const MIN_TTL: Duration = Duration::from_millis(1);
/// The largest `ttl`: 1 hour (Finagle and tower allow 1 s to 60 s).
pub const MAX_TTL: Duration = Duration::from_secs(3600);
/// The largest `retry_percent`: 100 000, i.e. 1000 retries per deposit (Finagle's limit).
pub const MAX_RETRY_PERCENT: u32 = 100_000;

const RING: usize = SLOTS + 1;
/// Milli-retries per retry.
const WITHDRAW: i64 = 1000;

/// A validated retry-budget configuration; build it with [`BudgetConfig::builder`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BudgetConfig {
    ttl: Duration,
    min_per_sec: u32,
    retry_percent: u32,
    slot_ns: u64,
    reserve: i64,
    deposit: i64,
}

impl Default for BudgetConfig {
    /// 10 s, 10 per second, 20 % (Finagle, tower).
    fn default() -> Self {
        BudgetConfigBuilder::new().assemble()
    }
}

impl BudgetConfig {
    /// A builder holding the defaults: `ttl` 10 s, `min_per_sec` 10, `retry_percent` 20.
    pub fn builder() -> BudgetConfigBuilder {
        BudgetConfigBuilder::new()
    }

    /// The window: a deposit or withdrawal is remembered for more than this and at most
    /// `(SLOTS + 1) * slot()` (see the [module docs](self)).
    #[inline]
    #[must_use]
    pub const fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Retries per second allowed with no deposits at all.
    #[inline]
    #[must_use]
    pub const fn min_per_sec(&self) -> u32 {
        self.min_per_sec
    }

    /// Retries allowed per 100 deposits.
    #[inline]
    #[must_use]
    pub const fn retry_percent(&self) -> u32 {
        self.retry_percent
    }

    /// The length of one slot: `ceil(ttl / SLOTS)`.
    #[inline]
    #[must_use]
    pub const fn slot(&self) -> Duration {
        Duration::from_nanos(self.slot_ns)
    }

    /// The floor over one window: `floor(min_per_sec * ttl)` retries.
    #[inline]
    #[must_use]
    pub const fn floor(&self) -> u64 {
        self.reserve.unsigned_abs() / WITHDRAW.unsigned_abs()
    }
}

/// Builds a [`BudgetConfig`]; [`build`](BudgetConfigBuilder::build) validates it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct BudgetConfigBuilder {
    ttl: Duration,
    min_per_sec: u32,
    retry_percent: u32,
}

impl BudgetConfigBuilder {
    fn new() -> BudgetConfigBuilder {
        BudgetConfigBuilder {
            ttl: DEFAULT_TTL,
            min_per_sec: DEFAULT_MIN_PER_SEC,
            retry_percent: DEFAULT_RETRY_PERCENT,
        }
    }

    /// How long deposits and withdrawals are remembered (default 10 s; 1 ms to 1 hour).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The floor: retries per second allowed even with no deposits (default 10; 0 = none).
    pub fn min_per_sec(mut self, min_per_sec: u32) -> Self {
        self.min_per_sec = min_per_sec;
        self
    }

    /// Retries allowed per 100 deposits (default 20; 0 = only the floor; at most 100 000).
    pub fn retry_percent(mut self, retry_percent: u32) -> Self {
        self.retry_percent = retry_percent;
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    ///
    /// [`ConfigError::OutOfRange`] if `ttl` is outside 1 ms ..= 1 hour or `retry_percent` is
    /// above 100 000.
    pub fn build(self) -> Result<BudgetConfig, ConfigError> {
        if self.ttl < MIN_TTL || self.ttl > MAX_TTL {
            return Err(ConfigError::OutOfRange {
                field: "ttl",
                expected: "between 1 ms and 1 hour (Finagle and tower use 1 s to 60 s)",
            });
        }
        if self.retry_percent > MAX_RETRY_PERCENT {
            return Err(ConfigError::OutOfRange {
                field: "retry_percent",
                expected: "at most 100000 (1000 retries per request)",
            });
        }
        Ok(self.assemble())
    }

    /// Derives the integer parameters; every value fits for a `ttl` of at most 1 hour:
    /// the reserve is below `u32::MAX * 3.6e12 / 1e6 < 2^54`.
    fn assemble(self) -> BudgetConfig {
        let ttl_ns = duration_to_nanos(self.ttl);
        let slot_ns = ttl_ns.div_ceil(SLOTS as u64).max(1);
        let reserve = u128::from(self.min_per_sec) * u128::from(ttl_ns) / 1_000_000;
        BudgetConfig {
            ttl: self.ttl,
            min_per_sec: self.min_per_sec,
            retry_percent: self.retry_percent,
            slot_ns,
            reserve: i64::try_from(reserve).unwrap_or(i64::MAX),
            deposit: i64::from(self.retry_percent) * 10,
        }
    }
}

/// Counters of a [`RetryBudget`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct BudgetStats {
    /// Calls to [`RetryBudget::deposit`].
    pub deposits: u64,
    /// Retries allowed by [`RetryBudget::try_acquire`].
    pub withdrawals: u64,
    /// Retries refused because the budget was exhausted.
    pub exhausted: u64,
}

/// Why [`RetryBudget::try_acquire`] refused a retry: the budget is spent. Do not retry (fail
/// with the last error); the rejection's `retry_at` says when the budget would next allow one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Exhausted;

impl core::fmt::Display for Exhausted {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("retry budget exhausted: do not retry now (raise `retry_percent` or `min_per_sec` to allow more retries)")
    }
}

impl core::error::Error for Exhausted {}

/// The retry budget. See the [module docs](self) for the contract and the exact guarantee.
///
/// | group | methods |
/// | --- | --- |
/// | construct | [`new`](Self::new) |
/// | admission | [`try_acquire`](Self::try_acquire) `-> Result<(), Rejected<Exhausted>>` (one retry; nothing to release) |
/// | inputs | [`deposit`](Self::deposit) (one original request) |
/// | getters | [`remaining`](Self::remaining), [`config`](Self::config), [`stats`](Self::stats) |
///
/// No timers and no events: expired slots are forgotten as it is asked.
///
/// ```
/// use core::time::Duration;
/// use keel_core::budget::{BudgetConfig, RetryBudget};
/// use keel_core::Instant;
///
/// // No floor: one retry per five requests (20 %) over the last 10 s.
/// let config = BudgetConfig::builder()
///     .ttl(Duration::from_secs(10))
///     .min_per_sec(0)
///     .retry_percent(20)
///     .build()?;
/// let t0 = Instant::from_secs(100);
/// let mut budget = RetryBudget::new(config, t0);
/// assert!(budget.try_acquire(t0).is_err()); // nothing deposited, no floor: no retry
/// for _ in 0..10 {
///     budget.deposit(t0); // ten original requests...
/// }
/// assert_eq!(budget.remaining(t0), 2); // ...buy two retries
/// assert!(budget.try_acquire(t0).is_ok());
/// assert!(budget.try_acquire(t0).is_ok());
/// assert!(budget.try_acquire(t0).is_err());
/// assert_eq!(budget.stats().exhausted, 2);
/// // Deposits are forgotten after the ttl (at most one slot later): the budget is empty again.
/// let later = t0 + Duration::from_secs(12);
/// budget.deposit(later);
/// assert_eq!(budget.remaining(later), 0); // 20 % of one request is not a whole retry
/// # Ok::<(), keel_core::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct RetryBudget {
    config: BudgetConfig,
    clock: Monotonic,
    origin: Instant,
    /// Index (since `origin`) of the current slot.
    slot: u64,
    /// End of the current slot, in ns since `origin` (u128: never saturates).
    slot_end: u128,
    /// Ring position of the current slot.
    head: usize,
    /// Net milli-retries per slot.
    slots: [i64; RING],
    /// `sum(slots)`, kept alongside so `try_acquire` is O(1).
    balance: i64,
    stats: BudgetStats,
}

impl RetryBudget {
    /// An empty budget (only the floor is available) whose slots are aligned on `now`.
    #[must_use]
    pub fn new(config: BudgetConfig, now: Instant) -> RetryBudget {
        RetryBudget {
            config,
            clock: Monotonic::new(now),
            origin: now,
            slot: 0,
            slot_end: u128::from(config.slot_ns),
            head: 0,
            slots: [0; RING],
            balance: 0,
            stats: BudgetStats::default(),
        }
    }

    /// Records one original request at `now` (see the [module docs](self) for which ones).
    #[inline]
    pub fn deposit(&mut self, now: Instant) {
        self.advance(now);
        self.add(self.config.deposit);
        self.stats.deposits = self.stats.deposits.saturating_add(1);
    }

    /// Asks for one retry at `now`: `Ok(())` (and the retry is charged) if the budget allows
    /// it. A budget hands out nothing to give back (a retry spent is spent), so the admission
    /// is `Ok(())`, not a permit.
    ///
    /// # Errors
    ///
    /// [`Rejected<Exhausted>`](Exhausted) when the budget is spent (counted in
    /// [`BudgetStats::exhausted`]; do not retry). Its `retry_at` is the first instant at which
    /// the same call would succeed if nothing else happened: the start of the first slot whose
    /// expiry (forgetting earlier withdrawals) leaves a whole retry. `None` when no expiry does
    /// (a floor below one retry per window and too few deposits): only a deposit helps.
    #[inline]
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), Rejected<Exhausted>> {
        self.advance(now);
        if self.config.reserve.saturating_add(self.balance) >= WITHDRAW {
            self.add(-WITHDRAW);
            self.stats.withdrawals = self.stats.withdrawals.saturating_add(1);
            Ok(())
        } else {
            self.stats.exhausted = self.stats.exhausted.saturating_add(1);
            Err(Rejected {
                reason: Exhausted,
                retry_at: self.next_admission(),
            })
        }
    }

    /// How many retries [`try_acquire`](Self::try_acquire) would allow at `now` if nothing
    /// else happened. A getter: it changes nothing (the slots that would expire by `now` are
    /// left out of the sum, not forgotten).
    #[must_use]
    pub fn remaining(&self, now: Instant) -> u64 {
        let now = now.max(self.clock.get());
        let (_, steps) = self.steps_to(now);
        let tokens = self.config.reserve.saturating_add(self.kept(steps)).max(0);
        tokens.unsigned_abs() / WITHDRAW.unsigned_abs()
    }

    /// The slot holding `now` (not before the current one) and how many slot boundaries lie
    /// between the current slot and it. The one place the slot of an instant is computed.
    fn steps_to(&self, now: Instant) -> (u64, u64) {
        let offset = duration_to_nanos(now.saturating_duration_since(self.origin));
        if u128::from(offset) < self.slot_end {
            return (self.slot, 0);
        }
        let slot = offset / self.config.slot_ns;
        (slot, slot.saturating_sub(self.slot))
    }

    /// The balance left after `steps` more slot boundaries: the sum of the slots that stay in
    /// the ring (a boundary forgets the oldest slot, the one after `head`). The one place the
    /// balance is computed: `rotate` stores it, `remaining` and `next_admission` read it.
    fn kept(&self, steps: u64) -> i64 {
        if steps >= RING as u64 {
            return 0;
        }
        // steps < RING, so the conversion holds.
        let steps = usize::try_from(steps).unwrap_or(RING);
        (0..RING)
            .filter(|i| *i == self.head || (i + RING - self.head) % RING > steps)
            .filter_map(|i| self.slots.get(i))
            .fold(0i64, |acc, s| acc.saturating_add(*s))
    }

    /// The first slot start after now at which a withdrawal would succeed if nothing else
    /// happened; `None` if none would. The balance only changes when a slot leaves the ring,
    /// and after `RING` boundaries every slot has left, so the first `RING` boundaries are all
    /// there is to look at.
    #[cold]
    fn next_admission(&self) -> Option<Instant> {
        let steps = (1..=RING as u64)
            .find(|k| self.config.reserve.saturating_add(self.kept(*k)) >= WITHDRAW)?;
        let start = (u128::from(self.slot) + u128::from(steps)) * u128::from(self.config.slot_ns);
        let start = u64::try_from(start).ok()?;
        self.origin.checked_add(Duration::from_nanos(start))
    }

    /// The configuration.
    #[inline]
    #[must_use]
    pub const fn config(&self) -> &BudgetConfig {
        &self.config
    }

    /// A snapshot of the counters.
    #[inline]
    #[must_use]
    pub const fn stats(&self) -> BudgetStats {
        self.stats
    }

    #[inline]
    fn add(&mut self, amount: i64) {
        if let Some(slot) = self.slots.get_mut(self.head) {
            *slot = slot.saturating_add(amount);
        }
        self.balance = self.balance.saturating_add(amount);
    }

    /// Moves the current slot to the one holding `now`, forgetting the slots that left the ring.
    #[inline]
    fn advance(&mut self, now: Instant) {
        let now = self.clock.observe(now);
        let (slot, steps) = self.steps_to(now);
        if steps > 0 {
            self.rotate(slot, steps);
        }
    }

    #[cold]
    fn rotate(&mut self, slot: u64, steps: u64) {
        // Recomputed from the slots rather than adjusted, so a saturated slot can never skew
        // it for good.
        self.balance = self.kept(steps);
        if steps >= RING as u64 {
            self.slots = [0; RING];
            self.head = 0;
        } else {
            for _ in 0..steps {
                self.head = if self.head + 1 >= RING {
                    0
                } else {
                    self.head + 1
                };
                if let Some(s) = self.slots.get_mut(self.head) {
                    *s = 0;
                }
            }
        }
        self.slot = slot;
        self.slot_end = (u128::from(slot) + 1) * u128::from(self.config.slot_ns);
    }
}
