//! The bulkhead ([`keel_core::bulkhead::FifoSemaphore`]) with one class and a FIFO queue, as
//! its docs define it: a count of permits out and a list of waiters with their deadlines.
//!
//! - A call is admitted at once while fewer than `max_concurrent` permits are out and nobody
//!   waits; otherwise it waits at the back of the queue, its deadline `now + max_wait`
//!   (`None` when that reaches the end of the clock: it never comes), or, with the queue full,
//!   is shed: [`RejectReason::Full`] without a queue, [`RejectReason::QueueFull`] with one.
//!   `try_acquire` never waits: [`RejectReason::Full`].
//! - A release frees a permit and promotes the oldest waiter when a permit is free; a waiter
//!   is never promoted at or after its deadline.
//! - Every input first clamps `now` to the newest seen and sheds the waiters whose deadline
//!   has come (front first: one `max_wait` and a clamped clock keep deadlines in order).
//! - `on_cancel` removes a waiter still queued and says whether it was.
//! - Events: `Expired` for each waiter shed at its deadline (oldest first), then `Promoted`.
//!
//! Waiter ids are the machine's to mint: the model names its waiters [`ModelWaiter`]s (in the
//! order they queued) and the caller pairs them with the machine's ids.
//!
//! What the model deliberately leaves out ([`BulkheadModel::new`] returns `None` for such a
//! config): **classes** (a reserved critical share), **adaptive LIFO + CoDel**, and
//! `set_max_concurrent`; `core/tests/bulkhead_priority_props.rs` and the `bulkhead_classes` fuzz
//! target check those by invariants. It keeps no bound on the event queue: compare events only
//! while the machine dropped none.
//!
//! ```
//! use std::time::Duration;
//! use keel_core::bulkhead::{Admission, BulkheadConfig, FifoSemaphore};
//! use keel_core::time::Instant;
//! use keel_testkit::models::bulkhead::{BulkheadModel, ModelAdmission};
//!
//! let config = BulkheadConfig::builder()
//!     .max_concurrent(1)
//!     .max_queue(1)
//!     .max_wait(Duration::from_secs(1))
//!     .build()?;
//! let mut bulkhead = FifoSemaphore::<1>::new(config, Instant::ZERO)?;
//! let mut model = BulkheadModel::new(&config, Instant::ZERO).expect("one class, FIFO");
//! assert!(matches!(bulkhead.acquire(Instant::ZERO), Admission::Admitted(_)));
//! assert_eq!(model.acquire(Instant::ZERO), ModelAdmission::Admitted);
//! assert!(matches!(bulkhead.acquire(Instant::ZERO), Admission::Queued { .. }));
//! assert!(matches!(model.acquire(Instant::ZERO), ModelAdmission::Queued { .. }));
//! assert_eq!(model.check(&bulkhead.stats(), bulkhead.poll_timeout()), Ok(()));
//! # Ok::<(), keel_core::ConfigError>(())
//! ```

use std::collections::VecDeque;
use std::string::String;
use std::vec::Vec;

use keel_core::bulkhead::{BulkheadConfig, BulkheadStats, QueueDiscipline, RejectReason};
use keel_core::time::Instant;

/// A waiter of the model: the `n`th call queued (from 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModelWaiter(pub u64);

/// The model's answer to `acquire`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelAdmission {
    /// A permit at once.
    Admitted,
    /// Queued with this deadline (`None`: at the end of the clock, never).
    Queued {
        /// The waiter.
        waiter: ModelWaiter,
        /// Its deadline.
        deadline: Option<Instant>,
    },
    /// Shed.
    Rejected(RejectReason),
}

/// An event of the model (the machine's `BulkheadEvent` with the model's waiter names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelEvent {
    /// The waiter reached its deadline and was shed.
    Expired(ModelWaiter),
    /// The waiter was promoted to a permit.
    Promoted(ModelWaiter),
}

/// The reference model of a one-class FIFO bulkhead. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct BulkheadModel {
    max_concurrent: usize,
    bound: usize,
    max_wait: core::time::Duration,
    newest: Instant,
    in_flight: usize,
    queue: VecDeque<(ModelWaiter, Option<Instant>)>,
    next_waiter: u64,
    events: VecDeque<ModelEvent>,
    stats: BulkheadStats,
}

impl BulkheadModel {
    /// The model of `FifoSemaphore::new(*config, start)`; `None` for a config with a reserved
    /// critical share or adaptive LIFO (see the [module docs](self)).
    #[must_use]
    pub fn new(config: &BulkheadConfig, start: Instant) -> Option<Self> {
        if config.reserved_critical_percent() != 0
            || config.queue_discipline() != QueueDiscipline::Fifo
        {
            return None;
        }
        Some(BulkheadModel {
            max_concurrent: config.max_concurrent(),
            bound: config.max_queue(),
            max_wait: config.max_wait(),
            newest: start,
            in_flight: 0,
            queue: VecDeque::new(),
            next_waiter: 0,
            events: VecDeque::new(),
            stats: BulkheadStats::default(),
        })
    }

