//! The axum example in fleet mode (`examples/redis-axum.rs`), run as a process against the real Redis
//! (`KEEL_REDIS_URL`) and driven over loopback by a minimal HTTP/1.1 client: the burst is
//! admitted, then `429` with a `Retry-After`; two instances sharing the key space admit only
//! the fleet's quota together; with Redis unreachable, the policy decides promptly.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::{redis_url, unique};

/// The newest build of this package's `redis-axum` example: the newest `redis_axum-<hash>`
/// (cargo writes the hashed name with underscores) whose dep-info names
/// `adapter-redis/examples/redis-axum.rs`, built (`cargo build -p keel-redis --features tower
/// --example redis-axum`) when there is none or it is older than the example's source or the
/// crate's.
fn example() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let examples = profile_dir.join("examples");
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo"));
    let package_dir = manifest
        .file_name()
        .and_then(|n| n.to_str())
        .expect("the package's directory")
        .to_owned();
    let source = format!("{package_dir}/examples/redis-axum.rs");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let newest_source = std::iter::once(manifest.join("examples/redis-axum.rs"))
        .chain(
            std::fs::read_dir(manifest.join("src"))
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
                .map(|e| e.path()),
        )
        .filter_map(|p| modified(&p))
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let find = || {
        std::fs::read_dir(&examples)
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                name.starts_with("redis_axum-") && p.extension().is_none()
            })
            .filter(|p| {
                std::fs::read_to_string(p.with_extension("d")).is_ok_and(|d| d.contains(&source))
            })
            .max_by_key(|p| modified(p))
            .filter(|p| modified(p).is_some_and(|m| m >= newest_source))
    };
    if let Some(path) = find() {
        return path;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "-p",
            "keel-redis",
            "--features",
            "tower",
            "--example",
            "redis-axum",
        ])
        .status()
        .expect("run cargo build");
    assert!(
        status.success(),
        "cargo build -p keel-redis --features tower --example redis-axum"
    );
    find().expect("the redis-axum example after building it")
}

/// One instance of the example, killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(redis: &str, name: &str, args: &[&str]) -> Server {
        Server::start_at("127.0.0.1:0", redis, name, args)
    }

    fn start_at(addr: &str, redis: &str, name: &str, args: &[&str]) -> Server {
        let mut child = Command::new(example())
            .args(["--redis", redis, "--name", name, "--addr", addr])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the axum example");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        // The example prints `listening on http://127.0.0.1:PORT` once bound (or exits).
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the example's first line");
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!("the example did not say where it listens: {line:?}")
            });
        Server { child, port }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP answer.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn number(&self, name: &str) -> u64 {
        let v = self
            .header(name)
            .unwrap_or_else(|| panic!("no {name} header in {self:?}"));
        v.parse()
            .unwrap_or_else(|e| panic!("{name}: {v:?} is not a number of seconds ({e})"))
    }
}

/// `GET path` over a fresh loopback connection (`Connection: close`), reading to EOF; every
/// step is bounded so a hang fails the test instead of stalling it.
fn get(port: u16, path: &str) -> Reply {
    get_at(std::net::SocketAddr::from(([127, 0, 0, 1], port)), path)
}

fn get_at(addr: std::net::SocketAddr, path: &str) -> Reply {
    let port = addr.port();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    s.set_write_timeout(Some(Duration::from_secs(10)))
        .expect("write timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .expect("read the answer (to EOF) within 10 s");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// `redis://` to a loopback port where nothing listens.
fn closed_port_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    let port = l.local_addr().expect("local addr").port();
    drop(l);
    format!("redis://127.0.0.1:{port}")
}

// One request per 100 s: nothing is repaid while a test runs, however loaded the machine.
const SLOW_RATE: &str = "0.01";

#[test]
fn the_burst_is_admitted_then_the_next_request_gets_429_with_a_retry_after() {
    let redis = redis_url();
    let server = Server::start(
        &redis,
        &unique("axum-burst"),
        &["--per-second", SLOW_RATE, "--burst", "3"],
    );
    for expected_remaining in [2, 1, 0] {
        let r = get(server.port, "/");
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body, "hello\n");
        assert_eq!(r.number("x-ratelimit-limit"), 3, "{r:?}");
        assert_eq!(
            r.number("x-ratelimit-remaining"),
            expected_remaining,
            "{r:?}"
        );
        // Every used request is repaid after 100 s.
        let reset = r.number("x-ratelimit-reset");
        let used = 3 - expected_remaining;
        assert!(
            reset > (used - 1) * 100 && reset <= used * 100,
            "reset {reset} after {used} requests: {r:?}"
        );
        assert!(r.header("retry-after").is_none(), "{r:?}");
    }
    for _ in 0..2 {
        let r = get(server.port, "/");
        assert_eq!(r.status, 429, "{r:?}");
        let retry = r.number("retry-after");
        assert!((1..=100).contains(&retry), "Retry-After {retry}: {r:?}");
        assert_eq!(r.number("x-ratelimit-remaining"), 0, "{r:?}");
        assert_eq!(r.number("x-ratelimit-limit"), 3, "{r:?}");
    }
    // The limit is in front of every route.
    let r = get(server.port, "/slow");
    assert_eq!(r.status, 429, "{r:?}");
}

