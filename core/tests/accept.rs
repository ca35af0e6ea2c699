//! Scenario tests for the accept-error classification and the accept-loop machine, on a
//! simulated clock.

use core::time::Duration;

#[cfg(all(feature = "std", target_os = "linux"))]
use keel_core::accept::classify_io_error;
use keel_core::accept::{
    classify_os_error, errno_name, AcceptConfig, AcceptDecision, AcceptErrorKind, AcceptEvent,
    AcceptLoop, Platform, Shortage, UnknownErrorPolicy, EVENT_QUEUE_CAPACITY,
};
use keel_core::time::Instant;
use keel_core::ConfigError;

const EMFILE: AcceptErrorKind = AcceptErrorKind::Shortage(Shortage::ProcessFileLimit);
const PER_CONN: AcceptErrorKind = AcceptErrorKind::PerConnection;
const FATAL: AcceptErrorKind = AcceptErrorKind::Fatal;
const UNKNOWN: AcceptErrorKind = AcceptErrorKind::Unknown;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn at_ms(n: u64) -> Instant {
    Instant::from_millis(n)
}

fn drain(acceptor: &mut AcceptLoop) -> Vec<AcceptEvent> {
    core::iter::from_fn(|| acceptor.poll_event()).collect()
}

/// Shortages accounted for by events: 1 per `Shortage` event plus every `suppressed` field.
fn event_count(events: &[AcceptEvent]) -> u64 {
    events
        .iter()
        .map(|e| match *e {
            AcceptEvent::Shortage { suppressed, .. } => 1 + suppressed,
            AcceptEvent::Resumed { suppressed, .. } => suppressed,
            _ => 0,
        })
        .sum()
}

// ---------------------------------------------------------------- classification

#[test]
fn linux_codes_classify_as_design_3_1_says() {
    let per_conn = [
        1, 4, 11, 64, 71, 92, 93, 94, 95, 100, 101, 103, 104, 110, 111, 112, 113,
    ];
    for code in per_conn {
        assert_eq!(
            classify_os_error(code, Platform::Linux),
            PER_CONN,
            "code {code}"
        );
    }
    assert_eq!(classify_os_error(24, Platform::Linux), EMFILE);
    assert_eq!(
        classify_os_error(23, Platform::Linux),
        AcceptErrorKind::Shortage(Shortage::SystemFileLimit)
    );
    assert_eq!(
        classify_os_error(105, Platform::Linux),
        AcceptErrorKind::Shortage(Shortage::Buffers)
    );
    assert_eq!(
        classify_os_error(12, Platform::Linux),
        AcceptErrorKind::Shortage(Shortage::Memory)
    );
    assert_eq!(
        classify_os_error(63, Platform::Linux),
        AcceptErrorKind::Shortage(Shortage::Streams)
    );
    for code in [9, 14, 22, 88] {
        assert_eq!(
            classify_os_error(code, Platform::Linux),
            FATAL,
            "code {code}"
        );
    }
    for code in [0, -1, 2, 13, 55, 10024, i32::MAX, i32::MIN] {
        assert_eq!(
            classify_os_error(code, Platform::Linux),
            UNKNOWN,
            "code {code}"
        );
    }
    assert_eq!(errno_name(104, Platform::Linux), Some("ECONNRESET"));
    assert_eq!(errno_name(64, Platform::Linux), Some("ENONET"));
}

#[test]
fn bsd_codes_classify_with_macos_and_freebsd_eproto() {
    let per_conn = [
        1, 4, 35, 42, 50, 51, 53, 54, 60, 61, 64, 65, 92, 95, 96, 100,
    ];
    for code in per_conn {
        assert_eq!(
            classify_os_error(code, Platform::Bsd),
            PER_CONN,
            "code {code}"
        );
    }
    assert_eq!(classify_os_error(24, Platform::Bsd), EMFILE);
    assert_eq!(
        classify_os_error(23, Platform::Bsd),
        AcceptErrorKind::Shortage(Shortage::SystemFileLimit)
    );
    assert_eq!(
        classify_os_error(55, Platform::Bsd),
        AcceptErrorKind::Shortage(Shortage::Buffers)
    );
    assert_eq!(
        classify_os_error(12, Platform::Bsd),
        AcceptErrorKind::Shortage(Shortage::Memory)
    );
    // 105 is ENOBUFS on Linux but not on the BSDs; 11 is EAGAIN on Linux, EDEADLK on BSD.
    for code in [9, 14, 22, 38, 45, 102] {
        assert_eq!(classify_os_error(code, Platform::Bsd), FATAL, "code {code}");
    }
    for code in [105, 11, 0, -7] {
        assert_eq!(
            classify_os_error(code, Platform::Bsd),
            UNKNOWN,
            "code {code}"
        );
    }
    assert_eq!(errno_name(100, Platform::Bsd), Some("EPROTO"));
    assert_eq!(errno_name(92, Platform::Bsd), Some("EPROTO"));
    assert_eq!(errno_name(53, Platform::Bsd), Some("ECONNABORTED"));
}

