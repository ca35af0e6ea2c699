//! Priority classes and queue disciplines for the bulkhead: [`Criticality`], and
//! [`QueueDiscipline`] (FIFO, or Facebook's adaptive LIFO with a CoDel queue-delay target).
//!
//! See [`QueueDiscipline`] for adaptive LIFO + CoDel and its sources.

use core::fmt;
use core::time::Duration;

use crate::time::Instant;

/// How important a call is: which calls a bulkhead sheds first under pressure.
///
/// Ordered by importance (`Sheddable < Default < Critical`). The classes are Google's (*Site
/// Reliability Engineering*, chapter 21, "Handling Overload": `CRITICAL_PLUS`, `CRITICAL`,
/// `SHEDDABLE_PLUS`, `SHEDDABLE`, of which keel keeps three): under pressure the least
/// important class is shed first, and critical work keeps a reserved share of the slots
/// ([`BulkheadConfigBuilder::reserved_critical_percent`](super::BulkheadConfigBuilder::reserved_critical_percent)).
/// `#[non_exhaustive]`: a class may be added between the existing ones (Google's four, Uber
/// Cinnamon's six tiers), so match with a wildcard arm.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Criticality {
    /// Work whose loss nobody notices soon (prefetches, batch jobs, retries of retries): shed
    /// first, and admitted only below the sheddable watermark.
    Sheddable,
    /// Ordinary requests: what an admission without a class is.
    #[default]
    Default,
    /// Work whose loss a user sees (the request they are waiting for, health of the service
    /// itself): shed last, and the only class allowed into the reserved share.
    Critical,
}

impl Criticality {
    /// Every class, most important first (the order in which queued waiters are promoted).
    pub const BY_IMPORTANCE: [Criticality; 3] = [
        Criticality::Critical,
        Criticality::Default,
        Criticality::Sheddable,
    ];

    /// A short, stable name for logs and metrics labels.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Criticality::Critical => "critical",
            Criticality::Default => "default",
            Criticality::Sheddable => "sheddable",
        }
    }

    /// A dense index: 0 critical, 1 default, 2 sheddable.
    pub(crate) const fn index(self) -> usize {
        match self {
            Criticality::Critical => 0,
            Criticality::Default => 1,
            Criticality::Sheddable => 2,
        }
    }
}

impl fmt::Display for Criticality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Default CoDel target: 5 ms (RFC 8289 §4.3; wangle's `codel_target_delay`; "Fail at Scale"'s M).
pub const DEFAULT_CODEL_TARGET: Duration = Duration::from_millis(5);
/// Default CoDel interval: 100 ms (RFC 8289 §4.2; wangle's `codel_interval`; "Fail at Scale"'s N).
pub const DEFAULT_CODEL_INTERVAL: Duration = Duration::from_millis(100);

