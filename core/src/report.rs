//! [`ReportLimiter`]: at most one log report per interval, with a count of what was suppressed.
//!
//! # What it protects against
//!
//! An outage makes every machine report at the rate of the traffic: one "giving up" line per
//! failed request, one line per accept error, one line per breaker transition of a flapping
//! breaker. At 1 000 requests per second a five-minute outage is 300 000 lines that say the same
//! thing, fill the disk, cost money to ship and hide the one line that mattered. This machine
//! decides which occurrences are reported: **the first, then at most one per `interval`**; the
//! others are counted, and the next report carries their number (`suppressed`), so nothing is
//! lost from the counts, only from the log.
//!
//! It is the one limiter behind every rate-limited report in keel: the accept loop's shortage
//! reports ([`crate::accept`]), the retry driver's give-ups and the breaker driver's
//! transitions (one per instance, shared by its clones through
//! [`SharedReportLimiter`](crate::sync::report::SharedReportLimiter)).
//!
//! # The contract
//!
//! - [`on_occurrence(now)`](ReportLimiter::on_occurrence) answers [`Report::Emit`] (carrying the
//!   occurrences suppressed since the previous report) if no report was made yet or `interval`
//!   has passed since the last one, else [`Report::Suppress`].
//! - Every occurrence is counted exactly once, as a report or as suppressed:
//!   `reports + suppressed == occurrences`; `unreported` is the suppressed occurrences no report
//!   has carried yet, so the `suppressed` fields of the reports made plus `unreported` equal
//!   `suppressed`. [`take_unreported`](ReportLimiter::take_unreported) hands them to another
//!   event (the accept loop's `Resumed`).
//! - A zero interval reports every occurrence. Time is an input: a `now` older than one already
//!   seen is clamped to the newest seen; arithmetic saturates (so at the very end of the clock,
//!   where `last + interval` saturates, every occurrence is reported); nothing panics or
//!   allocates.
//!
//! # Default
//!
//! [`DEFAULT_REPORT_INTERVAL`], 1 s: one line per second per instance keeps an outage visible
//! in real time (and in every log-based alert) at a cost that does not grow with the traffic.
//!
//! ```
//! use core::time::Duration;
//! use keel_core::report::{Report, ReportLimiter};
//! use keel_core::Instant;
//!
//! let mut reports = ReportLimiter::new(Duration::from_secs(1), Instant::ZERO);
//! let t = Instant::from_secs(10);
//! assert_eq!(reports.on_occurrence(t), Report::Emit { suppressed: 0 });
//! for ms in 1..=999 {
//!     assert_eq!(reports.on_occurrence(t + Duration::from_millis(ms)), Report::Suppress);
//! }
//! assert_eq!(reports.on_occurrence(t + Duration::from_secs(1)), Report::Emit { suppressed: 999 });
//! let stats = reports.stats();
//! assert_eq!((stats.occurrences, stats.reports, stats.suppressed), (1_001, 2, 999));
//! ```

use core::time::Duration;

use crate::time::{Instant, Monotonic};

/// Default minimum time between two reports: 1 s (the accept loop's, for every report).
pub const DEFAULT_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Whether to report an occurrence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[must_use]
pub enum Report {
    /// Report this occurrence. `suppressed` occurrences since the previous report were not
    /// reported: say so in the report (a `suppressed` field).
    Emit {
        /// Occurrences not reported since the previous report.
        suppressed: u64,
    },
    /// Do not report it: it is counted, and the next report carries it.
    Suppress,
}

/// Counters of a [`ReportLimiter`], a `Copy` snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ReportStats {
    /// Occurrences seen.
    pub occurrences: u64,
    /// Occurrences reported: `reports + suppressed == occurrences`.
    pub reports: u64,
    /// Occurrences not reported by their own report.
    pub suppressed: u64,
    /// Suppressed occurrences that no report has carried yet (the next one will).
    pub unreported: u64,
}

/// Decides which occurrences of something are reported: see the [module docs](self).
///
/// - input: [`on_occurrence`](Self::on_occurrence);
/// - commands: [`take_unreported`](Self::take_unreported), [`demote`](Self::demote);
/// - getters: [`interval`](Self::interval), [`stats`](Self::stats).
#[derive(Clone, Debug)]
pub struct ReportLimiter {
    interval: Duration,
    clock: Monotonic,
    last: Option<Instant>,
    stats: ReportStats,
}

impl ReportLimiter {
    /// A limiter that reports the first occurrence, then at most one per `interval` (zero
    /// reports every one).
    #[must_use]
    pub const fn new(interval: Duration, now: Instant) -> Self {
        ReportLimiter {
            interval,
            clock: Monotonic::new(now),
            last: None,
            stats: ReportStats {
                occurrences: 0,
                reports: 0,
                suppressed: 0,
                unreported: 0,
            },
        }
    }

