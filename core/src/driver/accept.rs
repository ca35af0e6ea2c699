//! The guarded accept loop: a `Stream` of [`Accepted`] connections (permit, stream and the peer's
//! address) with errors classified,
//! shortages paused (with a growing pause and rate-limited reports) and the connection limit
//! applied before `accept` is even called.

use core::fmt;
use core::num::NonZeroUsize;
use core::pin::Pin;
use core::task::{Context, Poll};
use std::io;

use futures_core::Stream;

use super::{Alarm, Runtime};
use crate::accept::AcceptStats;
use crate::accept::{classify_io_error, AcceptConfig, AcceptDecision, AcceptEvent, AcceptLoop};
use crate::error::ConfigError;
use crate::limit::{LimitConfig, LimitStats, Overflow};
use crate::sync::limit::{LimitGuard, SharedLimit};

/// How many accepts (or per-connection errors) one `poll_next` handles before yielding to the
/// runtime, so a storm of per-connection errors cannot starve other tasks on the same thread.
const ACCEPTS_PER_POLL: u32 = 64;

/// A listening socket as the driver needs it. Adapters implement this for their runtime's TCP
/// and Unix listeners.
pub trait Listener: Unpin {
    /// An accepted connection (e.g. `tokio::net::TcpStream`).
    type Conn: Send + Unpin + 'static;

    /// The peer's address as `accept(2)` reported it (e.g. `std::net::SocketAddr` for TCP,
    /// the runtime's Unix socket address for Unix-domain listeners).
    type Addr: Send + Unpin + 'static;

    /// Accepts the next connection and its peer's address, registering the task's waker when
    /// none is ready.
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(Self::Conn, Self::Addr)>>;

    /// Shed mode: writes `farewell` to `conn` without blocking (best effort, as much as the
    /// socket buffer takes) and closes it.
    fn shed(&mut self, conn: Self::Conn, farewell: &'static [u8]);
}

/// Everything a guarded listener needs: the connection limit, what to do at the limit, the
/// accept-error pause policy and the listen backlog.
///
/// ```
/// use keel_core::driver::GuardConfig;
///
/// let config = GuardConfig::builder().max_connections(150).backlog(2048).build()?;
/// assert_eq!(config.max_connections(), 150);
/// assert!(GuardConfig::builder().max_connections(0).build().is_err());
/// # Ok::<(), keel_core::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct GuardConfig {
    limit: LimitConfig,
    accept: AcceptConfig,
    backlog: u32,
}

impl GuardConfig {
    /// Starts a builder with the defaults: 1024 connections, backpressure at the limit, the
    /// default accept pause policy ([`AcceptConfig::default`]) and a backlog of 1024.
    pub fn builder() -> GuardConfigBuilder {
        GuardConfigBuilder {
            max_connections: 1024,
            farewell: None,
            accept: AcceptConfig::default(),
            backlog: 1024,
        }
    }

    /// The connection limit.
    pub fn max_connections(&self) -> usize {
        self.limit.max()
    }

    /// The limit's configuration (maximum, overflow mode, farewell).
    pub fn limit(&self) -> &LimitConfig {
        &self.limit
    }

    /// The accept-error pause policy.
    pub fn accept(&self) -> &AcceptConfig {
        &self.accept
    }

    /// The listen backlog adapters pass to `listen(2)` when they bind.
    pub fn backlog(&self) -> u32 {
        self.backlog
    }
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            limit: LimitConfig::default(),
            accept: AcceptConfig::default(),
            backlog: 1024,
        }
    }
}

/// Builder for [`GuardConfig`].
#[derive(Clone, Debug)]
pub struct GuardConfigBuilder {
    max_connections: usize,
    farewell: Option<&'static [u8]>,
    accept: AcceptConfig,
    backlog: u32,
}

