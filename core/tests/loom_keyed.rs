//! loom models of the sharded keyed table's table-wide key count (`SharedKeyedGcra`): the
//! count that holds shards with slack above their share to `max_keys` together. Its atomic and
//! the shards' mutexes come from the shim, so loom checks every interleaving of the real code.
//!
//! ```text
//! RUSTFLAGS="--cfg keel_loom" LOOM_MAX_PREEMPTIONS=2 \
//!     cargo test --release -p keel-core --features std --test loom_keyed
//! ```
#![cfg(keel_loom)]

use core::hash::{Hash, Hasher};
use core::num::NonZeroU32;
use core::time::Duration;

use keel_core::rate::keyed::{Full, KeyedConfig, SipHasher13};
use keel_core::rate::Quota;
use keel_core::sync::keyed::SharedKeyedGcra;
use keel_core::Instant;
use loom::sync::Arc;
use loom::thread;

const SEED: u128 = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210;

/// A table of `max_keys` over `shards` shards under `full`: one request per second per key.
fn table(max_keys: usize, shards: usize, full: Full, now: Instant) -> SharedKeyedGcra<u64> {
    let config = KeyedConfig::builder()
        .quota(Quota::per_second(NonZeroU32::MIN).expect("valid quota"))
        .max_keys(max_keys)
        .shards(shards)
        .full(full)
        .hash_seed(SEED)
        .build()
        .expect("valid config");
    SharedKeyedGcra::new(config, now)
}

/// The first `n` keys (from 0 up) that land in `shard` of `shards` (the table's rule: the
/// hash's high 32 bits scaled to the shard count).
fn keys_of(shard: u64, shards: u64, n: usize) -> Vec<u64> {
    (0u64..)
        .filter(|k| {
            let mut h = SipHasher13::new_with_keys(SEED as u64, (SEED >> 64) as u64);
            k.hash(&mut h);
            ((h.finish() >> 32) * shards) >> 32 == shard
        })
        .take(n)
        .collect()
}

/// Checks `keys` at `at`, each on a thread of its own, all at once: the answers in the keys'
/// order (admitted or not).
fn race(table: &Arc<SharedKeyedGcra<u64>>, at: Instant, keys: [u64; 2]) -> Vec<bool> {
    let handles: Vec<_> = keys
        .into_iter()
        .map(|k| {
            let t = Arc::clone(table);
            thread::spawn(move || t.try_acquire(at, &k).is_ok())
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect()
}

/// Two threads insert a new key each, into different shards (so no lock orders them), while
/// the table is one key short of `max_keys`: exactly one gets the last place, the table holds
/// exactly `max_keys` keys, never more.
#[test]
fn loom_two_new_keys_never_take_the_last_place_twice() {
    let (a, b) = (keys_of(0, 2, 2), keys_of(1, 2, 2));
    loom::model(move || {
        let t0 = Instant::from_secs(1);
        let table = Arc::new(table(3, 2, Full::RejectNew, t0));
        assert!(table.try_acquire(t0, &a[0]).is_ok());
        assert!(table.try_acquire(t0, &b[0]).is_ok());
        let admitted = race(&table, t0, [a[1], b[1]])
            .into_iter()
            .filter(|&ok| ok)
            .count();
        assert_eq!(admitted, 1);
        assert_eq!(table.len(), 3);
        assert_eq!(table.stats().rejected_full, 1);
    });
}

/// A removal racing an insert loses no count, when the table is full (two keys in shard 0, one in
/// shard 1, all idle a second later); one thread's new key in shard 0 forgets both idle keys
/// there (taking one place, giving the other back) while another thread's new key in shard 1
/// either takes the place given back or forgets that shard's idle key. Afterwards a flood of
/// new keys at the same instant into both shards fills the table to exactly `max_keys`: a
/// count lost either way would leave it short of `max_keys` or let it past.
#[test]
fn loom_a_removal_racing_an_insert_loses_no_count() {
    let (a, b) = (keys_of(0, 2, 8), keys_of(1, 2, 8));
    loom::model(move || {
        let t0 = Instant::from_secs(1);
        let table = Arc::new(table(3, 2, Full::RejectNew, t0));
        for k in [a[0], a[1], b[0]] {
            assert!(table.try_acquire(t0, &k).is_ok());
        }
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            race(&table, t1, [a[2], b[1]]),
            [true, true],
            "a new key finds an idle key's place"
        );
        assert!(table.len() <= 3);
        for k in a[3..].iter().chain(&b[2..]) {
            let _ = table.try_acquire(t1, k);
        }
        assert_eq!(table.len(), 3);
    });
}

/// A removal racing an insert loses no count, when the table has room: shard 0 of three holds
/// its capacity (26 keys: a share of 10 plus 4 × ⌈√10⌉) of idle keys, shard 1 one key, so 27
/// of the table's 30 are counted. One thread's new key in shard 0, at its capacity, forgets
/// two idle keys there (taking one place, giving the other back to the count) while another
/// thread's new key in shard 1 takes a place from the count. Afterwards new keys at the same
/// instant fill the table to exactly 30: a decrement lost to the increment (or the reverse)
/// would leave it at 29 (or let it reach 31).
#[test]
fn loom_a_removal_racing_a_claim_loses_no_count() {
    let (a, b, c) = (keys_of(0, 3, 27), keys_of(1, 3, 4), keys_of(2, 3, 6));
    loom::model(move || {
        let t0 = Instant::from_secs(1);
        let table = Arc::new(table(30, 3, Full::RejectNew, t0));
        for k in a[..26].iter().chain(&b[..1]) {
            assert!(table.try_acquire(t0, k).is_ok());
        }
        assert_eq!(table.len(), 27);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(race(&table, t1, [a[26], b[1]]), [true, true]);
        assert_eq!(table.len(), 27);
        for k in c.iter().chain(&b[2..]) {
            let _ = table.try_acquire(t1, k);
        }
        assert_eq!(table.len(), 30);
    });
}
