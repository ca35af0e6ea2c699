//! `cargo +nightly fuzz run budget`: see `fuzz/src/budget.rs` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: keel_fuzz::budget::Input| keel_fuzz::budget::run(&input));
