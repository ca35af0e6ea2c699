//! A keyed GCRA limiter (per IP, per user, per queue) whose memory is bounded by construction.
//!
//! # What it protects against
//!
//! A per-client limiter that remembers every client is itself a DoS vector: an attacker
//! rotating source addresses (one IPv6 /64 holds 2^64 of them) grows its map without bound. The
//! seed's threat analysis asks for rate limiting at enqueue, per user or IP; this is that
//! limiter with a hard memory ceiling.
//!
//! # Contract
//!
//! - At most `max_keys` keys are tracked. All storage (an entry array of `max_keys` slots and
//!   an open-addressing index of `next_power_of_two(2 × max_keys)` `u32` slots, so the load
//!   factor stays at or below 1/2) is allocated in [`KeyedGcra::new`]; checks never
//!   allocate (cloning a key type that owns heap memory, like `String`, is the caller's
//!   allocation). [`KeyedGcra::memory_bytes`] reports the table's footprint, which never
//!   changes after construction.
//! - Each key has exactly the GCRA state of [`Gcra`]: same burst
//!   semantics, the same rejections ([`KeyedLimited`] mirrors [`RateLimited`]).
//! - **Idle keys are reclaimed when room is needed**: a key whose TAT is at or before `now` is
//!   in exactly the state of a key never seen, so forgetting it changes no decision. A new key
//!   that finds the table full first examines two entries with a clock hand over the entry
//!   array, forgetting the idle ones (amortised O(1)), then, if the table is still full, the
//!   least recently used key (see "Recency" below) if it is idle; only then does [`Full`]
//!   apply. A table with room sweeps nothing, and neither does a check of a key it holds:
//!   idle keys stay tracked (counted in [`KeyedGcra::len`], a key type's heap memory kept)
//!   until new keys need their slots. (Until issue 16 every check swept two entries: with keys that go idle between
//!   their checks, that made most checks a reclaim plus an insert, for no room anyone needed.)
//! - **A full table** (every key still active) follows [`Full`]:
//!   - [`Full::Overflow`] (the default): a new key that finds no slot is decided by **one
//!     shared overflow limiter** with its own quota ([`KeyedConfigBuilder::overflow_quota`],
//!     by default the per-key quota). Under key rotation new keys degrade to that shared quota
//!     instead of nothing, and no tracked key is ever forgotten while active, so a user who
//!     pauses keeps his debt. [`KeyedGcra::decide_n`] says which limiter decided
//!     ([`DecidedBy`]); the stats count overflow admissions and rejections. An overflow
//!     rejection is a plain [`KeyedLimited::OverRate`] (wait or answer 429 as for any key). The
//!     overflow quota is shared with whoever fills the table: an attacker rotating keys takes
//!     most of it, so key by [`ip::IpKeyer`](super::ip::IpKeyer) (one IPv6 host = one /64) to
//!     keep such a host to one key.
//!   - [`Full::RejectNew`] rejects a new key with [`KeyedLimited::TableFull`] and never
//!     over-admits, but a rotating attacker locks every new user out.
//!   - [`Full::EvictLeastRecentlyUsed`] forgets the least recently used key, which is a
//!     **fail-open for that key**: its debt is dropped and it gets a fresh burst when it
//!     returns (a user who pauses gets a burst each time he is evicted). A denied request
//!     counts as use, so an abuser that keeps hammering stays most recent.
//! - **Recency** is kept the way CLOCK keeps it ("second chance", LRU with lazy promotion):
//!   keys sit in a list in the order they were inserted or last promoted, and a check of a key
//!   the table holds only marks it used (one flag in the entry it already writes). Only a new
//!   key that finds the table full looks at the list's tail: a tail marked used since it was
//!   linked is moved to the head with its mark cleared (its second chance), at most
//!   16 of them per new key, and the first unmarked tail (or the 17th) is the least recently
//!   used key. The victim is a key not checked since it last reached the head, the oldest such
//!   key when fewer than 17 marked keys stand before it: what an exact LRU would pick unless a
//!   key's recency changed since its last pass through the list. Exact LRU relinks the key on
//!   every check, writing three other entries and the list head: a hit then wrote five cache
//!   lines instead of two, and under threads ([`crate::sync::keyed::SharedKeyedGcra`]) each of
//!   them moved between cores (issue 16: a two-thread check cost 1.2-3x governor's).
//! - Keys are hashed with SipHash-1-3 (the algorithm of std's `HashMap`), written here for
//!   `no_std` and keyed by a 128-bit secret. **With feature `std`, a config built without
//!   [`KeyedConfigBuilder::hash_seed`] draws the key from the OS** (`getrandom`),
//!   every build a new one, so nobody can compute keys that collide (with a known key, 100,000
//!   colliding IPv6 keys take seconds to compute and made a check on a 1M-key table cost 64 µs
//!   instead of 40 ns). A fixed seed is an explicit opt-in for tests and reproducible runs.
//!   Without `std`, `build` requires a seed and says so ([`ConfigError::Missing`]). Even under
//!   collisions memory stays bounded: only the probe length (CPU) suffers, and
//!   [`KeyedStats::probes`] shows it.
//! - Clock faults are resolved per key, as [`Gcra`] does (see [`crate::rate`], "Clock
//!   faults"): a key whose state proves a fault reads as a fresh key, and the sweep forgets it
//!   like an idle one, so a bogus far-future `now` cannot pin slots for good.
//! - Every operation is O(1) expected (linear probing with backward-shift deletion, no
//!   tombstones; a new key in a full table sweeps 2 entries and gives at most 16 second
//!   chances); [`KeyedGcra::set_quota`] is O(len).
//! - **Shared by threads**: [`crate::sync::keyed::SharedKeyedGcra`] (feature `std`, behind the
//!   adapters' `KeyedRateLimiter`) splits the keys across shards of this table
//!   ([`KeyedConfigBuilder::shards`]), picked by the same seeded hash, one lock each, each
//!   with slack above its share of `max_keys` and one table-wide count holding them to
//!   `max_keys` together (memory still fixed at construction, a little larger), and keeps
//!   **one** overflow limiter for all shards, so the overflow bound above holds across the
//!   whole table. Per key its decisions are this table's; see its module docs for the design.
//!
//! # Defaults
//!
//! `full = Full::Overflow` with `overflow_quota` = the per-key quota: new keys are neither
//! locked out nor given a fresh burst each; the overflow adds at most one key's worth of
//! traffic to what the table admits, and a key outside the table gets no more than a key's
//! worth from it. `hash_seed` = drawn from the OS (`std`), required without `std`.
//! `max_clock_jump` = [`DEFAULT_MAX_CLOCK_JUMP`](super::DEFAULT_MAX_CLOCK_JUMP). `quota` and
//! `max_keys` are required.
//!
//! ```
//! use core::num::NonZeroU32;
//! use keel_core::rate::keyed::{Full, KeyedConfig, KeyedGcra, KeyedLimited};
//! use keel_core::rate::Quota;
//! use keel_core::{Instant, Rejected};
//!
//! let config = KeyedConfig::builder()
//!     .quota(Quota::per_second(NonZeroU32::new(1).unwrap())?)
//!     .max_keys(2)
//!     .full(Full::RejectNew)
//!     .hash_seed(0x0123_4567_89ab_cdef_0011_2233_4455_6677)
//!     .build()?;
//! let now = Instant::from_secs(1);
//! let mut limiter = KeyedGcra::<u128>::new(config, now);
//! assert!(limiter.try_acquire(now, &1).is_ok());
//! assert!(limiter.try_acquire(now, &2).is_ok());
//! let rejected = limiter.try_acquire(now, &1).unwrap_err();
//! assert_eq!(rejected.reason, KeyedLimited::OverRate);
//! assert_eq!(rejected.retry_at, Some(Instant::from_secs(2)));
//! assert_eq!(
//!     limiter.try_acquire(now, &3),
//!     Err(Rejected { reason: KeyedLimited::TableFull, retry_at: None })
//! );
//! assert_eq!(limiter.len(), 2);
//! // One second later keys 1 and 2 are idle again: their slots are reclaimed.
//! let later = Instant::from_secs(2);
//! assert!(limiter.try_acquire(later, &3).is_ok());
//! assert!(limiter.len() <= 2);
//! # Ok::<(), keel_core::ConfigError>(())
//! ```

