//! The storm harness: start a server child under `ulimit -n 100`, flood it with clients,
//! then check what the seed's manual test checks.

use std::io::{BufRead, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What to run and how hard.
pub(crate) struct Plan {
    pub(crate) server: PathBuf,
    pub(crate) server_args: Vec<String>,
    pub(crate) open_files: u32,
    pub(crate) max_connections: usize,
    pub(crate) clients: usize,
    pub(crate) storm: Duration,
    pub(crate) cpu_limit_percent: f64,
    pub(crate) max_shortage_lines: usize,
}

impl Plan {
    /// The seed's numbers: `ulimit -n 100`, max connections 150, 1000 clients, about 10 s.
    pub(crate) fn seed(server: PathBuf, server_args: Vec<String>) -> Plan {
        Plan {
            server,
            server_args,
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
}

#[derive(Default)]
struct ServerLog {
    lines: u64,
    emfile_lines: u64,
    first_emfile: Option<String>,
    tail: Vec<String>,
}

fn spawn_server(plan: &Plan) -> std::io::Result<Child> {
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
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux ABI.
    Some(Duration::from_millis((utime + stime) * 10))
}

async fn client(addr: std::net::SocketAddr, until: tokio::time::Instant, c: Arc<Counters>) {
    while tokio::time::Instant::now() < until {
        let stream = match tokio::time::timeout_at(until, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(_)) => {
                c.errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(_) => return,
        };
        c.connected.fetch_add(1, Ordering::Relaxed);
        let (read, mut write) = stream.into_split();
        let mut read = tokio::io::BufReader::new(read);
        let mut line = String::new();
        let mut first = true;
        loop {
            if write.write_all(b"ping\n").await.is_err() {
                c.errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
            line.clear();
            match tokio::time::timeout_at(until, read.read_line(&mut line)).await {
                Ok(Ok(n)) if n > 0 => {
                    c.echoes.fetch_add(1, Ordering::Relaxed);
                    if first {
                        c.served.fetch_add(1, Ordering::Relaxed);
                        first = false;
                    }
                }
                Ok(_) => {
                    c.errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(_) => return,
            }
            if tokio::time::timeout_at(until, tokio::time::sleep(Duration::from_millis(100)))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

async fn fresh_echo(addr: std::net::SocketAddr, within: Duration) -> Option<Duration> {
    let start = tokio::time::Instant::now();
    while start.elapsed() < within {
        let attempt = async {
            let mut s = TcpStream::connect(addr).await.ok()?;
            s.write_all(b"hello after the storm\n").await.ok()?;
            let mut r = tokio::io::BufReader::new(s);
            let mut line = String::new();
            r.read_line(&mut line).await.ok()?;
            (line == "hello after the storm\n").then_some(())
        };
        if let Ok(Some(())) = tokio::time::timeout(Duration::from_secs(2), attempt).await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// Runs the storm; returns the process exit code.
pub(crate) fn run(plan: Plan) -> i32 {
    let mut child = match spawn_server(&plan) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("storm: cannot start the server: {e}");
            return 1;
        }
    };
    let pid = child.id();
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut first = String::new();
    let addr: std::net::SocketAddr = match stdout.read_line(&mut first) {
        Ok(_) => match first
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
        {
            Some(a) => a,
            None => {
                eprintln!("storm: the server did not report its address (got {first:?})");
                let _ = child.kill();
                return 1;
            }
        },
        Err(e) => {
            eprintln!("storm: reading the server's address: {e}");
            let _ = child.kill();
            return 1;
        }
    };
    let log = Arc::new(Mutex::new(ServerLog::default()));
    let stderr = child.stderr.take().expect("piped stderr");
    let log_reader = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = log.lock().expect("log lock");
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
    println!(
        "storm: server pid {pid} on {addr} (ulimit -n {}, max connections {}); {} clients for {:?}",
        plan.open_files, plan.max_connections, plan.clients, plan.storm
    );

    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let counters = Arc::new(Counters::default());
    let cpu_before = cpu_time(pid);
    let wall = Instant::now();
    rt.block_on(async {
        let until = tokio::time::Instant::now() + plan.storm;
        let tasks: Vec<_> = (0..plan.clients)
            .map(|_| tokio::spawn(client(addr, until, Arc::clone(&counters))))
            .collect();
        let progress = {
            let c = Arc::clone(&counters);
            tokio::spawn(async move {
                let start = tokio::time::Instant::now();
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    eprint!(
                        "\r[storm] {:>2}s: {} connected, {} served, {} echoes, {} errors   ",
                        start.elapsed().as_secs(),
                        c.connected.load(Ordering::Relaxed),
                        c.served.load(Ordering::Relaxed),
                        c.echoes.load(Ordering::Relaxed),
                        c.errors.load(Ordering::Relaxed),
                    );
                    let _ = std::io::stderr().flush();
                }
            })
        };
        for t in tasks {
            let _ = t.await;
        }
        progress.abort();
        eprintln!();
    });
    let storm_wall = wall.elapsed();
    let cpu_after = cpu_time(pid);
    let alive_after_storm = matches!(child.try_wait(), Ok(None));

    let reconnect = rt.block_on(fresh_echo(addr, Duration::from_secs(10)));
    let alive_at_end = matches!(child.try_wait(), Ok(None));
    let _ = child.kill();
    let _ = child.wait();
    let _ = log_reader.join();

    let log = log.lock().expect("log lock");
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