#[test]
fn windows_uses_wsa_codes_and_24_is_not_emfile() {
    assert_eq!(classify_os_error(10024, Platform::Windows), EMFILE);
    assert_ne!(classify_os_error(24, Platform::Windows), EMFILE);
    assert_eq!(classify_os_error(24, Platform::Windows), UNKNOWN);
    assert_eq!(
        classify_os_error(10055, Platform::Windows),
        AcceptErrorKind::Shortage(Shortage::Buffers)
    );
    for code in [8, 14] {
        assert_eq!(
            classify_os_error(code, Platform::Windows),
            AcceptErrorKind::Shortage(Shortage::Memory)
        );
    }
    for code in [10054, 10053, 10035, 10004, 10050, 10061, 10060, 64, 1236] {
        assert_eq!(
            classify_os_error(code, Platform::Windows),
            PER_CONN,
            "code {code}"
        );
    }
    for code in [10009, 10022, 10038, 10014, 10093] {
        assert_eq!(
            classify_os_error(code, Platform::Windows),
            FATAL,
            "code {code}"
        );
    }
    for code in [104, 11, 0] {
        assert_eq!(
            classify_os_error(code, Platform::Windows),
            UNKNOWN,
            "code {code}"
        );
    }
    assert_eq!(errno_name(10024, Platform::Windows), Some("WSAEMFILE"));
    assert_eq!(errno_name(24, Platform::Windows), None);
}

#[test]
fn every_table_has_unique_codes() {
    for platform in [Platform::Linux, Platform::Bsd, Platform::Windows] {
        let table = platform.errno_table();
        for (i, a) in table.iter().enumerate() {
            for b in &table[i + 1..] {
                assert_ne!(a.code, b.code, "{platform:?}: {} and {}", a.name, b.name);
            }
            assert_eq!(classify_os_error(a.code, platform), a.kind);
        }
    }
}

#[test]
fn shortage_names_and_hints() {
    assert_eq!(Shortage::ProcessFileLimit.as_str(), "EMFILE");
    assert_eq!(Shortage::SystemFileLimit.as_str(), "ENFILE");
    assert_eq!(Shortage::Buffers.as_str(), "ENOBUFS");
    assert_eq!(Shortage::Memory.as_str(), "ENOMEM");
    assert_eq!(Shortage::Buffers.to_string(), "ENOBUFS");
    let hint = Shortage::ProcessFileLimit.hint();
    for needle in [
        "ulimit -n",
        "RLIMIT_NOFILE",
        "LimitNOFILE",
        "max connections",
    ] {
        assert!(hint.contains(needle), "{needle} missing from {hint}");
    }
    assert!(Shortage::SystemFileLimit.hint().contains("fs.file-max"));
    assert_eq!(EMFILE.shortage(), Some(Shortage::ProcessFileLimit));
    assert_eq!(PER_CONN.shortage(), None);
}

#[cfg(all(
    feature = "std",
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
#[test]
fn host_is_linux_and_io_errors_use_the_raw_code() {
    use keel_core::accept::classify_io_error;
    use std::io::Error;

    assert_eq!(Platform::HOST, Some(Platform::Linux));
    assert_eq!(classify_io_error(&Error::from_raw_os_error(24)), EMFILE);
    assert_eq!(
        classify_io_error(&Error::from_raw_os_error(105)),
        AcceptErrorKind::Shortage(Shortage::Buffers)
    );
    assert_eq!(classify_io_error(&Error::from_raw_os_error(71)), PER_CONN); // EPROTO
    assert_eq!(classify_io_error(&Error::from_raw_os_error(104)), PER_CONN);
    assert_eq!(classify_io_error(&Error::from_raw_os_error(9)), FATAL);
}

