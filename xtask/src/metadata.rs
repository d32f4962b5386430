//! The workspace as `cargo metadata --format-version 1 --no-deps` describes it.

use anyhow::{Context, bail};
use serde_json::Value;

use crate::util;

/// A dependency of a workspace member on another workspace member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Edge {
    /// The depending crate.
    pub(crate) from: String,
    /// The crate depended on.
    pub(crate) to: String,
    /// "normal", "dev" or "build".
    pub(crate) kind: String,
}

/// The workspace's packages and the dependencies between them.
#[derive(Debug)]
pub(crate) struct Workspace {
    /// Every member's package name.
    pub(crate) members: Vec<String>,
    /// Dependencies from a member on a member.
    pub(crate) edges: Vec<Edge>,
    /// Where cargo puts build output (`target/` unless configured otherwise).
    pub(crate) target_dir: std::path::PathBuf,
    /// Each member's `rust-version` (its minimum supported Rust version), if it declares one.
    pub(crate) rust_versions: Vec<(String, Option<String>)>,
}

/// Reads the workspace from `cargo metadata`.
pub(crate) fn workspace() -> anyhow::Result<Workspace> {
    let mut cmd = util::cargo();
    cmd.args(["metadata", "--format-version", "1", "--no-deps"]);
    let out = cmd
        .output()
        .with_context(|| format!("could not run `{}`", util::show(&cmd)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            util::show(&cmd),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("parsing cargo metadata")?;
    parse(&v)
}

/// Extracts the members and their internal dependencies from metadata JSON.
pub(crate) fn parse(v: &Value) -> anyhow::Result<Workspace> {
    let packages = v["packages"]
        .as_array()
        .context("cargo metadata has no packages array")?;
    let member_ids: Vec<&str> = v["workspace_members"]
        .as_array()
        .context("cargo metadata has no workspace_members array")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let members: Vec<&Value> = packages
        .iter()
        .filter(|p| p["id"].as_str().is_some_and(|id| member_ids.contains(&id)))
        .collect();
    let names: Vec<String> = members
        .iter()
        .map(|p| {
            p["name"]
                .as_str()
                .map(String::from)
                .context("package without a name")
        })
        .collect::<anyhow::Result<_>>()?;
    let mut edges = Vec::new();
    for (p, from) in members.iter().zip(&names) {
        for d in p["dependencies"].as_array().into_iter().flatten() {
            let Some(to) = d["name"].as_str() else {
                continue;
            };
            // Only path dependencies can be workspace members (a crates.io crate may share a name).
            if d["path"].is_null() || !names.iter().any(|n| n == to) {
                continue;
            }
            edges.push(Edge {
                from: from.clone(),
                to: to.to_string(),
                kind: d["kind"].as_str().unwrap_or("normal").to_string(),
            });
        }
    }
    let rust_versions = members
        .iter()
        .zip(&names)
        .map(|(p, n)| (n.clone(), p["rust_version"].as_str().map(String::from)))
        .collect();
    Ok(Workspace {
        members: names,
        edges,
        rust_versions,
        target_dir: v["target_directory"].as_str().unwrap_or("target").into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_path_dependencies_become_edges() {
        let v = serde_json::json!({
            "workspace_members": ["a 0.1", "b 0.1"],
            "packages": [
                {"id": "a 0.1", "name": "a", "dependencies": [
                    {"name": "b", "kind": null, "path": "/w/b"},
                    {"name": "serde", "kind": null},
                    {"name": "b", "kind": "dev", "path": "/w/b"}
                ]},
                {"id": "b 0.1", "name": "b", "dependencies": []}
            ]
        });
        let w = parse(&v).unwrap();
        assert_eq!(w.members, vec!["a", "b"]);
        let kinds: Vec<(&str, &str, &str)> = w
            .edges
            .iter()
            .map(|e| (e.from.as_str(), e.to.as_str(), e.kind.as_str()))
            .collect();
        assert_eq!(kinds, vec![("a", "b", "normal"), ("a", "b", "dev")]);
    }

    #[test]
    fn malformed_metadata_is_an_error() {
        assert!(parse(&serde_json::json!({})).is_err());
    }
}
