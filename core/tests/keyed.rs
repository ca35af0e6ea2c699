//! Scenario tests for the keyed rate limiter: bounded memory under a key flood, idle
//! reclamation, full-table policies, and the SipHash-1-3 hasher.

// Runs in the `alloc` and `std` configurations only: the keyed limiter needs `alloc`.
#![cfg(feature = "alloc")]

use core::hash::Hasher;
use core::num::NonZeroU32;

use keel_core::rate::keyed::{Full, KeyedConfig, KeyedGcra, KeyedLimited, KeyedStats, SipHasher13};
use keel_core::rate::Quota;
use keel_core::Rejected;
use keel_core::{ConfigError, Instant};

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

fn config(per_second: u32, burst: u32, max_keys: usize, full: Full) -> KeyedConfig {
    KeyedConfig::builder()
        .quota(
            Quota::per_second(nz(per_second))
                .unwrap()
                .with_burst(nz(burst))
                .unwrap(),
        )
        .max_keys(max_keys)
        .full(full)
        .hash_seed(0xdead_beef_0123_4567_89ab_cdef_f00d_cafe)
        .build()
        .unwrap()
}

/// IPv6 addresses from a rotating /64 (the attacker's trick), as `[u8; 16]`.
fn ipv6(i: u64) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..8].copy_from_slice(&0x2001_0db8_0000_0001u64.to_be_bytes());
    a[8..].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
    a
}

#[test]
fn a_million_distinct_keys_never_exceed_max_keys_or_the_memory_bound() {
    // 1M keys in release; 200k in debug builds (unoptimised SipHash), same invariants.
    let keys: u64 = if cfg!(debug_assertions) {
        200_000
    } else {
        1_000_000
    };
    let max_keys = 4096;
    for full in [
        Full::Overflow,
        Full::RejectNew,
        Full::EvictLeastRecentlyUsed,
    ] {
        let mut l = KeyedGcra::<[u8; 16]>::new(config(1, 5, max_keys, full), Instant::ZERO);
        let bound = KeyedGcra::<[u8; 16]>::memory_bound(max_keys);
        let memory = l.memory_bytes();
        assert!(memory <= bound, "{memory} > {bound}");
        assert_eq!(l.capacity(), max_keys);
        let mut admitted = 0u64;
        for i in 0..keys {
            // 1 µs apart: every key stays active for its 1 s interval, so the table is full.
            let now = Instant::from_nanos(i * 1_000);
            if l.try_acquire(now, &ipv6(i)).is_ok() {
                admitted += 1;
            }
            assert!(l.len() <= max_keys);
            assert_eq!(l.memory_bytes(), memory);
        }
        let s = l.stats();
        assert_eq!(s.allowed, admitted);
        match full {
            Full::Overflow => {
                // Keys without a slot share one overflow limiter at the per-key quota (1/s,
                // burst 5) over the run's `keys` µs: never zero, never more than its quota.
                assert_eq!((s.evicted, s.rejected_full), (0, 0));
                assert_eq!(s.allowed + s.limited, keys);
                let secs = keys / 1_000_000;
                assert!(
                    (5..=5 + secs).contains(&s.overflow_allowed),
                    "{} overflow admissions",
                    s.overflow_allowed
                );
                assert_eq!(l.len(), max_keys);
            }
            Full::RejectNew => {
                // The table filled with the first keys; each 1 s they go idle and free up.
                assert_eq!(s.evicted, 0);
                assert_eq!(s.rejected_full + s.allowed, keys);
                assert_eq!(l.len(), max_keys);
            }
            Full::EvictLeastRecentlyUsed => {
                assert_eq!(s.rejected_full, 0);
                assert_eq!(s.allowed, keys);
                assert_eq!(s.evicted, keys - max_keys as u64);
            }
        }
    }
}

#[test]
fn each_key_gets_its_own_burst() {
    let mut l = KeyedGcra::<u32>::new(config(1, 2, 16, Full::RejectNew), Instant::ZERO);
    let t = Instant::from_secs(10);
    assert_eq!(l.try_acquire(t, &1), Ok(()));
    assert_eq!(l.try_acquire(t, &1), Ok(()));
    assert_eq!(
        l.try_acquire(t, &1),
        Err(Rejected {
            reason: KeyedLimited::OverRate,
            retry_at: Some(Instant::from_secs(11))
        })
    );
    assert_eq!(l.try_acquire(t, &2), Ok(()));
    assert_eq!(l.remaining(t, &2), 1);
    assert_eq!(l.remaining(t, &3), 2);
    assert_eq!(
        l.peek(t, &1),
        Err(Rejected {
            reason: KeyedLimited::OverRate,
            retry_at: Some(Instant::from_secs(11))
        })
    );
    assert_eq!(
        l.try_acquire_n(t, &3, 3),
        Err(Rejected {
            reason: KeyedLimited::InsufficientCapacity { burst: 2 },
            retry_at: None
        })
    );
    assert_eq!(l.try_acquire_n(t, &3, 0), Ok(()));
    assert_eq!(l.len(), 2);
    assert_eq!(l.try_acquire(Instant::from_secs(11), &1), Ok(()));
    assert_eq!(l.stats(), {
        let mut s: KeyedStats = KeyedStats::default();
        s.allowed = 4;
        s.limited = 2;
        s.evicted = 0;
        // Key 2 is idle at 11 s, but no new key needed its slot: nothing was swept.
        s.reclaimed = 0;
        s.rejected_full = 0;
        s.probes = l.stats().probes;
        s
    });
}

#[test]
fn full_table_rejects_new_keys_but_keeps_serving_known_ones() {
    let mut l = KeyedGcra::<u32>::new(config(1, 3, 2, Full::RejectNew), Instant::ZERO);
    let t = Instant::from_millis(1);
    assert!(l.try_acquire(t, &1).is_ok());
    assert!(l.try_acquire(t, &2).is_ok());
    assert_eq!(
        l.try_acquire(t, &3),
        Err(Rejected {
            reason: KeyedLimited::TableFull,
            retry_at: None
        })
    );
    assert_eq!(
        l.peek(t, &3),
        Err(Rejected {
            reason: KeyedLimited::TableFull,
            retry_at: None
        })
    );
    assert!(l.try_acquire(t, &1).is_ok());
    assert_eq!(l.stats().rejected_full, 1);
    assert_eq!(l.len(), 2);
}

