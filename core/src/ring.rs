//! The crate's one event ring: a fixed-capacity FIFO that never allocates and, when full,
//! gives the oldest event back to the caller to drop (and count) or fold into the next.
//!
//! Every machine with `poll_event` queues its events here (breaker, bulkhead, accept loop,
//! shutdown), so "what happens when nobody polls" is written once.

/// A FIFO of at most `N` events.
#[derive(Clone, Debug)]
pub(crate) struct EventRing<E, const N: usize> {
    buf: [Option<E>; N],
    head: usize,
    len: usize,
}

impl<E: Copy, const N: usize> EventRing<E, N> {
    /// An empty ring.
    pub(crate) const fn new() -> Self {
        EventRing {
            buf: [None; N],
            head: 0,
            len: 0,
        }
    }

    /// `true` when no event is queued.
    #[allow(dead_code)]
    pub(crate) const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `true` when the next [`push`](Self::push) evicts the oldest event.
    pub(crate) const fn is_full(&self) -> bool {
        self.len >= N
    }

    /// Appends `ev`. When the ring is full the oldest event is evicted and returned (with
    /// `N == 0`, `ev` itself); `None` means nothing was lost.
    pub(crate) fn push(&mut self, ev: E) -> Option<E> {
        if N == 0 {
            return Some(ev);
        }
        let evicted = if self.is_full() { self.pop() } else { None };
        let tail = (self.head + self.len) % N;
        match self.buf.get_mut(tail) {
            Some(slot) => {
                *slot = Some(ev);
                self.len += 1;
                evicted
            }
            // `tail < N` by the modulo: not reached. The event is reported lost, not hidden.
            None => {
                debug_assert!(false, "event ring index {tail} out of bounds {N}");
                Some(ev)
            }
        }
    }

    /// The oldest event, removed.
    pub(crate) fn pop(&mut self) -> Option<E> {
        if self.len == 0 {
            return None;
        }
        let ev = self.buf.get_mut(self.head).and_then(Option::take);
        debug_assert!(ev.is_some(), "an event ring slot inside `len` was empty");
        self.head = (self.head + 1) % N;
        self.len -= 1;
        ev
    }

    /// The oldest event, in place.
    pub(crate) fn front_mut(&mut self) -> Option<&mut E> {
        if self.len == 0 {
            return None;
        }
        self.buf.get_mut(self.head).and_then(Option::as_mut)
    }
}

#[cfg(test)]
mod tests {
    use super::EventRing;

    #[test]
    fn fifo_and_the_oldest_is_evicted_when_full() {
        let mut r: EventRing<u8, 2> = EventRing::new();
        assert_eq!(r.push(1), None);
        assert_eq!(r.push(2), None);
        assert!(r.is_full());
        assert_eq!(r.push(3), Some(1));
        assert_eq!(r.front_mut().copied(), Some(2));
        assert_eq!((r.pop(), r.pop(), r.pop()), (Some(2), Some(3), None));
        assert_eq!(r.push(4), None, "wraps around");
        assert_eq!(r.pop(), Some(4));
    }

    #[test]
    fn a_zero_capacity_ring_loses_every_event() {
        let mut r: EventRing<u8, 0> = EventRing::new();
        assert_eq!(r.push(7), Some(7));
        assert_eq!(r.pop(), None);
        assert!(r.front_mut().is_none());
    }
}
