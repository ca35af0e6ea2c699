//! The `event_loop` example (the echo server on the sans-IO machines in a hand-written mio
//! loop) on real sockets and a real SIGTERM: echo and `HEALTH`, the drain, the `stats:` line,
//! the per-IP rate limiter deferring lines, the idle timeout, the line bound and the accept
//! pause on EMFILE. Each test runs the example's binary in a child process (built by `cargo
//! test`, or here with `cargo build -p keel-core --example event_loop` when it is missing or
//! older than its source or keel-core's) and takes about a second.
#![cfg(feature = "std")] // runs the event_loop example, which needs std

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

const GRACE: Duration = Duration::from_secs(1);
/// How long a test waits for something that takes milliseconds on an idle machine.
const PATIENCE: Duration = Duration::from_secs(10);

/// The example's binary, built (once per test process) if missing or older than its source.
fn event_loop_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(build_if_stale).clone()
}

fn build_if_stale() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let binary = profile_dir.join("examples").join("event_loop");
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let sources = [
        manifest_dir.join("examples/event_loop.rs"),
        manifest_dir.join("Cargo.toml"),
        manifest_dir.join("src"),
    ];
    let newest_source = sources.iter().filter_map(|p| newest(p, &modified)).max();
    let fresh = match (modified(&binary), newest_source) {
        (Some(built), Some(written)) => built >= written,
        _ => false,
    };
    if !fresh {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-p", "keel-core", "--example", "event_loop"]);
        if profile_dir.ends_with("release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build");
        assert!(
            status.success(),
            "cargo build -p keel-core --example event_loop"
        );
    }
    binary
}

/// The newest modification time of `path` or of any file under it.
fn newest(path: &Path, modified: &dyn Fn(&Path) -> Option<SystemTime>) -> Option<SystemTime> {
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(_) => return modified(path),
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| newest(&e.path(), modified))
        .max()
}

/// The example in a child process, killed when dropped.
struct EventLoop {
    child: Child,
    addr: SocketAddr,
    stdout: BufReader<ChildStdout>,
}

impl EventLoop {
    /// Starts it on a free port with `args`, under `ulimit -n open_files` if given.
    fn start(args: &[&str], open_files: Option<u32>) -> EventLoop {
        let binary = event_loop_binary();
        let mut command = match open_files {
            Some(n) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(binary);
                sh
            }
            None => Command::new(binary),
        };
        let mut child = command
            .args(["--addr", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the event_loop example");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut first = String::new();
        stdout.read_line(&mut first).expect("the first line");
        let addr = first
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .parse()
            .expect("an address");
        EventLoop {
            child,
            addr,
            stdout,
        }
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).expect("connect");
        stream
            .set_read_timeout(Some(PATIENCE))
            .expect("read timeout");
        stream
    }

    /// Sends SIGTERM; returns when it was sent at the earliest: the instant before `kill`
    /// runs, as the server cannot act on the signal before it (an instant taken after `kill`
    /// exits can be later than the server's reaction on a loaded machine, and make a grace
    /// period look cut short).
    fn sigterm(&self) -> Instant {
        let sent = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        sent
    }

    /// SIGTERM (unless sent already), waits for the exit; returns (stdout after the first
    /// line, stderr).
    fn stop(mut self, signalled: bool) -> (String, String) {
        if !signalled {
            self.sigterm();
        }
        let since = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(
                since.elapsed() < PATIENCE,
                "still running {PATIENCE:?} after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(status.success(), "{status}");
        let mut out = String::new();
        self.stdout.read_to_string(&mut out).expect("stdout");
        let mut log = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            stderr.read_to_string(&mut log).expect("stderr");
        }
        (out, log)
    }
}

impl Drop for EventLoop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn round_trip(stream: &mut TcpStream, line: &[u8]) -> Vec<u8> {
    stream.write_all(line).expect("write");
    read_line(stream)
}

fn read_line(stream: &mut TcpStream) -> Vec<u8> {
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while reply.last() != Some(&b'\n') {
        match stream.read(&mut byte) {
            Ok(1) => reply.push(byte[0]),
            Ok(_) => break,
            Err(e) => panic!("reading a line (got {reply:?}): {e}"),
        }
    }
    reply
}

