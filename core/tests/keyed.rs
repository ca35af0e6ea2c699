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
        s.reclaimed = 1;
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
    // 100 ms later every key is idle; checks on one key sweep the rest away two at a time.
    let later = Instant::from_millis(100);
    for _ in 0..4 {
        let _ = l.try_acquire(later, &100);
    }
    assert_eq!(l.len(), 1);
    assert_eq!(l.stats().reclaimed, 8);
    assert!(!l.is_empty());
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
