//! The seed-002 accept storm, the client side: [`run`] starts a server binary in a child process
//! under `ulimit -n 100` (see [`Plan::seed`]), drives 1000 loopback clients at it for about 10 s
//! (std threads with blocking sockets and timeouts: no runtime on the client side) and returns
//! exit code 0 only if the server did not crash, a fresh connection gets its echo after the
//! storm, "Too many open files" was logged a bounded number of times and the server used under
//! 10 % of one core during the storm.
//!
//! Any server binary that speaks the echo protocol can be stormed: each adapter's storm example
//! (keel-tokio's `storm`, keel-smol's `smol-storm`, keel-async-std's `async-std-storm`) storms
//! its own echo server (the same binary, started with `--serve`), and a
//! hand-written event loop can be stormed the same way.
//!
//! # What the server must do
//!
//! - accept `--addr 127.0.0.1:0 --max-connections N` after the plan's own arguments;
//! - print `listening on ADDR` as its first line on stdout;
//! - echo each line back on every connection;
//! - log to stderr (the storm counts the lines holding "Too many open files").
//!
//! ```no_run
//! use keel_testkit::storm::{run, Plan};
//!
//! let exe = std::env::current_exe().expect("this binary");
//! let mut plan = Plan::seed(exe, vec!["--serve".into()]);
//! plan.runtime = "my-event-loop";
//! std::process::exit(run(&plan));
//! ```

use std::io::{self, BufRead, BufReader, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// An adapter's storm example in one call: started with `--serve` as its first argument, this
/// binary is the server and runs `serve` (the echo example compiled into it); otherwise it storms
/// a copy of itself started with `--serve` ([`Plan::seed`], `runtime` for the report) and exits
/// with the storm's code. `serve` must accept (and ignore) `--serve` among its flags, as
/// [`echo::Options`](crate::echo::Options) does.
pub fn serve_or_storm(runtime: &'static str, serve: fn()) {
    if std::env::args().nth(1).as_deref() == Some("--serve") {
        serve();
        return;
    }
    let exe = std::env::current_exe().unwrap_or_else(|e| {
        eprintln!("storm: the path of this example: {e}");
        std::process::exit(1)
    });
    let mut plan = Plan::seed(exe, vec!["--serve".into()]);
    plan.runtime = runtime;
    std::process::exit(run(&plan));
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
