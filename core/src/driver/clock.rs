//! The adapters' wall-free monotonic clock: a fast read of "now" as a keel [`Instant`], and the
//! conversion of a keel deadline back to a `std::time::Instant` for the runtime's timers.
//!
//! Every adapter's [`Runtime::now`](super::Runtime::now) reads this clock (keel-tokio reads
//! tokio's clock instead under its `test-util` feature, so `tokio::time::pause()` moves keel).
//! The read is `std::time::Instant::now()`. (A quanta TSC read was tried as the default and
//! taken out again: with it, the async-std conformance suite hung on its timer tests in one CI
//! run, and the cause is not found yet; see BENCHMARKS.md's issue 16 summary.)
//!
//! The origin is one hour before the first read (so a test clock that started earlier, such as
//! tokio's paused clock created with its runtime, still reads after it). Both clocks are
//! sampled at that moment, so [`to_std`] maps a keel deadline onto the std clock the runtimes'
//! timers use. The two clocks may drift apart by the TSC calibration's error (parts per
//! million): a timer that fires a little early is re-armed by the driver, which checks
//! `now >= deadline` itself before trusting a timer. An invariant TSC may differ between cores
//! by a few nanoseconds, so two reads on different threads (or one thread that migrated) can
//! step back by that much. That is an ordinary input for keel's machines: the breaker keeps the
//! latest instant it has seen, and a GCRA decides as at the earlier instant (a clock fault only
//! past `max_clock_jump`, 60 s by default).

use core::time::Duration;
use std::sync::OnceLock;

use crate::time::Instant;

/// How far before the first read the origin lies.
const HEADROOM: Duration = Duration::from_secs(3600);

struct Origin {
    std: std::time::Instant,
}

fn origin() -> &'static Origin {
    static ORIGIN: OnceLock<Origin> = OnceLock::new();
    ORIGIN.get_or_init(|| {
        let std = std::time::Instant::now();
        Origin {
            // A process that started less than an hour after boot may not reach an hour back on
            // the monotonic clock: then the origin is the first read itself.
            std: std.checked_sub(HEADROOM).unwrap_or(std),
        }
    })
}

/// Now, on the fast monotonic clock, as a keel [`Instant`] since the process's clock origin.
#[inline]
pub fn now() -> Instant {
    let origin = origin();
    let since = std::time::Instant::now().saturating_duration_since(origin.std);
    Instant::from_duration(since)
}

/// The `std::time::Instant` at which [`now`] reads `deadline` (give or take the clocks' drift),
/// for arming a runtime's timer. A deadline too far to represent (past about 30 years) maps to
/// 30 years from the origin: "never" for a timer.
pub fn to_std(deadline: Instant) -> std::time::Instant {
    let origin = origin_std();
    let far = Duration::from_secs(86_400 * 365 * 30);
    let offset = deadline.as_duration().min(far);
    // `far` fits every platform's Instant in practice; if it ever does not, a day is "later".
    origin
        .checked_add(offset)
        .or_else(|| origin.checked_add(Duration::from_secs(86_400)))
        .unwrap_or(origin)
}

/// The std instant keel's [`Instant::ZERO`] stands for: one hour before the first read of this
/// clock (or the first read itself, early after boot).
pub fn origin_std() -> std::time::Instant {
    origin().std
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_advance_with_the_std_clock() {
        let a = now();
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(20) {
            core::hint::spin_loop();
        }
        let b = now();
        // 20 ms passed on the std clock; the fast clock agrees to within its calibration
        // (generous bounds: a loaded machine may deschedule us for long).
        assert!(
            b >= a.saturating_add(Duration::from_millis(15)),
            "{a:?} -> {b:?}"
        );
        assert!(b.saturating_duration_since(a) < Duration::from_secs(60));
        // The origin lies about an hour back (less only just after boot).
        assert!(a.as_duration() <= HEADROOM + Duration::from_secs(60));
    }

    #[test]
    fn to_std_maps_now_onto_the_std_clock() {
        let keel = now();
        let std_now = std::time::Instant::now();
        let mapped = to_std(keel);
        let skew = if mapped > std_now {
            mapped - std_now
        } else {
            std_now - mapped
        };
        assert!(skew < Duration::from_millis(50), "skew {skew:?}");
        assert_eq!(to_std(Instant::ZERO), origin_std());
        // Far deadlines saturate instead of panicking.
        let far = to_std(Instant::from_duration(Duration::MAX));
        assert!(far > std_now + Duration::from_secs(86_400 * 365));
    }
}
