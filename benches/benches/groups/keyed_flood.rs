//! `keyed_flood`: the keyed limiter's check under a hash-flooding attack, beside random keys.
//!
//! The attacker's keys are computed offline for the SipHash key every keyed limiter used before
//! issue 13 when built without `.hash_seed(..)` (a constant in the source): 1,000 `u64` keys that
//! all land in index slot 0 of a 4,096-key table (8,192 index slots), found by brute force
//! (about 8 million hashes). Each entry fills a table with 1,000 keys, then measures one check
//! of those keys in turn (fake clock, a quota that admits every check):
//!
//! - `default_seed/random_keys`: a default-built limiter (its key drawn from the OS), random keys;
//! - `default_seed/colliding_keys`: the same limiter, the attacker's keys: they no longer
//!   collide, so the check must stay within 2x of random keys (issue 13's bar);
//! - `old_fixed_seed/colliding_keys`: a limiter explicitly given the old constant: the attack
//!   working (every lookup walks the whole cluster), for scale.

use std::hash::{Hash, Hasher};
use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::OnceLock;

use criterion::Criterion;
use keel_core::rate::keyed::{KeyedConfig, KeyedGcra, SipHasher13};
use keel_core::rate::Quota;
use keel_core::time::Instant;

use crate::groups::util::group;

/// The constant SipHash key of keyed limiters built without a seed before issue 13.
const OLD_FIXED_SEED: u128 = 0x6b65_656c_2d72_6174_652d_6b65_7965_6421;
const MAX_KEYS: usize = 4096;
const SLOTS: u64 = 8192;
const KEYS: usize = 1000;

fn colliding_keys() -> &'static [u64] {
    static KEYS_FOR_OLD_SEED: OnceLock<Vec<u64>> = OnceLock::new();
    KEYS_FOR_OLD_SEED.get_or_init(|| {
        (0u64..)
            .filter(|k| {
                let mut h = SipHasher13::new_with_keys(
                    OLD_FIXED_SEED as u64,
                    (OLD_FIXED_SEED >> 64) as u64,
                );
                k.hash(&mut h);
                h.finish() & (SLOTS - 1) == 0
            })
            .take(KEYS)
            .collect()
    })
}

fn random_keys() -> Vec<u64> {
    (0..KEYS as u64)
        .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x1234_5678)
        .collect()
}

fn limiter(seed: Option<u128>, keys: &[u64], now: Instant) -> KeyedGcra<u64> {
    let quota = Quota::per_second(NonZeroU32::new(1_000_000_000).unwrap_or(NonZeroU32::MIN))
        .expect("valid quota");
    let mut b = KeyedConfig::builder().quota(quota).max_keys(MAX_KEYS);
    if let Some(seed) = seed {
        b = b.hash_seed(seed);
    }
    let mut l = KeyedGcra::new(b.build().expect("valid keyed config"), now);
    for k in keys {
        let _ = l.try_acquire(now, k);
    }
    l
}

pub(crate) fn bench(c: &mut Criterion) {
    let mut g = group(c, "keyed_flood");
    let now = Instant::from_secs(1);
    let cases: [(&str, Option<u128>, Vec<u64>); 3] = [
        ("default_seed/random_keys", None, random_keys()),
        (
            "default_seed/colliding_keys",
            None,
            colliding_keys().to_vec(),
        ),
        (
            "old_fixed_seed/colliding_keys",
            Some(OLD_FIXED_SEED),
            colliding_keys().to_vec(),
        ),
    ];
    for (name, seed, keys) in cases {
        g.bench_function(name, |b| {
            let mut l = limiter(seed, &keys, now);
            let mut i = 0usize;
            b.iter(|| {
                i = if i + 1 == keys.len() { 0 } else { i + 1 };
                black_box(l.try_acquire(black_box(now), &keys[i]).is_ok())
            })
        });
    }
    g.finish();
}
