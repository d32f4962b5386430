//! Criterion benches of the process cases: `process_start_join_{fork,spawn,forkserver}` and
//! `task_handle_roundtrip` (defined in `benches/README.md`, code in `benches::process`).

mod common;

fn main() {
    common::run(&[
        "process_start_join_fork",
        "process_start_join_spawn",
        "process_start_join_forkserver",
        "task_handle_roundtrip",
    ]);
}
