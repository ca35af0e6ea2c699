//! [`Draining`]: the handlers' view of the shutdown.

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::{Context, Poll, Waker};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::time::Instant;

pub(super) struct DrainState {
    pub(super) started: AtomicBool,
    waiters: Mutex<Waiters>,
}

#[derive(Default)]
pub(super) struct Waiters {
    next_key: u64,
    wakers: BTreeMap<u64, Waker>,
    pub(super) deadline: Option<Instant>,
}

impl DrainState {
    pub(super) fn new() -> Self {
        DrainState {
            started: AtomicBool::new(false),
            waiters: Mutex::new(Waiters::default()),
        }
    }

    pub(super) fn waiters(&self) -> MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Flips the token (once) and wakes every waiter.
    pub(super) fn start(&self, deadline: Option<Instant>) {
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
    pub(super) state: Arc<DrainState>,
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
    /// buffer that keeps what it got). `fut` is polled first: a ready result always wins. The
    /// returned [`UntilDraining`] holds `fut` once, in place.
    pub fn run_until_draining<F: Future>(&self, fut: F) -> UntilDraining<F> {
        UntilDraining {
            fut: Some(fut),
            drain: self.draining(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Draining::run_until_draining`]: the wrapped future's output, or `None`
    /// once the drain starts first (the wrapped future is dropped then, at once).
    #[must_use = "futures do nothing unless awaited"]
    pub struct UntilDraining<F> {
        #[pin]
        fut: Option<F>,
        drain: DrainStarted,
    }
}

impl<F> fmt::Debug for UntilDraining<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UntilDraining")
            .field("running", &self.fut.is_some())
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for UntilDraining<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(fut) = this.fut.as_mut().as_pin_mut() else {
            // The drain won before: it still has.
            return Poll::Ready(None);
        };
        if let Poll::Ready(v) = fut.poll(cx) {
            return Poll::Ready(Some(v));
        }
        match Pin::new(this.drain).poll(cx) {
            Poll::Ready(()) => {
                // Dropped now, as the `async fn` this replaces dropped it on return.
                this.fut.set(None);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
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
