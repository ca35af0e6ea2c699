//! `cargo +nightly fuzz run adaptive`: see `fuzz/src/adaptive.rs` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: keel_fuzz::adaptive::Input| keel_fuzz::adaptive::run(&input));
