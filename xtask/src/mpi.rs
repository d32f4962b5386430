//! `cargo xtask mpi`: the opt-in MPI pool (`ipc-pool-mpi`, outside the workspace: it needs
//! OpenMPI and libclang, which the default build must not).
//!
//! ```text
//! cargo xtask mpi                 its tests (real mpirun jobs, both launch modes) and the tour
//! cargo xtask mpi compare [N]     against mpi4py.futures' MPIPoolExecutor, N interleaved turns
//!                                 (default 5), over 4 serving ranks (mpirun -n 5) each side
//! ```
//! Both build into `target/mpi` with the crate's own lock file. The packages come from
//! `.ci/run` (or `apt-get install libopenmpi-dev openmpi-bin libclang-dev`); mpi4py is
//! installed with pip into `target/mpi/pyvenv` on first use.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::util;

/// The MPI crate's manifest and target directory.
fn paths() -> (PathBuf, PathBuf) {
    let root = util::root();
    (
        root.join("ipc-pool-mpi/Cargo.toml"),
        root.join("target/mpi"),
    )
}

/// `cargo <command> --manifest-path ipc-pool-mpi/Cargo.toml <rest>` into target/mpi.
fn cargo(args: &[&str]) -> Command {
    let (manifest, target) = paths();
    let mut c = util::cargo();
    c.arg(args[0])
        .arg("--manifest-path")
        .arg(manifest)
        .args(&args[1..])
        .env("CARGO_TARGET_DIR", target);
    c
}

/// Where this run's MPI jobs keep their files (OpenMPI's shared-memory segments and session
/// directories): one directory under /dev/shm per `cargo xtask mpi`, removed at its end, so an
/// aborted job's `vader_segment.*` files do not stay behind (the tests do the same per job).
fn job_dir() -> PathBuf {
    PathBuf::from(format!(
        "/dev/shm/ipc-pool-mpi-xtask.{}",
        std::process::id()
    ))
}

/// `mpirun --oversubscribe <args>`, allowed to run as root (CI runs as root), its files in
/// [`job_dir`].
fn mpirun(args: &[&str]) -> Command {
    let mut c = Command::new("mpirun");
    c.arg("--oversubscribe")
        .args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        // One host: MPI's TCP traffic on loopback (see ipc-pool-mpi/tests/mpi.rs).
        .env("OMPI_MCA_btl_tcp_if_include", "lo")
        .env("OMPI_MCA_btl_vader_backing_directory", job_dir())
        .env("OMPI_MCA_orte_tmpdir_base", job_dir());
    c
}

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    if !util::installed("mpirun", &["--version"]) {
        bail!(
            "mpirun is not installed: apt-get install libopenmpi-dev openmpi-bin libclang-dev \
             (.ci/run does)"
        );
    }
    std::fs::create_dir_all(job_dir())?;
    let result = match args.first().map(String::as_str) {
        None => test_and_tour(),
        Some("compare") => args
            .get(1)
            .map_or(Ok(5), |n| n.parse())
            .context("turns")
            .and_then(compare),
        Some(other) => Err(anyhow::anyhow!(
            "unknown `cargo xtask mpi` argument {other:?}: none, or compare [N]"
        )),
    };
    let _ = std::fs::remove_dir_all(job_dir());
    result
}

