//! Metrics (feature `metrics`): every async handle's counters and gauges on the
//! [`metrics`](https://docs.rs/metrics) facade, under stable names.
//!
//! Install any `metrics` recorder (for Prometheus, `metrics-exporter-prometheus`) and the
//! handles of [`crate::driver`] (and the adapters' aliases and tower layers built on them)
//! report to it. The names follow the OpenTelemetry / Prometheus conventions (`snake_case`,
//! a `keel_` prefix, `_total` on counters) and, for the label values, Resilience4j's vocabulary;
//! every series carries the handle's instance name as the label `name` (see
//! [`Name`]; `"default"` when not named). Call [`describe`] once after installing
//! the recorder to give each metric its help text.
//!
//! # The metrics
//!
//! | Name | Kind | Labels | Meaning |
//! |------|------|--------|---------|
//! | `keel_breaker_state` | gauge | `name` | 0 closed, 1 open, 2 half-open, 3 forced open, 4 disabled |
//! | `keel_breaker_calls_total` | counter | `name`, `outcome` | calls by `outcome`: `success`, `failure`, `ignored` (classified), `rejected` (not made: the breaker refused) |
//! | `keel_breaker_transitions_total` | counter | `name`, `to` | state transitions, by the state entered ([`State::as_str`]: `closed`, `open`, `half-open`, `forced-open`, `disabled`) |
//! | `keel_retry_attempts_total` | counter | `name` | attempts made, first attempts included |
//! | `keel_retry_retries_total` | counter | `name` | retries made (attempts after the first) |
//! | `keel_retry_gave_up_total` | counter | `name`, `reason` | runs that ended in an error, by `reason` (`max-attempts`, `max-elapsed`, `budget-exhausted`, `not-retryable`) |
//! | `keel_retry_budget_exhausted_total` | counter | `name` | retries the retry budget refused |
//! | `keel_rate_allowed_total` | counter | `name` | requests a rate limiter (plain or keyed) admitted |
//! | `keel_rate_limited_total` | counter | `name` | requests a rate limiter refused (or made wait) |
//! | `keel_bulkhead_in_flight` | gauge | `name` | calls holding a bulkhead slot |
//! | `keel_bulkhead_queued` | gauge | `name` | callers waiting in the bulkhead's queue |
//! | `keel_bulkhead_admitted_total` | counter | `name` | calls given a slot |
//! | `keel_bulkhead_rejected_total` | counter | `name`, `reason` | calls shed, by `reason` (`full`, `queue_full`, `waited_too_long`, `priority`, `queue_delay`, [`RejectReason::as_str`](crate::bulkhead::RejectReason::as_str)) |
//! | `keel_connections_active` | gauge | `name` | connections a [`Server`](super::Server) is serving |
//! | `keel_connections_accepted_total` | counter | `name` | connections a server admitted |
//! | `keel_accept_errors_total` | counter | `name`, `kind` | accept errors, by `kind`: `per-connection`, `shortage`, `fatal`, `unknown` |
//! | `keel_shutdown_phase` | gauge | `name` | a server's phase: 0 running, 1 draining, 2 stopped |
//! | `keel_request_timeouts_total` | counter | `name`, `part` | requests a server's protocol gave up reading at their deadline, by `part`: `header` (the head; keel-tokio's HTTP server closes the connection), `body` (answered `408`) ([`RequestTimeouts`](super::RequestTimeouts)) |
//!
//! [`ALL`] lists the names; the adapters' tests check that each is emitted.
//!
//! # When values are exported
//!
//! A handle registers its series with the recorder installed at its **first use** (not at its
//! construction), so install the recorder before traffic starts; a handle used before any
//! recorder is installed keeps reporting to nothing (the `metrics` facade's rule). Counters are
//! incremented as events happen; gauges are set when the handle sees a change (a breaker's state
//! when it drains a transition, a bulkhead's occupancy at each acquire and release through the
//! handle, a server's connection count at each accept and end of a connection). A slot or state
//! changed by hand on the shared machine (not through the handle) shows at the next event.
//!
//! Every label value a handle can emit is registered with it (at zero), so a dashboard sees
//! `keel_bulkhead_rejected_total{reason="full"} 0` before the first rejection rather than no
//! series at all (the Prometheus advice on labelled counters). A server registers its
//! `keel_accept_errors_total` kinds when it starts serving.
//!
//! Cost: registration happens once per handle (and per `.named(..)`); after it, each event is
//! an atomic increment on a cached handle: nothing is allocated or looked up on the hot path.