#[cfg(feature = "std")]
#[test]
fn io_errors_without_a_raw_code_fall_back_on_the_kind() {
    use keel_core::accept::classify_io_error;
    use std::io::{Error, ErrorKind};

    for kind in [
        ErrorKind::ConnectionAborted,
        ErrorKind::ConnectionReset,
        ErrorKind::ConnectionRefused,
        ErrorKind::TimedOut,
        ErrorKind::Interrupted,
        ErrorKind::WouldBlock,
    ] {
        assert_eq!(classify_io_error(&Error::from(kind)), PER_CONN, "{kind:?}");
        assert_eq!(classify_io_error(&Error::new(kind, "wrapped")), PER_CONN);
    }
    assert_eq!(
        classify_io_error(&Error::from(ErrorKind::OutOfMemory)),
        AcceptErrorKind::Shortage(Shortage::Memory)
    );
    for kind in [ErrorKind::InvalidInput, ErrorKind::Unsupported] {
        assert_eq!(classify_io_error(&Error::from(kind)), FATAL, "{kind:?}");
    }
    for kind in [ErrorKind::Other, ErrorKind::PermissionDenied] {
        assert_eq!(classify_io_error(&Error::from(kind)), UNKNOWN, "{kind:?}");
    }
}

// ---------------------------------------------------------------- config

#[test]
fn defaults_are_50ms_doubling_to_1s_reporting_every_second() {
    let c = AcceptConfig::default();
    assert_eq!(c.initial_pause(), ms(50));
    assert_eq!(c.max_pause(), ms(1000));
    assert_eq!(c.growth_percent(), 200);
    assert_eq!(c.report_interval(), ms(1000));
    assert_eq!(AcceptConfig::builder().build(), Ok(c));
}

#[test]
fn builder_rejects_zero_inverted_and_shrinking_pauses() {
    let b = AcceptConfig::builder();
    assert_eq!(
        b.initial_pause(Duration::ZERO).build(),
        Err(ConfigError::Zero {
            field: "initial_pause"
        })
    );
    assert_eq!(
        b.max_pause(Duration::ZERO).build(),
        Err(ConfigError::Zero { field: "max_pause" })
    );
    assert_eq!(
        AcceptConfig::fixed_pause(Duration::ZERO).build(),
        Err(ConfigError::Zero {
            field: "initial_pause"
        })
    );
    assert_eq!(
        b.initial_pause(ms(2000)).build(),
        Err(ConfigError::InvertedRange {
            min: "initial_pause",
            max: "max_pause"
        })
    );
    assert!(matches!(
        b.growth_percent(99).build(),
        Err(ConfigError::OutOfRange {
            field: "growth_percent",
            ..
        })
    ));
    assert!(b.growth_percent(100).build().is_ok());
    assert!(b.report_interval(Duration::ZERO).build().is_ok());
    let huge = b
        .initial_pause(Duration::MAX)
        .max_pause(Duration::MAX)
        .growth_percent(u32::MAX)
        .report_interval(Duration::MAX)
        .build();
    assert!(huge.is_ok());
}

// ---------------------------------------------------------------- the machine

#[test]
fn pause_grows_on_repeated_shortages_and_resets_on_success() {
    let mut a = AcceptLoop::new(AcceptConfig::default(), Instant::ZERO);
    let mut now = at_ms(1000);
    let mut pauses = Vec::new();
    for _ in 0..7 {
        match a.on_error(now, EMFILE) {
            AcceptDecision::PauseUntil(until) => {
                pauses.push(until - now);
                assert_eq!(a.poll_timeout(), Some(until));
                assert!(a.is_paused(now));
                a.handle_timeout(until);
                assert!(!a.is_paused(until));
                assert_eq!(a.poll_timeout(), None);
                now = until;
            }
            other => panic!("expected a pause, got {other:?}"),
        }
    }
    assert_eq!(
        pauses,
        [
            ms(50),
            ms(100),
            ms(200),
            ms(400),
            ms(800),
            ms(1000),
            ms(1000)
        ]
    );
    a.on_accepted(now);
    assert_eq!(a.next_pause(), ms(50));
    assert_eq!(
        a.on_error(now, EMFILE),
        AcceptDecision::PauseUntil(now + ms(50))
    );
    let s = a.stats();
    assert_eq!(s.shortages, 8);
    assert_eq!(s.pauses, 8);
    assert_eq!(s.accepted, 1);
    assert_eq!(s.paused_total, ms(50 + 100 + 200 + 400 + 800 + 1000 + 1000));
}