fn test_and_tour() -> anyhow::Result<()> {
    util::run(&mut cargo(&["fmt", "--check"]))?;
    util::run(&mut cargo(&[
        "clippy",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // One MPI job at a time: several at once on two cores starve heartbeats.
    util::run(&mut cargo(&[
        "test",
        "--release",
        "--",
        "--test-threads",
        "1",
    ]))?;
    let (_, target) = paths();
    let tour = target.join("release/examples/tour");
    println!("==> the tour, world mode: mpirun -n 4 (rank 0 drives, ranks 1-3 serve)");
    util::run(mpirun(&["-n", "4"]).arg(&tour).arg("world"))?;
    println!("==> the tour, spawn mode: mpirun -n 1, 3 ranks spawned");
    util::run(mpirun(&["-n", "1"]).arg(&tour).args(["spawn", "3"]))
}

/// The Python of target/mpi/pyvenv, with mpi4py (installed on first use).
fn mpi4py(target: &Path) -> anyhow::Result<PathBuf> {
    let venv = target.join("pyvenv");
    let python = venv.join("bin/python");
    let ready =
        |p: &Path| util::installed(&p.display().to_string(), &["-c", "import mpi4py.futures"]);
    if !ready(&python) {
        println!("==> installing mpi4py into {}", venv.display());
        util::run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        util::run(Command::new(&python).args(["-m", "pip", "install", "--quiet", "mpi4py"]))?;
    }
    Ok(python)
}

/// One side's figures from its output lines: (chunk1 s, chunk100 s, cpu32 speedup).
fn figures(lines: &str) -> anyhow::Result<(f64, f64, f64)> {
    let find = |key: &str, word: usize| -> anyhow::Result<f64> {
        let line = lines
            .lines()
            .find(|l| l.starts_with(key))
            .with_context(|| format!("no `{key}` line in:\n{lines}"))?;
        Ok(line
            .split_whitespace()
            .nth(word)
            .context("a figure")?
            .parse()?)
    };
    Ok((
        find("trivial_chunk1:", 1)?,
        find("trivial_chunk100:", 1)?,
        find("cpu32:", 4)?,
    ))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn compare(turns: usize) -> anyhow::Result<()> {
    let (root, target) = (util::root(), paths().1);
    util::run(&mut cargo(&["build", "--release", "--examples"]))?;
    let python = mpi4py(&target)?;
    let ours_exe = target.join("release/examples/scenarios");
    let peer_script = root.join("ipc-pool-mpi/bench/mpi4py_pool.py");
    let (mut ours, mut peer) = (Vec::new(), Vec::new());
    for turn in 1..=turns {
        let mut a = mpirun(&["-n", "5"]);
        a.arg(&ours_exe).args(["world", "bench", "1"]);
        let mut b = mpirun(&["-n", "5"]);
        b.arg(&python)
            .args(["-m", "mpi4py.futures"])
            .arg(&peer_script)
            .arg("1");
        for (cmd, into) in [(&mut a, &mut ours), (&mut b, &mut peer)] {
            let out = cmd.output()?;
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            if !out.status.success() {
                bail!(
                    "{} failed:\n{text}\n{}",
                    util::show(cmd),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            into.push(figures(&text)?);
        }
        println!(
            "turn {turn}/{turns}: ours {:?}, mpi4py {:?}",
            ours[turn - 1],
            peer[turn - 1]
        );
    }
    let col =
        |v: &[(f64, f64, f64)], k: usize| median(v.iter().map(|t| [t.0, t.1, t.2][k]).collect());
    println!("\n| case (4 serving ranks, mpirun -n 5) | ours | mpi4py.futures | ratio | target |");
    println!("|---|---|---|---|---|");
    let mut json = Vec::new();
    for (k, name, target_ratio) in [
        (0, "10 000 trivial tasks, chunksize 1", 10.0),
        (1, "10 000 trivial tasks, chunksize 100", 10.0),
    ] {
        let (o, p) = (col(&ours, k), col(&peer, k));
        let ratio = p / o;
        println!(
            "| {name} | {:.2} ms | {:.2} ms | {ratio:.1}x | >= {target_ratio}x {} |",
            o * 1e3,
            p * 1e3,
            if ratio >= target_ratio {
                "met"
            } else {
                "NOT met"
            }
        );
        json.push(format!(
            "{{\"case\":\"{name}\",\"ours_s\":{o},\"mpi4py_s\":{p},\"ratio\":{ratio}}}"
        ));
    }
    let (o, p) = (col(&ours, 2), col(&peer, 2));
    let ratio = o / p;
    println!(
        "| 32 CPU tasks of ~10 ms: speedup | {o:.2} | {p:.2} | {ratio:.2}x | >= 0.95x {} |",
        if ratio >= 0.95 { "met" } else { "NOT met" }
    );
    json.push(format!(
        "{{\"case\":\"cpu32 speedup\",\"ours\":{o},\"mpi4py\":{p},\"ratio\":{ratio}}}"
    ));
    let out = target.join("compare.json");
    std::fs::write(&out, format!("[{}]\n", json.join(",")))?;
    println!(
        "\n(medians of {turns} interleaved turns; written to {})",
        out.display()
    );
    Ok(())
}
