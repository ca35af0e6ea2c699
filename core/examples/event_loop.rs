//! # keel's machines in a hand-written event loop: an echo server with no async runtime
//!
//! keel-core is sans-IO: its machines never read a clock, sleep, or touch a socket. This
//! program is the use they exist for. It is the adapters' guarded echo server (the same flags,
//! the same `HEALTH` line, the same `stats:` line and exit codes) built on a readiness loop
//! ([`mio`]) and five machines, each told what happened and asked what to do:
//!
//! | machine | asked | answers |
//! | --- | --- | --- |
//! | [`AcceptLoop`] | `on_accepted`, `on_error(classify_io_error(e))` | accept again, pause until `t` (EMFILE...), or stop |
//! | [`Limit`] | `try_acquire`, `on_release` | a connection permit, or "full: leave the rest in the kernel backlog" |
//! | [`ConnTable`] | `on_open`, `on_activity`, `on_read_deadline`, `on_handler_done`, `on_closed`, `reclaim` | close idle and slow clients, how long to linger |
//! | [`KeyedGcra`] | `try_acquire(now, client IP)` per line | answer now, or `Rejected { retry_at: Some(t), .. }`: read nothing more from that connection until `t` |
//! | [`Shutdown`] | `try_acquire`, `on_work_finished`, `on_signal` | refuse, drain until the deadline, stop |
//!
//! ## The loop
//!
//! ```text
//! loop {
//!     now = clock.now()                           // the only clock read: keel never reads one
//!     machine.handle_timeout(now) for each one    // pauses end, idle clients close, the drain ends
//!     act on their poll_event()s                  // log, close connections, abort
//!     accept while the machines allow it
//!     timeout = min(machine.poll_timeout(), ...)  // None: sleep until a socket or a signal
//!     mio.poll(timeout)                           // the only place the program waits
//!     now = clock.now(); handle each ready socket
//! }
//! ```
//!
//! The sleep is the minimum of the machines' `poll_timeout()`s and of the deadlines the loop
//! keeps itself from the machines' answers (a rate-limited line's `retry_at`, a lingering
//! close's deadline). Every machine promises that after `handle_timeout(t)` its `poll_timeout()`
//! is `None` or later than `t`, so the loop never spins: under the seed-002 storm (open-files
//! limit 100, 1000 clients) it sleeps through each accept pause and uses a few percent of a core.
//!
//! Sockets are edge-triggered, so each connection remembers whether it may still be readable
//! or writable (until an operation returns `WouldBlock`), and the listener whether its backlog
//! may hold connections. That is what lets the loop stop accepting (a pause, a full limit) and
//! come back later without a new readiness event.
//!
//! ## The protocol
//!
//! Each line is echoed, except `HEALTH`, answered with the health line
//! (`ready=true live=true reasons=[]`). A line is bounded by `--max-line` bytes (a longer one
//! gets `ERR line longer than N bytes` and the connection is closed) and by `--line-timeout`
//! seconds from its first byte; a connection silent for `--idle-timeout` seconds is closed.
//! Each client IP (IPv6 by /64) may send `--rate-per-ip` lines a second (burst as many); over
//! it, its connections are not read until the limiter's `retry_at` (TCP flow control pushes
//! back on the client; nothing is dropped). A connection ends with a lingering close: shut the
//! write side, discard what the peer still sends until its EOF (at most 2 s, 1 MiB).
//!
//! On SIGINT or SIGTERM it first waits `--drain-delay` seconds (default 0) still serving while
//! `HEALTH` answers `ready=false` (the Kubernetes drain delay: the machine's `Delaying` state,
//! ended by its `handle_timeout`, after which the loop drains as below). Then it stops
//! accepting (queued connections are refused, then the listener is closed), answers the lines in flight, closes idle connections, aborts what still runs
//! after `--grace` seconds (a second signal stops at once), prints the `stats:` line and
//! exits 0 (1 if the listener failed, 2 on a bad flag).
//!
//! ```text
//! cargo run -p keel-core --example event_loop -- --addr 127.0.0.1:7878
//! cargo run --release -p keel-testkit --example storm_event_loop   # the seed-002 storm against it
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::num::NonZeroU32;
use std::process::ExitCode;
use std::time::Duration;