impl GuardConfigBuilder {
    /// The most connections held at once (default 1024). At the limit the listener stops
    /// accepting and the kernel backlog holds the rest, unless [`shed`](Self::shed) is set.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max;
        self
    }

    /// Shed mode: at the limit, accept each new connection, write `farewell` (may be empty) and
    /// close it at once, instead of leaving it in the backlog.
    pub fn shed(mut self, farewell: &'static [u8]) -> Self {
        self.farewell = Some(farewell);
        self
    }

    /// The accept-error pause policy (default [`AcceptConfig::default`]).
    pub fn pause(mut self, accept: AcceptConfig) -> Self {
        self.accept = accept;
        self
    }

    /// The listen backlog used when the adapter binds the socket (default 1024; the kernel caps
    /// it at `net.core.somaxconn`).
    pub fn backlog(mut self, backlog: u32) -> Self {
        self.backlog = backlog;
        self
    }

    /// Validates the configuration.
    pub fn build(self) -> Result<GuardConfig, ConfigError> {
        if self.backlog == 0 {
            return Err(ConfigError::Zero { field: "backlog" });
        }
        let mut limit = LimitConfig::builder().max(self.max_connections);
        if let Some(farewell) = self.farewell {
            limit = limit.overflow(Overflow::Shed).farewell(farewell);
        }
        Ok(GuardConfig {
            limit: limit.build()?,
            accept: self.accept,
            backlog: self.backlog,
        })
    }
}

/// One connection out of a guarded listener: the slot it holds, the stream and the peer's
/// address (what `accept(2)` reported, e.g. for per-IP limits, logs or axum's `ConnectInfo`).
///
/// Its fields are public so it destructures in a `while let`:
///
/// ```text
/// while let Some(Accepted { permit, stream, peer }) = incoming.next().await { .. }
/// ```
///
/// It is deliberately not `#[non_exhaustive]`, so that pattern works outside keel; a field
/// added later would be a breaking change, listed as such.
pub struct Accepted<L: Listener> {
    /// The connection's slot under the limit: keep it as long as the connection lives; dropping
    /// it frees the slot and wakes the acceptor.
    pub permit: LimitGuard,
    /// The accepted stream.
    pub stream: L::Conn,
    /// The peer's address.
    pub peer: L::Addr,
}

impl<L: Listener> Accepted<L> {
    /// The three parts, as a tuple.
    pub fn into_parts(self) -> (LimitGuard, L::Conn, L::Addr) {
        (self.permit, self.stream, self.peer)
    }
}

impl<L: Listener> fmt::Debug for Accepted<L>
where
    L::Conn: fmt::Debug,
    L::Addr: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Accepted")
            .field("permit", &self.permit)
            .field("stream", &self.stream)
            .field("peer", &self.peer)
            .finish()
    }
}

/// What a guarded listener has done so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct IncomingStats {
    /// The accept-loop machine's counts (accepted, errors, pauses, reports...).
    pub accept: AcceptStats,
    /// The connection limit's counts (in use, peak, shed...).
    pub limit: LimitStats,
}

/// A `Stream` of [`Accepted`] connections: accept errors handled, backpressure applied.
///
/// Take the next one with the inherent [`next`](Self::next) (`incoming.next().await`, no
/// stream-utilities trait needed, and no clash with `futures`' or `futures-lite`'s `StreamExt`
/// when one is in scope: an inherent method wins); the `Stream` impl is there for combinators.
///
/// - Per-connection errors (a peer that reset before `accept`) are counted and skipped.
/// - Resource shortages (EMFILE, ENFILE, ENOBUFS, ENOMEM) pause accepting on the runtime's timer,
///   with a pause that grows while they repeat and resets after a success; each report is
///   logged at `warn` (feature `tracing`) with the OS error text and a hint, at most once per
///   report interval, with a count of the repeats suppressed in between.
/// - A fatal error (the listener itself is broken) ends the stream; [`Incoming::take_error`]
///   returns it.
/// - At the connection limit it stops calling `accept` until a [`LimitGuard`] is dropped (the
///   kernel backlog holds the rest), or in shed mode accepts, says the farewell and closes.
pub struct Incoming<L: Listener, R: Runtime> {
    listener: L,
    rt: R,
    machine: AcceptLoop,
    limit: SharedLimit,
    shed: Option<&'static [u8]>,
    unpermitted: Option<(L::Conn, L::Addr)>,
    /// At the limit, accept one extra connection (held without a permit) so the server can
    /// reclaim an idle slot for it ([`Server`](super::Server) turns this on).
    reclaim: bool,
    alarm: Alarm<R>,
    error: Option<io::Error>,
    done: bool,
    name: super::Name,
}

