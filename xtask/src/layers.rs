//! `cargo xtask layers`: crates depend only on crates of strictly lower layers.
//!
//! ```text
//! layer 2   ipc-pool  ipc-manager   (siblings: neither depends on the other)
//! layer 1   ipc-sync  ipc-manager-derive (a proc macro: depends on no workspace crate)
//! layer 0   ipc-core
//! tooling   benches  xtask  demo  chaos   (may depend on anything; nothing depends on them)
//! ```
//! Every kind of dependency counts (normal, dev, build): a dev-dependency upwards would let a
//! lower crate's tests lean on a higher one. A workspace member with no layer is an error, so a
//! new crate has to be placed here deliberately.
//!
//! Inside ipc-core the top-level modules are layered the same way, and checked from the source
//! (every `crate::module` path outside comments and `#[cfg(test)]` modules, whose tests may
//! start processes from anywhere):
//! ```text
//! rank 4   process
//! rank 3   conn        (large payloads travel through a shared-memory ring)
//! rank 2   shm
//! rank 1   futex  spin  codec
//! rank 0   error  deadline  sys  failpoint   (leaves)
//! ```
//! A module may name only modules of a strictly lower rank, so the modules form a DAG a
//! newcomer reads bottom-up. (Inside `process/` the registry, the forkserver and the child
//! bootstrap refer to each other: one subsystem, one loop, by design.)

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
        "ipc-sync" | "ipc-manager-derive" => Layer::Library(1),
        "ipc-pool" | "ipc-manager" => Layer::Library(2),
        "benches" | "xtask" | "demo" | "chaos" => Layer::Tooling,
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

/// The rank of a top-level module of ipc-core, `None` for one that has not been placed.
fn module_rank(module: &str) -> Option<u8> {
    Some(match module {
        "error" | "deadline" | "sys" | "failpoint" => 0,
        "futex" | "spin" | "codec" => 1,
        "shm" => 2,
        "conn" => 3,
        "process" => 4,
        _ => return None,
    })
}

/// The top-level modules that `source` names as `crate::module` (or `crate::{a, b}`), outside
/// comments and from the first `#[cfg(test)]` on.
fn modules_named(source: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in source.lines() {
        let code = line.split("//").next().unwrap_or("");
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let list = match rest.strip_prefix('{') {
                Some(inner) => inner.split('}').next().unwrap_or(""),
                None => rest,
            };
            for item in list.split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && !out.contains(&name) {
                    out.push(name);
                }
                if !rest.starts_with('{') {
                    break;
                }
            }
        }
    }
    out
}

/// Every module edge of ipc-core (`(from, to)`) that does not point to a lower rank.
fn module_violations(edges: &[(String, String)]) -> Vec<String> {
    let mut out = Vec::new();
    for (from, to) in edges {
        if from == to {
            continue;
        }
        match (module_rank(from), module_rank(to)) {
            (None, _) => out.push(format!(
                "ipc-core module `{from}` has no rank: place it in xtask/src/layers.rs"
            )),
            (_, None) => out.push(format!(
                "ipc-core module `{to}` (named by `{from}`) has no rank: place it in \
                 xtask/src/layers.rs"
            )),
            (Some(a), Some(b)) if b >= a => out.push(format!(
                "ipc-core: `{from}` (rank {a}) names `crate::{to}` (rank {b}); modules may \
                 only name lower ranks"
            )),
            _ => {}
        }
    }
    out
}

/// The module edges of ipc-core's source tree at `src`.
fn module_edges(src: &std::path::Path) -> anyhow::Result<Vec<(String, String)>> {
    // The crate root's `pub use module::{Item, ..};` lines, as (item, module).
    let mut reexports: Vec<(String, String)> = Vec::new();
    for line in std::fs::read_to_string(src.join("lib.rs"))?.lines() {
        let Some(path) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let Some((module, items)) = path.trim_end_matches(';').split_once("::") else {
            continue;
        };
        for item in items.trim_matches(|c| c == '{' || c == '}').split(',') {
            reexports.push((item.trim().to_string(), module.to_string()));
        }
    }
    let mut edges = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src)?;
            let first = rel.components().next().expect("a file under src");
            let module = first
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string();
            if module == "lib" {
                continue;
            }
            for name in modules_named(&std::fs::read_to_string(&path)?) {
                // `crate::Error` is a re-export at the root: count it as its module's.
                let to = reexports
                    .iter()
                    .find(|(item, _)| *item == name)
                    .map_or(name, |(_, m)| m.clone());
                let edge = (module.clone(), to);
                if !edges.contains(&edge) {
                    edges.push(edge);
                }
            }
        }
    }
    edges.sort();
    Ok(edges)
}

/// Checks the workspace.
pub(crate) fn run() -> anyhow::Result<()> {
    let w = metadata::workspace()?;
    let mut bad = violations(&w.members, &w.edges);
    let core_src = crate::util::root().join("ipc-core/src");
    let module_edges = module_edges(&core_src)?;
    bad.extend(module_violations(&module_edges));
    if !bad.is_empty() {
        for b in &bad {
            eprintln!("layers: {b}");
        }
        bail!("{} layer violation(s)", bad.len());
    }
    println!(
        "layers: ok ({} crates, {} internal dependencies, all pointing down; ipc-core's \
         modules a DAG of {} edges, all pointing down)",
        w.members.len(),
        w.edges.len(),
        module_edges.len()
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
    fn module_paths_are_found_outside_comments_and_tests() {
        let src = "use crate::conn::Connection;\n\
                   use crate::{codec, error::Result};\n\
                   /// See [`x`](crate::process::Builder).\n\
                   let a = crate::sys::pid(); // crate::shm too\n\
                   #[cfg(test)]\nmod tests { use crate::process; }\n";
        assert_eq!(modules_named(src), ["conn", "codec", "error", "sys"]);
    }

    #[test]
    fn module_edges_must_point_down() {
        let e = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert!(module_violations(&[e("process", "sys"), e("conn", "spin")]).is_empty());
        let v = module_violations(&[e("sys", "process")]);
        assert!(v[0].contains("rank 0") && v[0].contains("rank 4"), "{v:?}");
        assert_eq!(module_violations(&[e("shm", "conn")]).len(), 1, "upwards");
        assert_eq!(
            module_violations(&[e("futex", "spin")]).len(),
            1,
            "same rank"
        );
        assert!(module_violations(&[e("newmod", "sys")])[0].contains("no rank"));
    }

    #[test]
    fn ipc_cores_modules_point_down() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ipc-core/src");
        let v = module_violations(&module_edges(&src).unwrap());
        assert!(v.is_empty(), "{v:?}");
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
