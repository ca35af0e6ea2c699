//! Key extractors: what a [`KeyedRateLimitLayer`](super::KeyedRateLimitLayer) limits on.

use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use http::header::{HeaderName, FORWARDED};
use http::{Extensions, HeaderMap, HeaderValue, Method, Request, Uri};
use keel_core::rate::ip::IpKeyer;
use keel_core::ConfigError;

/// The peer (client socket) address of a request, as a request extension.
///
/// Whatever accepts the connection inserts it (`req.extensions_mut().insert(PeerAddr(addr))`,
/// for example in a hyper `service_fn` per connection); the peer-based extractors
/// ([`PeerIp`], [`ForwardedIp`]) read it first, then, with feature `axum`, axum's
/// `ConnectInfo<SocketAddr>` (from `into_make_service_with_connect_info::<SocketAddr>()`).
/// keel's own HTTP serving (`http_server`, feature `hyper`) inserts it on every request; over a
/// Unix socket the address is the runtime's Unix address type (`PeerAddr<A>`), which the IP
/// extractors do not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerAddr<A = SocketAddr>(pub A);

/// The parts of a request a [`KeyExtractor`] reads (the body is not among them).
#[derive(Clone, Copy, Debug)]
pub struct RequestHead<'a> {
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    extensions: &'a Extensions,
}

impl<'a> RequestHead<'a> {
    /// The head of `req`.
    #[must_use]
    pub fn of<B>(req: &'a Request<B>) -> Self {
        RequestHead {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
            extensions: req.extensions(),
        }
    }

    /// The request method.
    #[must_use]
    pub fn method(&self) -> &'a Method {
        self.method
    }

    /// The request target.
    #[must_use]
    pub fn uri(&self) -> &'a Uri {
        self.uri
    }

    /// The request headers.
    #[must_use]
    pub fn headers(&self) -> &'a HeaderMap {
        self.headers
    }

    /// The request extensions.
    #[must_use]
    pub fn extensions(&self) -> &'a Extensions {
        self.extensions
    }

    /// The peer address: a [`PeerAddr`] extension, else (feature `axum`) axum's
    /// `ConnectInfo<SocketAddr>`.
    #[must_use]
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        if let Some(PeerAddr(addr)) = self.extensions.get::<PeerAddr>() {
            return Some(*addr);
        }
        #[cfg(feature = "axum")]
        if let Some(info) = self
            .extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
        {
            return Some(info.0);
        }
        None
    }
}

/// Finds the rate-limiting key of a request; `None` when the request has none (see
/// [`KeyedRateLimitLayer::on_missing_key`](super::KeyedRateLimitLayer::on_missing_key)).
///
/// Ready ones: [`PeerIp`] (the peer's IP, IPv6 by prefix), [`ForwardedIp`] (the client address a
/// trusted proxy reports), [`HeaderKey`] (a header's value). Any
/// `Fn(&RequestHead<'_>) -> Option<K>` closure is one too.
pub trait KeyExtractor {
    /// The key (an address, a user id): hashed into a bounded table.
    type Key: Hash + Eq + Clone + Send + 'static;

    /// The key of `req`, if it has one.
    fn extract(&self, req: &RequestHead<'_>) -> Option<Self::Key>;
}

impl<F, K> KeyExtractor for F
where
    F: Fn(&RequestHead<'_>) -> Option<K>,
    K: Hash + Eq + Clone + Send + 'static,
{
    type Key = K;

    fn extract(&self, req: &RequestHead<'_>) -> Option<K> {
        self(req)
    }
}

/// Keys by the peer's IP address (IPv4 as is, IPv6 by its /64 by default, see [`IpKeyer`]).
/// No peer address in the request (no [`PeerAddr`], no `ConnectInfo`): no key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerIp {
    keyer: IpKeyer,
}

impl PeerIp {
    /// IPv6 peers grouped by `keyer`'s prefix (IPv4 peers as is).
    #[must_use]
    pub fn new(keyer: IpKeyer) -> Self {
        PeerIp { keyer }
    }
}

impl KeyExtractor for PeerIp {
    type Key = IpAddr;

