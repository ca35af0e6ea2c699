//! The report limiter against a reference model, over any sequence of instants (backwards and
//! saturating ones included): every occurrence is counted exactly once, at most one report
//! per interval, the first is always reported.

use core::time::Duration;

use keel_core::report::{Report, ReportLimiter};
use keel_core::Instant;
use proptest::prelude::*;

#[path = "support/props.rs"]
mod props;

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        3 => (0u64..=5_000_000_000).prop_map(Duration::from_nanos),
        1 => any::<u64>().prop_map(Duration::from_nanos),
        1 => Just(Duration::ZERO),
        1 => Just(Duration::MAX),
    ]
}

fn instant() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..=20_000_000_000,
        1 => any::<u64>(),
        1 => Just(u64::MAX),
        1 => Just(0u64),
    ]
}

proptest! {
    #![proptest_config(props::config(256, "proptest-regressions/report_props.txt"))]

    #[test]
    fn every_occurrence_is_counted_once_and_reports_are_spaced(
        interval in duration(),
        start in instant(),
        ops in proptest::collection::vec((instant(), any::<bool>()), 0..200),
    ) {
        let mut limiter = ReportLimiter::new(interval, Instant::from_nanos(start));
        let interval_ns = u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX);
        let mut newest = start;
        let mut last: Option<u64> = None;
        let (mut occurrences, mut emitted, mut carried, mut taken) = (0u64, 0u64, 0u64, 0u64);
        for (t, take) in ops {
            if take {
                taken += limiter.take_unreported();
                prop_assert_eq!(limiter.stats().unreported, 0);
                continue;
            }
            newest = newest.max(t);
            occurrences += 1;
            let due = last.is_none_or(|l| newest >= l.saturating_add(interval_ns));
            match limiter.on_occurrence(Instant::from_nanos(t)) {
                Report::Emit { suppressed } => {
                    prop_assert!(due, "reported before the interval passed");
                    last = Some(newest);
                    emitted += 1;
                    carried += suppressed;
                }
                Report::Suppress => prop_assert!(!due, "a due report was suppressed"),
            }
            let s = limiter.stats();
            prop_assert_eq!(s.occurrences, occurrences);
            prop_assert_eq!(s.reports, emitted);
            prop_assert_eq!(s.reports + s.suppressed, s.occurrences);
            prop_assert_eq!(carried + taken + s.unreported, s.suppressed);
        }
    }
}
