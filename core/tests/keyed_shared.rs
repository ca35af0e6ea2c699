//! The sharded keyed table shared by threads (`keel_core::sync::keyed::SharedKeyedGcra`):
//! per-key agreement with the `&mut` `KeyedGcra` on the same operations (every operation with
//! one shard, per key while no shard is full with many, and with a working set of `max_keys`
//! keys), one overflow quota across all shards, `max_keys` a bound on the whole table (shards
//! take more than their share while the table has room), and the per-key bound under real
//! threads.

#![cfg(feature = "std")]

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use keel_core::rate::keyed::{DecidedBy, Full, KeyedConfig, KeyedGcra, KeyedLimited, SipHasher13};
use keel_core::rate::Quota;
use keel_core::sync::keyed::SharedKeyedGcra;
use keel_core::{ConfigError, Instant, Rejected};
use proptest::prelude::*;

#[path = "support/props.rs"]
mod props;

const SEED: u128 = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210;

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

fn quota(period_ms: u64, burst: u32) -> Quota {
    Quota::with_period(Duration::from_millis(period_ms))
        .unwrap()
        .with_burst(nz(burst))
        .unwrap()
}

fn full_of(p: u8) -> Full {
    match p % 3 {
        0 => Full::Overflow,
        1 => Full::RejectNew,
        _ => Full::EvictLeastRecentlyUsed,
    }
}

#[derive(Clone, Debug)]
enum Op {
    Check(u8, u32),
    Peek(u8),
    Advance(u64),
    Back(u64),
    SetQuota(u64, u32),
}

/// `sweep_sensitive`: also steps the clock back and changes the quota, whose answers for an
/// idle key depend on whether its table's sweep has forgotten it yet (see below).
fn op(keys: u8, sweep_sensitive: bool) -> impl Strategy<Value = Op> {
    let b = if sweep_sensitive { 1 } else { 0 };
    prop_oneof![
        6 => (0..keys, 0u32..4).prop_map(|(k, n)| Op::Check(k, n)),
        2 => (0..keys).prop_map(Op::Peek),
        3 => (0u64..1500).prop_map(Op::Advance),
        b => (0u64..200).prop_map(Op::Back),
        b => (1u64..2000, 1u32..4).prop_map(|(p, b)| Op::SetQuota(p, b)),
    ]
}

/// Runs `ops` on the `&mut` table and the shared one side by side; every answer must agree,
/// and with `all_stats` `len` and every counter (`probes` too with `probes`: tables of
/// different sizes probe their indexes differently).
fn agree(
    config: KeyedConfig,
    ops: &[Op],
    all_stats: bool,
    probes: bool,
) -> Result<(), TestCaseError> {
    let start = Instant::from_secs(100);
    let mut m = KeyedGcra::<u8>::new(config, start);
    let s = SharedKeyedGcra::<u8>::new(config, start);
    let mut now = start;
    for op in ops {
        match *op {
            Op::Check(k, n) => {
                prop_assert_eq!(m.decide_n(now, &k, n), s.decide_n(now, &k, n), "{:?}", op);
            }
            Op::Peek(k) => {
                prop_assert_eq!(m.peek(now, &k), s.peek(now, &k));
                prop_assert_eq!(m.remaining(now, &k), s.remaining(now, &k));
                prop_assert_eq!(m.reset_at(now, &k), s.reset_at(now, &k));
            }
            Op::Advance(ms) => now += Duration::from_millis(ms),
            Op::Back(ms) => {
                now = Instant::from_nanos(now.as_nanos().saturating_sub(ms * 1_000_000));
            }
            Op::SetQuota(p, b) => {
                m.set_quota(now, quota(p, b));
                s.set_quota(now, quota(p, b));
                prop_assert_eq!(m.quota(), s.quota());
            }
        }
        if all_stats {
            prop_assert_eq!(m.len(), s.len());
            let (mut ms, mut ss) = (m.stats(), s.stats());
            if !probes {
                (ms.probes, ss.probes) = (0, 0);
            }
            prop_assert_eq!(ms, ss);
        }
    }
    prop_assert_eq!(m.stats().allowed, s.stats().allowed);
    prop_assert_eq!(m.stats().limited, s.stats().limited);
    Ok(())
}

