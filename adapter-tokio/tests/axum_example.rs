//! The `axum` showcase example over real HTTP: each test runs the example's binary in a child
//! process (built by `cargo test`, or here with `cargo build -p keel-tokio --features
//! tower,axum,metrics,hyper --example axum` when it is missing or older than its sources) and drives
//! it with hyper's client over a `TcpStream`.
//!
//! The per-IP limit, the trusted-proxy keying and the dependency's breaker and retry are keel's
//! HTTP layers (`keel_tokio::http`) wired into the example; these tests check what they emit
//! over the wire.
#![cfg(all(feature = "tower", feature = "axum", feature = "metrics"))]

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use http_body_util::BodyExt as _;
use hyper::body::Bytes;
use hyper::header::HeaderMap;
use hyper::StatusCode;
use hyper_util::rt::TokioIo;

/// How long a test waits for something that takes milliseconds on an idle machine.
const PATIENCE: Duration = Duration::from_secs(15);

/// The example's binary, built (once per test process) if missing or older than its sources.
fn binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(build_if_stale).clone()
}

fn build_if_stale() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let binary = profile_dir.join("examples").join("axum");
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let core_dir = manifest_dir.join("../core");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let sources = [
        manifest_dir.join("examples/axum.rs"),
        manifest_dir.join("Cargo.toml"),
        manifest_dir.join("src"),
        core_dir.join("src"),
    ];
    let newest_source = sources.iter().filter_map(|p| newest(p, &modified)).max();
    let fresh = match (modified(&binary), newest_source) {
        (Some(built), Some(written)) => built >= written,
        _ => false,
    };
    if !fresh {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args([
            "build",
            "-p",
            "keel-tokio",
            "--features",
            "tower,axum,metrics,hyper",
            "--example",
            "axum",
        ]);
        if profile_dir.ends_with("release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "cargo build -p keel-tokio --example axum");
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
struct Example {
    child: Child,
    addr: SocketAddr,
}

impl Example {
    /// Starts it on a free port with `args`.
    fn start(args: &[&str]) -> Example {
        let mut child = Command::new(binary())
            .args(["--addr", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the axum example");
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("piped"));
        let mut first = String::new();
        stdout.read_line(&mut first).expect("the first line");
        let addr = first
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .parse()
            .expect("an address");
        Example { child, addr }
    }

    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits (up to `PATIENCE`) for the process to exit.
    async fn exit(&mut self) -> ExitStatus {
        let since = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                since.elapsed() < PATIENCE,
                "the example did not exit within {PATIENCE:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn get(&self, path: &str) -> Answer {
        get_from(self.addr, None, path, &[])
            .await
            .expect("an answer")
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP answer.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// `GET path` on a fresh connection from `source` (an address of the loopback network, e.g.
/// 127.0.0.2) or any local address, with extra `headers`.
async fn get_from(
    addr: SocketAddr,
    source: Option<&str>,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Answer, Box<dyn std::error::Error + Send + Sync>> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    if let Some(source) = source {
        socket.bind(format!("{source}:0").parse()?)?;
    }
    let stream = tokio::time::timeout(PATIENCE, socket.connect(addr)).await??;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = hyper::Request::get(path).header(hyper::header::HOST, addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(http_body_util::Empty::<Bytes>::new())?;
    let res = tokio::time::timeout(PATIENCE, sender.send_request(req)).await??;
    let (parts, body) = res.into_parts();
    let body = tokio::time::timeout(PATIENCE, body.collect()).await??;
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body.to_bytes()).into_owned(),
    })
}

/// A quota no test reaches by accident.
const GENEROUS: [&str; 4] = ["--per-second", "1000", "--burst", "1000"];

#[tokio::test]
async fn livez_is_200_and_metrics_lists_every_documented_name_after_traffic() {
    let mut ex = Example::start(&GENEROUS);
    let live = ex.get("/livez").await;
    assert_eq!(live.status, StatusCode::OK);
    assert_eq!(live.header("content-type"), Some("application/json"));
    assert_eq!(
        live.body,
        r#"{"ready":true,"live":true,"components":[],"omitted":0}"#
    );
    assert_eq!(ex.get("/readyz").await.status, StatusCode::OK);
    assert_eq!(ex.get("/").await.body, "hello\n");
    let work = ex.get("/work").await;
    assert_eq!(
        (work.status, work.body.as_str()),
        (StatusCode::OK, "dependency says hi\n")
    );
    assert_eq!(ex.get("/slow").await.body, "slow answer\n");

    let metrics = ex.get("/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    for name in keel_tokio::core::driver::metrics::ALL {
        assert!(
            metrics
                .body
                .lines()
                .any(|l| l.starts_with(&format!("{name}{{"))),
            "{name} is not in /metrics:\n{}",
            metrics.body
        );
    }
    // Labelled by instance, with the values the traffic above made.
    for line in [
        r#"keel_breaker_state{name="dependency"} 0"#,
        r#"keel_breaker_calls_total{name="dependency",outcome="success"} 1"#,
        r#"keel_bulkhead_admitted_total{name="slow"} 1"#,
        r#"keel_shutdown_phase{name="http"} 0"#,
    ] {
        assert!(
            metrics.body.lines().any(|l| l == line),
            "no {line:?} in:\n{}",
            metrics.body
        );
    }
    ex.sigterm();
    assert!(ex.exit().await.success());
}

#[tokio::test]
async fn the_breaker_opens_on_5xx_from_the_dependency() {
    let mut ex = Example::start(&[&GENEROUS[..], &["--dependency", "fail"]].concat());
    // Five consecutive failures open it: the first /work makes three attempts (502), the
    // second two more and then fails fast on the open breaker.
    let first = ex.get("/work").await;
    assert_eq!(first.status, StatusCode::BAD_GATEWAY);
    // Client-safe: no detail of the failure in the answer.
    assert_eq!(first.body, "the dependency failed\n");
    let second = ex.get("/work").await;
    assert_eq!(second.status, StatusCode::SERVICE_UNAVAILABLE);
    let retry_after: u64 = second
        .header("retry-after")
        .expect("a Retry-After")
        .parse()
        .expect("delay-seconds");
    assert!((1..=5).contains(&retry_after), "{retry_after}");
    // Open: every call fails fast now, without reaching the dependency.
    let started = Instant::now();
    assert_eq!(
        ex.get("/work").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let metrics = ex.get("/metrics").await.body;
    for line in [
        r#"keel_breaker_state{name="dependency"} 1"#,
        r#"keel_breaker_calls_total{name="dependency",outcome="failure"} 5"#,
        r#"keel_breaker_transitions_total{name="dependency",to="open"} 1"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in:\n{metrics}"
        );
    }
    // Degraded, not unready: an open breaker does not take the instance out of rotation.
    let ready = ex.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(
        ready.body,
        r#"{"ready":true,"live":true,"components":[{"name":"dependency","state":"degraded","reason":"open"}],"omitted":0}"#
    );
    ex.sigterm();
    assert!(ex.exit().await.success());
}

#[tokio::test]
async fn on_sigterm_it_drains_finishes_the_requests_in_flight_and_exits_0() {
    let mut ex = Example::start(&[&GENEROUS[..], &["--slow-ms", "1000", "--grace", "10"]].concat());
    let addr = ex.addr;
    let in_flight = tokio::spawn(async move { get_from(addr, None, "/slow", &[]).await });
    // Wait until the request holds its bulkhead slot.
    let since = Instant::now();
    loop {
        let metrics = ex.get("/metrics").await.body;
        if metrics
            .lines()
            .any(|l| l == r#"keel_bulkhead_in_flight{name="slow"} 1"#)
        {
            break;
        }
        assert!(
            since.elapsed() < PATIENCE,
            "/slow never started:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ex.sigterm();
    let answer = in_flight.await.expect("the task").expect("an answer");
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "slow answer\n")
    );
    // Told to close the connection: the server is draining.
    assert_eq!(answer.header("connection"), Some("close"));
    let status = ex.exit().await;
    assert!(status.success(), "{status:?}");
    // The listener is closed: nothing answers any more.
    assert!(get_from(addr, None, "/", &[]).await.is_err());
}

#[tokio::test]
async fn on_sigterm_readyz_turns_503_at_once_while_requests_succeed_for_the_drain_delay() {
    let mut ex = Example::start(&[&GENEROUS[..], &["--drain-delay", "2"]].concat());
    assert_eq!(ex.get("/readyz").await.status, StatusCode::OK);
    // Taken before the signal is sent: the delay starts when the example receives it, which
    // can be a few milliseconds before `kill` returns, so an instant taken after it could see
    // the exit a little less than 2 s later.
    let signalled = Instant::now();
    ex.sigterm();
    let since = Instant::now();
    let ready = loop {
        let ready = ex.get("/readyz").await;
        if ready.status == StatusCode::SERVICE_UNAVAILABLE {
            break ready;
        }
        assert!(since.elapsed() < PATIENCE, "/readyz stayed 200");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(
        ready.body,
        r#"{"ready":false,"live":true,"components":[{"name":"shutdown","state":"unhealthy","reason":"drain delay"}],"omitted":0}"#
    );
    // Still accepting and serving during the delay (on new connections too).
    assert_eq!(ex.get("/").await.status, StatusCode::OK);
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "the machine was too slow to observe the delay; the assertion above proves nothing"
    );
    let status = ex.exit().await;
    assert!(status.success(), "{status:?}");
    assert!(signalled.elapsed() >= Duration::from_secs(2));
}

/// The most requests a test sends to reach a limit: a burst of 2 at one token a second is spent
/// by the third request unless a second passed between them, so on a machine loaded enough to
/// refill the key between some requests, a few more get there.
const TRIES: usize = 20;

/// `RateLimit: "default";r=R;t=T` parsed as `(R, T)`.
fn ratelimit(answer: &Answer) -> (u64, u64) {
    let field = answer.header("ratelimit").expect("a RateLimit field");
    let rest = field
        .strip_prefix(r#""default";r="#)
        .unwrap_or_else(|| panic!("unexpected RateLimit {field:?}"));
    let (r, t) = rest
        .split_once(";t=")
        .unwrap_or_else(|| panic!("unexpected RateLimit {field:?}"));
    (r.parse().expect("r"), t.parse().expect("t"))
}

/// Requests `/` from `source` until one is limited (at most [`TRIES`]), checking on the way the
/// relations that hold whatever time passes between requests, for a quota of one token a
/// second and a burst of 2 (GCRA: with `x` the seconds until the key's burst is whole again,
/// `r = floor(2 - x)` and `t = ceil(x)`):
///
/// - every admitted answer has `r + t = 2`, `r <= 1`, `t >= 1`;
/// - `r` goes down by one per request and comes back by at most the whole seconds that passed;
/// - the `429` (reached because nothing refills within the test's few milliseconds per
///   request, however slow: at most one token per second) has `r=0;t=2` and `Retry-After: 1`
///   exactly: a limited key is between 1 and 2 s from whole, and 0 to 1 s from its next token.
///
/// Returns the admitted answers and the 429.
async fn until_limited(addr: SocketAddr, source: &str) -> (Vec<Answer>, Answer) {
    let policy = r#""default";q=2;w=2"#;
    let mut admitted: Vec<Answer> = Vec::new();
    let mut previous: Option<(u64, Instant)> = None;
    for _ in 0..TRIES {
        let sent = Instant::now();
        let answer = get_from(addr, Some(source), "/", &[]).await.unwrap();
        assert_eq!(answer.header("ratelimit-policy"), Some(policy));
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(answer.header("retry-after"), Some("1"), "{answer:?}");
            assert_eq!(ratelimit(&answer), (0, 2), "{answer:?}");
            return (admitted, answer);
        }
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
        let (r, t) = ratelimit(&answer);
        assert_eq!(r + t, 2, "{answer:?}");
        assert!(r <= 1 && t >= 1, "{answer:?}");
        if let Some((before, at)) = previous {
            // This request spent a token and at most ceil(elapsed) came back since the
            // previous one was sent: r <= before - 1 + ceil(e) <= before + floor(e).
            let whole = at.elapsed().as_secs();
            assert!(
                r <= before + whole,
                "remaining went from {before} to {r} in {:?}",
                at.elapsed()
            );
        }
        previous = Some((r, sent));
        admitted.push(answer);
    }
    panic!("{TRIES} requests from {source} were never limited");
}

#[tokio::test]
async fn per_ip_429_with_retry_after_from_two_source_addresses() {
    let mut ex = Example::start(&["--per-second", "1", "--burst", "2"]);
    let addr = ex.addr;
    let (admitted, _limited) = until_limited(addr, "127.0.0.1").await;
    assert!(admitted.len() >= 2, "the burst of 2 was admitted first");
    // Another address has its own budget, untouched: a fresh key.
    let other = get_from(addr, Some("127.0.0.2"), "/", &[]).await.unwrap();
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(ratelimit(&other), (1, 1));
    let (_, limited) = until_limited(addr, "127.0.0.2").await;
    assert_eq!(limited.header("retry-after"), Some("1"));
    // The probes and the scrape are not limited.
    for path in ["/livez", "/readyz", "/metrics"] {
        let answer = get_from(addr, Some("127.0.0.1"), path, &[]).await.unwrap();
        assert_eq!(answer.status, StatusCode::OK, "{path}");
    }
    ex.sigterm();
    assert!(ex.exit().await.success());
}

#[tokio::test]
async fn a_429_carries_the_ietf_ratelimit_fields_from_the_keys_real_state() {
    // One token a second, a burst of 2: the whole burst refills in 2 s.
    let mut ex = Example::start(&["--per-second", "1", "--burst", "2"]);
    let addr = ex.addr;
    let (admitted, limited) = until_limited(addr, "127.0.0.1").await;
    // A fresh key's first request: one left, whole again 1 s later (exact, whatever the load).
    assert_eq!(ratelimit(&admitted[0]), (1, 1));
    // The request just before the 429 spent the last token: nothing remained, 2 s to whole.
    assert_eq!(ratelimit(admitted.last().expect("admitted")), (0, 2));
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    // The other address's key is fresh: its own state, not the first one's.
    let other = get_from(addr, Some("127.0.0.2"), "/", &[]).await.unwrap();
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(ratelimit(&other), (1, 1));
    ex.sigterm();
    assert!(ex.exit().await.success());
}

#[tokio::test]
async fn a_trusted_proxys_x_forwarded_for_keys_the_limit_and_an_untrusted_ones_does_not() {
    let mut ex = Example::start(&[
        "--per-second",
        "1",
        "--burst",
        "1",
        "--trusted-proxy",
        "127.0.0.2/32",
    ]);
    let addr = ex.addr;
    let via = |source: &'static str, client: String| async move {
        get_from(addr, Some(source), "/", &[("x-forwarded-for", &client)])
            .await
            .expect("an answer")
            .status
    };
    // Through the trusted proxy: keyed by the client it names. One client is limited...
    let mut limited = false;
    for _ in 0..TRIES {
        if via("127.0.0.2", "203.0.113.1".into()).await == StatusCode::TOO_MANY_REQUESTS {
            limited = true;
            break;
        }
    }
    assert!(
        limited,
        "the trusted proxy's client 203.0.113.1 was never limited"
    );
    // ...and every other client it names has a budget of its own (fresh keys: never limited,
    // whatever the timing, where keying by the proxy would limit them).
    for n in 2..2 + TRIES {
        assert_eq!(
            via("127.0.0.2", format!("203.0.113.{n}")).await,
            StatusCode::OK,
            "client 203.0.113.{n} through the trusted proxy"
        );
    }
    // An untrusted peer's header is ignored: keyed by the peer, whatever client it claims,
    // so claiming a new client each time does not escape the limit.
    let mut limited = false;
    for n in 100..100 + TRIES {
        if via("127.0.0.3", format!("203.0.113.{n}")).await == StatusCode::TOO_MANY_REQUESTS {
            limited = true;
            break;
        }
    }
    assert!(
        limited,
        "an untrusted peer escaped the limit by naming new clients"
    );
    ex.sigterm();
    assert!(ex.exit().await.success());
}

#[tokio::test]
async fn the_dependencys_retry_after_is_honoured() {
    // The fake dependency answers 503 with `Retry-After: 1`: three attempts then take at least
    // two seconds (the schedule alone would retry after 20 and 40 ms).
    let mut ex = Example::start(&[&GENEROUS[..], &["--dependency", "fail"]].concat());
    let started = Instant::now();
    assert_eq!(ex.get("/work").await.status, StatusCode::BAD_GATEWAY);
    assert!(started.elapsed() >= Duration::from_secs(2));
    ex.sigterm();
    assert!(ex.exit().await.success());
}