    fn extract(&self, req: &RequestHead<'_>) -> Option<IpAddr> {
        req.peer_addr().map(|a| self.keyer.key(a.ip()))
    }
}

/// An IP network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`; a bare address is a /32 or
/// /128). IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) match the IPv4 networks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The network of `addr`'s first `prefix` bits.
    ///
    /// # Errors
    ///
    /// [`ConfigError::OutOfRange`] for a prefix longer than the address (32 or 128 bits).
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Cidr, ConfigError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(ConfigError::OutOfRange {
                field: "cidr prefix",
                expected: "at most 32 bits for IPv4 and 128 for IPv6",
            });
        }
        // `::ffff:a.b.c.d/n` with n >= 96 is the IPv4 network a.b.c.d/(n - 96).
        let (addr, prefix) = match addr {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) if prefix >= 96 => (IpAddr::V4(v4), prefix - 96),
                _ => (addr, prefix),
            },
            v4 => (v4, prefix),
        };
        Ok(Cidr { addr, prefix })
    }

    /// Does the network hold `ip`?
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Cidr, ConfigError> {
        let bad = || ConfigError::OutOfRange {
            field: "cidr",
            expected: "an address or a network like 10.0.0.0/8 or 2001:db8::/32",
        };
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().map_err(|_| bad())?,
            None if addr.is_ipv4() => 32,
            None => 128,
        };
        Cidr::new(addr, prefix)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// IPv4-mapped IPv6 addresses as IPv4 (a dual-stack socket reports IPv4 peers that way).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Which header a [`ForwardedIp`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ForwardHeader {
    XForwardedFor,
    Forwarded,
}

/// Keys by the client address that trusted proxies report, IPv6 by prefix as [`PeerIp`].
///
/// The rule: if the direct peer is **not** in a trusted network, the headers are ignored and the
/// peer is the key (anyone can send the header). If it is, the header's addresses are walked
/// from the right (each proxy appends the address it received from): trusted ones are skipped
/// and the first one not in a trusted network is the key. If every address is trusted, the
/// left-most is the key. An entry that is not an address (`unknown`, an obfuscated
/// `_identifier`) where the walk stops is no key (see
/// [`on_missing_key`](super::KeyedRateLimitLayer::on_missing_key)).
///
/// One header is read, the one your proxies set: [`x_forwarded_for`](Self::x_forwarded_for)
/// or [`forwarded`](Self::forwarded) (RFC 7239's `for=`). Reading both would let a client whose
/// proxy sets only one choose its key with the other. Several header lines are read in order,
/// as one list.
#[derive(Clone, Debug)]
pub struct ForwardedIp {
    trusted: Arc<[Cidr]>,
    header: ForwardHeader,
    keyer: IpKeyer,
}

impl ForwardedIp {
    /// Reads `X-Forwarded-For` from peers in `trusted`.
    #[must_use]
    pub fn x_forwarded_for(trusted: impl IntoIterator<Item = Cidr>) -> Self {
        ForwardedIp {
            trusted: trusted.into_iter().collect(),
            header: ForwardHeader::XForwardedFor,
            keyer: IpKeyer::default(),
        }
    }

    /// Reads `Forwarded` (`for=` of each element) from peers in `trusted`.
    #[must_use]
    pub fn forwarded(trusted: impl IntoIterator<Item = Cidr>) -> Self {
        ForwardedIp {
            header: ForwardHeader::Forwarded,
            ..Self::x_forwarded_for(trusted)
        }
    }

    /// IPv6 clients grouped by `keyer`'s prefix (default /64).
    #[must_use]
    pub fn keyer(mut self, keyer: IpKeyer) -> Self {
        self.keyer = keyer;
        self
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(ip))
    }

    /// The client address by the rule in the type's docs (before prefix grouping).
    fn client(&self, head: &RequestHead<'_>) -> Option<IpAddr> {
        let peer = head.peer_addr()?.ip();
        if !self.trusted(peer) {
            return Some(peer);
        }
        let name: HeaderName = match self.header {
            ForwardHeader::XForwardedFor => HeaderName::from_static("x-forwarded-for"),
            ForwardHeader::Forwarded => FORWARDED,
        };
        // Every entry, left to right across the header lines; then walked from the right.
        let lines: Vec<&HeaderValue> = head.headers().get_all(&name).iter().collect();
        let mut leftmost = peer;
        for line in lines.iter().rev() {
            let Ok(text) = line.to_str() else {
                return None;
            };
            for entry in text.rsplit(',') {
                let addr = match self.header {
                    ForwardHeader::XForwardedFor => parse_node(entry),
                    ForwardHeader::Forwarded => forwarded_for(entry)?,
                };
                let ip = addr?;
                if !self.trusted(ip) {
                    return Some(ip);
                }
                leftmost = ip;
            }
        }
        Some(leftmost)
    }
}