use alloc::vec::Vec;
use core::hash::Hash;
use core::mem::size_of;
use core::num::NonZeroU32;

use core::time::Duration;

mod siphash;
mod table;

// Hidden, not private: core/tests/keyed.rs checks it against the reference vectors,
// core/tests/keyed_abuse.rs and keel-benches's keyed_flood build colliding keys with it. Users
// choose the key with `KeyedConfigBuilder::hash_seed`, never the hasher.
#[doc(hidden)]
pub use siphash::SipHasher13;
pub(crate) use table::Room;
use table::{index_slots, Found, Overflowed};

use super::gcra;
use super::{Gcra, Quota, RateLimited};
use crate::error::{ConfigError, Rejected};
use crate::time::{duration_to_nanos, Instant};

/// The largest `max_keys` accepted: 2^24 (16,777,216 keys). The table is allocated up front,
/// so this caps it at about 2^24 × (entry size + 8 bytes of index): roughly 1 GiB for a
/// 48-byte entry (see [`KeyedGcra::memory_bound`] for your key type). A larger value
/// would let a typo allocate tens of GiB and abort the process; shard across limiters instead.
pub const MAX_KEYS_LIMIT: usize = 1 << 24;

/// The most shards of the shared form ([`crate::sync::keyed::SharedKeyedGcra`], the table
/// behind the adapters' `KeyedRateLimiter`) when the config does not say
/// ([`KeyedConfigBuilder::shards`]): 16, fewer for tables under
/// `16 × `[`DEFAULT_KEYS_PER_SHARD`] keys.
pub const DEFAULT_SHARDS: usize = 16;

/// The fewest keys per shard when the config does not set the shards: 64. A small table
/// stays one shard (exactly the `&mut` table), since a shard of a few keys fills while
/// others have room.
pub const DEFAULT_KEYS_PER_SHARD: usize = 64;

/// The most shards accepted by [`KeyedConfigBuilder::shards`]: 1024.
pub const MAX_SHARDS: usize = 1024;

const NIL: u32 = u32::MAX;
const SWEEP_PER_CHECK: usize = 2;
/// The most keys marked used that a new key in a full table moves from the LRU tail to the
/// head (their second chance) before it takes the tail as the least recently used key.
const SECOND_CHANCES_PER_CHECK: usize = 16;

/// What a full table (every slot held by an active key) does with a new key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Full {
    /// Decide the new key with the one shared overflow limiter (its quota is
    /// [`KeyedConfigBuilder::overflow_quota`], by default the per-key quota): under key
    /// rotation new keys share a bounded quota instead of getting nothing or a fresh burst
    /// each. The default; see the [module docs](self).
    #[default]
    Overflow,
    /// Reject the new key with [`KeyedLimited::TableFull`] (fail closed for new keys: a rotating
    /// attacker locks every new user out).
    RejectNew,
    /// Forget the least recently used key to make room (recency as CLOCK keeps it: see the
    /// [module docs](self)). That key's debt is dropped: a fail-open for it (a user who pauses
    /// comes back with a fresh burst).
    EvictLeastRecentlyUsed,
}

/// The configuration of a [`KeyedGcra`]. Its `Debug` form leaves the hash seed out.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyedConfig {
    quota: Quota,
    max_keys: usize,
    full: Full,
    overflow_quota: Option<Quota>,
    hash_seed: u128,
    max_clock_jump: u64,
    shards: Option<usize>,
}

