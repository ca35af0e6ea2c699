//! The proptest configuration every `core/tests/*_props.rs` file uses: failures persist in one
//! directory, `core/proptest-regressions/<file>.txt` (committed; they replay before new cases).
//! Included with `#[path = "support/props.rs"] mod props;`.

use proptest::test_runner::{Config, FileFailurePersistence};

/// `cases` cases per property; failures saved to `proptest-regressions/<file>.txt` (the path is
/// relative to the package directory, which is where `cargo test` runs the tests).
pub(crate) fn config(cases: u32, file: &'static str) -> Config {
    Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(file))),
        ..Config::default()
    }
}
