//! The guarded echo server and the seed-002 storm, shared by every adapter's `echo` and `storm`
//! examples: an adapter's example is `keel_benches::storm::echo_main::<ItsHarness>()` or
//! `storm_main::<ItsHarness>()`.
//!
//! The echo server serves through the adapter's `Server` with graceful shutdown: each line is
//! echoed back, except the line `HEALTH`, answered with the server's health report line
//! (`ready=true live=true reasons=[]`; see `ServeHandle::health`). On SIGINT or SIGTERM it stops
//! accepting (new connections are refused), finishes the lines in flight, closes idle
//! connections, aborts what still runs after the grace period (`--grace SECONDS`, default 5;
//! a second signal stops at once), prints a `stats:` line on stdout and exits 0.
//!
//! The storm starts the server in a child process (the same example binary, `--serve`) under
//! `ulimit -n 100` with max connections 150, drives 1000 loopback clients at it for about
//! 10 s (std threads with blocking sockets and timeouts: no runtime on the client side) and
//! exits 0 only if the server did not crash, a fresh connection gets its echo after the storm,
//! "Too many open files" was logged a bounded number of times and the server used under 10 %
//! of one core during the storm.

use std::borrow::Cow;
use std::io::{self, BufRead, BufReader, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use keel_core::conn::ConnConfig;
use keel_core::driver::{
    read_line_bounded, Conn, ConnIo, Draining, GuardConfig, Line, ServeHandle, Server, Signals as _,
};
use keel_core::shutdown::ShutdownConfig;

use crate::Harness;

/// Command-line options of the echo server.
#[derive(Clone, Debug)]
pub struct Options {
    /// `--addr HOST:PORT` (default 127.0.0.1:7878).
    pub addr: String,
    /// `--max-connections N` (default 1024).
    pub max_connections: usize,
    /// `--grace SECONDS` (default 5): how long the drain waits for connections in flight.
    pub grace: Duration,
    /// `--idle-timeout SECONDS` (default 60; 0: off): a connection silent this long is closed.
    pub idle_timeout: Option<Duration>,
    /// `--max-line BYTES` (default 65536) and `--line-timeout SECONDS` (default 10).
    pub limits: EchoLimits,
}

/// How the echo bounds a line: its length and the time from its first byte to its newline.
#[derive(Clone, Copy, Debug)]
pub struct EchoLimits {
    /// The longest line echoed, newline included (`--max-line BYTES`, default 64 KiB). A longer
    /// one is answered with `ERR line longer than N bytes` and the connection is closed.
    pub max_line: usize,
    /// The read deadline of a line, armed at its first byte (`--line-timeout SECONDS`, default
    /// 10; 0: off): a trickler that never sends the newline is closed when it passes.
    pub line_timeout: Option<Duration>,
}

impl Default for EchoLimits {
    fn default() -> Self {
        EchoLimits {
            max_line: 64 * 1024,
            line_timeout: Some(Duration::from_secs(10)),
        }
    }
}

fn seconds(name: &str, v: &str) -> Result<Duration, String> {
    v.parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or(format!("{name}: `{v}` is not a number of seconds"))
}

impl Options {
    /// Parses `--addr HOST:PORT`, `--max-connections N`, `--grace SECONDS`,
    /// `--idle-timeout SECONDS`, `--max-line BYTES` and `--line-timeout SECONDS` (`--serve` is
    /// accepted and ignored).
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
        let mut opts = Options {
            addr: "127.0.0.1:7878".into(),
            max_connections: 1024,
            grace: Duration::from_secs(5),
            idle_timeout: Some(Duration::from_secs(60)),
            limits: EchoLimits::default(),
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
            match arg.as_str() {
                "--addr" => opts.addr = value("--addr")?,
                "--max-connections" => {
                    let v = value("--max-connections")?;
                    opts.max_connections = v
                        .parse()
                        .map_err(|_| format!("--max-connections: `{v}` is not a count"))?;
                }
                "--grace" => opts.grace = seconds("--grace", &value("--grace")?)?,
                "--idle-timeout" => {
                    let d = seconds("--idle-timeout", &value("--idle-timeout")?)?;
                    opts.idle_timeout = (!d.is_zero()).then_some(d);
                }
                "--line-timeout" => {
                    let d = seconds("--line-timeout", &value("--line-timeout")?)?;
                    opts.limits.line_timeout = (!d.is_zero()).then_some(d);
                }
                "--max-line" => {
                    let v = value("--max-line")?;
                    opts.limits.max_line = v
                        .parse()
                        .ok()
                        .filter(|&n: &usize| n > 0)
                        .ok_or(format!("--max-line: `{v}` is not a positive byte count"))?;
                }
                "--serve" => {}
                other => {
                    return Err(format!(
                        "unknown argument `{other}` (try --addr, --max-connections, --grace, \
                         --idle-timeout, --max-line, --line-timeout)"
                    ))
                }
            }
        }
        Ok(opts)
    }
}

