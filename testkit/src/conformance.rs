//! The behavioural suite every adapter runs, written once against [`Harness`]: an adapter's
//! `tests/conformance.rs` is `keel_testkit::conformance_suite!(ItsHarness);`, which expands to
//! one `#[test]` per behaviour below.
//!
//! Real sockets where the behaviour is about sockets (backpressure, shed mode, the echo); a
//! scripted listener where it is about errors (shortages, per-connection errors, fatal errors),
//! so the only runtime part under test there is the timer.

use std::collections::VecDeque;
use std::io::{self, BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use keel_core::accept::AcceptConfig;
use keel_core::adaptive::{AdaptiveConfig, Algorithm, GradientParams};
use keel_core::backoff::{BackoffConfig, Jitter};
use keel_core::breaker::{BreakerConfig, State};
use keel_core::budget::BudgetConfig;
use keel_core::bulkhead::{BulkheadConfig, RejectReason};
use keel_core::conn::ConnConfig;
use keel_core::driver::adaptive::AdaptiveLimit;
use keel_core::driver::breaker::{Breaker, BreakerError};
use keel_core::driver::bulkhead::Bulkhead;
use keel_core::driver::rate::RateLimiter;
use keel_core::driver::retry::{Retry, StopReason};
use keel_core::driver::{
    self, Accepted, GuardConfig, Incoming, Listener, Runtime, ServeHandle, ServeReport, Server,
};
use keel_core::shutdown::ShutdownConfig;
use keel_core::sync::budget::SharedBudget;

use crate::Harness;

/// How long a test waits for something that should happen.
const PATIENCE: Duration = Duration::from_secs(5);
/// How long a test waits to be sure something does not happen.
const QUIET: Duration = Duration::from_millis(300);

/// Expands to one `#[test]` per behaviour of the suite, run against `$harness`. Given the
/// adapter's crate too (`conformance_suite!(Smol, keel_smol)`), it also checks that the crate's
/// names are the driver's types on the runtime under test; `timers on R` names the runtime of the
/// names that only wait on timers when they are another crate's (keel-async-std:
/// `timers on keel_smol::SmolRuntime`).
#[macro_export]
macro_rules! conformance_suite {
    ($harness:ty) => {
        $crate::conformance_suite!(@tests $harness;
            backpressure_holds_at_the_limit_and_resumes_when_a_permit_drops,
            shed_mode_sends_the_farewell_then_eof,
            accepted_streams_carry_data,
            accepted_peer_is_the_clients_local_address,
            served_conn_knows_its_peer,
            shortage_pauses_on_the_runtime_timer_and_recovers,
            per_connection_errors_are_skipped_without_a_pause,
            fatal_error_ends_the_stream_with_the_error,
            sleep_and_timeout_follow_the_runtime_clock,
            a_sleep_ends_when_its_timer_fires_before_the_clock_reaches_the_deadline,
            breaker_call_opens_rejects_until_retry_at_then_closes,
            retry_backs_off_on_the_runtime_timer_and_stops_at_the_budget,
            zero_delay_retry_yields_so_a_ticker_beside_it_stays_on_time_and_an_outer_timeout_fires,
            hanging_dependency_with_the_timeout_outside_trips_the_breaker_after_minimum_calls,
            rate_limiter_until_ready_waits_until_retry_at,
            rate_limiter_waiters_use_the_quota_in_fifo_order,
            bulkhead_run_rejects_when_full_queues_and_gives_up_at_max_wait,
            adaptive_limit_follows_a_servers_capacity_down_and_back_up,
            shutdown_answers_in_flight_closes_idle_refuses_new_and_aborts_a_hung_client_at_the_deadline,
            shutdown_drain_ends_as_soon_as_the_last_connection_finishes,
            shutdown_second_signal_stops_at_once_and_counts_the_aborted,
            shutdown_with_nothing_in_flight_stops_at_once,
            shutdown_drain_delay_serves_while_not_ready_then_drains,
            echo_example_drains_on_sigterm_answers_health_and_exits_0_within_the_grace_period,
            echo_example_delivers_a_256_kib_reply_to_a_slow_reader_that_pipelines_during_the_drain,
            echo_example_delivers_an_8_mib_reply_to_a_slow_reader_that_pipelines_during_the_drain,
            echo_example_serves_a_newcomer_within_5_s_while_idle_and_trickling_clients_hold_every_slot,
            echo_example_memory_stays_flat_under_two_256_mib_lines_without_a_newline,
            echo_example_answers_an_overlong_line_with_an_error_line_then_eof,
            server_closes_idle_and_trickling_connections_and_counts_them,
            conn_close_lingers_while_the_handler_runs_on_and_delivers_the_reply,
            a_newcomer_held_for_reclamation_is_refused_and_counted_when_the_drain_starts,
        );
    };
    ($harness:ty, $adapter:ident) => {
        $crate::conformance_suite!($harness, $adapter, timers on <$harness as $crate::Harness>::Runtime);
    };
    // `timers on`: the runtime of the adapter's names that only read the clock and wait on
    // timers (keel-async-std re-exports keel-smol's, on `SmolRuntime`: the same `async-io`
    // timers); what spawns (`Incoming`, `Server`, `serve`) is on the runtime under test.
    ($harness:ty, $adapter:ident, timers on $timers:ty) => {
        $crate::conformance_suite!($harness);

        /// The names every adapter writes out in its `lib.rs` are the generic types and
        /// functions the suite exercises, on the runtime under test (so the adapters cannot
        /// drift apart: one that renames or reshapes a name fails to compile here).
        #[test]
        fn runtime_aliases_name_the_runtime_under_test() {
            type Rt = <$harness as $crate::Harness>::Runtime;
            type Tm = $timers;
            let _: fn($adapter::RateLimiter) -> $adapter::core::driver::rate::RateLimiter<Tm> =
                |x| x;
            let _: fn($adapter::Bulkhead) -> $adapter::core::driver::bulkhead::Bulkhead<Tm> =
                |x| x;
            let _: fn($adapter::Breaker) -> $adapter::core::driver::breaker::Breaker<Tm> = |x| x;
            let _: fn(
                $adapter::AdaptiveLimit,
            ) -> $adapter::core::driver::adaptive::AdaptiveLimit<Tm> = |x| x;
            let _: fn(
                $adapter::AdaptivePermit,
            ) -> $adapter::core::driver::adaptive::AdaptivePermit<Tm> = |x| x;
            let _: fn($adapter::Retry) -> $adapter::core::driver::retry::Retry<Tm> = |x| x;
            let _: fn(
                $adapter::Server<$adapter::Tcp>,
            ) -> $adapter::core::driver::Server<$adapter::Tcp, Rt> = |x| x;
            let _: fn(
                $adapter::Incoming<$adapter::Tcp>,
            ) -> $adapter::core::driver::Incoming<$adapter::Tcp, Rt> = |x| x;
            let _: fn() -> $adapter::core::driver::BoxFuture<()> = $adapter::shutdown_signal;
            let _: fn(
                $adapter::core::time::Instant,
            ) -> $adapter::core::driver::SleepUntil<Tm> = $adapter::sleep_until;
            let _: fn($adapter::Incoming<$adapter::Tcp>) -> _ = |incoming| {
                $adapter::serve(
                    incoming,
                    |conn: $adapter::Conn<$adapter::Tcp>, _: $adapter::Draining| async move {
                        drop(conn)
                    },
                )
            };
            let _: fn(::core::time::Duration) -> _ =
                |d| $adapter::timeout(d, ::core::future::ready(()));
            let _: fn($adapter::core::backoff::BackoffConfig) -> _ = |config| {
                $adapter::retry(config, None, || ::core::future::ready(Ok::<(), ()>(())))
            };
            assert!($adapter::now() >= $adapter::core::time::Instant::ZERO);
        }
    };
    (@tests $harness:ty; $($name:ident,)*) => {
        $(
            #[test]
            fn $name() {
                $crate::conformance::$name::<$harness>();
            }
        )*
    };
}

fn config(max: usize) -> GuardConfig {
    GuardConfig::builder()
        .max_connections(max)
        .build()
        .expect("valid config")
}

async fn next_within<H: Harness, L: Listener>(
    incoming: &mut Incoming<L, H::Runtime>,
    within: Duration,
) -> Option<(keel_core::sync::limit::LimitGuard, L::Conn)> {
    let rt = H::Runtime::default();
    driver::timeout(&rt, within, incoming.next())
        .await
        .ok()
        .flatten()
        .map(|accepted| (accepted.permit, accepted.stream))
}

/// At the limit the listener accepts nothing more (the kernel backlog holds the client); when a
/// permit drops, the waiting connection is accepted.
pub fn backpressure_holds_at_the_limit_and_resumes_when_a_permit_drops<H: Harness>() {
    H::block_on(async {
        let mut incoming = H::bind("127.0.0.1:0", &config(2)).await.expect("bind");
        let addr = H::local_addr(incoming.get_ref()).expect("local addr");
        let _clients: Vec<TcpStream> = (0..3)
            .map(|_| TcpStream::connect(addr).expect("connect"))
            .collect();
        let (first, _c1) = next_within::<H, _>(&mut incoming, PATIENCE)
            .await
            .expect("first");
        let (_second, _c2) = next_within::<H, _>(&mut incoming, PATIENCE)
            .await
            .expect("second");
        assert!(
            next_within::<H, _>(&mut incoming, QUIET).await.is_none(),
            "{}: a third connection was accepted beyond the limit of 2",
            H::NAME
        );
        assert_eq!(incoming.stats().accept.accepted, 2);
        assert_eq!(incoming.limit().in_use(), 2);
        drop(first);
        let (_third, _c3) = next_within::<H, _>(&mut incoming, PATIENCE)
            .await
            .expect("the waiting connection is accepted once a permit drops");
        let stats = incoming.stats();
        assert_eq!(stats.accept.accepted, 3);
        assert_eq!(stats.limit.in_use, 2);
        assert_eq!(stats.limit.peak, 2);
        assert_eq!(stats.limit.shed, 0);
    });
}

/// In shed mode a connection over the limit is accepted, told the farewell and closed.
pub fn shed_mode_sends_the_farewell_then_eof<H: Harness>() {
    H::block_on(async {
        let config = GuardConfig::builder()
            .max_connections(1)
            .shed(b"busy, try later\n")
            .build()
            .expect("valid config");
        let mut incoming = H::bind("127.0.0.1:0", &config).await.expect("bind");
        let addr = H::local_addr(incoming.get_ref()).expect("local addr");
        let _kept = TcpStream::connect(addr).expect("connect");
        let (_permit, _conn) = next_within::<H, _>(&mut incoming, PATIENCE)
            .await
            .expect("first");
        let mut over = TcpStream::connect(addr).expect("connect");
        assert!(next_within::<H, _>(&mut incoming, QUIET).await.is_none());
        over.set_read_timeout(Some(PATIENCE)).expect("timeout");
        let mut said = Vec::new();
        over.read_to_end(&mut said).expect("farewell, then EOF");
        assert_eq!(said, b"busy, try later\n");
        let stats = incoming.stats();
        assert_eq!(stats.limit.shed, 1);
        assert_eq!(stats.limit.in_use, 1);
        assert_eq!(stats.accept.accepted, 2);
    });
}

/// An accepted stream is the runtime's own stream: a spawned echo task answers on it, and the
/// permit moved into the task is released when the task ends.
pub fn accepted_streams_carry_data<H: Harness>() {
    H::block_on(async {
        let mut incoming = H::bind("127.0.0.1:0", &config(4)).await.expect("bind");
        let addr = H::local_addr(incoming.get_ref()).expect("local addr");
        let mut client = TcpStream::connect(addr).expect("connect");
        let (permit, conn) = next_within::<H, _>(&mut incoming, PATIENCE)
            .await
            .expect("accept");
        crate::spawn::<H>(async move {
            let _permit = permit;
            H::echo(conn, None).await;
        });
        client.set_read_timeout(Some(PATIENCE)).expect("timeout");
        client.write_all(b"hello keel\n").expect("write");
        let mut line = String::new();
        BufReader::new(&client).read_line(&mut line).expect("echo");
        assert_eq!(line, "hello keel\n");
        assert_eq!(incoming.limit().in_use(), 1);
        drop(client);
        let start = Instant::now();
        while incoming.limit().in_use() != 0 && start.elapsed() < PATIENCE {
            driver::sleep(&H::Runtime::default(), Duration::from_millis(5)).await;
        }
        assert_eq!(incoming.limit().in_use(), 0, "the permit was not released");
    });
}

/// The guarded listener yields the peer's address with each connection: the client's own
/// local address (two clients, two different ports), on the runtime's listener.
pub fn accepted_peer_is_the_clients_local_address<H: Harness>() {
    H::block_on(async {
        let mut incoming = H::bind("127.0.0.1:0", &config(4)).await.expect("bind");
        let addr = H::local_addr(incoming.get_ref()).expect("local addr");
        let rt = H::Runtime::default();
        for _ in 0..2 {
            let client = TcpStream::connect(addr).expect("connect");
            let Accepted {
                permit,
                stream,
                peer,
            } = driver::timeout(&rt, PATIENCE, incoming.next())
                .await
                .expect("accepted in time")
                .expect("a connection");
            assert_eq!(
                peer,
                client.local_addr().expect("client addr"),
                "{}: the yielded peer is not the client's address",
                H::NAME
            );
            drop((permit, stream));
        }
    });
}

/// A connection a [`Server`] hands to its handler knows its peer ([`driver::Conn::peer`]): the
/// client's local address.
pub fn served_conn_knows_its_peer<H: Harness>() {
    H::block_on(async {
        let incoming = H::bind("127.0.0.1:0", &config(4)).await.expect("bind");
        let addr = H::local_addr(incoming.get_ref()).expect("local addr");
        let server = Server::<H::Listener, H::Runtime>::new(incoming);
        let handle = server.handle();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let client = std::thread::spawn(move || {
            let mut client = TcpStream::connect(addr).expect("connect");
            let local = client.local_addr().expect("client addr");
            client.set_read_timeout(Some(PATIENCE)).expect("timeout");
            // The handler writes one byte once it has recorded the peer.
            let mut byte = [0u8; 1];
            client.read_exact(&mut byte).expect("the handler's byte");
            local
        });
        let stop = handle.clone();
        let report = server
            .serve(move |mut conn: driver::Conn<H::Listener>, _| {
                let record = Arc::clone(&record);
                let stop = stop.clone();
                async move {
                    record.lock().expect("not poisoned").push(*conn.peer());
                    let _ = futures_lite::AsyncWriteExt::write_all(&mut conn, b"!").await;
                    stop.shutdown();
                }
            })
            .await;
        let local = client.join().expect("client thread");
        assert_eq!(report.summary.completed, 1, "{}: {report}", H::NAME);
        assert_eq!(
            *seen.lock().expect("not poisoned"),
            vec![local],
            "{}: Conn::peer is not the client's address",
            H::NAME
        );
    });
}

/// A listener that answers `poll_accept` from a script, counting the calls.
struct Scripted {
    script: VecDeque<io::Result<u32>>,
    polls: Arc<AtomicUsize>,
}

impl Scripted {
    fn new(script: impl IntoIterator<Item = io::Result<u32>>) -> (Self, Arc<AtomicUsize>) {
        let polls = Arc::new(AtomicUsize::new(0));
        let listener = Scripted {
            script: script.into_iter().collect(),
            polls: Arc::clone(&polls),
        };
        (listener, polls)
    }
}

impl Listener for Scripted {
    type Conn = u32;
    type Addr = ();
    fn poll_accept(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<(u32, ())>> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        match self.script.pop_front() {
            Some(answer) => Poll::Ready(answer.map(|conn| (conn, ()))),
            None => Poll::Pending,
        }
    }
    fn shed(&mut self, _conn: u32, _farewell: &'static [u8]) {}
}

fn emfile() -> io::Result<u32> {
    Err(io::Error::from_raw_os_error(24))
}

/// EMFILE pauses accepting on the runtime's timer (40 ms, then 80 ms), without calling
/// `accept` during a pause, and the next success resumes.
pub fn shortage_pauses_on_the_runtime_timer_and_recovers<H: Harness>() {
    H::block_on(async {
        let pause = AcceptConfig::builder()
            .initial_pause(Duration::from_millis(40))
            .max_pause(Duration::from_secs(1))
            .build()
            .expect("valid pause");
        let config = GuardConfig::builder()
            .pause(pause)
            .build()
            .expect("valid config");
        let (listener, polls) = Scripted::new([emfile(), emfile(), Ok(7)]);
        let mut incoming = Incoming::new(listener, H::Runtime::default(), &config);
        let start = Instant::now();
        assert!(
            next_within::<H, _>(&mut incoming, Duration::from_millis(20))
                .await
                .is_none()
        );
        assert!(incoming.is_paused(), "{}: not paused after EMFILE", H::NAME);
        assert_eq!(
            polls.load(Ordering::SeqCst),
            1,
            "accept was called during the pause"
        );
        let (_permit, conn) = next_within::<H, _>(&mut incoming, PATIENCE)
            .await
            .expect("resumes");
        let waited = start.elapsed();
        assert_eq!(conn, 7);
        assert!(
            waited >= Duration::from_millis(120),
            "resumed after {waited:?}, before 40 + 80 ms"
        );
        assert!(
            waited < Duration::from_secs(2),
            "resumed only after {waited:?}"
        );
        assert_eq!(
            polls.load(Ordering::SeqCst),
            3,
            "accept was called during a pause"
        );
        assert!(!incoming.is_paused());
        let stats = incoming.stats().accept;
        assert_eq!((stats.shortages, stats.pauses, stats.accepted), (2, 2, 1));
        assert!(stats.paused_total >= Duration::from_millis(120));
    });
}

/// A peer that reset before `accept` (ECONNABORTED) is skipped at once: no pause.
pub fn per_connection_errors_are_skipped_without_a_pause<H: Harness>() {
    H::block_on(async {
        let aborted = || Err(io::Error::from_raw_os_error(103));
        let (listener, polls) = Scripted::new([aborted(), aborted(), Ok(1)]);
        let mut incoming = Incoming::new(listener, H::Runtime::default(), &config(8));
        let start = Instant::now();
        let (_permit, conn) = next_within::<H, _>(&mut incoming, PATIENCE)
            .await
            .expect("accept");
        assert_eq!(conn, 1);
        assert!(
            start.elapsed() < Duration::from_millis(40),
            "paused on a per-connection error"
        );
        assert_eq!(polls.load(Ordering::SeqCst), 3);
        let stats = incoming.stats().accept;
        assert_eq!(
            (stats.per_connection_errors, stats.pauses, stats.accepted),
            (2, 0, 1)
        );
    });
}

/// A broken listener (EBADF) ends the stream; `take_error` hands back the OS error.
pub fn fatal_error_ends_the_stream_with_the_error<H: Harness>() {
    H::block_on(async {
        let (listener, _polls) = Scripted::new([Err(io::Error::from_raw_os_error(9))]);
        let mut incoming = Incoming::new(listener, H::Runtime::default(), &config(8));
        let rt = H::Runtime::default();
        let end = driver::timeout(&rt, PATIENCE, incoming.next()).await;
        assert!(matches!(end, Ok(None)), "the stream did not end");
        let error = incoming.take_error().expect("the fatal error");
        assert_eq!(error.raw_os_error(), Some(9));
        assert_eq!(incoming.stats().accept.fatal, 1);
        assert!(
            incoming.next().await.is_none(),
            "the stream yielded after its end"
        );
    });
}

/// `sleep` waits on the runtime's timer for at least its duration; `timeout` gives up at its
/// deadline with `Elapsed` carrying that deadline.
pub fn sleep_and_timeout_follow_the_runtime_clock<H: Harness>() {
    H::block_on(async {
        let rt = H::Runtime::default();
        let start = Instant::now();
        driver::sleep(&rt, Duration::from_millis(60)).await;
        let slept = start.elapsed();
        assert!(
            slept >= Duration::from_millis(60),
            "{}: slept only {slept:?}",
            H::NAME
        );
        assert!(
            slept < Duration::from_secs(2),
            "{}: slept {slept:?}",
            H::NAME
        );

        let before = driver::Runtime::now(&rt);
        let err = driver::timeout(
            &rt,
            Duration::from_millis(50),
            core::future::pending::<()>(),
        )
        .await
        .expect_err("a pending future times out");
        assert!(err.deadline >= before + Duration::from_millis(50));
        assert!(err.deadline < before + Duration::from_secs(1));
        assert!(driver::Runtime::now(&rt) >= err.deadline);
        let done = driver::timeout(&rt, Duration::from_millis(50), async { 5 }).await;
        assert_eq!(done, Ok(5));
    });
}

/// The runtime under test with its clock read `lag` behind: its timers (the runtime's own)
/// fire while this clock still reads before their deadline, as when an adapter's fast clock (a
/// calibrated TSC counter) runs behind the clock the runtime's timers use.
#[derive(Clone, Debug, Default)]
struct Lagging<R> {
    inner: R,
    lag: Duration,
}

impl<R: Runtime> Runtime for Lagging<R> {
    type Timer = R::Timer;
    fn now(&self) -> keel_core::time::Instant {
        self.inner.now().saturating_sub(self.lag)
    }
    fn timer(&self, deadline: keel_core::time::Instant) -> R::Timer {
        self.inner.timer(deadline)
    }
}

/// A timer that fires before the runtime's clock reached its deadline (a clock running behind
/// the timer's) does not end the sleep early, and does not end it never: the driver re-arms the
/// timer, and a timer polled again after it fired must still wake the task. (keel-async-std
/// hung here: an `async_io::Timer` that has fired is spent, and polling it again returned
/// `Pending` without registering a waker.)
pub fn a_sleep_ends_when_its_timer_fires_before_the_clock_reaches_the_deadline<H: Harness>() {
    const LAG: Duration = Duration::from_millis(40);
    let (tx, rx) = std::sync::mpsc::channel();
    // On its own thread, so a sleep that never ends fails the test instead of hanging it.
    std::thread::spawn(move || {
        H::block_on(async {
            let rt = Lagging {
                inner: H::Runtime::default(),
                lag: LAG,
            };
            for _ in 0..3 {
                let start = Instant::now();
                let before = rt.now();
                let sleep = driver::sleep(&rt, Duration::from_millis(30));
                let deadline = sleep.deadline();
                sleep.await;
                assert!(rt.now() >= deadline, "{}: the sleep ended early", H::NAME);
                assert!(deadline >= before + Duration::from_millis(30));
                // The lagging clock reaches the deadline 30 ms + LAG after the timer's clock
                // read `before`.
                tx.send(start.elapsed()).expect("the test waits");
            }
            let err = driver::timeout(
                &rt,
                Duration::from_millis(20),
                core::future::pending::<()>(),
            )
            .await
            .expect_err("a pending future times out");
            assert!(rt.now() >= err.deadline);
            tx.send(Duration::ZERO).expect("the test waits");
        });
    });
    // The sleep ends on the runtime's clock (keel-smol's and keel-async-std's: the calibrated
    // TSC counter), `slept` is std's: the two rates differ by tens of ppm, more when the
    // counter was calibrated on a loaded machine (CI once read 29.997 ms, 88 ppm short). A
    // sleep that ended early through the lag would be 40 ms short; 1 ms of slack tells them
    // apart.
    const RATE_SLACK: Duration = Duration::from_millis(1);
    for round in 0..3 {
        let slept = rx.recv_timeout(PATIENCE).unwrap_or_else(|_| {
            panic!(
                "{}: sleep {round} did not end within {PATIENCE:?}: its timer fired early and \
                 was never polled ready again",
                H::NAME
            )
        });
        assert!(
            slept >= Duration::from_millis(30) - RATE_SLACK,
            "{}: sleep {round} ended after {slept:?}",
            H::NAME
        );
    }
    rx.recv_timeout(PATIENCE).unwrap_or_else(|_| {
        panic!(
            "{}: a timeout did not fire within {PATIENCE:?} on a lagging clock",
            H::NAME
        )
    });
}

/// `Breaker::call`: two failures open it; a call while open is rejected without running, with
/// a `retry_at` 100 ms after the trip; sleeping until then on the runtime's timer lets a probe
/// through, whose success closes it.
pub fn breaker_call_opens_rejects_until_retry_at_then_closes<H: Harness>() {
    H::block_on(async {
        let config = BreakerConfig::consecutive_failures(2)
            .open_duration(Duration::from_millis(100))
            .permitted_calls_in_half_open(1)
            .build()
            .expect("valid breaker");
        let breaker = Breaker::<H::Runtime>::new(config);
        for _ in 0..2 {
            let failed = breaker.call(async { Err::<(), _>("unavailable") }).await;
            assert_eq!(failed, Err(BreakerError::Inner("unavailable")));
        }
        assert_eq!(breaker.state(), State::Open);
        let tripped = breaker.runtime().now();
        let start = Instant::now();
        let ran = AtomicUsize::new(0);
        let rejected = breaker
            .call(async {
                ran.fetch_add(1, Ordering::SeqCst);
                Ok::<_, &str>(())
            })
            .await
            .expect_err("rejected while open");
        assert!(rejected.is_rejected());
        assert_eq!(ran.load(Ordering::SeqCst), 0, "a rejected call ran");
        let retry_at = rejected.retry_at().expect("retry_at while open");
        assert!(retry_at >= tripped + Duration::from_millis(90));
        assert!(retry_at <= tripped + Duration::from_millis(110));
        driver::sleep_until(breaker.runtime(), retry_at).await;
        assert_eq!(breaker.call(async { Ok::<_, &str>(7) }).await, Ok(7));
        assert!(
            start.elapsed() >= Duration::from_millis(80),
            "{}: probe admitted early",
            H::NAME
        );
        assert_eq!(breaker.state(), State::Closed);
    });
}

/// `Retry` with a budget: retries wait on the runtime's timer (20 ms each), the budget's floor
/// (2 retries per 2 s) stops the third retry, and the next run is refused at once.
pub fn retry_backs_off_on_the_runtime_timer_and_stops_at_the_budget<H: Harness>() {
    H::block_on(async {
        let rt = H::Runtime::default();
        let budget_config = BudgetConfig::builder()
            .ttl(Duration::from_secs(2))
            .min_per_sec(1)
            .retry_percent(20)
            .build()
            .expect("valid budget");
        let budget = SharedBudget::new(budget_config, rt.now());
        let backoff = BackoffConfig::constant(Duration::from_millis(20))
            .jitter(Jitter::None)
            .max_attempts(10)
            .build()
            .expect("valid backoff");
        let retry = Retry::<H::Runtime>::new(backoff).budget(budget.clone());
        let start = Instant::now();
        let err = retry
            .run(|| async { Err::<(), _>("unavailable") })
            .await
            .expect_err("keeps failing");
        assert_eq!((err.attempts, err.reason), (3, StopReason::BudgetExhausted));
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(40),
            "{}: retried after {waited:?}",
            H::NAME
        );
        let err = retry
            .run(|| async { Err::<(), _>("unavailable") })
            .await
            .expect_err("refused");
        assert_eq!((err.attempts, err.reason), (1, StopReason::BudgetExhausted));
        let stats = budget.stats();
        assert_eq!((stats.withdrawals, stats.exhausted), (2, 2));

        let calls = AtomicUsize::new(0);
        let start = Instant::now();
        let ok = driver::retry::retry(&rt, backoff, None, || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err("not yet"),
                n => Ok(n),
            }
        })
        .await;
        assert_eq!(ok, Ok(2));
        assert!(start.elapsed() >= Duration::from_millis(40));
    });
}

