//! The shared adaptive limit: one [`Adaptive`] machine fed by many tasks, pushing its limit
//! into what it drives (feature `std`).
//!
//! [`SharedAdaptive`] is `Clone` (every clone shares one machine). It owns the machine behind
//! a mutex, takes samples through `&self`, and on every change of the limit resizes each
//! target it drives, in the order the changes happened:
//!
//! - a [`SharedLimit`] ([`drive_limit`](SharedAdaptive::drive_limit)): its `set_max`; the
//!   accept guard's limit is one (`Incoming::limit`, what `set_max_connections` resizes);
//! - a [`SharedBulkhead`] ([`drive_bulkhead`](SharedAdaptive::drive_bulkhead)): its
//!   [`set_max_concurrent`](SharedBulkhead::set_max_concurrent).
//!
//! The limit itself is mirrored in an atomic: [`SharedAdaptive::limit`] never locks.
//!
//! # Measuring a request: [`InFlight`]
//!
//! [`SharedAdaptive::start`] counts a request in flight and remembers when it started and how
//! many were in flight then (itself included, what [`Adaptive::on_sample`] wants);
//! [`InFlight::finish`] feeds the sample with the caller's outcome and `now`. An [`InFlight`]
//! **dropped without `finish` feeds no sample** (it only leaves the in-flight count, and
//! [`SharedAdaptive::cancelled`] counts it): a cancelled request says the *caller* lost
//! interest, not how the service did. Counting it as dropped would let any client that
//! cancels (or a hostile one that cancels on purpose) cut the limit; counting it as a success
//! would feed a short, meaningless RTT. The driver's permit
//! ([`AdaptivePermit`](crate::driver::adaptive::AdaptivePermit)) reads the clock on drop, so
//! there a permit dropped normally counts as a success.
//!
//! # Locking
//!
//! One mutex holds the machine and the targets, only for the bookkeeping and the resizes (a
//! CAS on a limit, the bulkhead's own short lock). Nothing here calls user code. Lock order:
//! this lock, then a bulkhead's; no target ever calls back into this one.
//!
//! ```
//! use core::time::Duration;
//! use keel_core::adaptive::{AdaptiveConfig, SampleOutcome};
//! use keel_core::limit::LimitConfig;
//! use keel_core::sync::adaptive::SharedAdaptive;
//! use keel_core::sync::limit::SharedLimit;
//! use keel_core::Instant;
//!
//! let config = AdaptiveConfig::builder()
//!     .initial_limit(4)
//!     .window(Duration::from_millis(100))
//!     .build()?;
//! let adaptive = SharedAdaptive::new(config, Instant::ZERO);
//! let connections = SharedLimit::new(LimitConfig::builder().max(1000).build()?);
//! adaptive.drive_limit(&connections); // resized to the adaptive limit at once
//! assert_eq!(connections.max(), 4);
//!
//! // A service with no queue: the requests keep the limit busy and take 10 ms each.
//! let mut now = Instant::ZERO;
//! for _ in 0..50 {
//!     let requests: Vec<_> = (0..adaptive.limit()).map(|_| adaptive.start(now)).collect();
//!     now += Duration::from_millis(10);
//!     for r in requests {
//!         let _ = r.finish(now, SampleOutcome::Success);
//!     }
//! }
//! assert!(adaptive.limit() > 4, "no queue: the limit grew");
//! assert_eq!(connections.max(), adaptive.limit() as usize);
//! assert_eq!(adaptive.in_flight(), 0);
//! # Ok::<(), keel_core::ConfigError>(())
//! ```

use alloc::vec::Vec;
use core::fmt;
use core::num::NonZeroUsize;
use core::time::Duration;

use super::bulkhead::SharedBulkhead;
use super::limit::SharedLimit;
use super::shim::{Arc, AtomicU64, AtomicUsize, Mutex, MutexGuard, Ordering};
use crate::adaptive::SampleOutcome;
use crate::adaptive::{Adaptive, AdaptiveConfig, AdaptiveDecision, AdaptiveEvent, AdaptiveStats};
use crate::time::Instant;

/// Something the adaptive limit resizes.
#[derive(Clone)]
enum Target {
    Limit(SharedLimit),
    Bulkhead(SharedBulkhead),
}

impl Target {
    fn resize(&self, limit: u32) {
        // The machine's limit is within [min_limit, max_limit] and min_limit >= 1.
        let n = NonZeroUsize::new(usize::try_from(limit).unwrap_or(usize::MAX))
            .unwrap_or(NonZeroUsize::MIN);
        match self {
            Target::Limit(l) => l.set_max(n),
            Target::Bulkhead(b) => b.set_max_concurrent(n),
        }
    }
}