use metrics::{Counter, Gauge, SharedString};

use super::Name;
use crate::breaker::State;
use crate::bulkhead::RejectReason;

/// `keel_breaker_state`.
pub const BREAKER_STATE: &str = "keel_breaker_state";
/// `keel_breaker_calls_total`.
pub const BREAKER_CALLS: &str = "keel_breaker_calls_total";
/// `keel_breaker_transitions_total`.
pub const BREAKER_TRANSITIONS: &str = "keel_breaker_transitions_total";
/// `keel_retry_attempts_total`.
pub const RETRY_ATTEMPTS: &str = "keel_retry_attempts_total";
/// `keel_retry_retries_total`.
pub const RETRY_RETRIES: &str = "keel_retry_retries_total";
/// `keel_retry_gave_up_total`.
pub const RETRY_GAVE_UP: &str = "keel_retry_gave_up_total";
/// `keel_retry_budget_exhausted_total`.
pub const RETRY_BUDGET_EXHAUSTED: &str = "keel_retry_budget_exhausted_total";
/// `keel_rate_allowed_total`.
pub const RATE_ALLOWED: &str = "keel_rate_allowed_total";
/// `keel_rate_limited_total`.
pub const RATE_LIMITED: &str = "keel_rate_limited_total";
/// `keel_bulkhead_in_flight`.
pub const BULKHEAD_IN_FLIGHT: &str = "keel_bulkhead_in_flight";
/// `keel_bulkhead_queued`.
pub const BULKHEAD_QUEUED: &str = "keel_bulkhead_queued";
/// `keel_bulkhead_admitted_total`.
pub const BULKHEAD_ADMITTED: &str = "keel_bulkhead_admitted_total";
/// `keel_bulkhead_rejected_total`.
pub const BULKHEAD_REJECTED: &str = "keel_bulkhead_rejected_total";
/// `keel_connections_active`.
pub const CONNECTIONS_ACTIVE: &str = "keel_connections_active";
/// `keel_connections_accepted_total`.
pub const CONNECTIONS_ACCEPTED: &str = "keel_connections_accepted_total";
/// `keel_accept_errors_total`.
pub const ACCEPT_ERRORS: &str = "keel_accept_errors_total";
/// `keel_shutdown_phase`.
pub const SHUTDOWN_PHASE: &str = "keel_shutdown_phase";
/// `keel_request_timeouts_total`.
pub const REQUEST_TIMEOUTS: &str = "keel_request_timeouts_total";

/// Every metric name of the [table](self), in its order.
pub const ALL: &[&str] = &[
    BREAKER_STATE,
    BREAKER_CALLS,
    BREAKER_TRANSITIONS,
    RETRY_ATTEMPTS,
    RETRY_RETRIES,
    RETRY_GAVE_UP,
    RETRY_BUDGET_EXHAUSTED,
    RATE_ALLOWED,
    RATE_LIMITED,
    BULKHEAD_IN_FLIGHT,
    BULKHEAD_QUEUED,
    BULKHEAD_ADMITTED,
    BULKHEAD_REJECTED,
    CONNECTIONS_ACTIVE,
    CONNECTIONS_ACCEPTED,
    ACCEPT_ERRORS,
    SHUTDOWN_PHASE,
    REQUEST_TIMEOUTS,
];

