//! `cargo xtask compare`: this project and CPython's `multiprocessing` side by side, in one run.
//!
//! ```text
//! cargo xtask compare [--quick] [--only CASE,..] [--pin none|same|split] [--peers]
//!                     [--reps N] [--warmup N]
//! ```
//! Builds the `compare` binary of the benches crate in release mode (with the `peers` feature for
//! `--peers`: procspawn and ipc-channel measured next to us; and, for the pool cases, Python's
//! mpire and loky through `benches/python/pool_peers.py` in a virtual environment under
//! `target/pyvenv`, made on first use), asks it for the case registry, then
//! for each case runs the Rust side, `benches/python/mp_bench.py`, the case's floor (`compare
//! --floor`: the same operation by the most direct means, see `benches::floor`) and the peers
//! in turn, one repetition each (after a warm-up), `--reps` times (7; 3 with `--quick`), so
//! that every side sees the same machine state; each side's figure is the median of its turns,
//! with their min and max. Prints the table and writes
//! `target/compare/compare.{json,md,svg}` (raw per-case JSON under `target/compare/raw/`).
//! Cases whose Rust side is not written yet show "not yet"; CPython still runs them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::report::{self, Row, Side};
use crate::{metadata, util};

#[derive(Debug, Default)]
struct Options {
    quick: bool,
    only: Vec<String>,
    pin: Option<String>,
    peers: bool,
    reps: Option<String>,
    warmup: Option<String>,
}

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .with_context(|| format!("{a} needs a value"))
        };
        match a.as_str() {
            "--quick" => o.quick = true,
            "--peers" => o.peers = true,
            "--only" => o.only.extend(
                value()?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from),
            ),
            "--pin" => {
                let v = value()?;
                if !["none", "same", "split"].contains(&v.as_str()) {
                    bail!("--pin takes none, same or split (got {v:?})");
                }
                o.pin = Some(v);
            }
            "--reps" => o.reps = Some(count(value()?, "--reps", 1)?),
            "--warmup" => o.warmup = Some(count(value()?, "--warmup", 0)?),
            other => bail!("unknown option {other:?} for `cargo xtask compare` (see --help)"),
        }
    }
    Ok(o)
}

fn count(v: String, what: &str, min: u64) -> anyhow::Result<String> {
    match v.parse::<u64>() {
        Ok(n) if n >= min => Ok(v),
        _ => bail!("{what} takes a whole number of at least {min} (got {v:?})"),
    }
}

/// The options every runner shares (the repetitions are counted here: see `run`).
fn common_args(o: &Options) -> Vec<String> {
    let mut a = Vec::new();
    if o.quick {
        a.push("--quick".to_string());
    }
    if let Some(p) = &o.pin {
        a.extend(["--pin".to_string(), p.clone()]);
    }
    if let Some(w) = &o.warmup {
        a.extend(["--warmup".to_string(), w.clone()]);
    }
    a
}

/// One side's samples of a case, gathered over the turns (or why it has none).
#[derive(Default)]
struct Samples {
    samples: Vec<f64>,
    error: Option<String>,
}

impl Samples {
    /// Adds the samples of one runner's result entry (or its error).
    fn add(&mut self, entry: &Value) {
        if let Some(e) = entry["error"].as_str() {
            self.error.get_or_insert_with(|| e.to_string());
        }
        self.samples.extend(
            entry["samples"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_f64),
        );
    }

    fn fail(&mut self, e: anyhow::Error) {
        self.error.get_or_insert_with(|| format!("{e:#}"));
    }