impl core::fmt::Debug for KeyedConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyedConfig")
            .field("quota", &self.quota)
            .field("max_keys", &self.max_keys)
            .field("full", &self.full)
            .field("overflow_quota", &self.overflow_quota())
            .field("hash_seed", &"<secret>")
            .field("max_clock_jump", &self.max_clock_jump())
            .field("shards", &self.shards)
            .finish()
    }
}

impl KeyedConfig {
    /// Starts a builder.
    #[must_use]
    pub fn builder() -> KeyedConfigBuilder {
        KeyedConfigBuilder::default()
    }

    /// The per-key quota.
    #[must_use]
    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// The most keys tracked at once.
    #[must_use]
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// The full-table policy.
    #[must_use]
    pub fn full(&self) -> Full {
        self.full
    }

    /// The overflow limiter's quota ([`Full::Overflow`]): the one set with
    /// [`KeyedConfigBuilder::overflow_quota`], else the per-key quota.
    #[must_use]
    pub fn overflow_quota(&self) -> Quota {
        self.overflow_quota.unwrap_or(self.quota)
    }

    /// The largest clock step taken at face value (see [`crate::rate`], "Clock faults").
    #[must_use]
    pub fn max_clock_jump(&self) -> Duration {
        Duration::from_nanos(self.max_clock_jump)
    }

    /// The shards of the shared form ([`KeyedConfigBuilder::shards`]): the number set, never
    /// more than `max_keys` (every shard holds at least one key); by default
    /// `max_keys / `[`DEFAULT_KEYS_PER_SHARD`] between 1 and [`DEFAULT_SHARDS`]. The `&mut`
    /// [`KeyedGcra`] is one table and ignores it.
    #[must_use]
    pub fn shards(&self) -> usize {
        let max_keys = self.max_keys.max(1);
        match self.shards {
            Some(n) => n.clamp(1, max_keys),
            None => (max_keys / DEFAULT_KEYS_PER_SHARD).clamp(1, DEFAULT_SHARDS),
        }
    }

    /// Whether the overflow quota follows the per-key quota (none set).
    #[cfg(feature = "std")]
    pub(crate) fn overflow_follows(&self) -> bool {
        self.overflow_quota.is_none()
    }

    /// The SipHash key halves.
    pub(crate) fn hash_keys(&self) -> (u64, u64) {
        (self.hash_seed as u64, (self.hash_seed >> 64) as u64)
    }
}

/// The keyed table's hash of `key` under the key halves `(k0, k1)`.
#[inline]
pub(crate) fn hash_key<K: Hash>(k0: u64, k1: u64, key: &K) -> u64 {
    use core::hash::Hasher;
    let mut h = SipHasher13::new_with_keys(k0, k1);
    key.hash(&mut h);
    h.finish()
}

/// Builds a [`KeyedConfig`]. Its `Debug` form leaves the hash seed out.
#[derive(Clone, Copy, Default)]
pub struct KeyedConfigBuilder {
    quota: Option<Quota>,
    max_keys: usize,
    full: Full,
    overflow_quota: Option<Quota>,
    hash_seed: Option<u128>,
    max_clock_jump: Option<Duration>,
    shards: Option<usize>,
}

impl core::fmt::Debug for KeyedConfigBuilder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyedConfigBuilder")
            .field("quota", &self.quota)
            .field("max_keys", &self.max_keys)
            .field("full", &self.full)
            .field("overflow_quota", &self.overflow_quota)
            .field("hash_seed", &self.hash_seed.map(|_| "<secret>"))
            .field("max_clock_jump", &self.max_clock_jump)
            .field("shards", &self.shards)
            .finish()
    }
}

impl KeyedConfigBuilder {
    /// The quota each key gets (required).
    #[must_use]
    pub fn quota(mut self, quota: Quota) -> Self {
        self.quota = Some(quota);
        self
    }

    /// The most keys tracked at once (required, 1..=[`MAX_KEYS_LIMIT`]). Memory is allocated
    /// for all of them up front.
    #[must_use]
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// What a full table does with a new key (default [`Full::Overflow`]).
    #[must_use]
    pub fn full(mut self, full: Full) -> Self {
        self.full = full;
        self
    }

    /// The quota of the one overflow limiter that new keys share while the table is full
    /// ([`Full::Overflow`]). Default: the per-key quota (and it follows
    /// [`KeyedGcra::set_quota`]), so a full table admits at most one key's worth more
    /// than a table with room for everyone, and no key, in the table or out, is ever admitted
    /// beyond its own quota by the overflow limiter alone. A larger overflow quota serves more
    /// new users under rotation, but then one key outside the table can get up to it.
    #[must_use]
    pub fn overflow_quota(mut self, quota: Quota) -> Self {
        self.overflow_quota = Some(quota);
        self
    }

    /// The 128-bit SipHash key. By default (with feature `std`) `build` draws a secret one from
    /// the OS (`getrandom`), so clients cannot choose keys that collide. A fixed
    /// seed is an opt-in for tests and reproducible runs, or for `no_std`, where it is required;
    /// keep it secret when keys come from the network.
    #[must_use]
    pub fn hash_seed(mut self, seed: u128) -> Self {
        self.hash_seed = Some(seed);
        self
    }

    /// The largest clock step taken at face value, for every key and the overflow limiter
    /// (default [`DEFAULT_MAX_CLOCK_JUMP`](super::DEFAULT_MAX_CLOCK_JUMP); see [`crate::rate`],
    /// "Clock faults").
    #[must_use]
    pub fn max_clock_jump(mut self, jump: Duration) -> Self {
        self.max_clock_jump = Some(jump);
        self
    }

