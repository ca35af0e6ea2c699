//! Time and value generators shared by every harness.

use core::time::Duration;

use arbitrary::Arbitrary;
use keel_core::time::Instant;

/// How the caller's clock moves before an operation: forward a little or a lot, not at all,
/// backwards, or to either end of time.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Step {
    /// Forward by this many nanoseconds.
    Forward(u32),
    /// Forward by this many milliseconds.
    Millis(u16),
    /// Forward by this many seconds.
    Leap(u16),
    /// The same instant again.
    Stall,
    /// Backward by this many nanoseconds.
    Back(u32),
    /// Backward by this many seconds.
    BackLeap(u16),
    /// To `Instant::MAX`.
    ToEnd,
    /// To the epoch.
    ToEpoch,
}

/// A duration drawn from the interesting places: small, human-sized, zero and the maximum.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Dur {
    /// Exactly this many nanoseconds.
    Nanos(u64),
    /// A few nanoseconds (around rounding boundaries).
    Tiny(u8),
    /// Milliseconds.
    Millis(u16),
    /// Seconds.
    Secs(u16),
    /// Zero.
    Zero,
    /// `Duration::MAX`.
    Max,
}

impl Dur {
    /// The duration.
    pub fn get(self) -> Duration {
        match self {
            Dur::Nanos(n) => Duration::from_nanos(n),
            Dur::Tiny(n) => Duration::from_nanos(u64::from(n)),
            Dur::Millis(m) => Duration::from_millis(u64::from(m)),
            Dur::Secs(s) => Duration::from_secs(u64::from(s)),
            Dur::Zero => Duration::ZERO,
            Dur::Max => Duration::MAX,
        }
    }
}

/// A start instant: anywhere, including both ends of time.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Start {
    /// The epoch.
    Epoch,
    /// This many seconds after the epoch.
    Secs(u32),
    /// Any instant.
    Nanos(u64),
    /// Near the end of time.
    NearEnd(u32),
}

impl Start {
    /// The instant, in nanoseconds.
    pub fn nanos(self) -> u64 {
        match self {
            Start::Epoch => 0,
            Start::Secs(s) => u64::from(s) * 1_000_000_000,
            Start::Nanos(n) => n,
            Start::NearEnd(n) => u64::MAX - u64::from(n),
        }
    }
}

/// The caller's clock (which may go backwards) and the newest instant a machine has seen.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// What the caller passes as `now`.
    pub caller: u64,
    /// The newest `now` passed so far: what a machine clamps to.
    pub newest: u64,
    /// `newest` before the last move.
    prev: u64,
}

impl Clock {
    /// A clock at `start`.
    pub fn new(start: u64) -> Clock {
        Clock {
            caller: start,
            newest: start,
            prev: start,
        }
    }

    /// Moves the caller's clock; returns the `now` to pass.
    pub fn step(&mut self, s: Step) -> Instant {
        self.prev = self.newest;
        self.caller = match s {
            Step::Forward(n) => self.caller.saturating_add(u64::from(n)),
            Step::Millis(m) => self.caller.saturating_add(u64::from(m) * 1_000_000),
            Step::Leap(secs) => self
                .caller
                .saturating_add(u64::from(secs).saturating_mul(1_000_000_000)),
            Step::Stall => self.caller,
            Step::Back(n) => self.caller.saturating_sub(u64::from(n)),
            Step::BackLeap(secs) => self
                .caller
                .saturating_sub(u64::from(secs).saturating_mul(1_000_000_000)),
            Step::ToEnd => u64::MAX,
            Step::ToEpoch => 0,
        };
        self.newest = self.newest.max(self.caller);
        Instant::from_nanos(self.caller)
    }

    /// Jumps the caller's clock to `t` (e.g. a deadline the machine asked for).
    pub fn jump(&mut self, t: Instant) -> Instant {
        self.prev = self.newest;
        self.caller = t.as_nanos();
        self.newest = self.newest.max(self.caller);
        t
    }

    /// The operation did not hand `now` to the machine after all (nothing to act on): the
    /// machine's newest instant is what it was before the last move.
    pub fn unseen(&mut self) {
        self.newest = self.prev;
    }

    /// The newest instant seen.
    pub fn newest(&self) -> Instant {
        Instant::from_nanos(self.newest)
    }
}

/// Most operations one input may drive (keeps every execution fast).
pub const MAX_OPS: usize = 2048;

/// Whether an operation passes `now` to the machine (and so may move its clock). Operations
/// that do not (polling events, peeking, jumping to a deadline) leave the clock where it is, so
/// the harness's idea of "the newest instant the machine has seen" stays exact.
pub trait Timed {
    /// `true` if the operation hands `now` to the machine.
    fn timed(&self) -> bool;
}
