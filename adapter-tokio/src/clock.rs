//! keel-tokio's clock: quanta's TSC counter in release builds, tokio's clock in debug builds
//! (where `cargo test` runs, so `tokio::time::pause()` drives keel there) and under the feature
//! `paused-time`; and in release, a switch to tokio's clock the first time a keel timer sees
//! tokio's clock depart from real time (a paused or advanced test clock).
//!
//! keel instants count nanoseconds from an origin one hour before the first read on std's clock
//! (a paused tokio clock starts at the real "now" of its runtime's creation, which may precede
//! the first read in another task or test; it must still read after the origin). The fast clock
//! is mapped onto the same origin at its first read, so both clocks read about the same instant.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use keel_core::time::Instant;

/// Whether this build reads quanta's counter (release builds without the feature `paused-time`).
pub(crate) const FAST: bool = cfg!(not(any(debug_assertions, feature = "paused-time")));

/// How far tokio's clock may be from std's before it counts as departed (paused or advanced).
/// Unpaused, tokio's clock *is* std's, read between two std reads; 1 ms is room for rounding,
/// never for a paused clock, which departs by the first sleep it advances over.
const DEPARTURE: Duration = Duration::from_millis(1);

/// The time left until a deadline is stretched by 1/this when a timer is armed on the fast
/// clock: its rate differs from std's (tokio's timers') by a few parts per million, and a
/// timer that fires before keel's clock reached the deadline costs a re-arm. (61 ppm, 61 ns a
/// millisecond; keel-smol's `async_io` timers use the same margin.)
const EARLY_MARGIN_DIVISOR: u32 = 16_384;

/// The fast clock, calibrated, and where it stood on keel's clock at its first read.
struct Fast {
    clock: quanta::Clock,
    /// Its raw count at the first read.
    raw: u64,
    /// keel's instant (nanoseconds) at that read.
    at: u64,
}

/// The origin keel's instants count from: one hour before the first read on std's clock.
fn origin() -> std::time::Instant {
    static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();
    *ORIGIN.get_or_init(|| {
        let std_now = std::time::Instant::now();
        std_now
            .checked_sub(Duration::from_secs(3600))
            .unwrap_or(std_now)
    })
}

/// The fast clock (read only when [`FAST`]), mapped onto keel's origin at its first read. A
/// static of its own, not an `Option` beside the origin, so that the hot path's only test
/// besides the initialisation is the switch's.
fn fast() -> &'static Fast {
    static CLOCK: OnceLock<Fast> = OnceLock::new();
    CLOCK.get_or_init(|| {
        let origin = origin();
        // Calibrates the counter against the OS clock, once per process (under a millisecond
        // idle, up to a few hundred on a loaded machine): done by `warm`, where a runtime
        // handle or a machine is built, not in the first `check()`.
        let clock = quanta::Clock::new();
        let std_now = std::time::Instant::now();
        let raw = clock.raw();
        let at = nanos(std_now.saturating_duration_since(origin));
        Fast { clock, raw, at }
    })
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Reads the clock once so that the fast clock's calibration happens now (a runtime handle or
/// a machine is being built), not inside the first hot-path read.
pub(crate) fn warm() {
    let _ = origin();
    if FAST {
        let _ = fast();
    }
}

/// Which clock keel reads, and the offset that keeps keel's clock continuous at the switch.
///
/// One word: 0 while keel reads the fast clock; `1 + offset` once it reads tokio's, where
/// `offset` (nanoseconds) is added to tokio's reading so keel's clock carries on from where the
/// fast clock stood (a paused clock lags real time) instead of stepping back.
pub(crate) struct Switch {
    state: AtomicU64,
}

impl Switch {
    pub(crate) const fn new() -> Switch {
        Switch {
            state: AtomicU64::new(0),
        }
    }

    /// Now on keel's clock, from the fast clock's reading or tokio's, whichever this switch
    /// says (each read lazily: only the chosen one is taken).
    #[inline]
    pub(crate) fn read(&self, fast: impl FnOnce() -> u64, tokio: impl FnOnce() -> u64) -> u64 {
        match self.state.load(Ordering::Relaxed) {
            0 => fast(),
            on => tokio().saturating_add(on - 1),
        }
    }

