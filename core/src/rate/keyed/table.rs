//! The keyed limiter's bounded table: an open-addressing index (linear probing, backward-shift
//! deletion) over a slab of entries threaded by an LRU list (kept with CLOCK's second
//! chances), keyed by SipHash-1-3. The rules of the limit are in the parent module; this is
//! where keys live and are found, inserted, swept and evicted.

use core::hash::Hash;

use super::{Entry, Full, KeyedGcra, NIL, SECOND_CHANCES_PER_CHECK, SWEEP_PER_CHECK};

/// A new key found no slot in a full table.
pub(super) struct Overflowed;

pub(super) enum Found {
    At(u32),
    Vacant(usize),
    /// Only if the index invariants were broken (cannot happen): treated as "not found".
    Broken,
}

/// The budget a table draws on to grow beyond the keys it holds, besides its own capacity:
/// none for the `&mut` table (`()`: its capacity is `max_keys`), the table-wide key count for
/// a shard of [`crate::sync::keyed::SharedKeyedGcra`] (whose capacity has slack above its share
/// of `max_keys`). A table asks for it only when a new key would make it grow, and gives back
/// only what the keys it forgets free; a check of a key it holds never touches it.
pub(crate) trait Room {
    /// May a table holding `len` keys (fewer than its capacity) take one more? If so, the
    /// key is counted until [`release`](Self::release) gives it back.
    fn claim(&self, len: usize) -> bool;
    /// The table went from `from` keys down to `to` (`to <= from`) by forgetting keys.
    fn release(&self, from: usize, to: usize);
    /// Is there room beyond the keys a table may hold on its own (for a peek; claims
    /// nothing)? For a shard, whether the table-wide count is below its bound: a shard's keys
    /// of its own exist only under [`Full::EvictLeastRecentlyUsed`], whose peek admits a new
    /// key whatever the room.
    fn has_room(&self) -> bool;
}

/// The `&mut` table: no budget beyond its own capacity.
impl Room for () {
    #[inline]
    fn claim(&self, _: usize) -> bool {
        true
    }
    #[inline]
    fn release(&self, _: usize, _: usize) {}
    #[inline]
    fn has_room(&self) -> bool {
        true
    }
}

pub(super) fn index_slots(max_keys: usize) -> usize {
    max_keys.saturating_mul(2).next_power_of_two().max(2)
}

impl<K: Hash + Eq + Clone> KeyedGcra<K> {
    pub(super) fn hash(&self, key: &K) -> u64 {
        super::hash_key(self.k0, self.k1, key)
    }

    /// The key's place in the index, and how many index slots the lookup examined.
    pub(super) fn find(&self, key: &K, hash: u64) -> (Found, u64) {
        let home = (hash as usize) & self.mask;
        let mut i = home;
        // Slots examined: the distance from the home slot, plus one (no loop-carried counter).
        let probes = |i: usize| (i.wrapping_sub(home) & self.mask) as u64 + 1;
        for _ in 0..self.index.len() {
            match self.index.get(i) {
                Some(0) => return (Found::Vacant(i), probes(i)),
                Some(&s) => {
                    let idx = s - 1;
                    if let Some(e) = self.entries.get(idx as usize) {
                        if e.hash == hash as u32 && e.key.as_ref() == Some(key) {
                            return (Found::At(idx), probes(i));
                        }
                    }
                }
                None => {
                    debug_assert!(false, "keyed index slot {i} out of bounds");
                    return (Found::Broken, probes(i));
                }
            }
            i = (i + 1) & self.mask;
        }
        // The index has twice as many slots as keys: a full scan cannot happen.
        debug_assert!(false, "keyed index has no empty slot");
        (Found::Broken, self.index.len() as u64)
    }

    /// Does entry `idx` hold a key forgettable at `now` (idle, or a clock fault)? False for a
    /// free entry and for no entry (`NIL`): the sweep's hand, the LRU tail and a peek ask this.
    pub(super) fn idle_at(&self, idx: u32, now: u64) -> bool {
        self.entries
            .get(idx as usize)
            .is_some_and(|e| e.key.is_some() && self.forgettable(e.tat, now))
    }

    /// The LRU hand: moves tails marked used to the head, clearing their mark (their second
    /// chance), at most [`SECOND_CHANCES_PER_CHECK`] of them; the tail it leaves is the least
    /// recently used key. When every key is marked and there are no more than that, each gets
    /// its chance and the first of them is the tail again, unmarked.
    pub(super) fn second_chances(&mut self) {
        for _ in 0..SECOND_CHANCES_PER_CHECK {
            let tail = self.tail;
            match self.entries.get_mut(tail as usize) {
                Some(e) if e.used => e.used = false,
                _ => return,
            }
            self.unlink(tail);
            self.push_front(tail);
        }
    }

    /// The tail [`second_chances`](Self::second_chances) would leave, found without moving
    /// anything (for a peek): the first key from the tail not marked used, within as many
    /// steps; the old tail when every key is marked and there are no more than that.
    pub(super) fn lru_candidate(&self) -> u32 {
        let mut idx = self.tail;
        for _ in 0..SECOND_CHANCES_PER_CHECK {
            match self.entries.get(idx as usize) {
                Some(e) if e.used => idx = e.prev,
                _ => break,
            }
        }
        if idx == NIL {
            self.tail
        } else {
            idx
        }
    }