proptest! {
    #![proptest_config(props::config(512, "proptest-regressions/keyed_shared.txt"))]

    /// With one shard the shared form is the `&mut` table with a shared overflow limiter:
    /// every decision, peek, remaining, reset_at, len and counter agrees, under every policy,
    /// with full tables, evictions, overflow and clock steps back. (Quota changes are left out
    /// under `Overflow`: the shared overflow limiter's change is conservative by design, see
    /// `SharedRateLimiter::set_quota`.)
    #[test]
    fn one_shard_agrees_with_the_mut_table_on_every_operation(
        policy in 0u8..3,
        max_keys in 1usize..6,
        period in 1u64..1500,
        burst in 1u32..4,
        overflow in proptest::option::of((1u64..1500, 1u32..4)),
        ops in proptest::collection::vec(op(10, true), 1..120),
    ) {
        let full = full_of(policy);
        let mut b = KeyedConfig::builder()
            .quota(quota(period, burst))
            .max_keys(max_keys)
            .full(full)
            .shards(1)
            .hash_seed(SEED);
        if let Some((p, ob)) = overflow {
            b = b.overflow_quota(quota(p, ob));
        }
        let config = b.build().unwrap();
        let ops: Vec<Op> = ops
            .into_iter()
            .filter(|o| full != Full::Overflow || !matches!(o, Op::SetQuota(..)))
            .collect();
        agree(config, &ops, true, true)?;
    }

    /// With many shards, while no shard is full (each shard holds at least 16 keys, at most 8
    /// are used), every per-key answer, `len` and counter (but `probes`) agrees with one `&mut` table, with
    /// clock steps back and quota changes: a table with room forgets no key (idle keys are
    /// reclaimed only to make room for a new one), so no answer depends on a sweep.
    #[test]
    fn many_shards_agree_per_key_with_the_mut_table_while_no_shard_is_full(
        policy in 0u8..3,
        shards in 2usize..9,
        period in 1u64..1500,
        burst in 1u32..4,
        seed in any::<u128>(),
        ops in proptest::collection::vec(op(8, true), 1..120),
    ) {
        let config = KeyedConfig::builder()
            .quota(quota(period, burst))
            .max_keys(16 * shards)
            .full(full_of(policy))
            .shards(shards)
            .hash_seed(seed)
            .build()
            .unwrap();
        agree(config, &ops, true, false)?;
    }

    /// A table near `max_keys` agrees with the `&mut` table of the same `max_keys`: a
    /// working set of `max_keys` keys (under `EvictLeastRecentlyUsed`, whose shards keep
    /// their first key each, `max_keys - shards + 1`) fits the sharded table whatever shards
    /// its keys hash to, as it fits the `&mut` table, so every answer, `len` and counter (but
    /// `probes`) agrees. (Shards' capacities have slack above their share; here, with at most
    /// 12 keys over 2 or 3 shards, no shard reaches its capacity.) Failed with `max_keys`
    /// split exactly: a shard given one key more than its share refused it (`TableFull`,
    /// the overflow limiter, or an eviction the `&mut` table did not make).
    #[test]
    fn a_table_near_max_keys_agrees_with_the_mut_table_of_the_same_max_keys(
        policy in 0u8..3,
        shards in 2usize..4,
        max_keys in 4usize..13,
        period in 1u64..1500,
        burst in 1u32..4,
        seed in any::<u128>(),
        ops in proptest::collection::vec(op(12, true), 1..160),
    ) {
        let full = full_of(policy);
        let config = KeyedConfig::builder()
            .quota(quota(period, burst))
            .max_keys(max_keys)
            .full(full)
            .shards(shards)
            .hash_seed(seed)
            .build()
            .unwrap();
        let keys = if full == Full::EvictLeastRecentlyUsed {
            max_keys - shards + 1
        } else {
            max_keys
        };
        let ops: Vec<Op> = ops
            .into_iter()
            .map(|o| match o {
                Op::Check(k, n) => Op::Check(k % keys as u8, n),
                Op::Peek(k) => Op::Peek(k % keys as u8),
                o => o,
            })
            .collect();
        agree(config, &ops, true, false)?;
    }
}

