//! Fuzz target for the accept-loop machine: arbitrary configs and operation sequences (time
//! jumping forward, stalling, going back, hitting the end of time) with the machine's
//! invariants asserted after every step.
//!
//! `cargo +nightly fuzz run accept`
#![no_main]

use core::time::Duration;

use arbitrary::Arbitrary;
use keel_core::accept::{
    classify_os_error, AcceptDecision, AcceptErrorKind, AcceptEvent, AcceptLoop, AcceptLoopConfig,
    Platform, Shortage, EVENT_QUEUE_CAPACITY,
};
use keel_core::time::Instant;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Step {
    /// Forward by this many nanoseconds.
    Forward(u32),
    /// Forward by this many seconds.
    Leap(u16),
    Stall,
    /// Backward by this many nanoseconds.
    Back(u32),
    ToEnd,
    ToEpoch,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Kind {
    PerConnection,
    Shortage(u8),
    Fatal,
    /// A raw code classified for a platform.
    Raw(i32, u8),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Op {
    Accepted(Step),
    Error(Step, Kind),
    Timeout(Step),
    WaitOut,
    Poll,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Dur {
    Nanos(u64),
    Millis(u16),
    Zero,
    Max,
}

#[derive(Arbitrary, Debug)]
struct Input {
    initial: Dur,
    max: Dur,
    growth_percent: u32,
    report_interval: Dur,
    start: u64,
    ops: Vec<Op>,
}

fn dur(d: Dur) -> Duration {
    match d {
        Dur::Nanos(n) => Duration::from_nanos(n),
        Dur::Millis(m) => Duration::from_millis(u64::from(m)),
        Dur::Zero => Duration::ZERO,
        Dur::Max => Duration::MAX,
    }
}

fn step(t: u64, s: Step) -> u64 {
    match s {
        Step::Forward(n) => t.saturating_add(u64::from(n)),
        Step::Leap(secs) => t.saturating_add(u64::from(secs).saturating_mul(1_000_000_000)),
        Step::Stall => t,
        Step::Back(n) => t.saturating_sub(u64::from(n)),
        Step::ToEnd => u64::MAX,
        Step::ToEpoch => 0,
    }
}

fn kind(k: Kind) -> AcceptErrorKind {
    match k {
        Kind::PerConnection => AcceptErrorKind::PerConnection,
        Kind::Shortage(s) => AcceptErrorKind::Shortage(match s % 4 {
            0 => Shortage::ProcessFileLimit,
            1 => Shortage::SystemFileLimit,
            2 => Shortage::Buffers,
            _ => Shortage::Memory,
        }),
        Kind::Fatal => AcceptErrorKind::Fatal,
        Kind::Raw(code, p) => {
            let platform = match p % 3 {
                0 => Platform::Linux,
                1 => Platform::Bsd,
                _ => Platform::Windows,
            };
            classify_os_error(code, platform)
        }
    }
}

fn count(e: &AcceptEvent) -> u64 {
    match *e {
        AcceptEvent::Shortage { suppressed, .. } => suppressed.saturating_add(1),
        AcceptEvent::Resumed { suppressed, .. } => suppressed,
        _ => 0,
    }
}

fuzz_target!(|input: Input| {
    // Invalid configs must be rejected, never panic; valid ones are driven.
    let Ok(config) = AcceptLoopConfig::builder()
        .initial_pause(dur(input.initial))
        .max_pause(dur(input.max))
        .growth_percent(input.growth_percent)
        .report_interval(dur(input.report_interval))
        .build()
    else {
        return;
    };
    let mut machine = AcceptLoop::new(config, Instant::from_nanos(input.start));
    let mut newest = input.start;
    let mut caller = input.start;
    let mut counted = 0u64;
    let mut reports = 0u64;
    let mut stopped = false;

    for op in input.ops.iter().take(4096) {
        match *op {
            Op::Accepted(s) => {
                caller = step(caller, s);
                newest = newest.max(caller);
                machine.on_accepted(Instant::from_nanos(caller));
                if !stopped {
                    assert!(!machine.is_paused(Instant::from_nanos(newest)));
                    assert_eq!(machine.next_pause(), config.initial_pause());
                }
            }
            Op::Error(s, k) => {
                caller = step(caller, s);
                newest = newest.max(caller);
                let now = Instant::from_nanos(newest);
                let k = kind(k);
                let decision = machine.on_error(Instant::from_nanos(caller), k);
                if stopped {
                    assert_eq!(decision, AcceptDecision::Stop);
                }
                match decision {
                    AcceptDecision::PauseUntil(t) => {
                        assert!(matches!(k, AcceptErrorKind::Shortage(_)));
                        assert!(t >= now, "PauseUntil before now");
                        assert!(t - now <= config.max_pause(), "pause above max");
                        assert_eq!(machine.poll_timeout(), Some(t));
                    }
                    AcceptDecision::Continue => {
                        assert_eq!(k, AcceptErrorKind::PerConnection);
                    }
                    AcceptDecision::Stop => {
                        assert!(stopped || k == AcceptErrorKind::Fatal);
                        stopped = true;
                    }
                }
            }
            Op::Timeout(s) => {
                caller = step(caller, s);
                newest = newest.max(caller);
                machine.handle_timeout(Instant::from_nanos(caller));
                if let Some(t) = machine.poll_timeout() {
                    assert!(t > Instant::from_nanos(caller), "poll_timeout not after t");
                    assert!(t > Instant::from_nanos(newest));
                }
            }
            Op::WaitOut => {
                if let Some(t) = machine.poll_timeout() {
                    caller = t.as_nanos();
                    newest = newest.max(caller);
                    machine.handle_timeout(t);
                    assert!(machine.poll_timeout().is_none_or(|u| u > t));
                }
            }
            Op::Poll => {
                let mut n = 0;
                while let Some(e) = machine.poll_event() {
                    n += 1;
                    counted = counted.saturating_add(count(&e));
                    if let AcceptEvent::Shortage { pause, .. } = e {
                        reports += 1;
                        assert!(pause <= config.max_pause());
                    }
                }
                assert!(n <= EVENT_QUEUE_CAPACITY + 1, "event queue grew");
            }
        }
        assert_eq!(machine.is_stopped(), stopped);
        if stopped {
            assert_eq!(machine.poll_timeout(), None);
        }
        let s = machine.stats();
        assert_eq!(s.reports + s.suppressed, s.shortages);
        assert!(s.unreported <= s.suppressed);
        assert!(s.fatal <= 1);
        assert!(s.pauses <= s.shortages);
    }

    while let Some(e) = machine.poll_event() {
        counted = counted.saturating_add(count(&e));
        if let AcceptEvent::Shortage { .. } = e {
            reports += 1;
        }
    }
    let s = machine.stats();
    assert_eq!(
        counted + s.unreported,
        s.shortages,
        "a shortage was lost or double-counted"
    );
    assert_eq!(reports, s.reports);
});