impl<L: Listener, R: Runtime> Incoming<L, R> {
    /// Wraps `listener`, reading time from `rt`.
    pub fn new(listener: L, rt: R, config: &GuardConfig) -> Self {
        let now = rt.now();
        let shed = match config.limit.overflow() {
            Overflow::Shed => Some(config.limit.farewell()),
            Overflow::Backpressure => None,
        };
        Incoming {
            machine: AcceptLoop::new(config.accept, now),
            limit: SharedLimit::new(config.limit.clone()),
            listener,
            rt,
            shed,
            unpermitted: None,
            reclaim: false,
            alarm: Alarm::new(),
            error: None,
            done: false,
            name: super::Name::DEFAULT,
        }
    }

    /// Names this listener (default `"default"`; see [`Name`](super::Name)): the `name` field
    /// of its log lines and the `name` label of `keel_accept_errors_total` (feature `metrics`).
    /// [`Server::named`](super::Server::named) names its listener too.
    #[must_use]
    pub fn named(mut self, name: impl Into<super::Name>) -> Self {
        self.name = name.into();
        self
    }

    pub(crate) fn set_name(&mut self, name: super::Name) {
        self.name = name;
    }

    /// The shared connection limit: clone it to resize at run time or to read its counts.
    pub fn limit(&self) -> &SharedLimit {
        &self.limit
    }

    /// Changes the connection limit at run time. Connections above a lowered limit keep their
    /// permits; new ones wait until the count is below the new limit.
    pub fn set_max_connections(&self, max: NonZeroUsize) {
        self.limit.set_max(max);
    }

    /// The next accepted connection; `None` once the stream has ended (a fatal listener
    /// error: see [`take_error`](Self::take_error)). Cancel-safe: a connection accepted but
    /// still waiting for its slot stays queued inside for the next call.
    #[allow(clippy::should_implement_trait)] // async: the `Stream` impl is the trait form
    pub fn next(&mut self) -> super::Next<'_, Self> {
        super::Next::new(self)
    }

    /// The underlying listener.
    pub fn get_ref(&self) -> &L {
        &self.listener
    }

    /// Counts so far.
    pub fn stats(&self) -> IncomingStats {
        IncomingStats {
            accept: self.machine.stats(),
            limit: self.limit.stats(),
        }
    }

    /// The fatal error that ended the stream, if any.
    pub fn take_error(&mut self) -> Option<io::Error> {
        self.error.take()
    }

    /// `true` while a connection has been accepted but waits for a slot (at the limit, for
    /// reclamation or for a permit someone else took).
    pub fn waiting(&self) -> bool {
        self.unpermitted.is_some()
    }

    /// The connection waiting for a slot, taken out (the server refuses it when the drain
    /// starts).
    pub(crate) fn take_waiting(&mut self) -> Option<(L::Conn, L::Addr)> {
        self.unpermitted.take()
    }

    /// At the limit (backpressure mode), accept at most one more connection and hold it
    /// without a permit until a slot frees, instead of leaving it in the kernel backlog: the
    /// server, seeing it [`waiting`](Self::waiting), reclaims the longest-idle connection's
    /// slot for it. Off by default; [`Server`](super::Server) turns it on when its connection
    /// config reclaims.
    pub fn set_reclaim(&mut self, reclaim: bool) {
        self.reclaim = reclaim;
    }

    /// Whether accepting is paused on a resource shortage.
    pub fn is_paused(&self) -> bool {
        self.machine.is_paused(self.rt.now())
    }

    fn drain_events(&mut self, error: Option<&io::Error>) {
        while let Some(event) = self.machine.poll_event() {
            report(&self.name, &event, error);
        }
    }
}

