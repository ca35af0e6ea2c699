//! [`Retry`]: retry an async operation with backoff, a shared retry budget and a predicate,
//! on any [`Runtime`].
//!
//! # What it protects against
//!
//! Retrying at once, in lockstep with every other client, every error, without bound: the seed's
//! retry loop. Here each retry waits a jittered [`Backoff`] delay (or the server's hint, capped),
//! stops after the schedule's attempts or elapsed time, asks a [`SharedBudget`] shared by every
//! operation against the dependency (so an outage adds at most a fraction of the load, not
//! N times it), and retries only the errors the predicate calls retryable.
//!
//! # The contract
//!
//! - [`Retry::run(op)`](Retry::run) calls `op()` and awaits it; on `Err(e)` it asks the
//!   predicate: [`RetryAction::Stop`] gives up at once ([`StopReason::NotRetryable`]);
//!   [`RetryAction::Retry`] takes the schedule's next delay; [`RetryAction::RetryAfter(d)`](RetryAction::RetryAfter)
//!   takes the longer of the server's hint `d` (held within the schedule's `min_retry_after`,
//!   1 ms by default, and `max_retry_after`) and the schedule's jittered delay: a hint cannot
//!   skip the backoff, see [`crate::backoff`], *Server hints*. If the schedule gives up:
//!   [`StopReason::Exhausted`]. If the budget
//!   (if any) is empty it gives up at once with [`StopReason::BudgetExhausted`]. Otherwise the
//!   notify hook is called, the operation sleeps until the retry instant with [`sleep_until`]
//!   on the runtime's timer, and only then is one retry withdrawn from the budget (a refusal,
//!   because other callers drained it meanwhile, gives up with
//!   [`StopReason::BudgetExhausted`]): a run cancelled during its backoff sleep spends no
//!   budget. The last error is kept across the sleep for that case.
//! - **Every retry yields.** Between two attempts the run returns `Pending` to its executor at
//!   least once, even when the delay is zero (`constant(0)`, a zero hint with
//!   `min_retry_after(0)`) or the retry instant has already passed: the sleep, or when the
//!   sleep is already over a self-wake (the cooperative-yield idiom). So an operation that
//!   fails at once cannot make a retry loop spin inside one poll: other tasks on the same
//!   thread keep running, and a `timeout` around the run fires.
//! - **The default predicate retries every error.** That is rarely right: classify your errors
//!   with [`Retry::retry_if`] (a 400 or a failed validation will fail again; a
//!   [`BreakerError::Rejected`](crate::driver::breaker::BreakerError) should fail fast).
//! - **Budget deposits.** By default a run deposits into the budget once, when it succeeds
//!   ([`Deposit::OnSuccess`]): the semantics of tower's `TpsBudget` policy, which the core
//!   [`crate::budget`] docs adopt, so during a total outage only the budget's floor is
//!   available. [`Deposit::EveryRequest`] deposits once per run, before its first attempt
//!   (Finagle), so retries keep scaling with the request rate during an outage. Retries never
//!   deposit.
//! - **Jitter seeds.** Every run builds a fresh [`Backoff`] whose seed is the config's seed mixed
//!   with a counter of this `Retry`'s runs (shared by its clones), so concurrent operations do
//!   not jitter in lockstep, and with per-`Retry` randomness from the OS (std's per-process
//!   random keys), so two processes with the same config do not jitter in lockstep either: that
//!   fleet-wide synchronisation is what jitter exists to break.
//!   [`Retry::deterministic`] drops the OS part, making a sequence of runs reproducible from the
//!   config's seed (tests, simulations).
//! - Every time is the runtime's `now()`, so `tokio::time::pause()` drives it exactly.
//!
//! # tracing (feature `tracing`), target `keel::retry`
//!
//! Every line carries `name`, the instance name ([`Retry::named`]).
//! Each retry at `debug` ("retrying"): `attempt` (the attempt that failed, from 1), `delay_ms`,
//! `error` (`Debug`). Give-ups at `warn` ("giving up"), **rate-limited per `Retry`** (shared by
//! its clones) by a [`ReportLimiter`](crate::report::ReportLimiter): the first, then at most one
//! per [`report_interval`](Retry::report_interval) (default 1 s), each with `attempt` (attempts
//! made), `reason` ([`StopReason::as_str`]), `error` (`Debug`: the caller's type) and
//! `suppressed` (give-ups since the previous line that were not logged; every give-up is still
//! counted in [`RetryStats`]). The one-shot [`retry`] function shares one process-wide limiter.
//! A non-retryable error is not logged (it is the caller's ordinary error). Messages are
//! constant strings; the values are in the fields.
//!
//! # Example
//!
//! ```
//! use core::time::Duration;
//! use keel_core::backoff::{BackoffConfig, GiveUpReason, Jitter};
//! use keel_core::driver::retry::{Retry, RetryAction, StopReason};
//! use keel_core::time::Instant;
//! use keel_testkit::ManualRuntime;
//!
//! #[derive(Debug, PartialEq)]
//! enum Error { Unavailable, BadRequest }
//!
//! let config = BackoffConfig::constant(Duration::from_millis(100))
//!     .jitter(Jitter::None)
//!     .max_attempts(3)
//!     .build()?;
//! let rt = ManualRuntime::new(); // a clock the test moves; keel_tokio::Retry::new on tokio
//! let retry = Retry::with_runtime(config, rt.clone()).retry_if(|e: &Error| match e {
//!     Error::Unavailable => RetryAction::Retry,
//!     Error::BadRequest => RetryAction::Stop,
//! });
//! rt.block_on(async {
//!     let mut calls = 0;
//!     let err = retry.run(|| { calls += 1; async { Err::<(), _>(Error::Unavailable) } }).await.unwrap_err();
//!     assert_eq!((calls, err.attempts, err.reason), (3, 3, StopReason::Exhausted(GiveUpReason::MaxAttempts)));
//!     assert_eq!(rt.now(), Instant::from_millis(200)); // two backoff sleeps of 100 ms
//!
//!     let err = retry.run(|| async { Err::<(), _>(Error::BadRequest) }).await.unwrap_err();
//!     assert_eq!((err.attempts, err.reason), (1, StopReason::NotRetryable));
//!     assert_eq!(rt.now(), Instant::from_millis(200)); // no sleep before giving up
//! });
//! # Ok::<(), keel_core::ConfigError>(())
//! ```

