//! Health: aggregate component states into liveness and readiness, with reasons.
//!
//! # What it protects against
//!
//! An orchestrator or load balancer that keeps sending traffic to an instance that cannot serve
//! it (accept paused on EMFILE, draining for shutdown, every bulkhead slot taken), or that
//! **restarts** an instance that is merely overloaded. The two probes answer different
//! questions (the Kubernetes split):
//!
//! - **readiness**: "send me traffic?" False if any component says so: a listener paused on a
//!   resource shortage, a drain in progress, a saturated bulkhead, an open breaker when you
//!   choose so. Recovers on its own.
//! - **liveness**: "restart me?" False only for a truly fatal state (a listener stopped on a
//!   fatal error). Overload never fails liveness: restarting an overloaded instance moves its
//!   load onto its peers and makes the storm worse.
//!
//! # The contract
//!
//! Build a [`HealthReport`] (it lists up to [`MAX_LISTED`] reasons inline: no allocation, no
//! capacity to choose), add one [`ComponentState`] per named component (`&'static str`
//! names), then read
//! [`HealthReport::is_ready`], [`HealthReport::is_live`], [`HealthReport::reasons`] or its
//! [`Display`](core::fmt::Display) line, which an echo server can send as a probe reply:
//!
//! ```text
//! ready=false live=true reasons=[accept: paused (EMFILE); shutdown: draining]
//! ```
//!
//! Every state counts toward the verdict however many components are added; only the list of
//! reasons is bounded, at [`MAX_LISTED`] (the line then ends in `; +K more`, and
//! [`HealthReport::omitted`] counts them). Eight is more than a probe line needs (keel's own
//! reports have four components, and healthy ones are never listed), so the capacity is a
//! documented constant rather than a type parameter every signature would carry.
//!
//! | helper | state | ready | live |
//! | --- | --- | --- | --- |
//! | [`ComponentState::accept_paused`] | `Unhealthy("paused", code)` | no | yes |
//! | [`ComponentState::accept_stopped`] | `Fatal("stopped", code)` | no | **no** |
//! | [`ComponentState::draining`], [`ComponentState::from_shutdown`] | `Unhealthy("draining")` (`Unhealthy("drain delay")` during a drain delay) | no | yes |
//! | [`ComponentState::bulkhead_saturated`], [`ComponentState::from_bulkhead`] | `Unhealthy("saturated")` | no | yes |
//! | [`ComponentState::breaker_open`] with [`BreakerImpact::Degrade`] (default) | `Degraded("open")` | yes | yes |
//! | [`ComponentState::breaker_open`] with [`BreakerImpact::NotReady`] | `Unhealthy("open")` | no | yes |
//! | [`ComponentState::from_limit`] | `Unhealthy("at limit")`, `Degraded("near limit")` from 90 % | no, yes | yes |
//!
//! An open breaker degrades by default: the breaker already fails fast (or falls back) for the
//! one dependency, and the instance can still serve everything else.
//!
//! # Example
//!
//! ```
//! use keel_core::health::{ComponentState, HealthReport};
//!
//! let mut report = HealthReport::new();
//! report.add("accept", ComponentState::accept_paused("EMFILE"));
//! report.add("shutdown", ComponentState::draining());
//! report.add("db", ComponentState::Healthy);
//!
//! assert!(!report.is_ready());
//! assert!(report.is_live());
//! assert_eq!(
//!     report.to_string(),
//!     "ready=false live=true reasons=[accept: paused (EMFILE); shutdown: draining]"
//! );
//! assert_eq!(report.readiness_status_code(), 503);
//! ```

use core::fmt;

mod json;
pub use json::Json;

use crate::bulkhead::{BulkheadConfig, BulkheadStats};
use crate::limit::LimitStats;
use crate::shutdown::ShutdownState;

/// Why a component is not healthy: a short word and an optional detail, shown as
/// `what (detail)`, e.g. `paused (EMFILE)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Reason {
    what: &'static str,
    detail: Option<&'static str>,
}

impl Reason {
    /// A reason without detail, e.g. `Reason::new("draining")`.
    #[must_use]
    pub const fn new(what: &'static str) -> Reason {
        Reason { what, detail: None }
    }

    /// A reason with a detail, e.g. `Reason::with_detail("paused", "EMFILE")`.
    #[must_use]
    pub const fn with_detail(what: &'static str, detail: &'static str) -> Reason {
        Reason {
            what,
            detail: Some(detail),
        }
    }

    /// The short word.
    #[must_use]
    pub const fn what(&self) -> &'static str {
        self.what
    }

    /// The detail, if any.
    #[must_use]
    pub const fn detail(&self) -> Option<&'static str> {
        self.detail
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.detail {
            Some(d) => write!(f, "{} ({d})", self.what),
            None => f.write_str(self.what),
        }
    }
}