#[test]
fn full_table_evicts_the_least_recently_used_key() {
    let mut l = KeyedGcra::<u32>::new(config(1, 1, 2, Full::EvictLeastRecentlyUsed), Instant::ZERO);
    let t = Instant::from_millis(1);
    assert!(l.try_acquire(t, &1).is_ok());
    assert!(l.try_acquire(t, &2).is_ok());
    // Key 1 keeps hammering (denied requests count as use): key 2 is the LRU.
    assert!(l.try_acquire(t, &1).is_err());
    assert!(l.try_acquire(t, &3).is_ok());
    assert_eq!(l.stats().evicted, 1);
    // Key 1 kept its debt; key 2 was forgotten (fail-open: a fresh burst).
    assert!(l.try_acquire(t, &1).is_err());
    assert!(l.try_acquire(t, &2).is_ok());
    assert_eq!(l.stats().evicted, 2);
    assert_eq!(l.len(), 2);
}

#[test]
fn idle_keys_are_reclaimed_by_normal_checks() {
    let mut l = KeyedGcra::<u32>::new(config(10, 1, 8, Full::RejectNew), Instant::ZERO);
    for k in 0..8 {
        assert!(l.try_acquire(Instant::ZERO, &k).is_ok());
    }
    assert_eq!(l.len(), 8);
    // 100 ms later every key is idle; checks of keys the table holds sweep nothing.
    let later = Instant::from_millis(100);
    for k in 0..2 {
        assert!(l.try_acquire(later, &k).is_ok());
    }
    assert_eq!((l.len(), l.stats().reclaimed), (8, 0));
    // At 200 ms every key is idle again. A new key that finds the table full sweeps two
    // entries (keys 0 and 1, then 2 and 3) and takes one slot; the next finds room.
    let later = Instant::from_millis(200);
    for k in 100..104 {
        assert!(l.try_acquire(later, &k).is_ok());
    }
    assert_eq!(l.len(), 8);
    assert_eq!(l.stats().reclaimed, 4);
    for k in 0..4 {
        assert_eq!(l.remaining(later, &k), 1, "key {k} reads as fresh");
    }
}

#[test]
fn a_reclaimed_key_behaves_exactly_like_a_remembered_one() {
    let q = config(2, 2, 4, Full::RejectNew);
    let mut a = KeyedGcra::<u32>::new(q, Instant::ZERO);
    let mut b = keel_core::rate::Gcra::new(q.quota(), Instant::ZERO);
    for step in 0..200u64 {
        let now = Instant::from_millis(step * 137 % 5000 + step * 40);
        // Other keys churn, making the sweep reclaim idle entries, key 7 included.
        let _ = a.try_acquire(now, &(step as u32 % 3 + 100));
        assert_eq!(
            a.try_acquire(now, &7).is_ok(),
            b.try_acquire(now).is_ok(),
            "step {step}"
        );
    }
}

#[test]
fn set_quota_applies_to_every_key_without_extra_capacity() {
    let mut l = KeyedGcra::<u32>::new(config(1, 2, 4, Full::RejectNew), Instant::ZERO);
    let t = Instant::from_millis(5);
    assert!(l.try_acquire(t, &1).is_ok());
    l.set_quota(t, Quota::per_second(nz(100)).unwrap());
    assert_eq!(l.remaining(t, &1), 1);
    assert_eq!(l.remaining(t, &2), 100);
    assert_eq!(l.quota(), Quota::per_second(nz(100)).unwrap());
}

#[test]
fn config_errors() {
    let q = Quota::per_second(nz(1)).unwrap();
    assert_eq!(
        KeyedConfig::builder().max_keys(1).build(),
        Err(ConfigError::Zero { field: "quota" })
    );
    assert_eq!(
        KeyedConfig::builder().quota(q).build(),
        Err(ConfigError::Zero { field: "max_keys" })
    );
    assert!(matches!(
        KeyedConfig::builder().quota(q).max_keys(usize::MAX).build(),
        Err(ConfigError::OutOfRange {
            field: "max_keys",
            ..
        })
    ));
    // 2^30 used to pass and then allocate tens of GiB in `new`.
    assert!(matches!(
        KeyedConfig::builder().quota(q).max_keys(1 << 30).build(),
        Err(ConfigError::OutOfRange {
            field: "max_keys",
            ..
        })
    ));
    assert!(matches!(
        KeyedConfig::builder()
            .quota(q)
            .max_keys((1 << 24) + 1)
            .build(),
        Err(ConfigError::OutOfRange {
            field: "max_keys",
            ..
        })
    ));
    assert_eq!(
        KeyedConfig::builder()
            .quota(q)
            .max_keys(1 << 24)
            .hash_seed(7) // without `std` there is no OS seed to default to
            .build()
            .map(|c| c.max_keys()),
        Ok(1 << 24)
    );
    let c = KeyedConfig::builder()
        .quota(q)
        .max_keys(3)
        .hash_seed(7)
        .build()
        .unwrap();
    assert_eq!(c.full(), Full::Overflow);
    assert_eq!(c.overflow_quota(), q);
    assert_eq!(c.max_keys(), 3);
}

#[test]
fn siphash13_matches_std_default_hasher() {
    let data: Vec<u8> = (0..200u32).map(|i| (i * 31 + 7) as u8).collect();
    for len in [0usize, 1, 7, 8, 9, 15, 16, 17, 63, 64, 200] {
        let msg = &data[..len];
        let mut std_h = std::collections::hash_map::DefaultHasher::new();
        std_h.write(msg);
        let mut ours = SipHasher13::new_with_keys(0, 0);
        ours.write(msg);
        assert_eq!(ours.finish(), std_h.finish(), "len {len}");
        // Streaming in odd pieces gives the same value.
        let mut pieces = SipHasher13::new_with_keys(0, 0);
        for chunk in msg.chunks(3) {
            pieces.write(chunk);
        }
        assert_eq!(pieces.finish(), std_h.finish(), "len {len} in pieces");
    }
    let mut a = SipHasher13::new_with_keys(1, 2);
    let mut b = SipHasher13::new_with_keys(2, 1);
    a.write(b"key");
    b.write(b"key");
    assert_ne!(a.finish(), b.finish(), "the seed changes the hash");
}