    /// The shards of the shared form ([`crate::sync::keyed::SharedKeyedGcra`], behind the
    /// adapters' `KeyedRateLimiter`), 1..=[`MAX_SHARDS`]: one lock each, so threads checking
    /// keys of different shards never wait for each other. Each shard may hold more than its
    /// share of `max_keys` (up to `share + 4 × ⌈√share⌉` keys, allocated up front) while the
    /// whole table holds at most `max_keys` (see [`crate::sync::keyed`]); more shards than
    /// `max_keys` are cut down to `max_keys`. Default: one shard per [`DEFAULT_KEYS_PER_SHARD`] keys, at least 1, at most
    /// [`DEFAULT_SHARDS`]. The `&mut` [`KeyedGcra`] ignores it.
    #[must_use]
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards);
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Zero`] for a missing quota or zero `max_keys`,
    /// [`ConfigError::OutOfRange`] for `max_keys` above [`MAX_KEYS_LIMIT`] or `shards` outside
    /// 1..=[`MAX_SHARDS`],
    /// [`ConfigError::Missing`] for a missing `hash_seed` without feature `std` (or if the
    /// OS random source failed).
    pub fn build(self) -> Result<KeyedConfig, ConfigError> {
        let quota = self.quota.ok_or(ConfigError::Zero { field: "quota" })?;
        if self.max_keys == 0 {
            return Err(ConfigError::Zero { field: "max_keys" });
        }
        if self.max_keys > MAX_KEYS_LIMIT {
            return Err(ConfigError::OutOfRange {
                field: "max_keys",
                expected: "at most 2^24 (16,777,216) keys, allocated up front; lower max_keys \
                           or shard keys across several limiters",
            });
        }
        if self.shards.is_some_and(|n| n == 0 || n > MAX_SHARDS) {
            return Err(ConfigError::OutOfRange {
                field: "shards",
                expected: "1 to 1024 shards (by default one per 64 keys, at most 16); each \
                           shard is one lock and holds at least one key of max_keys",
            });
        }
        let hash_seed = match self.hash_seed {
            Some(seed) => seed,
            None => os_hash_seed()?,
        };
        Ok(KeyedConfig {
            quota,
            max_keys: self.max_keys,
            full: self.full,
            overflow_quota: self.overflow_quota,
            hash_seed,
            max_clock_jump: self
                .max_clock_jump
                .map_or(gcra::DEFAULT_MAX_CLOCK_JUMP, duration_to_nanos),
            shards: self.shards,
        })
    }
}

#[cfg(feature = "std")]
const OS_HASH_SEED_HINT: &str =
    "the OS random source failed; pass a secret random `.hash_seed(..)`";
#[cfg(not(feature = "std"))]
const OS_HASH_SEED_HINT: &str = "without `std` keel has no OS random source: call \
     `.hash_seed(..)` with a secret random value (a constant only if no attacker chooses the keys)";

/// The default hash seed: from the OS random source with `std`, none without. One function
/// for both builds, so a mutation test with the default features checks the code a `no_std`
/// build runs.
fn os_hash_seed() -> Result<u128, ConfigError> {
    #[cfg(feature = "std")]
    let seed = crate::rng::os_seed();
    #[cfg(not(feature = "std"))]
    let seed = None;
    seed.ok_or(ConfigError::Missing {
        field: "hash_seed",
        hint: OS_HASH_SEED_HINT,
    })
}

/// Why a [`KeyedGcra`] rejected a request: the `reason` of its [`Rejected`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum KeyedLimited {
    /// The key (or the overflow limiter of a full table) is over its rate: the request would
    /// conform at the rejection's `retry_at` (always `Some`), if nothing else is admitted first.
    #[error("rate limited: retry later or raise the quota")]
    OverRate,
    /// The batch is larger than the burst and can never be admitted at once (`retry_at` is
    /// `None`).
    #[error("a batch larger than the burst ({burst}) can never be admitted: split it or raise the burst")]
    InsufficientCapacity {
        /// The quota's burst.
        burst: u32,
    },
    /// The table is full of active keys and the policy is [`Full::RejectNew`] (`retry_at` is
    /// `None`: a slot frees when a key goes idle, which no instant promises).
    #[error(
        "the keyed rate limiter is full of active keys: raise `max_keys` or use `Full::Overflow`"
    )]
    TableFull,
}

impl From<RateLimited> for KeyedLimited {
    fn from(e: RateLimited) -> Self {
        match e {
            RateLimited::OverRate => KeyedLimited::OverRate,
            RateLimited::InsufficientCapacity { burst } => {
                KeyedLimited::InsufficientCapacity { burst }
            }
        }
    }
}

/// The overflow limiter's (or a per-key form's) rejection, as a keyed one.
pub(crate) fn keyed(r: Rejected<RateLimited>) -> Rejected<KeyedLimited> {
    Rejected {
        reason: r.reason.into(),
        retry_at: r.retry_at,
    }
}

/// The table's own decision (`local`, from [`KeyedGcra::decide_local`]), or where it has none
/// (a new key in a full table under [`Full::Overflow`]) the overflow limiter's: `overflow` runs
/// only then. For both forms: the table's own overflow limiter, or the one every shard of
/// [`crate::sync::keyed`] shares.
pub(crate) fn or_overflow(
    local: Option<KeyedDecision>,
    overflow: impl FnOnce() -> Result<(), Rejected<RateLimited>>,
) -> KeyedDecision {
    match local {
        Some(decision) => decision,
        None => KeyedDecision {
            by: DecidedBy::Overflow,
            result: overflow().map_err(keyed),
        },
    }
}

const fn over_rate(at: u64) -> Rejected<KeyedLimited> {
    Rejected {
        reason: KeyedLimited::OverRate,
        retry_at: Some(Instant::from_nanos(at)),
    }
}

const fn never(reason: KeyedLimited) -> Rejected<KeyedLimited> {
    Rejected {
        reason,
        retry_at: None,
    }
}

/// Counters of a [`KeyedGcra`].
// `repr(C)`: the three counters every check writes come first, on the cache line a shard of
// the shared form writes for its lock anyway (see `KeyedGcra`'s layout).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
#[repr(C)]
pub struct KeyedStats {
    /// Checks admitted.
    pub allowed: u64,
    /// Checks rejected by the rate (`OverRate`, `InsufficientCapacity`).
    pub limited: u64,
    /// Index slots examined by the lookups of `try_acquire`/`try_acquire_n`: about one per
    /// check with well-spread hashes. A ratio `probes / (allowed + limited)` far above 1 means keys
    /// collide (a hash-flooding attack on a known seed).
    pub probes: u64,
    /// Active keys forgotten to make room ([`Full::EvictLeastRecentlyUsed`]).
    pub evicted: u64,
    /// Idle keys forgotten (no decision changes).
    pub reclaimed: u64,
    /// New keys rejected because the table was full ([`Full::RejectNew`]).
    pub rejected_full: u64,
    /// Checks of keys outside a full table admitted by the overflow limiter ([`Full::Overflow`];
    /// also counted in `allowed`).
    pub overflow_allowed: u64,
    /// Checks of keys outside a full table rejected by the overflow limiter (also counted in
    /// `limited`).
    pub overflow_limited: u64,
    /// Clock faults resynchronised, per key and in the overflow limiter (see [`crate::rate`],
    /// "Clock faults").
    pub clock_faults: u64,
}

impl KeyedStats {
    /// The sum of two tables' counters, each saturating (the shards of the shared form).
    #[cfg(feature = "std")]
    pub(crate) fn plus(self, o: KeyedStats) -> KeyedStats {
        KeyedStats {
            allowed: self.allowed.saturating_add(o.allowed),
            limited: self.limited.saturating_add(o.limited),
            evicted: self.evicted.saturating_add(o.evicted),
            reclaimed: self.reclaimed.saturating_add(o.reclaimed),
            rejected_full: self.rejected_full.saturating_add(o.rejected_full),
            overflow_allowed: self.overflow_allowed.saturating_add(o.overflow_allowed),
            overflow_limited: self.overflow_limited.saturating_add(o.overflow_limited),
            clock_faults: self.clock_faults.saturating_add(o.clock_faults),
            probes: self.probes.saturating_add(o.probes),
        }
    }
}

/// Which limiter made a keyed decision ([`KeyedGcra::decide_n`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DecidedBy {
    /// The key's own GCRA state in the table (or the table itself, for
    /// [`KeyedLimited::TableFull`] and a batch over the per-key burst).
    Key,
    /// The shared overflow limiter: the table was full of active keys ([`Full::Overflow`]).
    Overflow,
}

impl DecidedBy {
    /// A constant name for logs and metrics: `"key"` or `"overflow"`.
    #[must_use]
    pub const fn as_str(&self) -> &'static str {
        match self {
            DecidedBy::Key => "key",
            DecidedBy::Overflow => "overflow",
        }
    }
}

#[derive(Clone, Debug)]
struct Entry<K> {
    key: Option<K>,
    /// The low 32 bits of the key's hash: its home slot in the index (at most 2^25 slots) and a
    /// cheap comparison before the key's. (Half the hash keeps the entry as small as before
    /// `used` was added: 40 bytes for `u64` keys.)
    hash: u32,
    /// Checked since it was last linked at the head of the LRU list: the tail hand gives it a
    /// second chance (see the module docs' "Recency").
    used: bool,
    tat: u64,
    prev: u32,
    next: u32,
}

/// One GCRA state per key, at most `max_keys` of them; see the [module docs](self).
///
/// | group | methods |
/// | --- | --- |
/// | construct | [`new`](Self::new) |
/// | admission | [`try_acquire`](Self::try_acquire), [`try_acquire_n`](Self::try_acquire_n) `-> Result<(), Rejected<KeyedLimited>>`, [`decide_n`](Self::decide_n) (which limiter decided) |
/// | commands | [`set_quota`](Self::set_quota), [`set_overflow_quota`](Self::set_overflow_quota) |
/// | getters | [`peek`](Self::peek), [`remaining`](Self::remaining), [`reset_at`](Self::reset_at), [`quota`](Self::quota), [`overflow_quota`](Self::overflow_quota), [`len`](Self::len), [`is_empty`](Self::is_empty), [`capacity`](Self::capacity), [`memory_bytes`](Self::memory_bytes), [`stats`](Self::stats) |
///
/// No timers and no events: idle keys are reclaimed by the checks of new keys that need their
/// slots.
///
/// Its `Debug` form shows the quota, the policy, the size and the counters (not the keys, nor
/// the hash key).
///
/// ```
/// use core::num::NonZeroU32;
/// use core::time::Duration;
/// use keel_core::rate::keyed::{KeyedConfig, KeyedGcra, KeyedLimited};
/// use keel_core::rate::Quota;
/// use keel_core::Instant;
///
/// // Each key: one request every 2 s, bursts of 2; at most 1024 keys tracked.
/// let quota = Quota::with_period(Duration::from_secs(2))?.with_burst(NonZeroU32::new(2).unwrap())?;
/// let config = KeyedConfig::builder().quota(quota).max_keys(1024).hash_seed(7).build()?;
/// let t0 = Instant::from_secs(10);
/// let mut limiter = KeyedGcra::new(config, t0);
///
/// assert!(limiter.try_acquire(t0, &"alice").is_ok());
/// assert!(limiter.try_acquire(t0, &"alice").is_ok()); // her burst of 2
/// let limited = limiter.try_acquire(t0, &"alice").unwrap_err();
/// assert_eq!(limited.reason, KeyedLimited::OverRate);
/// assert_eq!(limited.retry_at, Some(t0 + Duration::from_secs(2)));
/// assert_eq!(limiter.reset_at(t0, &"alice"), t0 + Duration::from_secs(4)); // burst whole again
/// // Another key has its own budget.
/// assert!(limiter.try_acquire(t0, &"bob").is_ok());
/// assert_eq!(limiter.remaining(t0, &"bob"), 1);
/// assert_eq!(limiter.len(), 2);
/// # Ok::<(), keel_core::ConfigError>(())
/// ```
// `repr(C)`, in three groups: what every check writes (the counters), what a new key writes
// (the list and the sizes), then what only configuration changes write. Behind a shard's lock
// (`crate::sync::keyed`) the counters share the lock word's cache line, and the lines a check
// only reads stay shared between the cores instead of moving with every write (issue 16).
#[derive(Clone)]
#[repr(C)]
pub struct KeyedGcra<K> {
    stats: KeyedStats,
    len: usize,
    head: u32,
    tail: u32,
    free: u32,
    cursor: usize,
    t: u64,
    tau: u64,
    burst: NonZeroU32,
    full: Full,
    overflow_follows: bool,
    jump: u64,
    k0: u64,
    k1: u64,
    entries: Vec<Entry<K>>,
    index: Vec<u32>,
    mask: usize,
    max_keys: usize,
    overflow: Gcra,
}

