//! The small seeded PRNG behind every jittered decision.
//!
//! Randomness is an input: a machine that jitters owns an [`Rng`] seeded from its config.
//! Tests and simulations seed it with a constant, so the same seed and the same inputs give the
//! same outputs, bit for bit.
//!
//! # The OS random source
//!
//! With feature `std`, `os_seed` (crate-private) draws 128 bits from the operating system (through the
//! `getrandom` crate: `getrandom(2)` on Linux, `getentropy` / `SecRandomCopyBytes` /
//! `ProcessPrng` elsewhere). It is the one source of default seeds in keel: the keyed rate
//! limiter's SipHash key ([`KeyedConfigBuilder::hash_seed`](crate::rate::keyed::KeyedConfigBuilder::hash_seed)
//! when none is given) and the salt the async driver mixes into retry and breaker jitter.
//! Without `std` there is no default: a `no_std` caller passes a seed, and a builder that needs a
//! secret one says so with [`ConfigError::Missing`](crate::ConfigError::Missing).
//!
//! Why `getrandom` rather than std's `RandomState` (which the driver used before): `RandomState`
//! draws OS keys once per thread and then only increments one half of the key for each new
//! instance (related keys, an implementation detail std documents as subject to change), and it
//! panics if the OS source fails. `getrandom` asks the OS for fresh bytes on every call and
//! reports a failure as a value, which the keyed builder turns into a [`ConfigError`](crate::ConfigError).
//!
//! The generator is SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number
//! generators", 2014): 8 bytes of state, one add and three multiply-xorshift rounds per output,
//! and it passes BigCrush. It is **not** cryptographic: jitter needs decorrelation, not secrecy.
//!
//! ```
//! use keel_core::rng::Rng;
//!
//! let mut a = Rng::new(42);
//! let mut b = Rng::new(42);
//! assert_eq!(a.next_u64(), b.next_u64()); // deterministic
//! let x = a.between(10, 20);
//! assert!((10..=20).contains(&x));
//! ```

/// A SplitMix64 pseudo-random generator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator seeded with `seed` (any value, zero included, is a good seed).
    #[inline]
    #[must_use]
    pub const fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    /// The next 64 uniformly distributed bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value uniformly distributed in `0..=max` (`max` itself included).
    ///
    /// Uses Lemire's multiply-shift; the bias is below `max / 2^64`, far under anything jitter
    /// can observe, and there is no rejection loop, so the cost is constant.
    #[inline]
    pub fn up_to(&mut self, max: u64) -> u64 {
        if max == u64::MAX {
            return self.next_u64();
        }
        let range = u128::from(max) + 1;
        ((u128::from(self.next_u64()) * range) >> 64) as u64
    }

    /// A value uniformly distributed in `low..=high`; the bounds are swapped if inverted.
    #[inline]
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        let (lo, hi) = if low <= high {
            (low, high)
        } else {
            (high, low)
        };
        lo + self.up_to(hi - lo)
    }

    /// A float uniformly distributed in `[0, 1)` with 53 bits of precision.
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// 128 bits from the operating system's random source, or `None` if it failed (it does not on
/// any supported OS once the system has booted; see the [module docs](self)).
///
/// Use it for seeds an attacker must not know or guess: hash keys and jitter salts. Crate-private:
/// builders draw it themselves when no seed is given.
#[cfg(feature = "std")]
#[must_use]
pub(crate) fn os_seed() -> Option<u128> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).ok()?;
    Some(u128::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }

    #[test]
    fn known_first_output_for_seed_zero() {
        // Reference value of SplitMix64 seeded with 0.
        assert_eq!(Rng::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
        // The float is the top 53 bits of that output over 2^53: 7956156453446585 / 2^53.
        assert_eq!(Rng::new(0).next_f64(), 0.883_310_808_213_642_6);
    }

    #[test]
    fn bounded_outputs_stay_in_bounds() {
        let mut r = Rng::new(3);
        for _ in 0..10_000 {
            assert!(r.up_to(9) <= 9);
            assert_eq!(r.up_to(0), 0);
            let v = r.between(20, 10);
            assert!((10..=20).contains(&v));
            let f = r.next_f64();
            assert!((0.0..1.0).contains(&f));
        }
        let _ = r.up_to(u64::MAX);
        assert_eq!(r.between(u64::MAX, u64::MAX), u64::MAX);
    }

    #[test]
    fn up_to_covers_the_range_roughly_evenly() {
        let mut r = Rng::new(11);
        let mut counts = [0u32; 4];
        for _ in 0..40_000 {
            counts[r.up_to(3) as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }

    #[cfg(feature = "std")]
    #[test]
    fn os_seeds_differ() {
        let seeds: std::vec::Vec<_> = (0..8).filter_map(|_| os_seed()).collect();
        assert_eq!(seeds.len(), 8);
        for (i, a) in seeds.iter().enumerate() {
            assert!(seeds[i + 1..].iter().all(|b| b != a));
        }
    }
}
