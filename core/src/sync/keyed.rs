//! The keyed limiter shared by threads: [`SharedKeyedGcra`], a bounded [`KeyedGcra`] table
//! split into shards, each behind its own lock, with **one** overflow limiter for them all.
//!
//! # Design
//!
//! - **Shards.** A key's SipHash (the table's seeded hash, [`KeyedConfigBuilder::hash_seed`])
//!   picks its shard from the hash's high 32 bits (`(h × shards) >> 32`); the shard's own index
//!   uses the low bits. Each shard is a `&mut` [`KeyedGcra`] behind a mutex on its own cache
//!   line, so threads checking keys of different shards never wait for each other, and a
//!   check holds one lock for one table lookup. Everything a key's decision reads is in its
//!   shard: **per key, decisions are exactly the `&mut` table's** (the agreement proptests in
//!   `core/tests/keyed_shared.rs` run both on the same operations).
//! - **`max_keys` bounds the whole table; each shard has slack above its share.** With
//!   `s = min(shards, max_keys)` shards ([`KeyedConfigBuilder::shards`]; by default one per 64
//!   keys, at most [`DEFAULT_SHARDS`], so a table under 128 keys is one shard, exactly the
//!   `&mut` table), shard `i`'s share is `max_keys / s` keys, plus one for the first
//!   `max_keys % s` shards, and it may hold up to `share + 4 × ⌈√share⌉` keys (never more than
//!   `max_keys`): four standard deviations of the keys a uniform hash gives it, so with keys
//!   spread by the secret hash a shard seldom fills while the table has room (of a full table's
//!   keys, a shard of the default 64-key share gets more than its capacity of 96 with
//!   probability about 4 × 10⁻⁵, any of 16 such shards about 7 × 10⁻⁴; then only its keys
//!   beyond 96 take the reclaim path). One **table-wide key count** (an atomic, changed only
//!   when a shard takes a new key or forgets keys, never by a check of a key it holds) holds
//!   the shards together to `max_keys` keys:
//!   [`len`] never exceeds `max_keys`. A new key finds no place when its shard is at its
//!   capacity or the count is at `max_keys`; it is then handled as in a full `&mut` table,
//!   within its shard: the shard's idle keys are reclaimed first (the new key takes a freed
//!   place and its count), then [`Full`] applies (evict the shard's least recently used key,
//!   the overflow limiter, or a rejection). Under [`Full::EvictLeastRecentlyUsed`] each
//!   shard's first key is its own, outside the count, so a shard that finds the table full
//!   always holds a key to evict: the table then holds all `max_keys` keys only while every
//!   shard holds one (`max_keys - s` of them are shared). A table with room per the count
//!   therefore takes every new key, as the `&mut` table of the same `max_keys` does (the
//!   proptest `a_table_near_max_keys_agrees_with_the_mut_table_of_the_same_max_keys`); until
//!   issue 16 the shares added up to `max_keys` exactly, so a shard given more than its share
//!   of a working set near `max_keys` kept reclaiming its idle keys for the rest (38-46 % of
//!   the checks of issue 16's 1000-key bench took that path, depending on the seed; none
//!   now: the test `a_working_set_of_max_keys_is_all_hits_after_the_first_pass`).
//! - **Memory is bounded by construction** and allocated up front: each shard's entry array
//!   holds its capacity, and its index is sized for its share (`next_power_of_two(2 × share)`
//!   slots, load factor at most 1/2 up to the share and a little above it in the slack), so
//!   [`memory_bytes`](SharedKeyedGcra::memory_bytes) never changes. The slack costs: a
//!   1000-key table of `u64` keys (15 shards) holds 82,720 bytes instead of 61,120 with the
//!   exact split (the `&mut` table: 48,192); a 2^20-key table (16 shards), 50,993,152 instead
//!   of 50,337,792 (+1.3 %; the `&mut` table: 50,331,648). With keys spread by a secret hash
//!   the shards fill evenly (about `√share` apart); a client can aim at one shard only if it
//!   can predict the hash, which is why the seed is drawn from the OS by default and must
//!   stay secret when set: such a client fills one shard to its capacity and gets the shard's
//!   [`Full`] policy there, never more memory.
//! - **One overflow limiter.** Under [`Full::Overflow`] a new key that finds no place is
//!   decided by one lock-free [`SharedRateLimiter`] that every shard shares, not by one per
//!   shard: a flood of new keys gets at most the documented overflow quota
//!   ([`KeyedConfigBuilder::overflow_quota`]) across all shards together, as from the `&mut`
//!   table (the test `a_flood_of_new_keys_gets_one_overflow_quota_across_all_shards`).
//! - **Quota changes** ([`set_quota`](SharedKeyedGcra::set_quota)) are serialised by their own
//!   lock and applied shard by shard: each key switches at one instant (its shard's lock), so
//!   per key they have the `&mut` table's guarantees; a check on another shard may still see
//!   the old quota until its shard's turn. The overflow limiter changes with the shared form's
//!   guarantees ([`SharedRateLimiter::set_quota`]: never more permissive than the `&mut` form).
//! - **Reads that must agree with a decision** (the IETF `RateLimit` fields) go through
//!   [`decide_n_with`](SharedKeyedGcra::decide_n_with), which hands a read-only [`KeyedEntry`]
//!   for the decided key under the same lock. Nothing hands out a whole shard: a caller could
//!   otherwise insert a key into the wrong shard (where it would never be found again) or give
//!   one shard a different quota.
//!
//! [`len`]: SharedKeyedGcra::len
//! [`KeyedConfigBuilder::hash_seed`]: crate::rate::keyed::KeyedConfigBuilder::hash_seed
//! [`KeyedConfigBuilder::shards`]: crate::rate::keyed::KeyedConfigBuilder::shards
//! [`KeyedConfigBuilder::overflow_quota`]: crate::rate::keyed::KeyedConfigBuilder::overflow_quota
//! [`DEFAULT_SHARDS`]: crate::rate::keyed::DEFAULT_SHARDS
//!
//! ```
//! use core::num::NonZeroU32;
//! use keel_core::rate::keyed::{DecidedBy, KeyedConfig};
//! use keel_core::rate::Quota;
//! use keel_core::sync::keyed::SharedKeyedGcra;
//! use keel_core::Instant;
//!
//! let config = KeyedConfig::builder()
//!     .quota(Quota::per_second(NonZeroU32::new(2).unwrap())?)
//!     .max_keys(1000)
//!     .shards(8)
//!     .build()?;
//! let now = Instant::from_secs(1);
//! let table = SharedKeyedGcra::<u64>::new(config, now);
//! assert_eq!((table.shards(), table.capacity()), (8, 1000));
//! assert!(table.try_acquire(now, &7).is_ok());
//! let (by, remaining) = table.decide_n_with(now, &7, 1, |entry, d| (d.by, entry.remaining()));
//! assert_eq!((by, remaining), (DecidedBy::Key, 0));
//! assert!(table.try_acquire(now, &7).is_err());
//! # Ok::<(), keel_core::ConfigError>(())
//! ```

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;
use core::hash::Hash;
use core::mem::size_of;