use keel_core::accept::{classify_io_error, AcceptConfig, AcceptDecision, AcceptEvent, AcceptLoop};
use keel_core::conn::{CloseReason, ConnConfig, ConnEnd, ConnEvent, ConnTable};
use keel_core::health::{ComponentState, HealthReport, Reason};
use keel_core::limit::{Limit, LimitConfig, LimitPermit};
use keel_core::rate::ip::IpKeyer;
use keel_core::rate::keyed::{KeyedConfig, KeyedGcra};
use keel_core::rate::Quota;
use keel_core::shutdown::{
    Shutdown, ShutdownConfig, ShutdownDecision, ShutdownEvent, ShutdownPermit,
};
use keel_core::Instant;
use mio::net::{TcpListener, TcpStream};
use mio::unix::pipe;
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(0);
const SIGINT: Token = Token(1);
const SIGTERM: Token = Token(2);
/// Connection ids (and their mio tokens) start here.
const FIRST_CONNECTION: u64 = 3;
/// Bytes read from a socket at once.
const READ_CHUNK: usize = 16 * 1024;
/// A connection's pending output above which no more lines are answered (a slow reader).
const OUTPUT_HIGH_WATER: usize = 64 * 1024;
/// The listen backlog: the kernel holds this many connections while the loop does not accept
/// (at the limit, during a pause); as the adapters' `GuardConfig` default (capped by
/// `net.core.somaxconn`).
const BACKLOG: i32 = 1024;
/// Queued connections refused when the drain starts, at most (as the adapters' server).
const BACKLOG_SWEEP: u32 = 1024;
/// How long after the server closed an idle or slow client health reports it (as the adapters).
const DEFENCE_WINDOW: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let opts = match Options::parse(std::env::args().skip(1)) {
        Ok(opts) => opts,
        Err(e) => {
            eprintln!("event_loop: {e}");
            return ExitCode::from(2);
        }
    };
    match Server::bind(&opts).and_then(Server::run) {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(_listener_error)) => ExitCode::from(1),
        Err(e) => {
            eprintln!("event_loop: {e}");
            ExitCode::from(1)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The clock: the one place time is read.

/// keel's [`Instant`] is nanoseconds on a monotonic clock whose origin the caller picks: here,
/// the start of the program.
struct Clock(std::time::Instant);

impl Clock {
    fn now(&self) -> Instant {
        let nanos = self.0.elapsed().as_nanos();
        Instant::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

// ---------------------------------------------------------------------------------------------
// Flags.

struct Options {
    addr: String,
    max_connections: usize,
    grace: Duration,
    drain_delay: Duration,
    idle_timeout: Option<Duration>,
    max_line: usize,
    line_timeout: Option<Duration>,
    rate_per_ip: Option<NonZeroU32>,
}

impl Options {
    fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
        let mut opts = Options {
            addr: "127.0.0.1:7878".into(),
            max_connections: 1024,
            grace: Duration::from_secs(5),
            drain_delay: Duration::ZERO,
            idle_timeout: Some(Duration::from_secs(60)),
            max_line: 64 * 1024,
            line_timeout: Some(Duration::from_secs(10)),
            rate_per_ip: NonZeroU32::new(1000),
        };
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let value = args.next().ok_or(format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--addr" => opts.addr = value,
                "--max-connections" => opts.max_connections = count(&flag, &value)?,
                "--grace" => opts.grace = seconds(&flag, &value)?,
                "--drain-delay" => opts.drain_delay = seconds(&flag, &value)?,
                "--idle-timeout" => opts.idle_timeout = Some(seconds(&flag, &value)?),
                "--line-timeout" => opts.line_timeout = Some(seconds(&flag, &value)?),
                "--max-line" => {
                    opts.max_line = count(&flag, &value)?;
                    if opts.max_line == 0 {
                        return Err("--max-line: a line needs at least 1 byte".into());
                    }
                }
                "--rate-per-ip" => opts.rate_per_ip = NonZeroU32::new(count(&flag, &value)?),
                _ => {
                    return Err(format!(
                        "unknown argument `{flag}` (try --addr, --max-connections, --grace, --drain-delay, \
                         --idle-timeout, --max-line, --line-timeout, --rate-per-ip)"
                    ))
                }
            }
        }
        // 0 turns a timeout off, as in the adapters' echo examples.
        opts.idle_timeout = opts.idle_timeout.filter(|d| !d.is_zero());
        opts.line_timeout = opts.line_timeout.filter(|d| !d.is_zero());
        Ok(opts)
    }
}

fn seconds(flag: &str, v: &str) -> Result<Duration, String> {
    v.parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or(format!("{flag}: `{v}` is not a number of seconds"))
}

fn count<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag}: `{v}` is not a count"))
}

// ---------------------------------------------------------------------------------------------
// The log: `LEVEL target: message fields`, on stderr, as the adapters' tracing lines read.

fn log(level: &str, target: &str, message: &str, fields: &str) {
    eprintln!("{level:>5} {target}: {message} {fields}");
}

fn debug_enabled() -> bool {
    std::env::var("RUST_LOG").is_ok_and(|v| v.contains("debug") || v.contains("trace"))
}

// ---------------------------------------------------------------------------------------------
// The machines: everything the server decides, and nothing it does.

struct Machines {
    accept: AcceptLoop,
    limit: Limit,
    conns: ConnTable,
    /// Per-client-IP lines per second; `None` with `--rate-per-ip 0`.
    rate: Option<KeyedGcra<IpAddr>>,
    shutdown: Shutdown,
    /// Lines deferred by the rate limiter (a count for the `stats:` line).
    rate_limited: u64,
}

