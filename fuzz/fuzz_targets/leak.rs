//! `cargo +nightly fuzz run leak`: see `fuzz/src/leak.rs` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: keel_fuzz::leak::Input| keel_fuzz::leak::run(&input));