impl<L: Listener, R: Runtime> fmt::Debug for Incoming<L, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<L: Listener, R: Runtime> Stream for Incoming<L, R> {
    type Item = Accepted<L>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        for _ in 0..ACCEPTS_PER_POLL {
            if this.done {
                return Poll::Ready(None);
            }
            // 1. A shortage pause: wait on the runtime's timer, not in a loop.
            if let Some(deadline) = this.machine.poll_timeout() {
                if this.alarm.poll_until(&this.rt, deadline, cx).is_pending() {
                    return Poll::Pending;
                }
                this.machine.handle_timeout(this.rt.now());
                continue;
            }
            // 2. A connection accepted while someone else sharing the limit took the last slot:
            //    it waits here for its permit (the acceptor holds nothing speculatively).
            if let Some((stream, peer)) = this.unpermitted.take() {
                match this.limit.poll_acquire(cx) {
                    Poll::Ready(permit) => {
                        return Poll::Ready(Some(Accepted {
                            permit,
                            stream,
                            peer,
                        }))
                    }
                    Poll::Pending => {
                        this.unpermitted = Some((stream, peer));
                        return Poll::Pending;
                    }
                }
            }
            // 3. Backpressure: at the limit, do not call accept at all (the kernel backlog
            //    holds the rest) until a permit is dropped. Shed mode accepts to say goodbye.
            //    With reclamation, one extra connection is accepted and held (step 2) while
            //    the server frees the slot of the connection idle the longest.
            if this.shed.is_none() && this.limit.available() == 0 {
                match this.limit.poll_acquire(cx) {
                    // A slot freed between the check and the registration: give it back and
                    // accept; the permit is taken once a connection is really there.
                    Poll::Ready(permit) => drop(permit),
                    Poll::Pending if this.reclaim => {}
                    Poll::Pending => return Poll::Pending,
                }
            }
            // 4. Accept, then take the permit.
            match this.listener.poll_accept(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok((stream, peer))) => {
                    this.machine.on_accepted(this.rt.now());
                    this.drain_events(None);
                    match (this.limit.try_acquire(this.rt.now()), this.shed) {
                        (Ok(permit), _) => {
                            return Poll::Ready(Some(Accepted {
                                permit,
                                stream,
                                peer,
                            }))
                        }
                        (Err(_), Some(farewell)) => {
                            this.listener.shed(stream, farewell);
                            this.limit.on_shed(this.rt.now());
                            #[cfg(feature = "tracing")]
                            tracing::debug!(
                                target: "keel::accept",
                                name = this.name.as_str(),
                                max_connections = this.limit.max(),
                                "connection shed at the limit"
                            );
                        }
                        (Err(_), None) => this.unpermitted = Some((stream, peer)),
                    }
                }
                Poll::Ready(Err(e)) => {
                    let kind = classify_io_error(&e);
                    #[cfg(feature = "metrics")]
                    super::metrics::accept_error(&this.name, kind);
                    let decision = this.machine.on_error(this.rt.now(), kind);
                    this.drain_events(Some(&e));
                    match decision {
                        AcceptDecision::Continue => {
                            #[cfg(feature = "tracing")]
                            tracing::debug!(target: "keel::accept", name = this.name.as_str(), error = %e, "per-connection accept error skipped");
                        }
                        AcceptDecision::PauseUntil(_) => {}
                        AcceptDecision::Stop => {
                            this.done = true;
                            this.error = Some(e);
                            return Poll::Ready(None);
                        }
                    }
                }
            }
        }
        // Budget spent: let other tasks run, then come straight back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(feature = "tracing")]
fn report(name: &super::Name, event: &AcceptEvent, error: Option<&io::Error>) {
    let name = name.as_str();
    match *event {
        AcceptEvent::Shortage {
            shortage,
            pause,
            suppressed,
            ..
        } => {
            let error = error.map(|e| e as &dyn core::error::Error);
            tracing::warn!(
                target: "keel::accept",
                name,
                error = error,
                shortage = shortage.as_str(),
                pause_ms = pause.as_millis() as u64,
                suppressed,
                hint = shortage.hint(),
                "accept paused on a resource shortage"
            );
        }
        AcceptEvent::Resumed {
            paused_for,
            suppressed,
        } => {
            tracing::info!(
                target: "keel::accept",
                name,
                paused_ms = paused_for.as_millis() as u64,
                suppressed,
                "accepting resumed after a resource shortage"
            );
        }
        AcceptEvent::Fatal => {
            let error = error.map(|e| e as &dyn core::error::Error);
            tracing::error!(target: "keel::accept", name, error = error, "listener failed; accept loop stopped");
        }
        #[allow(unreachable_patterns)]
        _ => {}
    }
}

#[cfg(not(feature = "tracing"))]
fn report(_name: &super::Name, _event: &AcceptEvent, _error: Option<&io::Error>) {}
