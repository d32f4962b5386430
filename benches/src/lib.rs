//! Shared helpers of the benchmark suite (see `benches/README.md`).
