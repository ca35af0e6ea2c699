//! Support code for keel's criterion benches and simulations (not published).
pub mod sim;
