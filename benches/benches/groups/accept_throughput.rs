//! `accept_throughput`: connections per second accepted through keel-tokio's guarded listener,
//! beside a bare tokio accept loop.
//!
//! One iteration = `CONNS` loopback connections (connect, then close with a reset, so that no
//! TIME_WAIT state piles up between the two measurements) made by `CLIENTS` client tasks, all
//! accepted (and dropped) by the server loop, on a two-worker tokio runtime. The client side
//! costs as much as the server side, so the figure is the throughput of the whole loopback
//! exchange; both sides of the comparison pay the same client cost.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use keel_tokio::GuardConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

const CONNS: u64 = 20_000;
pub(crate) const CLIENTS: u64 = 8;
const BACKLOG: u32 = 1024;

pub(crate) fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Makes `conns` connections to `addr` (rounded down to a multiple of `CLIENTS`) from
/// `CLIENTS` tasks; returns when all are closed.
pub(crate) async fn clients(addr: SocketAddr, conns: u64) {
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        tasks.push(tokio::spawn(async move {
            for _ in 0..conns / CLIENTS {
                match TcpStream::connect(addr).await {
                    // Close with a reset: no TIME_WAIT left behind, so hundreds of thousands of
                    // connections in a run do not exhaust (or slow the search for) ephemeral
                    // ports, which would penalise whichever loop is measured second.
                    Ok(s) => {
                        let _ = s.set_zero_linger();
                        drop(s);
                    }
                    Err(e) => panic!("connect failed: {e}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
}

/// Runs `rounds` rounds of `CONNS` connections against a server task that accepts them all
/// with `accept_one` and returns the elapsed time.
fn run<L, F>(rt: &Runtime, rounds: u64, listener: L, addr: SocketAddr, accept_one: F) -> Duration
where
    L: Send + 'static,
    F: for<'a> Fn(
            &'a mut L,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>>
        + Send
        + 'static,
{
    rt.block_on(async move {
        let start = Instant::now();
        let server = tokio::spawn(async move {
            let mut listener = listener;
            let mut n = 0;
            while n < rounds * CONNS {
                if accept_one(&mut listener).await {
                    n += 1;
                }
            }
        });
        for _ in 0..rounds {
            clients(addr, CONNS).await;
        }
        server.await.expect("server task");
        start.elapsed()
    })
}

pub(crate) fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("accept_throughput");
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(CONNS));

    g.bench_function("tokio/bare_accept_loop", |b| {
        let rt = runtime();
        b.iter_custom(|rounds| {
            let listener = rt.block_on(bare_listener());
            let addr = listener.local_addr().expect("local addr");
            run(&rt, rounds, listener, addr, |l| Box::pin(bare_accept(l)))
        })
    });

    g.bench_function("keel_tokio/guarded_accept_loop", |b| {
        let rt = runtime();
        b.iter_custom(|rounds| {
            let incoming = rt.block_on(guarded_listener());
            let addr = incoming.get_ref().0.local_addr().expect("local addr");
            run(&rt, rounds, incoming, addr, |l| Box::pin(guarded_accept(l)))
        })
    });
    g.finish();
}

/// A bare tokio listener on a loopback port (backlog `BACKLOG`).
pub(crate) async fn bare_listener() -> TcpListener {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_reuseaddr(true).expect("reuseaddr");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    socket.listen(BACKLOG).expect("listen")
}

/// Accepts one connection on the bare listener and drops it; `false` on an accept error.
pub(crate) async fn bare_accept(l: &mut TcpListener) -> bool {
    match l.accept().await {
        Ok((s, _peer)) => {
            drop(s);
            true
        }
        Err(_) => false,
    }
}

/// keel-tokio's guarded listener on a loopback port (limit 1024, backlog `BACKLOG`).
pub(crate) async fn guarded_listener() -> keel_tokio::Incoming<keel_tokio::Tcp> {
    let config = GuardConfig::builder()
        .max_connections(1024)
        .backlog(BACKLOG)
        .build()
        .expect("valid guard config");
    keel_tokio::bind("127.0.0.1:0", &config)
        .await
        .expect("bind")
}

/// Accepts one connection through the guard and drops it with its permit.
pub(crate) async fn guarded_accept(l: &mut keel_tokio::Incoming<keel_tokio::Tcp>) -> bool {
    match l.next().await {
        Some(keel_tokio::Accepted {
            permit, stream: s, ..
        }) => {
            drop(s);
            drop(permit);
            true
        }
        None => panic!("guarded listener ended: {:?}", l.take_error()),
    }
}
