//! Sliding windows of outcomes, O(1) per outcome: totals are kept and an evicted outcome (or
//! bucket) is subtracted, never recounted.
//!
//! Storage is sized once, at `CircuitBreaker::new`: a `Vec` with `alloc`, an inline array of
//! fixed capacity without (the builder rejects windows larger than that capacity).

use crate::time::{duration_to_nanos, Instant};

use super::config::SlidingWindow;

/// Slots sized at construction: heap-backed with `alloc`.
#[cfg(feature = "alloc")]
#[derive(Clone, Debug)]
struct Slots<T, const N: usize>(alloc::vec::Vec<T>);

#[cfg(feature = "alloc")]
impl<T: Copy, const N: usize> Slots<T, N> {
    fn new(len: usize, fill: T) -> Self {
        Slots(alloc::vec![fill; len])
    }
    fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.0
    }
}

/// Slots sized at construction: an inline array of capacity `N` without `alloc`.
#[cfg(not(feature = "alloc"))]
type Slots<T, const N: usize> = InlineSlots<T, N>;

/// An inline array of capacity `N`, `len` of them in use: the storage without `alloc`.
///
/// Compiled in every test build too, so its unit tests (and a mutation run with the default
/// features) check it, not only a `no_std` build.
#[cfg(any(not(feature = "alloc"), test))]
#[derive(Clone, Debug)]
struct InlineSlots<T, const N: usize> {
    buf: [T; N],
    len: usize,
}

#[cfg(any(not(feature = "alloc"), test))]
impl<T: Copy, const N: usize> InlineSlots<T, N> {
    fn new(len: usize, fill: T) -> Self {
        InlineSlots {
            buf: [fill; N],
            len: len.min(N),
        }
    }
    fn as_mut_slice(&mut self) -> &mut [T] {
        let len = self.len;
        self.buf.get_mut(..len).unwrap_or(&mut [])
    }
}

/// Outcomes per word: two bits each (bit 0 failed, bit 1 slow).
const PER_WORD: u32 = 32;
const INLINE_WORDS: usize = (super::config::MAX_INLINE_COUNT_WINDOW / PER_WORD) as usize;

/// A ring of the last `size` outcomes.
#[derive(Clone, Debug)]
struct CountWindow {
    bits: Slots<u64, INLINE_WORDS>,
    size: u32,
    head: u32,
    len: u32,
    failures: u32,
    slow: u32,
}

impl CountWindow {
    fn new(size: u32) -> Self {
        let words = size.div_ceil(PER_WORD) as usize;
        CountWindow {
            bits: Slots::new(words, 0),
            size,
            head: 0,
            len: 0,
            failures: 0,
            slow: 0,
        }
    }

    #[inline]
    fn record(&mut self, failed: bool, slow: bool) {
        let code = u64::from(failed) | (u64::from(slow) << 1);
        let word = (self.head / PER_WORD) as usize;
        let shift = (self.head % PER_WORD) * 2;
        if let Some(w) = self.bits.as_mut_slice().get_mut(word) {
            // Slots not yet written hold 0b00, so subtracting the evicted code is always right.
            let old = (*w >> shift) & 0b11;
            self.failures = self.failures.saturating_sub((old & 1) as u32);
            self.slow = self.slow.saturating_sub((old >> 1) as u32);
            *w = (*w & !(0b11 << shift)) | (code << shift);
            self.failures = self.failures.saturating_add(u32::from(failed));
            self.slow = self.slow.saturating_add(u32::from(slow));
            if self.len < self.size {
                self.len += 1;
            }
        }
        self.head = if self.head.saturating_add(1) >= self.size {
            0
        } else {
            self.head + 1
        };
    }

    fn reset(&mut self) {
        for w in self.bits.as_mut_slice() {
            *w = 0;
        }
        self.head = 0;
        self.len = 0;
        self.failures = 0;
        self.slow = 0;
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    calls: u32,
    failures: u32,
    slow: u32,
}

/// A ring of `n` buckets; slot `epoch % n` holds the bucket of epoch `epoch`, and every slot
/// holds one of the last `n` epochs (older ones are cleared as time advances).
#[derive(Clone, Debug)]
struct TimeWindow {
    buckets: Slots<Bucket, { super::config::MAX_INLINE_TIME_BUCKETS as usize }>,
    n: u64,
    width_nanos: u64,
    newest_epoch: u64,
    calls: u64,
    failures: u64,
    slow: u64,
}

impl TimeWindow {
    fn new(n: u32, width_nanos: u64, now: Instant) -> Self {
        let width_nanos = width_nanos.max(1);
        TimeWindow {
            buckets: Slots::new(n as usize, Bucket::default()),
            n: u64::from(n.max(1)),
            width_nanos,
            newest_epoch: now.as_nanos() / width_nanos,
            calls: 0,
            failures: 0,
            slow: 0,
        }
    }