/// Reads until the server closes; returns what came and when it closed.
fn read_to_close(stream: &mut TcpStream) -> (Vec<u8>, Instant) {
    let mut rest = Vec::new();
    match stream.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("reading to the close (got {rest:?}): {e}"),
    }
    (rest, Instant::now())
}

/// The value of `name=` in the `stats:` line.
fn stat(out: &str, name: &str) -> u64 {
    let line = out
        .lines()
        .find(|l| l.starts_with("stats: "))
        .unwrap_or_else(|| panic!("no stats line in {out:?}"));
    line.split_whitespace()
        .find_map(|field| field.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name}= in {line}"))
}

#[test]
fn drains_on_sigterm_answers_health_and_prints_its_stats() {
    let server = EventLoop::start(&["--grace", "1"], None);
    let mut probe = server.connect();
    assert_eq!(
        round_trip(&mut probe, b"HEALTH\n"),
        b"ready=true live=true reasons=[]\n"
    );
    // No sleep decides what the server has seen before the signal (a loaded machine can
    // stall it for longer than any sleep): a round trip on each connection proves it was
    // accepted, and the probe's round trip after the partial lines were written proves the
    // server read them (loopback delivers a write before it returns, so their readiness is
    // reported no later than the probe's; one thread serves all, and the signal comes after).
    let mut mid = server.connect();
    assert_eq!(round_trip(&mut mid, b"mid\n"), b"mid\n");
    let mut hung = server.connect();
    assert_eq!(round_trip(&mut hung, b"hung\n"), b"hung\n");
    mid.write_all(b"start-").expect("write");
    hung.write_all(b"never finished").expect("write");
    assert_eq!(round_trip(&mut probe, b"hello\n"), b"hello\n");

    let signalled = server.sigterm();
    // The idle connection is closed, new ones are refused, the line in flight is answered.
    let (rest, _) = read_to_close(&mut probe);
    assert_eq!(rest, b"");
    drop(probe);
    let err = TcpStream::connect(server.addr).expect_err("refused after SIGTERM");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
    mid.write_all(b"end\n").expect("write");
    let (reply, _) = read_to_close(&mut mid);
    assert_eq!(reply, b"start-end\n");
    drop(mid);
    // The hung client is cut off at the grace period, not before.
    let (rest, cut_at) = read_to_close(&mut hung);
    assert_eq!(rest, b"");
    let cut_after = cut_at - signalled;
    assert!(
        cut_after >= GRACE && cut_after < PATIENCE,
        "cut off after {cut_after:?}"
    );

    let (out, log) = server.stop(true);
    assert!(
        out.contains("stats: completed=2 aborted=1 refused=0 drained_in=1."),
        "{out}"
    );
    assert_eq!(stat(&out, "accepted"), 3, "{out}");
    assert_eq!(stat(&out, "clean"), 2, "{out}");
    for line in [
        "shutdown signal received signal=\"SIGTERM\"",
        "drain started: refusing new connections in_flight=3",
        "drain deadline passed: aborting the connections still open aborted=1",
    ] {
        assert!(log.contains(line), "no {line:?} in\n{log}");
    }
}

#[test]
fn a_client_over_its_ip_rate_is_answered_later_not_refused() {
    // 2 lines a second, burst 2: of 4 lines sent at once, the 3rd waits 0.5 s, the 4th 1 s.
    // A line that has arrived is not the client's delay: its 0.3 s read deadline is off.
    let server = EventLoop::start(&["--rate-per-ip", "2", "--line-timeout", "0.3"], None);
    let mut client = server.connect();
    let sent = Instant::now();
    client.write_all(b"a\nb\nc\nd\n").expect("write");
    for line in [&b"a\n"[..], b"b\n", b"c\n", b"d\n"] {
        assert_eq!(read_line(&mut client), line);
    }
    let took = sent.elapsed();
    assert!(took >= Duration::from_millis(900), "4 lines in {took:?}");
    // Another connection from the same IP shares the debt: its line cannot be answered before
    // 1.5 s after the first four arrived.
    let mut other = server.connect();
    assert_eq!(round_trip(&mut other, b"e\n"), b"e\n");
    let took = sent.elapsed();
    assert!(took >= Duration::from_millis(1400), "5 lines in {took:?}");
    drop((client, other));
    let (out, _) = server.stop(false);
    assert!(stat(&out, "rate_limited") >= 3, "{out}");
}

