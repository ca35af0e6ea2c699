//! `cargo +nightly fuzz run gcra`: see `fuzz/src/gcra.rs` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: keel_fuzz::gcra::Input| keel_fuzz::gcra::run(&input));
