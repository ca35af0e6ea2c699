//! The end of a connection's task: its lingering close, reported to the machines even when
//! the handler panics or is aborted.

use alloc::sync::Arc;

use super::handle::Shared;
use crate::conn::ConnEnd;
use crate::driver::conn::{self as conn_io, ConnIo, ConnShared};
use crate::driver::Runtime;
use crate::shutdown::{ShutdownDecision, ShutdownPermit};
use crate::sync::limit::Permit;

/// Ended handlers reported before the serving task is woken to forget their handles.
const FINISHED_BATCH: usize = 32;

/// Reports a handler's end to the machines, even when it panics or is aborted.
pub(super) struct TaskGuard<R: Runtime> {
    pub(super) shared: Arc<Shared>,
    pub(super) rt: R,
    pub(super) ticket: Option<ShutdownPermit>,
    pub(super) id: u64,
    /// How the connection ended, once its lingering close is over.
    pub(super) end: Option<ConnEnd>,
    pub(super) _permit: Permit,
}

impl<R: Runtime> TaskGuard<R> {
    /// After the handler: the lingering close (bounded by the drain's deadline), counted.
    pub(super) async fn close<L: ConnIo>(&mut self, conn: &ConnShared<L::Conn>) {
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