#[test]
fn seed_fixed_pause_is_500ms_every_time() {
    let config = AcceptConfig::fixed_pause(ms(500)).build().unwrap();
    let mut a = AcceptLoop::new(config, Instant::ZERO);
    let mut now = Instant::ZERO;
    for _ in 0..5 {
        assert_eq!(
            a.on_error(now, EMFILE),
            AcceptDecision::PauseUntil(now + ms(500))
        );
        now += ms(500);
        a.handle_timeout(now);
    }
}

#[test]
fn per_connection_errors_continue_at_once_and_are_counted() {
    let mut a = AcceptLoop::new(AcceptConfig::default(), Instant::ZERO);
    for i in 0..3 {
        assert_eq!(a.on_error(at_ms(i), PER_CONN), AcceptDecision::Continue);
    }
    assert_eq!(a.poll_timeout(), None);
    assert_eq!(a.poll_event(), None);
    let s = a.stats();
    assert_eq!(s.per_connection_errors, 3);
    assert_eq!(s.shortages, 0);
    assert_eq!(s.pauses, 0);
}

#[test]
fn a_storm_of_a_million_emfile_yields_ten_reports_with_exact_suppressed_counts() {
    let mut a = AcceptLoop::new(AcceptConfig::default(), Instant::ZERO);
    let mut events = Vec::new();
    // 1_000_000 errors, one every 10 µs: t = 0 .. 10 s.
    for i in 0..1_000_000u64 {
        let now = Instant::from_nanos(i * 10_000);
        let decision = a.on_error(now, EMFILE);
        assert!(matches!(decision, AcceptDecision::PauseUntil(t) if t > now));
        while let Some(e) = a.poll_event() {
            events.push(e);
        }
    }
    a.on_accepted(Instant::from_secs(10));
    events.extend(drain(&mut a));

    let reports: Vec<(Instant, u64)> = events
        .iter()
        .filter_map(|e| match *e {
            AcceptEvent::Shortage {
                shortage,
                until,
                suppressed,
                pause,
            } => {
                assert_eq!(shortage, Shortage::ProcessFileLimit);
                Some((until - pause, suppressed))
            }
            _ => None,
        })
        .collect();
    assert_eq!(reports.len(), 10);
    for (k, (at, suppressed)) in reports.iter().enumerate() {
        assert_eq!(*at, Instant::from_secs(k as u64), "report {k}");
        assert_eq!(*suppressed, if k == 0 { 0 } else { 99_999 }, "report {k}");
    }
    assert_eq!(
        events.last(),
        Some(&AcceptEvent::Resumed {
            paused_for: Duration::from_secs(10),
            suppressed: 99_999
        })
    );
    assert_eq!(events.len(), 11);
    let s = a.stats();
    assert_eq!(s.shortages, 1_000_000);
    assert_eq!(s.reports, 10);
    assert_eq!(s.suppressed, 999_990);
    assert_eq!(s.unreported, 0);
    assert_eq!(s.reports + s.suppressed, s.shortages);
    assert_eq!(event_count(&events), 1_000_000);
    assert_eq!(
        s.pauses, 1,
        "the driver never waited: one long pause, extended"
    );
}

#[test]
fn a_flapping_storm_reports_once_per_interval_and_carries_unreported_counts() {
    // EMFILE, wait out the pause, one accept succeeds, EMFILE again: 100 ms per cycle.
    let mut a = AcceptLoop::new(AcceptConfig::default(), Instant::ZERO);
    let mut events = Vec::new();
    let mut now = Instant::ZERO;
    for _ in 0..30 {
        let AcceptDecision::PauseUntil(until) = a.on_error(now, EMFILE) else {
            panic!("expected a pause");
        };
        assert_eq!(until, now + ms(50), "the pause resets after each accept");
        a.handle_timeout(until);
        a.on_accepted(until);
        now = until + ms(50);
        events.extend(drain(&mut a));
    }
    // Reports at 0 s, 1 s, 2 s, each followed by its Resumed; 27 shortages suppressed.
    let expected = [
        AcceptEvent::Shortage {
            shortage: Shortage::ProcessFileLimit,
            pause: ms(50),
            until: at_ms(50),
            suppressed: 0,
        },
        AcceptEvent::Resumed {
            paused_for: ms(50),
            suppressed: 0,
        },
        AcceptEvent::Shortage {
            shortage: Shortage::ProcessFileLimit,
            pause: ms(50),
            until: at_ms(1050),
            suppressed: 9,
        },
        AcceptEvent::Resumed {
            paused_for: ms(50),
            suppressed: 0,
        },
        AcceptEvent::Shortage {
            shortage: Shortage::ProcessFileLimit,
            pause: ms(50),
            until: at_ms(2050),
            suppressed: 9,
        },
        AcceptEvent::Resumed {
            paused_for: ms(50),
            suppressed: 0,
        },
    ];
    assert_eq!(events, expected);
    let s = a.stats();
    assert_eq!(s.shortages, 30);
    assert_eq!(s.reports, 3);
    assert_eq!(s.suppressed, 27);
    assert_eq!(
        s.unreported, 9,
        "the last second's episodes wait for the next event"
    );
    assert_eq!(s.accepted, 30);
}

