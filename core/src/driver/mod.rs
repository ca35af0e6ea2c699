//! The runtime-agnostic async driver (feature `futures`).
//!
//! The accept loop, the timer driving and the call/retry/wait futures are written **once**, here,
//! generic over two small traits that each adapter crate implements for its runtime:
//!
//! - [`Runtime`]: a clock (`now()`) and a resettable [`Timer`];
//! - [`Listener`]: `poll_accept` plus a best-effort, non-blocking `shed` for shed mode.
//!
//! An adapter holds only that glue: `keel-tokio` maps them onto `tokio::net` and `tokio::time`
//! (so `tokio::time::pause()` works in tests), `keel-smol` and `keel-async-std` onto `async-io`.
//!
//! ```
//! use core::task::{Context, Poll};
//! use keel_core::driver::{Runtime, Timer};
//! use keel_core::time::Instant;
//!
//! /// A runtime whose clock the test moves by hand and whose timers fire when it passes them.
//! #[derive(Clone, Default)]
//! struct Manual(std::sync::Arc<std::sync::atomic::AtomicU64>);
//! struct ManualTimer { clock: Manual, deadline: Instant }
//! impl Timer for ManualTimer {
//!     fn reset(&mut self, deadline: Instant) { self.deadline = deadline; }
//!     fn poll_elapsed(&mut self, _: &mut Context<'_>) -> Poll<()> {
//!         if self.clock.now() >= self.deadline { Poll::Ready(()) } else { Poll::Pending }
//!     }
//! }
//! impl Runtime for Manual {
//!     type Timer = ManualTimer;
//!     fn now(&self) -> Instant { Instant::from_nanos(self.0.load(std::sync::atomic::Ordering::SeqCst)) }
//!     fn timer(&self, deadline: Instant) -> ManualTimer { ManualTimer { clock: self.clone(), deadline } }
//! }
//! let rt = Manual::default();
//! assert_eq!(rt.now(), Instant::ZERO);
//! ```

mod accept;

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

use crate::time::Instant;

pub use accept::{GuardConfig, GuardConfigBuilder, Incoming, IncomingStats, Listener};

/// A timer that can be re-armed without allocating: the runtime's sleep future.
///
/// The driver keeps one per loop, resets it only when the deadline changes, and checks
/// `now >= deadline` itself before trusting it (a timer may fire early or late).
pub trait Timer: Send + Unpin {
    /// Re-arms the timer to fire at `deadline` (on the runtime's clock, see [`Runtime::now`]).
    fn reset(&mut self, deadline: Instant);
    /// `Ready` once the deadline has passed; registers the task's waker otherwise.
    fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> Poll<()>;
}

/// A runtime's clock and timers, as the driver needs them.
pub trait Runtime: Clone + Send + Sync + Unpin + 'static {
    /// The runtime's timer (e.g. `tokio::time::Sleep`, `async_io::Timer`).
    type Timer: Timer;
    /// Now, on the runtime's monotonic clock, as a keel [`Instant`].
    fn now(&self) -> Instant;
    /// A timer armed for `deadline`.
    fn timer(&self, deadline: Instant) -> Self::Timer;
}

/// A lazily created, reusable timer: armed only when a deadline is set, re-armed only when the
/// deadline changes.
pub(crate) struct Alarm<R: Runtime> {
    timer: Option<R::Timer>,
    armed_for: Option<Instant>,
}

impl<R: Runtime> Alarm<R> {
    pub(crate) const fn new() -> Self {
        Alarm {
            timer: None,
            armed_for: None,
        }
    }

    /// Polls until `deadline` (checking `now` first): `Ready` once the runtime's clock passed it.
    pub(crate) fn poll_until(
        &mut self,
        rt: &R,
        deadline: Instant,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        if rt.now() >= deadline {
            return Poll::Ready(());
        }
        let timer = match &mut self.timer {
            Some(t) => {
                if self.armed_for != Some(deadline) {
                    t.reset(deadline);
                }
                t
            }
            None => self.timer.insert(rt.timer(deadline)),
        };
        self.armed_for = Some(deadline);
        match timer.poll_elapsed(cx) {
            Poll::Ready(()) => {
                if rt.now() >= deadline {
                    Poll::Ready(())
                } else {
                    // Fired early (coarse timer): re-arm and wait again.
                    timer.reset(deadline);
                    match timer.poll_elapsed(cx) {
                        Poll::Ready(()) => Poll::Ready(()),
                        Poll::Pending => Poll::Pending,
                    }
                }
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// `next()` for keel's streams, so adapters and applications need no stream-utilities crate.
pub trait StreamExt: futures_core::Stream + Unpin {
    /// The next item of the stream.
    fn next(&mut self) -> Next<'_, Self> {
        Next(self)
    }
}

impl<S: futures_core::Stream + Unpin + ?Sized> StreamExt for S {}

/// The future returned by [`StreamExt::next`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct Next<'a, S: ?Sized>(&'a mut S);

impl<S: futures_core::Stream + Unpin + ?Sized> Future for Next<'_, S> {
    type Output = Option<S::Item>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut *self.0).poll_next(cx)
    }
}