/// The label strings are part of the API (metrics labels): each is pinned.
#[test]
fn decided_by_labels_are_stable() {
    use keel_core::rate::keyed::DecidedBy;
    assert_eq!(DecidedBy::Key.as_str(), "key");
    assert_eq!(DecidedBy::Overflow.as_str(), "overflow");
}

/// `reset_at` is the exact instant a key's bucket is full again: the burst is back at it, not
/// one nanosecond before; a key never seen (or idle, or faulted) resets `now`.
#[test]
fn reset_at_is_exact_per_key_at_the_boundary() {
    // 1 per second, burst 3: three checks at 10 s leave the key's TAT at 13 s.
    let mut l = KeyedGcra::<u32>::new(config(1, 3, 4, Full::RejectNew), Instant::ZERO);
    let t = Instant::from_secs(10);
    assert_eq!(l.reset_at(t, &1), t, "a key never seen is full now");
    for _ in 0..3 {
        assert_eq!(l.try_acquire(t, &1), Ok(()));
    }
    assert_eq!(l.try_acquire(t, &2), Ok(()));
    let full = Instant::from_secs(13);
    assert_eq!(l.reset_at(t, &1), full);
    assert_eq!(
        l.reset_at(t, &2),
        Instant::from_secs(11),
        "per key, not per table"
    );
    assert_eq!(l.reset_at(t, &3), t);
    let just_before = Instant::from_nanos(full.as_nanos() - 1);
    assert_eq!(l.reset_at(just_before, &1), full);
    assert_eq!(l.remaining(just_before, &1), 2);
    assert_eq!(l.remaining(full, &1), 3);
    assert_eq!(l.reset_at(full, &1), full);
    let later = Instant::from_secs(20);
    assert_eq!(l.reset_at(later, &1), later, "idle: full now");
    // A partly drained key: one check at 12.5 s (TAT 13 s -> 14 s).
    let mid = Instant::from_millis(12_500);
    assert_eq!(l.try_acquire(mid, &1), Ok(()));
    assert_eq!(l.reset_at(mid, &1), Instant::from_secs(14));
    // Reading changes nothing.
    assert_eq!(l.reset_at(mid, &1), Instant::from_secs(14));
    assert_eq!(l.remaining(mid, &1), 1);
}

/// A state that proves a clock fault (a `now` far behind the key's checks) reads as a fresh
/// key, as the next check would: `reset_at` is `now`, not a far-future instant.
#[test]
fn reset_at_reads_a_clock_fault_as_a_fresh_key() {
    let mut l = KeyedGcra::<u32>::new(config(1, 2, 4, Full::RejectNew), Instant::ZERO);
    let far = Instant::from_secs(1_000);
    assert_eq!(l.try_acquire(far, &1), Ok(()));
    assert_eq!(l.try_acquire(far, &1), Ok(()));
    assert_eq!(l.reset_at(far, &1), Instant::from_secs(1_002));
    // 900 s earlier: beyond the default 60 s jump, so a fault.
    let back = Instant::from_secs(100);
    assert_eq!(l.reset_at(back, &1), back);
    assert_eq!(l.remaining(back, &1), 2);
}

/// The `Debug` forms show the configuration and the counters and keep the hash seed secret
/// (a seed in a log line lets a reader compute colliding keys).
#[test]
fn debug_forms_show_the_settings_but_not_the_seed() {
    let seed: u128 = 0x5eed_5eed_5eed_5eed_5eed_5eed_5eed_5eed;
    let builder = KeyedConfig::builder()
        .quota(Quota::per_second(nz(3)).unwrap())
        .max_keys(7)
        .full(Full::RejectNew)
        .hash_seed(seed)
        .max_clock_jump(core::time::Duration::from_secs(9));
    let b = format!("{builder:?}");
    assert!(b.starts_with("KeyedConfigBuilder"), "{b}");
    for part in ["max_keys: 7", "RejectNew", "<secret>", "9s"] {
        assert!(b.contains(part), "{part} not in {b}");
    }
    let config = builder.build().unwrap();
    let c = format!("{config:?}");
    assert!(c.starts_with("KeyedConfig"), "{c}");
    for part in [
        "max_keys: 7",
        "RejectNew",
        "<secret>",
        "max_clock_jump: 9s",
        "overflow_quota",
    ] {
        assert!(c.contains(part), "{part} not in {c}");
    }
    let mut l = KeyedGcra::<u32>::new(config, Instant::ZERO);
    assert!(l.try_acquire(Instant::ZERO, &1).is_ok());
    let g = format!("{l:?}");
    assert!(g.starts_with("KeyedGcra"), "{g}");
    for part in [
        "len: 1",
        "max_keys: 7",
        "RejectNew",
        "allowed: 1",
        "max_clock_jump: 9s",
    ] {
        assert!(g.contains(part), "{part} not in {g}");
    }
    for text in [&b, &c, &g] {
        assert!(
            !text.contains("5eed") && !text.contains(&seed.to_string()),
            "{text}"
        );
        assert!(!text.contains(&(seed as u64).to_string()), "{text}");
    }
}