use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::task::Poll;
use core::time::Duration;

use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::backoff::{Backoff, BackoffConfig, GiveUpReason, RetryDecision};
use crate::driver::instance::{Instance, RetryMetrics};
use crate::driver::{sleep_until, Name, Runtime};
use crate::report::DEFAULT_REPORT_INTERVAL;
use crate::rng::Rng;
use crate::sync::budget::SharedBudget;
use crate::sync::report::SharedReportLimiter;
use crate::time::Instant;

/// What to do with a failed attempt's error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RetryAction {
    /// Do not retry: the error will not go away (bad request, not found, a breaker rejection).
    Stop,
    /// Retry after the schedule's next delay.
    Retry,
    /// Retry after this delay: the server's `Retry-After` (capped at `max_retry_after`).
    RetryAfter(Duration),
}

/// Decides whether an error is worth retrying; implemented by every `Fn(&E) -> RetryAction`.
pub trait RetryPredicate<E> {
    /// Classifies the error of a failed attempt.
    fn classify(&self, error: &E) -> RetryAction;
}

impl<E, F: Fn(&E) -> RetryAction> RetryPredicate<E> for F {
    fn classify(&self, error: &E) -> RetryAction {
        self(error)
    }
}

/// The default predicate: retry every error (see the [module docs](self): classify instead).
#[derive(Clone, Copy, Debug, Default)]
pub struct RetryAll;

impl<E> RetryPredicate<E> for RetryAll {
    fn classify(&self, _error: &E) -> RetryAction {
        RetryAction::Retry
    }
}

/// A scheduled retry, as the notify hook sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct RetryInfo {
    /// The attempt that failed, from 1.
    pub attempt: u32,
    /// How long until the next attempt.
    pub delay: Duration,
    /// When the next attempt starts, on the runtime's clock.
    pub at: Instant,
}

/// Called before each retry's sleep; implemented by every `Fn(&E, RetryInfo)`.
pub trait RetryNotify<E> {
    /// A retry of the failed attempt (whose error is `error`) is scheduled.
    fn notify(&self, error: &E, info: RetryInfo);
}