/// The order in which a bulkhead serves its queue.
///
/// # Adaptive LIFO + CoDel, on the explicit clock
///
/// Two sources, combined as Facebook's servers combine them (Ben Maurer, "Fail at Scale",
/// ACM Queue 13(8), 2015; the `Codel` class of facebook/wangle):
///
/// - **CoDel** (Kathleen Nichols and Van Jacobson, "Controlling Queue Delay", ACM Queue 10(5),
///   2012; RFC 8289): a queue is *standing* (bad) when its minimum sojourn time over an
///   `interval` stayed above a `target`. CoDel measures the sojourn of every dequeued entry:
///   the first time one is at or above `target` it arms `first_above_time = now + interval`;
///   any dequeue below `target`, or the queue running empty, disarms it; at `first_above_time`
///   the queue is standing. Defaults `target = 5 ms`, `interval = 100 ms` (RFC 8289 §4.2 and §4.3,
///   and wangle's `codel_target_delay` / `codel_interval`).
/// - **Adaptive LIFO** ("Fail at Scale"): serve FIFO while the queue is healthy; once it is
///   standing, serve the *newest* waiter first (it is the one most likely to still be wanted),
///   and limit the time any waiter may spend queued to `target` ("if the queue has not been
///   empty for the last N ms, the time spent in the queue is limited to M ms"; N = 100 ms,
///   M = 5 ms), so the old entries, which adaptive LIFO would otherwise starve, are shed at once.
///
/// What keel does, on the caller's clock (nothing here reads one):
///
/// - Every promotion from the queue is a CoDel dequeue. In FIFO mode its sojourn arms or
///   disarms `first_above_time` exactly as CoDel does. In LIFO mode the promoted waiter is the
///   newest, whose short sojourn says nothing about the queue, so it does not disarm it; only
///   the queue being empty when a slot frees does (CoDel's "queue empty at dequeue", Facebook's
///   "not empty for the last N ms"). A queue emptied by shedding or cancellation is not idle:
///   it stays standing until a slot frees with nobody waiting.
/// - The queue is *standing* at `now` when `first_above_time <= now`: from then on promotion is
///   LIFO and a queued [`Criticality::Default`] or [`Criticality::Sheddable`] waiter whose
///   sojourn reaches `target` is shed ([`RejectReason::QueueDelay`](super::RejectReason)), at
///   the next input or at the [`poll_timeout`](super::FifoSemaphore::poll_timeout) the bulkhead
///   reports for it. [`Criticality::Critical`] waiters are never shed by CoDel (only by their own
///   `max_wait`): critical work is the last to be shed, by design.
/// - Where keel departs from CoDel proper: CoDel drops at an increasing rate (`interval / √n`)
///   while the queue stays standing; Facebook found sloughing every entry past a fixed bound
///   works better for request queues, and keel follows Facebook (its bound is `target`, as in
///   "Fail at Scale"; wangle's is `2 × target`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum QueueDiscipline {
    /// Oldest waiter first, always; waiters are shed only at `max_wait` (the default).
    #[default]
    Fifo,
    /// FIFO while the queue is healthy; LIFO, shedding non-critical waiters that queued for
    /// `target`, once the queue has been standing for `interval` (CoDel's test).
    AdaptiveLifo {
        /// The acceptable standing queue delay (default [`DEFAULT_CODEL_TARGET`]).
        target: Duration,
        /// How long the queue delay must stay above `target` before the queue counts as
        /// standing (default [`DEFAULT_CODEL_INTERVAL`]).
        interval: Duration,
    },
}

impl QueueDiscipline {
    /// Adaptive LIFO with the defaults: `target = 5 ms`, `interval = 100 ms`.
    #[must_use]
    pub const fn adaptive_lifo() -> QueueDiscipline {
        QueueDiscipline::AdaptiveLifo {
            target: DEFAULT_CODEL_TARGET,
            interval: DEFAULT_CODEL_INTERVAL,
        }
    }
}

/// CoDel's state: when the queue became (or becomes) standing.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CoDel {
    /// `target` and `interval`, or `None` for FIFO.
    params: Option<(Duration, Duration)>,
    /// CoDel's `first_above_time`: the queue is standing from this instant on.
    first_above: Option<Instant>,
}

impl CoDel {
    pub(crate) fn new(discipline: QueueDiscipline) -> CoDel {
        let params = match discipline {
            QueueDiscipline::Fifo => None,
            QueueDiscipline::AdaptiveLifo { target, interval } => Some((target, interval)),
        };
        CoDel {
            params,
            first_above: None,
        }
    }

    /// The target, when adaptive LIFO is on.
    pub(crate) fn target(&self) -> Option<Duration> {
        self.params.map(|(t, _)| t)
    }

    /// Whether the queue is standing at `now` (LIFO order, CoDel shedding).
    pub(crate) fn standing(&self, now: Instant) -> bool {
        // A `first_above_time` that saturated at the end of the clock never comes (the crate's
        // "never" convention), even at `now == Instant::MAX`.
        self.first_above
            .and_then(crate::time::never_at_the_end)
            .is_some_and(|t| now >= t)
    }

    /// When the queue becomes standing, if armed and not yet.
    pub(crate) fn first_above(&self) -> Option<Instant> {
        self.first_above
    }

    /// A waiter that queued at `enqueued` was promoted at `now` (a CoDel dequeue), in FIFO
    /// order when `!standing`.
    pub(crate) fn on_dequeue(&mut self, now: Instant, enqueued: Instant) {
        let Some((target, interval)) = self.params else {
            return;
        };
        if self.standing(now) {
            // LIFO: the newest waiter's sojourn says nothing about the queue.
            return;
        }
        let sojourn = now.saturating_duration_since(enqueued);
        if sojourn < target {
            self.first_above = None;
        } else if self.first_above.is_none() {
            self.first_above = Some(now.saturating_add(interval));
        }
    }

    /// The queue ran empty: it is healthy again.
    pub(crate) fn on_empty(&mut self) {
        self.first_above = None;
    }
}
