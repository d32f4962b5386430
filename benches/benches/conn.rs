//! Criterion benches of the connection cases: `pipe_pingpong`, `pipe_bytes_pingpong`,
//! `pipe_throughput_1m` (defined in `benches/README.md`, code in `benches::conn`).

mod common;

fn main() {
    common::run(&["pipe_pingpong", "pipe_bytes_pingpong", "pipe_throughput_1m"]);
}
