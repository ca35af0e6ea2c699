//! Reference models of keel-core's machines: each restates one machine's documented rules in
//! the plainest code that computes them (recounting its history instead of keeping the
//! machine's compact state), so a test can run it beside the real machine and compare every
//! answer. One model per machine, shared by the proptests (`core/tests/*_props.rs`) and the
//! fuzz targets (`fuzz/src/*.rs`).
//!
//! Every model clamps time as the machines do: a `now` older than the newest seen counts as the
//! newest. Feed a model the same calls, with the same `now`, as the machine. (The rate limiters
//! do not clamp, but decide an older `now` as given: feed them the clamped instant too.)

pub mod accept;
pub mod adaptive;
pub mod backlog;
pub mod backoff;
pub mod breaker;
pub mod budget;
pub mod bulkhead;
pub mod conn;
pub mod gcra;
pub mod keyed;
pub mod leak;
pub mod limit;
pub mod shutdown;