#[test]
fn an_unpolled_storm_with_zero_interval_stays_bounded_and_loses_no_count() {
    let config = AcceptConfig::builder()
        .report_interval(Duration::ZERO)
        .build()
        .unwrap();
    let mut a = AcceptLoop::new(config, Instant::ZERO);
    for i in 0..10_000 {
        let _ = a.on_error(Instant::from_nanos(i), EMFILE);
    }
    let events = drain(&mut a);
    assert_eq!(events.len(), EVENT_QUEUE_CAPACITY);
    let s = a.stats();
    assert_eq!(s.reports, EVENT_QUEUE_CAPACITY as u64);
    assert_eq!(s.reports + s.suppressed, 10_000);
    assert_eq!(event_count(&events), 10_000);
    // The newest events are kept as they were.
    assert_eq!(
        events.last(),
        Some(&AcceptEvent::Shortage {
            shortage: Shortage::ProcessFileLimit,
            pause: ms(1000),
            until: Instant::from_nanos(9_999) + ms(1000),
            suppressed: 0
        })
    );
    assert!(
        matches!(events[0], AcceptEvent::Shortage { suppressed, .. } if suppressed == 10_000 - 8)
    );
}

#[test]
fn fatal_stops_for_good() {
    let mut a = AcceptLoop::new(AcceptConfig::default(), Instant::ZERO);
    let _ = a.on_error(at_ms(10), EMFILE);
    assert_eq!(a.on_error(at_ms(20), FATAL), AcceptDecision::Stop);
    assert!(a.is_stopped());
    assert!(!a.is_paused(at_ms(20)));
    assert_eq!(a.poll_timeout(), None);
    for kind in [PER_CONN, EMFILE, FATAL] {
        assert_eq!(a.on_error(at_ms(30), kind), AcceptDecision::Stop);
    }
    a.on_accepted(at_ms(40));
    assert!(
        a.is_stopped(),
        "an accept after Stop does not restart the loop"
    );
    assert_eq!(a.on_error(at_ms(50), PER_CONN), AcceptDecision::Stop);
    a.handle_timeout(Instant::MAX);
    assert_eq!(a.poll_timeout(), None);

    let events = drain(&mut a);
    assert!(matches!(events[0], AcceptEvent::Shortage { .. }));
    assert_eq!(events[1..], [AcceptEvent::Fatal]);
    let s = a.stats();
    assert_eq!(s.fatal, 1);
    assert_eq!(s.shortages, 1);
    assert_eq!(s.per_connection_errors, 0);
    assert_eq!(s.accepted, 1);
    assert_eq!(s.paused_total, ms(10), "the pause ended at the fatal error");
}

#[test]
fn time_going_backwards_is_clamped() {
    let mut a = AcceptLoop::new(AcceptConfig::default(), Instant::from_secs(10));
    // A `now` before the construction time is treated as 10 s.
    assert_eq!(
        a.on_error(Instant::from_secs(3), EMFILE),
        AcceptDecision::PauseUntil(Instant::from_secs(10) + ms(50))
    );
    a.handle_timeout(Instant::from_secs(11));
    assert_eq!(a.poll_timeout(), None);
    // The clock steps back to 1 s: still 11 s as far as the machine is concerned.
    assert_eq!(
        a.on_error(Instant::from_secs(1), EMFILE),
        AcceptDecision::PauseUntil(Instant::from_secs(11) + ms(100))
    );
    assert!(a.is_paused(Instant::ZERO));
    assert!(!a.is_paused(Instant::from_secs(12)));
    a.handle_timeout(Instant::ZERO);
    assert_eq!(a.poll_timeout(), Some(Instant::from_secs(11) + ms(100)));
    a.on_accepted(Instant::ZERO);
    assert_eq!(
        a.stats().paused_total,
        ms(50),
        "no negative or rewound pause"
    );
}

