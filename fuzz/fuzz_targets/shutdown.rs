//! `cargo +nightly fuzz run shutdown`: see `fuzz/src/shutdown.rs` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: keel_fuzz::shutdown::Input| keel_fuzz::shutdown::run(&input));