    /// Inserts a new key, or says it found no slot (the caller applies the policy; the
    /// eviction of [`Full::EvictLeastRecentlyUsed`] happens here). The table grows only with
    /// room in its capacity and in `room`; otherwise it forgets one of its own keys (idle ones
    /// first) and the new key takes that key's place, in the table and in `room`.
    pub(super) fn insert(
        &mut self,
        now: u64,
        key: &K,
        hash: u64,
        tat: u64,
        room: &impl Room,
    ) -> Result<(), Overflowed> {
        if !(self.len < self.max_keys && room.claim(self.len)) {
            let before = self.len;
            self.sweep(now);
            if self.len == before {
                self.second_chances();
                let tail = self.tail;
                if self.idle_at(tail, now) {
                    self.reclaim(tail, now);
                } else if self.full == Full::EvictLeastRecentlyUsed && tail != NIL {
                    self.remove(tail);
                    self.stats.evicted = self.stats.evicted.saturating_add(1);
                } else {
                    return Err(Overflowed);
                }
            }
            // The new key takes one of the freed places; the others go back.
            room.release(before, self.len + 1);
        }
        // Past this point the new key is counted in `room`. The failures below cannot happen
        // (the key was just found missing, a free entry or room in the array exists); if one
        // did, the count would keep a place for no key: the table-wide bound still holds.
        // A removal may have shifted the probe sequence: look for the slot again.
        let Found::Vacant(slot) = self.find(key, hash).0 else {
            return Err(Overflowed);
        };
        let entry = Entry {
            key: Some(key.clone()),
            hash: hash as u32,
            used: false,
            tat,
            prev: NIL,
            next: NIL,
        };
        let idx = if self.free != NIL {
            let idx = self.free;
            let Some(e) = self.entries.get_mut(idx as usize) else {
                return Err(Overflowed);
            };
            self.free = e.next;
            *e = entry;
            idx
        } else if self.entries.len() < self.max_keys {
            self.entries.push(entry);
            (self.entries.len() - 1) as u32
        } else {
            return Err(Overflowed);
        };
        if let Some(s) = self.index.get_mut(slot) {
            *s = idx + 1;
        }
        self.push_front(idx);
        self.len += 1;
        Ok(())
    }

    /// Forgets the idle keys among the next `SWEEP_PER_CHECK` entries under the clock hand
    /// (free entries are passed over). Run only by a new key that finds the table full.
    pub(super) fn sweep(&mut self, now: u64) {
        for _ in 0..SWEEP_PER_CHECK {
            if self.cursor >= self.entries.len() {
                self.cursor = 0;
            }
            let idx = self.cursor;
            self.cursor += 1;
            if self.idle_at(idx as u32, now) {
                self.reclaim(idx as u32, now);
            }
        }
    }

    /// Would the next [`sweep`](Self::sweep) forget a key at `now`? Examines the same entries
    /// and moves nothing (for a peek).
    pub(super) fn sweep_would_reclaim(&self, now: u64) -> bool {
        let mut idx = self.cursor;
        for _ in 0..SWEEP_PER_CHECK {
            if idx >= self.entries.len() {
                idx = 0;
            }
            if self.idle_at(idx as u32, now) {
                return true;
            }
            idx += 1;
        }
        false
    }

    /// Forgets a forgettable key (idle, or a clock fault: counted as one).
    pub(super) fn reclaim(&mut self, idx: u32, now: u64) {
        if self.entries.get(idx as usize).is_some_and(|e| e.tat > now) {
            self.stats.clock_faults = self.stats.clock_faults.saturating_add(1);
        }
        self.remove(idx);
        self.stats.reclaimed = self.stats.reclaimed.saturating_add(1);
    }

    pub(super) fn remove(&mut self, idx: u32) {
        let Some(hash) = self
            .entries
            .get(idx as usize)
            .filter(|e| e.key.is_some())
            .map(|e| e.hash)
        else {
            return;
        };
        // Find the index slot holding `idx`, then delete it by backward shift.
        let mut i = (hash as usize) & self.mask;
        let mut found = false;
        for _ in 0..self.index.len() {
            match self.index.get(i) {
                Some(&s) if s == idx + 1 => {
                    found = true;
                    break;
                }
                Some(0) | None => break,
                Some(_) => i = (i + 1) & self.mask,
            }
        }
        if found {
            self.delete_slot(i);
        }
        self.unlink(idx);
        if let Some(e) = self.entries.get_mut(idx as usize) {
            e.key = None;
            e.prev = NIL;
            e.next = self.free;
            self.free = idx;
        }
        self.len = self.len.saturating_sub(1);
    }

    pub(super) fn delete_slot(&mut self, mut hole: usize) {
        let mut j = hole;
        for _ in 0..self.index.len() {
            j = (j + 1) & self.mask;
            let s = match self.index.get(j) {
                Some(&s) if s != 0 => s,
                _ => break,
            };
            let home = self
                .entries
                .get((s - 1) as usize)
                .map_or(j, |e| (e.hash as usize) & self.mask);
            // The entry at `j` may fill the hole unless its home lies cyclically in (hole, j].
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                if let Some(h) = self.index.get_mut(hole) {
                    *h = s;
                }
                hole = j;
            }
        }
        if let Some(h) = self.index.get_mut(hole) {
            *h = 0;
        }
    }

    pub(super) fn unlink(&mut self, idx: u32) {
        let (prev, next) = match self.entries.get(idx as usize) {
            Some(e) => (e.prev, e.next),
            None => return,
        };
        match self.entries.get_mut(prev as usize) {
            Some(p) => p.next = next,
            None => self.head = next,
        }
        match self.entries.get_mut(next as usize) {
            Some(n) => n.prev = prev,
            None => self.tail = prev,
        }
    }

    pub(super) fn push_front(&mut self, idx: u32) {
        let old = self.head;
        if let Some(e) = self.entries.get_mut(idx as usize) {
            e.prev = NIL;
            e.next = old;
        }
        match self.entries.get_mut(old as usize) {
            Some(o) => o.prev = idx,
            None => self.tail = idx,
        }
        self.head = idx;
    }
}
