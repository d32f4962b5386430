//! `cargo xtask demo`: runs the `demo` crate (the seed's experiments with real processes).

use crate::util;

/// Builds the demo's binaries (the tour runs its second one, `tally-client`), then runs
/// `cargo run --quiet --release -p demo --bin demo`.
pub(crate) fn run() -> anyhow::Result<()> {
    util::run(util::cargo().args(["build", "--quiet", "--release", "-p", "demo", "--bins"]))?;
    util::run(util::cargo().args(["run", "--quiet", "--release", "-p", "demo", "--bin", "demo"]))
}