/// Polls both futures from one task until both are done: two "tasks" sharing one thread,
/// whatever the executor.
async fn join<A: std::future::Future, B: std::future::Future>(
    a: A,
    b: B,
) -> (A::Output, B::Output) {
    let (mut a, mut b) = (std::pin::pin!(a), std::pin::pin!(b));
    let (mut ra, mut rb) = (None, None);
    std::future::poll_fn(|cx| {
        if ra.is_none() {
            if let Poll::Ready(v) = a.as_mut().poll(cx) {
                ra = Some(v);
            }
        }
        if rb.is_none() {
            if let Poll::Ready(v) = b.as_mut().poll(cx) {
                rb = Some(v);
            }
        }
        match (ra.take(), rb.take()) {
            (Some(x), Some(y)) => Poll::Ready((x, y)),
            (x, y) => {
                (ra, rb) = (x, y);
                Poll::Pending
            }
        }
    })
    .await
}

/// The spin: unlimited attempts, a zero delay (`constant(0)`) and an operation that
/// fails at once used to make 24.7M attempts in 2.3 s without ever returning `Pending`, freezing
/// every other task on the thread, and a timeout around it never fired. On the runtime's
/// single-threaded executor, a ticker beside the retry keeps ticking and a 300 ms timeout
/// around the retry fires. (The operation succeeds after `PATIENCE`, so without the yield this
/// fails instead of hanging: the retry then ends `Ok` and the ticker never ticked.)
pub fn zero_delay_retry_yields_so_a_ticker_beside_it_stays_on_time_and_an_outer_timeout_fires<
    H: Harness,