#[test]
fn early_handle_timeout_is_a_no_op_and_poll_timeout_never_spins() {
    let mut a = AcceptLoop::new(AcceptConfig::default(), Instant::ZERO);
    let AcceptDecision::PauseUntil(until) = a.on_error(at_ms(100), EMFILE) else {
        panic!("expected a pause");
    };
    a.handle_timeout(at_ms(120));
    assert_eq!(a.poll_timeout(), Some(until));
    assert!(a.poll_timeout() > Some(at_ms(120)));
    a.handle_timeout(until);
    assert_eq!(a.poll_timeout(), None);
    assert_eq!(a.stats().pauses, 1);
    assert_eq!(a.stats().paused_total, ms(50));
}

#[test]
fn a_shortage_during_a_pause_extends_it_without_a_new_pause() {
    let mut a = AcceptLoop::new(AcceptConfig::default(), Instant::ZERO);
    assert_eq!(
        a.on_error(at_ms(0), EMFILE),
        AcceptDecision::PauseUntil(at_ms(50))
    );
    assert_eq!(
        a.on_error(at_ms(10), EMFILE),
        AcceptDecision::PauseUntil(at_ms(110))
    );
    assert_eq!(a.on_error(at_ms(20), PER_CONN), AcceptDecision::Continue);
    assert!(
        a.is_paused(at_ms(20)),
        "a per-connection error does not end a pause"
    );
    assert_eq!(a.poll_timeout(), Some(at_ms(110)));
    let s = a.stats();
    assert_eq!(
        (s.pauses, s.shortages, s.reports, s.suppressed),
        (1, 2, 1, 1)
    );
    assert_eq!(s.paused_total, ms(20), "stats include the pause so far");
}

#[test]
fn an_accept_during_a_pause_ends_it_early() {
    let mut a = AcceptLoop::new(AcceptConfig::default(), Instant::ZERO);
    let _ = a.on_error(at_ms(0), EMFILE);
    a.on_accepted(at_ms(30));
    assert!(!a.is_paused(at_ms(30)));
    assert_eq!(a.poll_timeout(), None);
    assert_eq!(a.stats().paused_total, ms(30));
}