impl<K> core::fmt::Debug for KeyedGcra<K> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyedGcra")
            .field("quota", &Quota::from_parts(self.t, self.burst))
            .field("full", &self.full)
            .field("overflow", &self.overflow)
            .field("len", &self.len)
            .field("max_keys", &self.max_keys)
            .field("max_clock_jump", &Duration::from_nanos(self.jump))
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone> KeyedGcra<K> {
    /// Allocates the whole table (see [`KeyedGcra::memory_bound`]).
    #[must_use]
    pub fn new(config: KeyedConfig, now: Instant) -> Self {
        Self::with_capacity(config, config.max_keys, config.max_keys, now)
    }

    /// A table of `config` holding at most `max_keys` keys, its index sized for `usual` of
    /// them (load factor at most 1/2 up to `usual` keys; always a free slot): a shard of the
    /// shared form, whose `max_keys` has slack above its `usual` share.
    pub(crate) fn with_capacity(
        config: KeyedConfig,
        max_keys: usize,
        usual: usize,
        now: Instant,
    ) -> Self {
        let max_keys = max_keys.clamp(1, MAX_KEYS_LIMIT);
        let slots = index_slots(usual.min(max_keys)).max((max_keys + 1).next_power_of_two());
        let index = alloc::vec![0u32; slots];
        KeyedGcra {
            t: config.quota.t_nanos(),
            tau: config.quota.tau(),
            burst: config.quota.burst(),
            full: config.full,
            jump: config.max_clock_jump,
            overflow: Gcra::new(config.overflow_quota(), now)
                .with_max_clock_jump(Duration::from_nanos(config.max_clock_jump)),
            overflow_follows: config.overflow_quota.is_none(),
            k0: config.hash_keys().0,
            k1: config.hash_keys().1,
            entries: Vec::with_capacity(max_keys),
            index,
            mask: slots - 1,
            max_keys,
            len: 0,
            head: NIL,
            tail: NIL,
            free: NIL,
            cursor: 0,
            stats: KeyedStats::default(),
        }
    }

    /// The table's footprint for `max_keys` keys: entry array plus index, in bytes (heap
    /// memory owned by the keys themselves not included).
    #[must_use]
    pub fn memory_bound(max_keys: usize) -> usize {
        let max_keys = max_keys.clamp(1, MAX_KEYS_LIMIT);
        max_keys
            .saturating_mul(size_of::<Entry<K>>())
            .saturating_add(index_slots(max_keys).saturating_mul(size_of::<u32>()))
    }

    /// The bytes this table holds (entry array and index capacities); fixed at construction.
    #[must_use]
    pub fn memory_bytes(&self) -> usize {
        self.entries
            .capacity()
            .saturating_mul(size_of::<Entry<K>>())
            .saturating_add(self.index.capacity().saturating_mul(size_of::<u32>()))
    }

    /// Keys tracked now (never above [`capacity`](Self::capacity)).
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// No key tracked.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `max_keys`.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.max_keys
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> KeyedStats {
        let o = self.overflow.stats();
        KeyedStats {
            allowed: self.stats.allowed.saturating_add(o.allowed),
            limited: self.stats.limited.saturating_add(o.limited),
            overflow_allowed: o.allowed,
            overflow_limited: o.limited,
            clock_faults: self.stats.clock_faults.saturating_add(o.clock_faults),
            ..self.stats
        }
    }

    /// The table's own counters, without its overflow limiter's (the shards of the shared
    /// form, whose overflow limiter is the one they share).
    #[cfg(feature = "std")]
    pub(crate) fn table_stats(&self) -> KeyedStats {
        self.stats
    }

    /// The overflow limiter's quota in force ([`Full::Overflow`]).
    #[must_use]
    pub fn overflow_quota(&self) -> Quota {
        self.overflow.quota()
    }

    /// The per-key quota in force.
    #[must_use]
    pub fn quota(&self) -> Quota {
        Quota::from_parts(self.t, self.burst)
    }

    /// Admits one request for `key` at `now`, or says when it would be admitted
    /// ([`KeyedLimited::OverRate`] with `retry_at: Some(..)`) or that the table is full
    /// ([`KeyedLimited::TableFull`], `retry_at: None`).
    #[must_use = "a rejected request must not proceed"]
    pub fn try_acquire(&mut self, now: Instant, key: &K) -> Result<(), Rejected<KeyedLimited>> {
        self.try_acquire_n(now, key, 1)
    }

    /// Admits `n` requests for `key` at once (all or none). `n = 0` is always admitted and
    /// changes nothing; `n > burst` is [`KeyedLimited::InsufficientCapacity`] with
    /// `retry_at: None`.
    #[must_use = "a rejected request must not proceed"]
    pub fn try_acquire_n(
        &mut self,
        now: Instant,
        key: &K,
        n: u32,
    ) -> Result<(), Rejected<KeyedLimited>> {
        self.decide_n(now, key, n).result
    }

    /// [`try_acquire_n`](Self::try_acquire_n), saying which limiter decided: the key's own state or the
    /// shared overflow limiter of a full table ([`Full::Overflow`]).
    #[must_use = "a rejected request must not proceed"]
    pub fn decide_n(&mut self, now: Instant, key: &K, n: u32) -> KeyedDecision {
        let hash = self.hash(key);
        let local = self.decide_local(now, key, hash, n, &());
        or_overflow(local, || self.overflow.try_acquire_n(now, n))
    }

    /// The decision of the table itself for `key` (whose hash is `hash`): `None` when the key
    /// finds no slot in a full table under [`Full::Overflow`], where the overflow limiter
    /// decides (this table's own in [`decide_n`](Self::decide_n), the one limiter every shard
    /// shares in [`crate::sync::keyed`]). `room` is the budget beyond this table's own
    /// capacity (`&()` for none: the `&mut` table; the table-wide key count for a shard).
    // Inlined into its three callers: out of line, its `Option<KeyedDecision>` came back
    // through memory written piecewise and read whole, a store-forwarding stall the caller
    // paid on every check (issue 16's profile).
    #[inline(always)]
    pub(crate) fn decide_local(
        &mut self,
        now: Instant,
        key: &K,
        hash: u64,
        n: u32,
        room: &impl Room,
    ) -> Option<KeyedDecision> {
        let now = now.as_nanos();
        let by_key = |result| {
            Some(KeyedDecision {
                by: DecidedBy::Key,
                result,
            })
        };
        if n == 0 {
            return by_key(Ok(()));
        }
        if n > self.burst.get() {
            self.stats.limited = self.stats.limited.saturating_add(1);
            return by_key(Err(never(KeyedLimited::InsufficientCapacity {
                burst: self.burst.get(),
            })));
        }
        let (found, probes) = self.find(key, hash);
        self.stats.probes = self.stats.probes.saturating_add(probes);
        match found {
            Found::At(idx) => {
                let (t, tau, jump) = (self.t, self.tau, self.jump);
                let Some(entry) = self.entries.get_mut(idx as usize) else {
                    return by_key(Err(never(KeyedLimited::TableFull)));
                };
                // Recency is one flag, written only when it changes: a key checked over and
                // over (a hammering client's denials) writes its entry no more.
                if !entry.used {
                    entry.used = true;
                }
                // A clock fault is always a rejection first: tested on that branch only.
                let decision = match gcra::conform_n(entry.tat, now, t, tau, n) {
                    Err(_) if gcra::clock_fault(entry.tat, now, t, tau, jump) => {
                        entry.tat = now.min(gcra::TAT_MAX);
                        self.stats.clock_faults = self.stats.clock_faults.saturating_add(1);
                        gcra::conform_n(entry.tat, now, t, tau, n)
                    }
                    d => d,
                };
                match decision {
                    Ok(tat) => {
                        entry.tat = tat;
                        self.stats.allowed = self.stats.allowed.saturating_add(1);
                        by_key(Ok(()))
                    }
                    Err(at) => {
                        self.stats.limited = self.stats.limited.saturating_add(1);
                        by_key(Err(over_rate(at)))
                    }
                }
            }
            Found::Vacant(_) | Found::Broken => {
                // A fresh key has TAT = now, so `n <= burst` always conforms.
                let tat = match gcra::conform_n(now, now, self.t, self.tau, n) {
                    Ok(tat) => tat,
                    Err(at) => {
                        self.stats.limited = self.stats.limited.saturating_add(1);
                        return by_key(Err(over_rate(at)));
                    }
                };
                match self.insert(now, key, hash, tat, room) {
                    Ok(()) => {
                        self.stats.allowed = self.stats.allowed.saturating_add(1);
                        by_key(Ok(()))
                    }
                    Err(Overflowed) if self.full == Full::Overflow => None,
                    Err(Overflowed) => {
                        self.stats.rejected_full = self.stats.rejected_full.saturating_add(1);
                        by_key(Err(never(KeyedLimited::TableFull)))
                    }
                }
            }
        }
    }

    /// Would one request for `key` be admitted at `now`? Consumes nothing. For a new key in a
    /// full table it asks what the check's insert would find (an idle key under the sweep's
    /// hand, the least recently used key after the second chances), moving nothing: a check at
    /// the same instant right after it decides as the peek said.
    #[must_use = "peeking has no effect unless the answer is used"]
    pub fn peek(&self, now: Instant, key: &K) -> Result<(), Rejected<KeyedLimited>> {
        match self.peek_local(now, key, self.hash(key), &()) {
            Some(answer) => answer,
            None => self.overflow.peek(now).map_err(keyed),
        }
    }

    /// [`peek`](Self::peek) by the table alone: `None` when the overflow limiter would decide.
    pub(crate) fn peek_local(
        &self,
        now: Instant,
        key: &K,
        hash: u64,
        room: &impl Room,
    ) -> Option<Result<(), Rejected<KeyedLimited>>> {
        let now = now.as_nanos();
        match self.find(key, hash).0 {
            Found::At(idx) => Some(match self.entries.get(idx as usize) {
                Some(e) => gcra::conform(self.tat_at(e.tat, now), now, self.t, self.tau)
                    .map(|_| ())
                    .map_err(over_rate),
                None => Ok(()),
            }),
            Found::Vacant(_) | Found::Broken => {
                if !self.full_at(now, room) {
                    return Some(Ok(()));
                }
                match self.full {
                    Full::RejectNew => Some(Err(never(KeyedLimited::TableFull))),
                    Full::Overflow => None,
                    Full::EvictLeastRecentlyUsed => Some(Ok(())),
                }
            }
        }
    }

    /// How many single requests `key` could make at `now` (between 0 and the burst), by its
    /// own state: a key not in the table has its full burst (a full table may still refuse it
    /// or send it to the overflow limiter: [`peek`](Self::peek) says which).
    #[must_use]
    pub fn remaining(&self, now: Instant, key: &K) -> u32 {
        self.remaining_hashed(now, key, self.hash(key))
    }

    pub(crate) fn remaining_hashed(&self, now: Instant, key: &K, hash: u64) -> u32 {
        let now = now.as_nanos();
        let tat = self.key_tat(now, key, hash);
        gcra::remaining(tat, now, self.t, self.tau, self.burst.get())
    }

    /// When `key`'s full burst is available again (`RateLimit`'s reset, `X-RateLimit-Reset`):
    /// the instant its bucket is full, by its own state as the next check would read it;
    /// `now` if it already is, for a key not in the table, and for a state that proves a clock
    /// fault (it reads as a fresh key). Exact to the nanosecond: at `reset_at`,
    /// [`remaining`](Self::remaining) is the burst, one nanosecond earlier it is not.
    #[must_use]
    pub fn reset_at(&self, now: Instant, key: &K) -> Instant {
        self.reset_at_hashed(now, key, self.hash(key))
    }

    pub(crate) fn reset_at_hashed(&self, now: Instant, key: &K, hash: u64) -> Instant {
        let now = now.as_nanos();
        Instant::from_nanos(self.key_tat(now, key, hash).max(now))
    }

    /// The key's TAT as a decision at `now` reads it (`now` for a key not in the table).
    fn key_tat(&self, now: u64, key: &K, hash: u64) -> u64 {
        match self.find(key, hash).0 {
            Found::At(idx) => self
                .entries
                .get(idx as usize)
                .map_or(now, |e| self.tat_at(e.tat, now)),
            Found::Vacant(_) | Found::Broken => now,
        }
    }

    /// A key's state as a decision at `now` sees it (a clock fault reads as a fresh key).
    fn tat_at(&self, tat: u64, now: u64) -> u64 {
        gcra::resync(tat, now, self.t, self.tau, self.jump)
    }

    /// Is the state `tat` of a key that can be forgotten at `now` without changing a decision
    /// (idle, or a clock fault, which reads as a fresh key)?
    fn forgettable(&self, tat: u64, now: u64) -> bool {
        tat <= now || gcra::clock_fault(tat, now, self.t, self.tau, self.jump)
    }

    /// Would a new key find no slot at `now`? Asks what a check's insert would do, moving
    /// nothing: room, else an idle key under the sweep's hand, else an idle least recently used
    /// key after the second chances.
    fn full_at(&self, now: u64, room: &impl Room) -> bool {
        let room = self.len < self.max_keys && room.has_room();
        !room && !self.sweep_would_reclaim(now) && !self.idle_at(self.lru_candidate(), now)
    }

    /// Switches every key to `quota` at `now` with the guarantees of
    /// [`Gcra::set_quota`](super::Gcra::set_quota). O(len).
    ///
    /// The overflow limiter follows when its quota is the default (the per-key quota); one set
    /// with [`KeyedConfigBuilder::overflow_quota`] is changed with
    /// [`set_overflow_quota`](Self::set_overflow_quota).
    pub fn set_quota(&mut self, now: Instant, quota: Quota) {
        let at = now;
        let now = now.as_nanos();
        let (t_old, tau_old, b_old, jump) = (self.t, self.tau, self.burst.get(), self.jump);
        let (t_new, b_new) = (quota.t_nanos(), quota.burst().get());
        let mut faults = 0u64;
        for e in self.entries.iter_mut().filter(|e| e.key.is_some()) {
            let base = gcra::resync(e.tat, now, t_old, tau_old, jump);
            faults += u64::from(base != e.tat);
            e.tat = gcra::requota(base, now, t_old, b_old, t_new, b_new);
        }
        self.stats.clock_faults = self.stats.clock_faults.saturating_add(faults);
        if self.overflow_follows {
            self.overflow.set_quota(at, quota);
        }
        self.t = t_new;
        self.tau = quota.tau();
        self.burst = quota.burst();
    }

    /// Switches the overflow limiter to `quota` at `now` (with the guarantees of
    /// [`Gcra::set_quota`]); it no longer follows [`set_quota`](Self::set_quota).
    pub fn set_overflow_quota(&mut self, now: Instant, quota: Quota) {
        self.overflow.set_quota(now, quota);
        self.overflow_follows = false;
    }
}

