//! `cargo +nightly fuzz run keyed`: see `fuzz/src/keyed.rs` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: keel_fuzz::keyed::Input| keel_fuzz::keyed::run(&input));
