//! `cargo xtask chaos`: builds the `chaos` crate's `ipc-chaos` with the failpoints compiled in
//! (its `failpoints` feature, which turns on ipc-sync's and ipc-core's; never a library's
//! default) and runs it. Arguments go to `ipc-chaos`: `--rounds N`, `--seed S`,
//! `--only NAME,..`, `--list` for the scenarios (the table is printed and
//! `target/chaos/chaos.json` written); `--fuzz [--inputs N | --full]` for the fuzzers
//! (`target/chaos/fuzz.json`); `--replay FILE --only TARGET`; `--write-corpus`.
//!
//! ```text
//! cargo build --release -p chaos --features chaos/failpoints  ->  target/release/ipc-chaos ARGS
//! ```

use crate::util;

/// The rounds `cargo xtask ci` runs of every scenario: a short pass (about a minute here).
pub(crate) const CI_ROUNDS: &str = "4";
/// The inputs `cargo xtask ci` gives every fuzz target (a few seconds).
pub(crate) const CI_FUZZ_INPUTS: &str = "2000";

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    util::run(util::cargo().args([
        "build",
        "--quiet",
        "--release",
        "-p",
        "chaos",
        "--features",
        "chaos/failpoints",
    ]))?;
    let bin = util::root().join("target/release/ipc-chaos");
    util::run(
        std::process::Command::new(bin)
            .current_dir(util::root())
            .args(args),
    )
}