use super::gcra::SharedRateLimiter;
use super::shim::{AtomicUsize, Mutex, MutexGuard, Ordering};
use crate::error::Rejected;
use crate::rate::keyed::{
    hash_key, keyed, or_overflow, Full, KeyedConfig, KeyedDecision, KeyedGcra, KeyedLimited,
    KeyedStats, Room,
};
use crate::rate::Quota;
use crate::time::Instant;

/// One shard on its own cache lines (two, for CPUs that fetch lines in pairs).
#[repr(align(128))]
struct Shard<K>(Mutex<KeyedGcra<K>>);

/// The slack of a shard in standard deviations of its key count: a shard whose share of
/// `max_keys` is `share` holds at most `share + SLACK_SIGMAS × ⌈√share⌉` keys.
const SLACK_SIGMAS: usize = 4;

/// Shard `i` of `shards`: its share of `max_keys` (`max_keys / shards`, plus one for the first
/// `max_keys % shards`), and the most keys it may hold: the share plus [`SLACK_SIGMAS`]
/// standard deviations of a uniform spread (`⌈√share⌉` bounds one), never more than
/// `max_keys`.
fn shard_capacity(max_keys: usize, shards: usize, i: usize) -> (usize, usize) {
    let share = max_keys / shards + usize::from(i < max_keys % shards);
    let root = share.isqrt();
    let sigma = root + usize::from(root * root < share);
    let cap = share
        .saturating_add(SLACK_SIGMAS.saturating_mul(sigma))
        .min(max_keys);
    (share, cap)
}

