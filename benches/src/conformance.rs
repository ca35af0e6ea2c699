//! The behavioural suite every adapter runs, written once against [`Harness`]: an adapter's
//! `tests/conformance.rs` is `keel_benches::conformance_suite!(ItsHarness);`, which expands to
//! one `#[test]` per behaviour below.
//!
//! Real sockets where the behaviour is about sockets (backpressure, shed mode, the echo); a
//! scripted listener where it is about errors (shortages, per-connection errors, fatal errors),
//! so the only runtime part under test there is the timer.

use std::collections::VecDeque;
use std::io::{self, BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use keel_core::accept::AcceptLoopConfig;
use keel_core::backoff::{BackoffConfig, Jitter};
use keel_core::breaker::{CircuitBreakerConfig, State};
use keel_core::budget::BudgetConfig;
use keel_core::driver::breaker::{Breaker, BreakerError};
use keel_core::driver::retry::{Retry, StopReason};
use keel_core::driver::{self, GuardConfig, Incoming, Listener, Runtime as _, StreamExt as _};
use keel_core::sync::budget::SharedBudget;

use crate::Harness;

/// How long a test waits for something that should happen.
const PATIENCE: Duration = Duration::from_secs(5);
/// How long a test waits to be sure something does not happen.
const QUIET: Duration = Duration::from_millis(300);

/// Expands to one `#[test]` per behaviour of the suite, run against `$harness`.
#[macro_export]
macro_rules! conformance_suite {
    ($harness:ty) => {
        $crate::conformance_suite!(@tests $harness;
            backpressure_holds_at_the_limit_and_resumes_when_a_permit_drops,
            shed_mode_sends_the_farewell_then_eof,
            accepted_streams_carry_data,
            shortage_pauses_on_the_runtime_timer_and_recovers,
            per_connection_errors_are_skipped_without_a_pause,
            fatal_error_ends_the_stream_with_the_error,
            sleep_and_timeout_follow_the_runtime_clock,
            breaker_call_opens_rejects_until_retry_at_then_closes,
            retry_backs_off_on_the_runtime_timer_and_stops_at_the_budget,
        );
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
) -> Option<(keel_core::sync::limit::Permit, L::Conn)> {
    let rt = H::Runtime::default();
    driver::timeout(&rt, within, incoming.next())
        .await
        .ok()
        .flatten()
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
        H::spawn(async move {
            let _permit = permit;
            H::echo(conn).await;
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
    fn poll_accept(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<u32>> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        match self.script.pop_front() {
            Some(answer) => Poll::Ready(answer),
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
        let pause = AcceptLoopConfig::builder()
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

/// `Breaker::call`: two failures open it; a call while open is rejected without running, with
/// a `retry_at` 100 ms after the trip; sleeping until then on the runtime's timer lets a probe
/// through, whose success closes it.
pub fn breaker_call_opens_rejects_until_retry_at_then_closes<H: Harness>() {
    H::block_on(async {
        let config = CircuitBreakerConfig::consecutive_failures(2)
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