/// Gives every metric of the [table](self) its help text (and unit) on the installed recorder.
/// Optional; call it once, after installing the recorder.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!(
        BREAKER_STATE,
        "Circuit breaker state: 0 closed, 1 open, 2 half-open, 3 forced open, 4 disabled"
    );
    describe_counter!(
        BREAKER_CALLS,
        "Calls through a circuit breaker, by outcome (success, failure, ignored, rejected)"
    );
    describe_counter!(
        BREAKER_TRANSITIONS,
        "Circuit breaker state transitions, by the state entered"
    );
    describe_counter!(RETRY_ATTEMPTS, "Attempts made, first attempts included");
    describe_counter!(RETRY_RETRIES, "Retries made (attempts after the first)");
    describe_counter!(
        RETRY_GAVE_UP,
        "Retried operations that ended in an error, by reason"
    );
    describe_counter!(
        RETRY_BUDGET_EXHAUSTED,
        "Retries refused by the retry budget"
    );
    describe_counter!(RATE_ALLOWED, "Requests a rate limiter admitted");
    describe_counter!(RATE_LIMITED, "Requests a rate limiter refused or made wait");
    describe_gauge!(BULKHEAD_IN_FLIGHT, "Calls holding a bulkhead slot");
    describe_gauge!(BULKHEAD_QUEUED, "Callers waiting in a bulkhead's queue");
    describe_counter!(BULKHEAD_ADMITTED, "Calls given a bulkhead slot");
    describe_counter!(BULKHEAD_REJECTED, "Calls a bulkhead shed, by reason");
    describe_gauge!(CONNECTIONS_ACTIVE, "Connections being served");
    describe_counter!(CONNECTIONS_ACCEPTED, "Connections admitted by the server");
    describe_counter!(ACCEPT_ERRORS, "Accept errors, by kind");
    describe_gauge!(
        SHUTDOWN_PHASE,
        "Server phase: 0 running, 1 draining, 2 stopped"
    );
    describe_counter!(
        REQUEST_TIMEOUTS,
        "Requests given up at their read deadline, by part (header, body)"
    );
}

/// The `name` label's value, without copying the text.
pub(crate) fn label(name: &Name) -> SharedString {
    match (name.as_static(), name.as_shared()) {
        (Some(s), _) => SharedString::const_str(s),
        (None, Some(arc)) => SharedString::from_shared(alloc::sync::Arc::clone(arc)),
        // A name is one or the other; this arm only keeps the match total.
        (None, None) => SharedString::from_owned(alloc::string::String::from(name.as_str())),
    }
}

/// The gauge value of a breaker state (see the [table](self)).
#[must_use]
pub const fn breaker_state_value(state: State) -> f64 {
    match state {
        State::Closed => 0.0,
        State::Open => 1.0,
        State::HalfOpen => 2.0,
        State::ForcedOpen => 3.0,
        State::Disabled => 4.0,
    }
}

/// A handle's registered series, made at its first use (see the [module docs](self)).
pub(crate) struct Lazy<M> {
    cell: std::sync::OnceLock<M>,
}

impl<M> Lazy<M> {
    pub(crate) fn new() -> alloc::sync::Arc<Self> {
        alloc::sync::Arc::new(Lazy {
            cell: std::sync::OnceLock::new(),
        })
    }

    pub(crate) fn get(&self, name: &Name, register: impl FnOnce(SharedString) -> M) -> &M {
        self.cell.get_or_init(|| register(label(name)))
    }
}

/// A breaker's series.
pub(crate) struct BreakerMetrics {
    pub(crate) state: Gauge,
    pub(crate) success: Counter,
    pub(crate) failure: Counter,
    pub(crate) ignored: Counter,
    pub(crate) rejected: Counter,
    /// `keel_breaker_transitions_total`, by [`state_index`].
    transitions: [Counter; 5],
}

const STATES: [State; 5] = [
    State::Closed,
    State::Open,
    State::HalfOpen,
    State::ForcedOpen,
    State::Disabled,
];

const fn state_index(state: State) -> usize {
    match state {
        State::Closed => 0,
        State::Open => 1,
        State::HalfOpen => 2,
        State::ForcedOpen => 3,
        State::Disabled => 4,
    }
}

