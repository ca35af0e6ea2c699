//! State shared by the serving task, the handlers and the handles; the counts and report a
//! server gives; [`ServeHandle`].

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};
use core::task::Waker;
use std::io;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::drain::DrainState;
use super::{Draining, DEFENCE_WINDOW};
use crate::accept::AcceptStats;
use crate::conn::{ConnStats, ConnTable};
use crate::health::{ComponentState, HealthReport, Reason};
use crate::limit::LimitStats;
use crate::shutdown::{Shutdown, ShutdownStats, ShutdownSummary};
use crate::sync::limit::SharedLimit;

pub(super) struct Core {
    pub(super) machine: Shutdown,
    /// Ticket ids of handlers that ended, for the serving task to forget their abort handles.
    pub(super) finished: Vec<u64>,
    /// The serving task.
    pub(super) waker: Option<Waker>,
    /// `ServeHandle::shutdown` calls not yet seen by the serving task.
    pub(super) requested: u32,
    pub(super) accept: AcceptStats,
    pub(super) paused: bool,
    pub(super) listener_failed: bool,
    /// Idle timeouts, read deadlines, reclamation and lingering close.
    pub(super) conns: ConnTable,
}

pub(super) struct Shared {
    pub(super) core: Mutex<Core>,
    pub(super) drain: Arc<DrainState>,
    pub(super) limit: SharedLimit,
    /// What the handlers' protocols count through [`RequestTimeouts`].
    pub(super) requests: Arc<RequestCounts>,
}

/// The requests the handlers' protocols timed out, counted through [`RequestTimeouts`].
#[derive(Default)]
pub(crate) struct RequestCounts {
    header: AtomicU64,
    body: AtomicU64,
    /// The server's series, registered when it starts serving (under its name). Asserted
    /// unwind-safe (a counter is an atomic add) so `ServeHandle` stays `UnwindSafe`.
    #[cfg(feature = "metrics")]
    pub(crate) metrics:
        core::panic::AssertUnwindSafe<std::sync::OnceLock<crate::driver::metrics::RequestMetrics>>,
}

impl RequestCounts {
    pub(super) fn stats(&self) -> RequestStats {
        RequestStats {
            header_timeouts: self.header.load(Ordering::Relaxed),
            body_timeouts: self.body.load(Ordering::Relaxed),
        }
    }
}

/// Requests a server's handlers timed out while reading them (see [`RequestTimeouts`]): for
/// keel-tokio's HTTP server, heads not received within `header_read_timeout` (the connection
/// is closed) and bodies not received within their read deadline (answered `408`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestStats {
    /// Request heads (an HTTP request line and headers) that did not arrive in time.
    pub header_timeouts: u64,
    /// Request bodies that did not arrive in time.
    pub body_timeouts: u64,
}

/// Counts, into the server's [`ServeStats::requests`] (and with feature `metrics`
/// `keel_request_timeouts_total`), the requests a protocol served on a
/// [`Conn`](crate::driver::Conn) gave up reading because their deadline passed. Get it with
/// [`Conn::request_timeouts`](crate::driver::Conn::request_timeouts) before the `Conn` moves
/// into the protocol's machinery; cheap to clone.
#[derive(Clone)]
pub struct RequestTimeouts {
    pub(crate) counts: Arc<RequestCounts>,
}

impl fmt::Debug for RequestTimeouts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestTimeouts")
            .field("stats", &self.counts.stats())
            .finish()
    }
}

impl RequestTimeouts {
    /// A request's head did not arrive within its deadline.
    pub fn header_timed_out(&self) {
        self.counts.header.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        if let Some(m) = self.counts.metrics.get() {
            m.header.increment(1);
        }
    }

    /// A request's body did not arrive within its deadline.
    pub fn body_timed_out(&self) {
        self.counts.body.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        if let Some(m) = self.counts.metrics.get() {
            m.body.increment(1);
        }
    }
}

impl Shared {
    pub(super) fn core(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Counts of a server: its accept loop, its connection limit and its shutdown machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeStats {
    /// The accept loop (accepted, errors, pauses...). Frozen when the listener closes.
    pub accept: AcceptStats,
    /// The connection limit (in use, peak, shed...).
    pub limit: LimitStats,
    /// The shutdown machine (connections started, completed, aborted, refused, in flight...).
    pub shutdown: ShutdownStats,
    /// The connections' defences and ends: idle closed, read deadlines expired, reclaimed at
    /// the limit, lingering closes that ended cleanly, timed out or in a reset.
    pub conns: ConnStats,
    /// Requests the handlers' protocols timed out (HTTP heads and bodies too slow to arrive).
    pub requests: RequestStats,
}

impl fmt::Display for ServeStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, l, s) = (&self.accept, &self.limit, &self.shutdown);
        write!(
            f,
            "accepted={} per_connection_errors={} shortages={} pauses={} paused_ms={} \
             max_connections={} in_use={} peak={} shed={} started={} in_flight={} \
             idle_closed={} deadline_expired={} reclaimed={} lingering={} clean={} \
             linger_timeouts={} resets={} header_timeouts={} body_timeouts={}",
            a.accepted,
            a.per_connection_errors,
            a.shortages,
            a.pauses,
            a.paused_total.as_millis(),
            l.max,
            l.in_use,
            l.peak,
            l.shed,
            s.started,
            s.in_flight,
            self.conns.idle_closed,
            self.conns.deadline_expired,
            self.conns.reclaimed,
            self.conns.lingering,
            self.conns.clean,
            self.conns.linger_timeouts,
            self.conns.resets,
            self.requests.header_timeouts,
            self.requests.body_timeouts,
        )
    }
}