    /// The median, min and max of every sample; an error if any turn failed.
    fn side(&self) -> Side {
        if let Some(e) = &self.error {
            return Side::Error(e.clone());
        }
        let mut s = self.samples.clone();
        if s.is_empty() {
            return Side::Missing;
        }
        s.sort_by(f64::total_cmp);
        let median = if s.len() % 2 == 1 {
            s[s.len() / 2]
        } else {
            (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
        };
        Side::Figure {
            median,
            min: s[0],
            max: s[s.len() - 1],
        }
    }
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// A runner's command for one case: `program`, its first arguments, then `--only NAME`, the
/// common options and `--json PATH`.
fn runner(
    program: impl AsRef<std::ffi::OsStr>,
    first: &[&std::ffi::OsStr],
    name: &str,
    common: &[String],
    path: &Path,
) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(first)
        .args(["--only", name])
        .args(common)
        .arg("--json")
        .arg(path);
    cmd
}

/// Runs a benchmark runner that writes JSON to `out`; returns the JSON. Exit status 1 means "a
/// case failed" (recorded in the JSON); anything else without JSON is an error.
///
/// The runner's own output is kept out of the way (seven turns of four runners per case would
/// bury the table) and shown only when it fails.
fn run_side(cmd: &mut Command, out: &Path) -> anyhow::Result<Value> {
    let _ = std::fs::remove_file(out);
    let done = cmd
        .output()
        .with_context(|| format!("could not start `{}`", util::show(cmd)))?;
    let status = done.status;
    if !status.success() {
        eprint!("{}", String::from_utf8_lossy(&done.stdout));
        eprint!("{}", String::from_utf8_lossy(&done.stderr));
    }
    if !status.success() && (status.code() != Some(1) || !out.exists()) {
        bail!("`{}` failed ({status})", util::show(cmd));
    }
    read_json(out)
}

/// The Python of a virtual environment under `target/` with mpire and loky (made on first use:
/// `python3 -m venv`, then `pip install mpire loky`).
fn python_peers_env(target: &Path) -> anyhow::Result<PathBuf> {
    let venv = target.join("pyvenv");
    let python = venv.join("bin/python");
    let ready = |p: &Path| {
        Command::new(p)
            .args(["-c", "import mpire, loky"])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if python.exists() && ready(&python) {
        return Ok(python);
    }
    println!("==> installing mpire and loky into {}", venv.display());
    util::run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    util::run(Command::new(&python).args(["-m", "pip", "install", "--quiet", "mpire", "loky"]))?;
    if !ready(&python) {
        bail!("mpire and loky do not import after pip install");
    }
    Ok(python)
}

/// Runs the comparison.
pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let o = parse(args)?;
    let started = Instant::now();
    let root = util::root();
    let w = metadata::workspace()?;
    let out_dir = w.target_dir.join("compare");
    let raw = out_dir.join("raw");
    std::fs::create_dir_all(&raw).with_context(|| format!("creating {}", raw.display()))?;
    let script = root.join("benches/python/mp_bench.py");

    if !util::installed("python3", &["--version"]) {
        bail!("python3 is needed for the CPython side (benches/python/mp_bench.py); install it");
    }
    // Python's pool peers (mpire, loky), in a virtual environment of their own under target/.
    let py_peers = if o.peers {
        match python_peers_env(&w.target_dir) {
            Ok(python) => Some(python),
            Err(e) => {
                println!("==> the Python pool peers (mpire, loky) are skipped: {e:#}");
                None
            }
        }
    } else {
        None
    };
    let peers_script = root.join("benches/python/pool_peers.py");
    println!("==> building the compare binary (release)");
    let mut build = util::cargo();
    build.args(["build", "--release", "-p", "benches", "--bin", "compare"]);
    if o.peers {
        build.args(["--features", "peers"]);
    }
    util::run(&mut build)?;
    let exe: PathBuf = w.target_dir.join("release/compare");

    let cases_path = raw.join("cases.json");
    let list = run_side(
        Command::new(&exe)
            .args(["--list", "--json"])
            .arg(&cases_path),
        &cases_path,
    )?;
    let order: Vec<String> = list["order"]
        .as_array()
        .context("the case list has no order")?
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    let unknown: Vec<&String> = o.only.iter().filter(|n| !order.contains(n)).collect();
    if !unknown.is_empty() {
        bail!(
            "unknown case(s) {unknown:?}; the cases are: {}",
            order.join(", ")
        );
    }
    let selected: Vec<&String> = order
        .iter()
        .filter(|n| o.only.is_empty() || o.only.contains(n))
        .collect();

    let reps: usize = o
        .reps
        .as_deref()
        .map_or(if o.quick { 3 } else { 7 }, |r| r.parse().unwrap_or(1));
    // Each side runs one repetition (after its warm-up) per turn: ours, CPython, the floor and
    // the peers in turn, `reps` times, so a machine that drifts during a case moves every side
    // alike.
    let mut common = common_args(&o);
    common.extend(["--reps".to_string(), "1".to_string()]);
    let mut rows = Vec::new();
    let mut rust_meta = Value::Null;
    let mut py_meta = Value::Null;
    for name in &selected {
        let case = &list["cases"][name.as_str()];
        print!("==> {name}");
        let _ = std::io::Write::flush(&mut std::io::stdout());
        let has_peers = case["peers"].as_array().is_some_and(|p| !p.is_empty());
        let runs_ours = case["available"] == Value::Bool(true) || (o.peers && has_peers);
        let has_floor = case["floor"].is_string();
        let mut ours = Samples::default();
        let mut cpython = Samples::default();
        let mut floor = Samples::default();
        let mut peers: std::collections::BTreeMap<String, Samples> = Default::default();
        for rep in 0..reps {
            if runs_ours {
                let path = raw.join(format!("rust-{name}-{rep}.json"));
                let mut cmd = runner(&exe, &[], name, &common, &path);
                if o.peers {
                    cmd.arg("--peers");
                }
                match run_side(&mut cmd, &path) {
                    Ok(v) => {
                        rust_meta = v["meta"].clone();
                        let entry = &v["results"][name.as_str()];
                        ours.add(entry);
                        for (peer, e) in entry["peers"].as_object().into_iter().flatten() {
                            peers.entry(peer.clone()).or_default().add(e);
                        }
                    }
                    Err(e) => ours.fail(e),
                }
            }
            let path = raw.join(format!("cpython-{name}-{rep}.json"));
            let mut cmd = runner("python3", &[script.as_os_str()], name, &common, &path);
            match run_side(&mut cmd, &path) {
                Ok(v) => {
                    py_meta = v["meta"].clone();
                    cpython.add(&v["results"][name.as_str()]);
                }
                Err(e) => cpython.fail(e),
            }
            if has_floor {
                let path = raw.join(format!("floor-{name}-{rep}.json"));
                let mut cmd = runner(&exe, &["--floor".as_ref()], name, &common, &path);
                match run_side(&mut cmd, &path) {
                    Ok(v) => floor.add(&v["results"][name.as_str()]),
                    Err(e) => floor.fail(e),
                }
            }
            if let Some(python) = &py_peers
                && name.starts_with("pool_")
            {
                let path = raw.join(format!("pypeers-{name}-{rep}.json"));
                let mut cmd = runner(python, &[peers_script.as_os_str()], name, &common, &path);
                match run_side(&mut cmd, &path) {
                    Ok(v) => {
                        for (peer, e) in v["results"][name.as_str()]
                            .as_object()
                            .into_iter()
                            .flatten()
                        {
                            peers.entry(peer.clone()).or_default().add(e);
                        }
                    }
                    Err(e) => println!("    the Python peers failed: {e:#}"),
                }
            }
            print!(".");
            let _ = std::io::Write::flush(&mut std::io::stdout());
        }
        println!();
        let row = Row {
            name: name.to_string(),
            unit: case["unit"].as_str().unwrap_or("?").to_string(),
            lower_is_better: case["better"] == "lower",
            target: case["target"].as_f64(),
            ours: if runs_ours {
                ours.side()
            } else {
                Side::from_json(Some(case))
            },
            cpython: cpython.side(),
            floor: if has_floor {
                floor.side()
            } else {
                Side::Missing
            },
            floor_note: case["floor_note"].as_str().map(String::from),
            peers: peers.into_iter().map(|(k, v)| (k, v.side())).collect(),
        };
        println!("    {}", report::one_line(&row));
        rows.push(row);
    }

    let wall = started.elapsed().as_secs_f64();
    let python = py_meta["python_version"].as_str().unwrap_or("?");
    let pin = o.pin.as_deref().unwrap_or("none");
    let mode = if o.quick { "quick" } else { "full" };
    let heading = format!(
        "# cargo xtask compare ({mode}, pin {pin})\n\nThis project (release build) against CPython \
         {python} `multiprocessing`, same machine, same run (each case's sides in turn, one repetition each); \
         nproc={}; medians of {} interleaved repetitions, each after {} warm-up; ratio = how \
         many times better this project is, in the case's better direction; x floor = how many \
         times the machine's floor (the same operation by the most direct means) this project \
         costs. Total {wall:.0} s.",
        rust_meta["nproc"]
            .as_u64()
            .or(py_meta["nproc"].as_u64())
            .unwrap_or(0),
        reps,
        o.warmup.as_deref().unwrap_or("1"),
    );
    let table = report::text_table(&rows, o.peers);
    println!("\n{table}");
    let meta = json!({
        "mode": mode, "pin": pin, "peers": o.peers, "total_wall_s": wall,
        "rust": rust_meta, "cpython": py_meta,
    });
    let files = [
        (
            "compare.json",
            serde_json::to_string_pretty(&report::to_json(&rows, meta))? + "\n",
        ),
        ("compare.md", report::markdown(&rows, o.peers, &heading)),
        (
            "compare.svg",
            report::svg(
                &rows,
                &format!("ipc vs CPython {python} multiprocessing ({mode}, pin {pin})"),
            ),
        ),
    ];
    for (name, text) in files {
        let p = out_dir.join(name);
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    }
    println!(
        "written: {0}/compare.json, {0}/compare.md, {0}/compare.svg ({wall:.0} s)",
        out_dir.display()
    );
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| matches!(r.ours, Side::Error(_)) || matches!(r.cpython, Side::Error(_)))
        .map(|r| r.name.as_str())
        .collect();
    if !failed.is_empty() {
        bail!(
            "case(s) failed: {} (see the notes in compare.md)",
            failed.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_parse_and_bad_ones_are_refused() {
        let o = parse(&args(&[
            "--quick", "--only", "a,b", "--only", "c", "--pin", "split",
        ]))
        .unwrap();
        assert!(o.quick && !o.peers);
        assert_eq!(o.only, vec!["a", "b", "c"]);
        assert_eq!(common_args(&o), vec!["--quick", "--pin", "split"]);
        assert!(parse(&args(&["--pin", "both"])).is_err());
        assert!(parse(&args(&["--reps", "0"])).is_err());
        assert!(parse(&args(&["--only"])).is_err());
        assert!(parse(&args(&["--fast"])).is_err());
    }
}