>() {
    H::block_on_current_thread(async {
        let rt = H::Runtime::default();
        let config = BackoffConfig::constant(Duration::ZERO)
            .jitter(Jitter::None)
            .unlimited_attempts()
            .build()
            .expect("valid backoff");
        let retry = Retry::with_runtime(config, rt.clone());
        let start = Instant::now();
        let attempts = std::cell::Cell::new(0u64);
        let done = std::cell::Cell::new(false);
        let work = async {
            let run = retry.run(|| {
                attempts.set(attempts.get() + 1);
                let bail = start.elapsed() >= PATIENCE;
                async move {
                    if bail {
                        Ok(())
                    } else {
                        Err("unavailable")
                    }
                }
            });
            let r = driver::timeout(&rt, Duration::from_millis(300), run).await;
            done.set(true);
            r
        };
        let ticker = async {
            let (mut ticks, mut worst, mut last) = (0u32, Duration::ZERO, Instant::now());
            while !done.get() {
                driver::sleep(&rt, Duration::from_millis(10)).await;
                ticks += 1;
                worst = worst.max(last.elapsed());
                last = Instant::now();
            }
            (ticks, worst)
        };
        let (r, (ticks, worst)) = join(work, ticker).await;
        let name = H::NAME;
        assert!(
            r.is_err(),
            "{name}: the outer timeout never fired; the retry ran {} attempts for {:?}",
            attempts.get(),
            start.elapsed()
        );
        assert!(attempts.get() > 1, "{name}: no retry was made");
        // About 30 ticks are due in 300 ms; a loaded machine may lose some, never all.
        assert!(
            ticks >= 3,
            "{name}: the ticker ticked {ticks} times beside the retry"
        );
        assert!(
            worst < PATIENCE / 2,
            "{name}: the ticker stalled for {worst:?}"
        );
        assert!(
            start.elapsed() < PATIENCE,
            "{name}: took {:?}",
            start.elapsed()
        );
    });
}

