//! keel-smol as the shared examples and conformance suite (in keel-benches) drive it.

keel_benches::async_io_harness!(
    Smol,
    "smol",
    "keel-smol",
    keel_smol,
    SmolRuntime,
    smol::block_on
);
