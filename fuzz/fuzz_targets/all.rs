//! `cargo +nightly fuzz run all`: see `fuzz/src/all.rs` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: keel_fuzz::all::Input| keel_fuzz::all::run(&input));
