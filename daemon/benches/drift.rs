//! Placeholder replaced by the drift statistics benchmark.
fn main() {}
