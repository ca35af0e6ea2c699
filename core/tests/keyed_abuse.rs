//! The keyed limiter under attack (issue 13, items 1 and 2): hash flooding against the default
//! seed, and key rotation against a full table.

// Runs with `std` only: default-built limiters draw their hash seed from the OS random source.
#![cfg(feature = "std")]

use core::hash::{Hash, Hasher};
use core::num::NonZeroU32;

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use keel_core::rate::ip::ip_key;
use keel_core::rate::keyed::{DecidedBy, Full, KeyedConfig, KeyedGcra, SipHasher13};
use keel_core::rate::Quota;
use keel_core::Instant;

/// The SipHash key every limiter built without `.hash_seed(..)` used before issue 13.
const OLD_FIXED_SEED: u128 = 0x6b65_656c_2d72_6174_652d_6b65_7965_6421;

fn siphash(seed: u128, key: &u64) -> u64 {
    let mut h = SipHasher13::new_with_keys(seed as u64, (seed >> 64) as u64);
    key.hash(&mut h);
    h.finish()
}

/// `n` keys whose hashes under `seed` all land in index slot 0 of a table of `slots` slots:
/// the attacker's precomputation, by brute force.
fn colliding_keys(seed: u128, slots: u64, n: usize) -> Vec<u64> {
    (0u64..)
        .filter(|k| siphash(seed, k) & (slots - 1) == 0)
        .take(n)
        .collect()
}

const MAX_KEYS: usize = 512; // 1024 index slots
const FLOOD: usize = 300;

/// Index slots examined per check for `keys` (each checked twice: insert, then lookup).
fn probes_per_check(mut limiter: KeyedGcra<u64>, keys: &[u64]) -> f64 {
    let now = Instant::from_secs(1);
    for _ in 0..2 {
        for k in keys {
            let _ = limiter.try_acquire(now, k);
        }
    }
    let s = limiter.stats();
    s.probes as f64 / (s.allowed + s.limited) as f64
}

fn quota() -> Quota {
    Quota::per_second(NonZeroU32::new(10).unwrap()).unwrap()
}

/// A collision set built for the old fixed key costs a default-built limiter no more than
/// random keys do (within 2x, counted in probes, not wall time), while against the old key it
/// costs about 100x.
#[test]
fn a_collision_set_for_the_old_fixed_key_does_nothing_against_a_default_built_limiter() {
    let flood = colliding_keys(OLD_FIXED_SEED, 1024, FLOOD);
    let random: Vec<u64> = (0..FLOOD as u64)
        .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5555)
        .collect();
    let default = || {
        KeyedGcra::<u64>::new(
            KeyedConfig::builder()
                .quota(quota())
                .max_keys(MAX_KEYS)
                .build()
                .unwrap(),
            Instant::ZERO,
        )
    };
    let old = KeyedGcra::<u64>::new(
        KeyedConfig::builder()
            .quota(quota())
            .max_keys(MAX_KEYS)
            .hash_seed(OLD_FIXED_SEED)
            .build()
            .unwrap(),
        Instant::ZERO,
    );
    let on_old_key = probes_per_check(old, &flood);
    let flood_on_default = probes_per_check(default(), &flood);
    let random_on_default = probes_per_check(default(), &random);
    assert!(
        on_old_key > 50.0 * random_on_default,
        "the attack itself: {on_old_key} vs {random_on_default} probes per check"
    );
    assert!(
        flood_on_default <= 2.0 * random_on_default,
        "colliding keys cost {flood_on_default} probes per check on a default-built limiter, \
         random keys {random_on_default}"
    );
}

/// Two default-built limiters hash differently (each draws its own key from the OS).
#[test]
fn default_built_limiters_draw_distinct_keys() {
    let keys: Vec<u64> = (0..64).collect();
    let build = || {
        KeyedConfig::builder()
            .quota(quota())
            .max_keys(64)
            .build()
            .unwrap()
    };
    // The configs differ (the seed is part of the config).
    assert_ne!(build(), build());
    let _ = keys;
}

struct Rotation {
    /// Admissions of 200 new users, one request each, one every 10 ms.
    new_users: u32,
    /// Admissions of the paused user in the second after his 0.5 s pause (1 request per ms).
    paused_user: u32,
    /// Admissions of the attacker.
    attacker: u64,
    overflow_allowed: u64,
    decided_by_overflow: u64,
}