#[test]
fn an_idle_client_is_closed_and_an_overlong_line_gets_an_error_line() {
    let server = EventLoop::start(&["--idle-timeout", "0.3", "--max-line", "8"], None);
    let mut idle = server.connect();
    let mut long = server.connect();
    long.write_all(b"0123456789\n").expect("write");
    let (reply, _) = read_to_close(&mut long);
    assert_eq!(reply, b"ERR line longer than 8 bytes\n");
    let connected = Instant::now();
    let (rest, closed_at) = read_to_close(&mut idle);
    assert_eq!(rest, b"");
    assert!(closed_at - connected < PATIENCE);
    drop((idle, long));
    let (out, _) = server.stop(false);
    assert_eq!(stat(&out, "idle_closed"), 1, "{out}");
}

#[test]
fn out_of_file_descriptors_it_pauses_logs_a_hint_and_serves_the_waiting_clients_later() {
    // 16 descriptors: stdio, epoll, the listener and the two signal pipes leave room for a
    // handful of connections; the rest wait in the backlog while accept fails with EMFILE.
    let server = EventLoop::start(&[], Some(16));
    let mut clients: Vec<TcpStream> = (0..16).map(|_| server.connect()).collect();
    for c in &mut clients {
        c.write_all(b"ping\n").expect("write");
    }
    std::thread::sleep(Duration::from_millis(300));
    let first = clients.remove(0);
    let mut waiting = clients.pop().expect("16 clients");
    drop(clients);
    drop(first);
    // The slots freed, the pause (at most 1 s) ends and the last client is served.
    assert_eq!(read_line(&mut waiting), b"ping\n");
    drop(waiting);
    let (out, log) = server.stop(false);
    assert!(stat(&out, "shortages") >= 1, "{out}");
    let warning = log
        .lines()
        .find(|l| l.contains("accept paused on a resource shortage"))
        .unwrap_or_else(|| panic!("no shortage warning in\n{log}"));
    assert!(warning.contains("Too many open files"), "{warning}");
    assert!(warning.contains("shortage=\"EMFILE\""), "{warning}");
    assert!(warning.contains("ulimit -n"), "{warning}");
}

#[test]
fn a_trickler_is_closed_at_its_line_deadline_though_never_idle() {
    let server = EventLoop::start(&["--idle-timeout", "0.3", "--line-timeout", "0.6"], None);
    let mut trickler = server.connect();
    trickler
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    let started = Instant::now();
    let mut byte = [0u8; 1];
    let closed = loop {
        assert!(
            started.elapsed() < PATIENCE,
            "the trickler was never closed"
        );
        if trickler.write_all(b"x").is_err() {
            break true;
        }
        match trickler.read(&mut byte) {
            Ok(0) => break true,
            Ok(_) => panic!("the line has no newline: nothing to echo"),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break true,
        }
    };
    assert!(closed);
    drop(trickler);
    let (out, _) = server.stop(false);
    assert_eq!(stat(&out, "deadline_expired"), 1, "{out}");
    assert_eq!(stat(&out, "idle_closed"), 0, "{out}");
}

#[test]
fn at_the_limit_a_newcomer_is_served_by_reclaiming_the_longest_idle_connection() {
    let server = EventLoop::start(&["--max-connections", "2"], None);
    let mut oldest = server.connect();
    assert_eq!(round_trip(&mut oldest, b"first\n"), b"first\n");
    let mut second = server.connect();
    assert_eq!(round_trip(&mut second, b"second\n"), b"second\n");
    // Both slots are taken; the newcomer waits in the backlog until the oldest has been idle
    // 1 s (the default `reclaim_min_idle`), then takes its slot.
    let mut newcomer = server.connect();
    let waited = Instant::now();
    assert_eq!(round_trip(&mut newcomer, b"new\n"), b"new\n");
    assert!(
        waited.elapsed() < Duration::from_secs(5),
        "{:?}",
        waited.elapsed()
    );
    let (rest, _) = read_to_close(&mut oldest);
    assert_eq!(rest, b"");
    assert_eq!(round_trip(&mut second, b"still here\n"), b"still here\n");
    drop((oldest, second, newcomer));
    let (out, _) = server.stop(false);
    assert_eq!(stat(&out, "reclaimed"), 1, "{out}");
}

