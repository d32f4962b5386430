//! `cargo xtask ci`: the whole gate, as `.ci/run` runs it on a machine with only the toolchain.
//!
//! Steps, in order, stopping at the first failure: `cargo fmt --all -- --check`, `cargo clippy
//! --workspace --all-targets -- -D warnings`, the MSRV check, `layers`, `tidy`, `test` (every
//! test and doc test),
//! the benches smoke run (`cargo test -p benches --benches`: each bench once with one iteration),
//! the loom model check of ipc-sync's state machines, a short pass of `cargo xtask chaos`
//! (4 rounds of every scenario and 2000 inputs of every fuzz target: every count must be 0),
//! and `cargo publish --dry-run` of every
//! library crate (packaged and built as crates.io would, each against the others' packages).
//! Then, always, the leak check (see `leaks.rs`): no process started by the run and no new
//! `/dev/shm` entry may remain.

use std::time::Instant;

use anyhow::bail;

use crate::{layers, leaks, metadata, test, tidy, util};

type Step = (&'static str, Box<dyn Fn() -> anyhow::Result<()>>);

/// Model-checks ipc-sync's state machines (lock, rlock, condition, semaphore, event, barrier)
/// with loom, in a target directory of its own (`--cfg loom` rebuilds every dependency).
fn loom() -> anyhow::Result<()> {
    let mut cmd = util::cargo();
    cmd.args([
        "test",
        "--release",
        "-p",
        "ipc-sync",
        "--test",
        "loom_lock_condition",
    ])
    .env("RUSTFLAGS", "--cfg loom")
    .env("CARGO_TARGET_DIR", util::root().join("target/loom"));
    util::run(&mut cmd)
}

/// The minimum supported Rust version is checked, not assumed: every member declares the same
/// `rust-version`, and the workspace builds with that toolchain. If the active toolchain is that
/// version, every other step of the gate is the check; otherwise `cargo +<msrv> check` runs in
/// a target directory of its own (and the toolchain must be installed: none is fetched).
fn msrv() -> anyhow::Result<()> {
    let ws = metadata::workspace()?;
    let mut declared: Vec<&str> = Vec::new();
    for (name, v) in &ws.rust_versions {
        let Some(v) = v else {
            bail!("{name} declares no rust-version (use `rust-version.workspace = true`)");
        };
        if !declared.contains(&v.as_str()) {
            declared.push(v);
        }
    }
    let [msrv] = declared[..] else {
        bail!("the members declare different rust-versions: {declared:?}");
    };
    // rustup names a toolchain by its full version.
    let toolchain = match msrv.split('.').count() {
        2 => format!("{msrv}.0"),
        _ => msrv.to_string(),
    };
    let out = std::process::Command::new("rustc")
        .arg("--version")
        .output()?;
    let active = String::from_utf8_lossy(&out.stdout);
    let active = active.split_whitespace().nth(1).unwrap_or("?");
    if active == toolchain {
        println!("msrv: the active toolchain is the MSRV ({toolchain}); every step builds on it");
        return Ok(());
    }
    let probe = std::process::Command::new("rustc")
        .arg(format!("+{toolchain}"))
        .arg("--version")
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        bail!(
            "the MSRV is {msrv} and the active toolchain {active}: install the MSRV's \
             (`rustup toolchain install {toolchain}`) so that ci can check it"
        );
    }
    let mut cmd = std::process::Command::new("cargo");
    cmd.arg(format!("+{toolchain}"))
        .args(["check", "--workspace", "--all-targets", "--locked"])
        .env("CARGO_TARGET_DIR", util::root().join("target/msrv"));
    util::run(&mut cmd)
}

