//! [`Name`]: the instance name every async handle carries into its logs and metrics.
//!
//! An outage log that says `closed -> open` without saying *which* breaker is of little use at
//! 3 a.m. Every handle of the driver ([`Breaker`](super::breaker::Breaker),
//! [`Retry`](super::retry::Retry), [`RateLimiter`](super::rate::RateLimiter),
//! [`KeyedRateLimiter`](super::rate::KeyedRateLimiter), [`Bulkhead`](super::bulkhead::Bulkhead),
//! [`Server`](super::Server)) has one, set with its `.named(..)` builder method, and emits it:
//!
//! - as the field `name` on every `tracing` event it logs (feature `tracing`), so a
//!   subscriber prints `keel::breaker: circuit breaker transition name="payments" from="closed"
//!   to="open"`;
//! - as the label `name` on every metric it exports (feature `metrics`, see
//!   [`crate::driver::metrics`]);
//! - from the handle's `name()` accessor, for hooks (a hook is a closure: capture the name, or
//!   read it from the handle the hook is given to).
//!
//! The default is [`Name::DEFAULT`], `"default"`. Name each instance after what it protects
//! (`"payments"`, `"inventory-db"`): the names are metric label values, so keep them few and
//! stable (one per dependency, not one per request or per client).
//!
//! A `Name` is a `&'static str` or an `Arc<str>`: cloning it never allocates, and nothing on a
//! handle's hot path clones or formats it (tracing and metrics take it by reference).

use alloc::string::String;
use alloc::sync::Arc;
use core::fmt;

/// An instance name (see [`Breaker::named`](super::breaker::Breaker::named)): cheap to clone, never allocates after it
/// is made.
#[derive(Clone)]
pub struct Name(Repr);

#[derive(Clone)]
enum Repr {
    Static(&'static str),
    Shared(Arc<str>),
}

impl Name {
    /// The name of a handle that was not given one: `"default"`.
    pub const DEFAULT: Name = Name(Repr::Static("default"));

    /// A name from a string literal (no allocation).
    #[must_use]
    pub const fn from_static(name: &'static str) -> Self {
        Name(Repr::Static(name))
    }

    /// The name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Static(s) => s,
            Repr::Shared(s) => s,
        }
    }

    /// The name as a `&'static str` if it was made from one (metrics labels then need no
    /// reference count).
    #[must_use]
    pub fn as_static(&self) -> Option<&'static str> {
        match &self.0 {
            Repr::Static(s) => Some(s),
            Repr::Shared(_) => None,
        }
    }

    /// The name as a shared string if it was made from one.
    #[must_use]
    pub fn as_shared(&self) -> Option<&Arc<str>> {
        match &self.0 {
            Repr::Static(_) => None,
            Repr::Shared(s) => Some(s),
        }
    }
}

impl Default for Name {
    fn default() -> Self {
        Name::DEFAULT
    }
}

impl From<&'static str> for Name {
    fn from(name: &'static str) -> Self {
        Name(Repr::Static(name))
    }
}

impl From<String> for Name {
    fn from(name: String) -> Self {
        Name(Repr::Shared(Arc::from(name)))
    }
}

impl From<Arc<str>> for Name {
    fn from(name: Arc<str>) -> Self {
        Name(Repr::Shared(name))
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Name {}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl core::hash::Hash for Name {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn names_compare_by_text_whatever_their_storage() {
        let a = Name::from("payments");
        let b = Name::from(String::from("payments"));
        assert_eq!(a, b);
        assert_eq!(a.as_static(), Some("payments"));
        assert_eq!(b.as_static(), None);
        assert_eq!(b.as_shared().map(|s| &**s), Some("payments"));
        assert_eq!(Name::default(), "default");
        assert_eq!(b.to_string(), "payments");
        assert_eq!(alloc::format!("{b:?}"), "\"payments\"");
    }
}
