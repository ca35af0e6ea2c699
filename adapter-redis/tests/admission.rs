//! Four processes of the `fleet` example, 8 tasks each, 5 s at 200/s with burst 20, against
//! one real Redis, together admit at least 97 % of 200 × 5 + 20 and at most 200 × S + 20, S
//! the span (at least 5 s) from the first check sent to the last answer received: on a loaded
//! machine a process wakes late or a check sent before its end is decided after it, and Redis
//! rightly admits what its clock allows then.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{redis_url, unique};

fn example() -> PathBuf {
    // target/<profile>/deps/admission-HASH -> target/<profile>/examples/fleet
    let exe = std::env::current_exe().expect("the test's path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>");
    let path = dir.join("examples").join("fleet");
    if !path.exists() {
        // A narrow `cargo test --test admission` does not build examples: build it (as trybuild
        // does, with the cargo running this test).
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "-p", "keel-redis", "--example", "fleet"])
            .status()
            .expect("run cargo")
            .success();
        assert!(ok, "could not build the fleet example");
    }
    assert!(path.exists(), "no example binary at {}", path.display());
    path
}

#[test]
fn four_processes_admit_97_to_100_percent_of_the_fleet_quota() {
    let bin = example();
    let url = redis_url();
    let key = unique("admission");
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 1500;
    let children: Vec<_> = (0..4)
        .map(|_| {
            Command::new(&bin)
                .args([
                    "--redis",
                    &url,
                    "--key",
                    &key,
                    "--per-second",
                    "200",
                    "--burst",
                    "20",
                ])
                .args(["--for", "5", "--concurrency", "8", "--policy", "closed"])
                // 32 spinning tasks on a small machine compete with Redis for the CPU: a
                // generous timeout keeps a slow answer from counting as a failure.
                .args(["--timeout-ms", "2000"])
                .args(["--start-at", &start.to_string()])
                .output_async()
        })
        .collect();
    let mut admitted = 0u64;
    let mut errors = 0u64;
    let (mut from_us, mut to_us) = (u64::MAX, 0u64);
    for child in children {
        let out = child.wait_with_output().expect("the example ran");
        let line = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "fleet failed: {line} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        println!("{}", line.trim());
        let field = |name: &str| -> u64 {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(name).and_then(|v| v.parse().ok()))
                .unwrap_or_else(|| panic!("no {name} in {line:?}"))
        };
        admitted += field("admitted=");
        // Failures (rejected by FailClosed) can only lower the count; the bounds below judge.
        errors += field("errors=");
        from_us = from_us.min(field("from_us="));
        to_us = to_us.max(field("to_us="));
    }
    println!("errors (fail-closed rejections): {errors}");
    let nominal = 200 * 5 + 20;
    // GCRA at 200/s with burst 20 admits at most 20 + 200 × S in any span of S seconds; every
    // admission was decided (on Redis's clock, this host's) between `from_us` and `to_us`.
    let span_us = to_us.saturating_sub(from_us);
    assert!(span_us >= 5_000_000, "the runs spanned {span_us} µs < 5 s");
    let bound = 20 + 200 * span_us / 1_000_000;
    println!("together: admitted {admitted} of {nominal} ({bound} in the {span_us} µs they ran)");
    assert!(
        admitted <= bound,
        "the fleet admitted {admitted} > {bound} in {span_us} µs"
    );
    assert!(
        admitted * 100 >= nominal * 97,
        "the fleet admitted only {admitted} of {nominal}"
    );
}

trait SpawnPiped {
    fn output_async(&mut self) -> std::process::Child;
}

impl SpawnPiped for Command {
    fn output_async(&mut self) -> std::process::Child {
        self.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn the fleet example")
    }
}
