//! The waiter queue the shared forms build on: a FIFO in which any entry can be removed in O(1).
//!
//! A slab (`Vec` of slots, freed slots reused through a free list) threaded by an intrusive
//! doubly-linked list. Each entry is named by a [`Key`]: its slot index and the slot's
//! generation, which changes whenever the slot is freed, so a stale key (an entry already
//! removed, its slot reused) finds nothing instead of someone else's entry. Every operation is
//! O(1) (amortised for `push_back`, which may grow the slab); nothing scans.
//!
//! An entry can also be *detached*: unlinked from the FIFO (it no longer counts in `len`, is no
//! longer the front) but kept, with its value, until its owner removes it. The bulkhead detaches
//! a waiter it granted a slot to; the rate queue one it failed.

use alloc::vec::Vec;

/// No slot (the end of a list).
const NIL: u32 = u32::MAX;

/// An entry's name: slot index and generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    index: u32,
    gen: u32,
}

#[derive(Debug)]
enum State<T> {
    /// Free; the next free slot.
    Free(u32),
    /// In the FIFO.
    Linked(T),
    /// Out of the FIFO, kept for its owner.
    Detached(T),
}

#[derive(Debug)]
struct Slot<T> {
    gen: u32,
    prev: u32,
    next: u32,
    state: State<T>,
}

/// A FIFO with O(1) removal anywhere; see the [module docs](self).
#[derive(Debug)]
pub(crate) struct WaitList<T> {
    slots: Vec<Slot<T>>,
    free: u32,
    head: u32,
    tail: u32,
    len: usize,
}

