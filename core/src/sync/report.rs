//! [`SharedReportLimiter`]: one [`ReportLimiter`] shared by the clones of a handle (feature
//! `std`).
//!
//! The retry and breaker drivers are cheap handles whose clones share one state; their log
//! reports are limited per instance, so the limiter is shared too: a clone is a handle to the
//! same limiter (`Arc<Mutex<ReportLimiter>>`). The lock is held for a comparison and a few
//! counts, and only when there is something to report (a give-up, a transition), never on a
//! call's success path. A mutex poisoned by a panic elsewhere is recovered.
//!
//! ```
//! use core::time::Duration;
//! use keel_core::report::Report;
//! use keel_core::sync::report::SharedReportLimiter;
//! use keel_core::Instant;
//!
//! let reports = SharedReportLimiter::new(Duration::from_secs(1), Instant::ZERO);
//! let clone = reports.clone();
//! let t = Instant::from_secs(3);
//! assert_eq!(reports.on_occurrence(t), Report::Emit { suppressed: 0 });
//! assert_eq!(clone.on_occurrence(t), Report::Suppress);
//! assert_eq!(reports.stats().suppressed, 1);
//! ```

use core::fmt;
use core::time::Duration;

use crate::report::{Report, ReportLimiter, ReportStats};
use crate::sync::shim::{Arc, Mutex, MutexGuard};
use crate::time::Instant;

/// A thread-safe handle to one [`ReportLimiter`]; clones share it.
#[derive(Clone)]
pub struct SharedReportLimiter {
    inner: Arc<Mutex<ReportLimiter>>,
}

impl fmt::Debug for SharedReportLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedReportLimiter")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl SharedReportLimiter {
    /// A shared limiter: the first occurrence is reported, then at most one per `interval`.
    #[must_use]
    pub fn new(interval: Duration, now: Instant) -> Self {
        SharedReportLimiter {
            inner: Arc::new(Mutex::new(ReportLimiter::new(interval, now))),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ReportLimiter> {
        // The limiter is consistent between methods: recover from a poisoned lock.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// See [`ReportLimiter::on_occurrence`].
    pub fn on_occurrence(&self, now: Instant) -> Report {
        self.lock().on_occurrence(now)
    }

    /// See [`ReportLimiter::take_unreported`].
    pub fn take_unreported(&self) -> u64 {
        self.lock().take_unreported()
    }

    /// The minimum time between two reports.
    #[must_use]
    pub fn interval(&self) -> Duration {
        self.lock().interval()
    }

    /// A snapshot of the counters.
    #[must_use]
    pub fn stats(&self) -> ReportStats {
        self.lock().stats()
    }
}

#[cfg(test)]
#[cfg(not(keel_loom))]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn clones_share_one_limiter_and_its_counts() {
        let interval = Duration::from_secs(2);
        let shared = SharedReportLimiter::new(interval, Instant::ZERO);
        let clone = shared.clone();
        let mut alone = ReportLimiter::new(interval, Instant::ZERO);
        assert_eq!(shared.interval(), interval);
        for (i, ms) in [0_u64, 100, 200, 2_500, 2_600].into_iter().enumerate() {
            let now = Instant::from_millis(ms);
            let handle = if i % 2 == 0 { &shared } else { &clone };
            assert_eq!(
                handle.on_occurrence(now),
                alone.on_occurrence(now),
                "at {ms} ms"
            );
        }
        assert_eq!(clone.stats(), alone.stats());
        assert_eq!(shared.stats().unreported, 1);
        // Taken once, by whichever handle asks first.
        assert_eq!(clone.take_unreported(), alone.take_unreported());
        assert_eq!(shared.take_unreported(), 0);
        let at = Instant::from_millis(2_700);
        assert_eq!(shared.on_occurrence(at), alone.on_occurrence(at));
        assert_eq!(shared.take_unreported(), 2 - 1);
        assert_eq!(
            format!("{shared:?}"),
            format!("SharedReportLimiter {{ stats: {:?}, .. }}", shared.stats())
        );
    }
}