/// What [`Server::serve`](super::Server::serve) returns once it has stopped.
#[derive(Debug)]
#[non_exhaustive]
pub struct ServeReport {
    /// Connections completed, aborted at the deadline, refused during the drain, and how long
    /// the drain took.
    pub summary: ShutdownSummary,
    /// Every count at the stop.
    pub stats: ServeStats,
    /// The listener's fatal error, if the listener failed (which started the drain).
    pub error: Option<io::Error>,
}

impl fmt::Display for ServeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.summary, self.stats)?;
        if let Some(e) = &self.error {
            write!(f, " listener_error=\"{e}\"")?;
        }
        Ok(())
    }
}

/// A cloneable handle on a [`Server`](super::Server): its live counts and health, a [`Draining`] token, and a
/// shutdown trigger. Get it with [`Server::handle`](super::Server::handle) before serving.
#[derive(Clone)]
pub struct ServeHandle {
    pub(super) shared: Arc<Shared>,
}

impl ServeHandle {
    /// Triggers a shutdown as a signal would: the first call starts the drain, a second one
    /// stops at once.
    pub fn shutdown(&self) {
        let waker = {
            let mut core = self.shared.core();
            core.requested = core.requested.saturating_add(1);
            core.waker.clone()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// What a readiness probe (`/readyz`) should answer: [`health`](Self::health)`().is_ready()`.
    /// `false` from the first shutdown signal on, through the drain delay (see
    /// [`ShutdownConfig`](crate::shutdown::ShutdownConfig)'s `drain_delay`: the server still accepts and serves then), the drain
    /// and the stop; also while accepting is paused on a resource shortage or every
    /// connection slot is taken.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.health().is_ready()
    }

    /// `true` during the drain delay: not ready, still accepting and serving.
    #[must_use]
    pub fn is_delaying(&self) -> bool {
        self.shared.core().machine.is_delaying()
    }

    /// `true` once the drain has started.
    #[must_use]
    pub fn is_draining(&self) -> bool {
        self.shared.drain.started.load(Ordering::Acquire)
    }

    /// A token that flips when the drain starts (the one handlers get).
    #[must_use]
    pub fn draining(&self) -> Draining {
        Draining {
            state: Arc::clone(&self.shared.drain),
        }
    }

    /// Live counts.
    #[must_use]
    pub fn stats(&self) -> ServeStats {
        let core = self.shared.core();
        ServeStats {
            accept: core.accept,
            limit: self.shared.limit.stats(),
            shutdown: core.machine.stats(),
            conns: core.conns.stats(),
            requests: self.shared.requests.stats(),
        }
    }

    /// The server's health: `accept` (paused on a resource shortage: not ready; stopped on a
    /// fatal error: not live), `connections` (at the limit: not ready; at 90 % or more:
    /// degraded), `clients` (degraded while the server is closing idle or slow clients itself:
    /// an idle timeout, a read deadline or a reclamation at the limit within the last
    /// [`DEFENCE_WINDOW`]; the counts are in [`stats`](Self::stats)`().conns`) and `shutdown`
    /// (draining or stopped: not ready).
    ///
    /// Its `Display` line is a probe reply, e.g.
    /// `ready=false live=true reasons=[shutdown: draining]`.
    #[must_use]
    pub fn health(&self) -> HealthReport {
        let (paused, failed, state, defending) = {
            let core = self.shared.core();
            (
                core.paused,
                core.listener_failed,
                core.machine.state(),
                core.conns.defended_within(DEFENCE_WINDOW),
            )
        };
        let accept = if failed {
            ComponentState::accept_stopped("fatal error")
        } else if paused {
            ComponentState::accept_paused("resource shortage")
        } else {
            ComponentState::Healthy
        };
        let connections = ComponentState::from_limit(&self.shared.limit.stats());
        let clients = if defending {
            ComponentState::Degraded(Reason::new("closing idle or slow clients"))
        } else {
            ComponentState::Healthy
        };
        HealthReport::new()
            .with("accept", accept)
            .with("connections", connections)
            .with("clients", clients)
            .with("shutdown", ComponentState::from_shutdown(state))
    }
}

impl fmt::Debug for ServeHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeHandle")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}