    fn slot(&mut self, epoch: u64) -> Option<&mut Bucket> {
        let i = (epoch % self.n) as usize;
        self.buckets.as_mut_slice().get_mut(i)
    }

    /// Clears the buckets of epochs that fell out of the window: at most `n` per call, and
    /// each epoch is cleared once, so O(1) amortised per outcome.
    fn advance(&mut self, now: Instant) {
        let epoch = now.as_nanos() / self.width_nanos;
        if epoch <= self.newest_epoch {
            return;
        }
        let first = self
            .newest_epoch
            .saturating_add(1)
            .max(epoch.saturating_sub(self.n - 1));
        let mut e = first;
        loop {
            if let Some(b) = self.slot(e) {
                let old = core::mem::take(b);
                self.calls = self.calls.saturating_sub(u64::from(old.calls));
                self.failures = self.failures.saturating_sub(u64::from(old.failures));
                self.slow = self.slow.saturating_sub(u64::from(old.slow));
            }
            if e >= epoch {
                break;
            }
            e += 1;
        }
        self.newest_epoch = epoch;
    }

    fn record(&mut self, now: Instant, failed: bool, slow: bool) {
        self.advance(now);
        let epoch = self.newest_epoch;
        let mut added = (false, false, false);
        if let Some(b) = self.slot(epoch) {
            // A bucket that is full (2^32 calls) drops further calls, and the totals follow it,
            // so eviction stays exact.
            if let Some(c) = b.calls.checked_add(1) {
                b.calls = c;
                added.0 = true;
                if failed {
                    b.failures += 1;
                    added.1 = true;
                }
                if slow {
                    b.slow += 1;
                    added.2 = true;
                }
            }
        }
        self.calls += u64::from(added.0);
        self.failures += u64::from(added.1);
        self.slow += u64::from(added.2);
    }

    fn reset(&mut self, now: Instant) {
        for b in self.buckets.as_mut_slice() {
            *b = Bucket::default();
        }
        self.newest_epoch = now.as_nanos() / self.width_nanos;
        self.calls = 0;
        self.failures = 0;
        self.slow = 0;
    }
}

/// The window the rate policies judge.
#[derive(Clone, Debug)]
pub(crate) struct Window(Kind);

// Without `alloc` the storage is inline, so the time window is the larger variant by design
// (boxing it is exactly what a no-alloc build cannot do).
#[cfg_attr(not(feature = "alloc"), allow(clippy::large_enum_variant))]
#[derive(Clone, Debug)]
enum Kind {
    Count(CountWindow),
    Time(TimeWindow),
}

/// What a window holds right now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

impl Window {
    pub(crate) fn new(config: SlidingWindow, now: Instant) -> Self {
        match config {
            SlidingWindow::Count { size } => Window(Kind::Count(CountWindow::new(size))),
            SlidingWindow::Time {
                buckets,
                bucket_width,
            } => Window(Kind::Time(TimeWindow::new(
                buckets,
                duration_to_nanos(bucket_width),
                now,
            ))),
        }
    }

    #[inline]
    pub(crate) fn record(&mut self, now: Instant, failed: bool, slow: bool) {
        match &mut self.0 {
            Kind::Count(w) => w.record(failed, slow),
            Kind::Time(w) => w.record(now, failed, slow),
        }
    }

    pub(crate) fn reset(&mut self, now: Instant) {
        match &mut self.0 {
            Kind::Count(w) => w.reset(),
            Kind::Time(w) => w.reset(now),
        }
    }

    /// A count window that is full and holds no failure and no slow call: every slot holds a
    /// success, so a success that is not slow leaves its contents and totals as they are (only
    /// the ring's position moves, which cannot matter while every slot is alike). Never for a
    /// time window, whose totals change as time evicts its buckets.
    #[cfg_attr(not(feature = "std"), allow(dead_code))]
    pub(crate) fn full_of_successes(&self) -> bool {
        match &self.0 {
            Kind::Count(w) => w.len == w.size && w.failures == 0 && w.slow == 0,
            Kind::Time(_) => false,
        }
    }