/// The number of overflow admissions over a flood of `keys` new keys at one instant, and the
/// table's.
fn flood(table: &SharedKeyedGcra<u64>, now: Instant, keys: std::ops::Range<u64>) -> (u64, u64) {
    let (mut by_key, mut by_overflow) = (0, 0);
    for k in keys {
        let d = table.decide_n(now, &k, 1);
        if d.result.is_ok() {
            match d.by {
                DecidedBy::Key => by_key += 1,
                DecidedBy::Overflow => by_overflow += 1,
                _ => unreachable!("a new DecidedBy variant"),
            }
        }
    }
    (by_key, by_overflow)
}

/// The overflow quota (here a burst of 5, one more per second) is one quota for the whole
/// table, not one per shard: 100,000 new keys at one instant get at most `max_keys` slots plus
/// the overflow burst, and over ten more seconds no more than the overflow quota allows.
/// (Failed with a per-shard overflow limiter: 40 overflow admissions at the first instant, 8
/// shards × 5.)
#[test]
fn a_flood_of_new_keys_gets_one_overflow_quota_across_all_shards() {
    let config = KeyedConfig::builder()
        .quota(quota(1000, 1))
        .overflow_quota(quota(1000, 5))
        .max_keys(64)
        .shards(8)
        .hash_seed(SEED)
        .build()
        .unwrap();
    let t0 = Instant::from_secs(10);
    let table = SharedKeyedGcra::<u64>::new(config, t0);
    let (by_key, by_overflow) = flood(&table, t0, 0..100_000);
    assert!(by_key <= 64, "{by_key} keys admitted by their own slot");
    assert_eq!(by_overflow, 5, "the overflow burst, once for all shards");
    assert_eq!(table.stats().overflow_allowed, 5);
    // Ten seconds of floods, one every 100 ms: the overflow limiter admits one per second.
    let mut overflow_total = by_overflow;
    for step in 1..=100u64 {
        let now = t0 + Duration::from_millis(100 * step);
        let base = 100_000 + step * 10_000;
        overflow_total += flood(&table, now, base..base + 10_000).1;
    }
    assert!(
        overflow_total <= 5 + 10,
        "{overflow_total} overflow admissions in 10 s: more than burst 5 + 10 s × 1/s"
    );
    assert_eq!(table.stats().overflow_allowed, overflow_total);
}

/// The same bound with four threads flooding new keys at once.
#[test]
fn threads_flooding_new_keys_share_one_overflow_quota() {
    let config = KeyedConfig::builder()
        .quota(quota(1000, 1))
        .overflow_quota(quota(1000, 5))
        .max_keys(16)
        .shards(16)
        .hash_seed(SEED)
        .build()
        .unwrap();
    let t0 = Instant::from_secs(10);
    let table = Arc::new(SharedKeyedGcra::<u64>::new(config, t0));
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let table = Arc::clone(&table);
            std::thread::spawn(move || flood(&table, t0, t * 50_000..(t + 1) * 50_000))
        })
        .collect();
    let (mut by_key, mut by_overflow) = (0, 0);
    for h in handles {
        let (k, o) = h.join().unwrap();
        by_key += k;
        by_overflow += o;
    }
    assert!(by_key <= 16);
    assert_eq!(by_overflow, 5);
}

