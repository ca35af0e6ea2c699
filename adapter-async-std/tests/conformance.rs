//! keel's conformance suite (`keel_testkit::conformance`) run on async-std.

keel_testkit::async_io_harness!(
    AsyncStd,
    "async-std",
    "keel-async-std",
    "async-std-echo",
    keel_async_std,
    AsyncStdRuntime,
    async_std::task::block_on
);

// async-std's timers are `async-io`'s: keel-async-std re-exports keel-smol's timer-only names.
keel_testkit::conformance_suite!(AsyncStd, keel_async_std, timers on keel_smol::SmolRuntime);
