//! keel-async-std as the shared examples and conformance suite (in keel-benches) drive it.

keel_benches::async_io_harness!(
    AsyncStd,
    "async-std",
    "keel-async-std",
    keel_async_std,
    AsyncStdRuntime,
    async_std::task::block_on
);