/// How an open circuit breaker counts toward readiness.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BreakerImpact {
    /// Reported, but the instance stays ready (default): the breaker handles the dependency.
    #[default]
    Degrade,
    /// The instance is not ready while the breaker is open: use it for a dependency without
    /// which nothing can be served.
    NotReady,
}

/// The state of one component.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ComponentState {
    /// Working normally.
    Healthy,
    /// Working with reduced capacity or quality; ready and live, but reported.
    Degraded(Reason),
    /// Cannot take traffic now but expected to recover: not ready, still live.
    Unhealthy(Reason),
    /// Broken for good: neither ready nor live (restart the instance).
    Fatal(Reason),
}

impl ComponentState {
    /// The listener paused accepting on a resource shortage (`code` like `"EMFILE"`):
    /// not ready, live.
    #[must_use]
    pub const fn accept_paused(code: &'static str) -> ComponentState {
        ComponentState::Unhealthy(Reason::with_detail("paused", code))
    }

    /// The listener stopped on a fatal error (`code` like `"EBADF"`): neither ready nor live.
    #[must_use]
    pub const fn accept_stopped(code: &'static str) -> ComponentState {
        ComponentState::Fatal(Reason::with_detail("stopped", code))
    }

    /// A graceful shutdown is draining: not ready (take me out of the load balancer), live
    /// (do not kill me before the deadline).
    #[must_use]
    pub const fn draining() -> ComponentState {
        ComponentState::Unhealthy(Reason::new("draining"))
    }

    /// Every bulkhead slot and queue place is taken: not ready, live.
    #[must_use]
    pub const fn bulkhead_saturated() -> ComponentState {
        ComponentState::Unhealthy(Reason::new("saturated"))
    }

    /// A circuit breaker is open: degraded or not ready, as `impact` says.
    #[must_use]
    pub const fn breaker_open(impact: BreakerImpact) -> ComponentState {
        match impact {
            BreakerImpact::Degrade => ComponentState::Degraded(Reason::new("open")),
            BreakerImpact::NotReady => ComponentState::Unhealthy(Reason::new("open")),
        }
    }

    /// The state of a [`Shutdown`](crate::shutdown::Shutdown) machine: healthy while running,
    /// `drain delay` (not ready, still serving) during a drain delay, `draining` while draining, `stopped` (not ready, live: the process is exiting on
    /// purpose) once stopped.
    #[must_use]
    pub const fn from_shutdown(state: ShutdownState) -> ComponentState {
        match state {
            ShutdownState::Running => ComponentState::Healthy,
            ShutdownState::Delaying { .. } => ComponentState::Unhealthy(Reason::new("drain delay")),
            ShutdownState::Draining { .. } => ComponentState::draining(),
            ShutdownState::Stopped => ComponentState::Unhealthy(Reason::new("stopped")),
        }
    }

    /// A bulkhead's saturation from its stats: `saturated` when every slot is taken and the
    /// queue (if any) is full, `Degraded("queueing")` when calls wait, healthy otherwise.
    #[must_use]
    pub const fn from_bulkhead(stats: &BulkheadStats, config: &BulkheadConfig) -> ComponentState {
        let slots_full = stats.in_flight >= config.max_concurrent();
        if slots_full && stats.queue_len >= config.max_queue() {
            ComponentState::bulkhead_saturated()
        } else if stats.queue_len > 0 {
            ComponentState::Degraded(Reason::new("queueing"))
        } else {
            ComponentState::Healthy
        }
    }

    /// A connection limit from its stats: `Unhealthy("at limit")` when every slot is taken,
    /// `Degraded("near limit")` at 90 % or more, healthy otherwise (what a server's
    /// `connections` component reports).
    #[must_use]
    pub const fn from_limit(stats: &LimitStats) -> ComponentState {
        if stats.in_use >= stats.max {
            ComponentState::Unhealthy(Reason::new("at limit"))
        } else if stats.in_use.saturating_mul(10) >= stats.max.saturating_mul(9) {
            ComponentState::Degraded(Reason::new("near limit"))
        } else {
            ComponentState::Healthy
        }
    }

    /// `true` unless the state makes the instance not ready.
    #[must_use]
    pub const fn is_ready(&self) -> bool {
        matches!(self, ComponentState::Healthy | ComponentState::Degraded(_))
    }

    /// `true` unless the state is fatal.
    #[must_use]
    pub const fn is_live(&self) -> bool {
        !matches!(self, ComponentState::Fatal(_))
    }

    /// The reason, unless healthy.
    #[must_use]
    pub const fn reason(&self) -> Option<Reason> {
        match self {
            ComponentState::Healthy => None,
            ComponentState::Degraded(r)
            | ComponentState::Unhealthy(r)
            | ComponentState::Fatal(r) => Some(*r),
        }
    }
}

/// One component's entry in a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ComponentReport {
    /// The component's name, e.g. `"accept"`.
    pub name: &'static str,
    /// Its state.
    pub state: ComponentState,
}