    /// The newest instant seen.
    #[must_use]
    pub fn newest(&self) -> Instant {
        self.newest
    }

    /// Permits out.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The waiters queued, oldest first, with their deadlines.
    #[must_use]
    pub fn queue(&self) -> Vec<(ModelWaiter, Option<Instant>)> {
        self.queue.iter().copied().collect()
    }

    /// Clamps `now` and sheds the waiters whose deadline has come (`handle_timeout(now)`).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.newest = self.newest.max(now);
        while let Some(&(waiter, deadline)) = self.queue.front() {
            if deadline.is_none_or(|d| d > self.newest) {
                break;
            }
            self.queue.pop_front();
            self.stats.shed_timeout += 1;
            self.stats.default.shed += 1;
            self.events.push_back(ModelEvent::Expired(waiter));
        }
    }

    fn admit(&mut self) {
        self.in_flight += 1;
        self.stats.admitted += 1;
        self.stats.default.admitted += 1;
        self.stats.peak = self.stats.peak.max(self.in_flight);
    }

    fn free(&self) -> bool {
        self.in_flight < self.max_concurrent && self.queue.is_empty()
    }

    /// `acquire(now)`.
    pub fn acquire(&mut self, now: Instant) -> ModelAdmission {
        self.handle_timeout(now);
        if self.free() {
            self.admit();
            return ModelAdmission::Admitted;
        }
        if self.queue.len() >= self.bound {
            let reason = if self.bound == 0 {
                self.stats.shed_full += 1;
                RejectReason::Full
            } else {
                self.stats.shed_queue_full += 1;
                RejectReason::QueueFull
            };
            self.stats.default.shed += 1;
            return ModelAdmission::Rejected(reason);
        }
        let waiter = ModelWaiter(self.next_waiter);
        self.next_waiter += 1;
        let deadline =
            Some(self.newest.saturating_add(self.max_wait)).filter(|d| *d != Instant::MAX);
        self.queue.push_back((waiter, deadline));
        self.stats.queued += 1;
        self.stats.default.queued += 1;
        self.stats.peak_queue = self.stats.peak_queue.max(self.queue.len());
        ModelAdmission::Queued { waiter, deadline }
    }

    /// `try_acquire(now)`: `Ok` for a permit, else the reason.
    ///
    /// # Errors
    ///
    /// [`RejectReason::Full`] when no permit is free or someone waits.
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), RejectReason> {
        self.handle_timeout(now);
        if self.free() {
            self.admit();
            Ok(())
        } else {
            self.stats.shed_full += 1;
            self.stats.default.shed += 1;
            Err(RejectReason::Full)
        }
    }

    /// `on_release(now, permit)`: the waiter promoted, if any. A release with no permit out
    /// (a caller's mistake the harness should not make) frees nothing.
    pub fn on_release(&mut self, now: Instant) -> Option<ModelWaiter> {
        self.handle_timeout(now);
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.in_flight >= self.max_concurrent {
            return None;
        }
        let (waiter, _) = self.queue.pop_front()?;
        self.admit();
        self.stats.promoted += 1;
        self.events.push_back(ModelEvent::Promoted(waiter));
        Some(waiter)
    }

    /// `on_cancel(now, waiter)`: whether the waiter was still queued.
    pub fn on_cancel(&mut self, now: Instant, waiter: ModelWaiter) -> bool {
        self.handle_timeout(now);
        let Some(i) = self.queue.iter().position(|(w, _)| *w == waiter) else {
            return false;
        };
        self.queue.remove(i);
        self.stats.cancelled += 1;
        true
    }

    /// What `poll_timeout()` must return: the oldest waiter's deadline.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.queue.front().and_then(|(_, d)| *d)
    }

    /// The next event, oldest first (unbounded: see the [module docs](self)).
    pub fn poll_event(&mut self) -> Option<ModelEvent> {
        self.events.pop_front()
    }

    /// The counters `stats()` must return, `events_dropped` aside (zero here).
    #[must_use]
    pub fn stats(&self) -> BulkheadStats {
        let mut s = self.stats;
        s.in_flight = self.in_flight;
        s.queue_len = self.queue.len();
        s
    }

    /// Compares the machine's `stats()` (all but `events_dropped`) and `poll_timeout()` with
    /// the model's.
    ///
    /// # Errors
    ///
    /// A message showing both when they differ.
    pub fn check(
        &self,
        stats: &BulkheadStats,
        poll_timeout: Option<Instant>,
    ) -> Result<(), String> {
        let mut machine = *stats;
        machine.events_dropped = 0;
        let model = self.stats();
        if machine != model {
            return Err(format!(
                "stats: the machine has {machine:?}, the model {model:?}"
            ));
        }
        if poll_timeout != self.poll_timeout() {
            return Err(format!(
                "poll_timeout: the machine has {poll_timeout:?}, the model {:?}",
                self.poll_timeout()
            ));
        }
        Ok(())
    }
}
