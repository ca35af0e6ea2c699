//! Graceful shutdown on real sockets: replies for the lines in flight, refused connections after
//! the signal, idle connections closed, a hung client cut off at the deadline and counted, and
//! the echo example doing all of it on a real SIGTERM.

use std::io::{BufRead as _, BufReader as StdBufReader, Read as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keel_tokio::core::driver::GuardConfig;
use keel_tokio::{Draining, ServeReport, ShutdownConfig};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const GRACE: Duration = Duration::from_secs(1);

/// Echoes lines; at the drain, closes when idle, finishes a line in flight first.
async fn echo(stream: TcpStream, draining: Draining) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = match draining
            .run_until_draining(lines.read_until(b'\n', &mut line))
            .await
        {
            Some(read) => read,
            None if line.is_empty() && lines.buffer().is_empty() => break,
            None => lines.read_until(b'\n', &mut line).await,
        };
        if read.is_err() || line.is_empty() {
            break;
        }
        if write.write_all(&line).await.is_err() || draining.is_draining() {
            break;
        }
    }
}

struct Running {
    addr: SocketAddr,
    handle: keel_tokio::ServeHandle,
    trigger: Option<oneshot::Sender<()>>,
    server: JoinHandle<ServeReport>,
}

async fn start() -> Running {
    let config = GuardConfig::builder().max_connections(64).build().unwrap();
    let incoming = keel_tokio::bind("127.0.0.1:0", &config).await.unwrap();
    let addr = incoming.get_ref().0.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let server = keel_tokio::Server::new(incoming)
        .config(
            ShutdownConfig::builder()
                .grace_period(GRACE)
                .build()
                .unwrap(),
        )
        .shutdown_when(async move {
            let _ = rx.await;
        });
    let handle = server.handle();
    let server = tokio::spawn(server.serve(echo));
    Running {
        addr,
        handle,
        trigger: Some(tx),
        server,
    }
}