/// Threads checking the same keys at one instant never admit a key beyond its burst.
#[test]
fn threads_never_admit_a_key_beyond_its_burst() {
    let config = KeyedConfig::builder()
        .quota(quota(1000, 3))
        .max_keys(1000)
        .hash_seed(SEED)
        .build()
        .unwrap();
    let t0 = Instant::from_secs(1);
    let table = Arc::new(SharedKeyedGcra::<u64>::new(config, t0));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let table = Arc::clone(&table);
            std::thread::spawn(move || {
                let mut admitted = vec![0u32; 500];
                for _ in 0..5 {
                    for k in 0..500u64 {
                        if table.try_acquire(t0, &k).is_ok() {
                            admitted[k as usize] += 1;
                        }
                    }
                }
                admitted
            })
        })
        .collect();
    let mut total = vec![0u32; 500];
    for h in handles {
        for (t, a) in total.iter_mut().zip(h.join().unwrap()) {
            *t += a;
        }
    }
    assert!(total.iter().all(|&a| a == 3), "{total:?}");
    assert_eq!(table.stats().allowed, 1500);
    assert_eq!(table.stats().limited, 4 * 5 * 500 - 1500);
}

/// `max_keys` bounds the whole table, whatever the shards: a flood of distinct keys under
/// `RejectNew` fills the table, which then holds exactly `max_keys` keys and refuses the rest;
/// memory never changes. (Before issue 16's slack the shards' capacities added up to
/// `max_keys` exactly; now each shard may take more than its share, and the table-wide count
/// stops them together at `max_keys`.)
#[test]
fn max_keys_is_split_exactly_across_the_shards() {
    for (max_keys, shards) in [(1, 16), (7, 3), (10, 4), (100, 16), (1000, 7), (17, 1024)] {
        let config = KeyedConfig::builder()
            .quota(quota(1000, 1))
            .max_keys(max_keys)
            .shards(shards)
            .full(Full::RejectNew)
            .hash_seed(SEED)
            .build()
            .unwrap();
        let now = Instant::from_secs(1);
        let table = SharedKeyedGcra::<u64>::new(config, now);
        assert_eq!(table.shards(), shards.min(max_keys));
        assert_eq!(table.capacity(), max_keys);
        let memory = table.memory_bytes();
        let mut full = 0;
        for k in 0..(max_keys as u64 * 200) {
            if let Err(Rejected {
                reason: KeyedLimited::TableFull,
                ..
            }) = table.try_acquire(now, &k)
            {
                full += 1;
            }
        }
        assert_eq!(
            table.len(),
            max_keys,
            "{max_keys} keys over {shards} shards"
        );
        assert_eq!(full, max_keys as u64 * 199);
        assert_eq!(table.memory_bytes(), memory);
    }
}

/// The same bound under every policy, with many shards of one key's share each (slack above
/// the share is largest there): whatever the flood, `len` never exceeds `max_keys`, and under
/// `RejectNew` and `Overflow` the table fills to exactly `max_keys`.
#[test]
fn max_keys_bounds_the_table_under_every_policy() {
    for policy in 0..3 {
        let full = full_of(policy);
        for (max_keys, shards) in [(16, 16), (40, 13), (100, 16), (1000, 15)] {
            let config = KeyedConfig::builder()
                .quota(quota(1000, 1))
                .max_keys(max_keys)
                .shards(shards)
                .full(full)
                .hash_seed(SEED)
                .build()
                .unwrap();
            let now = Instant::from_secs(1);
            let table = SharedKeyedGcra::<u64>::new(config, now);
            for k in 0..(max_keys as u64 * 20) {
                let _ = table.try_acquire(now, &k);
                assert!(table.len() <= max_keys, "{full:?} {max_keys}/{shards}: {k}");
            }
            if full == Full::EvictLeastRecentlyUsed {
                // Each shard keeps its first key: the table holds at least all but `shards`.
                assert!(
                    table.len() > max_keys - shards,
                    "{full:?} {max_keys}/{shards}"
                );
            } else {
                assert_eq!(table.len(), max_keys, "{full:?} {max_keys}/{shards}");
            }
        }
    }
}

