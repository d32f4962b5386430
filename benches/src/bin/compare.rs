//! `compare`: runs the named cases with the CPython script's method and prints JSON.
//!
//! Run by `cargo xtask compare`, which also runs `benches/python/mp_bench.py` and joins the two.
//! Options: `--quick` (3 repetitions instead of 7, same sizes), `--only a,b`, `--pin
//! none|same|split`, `--reps N`, `--warmup N`, `--json PATH` (default: stdout), `--list`,
//! `--peers` (also run the Rust peers of each case: needs the cargo feature `peers`), `--floor`
//! (measure each case's floor instead of the case: see `benches::floor`).
//! Progress goes to stderr. A case that is not written yet is reported as unavailable; a case that
//! fails is reported with its error and makes the exit status 1.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, bail};
use benches::cases::{CASES, Case, CaseFn, Run};
use benches::measure::measure;
use benches::pin::{Pin, Placement};
use serde_json::{Value, json};

struct Options {
    quick: bool,
    only: Option<Vec<String>>,
    pin: Pin,
    reps: Option<usize>,
    warmup: usize,
    json: Option<String>,
    list: bool,
    peers: bool,
    floor: bool,
}

fn parse_args() -> anyhow::Result<Options> {
    let mut o = Options {
        quick: false,
        only: None,
        pin: Pin::None,
        reps: None,
        warmup: 1,
        json: None,
        list: false,
        peers: false,
        floor: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |what: &str| args.next().with_context(|| format!("{a} needs {what}"));
        match a.as_str() {
            "--quick" => o.quick = true,
            "--list" => o.list = true,
            "--peers" => o.peers = true,
            "--floor" => o.floor = true,
            "--only" => {
                let v = value("a comma-separated list of cases")?;
                o.only
                    .get_or_insert_with(Vec::new)
                    .extend(v.split(',').filter(|s| !s.is_empty()).map(String::from));
            }
            "--pin" => o.pin = Pin::parse(&value("none, same or split")?)?,
            "--reps" => o.reps = Some(value("a count")?.parse().context("--reps")?),
            "--warmup" => o.warmup = value("a count")?.parse().context("--warmup")?,
            "--json" => o.json = Some(value("a path")?),
            other => bail!(
                "unknown option {other:?}; usage: compare [--quick] [--only CASE,..] \
                 [--pin none|same|split] [--reps N] [--warmup N] [--json PATH] [--list] [--peers] \
                 [--floor]"
            ),
        }
    }
    Ok(o)
}

fn params(case: &Case) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("n".into(), json!(case.n));
    for (k, v) in case.params {
        m.insert((*k).into(), json!(v));
    }
    Value::Object(m)
}

fn describe(case: &Case) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("unit".into(), json!(case.unit));
    m.insert("better".into(), json!(case.better));
    m.insert("params".into(), params(case));
    m.insert("target".into(), json!(case.target.map(|t| t.0)));
    m.insert("target_issue".into(), json!(case.target.map(|t| t.1)));
    m.insert("available".into(), json!(case.available()));
    if let benches::cases::Run::NotYet(what) = case.run {
        m.insert("missing".into(), json!(what));
    }
    let peers: Vec<&str> = peers_of(case.name).iter().map(|p| p.0).collect();
    m.insert("peers".into(), json!(peers));
    m.insert(
        "floor".into(),
        json!(benches::floor::of(case.name).map(|f| f.0)),
    );
    m.insert("floor_note".into(), json!(benches::floor::note(case.name)));
    m
}

/// The Rust peers that run `case` (none without the `peers` feature).
#[cfg(feature = "peers")]
fn peers_of(case: &str) -> Vec<(&'static str, CaseFn)> {
    benches::peers::PEERS
        .iter()
        .filter(|p| p.0 == case)
        .map(|p| (p.1, p.2))
        .collect()
}

/// The Rust peers that run `case` (none without the `peers` feature).
#[cfg(not(feature = "peers"))]
fn peers_of(_case: &str) -> Vec<(&'static str, CaseFn)> {
    Vec::new()
}