impl Running {
    async fn wait_in_flight(&self, n: u64) {
        let until = Instant::now() + Duration::from_secs(5);
        while self.handle.stats().shutdown.in_flight != n {
            assert!(Instant::now() < until, "{:?}", self.handle.stats());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn signal(&mut self) -> Instant {
        self.trigger.take().unwrap().send(()).unwrap();
        Instant::now()
    }
}

async fn round_trip(stream: &mut TcpStream, line: &[u8]) -> Vec<u8> {
    stream.write_all(line).await.unwrap();
    let mut reply = vec![0; line.len()];
    stream.read_exact(&mut reply).await.unwrap();
    reply
}

/// Reads until EOF or reset; returns the bytes and when it ended.
async fn read_to_close(stream: &mut TcpStream) -> (Vec<u8>, Instant) {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut got)).await;
    (got, Instant::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_lines_are_answered_idle_closed_new_refused_and_a_hung_client_aborted_at_the_deadline(
) {
    let mut srv = start().await;
    let mut idle = TcpStream::connect(srv.addr).await.unwrap();
    assert_eq!(round_trip(&mut idle, b"warm-up\n").await, b"warm-up\n");
    let mut mid = TcpStream::connect(srv.addr).await.unwrap();
    mid.write_all(b"start-").await.unwrap();
    let mut hung = TcpStream::connect(srv.addr).await.unwrap();
    hung.write_all(b"never finished").await.unwrap();
    srv.wait_in_flight(3).await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let signalled = srv.signal();
    // The idle connection is closed at once, well before the deadline.
    let (rest, closed_at) = read_to_close(&mut idle).await;
    assert_eq!(rest, b"");
    assert!(
        closed_at - signalled < GRACE / 2,
        "{:?}",
        closed_at - signalled
    );
    // New connections are refused by the kernel: the listener is closed.
    let err = TcpStream::connect(srv.addr).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    // The health line says draining.
    assert_eq!(
        srv.handle.health().to_string(),
        "ready=false live=true reasons=[shutdown: draining]"
    );
    // The line in flight is finished and answered, then the connection closes.
    mid.write_all(b"end\n").await.unwrap();
    let (reply, _) = read_to_close(&mut mid).await;
    assert_eq!(reply, b"start-end\n");
    // The hung client is cut off at the deadline.
    let (rest, cut_at) = read_to_close(&mut hung).await;
    assert_eq!(rest, b"");
    let cut_after = cut_at - signalled;
    assert!(
        cut_after >= GRACE && cut_after < GRACE + Duration::from_millis(500),
        "{cut_after:?}"
    );

    let report = srv.server.await.unwrap();
    assert_eq!(report.summary.completed, 2);
    assert_eq!(report.summary.aborted, 1);
    assert_eq!(report.summary.refused, 0);
    let drained_in = report.summary.drained_in.unwrap();
    assert!(
        drained_in >= GRACE && drained_in < GRACE + Duration::from_millis(500),
        "{drained_in:?}"
    );
    assert_eq!(report.stats.accept.accepted, 3);
    assert_eq!(report.stats.shutdown.started, 3);
    assert!(report.error.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_ends_as_soon_as_the_last_connection_finishes() {
    let mut srv = start().await;
    let mut mid = TcpStream::connect(srv.addr).await.unwrap();
    mid.write_all(b"half").await.unwrap();
    srv.wait_in_flight(1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let signalled = srv.signal();
    tokio::time::sleep(Duration::from_millis(100)).await;
    mid.write_all(b"-and-half\n").await.unwrap();
    let (reply, _) = read_to_close(&mut mid).await;
    assert_eq!(reply, b"half-and-half\n");
    let report = srv.server.await.unwrap();
    let took = signalled.elapsed();
    assert!(took < GRACE / 2, "{took:?}");
    assert_eq!((report.summary.completed, report.summary.aborted), (1, 0));
    assert!(report.summary.drained_in.unwrap() < GRACE / 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_stops_at_once_and_counts_the_aborted() {
    let srv = start().await;
    let mut hung = TcpStream::connect(srv.addr).await.unwrap();
    hung.write_all(b"partial").await.unwrap();
    srv.wait_in_flight(1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    srv.handle.shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(srv.handle.is_draining());
    let second = Instant::now();
    srv.handle.shutdown();
    let report = srv.server.await.unwrap();
    assert!(second.elapsed() < GRACE / 2, "{:?}", second.elapsed());
    assert_eq!((report.summary.completed, report.summary.aborted), (0, 1));
    let (rest, _) = read_to_close(&mut hung).await;
    assert_eq!(rest, b"");
    assert_eq!(report.stats.shutdown.signals, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_with_nothing_in_flight_stops_at_once() {
    let mut srv = start().await;
    let signalled = srv.signal();
    let report = srv.server.await.unwrap();
    assert!(signalled.elapsed() < GRACE / 2);
    assert_eq!(report.summary.drained_in, Some(Duration::ZERO));
    assert_eq!((report.summary.completed, report.summary.aborted), (0, 0));
}

// ----- the echo example, on a real SIGTERM -------------------------------------------------

/// The `echo` example binary, built next to this test (cargo builds examples for `cargo test`;
/// built here if a filtered run skipped it).
fn echo_example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let path = dir
        .join("examples")
        .join(format!("echo{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "keel-tokio", "--example", "echo"])
            .status()
            .unwrap();
        assert!(status.success());
    }
    path
}

fn std_round_trip(stream: &mut std::net::TcpStream, line: &[u8]) -> Vec<u8> {
    stream.write_all(line).unwrap();
    let mut reply = Vec::new();
    let mut reader = StdBufReader::new(stream);
    reader.read_until(b'\n', &mut reply).unwrap();
    reply
}

fn std_read_to_close(stream: &mut std::net::TcpStream) -> (Vec<u8>, Instant) {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    (got, Instant::now())
}

#[test]
fn the_echo_example_drains_on_sigterm_answers_health_and_exits_0_within_the_grace_period() {
    let mut child = Command::new(echo_example())
        .args(["--addr", "127.0.0.1:0", "--grace", "1"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = StdBufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let addr: SocketAddr = first
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .parse()
        .unwrap();

    let mut probe = std::net::TcpStream::connect(addr).unwrap();
    assert_eq!(
        std_round_trip(&mut probe, b"HEALTH\n"),
        b"ready=true live=true reasons=[]\n"
    );
    assert_eq!(std_round_trip(&mut probe, b"hello\n"), b"hello\n");
    let mut mid = std::net::TcpStream::connect(addr).unwrap();
    mid.write_all(b"start-").unwrap();
    let mut hung = std::net::TcpStream::connect(addr).unwrap();
    hung.write_all(b"never finished").unwrap();
    std::thread::sleep(Duration::from_millis(200));

    let signalled = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    std::thread::sleep(Duration::from_millis(200));

    // Idle: closed. New: refused. In flight: answered. Hung: cut off at the deadline.
    let (rest, _) = std_read_to_close(&mut probe);
    assert_eq!(rest, b"");
    let err = std::net::TcpStream::connect(addr).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    mid.write_all(b"end\n").unwrap();
    let (reply, _) = std_read_to_close(&mut mid);
    assert_eq!(reply, b"start-end\n");
    let (rest, cut_at) = std_read_to_close(&mut hung);
    assert_eq!(rest, b"");
    let cut_after = cut_at - signalled;
    assert!(
        cut_after >= GRACE && cut_after < GRACE + Duration::from_secs(1),
        "{cut_after:?}"
    );

    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            signalled.elapsed() < GRACE + Duration::from_secs(2),
            "still running after the grace period"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status}");
    let mut out = String::new();
    stdout.read_to_string(&mut out).unwrap();
    assert!(
        out.contains("stats: completed=2 aborted=1 refused=0 drained_in=1."),
        "{out}"
    );
    assert!(out.contains("accepted=3"), "{out}");
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(
        log.contains("shutdown signal received signal=\"SIGTERM\""),
        "{log}"
    );
    assert!(
        log.contains("drain started: refusing new connections in_flight=3"),
        "{log}"
    );
    assert!(
        log.contains("drain deadline passed: aborting the connections still open aborted=1"),
        "{log}"
    );
}