impl BreakerMetrics {
    pub(crate) fn register(name: SharedString) -> Self {
        let calls = |outcome: &'static str| metrics::counter!(BREAKER_CALLS, "name" => name.clone(), "outcome" => outcome);
        BreakerMetrics {
            state: metrics::gauge!(BREAKER_STATE, "name" => name.clone()),
            success: calls("success"),
            failure: calls("failure"),
            ignored: calls("ignored"),
            rejected: calls("rejected"),
            transitions: STATES.map(|to| {
                metrics::counter!(BREAKER_TRANSITIONS, "name" => name.clone(), "to" => to.as_str())
            }),
        }
    }

    pub(crate) fn outcome(&self, outcome: crate::breaker::Outcome) {
        use crate::breaker::Outcome;
        match outcome {
            Outcome::Success => self.success.increment(1),
            Outcome::Failure => self.failure.increment(1),
            Outcome::Ignored => self.ignored.increment(1),
        }
    }

    pub(crate) fn transition(&self, to: State) {
        self.state.set(breaker_state_value(to));
        if let Some(c) = self.transitions.get(state_index(to)) {
            c.increment(1);
        }
    }
}

/// A retry's series.
pub(crate) struct RetryMetrics {
    pub(crate) attempts: Counter,
    pub(crate) retries: Counter,
    pub(crate) budget_exhausted: Counter,
    /// `keel_retry_gave_up_total`, by [`RETRY_REASONS`].
    gave_up: [Counter; 4],
    name: SharedString,
}

const RETRY_REASONS: [&str; 4] = [
    "max-attempts",
    "max-elapsed",
    "budget-exhausted",
    "not-retryable",
];

impl RetryMetrics {
    pub(crate) fn register(name: SharedString) -> Self {
        RetryMetrics {
            attempts: metrics::counter!(RETRY_ATTEMPTS, "name" => name.clone()),
            retries: metrics::counter!(RETRY_RETRIES, "name" => name.clone()),
            budget_exhausted: metrics::counter!(RETRY_BUDGET_EXHAUSTED, "name" => name.clone()),
            gave_up: RETRY_REASONS.map(|reason| {
                metrics::counter!(RETRY_GAVE_UP, "name" => name.clone(), "reason" => reason)
            }),
            name,
        }
    }

    /// A run that gave up, by [`StopReason::as_str`](super::retry::StopReason::as_str).
    pub(crate) fn gave_up(&self, reason: &'static str) {
        let cached = RETRY_REASONS.iter().zip(&self.gave_up);
        match cached.into_iter().find(|(r, _)| **r == reason) {
            Some((_, c)) => c.increment(1),
            // A reason added later: looked up (the error path).
            None => {
                metrics::counter!(RETRY_GAVE_UP, "name" => self.name.clone(), "reason" => reason)
                    .increment(1);
            }
        }
    }
}

/// A rate limiter's series (plain or keyed).
pub(crate) struct RateMetrics {
    pub(crate) allowed: Counter,
    pub(crate) limited: Counter,
}

impl RateMetrics {
    pub(crate) fn register(name: SharedString) -> Self {
        RateMetrics {
            allowed: metrics::counter!(RATE_ALLOWED, "name" => name.clone()),
            limited: metrics::counter!(RATE_LIMITED, "name" => name),
        }
    }

    pub(crate) fn record<T, E>(&self, r: &Result<T, E>) {
        match r {
            Ok(_) => self.allowed.increment(1),
            Err(_) => self.limited.increment(1),
        }
    }
}

/// A bulkhead's series.
pub(crate) struct BulkheadMetrics {
    pub(crate) in_flight: Gauge,
    pub(crate) queued: Gauge,
    pub(crate) admitted: Counter,
    /// `keel_bulkhead_rejected_total`, by [`BULKHEAD_REASONS`].
    rejected: [Counter; 3],
    name: SharedString,
}

const BULKHEAD_REASONS: [RejectReason; 3] = [
    RejectReason::Full,
    RejectReason::QueueFull,
    RejectReason::WaitedTooLong,
];