impl<E, F: Fn(&E, RetryInfo)> RetryNotify<E> for F {
    fn notify(&self, error: &E, info: RetryInfo) {
        self(error, info);
    }
}

/// The default notify hook: nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoNotify;

impl<E> RetryNotify<E> for NoNotify {
    fn notify(&self, _error: &E, _info: RetryInfo) {}
}

/// When a run deposits into the retry budget (see the [module docs](self)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Deposit {
    /// Once per run that succeeds (tower's `TpsBudget` policy; the default).
    #[default]
    OnSuccess,
    /// Once per run, before its first attempt (Finagle).
    EveryRequest,
}

/// Why a run gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StopReason {
    /// The backoff schedule ran out (attempts or elapsed time).
    Exhausted(GiveUpReason),
    /// The shared retry budget refused the retry.
    BudgetExhausted,
    /// The predicate said the error is not worth retrying.
    NotRetryable,
}

impl StopReason {
    /// A stable short name: `"max-attempts"`, `"max-elapsed"`, `"budget-exhausted"`,
    /// `"not-retryable"`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            StopReason::Exhausted(GiveUpReason::MaxAttempts) => "max-attempts",
            StopReason::Exhausted(GiveUpReason::MaxElapsed) => "max-elapsed",
            #[allow(unreachable_patterns)]
            StopReason::Exhausted(_) => "exhausted",
            StopReason::BudgetExhausted => "budget-exhausted",
            StopReason::NotRetryable => "not-retryable",
        }
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopReason::Exhausted(GiveUpReason::MaxAttempts) => {
                "the schedule's max_attempts were made"
            }
            StopReason::Exhausted(GiveUpReason::MaxElapsed) => {
                "the next retry would pass the schedule's max_elapsed"
            }
            #[allow(unreachable_patterns)]
            StopReason::Exhausted(_) => "the schedule gave up",
            StopReason::BudgetExhausted => {
                "the retry budget is exhausted (the dependency is failing for many callers)"
            }
            StopReason::NotRetryable => "the error is not retryable",
        })
    }
}

/// The error of [`Retry::run`]: the last attempt's error and why no more were made.
///
/// Its message says why and after how many attempts; the last attempt's error is not repeated
/// in it. It implements `Error` when `E` does (`E: Error + 'static`), with the last attempt's
/// error as its [`source`](core::error::Error::source), so a walk of the error chain finds the
/// underlying error (e.g. a tower `KeelError`). For an `E` that is only `Display` (a `&str`),
/// use the fields or [`into_inner`](Self::into_inner).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
// The last error is the `source`, not part of the message: a chain printer (anyhow's `{:#}`,
// tracing) would otherwise show it twice.
#[error("gave up after {attempts} attempt(s) because {reason}")]
#[non_exhaustive]
pub struct RetryError<E> {
    /// The last attempt's error.
    #[source]
    pub error: E,
    /// Why the run stopped.
    pub reason: StopReason,
    /// Attempts made, the first included.
    pub attempts: u32,
}

impl<E> RetryError<E> {
    /// The last attempt's error.
    pub fn into_inner(self) -> E {
        self.error
    }
}

/// Counters of a [`Retry`] and its clones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct RetryStats {
    /// Runs started.
    pub runs: u64,
    /// Runs that ended `Ok`.
    pub successes: u64,
    /// Retries made (attempts after the first).
    pub retries: u64,
    /// Runs that gave up because the schedule ran out.
    pub gave_up_exhausted: u64,
    /// Runs that gave up because the budget refused a retry.
    pub gave_up_budget: u64,
    /// Runs that stopped on a non-retryable error.
    pub not_retryable: u64,
}