#[test]
fn shortage_kinds_are_reported_with_their_own_name() {
    let mut a = AcceptLoop::new(AcceptConfig::default(), Instant::ZERO);
    let _ = a.on_error(at_ms(0), AcceptErrorKind::Shortage(Shortage::Buffers));
    let _ = a.on_error(at_ms(1000), AcceptErrorKind::Shortage(Shortage::Memory));
    let kinds: Vec<Shortage> = drain(&mut a)
        .into_iter()
        .filter_map(|e| match e {
            AcceptEvent::Shortage { shortage, .. } => Some(shortage),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, [Shortage::Buffers, Shortage::Memory]);
}

#[test]
fn extreme_config_and_instants_saturate_without_panic() {
    let config = AcceptConfig::builder()
        .initial_pause(Duration::MAX)
        .max_pause(Duration::MAX)
        .growth_percent(u32::MAX)
        .report_interval(Duration::MAX)
        .build()
        .unwrap();
    let mut a = AcceptLoop::new(config, Instant::MAX);
    assert_eq!(
        a.on_error(Instant::ZERO, EMFILE),
        AcceptDecision::PauseUntil(Instant::MAX)
    );
    a.handle_timeout(Instant::MAX);
    assert_eq!(a.poll_timeout(), None);
    assert_eq!(a.next_pause(), Duration::MAX);
    a.on_accepted(Instant::MAX);

    let big = AcceptConfig::builder()
        .initial_pause(Duration::from_secs(u64::MAX / 2))
        .max_pause(Duration::MAX)
        .growth_percent(u32::MAX)
        .build()
        .unwrap();
    let mut b = AcceptLoop::new(big, Instant::ZERO);
    let _ = b.on_error(Instant::ZERO, EMFILE);
    assert_eq!(b.next_pause(), Duration::MAX);
    assert_eq!(
        b.on_error(Instant::ZERO, EMFILE),
        AcceptDecision::PauseUntil(Instant::MAX)
    );
}

#[test]
fn growth_by_150_percent_uses_integer_math() {
    let config = AcceptConfig::builder()
        .initial_pause(ms(100))
        .max_pause(ms(1000))
        .growth_percent(150)
        .build()
        .unwrap();
    let mut a = AcceptLoop::new(config, Instant::ZERO);
    let mut got = Vec::new();
    for _ in 0..7 {
        got.push(a.next_pause());
        let _ = a.on_error(Instant::ZERO, EMFILE);
    }
    assert_eq!(
        got,
        [
            ms(100),
            ms(150),
            ms(225),
            Duration::from_micros(337_500),
            ms(506) + Duration::from_micros(250),
            Duration::from_nanos(759_375_000),
            ms(1000)
        ]
    );
}

// ---------------------------------------------------------------- unknown codes, libc cross-check

#[test]
fn unknown_codes_pause_and_report_by_default_and_stop_under_the_stop_policy() {
    let mut acceptor = AcceptLoop::new(AcceptConfig::default(), Instant::ZERO);
    assert_eq!(
        AcceptConfig::default().unknown_errors(),
        UnknownErrorPolicy::Pause
    );
    let decision = acceptor.on_error(at_ms(0), UNKNOWN);
    assert_eq!(decision, AcceptDecision::PauseUntil(at_ms(50)));
    assert!(!acceptor.is_stopped());
    assert!(matches!(
        drain(&mut acceptor)[..],
        [AcceptEvent::Shortage {
            shortage: Shortage::Unrecognized,
            ..
        }]
    ));
    // The pause grows like a shortage's, and an accept ends the episode.
    assert_eq!(
        acceptor.on_error(at_ms(50), UNKNOWN),
        AcceptDecision::PauseUntil(at_ms(150))
    );
    acceptor.on_accepted(at_ms(150));
    assert!(!acceptor.is_stopped());
    let stats = acceptor.stats();
    assert_eq!(
        (stats.unknown_errors, stats.shortages, stats.fatal),
        (2, 2, 0)
    );

    let stop = AcceptConfig::builder()
        .unknown_errors(UnknownErrorPolicy::Stop)
        .build()
        .expect("valid config");
    let mut acceptor = AcceptLoop::new(stop, Instant::ZERO);
    assert_eq!(acceptor.on_error(at_ms(0), UNKNOWN), AcceptDecision::Stop);
    assert!(acceptor.is_stopped());
    assert_eq!(drain(&mut acceptor), [AcceptEvent::Fatal]);
    let stats = acceptor.stats();
    assert_eq!(
        (stats.unknown_errors, stats.shortages, stats.fatal),
        (1, 0, 1)
    );
}

#[test]
fn the_new_socket_errors_are_per_connection_and_enosr_is_a_shortage_with_a_hint() {
    assert_eq!(Shortage::Streams.as_str(), "ENOSR");
    assert!(Shortage::Streams.hint().contains("STREAMS"));
    assert!(Shortage::Unrecognized.hint().contains("unknown_errors"));
    let mut acceptor = AcceptLoop::new(AcceptConfig::default(), Instant::ZERO);
    for name in ["ESOCKTNOSUPPORT", "EPROTONOSUPPORT"] {
        let entry = Platform::Linux
            .errno_table()
            .iter()
            .find(|e| e.name == name)
            .expect("in the Linux table");
        assert_eq!(entry.kind, PER_CONN, "{name}");
        assert_eq!(
            acceptor.on_error(at_ms(0), classify_os_error(entry.code, Platform::Linux)),
            AcceptDecision::Continue
        );
    }
}

/// The Linux table's numbers are libc's, not restated by hand: every name in the table is checked
/// against the `libc` constant of that name, and every accept(2) error keel classifies is there.
#[cfg(all(
    target_os = "linux",
    not(any(
        target_arch = "mips",
        target_arch = "mips64",
        target_arch = "sparc",
        target_arch = "sparc64"
    ))
))]
#[test]
fn the_linux_table_matches_the_libc_constants() {
    let libc_codes: &[(&str, i32)] = &[
        ("EPERM", libc::EPERM),
        ("EINTR", libc::EINTR),
        ("EAGAIN", libc::EAGAIN),
        ("ENONET", libc::ENONET),
        ("EPROTO", libc::EPROTO),
        ("ENOPROTOOPT", libc::ENOPROTOOPT),
        ("EOPNOTSUPP", libc::EOPNOTSUPP),
        ("ENETDOWN", libc::ENETDOWN),
        ("ENETUNREACH", libc::ENETUNREACH),
        ("ECONNABORTED", libc::ECONNABORTED),
        ("ECONNRESET", libc::ECONNRESET),
        ("ETIMEDOUT", libc::ETIMEDOUT),
        ("ECONNREFUSED", libc::ECONNREFUSED),
        ("EHOSTDOWN", libc::EHOSTDOWN),
        ("EHOSTUNREACH", libc::EHOSTUNREACH),
        ("EPROTONOSUPPORT", libc::EPROTONOSUPPORT),
        ("ESOCKTNOSUPPORT", libc::ESOCKTNOSUPPORT),
        ("EMFILE", libc::EMFILE),
        ("ENFILE", libc::ENFILE),
        ("ENOBUFS", libc::ENOBUFS),
        ("ENOMEM", libc::ENOMEM),
        ("ENOSR", libc::ENOSR),
        ("EBADF", libc::EBADF),
        ("EFAULT", libc::EFAULT),
        ("EINVAL", libc::EINVAL),
        ("ENOTSOCK", libc::ENOTSOCK),
    ];
    let table = Platform::Linux.errno_table();
    assert_eq!(
        table.len(),
        libc_codes.len(),
        "every table row is cross-checked"
    );
    for entry in table {
        let (_, code) = libc_codes
            .iter()
            .find(|(name, _)| *name == entry.name)
            .unwrap_or_else(|| panic!("{} has no libc cross-check", entry.name));
        assert_eq!(entry.code, *code, "{}", entry.name);
        assert_eq!(
            classify_os_error(*code, Platform::Linux),
            entry.kind,
            "{}",
            entry.name
        );
    }
    // The host classifies real errors with this table.
    assert_eq!(Platform::HOST, Some(Platform::Linux));
    #[cfg(feature = "std")]
    {
        let enosr = std::io::Error::from_raw_os_error(libc::ENOSR);
        assert_eq!(
            classify_io_error(&enosr),
            AcceptErrorKind::Shortage(Shortage::Streams)
        );
        let unknown = std::io::Error::from_raw_os_error(libc::EDOM);
        assert_eq!(classify_io_error(&unknown), UNKNOWN);
    }
}

