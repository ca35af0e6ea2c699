//! SipHash-1-3, the keyed hash of the keyed limiter's table.

use core::hash::Hasher;

/// SipHash-1-3 (Aumasson and Bernstein; the variant behind std's `HashMap`), keyed by 128 bits.
///
/// Written here because `core` has no keyed hasher. Feeding the same bytes through
/// [`Hasher::write`] gives the same value as std's `DefaultHasher` for keys `(0, 0)`.
#[derive(Clone, Debug)]
pub struct SipHasher13 {
    v0: u64,
    v1: u64,
    v2: u64,
    v3: u64,
    tail: u64,
    ntail: usize,
    length: usize,
}

impl SipHasher13 {
    /// A hasher keyed by `(k0, k1)`.
    #[must_use]
    pub const fn new_with_keys(k0: u64, k1: u64) -> SipHasher13 {
        SipHasher13 {
            v0: k0 ^ 0x736f_6d65_7073_6575,
            v1: k1 ^ 0x646f_7261_6e64_6f6d,
            v2: k0 ^ 0x6c79_6765_6e65_7261,
            v3: k1 ^ 0x7465_6462_7974_6573,
            tail: 0,
            ntail: 0,
            length: 0,
        }
    }

    #[inline]
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }

    #[inline]
    fn compress(&mut self, m: u64) {
        let mut v = [self.v0, self.v1, self.v2, self.v3 ^ m];
        Self::round(&mut v);
        let [v0, v1, v2, v3] = v;
        self.v0 = v0 ^ m;
        self.v1 = v1;
        self.v2 = v2;
        self.v3 = v3;
    }

    /// Appends `size` (1 to 8) bytes held little-endian in the low bytes of `x`: the same
    /// stream as [`Hasher::write`] on those bytes, without its loops when they fit the
    /// pending block (the integer keys' path: a `u64` key is one `compress`).
    // Always inlined: out of line (a plain `#[inline]` was not taken) the key's one block
    // cost a call and the spill of the state; the byte path for a straddling write stays cold.
    #[inline(always)]
    fn short_write(&mut self, x: u64, size: usize) {
        let filled = self.ntail + size;
        if filled > 8 {
            self.straddling_write(x, size);
            return;
        }
        self.length = self.length.wrapping_add(size);
        // `ntail < 8` here (a full block is compressed at once), so the shift is below 64.
        self.tail |= x << (8 * self.ntail);
        if filled == 8 {
            let m = self.tail;
            self.compress(m);
            self.tail = 0;
            self.ntail = 0;
        } else {
            self.ntail = filled;
        }
    }

    /// [`short_write`](Self::short_write)'s bytes when they cross into the next block.
    #[cold]
    #[inline(never)]
    fn straddling_write(&mut self, x: u64, size: usize) {
        let bytes = x.to_le_bytes();
        // `size <= 8` from every caller: `get` never falls back.
        self.write(bytes.get(..size).unwrap_or(&bytes));
    }
}

// The integer writes are `write(&i.to_ne_bytes())` (the `Hasher` defaults), byte for byte;
// the bytes read little-endian are `from_le_bytes(to_ne_bytes())` on any target.
impl Hasher for SipHasher13 {
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.short_write(u64::from(i), 1);
    }

    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.short_write(u64::from(u16::from_le_bytes(i.to_ne_bytes())), 2);
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.short_write(u64::from(u32::from_le_bytes(i.to_ne_bytes())), 4);
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.short_write(u64::from_le_bytes(i.to_ne_bytes()), 8);
    }

    #[inline]
    fn write_u128(&mut self, i: u128) {
        let x = u128::from_le_bytes(i.to_ne_bytes());
        self.short_write(x as u64, 8);
        self.short_write((x >> 64) as u64, 8);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        let x = usize::from_le_bytes(i.to_ne_bytes());
        self.short_write(x as u64, core::mem::size_of::<usize>());
    }

    #[inline]
    fn write(&mut self, msg: &[u8]) {
        self.length = self.length.wrapping_add(msg.len());
        let mut rest = msg;
        if self.ntail != 0 {
            let needed = 8 - self.ntail;
            let take = needed.min(rest.len());
            let (head, tail) = rest.split_at(take);
            for (j, b) in head.iter().enumerate() {
                self.tail |= u64::from(*b) << (8 * (self.ntail + j));
            }
            rest = tail;
            if take < needed {
                self.ntail += take;
                return;
            }
            let m = self.tail;
            self.compress(m);
            self.tail = 0;
            self.ntail = 0;
        }
        let mut chunks = rest.chunks_exact(8);
        for c in &mut chunks {
            let m = c
                .iter()
                .rev()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            self.compress(m);
        }
        let rem = chunks.remainder();
        for (j, b) in rem.iter().enumerate() {
            self.tail |= u64::from(*b) << (8 * j);
        }
        self.ntail = rem.len();
    }

    #[inline]
    fn finish(&self) -> u64 {
        let b = ((self.length as u64 & 0xff) << 56) | self.tail;
        let mut v = [self.v0, self.v1, self.v2, self.v3 ^ b];
        Self::round(&mut v);
        v[0] ^= b;
        v[2] ^= 0xff;
        Self::round(&mut v);
        Self::round(&mut v);
        Self::round(&mut v);
        v[0] ^ v[1] ^ v[2] ^ v[3]
    }
}
