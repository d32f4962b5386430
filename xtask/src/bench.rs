//! `cargo xtask bench [ARGS..]`: the criterion benches (`cargo bench -p benches -- ARGS`).
//!
//! ARGS go to criterion: a filter such as `pipe_pingpong`, `--save-baseline NAME`, `--quick`...
//! Set `IPC_BENCH_PIN=same|split` to place the processes as `cargo xtask compare --pin` does.

use crate::util;

/// Runs the benches.
pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let mut cmd = util::cargo();
    cmd.args(["bench", "-p", "benches"]);
    if !args.is_empty() {
        cmd.arg("--").args(args);
    }
    util::run(&mut cmd)
}