impl Machines {
    fn new(opts: &Options, now: Instant) -> Result<Machines, keel_core::ConfigError> {
        let limit = LimitConfig::builder().max(opts.max_connections).build()?;
        let conns = ConnConfig::builder()
            .idle_timeout(opts.idle_timeout)
            .build()?;
        let shutdown = ShutdownConfig::builder()
            .grace_period(opts.grace)
            .drain_delay(opts.drain_delay)
            .build()?;
        let rate = match opts.rate_per_ip {
            Some(per_second) => Some(KeyedGcra::new(
                KeyedConfig::builder()
                    .quota(Quota::per_second(per_second)?)
                    .max_keys(10_000)
                    .build()?,
                now,
            )),
            None => None,
        };
        Ok(Machines {
            accept: AcceptLoop::new(AcceptConfig::default(), now),
            limit: Limit::new(limit),
            conns: ConnTable::new(conns, now),
            rate,
            shutdown: Shutdown::new(shutdown, now),
            rate_limited: 0,
        })
    }

    /// The earliest instant at which a machine has work: the loop sleeps at most until then.
    fn poll_timeout(&self) -> Option<Instant> {
        [
            self.accept.poll_timeout(),
            self.conns.poll_timeout(),
            self.shutdown.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// A line from `client` wants an answer: `Ok` now, or `Err(retry_at)`.
    fn admit_line(&mut self, now: Instant, client: IpAddr) -> Result<(), Instant> {
        let Some(rate) = &mut self.rate else {
            return Ok(());
        };
        match rate.try_acquire(now, &client) {
            Ok(()) => Ok(()),
            Err(rejected) => match rejected.retry_at {
                Some(retry_at) => {
                    self.rate_limited = self.rate_limited.saturating_add(1);
                    Err(retry_at)
                }
                // One line is never larger than the burst, and the table overflows into a
                // shared limiter instead of rejecting; answer rather than stall if that ever
                // changes.
                None => Ok(()),
            },
        }
    }

    /// The health line's report: the same four components as the adapters' `ServeHandle`.
    fn health(&self, now: Instant, listener_failed: bool) -> HealthReport {
        let accept = if listener_failed {
            ComponentState::accept_stopped("fatal error")
        } else if self.accept.is_paused(now) {
            ComponentState::accept_paused("resource shortage")
        } else {
            ComponentState::Healthy
        };
        let connections = ComponentState::from_limit(&self.limit.stats());
        let clients = if self.conns.defended_within(DEFENCE_WINDOW) {
            ComponentState::Degraded(Reason::new("closing idle or slow clients"))
        } else {
            ComponentState::Healthy
        };
        HealthReport::new()
            .with("accept", accept)
            .with("connections", connections)
            .with("clients", clients)
            .with(
                "shutdown",
                ComponentState::from_shutdown(self.shutdown.state()),
            )
    }

    /// The `stats:` line, with the adapters' field names (and `rate_limited` at the end).
    fn stats_line(&self, listener_error: Option<&io::Error>) -> String {
        let (a, l, s, c) = (
            self.accept.stats(),
            self.limit.stats(),
            self.shutdown.stats(),
            self.conns.stats(),
        );
        let fields: [(&str, u64); 19] = [
            ("accepted", a.accepted),
            ("per_connection_errors", a.per_connection_errors),
            ("shortages", a.shortages),
            ("pauses", a.pauses),
            ("paused_ms", millis(a.paused_total)),
            ("max_connections", l.max as u64),
            ("in_use", l.in_use as u64),
            ("peak", l.peak as u64),
            ("shed", l.shed),
            ("started", s.started),
            ("in_flight", s.in_flight),
            ("idle_closed", c.idle_closed),
            ("deadline_expired", c.deadline_expired),
            ("reclaimed", c.reclaimed),
            ("lingering", c.lingering),
            ("clean", c.clean),
            ("linger_timeouts", c.linger_timeouts),
            ("resets", c.resets),
            ("rate_limited", self.rate_limited),
        ];
        let mut line = format!("stats: {}", self.shutdown.summary());
        for (name, value) in fields {
            let _ = write!(line, " {name}={value}");
        }
        if let Some(e) = listener_error {
            let _ = write!(line, " listener_error=\"{e}\"");
        }
        line
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------------------------
// One connection: its socket, its buffers, and where it is in its life.

enum Phase {
    /// Echoing lines. `finish_line`: the drain started with a line in flight; answer it, then
    /// close.
    Serving { finish_line: bool },
    /// The handler is done: the write side is shut, the peer's input is discarded until its
    /// EOF, `discarded` reaches the linger cap, or `until` passes.
    Lingering { until: Instant, discarded: u64 },
}

struct Connection {
    stream: TcpStream,
    /// The rate-limiting key: the client's IP (IPv6 by /64).
    client: IpAddr,
    /// This connection's place among the in-flight work of the shutdown machine.
    ticket: ShutdownPermit,
    /// Its connection slot, handed back to the limit when it closes.
    permit: LimitPermit,
    input: Vec<u8>,
    /// How much of `input` is known to hold no newline.
    searched: usize,
    output: Vec<u8>,
    /// Edge-triggered readiness: `true` until a read (write) returns `WouldBlock`.
    readable: bool,
    writable: bool,
    /// Rate limited: the next line waits until then.
    parked_until: Option<Instant>,
    /// The handler ends once `output` is flushed (EOF, an overlong line, the drain).
    closing: bool,
    phase: Phase,
}

/// What a connection's step asks the server to do.
enum Next {
    /// Wait for readiness or a timer.
    Wait,
    /// The handler is done: start the lingering close.
    HandlerDone,
    /// Close it now; it ended as this.
    Close(ConnEnd),
}

impl Connection {
    /// Serves as far as the socket, the rate limiter and the drain allow.
    fn serve(&mut self, now: Instant, id: u64, m: &mut Machines, ctx: &LineLimits) -> Next {
        loop {
            if !self.output.is_empty() && self.writable {
                match self.stream.write(&self.output) {
                    Ok(0) => return Next::Close(ConnEnd::Reset),
                    Ok(n) => {
                        self.output.drain(..n);
                        m.conns.on_activity(now, id, now);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Next::Close(ConnEnd::Reset),
                }
                continue;
            }
            if self.output.len() >= OUTPUT_HIGH_WATER {
                return Next::Wait; // a slow reader: answer nothing more until it catches up
            }
            if !self.closing && self.answer_line(now, id, m, ctx) {
                continue;
            }
            if self.parked_until.is_some() {
                return Next::Wait;
            }
            if self.closing || self.idle_in_drain(m) {
                return if self.output.is_empty() {
                    Next::HandlerDone
                } else {
                    Next::Wait
                };
            }
            if !self.readable {
                return Next::Wait;
            }
            if let Some(end) = self.read_input(now, id, m, ctx) {
                return end;
            }
        }
    }

    /// Answers the next complete line, if the rate limiter lets it through now. Returns whether
    /// it made progress.
    fn answer_line(&mut self, now: Instant, id: u64, m: &mut Machines, ctx: &LineLimits) -> bool {
        // Only the bytes not searched yet: a line trickled in byte by byte costs O(length).
        let end = self.input.len().min(ctx.max_line);
        let unsearched = self.input.get(self.searched..end).unwrap_or_default();
        let newline = unsearched.iter().position(|&b| b == b'\n');
        let Some(newline) = newline.map(|i| self.searched + i) else {
            self.searched = end;
            if self.input.len() >= ctx.max_line {
                let err = format!("ERR line longer than {} bytes\n", ctx.max_line);
                self.output.extend_from_slice(err.as_bytes());
                self.closing = true;
                return true;
            }
            return false;
        };
        // The line has arrived: its read deadline no longer applies, even if it must wait
        // for the rate limiter (the wait is ours, not a slow client's).
        m.conns.on_read_deadline(now, id, None);
        if self.parked_until.is_some_and(|t| now < t) {
            return false;
        }
        if let Err(retry_at) = m.admit_line(now, self.client) {
            // Never a deadline in the past: that would make the loop spin.
            self.parked_until = Some(retry_at.max(now.saturating_add(Duration::from_millis(1))));
            return false;
        }
        self.parked_until = None;
        let line: Vec<u8> = self.input.drain(..=newline).collect();
        self.searched = 0;
        if line.trim_ascii() == b"HEALTH" {
            let health = m.health(now, ctx.listener_failed);
            self.output
                .extend_from_slice(format!("{health}\n").as_bytes());
        } else {
            self.output.extend_from_slice(&line);
        }
        if !self.input.is_empty() {
            // Bytes of the next line are here already: its read deadline starts now.
            let deadline = ctx.line_timeout.map(|t| now.saturating_add(t));
            m.conns.on_read_deadline(now, id, deadline);
        }
        if let Phase::Serving { finish_line } = &mut self.phase {
            if *finish_line {
                *finish_line = false;
                self.closing = true; // the line in flight at the drain is answered: close
            }
        }
        true
    }

    /// Draining and no line in flight: the handler is done.
    fn idle_in_drain(&self, m: &Machines) -> bool {
        !m.shutdown.is_accepting() && matches!(self.phase, Phase::Serving { finish_line: false })
    }

    /// Reads more input (never more than a line's worth). `Some` when the connection ends.
    fn read_input(
        &mut self,
        now: Instant,
        id: u64,
        m: &mut Machines,
        ctx: &LineLimits,
    ) -> Option<Next> {
        let room = ctx
            .max_line
            .saturating_sub(self.input.len())
            .clamp(1, READ_CHUNK);
        let mut chunk = [0u8; READ_CHUNK];
        let Some(buf) = chunk.get_mut(..room) else {
            return Some(Next::Close(ConnEnd::Reset)); // room <= READ_CHUNK: cannot happen
        };
        match self.stream.read(buf) {
            Ok(0) => {
                // EOF: a last line without a newline is echoed as it is.
                let rest = std::mem::take(&mut self.input);
                self.searched = 0;
                self.output.extend_from_slice(&rest);
                self.closing = true;
            }
            Ok(n) => {
                if self.input.is_empty() {
                    // A line's first byte: arm its read deadline.
                    let deadline = ctx.line_timeout.map(|t| now.saturating_add(t));
                    m.conns.on_read_deadline(now, id, deadline);
                }
                self.input
                    .extend_from_slice(buf.get(..n).unwrap_or_default());
                m.conns.on_activity(now, id, now);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Some(Next::Close(ConnEnd::Reset)),
        }
        None
    }

    /// The lingering close: discard the peer's input until its EOF or the byte cap.
    fn linger(&mut self, cap: u64) -> Next {
        let Phase::Lingering { discarded, .. } = &mut self.phase else {
            return Next::Wait;
        };
        let mut sink = [0u8; READ_CHUNK];
        loop {
            match self.stream.read(&mut sink) {
                Ok(0) => return Next::Close(ConnEnd::Clean),
                Ok(n) => {
                    *discarded = discarded.saturating_add(n as u64);
                    if *discarded > cap {
                        return Next::Close(ConnEnd::Reset);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Wait,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Next::Close(ConnEnd::Reset),
            }
        }
    }

    /// When the loop must come back to this connection without an event.
    fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Lingering { until, .. } => Some(until),
            Phase::Serving { .. } => self.parked_until,
        }
    }
}

/// What a connection's step needs to know about the server's flags and state.
struct LineLimits {
    max_line: usize,
    line_timeout: Option<Duration>,
    listener_failed: bool,
}

// ---------------------------------------------------------------------------------------------
// The server: the sockets, and the loop that feeds the machines.

struct Server {
    clock: Clock,
    poll: Poll,
    listener: Option<TcpListener>,
    /// The listener was readable and no `accept` has returned `WouldBlock` since: the backlog
    /// may hold connections.
    backlog_ready: bool,
    /// A connection accepted at the limit, without a slot: it waits here until one is
    /// reclaimed for it (or freed).
    newcomer: Option<(TcpStream, SocketAddr)>,
    /// At the limit with a newcomer waiting and nobody idle long enough: retry reclaiming then.
    reclaim_at: Option<Instant>,
    signals: [pipe::Receiver; 2],
    connections: BTreeMap<u64, Connection>,
    next_id: u64,
    m: Machines,
    limits: LineLimits,
    listener_error: Option<io::Error>,
    debug: bool,
}

impl Server {
    /// Binds the listener, installs the signal pipes, prints `listening on ADDR`.
    fn bind(opts: &Options) -> io::Result<Server> {
        let clock = Clock(std::time::Instant::now());
        let invalid = |e: keel_core::ConfigError| io::Error::new(io::ErrorKind::InvalidInput, e);
        let m = Machines::new(opts, clock.now()).map_err(invalid)?;
        let addr = resolve(&opts.addr)?;
        let poll = Poll::new()?;
        let mut listener = listen(addr)?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let signals = [
            signal_pipe(&poll, signal_hook::consts::SIGINT, SIGINT)?,
            signal_pipe(&poll, signal_hook::consts::SIGTERM, SIGTERM)?,
        ];
        let local = listener.local_addr()?;
        println!("listening on {local}");
        log(
            "INFO",
            "keel::serve",
            "echo server listening",
            &format!(
                "addr={local} max_connections={} grace_ms={} runtime=\"event-loop\"",
                opts.max_connections,
                millis(opts.grace)
            ),
        );
        Ok(Server {
            clock,
            poll,
            listener: Some(listener),
            backlog_ready: true,
            newcomer: None,
            reclaim_at: None,
            signals,
            connections: BTreeMap::new(),
            next_id: FIRST_CONNECTION,
            m,
            limits: LineLimits {
                max_line: opts.max_line,
                line_timeout: opts.line_timeout,
                listener_failed: false,
            },
            listener_error: None,
            debug: debug_enabled(),
        })
    }

    /// The event loop. Returns the listener's fatal error, if it failed.
    fn run(mut self) -> io::Result<Option<io::Error>> {
        let mut events = Events::with_capacity(1024);
        loop {
            let now = self.clock.now();
            self.handle_timeouts(now);
            self.accept_ready(now);
            if self.m.shutdown.is_stopped() {
                break;
            }
            let timeout = self
                .poll_timeout()
                .map(|t| t.saturating_duration_since(now));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = self.clock.now();
            for event in &events {
                // An error or a hang-up is "readable": the next read returns it (or EOF).
                let readable = event.is_readable() || event.is_read_closed() || event.is_error();
                let writable = event.is_writable() || event.is_write_closed() || event.is_error();
                self.on_ready(now, event.token(), readable, writable);
            }
        }
        self.abort_all();
        println!("{}", self.m.stats_line(self.listener_error.as_ref()));
        Ok(self.listener_error)
    }

    /// The loop's sleep: the machines' earliest timeout and the connections' deadlines. The
    /// connections are scanned, which is plenty here; a server holding tens of thousands would
    /// keep their deadlines in a timer heap or wheel instead.
    fn poll_timeout(&self) -> Option<Instant> {
        let connections = self.connections.values().filter_map(Connection::deadline);
        self.m
            .poll_timeout()
            .into_iter()
            .chain(self.reclaim_at)
            .chain(connections)
            .min()
    }

    /// Tells every machine the time, then acts on what came due.
    fn handle_timeouts(&mut self, now: Instant) {
        self.m.accept.handle_timeout(now);
        self.log_accept_events(None);
        self.m.conns.handle_timeout(now);
        while let Some(ConnEvent::Close { id, reason }) = self.m.conns.poll_event() {
            if self.debug {
                let fields = format!("id={id} reason=\"{}\"", reason.as_str());
                log(
                    "DEBUG",
                    "keel::serve",
                    "connection closed by the server",
                    &fields,
                );
            }
            self.close(now, id, ConnEnd::Closed(reason));
        }
        let was_delaying = self.m.shutdown.is_delaying();
        self.m.shutdown.handle_timeout(now);
        if was_delaying && !self.m.shutdown.is_accepting() {
            // The drain delay ended: the machine drains now; so does the loop.
            self.start_drain(now);
        }
        self.on_shutdown_events(now);
        if self.reclaim_at.is_some_and(|t| t <= now) {
            self.reclaim_at = None;
        }
        let due: Vec<u64> = self
            .connections
            .iter()
            .filter(|(_, c)| c.deadline().is_some_and(|t| t <= now))
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            self.on_deadline(now, id);
        }
    }

    /// A connection's own deadline passed: its linger ended, or its rate-limited line may go.
    fn on_deadline(&mut self, now: Instant, id: u64) {
        let Some(c) = self.connections.get_mut(&id) else {
            return;
        };
        match c.phase {
            Phase::Lingering { .. } => self.close(now, id, ConnEnd::LingerTimeout),
            Phase::Serving { .. } => {
                // `retry_at` has passed: the line asks the limiter again when the connection
                // can take an answer (now, or when a slow reader has caught up).
                c.parked_until = None;
                self.step(now, id);
            }
        }
    }

    fn on_ready(&mut self, now: Instant, token: Token, readable: bool, writable: bool) {
        match token {
            LISTENER => self.backlog_ready = true,
            SIGINT => self.on_signal_pipe(now, 0, "SIGINT"),
            SIGTERM => self.on_signal_pipe(now, 1, "SIGTERM"),
            Token(id) => {
                let id = id as u64;
                if let Some(c) = self.connections.get_mut(&id) {
                    c.readable |= readable;
                    c.writable |= writable;
                    self.step(now, id);
                }
            }
        }
    }

    // --- accepting ---------------------------------------------------------------------------

    /// Accepts while the backlog may hold connections and the machines allow it.
    fn accept_ready(&mut self, now: Instant) {
        while self.m.shutdown.is_accepting() && !self.m.accept.is_paused(now) {
            if self.m.limit.available() == 0 && !self.reclaim_for_newcomer(now) {
                return; // a closed connection, or the reclaim time, brings the loop back
            }
            let Some((stream, peer)) = self.newcomer.take().or_else(|| self.accept_one(now)) else {
                return; // the backlog is empty, accepting is paused, or the listener failed
            };
            self.open(now, stream, peer);
        }
    }

    /// At the limit: takes the next connection from the backlog without a slot (it waits in
    /// `newcomer`), and closes the connection idle the longest for it if one has been idle
    /// long enough. Returns whether a slot is free now.
    fn reclaim_for_newcomer(&mut self, now: Instant) -> bool {
        if self.newcomer.is_none() {
            self.newcomer = self.accept_one(now);
            if self.newcomer.is_none() {
                return false; // nobody waits: nothing to reclaim
            }
        }
        let Some(id) = self.m.conns.reclaim(now) else {
            self.reclaim_at = self.next_reclaim(now);
            return false;
        };
        if self.debug {
            let fields = format!("id={id}");
            let message = "idle connection reclaimed for a newcomer at the limit";
            log("DEBUG", "keel::serve", message, &fields);
        }
        self.close(now, id, ConnEnd::Closed(CloseReason::Reclaimed));
        self.m.limit.available() > 0
    }

    /// One `accept`, its errors classified and obeyed: a connection, or `None` when the
    /// backlog is empty, a shortage paused accepting or the listener failed.
    fn accept_one(&mut self, now: Instant) -> Option<(TcpStream, SocketAddr)> {
        while self.backlog_ready {
            let listener = self.listener.as_ref()?;
            let error = match listener.accept() {
                Ok(connection) => {
                    self.m.accept.on_accepted(now);
                    self.log_accept_events(None);
                    return Some(connection);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.backlog_ready = false;
                    return None;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => e,
            };
            let decision = self.m.accept.on_error(now, classify_io_error(&error));
            self.log_accept_events(Some(&error));
            match decision {
                AcceptDecision::Continue => {} // one queued connection died: the next one
                AcceptDecision::PauseUntil(_) => return None,
                AcceptDecision::Stop => {
                    self.listener_failed(now, error);
                    return None;
                }
            }
        }
        None
    }

    /// When the connection idle the longest becomes old enough to reclaim.
    fn next_reclaim(&self, now: Instant) -> Option<Instant> {
        let min_idle = self.m.conns.config().reclaim_min_idle()?;
        let longest = self
            .connections
            .iter()
            .filter(|(_, c)| matches!(c.phase, Phase::Serving { .. }))
            .filter_map(|(&id, _)| self.m.conns.idle_for(now, id))
            .max()?;
        Some(now.saturating_add(min_idle.saturating_sub(longest))).filter(|&t| t > now)
    }

    /// A connection was accepted: a permit, a shutdown ticket, a row in the table.
    fn open(&mut self, now: Instant, mut stream: TcpStream, peer: SocketAddr) {
        let Ok(ticket) = self.m.shutdown.try_acquire(now) else {
            return; // draining: refused (counted by the machine), closed by the drop
        };
        let Ok(permit) = self.m.limit.try_acquire(now) else {
            // Not reached: accept_ready checked for a free slot. Keep the counts honest.
            debug_assert!(false, "accept_ready checked for a free slot");
            let _ = self.m.shutdown.on_work_reset(now, ticket);
            return;
        };
        let id = self.next_id;
        self.next_id = self.next_id.saturating_add(1);
        let interest = Interest::READABLE | Interest::WRITABLE;
        if self
            .poll
            .registry()
            .register(&mut stream, Token(id as usize), interest)
            .is_err()
        {
            self.m.limit.on_release(now, permit);
            let _ = self.m.shutdown.on_work_reset(now, ticket);
            return;
        }
        self.m.conns.on_open(now, id);
        let connection = Connection {
            stream,
            client: IpKeyer::default().key(peer.ip()),
            ticket,
            permit,
            input: Vec::new(),
            searched: 0,
            output: Vec::new(),
            readable: true,
            writable: true,
            parked_until: None,
            closing: false,
            phase: Phase::Serving { finish_line: false },
        };
        self.connections.insert(id, connection);
        self.step(now, id);
    }

    fn listener_failed(&mut self, now: Instant, error: io::Error) {
        log(
            "ERROR",
            "keel::accept",
            "listener failed; accept loop stopped",
            &format!("error=\"{error}\""),
        );
        self.listener_error = Some(error);
        self.limits.listener_failed = true;
        let decision = self.m.shutdown.begin_drain(now);
        self.on_shutdown_decision(now, decision);
    }

    fn log_accept_events(&mut self, error: Option<&io::Error>) {
        while let Some(event) = self.m.accept.poll_event() {
            match event {
                AcceptEvent::Shortage {
                    shortage,
                    pause,
                    suppressed,
                    ..
                } => {
                    let error = error.map_or(String::new(), |e| format!("error=\"{e}\" "));
                    let fields = format!(
                        "{error}shortage=\"{}\" pause_ms={} suppressed={suppressed} hint=\"{}\"",
                        shortage.as_str(),
                        millis(pause),
                        shortage.hint()
                    );
                    log(
                        "WARN",
                        "keel::accept",
                        "accept paused on a resource shortage",
                        &fields,
                    );
                }
                AcceptEvent::Resumed {
                    paused_for,
                    suppressed,
                } => {
                    let fields =
                        format!("paused_ms={} suppressed={suppressed}", millis(paused_for));
                    log(
                        "INFO",
                        "keel::accept",
                        "accepting resumed after a resource shortage",
                        &fields,
                    );
                }
                // The fatal error is logged by `listener_failed`, with its text.
                _ => {}
            }
        }
    }

    // --- serving -----------------------------------------------------------------------------

    /// Moves connection `id` on as far as it can go, and acts on where it ends up.
    fn step(&mut self, now: Instant, id: u64) {
        let Some(c) = self.connections.get_mut(&id) else {
            return;
        };
        let cap = self.m.conns.config().linger_bytes();
        let next = match c.phase {
            Phase::Serving { .. } => c.serve(now, id, &mut self.m, &self.limits),
            Phase::Lingering { .. } => c.linger(cap),
        };
        match next {
            Next::Wait => {}
            Next::HandlerDone => self.start_linger(now, id),
            Next::Close(end) => self.close(now, id, end),
        }
    }

    /// The handler is done: shut the write side and linger (or close at once if none is due).
    fn start_linger(&mut self, now: Instant, id: u64) {
        let drain_deadline = self.m.shutdown.poll_timeout();
        let Some(until) = self.m.conns.on_handler_done(now, id, drain_deadline) else {
            return self.close(now, id, ConnEnd::Clean);
        };
        let Some(c) = self.connections.get_mut(&id) else {
            return;
        };
        if c.stream.shutdown(std::net::Shutdown::Write).is_err() {
            return self.close(now, id, ConnEnd::Reset);
        }
        c.phase = Phase::Lingering {
            until,
            discarded: 0,
        };
        self.step(now, id);
    }

    /// Closes connection `id` (dropping the socket) and returns its permit and its ticket.
    fn close(&mut self, now: Instant, id: u64, end: ConnEnd) {
        let Some(mut c) = self.connections.remove(&id) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut c.stream);
        self.m.conns.on_closed(now, id, end);
        self.m.limit.on_release(now, c.permit);
        let decision = match end {
            ConnEnd::Reset => self.m.shutdown.on_work_reset(now, c.ticket),
            _ => self.m.shutdown.on_work_finished(now, c.ticket),
        };
        self.on_shutdown_decision(now, decision);
    }

    /// The drain deadline passed or a second signal came: drop every connection still open.
    fn abort_all(&mut self) {
        let now = self.clock.now();
        for (id, mut c) in std::mem::take(&mut self.connections) {
            let _ = self.poll.registry().deregister(&mut c.stream);
            self.m.conns.on_closed(now, id, ConnEnd::Aborted);
            self.m.limit.on_release(now, c.permit);
        }
    }

    // --- shutting down -----------------------------------------------------------------------

    /// Reads a signal pipe: each byte is one SIGINT or SIGTERM.
    fn on_signal_pipe(&mut self, now: Instant, index: usize, name: &str) {
        let mut bytes = [0u8; 16];
        loop {
            let Some(pipe) = self.signals.get_mut(index) else {
                return;
            };
            match pipe.read(&mut bytes) {
                Ok(0) => return,
                Ok(n) => {
                    for _ in 0..n {
                        log(
                            "INFO",
                            "keel::shutdown",
                            "shutdown signal received",
                            &format!("signal=\"{name}\""),
                        );
                        let decision = self.m.shutdown.on_signal(now);
                        self.on_shutdown_decision(now, decision);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return, // WouldBlock: read everything
            }
        }
    }

    fn on_shutdown_decision(&mut self, now: Instant, decision: ShutdownDecision) {
        match decision {
            // The drain delay: keep serving; health turns not ready; `handle_timeout` at its
            // end starts the drain (see `handle_timeouts`).
            ShutdownDecision::Continue | ShutdownDecision::Delay { .. } => {}
            ShutdownDecision::Drain { .. } => self.start_drain(now),
            ShutdownDecision::StopNow { .. } => self.close_listener(now),
        }
        self.on_shutdown_events(now);
    }

    /// Stop accepting, then let each connection finish its line in flight (or close if idle).
    fn start_drain(&mut self, now: Instant) {
        self.close_listener(now);
        let drain_deadline = self.m.shutdown.poll_timeout();
        let ids: Vec<u64> = self.connections.keys().copied().collect();
        for id in ids {
            let Some(c) = self.connections.get_mut(&id) else {
                continue;
            };
            match &mut c.phase {
                Phase::Serving { finish_line } => *finish_line = !c.input.is_empty(),
                // A linger never outlives the drain.
                Phase::Lingering { until, .. } => {
                    *until = self
                        .m
                        .conns
                        .on_handler_done(now, id, drain_deadline)
                        .unwrap_or(now);
                }
            }
            self.step(now, id);
        }
    }

    /// Refuses the connections queued in the backlog, then closes the listener: from now on
    /// the kernel refuses new ones.
    fn close_listener(&mut self, now: Instant) {
        let Some(mut listener) = self.listener.take() else {
            return;
        };
        if self.newcomer.take().is_some() {
            let refused = self.m.shutdown.try_acquire(now);
            debug_assert!(refused.is_err(), "the machine refuses once draining");
        }
        for _ in 0..BACKLOG_SWEEP {
            match listener.accept() {
                Ok(_) => {
                    let refused = self.m.shutdown.try_acquire(now);
                    debug_assert!(refused.is_err(), "the machine refuses once draining");
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = self.poll.registry().deregister(&mut listener);
    }

    fn on_shutdown_events(&mut self, now: Instant) {
        while let Some(event) = self.m.shutdown.poll_event() {
            let drained_ms = self.m.shutdown.summary().drained_in.map_or(0, millis);
            let (level, message, fields) = match event {
                ShutdownEvent::DelayStarted { until } => {
                    let delay =
                        until.map_or(u64::MAX, |u| millis(u.saturating_duration_since(now)));
                    (
                        "INFO",
                        "drain delay started: not ready, still serving",
                        format!("delay_ms={delay}"),
                    )
                }
                ShutdownEvent::DrainStarted {
                    deadline,
                    in_flight,
                } => {
                    let grace = deadline.map_or(0, |d| millis(d.saturating_duration_since(now)));
                    (
                        "INFO",
                        "drain started: refusing new connections",
                        format!("in_flight={in_flight} grace_ms={grace}"),
                    )
                }
                ShutdownEvent::Drained { completed } => (
                    "INFO",
                    "drained: every in-flight connection finished",
                    format!("completed={completed} drained_ms={drained_ms}"),
                ),
                ShutdownEvent::DeadlineExceeded { aborted } => (
                    "WARN",
                    "drain deadline passed: aborting the connections still open",
                    format!("aborted={aborted} drained_ms={drained_ms}"),
                ),
                ShutdownEvent::ForcedStop { aborted } => (
                    "WARN",
                    "second signal: stopping at once",
                    format!("aborted={aborted} drained_ms={drained_ms}"),
                ),
                // `ShutdownEvent` is #[non_exhaustive]: an event added later is logged as is.
                other => ("INFO", "shutdown event", format!("{other:?}")),
            };
            log(level, "keel::shutdown", message, &fields);
        }
    }
}

fn resolve(addr: &str) -> io::Result<SocketAddr> {
    addr.to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{addr}` resolves to no address"),
        )
    })
}

/// A non-blocking listener with `SO_REUSEADDR` and the adapters' listen backlog (mio's own
/// `bind` uses 128).
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// A self-pipe: signal-hook's handler writes a byte into it on `signal`; the loop reads it.
fn signal_pipe(poll: &Poll, signal: i32, token: Token) -> io::Result<pipe::Receiver> {
    let (sender, mut receiver) = pipe::new()?;
    signal_hook::low_level::pipe::register(signal, sender)?;
    poll.registry()
        .register(&mut receiver, token, Interest::READABLE)?;
    Ok(receiver)
}