/// The table-wide key count that holds the shards to `max_keys` together ([`Room`]): each
/// shard's first `own` keys are its own; every key beyond them is counted in `used`, at most
/// `size = max_keys - own × shards`. Changed only when a shard grows or forgets keys, never by
/// a check of a key it holds. Relaxed: the count is a bound on its own (the keys are under
/// the shards' locks); each claim is one read-modify-write, so two never take the last place.
struct Pool {
    used: AtomicUsize,
    size: usize,
    own: usize,
}

impl Room for Pool {
    #[inline]
    fn claim(&self, len: usize) -> bool {
        len < self.own
            || self
                .used
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                    (u < self.size).then_some(u + 1)
                })
                .is_ok()
    }

    #[inline]
    fn release(&self, from: usize, to: usize) {
        // Callers pass `to <= from` (a table forgets keys here, it never gains any); were that
        // broken, nothing is given back rather than the count wrapping.
        debug_assert!(to <= from, "release from {from} to {to} keys");
        let freed = from
            .saturating_sub(self.own)
            .saturating_sub(to.saturating_sub(self.own));
        if freed != 0 {
            self.used.fetch_sub(freed, Ordering::Relaxed);
        }
    }

    #[inline]
    fn has_room(&self) -> bool {
        self.used.load(Ordering::Relaxed) < self.size
    }
}

/// A bounded keyed GCRA table shared by threads (`&self`); see the [module docs](self).
///
/// | group | methods |
/// | --- | --- |
/// | construct | [`new`](Self::new) |
/// | admission | [`try_acquire`](Self::try_acquire), [`try_acquire_n`](Self::try_acquire_n), [`decide_n`](Self::decide_n), [`decide_n_with`](Self::decide_n_with) |
/// | commands | [`set_quota`](Self::set_quota), [`set_overflow_quota`](Self::set_overflow_quota) |
/// | getters | [`peek`](Self::peek), [`remaining`](Self::remaining), [`reset_at`](Self::reset_at), [`quota`](Self::quota), [`overflow_quota`](Self::overflow_quota), [`len`](Self::len), [`capacity`](Self::capacity), [`shards`](Self::shards), [`memory_bytes`](Self::memory_bytes), [`stats`](Self::stats) |
pub struct SharedKeyedGcra<K> {
    /// Shard 0 (there is always one), then the others.
    head: Shard<K>,
    tail: Box<[Shard<K>]>,
    pool: Pool,
    overflow: SharedRateLimiter,
    /// Serialises quota changes; holds whether the overflow quota follows the per-key quota.
    quota_change: Mutex<bool>,
    full: Full,
    k0: u64,
    k1: u64,
    max_keys: usize,
}

impl<K> fmt::Debug for SharedKeyedGcra<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedKeyedGcra")
            .field("shards", &self.tail.len().saturating_add(1))
            .field("max_keys", &self.max_keys)
            .field("full", &self.full)
            .field("overflow", &self.overflow)
            .finish_non_exhaustive()
    }
}

/// A read-only view of one key's state under its shard's lock, with the decision just made
/// for it ([`SharedKeyedGcra::decide_n_with`]).
pub struct KeyedEntry<'a, K> {
    table: &'a KeyedGcra<K>,
    pool: &'a Pool,
    overflow: &'a SharedRateLimiter,
    key: &'a K,
    hash: u64,
    now: Instant,
}