/// `peek` answers for a new key what a check would do: admitted while the table has room or
/// its least recently used key is idle; with a table full of active keys, what the policy says.
#[test]
fn peek_at_a_new_key_follows_the_room_in_the_table_and_the_policy() {
    let t = Instant::from_secs(1);
    for full in [
        Full::RejectNew,
        Full::Overflow,
        Full::EvictLeastRecentlyUsed,
    ] {
        let mut l = KeyedGcra::<u32>::new(config(1, 1, 2, full), Instant::ZERO);
        assert!(l.is_empty());
        assert_eq!(l.peek(t, &9), Ok(()), "{full:?}: empty table");
        assert_eq!(l.try_acquire(t, &1), Ok(()));
        assert!(!l.is_empty());
        // One slot left, the only key active: a new key still finds room.
        assert_eq!(l.peek(t, &9), Ok(()), "{full:?}: one slot free");
        assert_eq!(l.try_acquire(t, &2), Ok(()));
        let full_table = l.peek(t, &9);
        match full {
            Full::RejectNew => assert_eq!(
                full_table,
                Err(Rejected {
                    reason: KeyedLimited::TableFull,
                    retry_at: None
                })
            ),
            // The overflow limiter (1/s, burst 1) has not been used: it admits.
            Full::Overflow => assert_eq!(full_table, Ok(())),
            Full::EvictLeastRecentlyUsed => assert_eq!(full_table, Ok(())),
        }
        // One second later both keys are idle: the least recently used one gives its slot.
        assert_eq!(
            l.peek(Instant::from_secs(2), &9),
            Ok(()),
            "{full:?}: idle tail"
        );
        assert_eq!(l.len(), 2, "peeking changes nothing");
    }
    // Under `Overflow`, peek asks the overflow limiter: once it is spent, a new key is over rate.
    let mut l = KeyedGcra::<u32>::new(config(1, 1, 1, Full::Overflow), Instant::ZERO);
    assert_eq!(l.try_acquire(t, &1), Ok(()));
    assert_eq!(l.try_acquire(t, &2), Ok(()), "the overflow limiter's burst");
    assert_eq!(
        l.peek(t, &3),
        Err(Rejected {
            reason: KeyedLimited::OverRate,
            retry_at: Some(Instant::from_secs(2))
        })
    );
}

/// The footprint is allocated up front: `memory_bytes` is the bound for `max_keys` from the
/// first check on, and a table is empty until its first key.
#[test]
fn memory_bytes_is_the_bound_from_construction() {
    for max_keys in [1usize, 3, 100, 4096] {
        let l = KeyedGcra::<u64>::new(config(1, 1, max_keys, Full::RejectNew), Instant::ZERO);
        let bound = KeyedGcra::<u64>::memory_bound(max_keys);
        // Entries of at least a u64 key and a u64 TAT, and two u32 index slots per key.
        assert!(bound >= max_keys * (8 + 8 + 8), "{bound} for {max_keys}");
        assert_eq!(l.memory_bytes(), bound, "{max_keys} keys");
        assert!(l.is_empty());
        assert_eq!(l.len(), 0);
    }
}

/// The overflow limiter follows `set_quota` while its quota is the default; one set with
/// `set_overflow_quota` (or the builder) stays, and it is what decides new keys of a full table.
#[test]
fn the_overflow_quota_follows_set_quota_until_it_is_set() {
    let one = Quota::per_second(nz(1)).unwrap();
    let t = Instant::from_secs(1);
    let mut l = KeyedGcra::<u32>::new(config(1, 1, 1, Full::Overflow), Instant::ZERO);
    assert_eq!(l.overflow_quota(), one);
    let ten = Quota::per_second(nz(10)).unwrap();
    l.set_quota(t, ten);
    assert_eq!((l.quota(), l.overflow_quota()), (ten, ten));
    let three = Quota::per_second(nz(1)).unwrap().with_burst(nz(3)).unwrap();
    l.set_overflow_quota(t, three);
    assert_eq!(l.overflow_quota(), three);
    l.set_quota(t, one);
    assert_eq!((l.quota(), l.overflow_quota()), (one, three));
    // Later (every bucket full again) key 1 fills the table; new keys share the overflow
    // limiter's burst of 3.
    let later = Instant::from_secs(20);
    assert_eq!(l.try_acquire(later, &1), Ok(()));
    for k in 2..5 {
        assert_eq!(l.try_acquire(later, &k), Ok(()), "key {k}");
    }
    assert_eq!(
        l.try_acquire(later, &5).unwrap_err().reason,
        KeyedLimited::OverRate
    );
    let s = l.stats();
    assert_eq!((s.overflow_allowed, s.overflow_limited), (3, 1));
    assert_eq!(
        (s.allowed, s.limited),
        (4, 1),
        "the overflow's decisions are counted too"
    );
    // A builder-set overflow quota does not follow `set_quota`.
    let c = KeyedConfig::builder()
        .quota(one)
        .overflow_quota(three)
        .max_keys(1)
        .hash_seed(1)
        .build()
        .unwrap();
    assert_eq!(c.overflow_quota(), three);
    assert_eq!(c.quota(), one);
    let mut l = KeyedGcra::<u32>::new(c, Instant::ZERO);
    l.set_quota(t, ten);
    assert_eq!((l.quota(), l.overflow_quota()), (ten, three));
}

/// `set_quota` resynchronises a key whose state proves a clock fault and counts it once; keys
/// with a sound state are not counted.
#[test]
fn set_quota_counts_each_faulted_key_once() {
    let c = KeyedConfig::builder()
        .quota(Quota::with_period(core::time::Duration::from_secs(100)).unwrap())
        .max_keys(4)
        .full(Full::RejectNew)
        .hash_seed(3)
        .max_clock_jump(core::time::Duration::from_secs(1))
        .build()
        .unwrap();
    assert_eq!(c.max_clock_jump(), core::time::Duration::from_secs(1));
    let mut l = KeyedGcra::<u32>::new(c, Instant::ZERO);
    // Keys 2 and 3 at 950 s (TAT 1050 s), key 1 at 1000 s (TAT 1100 s).
    assert_eq!(l.try_acquire(Instant::from_secs(950), &2), Ok(()));
    assert_eq!(l.try_acquire(Instant::from_secs(950), &3), Ok(()));
    assert_eq!(l.try_acquire(Instant::from_secs(1000), &1), Ok(()));
    assert_eq!(l.stats().clock_faults, 0);
    // At 990 s key 1's state is 110 s ahead, more than one interval plus the 1 s jump: a
    // fault. Keys 2 and 3 (60 s ahead) are sound.
    let back = Instant::from_secs(990);
    l.set_quota(
        back,
        Quota::with_period(core::time::Duration::from_secs(50)).unwrap(),
    );
    assert_eq!(l.stats().clock_faults, 1);
    assert_eq!(l.len(), 3);
    // Key 1 reads as fresh; keys 2 and 3 keep their debt.
    assert_eq!(l.remaining(back, &1), 1);
    assert_eq!(l.remaining(back, &2), 0);
}

