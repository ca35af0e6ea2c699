//! The `jobs` example under seed 004's attacks: runs the whole `jobs-load` script (not
//! `--short`) against the real Redis (`KEEL_REDIS_URL`; the test fails, never skips, without
//! one), checks its verdict, its last line and that it ran in under 5 minutes. Also checks that
//! the alert rules the script evaluates are the ones the example's README lists, and feeds the
//! script's bound checks (`examples/jobs/checks.rs`) made-up logs that break each bound by one,
//! so each is seen to fail.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "../examples/jobs/alerts.rs"]
#[allow(dead_code, unreachable_pub, missing_docs)]
mod alerts;
#[path = "../examples/jobs/checks.rs"]
#[allow(unreachable_pub, missing_docs)]
mod checks;

/// `target/<profile>`: this test runs from its `deps` directory.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let deps = exe.parent().expect("the deps directory");
    deps.parent().expect("the profile directory").to_path_buf()
}

/// Builds the two examples into this test's target directory and profile, with the cargo that
/// runs this test (a no-op when they are fresh: `cargo test -p keel-redis` builds every
/// example already, `--test jobs` alone does not).
fn build_examples() {
    let profile_dir = profile_dir();
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a profile directory name")
        .to_string();
    let target_dir = profile_dir.parent().expect("the target directory");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "-p",
        "keel-redis",
        "--example",
        "jobs",
        "--example",
        "jobs-load",
    ]);
    cmd.arg("--target-dir").arg(target_dir);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let status = cmd.status().expect("run cargo build for the jobs examples");
    assert!(
        status.success(),
        "cargo build --example jobs --example jobs-load failed"
    );
}

#[test]
fn the_job_system_survives_seed_004() {
    let url = common::redis_url();
    build_examples();
    let load = profile_dir()
        .join("examples")
        .join(format!("jobs-load{}", std::env::consts::EXE_SUFFIX));
    // The whole script: about 1 min 45 s in a debug build on a loaded 2-core machine.
    let started = Instant::now();
    let out = Command::new(&load)
        .args(["--redis", &url])
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", load.display()));
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    println!(
        "jobs-load (the whole script, this build's profile) ran in {:.1} s",
        elapsed.as_secs_f64()
    );
    assert!(
        elapsed < Duration::from_secs(300),
        "the script must run in under 5 minutes: {elapsed:?}"
    );
    let last = stdout.lines().last().unwrap_or("");
    assert!(
        last.starts_with("jobs: enqueued="),
        "the last line is the summary: {last:?}"
    );
    let field = |name: &str| -> String {
        last.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name}= in {last:?}"))
            .to_string()
    };
    assert_eq!(field("lost"), "0", "{last}");
    assert_eq!(field("duplicated"), "0", "{last}");
    assert_eq!(field("alerts"), "5/5", "{last}");
    let enqueued: u64 = field("enqueued").parse().expect("a count");
    let done: u64 = field("done").parse().expect("a count");
    let dead: u64 = field("dead").parse().expect("a count");
    assert!(enqueued > 1000, "{last}");
    assert_eq!(
        done + dead,
        enqueued,
        "every job ends as done or dead: {last}"
    );
    let ok: f64 = field("normal_enqueue_ok")
        .trim_end_matches('%')
        .parse()
        .expect("a percentage");
    assert!(ok >= 99.0, "{last}");
    assert!(
        out.status.success(),
        "jobs-load exited with {:?}",
        out.status
    );
}

#[test]
fn the_readme_lists_the_rules_the_script_checks() {
    let readme = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/jobs/README.md"
    ))
    .expect("examples/jobs/README.md");
    for rule in &alerts::RULES {
        assert!(
            readme.contains(rule.expr),
            "README lacks the rule {}: {}",
            rule.name,
            rule.expr
        );
        assert!(readme.contains(rule.name), "README lacks {}", rule.name);
    }
}

