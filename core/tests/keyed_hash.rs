//! The keyed table's hasher takes integers by a short path (`write_u64` and friends, issue 16:
//! a `u64` key is one block). Each path must hash exactly the bytes the `Hasher` defaults
//! would (`write(&i.to_ne_bytes())`) wherever it lands in a block, or a key would hash
//! differently by how it was fed (and `SipHasher13` would stop matching std's hasher).

// The keyed limiter (and its hasher) needs `alloc`: the no_std test run without it leaves
// this file out.
#![cfg(feature = "alloc")]

use core::hash::Hasher;

use keel_core::rate::keyed::SipHasher13;
use proptest::prelude::*;

/// One write to a hasher, as an integer (its short path) or as bytes.
#[derive(Clone, Debug)]
enum Write {
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
    U128(u128),
    Usize(usize),
    I64(i64),
    Bytes(Vec<u8>),
}

impl Write {
    fn by_path(&self, h: &mut impl Hasher) {
        match self {
            Write::U8(i) => h.write_u8(*i),
            Write::U16(i) => h.write_u16(*i),
            Write::U32(i) => h.write_u32(*i),
            Write::U64(i) => h.write_u64(*i),
            Write::U128(i) => h.write_u128(*i),
            Write::Usize(i) => h.write_usize(*i),
            Write::I64(i) => h.write_i64(*i),
            Write::Bytes(b) => h.write(b),
        }
    }

    /// The same write as the `Hasher` defaults make it: the integer's native-endian bytes.
    fn as_bytes(&self, h: &mut impl Hasher) {
        match self {
            Write::U8(i) => h.write(&i.to_ne_bytes()),
            Write::U16(i) => h.write(&i.to_ne_bytes()),
            Write::U32(i) => h.write(&i.to_ne_bytes()),
            Write::U64(i) => h.write(&i.to_ne_bytes()),
            Write::U128(i) => h.write(&i.to_ne_bytes()),
            Write::Usize(i) => h.write(&i.to_ne_bytes()),
            Write::I64(i) => h.write(&i.to_ne_bytes()),
            Write::Bytes(b) => h.write(b),
        }
    }
}

fn write() -> impl Strategy<Value = Write> {
    prop_oneof![
        any::<u8>().prop_map(Write::U8),
        any::<u16>().prop_map(Write::U16),
        any::<u32>().prop_map(Write::U32),
        any::<u64>().prop_map(Write::U64),
        any::<u128>().prop_map(Write::U128),
        any::<usize>().prop_map(Write::Usize),
        any::<i64>().prop_map(Write::I64),
        proptest::collection::vec(any::<u8>(), 0..20).prop_map(Write::Bytes),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any mix of integer and byte writes (so integers land at every offset in a block)
    /// hashes as the same bytes written as bytes, under any key; under the key `(0, 0)` also
    /// as std's `DefaultHasher` (SipHash-1-3) hashes them.
    #[test]
    fn integer_writes_hash_their_bytes(
        k0 in any::<u64>(),
        k1 in any::<u64>(),
        writes in proptest::collection::vec(write(), 0..12),
    ) {
        let mut fast = SipHasher13::new_with_keys(k0, k1);
        let mut bytes = SipHasher13::new_with_keys(k0, k1);
        let mut ours0 = SipHasher13::new_with_keys(0, 0);
        #[allow(deprecated)] // `DefaultHasher::new()` is SipHash-1-3 under the key (0, 0).
        let mut std0 = std::collections::hash_map::DefaultHasher::new();
        for w in &writes {
            w.by_path(&mut fast);
            w.as_bytes(&mut bytes);
            w.by_path(&mut ours0);
            w.as_bytes(&mut std0);
        }
        prop_assert_eq!(fast.finish(), bytes.finish());
        prop_assert_eq!(ours0.finish(), std0.finish());
    }
}

/// The keys the benches and most services use, fed the way `Hash` feeds them.
#[test]
fn integer_keys_hash_as_their_bytes() {
    use core::hash::Hash;
    for key in [0u64, 1, 7, u64::MAX, 0x0123_4567_89ab_cdef] {
        let mut by_hash = SipHasher13::new_with_keys(3, 5);
        key.hash(&mut by_hash);
        let mut bytes = SipHasher13::new_with_keys(3, 5);
        bytes.write(&key.to_ne_bytes());
        assert_eq!(by_hash.finish(), bytes.finish(), "{key}");
    }
    let ip = 0x2001_0db8_0000_0000_0000_0000_0000_0001u128;
    let mut by_hash = SipHasher13::new_with_keys(3, 5);
    ip.hash(&mut by_hash);
    let mut bytes = SipHasher13::new_with_keys(3, 5);
    bytes.write(&ip.to_ne_bytes());
    assert_eq!(by_hash.finish(), bytes.finish());
}