#[derive(Debug, Default)]
struct Counters {
    runs: AtomicU64,
    successes: AtomicU64,
    retries: AtomicU64,
    exhausted: AtomicU64,
    budget: AtomicU64,
    not_retryable: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Retries async operations; clones share the run counter, the stats and the budget. See the
/// [module docs](self).
///
/// ```
/// use std::cell::Cell;
/// use std::time::Duration;
/// use keel_core::backoff::{BackoffConfig, Jitter};
/// use keel_core::driver::retry::Retry;
/// use keel_testkit::ManualRuntime; // keel_tokio::Retry on tokio
///
/// let rt = ManualRuntime::new();
/// let config = BackoffConfig::exponential(Duration::from_millis(100), Duration::from_secs(1))
///     .jitter(Jitter::None)
///     .max_attempts(3)
///     .build()?;
/// let retry = Retry::with_runtime(config, rt.clone());
/// let calls = Cell::new(0);
/// let start = rt.now();
/// let answer = rt.block_on(retry.run(|| {
///     calls.set(calls.get() + 1);
///     let n = calls.get();
///     async move { if n < 3 { Err("timeout") } else { Ok("pong") } }
/// }));
/// assert_eq!(answer.unwrap(), "pong");
/// assert_eq!(calls.get(), 3);
/// assert_eq!(rt.now(), start + Duration::from_millis(100 + 200)); // the backoff, slept
/// # Ok::<(), keel_core::ConfigError>(())
/// ```
pub struct Retry<R: Runtime, P = RetryAll, N = NoNotify> {
    rt: R,
    config: BackoffConfig,
    budget: Option<SharedBudget>,
    deposit: Deposit,
    predicate: P,
    notify: N,
    counters: Arc<Counters>,
    /// Which give-ups are logged (shared by clones).
    reports: SharedReportLimiter,
    /// Mixed into every run's seed: OS randomness, or 0 when deterministic.
    salt: u64,
    id: Instance<RetryMetrics>,
}

impl<R: Runtime, P: Clone, N: Clone> Clone for Retry<R, P, N> {
    fn clone(&self) -> Self {
        Retry {
            rt: self.rt.clone(),
            config: self.config,
            budget: self.budget.clone(),
            deposit: self.deposit,
            predicate: self.predicate.clone(),
            notify: self.notify.clone(),
            counters: Arc::clone(&self.counters),
            reports: self.reports.clone(),
            salt: self.salt,
            id: self.id.clone(),
        }
    }
}

impl<R: Runtime, P, N> fmt::Debug for Retry<R, P, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("name", self.id.name())
            .field("config", &self.config)
            .field("budget", &self.budget)
            .field("deposit", &self.deposit)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime + Default> Retry<R> {
    /// Retries on the runtime `R::default()` with this schedule, no budget, every error
    /// retryable (classify with [`retry_if`](Self::retry_if)).
    #[must_use]
    pub fn new(config: BackoffConfig) -> Self {
        Retry::with_runtime(config, R::default())
    }
}

impl<R: Runtime> Retry<R> {
    /// Retries on `rt` with this schedule, no budget, every error retryable.
    #[must_use]
    pub fn with_runtime(config: BackoffConfig, rt: R) -> Self {
        Retry {
            rt,
            config,
            budget: None,
            deposit: Deposit::OnSuccess,
            predicate: RetryAll,
            notify: NoNotify,
            counters: Arc::default(),
            reports: SharedReportLimiter::new(DEFAULT_REPORT_INTERVAL, Instant::ZERO),
            salt: super::os_seed(),
            id: Instance::new(),
        }
    }
}

impl<R: Runtime, P, N> Retry<R, P, N> {
    /// Draws every retry from this budget (share one per dependency).
    #[must_use]
    pub fn budget(mut self, budget: SharedBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Jitter from the config's seed alone (no OS randomness): the same seed gives the same
    /// delays in every process. For tests and simulations; in production two processes would
    /// then retry in lockstep.
    #[must_use]
    pub fn deterministic(mut self) -> Self {
        self.salt = 0;
        self
    }

    /// Logs at most one give-up per `interval` (default 1 s; zero logs every one) for this
    /// `Retry` and the clones made from it **after** this call; the lines carry a
    /// `suppressed` count (see the [module docs](self)).
    #[must_use]
    pub fn report_interval(mut self, interval: Duration) -> Self {
        self.reports = SharedReportLimiter::new(interval, Instant::ZERO);
        self
    }

    /// Names this `Retry` (default `"default"`; see [`Name`]): the `name` field of its log
    /// lines and the `name` label of its metrics. Applies to this `Retry` and the clones made
    /// from it **after** this call. A notify hook that needs it captures it, or reads
    /// [`name`](Self::name) from the handle it was given to.
    #[must_use]
    pub fn named(mut self, name: impl Into<Name>) -> Self {
        self.id.rename(name.into());
        self
    }

    /// The instance name (see [`named`](Self::named)).
    #[must_use]
    pub fn name(&self) -> &Name {
        self.id.name()
    }

    /// When runs deposit into the budget (default [`Deposit::OnSuccess`]).
    #[must_use]
    pub fn deposit(mut self, deposit: Deposit) -> Self {
        self.deposit = deposit;
        self
    }

    /// Which errors to retry, and after how long.
    #[must_use]
    pub fn retry_if<P2>(self, predicate: P2) -> Retry<R, P2, N> {
        Retry {
            rt: self.rt,
            config: self.config,
            budget: self.budget,
            deposit: self.deposit,
            predicate,
            notify: self.notify,
            counters: self.counters,
            reports: self.reports,
            salt: self.salt,
            id: self.id,
        }
    }

    /// Called with the error and the schedule before each retry's sleep (metrics, logs).
    #[must_use]
    pub fn notify<N2>(self, notify: N2) -> Retry<R, P, N2> {
        Retry {
            rt: self.rt,
            config: self.config,
            budget: self.budget,
            deposit: self.deposit,
            predicate: self.predicate,
            notify,
            counters: self.counters,
            reports: self.reports,
            salt: self.salt,
            id: self.id,
        }
    }

    /// The predicate that classifies errors (set with [`retry_if`](Self::retry_if)).
    #[must_use]
    pub fn predicate(&self) -> &P {
        &self.predicate
    }

    /// The schedule.
    #[must_use]
    pub fn config(&self) -> &BackoffConfig {
        &self.config
    }

    /// The shared budget, if any.
    #[must_use]
    pub fn shared_budget(&self) -> Option<&SharedBudget> {
        self.budget.as_ref()
    }

    /// Counters of this `Retry` and its clones.
    #[must_use]
    pub fn stats(&self) -> RetryStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RetryStats {
            runs: get(&c.runs),
            successes: get(&c.successes),
            retries: get(&c.retries),
            gave_up_exhausted: get(&c.exhausted),
            gave_up_budget: get(&c.budget),
            not_retryable: get(&c.not_retryable),
        }
    }