fn lines(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A worker's configuration lines, as `jobs worker` prints them.
fn worker_config() -> Vec<String> {
    lines(&[
        "config: breaker minimum_calls=10 count_window=20 failure_rate=50",
        "config: budget ttl_ns=10000000000 slot_ns=1000000000 floor=20 retry_percent=20 min_per_sec=2",
        "config: bulkhead max_concurrent=2 concurrency=4",
        "config: leak threshold_ms=1000 sweep_ms=100",
    ])
}

#[test]
fn the_breaker_check_fails_when_the_breaker_needs_more_than_its_minimum_calls() {
    let err = worker_config();
    // 3 failures before the dependency broke (at 1000 ms), then 10 more open the breaker.
    let mut log: Vec<String> = (1..=3)
        .map(|f| format!("dep failed w1 {} {f} 0", 500 + f))
        .collect();
    log.extend((4..=12).map(|f| format!("dep failed w1 {} {f} 0", 1000 + f)));
    let mut within = log.clone();
    within.push("dep failed w1 1100 13 1".into());
    let ok = checks::breaker_check("w1", &within, &err, 1000);
    assert!(ok.ok, "{}", ok.line);
    assert!(ok.line.contains("10 failed calls"), "{}", ok.line);
    // One failure more before it opens: over the bound.
    let mut over = log.clone();
    over.push("dep failed w1 1090 13 0".into());
    over.push("dep failed w1 1100 14 1".into());
    let bad = checks::breaker_check("w1", &over, &err, 1000);
    assert!(!bad.ok, "{}", bad.line);
    // Never opened after 11 failures: as bad.
    let mut never = log;
    never.extend((13..=14).map(|f| format!("dep failed w1 {} {f} 0", 1100 + f)));
    assert!(!checks::breaker_check("w1", &never, &err, 1000).ok);
}

#[test]
fn the_budget_check_is_the_machines_exact_bound() {
    let err = worker_config();
    let s = 1_000_000_000u64;
    // 50 first attempts at 100 s allow 20 + 10 retries in [100 s, 110 s).
    let mut log: Vec<String> = (0..50)
        .map(|i| format!("budget deposit w1 {}", 100 * s + i))
        .collect();
    log.extend((0..30).map(|i| format!("budget retry w1 {}", 101 * s + i)));
    let ok = checks::budget_check("w1", &log, &err);
    assert!(ok.ok, "{}", ok.line);
    assert!(
        ok.line.contains("30 retries <= 20 + 20 % x 50 = 30.0"),
        "{}",
        ok.line
    );
    // One more retry in the same window breaks it.
    let mut over = log.clone();
    over.push(format!("budget retry w1 {}", 105 * s));
    let bad = checks::budget_check("w1", &over, &err);
    assert!(!bad.ok, "{}", bad.line);
    // The deposits are forgotten (SLOTS + 1) slots = 11 s later: the floor's 20 retries from
    // 111 s on are fine, a 21st within 10 s is not.
    let mut later = log.clone();
    later.extend((0..20).map(|i| format!("budget retry w1 {}", 112 * s + i)));
    assert!(checks::budget_check("w1", &later, &err).ok);
    later.push(format!("budget retry w1 {}", 121 * s));
    assert!(!checks::budget_check("w1", &later, &err).ok);
}

#[test]
fn the_leak_check_wants_every_report_within_one_sweep_of_the_threshold() {
    let cfg = worker_config();
    let report = |age: u64| {
        let mut e = cfg.clone();
        e.push(format!(
            "leak: pool connection 7 held for {age}ms age_ms={age} late_ms={}: slot reclaimed",
            age.saturating_sub(1000)
        ));
        e.push("leak: pool connection 7 released at last after 5s".into());
        e
    };
    for (age, ok) in [(1000, true), (1100, true), (999, false), (1101, false)] {
        let e = report(age);
        let c = checks::leak_check(&[e.as_slice()]);
        assert_eq!(c.ok, ok, "age {age}: {}", c.line);
    }
    // No report at all is no proof.
    assert!(!checks::leak_check(&[cfg.as_slice()]).ok);
}

#[test]
fn the_memory_check_holds_redis_to_the_guards_bound_and_users_to_their_quota() {
    let sample = |t: f64, used: u64, queued: u64| checks::MemSample {
        t,
        used,
        clients: 100_000,
        queued,
        processing: 0,
        delayed: 0,
        finals: 0,
        dead: 0,
    };
    let base = 2_000_000;
    // Queue term 1300 x (110 + 64) = 226 200; running 6 x 613; limiter 3 x 288.
    let bound = base - 100_000 + 226_200 + 6 * 613 + 3 * 288;
    let run = |used: u64, queued: u64, flood_ok: &[u64]| {
        let samples = [sample(5.0, base, 0), sample(15.0, used, queued)];
        checks::memory_check(&samples, (0.0, 10.0), (10.0, 20.0), flood_ok, 10.0, 3)
    };
    let ok = run(bound + 100_000, 1300, &[120, 120, 120]);
    assert!(ok.memory_ok && ok.queue_ok && ok.quota_ok, "{:?}", ok.lines);
    let over = run(bound + 100_000 + 1, 1300, &[120, 120, 120]);
    assert!(!over.memory_ok, "{:?}", over.lines);
    assert!(!run(base, 1301, &[0, 0, 1]).queue_ok);
    // 10/s over 10 s plus a burst of 20: 120 each at most.
    assert!(!run(base, 0, &[120, 121, 0]).quota_ok);
}