/// The label strings are part of the API (logs, metrics labels): each is pinned.
#[test]
fn policy_and_shortage_labels_are_stable() {
    assert_eq!(UnknownErrorPolicy::Pause.as_str(), "pause");
    assert_eq!(UnknownErrorPolicy::Stop.as_str(), "stop");
    for (s, label) in [
        (Shortage::ProcessFileLimit, "EMFILE"),
        (Shortage::SystemFileLimit, "ENFILE"),
        (Shortage::Buffers, "ENOBUFS"),
        (Shortage::Memory, "ENOMEM"),
        (Shortage::Streams, "ENOSR"),
        (Shortage::Unrecognized, "unknown"),
    ] {
        assert_eq!(s.as_str(), label);
        assert_eq!(s.to_string(), label);
    }
}

/// Pauses of a second and more: the grown pause's whole seconds and its fraction both count
/// (every other test stays under a second, where the seconds are zero).
#[test]
fn pauses_past_a_second_grow_in_whole_seconds_and_fractions() {
    let config = AcceptConfig::builder()
        .initial_pause(ms(1500))
        .max_pause(Duration::from_secs(10))
        .growth_percent(150)
        .build()
        .unwrap();
    let mut a = AcceptLoop::new(config, Instant::ZERO);
    let mut got = Vec::new();
    for _ in 0..6 {
        got.push(a.next_pause());
        let _ = a.on_error(Instant::ZERO, EMFILE);
    }
    assert_eq!(
        got,
        [
            ms(1500),
            ms(2250),
            ms(3375),
            Duration::from_micros(5_062_500),
            Duration::from_nanos(7_593_750_000),
            Duration::from_secs(10),
        ]
    );
}

/// `PauseUntil(t)` means "not before `t`": at `t` itself the loop is no longer paused, even
/// before `handle_timeout` has ended the pause (a driver may ask `is_paused` first).
#[test]
fn a_pause_is_over_at_its_deadline_before_handle_timeout() {
    let mut a = AcceptLoop::new(AcceptConfig::default(), Instant::ZERO);
    let until = match a.on_error(at_ms(1000), EMFILE) {
        AcceptDecision::PauseUntil(until) => until,
        other => panic!("expected a pause, got {other:?}"),
    };
    assert_eq!(until, at_ms(1050));
    assert!(a.is_paused(at_ms(1049)));
    assert!(!a.is_paused(until), "paused at its own deadline");
    assert_eq!(
        a.poll_timeout(),
        Some(until),
        "is_paused does not end the pause itself"
    );
}