#[test]
fn a_second_signal_stops_at_once_and_counts_the_aborted() {
    let server = EventLoop::start(&["--grace", "30"], None);
    let mut hung = server.connect();
    // A round trip, not a sleep, proves the server accepted it before the signal; the partial
    // line written after it keeps it in flight (the server reads it before the signal's byte,
    // which comes later, on the same thread).
    assert_eq!(round_trip(&mut hung, b"hello\n"), b"hello\n");
    hung.write_all(b"never finished").expect("write");
    server.sigterm();
    std::thread::sleep(Duration::from_millis(200));
    let second = server.sigterm();
    let (rest, cut_at) = read_to_close(&mut hung);
    assert_eq!(rest, b"");
    assert!(cut_at - second < PATIENCE, "{:?}", cut_at - second);
    let (out, log) = server.stop(true);
    assert!(
        out.contains("stats: completed=0 aborted=1 refused=0"),
        "{out}"
    );
    assert!(
        log.contains("second signal: stopping at once aborted=1"),
        "{log}"
    );
}

#[test]
fn an_8_mib_line_is_echoed_whole_to_a_reader_that_reads_late() {
    // More than loopback's socket buffers hold: the server writes until `WouldBlock`, then
    // waits for the writable edge to go on.
    let server = EventLoop::start(&["--max-line", "9000000"], None);
    let mut client = server.connect();
    let mut line: Vec<u8> = (0..(8 << 20)).map(|i| b'a' + (i % 26) as u8).collect();
    line.push(b'\n');
    client.write_all(&line).expect("write the line");
    std::thread::sleep(Duration::from_millis(200));
    let mut echo = vec![0u8; line.len()];
    client.read_exact(&mut echo).expect("the whole echo");
    assert!(echo == line, "the echo differs from the line");
    drop(client);
    let (out, _) = server.stop(false);
    assert_eq!(stat(&out, "resets"), 0, "{out}");
}

#[test]
fn a_drain_delay_keeps_serving_while_health_says_not_ready_then_drains() {
    let server = EventLoop::start(&["--grace", "1", "--drain-delay", "1"], None);
    let mut probe = server.connect();
    assert_eq!(
        round_trip(&mut probe, b"HEALTH\n"),
        b"ready=true live=true reasons=[]\n"
    );

    let signalled = server.sigterm();
    // Not ready from the signal on (the signal reaches the loop through its self-pipe).
    loop {
        let health = round_trip(&mut probe, b"HEALTH\n");
        if health.starts_with(b"ready=false") {
            assert_eq!(
                health,
                b"ready=false live=true reasons=[shutdown: drain delay]\n"
            );
            break;
        }
        assert!(signalled.elapsed() < PATIENCE, "still ready after SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Still accepting and serving during the delay.
    let mut late = server.connect();
    assert_eq!(round_trip(&mut late, b"during\n"), b"during\n");

    // Then the drain closes the idle connections, after the delay.
    let (rest, closed_at) = read_to_close(&mut probe);
    assert_eq!(rest, b"");
    assert!(
        closed_at - signalled >= Duration::from_secs(1),
        "closed {:?} after SIGTERM, inside the drain delay",
        closed_at - signalled
    );
    let (rest, _) = read_to_close(&mut late);
    assert_eq!(rest, b"");
    drop((probe, late));
    let (out, log) = server.stop(true);
    assert!(
        out.contains("stats: completed=2 aborted=0 refused=0"),
        "{out}"
    );
    for line in [
        "drain delay started: not ready, still serving delay_ms=",
        "drain started: refusing new connections in_flight=2",
    ] {
        assert!(log.contains(line), "no {line:?} in\n{log}");
    }
}
