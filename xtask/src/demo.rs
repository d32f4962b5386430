//! `cargo xtask demo`: runs the `demo` crate (the seed's experiments with real processes).

use anyhow::bail;

use crate::{metadata, util};

/// Runs `cargo run --quiet --release -p demo`, or says why it cannot.
pub(crate) fn run() -> anyhow::Result<()> {
    let w = metadata::workspace()?;
    if !w.members.iter().any(|m| m == "demo") {
        bail!(
            "there is no `demo` package in the workspace yet (it comes with issue #2); \
             members are: {}",
            w.members.join(", ")
        );
    }
    util::run(util::cargo().args(["run", "--quiet", "--release", "-p", "demo"]))
}