/// Logs to stderr, `info` by default (`RUST_LOG` overrides).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(false)
        .init();
}

/// Binds, prints `listening on ADDR` on stdout, and echoes lines until SIGINT or SIGTERM; then
/// drains for at most the grace period and prints `stats: ...` on stdout.
pub async fn serve<H: Harness>(opts: Options) -> io::Result<()> {
    let invalid = |e| io::Error::new(io::ErrorKind::InvalidInput, e);
    let config = GuardConfig::builder()
        .max_connections(opts.max_connections)
        .build()
        .map_err(invalid)?;
    let shutdown = ShutdownConfig::builder()
        .grace_period(opts.grace)
        .build()
        .map_err(invalid)?;
    let conns = ConnConfig::builder()
        .idle_timeout(opts.idle_timeout)
        .build()
        .map_err(invalid)?;
    let incoming = H::bind(&opts.addr, &config).await?;
    let local = H::local_addr(incoming.get_ref())?;
    println!("listening on {local}");
    tracing::info!(addr = %local, max_connections = opts.max_connections, grace_ms = opts.grace.as_millis() as u64, idle_timeout_ms = opts.idle_timeout.map_or(0, |d| d.as_millis() as u64), max_line = opts.limits.max_line, runtime = H::NAME, "echo server listening");
    let server = Server::<H::Listener, H::Runtime>::new(incoming)
        .config(shutdown)
        .conn_config(conns)
        .shutdown_on(|| H::Runtime::default().shutdown_signal());
    let handle = server.handle();
    let limits = opts.limits;
    let report = server
        .serve(move |conn, _: Draining| echo_conn(conn, Some(handle.clone()), limits))
        .await;
    println!("stats: {report}");
    tracing::info!(%report, "echo server stopped");
    match report.error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// What the echo server answers to `line`: the health line for `HEALTH` (with a server), else
/// the line itself.
pub fn echo_reply<'a>(line: &'a [u8], server: Option<&ServeHandle>) -> Cow<'a, [u8]> {
    match server {
        Some(server) if line.trim_ascii() == b"HEALTH" => {
            Cow::Owned(format!("{}\n", server.health()).into_bytes())
        }
        _ => Cow::Borrowed(line),
    }
}

/// The line echo for streams with `futures-io` traits (smol's, async-std's, tokio's through a
/// bridge), with the default [`EchoLimits`] and no read deadline. With a `server`: answers
/// `HEALTH` (see [`echo_reply`]) and follows the drain: an idle connection is closed when it
/// starts, a line in flight is finished and answered first.
pub async fn echo_futures_io<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    server: Option<ServeHandle>,
) {
    echo_lines(stream, server, EchoLimits::default(), |_, _| {}).await;
}

/// The echo of the `echo` example on a connection served by `Server`: lines bounded by
/// `limits.max_line`, each line's read deadline armed at its first byte
/// ([`Conn::set_read_deadline`]); the connection is closed by the server with a lingering close
/// when this returns.
pub async fn echo_conn<L: ConnIo>(conn: Conn<L>, server: Option<ServeHandle>, limits: EchoLimits) {
    echo_lines(conn, server, limits, |conn: &Conn<L>, d| {
        conn.set_read_deadline(d);
    })
    .await;
}

/// Reads the next bounded line, arming the read deadline at its first byte.
async fn next_line<S, A>(
    lines: &mut futures_lite::io::BufReader<S>,
    line: &mut Vec<u8>,
    limits: EchoLimits,
    arm: &A,
) -> io::Result<Line>
where
    S: AsyncRead + Unpin,
    A: Fn(&S, Option<Duration>),
{
    read_line_bounded(lines, line, limits.max_line, |r| {
        arm(r.get_ref(), limits.line_timeout);
    })
    .await
}