/// SipHash-1-3 under non-zero keys, against values from an independent implementation
/// (CPython's `siphash13`, which hashes `bytes` with the 128-bit key in `_Py_HashSecret`), for
/// the reference key `00 01 .. 0f` and an all-ones key, messages `00 01 02 ..` of lengths
/// around the 8-byte block. std's `DefaultHasher` (above) only checks the key `(0, 0)`, which
/// cannot tell `k ^ c` from `k | c`.
#[test]
fn siphash13_matches_reference_values_under_nonzero_keys() {
    const LENGTHS: [usize; 9] = [1, 7, 8, 9, 15, 16, 17, 63, 300];
    #[rustfmt::skip]
    let vectors: [(u64, u64, [u64; 9]); 2] = [
        (0x0706050403020100, 0x0f0e0d0c0b0a0908, [0xc9f49bf37d57ca93, 0xd3927d989bb11140, 0x369095118d299a8e, 0x25a48eb36c063de4, 0xd320d86d2a519956, 0xcc4fdd1a7d908b66, 0x9cf2689063dbd80c, 0x9d199062b7bbb3a8, 0x4016a23bda5a2224]),
        (0xffffffffffffffff, 0xffffffffffffffff, [0x221e8c552a2bab91, 0xb2d6e02cc2fa6d51, 0x080bb8fea5176cc3, 0x859b8e81e31d2313, 0xa71f0afa937a3245, 0x48684ed7dbe6ba57, 0x62529e6ff9215911, 0x5756564f07f08168, 0xfdc5a299b624fac5]),
    ];
    let msg: Vec<u8> = (0..300u32).map(|i| (i % 256) as u8).collect();
    for (k0, k1, expected) in vectors {
        for (len, want) in LENGTHS.into_iter().zip(expected) {
            let mut h = SipHasher13::new_with_keys(k0, k1);
            h.write(&msg[..len]);
            assert_eq!(h.finish(), want, "key ({k0:#x}, {k1:#x}), length {len}");
            // Fed in pieces of 1, 3 and 5 bytes: the same value.
            for piece in [1, 3, 5] {
                let mut p = SipHasher13::new_with_keys(k0, k1);
                for chunk in msg[..len].chunks(piece) {
                    p.write(chunk);
                }
                assert_eq!(p.finish(), want, "length {len} in pieces of {piece}");
            }
        }
    }
}

/// `stats().clock_faults` counts the overflow limiter's faults too, not only the keys'.
#[test]
fn clock_faults_of_the_overflow_limiter_are_counted() {
    use core::time::Duration;
    // Keys: 1 per 2000 s (a key stays active long); overflow: 1 per second.
    let c = KeyedConfig::builder()
        .quota(Quota::with_period(Duration::from_secs(2000)).unwrap())
        .overflow_quota(Quota::per_second(nz(1)).unwrap())
        .max_keys(1)
        .hash_seed(5)
        .max_clock_jump(Duration::from_secs(1))
        .build()
        .unwrap();
    let mut l = KeyedGcra::<u32>::new(c, Instant::ZERO);
    assert_eq!(l.try_acquire(Instant::from_secs(100), &1), Ok(())); // TAT 2100 s
    let d = l.decide_n(Instant::from_secs(1000), &2, 1);
    assert_eq!(
        (d.by, d.result),
        (keel_core::rate::keyed::DecidedBy::Overflow, Ok(()))
    );
    // Back to 500 s: key 1 (1600 s ahead, within its 2000 s interval) is sound and holds the
    // table; the overflow limiter's state (TAT 1001 s) is 501 s ahead of a 1 s interval plus
    // a 1 s jump: a fault, resynchronised, so key 3 is admitted.
    let d = l.decide_n(Instant::from_secs(500), &3, 1);
    assert_eq!(
        (d.by, d.result),
        (keel_core::rate::keyed::DecidedBy::Overflow, Ok(()))
    );
    let s = l.stats();
    assert_eq!(s.clock_faults, 1);
    assert_eq!((s.overflow_allowed, s.allowed), (2, 3));
}

/// A key whose state proves a clock fault is decided as a fresh key by the check itself, not
/// only when the sweep happens to reach it first: with eight faulted keys and a sweep of two
/// per check, some key is checked before the sweep forgets it.
#[test]
fn a_faulted_key_is_decided_as_fresh_before_the_sweep_reaches_it() {
    use core::time::Duration;
    let c = KeyedConfig::builder()
        .quota(Quota::with_period(Duration::from_secs(2000)).unwrap())
        .max_keys(8)
        .full(Full::RejectNew)
        .hash_seed(11)
        .max_clock_jump(Duration::from_secs(1))
        .build()
        .unwrap();
    let mut l = KeyedGcra::<u32>::new(c, Instant::ZERO);
    for k in 0..8 {
        assert_eq!(l.try_acquire(Instant::from_secs(1000), &k), Ok(())); // TAT 3000 s
    }
    // At 500 s every state is 2500 s ahead: more than the 2000 s interval plus a 1 s jump.
    let back = Instant::from_secs(500);
    for k in (0..8).rev() {
        assert_eq!(l.try_acquire(back, &k), Ok(()), "key {k}");
    }
    assert_eq!(l.stats().clock_faults, 8);
    assert_eq!(l.len(), 8);
}

/// A key hashed by its `tag` only: keys with one tag collide on the whole 64-bit hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Colliding {
    id: u32,
    tag: u32,
}

impl core::hash::Hash for Colliding {
    fn hash<H: core::hash::Hasher>(&self, h: &mut H) {
        self.tag.hash(h);
    }
}

