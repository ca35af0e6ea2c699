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
//! (at least 1 s) is closed for it. The server's timer is armed at the earliest of these
//! deadlines (a handler arming an earlier read deadline re-arms it), and not at all while no
//! connection has one. Read deadlines are exact; activity is seen at most one activity
//! granularity late (an eighth of the idle timeout, at most
//! [`ACTIVITY_GRANULARITY`](super::conn::ACTIVITY_GRANULARITY), 1 s; see [`Conn`]), never
//! early.
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
//! 4. **At the deadline**, abort the handlers still running
//!    ([`AbortHandle::abort`](super::AbortHandle::abort)) and count them as `aborted`. A
//!    **second** trigger during the drain does the same at once.
//!
//! What `aborted` counts, on purpose: a connection is one unit of work from its accept until
//! its close is over, **lingering close included**. The lingering close is what gets the reply
//! to the client (closing with unread input makes the kernel answer with a reset, and the peer
//! drops the reply it has not read yet), so a connection cut at the deadline or by a second
//! trigger while it lingers is `aborted`, although its handler returned: the server cut its
//! close short and cannot know the peer read the reply (its connection counts show the end as
//! aborted, not as a clean close). Likewise a connection still open because its handler has not
//! acted on the drain yet (an idle keep-alive waiting for the next request) is `aborted`: the
//! server cannot tell a handler waiting idle from one reading a request, and it did cut the
//! connection. A handler that closes its idle connections when [`Draining`] flips (as
//! keel-tokio's HTTP server does at once) turns them into `completed` within moments of the
//! first trigger; only a second trigger sooner than that, or a handler that ignores the drain,
//! leaves them to be aborted.
//!
//! It returns a [`ServeReport`]: the [`ShutdownSummary`](crate::shutdown::ShutdownSummary)
//! (completed, reset, aborted, refused, drained_in; a connection whose close still ended in a
//! reset is counted as `reset`, never as `completed`), the accept, limit, shutdown and connection counts (idle closed, deadlines
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

mod drain;
mod handle;
mod run;
mod task;
mod trigger;

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::future::Future;
use std::sync::Mutex;

pub use drain::{DrainStarted, Draining, UntilDraining};
pub(crate) use handle::RequestCounts;
pub use handle::{RequestStats, RequestTimeouts, ServeHandle, ServeReport, ServeStats};

use super::conn::{Clock, Conn, ConnIo, Sweep};
use super::{Alarm, BoxFuture, Incoming, Listener, Spawn};
use crate::conn::{ConnConfig, ConnTable};
use crate::shutdown::{Shutdown, ShutdownConfig};
use drain::DrainState;
use handle::{Core, Shared};
use run::Run;
use trigger::Trigger;

/// How long after the server last closed an idle or slow client itself health still reports
/// `clients: closing idle or slow clients` (degraded, still ready).
pub const DEFENCE_WINDOW: core::time::Duration = core::time::Duration::from_secs(10);

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
            requests: Arc::default(),
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
            let m = crate::driver::metrics::ServerMetrics::register(crate::driver::metrics::label(
                &self.name,
            ));
            m.phase.set(0.0);
            m.active.set(0.0);
            let requests = crate::driver::metrics::RequestMetrics::register(
                crate::driver::metrics::label(&self.name),
            );
            // Serving twice is not possible (`serve` takes the server): set once.
            let _ = self.shared.requests.metrics.set(requests);
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
            sweep: Arc::new(Sweep::new()),
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