/// The rotation attack scaled down: a 100-key table at 10/s (burst 10); an attacker
/// sends every request from a new address in one IPv6 /64, one every 10 µs: 10x the table size
/// per emission interval, so the table stays full of active keys; 200 new users arrive over
/// 2 s, one request each; one user who spent his burst at 0 pauses for 0.5 s (his key still
/// active) and then sends a request every millisecond for a second. `key` maps an address to
/// the limiter's key.
fn rotation(full: Option<Full>, key: impl Fn(IpAddr) -> IpAddr) -> Rotation {
    let max_keys = 100usize;
    let mut builder = KeyedConfig::builder().quota(quota()).max_keys(max_keys);
    if let Some(full) = full {
        builder = builder.full(full);
    }
    let mut l = KeyedGcra::<IpAddr>::new(builder.build().unwrap(), Instant::ZERO);
    let paused: IpAddr = Ipv4Addr::new(198, 51, 100, 1).into();
    for _ in 0..10 {
        assert!(l.try_acquire(Instant::ZERO, &key(paused)).is_ok());
    }
    let mut r = Rotation {
        new_users: 0,
        paused_user: 0,
        attacker: 0,
        overflow_allowed: 0,
        decided_by_overflow: 0,
    };
    let end = 2_000_000u64; // µs
    for us in 0..=end {
        let now = Instant::from_nanos(us * 1_000);
        if us % 10 == 0 {
            let addr = IpAddr::V6(Ipv6Addr::from(
                (0x2001_0db8_0bad_0000u128 << 64) | u128::from(us),
            ));
            if l.try_acquire(now, &key(addr)).is_ok() {
                r.attacker += 1;
            }
        }
        if us % 10_000 == 0 && us > 0 {
            let user = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + (us / 10_000) as u32));
            let d = l.decide_n(now, &key(user), 1);
            if d.result.is_ok() {
                r.new_users += 1;
            }
            if d.by == DecidedBy::Overflow {
                r.decided_by_overflow += 1;
            }
        }
        if (500_000..1_500_000).contains(&us)
            && us % 1_000 == 0
            && l.try_acquire(now, &key(paused)).is_ok()
        {
            r.paused_user += 1;
        }
    }
    r.overflow_allowed = l.stats().overflow_allowed;
    r
}

/// Under key rotation at 10x the table size, keys without a slot get the overflow quota (not
/// zero, as with `RejectNew`, the old default, and not unlimited) and the paused user never
/// exceeds his own quota (burst 10 + 10/s over the second: at most 20, and exactly what his own
/// limiter gives; the `EvictLeastRecentlyUsed` policy forgets his key while he pauses and gives
/// him a fresh burst each time it does).
#[test]
fn under_key_rotation_new_keys_get_the_overflow_quota_and_paused_users_their_own() {
    let d = rotation(None, |a| a);
    println!(
        "default: {} of 200 new users admitted, {} overflow admissions, {} decided by the \
         overflow limiter, paused user {}, attacker {}",
        d.new_users, d.overflow_allowed, d.decided_by_overflow, d.paused_user, d.attacker
    );
    // The overflow limiter (10/s, burst 10, over 2 s) admits 10 + 20 in all: its quota.
    assert!(
        (29..=31).contains(&d.overflow_allowed),
        "{} overflow admissions",
        d.overflow_allowed
    );
    assert_eq!(d.decided_by_overflow, 200);
    assert!(u64::from(d.new_users) <= d.overflow_allowed);
    // The 5 requests he saved during the pause at 0.5 s, then one each 100 ms from 0.6 s to
    // 1.4 s: exactly what his own limiter allows.
    assert_eq!(
        d.paused_user, 14,
        "paused user got {} in 1 s",
        d.paused_user
    );

    // The other policies, for the record: RejectNew locks every new key out, eviction lets
    // the paused user far past his quota.
    let reject = rotation(Some(Full::RejectNew), |a| a);
    assert_eq!((reject.new_users, reject.overflow_allowed), (0, 0));
    let evict = rotation(Some(Full::EvictLeastRecentlyUsed), |a| a);
    println!("evicting: paused user {}", evict.paused_user);
    assert!(evict.paused_user > 20, "evicting: {}", evict.paused_user);
}

/// The overflow quota is shared with the attacker: keyed by full address, the rotating host
/// takes nearly all of it. Keyed by /64 ([`ip_key`]), the same host is one key, limited to its
/// own quota, and every new user is admitted.
#[test]
fn keyed_by_prefix_a_rotating_ipv6_host_is_one_key() {
    let d = rotation(None, ip_key);
    println!(
        "by /64: {} of 200 new users admitted, attacker {}, paused user {}",
        d.new_users, d.attacker, d.paused_user
    );
    assert_eq!(d.new_users, 200);
    assert!(d.attacker <= 31, "attacker admitted {} times", d.attacker);
    assert_eq!(d.decided_by_overflow, 0);
    assert_eq!(d.paused_user, 14);
}