    /// The offset added to tokio's reading since the switch (0 before it).
    pub(crate) fn offset(&self) -> u64 {
        self.state.load(Ordering::Relaxed).saturating_sub(1)
    }

    /// Whether keel reads tokio's clock since a switch.
    pub(crate) fn switched(&self) -> bool {
        self.state.load(Ordering::Relaxed) != 0
    }

    /// A timer saw tokio's clock read `tokio` between std's reads `before` and `after`: if it
    /// departed from them by more than [`DEPARTURE`], keel reads tokio's clock from now on,
    /// offset so that it reads no earlier than the fast clock's `fast_now` (keel's clock, on
    /// the fast clock, at the switch; `tokio_now` is tokio's on keel's scale). Returns whether
    /// this call switched.
    pub(crate) fn observe(
        &self,
        before: std::time::Instant,
        tokio: std::time::Instant,
        after: std::time::Instant,
        fast_now: u64,
        tokio_now: u64,
    ) -> bool {
        if self.switched() || !departed(before, tokio, after) {
            return false;
        }
        let on = fast_now.saturating_sub(tokio_now).saturating_add(1);
        self.state
            .compare_exchange(0, on, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

/// Whether tokio's clock, read as `tokio` between std's `before` and `after`, is not real time.
fn departed(
    before: std::time::Instant,
    tokio: std::time::Instant,
    after: std::time::Instant,
) -> bool {
    tokio + DEPARTURE < before || tokio > after + DEPARTURE
}

static SWITCH: Switch = Switch::new();

/// tokio's now on keel's scale (nanoseconds since the origin), without the switch's offset.
///
/// Out of line: release builds read the fast clock, and this path's std clock read and
/// duration arithmetic, inlined, made [`now`] too big for a `check()` around it to inline.
#[cold]
#[inline(never)]
fn tokio_nanos() -> u64 {
    nanos(
        tokio::time::Instant::now()
            .into_std()
            .saturating_duration_since(origin()),
    )
}

fn fast_nanos(fast: &Fast) -> u64 {
    // A count below the first read's (another core's counter a little behind) reads as the
    // first read; keel's machines clamp a `now` older than the newest they have seen. The sum
    // cannot wrap (`at` is an hour, the delta would need 584 years): a plain add, one
    // instruction on the path from the counter to the decision.
    fast.at
        .wrapping_add(fast.clock.delta_as_nanos(fast.raw, fast.clock.raw()))
}

/// Now on keel's clock.
#[inline]
pub(crate) fn now() -> Instant {
    let nanos = if FAST {
        SWITCH.read(|| fast_nanos(fast()), tokio_nanos)
    } else {
        tokio_nanos()
    };
    Instant::from_nanos(nanos)
}

/// Whether keel reads tokio's clock (a debug build, the feature `paused-time`, or the switch).
fn reads_tokio() -> bool {
    !FAST || SWITCH.switched()
}

/// A keel timer is armed or has fired: if keel reads the fast clock and tokio's clock has
/// departed from real time, keel reads tokio's from now on. A no-op on tokio's clock.
pub(crate) fn check_departure() {
    if reads_tokio() {
        return;
    }
    let fast = fast();
    let before = std::time::Instant::now();
    let tokio = tokio::time::Instant::now().into_std();
    let after = std::time::Instant::now();
    let fast_now = fast_nanos(fast);
    let tokio_now = nanos(tokio.saturating_duration_since(origin()));
    if SWITCH.observe(before, tokio, after, fast_now, tokio_now) {
        tracing::debug!(
            target: "keel::clock",
            "tokio's clock is paused or advanced: keel-tokio reads tokio's clock from now on"
        );
    }
}

/// The tokio instant at which keel's clock will read `deadline`.
///
/// On tokio's clock this is exact (the origin plus the deadline, less the switch's offset). On
/// the fast clock it is tokio's now plus the time left on keel's clock, stretched by 61 ppm:
/// the two clocks' few-ppm rate difference then makes a timer a little late, never early by a
/// fraction of the process's age.
pub(crate) fn to_tokio(deadline: Instant) -> tokio::time::Instant {
    // Past ~30 years is "never" for a timer; tokio's own far future is the same order.
    let far = Duration::from_secs(86_400 * 365 * 30);
    if reads_tokio() {
        let offset = SWITCH.offset();
        let since = deadline
            .as_duration()
            .saturating_sub(Duration::from_nanos(offset))
            .min(far);
        let origin = tokio::time::Instant::from_std(origin());
        return origin
            .checked_add(since)
            .unwrap_or(origin + Duration::from_secs(86_400));
    }
    let left = deadline.saturating_duration_since(now());
    let left = left.saturating_add(left / EARLY_MARGIN_DIVISOR).min(far);
    let tokio_now = tokio::time::Instant::now();
    tokio_now
        .checked_add(left)
        .unwrap_or(tokio_now + Duration::from_secs(86_400))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: std::time::Instant, ms: u64) -> std::time::Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn a_clock_between_two_std_reads_has_not_departed() {
        let t = std::time::Instant::now();
        assert!(!departed(at(t, 0), at(t, 0), at(t, 0)));
        assert!(!departed(at(t, 10), at(t, 12), at(t, 40))); // preempted between the reads
        assert!(!departed(at(t, 10), at(t, 10) - DEPARTURE, at(t, 10)));
        assert!(!departed(at(t, 10), at(t, 10) + DEPARTURE, at(t, 10)));
    }

    #[test]
    fn a_paused_or_advanced_clock_has_departed() {
        let t = std::time::Instant::now();
        // Paused: frozen while real time moved on.
        assert!(departed(at(t, 50), at(t, 48), at(t, 50)));
        // Advanced past real time (auto-advance to a sleep's deadline, or `advance`).
        assert!(departed(at(t, 50), at(t, 52), at(t, 50)));
    }

    #[test]
    fn the_switch_reads_the_fast_clock_until_tokio_departs_then_tokios_without_stepping_back() {
        let switch = Switch::new();
        let t = std::time::Instant::now();
        let tokio_read = |ns: u64| move || ns;
        assert_eq!(switch.read(|| 5_000_000, tokio_read(7)), 5_000_000);
        // tokio's clock is real time: no switch.
        assert!(!switch.observe(at(t, 5), at(t, 5), at(t, 5), 5_000_000, 5_000_000));
        assert!(!switch.switched());
        assert_eq!(switch.read(|| 6_000_000, tokio_read(7)), 6_000_000);
        // Paused at 2 ms while real time reached 8 ms: switch, offset by the 6 ms the paused
        // clock lags, so keel's clock carries on from 8 ms rather than stepping back to 2 ms.
        assert!(switch.observe(at(t, 8), at(t, 2), at(t, 8), 8_000_000, 2_000_000));
        assert!(switch.switched());
        assert_eq!(switch.offset(), 6_000_000);
        assert_eq!(
            switch.read(unreachable_fast, tokio_read(2_000_000)),
            8_000_000
        );
        // tokio's clock advanced by 3 ms: keel's advances by 3 ms.
        assert_eq!(
            switch.read(unreachable_fast, tokio_read(5_000_000)),
            11_000_000
        );
        // A later departure does not switch again (the offset stays).
        assert!(!switch.observe(at(t, 20), at(t, 1), at(t, 20), 99, 0));
        assert_eq!(
            switch.read(unreachable_fast, tokio_read(5_000_000)),
            11_000_000
        );
    }

    #[test]
    fn a_clock_advanced_ahead_of_real_time_switches_with_no_offset() {
        let switch = Switch::new();
        let t = std::time::Instant::now();
        assert!(switch.observe(at(t, 8), at(t, 70), at(t, 8), 8_000_000, 70_000_000));
        assert_eq!(switch.read(unreachable_fast, || 70_000_000), 70_000_000);
    }

    fn unreachable_fast() -> u64 {
        // After the switch the fast clock is not read: a reading far in the future would show.
        u64::MAX
    }

    #[test]
    fn keel_reads_tokios_clock_in_debug_builds_and_under_paused_time() {
        // The build this test runs in: `cargo test` is a debug build, so `tokio::time::pause()`
        // drives keel in users' tests.
        assert_eq!(FAST, !cfg!(any(debug_assertions, feature = "paused-time")));
        if !FAST {
            assert!(reads_tokio());
        }
    }
}