async fn echo_lines<S, A>(stream: S, server: Option<ServeHandle>, limits: EchoLimits, arm: A)
where
    S: AsyncRead + AsyncWrite + Unpin,
    A: Fn(&S, Option<Duration>),
{
    let draining = server.as_ref().map(ServeHandle::draining);
    let mut lines = futures_lite::io::BufReader::new(stream);
    let mut line = Vec::with_capacity(128);
    loop {
        line.clear();
        // The bounded read keeps what it read when interrupted by the drain.
        let read = match &draining {
            Some(d) => match d
                .run_until_draining(next_line(&mut lines, &mut line, limits, &arm))
                .await
            {
                Some(read) => read,
                None if line.is_empty() && lines.buffer().is_empty() => break,
                None => next_line(&mut lines, &mut line, limits, &arm).await,
            },
            None => next_line(&mut lines, &mut line, limits, &arm).await,
        };
        arm(lines.get_ref(), None);
        let reply = match read {
            Ok(Line::Complete(_)) => echo_reply(&line, server.as_ref()),
            // A last line without a newline is echoed as it is.
            Ok(Line::Eof) if !line.is_empty() => Cow::Borrowed(&line[..]),
            Ok(Line::TooLong) => {
                let err = format!("ERR line longer than {} bytes\n", limits.max_line);
                let _ = lines.get_mut().write_all(err.as_bytes()).await;
                break;
            }
            Ok(Line::Eof) | Err(_) => break,
        };
        if lines.get_mut().write_all(&reply).await.is_err()
            || draining.as_ref().is_some_and(Draining::is_draining)
        {
            break;
        }
    }
}

/// The `echo` example: parses the flags, serves until SIGINT or SIGTERM, drains, exits 0.
pub fn echo_main<H: Harness>() {
    init_logging();
    let opts = Options::parse(std::env::args().skip(1)).unwrap_or_else(|e| {
        eprintln!("echo: {e}");
        std::process::exit(2)
    });
    if let Err(e) = H::block_on(serve::<H>(opts)) {
        eprintln!("echo: {e}");
        std::process::exit(1);
    }
}

/// The `storm` example: with `--serve`, the server child; otherwise the storm against a child
/// started from this same binary. Exits with the storm's code.
pub fn storm_main<H: Harness>() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--serve") {
        init_logging();
        let opts = Options::parse(args).unwrap_or_else(|e| {
            eprintln!("storm server: {e}");
            std::process::exit(2)
        });
        if let Err(e) = H::block_on(serve::<H>(opts)) {
            eprintln!("storm server: {e}");
            std::process::exit(1);
        }
        return;
    }
    let exe = std::env::current_exe().unwrap_or_else(|e| {
        eprintln!("storm: the path of this example: {e}");
        std::process::exit(1)
    });
    let mut plan = Plan::seed(exe, vec!["--serve".into()]);
    plan.runtime = H::NAME;
    std::process::exit(run(&plan));
}

/// What to run and how hard.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The server binary (started as a child).
    pub server: PathBuf,
    /// Its arguments (before `--addr` and `--max-connections`).
    pub server_args: Vec<String>,
    /// The runtime's name, for the report.
    pub runtime: &'static str,
    /// `ulimit -n` for the server.
    pub open_files: u32,
    /// The server's connection limit.
    pub max_connections: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// How long the clients run.
    pub storm: Duration,
    /// The server's CPU budget during the storm, in percent of one core.
    pub cpu_limit_percent: f64,
    /// The most "Too many open files" log lines allowed.
    pub max_shortage_lines: usize,
}

impl Plan {
    /// The seed's numbers: `ulimit -n 100`, max connections 150, 1000 clients, about 10 s.
    pub fn seed(server: PathBuf, server_args: Vec<String>) -> Plan {
        Plan {
            server,
            server_args,
            runtime: "?",
            open_files: 100,
            max_connections: 150,
            clients: 1000,
            storm: Duration::from_secs(10),
            cpu_limit_percent: 10.0,
            max_shortage_lines: 100,
        }
    }
}

#[derive(Default)]
struct Counters {
    connected: AtomicU64,
    served: AtomicU64,
    echoes: AtomicU64,
    errors: AtomicU64,
    done: AtomicUsize,
}

