//! `cargo +nightly fuzz run bulkhead_classes`: see `fuzz/src/bulkhead_classes.rs` for what it
//! asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: keel_fuzz::bulkhead_classes::Input| {
    keel_fuzz::bulkhead_classes::run(&input)
});
