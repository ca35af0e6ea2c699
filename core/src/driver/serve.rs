//! Graceful serving: one task per connection over a guarded listener, drained on a signal.
//!
//! # What it protects against
//!
//! A server told to stop (SIGTERM from an orchestrator, Ctrl-C) that either drops every
//! in-flight request, keeps accepting connections it will never serve, or waits forever for one
//! hung connection. The seed's shutdown manager (seed 003) checked its timeout only after a task
//! ended; here the deadline is the [`Shutdown`] machine's [`poll_timeout`](Shutdown::poll_timeout)
//! armed on the runtime's timer, so it fires whether or not any task ever ends.
//!
//! # The contract
//!
//! [`Server::serve`] accepts from an [`Incoming`] and spawns `handler(conn, draining)` per
//! connection (through the adapter's [`Spawn`]); `conn` is a [`Conn`], the runtime's stream
//! recording its last activity. While serving, the server defends its slots
//! ([`ConnConfig`], see [`crate::conn`]): a connection silent for the idle timeout (default
//! 60 s) is closed, so is one whose handler-armed read deadline ([`Conn::set_read_deadline`])
//! passed, and when every slot is taken and a newcomer waits, the connection idle the longest
//! (at least 1 s) is closed for it. These are checked every 250 ms while connections are open.
//! When a handler returns (or drops its `Conn`), the server closes the connection with a
//! **lingering close**: shut down the write side, read and discard until the peer's EOF, 1 MiB
//! or 2 s (never past the drain deadline), so a written reply is never lost to a reset. The
//! connection's slot and its place among the in-flight work are held until then. A connection
//! the server closed itself is closed at once, without lingering.
//!
//! When a shutdown trigger fires:
//!
//! 0. **With a drain delay** ([`ShutdownConfig`]'s `drain_delay`, default none), first keep
//!    accepting and serving for the delay while [`ServeHandle::is_ready`] and
//!    [`ServeHandle::health`] say not ready (`shutdown: drain delay`), so load balancers stop
//!    sending before the listener closes (Kubernetes removes endpoints while it sends SIGTERM).
//!    A second trigger during the delay stops at once. Then:
//! 1. **Stop accepting at once.** Connections already queued in the kernel backlog are accepted
//!    and closed without being served (counted as `refused`), then the listener is dropped:
//!    new connections are refused by the kernel (`ECONNREFUSED`), never left waiting.
//! 2. **Tell the handlers.** Every [`Draining`] token flips: `is_draining()` is `true` and
//!    `draining().await` resolves. A handler finishes the request in flight and closes an idle
//!    connection.
//! 3. **Wait until the deadline** (`now + grace_period`, [`ShutdownConfig`], default 30 s) for the
//!    handlers still running. If the last one ends first, serving ends then.
//! 4. **At the deadline**, abort the handlers still running ([`AbortHandle::abort`]) and count
//!    them as `aborted`. A **second** trigger during the drain does the same at once.
//!
//! It returns a [`ServeReport`]: the [`ShutdownSummary`] (completed, reset, aborted, refused,
//! drained_in; a connection whose close still ended in a reset is counted as `reset`, never as
//! `completed`), the accept, limit, shutdown and connection counts (idle closed, deadlines
//! expired, reclaimed, lingering closes clean / timed out / reset), and the listener's fatal
//! error, if it failed (a failed listener starts the drain too: nothing more can be accepted).
//!
//! Triggers: [`Server::shutdown_on`] takes a factory called once per signal (the adapters'
//! `shutdown_signal` for SIGINT/SIGTERM), so the second signal is heard; [`Server::shutdown_when`]
//! takes any one-shot future; [`ServeHandle::shutdown`] triggers from code. All count alike.
//!
//! # Observability
//!
//! [`ServeHandle::stats`] and [`ServeHandle::health`] read the live state from any task (the
//! echo example answers a `HEALTH` line with it). With feature `tracing`, target
//! `keel::shutdown`:
//!
//! | level | message | fields |
//! | --- | --- | --- |
//! | info | `drain delay started: not ready, still serving` | `delay_ms` |
//! | info | `drain started: refusing new connections` | `in_flight`, `grace_ms` (until the deadline) |
//! | info | `drained: every in-flight connection finished` | `completed` (during the drain), `drained_ms` |
//! | warn | `drain deadline passed: aborting the connections still open` | `aborted`, `drained_ms` |
//! | warn | `second signal: stopping at once` | `aborted`, `drained_ms` |
//! | debug | `queued connection refused at shutdown` | `refused` (so far) |
//!
//! and target `keel::serve`, at debug: `connection closed by the server` (`id`, `reason`:
//! `idle`, `read deadline`) and `idle connection reclaimed for a newcomer at the limit` (`id`).
//!
//! # Example (keel-tokio; every adapter has the same names)
//!
//! ```text
//! let config = ShutdownConfig::builder().grace_period(Duration::from_secs(5)).build()?;
//! let server = keel_tokio::Server::new(keel_tokio::bind("127.0.0.1:7878", &guard).await?)
//!     .config(config)
//!     .shutdown_on(keel_tokio::shutdown_signal);
//! let report = server
//!     .serve(|conn: Conn<_>, draining: Draining| async move {
//!         // read a request unless the drain started first; finish it; close when idle
//!         while let Some(Ok(req)) = draining.run_until_draining(read(&conn)).await {
//!             reply(&conn, req).await;
//!         }
//!         // returning hands `conn` back: the server closes it with a lingering close
//!     })
//!     .await;
//! println!("{report}"); // completed=12 aborted=1 refused=0 drained_in=5s accepted=13 ...
//! ```
//!
//! The [`Draining`] token itself:
//!
//! ```
//! # fn demo(draining: keel_core::driver::Draining) -> impl core::future::Future<Output = ()> {
//! async move {
//!     // A handler that closes its connection as soon as the drain starts.
//!     if !draining.is_draining() {
//!         draining.draining().await;
//!     }
//! }
//! # }
//! ```

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::{Context, Poll, Waker};
use std::io;
use std::sync::{Mutex, MutexGuard, PoisonError};