/// `stats().probes` counts the index slots each lookup examined: one for a key in its home
/// slot, one more per colliding key ahead of it. Keys whose 64-bit hashes are equal are still
/// told apart by the key itself.
#[test]
fn probes_count_the_slots_examined_and_equal_hashes_stay_distinct_keys() {
    let mut l = KeyedGcra::<Colliding>::new(config(1, 1, 4, Full::RejectNew), Instant::ZERO);
    let t = Instant::from_secs(1);
    let key = |id| Colliding { id, tag: 7 };
    assert_eq!(l.try_acquire(t, &key(0)), Ok(()));
    assert_eq!(l.stats().probes, 1, "an empty home slot");
    assert!(l.try_acquire(t, &key(0)).is_err());
    assert_eq!(l.stats().probes, 2, "found in its home slot");
    // Three more keys on the same hash: each probes past the ones before it.
    for id in 1..4 {
        assert_eq!(l.try_acquire(t, &key(id)), Ok(()), "key {id} is a new key");
    }
    assert_eq!(l.stats().probes, 2 + 2 + 3 + 4);
    assert_eq!(l.len(), 4);
    // Each is found with its own state (burst 1, spent), at its own distance from home.
    for id in 0..4 {
        assert_eq!(l.remaining(t, &key(id)), 0, "key {id}");
    }
    let before = l.stats().probes;
    assert!(l.try_acquire(t, &key(3)).is_err());
    assert_eq!(l.stats().probes - before, 4);
    // Once the first key of a chain is idle and reclaimed, the chain shifts back.
    let later = Instant::from_millis(1_500);
    let mut l2 = KeyedGcra::<Colliding>::new(config(1, 1, 4, Full::RejectNew), Instant::ZERO);
    assert_eq!(l2.try_acquire(t, &key(0)), Ok(()));
    for id in 1..4 {
        assert_eq!(l2.try_acquire(later, &key(id)), Ok(()));
    }
    assert_eq!(l2.len(), 4);
    let s = l2.stats();
    // At 1.5 s key 0 (TAT 2 s) is still active: nothing was reclaimed.
    assert_eq!(s.reclaimed, 0);
    let at = Instant::from_secs(2);
    // At 2 s key 0 is idle: a new key finds the table full and sweeps it away (backward
    // shift), taking the chain's end, then key 3 is found three slots from home, not four.
    assert_eq!(l2.try_acquire(at, &key(4)), Ok(()));
    let before = l2.stats().probes;
    assert_eq!(
        l2.try_acquire(at, &key(3)),
        Err(Rejected {
            reason: KeyedLimited::OverRate,
            retry_at: Some(Instant::from_millis(2_500)),
        })
    );
    assert_eq!(l2.stats().reclaimed, 1);
    assert_eq!(l2.stats().probes - before, 3);
    for id in 1..3 {
        assert_eq!(l2.remaining(at, &key(id)), 0, "key {id} survives the shift");
    }
}

/// Backward-shift deletion across the end of the index: a chain of colliding keys whose home
/// is the index's last slot wraps to slot 0; forgetting any key of it (first, middle) leaves
/// every other key findable with its own state.
#[test]
fn deleting_from_a_chain_that_wraps_past_the_end_of_the_index_keeps_the_rest() {
    use core::hash::{Hash, Hasher};
    let seed: u128 = 0xdead_beef_0123_4567_89ab_cdef_f00d_cafe; // the one `config` uses
                                                                // max_keys 4: an index of 8 slots. Find a tag whose home is slot 7 and one whose home is
                                                                // slot 0 (so an entry of the wrapped chain sits in another key's home slot).
    let home = |tag: u32| {
        let mut h = SipHasher13::new_with_keys(seed as u64, (seed >> 64) as u64);
        tag.hash(&mut h);
        h.finish() & 7
    };
    let last = (0..10_000u32).find(|&t| home(t) == 7).unwrap();
    let first = (0..10_000u32).find(|&t| home(t) == 0).unwrap();
    let away = (0..10_000u32).find(|&t| home(t) == 4).unwrap();
    let t0 = Instant::from_secs(1);
    for victim in 0..3u32 {
        let mut l = KeyedGcra::<Colliding>::new(config(1, 1, 4, Full::RejectNew), Instant::ZERO);
        // Keys 0, 1, 2 on slot 7's chain (slots 7, 0, 1, in that order); the victim's check
        // is dated 1 s (the others' 1.9 s), so it alone is idle at 2 s.
        let key = |id| Colliding { id, tag: last };
        let other = Colliding { id: 9, tag: first };
        let t1 = Instant::from_millis(1_900);
        for id in 0..3 {
            let at = if id == victim { t0 } else { t1 };
            assert_eq!(l.try_acquire(at, &key(id)), Ok(()));
        }
        // Slot 0's own key lands after the wrapped chain (slot 2).
        assert_eq!(l.try_acquire(t1, &other), Ok(()));
        assert_eq!(l.len(), 4);
        // At 2 s the victim is idle; checks of keys the table holds sweep nothing.
        let t2 = Instant::from_secs(2);
        for _ in 0..2 {
            assert!(l.try_acquire(t2, &other).is_err());
        }
        assert_eq!(
            l.stats().reclaimed,
            0,
            "victim {victim}: hits sweep nothing"
        );
        // Two new keys (homed at slot 4, away from the chain) find the table full: each sweeps
        // two entries, so the victim is forgotten and one of them takes its slot.
        for id in 0..2 {
            let _ = l.try_acquire(t2, &Colliding { id, tag: away });
        }
        assert_eq!(l.stats().reclaimed, 1, "victim {victim}");
        assert_eq!(l.len(), 4);
        for id in (0..3).filter(|&id| id != victim) {
            assert_eq!(
                l.remaining(t2, &key(id)),
                0,
                "victim {victim}: key {id} lost"
            );
        }
        assert_eq!(
            l.remaining(t2, &other),
            0,
            "victim {victim}: slot 0's key lost"
        );
        assert_eq!(
            l.remaining(t2, &key(victim)),
            1,
            "the victim reads as fresh"
        );
    }
}

