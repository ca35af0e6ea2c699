//! `cargo +nightly fuzz run accept`: see `fuzz/src/accept.rs` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: keel_fuzz::accept::Input| keel_fuzz::accept::run(&input));
