//! `cargo +nightly fuzz run backlog`: see `fuzz/src/backlog.rs` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: keel_fuzz::backlog::Input| keel_fuzz::backlog::run(&input));