/// Places freed by reclaims go back to the table-wide count: a full table whose keys have all
/// gone idle takes a wave of new keys (each reclaims idle keys of its shard, two at a time
/// where the sweep finds two, takes one place and gives the other back to the count, which
/// the next new key claims), then new keys at the same instant fill it
/// to exactly `max_keys` again: a place the count kept for a forgotten key would leave it
/// short, a place given back twice would let it past.
#[test]
fn places_freed_by_reclaims_go_back_to_the_count() {
    for full in [Full::RejectNew, Full::Overflow] {
        let config = KeyedConfig::builder()
            .quota(quota(1000, 1))
            .max_keys(100)
            .shards(4)
            .full(full)
            .hash_seed(SEED)
            .build()
            .unwrap();
        let t0 = Instant::from_secs(1);
        let table = SharedKeyedGcra::<u64>::new(config, t0);
        for k in 0..100u64 {
            assert_eq!(table.decide_n(t0, &k, 1).by, DecidedBy::Key);
        }
        assert_eq!(table.len(), 100);
        let t1 = t0 + Duration::from_secs(1);
        for k in 1000..1030u64 {
            assert!(table.try_acquire(t1, &k).is_ok());
            assert!(table.len() <= 100);
        }
        for k in 2000..3000u64 {
            let _ = table.try_acquire(t1, &k);
            assert!(table.len() <= 100);
        }
        assert_eq!(table.len(), 100, "{full:?}");
        assert_eq!(
            table.stats().reclaimed,
            100,
            "{full:?}: every idle key forgotten"
        );
    }
}

/// The shard a key of the table built with `seed` and `shards` shards lands in (the table's
/// rule, `SharedKeyedGcra`'s module docs: the hash's high 32 bits scaled to the shard count).
fn shard_of(seed: u128, shards: usize, key: u64) -> usize {
    let mut h = SipHasher13::new_with_keys(seed as u64, (seed >> 64) as u64);
    key.hash(&mut h);
    (((h.finish() >> 32) * shards as u64) >> 32) as usize
}

/// Issue 16's keyed bench in a test: 1000 keys cycled through a 1000-key table (the default
/// 15 shards), each idle again before its next check. Every key fits the sharded table, so
/// after the first pass no check takes the insert path (a sweep, a reclaim, an insert): each
/// is a hit. With `max_keys` split exactly (emulated here by 15 `&mut` tables of the old
/// capacities, keys routed by the same hash), the keys that do not fit their shard keep
/// evicting idle keys of that shard, and a large part of the checks take the insert path
/// (printed: run with `--nocapture`).
#[test]
fn a_working_set_of_max_keys_is_all_hits_after_the_first_pass() {
    let config = KeyedConfig::builder()
        .quota(Quota::per_second(nz(1_000_000_000)).unwrap())
        .max_keys(1000)
        .hash_seed(SEED)
        .build()
        .unwrap();
    let shards = config.shards();
    assert_eq!(shards, 15);
    let t0 = Instant::from_secs(1);
    let table = SharedKeyedGcra::<u64>::new(config, t0);
    let exact = |i: usize| 1000 / shards + usize::from(i < 1000 % shards);
    let mut old: Vec<KeyedGcra<u64>> = (0..shards)
        .map(|i| {
            let c = KeyedConfig::builder()
                .quota(config.quota())
                .max_keys(exact(i))
                .hash_seed(SEED)
                .build()
                .unwrap();
            KeyedGcra::new(c, t0)
        })
        .collect();
    let (passes, mut now) = (10u64, t0);
    let (mut new_inserts, mut old_inserts) = (0u64, 0u64);
    for pass in 0..passes {
        for k in 0..1000u64 {
            now += Duration::from_micros(1);
            let before = (table.len(), table.stats().reclaimed);
            assert!(table.try_acquire(now, &k).is_ok());
            let o = &mut old[shard_of(SEED, shards, k)];
            let old_before = (o.len(), o.stats().reclaimed);
            assert!(o.try_acquire(now, &k).is_ok());
            if pass > 0 {
                new_inserts += u64::from(before != (table.len(), table.stats().reclaimed));
                old_inserts += u64::from(old_before != (o.len(), o.stats().reclaimed));
            }
        }
    }
    let checks = (passes - 1) * 1000;
    println!(
        "insert path after the first pass: sharded table {new_inserts}/{checks}, \
         max_keys split exactly {old_inserts}/{checks} ({:.1} %)",
        old_inserts as f64 * 100.0 / checks as f64
    );
    assert_eq!(new_inserts, 0);
    assert_eq!(table.len(), 1000);
    assert_eq!(table.stats().reclaimed, 0);
    assert_eq!(table.stats().overflow_allowed, 0);
    assert!(old_inserts > checks / 10, "{old_inserts}/{checks}");
}