impl BulkheadMetrics {
    pub(crate) fn register(name: SharedString) -> Self {
        BulkheadMetrics {
            in_flight: metrics::gauge!(BULKHEAD_IN_FLIGHT, "name" => name.clone()),
            queued: metrics::gauge!(BULKHEAD_QUEUED, "name" => name.clone()),
            admitted: metrics::counter!(BULKHEAD_ADMITTED, "name" => name.clone()),
            rejected: BULKHEAD_REASONS.map(|reason| {
                metrics::counter!(BULKHEAD_REJECTED, "name" => name.clone(), "reason" => reason.as_str())
            }),
            name,
        }
    }

    pub(crate) fn occupancy(&self, stats: &crate::bulkhead::BulkheadStats) {
        self.in_flight.set(stats.in_flight as f64);
        self.queued.set(stats.queue_len as f64);
    }

    /// A shed call.
    pub(crate) fn rejected(&self, reason: RejectReason) {
        let cached = BULKHEAD_REASONS.iter().zip(&self.rejected);
        match cached.into_iter().find(|(r, _)| **r == reason) {
            Some((_, c)) => c.increment(1),
            // `AlreadyCompleted` (a future polled after it resolved) or a reason added later.
            None => {
                metrics::counter!(BULKHEAD_REJECTED, "name" => self.name.clone(), "reason" => reason.as_str())
                    .increment(1);
            }
        }
    }
}

/// A server's series.
pub(crate) struct ServerMetrics {
    pub(crate) active: Gauge,
    pub(crate) accepted: Counter,
    pub(crate) phase: Gauge,
}

impl ServerMetrics {
    pub(crate) fn register(name: SharedString) -> Self {
        ServerMetrics {
            active: metrics::gauge!(CONNECTIONS_ACTIVE, "name" => name.clone()),
            accepted: metrics::counter!(CONNECTIONS_ACCEPTED, "name" => name.clone()),
            phase: metrics::gauge!(SHUTDOWN_PHASE, "name" => name.clone()),
        }
        .with_accept_error_kinds(name)
    }

    /// Registers the accept-error kinds at zero (see the [module docs](self)).
    fn with_accept_error_kinds(self, name: SharedString) -> Self {
        for kind in ACCEPT_ERROR_KINDS {
            let _ = metrics::counter!(ACCEPT_ERRORS, "name" => name.clone(), "kind" => kind);
        }
        self
    }
}

/// A server's request timeouts, by part (both registered at zero).
pub(crate) struct RequestMetrics {
    pub(crate) header: Counter,
    pub(crate) body: Counter,
}

impl RequestMetrics {
    pub(crate) fn register(name: SharedString) -> Self {
        RequestMetrics {
            header: metrics::counter!(REQUEST_TIMEOUTS, "name" => name.clone(), "part" => "header"),
            body: metrics::counter!(REQUEST_TIMEOUTS, "name" => name, "part" => "body"),
        }
    }
}

const ACCEPT_ERROR_KINDS: [&str; 4] = ["per-connection", "shortage", "fatal", "unknown"];

/// An accept error (rare: looked up each time).
pub(crate) fn accept_error(name: &Name, kind: crate::accept::AcceptErrorKind) {
    use crate::accept::AcceptErrorKind;
    let kind = match kind {
        AcceptErrorKind::PerConnection => "per-connection",
        AcceptErrorKind::Shortage(_) => "shortage",
        AcceptErrorKind::Fatal => "fatal",
        _ => "unknown",
    };
    metrics::counter!(ACCEPT_ERRORS, "name" => label(name), "kind" => kind).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_in_the_docs_lists_every_name() {
        let docs = include_str!("metrics.rs");
        for name in ALL {
            assert!(
                docs.contains(&alloc::format!("//! | `{name}` |")),
                "{name} is missing from the table"
            );
        }
        let rows = docs
            .lines()
            .filter(|l| l.starts_with("//! | `keel_"))
            .count();
        assert_eq!(rows, ALL.len(), "a row of the table is missing from ALL");
    }
}