/// Idle keys are reclaimed only when a new key needs room: a table with room keeps them, and
/// checks of keys it holds sweep nothing. A new key that finds the table full first sweeps two
/// entries under the clock hand, which goes on from where it stopped, then tries the least
/// recently used key; only then does the policy answer.
#[test]
fn only_a_new_key_in_a_full_table_sweeps() {
    let ms = Instant::from_millis;
    let full = Err(Rejected {
        reason: KeyedLimited::TableFull,
        retry_at: None,
    });
    // 10 per second, burst 1: an admitted key is idle 100 ms later. Four keys.
    let mut l = KeyedGcra::<u32>::new(config(10, 1, 4, Full::RejectNew), Instant::ZERO);
    for k in 0..3 {
        assert_eq!(l.try_acquire(ms(0), &k), Ok(())); // entries 0..2
    }
    // At 100 ms keys 0..2 are idle: new key 3 finds room (entry 3, active until 200 ms) and
    // sweeps nothing; at 150 ms key 0 is checked again (active until 250 ms).
    assert_eq!(l.try_acquire(ms(100), &3), Ok(()));
    assert_eq!(l.try_acquire(ms(150), &0), Ok(()));
    assert_eq!((l.len(), l.stats().reclaimed), (4, 0));
    // Full: key 10 sweeps entries 0 (key 0, active) and 1 (key 1, idle) and takes entry 1.
    assert_eq!(l.try_acquire(ms(150), &10), Ok(()));
    assert_eq!((l.len(), l.stats().reclaimed), (4, 1));
    // Full: key 11 sweeps on from entry 2 (key 2, idle) and 3 (key 3, active).
    assert_eq!(l.try_acquire(ms(150), &11), Ok(()));
    assert_eq!((l.len(), l.stats().reclaimed), (4, 2));
    // Full: key 12 sweeps entries 0 and 1 (keys 0 and 10, active); the least recently used key
    // (key 3) is active too, so the policy answers.
    assert_eq!(l.try_acquire(ms(150), &12), full);
    assert_eq!((l.len(), l.stats().reclaimed), (4, 2));
    // At 200 ms key 3 is idle: key 12 sweeps entries 2 (key 11, active) and 3 and gets in.
    assert_eq!(l.try_acquire(ms(200), &12), Ok(()));
    assert_eq!((l.len(), l.stats().reclaimed), (4, 3));
    assert_eq!(l.stats().rejected_full, 1);
}

/// Whether the table still holds `key` at `t` (a key admitted at `t` under a burst of 1 has no
/// request left; a forgotten one reads as fresh).
fn held(l: &KeyedGcra<u32>, t: Instant, key: u32) -> bool {
    l.remaining(t, &key) == 0
}

/// Recency as CLOCK keeps it: a key checked since it last reached the head of the list gets a
/// second chance (moved to the head, its mark cleared); the first unmarked tail is evicted.
#[test]
fn a_key_checked_since_it_reached_the_head_gets_a_second_chance() {
    let mut l = KeyedGcra::<u32>::new(config(1, 1, 3, Full::EvictLeastRecentlyUsed), Instant::ZERO);
    let t = Instant::from_millis(1);
    for k in 1..=3 {
        assert_eq!(l.try_acquire(t, &k), Ok(()));
    }
    // Key 1, the oldest, is checked again (denied: still a use).
    assert!(l.try_acquire(t, &1).is_err());
    // Key 4: key 1 gets its second chance, key 2 (not checked since) is evicted.
    assert_eq!(l.try_acquire(t, &4), Ok(()));
    assert_eq!(
        [1, 2, 3, 4].map(|k| held(&l, t, k)),
        [true, false, true, true]
    );
    // Key 5: the tail is key 3 now.
    assert_eq!(l.try_acquire(t, &5), Ok(()));
    assert_eq!(
        [1, 3, 4, 5].map(|k| held(&l, t, k)),
        [true, false, true, true]
    );
    // Key 6: key 1 used its chance and was not checked since: evicted.
    assert_eq!(l.try_acquire(t, &6), Ok(()));
    assert_eq!(
        [1, 4, 5, 6].map(|k| held(&l, t, k)),
        [false, true, true, true]
    );
    assert_eq!(l.stats().evicted, 3);
    assert_eq!(l.len(), 3);
}

/// Every key marked: each gets its chance and the oldest is the tail again (what an exact
/// LRU evicts too).
#[test]
fn when_every_key_was_checked_the_oldest_is_evicted() {
    let mut l = KeyedGcra::<u32>::new(config(1, 1, 3, Full::EvictLeastRecentlyUsed), Instant::ZERO);
    let t = Instant::from_millis(1);
    for k in 1..=3 {
        assert_eq!(l.try_acquire(t, &k), Ok(()));
    }
    for k in 1..=3 {
        assert!(l.try_acquire(t, &k).is_err());
    }
    assert_eq!(l.try_acquire(t, &4), Ok(()));
    assert_eq!(
        [1, 2, 3, 4].map(|k| held(&l, t, k)),
        [false, true, true, true]
    );
    // The chances cleared the marks: key 2 is next.
    assert_eq!(l.try_acquire(t, &5), Ok(()));
    assert_eq!([2, 3].map(|k| held(&l, t, k)), [false, true]);
}

/// A new key gives at most 16 second chances: with 20 marked keys it evicts the 17th oldest
/// (marked too) rather than walking the whole list.
#[test]
fn a_new_key_gives_at_most_sixteen_second_chances() {
    let mut l = KeyedGcra::<u32>::new(
        config(1, 1, 20, Full::EvictLeastRecentlyUsed),
        Instant::ZERO,
    );
    let t = Instant::from_millis(1);
    for k in 0..20 {
        assert_eq!(l.try_acquire(t, &k), Ok(()));
    }
    for k in 0..20 {
        assert!(l.try_acquire(t, &k).is_err());
    }
    assert_eq!(l.try_acquire(t, &100), Ok(()));
    let gone: Vec<u32> = (0..20).filter(|&k| !held(&l, t, k)).collect();
    assert_eq!(gone, [16]);
    // Keys 17..19 kept their marks: the next new key moves them on and evicts key 0, whose
    // chance was used.
    assert_eq!(l.try_acquire(t, &101), Ok(()));
    let gone: Vec<u32> = (0..20).filter(|&k| !held(&l, t, k)).collect();
    assert_eq!(gone, [0, 16]);
}