    /// The give-up log limiter's counters (this `Retry` and its clones): `occurrences` are
    /// give-ups, `reports` the lines logged, `suppressed` the ones folded into a later line's
    /// `suppressed` field.
    #[must_use]
    pub fn report_stats(&self) -> crate::report::ReportStats {
        self.reports.stats()
    }

    /// Runs `op` until it succeeds or the run gives up. `op` is called once per attempt.
    ///
    /// # Errors
    ///
    /// [`RetryError`]: the last error, the [`StopReason`] and the attempts made.
    pub async fn run<T, E, Fut, Op>(&self, mut op: Op) -> Result<T, RetryError<E>>
    where
        Op: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: fmt::Debug,
        P: RetryPredicate<E>,
        N: RetryNotify<E>,
    {
        let run = self.counters.runs.fetch_add(1, Ordering::Relaxed);
        // The run's start is read only when something needs it: a per-request budget deposit,
        // or an elapsed-time limit (the backoff's deadline is `start + max_elapsed`). Without
        // either, the backoff is built at the first failure, started at that failure's `now`:
        // its decisions then do not depend on the start (no deadline; its clock clamp only
        // needs an instant no later than the failures'), and a first-try success reads no
        // clock at all.
        let deposit_start = self.deposit == Deposit::EveryRequest && self.budget.is_some();
        let start = (deposit_start || self.config.max_elapsed().is_some()).then(|| self.rt.now());
        if let (Some(start), true, Some(b)) = (start, deposit_start, &self.budget) {
            b.deposit(start);
        }
        let mut backoff: Option<Backoff> = None;
        let mut attempt: u32 = 1;
        loop {
            #[cfg(feature = "metrics")]
            self.metrics().attempts.increment(1);
            let error = match op().await {
                Ok(v) => {
                    bump(&self.counters.successes);
                    if self.deposit == Deposit::OnSuccess {
                        if let Some(b) = &self.budget {
                            b.deposit(self.rt.now());
                        }
                    }
                    return Ok(v);
                }
                Err(e) => e,
            };
            let now = self.rt.now();
            let backoff = backoff.get_or_insert_with(|| {
                Backoff::new(reseed(self.config, self.salt, run), start.unwrap_or(now))
            });
            let decision = match self.predicate.classify(&error) {
                RetryAction::Stop => {
                    bump(&self.counters.not_retryable);
                    #[cfg(feature = "metrics")]
                    self.metrics().gave_up(StopReason::NotRetryable.as_str());
                    return Err(RetryError {
                        error,
                        reason: StopReason::NotRetryable,
                        attempts: attempt,
                    });
                }
                RetryAction::Retry => backoff.next_delay(now),
                RetryAction::RetryAfter(hint) => backoff.next_delay_with_hint(now, hint),
            };
            let at = match decision {
                RetryDecision::RetryAt(at) => at,
                RetryDecision::GiveUp(reason) => {
                    bump(&self.counters.exhausted);
                    return Err(self.give_up(error, StopReason::Exhausted(reason), attempt));
                }
            };
            // The retry is charged after the sleep, just before `op` runs again, so a caller
            // that cancels during the sleep spends nothing (the budget has no refund). An
            // empty budget still fails fast: then the withdrawal is asked for now (and counted
            // as refused, or, if a deposit raced in, charged now).
            let mut charged = false;
            if let Some(b) = &self.budget {
                if b.remaining(now) == 0 {
                    if b.try_acquire(now).is_err() {
                        bump(&self.counters.budget);
                        #[cfg(feature = "metrics")]
                        self.metrics().budget_exhausted.increment(1);
                        return Err(self.give_up(error, StopReason::BudgetExhausted, attempt));
                    }
                    charged = true;
                }
            }
            let delay = at.saturating_duration_since(now);
            #[cfg(feature = "tracing")]
            tracing::debug!(
                target: "keel::retry",
                name = self.id.name().as_str(),
                attempt,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                error = ?error,
                "retrying",
            );
            self.notify.notify(&error, RetryInfo { attempt, delay, at });
            pause_until(&self.rt, at).await;
            if let (Some(b), false) = (&self.budget, charged) {
                if b.try_acquire(self.rt.now()).is_err() {
                    // Another caller drained it during the sleep.
                    bump(&self.counters.budget);
                    #[cfg(feature = "metrics")]
                    self.metrics().budget_exhausted.increment(1);
                    return Err(self.give_up(error, StopReason::BudgetExhausted, attempt));
                }
            }
            drop(error);
            bump(&self.counters.retries);
            #[cfg(feature = "metrics")]
            self.metrics().retries.increment(1);
            attempt = attempt.saturating_add(1);
        }
    }
}

impl<R: Runtime, P, N> Retry<R, P, N> {
    /// Ends a run: logs the give-up if the report limiter allows it.
    fn give_up<E: fmt::Debug>(&self, error: E, reason: StopReason, attempts: u32) -> RetryError<E> {
        #[cfg(feature = "metrics")]
        self.metrics().gave_up(reason.as_str());
        let report = self.reports.on_occurrence(self.rt.now());
        #[cfg(feature = "tracing")]
        if let crate::report::Report::Emit { suppressed } = report {
            tracing::warn!(
                target: "keel::retry",
                name = self.id.name().as_str(),
                attempt = attempts,
                reason = reason.as_str(),
                error = ?error,
                suppressed,
                "giving up",
            );
        }
        #[cfg(not(feature = "tracing"))]
        let _ = report;
        RetryError {
            error,
            reason,
            attempts,
        }
    }