/// A hanging dependency behind a breaker with the timeout *outside* it (the abandoned call's
/// future is dropped, no outcome is ever returned): the drop guard counts each abandoned call
/// as a failure once it ran the abandon threshold, so the breaker opens after at most
/// `minimum_calls` of them and later calls are rejected without reaching the dependency.
pub fn hanging_dependency_with_the_timeout_outside_trips_the_breaker_after_minimum_calls<
    H: Harness,
>() {
    H::block_on(async {
        let rt = H::Runtime::default();
        let config = BreakerConfig::builder()
            .count_window(4)
            .minimum_calls(4)
            .abandon_threshold(Duration::from_millis(20))
            .build()
            .expect("valid breaker");
        let breaker = Breaker::<H::Runtime>::new(config);
        let reached = AtomicUsize::new(0);
        for _ in 0..8 {
            let call = breaker.call(async {
                reached.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<Result<(), &str>>().await
            });
            // Far past the threshold, so a loaded machine cannot drop a call before it.
            match driver::timeout(&rt, Duration::from_millis(100), call).await {
                Err(_elapsed) => {}
                Ok(r) => assert!(
                    r.as_ref().is_err_and(BreakerError::is_rejected),
                    "{}: {r:?}",
                    H::NAME
                ),
            }
        }
        assert_eq!(reached.load(Ordering::SeqCst), 4, "{}", H::NAME);
        assert_eq!(breaker.state(), State::Open, "{}", H::NAME);
        let stats = breaker.stats();
        assert_eq!(
            (stats.abandoned_failures, stats.rejected),
            (4, 4),
            "{}",
            H::NAME
        );
    });
}

/// `n` per second with a burst of `burst`.
fn quota(n: u32, burst: u32) -> keel_core::rate::Quota {
    let nz = |v: u32| core::num::NonZeroU32::new(v).expect("non-zero");
    keel_core::rate::Quota::per_second(nz(n))
        .expect("valid rate")
        .with_burst(nz(burst))
        .expect("valid burst")
}

