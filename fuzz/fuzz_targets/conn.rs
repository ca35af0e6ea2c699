//! `cargo +nightly fuzz run conn`: see `fuzz/src/conn.rs` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: keel_fuzz::conn::Input| keel_fuzz::conn::run(&input));
