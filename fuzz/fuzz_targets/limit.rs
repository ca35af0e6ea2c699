//! `cargo +nightly fuzz run limit`: see `fuzz/src/limit.rs` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: keel_fuzz::limit::Input| keel_fuzz::limit::run(&input));
