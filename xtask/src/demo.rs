//! `cargo xtask demo`: runs the `demo` crate (the seed's experiments with real processes).

use crate::util;

/// Runs `cargo run --quiet --release -p demo`.
pub(crate) fn run() -> anyhow::Result<()> {
    util::run(util::cargo().args(["run", "--quiet", "--release", "-p", "demo"]))
}
