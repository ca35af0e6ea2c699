//! `cargo +nightly fuzz run backoff`: see `fuzz/src/backoff.rs` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: keel_fuzz::backoff::Input| keel_fuzz::backoff::run(&input));