impl<K> fmt::Debug for KeyedEntry<'_, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedEntry")
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone> KeyedEntry<'_, K> {
    /// The instant the decision was made at.
    #[must_use]
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The key.
    #[must_use]
    pub fn key(&self) -> &K {
        self.key
    }

    /// The per-key quota in force.
    #[must_use]
    pub fn quota(&self) -> Quota {
        self.table.quota()
    }

    /// [`KeyedGcra::remaining`] for this key at [`now`](Self::now).
    #[must_use]
    pub fn remaining(&self) -> u32 {
        self.table.remaining_hashed(self.now, self.key, self.hash)
    }

    /// [`KeyedGcra::reset_at`] for this key at [`now`](Self::now).
    #[must_use]
    pub fn reset_at(&self) -> Instant {
        self.table.reset_at_hashed(self.now, self.key, self.hash)
    }

    /// [`KeyedGcra::peek`] for this key at [`now`](Self::now) (the shared overflow limiter
    /// answers for a new key that finds no place under [`Full::Overflow`]).
    #[must_use = "peeking has no effect unless the answer is used"]
    pub fn peek(&self) -> Result<(), Rejected<KeyedLimited>> {
        match self
            .table
            .peek_local(self.now, self.key, self.hash, self.pool)
        {
            Some(answer) => answer,
            None => self.overflow.peek(self.now).map_err(keyed),
        }
    }
}

impl<K: Hash + Eq + Clone> SharedKeyedGcra<K> {
    /// Allocates every shard's table: `config.shards()` shards, each with room for its share
    /// of `config.max_keys()` plus slack, holding `max_keys` together (see the
    /// [module docs](self)).
    #[must_use]
    pub fn new(config: KeyedConfig, now: Instant) -> Self {
        let max_keys = config.max_keys();
        let s = config.shards();
        let shard = |i: usize| {
            let (share, cap) = shard_capacity(max_keys, s, i);
            Shard(Mutex::new(KeyedGcra::with_capacity(
                config, cap, share, now,
            )))
        };
        let tail: Vec<Shard<K>> = (1..s).map(shard).collect();
        let (k0, k1) = config.hash_keys();
        // Under `EvictLeastRecentlyUsed` each shard's first key is its own, so a shard that
        // finds the table full always holds a key to evict.
        let own = usize::from(config.full() == Full::EvictLeastRecentlyUsed);
        SharedKeyedGcra {
            head: shard(0),
            tail: tail.into_boxed_slice(),
            pool: Pool {
                used: AtomicUsize::new(0),
                size: max_keys.saturating_sub(own.saturating_mul(s)),
                own,
            },
            overflow: SharedRateLimiter::counted(config.overflow_quota(), now)
                .with_max_clock_jump(config.max_clock_jump()),
            quota_change: Mutex::new(config.overflow_follows()),
            full: config.full(),
            k0,
            k1,
            max_keys,
        }
    }

    #[inline]
    fn hash(&self, key: &K) -> u64 {
        hash_key(self.k0, self.k1, key)
    }

