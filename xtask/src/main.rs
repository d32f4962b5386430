//! `cargo xtask`: the project's workflows (filled in by the tooling work).
fn main() {}
