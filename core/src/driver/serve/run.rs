//! The serving task: accepts, spawns a task per connection, sweeps the connections' defences,
//! drives the shutdown machine and stops with a [`ServeReport`].

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};
use std::io;

use futures_core::Stream;

use super::handle::Shared;
use super::task::TaskGuard;
use super::trigger::Trigger;
use super::{Draining, ServeReport, ServeStats};
use crate::conn::ConnEvent;
use crate::driver::conn::{activity_granularity, Clock, Conn, ConnIo, ConnShared, Sweep};
use crate::driver::{AbortHandle, Alarm, Incoming, Listener, Spawn};
use crate::shutdown::{ShutdownDecision, ShutdownEvent, ShutdownState, ShutdownSummary};
use crate::time::Instant;

/// Connections taken from the stream in one poll before yielding to the runtime.
const ACCEPTS_PER_POLL: u32 = 64;
/// Queued connections refused (accepted and closed) when the drain starts, at most.
const BACKLOG_SWEEP: u32 = 1024;

/// A connection's task: its abort handle and what it shares with the server.
pub(super) type Task<L, R> = (<R as Spawn>::Handle, Arc<ConnShared<<L as Listener>::Conn>>);

pub(super) struct Run<L: Listener, R: Spawn, H> {
    pub(super) name: crate::driver::Name,
    #[cfg(feature = "metrics")]
    pub(super) metrics: crate::driver::metrics::ServerMetrics,
    pub(super) incoming: Option<Incoming<L, R>>,
    pub(super) rt: R,
    pub(super) shared: Arc<Shared>,
    pub(super) triggers: Vec<Trigger>,
    pub(super) handler: H,
    pub(super) tasks: BTreeMap<u64, Task<L, R>>,
    pub(super) alarm: Alarm<R>,
    /// The connections' sweep: activity and read deadlines into the table, expiries out. Armed
    /// only while some connection has a deadline (idle timeout, read deadline, or a
    /// reclamation a waiting newcomer may get), at the earliest one.
    pub(super) sweep_alarm: Alarm<R>,
    /// The instant `sweep_alarm` is armed for (`None`: no timer).
    pub(super) next_sweep: Option<Instant>,
    /// What the connections see of the sweep: they lower it when they arm an earlier deadline.
    pub(super) sweep: Arc<Sweep>,
    pub(super) clock: Clock,
    pub(super) error: Option<io::Error>,
}

impl<L, R, H, Fut> Run<L, R, H>
where
    L: ConnIo,
    R: Spawn,
    H: FnMut(Conn<L>, Draining) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    pub(super) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ServeReport> {
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
                Poll::Ready(Some(crate::driver::Accepted {
                    permit,
                    stream: conn,
                    peer,
                })) => {
                    let admission = self.shared.core().machine.try_acquire(self.rt.now());
                    let Ok(ticket) = admission else {
                        continue;
                    };
                    let id = ticket.id();
                    let now = self.rt.now();
                    let shared = {
                        let mut core = self.shared.core();
                        core.conns.on_open(now, id);
                        let config = core.conns.config();
                        // Its idle deadline: the sweep is due no later.
                        if let Some(idle) = config.idle_timeout() {
                            self.sweep.lower_to(now.saturating_add(idle));
                        }
                        let granularity = activity_granularity(
                            config.idle_timeout(),
                            config.reclaim_min_idle().is_some(),
                        );
                        Arc::new(ConnShared::new(
                            id,
                            Arc::clone(&self.clock),
                            Arc::clone(&self.sweep),
                            granularity,
                            config.linger_time(),
                            config.linger_bytes(),
                            Draining {
                                state: Arc::clone(&self.shared.drain),
                            },
                            Arc::clone(&self.shared.requests),
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

    /// The connections' defences: when the sweep is due (the earliest idle timeout or read
    /// deadline the table knows, or one a handler armed since), reads the connections'
    /// activity and read deadlines into the table, closes those that expired, reclaims for a
    /// waiting newcomer, and re-arms at the table's next deadline. No timer while nothing has
    /// a deadline.
    fn poll_conns(&mut self, cx: &mut Context<'_>) {
        self.sweep.register(cx);
        let waiting = self.incoming.as_ref().is_some_and(Incoming::waiting);
        if waiting {
            self.reclaim();
        }
        if self.tasks.is_empty() {
            self.sweep.begin();
            self.disarm();
            return;
        }
        let Some(at) = self.sweep.at() else {
            self.disarm();
            return;
        };
        self.next_sweep = Some(at);
        if self.sweep_alarm.poll_until(&self.rt, at, cx).is_pending() {
            return;
        }
        // Due. Every deadline a handler arms from here on lowers the sweep again (see `Sweep`).
        self.sweep.begin();
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
        let next = {
            let core = self.shared.core();
            let reclaim = if waiting {
                core.conns.reclaim_at()
            } else {
                None
            };
            match (core.conns.poll_timeout(), reclaim) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        };
        if let Some(next) = next {
            self.sweep.lower_to(next);
        }
        match self.sweep.at() {
            Some(at) => {
                self.next_sweep = Some(at);
                if self.sweep_alarm.poll_until(&self.rt, at, cx).is_ready() {
                    // Already due again (a deadline armed meanwhile has passed): sweep again
                    // on the next poll rather than loop here.
                    cx.waker().wake_by_ref();
                }
            }
            None => self.disarm(),
        }
    }

    /// No deadline: drops the sweep's timer.
    fn disarm(&mut self) {
        if self.next_sweep.take().is_some() {
            self.sweep_alarm = Alarm::new();
        }
    }

    /// Reads every connection's activity and read deadline into the table.
    fn sync(&self, now: Instant) {
        let mut core = self.shared.core();
        for (&id, (_, conn)) in &self.tasks {
            conn.look(now);
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
        let (victim, retry_at) = {
            let mut core = self.shared.core();
            let victim = core.conns.reclaim(now);
            (victim, core.conns.reclaim_at())
        };
        // None eligible yet: the sweep is due when the longest-idle one will be.
        if let Some(at) = retry_at.filter(|_| victim.is_none()) {
            self.sweep.lower_to(at);
        }
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
                    self.refuse(accepted);
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
            self.refuse(conn);
        }
        let stats = incoming.stats();
        let mut core = self.shared.core();
        core.accept = stats.accept;
        core.paused = false;
        drop(core);
        drop(incoming);
    }

    /// Refuses one connection accepted while draining: asks the machine (which counts it as
    /// refused), then closes it.
    fn refuse<C>(&self, conn: C) {
        let admission = self.shared.core().machine.try_acquire(self.rt.now());
        drop(conn);
        if let Ok(ticket) = admission {
            // Not reachable: the machine refuses once draining. Keep the counts honest if it
            // ever is.
            let _ = self
                .shared
                .core()
                .machine
                .on_work_finished(self.rt.now(), ticket);
        }
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
                requests: self.shared.requests.stats(),
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
fn report(
    name: &crate::driver::Name,
    event: ShutdownEvent,
    summary: ShutdownSummary,
    now: Instant,
) {
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
fn report(
    _name: &crate::driver::Name,
    _event: ShutdownEvent,
    _summary: ShutdownSummary,
    _now: Instant,
) {
}