#[derive(Default)]
struct ServerLog {
    lines: u64,
    emfile_lines: u64,
    first_emfile: Option<String>,
    tail: Vec<String>,
}

fn spawn_server(plan: &Plan) -> io::Result<Child> {
    // `ulimit` is a shell builtin: lower the limit in a shell, then exec the server in place.
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n {} && exec \"$0\" \"$@\"",
            plan.open_files
        ))
        .arg(&plan.server)
        .args(&plan.server_args)
        .args([
            "--addr",
            "127.0.0.1:0",
            "--max-connections",
            &plan.max_connections.to_string(),
        ])
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
}

/// User + system CPU time of a process, from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux ABI.
    Some(Duration::from_millis((utime + stime) * 10))
}

/// Time left until `until`, or `None` once it has passed.
fn left(until: Instant) -> Option<Duration> {
    Some(until.checked_duration_since(Instant::now())?).filter(|d| !d.is_zero())
}

/// One client: connect, then a line every 100 ms until `until`; reconnect when dropped.
fn client(addr: SocketAddr, until: Instant, c: &Counters) {
    while let Some(remaining) = left(until) {
        let stream = match TcpStream::connect_timeout(&addr, remaining) {
            Ok(s) => s,
            Err(_) => {
                if left(until).is_some() {
                    c.errors.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
        };
        c.connected.fetch_add(1, Ordering::Relaxed);
        let mut read = BufReader::new(&stream);
        let mut line = String::new();
        let mut first = true;
        loop {
            if (&stream).write_all(b"ping\n").is_err() {
                c.errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
            line.clear();
            let Some(remaining) = left(until) else { return };
            let _ = stream.set_read_timeout(Some(remaining));
            match read.read_line(&mut line) {
                Ok(n) if n > 0 => {
                    c.echoes.fetch_add(1, Ordering::Relaxed);
                    if first {
                        c.served.fetch_add(1, Ordering::Relaxed);
                        first = false;
                    }
                }
                _ if left(until).is_none() => return,
                _ => {
                    c.errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
            match left(until) {
                Some(remaining) => std::thread::sleep(remaining.min(Duration::from_millis(100))),
                None => return,
            }
        }
    }
}

/// Connects afresh until one connection gets its echo; how long that took.
fn fresh_echo(addr: SocketAddr, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        let attempt = || -> io::Result<bool> {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(b"hello after the storm\n")?;
            let mut line = String::new();
            BufReader::new(s).read_line(&mut line)?;
            Ok(line == "hello after the storm\n")
        };
        if let Ok(true) = attempt() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

fn read_address(child: &mut Child) -> Result<SocketAddr, String> {
    let stdout = child
        .stdout
        .take()
        .ok_or("the server's stdout is not piped")?;
    let mut first = String::new();
    BufReader::new(stdout)
        .read_line(&mut first)
        .map_err(|e| format!("reading the server's address: {e}"))?;
    first
        .trim()
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .ok_or(format!(
            "the server did not report its address (got {first:?})"
        ))
}

fn collect_log(child: &mut Child) -> (Arc<Mutex<ServerLog>>, Option<std::thread::JoinHandle<()>>) {
    let log = Arc::new(Mutex::new(ServerLog::default()));
    let Some(stderr) = child.stderr.take() else {
        return (log, None);
    };
    let reader = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
                l.lines += 1;
                if line.contains("Too many open files") {
                    l.emfile_lines += 1;
                    if l.first_emfile.is_none() {
                        l.first_emfile = Some(line.clone());
                    }
                }
                if l.tail.len() >= 20 {
                    l.tail.remove(0);
                }
                l.tail.push(line);
            }
        })
    };
    (log, Some(reader))
}

/// Drives the clients for `plan.storm` with a live progress line on stderr.
fn drive_clients(plan: &Plan, addr: SocketAddr, counters: &Arc<Counters>) {
    let until = Instant::now() + plan.storm;
    let mut threads = Vec::with_capacity(plan.clients);
    for _ in 0..plan.clients {
        let c = Arc::clone(counters);
        let spawned = std::thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(move || {
                client(addr, until, &c);
                c.done.fetch_add(1, Ordering::Relaxed);
            });
        match spawned {
            Ok(t) => threads.push(t),
            Err(_) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                counters.done.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let start = Instant::now();
    let mut shown = 0;
    while counters.done.load(Ordering::Relaxed) < plan.clients {
        std::thread::sleep(Duration::from_millis(50));
        if start.elapsed().as_secs() == shown {
            continue;
        }
        shown = start.elapsed().as_secs();
        eprint!(
            "\r[storm] {:>2}s: {} connected, {} served, {} echoes, {} errors   ",
            start.elapsed().as_secs(),
            counters.connected.load(Ordering::Relaxed),
            counters.served.load(Ordering::Relaxed),
            counters.echoes.load(Ordering::Relaxed),
            counters.errors.load(Ordering::Relaxed),
        );
        let _ = io::stderr().flush();
    }
    for t in threads {
        let _ = t.join();
    }
    eprintln!();
}

/// Runs the storm; returns the process exit code.
pub fn run(plan: &Plan) -> i32 {
    let mut child = match spawn_server(plan) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("storm: cannot start the server: {e}");
            return 1;
        }
    };
    let pid = child.id();
    let addr = match read_address(&mut child) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("storm: {e}");
            let _ = child.kill();
            return 1;
        }
    };
    let (log, log_reader) = collect_log(&mut child);
    println!(
        "storm: {} server pid {pid} on {addr} (ulimit -n {}, max connections {}); {} clients for {:?}",
        plan.runtime, plan.open_files, plan.max_connections, plan.clients, plan.storm
    );

    let counters = Arc::new(Counters::default());
    let cpu_before = cpu_time(pid);
    let wall = Instant::now();
    drive_clients(plan, addr, &counters);
    let storm_wall = wall.elapsed();
    let cpu_after = cpu_time(pid);
    let alive_after_storm = matches!(child.try_wait(), Ok(None));

    let reconnect = fresh_echo(addr, Duration::from_secs(10));
    let alive_at_end = matches!(child.try_wait(), Ok(None));
    let _ = child.kill();
    let _ = child.wait();
    if let Some(reader) = log_reader {
        let _ = reader.join();
    }

    let log = log.lock().unwrap_or_else(|e| e.into_inner());
    let cpu_percent = match (cpu_before, cpu_after) {
        (Some(b), Some(a)) => {
            Some(a.saturating_sub(b).as_secs_f64() / storm_wall.as_secs_f64() * 100.0)
        }
        _ => None,
    };

    let mut ok = true;
    let mut check = |pass: bool, what: String| {
        println!("  [{}] {what}", if pass { " ok " } else { "FAIL" });
        ok &= pass;
    };
    println!(
        "storm: {} connections made, {} clients served, {} echoes, {} client errors",
        counters.connected.load(Ordering::Relaxed),
        counters.served.load(Ordering::Relaxed),
        counters.echoes.load(Ordering::Relaxed),
        counters.errors.load(Ordering::Relaxed)
    );
    check(
        alive_after_storm && alive_at_end,
        "the server did not crash".into(),
    );
    check(
        reconnect.is_some(),
        match reconnect {
            Some(d) => format!(
                "a fresh connection got its echo {:.1} s after the storm",
                d.as_secs_f64()
            ),
            None => "a fresh connection got no echo within 10 s after the storm".into(),
        },
    );
    check(
        log.emfile_lines > 0,
        format!(
            "\"Too many open files\" was logged ({} lines)",
            log.emfile_lines
        ),
    );
    check(
        log.emfile_lines as usize <= plan.max_shortage_lines,
        format!(
            "shortage log lines bounded: {} (at most {}; {} log lines in all)",
            log.emfile_lines, plan.max_shortage_lines, log.lines
        ),
    );
    check(
        cpu_percent.is_some_and(|p| p < plan.cpu_limit_percent),
        match cpu_percent {
            Some(p) => format!(
                "server CPU during the storm: {p:.1} % of one core (limit {} %)",
                plan.cpu_limit_percent
            ),
            None => "server CPU could not be read from /proc".into(),
        },
    );
    if let Some(line) = &log.first_emfile {
        println!("storm: first shortage line: {line}");
    }
    if ok {
        println!("storm: PASS");
        0
    } else {
        println!("storm: FAIL; the server's last log lines:");
        for l in &log.tail {
            println!("    {l}");
        }
        1
    }
}