    /// The registered series (at first use).
    #[cfg(feature = "metrics")]
    fn metrics(&self) -> &RetryMetrics {
        self.id.series(RetryMetrics::register)
    }
}

/// Sleeps until `at` on `rt`'s timer, returning `Pending` to the executor at least once even
/// if `at` has passed: a retry always yields (see the [module docs](self)).
async fn pause_until<R: Runtime>(rt: &R, at: Instant) {
    let mut sleep = sleep_until(rt, at);
    let mut yielded = false;
    core::future::poll_fn(|cx| match Pin::new(&mut sleep).poll(cx) {
        Poll::Ready(()) if yielded => Poll::Ready(()),
        Poll::Ready(()) => {
            // Already due: wake ourselves and return Pending, so the executor runs its other
            // tasks (and its timers) before the next attempt.
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
        Poll::Pending => {
            yielded = true;
            Poll::Pending
        }
    })
    .await;
}

/// Retries `op` on `rt` with `config`, drawing on `budget` if given, retrying every error
/// (see [`Retry`] to classify errors or observe retries). Give-ups of every one-shot `retry`
/// share one process-wide log limiter (see the [module docs](self)).
///
/// # Errors
///
/// [`RetryError`]: the last error, the [`StopReason`] and the attempts made.
pub async fn retry<R, T, E, Fut, Op>(
    rt: &R,
    config: BackoffConfig,
    budget: Option<&SharedBudget>,
    op: Op,
) -> Result<T, RetryError<E>>
where
    R: Runtime,
    Op: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: fmt::Debug,
{
    static RUNS: AtomicU64 = AtomicU64::new(0);
    static REPORTS: std::sync::OnceLock<SharedReportLimiter> = std::sync::OnceLock::new();
    let mut r = Retry::with_runtime(config, rt.clone());
    if let Some(b) = budget {
        r = r.budget(b.clone());
    }
    // One process-wide report limiter, so one-shot retries do not each log their give-up.
    r.reports = REPORTS
        .get_or_init(|| SharedReportLimiter::new(DEFAULT_REPORT_INTERVAL, Instant::ZERO))
        .clone();
    // A process-wide run counter, so concurrent one-shot retries do not jitter in lockstep.
    r.counters
        .runs
        .store(RUNS.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
    r.run(op).await
}

/// `config` with its jitter seed mixed with `salt` and the run number `run` (a zero salt and
/// run 0 keep the seed).
fn reseed(config: BackoffConfig, salt: u64, run: u64) -> BackoffConfig {
    let mix = salt ^ run.wrapping_mul(0xD1B5_4A32_D192_ED03);
    if mix == 0 {
        return config;
    }
    config.with_seed(Rng::new(config.seed() ^ mix).next_u64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoff::Jitter;

    #[test]
    fn retry_error_has_the_last_error_as_source() {
        #[derive(Debug, PartialEq)]
        struct Down;
        impl fmt::Display for Down {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("down")
            }
        }
        impl core::error::Error for Down {}
        let e = RetryError {
            error: Down,
            reason: StopReason::BudgetExhausted,
            attempts: 2,
        };
        let source = core::error::Error::source(&e).expect("a source");
        assert_eq!(source.downcast_ref::<Down>(), Some(&Down));
    }

    #[test]
    fn reseed_changes_only_the_seed() {
        let configs = [
            BackoffConfig::builder().seed(9).build().unwrap(),
            BackoffConfig::linear(Duration::from_millis(5), Duration::from_millis(7))
                .cap(Duration::from_secs(1))
                .jitter(Jitter::Equal)
                .unlimited_attempts()
                .max_elapsed(Duration::from_secs(30))
                .max_retry_after(Duration::from_secs(3))
                .build()
                .unwrap(),
            BackoffConfig::constant(Duration::ZERO)
                .jitter(Jitter::None)
                .build()
                .unwrap(),
            BackoffConfig::exponential(Duration::from_millis(1), Duration::from_secs(2))
                .factor_percent(150)
                .jitter(Jitter::Decorrelated)
                .build()
                .unwrap(),
        ];
        for c in configs {
            assert_eq!(reseed(c, 0, 0), c);
            let r1 = reseed(c, 0, 1);
            let r2 = reseed(c, 0, 2);
            assert_ne!(r1.seed(), c.seed());
            assert_ne!(r1.seed(), r2.seed());
            // Another process (another salt) draws other seeds for the same runs.
            assert_ne!(reseed(c, 0x5eed, 0).seed(), c.seed());
            assert_ne!(reseed(c, 0x5eed, 1).seed(), r1.seed());
            assert_eq!(
                (r1.schedule(), r1.cap(), r1.jitter(), r1.max_attempts()),
                (c.schedule(), c.cap(), c.jitter(), c.max_attempts())
            );
            assert_eq!(
                (r1.max_elapsed(), r1.max_retry_after(), r1.min_retry_after()),
                (c.max_elapsed(), c.max_retry_after(), c.min_retry_after())
            );
        }
    }
}