/// Measures one way of running `case` and prints its line.
fn measure_one(
    label: &str,
    case: &Case,
    f: CaseFn,
    placement: &Placement,
    warmup: usize,
    reps: usize,
) -> Result<serde_json::Map<String, Value>, String> {
    let t = Instant::now();
    let once = || {
        let r = f(placement, case.n);
        placement.case_done()?;
        Ok(case.figure.of(r?, case.n))
    };
    let mut m = serde_json::Map::new();
    match measure(warmup, reps, once) {
        Ok(s) => {
            eprintln!(
                "{label:36} {:>12.3} {:>12.3} {:>12.3}  {}",
                s.median, s.min, s.max, case.unit
            );
            m.insert("median".into(), json!(s.median));
            m.insert("min".into(), json!(s.min));
            m.insert("max".into(), json!(s.max));
            m.insert("samples".into(), json!(s.samples));
            m.insert("case_wall_s".into(), json!(t.elapsed().as_secs_f64()));
            Ok(m)
        }
        Err(e) => {
            eprintln!("{label:36} ERROR {e:#}");
            Err(format!("{e:#}"))
        }
    }
}

fn main() {
    // procspawn children re-enter main: route them before anything else runs.
    #[cfg(feature = "peers")]
    benches::peers::init();
    match run() {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("compare: {e:#}");
            std::process::exit(2);
        }
    }
}

fn run() -> anyhow::Result<bool> {
    let o = parse_args()?;
    let selected: Vec<&Case> = match &o.only {
        None => CASES.iter().collect(),
        Some(names) => {
            let unknown: Vec<&String> = names
                .iter()
                .filter(|n| !CASES.iter().any(|c| c.name == n.as_str()))
                .collect();
            if !unknown.is_empty() {
                bail!("unknown case(s): {unknown:?} (see --list)");
            }
            CASES
                .iter()
                .filter(|c| names.iter().any(|n| n == c.name))
                .collect()
        }
    };
    let reps = o.reps.unwrap_or(if o.quick { 3 } else { 7 });
    anyhow::ensure!(reps >= 1, "--reps must be at least 1");

    let mut results = BTreeMap::new();
    if o.list {
        for c in &selected {
            results.insert(c.name.to_string(), Value::Object(describe(c)));
        }
        return emit(&o, json!({ "cases": results, "order": order(&selected) })).map(|_| true);
    }

    let nproc = rustix::thread::sched_getaffinity(None)
        .map(|s| s.count())
        .unwrap_or(0);
    let placement = Placement::new(o.pin)?;
    eprintln!(
        "ipc (Rust) | nproc={nproc} | pin {} | warmup={} reps={reps}",
        o.pin.as_str(),
        o.warmup
    );
    let started = Instant::now();
    let mut ok = true;
    if o.peers && !cfg!(feature = "peers") {
        bail!("--peers needs the compare binary built with the cargo feature `peers`");
    }
    for case in &selected {
        let mut entry = describe(case);
        if o.floor {
            if let Some((what, f)) = benches::floor::of(case.name) {
                let label = format!("{} floor", case.name);
                match measure_one(&label, case, f, &placement, o.warmup, reps) {
                    Ok(m) => entry.extend(m),
                    Err(e) => {
                        ok = false;
                        entry.insert("error".into(), json!(e));
                    }
                }
                entry.insert("what".into(), json!(what));
                results.insert(case.name.to_string(), Value::Object(entry));
            }
            continue;
        }
        if let Run::Ready(f) = case.run {
            match measure_one(case.name, case, f, &placement, o.warmup, reps) {
                Ok(m) => entry.extend(m),
                Err(e) => {
                    ok = false;
                    entry.insert("error".into(), json!(e));
                }
            }
        } else {
            eprintln!("{:36} not yet", case.name);
        }
        if o.peers {
            let mut peers = serde_json::Map::new();
            for (peer, f) in peers_of(case.name) {
                let label = format!("  {peer}");
                let v = match measure_one(&label, case, f, &placement, o.warmup, reps) {
                    Ok(m) => Value::Object(m),
                    Err(e) => json!({ "error": e }),
                };
                peers.insert(peer.to_string(), v);
            }
            entry.insert("peers".into(), Value::Object(peers));
        }
        results.insert(case.name.to_string(), Value::Object(entry));
    }
    let meta = json!({
        "benchmark": "ipc compare (Rust)",
        "nproc": nproc,
        "pin": o.pin.as_str(),
        "mode": if o.quick { "quick" } else { "full" },
        "warmup": o.warmup,
        "reps": reps,
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "total_wall_s": started.elapsed().as_secs_f64(),
    });
    emit(
        &o,
        json!({ "meta": meta, "order": order(&selected), "results": results }),
    )?;
    Ok(ok)
}

fn order(selected: &[&Case]) -> Value {
    json!(selected.iter().map(|c| c.name).collect::<Vec<_>>())
}

fn emit(o: &Options, v: Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(&v)?;
    match o.json.as_deref() {
        None | Some("-") => println!("{text}"),
        Some(path) => {
            std::fs::write(path, text + "\n").with_context(|| format!("writing {path}"))?
        }
    }
    Ok(())
}
