//! keel's conformance suite (`keel_testkit::conformance`) run on smol.

keel_testkit::async_io_harness!(
    Smol,
    "smol",
    "keel-smol",
    "smol-echo",
    keel_smol,
    SmolRuntime,
    smol::block_on
);

keel_testkit::conformance_suite!(Smol, keel_smol);