/// Memory stays fixed at construction and bounded: the shards' capacities have slack above
/// their shares (4 × ⌈√share⌉ keys each, never more than `max_keys`), each shard's index is
/// sized for its share (`next_power_of_two(2 × share)` slots, more only if the capacity needs
/// a free slot), so a sharded table holds more memory than the `&mut` table of the same
/// `max_keys` by the slack's entries, each shard's index rounding and the shards' own bytes
/// (figures for 1000 and 2^20 keys in the module docs; printed with `--nocapture`).
#[test]
fn memory_is_bounded_by_the_shards_slack() {
    for (max_keys, shards) in [(1000usize, 15usize), (1 << 20, 16), (17, 1024), (100, 1)] {
        let config = KeyedConfig::builder()
            .quota(quota(1000, 1))
            .max_keys(max_keys)
            .shards(shards)
            .hash_seed(SEED)
            .build()
            .unwrap();
        let now = Instant::from_secs(1);
        let table = SharedKeyedGcra::<u64>::new(config, now);
        let one = SharedKeyedGcra::<u64>::new(
            KeyedConfig::builder()
                .quota(quota(1000, 1))
                .max_keys(max_keys)
                .shards(1)
                .hash_seed(SEED)
                .build()
                .unwrap(),
            now,
        );
        let mut_table = KeyedGcra::<u64>::memory_bound(max_keys);
        // One shard is the `&mut` table (no slack) plus the shard's own bytes.
        let per_shard = one.memory_bytes() - mut_table;
        assert!(per_shard <= 1024, "{per_shard}");
        let s = table.shards();
        let bound: usize = (0..s)
            .map(|i| {
                let share = max_keys / s + usize::from(i < max_keys % s);
                let root = (share as f64).sqrt().ceil() as usize;
                let cap = (share + 4 * root).min(max_keys);
                let slots = (2 * share)
                    .next_power_of_two()
                    .max((cap + 1).next_power_of_two());
                // One entry's bytes (1000 and 999 keys have the same 2048 index slots).
                let entry =
                    KeyedGcra::<u64>::memory_bound(1000) - KeyedGcra::<u64>::memory_bound(999);
                cap * entry + slots * 4 + per_shard
            })
            .sum();
        println!(
            "{max_keys} keys, {s} shards: {} bytes ({:.2}x the &mut table's {mut_table})",
            table.memory_bytes(),
            table.memory_bytes() as f64 / mut_table as f64
        );
        assert_eq!(table.memory_bytes(), bound, "{max_keys}/{shards}");
        for k in 0..(2 * max_keys as u64).min(100_000) {
            let _ = table.try_acquire(now, &k);
        }
        assert_eq!(table.memory_bytes(), bound, "{max_keys}/{shards}: fixed");
    }
}