/// A peek at a new key in a full table answers what the check's insert would find: the
/// least recently used key after the second chances (here marked and idle: passed over).
#[test]
fn a_peek_passes_over_a_marked_tail_as_the_check_does() {
    let ms = Instant::from_millis;
    let full = Err(Rejected {
        reason: KeyedLimited::TableFull,
        retry_at: None,
    });
    let mut l = KeyedGcra::<u32>::new(config(1, 1, 4, Full::RejectNew), Instant::ZERO);
    assert_eq!(l.try_acquire(ms(0), &1), Ok(())); // entry 0, idle at 1 s
    for k in 2..=4 {
        assert_eq!(l.try_acquire(ms(500), &k), Ok(())); // entries 1..3, idle at 1.5 s
    }
    // A new key at 500 ms: nothing idle; the sweep's hand moves on to entry 2.
    assert_eq!(l.try_acquire(ms(500), &9), full);
    // Key 1 is checked again (denied): marked.
    assert!(l.try_acquire(ms(500), &1).is_err());
    // At 1.2 s key 1 (the tail) is idle but marked; key 2 after it is active, and the sweep
    // looks at entries 2 and 3 (active): the peek and the check both say full.
    assert_eq!(l.peek(ms(1200), &9), full);
    assert_eq!(l.try_acquire(ms(1200), &9), full);
    // The second chance moved key 1 to the head: still held, still idle.
    assert_eq!(l.len(), 4);
    assert_eq!(l.remaining(ms(1200), &1), 1);
}

/// Every key marked and fewer than 17: the peek finds the oldest as the check does.
#[test]
fn a_peek_with_every_key_marked_finds_the_oldest() {
    let ms = Instant::from_millis;
    let full = Err(Rejected {
        reason: KeyedLimited::TableFull,
        retry_at: None,
    });
    let mut l = KeyedGcra::<u32>::new(config(1, 1, 4, Full::RejectNew), Instant::ZERO);
    assert_eq!(l.try_acquire(ms(0), &1), Ok(()));
    for k in 2..=4 {
        assert_eq!(l.try_acquire(ms(500), &k), Ok(()));
    }
    assert_eq!(l.try_acquire(ms(500), &9), full);
    for k in 1..=4 {
        assert!(l.try_acquire(ms(500), &k).is_err());
    }
    // At 1.2 s only key 1 is idle: the oldest, found after every key's chance.
    assert_eq!(l.peek(ms(1200), &9), Ok(()));
    assert_eq!(l.try_acquire(ms(1200), &9), Ok(()));
    assert_eq!(l.stats().reclaimed, 1);
    assert!(!held(&l, ms(1200), 1) && held(&l, ms(1200), 9));
}

/// A peek sees the idle keys the sweep's hand would forget, wherever the LRU tail is.
#[test]
fn a_peek_sees_what_the_sweep_would_reclaim() {
    let ms = Instant::from_millis;
    let mut l = KeyedGcra::<u32>::new(config(1, 1, 3, Full::RejectNew), Instant::ZERO);
    for k in 1..=2 {
        assert_eq!(l.try_acquire(ms(0), &k), Ok(())); // entries 0 and 1, idle at 1 s
        assert!(l.try_acquire(ms(0), &k).is_err()); // marked
    }
    assert_eq!(l.try_acquire(ms(500), &3), Ok(())); // entry 2, idle at 1.5 s

    // At 1.2 s the least recently used key after the chances is key 3 (active), but the
    // sweep's hand is on entries 0 and 1 (idle): a new key gets in.
    assert_eq!(l.peek(ms(1200), &9), Ok(()));
    assert_eq!(l.try_acquire(ms(1200), &9), Ok(()));
    assert_eq!(l.stats().reclaimed, 2);
}

/// The sweep's hand looks at two entries: a peek finds an idle key in the second one too.
#[test]
fn a_peek_sees_an_idle_key_in_the_second_entry_under_the_sweeps_hand() {
    let ms = Instant::from_millis;
    let mut l = KeyedGcra::<u32>::new(config(1, 1, 3, Full::RejectNew), Instant::ZERO);
    assert_eq!(l.try_acquire(ms(0), &1), Ok(())); // entry 0
    assert_eq!(l.try_acquire(ms(0), &2), Ok(())); // entry 1, idle at 1 s
    assert!(l.try_acquire(ms(0), &2).is_err()); // marked
    assert_eq!(l.try_acquire(ms(500), &3), Ok(())); // entry 2, idle at 1.5 s
    assert_eq!(l.try_acquire(ms(1000), &1), Ok(())); // marked, active until 2 s

    // At 1.2 s: entry 0 active, entry 1 idle; the LRU hand passes keys 1 and 2 (marked) and
    // offers key 3 (active).
    assert_eq!(l.peek(ms(1200), &9), Ok(()));
    assert_eq!(l.try_acquire(ms(1200), &9), Ok(()));
    assert_eq!(l.stats().reclaimed, 1);
    assert_eq!(
        [1, 2, 3].map(|k| held(&l, ms(1200), k)),
        [true, false, true]
    );
}

/// A table of one key: the second chance moves the only key to the head (where it already
/// is), clears its mark, and the next step finds it unmarked: it is evicted, not looped over.
#[test]
fn a_one_key_table_gives_its_marked_key_one_chance_then_evicts_it() {
    let mut l = KeyedGcra::<u32>::new(config(1, 1, 1, Full::EvictLeastRecentlyUsed), Instant::ZERO);
    let t = Instant::from_millis(1);
    assert_eq!(l.try_acquire(t, &1), Ok(()));
    assert!(l.try_acquire(t, &1).is_err()); // marked
    assert_eq!(l.peek(t, &2), Ok(()));
    assert_eq!(l.try_acquire(t, &2), Ok(()));
    assert_eq!((l.len(), l.stats().evicted), (1, 1));
    assert!(!held(&l, t, 1) && held(&l, t, 2));
}