impl<T> WaitList<T> {
    /// An empty list with room for `capacity` entries before it allocates.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        WaitList {
            slots: Vec::with_capacity(capacity),
            free: NIL,
            head: NIL,
            tail: NIL,
            len: 0,
        }
    }

    /// Entries in the FIFO (detached ones not counted).
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn slot(&self, index: u32) -> Option<&Slot<T>> {
        self.slots.get(usize::try_from(index).ok()?)
    }

    fn slot_mut(&mut self, index: u32) -> Option<&mut Slot<T>> {
        self.slots.get_mut(usize::try_from(index).ok()?)
    }

    fn live(&self, key: Key) -> Option<&Slot<T>> {
        self.slot(key.index).filter(|s| s.gen == key.gen)
    }

    fn live_mut(&mut self, key: Key) -> Option<&mut Slot<T>> {
        self.slot_mut(key.index).filter(|s| s.gen == key.gen)
    }

    /// Appends `value`; hands it back only if the slab cannot name another slot (`u32::MAX - 1`
    /// entries at once) or cannot allocate.
    pub(crate) fn push_back(&mut self, value: T) -> Result<Key, T> {
        let tail = self.tail;
        let index = if self.free != NIL {
            let index = self.free;
            let Some(slot) = self.slot_mut(index) else {
                return Err(value);
            };
            let State::Free(next_free) = slot.state else {
                // The free list only ever holds free slots.
                debug_assert!(false, "a used slot on the free list");
                return Err(value);
            };
            slot.state = State::Linked(value);
            slot.prev = tail;
            slot.next = NIL;
            self.free = next_free;
            index
        } else {
            let Ok(index) = u32::try_from(self.slots.len()) else {
                return Err(value);
            };
            if index == NIL || self.slots.try_reserve(1).is_err() {
                return Err(value);
            }
            self.slots.push(Slot {
                gen: 0,
                prev: tail,
                next: NIL,
                state: State::Linked(value),
            });
            index
        };
        match self.slot_mut(tail) {
            Some(t) => t.next = index,
            None => self.head = index,
        }
        self.tail = index;
        self.len += 1;
        let gen = self.slot(index).map_or(0, |s| s.gen);
        Ok(Key { index, gen })
    }

    /// The oldest entry in the FIFO.
    pub(crate) fn front(&self) -> Option<(Key, &T)> {
        let slot = self.slot(self.head)?;
        match &slot.state {
            State::Linked(v) => Some((
                Key {
                    index: self.head,
                    gen: slot.gen,
                },
                v,
            )),
            _ => None,
        }
    }

    /// The newest entry in the FIFO.
    pub(crate) fn back(&self) -> Option<(Key, &T)> {
        let slot = self.slot(self.tail)?;
        match &slot.state {
            State::Linked(v) => Some((
                Key {
                    index: self.tail,
                    gen: slot.gen,
                },
                v,
            )),
            _ => None,
        }
    }

    /// The entry after `key` in the FIFO (`None` at the end, or if `key` is not linked).
    pub(crate) fn next(&self, key: Key) -> Option<Key> {
        let slot = self.live(key)?;
        if !matches!(slot.state, State::Linked(_)) {
            return None;
        }
        let next = self.slot(slot.next)?;
        Some(Key {
            index: slot.next,
            gen: next.gen,
        })
    }

    /// The entry's value and whether it is still in the FIFO.
    pub(crate) fn get(&self, key: Key) -> Option<(&T, bool)> {
        match &self.live(key)?.state {
            State::Linked(v) => Some((v, true)),
            State::Detached(v) => Some((v, false)),
            State::Free(_) => None,
        }
    }

    /// The entry's value and whether it is still in the FIFO.
    pub(crate) fn get_mut(&mut self, key: Key) -> Option<(&mut T, bool)> {
        match &mut self.live_mut(key)?.state {
            State::Linked(v) => Some((v, true)),
            State::Detached(v) => Some((v, false)),
            State::Free(_) => None,
        }
    }

    /// Takes the entry out of the FIFO and keeps it (for its owner to remove later).
    pub(crate) fn detach(&mut self, key: Key) -> Option<&mut T> {
        let slot = self.live(key)?;
        if !matches!(slot.state, State::Linked(_)) {
            return None;
        }
        self.unlink(key.index);
        let slot = self.live_mut(key)?;
        let State::Linked(v) = core::mem::replace(&mut slot.state, State::Free(NIL)) else {
            return None;
        };
        slot.state = State::Detached(v);
        match &mut slot.state {
            State::Detached(v) => Some(v),
            _ => None,
        }
    }

    /// Removes the entry, linked or detached, and frees its slot (its key goes stale).
    pub(crate) fn remove(&mut self, key: Key) -> Option<T> {
        let linked = match self.live(key)?.state {
            State::Linked(_) => true,
            State::Detached(_) => false,
            State::Free(_) => return None,
        };
        if linked {
            self.unlink(key.index);
        }
        let free = self.free;
        let slot = self.live_mut(key)?;
        slot.gen = slot.gen.wrapping_add(1);
        slot.prev = NIL;
        slot.next = NIL;
        let old = core::mem::replace(&mut slot.state, State::Free(free));
        self.free = key.index;
        match old {
            State::Linked(v) | State::Detached(v) => Some(v),
            State::Free(_) => None,
        }
    }

    /// Removes the oldest entry of the FIFO.
    #[cfg(test)]
    pub(crate) fn pop_front(&mut self) -> Option<(Key, T)> {
        let (key, _) = self.front()?;
        self.remove(key).map(|v| (key, v))
    }

    /// Unlinks a linked slot from the FIFO (its state is left to the caller).
    fn unlink(&mut self, index: u32) {
        let Some(slot) = self.slot(index) else {
            return;
        };
        let (prev, next) = (slot.prev, slot.next);
        match self.slot_mut(prev) {
            Some(p) => p.next = next,
            None => self.head = next,
        }
        match self.slot_mut(next) {
            Some(n) => n.prev = prev,
            None => self.tail = prev,
        }
        if let Some(slot) = self.slot_mut(index) {
            slot.prev = NIL;
            slot.next = NIL;
        }
        self.len = self.len.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn drain(list: &mut WaitList<u32>) -> Vec<u32> {
        let mut out = vec![];
        while let Some((_, v)) = list.pop_front() {
            out.push(v);
        }
        out
    }

    #[test]
    fn removes_from_the_middle_and_keeps_fifo_order() {
        let mut list = WaitList::with_capacity(0);
        let keys: Vec<Key> = (0..5).map(|v| list.push_back(v).expect("room")).collect();
        assert_eq!(list.remove(keys[2]), Some(2));
        assert_eq!(list.remove(keys[0]), Some(0));
        assert_eq!(list.remove(keys[4]), Some(4));
        assert_eq!(list.len(), 2);
        assert_eq!(list.next(keys[1]), Some(keys[3]));
        assert_eq!(drain(&mut list), vec![1, 3]);
    }

    #[test]
    fn a_stale_key_finds_nothing_after_its_slot_is_reused() {
        let mut list = WaitList::with_capacity(0);
        let a = list.push_back(1).expect("room");
        assert_eq!(list.remove(a), Some(1));
        let b = list.push_back(2).expect("room");
        assert_ne!(a, b, "same slot, new generation");
        assert_eq!(list.remove(a), None);
        assert!(list.get_mut(a).is_none());
        assert_eq!(list.remove(b), Some(2));
    }

    #[test]
    fn a_detached_entry_leaves_the_fifo_but_keeps_its_value() {
        let mut list = WaitList::with_capacity(0);
        let a = list.push_back(1).expect("room");
        let b = list.push_back(2).expect("room");
        assert_eq!(list.detach(a).copied(), Some(1));
        assert_eq!(list.len(), 1);
        assert_eq!(list.front().map(|(k, _)| k), Some(b));
        assert_eq!(
            list.get_mut(a).map(|(v, linked)| (*v, linked)),
            Some((1, false))
        );
        assert!(list.detach(a).is_none(), "already detached");
        assert_eq!(list.remove(a), Some(1));
        assert_eq!(drain(&mut list), vec![2]);
    }

    /// The list against a `VecDeque` model over a scripted mix of pushes, pops and removals.
    #[test]
    fn matches_a_vecdeque_model() {
        let mut list = WaitList::with_capacity(0);
        let mut model: alloc::collections::VecDeque<(Key, u32)> = Default::default();
        let mut x: u32 = 12345;
        for step in 0..5000u32 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            match x % 4 {
                0 | 1 => {
                    let key = list.push_back(step).expect("room");
                    model.push_back((key, step));
                }
                2 => assert_eq!(
                    list.pop_front().map(|(_, v)| v),
                    model.pop_front().map(|e| e.1)
                ),
                _ if !model.is_empty() => {
                    let i = usize::try_from(x).unwrap_or(0) % model.len();
                    let (key, v) = model.remove(i).expect("in range");
                    assert_eq!(list.remove(key), Some(v));
                    assert_eq!(list.remove(key), None);
                }
                _ => {}
            }
            assert_eq!(list.len(), model.len());
            assert_eq!(list.front().map(|(_, v)| *v), model.front().map(|e| e.1));
        }
    }
}