    /// Something worth reporting happened at `now`: report it, or count it for the next
    /// report.
    pub fn on_occurrence(&mut self, now: Instant) -> Report {
        let now = self.clock.observe(now);
        let s = &mut self.stats;
        s.occurrences = s.occurrences.saturating_add(1);
        let due = self
            .last
            .is_none_or(|last| now >= last.saturating_add(self.interval));
        if due {
            self.last = Some(now);
            s.reports = s.reports.saturating_add(1);
            Report::Emit {
                suppressed: core::mem::take(&mut s.unreported),
            }
        } else {
            s.suppressed = s.suppressed.saturating_add(1);
            s.unreported = s.unreported.saturating_add(1);
            Report::Suppress
        }
    }

    /// Hands the suppressed occurrences no report has carried yet to the caller (who reports
    /// them in another event, e.g. "resumed after N more"): they are carried from now on.
    pub fn take_unreported(&mut self) -> u64 {
        core::mem::take(&mut self.stats.unreported)
    }

    /// A report this limiter allowed was not made after all (its event was dropped or folded
    /// into a later one that carries its count): it is counted as suppressed instead.
    pub fn demote(&mut self) {
        let s = &mut self.stats;
        if s.reports > 0 {
            s.reports -= 1;
            s.suppressed = s.suppressed.saturating_add(1);
        }
    }

    /// The minimum time between two reports.
    #[must_use]
    pub const fn interval(&self) -> Duration {
        self.interval
    }

    /// A snapshot of the counters.
    #[must_use]
    pub const fn stats(&self) -> ReportStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn reports_the_first_then_one_per_interval_and_counts_the_rest() {
        let t0 = Instant::from_secs(5);
        let mut r = ReportLimiter::new(100 * MS, t0);
        let mut emitted = 0;
        let mut carried = 0;
        for i in 0..1_000u32 {
            if let Report::Emit { suppressed } = r.on_occurrence(t0 + MS * i) {
                emitted += 1;
                carried += suppressed;
            }
        }
        assert_eq!(emitted, 10);
        let s = r.stats();
        assert_eq!(s.reports + s.suppressed, s.occurrences);
        assert_eq!(carried + s.unreported, s.suppressed);
        assert_eq!(s.unreported, 99);
    }

    #[test]
    fn zero_interval_reports_everything_and_time_going_back_is_clamped() {
        let mut r = ReportLimiter::new(Duration::ZERO, Instant::from_secs(9));
        for t in [9, 3, 0, 9, 10] {
            assert_eq!(
                r.on_occurrence(Instant::from_secs(t)),
                Report::Emit { suppressed: 0 }
            );
        }
        let mut r = ReportLimiter::new(Duration::MAX, Instant::from_secs(1));
        assert_eq!(
            r.on_occurrence(Instant::from_secs(1)),
            Report::Emit { suppressed: 0 }
        );
        assert_eq!(r.on_occurrence(Instant::ZERO), Report::Suppress);
        assert_eq!(
            r.on_occurrence(Instant::from_secs(1 << 30)),
            Report::Suppress
        );
        // The end of the clock is reached (`last + interval` saturates there).
        assert_eq!(
            r.on_occurrence(Instant::MAX),
            Report::Emit { suppressed: 2 }
        );
        assert_eq!(
            r.on_occurrence(Instant::MAX),
            Report::Emit { suppressed: 0 }
        );
        assert_eq!(
            r.on_occurrence(Instant::ZERO),
            Report::Emit { suppressed: 0 }
        );

        let mut r = ReportLimiter::new(Duration::from_secs(1), Instant::ZERO);
        assert_eq!(
            r.on_occurrence(Instant::ZERO),
            Report::Emit { suppressed: 0 }
        );
        assert_eq!(r.on_occurrence(Instant::ZERO), Report::Suppress);
        assert_eq!(r.on_occurrence(Instant::ZERO), Report::Suppress);
        assert_eq!(r.take_unreported(), 2);
        r.demote();
        let s = r.stats();
        assert_eq!((s.reports, s.suppressed, s.unreported), (0, 3, 0));
        r.demote();
        assert_eq!(r.stats().suppressed, 3);
    }

    #[test]
    fn interval_is_the_one_given() {
        let r = ReportLimiter::new(250 * MS, Instant::ZERO);
        assert_eq!(r.interval(), 250 * MS);
        assert_eq!(
            ReportLimiter::new(Duration::MAX, Instant::ZERO).interval(),
            Duration::MAX
        );
    }
}