    #[inline]
    pub(crate) fn totals(&self) -> Totals {
        match &self.0 {
            Kind::Count(w) => Totals {
                calls: u64::from(w.len),
                failures: u64::from(w.failures),
                slow: u64::from(w.slow),
            },
            Kind::Time(w) => Totals {
                calls: w.calls,
                failures: w.failures,
                slow: w.slow,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;

    /// The totals a test expects: `calls`, `failures`, `slow`.
    fn totals(calls: u64, failures: u64, slow: u64) -> Totals {
        Totals {
            calls,
            failures,
            slow,
        }
    }

    #[test]
    fn count_window_evicts_the_oldest_outcome() {
        let mut w = Window::new(SlidingWindow::Count { size: 3 }, Instant::ZERO);
        w.record(Instant::ZERO, true, true);
        w.record(Instant::ZERO, false, false);
        w.record(Instant::ZERO, true, false);
        assert_eq!(w.totals(), totals(3, 2, 1));
        w.record(Instant::ZERO, false, false);
        assert_eq!(w.totals(), totals(3, 1, 0));
        for _ in 0..100 {
            w.record(Instant::ZERO, true, false);
        }
        assert_eq!(w.totals(), totals(3, 3, 0));
        w.reset(Instant::ZERO);
        assert_eq!(w.totals(), Totals::default());
    }

    #[test]
    fn count_window_spans_word_boundaries() {
        let mut w = Window::new(SlidingWindow::Count { size: 70 }, Instant::ZERO);
        for i in 0..700u32 {
            w.record(Instant::ZERO, i % 7 == 0, i % 5 == 0);
        }
        // The last 70 outcomes are i = 630..700: 10 multiples of 7 and 14 of 5.
        assert_eq!(w.totals(), totals(70, 10, 14));
    }

    #[test]
    fn time_window_clears_skipped_buckets_and_survives_huge_jumps() {
        let cfg = SlidingWindow::Time {
            buckets: 3,
            bucket_width: Duration::from_secs(1),
        };
        let mut w = Window::new(cfg, Instant::ZERO);
        w.record(Instant::from_millis(100), true, false);
        w.record(Instant::from_millis(1_100), false, true);
        w.record(Instant::from_millis(2_100), true, false);
        assert_eq!(w.totals(), totals(3, 2, 1));
        w.record(Instant::from_millis(3_000), false, false);
        assert_eq!(w.totals(), totals(3, 1, 1));
        w.record(Instant::MAX, false, false);
        assert_eq!(w.totals(), totals(1, 0, 0));
    }

    #[test]
    fn inline_slots_hold_len_slots_capped_at_capacity() {
        let mut s = InlineSlots::<u8, 4>::new(3, 7);
        assert_eq!(s.as_mut_slice(), &mut [7, 7, 7][..]);
        s.as_mut_slice()[1] = 9;
        assert_eq!(s.as_mut_slice(), &mut [7, 9, 7][..]);
        assert_eq!(InlineSlots::<u8, 4>::new(4, 1).as_mut_slice().len(), 4);
        assert_eq!(InlineSlots::<u8, 4>::new(5, 1).as_mut_slice().len(), 4);
        assert_eq!(InlineSlots::<u8, 4>::new(0, 1).as_mut_slice().len(), 0);
        assert_eq!(
            InlineSlots::<u8, 4>::new(usize::MAX, 1)
                .as_mut_slice()
                .len(),
            4
        );
    }

    #[test]
    fn the_inline_count_ring_holds_exactly_the_largest_inline_window() {
        // Two bits per outcome: 16 words of 32 outcomes hold MAX_INLINE_COUNT_WINDOW = 512.
        assert_eq!(INLINE_WORDS, 16);
        assert_eq!(
            INLINE_WORDS as u32 * PER_WORD,
            super::super::config::MAX_INLINE_COUNT_WINDOW
        );
    }

    #[test]
    fn a_time_window_reset_off_a_bucket_boundary_still_evicts_on_time() {
        let width = Duration::from_secs(1);
        let mut w = Window::new(
            SlidingWindow::Time {
                buckets: 3,
                bucket_width: width,
            },
            Instant::ZERO,
        );
        w.record(Instant::from_millis(500), true, true);
        // Reset 10.5 s in: the current bucket is epoch 10, whatever the offset into it.
        w.reset(Instant::from_millis(10_500));
        assert_eq!(w.totals(), Totals::default());
        w.record(Instant::from_millis(10_600), true, false);
        w.record(Instant::from_millis(12_900), false, true);
        assert_eq!(w.totals(), totals(2, 1, 1));
        // Epoch 13 evicts epoch 10 (three buckets: 11, 12, 13).
        w.record(Instant::from_millis(13_000), false, false);
        assert_eq!(w.totals(), totals(2, 0, 1));
        // Long after: only the newest call is left.
        w.record(Instant::from_secs(20), false, false);
        assert_eq!(w.totals(), totals(1, 0, 0));
    }
}
