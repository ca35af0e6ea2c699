//! `cargo +nightly fuzz run breaker`: see `fuzz/src/breaker.rs` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: keel_fuzz::breaker::Input| keel_fuzz::breaker::run(&input));