/// Packages and builds each library crate as `cargo publish` would (the tooling crates are
/// `publish = false`), without uploading anything.
///
/// Cargo takes the packaged crates as registry crates of a fixed version, and registry crates
/// never change: it would reuse their sources unpacked by an earlier run (under
/// `$CARGO_HOME/registry/src/-*/`) and their builds in the target directory, and verify today's
/// crates against yesterday's. So the unpacked copies of our crates go first, and the build
/// runs in a target directory of its own, made afresh.
fn publish_dry_run() -> anyhow::Result<()> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cargo")));
    if let Some(src) = cargo_home.map(|h| h.join("registry/src"))
        && let Ok(registries) = std::fs::read_dir(&src)
    {
        for registry in registries.flatten() {
            // The local overlay's directory; crates.io's is `index.crates.io-*`.
            if !registry.file_name().to_string_lossy().starts_with('-') {
                continue;
            }
            for unpacked in std::fs::read_dir(registry.path())?.flatten() {
                let name = unpacked.file_name().to_string_lossy().into_owned();
                if ["ipc-core-", "ipc-sync-", "ipc-pool-", "ipc-manager-"]
                    .iter()
                    .any(|c| name.starts_with(c))
                {
                    std::fs::remove_dir_all(unpacked.path())?;
                }
            }
        }
    }
    let target = util::root().join("target/publish");
    let _ = std::fs::remove_dir_all(&target);
    let mut cmd = util::cargo();
    cmd.env("CARGO_TARGET_DIR", &target).args([
        "publish",
        "--workspace",
        "--dry-run",
        "--allow-dirty",
        "--exclude",
        "benches",
        "--exclude",
        "xtask",
        "--exclude",
        "demo",
    ]);
    util::run(&mut cmd)
}

/// Runs the gate; `--cargo-test` is passed on to the test step.
pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let test_args: Vec<String> = args.to_vec();
    for a in args {
        if a != "--cargo-test" {
            bail!("unknown option {a:?} for `cargo xtask ci` (see --help)");
        }
    }
    let snapshot = leaks::start()?;
    let steps: Vec<Step> = vec![
        (
            "fmt",
            Box::new(|| util::run(util::cargo().args(["fmt", "--all", "--", "--check"]))),
        ),
        (
            "clippy",
            Box::new(|| {
                // The chaos runner's feature too, so its failpoint-only code is linted.
                let features = format!("{},chaos/failpoints", test::TEST_FEATURES);
                util::run(util::cargo().args([
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--features",
                    &features,
                    "--",
                    "-D",
                    "warnings",
                ]))
            }),
        ),
        ("msrv", Box::new(msrv)),
        ("layers", Box::new(layers::run)),
        ("tidy", Box::new(tidy::run)),
        ("test", Box::new(move || test::run(&test_args))),
        (
            "benches smoke",
            Box::new(|| util::run(util::cargo().args(["test", "-p", "benches", "--benches"]))),
        ),
        ("loom", Box::new(loom)),
        (
            "chaos pass",
            Box::new(|| {
                let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
                crate::chaos::run(&args(&["--rounds", crate::chaos::CI_ROUNDS]))?;
                crate::chaos::run(&args(&["--fuzz", "--inputs", crate::chaos::CI_FUZZ_INPUTS]))
            }),
        ),
        ("publish dry-run", Box::new(publish_dry_run)),
    ];
    let mut report = Vec::new();
    let mut failed = None;
    for (name, step) in &steps {
        if failed.is_some() {
            report.push(format!("  {name:14} skipped"));
            continue;
        }
        println!("\n==> ci: {name}");
        let t = Instant::now();
        let r = step();
        let secs = t.elapsed().as_secs_f64();
        match r {
            Ok(()) => report.push(format!("  {name:14} ok      {secs:>7.1} s")),
            Err(e) => {
                report.push(format!("  {name:14} FAILED  {secs:>7.1} s  {e:#}"));
                failed = Some(format!("{name}: {e:#}"));
            }
        }
    }
    println!("\n==> ci: leak check");
    let leak = leaks::check(&snapshot);
    report.push(match &leak {
        Ok(()) => "  leaks          ok".to_string(),
        Err(e) => format!("  leaks          FAILED  {e:#}"),
    });
    println!("\nci summary:");
    for r in &report {
        println!("{r}");
    }
    if let Some(f) = failed {
        bail!("ci failed at {f}");
    }
    leak?;
    println!("ci: all green");
    Ok(())
}