use futures_core::Stream;

use super::conn::{self as conn_io, Clock, Conn, ConnIo, ConnShared};
use super::{AbortHandle, Alarm, BoxFuture, Incoming, Listener, Runtime, Spawn};
use crate::accept::AcceptStats;
use crate::conn::{ConnConfig, ConnEnd, ConnEvent, ConnStats, ConnTable};
use crate::health::{ComponentState, HealthReport, Reason};
use crate::limit::LimitStats;
use crate::shutdown::{
    Shutdown, ShutdownConfig, ShutdownDecision, ShutdownEvent, ShutdownPermit, ShutdownState,
    ShutdownStats, ShutdownSummary,
};
use crate::sync::limit::{Permit, SharedLimit};
use crate::time::Instant;

/// How long after the server last closed an idle or slow client itself health still reports
/// `clients: closing idle or slow clients` (degraded, still ready).
pub const DEFENCE_WINDOW: core::time::Duration = core::time::Duration::from_secs(10);

/// Connections taken from the stream in one poll before yielding to the runtime.
const ACCEPTS_PER_POLL: u32 = 64;
/// Queued connections refused (accepted and closed) when the drain starts, at most.
const BACKLOG_SWEEP: u32 = 1024;
/// Ended handlers reported before the serving task is woken to forget their handles.
const FINISHED_BATCH: usize = 32;
/// How often the serving task reads its connections' activity and read deadlines into the
/// [`ConnTable`] while any is open: the precision of idle timeouts and read deadlines, and how
/// soon a waiting newcomer is retried for reclamation when no connection was idle long enough.
const SWEEP: core::time::Duration = core::time::Duration::from_millis(250);

// ---------------------------------------------------------------------------------------------
// Draining: the handlers' view of the shutdown.

struct DrainState {
    started: AtomicBool,
    waiters: Mutex<Waiters>,
}

#[derive(Default)]
struct Waiters {
    next_key: u64,
    wakers: BTreeMap<u64, Waker>,
    deadline: Option<Instant>,
}

impl DrainState {
    fn new() -> Self {
        DrainState {
            started: AtomicBool::new(false),
            waiters: Mutex::new(Waiters::default()),
        }
    }

    fn waiters(&self) -> MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Flips the token (once) and wakes every waiter.
    fn start(&self, deadline: Option<Instant>) {
        let wakers = {
            let mut w = self.waiters();
            if self.started.load(Ordering::Acquire) {
                return;
            }
            w.deadline = deadline;
            self.started.store(true, Ordering::Release);
            core::mem::take(&mut w.wakers)
        };
        for (_, waker) in wakers {
            waker.wake();
        }
    }
}