    /// The shard of a hash: its high 32 bits scaled to the shard count
    /// (`(h × n) >> 32 < n` for every `h < 2^32`, so every shard index is a shard).
    fn shard(&self, hash: u64) -> MutexGuard<'_, KeyedGcra<K>> {
        let n = self.shards() as u64;
        let i = (((hash >> 32) * n) >> 32) as usize;
        match i.checked_sub(1).and_then(|j| self.tail.get(j)) {
            Some(shard) => lock(&shard.0),
            None => lock(&self.head.0),
        }
    }

    fn all(&self) -> impl Iterator<Item = &Shard<K>> {
        core::iter::once(&self.head).chain(self.tail.iter())
    }

    /// Admits one request for `key` at `now` ([`KeyedGcra::try_acquire`]).
    #[must_use = "a rejected request must not proceed"]
    pub fn try_acquire(&self, now: Instant, key: &K) -> Result<(), Rejected<KeyedLimited>> {
        self.decide_n(now, key, 1).result
    }

    /// Admits `n` requests for `key` at once, all or none ([`KeyedGcra::try_acquire_n`]).
    #[must_use = "a rejected request must not proceed"]
    pub fn try_acquire_n(
        &self,
        now: Instant,
        key: &K,
        n: u32,
    ) -> Result<(), Rejected<KeyedLimited>> {
        self.decide_n(now, key, n).result
    }

    /// [`try_acquire_n`](Self::try_acquire_n), saying which limiter decided
    /// ([`KeyedGcra::decide_n`]).
    #[must_use = "a rejected request must not proceed"]
    pub fn decide_n(&self, now: Instant, key: &K, n: u32) -> KeyedDecision {
        let hash = self.hash(key);
        let mut table = self.shard(hash);
        self.decide_in(&mut table, now, key, hash, n)
    }

    /// Decides `n` requests for `key` at `now`, then runs `f` on a read-only view of the key
    /// and the decision under the same lock (for an answer that reports the key's state with
    /// its decision, e.g. the IETF `RateLimit` fields). Keep `f` short: it holds the shard.
    pub fn decide_n_with<T>(
        &self,
        now: Instant,
        key: &K,
        n: u32,
        f: impl FnOnce(KeyedEntry<'_, K>, KeyedDecision) -> T,
    ) -> T {
        let hash = self.hash(key);
        let mut table = self.shard(hash);
        let decision = self.decide_in(&mut table, now, key, hash, n);
        let entry = KeyedEntry {
            table: &table,
            pool: &self.pool,
            overflow: &self.overflow,
            key,
            hash,
            now,
        };
        f(entry, decision)
    }

    #[inline(always)]
    fn decide_in(
        &self,
        table: &mut KeyedGcra<K>,
        now: Instant,
        key: &K,
        hash: u64,
        n: u32,
    ) -> KeyedDecision {
        let local = table.decide_local(now, key, hash, n, &self.pool);
        or_overflow(local, || self.overflow.try_acquire_n(now, n))
    }

    /// Would one request for `key` be admitted at `now`? Consumes nothing
    /// ([`KeyedGcra::peek`]).
    #[must_use = "peeking has no effect unless the answer is used"]
    pub fn peek(&self, now: Instant, key: &K) -> Result<(), Rejected<KeyedLimited>> {
        let hash = self.hash(key);
        let answer = self.shard(hash).peek_local(now, key, hash, &self.pool);
        match answer {
            Some(answer) => answer,
            None => self.overflow.peek(now).map_err(keyed),
        }
    }

    /// How many single requests `key` could make at `now` ([`KeyedGcra::remaining`]).
    #[must_use]
    pub fn remaining(&self, now: Instant, key: &K) -> u32 {
        let hash = self.hash(key);
        self.shard(hash).remaining_hashed(now, key, hash)
    }

    /// When `key`'s full burst is available again ([`KeyedGcra::reset_at`]).
    #[must_use]
    pub fn reset_at(&self, now: Instant, key: &K) -> Instant {
        let hash = self.hash(key);
        self.shard(hash).reset_at_hashed(now, key, hash)
    }

    /// The per-key quota in force (the first shard's: during a
    /// [`set_quota`](Self::set_quota) the others may still have the old one).
    #[must_use]
    pub fn quota(&self) -> Quota {
        lock(&self.head.0).quota()
    }

    /// The overflow limiter's quota in force ([`Full::Overflow`]).
    #[must_use]
    pub fn overflow_quota(&self) -> Quota {
        self.overflow.quota()
    }

    /// Switches every key to `quota` at `now`, shard by shard, with the guarantees of
    /// [`KeyedGcra::set_quota`] per key. O(len). The overflow limiter follows when its quota
    /// is the default (the per-key quota).
    pub fn set_quota(&self, now: Instant, quota: Quota) {
        let follows = lock(&self.quota_change);
        for shard in self.all() {
            lock(&shard.0).set_quota(now, quota);
        }
        if *follows {
            self.overflow.set_quota(now, quota);
        }
    }

    /// Switches the overflow limiter to `quota` at `now`; it no longer follows
    /// [`set_quota`](Self::set_quota).
    pub fn set_overflow_quota(&self, now: Instant, quota: Quota) {
        let mut follows = lock(&self.quota_change);
        *follows = false;
        self.overflow.set_quota(now, quota);
    }

    /// Keys tracked now, summed over the shards (each read under its lock in turn: not a
    /// snapshot while others check). Never above [`capacity`](Self::capacity): the shards
    /// hold at most `max_keys` together (see the [module docs](self)).
    #[must_use]
    pub fn len(&self) -> usize {
        self.all().map(|s| lock(&s.0).len()).sum()
    }

    /// No key tracked.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `max_keys`: the most keys the shards hold together (each may hold more than its
    /// share; see the [module docs](self)).
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.max_keys
    }

    /// The number of shards (`min(shards, max_keys)`).
    #[must_use]
    pub fn shards(&self) -> usize {
        self.tail.len().saturating_add(1)
    }

    /// The bytes the shards and their tables hold, slack included (see the
    /// [module docs](self)); fixed at construction.
    #[must_use]
    pub fn memory_bytes(&self) -> usize {
        self.all().map(|s| lock(&s.0).memory_bytes()).fold(
            self.shards().saturating_mul(size_of::<Shard<K>>()),
            usize::saturating_add,
        )
    }

    /// Counters, summed over the shards, with the shared overflow limiter's.
    #[must_use]
    pub fn stats(&self) -> KeyedStats {
        let tables = self
            .all()
            .map(|s| lock(&s.0).table_stats())
            .fold(KeyedStats::default(), KeyedStats::plus);
        let o = self.overflow.stats();
        KeyedStats {
            allowed: tables.allowed.saturating_add(o.allowed),
            limited: tables.limited.saturating_add(o.limited),
            overflow_allowed: o.allowed,
            overflow_limited: o.limited,
            clock_faults: tables.clock_faults.saturating_add(o.clock_faults),
            ..tables
        }
    }
}

