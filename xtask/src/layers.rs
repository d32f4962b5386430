//! `cargo xtask layers`: crates depend only on crates of strictly lower layers.
//!
//! ```text
//! layer 2   ipc-pool  ipc-manager   (siblings: neither depends on the other)
//! layer 1   ipc-sync
//! layer 0   ipc-core
//! tooling   benches  xtask  demo    (may depend on anything; nothing depends on them)
//! ```
//! Every kind of dependency counts (normal, dev, build): a dev-dependency upwards would let a
//! lower crate's tests lean on a higher one. A workspace member with no layer is an error, so a
//! new crate has to be placed here deliberately.

use anyhow::bail;

use crate::metadata::{self, Edge};

/// Where a crate sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layer {
    /// A library layer: 0 is the bottom.
    Library(u8),
    /// Benchmarks, workflows, demos.
    Tooling,
}

/// The layer of a workspace crate, `None` for a crate that has not been placed.
pub(crate) fn layer_of(name: &str) -> Option<Layer> {
    Some(match name {
        "ipc-core" => Layer::Library(0),
        "ipc-sync" => Layer::Library(1),
        "ipc-pool" | "ipc-manager" => Layer::Library(2),
        "benches" | "xtask" | "demo" => Layer::Tooling,
        _ => return None,
    })
}

/// Every violation of the layer rule among `members` and `edges`, as sentences.
pub(crate) fn violations(members: &[String], edges: &[Edge]) -> Vec<String> {
    let mut out = Vec::new();
    for m in members {
        if layer_of(m).is_none() {
            out.push(format!(
                "crate `{m}` has no layer: place it in xtask/src/layers.rs (and ARCHITECTURE.md)"
            ));
        }
    }
    for e in edges {
        let (Some(from), Some(to)) = (layer_of(&e.from), layer_of(&e.to)) else {
            continue;
        };
        let edge = format!("`{}` -> `{}` ({} dependency)", e.from, e.to, e.kind);
        match (from, to) {
            (_, Layer::Tooling) => out.push(format!(
                "{edge}: `{}` is tooling, nothing may depend on it",
                e.to
            )),
            (Layer::Tooling, _) => {}
            (Layer::Library(a), Layer::Library(b)) if b == a => out.push(format!(
                "{edge}: both are in layer {a}; siblings must not depend on each other"
            )),
            (Layer::Library(a), Layer::Library(b)) if b > a => out.push(format!(
                "{edge}: layer {a} depends on layer {b}; dependencies must point down"
            )),
            _ => {}
        }
    }
    out
}

/// Checks the workspace.
pub(crate) fn run() -> anyhow::Result<()> {
    let w = metadata::workspace()?;
    let bad = violations(&w.members, &w.edges);
    if !bad.is_empty() {
        for b in &bad {
            eprintln!("layers: {b}");
        }
        bail!("{} layer violation(s)", bad.len());
    }
    println!(
        "layers: ok ({} crates, {} internal dependencies, all pointing down)",
        w.members.len(),
        w.edges.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(from: &str, to: &str, kind: &str) -> Edge {
        Edge {
            from: from.into(),
            to: to.into(),
            kind: kind.into(),
        }
    }

    fn members() -> Vec<String> {
        [
            "ipc-core",
            "ipc-sync",
            "ipc-pool",
            "ipc-manager",
            "benches",
            "xtask",
        ]
        .map(String::from)
        .to_vec()
    }

    #[test]
    fn the_intended_graph_passes() {
        let edges = [
            edge("ipc-sync", "ipc-core", "normal"),
            edge("ipc-pool", "ipc-sync", "normal"),
            edge("ipc-pool", "ipc-core", "normal"),
            edge("ipc-manager", "ipc-sync", "normal"),
            edge("benches", "ipc-manager", "normal"),
            edge("benches", "xtask", "dev"),
        ];
        // benches -> xtask is tooling -> tooling, which is still a dependency on tooling.
        let v = violations(&members(), &edges[..5]);
        assert!(v.is_empty(), "{v:?}");
        assert_eq!(violations(&members(), &edges[5..]).len(), 1);
    }

    #[test]
    fn upward_sibling_and_tooling_edges_are_named() {
        let v = violations(&members(), &[edge("ipc-core", "ipc-sync", "dev")]);
        assert_eq!(
            v,
            vec![
                "`ipc-core` -> `ipc-sync` (dev dependency): layer 0 depends on layer 1; \
                 dependencies must point down"
            ]
        );
        let v = violations(&members(), &[edge("ipc-pool", "ipc-manager", "normal")]);
        assert!(v[0].contains("siblings"), "{v:?}");
        let v = violations(&members(), &[edge("ipc-sync", "benches", "normal")]);
        assert!(v[0].contains("tooling"), "{v:?}");
        let v = violations(&members(), &[edge("ipc-core", "ipc-core", "normal")]);
        assert_eq!(v.len(), 1);
    }

    #[test]
    fn a_crate_without_a_layer_is_an_error() {
        let mut m = members();
        m.push("ipc-extra".into());
        let v = violations(&m, &[]);
        assert_eq!(v.len(), 1);
        assert!(v[0].contains("`ipc-extra` has no layer"), "{v:?}");
    }
}