struct State {
    machine: Adaptive,
    targets: Vec<Target>,
}

struct Inner {
    state: Mutex<State>,
    /// The machine's limit, readable without the lock (written under it).
    limit: AtomicUsize,
    in_flight: AtomicUsize,
    cancelled: AtomicU64,
}

/// An adaptive limit many tasks share. See the [module docs](self).
///
/// Getters: [`limit`](Self::limit), [`in_flight`](Self::in_flight), [`stats`](Self::stats),
/// [`cancelled`](Self::cancelled), [`config`](Self::config), [`min_rtt`](Self::min_rtt).
/// Inputs: [`start`](Self::start) + [`InFlight::finish`], [`on_sample`](Self::on_sample),
/// [`handle_timeout`](Self::handle_timeout). Outputs: [`poll_timeout`](Self::poll_timeout),
/// [`poll_event`](Self::poll_event). Wiring: [`drive_limit`](Self::drive_limit),
/// [`drive_bulkhead`](Self::drive_bulkhead).
#[derive(Clone)]
pub struct SharedAdaptive {
    inner: Arc<Inner>,
}

impl fmt::Debug for SharedAdaptive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedAdaptive")
            .field("limit", &self.limit())
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl SharedAdaptive {
    /// An adaptive limit at `config`'s initial limit, driving nothing yet.
    #[must_use]
    pub fn new(config: AdaptiveConfig, now: Instant) -> SharedAdaptive {
        let machine = Adaptive::new(config, now);
        let limit = to_usize(machine.limit());
        SharedAdaptive {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    machine,
                    targets: Vec::new(),
                }),
                limit: AtomicUsize::new(limit),
                in_flight: AtomicUsize::new(0),
                cancelled: AtomicU64::new(0),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves a machine whose every field is valid on its
        // own (it never panics itself): keep going.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Resizes `limit` to the adaptive limit now and on every later change. The accept
    /// guard's limit is one: pass `incoming.limit()`.
    pub fn drive_limit(&self, limit: &SharedLimit) {
        self.drive(Target::Limit(limit.clone()));
    }

    /// Resizes `bulkhead`'s `max_concurrent` to the adaptive limit now and on every later
    /// change.
    pub fn drive_bulkhead(&self, bulkhead: &SharedBulkhead) {
        self.drive(Target::Bulkhead(bulkhead.clone()));
    }

    fn drive(&self, target: Target) {
        let mut state = self.lock();
        target.resize(state.machine.limit());
        state.targets.push(target);
    }

    /// The limit to enforce now (lock-free). Always within `[min_limit, max_limit]`.
    #[must_use]
    pub fn limit(&self) -> u32 {
        u32::try_from(self.inner.limit.load(Ordering::Acquire)).unwrap_or(u32::MAX)
    }

    /// Requests started with [`start`](Self::start) and not yet finished or dropped.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Acquire)
    }

    /// [`InFlight`]s dropped without [`finish`](InFlight::finish): requests that fed no sample.
    #[must_use]
    pub fn cancelled(&self) -> u64 {
        self.inner.cancelled.load(Ordering::Relaxed)
    }

    /// The machine's counters and estimates (one consistent snapshot, taken under the lock).
    #[must_use]
    pub fn stats(&self) -> AdaptiveStats {
        self.lock().machine.stats()
    }

    /// The minimum-RTT estimate, once there is one.
    #[must_use]
    pub fn min_rtt(&self) -> Option<Duration> {
        self.lock().machine.min_rtt()
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> AdaptiveConfig {
        *self.lock().machine.config()
    }

    /// A request starts now: counts it in flight until the returned [`InFlight`] is finished
    /// or dropped.
    pub fn start(&self, now: Instant) -> InFlight {
        let before = self.inner.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight {
            inner: Some(Arc::clone(&self.inner)),
            started: now,
            in_flight: u32::try_from(before.saturating_add(1)).unwrap_or(u32::MAX),
        }
    }

    /// One finished request, as [`Adaptive::on_sample`]; resizes the targets on `Resize`.
    pub fn on_sample(
        &self,
        now: Instant,
        rtt: Duration,
        outcome: SampleOutcome,
        in_flight: u32,
    ) -> AdaptiveDecision {
        on_sample(&self.inner, now, rtt, outcome, in_flight)
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due (the minimum-RTT re-measurement).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.lock().machine.poll_timeout()
    }

    /// Starts the periodic minimum-RTT re-measurement if it is due, as
    /// [`Adaptive::handle_timeout`]; resizes the targets on `Resize`.
    pub fn handle_timeout(&self, now: Instant) -> AdaptiveDecision {
        let mut state = self.lock();
        let decision = state.machine.handle_timeout(now);
        apply(&self.inner, &state, decision);
        decision
    }

    /// The next change of the limit or of the minimum RTT, for logs and metrics (the machine
    /// keeps the newest [`EVENT_QUEUE_CAPACITY`](crate::adaptive::EVENT_QUEUE_CAPACITY)).
    pub fn poll_event(&self) -> Option<AdaptiveEvent> {
        self.lock().machine.poll_event()
    }
}

