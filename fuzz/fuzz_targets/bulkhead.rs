//! `cargo +nightly fuzz run bulkhead`: see `fuzz/src/bulkhead.rs` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: keel_fuzz::bulkhead::Input| keel_fuzz::bulkhead::run(&input));
