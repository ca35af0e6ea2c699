//! The exact local deny cache: keys Redis said are limited, until the instant they may pass.

use std::collections::HashMap;

use keel_core::Instant;

/// A bounded map from key to the local instant before which a single request is certainly
/// rejected by Redis.
///
/// The deadline is computed from the instant the request was *sent* plus the wait Redis
/// reported, so it is never later than the instant Redis would admit the key again (the
/// decision happened after the send). A cached rejection is therefore one Redis would give too:
/// the cache never rejects what Redis would admit; it only saves the round trip.
///
/// Memory: at most `max_keys` entries of at most [`MAX_KEY_BYTES`] each (a longer key is not
/// cached: its requests go to Redis). A full cache first drops expired entries; if every entry
/// is still live, the new key is not cached (its next request goes to Redis: correct, only
/// slower).
/// The longest key the cache holds, so `max_keys` bounds its bytes too.
pub(crate) const MAX_KEY_BYTES: usize = 512;

#[derive(Debug)]
pub(crate) struct DenyCache {
    map: HashMap<String, Instant>,
    max_keys: usize,
}

impl DenyCache {
    pub(crate) fn new(max_keys: usize) -> DenyCache {
        DenyCache {
            map: HashMap::new(),
            max_keys,
        }
    }

    /// The cached deadline for `key` if it is still in the future at `now`.
    pub(crate) fn get(&mut self, key: &str, now: Instant) -> Option<Instant> {
        let until = *self.map.get(key)?;
        if until > now {
            Some(until)
        } else {
            self.map.remove(key);
            None
        }
    }

    /// Remembers that `key` is rejected until `until`.
    pub(crate) fn insert(&mut self, key: &str, until: Instant, now: Instant) {
        if self.max_keys == 0 || until <= now || key.len() > MAX_KEY_BYTES {
            return;
        }
        if let Some(slot) = self.map.get_mut(key) {
            *slot = until;
            return;
        }
        if self.map.len() >= self.max_keys {
            self.map.retain(|_, u| *u > now);
            if self.map.len() >= self.max_keys {
                return;
            }
        }
        self.map.insert(key.to_owned(), until);
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn clear(&mut self) {
        self.map.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgets_a_key_at_its_deadline() {
        let mut c = DenyCache::new(4);
        c.insert("a", Instant::from_secs(10), Instant::from_secs(1));
        assert_eq!(
            c.get("a", Instant::from_secs(9)),
            Some(Instant::from_secs(10))
        );
        assert_eq!(c.get("a", Instant::from_secs(10)), None);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn never_holds_more_than_max_keys() {
        let mut c = DenyCache::new(3);
        let now = Instant::from_secs(1);
        for i in 0..100 {
            c.insert(&i.to_string(), Instant::from_secs(50), now);
        }
        assert_eq!(c.len(), 3);
        // Once the entries expire they make room again.
        c.insert("late", Instant::from_secs(90), Instant::from_secs(60));
        assert_eq!(c.len(), 1);
        let mut c = DenyCache::new(3);
        c.insert(&"x".repeat(MAX_KEY_BYTES + 1), Instant::from_secs(50), now);
        assert_eq!(
            c.len(),
            0,
            "a huge key would make max_keys no bound on memory"
        );
        let mut off = DenyCache::new(0);
        off.insert("a", Instant::from_secs(50), now);
        assert_eq!(off.len(), 0);
    }
}