/// Keys are spread over the shards (by the hash's high bits): with 16 shards and 4096 keys, no
/// shard holds more than twice its share, whatever the seed.
#[test]
fn keys_spread_over_the_shards() {
    for seed in [0u128, 1, SEED, u128::MAX] {
        let config = KeyedConfig::builder()
            .quota(quota(1000, 1))
            .max_keys(16 * 512)
            .shards(16)
            .full(Full::RejectNew)
            .hash_seed(seed)
            .build()
            .unwrap();
        let now = Instant::from_secs(1);
        let table = SharedKeyedGcra::<u64>::new(config, now);
        // Every key fits (a shard holds 512): a TableFull would mean a shard got > 512 keys.
        let refused: HashSet<u64> = (0..4096u64)
            .filter(|k| table.try_acquire(now, k).is_err())
            .collect();
        assert!(refused.is_empty(), "seed {seed}: {} refused", refused.len());
        assert_eq!(table.len(), 4096);
    }
}

#[test]
fn shards_are_validated() {
    let b = || {
        KeyedConfig::builder()
            .quota(quota(1000, 1))
            .max_keys(4)
            .hash_seed(SEED)
    };
    for bad in [0, 1025] {
        assert!(matches!(
            b().shards(bad).build(),
            Err(ConfigError::OutOfRange {
                field: "shards",
                ..
            })
        ));
    }
    // By default one shard per 64 keys, 1 to 16.
    assert_eq!(b().build().unwrap().shards(), 1);
    assert_eq!(b().max_keys(127).build().unwrap().shards(), 1);
    assert_eq!(b().max_keys(128).build().unwrap().shards(), 2);
    assert_eq!(b().max_keys(1000).build().unwrap().shards(), 15);
    assert_eq!(b().max_keys(1 << 20).build().unwrap().shards(), 16);
    // A number set is cut to max_keys.
    assert_eq!(b().shards(1024).build().unwrap().shards(), 4);
    assert_eq!(b().max_keys(100).shards(16).build().unwrap().shards(), 16);
}

/// `decide_n_with` hands a view of the decided key under the same lock: its remaining and
/// reset agree with the decision, and `peek` answers for a new key in a full shard from the
/// one overflow limiter.
#[test]
fn decide_n_with_reads_the_state_the_decision_left() {
    let config = KeyedConfig::builder()
        .quota(quota(100, 2))
        .max_keys(1)
        .shards(1)
        .full(Full::Overflow)
        .hash_seed(SEED)
        .build()
        .unwrap();
    let t0 = Instant::from_secs(1);
    let table = SharedKeyedGcra::<u8>::new(config, t0);
    let read = |k: u8| {
        table.decide_n_with(t0, &k, 1, |e, d| {
            (d, e.remaining(), e.reset_at(), e.now(), *e.key(), e.peek())
        })
    };
    let (d, remaining, reset_at, now, key, peek) = read(1);
    assert_eq!((d.by, d.result), (DecidedBy::Key, Ok(())));
    assert_eq!((remaining, now, key), (1, t0, 1));
    assert_eq!(reset_at, t0 + Duration::from_millis(100));
    assert_eq!(peek, Ok(()));
    // Key 2 finds the only slot taken: the overflow limiter (burst 2) decides.
    let (d, ..) = read(2);
    assert_eq!((d.by, d.result), (DecidedBy::Overflow, Ok(())));
    let (d, _, _, _, _, peek) = read(2);
    assert_eq!((d.by, d.result), (DecidedBy::Overflow, Ok(())));
    assert_eq!(peek.unwrap_err().reason, KeyedLimited::OverRate);
}