impl fmt::Display for ComponentReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.state.reason() {
            Some(r) => write!(f, "{}: {r}", self.name),
            None => write!(f, "{}: healthy", self.name),
        }
    }
}

/// How many non-healthy components a [`HealthReport`] lists; more still count toward the
/// verdict and are counted in [`HealthReport::omitted`].
pub const MAX_LISTED: usize = 8;

/// Readiness and liveness aggregated over any number of components, listing the reasons of
/// up to [`MAX_LISTED`] of them. See the [module docs](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthReport {
    entries: [Option<ComponentReport>; MAX_LISTED],
    len: usize,
    omitted: usize,
    ready: bool,
    live: bool,
}

impl Default for HealthReport {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthReport {
    /// An empty report: ready and live.
    #[must_use]
    pub const fn new() -> Self {
        HealthReport {
            entries: [None; MAX_LISTED],
            len: 0,
            omitted: 0,
            ready: true,
            live: true,
        }
    }

    /// Adds a component. Healthy components count but are not listed as reasons. Returns
    /// `false` if its reason could not be listed (more than [`MAX_LISTED`] non-healthy
    /// components); it still
    /// counts toward the verdict.
    pub fn add(&mut self, name: &'static str, state: ComponentState) -> bool {
        self.ready &= state.is_ready();
        self.live &= state.is_live();
        if matches!(state, ComponentState::Healthy) {
            return true;
        }
        match self.entries.get_mut(self.len) {
            Some(slot) => {
                *slot = Some(ComponentReport { name, state });
                self.len += 1;
                true
            }
            None => {
                self.omitted = self.omitted.saturating_add(1);
                false
            }
        }
    }

    /// [`add`](Self::add), by value, for chaining.
    #[must_use]
    pub fn with(mut self, name: &'static str, state: ComponentState) -> Self {
        let _ = self.add(name, state);
        self
    }

    /// `true` when no component makes the instance not ready.
    #[must_use]
    pub const fn is_ready(&self) -> bool {
        self.ready
    }

    /// `true` when no component is fatal.
    #[must_use]
    pub const fn is_live(&self) -> bool {
        self.live
    }

    /// The readiness verdict with its reasons.
    #[must_use]
    pub fn readiness(&self) -> Readiness<'_> {
        Readiness { report: self }
    }

    /// The liveness verdict with its reasons.
    #[must_use]
    pub fn liveness(&self) -> Liveness<'_> {
        Liveness { report: self }
    }

    /// The HTTP status for a readiness probe: 200 when ready, 503 otherwise.
    #[must_use]
    pub const fn readiness_status_code(&self) -> u16 {
        if self.ready {
            200
        } else {
            503
        }
    }

    /// The HTTP status for a liveness probe: 200 when live, 503 otherwise.
    #[must_use]
    pub const fn liveness_status_code(&self) -> u16 {
        if self.live {
            200
        } else {
            503
        }
    }

    /// Every listed non-healthy component (degraded, unhealthy, fatal), in the order added.
    pub fn reasons(&self) -> impl Iterator<Item = &ComponentReport> + '_ {
        self.entries.iter().take(self.len).flatten()
    }

    /// Non-healthy components beyond [`MAX_LISTED`] (counted, not listed).
    #[must_use]
    pub const fn omitted(&self) -> usize {
        self.omitted
    }
}

/// The readiness verdict: [`is_ready`](Self::is_ready) and the components that deny it.
#[derive(Clone, Copy, Debug)]
pub struct Readiness<'a> {
    report: &'a HealthReport,
}

impl<'a> Readiness<'a> {
    /// `true` when the instance should receive traffic.
    #[must_use]
    pub const fn is_ready(&self) -> bool {
        self.report.ready
    }

    /// The components that make the instance not ready.
    pub fn reasons(&self) -> impl Iterator<Item = &'a ComponentReport> + 'a {
        self.report.reasons().filter(|c| !c.state.is_ready())
    }
}

/// The liveness verdict: [`is_live`](Self::is_live) and the components that deny it.
#[derive(Clone, Copy, Debug)]
pub struct Liveness<'a> {
    report: &'a HealthReport,
}

impl<'a> Liveness<'a> {
    /// `false` when the instance should be restarted.
    #[must_use]
    pub const fn is_live(&self) -> bool {
        self.report.live
    }

    /// The fatal components.
    pub fn reasons(&self) -> impl Iterator<Item = &'a ComponentReport> + 'a {
        self.report.reasons().filter(|c| !c.state.is_live())
    }
}

impl fmt::Display for HealthReport {
    /// `ready=<bool> live=<bool> reasons=[name: reason; ...]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ready={} live={} reasons=[", self.ready, self.live)?;
        let mut first = true;
        for c in self.reasons() {
            if !first {
                f.write_str("; ")?;
            }
            first = false;
            write!(f, "{c}")?;
        }
        if self.omitted > 0 {
            if !first {
                f.write_str("; ")?;
            }
            write!(f, "+{} more", self.omitted)?;
        }
        f.write_str("]")
    }
}