fn to_usize(limit: u32) -> usize {
    usize::try_from(limit).unwrap_or(usize::MAX)
}

fn on_sample(
    inner: &Inner,
    now: Instant,
    rtt: Duration,
    outcome: SampleOutcome,
    in_flight: u32,
) -> AdaptiveDecision {
    let mut state = inner
        .state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let decision = state.machine.on_sample(now, rtt, outcome, in_flight);
    apply(inner, &state, decision);
    decision
}

/// Publishes a new limit and resizes the targets, under the lock (so resizes land in order).
fn apply(inner: &Inner, state: &State, decision: AdaptiveDecision) {
    if let AdaptiveDecision::Resize { limit } = decision {
        inner.limit.store(to_usize(limit), Ordering::Release);
        for target in &state.targets {
            target.resize(limit);
        }
    }
}

/// A request in flight (see [`SharedAdaptive::start`]): [`finish`](Self::finish) feeds its
/// sample; dropping it without finishing feeds none (see the [module docs](self)).
#[must_use = "finish it with the outcome, or the request feeds no sample"]
pub struct InFlight {
    inner: Option<Arc<Inner>>,
    started: Instant,
    in_flight: u32,
}

impl fmt::Debug for InFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlight")
            .field("started", &self.started)
            .field("in_flight", &self.in_flight)
            .finish()
    }
}

impl InFlight {
    /// When the request started.
    #[must_use]
    pub const fn started(&self) -> Instant {
        self.started
    }

    /// Requests in flight when it started, itself included.
    #[must_use]
    pub const fn in_flight_at_start(&self) -> u32 {
        self.in_flight
    }

    /// The request ended at `now` with `outcome`: feeds the sample (RTT `now − started`,
    /// zero if `now` is earlier) and leaves the in-flight count.
    pub fn finish(mut self, now: Instant, outcome: SampleOutcome) -> AdaptiveDecision {
        let Some(inner) = self.inner.take() else {
            return AdaptiveDecision::Unchanged;
        };
        inner.in_flight.fetch_sub(1, Ordering::AcqRel);
        let rtt = now.saturating_duration_since(self.started);
        on_sample(&inner, now, rtt, outcome, self.in_flight)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            inner.in_flight.fetch_sub(1, Ordering::AcqRel);
            inner.cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
#[cfg(not(keel_loom))]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn the_shared_form_reads_the_machine_it_wraps() {
        let config = AdaptiveConfig::builder()
            .initial_limit(7)
            .window(Duration::from_millis(100))
            .build()
            .expect("valid adaptive config");
        assert_ne!(config, AdaptiveConfig::default());
        let shared = SharedAdaptive::new(config, Instant::ZERO);
        let mut alone = Adaptive::new(config, Instant::ZERO);
        assert_eq!(shared.config(), config);
        assert_eq!(shared.min_rtt(), None);
        let rtt = Duration::from_millis(3);
        for ms in [1_u64, 2, 150] {
            let now = Instant::from_millis(ms);
            let _ = alone.on_sample(now, rtt, SampleOutcome::Success, 1);
            let _ = shared.on_sample(now, rtt, SampleOutcome::Success, 1);
            assert_eq!(shared.min_rtt(), alone.min_rtt(), "at {ms} ms");
        }
        assert_eq!(shared.min_rtt(), Some(rtt));
        let first = shared.start(Instant::from_millis(200));
        let second = shared.start(Instant::from_millis(201));
        assert_eq!(first.in_flight_at_start(), 1);
        assert_eq!(second.in_flight_at_start(), 2);
        assert_eq!(
            format!("{shared:?}"),
            format!(
                "SharedAdaptive {{ limit: {}, in_flight: 2, .. }}",
                shared.limit()
            )
        );
        assert_eq!(
            format!("{second:?}"),
            format!(
                "InFlight {{ started: {:?}, in_flight: 2 }}",
                Instant::from_millis(201)
            )
        );
        drop((first, second));
        assert_eq!(shared.in_flight(), 0);
    }
}
