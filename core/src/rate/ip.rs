//! Rate-limiting keys for IP addresses: IPv4 as is, IPv6 aggregated by prefix.
//!
//! # What it protects against
//!
//! One IPv6 host usually holds a whole /64 (2^64 addresses; SLAAC privacy addresses rotate by
//! themselves) and often a /56 or /48. Keyed by the full address, such a host can send every
//! request from a new key: each gets a fresh burst, and the keyed table fills with its keys
//! (see [`keyed`](super::keyed), "A full table"). Keyed by its /64, it is one key.
//!
//! [`IpKeyer`] maps an address to the key to limit on: an IPv4 address unchanged, an
//! IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a dual-stack socket reports for IPv4
//! clients) as that IPv4 address, and any other IPv6 address with every bit after its prefix
//! cleared: /64 by default, or any length from 1 to 128 (/56 is what many ISPs delegate to a
//! home, /48 to a site). The key is an [`IpAddr`], so it prints as an address and works with any
//! keyed limiter.
//!
//! ```
//! use core::net::{IpAddr, Ipv4Addr};
//! use keel_core::rate::ip::IpKeyer;
//!
//! let per_64 = IpKeyer::default();
//! let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
//! let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
//! assert_eq!(per_64.key(a), per_64.key(b));
//! assert_eq!(per_64.key(a), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
//!
//! let per_56 = IpKeyer::v6_prefix(56)?;
//! let c: IpAddr = "2001:db8:1:ff::9".parse().unwrap(); // same /56 (2001:db8:1:0::/56)
//! assert_eq!(per_56.key(a), per_56.key(c));
//!
//! let v4: IpAddr = Ipv4Addr::new(192, 0, 2, 7).into();
//! assert_eq!(per_64.key(v4), v4);
//! let mapped: IpAddr = Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped().into();
//! assert_eq!(per_64.key(mapped), v4);
//! # Ok::<(), keel_core::ConfigError>(())
//! ```

use core::net::{IpAddr, Ipv6Addr};

use crate::error::ConfigError;

/// Maps an IP address to its rate-limiting key: IPv4 unchanged, IPv6 by prefix (default /64).
/// See the [module docs](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpKeyer {
    v6_prefix: u8,
}

impl Default for IpKeyer {
    /// IPv6 by /64: one key per subnet, the smallest block a host is normally given.
    fn default() -> Self {
        IpKeyer { v6_prefix: 64 }
    }
}

impl IpKeyer {
    /// IPv6 addresses aggregated to their first `bits` bits (1..=128; 128 keeps the full
    /// address).
    ///
    /// # Errors
    ///
    /// [`ConfigError::OutOfRange`] for 0 (every IPv6 client would share one key) or above 128.
    pub fn v6_prefix(bits: u8) -> Result<IpKeyer, ConfigError> {
        if bits == 0 || bits > 128 {
            return Err(ConfigError::OutOfRange {
                field: "v6_prefix",
                expected: "a prefix length from 1 to 128 bits (64 for a subnet, 56 or 48 for a \
                           delegation)",
            });
        }
        Ok(IpKeyer { v6_prefix: bits })
    }

    /// The IPv6 prefix length in bits.
    #[must_use]
    pub const fn prefix_len(&self) -> u8 {
        self.v6_prefix
    }

    /// The key for `addr`.
    #[must_use]
    pub fn key(&self, addr: IpAddr) -> IpAddr {
        match addr {
            IpAddr::V4(v4) => IpAddr::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let shift = 128 - u32::from(self.v6_prefix.clamp(1, 128));
                    let mask = u128::MAX.checked_shl(shift).unwrap_or(0);
                    IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
                }
            },
        }
    }
}

/// [`IpKeyer::default`]'s key: IPv4 unchanged, IPv6 by its /64.
#[must_use]
pub fn ip_key(addr: IpAddr) -> IpAddr {
    IpKeyer::default().key(addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;

    fn v6(s: &str) -> IpAddr {
        IpAddr::V6(s.parse().unwrap())
    }

    #[test]
    fn prefixes_clear_exactly_the_host_bits() {
        let a = v6("2001:db8:aaaa:bbcc:1:2:3:4");
        assert_eq!(ip_key(a), v6("2001:db8:aaaa:bbcc::"));
        assert_eq!(
            IpKeyer::v6_prefix(56).unwrap().key(a),
            v6("2001:db8:aaaa:bb00::")
        );
        assert_eq!(
            IpKeyer::v6_prefix(48).unwrap().key(a),
            v6("2001:db8:aaaa::")
        );
        assert_eq!(IpKeyer::v6_prefix(128).unwrap().key(a), a);
        assert_eq!(IpKeyer::v6_prefix(1).unwrap().key(a), v6("::"));
        assert_eq!(IpKeyer::v6_prefix(0).map(|k| k.prefix_len()).ok(), None);
        assert_eq!(IpKeyer::v6_prefix(56).map(|k| k.prefix_len()), Ok(56));
        assert_eq!(IpKeyer::default().prefix_len(), 64);
        assert!(IpKeyer::v6_prefix(129).is_err());
        // Every address of a /64 is one key; the neighbouring /64 is another.
        let b = v6("2001:db8:aaaa:bbcc:ffff:ffff:ffff:ffff");
        assert_eq!(ip_key(a), ip_key(b));
        assert_ne!(ip_key(a), ip_key(v6("2001:db8:aaaa:bbcd::1")));
    }

    #[test]
    fn ipv4_and_mapped_ipv4_are_the_same_key() {
        let v4 = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));
        assert_eq!(ip_key(v4), v4);
        assert_eq!(ip_key(v6("::ffff:203.0.113.9")), v4);
        assert_ne!(ip_key(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10))), v4);
        // Loopback shares the /64 of the unspecified address.
        assert_eq!(ip_key(v6("::1")), v6("::"));
    }
}