/// 1,000 tasks wait on one limiter at 1,000/s with a burst of 1, on the runtime's real
/// timer (tokio's has 1 ms granularity): they are admitted in the order they queued, none
/// before its slot (waiter `i`'s slot is `i + 1` ms after the start), and together they use
/// at least 95 % of the quota (the 1,001 slots given out, the first check's included, span at
/// most 1,054 ms), with about one limiter decision per admission. The old herd loop, where every waiter slept to the same `retry_at` and
/// re-checked, made hundreds of decisions per admission, and a late wake-up lost its slot.
pub fn rate_limiter_waiters_use_the_quota_in_fifo_order<H: Harness>() {
    const N: usize = 1_000;
    H::block_on(async {
        let rt = H::Runtime::default();
        let start = rt.now();
        let limiter = RateLimiter::with_runtime(quota(1_000, 1), rt.clone());
        limiter.check().expect("the burst of 1 is free: spend it");
        let admitted = Arc::new(std::sync::Mutex::new(Vec::with_capacity(N)));
        let done = Arc::new(AtomicUsize::new(0));
        for i in 0..N {
            let mut wait = Box::pin(limiter.until_ready());
            // The first poll queues it: queue them in order, then hand each to its own task.
            let first = futures_lite::future::poll_once(&mut wait).await;
            let (admitted, done, rt) = (Arc::clone(&admitted), Arc::clone(&done), rt.clone());
            crate::spawn::<H>(async move {
                match first {
                    Some(r) => r.expect("admitted"),
                    None => wait.await.expect("admitted"),
                }
                admitted.lock().expect("not poisoned").push((i, rt.now()));
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        let patience = Instant::now() + PATIENCE;
        while done.load(Ordering::SeqCst) < N && Instant::now() < patience {
            driver::sleep(&rt, Duration::from_millis(10)).await;
        }
        let admitted = admitted.lock().expect("not poisoned").clone();
        assert_eq!(
            admitted.len(),
            N,
            "{}: all admitted within {PATIENCE:?}",
            H::NAME
        );
        for &(i, at) in &admitted {
            let slot = start + Duration::from_millis(i as u64 + 1);
            assert!(
                at >= slot,
                "{}: waiter {i} admitted {:?} before its slot (out of order or over quota)",
                H::NAME,
                slot.saturating_duration_since(at)
            );
        }
        // No herd: about one limiter decision per waiter (a reservation, plus the first
        // waiter's failed check), not one per waiter per admission.
        let stats = limiter.stats();
        let decisions = stats.allowed + stats.limited;
        eprintln!("{}: {decisions} limiter decisions", H::NAME);
        assert!(
            decisions <= 2 * N as u64 + 10,
            "{}: {decisions} limiter decisions for {N} admissions",
            H::NAME
        );
        // The quota used: the limiter's TAT is the end of the last slot it gave out (one for
        // the first check, then one per waiter), so this span does not depend on how late the
        // last task happened to be polled; a slot lost to a late wake-up pushes it out.
        let end = limiter.shared().reset_at(keel_core::Instant::ZERO);
        let span = end.saturating_duration_since(start);
        let last = admitted.iter().map(|&(_, at)| at).max().expect("N > 0");
        eprintln!(
            "{}: the first check and {N} waiters used {span:?} of slots; the last was admitted {:?} after the start",
            H::NAME,
            last.saturating_duration_since(start)
        );
        assert!(
            span <= Duration::from_millis(1_054),
            "{}: 1,001 slots at 1,000/s spanned {span:?}: under 95 % of the quota",
            H::NAME
        );
    });
}

/// `RateLimiter::until_ready` (10/s, burst 1): the second wait sleeps on the runtime's timer
/// until the `retry_at` a `check` reported, 100 ms after the first token, and not much longer.
pub fn rate_limiter_until_ready_waits_until_retry_at<H: Harness>() {
    H::block_on(async {
        let limiter = RateLimiter::<H::Runtime>::new(quota(10, 1));
        let rt = limiter.runtime().clone();
        limiter
            .until_ready()
            .await
            .expect("the first token is free");
        let retry_at = limiter
            .check()
            .expect_err("the burst is spent")
            .retry_at
            .expect("a request over the rate conforms later");
        let wait = retry_at.saturating_duration_since(rt.now());
        assert!(
            wait > Duration::from_millis(80) && wait <= Duration::from_millis(100),
            "{}: retry_at is {wait:?} away",
            H::NAME
        );
        limiter.until_ready().await.expect("admitted at retry_at");
        let now = rt.now();
        assert!(now >= retry_at, "{}: admitted before retry_at", H::NAME);
        assert!(
            now.saturating_duration_since(retry_at) < Duration::from_millis(50),
            "{}: admitted {:?} after retry_at",
            H::NAME,
            now.saturating_duration_since(retry_at)
        );
        assert_eq!(limiter.stats().allowed, 2);
        assert_eq!(limiter.remaining(), 0);
    });
}

/// `Bulkhead::run`: with the slot held and no queue room it rejects at once (`Full`, then
/// `QueueFull` with a queue of one taken); a queued call runs when the slot frees; a waiter
/// past `max_wait` (250 ms) is rejected at its deadline on the runtime's timer.
pub fn bulkhead_run_rejects_when_full_queues_and_gives_up_at_max_wait<H: Harness>() {
    fn bulkhead<R: Runtime + Default>(queue: usize, max_wait: Duration) -> Bulkhead<R> {
        let config = BulkheadConfig::builder()
            .max_concurrent(1)
            .max_queue(queue)
            .max_wait(max_wait)
            .build()
            .expect("valid bulkhead");
        Bulkhead::new(config)
    }
    H::block_on(async {
        let rt = H::Runtime::default();
        let full = bulkhead::<H::Runtime>(0, Duration::from_secs(1));
        let held = full.try_acquire().expect("a free slot");
        let err = full.run(async { 1 }).await.expect_err("full");
        assert_eq!(err.reason, RejectReason::Full);
        drop(held);
        assert_eq!(full.run(async { 7 }).await, Ok(7));

        let bh = bulkhead::<H::Runtime>(1, Duration::from_secs(2));
        let held = bh.try_acquire().expect("a free slot");
        let start = Instant::now();
        let (queued, ()) = futures_lite::future::zip(bh.run(async { "ran" }), async {
            // The first future has queued by now (zip polls it first).
            let err = bh.run(async { "never" }).await.expect_err("queue full");
            assert_eq!(err.reason, RejectReason::QueueFull);
            driver::sleep(&rt, Duration::from_millis(100)).await;
            drop(held);
        })
        .await;
        assert_eq!(queued, Ok("ran"));
        assert!(start.elapsed() >= Duration::from_millis(100));

        let bh = bulkhead::<H::Runtime>(4, Duration::from_millis(250));
        let _held = bh.try_acquire().expect("a free slot");
        let start = Instant::now();
        let err = bh.run(async {}).await.expect_err("waited too long");
        assert_eq!(err.reason, RejectReason::WaitedTooLong);
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(250) && waited < Duration::from_millis(750),
            "{}: rejected after {waited:?}",
            H::NAME
        );
        assert_eq!(bh.stats().queue_len, 0);
    });
}

/// The adaptive limit on real samples: a loopback TCP server whose backend has `CAPACITY`
/// workers (a bulkhead with a long queue, each request holding a worker for 25 ms of the
/// runtime's timer) sits behind an [`AdaptiveLimit`]; three times as many blocking clients
/// send one-byte requests in a closed loop. The backend drops to half its workers for three
/// seconds, then gets them back. The limit is sampled every 50 ms over the last second of
/// each phase: it must reach 3/4 of the capacity, follow it down (its mean while halved at
/// most 85 % of the highest limit seen before or after, at most 5/4 of the full capacity, at least
/// 1/4 of it) and back up to 3/4 of it, all within about 10 s of wall time.
pub fn adaptive_limit_follows_a_servers_capacity_down_and_back_up<H: Harness>() {
    use futures_lite::{AsyncReadExt as _, AsyncWriteExt as _};
    use std::sync::atomic::AtomicBool;

    const CAPACITY: usize = 16;
    const SERVICE: Duration = Duration::from_millis(25);
    const PHASE: Duration = Duration::from_secs(3);
    const CLIENTS: usize = 3 * CAPACITY;

    let (tx, rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        H::block_on(async move {
            let rt = H::Runtime::default();
            // A queue target of 15 % (default 5 %): a loaded 2-core CI machine adds a few
            // milliseconds of scheduling delay to every RTT, which the default reads as a
            // queue at limits this small (16 × 5 % is below one request).
            let gradient = GradientParams {
                queue_target_percent: 15,
                ..GradientParams::default()
            };
            let adaptive = AdaptiveConfig::builder()
                .algorithm(Algorithm::Gradient(gradient))
                .initial_limit(4)
                .max_limit(64)
                // Windows much longer than the RTT even when the backend queues (about
                // 2.5 × 25 ms while the limit is above the halved capacity), so each window
                // measures the limit it was given, not the previous one.
                .window(Duration::from_millis(250))
                .build()
                .expect("valid adaptive config");
            let queue = BulkheadConfig::builder()
                .max_queue(2 * CLIENTS)
                .max_wait(Duration::from_secs(30))
                .build()
                .expect("valid queue");
            let limit = AdaptiveLimit::with_runtime(adaptive, queue, rt.clone());
            let workers = BulkheadConfig::builder()
                .max_concurrent(CAPACITY)
                .max_queue(2 * CLIENTS)
                .max_wait(Duration::from_secs(30))
                .build()
                .expect("valid backend");
            let backend = Bulkhead::<H::Runtime>::with_runtime(workers, rt.clone());
            let incoming = H::bind("127.0.0.1:0", &config(4 * CLIENTS))
                .await
                .expect("bind");
            let addr = H::local_addr(incoming.get_ref()).expect("local addr");
            let server = Server::<H::Listener, H::Runtime>::new(incoming);
            let handle = server.handle();
            tx.send((addr, handle, limit.clone(), backend.clone()))
                .expect("the test waits");
            server
                .serve(move |mut conn, _| {
                    let limit = limit.clone();
                    let backend = backend.clone();
                    let rt = rt.clone();
                    async move {
                        let mut byte = [0u8; 1];
                        while matches!(conn.read(&mut byte).await, Ok(1)) {
                            // The sleep starts when the worker is granted (`sleep`
                            // fixes its deadline when called).
                            let work = async { driver::sleep(&rt, SERVICE).await };
                            let served = limit.run(backend.run(work)).await;
                            let reply = if matches!(served, Ok(Ok(()))) {
                                b"y"
                            } else {
                                b"n"
                            };
                            if conn.write_all(reply).await.is_err() {
                                break;
                            }
                        }
                    }
                })
                .await
        })
    });
    let (addr, handle, limit, backend) = rx.recv().expect("the server started");

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let stop = Arc::clone(&stop);
            let failures = Arc::clone(&failures);
            std::thread::spawn(move || {
                let mut stream = connect(addr);
                let mut reply = [0u8; 1];
                while !stop.load(Ordering::Relaxed) {
                    if stream.write_all(b"x").is_err() || stream.read_exact(&mut reply).is_err() {
                        failures.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    if reply != *b"y" {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    // The mean and the highest limit over the last second of a phase that lasts `PHASE`
    // from `from`.
    let watch = |from: Instant| -> (f64, f64) {
        let settle = from + PHASE - Duration::from_secs(1);
        let mut seen = Vec::new();
        while Instant::now() < from + PHASE {
            if Instant::now() >= settle {
                seen.push(f64::from(limit.limit()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mean = seen.iter().sum::<f64>() / seen.len().max(1) as f64;
        (mean, seen.iter().copied().fold(0.0, f64::max))
    };
    let start = Instant::now();
    let (full, full_peak) = watch(start);
    backend
        .shared()
        .set_max_concurrent(std::num::NonZeroUsize::new(CAPACITY / 2).expect("non-zero"));
    let (halved, _) = watch(start + PHASE);
    backend
        .shared()
        .set_max_concurrent(std::num::NonZeroUsize::new(CAPACITY).expect("non-zero"));
    let (back, back_peak) = watch(start + 2 * PHASE);

    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("a client thread");
    }
    handle.shutdown();
    let _ = server.join().expect("the server thread");
    let stats = limit.stats();
    let threshold = 0.75 * CAPACITY as f64;
    let report = format!(
        "{}: mean (highest) limit {full:.1} ({full_peak}) at {CAPACITY} workers, \
         {halved:.1} at {}, {back:.1} ({back_peak}) back at {CAPACITY}; {stats:?}",
        H::NAME,
        CAPACITY / 2
    );
    eprintln!("{report}");
    assert_eq!(failures.load(Ordering::Relaxed), 0, "{report}");
    assert!(stats.samples > 500, "{report}");
    // Generous bounds: the RTTs carry the machine's scheduling noise. The ideal limits are
    // about 19 and 9.5 (the workers plus the 15 % queue target); the limit wanders around them.
    assert!(
        full_peak >= threshold,
        "did not reach the capacity: {report}"
    );
    assert!(
        back_peak >= threshold,
        "did not follow the capacity back up: {report}"
    );
    assert!(
        halved <= 1.25 * CAPACITY as f64 && halved <= 0.85 * full_peak.max(back_peak),
        "did not follow the capacity down: {report}"
    );
    assert!(halved >= 0.25 * CAPACITY as f64, "collapsed: {report}");
}

// ----- graceful shutdown on real sockets -------------------------------------------------------

/// The grace period of the shutdown tests.
const GRACE: Duration = Duration::from_secs(1);

/// A server on its own thread (the runtime's `block_on`), echoing with the harness's
/// drain-aware echo; triggered through its handle.
struct Running {
    addr: SocketAddr,
    handle: ServeHandle,
    server: std::thread::JoinHandle<ServeReport>,
}

fn start<H: Harness>() -> Running {
    start_with::<H>(ConnConfig::default(), crate::echo::EchoLimits::default())
}

fn start_with<H: Harness>(conns: ConnConfig, limits: crate::echo::EchoLimits) -> Running {
    let shutdown = ShutdownConfig::builder()
        .grace_period(GRACE)
        .build()
        .expect("valid shutdown");
    start_configured::<H>(shutdown, conns, limits)
}

fn start_configured<H: Harness>(
    shutdown: ShutdownConfig,
    conns: ConnConfig,
    limits: crate::echo::EchoLimits,
) -> Running {
    let (tx, rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        H::block_on(async move {
            let incoming = H::bind("127.0.0.1:0", &config(64)).await.expect("bind");
            let addr = H::local_addr(incoming.get_ref()).expect("local addr");
            let server = Server::<H::Listener, H::Runtime>::new(incoming)
                .config(shutdown)
                .conn_config(conns);
            let handle = server.handle();
            tx.send((addr, handle.clone())).expect("the test waits");
            server
                .serve(move |conn, _| crate::echo::echo_conn(conn, Some(handle.clone()), limits))
                .await
        })
    });
    let (addr, handle) = rx.recv().expect("the server started");
    Running {
        addr,
        handle,
        server,
    }
}

impl Running {
    fn wait_in_flight(&self, n: u64) {
        let until = Instant::now() + PATIENCE;
        while self.handle.stats().shutdown.in_flight != n {
            assert!(Instant::now() < until, "{:?}", self.handle.stats());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn signal(&self) -> Instant {
        self.handle.shutdown();
        Instant::now()
    }

    fn report(self) -> ServeReport {
        self.server.join().expect("the server thread")
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream
}

fn round_trip(stream: &mut TcpStream, line: &[u8]) -> Vec<u8> {
    stream.write_all(line).expect("write");
    let mut reply = Vec::new();
    BufReader::new(&*stream)
        .read_until(b'\n', &mut reply)
        .expect("reply");
    reply
}

/// Reads until EOF or reset; the bytes and when it ended. A client closes its end once it has
/// read the server's EOF (drop the stream): the server's lingering close waits for that.
fn read_to_close(stream: &mut TcpStream) -> (Vec<u8>, Instant) {
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    (got, Instant::now())
}

/// A drain on real sockets: the idle connection is closed at once, a new connection is refused,
/// the health line says draining, the line in flight is finished and answered, and a client
/// that never finishes its line is cut off at the 1 s deadline and counted as aborted.
pub fn shutdown_answers_in_flight_closes_idle_refuses_new_and_aborts_a_hung_client_at_the_deadline<
    H: Harness,
>() {
    let srv = start::<H>();
    let mut idle = connect(srv.addr);
    assert_eq!(round_trip(&mut idle, b"warm-up\n"), b"warm-up\n");
    let mut mid = connect(srv.addr);
    mid.write_all(b"start-").expect("write");
    let mut hung = connect(srv.addr);
    hung.write_all(b"never finished").expect("write");
    srv.wait_in_flight(3);
    std::thread::sleep(Duration::from_millis(100));

    let signalled = srv.signal();
    let (rest, closed_at) = read_to_close(&mut idle);
    drop(idle);
    assert_eq!(rest, b"");
    assert!(
        closed_at - signalled < GRACE / 2,
        "{}: idle closed after {:?}",
        H::NAME,
        closed_at - signalled
    );
    let err = TcpStream::connect(srv.addr).expect_err("refused while draining");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
    assert_eq!(
        srv.handle.health().to_string(),
        "ready=false live=true reasons=[shutdown: draining]"
    );
    mid.write_all(b"end\n").expect("write");
    let (reply, _) = read_to_close(&mut mid);
    drop(mid);
    assert_eq!(reply, b"start-end\n");
    let (rest, cut_at) = read_to_close(&mut hung);
    assert_eq!(rest, b"");
    let cut_after = cut_at - signalled;
    assert!(
        cut_after >= GRACE && cut_after < GRACE + Duration::from_millis(500),
        "{}: cut off after {cut_after:?}",
        H::NAME
    );

    let report = srv.report();
    assert_eq!(report.summary.completed, 2);
    assert_eq!(report.summary.aborted, 1);
    assert_eq!(report.summary.refused, 0);
    let drained_in = report.summary.drained_in.expect("drained");
    assert!(
        drained_in >= GRACE && drained_in < GRACE + Duration::from_millis(500),
        "{drained_in:?}"
    );
    assert_eq!(report.stats.accept.accepted, 3);
    assert_eq!(report.stats.shutdown.started, 3);
    assert!(report.error.is_none());
}

/// The drain ends when the last connection in flight finishes, long before the deadline.
pub fn shutdown_drain_ends_as_soon_as_the_last_connection_finishes<H: Harness>() {
    let srv = start::<H>();
    let mut mid = connect(srv.addr);
    mid.write_all(b"half").expect("write");
    srv.wait_in_flight(1);
    std::thread::sleep(Duration::from_millis(50));
    let signalled = srv.signal();
    std::thread::sleep(Duration::from_millis(100));
    mid.write_all(b"-and-half\n").expect("write");
    let (reply, _) = read_to_close(&mut mid);
    drop(mid);
    assert_eq!(reply, b"half-and-half\n");
    let report = srv.report();
    let took = signalled.elapsed();
    assert!(took < GRACE / 2, "{}: took {took:?}", H::NAME);
    assert_eq!((report.summary.completed, report.summary.aborted), (1, 0));
    assert!(report.summary.drained_in.expect("drained") < GRACE / 2);
}

/// A second signal during the drain aborts what still runs at once and counts it.
pub fn shutdown_second_signal_stops_at_once_and_counts_the_aborted<H: Harness>() {
    let srv = start::<H>();
    let mut hung = connect(srv.addr);
    hung.write_all(b"partial").expect("write");
    srv.wait_in_flight(1);
    std::thread::sleep(Duration::from_millis(50));
    srv.signal();
    std::thread::sleep(Duration::from_millis(100));
    assert!(srv.handle.is_draining());
    let second = srv.signal();
    let report = srv.report();
    assert!(
        second.elapsed() < GRACE / 2,
        "{}: {:?}",
        H::NAME,
        second.elapsed()
    );
    assert_eq!((report.summary.completed, report.summary.aborted), (0, 1));
    let (rest, _) = read_to_close(&mut hung);
    assert_eq!(rest, b"");
    assert_eq!(report.stats.shutdown.signals, 2);
}

/// The Kubernetes drain delay on real sockets: from the signal on the server is not ready, yet
/// for the delay it still accepts and serves new connections and keeps idle ones open; then it
/// drains as usual (idle closed, new refused). A second signal during the delay stops at once.
pub fn shutdown_drain_delay_serves_while_not_ready_then_drains<H: Harness>() {
    const DELAY: Duration = Duration::from_secs(1);
    let shutdown = ShutdownConfig::builder()
        .grace_period(GRACE)
        .drain_delay(DELAY)
        .build()
        .expect("valid shutdown");
    let srv = start_configured::<H>(
        shutdown,
        ConnConfig::default(),
        crate::echo::EchoLimits::default(),
    );
    let mut idle = connect(srv.addr);
    assert_eq!(round_trip(&mut idle, b"before\n"), b"before\n");
    assert!(srv.handle.is_ready());

    let signalled = srv.signal();
    let until = Instant::now() + PATIENCE;
    while srv.handle.is_ready() {
        assert!(
            Instant::now() < until,
            "{}: still ready after the signal",
            H::NAME
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(srv.handle.is_delaying() && !srv.handle.is_draining());
    assert_eq!(
        srv.handle.health().to_string(),
        "ready=false live=true reasons=[shutdown: drain delay]"
    );
    // During the delay: a newcomer is accepted and served, the idle connection still works.
    let mut late = connect(srv.addr);
    assert_eq!(round_trip(&mut late, b"during\n"), b"during\n");
    assert_eq!(round_trip(&mut idle, b"still\n"), b"still\n");
    if signalled.elapsed() < DELAY - Duration::from_millis(200) {
        // (Only checked when this thread was not descheduled past the delay.)
        assert!(
            srv.handle.is_delaying(),
            "{}: the delay ended early",
            H::NAME
        );
    }

    // Then the drain: both idle connections are closed, new ones refused.
    let (rest, closed_at) = read_to_close(&mut idle);
    drop(idle);
    assert_eq!(rest, b"");
    assert!(
        closed_at - signalled >= DELAY,
        "{}: closed {:?} after the signal, inside the drain delay",
        H::NAME,
        closed_at - signalled
    );
    let (rest, _) = read_to_close(&mut late);
    drop(late);
    assert_eq!(rest, b"");
    let report = srv.report();
    assert_eq!(
        (
            report.summary.completed,
            report.summary.aborted,
            report.summary.refused
        ),
        (2, 0, 0),
        "{}: {report}",
        H::NAME
    );
    assert_eq!(report.stats.shutdown.started, 2);

    // A second signal during the delay stops at once.
    let srv = start_configured::<H>(
        shutdown,
        ConnConfig::default(),
        crate::echo::EchoLimits::default(),
    );
    let mut hung = connect(srv.addr);
    hung.write_all(b"partial").expect("write");
    srv.wait_in_flight(1);
    srv.signal();
    let second = srv.signal();
    let report = srv.report();
    assert!(
        second.elapsed() < DELAY,
        "{}: {:?}",
        H::NAME,
        second.elapsed()
    );
    assert_eq!((report.summary.completed, report.summary.aborted), (0, 1));
    let (rest, _) = read_to_close(&mut hung);
    assert_eq!(rest, b"");
}

/// With nothing in flight the server stops at once.
pub fn shutdown_with_nothing_in_flight_stops_at_once<H: Harness>() {
    let srv = start::<H>();
    let signalled = srv.signal();
    let report = srv.report();
    assert!(signalled.elapsed() < GRACE / 2);
    assert_eq!(report.summary.drained_in, Some(Duration::ZERO));
    assert_eq!((report.summary.completed, report.summary.aborted), (0, 0));
}

/// The adapter's own echo example binary ([`Harness::ECHO_EXAMPLE`]: `echo`, `smol-echo`,
/// `async-std-echo`): the newest `<name_with_underscores>-<hash>` in `target/<profile>/examples/` whose dep-info
/// names this package's `examples/<name>.rs`, built with `cargo build -p <package> --example
/// <name>` if there is none.
fn echo_example<H: Harness>() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let examples = profile_dir.join("examples");
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo");
    let package_dir = Path::new(&manifest)
        .file_name()
        .and_then(|n| n.to_str())
        .expect("the package's directory")
        .to_owned();
    let source = format!("{package_dir}/examples/{}.rs", H::ECHO_EXAMPLE);
    // cargo names the hashed binary after the crate name, hyphens as underscores.
    let prefix = format!("{}-", H::ECHO_EXAMPLE.replace('-', "_"));
    let find = || {
        let entries = std::fs::read_dir(&examples).ok()?;
        entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                name.strip_prefix(prefix.as_str())
                    .is_some_and(|hash| !hash.contains('-'))
                    && p.extension().is_none()
            })
            .filter(|p| {
                std::fs::read_to_string(p.with_extension("d")).is_ok_and(|d| d.contains(&source))
            })
            .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
    };
    if let Some(path) = find() {
        return path;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-p", H::PACKAGE, "--example", H::ECHO_EXAMPLE])
        .status()
        .expect("cargo build");
    assert!(
        status.success(),
        "cargo build -p {} --example {}",
        H::PACKAGE,
        H::ECHO_EXAMPLE
    );
    find().expect("the echo example after building it")
}

/// The runtime's `echo` example on a real SIGTERM (`kill -TERM`): answers `HEALTH`, closes the
/// idle connection, refuses new ones, answers the line in flight, cuts the hung client off at
/// `--grace 1`, prints its `stats:` line and exits 0 within the grace period.
pub fn echo_example_drains_on_sigterm_answers_health_and_exits_0_within_the_grace_period<
    H: Harness,
>() {
    let mut child = Command::new(echo_example::<H>())
        .args(["--addr", "127.0.0.1:0", "--grace", "1"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the echo example");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("the first line");
    let addr: SocketAddr = first
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .parse()
        .expect("an address");

    let mut probe = connect(addr);
    assert_eq!(
        round_trip(&mut probe, b"HEALTH\n"),
        b"ready=true live=true reasons=[]\n"
    );
    assert_eq!(round_trip(&mut probe, b"hello\n"), b"hello\n");
    let mut mid = connect(addr);
    mid.write_all(b"start-").expect("write");
    let mut hung = connect(addr);
    hung.write_all(b"never finished").expect("write");
    std::thread::sleep(Duration::from_millis(200));

    let signalled = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    std::thread::sleep(Duration::from_millis(200));

    let (rest, _) = read_to_close(&mut probe);
    drop(probe);
    assert_eq!(rest, b"");
    let err = TcpStream::connect(addr).expect_err("refused after SIGTERM");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
    mid.write_all(b"end\n").expect("write");
    let (reply, _) = read_to_close(&mut mid);
    drop(mid);
    assert_eq!(reply, b"start-end\n");
    let (rest, cut_at) = read_to_close(&mut hung);
    assert_eq!(rest, b"");
    let cut_after = cut_at - signalled;
    assert!(
        cut_after >= GRACE && cut_after < GRACE + Duration::from_secs(1),
        "{}: cut off after {cut_after:?}",
        H::NAME
    );

    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            signalled.elapsed() < GRACE + Duration::from_secs(2),
            "{}: still running after the grace period",
            H::NAME
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{}: {status}", H::NAME);
    let mut out = String::new();
    stdout.read_to_string(&mut out).expect("stdout");
    assert!(
        out.contains("stats: completed=2 aborted=1 refused=0 drained_in=1."),
        "{out}"
    );
    assert!(out.contains("accepted=3"), "{out}");
    let mut log = String::new();
    child
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut log)
        .expect("stderr");
    assert!(log.contains(&format!("runtime=\"{}\"", H::NAME)), "{log}");
    for line in [
        "shutdown signal received signal=\"SIGTERM\"",
        // The server's instance name comes first (`Server::named`; the echo examples keep
        // the default).
        "drain started: refusing new connections name=\"default\" in_flight=3",
        "drain deadline passed: aborting the connections still open name=\"default\" aborted=1",
    ] {
        assert!(log.contains(line), "{}: no {line:?} in\n{log}", H::NAME);
    }
}

// ----- hostile clients against the echo example (issue 12) -------------------------------------

/// The runtime's `echo` example in a child process, killed when dropped.
struct EchoChild {
    child: std::process::Child,
    addr: SocketAddr,
    stdout: BufReader<std::process::ChildStdout>,
}

impl EchoChild {
    fn start<H: Harness>(args: &[&str]) -> EchoChild {
        let mut child = Command::new(echo_example::<H>())
            .args(["--addr", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the echo example");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut first = String::new();
        stdout.read_line(&mut first).expect("the first line");
        let addr = first
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .parse()
            .expect("an address");
        EchoChild {
            child,
            addr,
            stdout,
        }
    }

    /// A line of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc/<pid>/status (Linux)");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in {status}"))
    }

    /// Waits for the exit (at most `within`) and returns the `stats:` line.
    fn exit(mut self, within: Duration) -> String {
        let until = Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(Instant::now() < until, "the echo example did not exit");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(status.success(), "{status}");
        let mut out = String::new();
        self.stdout.read_to_string(&mut out).expect("stdout");
        out
    }
}

impl Drop for EchoChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The drain measurement: `echo --grace 5`; a client with a 64 KiB receive buffer sends
/// one `size`-byte line and reads the echo at `rate` bytes/s; SIGTERM at 0.5 s; 0.2 s later it
/// pipelines one more line. Every byte of the echo must arrive, then EOF (no reset), and the
/// server must count the connection as completed, not reset.
fn slow_reader_pipelining_during_the_drain<H: Harness>(size: usize, rate: u64) {
    let max_line = (size + 1).to_string();
    let echo = EchoChild::start::<H>(&["--grace", "5", "--max-line", &max_line]);
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .set_recv_buffer_size(64 * 1024)
        .expect("SO_RCVBUF 64 KiB");
    socket.connect(&echo.addr.into()).expect("connect");
    let mut client: TcpStream = socket.into();
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut line = vec![b'a'; size];
    line.push(b'\n');
    let started = Instant::now();
    let mut writer = client.try_clone().expect("clone");
    let pid = echo.child.id();
    let late = std::thread::spawn(move || {
        writer.write_all(&line).expect("send the line");
        std::thread::sleep(Duration::from_millis(500).saturating_sub(started.elapsed()));
        let kill = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(kill.success());
        std::thread::sleep(Duration::from_millis(200));
        // Keep-alive / pipelining: the next request, after the drain started.
        let _ = writer.write_all(b"one more line\n");
        writer
    });
    let mut got: u64 = 0;
    let mut buf = [0u8; 4096];
    let ended = loop {
        // Read no faster than `rate`.
        let allowed = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        if got >= allowed {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        let want = (allowed - got).min(buf.len() as u64) as usize;
        match client.read(&mut buf[..want]) {
            Ok(0) => break Ok(()),
            Ok(n) => got += n as u64,
            Err(e) => break Err(e),
        }
    };
    let writer = late.join().expect("the writer thread");
    drop((writer, client));
    assert!(
        ended.is_ok(),
        "{}: the echo ended in {:?} after {got} of {} bytes",
        H::NAME,
        ended,
        size + 1
    );
    assert_eq!(got, size as u64 + 1, "{}: every byte, then EOF", H::NAME);
    let out = echo.exit(Duration::from_secs(10));
    assert!(
        out.contains("stats: completed=1 aborted=0"),
        "{}: {out}",
        H::NAME
    );
    assert!(out.contains(" resets=0"), "{}: {out}", H::NAME);
}

/// 256 KiB read at 256 KiB/s: every byte arrives, then EOF, although the client sends another
/// line after SIGTERM (before lingering close: 195,584 of 262,144 bytes, then ECONNRESET).
pub fn echo_example_delivers_a_256_kib_reply_to_a_slow_reader_that_pipelines_during_the_drain<
    H: Harness,
>() {
    slow_reader_pipelining_during_the_drain::<H>(256 * 1024, 256 * 1024);
}

/// 8 MiB read at 4 MiB/s: every byte arrives, then EOF (before: 5,528,576 of 8,388,608).
pub fn echo_example_delivers_an_8_mib_reply_to_a_slow_reader_that_pipelines_during_the_drain<
    H: Harness,
>() {
    slow_reader_pipelining_during_the_drain::<H>(8 * 1024 * 1024, 4 * 1024 * 1024);
}

/// Slowloris: `--max-connections 50`, every slot held by clients that send nothing or one byte
/// a second and never a newline. With the echo's default flags, a newcomer is served within
/// 5 s (the connection idle the longest is reclaimed for it), and so is the `HEALTH` probe
/// after it (before: no answer in 10 s, none of the 50 closed in 60 s).
pub fn echo_example_serves_a_newcomer_within_5_s_while_idle_and_trickling_clients_hold_every_slot<
    H: Harness,
>() {
    let echo = EchoChild::start::<H>(&["--max-connections", "50"]);
    let idle: Vec<TcpStream> = (0..25).map(|_| connect(echo.addr)).collect();
    let tricklers: Vec<TcpStream> = (0..25).map(|_| connect(echo.addr)).collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let trickle = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut tricklers = tricklers;
            while !stop.load(Ordering::Relaxed) {
                for t in &mut tricklers {
                    let _ = t.write_all(b"x");
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            tricklers
        })
    };
    // Let every attacker take its slot and the idle ones pass the reclamation minimum (1 s).
    std::thread::sleep(Duration::from_millis(1500));

    // The probe's exact line depends on whether the previous newcomer's slot is free yet.
    for (line, want) in [(&b"hello\n"[..], "hello\n"), (b"HEALTH\n", "live=true")] {
        let asked = Instant::now();
        let mut newcomer = connect(echo.addr);
        let reply = round_trip(&mut newcomer, line);
        let waited = asked.elapsed();
        assert!(
            waited < Duration::from_secs(5),
            "{}: the newcomer waited {waited:?}",
            H::NAME
        );
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.contains(want), "{}: {reply:?}", H::NAME);
    }
    stop.store(true, Ordering::Relaxed);
    drop(trickle.join().expect("the trickler thread"));
    drop(idle);
}

/// Two connections each stream 256 MiB without a newline: the echo (default `--max-line`
/// 64 KiB) answers each with an error and closes it; the server's peak RSS grows by less than
/// 32 MiB (before: from 3 to 515 MiB).
pub fn echo_example_memory_stays_flat_under_two_256_mib_lines_without_a_newline<H: Harness>() {
    let echo = EchoChild::start::<H>(&[]);
    let mut probe = connect(echo.addr);
    assert_eq!(round_trip(&mut probe, b"warm-up\n"), b"warm-up\n");
    let before = echo.status_kib("VmRSS");
    let streams: Vec<_> = (0..2)
        .map(|_| {
            let mut stream = connect(echo.addr);
            std::thread::spawn(move || {
                let chunk = vec![b'a'; 64 * 1024];
                let mut sent: u64 = 0;
                while sent < 256 << 20 {
                    match stream.write(&chunk) {
                        Ok(n) => sent += n as u64,
                        Err(_) => break,
                    }
                }
                sent
            })
        })
        .collect();
    let sent: Vec<u64> = streams
        .into_iter()
        .map(|t| t.join().expect("a streaming thread"))
        .collect();
    let peak = echo.status_kib("VmHWM");
    assert_eq!(round_trip(&mut probe, b"still here\n"), b"still here\n");
    assert!(
        peak.saturating_sub(before) < 32 * 1024,
        "{}: RSS grew from {before} KiB to a peak of {peak} KiB (sent {sent:?})",
        H::NAME
    );
}

/// A line longer than `--max-line` is answered with an error line, and the connection ends
/// with EOF after it (the rest of the line is drained by the lingering close, not reset).
pub fn echo_example_answers_an_overlong_line_with_an_error_line_then_eof<H: Harness>() {
    let echo = EchoChild::start::<H>(&["--max-line", "1000"]);
    let mut client = connect(echo.addr);
    let mut line = vec![b'b'; 3000];
    line.push(b'\n');
    client.write_all(&line).expect("write");
    let mut reply = Vec::new();
    let ended = client.read_to_end(&mut reply);
    drop(client);
    assert!(ended.is_ok(), "{}: {ended:?} after {reply:?}", H::NAME);
    assert_eq!(
        String::from_utf8_lossy(&reply),
        "ERR line longer than 1000 bytes\n",
        "{}",
        H::NAME
    );
    let mut ok = connect(echo.addr);
    assert_eq!(round_trip(&mut ok, b"short\n"), b"short\n");
}

/// In process, idle timeout 400 ms and a 400 ms read deadline per line: a silent connection is
/// closed after its idle timeout, a trickler (a byte every 100 ms, never a newline) at its
/// read deadline although bytes flow, an active client is untouched; each is counted.
pub fn server_closes_idle_and_trickling_connections_and_counts_them<H: Harness>() {
    let timeout = Duration::from_millis(400);
    let conns = ConnConfig::builder()
        .idle_timeout(Some(timeout))
        .reclaim_min_idle(None)
        .build()
        .expect("valid");
    let limits = crate::echo::EchoLimits {
        max_line: 1024,
        line_timeout: Some(timeout),
    };
    let srv = start_with::<H>(conns, limits);
    let defending = "clients: closing idle or slow clients";
    assert!(!srv.handle.health().to_string().contains(defending));
    let opened = Instant::now();
    let idle = connect(srv.addr);
    let mut trickler = connect(srv.addr);
    // The first byte now, not from the thread: a thread started late on a loaded machine
    // would leave the trickler silent for its idle timeout (closed as idle, not at its read
    // deadline, which runs from its first byte).
    trickler.write_all(b"x").expect("the first byte");
    let trickle = {
        let mut t = trickler.try_clone().expect("clone");
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            let until = Instant::now() + PATIENCE;
            while Instant::now() < until && t.write_all(b"x").is_ok() {
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let watch = |mut s: TcpStream| std::thread::spawn(move || read_to_close(&mut s));
    let (idle_watch, trickler_watch) = (watch(idle), watch(trickler));
    // An active client pings every 100 ms until the counts are checked and for at least
    // twice the idle timeout (a span, not a count of pings: a loaded machine stretches each
    // 100 ms sleep): never closed.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pinger = {
        let (stop, addr) = (Arc::clone(&stop), srv.addr);
        std::thread::spawn(move || {
            let mut active = connect(addr);
            let first = Instant::now();
            let mut pings = 0u32;
            loop {
                assert_eq!(round_trip(&mut active, b"ping\n"), b"ping\n");
                pings += 1;
                let served_for = first.elapsed();
                if stop.load(Ordering::Relaxed) && served_for >= timeout * 2 {
                    return (pings, served_for);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let (rest, idle_closed_at) = idle_watch.join().expect("idle watcher");
    assert_eq!(rest, b"");
    let (rest, trickler_closed_at) = trickler_watch.join().expect("trickler watcher");
    assert_eq!(rest, b"");
    for (what, at) in [("idle", idle_closed_at), ("trickler", trickler_closed_at)] {
        let after = at - opened;
        // Closed after its timeout, while the active client ran (generous for a loaded box).
        assert!(
            after >= timeout,
            "{}: {what} closed after {after:?}",
            H::NAME
        );
        // Well before the trickler stops (after `PATIENCE`) and the watchers give up: the
        // timeouts closed them, not the end of the test.
        assert!(
            after < timeout * 5,
            "{}: {what} closed after {after:?}",
            H::NAME
        );
    }
    trickle.join().expect("the trickler thread");
    let stats = srv.handle.stats().conns;
    assert_eq!(stats.idle_closed, 1, "{}: {stats:?}", H::NAME);
    assert_eq!(stats.deadline_expired, 1, "{}: {stats:?}", H::NAME);
    assert_eq!(stats.reclaimed, 0, "{}: {stats:?}", H::NAME);
    // Health shows the defence at work (degraded, still ready) for a while after it acted.
    let health = srv.handle.health().to_string();
    assert!(health.contains(defending), "{}: {health}", H::NAME);
    assert!(health.starts_with("ready=true"), "{}: {health}", H::NAME);
    stop.store(true, Ordering::Relaxed);
    let (pings, served_for) = pinger
        .join()
        .expect("the active client was served throughout");
    // The same connection answered its first ping and one at least two idle timeouts later.
    assert!(
        pings >= 2 && served_for >= timeout * 2,
        "{}: {pings} pings in {served_for:?}",
        H::NAME
    );
    srv.signal();
    let report = srv.report();
    assert!(
        report
            .to_string()
            .contains("idle_closed=1 deadline_expired=1 reclaimed=0"),
        "{report}"
    );
}

/// A handler that closes early (`Conn::close`) and keeps running: the client reads the reply,
/// then EOF (no reset, although it sent more after the reply), while the handler is still in
/// flight; the close ends `Clean` once the client closes its end.
pub fn conn_close_lingers_while_the_handler_runs_on_and_delivers_the_reply<H: Harness>() {
    use futures_lite::AsyncWriteExt as _;
    let (tx, rx) = std::sync::mpsc::channel();
    let (ends_tx, ends) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        H::block_on(async move {
            let incoming = H::bind("127.0.0.1:0", &config(4)).await.expect("bind");
            let addr = H::local_addr(incoming.get_ref()).expect("local addr");
            let server = Server::<H::Listener, H::Runtime>::new(incoming);
            let handle = server.handle();
            tx.send((addr, handle)).expect("the test waits");
            server
                .serve(move |mut conn, _| {
                    let ends_tx = ends_tx.clone();
                    async move {
                        let rt = H::Runtime::default();
                        let _ = conn.write_all(b"bye\n").await;
                        let end = conn.close(&rt).await;
                        let _ = ends_tx.send(end);
                        // The handler runs on after closing.
                        driver::sleep(&rt, Duration::from_millis(500)).await;
                    }
                })
                .await
        })
    });
    let (addr, handle) = rx.recv().expect("the server started");
    let mut client = connect(addr);
    client
        .write_all(b"more input the server never reads\n")
        .expect("write");
    let mut got = Vec::new();
    let read = client.read_to_end(&mut got);
    assert!(read.is_ok(), "{}: {read:?} after {got:?}", H::NAME);
    assert_eq!(got, b"bye\n");
    assert_eq!(
        handle.stats().shutdown.in_flight,
        1,
        "the handler still runs"
    );
    drop(client);
    let end = ends.recv_timeout(PATIENCE).expect("the close ended");
    assert_eq!(end, keel_core::conn::ConnEnd::Clean, "{}", H::NAME);
    let until = Instant::now() + PATIENCE;
    while handle.stats().shutdown.in_flight != 0 {
        assert!(Instant::now() < until);
        std::thread::sleep(Duration::from_millis(10));
    }
    handle.shutdown();
    let report = server.join().expect("the server thread");
    assert_eq!((report.summary.completed, report.summary.reset), (1, 0));
    assert_eq!(report.stats.conns.clean, 1, "{:?}", report.stats.conns);
}

/// At the limit the server holds one newcomer for reclamation; when no connection is idle long
/// enough and the drain starts, that newcomer is closed and counted as refused.
pub fn a_newcomer_held_for_reclamation_is_refused_and_counted_when_the_drain_starts<H: Harness>() {
    let (tx, rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        H::block_on(async move {
            let incoming = H::bind("127.0.0.1:0", &config(1)).await.expect("bind");
            let addr = H::local_addr(incoming.get_ref()).expect("local addr");
            let conns = ConnConfig::builder()
                .reclaim_min_idle(Some(Duration::from_secs(60)))
                .build()
                .expect("valid");
            let server = Server::<H::Listener, H::Runtime>::new(incoming).conn_config(conns);
            let handle = server.handle();
            tx.send((addr, handle.clone())).expect("the test waits");
            server
                .serve(move |conn, _| {
                    crate::echo::echo_conn(conn, Some(handle.clone()), Default::default())
                })
                .await
        })
    });
    let (addr, handle) = rx.recv().expect("the server started");
    let mut held = connect(addr);
    assert_eq!(round_trip(&mut held, b"mine\n"), b"mine\n");
    let mut newcomer = connect(addr);
    newcomer.write_all(b"waiting\n").expect("write");
    let until = Instant::now() + PATIENCE;
    while handle.stats().accept.accepted != 2 {
        assert!(Instant::now() < until, "{:?}", handle.stats());
        std::thread::sleep(Duration::from_millis(10));
    }
    handle.shutdown();
    let (reply, _) = read_to_close(&mut newcomer);
    assert_eq!(reply, b"", "{}: the held newcomer was served", H::NAME);
    let (rest, _) = read_to_close(&mut held);
    drop(held);
    assert_eq!(rest, b"");
    let report = server.join().expect("the server thread");
    assert_eq!(report.summary.refused, 1, "{}: {report}", H::NAME);
    assert_eq!(report.summary.completed, 1, "{}: {report}", H::NAME);
    assert_eq!(report.stats.conns.reclaimed, 0);
}