/// Locks a shard. A table is consistent between calls (no method leaves it half-changed
/// before a panic can happen), so a panic elsewhere does not poison its logic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

#[cfg(test)]
#[cfg(not(keel_loom))]
mod tests {
    use super::*;
    use crate::rate::keyed::DecidedBy;
    use core::num::NonZeroU32;
    use core::time::Duration;

    fn table(max_keys: usize, full: Full) -> SharedKeyedGcra<u64> {
        let quota = Quota::with_period(Duration::from_secs(10))
            .expect("valid")
            .with_burst(NonZeroU32::MIN)
            .expect("valid");
        let config = KeyedConfig::builder()
            .quota(quota)
            .max_keys(max_keys)
            .shards(2)
            .full(full)
            .hash_seed(7)
            .build()
            .expect("valid");
        SharedKeyedGcra::new(config, Instant::ZERO)
    }

    /// Keys whose hash picks shard 0 of two.
    fn keys_of_shard_0(table: &SharedKeyedGcra<u64>) -> impl Iterator<Item = u64> + '_ {
        (0_u64..).filter(|k| ((table.hash(k) >> 32) * 2) >> 32 == 0)
    }

    /// A shard filled to its whole capacity (its share, 16, plus its slack, up to `max_keys`)
    /// still finds an empty index slot for a new key's lookup: the index has more slots than
    /// the capacity, not just twice the share (which would be 32, all taken).
    #[test]
    fn a_shard_at_its_capacity_still_looks_up_a_new_key() {
        let table = table(32, Full::Overflow);
        let now = Instant::from_secs(1);
        let mut keys = keys_of_shard_0(&table);
        for k in keys.by_ref().take(32) {
            assert_eq!(table.decide_n(now, &k, 1).by, DecidedBy::Key, "key {k}");
        }
        assert_eq!(lock(&table.head.0).len(), 32);
        let next = keys.next().expect("more keys");
        assert_eq!(table.decide_n(now, &next, 1).by, DecidedBy::Overflow);
    }

    /// With the table-wide count at `max_keys`, a peek of a new key in a shard that has room
    /// of its own answers what a check would: refused under `Full::RejectNew`.
    #[test]
    fn a_peek_reads_the_table_wide_count() {
        let table = table(4, Full::RejectNew);
        let now = Instant::from_secs(1);
        for k in 0..4_u64 {
            assert!(table.try_acquire(now, &k).is_ok());
        }
        assert_eq!(table.len(), 4);
        let new = 4_u64;
        let peeked = table.peek(now, &new);
        assert!(peeked.is_err(), "{peeked:?}");
        assert_eq!(
            table.try_acquire(now, &new).map_err(|e| e.reason),
            peeked.map_err(|e| e.reason)
        );
    }
}
