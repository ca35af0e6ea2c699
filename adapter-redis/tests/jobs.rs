//! The `jobs` example under seed 004's attacks: runs `jobs-load --short` against the real Redis
//! (`KEEL_REDIS_URL`; the test fails, never skips, without one) and checks its verdict and its
//! last line. Also checks that the alert rules the script evaluates are the ones the example's
//! README lists.

mod common;

use std::path::PathBuf;
use std::process::Command;

#[path = "../examples/jobs/alerts.rs"]
#[allow(dead_code, unreachable_pub, missing_docs)]
mod alerts;

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
    let out = Command::new(&load)
        .args(["--redis", &url, "--short"])
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", load.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
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