/// A keyed decision and the limiter that made it ([`KeyedGcra::decide_n`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[must_use = "a rejected request must not proceed"]
pub struct KeyedDecision {
    /// The key's own state, or the overflow limiter of a full table.
    pub by: DecidedBy,
    /// The decision, as [`KeyedGcra::try_acquire_n`] returns it.
    pub result: Result<(), Rejected<KeyedLimited>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With `std` a config built without a seed draws one from the OS; without `std` the
    /// builder refuses and says what to call (run with `--no-default-features --features alloc`).
    #[test]
    fn a_missing_seed_is_drawn_from_the_os_or_refused() {
        let build = || {
            KeyedConfig::builder()
                .quota(Quota::per_second(NonZeroU32::MIN).unwrap())
                .max_keys(4)
                .build()
        };
        #[cfg(feature = "std")]
        {
            let (a, b) = (build().unwrap(), build().unwrap());
            assert_ne!(a.hash_seed, b.hash_seed);
        }
        #[cfg(not(feature = "std"))]
        {
            let e = build().unwrap_err();
            assert!(matches!(
                e,
                ConfigError::Missing {
                    field: "hash_seed",
                    ..
                }
            ));
            assert!(alloc::format!("{e}").contains(".hash_seed(..)"));
        }
    }
}