/// The overflow limiter follows `set_quota` only while no overflow quota of its own was set:
/// in the config (the mutant `overflow_follows -> true` made an explicit one follow) or later
/// by `set_overflow_quota`; by default it follows (`-> false` made it stay behind).
#[test]
fn the_overflow_quota_follows_set_quota_only_while_it_is_the_default() {
    let t0 = Instant::from_nanos(0);
    let per_key = quota(100, 2);
    let raised = quota(10, 20);
    let own = quota(1000, 1);
    let config = |overflow: Option<Quota>| {
        let b = KeyedConfig::builder()
            .quota(per_key)
            .max_keys(4)
            .full(Full::Overflow)
            .hash_seed(SEED);
        match overflow {
            Some(q) => b.overflow_quota(q),
            None => b,
        }
        .build()
        .unwrap()
    };

    let default = SharedKeyedGcra::<u64>::new(config(None), t0);
    assert_eq!(default.overflow_quota(), per_key);
    default.set_quota(t0, raised);
    assert_eq!(
        default.overflow_quota(),
        raised,
        "the default overflow quota follows"
    );

    let explicit = SharedKeyedGcra::<u64>::new(config(Some(own)), t0);
    explicit.set_quota(t0, raised);
    assert_eq!(
        explicit.overflow_quota(),
        own,
        "an overflow quota of its own stays"
    );

    default.set_overflow_quota(t0, own);
    default.set_quota(t0, per_key);
    assert_eq!(
        default.overflow_quota(),
        own,
        "set_overflow_quota stops the following"
    );
}

/// The table's getters read every shard: `is_empty`, a fixed `memory_bytes` at least the
/// `&mut` table's, the overflow limiter's clock faults in `stats`, and the `Debug` forms.
#[test]
fn getters_read_every_shard_and_the_overflow_limiter() {
    let config = KeyedConfig::builder()
        .quota(quota(100_000, 1))
        .overflow_quota(quota(1_000, 1))
        .max_keys(4)
        .shards(2)
        .full(Full::Overflow)
        .hash_seed(SEED)
        .build()
        .unwrap();
    let (early, late) = (Instant::from_secs(1), Instant::from_secs(100));
    let table = SharedKeyedGcra::<u64>::new(config, Instant::ZERO);
    let alone = KeyedGcra::<u64>::new(config, Instant::ZERO);
    assert!(table.is_empty());
    let bytes = table.memory_bytes();
    assert!(
        bytes >= alone.memory_bytes(),
        "{bytes} < {}",
        alone.memory_bytes()
    );
    let debug = format!("{table:?}");
    assert!(
        debug.starts_with(
            "SharedKeyedGcra { shards: 2, max_keys: 4, full: Overflow, overflow: SharedRateLimiter {"
        ) && debug.ends_with(", .. }"),
        "{debug}"
    );
    // Fill every slot at 1 s (each key's TAT is then 101 s: none idle before then), and one
    // more key goes to the overflow limiter at 100 s (its TAT is then 101 s).
    let mut key = 0_u64;
    while table.len() < table.capacity() {
        let _ = table.try_acquire(early, &key);
        key += 1;
    }
    assert!(!table.is_empty());
    assert_eq!(
        table.memory_bytes(),
        bytes,
        "memory is fixed at construction"
    );
    let by = |k: u64, now: Instant| table.decide_n(now, &k, 1).by;
    assert_eq!(by(key, late), DecidedBy::Overflow);
    // Another new key at 1 s: the overflow limiter's TAT (101 s) is more than its `T + jump`
    // (61 s) ahead, a clock fault it resynchronises and counts; the keys' TATs (101 s) are
    // within theirs (160 s), so no shard counts one.
    assert_eq!(by(key + 1, early), DecidedBy::Overflow);
    assert_eq!(table.stats().clock_faults, 1);
    let entry = table.decide_n_with(late, &0, 1, |e, _| format!("{e:?}"));
    assert_eq!(entry, format!("KeyedEntry {{ now: {late:?}, .. }}"));
}