/// A handler's view of the shutdown: cheap to clone, checked with
/// [`is_draining`](Self::is_draining) or awaited with [`draining`](Self::draining).
///
/// When it flips, the handler should finish the request in flight and close the connection if
/// it is idle; whatever still runs at the deadline is aborted.
#[derive(Clone)]
pub struct Draining {
    state: Arc<DrainState>,
}

impl Draining {
    /// `true` once the drain has started (or the server stopped).
    #[must_use]
    pub fn is_draining(&self) -> bool {
        self.state.started.load(Ordering::Acquire)
    }

    /// When handlers still running are aborted, on the runtime's clock; `None` before the drain
    /// (and after a stop without a drain).
    #[must_use]
    pub fn deadline(&self) -> Option<Instant> {
        self.state.waiters().deadline
    }

    /// A future that resolves when the drain starts (at once if it has).
    pub fn draining(&self) -> DrainStarted {
        DrainStarted {
            state: Arc::clone(&self.state),
            key: None,
        }
    }

    /// Runs `fut` unless the drain starts first: `Some(output)` if `fut` finished, `None` if the
    /// drain started (and `fut` was dropped, so it must be cancel-safe, like a read into a
    /// buffer that keeps what it got). `fut` is polled first: a ready result always wins.
    pub async fn run_until_draining<F: Future>(&self, fut: F) -> Option<F::Output> {
        let mut fut = core::pin::pin!(fut);
        let mut drain = self.draining();
        core::future::poll_fn(|cx| {
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(v));
            }
            match Pin::new(&mut drain).poll(cx) {
                Poll::Ready(()) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }
}

impl fmt::Debug for Draining {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Draining")
            .field("is_draining", &self.is_draining())
            .finish_non_exhaustive()
    }
}

/// The future returned by [`Draining::draining`]: resolves when the drain starts.
#[must_use = "futures do nothing unless awaited"]
pub struct DrainStarted {
    state: Arc<DrainState>,
    key: Option<u64>,
}

impl Future for DrainStarted {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.state.started.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        let mut w = this.state.waiters();
        // `start` flips the flag under this lock: checked again here, no wake-up is lost.
        if this.state.started.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        let key = match this.key {
            Some(k) => k,
            None => {
                let k = w.next_key;
                w.next_key = w.next_key.wrapping_add(1);
                this.key = Some(k);
                k
            }
        };
        match w.wakers.get_mut(&key) {
            Some(old) if old.will_wake(cx.waker()) => {}
            Some(old) => old.clone_from(cx.waker()),
            None => {
                w.wakers.insert(key, cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

impl Drop for DrainStarted {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.state.waiters().wakers.remove(&key);
        }
    }
}

impl fmt::Debug for DrainStarted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DrainStarted").finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------------------------
// State shared by the serving task, the handlers and the handles.

struct Core {
    machine: Shutdown,
    /// Ticket ids of handlers that ended, for the serving task to forget their abort handles.
    finished: Vec<u64>,
    /// The serving task.
    waker: Option<Waker>,
    /// `ServeHandle::shutdown` calls not yet seen by the serving task.
    requested: u32,
    accept: AcceptStats,
    paused: bool,
    listener_failed: bool,
    /// Idle timeouts, read deadlines, reclamation and lingering close.
    conns: ConnTable,
}

struct Shared {
    core: Mutex<Core>,
    drain: Arc<DrainState>,
    limit: SharedLimit,
}

impl Shared {
    fn core(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Counts of a server: its accept loop, its connection limit and its shutdown machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
}

impl fmt::Display for ServeStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, l, s) = (&self.accept, &self.limit, &self.shutdown);
        write!(
            f,
            "accepted={} per_connection_errors={} shortages={} pauses={} paused_ms={} \
             max_connections={} in_use={} peak={} shed={} started={} in_flight={} \
             idle_closed={} deadline_expired={} reclaimed={} lingering={} clean={} \
             linger_timeouts={} resets={}",
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
        )
    }
}

/// What [`Server::serve`] returns once it has stopped.
#[derive(Debug)]
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