impl KeyExtractor for ForwardedIp {
    type Key = IpAddr;

    fn extract(&self, req: &RequestHead<'_>) -> Option<IpAddr> {
        self.client(req).map(|ip| self.keyer.key(ip))
    }
}

/// The `for=` node of one `Forwarded` element: `Some(Some(ip))`, `Some(None)` for a node that is
/// not an address, `None` for an element without `for=` (then the request has no usable key).
#[allow(clippy::option_option)]
fn forwarded_for(element: &str) -> Option<Option<IpAddr>> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| parse_node(value))
    })
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:8080`, `2001:db8::1`,
/// `[2001:db8::1]:8080`, optionally quoted; `None` for anything else.
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim().trim_matches('"');
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sock) = node.parse::<SocketAddr>() {
        return Some(sock.ip());
    }
    // `[v6]` without a port.
    node.strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .and_then(|n| n.parse::<IpAddr>().ok())
}

/// Keys by the value of one request header (an API key, a tenant id). No header, several lines
/// of it, or a value longer than [`max_len`](Self::max_len) (default
/// [`HeaderKey::DEFAULT_MAX_LEN`] bytes): no key. Each tracked key holds a copy of its value, so
/// the length cap bounds the table's heap memory (at most `max_keys × max_len` bytes) against a
/// client rotating long values.
#[derive(Clone, Debug)]
pub struct HeaderKey {
    name: HeaderName,
    max_len: usize,
}

impl HeaderKey {
    /// The default longest value taken as a key: 256 bytes.
    pub const DEFAULT_MAX_LEN: usize = 256;

    /// Keys by the header `name`.
    #[must_use]
    pub fn new(name: HeaderName) -> Self {
        HeaderKey {
            name,
            max_len: Self::DEFAULT_MAX_LEN,
        }
    }

    /// The longest value (in bytes) taken as a key; a longer one is no key.
    #[must_use]
    pub fn max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len;
        self
    }
}

impl KeyExtractor for HeaderKey {
    type Key = HeaderValue;

    fn extract(&self, req: &RequestHead<'_>) -> Option<HeaderValue> {
        let mut values = req.headers().get_all(&self.name).iter();
        match (values.next(), values.next()) {
            (Some(v), None) if v.len() <= self.max_len => Some(v.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_with(peer: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut req = Request::new(());
        req.extensions_mut().insert(PeerAddr(
            peer.parse::<SocketAddr>().expect("a socket address"),
        ));
        for (n, v) in headers {
            req.headers_mut().append(
                HeaderName::from_bytes(n.as_bytes()).expect("a header name"),
                HeaderValue::from_str(v).expect("a header value"),
            );
        }
        req
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn cidr_parses_and_matches() {
        let net: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains(ip("10.255.0.1")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(net.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped matches");
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        let one: Cidr = "192.0.2.7".parse().unwrap();
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.1")));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nonsense/8".parse::<Cidr>().is_err());
        assert!("10.0.0.0/x".parse::<Cidr>().is_err());
        assert_eq!(net.to_string(), "10.0.0.0/8");
    }

    #[test]
    fn forwarded_walks_from_the_right_past_trusted_proxies() {
        let x = ForwardedIp::x_forwarded_for(["10.0.0.0/8".parse().unwrap()]);
        let req = head_with(
            "10.0.0.1:4000",
            &[("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.0.0.2")],
        );
        assert_eq!(x.client(&RequestHead::of(&req)), Some(ip("203.0.113.9")));
        // Two header lines form one list, in order.
        let req = head_with(
            "10.0.0.1:4000",
            &[
                ("x-forwarded-for", "6.6.6.6"),
                ("x-forwarded-for", "203.0.113.9, 10.0.0.2"),
            ],
        );
        assert_eq!(x.client(&RequestHead::of(&req)), Some(ip("203.0.113.9")));
        // All trusted: the left-most.
        let req = head_with(
            "10.0.0.1:4000",
            &[("x-forwarded-for", "10.9.9.9, 10.0.0.2")],
        );
        assert_eq!(x.client(&RequestHead::of(&req)), Some(ip("10.9.9.9")));
        // No header from a trusted peer: the peer.
        let req = head_with("10.0.0.1:4000", &[]);
        assert_eq!(x.client(&RequestHead::of(&req)), Some(ip("10.0.0.1")));
        // An untrusted peer's header is ignored.
        let req = head_with("198.51.100.1:4000", &[("x-forwarded-for", "6.6.6.6")]);
        assert_eq!(x.client(&RequestHead::of(&req)), Some(ip("198.51.100.1")));
        // Garbage where the walk stops: no key.
        let req = head_with("10.0.0.1:4000", &[("x-forwarded-for", "6.6.6.6, unknown")]);
        assert_eq!(x.client(&RequestHead::of(&req)), None);
        // Ports and brackets.
        let req = head_with(
            "10.0.0.1:4000",
            &[("x-forwarded-for", "[2001:db8::1]:443, 198.51.100.2:80")],
        );
        assert_eq!(x.client(&RequestHead::of(&req)), Some(ip("198.51.100.2")));
    }

    #[test]
    fn rfc7239_forwarded_reads_for_nodes_only_from_its_own_header() {
        let f = ForwardedIp::forwarded(["10.0.0.0/8".parse().unwrap()]);
        let req = head_with(
            "10.0.0.1:4000",
            &[
                (
                    "forwarded",
                    "for=6.6.6.6, for=\"[2001:db8:cafe::17]:4711\";proto=https, for=10.0.0.3;by=10.0.0.1",
                ),
                ("x-forwarded-for", "1.2.3.4"),
            ],
        );
        assert_eq!(
            f.client(&RequestHead::of(&req)),
            Some(ip("2001:db8:cafe::17"))
        );
        let req = head_with("10.0.0.1:4000", &[("forwarded", "for=_hidden")]);
        assert_eq!(f.client(&RequestHead::of(&req)), None);
        let req = head_with("10.0.0.1:4000", &[("forwarded", "proto=https")]);
        assert_eq!(f.client(&RequestHead::of(&req)), None);
        // X-Forwarded-For alone is not read by the `Forwarded` extractor.
        let req = head_with("10.0.0.1:4000", &[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(f.client(&RequestHead::of(&req)), Some(ip("10.0.0.1")));
    }

    #[test]
    fn header_key_needs_exactly_one_value() {
        let h = HeaderKey::new(HeaderName::from_static("x-api-key"));
        let req = head_with("1.1.1.1:1", &[("x-api-key", "abc")]);
        assert_eq!(
            h.extract(&RequestHead::of(&req)),
            Some(HeaderValue::from_static("abc"))
        );
        let req = head_with("1.1.1.1:1", &[("x-api-key", "a"), ("x-api-key", "b")]);
        assert_eq!(h.extract(&RequestHead::of(&req)), None);
        let req = head_with("1.1.1.1:1", &[]);
        assert_eq!(h.extract(&RequestHead::of(&req)), None);
        let long = "k".repeat(HeaderKey::DEFAULT_MAX_LEN + 1);
        let req = head_with("1.1.1.1:1", &[("x-api-key", &long)]);
        assert_eq!(h.extract(&RequestHead::of(&req)), None, "too long");
        let exact = &long[1..];
        let req = head_with("1.1.1.1:1", &[("x-api-key", exact)]);
        assert!(h.extract(&RequestHead::of(&req)).is_some());
        let h = h.max_len(3);
        let req = head_with("1.1.1.1:1", &[("x-api-key", "abcd")]);
        assert_eq!(h.extract(&RequestHead::of(&req)), None);
    }
}