#[test]
fn two_instances_sharing_the_key_space_admit_only_the_fleet_quota_together() {
    let redis = redis_url();
    let name = unique("axum-fleet");
    let args = ["--per-second", SLOW_RATE, "--burst", "4"];
    let a = Server::start(&redis, &name, &args);
    let b = Server::start(&redis, &name, &args);
    assert_ne!(a.port, b.port);
    let mut admitted = [0u32; 2];
    let mut limited = [0u32; 2];
    for i in 0..12 {
        let (n, server) = if i % 2 == 0 { (0, &a) } else { (1, &b) };
        let r = get(server.port, "/");
        match r.status {
            200 => admitted[n] += 1,
            429 => {
                let retry = r.number("retry-after");
                assert!((1..=100).contains(&retry), "Retry-After {retry}: {r:?}");
                limited[n] += 1;
            }
            _ => panic!("unexpected answer {r:?}"),
        }
    }
    // One client IP, one fleet-wide burst of 4 (each instance alone would admit 4).
    assert_eq!(
        admitted,
        [2, 2],
        "admitted by each instance (limited: {limited:?})"
    );
    assert_eq!(limited, [4, 4]);
}

/// Starts the example with `--policy policy` against a Redis that is not there and checks each
/// of `expected` statuses arrives within 2 s.
fn unreachable(policy: &str, burst: &str, expected: &[u16]) -> Vec<Reply> {
    let server = Server::start(
        &closed_port_url(),
        &unique("axum-down"),
        &[
            "--policy",
            policy,
            "--per-second",
            SLOW_RATE,
            "--burst",
            burst,
        ],
    );
    let mut replies = Vec::new();
    for (i, &status) in expected.iter().enumerate() {
        let started = Instant::now();
        let r = get(server.port, "/");
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(2),
            "request {i} with policy {policy} took {took:?} with Redis unreachable"
        );
        assert_eq!(r.status, status, "request {i}, policy {policy}: {r:?}");
        replies.push(r);
    }
    replies
}

#[test]
fn with_redis_unreachable_the_policy_decides_within_2_s() {
    // Closed: 503 with Retry-After 1 and no claim about the budget.
    for r in unreachable("closed", "3", &[503; 5]) {
        assert_eq!(r.number("retry-after"), 1, "{r:?}");
        assert!(r.header("x-ratelimit-remaining").is_none(), "{r:?}");
        assert!(r.body.contains("Redis"), "{r:?}");
    }
    // Open: the request passes, unlimited (more than the burst of 3), with no made-up budget.
    for r in unreachable("open", "3", &[200; 5]) {
        assert_eq!(r.body, "hello\n");
        assert!(r.header("x-ratelimit-remaining").is_none(), "{r:?}");
        assert!(r.header("retry-after").is_none(), "{r:?}");
    }
    // Local: this process limits alone, at its share (here all) of the quota.
    let replies = unreachable("local", "2", &[200, 200, 429, 429]);
    assert_eq!(replies[1].number("x-ratelimit-remaining"), 0);
    let retry = replies[2].number("retry-after");
    assert!((1..=100).contains(&retry), "Retry-After {retry}");
}

#[test]
fn a_redis_that_stops_answering_costs_no_hang_and_the_fleet_limit_comes_back_with_it() {
    let redis = common::OwnRedis::start();
    let server = Server::start(
        &redis.url(),
        &unique("axum-pause"),
        &["--per-second", SLOW_RATE, "--burst", "20"],
    );
    let r = get(server.port, "/");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.number("x-ratelimit-remaining"), 19, "{r:?}");
    // The server accepts connections but answers nothing (SIGSTOP): keel-redis's timeout and
    // breaker answer for it.
    redis.pause();
    for i in 0..5 {
        let started = Instant::now();
        let r = get(server.port, "/");
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(2),
            "request {i} took {took:?} with Redis paused"
        );
        assert_eq!(r.status, 503, "request {i}: {r:?}");
        assert_eq!(r.number("retry-after"), 1, "{r:?}");
    }
    redis.resume();
    // The breaker's probe and the client's reconnect bring the fleet decision back.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let r = get(server.port, "/");
        if r.status == 200 {
            assert!(r.number("x-ratelimit-remaining") < 19, "{r:?}");
            break;
        }
        assert_eq!(r.status, 503, "{r:?}");
        assert!(
            Instant::now() < until,
            "still no fleet decision 30 s after Redis resumed: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether `key` exists on the Redis at `url`.
fn exists(url: &str, key: &str) -> bool {
    let mut c = redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .expect("connect to KEEL_REDIS_URL");
    let n: i64 = redis::cmd("EXISTS").arg(key).query(&mut c).expect("EXISTS");
    n == 1
}

#[test]
fn the_fleet_key_is_the_client_ip_and_an_ipv6_client_is_keyed_by_its_64() {
    let redis = redis_url();
    let name = unique("axum-ip");
    let args = ["--per-second", SLOW_RATE, "--burst", "3"];
    let v4 = Server::start(&redis, &name, &args);
    assert_eq!(get(v4.port, "/").status, 200);
    assert!(exists(&redis, &format!("{{{name}}}:127.0.0.1")));
    if TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here: the /64 half of this test did not run");
        return;
    }
    let v6 = Server::start_at("[::1]:0", &redis, &name, &args);
    let r = get_at(
        std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, v6.port)),
        "/",
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.number("x-ratelimit-remaining"), 2, "{r:?}");
    // ::1's /64 is ::/64: the key is `{name}:` + `::`, not `{name}:` + `::1`.
    assert!(exists(&redis, &format!("{{{name}}}:::")));
    assert!(!exists(&redis, &format!("{{{name}}}::::1")));
}