/// A cloneable handle on a [`Server`]: its live counts and health, a [`Draining`] token, and a
/// shutdown trigger. Get it with [`Server::handle`] before serving.
#[derive(Clone)]
pub struct ServeHandle {
    shared: Arc<Shared>,
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
    /// [`ShutdownConfig`]'s `drain_delay`: the server still accepts and serves then), the drain
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

// ---------------------------------------------------------------------------------------------
// Triggers.

enum Trigger {
    Once(Option<BoxFuture<()>>),
    Repeat {
        make: Box<dyn FnMut() -> BoxFuture<()> + Send>,
        armed: Option<BoxFuture<()>>,
    },
}

impl Trigger {
    /// Signals delivered by this trigger in this poll (at most 2: the second one stops).
    fn poll(&mut self, cx: &mut Context<'_>) -> u32 {
        match self {
            Trigger::Once(slot) => {
                let fired = match slot {
                    Some(fut) => fut.as_mut().poll(cx).is_ready(),
                    None => false,
                };
                if fired {
                    *slot = None;
                }
                u32::from(fired)
            }
            Trigger::Repeat { make, armed } => {
                let mut fired = 0;
                while fired < 2 {
                    let fut = armed.get_or_insert_with(&mut *make);
                    if fut.as_mut().poll(cx).is_pending() {
                        break;
                    }
                    *armed = None;
                    fired += 1;
                }
                fired
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The server.

/// A graceful server over a guarded listener. See the [module docs](self).
///
/// ```text
/// Server::new(incoming)            // or Server::with_runtime(incoming, rt)
///     .config(shutdown_config)     // grace period (default 30 s)
///     .shutdown_on(shutdown_signal) // and/or .shutdown_when(future)
///     .serve(handler).await        // -> ServeReport
/// ```
pub struct Server<L: Listener, R: Spawn> {
    incoming: Incoming<L, R>,
    rt: R,
    shared: Arc<Shared>,
    triggers: Vec<Trigger>,
    name: super::Name,
}

impl<L: Listener, R: Spawn + Default> Server<L, R> {
    /// A server over `incoming`, on the adapter's runtime. It has no trigger yet: add one with
    /// [`shutdown_on`](Self::shutdown_on), [`shutdown_when`](Self::shutdown_when) or
    /// [`ServeHandle::shutdown`].
    pub fn new(incoming: Incoming<L, R>) -> Self {
        Self::with_runtime(incoming, R::default())
    }
}

impl<L: Listener, R: Spawn> Server<L, R> {
    /// A server over `incoming`, reading time from and spawning on `rt`.
    pub fn with_runtime(incoming: Incoming<L, R>, rt: R) -> Self {
        let stats = incoming.stats();
        let shared = Arc::new(Shared {
            core: Mutex::new(Core {
                machine: Shutdown::new(ShutdownConfig::default(), rt.now()),
                finished: Vec::new(),
                waker: None,
                requested: 0,
                accept: stats.accept,
                paused: false,
                listener_failed: false,
                conns: ConnTable::new(ConnConfig::default(), rt.now()),
            }),
            drain: Arc::new(DrainState::new()),
            limit: incoming.limit().clone(),
        });
        Server {
            incoming,
            rt,
            shared,
            triggers: Vec::new(),
            name: super::Name::DEFAULT,
        }
    }

    /// Names this server and its listener (default `"default"`; see
    /// [`Name`](super::Name)): the `name` field of the shutdown and connection log lines (and
    /// of the accept loop's, through [`Incoming::named`]) and the `name` label of its metrics.
    #[must_use]
    pub fn named(mut self, name: impl Into<super::Name>) -> Self {
        let name = name.into();
        self.incoming.set_name(name.clone());
        self.name = name;
        self
    }

    /// The instance name (see [`named`](Self::named)).
    #[must_use]
    pub fn name(&self) -> &super::Name {
        &self.name
    }

    /// The shutdown configuration (grace period; default 30 s).
    #[must_use]
    pub fn config(self, config: ShutdownConfig) -> Self {
        self.shared.core().machine = Shutdown::new(config, self.rt.now());
        self
    }

    /// How connections are defended and closed: idle timeout (default 60 s), reclamation of
    /// the longest-idle connection at the limit (default: idle at least 1 s) and the lingering
    /// close (default 2 s, 1 MiB). See [`crate::conn`].
    #[must_use]
    pub fn conn_config(self, config: ConnConfig) -> Self {
        self.shared.core().conns = ConnTable::new(config, self.rt.now());
        self
    }

    /// Adds a repeating trigger: `signal()` is called for a future that resolves at the next
    /// signal, and called again once it has, so a second signal stops at once. Pass the
    /// adapter's `shutdown_signal` for SIGINT/SIGTERM. First called when serving starts.
    #[must_use]
    pub fn shutdown_on<F, Fut>(mut self, mut signal: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.triggers.push(Trigger::Repeat {
            make: Box::new(move || Box::pin(signal()) as BoxFuture<()>),
            armed: None,
        });
        self
    }

    /// Adds a one-shot trigger: the drain starts when `fut` resolves.
    #[must_use]
    pub fn shutdown_when<Fut>(mut self, fut: Fut) -> Self
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.triggers.push(Trigger::Once(Some(Box::pin(fut))));
        self
    }

    /// A handle for counts, health, a [`Draining`] token and a shutdown trigger.
    #[must_use]
    pub fn handle(&self) -> ServeHandle {
        ServeHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Serves until a trigger fires and the drain ends (see the [module docs](self)):
    /// spawns `handler(conn, draining)` for every connection, and closes each connection with
    /// a lingering close when its handler returns.
    pub async fn serve<H, Fut>(mut self, handler: H) -> ServeReport
    where
        L: ConnIo,
        H: FnMut(Conn<L>, Draining) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let reclaim = self
            .shared
            .core()
            .conns
            .config()
            .reclaim_min_idle()
            .is_some();
        self.incoming.set_reclaim(reclaim);
        let rt = self.rt.clone();
        let clock: Clock = Arc::new(move || rt.now());
        #[cfg(feature = "metrics")]
        let metrics = {
            let m = super::metrics::ServerMetrics::register(super::metrics::label(&self.name));
            m.phase.set(0.0);
            m.active.set(0.0);
            m
        };
        let mut run = Run {
            name: self.name,
            #[cfg(feature = "metrics")]
            metrics,
            incoming: Some(self.incoming),
            rt: self.rt,
            shared: self.shared,
            triggers: self.triggers,
            handler,
            tasks: BTreeMap::new(),
            alarm: Alarm::new(),
            sweep_alarm: Alarm::new(),
            next_sweep: None,
            clock,
            error: None,
        };
        core::future::poll_fn(move |cx| run.poll(cx)).await
    }
}

impl<L: Listener, R: Spawn> fmt::Debug for Server<L, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("incoming", &self.incoming)
            .field("triggers", &self.triggers.len())
            .finish_non_exhaustive()
    }
}

/// Reports a handler's end to the machines, even when it panics or is aborted.
struct TaskGuard<R: Runtime> {
    shared: Arc<Shared>,
    rt: R,
    ticket: Option<ShutdownPermit>,
    id: u64,
    /// How the connection ended, once its lingering close is over.
    end: Option<ConnEnd>,
    _permit: Permit,
}

impl<R: Runtime> TaskGuard<R> {
    /// After the handler: the lingering close (bounded by the drain's deadline), counted.
    async fn close<L: ConnIo>(&mut self, conn: &ConnShared<L::Conn>) {
        let now = self.rt.now();
        let drain_deadline = self.shared.drain.waiters().deadline;
        let (linger, cap) = {
            let mut core = self.shared.core();
            if let Some(reason) = conn.closed_for() {
                core.conns.on_close(now, self.id, reason);
            }
            let linger = core.conns.on_handler_done(now, self.id, drain_deadline);
            (linger, core.conns.config().linger_bytes())
        };
        let end = conn_io::finish::<L, R>(&self.rt, conn, linger, cap).await;
        self.end = Some(end);
    }
}

impl<R: Runtime> Drop for TaskGuard<R> {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        let id = ticket.id();
        let end = self.end.unwrap_or(ConnEnd::Aborted);
        let reset = end == ConnEnd::Reset;
        let waker = {
            let mut core = self.shared.core();
            let now = self.rt.now();
            core.conns.on_closed(now, self.id, end);
            let decision = if reset {
                core.machine.on_work_reset(now, ticket)
            } else {
                core.machine.on_work_finished(now, ticket)
            };
            if core.machine.is_stopped() && !matches!(decision, ShutdownDecision::StopNow { .. }) {
                return;
            }
            core.finished.push(id);
            let stopped = matches!(decision, ShutdownDecision::StopNow { .. });
            if stopped || core.finished.len() >= FINISHED_BATCH {
                core.waker.clone()
            } else {
                None
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// A connection's task: its abort handle and what it shares with the server.
type Task<L, R> = (<R as Spawn>::Handle, Arc<ConnShared<<L as Listener>::Conn>>);

struct Run<L: Listener, R: Spawn, H> {
    name: super::Name,
    #[cfg(feature = "metrics")]
    metrics: super::metrics::ServerMetrics,
    incoming: Option<Incoming<L, R>>,
    rt: R,
    shared: Arc<Shared>,
    triggers: Vec<Trigger>,
    handler: H,
    tasks: BTreeMap<u64, Task<L, R>>,
    alarm: Alarm<R>,
    /// The connections' sweep: activity and read deadlines into the table, expiries out.
    sweep_alarm: Alarm<R>,
    next_sweep: Option<Instant>,
    clock: Clock,
    error: Option<io::Error>,
}

impl<L, R, H, Fut> Run<L, R, H>
where
    L: ConnIo,
    R: Spawn,
    H: FnMut(Conn<L>, Draining) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ServeReport> {
        // 1. Signals: triggers and `ServeHandle::shutdown` calls.
        let mut signals = {
            let mut core = self.shared.core();
            match &mut core.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
            core::mem::take(&mut core.requested)
        };
        for trigger in &mut self.triggers {
            signals = signals.saturating_add(trigger.poll(cx));
        }
        for _ in 0..signals.min(2) {
            let decision = self.shared.core().machine.on_signal(self.rt.now());
            self.after_decision(decision);
        }

        // 2. Accept while running.
        if self.incoming.is_some() && self.shared.core().machine.is_accepting() {
            if let Poll::Ready(()) = self.poll_accept(cx) {
                cx.waker().wake_by_ref();
            }
        }

        // 3. The end of the drain delay, or the drain deadline, on the runtime's timer.
        let deadline = self.shared.core().machine.poll_timeout();
        if let Some(deadline) = deadline {
            if self.alarm.poll_until(&self.rt, deadline, cx).is_ready() {
                let state = {
                    let mut core = self.shared.core();
                    core.machine.handle_timeout(self.rt.now());
                    core.machine.state()
                };
                // The drain delay ended: the drain starts now (refuse, tell the handlers).
                if let ShutdownState::Draining { deadline } = state {
                    if self.incoming.is_some() {
                        self.close_listener();
                        self.shared.drain.start(deadline);
                    }
                }
                // Poll again so the next deadline (the drain's) is armed.
                cx.waker().wake_by_ref();
            }
        }

        // 4. The connections' defences: idle timeouts, read deadlines, reclamation.
        self.poll_conns(cx);

        // 5. Forget ended handlers; stop when the machine has.
        let (finished, stopped) = {
            let mut core = self.shared.core();
            (
                core::mem::take(&mut core.finished),
                core.machine.is_stopped(),
            )
        };
        for id in finished {
            self.tasks.remove(&id);
        }
        #[cfg(feature = "metrics")]
        self.metrics.active.set(self.tasks.len() as f64);
        if self.tasks.is_empty() {
            self.next_sweep = None;
        }
        self.emit_events();
        if stopped {
            return Poll::Ready(self.stop());
        }
        Poll::Pending
    }

    /// Takes up to a budget of connections; `Ready` when the budget ran out (poll again).
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(incoming) = self.incoming.as_mut() else {
            return Poll::Pending;
        };
        let mut outcome = Poll::Ready(());
        let mut ended = false;
        for _ in 0..ACCEPTS_PER_POLL {
            match Pin::new(&mut *incoming).poll_next(cx) {
                Poll::Pending => {
                    outcome = Poll::Pending;
                    break;
                }
                Poll::Ready(None) => {
                    ended = true;
                    outcome = Poll::Pending;
                    break;
                }
                Poll::Ready(Some(super::Accepted {
                    permit,
                    stream: conn,
                    peer,
                })) => {
                    let admission = self.shared.core().machine.try_acquire(self.rt.now());
                    let Ok(ticket) = admission else {
                        continue;
                    };
                    let id = ticket.id();
                    self.shared.core().conns.on_open(self.rt.now(), id);
                    let shared = {
                        let core = self.shared.core();
                        let config = core.conns.config();
                        Arc::new(ConnShared::new(
                            id,
                            Arc::clone(&self.clock),
                            config.linger_time(),
                            config.linger_bytes(),
                            Draining {
                                state: Arc::clone(&self.shared.drain),
                            },
                        ))
                    };
                    let mut guard = TaskGuard {
                        shared: Arc::clone(&self.shared),
                        rt: self.rt.clone(),
                        ticket: Some(ticket),
                        id,
                        end: None,
                        _permit: permit,
                    };
                    let draining = Draining {
                        state: Arc::clone(&self.shared.drain),
                    };
                    let work = (self.handler)(Conn::new(conn, peer, Arc::clone(&shared)), draining);
                    let task_conn = Arc::clone(&shared);
                    let handle = self.rt.spawn(async move {
                        work.await;
                        guard.close::<L>(&task_conn).await;
                    });
                    self.tasks.insert(id, (handle, shared));
                    #[cfg(feature = "metrics")]
                    {
                        self.metrics.accepted.increment(1);
                        self.metrics.active.set(self.tasks.len() as f64);
                    }
                }
            }
        }
        let (paused, stats) = (incoming.is_paused(), incoming.stats());
        {
            let mut core = self.shared.core();
            core.paused = paused;
            core.accept = stats.accept;
        }
        if ended {
            self.error = incoming.take_error();
            self.shared.core().listener_failed = true;
            let decision = self.shared.core().machine.begin_drain(self.rt.now());
            self.after_decision(decision);
        }
        outcome
    }

    /// Every [`SWEEP`] while connections are open: reads their activity and read deadlines
    /// into the table, closes those that expired, and reclaims for a waiting newcomer.
    fn poll_conns(&mut self, cx: &mut Context<'_>) {
        let waiting = self.incoming.as_ref().is_some_and(Incoming::waiting);
        if waiting {
            self.reclaim();
        }
        if self.tasks.is_empty() {
            return;
        }
        let now = self.rt.now();
        let next = *self.next_sweep.get_or_insert(now + SWEEP);
        if self.sweep_alarm.poll_until(&self.rt, next, cx).is_pending() {
            return;
        }
        let now = self.rt.now();
        self.sync(now);
        let closes = {
            let mut core = self.shared.core();
            core.conns.handle_timeout(now);
            let mut closes = Vec::new();
            while let Some(ConnEvent::Close { id, reason }) = core.conns.poll_event() {
                closes.push((id, reason));
            }
            closes
        };
        for (id, reason) in closes {
            if let Some((_, conn)) = self.tasks.get(&id) {
                conn.close(reason);
                #[cfg(feature = "tracing")]
                tracing::debug!(target: "keel::serve", name = self.name.as_str(), id, reason = reason.as_str(), "connection closed by the server");
            }
        }
        if waiting {
            self.reclaim();
        }
        let next = now + SWEEP;
        self.next_sweep = Some(next);
        // Registers the timer for the next sweep (it is in the future: this is `Pending`).
        let _ = self.sweep_alarm.poll_until(&self.rt, next, cx);
    }

    /// Reads every connection's activity and read deadline into the table.
    fn sync(&self, now: Instant) {
        let mut core = self.shared.core();
        for (&id, (_, conn)) in &self.tasks {
            // A request in flight (a `Busy` guard held) is activity, however quiet the socket.
            let active = if conn.is_busy() {
                now
            } else {
                conn.last_active()
            };
            core.conns.on_activity(now, id, active);
            core.conns.on_read_deadline(now, id, conn.read_deadline());
        }
    }

    /// A newcomer waits for a slot: close the connection idle the longest, if one is eligible
    /// and no reclaimed connection is still closing.
    fn reclaim(&mut self) {
        if self.shared.core().conns.reclaim_pending() {
            return;
        }
        let now = self.rt.now();
        self.sync(now);
        let victim = self.shared.core().conns.reclaim(now);
        if let Some((_, conn)) = victim.and_then(|id| self.tasks.get(&id)) {
            conn.close(crate::conn::CloseReason::Reclaimed);
            #[cfg(feature = "tracing")]
            tracing::debug!(target: "keel::serve", name = self.name.as_str(), id = conn.id, "idle connection reclaimed for a newcomer at the limit");
        }
    }

    fn after_decision(&mut self, decision: ShutdownDecision) {
        match decision {
            // The drain delay: still accepting; readiness reads the machine's state.
            ShutdownDecision::Continue | ShutdownDecision::Delay { .. } => {}
            ShutdownDecision::Drain { deadline, .. } => {
                #[cfg(feature = "metrics")]
                self.metrics.phase.set(1.0);
                self.close_listener();
                // `None`: a grace period past the end of the clock has no deadline to tell.
                self.shared.drain.start(deadline);
            }
            ShutdownDecision::StopNow { .. } => {
                #[cfg(feature = "metrics")]
                self.metrics.phase.set(2.0);
                self.close_listener();
                self.shared.drain.start(None);
            }
        }
    }

    /// Refuses what waits in the backlog (accept and close), then closes the listener so the
    /// kernel refuses the rest.
    fn close_listener(&mut self) {
        let Some(mut incoming) = self.incoming.take() else {
            return;
        };
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..BACKLOG_SWEEP {
            match Pin::new(&mut incoming).poll_next(&mut cx) {
                Poll::Ready(Some(accepted)) => {
                    let admission = self.shared.core().machine.try_acquire(self.rt.now());
                    drop(accepted);
                    if let Ok(ticket) = admission {
                        // Not reachable: the machine refuses once draining. Keep the counts
                        // honest if it ever is.
                        let _ = self
                            .shared
                            .core()
                            .machine
                            .on_work_finished(self.rt.now(), ticket);
                    }
                    #[cfg(feature = "tracing")]
                    tracing::debug!(
                        target: "keel::shutdown",
                        name = self.name.as_str(),
                        refused = self.shared.core().machine.stats().refused,
                        "queued connection refused at shutdown"
                    );
                }
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        // A newcomer held for reclamation is refused like the backlog.
        if let Some(conn) = incoming.take_waiting() {
            let admission = self.shared.core().machine.try_acquire(self.rt.now());
            drop(conn);
            if let Ok(ticket) = admission {
                // Not reachable (the machine refuses once draining), as above.
                let _ = self
                    .shared
                    .core()
                    .machine
                    .on_work_finished(self.rt.now(), ticket);
            }
        }
        let stats = incoming.stats();
        let mut core = self.shared.core();
        core.accept = stats.accept;
        core.paused = false;
        drop(core);
        drop(incoming);
    }

    fn stop(&mut self) -> ServeReport {
        for (_, (handle, _)) in core::mem::take(&mut self.tasks) {
            handle.abort();
        }
        self.shared.drain.start(None);
        self.close_listener();
        self.emit_events();
        #[cfg(feature = "metrics")]
        {
            self.metrics.phase.set(2.0);
            self.metrics.active.set(0.0);
        }
        let core = self.shared.core();
        ServeReport {
            summary: core.machine.summary(),
            stats: ServeStats {
                accept: core.accept,
                limit: self.shared.limit.stats(),
                shutdown: core.machine.stats(),
                conns: core.conns.stats(),
            },
            error: self.error.take(),
        }
    }

    fn emit_events(&mut self) {
        loop {
            let (event, summary) = {
                let mut core = self.shared.core();
                (core.machine.poll_event(), core.machine.summary())
            };
            match event {
                Some(event) => report(&self.name, event, summary, self.rt.now()),
                None => break,
            }
        }
    }
}

#[cfg(feature = "tracing")]
fn report(name: &super::Name, event: ShutdownEvent, summary: ShutdownSummary, now: Instant) {
    let name = name.as_str();
    let drained_ms = summary.drained_in.map_or(0, |d| d.as_millis() as u64);
    match event {
        ShutdownEvent::DelayStarted { until } => tracing::info!(
            target: "keel::shutdown",
            // u64::MAX: no end (a delay past the end of the clock).
            delay_ms = until.map_or(u64::MAX, |u| u.saturating_duration_since(now).as_millis() as u64),
            "drain delay started: not ready, still serving"
        ),
        ShutdownEvent::DrainStarted {
            deadline,
            in_flight,
        } => tracing::info!(
            target: "keel::shutdown",
            name,
            in_flight,
            // u64::MAX: no deadline (a grace period past the end of the clock).
            grace_ms = deadline.map_or(u64::MAX, |d| d.saturating_duration_since(now).as_millis() as u64),
            "drain started: refusing new connections"
        ),
        ShutdownEvent::Drained { completed } => tracing::info!(
            target: "keel::shutdown",
            name,
            completed,
            drained_ms,
            "drained: every in-flight connection finished"
        ),
        ShutdownEvent::DeadlineExceeded { aborted } => tracing::warn!(
            target: "keel::shutdown",
            name,
            aborted,
            drained_ms,
            "drain deadline passed: aborting the connections still open"
        ),
        ShutdownEvent::ForcedStop { aborted } => tracing::warn!(
            target: "keel::shutdown",
            name,
            aborted,
            drained_ms,
            "second signal: stopping at once"
        ),
    }
}

#[cfg(not(feature = "tracing"))]
fn report(_name: &super::Name, _event: ShutdownEvent, _summary: ShutdownSummary, _now: Instant) {}
