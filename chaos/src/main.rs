//! `ipc-chaos` (run it with `cargo xtask chaos`): kills participants of every scenario at random
//! moments and at named failpoints, and counts hangs, lost, torn and duplicated records, and
//! leaks. Each round either arms a failpoint in its victim (the points of the scenario in turn,
//! dying at a hit drawn from 1..=4 or 1..=max_nth, half and half) or SIGKILLs it after a random
//! delay, alternately.
//!
//! ```text
//! ipc-chaos [--rounds N] [--seed S] [--only NAME,..] [--out DIR] [--list]
//! per scenario: rounds -> one row (rounds, kills that landed, kills per failpoint, hangs,
//!               lost, torn, duplicated, leaks, errors) -> the table, DIR/chaos.json
//! exit status:  0 when every count is 0 (and, from 200 rounds, every failpoint was hit)
//! ```
//! The failpoints exist only in a build with the `failpoints` feature (`cargo xtask chaos`
//! builds it so); without it this binary refuses to run.
#![deny(unsafe_op_in_unsafe_fn)]

mod fuzz;
mod harness;
mod report;
mod scenarios;

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context as _, bail};

use harness::{Census, Counts, Ctx, Kill, MARKER, PointLog, Rng, method_for};
use report::Row;

const USAGE: &str = "usage: ipc-chaos [--rounds N] [--seed S] [--only NAME,..] [--out DIR] [--list]
       ipc-chaos --fuzz [--inputs N | --full] [--seed S] [--only TARGET,..] [--out DIR]
       ipc-chaos --write-corpus
       ipc-chaos --replay FILE --only TARGET
       ipc-chaos --soak MINUTES [--seed S]";

/// Inputs per fuzz target by default, and with `--full`.
const FUZZ_INPUTS: u64 = 20_000;
const FUZZ_FULL: u64 = 1_000_000;

struct Args {
    rounds: u32,
    seed: u64,
    only: Option<Vec<String>>,
    out: std::path::PathBuf,
    list: bool,
    fuzz: bool,
    inputs: u64,
    write_corpus: bool,
    replay: Option<std::path::PathBuf>,
    soak: Option<u64>,
}

/// The repository's root (the parent of this crate's directory).
pub(crate) fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the chaos crate lives in the workspace")
        .to_path_buf()
}

fn parse() -> anyhow::Result<Args> {
    let mut a = Args {
        rounds: 20,
        seed: 1,
        only: None,
        out: repo_root().join("target/chaos"),
        list: false,
        fuzz: false,
        inputs: FUZZ_INPUTS,
        write_corpus: false,
        replay: None,
        soak: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--rounds" => a.rounds = value()?.parse().context("--rounds")?,
            "--seed" => a.seed = value()?.parse().context("--seed")?,
            "--only" => a.only = Some(value()?.split(',').map(str::to_owned).collect()),
            "--out" => a.out = value()?.into(),
            "--list" => a.list = true,
            "--fuzz" => a.fuzz = true,
            "--inputs" => a.inputs = value()?.parse().context("--inputs")?,
            "--full" => a.inputs = FUZZ_FULL,
            "--write-corpus" => a.write_corpus = true,
            "--replay" => a.replay = Some(value()?.into()),
            "--soak" => a.soak = Some(value()?.parse().context("--soak MINUTES")?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(a)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("ipc-chaos: error: {e:#}");
        std::process::exit(2);
    }
}

fn run() -> anyhow::Result<()> {
    let args = parse()?;
    if args.write_corpus {
        return fuzz::write_corpus();
    }
    if let Some(file) = &args.replay {
        let target = args
            .only
            .as_ref()
            .and_then(|o| o.first())
            .context("--replay needs --only TARGET")?;
        return fuzz::replay(target, file);
    }
    if args.fuzz {
        std::fs::create_dir_all(&args.out)?;
        if !fuzz::run(args.inputs, args.seed, args.only.as_deref(), &args.out)? {
            bail!("the fuzzers found faults (see above), or decoded 10% of inputs or less");
        }
        return Ok(());
    }
    let all = scenarios::all();
    if args.list {
        for s in &all {
            println!("{:<20} {}  [{}]", s.name, s.about, s.points.join(", "));
        }
        return Ok(());
    }
    if !cfg!(feature = "failpoints") {
        bail!("built without the `failpoints` feature: run it with `cargo xtask chaos`");
    }
    let chosen: Vec<_> = match &args.only {
        None => all.iter().collect(),
        Some(names) => {
            for n in names {
                if !all.iter().any(|s| s.name == n) {
                    bail!("no scenario {n:?} (see --list)");
                }
            }
            all.iter()
                .filter(|s| names.iter().any(|n| n == s.name))
                .collect()
        }
    };
    std::fs::create_dir_all(&args.out)?;
    let out = std::fs::canonicalize(&args.out)?;
    let log = PointLog(out.join("failpoints.log"));
    // SAFETY: the first thing main does, before any thread or child exists: nothing reads the
    // environment concurrently. Every process of the run inherits both variables.
    unsafe {
        std::env::set_var(MARKER, std::process::id().to_string());
        std::env::set_var(ipc_core::failpoint::LOG_ENV, &log.0);
    }
    // The runner's forkserver starts before any census: it is kept on purpose.
    ipc_core::process::Builder::new()
        .start_method(ipc_core::process::StartMethod::ForkServer)
        .spawn((), |()| ())?
        .join()?;
    // And the shared heap's first arena: the runner keeps it for the whole run.
    let _warm = harness::board()?;
    if let Some(minutes) = args.soak {
        if !soak(minutes, &args, &log, &out)? {
            bail!("the soak found faults, drift past 5%, or descriptors or segments left");
        }
        return Ok(());
    }
    println!(
        "ipc-chaos: {} scenario(s), {} rounds each, seed {}",
        chosen.len(),
        args.rounds,
        args.seed
    );
    let started = Instant::now();
    let mut rows = Vec::new();
    for s in chosen {
        let row = scenario(s, &args, &log);
        println!("{}", report::line(&row));
        rows.push(row);
    }
    report::print(&rows, args.rounds);
    let json = report::json(&rows, args.seed, args.rounds, started.elapsed());
    std::fs::write(out.join("chaos.json"), serde_json::to_string_pretty(&json)?)?;
    println!("wrote {}", out.join("chaos.json").display());
    let bad = rows.iter().filter(|r| !r.clean(args.rounds)).count();
    if bad > 0 {
        bail!("{bad} scenario(s) found faults (see the notes above)");
    }
    Ok(())
}

/// Runs the rounds of one scenario.
fn scenario(s: &scenarios::Scenario, args: &Args, log: &PointLog) -> Row {
    let mut row = Row::new(s.name, s.points);
    for round in 0..args.rounds {
        one_round(s, args.seed, round, log, &mut row);
    }
    row
}

/// Runs round `round` of `s` (its kill plan and start method drawn from `seed`) into `row`.
fn one_round(s: &scenarios::Scenario, seed: u64, round: u32, log: &PointLog, row: &mut Row) {
    let mut rng = Rng::for_round(seed, s.name, round);
    let kill = if !s.points.is_empty() && round.is_multiple_of(2) {
        let name = s.points[(round as usize / 2) % s.points.len()];
        // Half the rounds die at one of the first few hits: a point that is rarely hit in a
        // round (a wake that needs a sleeper) is then reached too.
        let spread = if rng.below(2) == 0 { 4 } else { s.max_nth };
        Kill::Point {
            name: name.to_owned(),
            nth: 1 + rng.below(u64::from(spread.min(s.max_nth))) as u32,
        }
    } else {
        Kill::Random {
            after_us: rng.below(s.window_us),
        }
    };
    let mut ctx = Ctx {
        rng,
        kill: kill.clone(),
        method: method_for(round),
    };
    let census = Census::take();
    log.clear();
    let outcome = (s.run)(&mut ctx);
    let leaks = census.leaks_since();
    let fired = log.fired();
    let counts = match outcome {
        Ok(c) => c,
        Err(e) => {
            row.errors += 1;
            row.notes
                .push(format!("round {round} ({kill:?}, {:?}): {e:#}", ctx.method));
            Counts::default()
        }
    };
    row.add(round, &kill, ctx.method, &counts, &leaks, &fired);
}

/// `--soak MINUTES`: every scenario in turn, round after round, for that long. After a
/// minute's warm-up the runner's and its forkserver's resident sets are sampled at the end of
/// every cycle (one round of each scenario); the median of the last fifth of the samples may
/// exceed the median of the first fifth by at most 5%, and the runner's
/// descriptors and the /dev/shm entries must be exactly what they were when the warm-up ended.
fn soak(minutes: u64, args: &Args, log: &PointLog, out: &std::path::Path) -> anyhow::Result<bool> {
    let all = scenarios::all();
    let mut rows: Vec<Row> = all.iter().map(|s| Row::new(s.name, s.points)).collect();
    let fds = harness::open_fds;
    let shm = || std::fs::read_dir("/dev/shm").map_or(0, |d| d.count());
    let rss = || {
        let of = |pid: u32| -> u64 {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("VmRSS:"))?
                        .split_whitespace()
                        .nth(1)?
                        .parse()
                        .ok()
                })
                .unwrap_or(0)
        };
        of(std::process::id()) + ipc_core::process::forkserver_pid().map_or(0, of)
    };
    let started = Instant::now();
    let warm = std::time::Duration::from_secs(60);
    let end = started + std::time::Duration::from_secs(minutes * 60);
    // (seconds since the start, KiB) at the end of each cycle after the warm-up.
    let mut samples: Vec<(u64, u64)> = Vec::new();
    // Descriptors and segments as the warm-up leaves them (the shared heap's arenas settle).
    let (mut fds0, mut shm0) = (fds(), shm());
    let mut rounds = 0u64;
    let mut k = 0usize;
    while Instant::now() < end {
        let i = k % all.len();
        let round = (k / all.len()) as u32;
        one_round(&all[i], args.seed, round, log, &mut rows[i]);
        k += 1;
        rounds += 1;
        // Sampled at the same point of each cycle (after its last scenario): the resident set
        // swings by a third within a cycle, with what each scenario allocates and frees.
        if started.elapsed() >= warm && i == all.len() - 1 {
            if samples.is_empty() {
                (fds0, shm0) = (fds(), shm());
            }
            samples.push((started.elapsed().as_secs(), rss()));
        }
    }
    let (fds1, shm1) = (fds(), shm());
    // A sample swings by a quarter either way with what the last rounds allocated (glibc keeps
    // per-thread arenas): compare the medians of the first and the last fifth of the samples.
    let median = |part: &[(u64, u64)]| -> u64 {
        let mut v: Vec<u64> = part.iter().map(|s| s.1).collect();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    };
    let fifth = (samples.len() / 5).max(1);
    let first = median(&samples[..fifth.min(samples.len())]).max(1);
    let last = median(&samples[samples.len().saturating_sub(fifth)..]);
    let drift = 100.0 * (last as f64 - first as f64) / first as f64;
    let lo = samples.iter().map(|s| s.1).min().unwrap_or(0);
    let hi = samples.iter().map(|s| s.1).max().unwrap_or(0);
    report::print(&rows, 0);
    println!(
        "soak: {minutes} min, {rounds} rounds, {} samples; resident set (runner + forkserver): \
         median of the first fifth {first} KiB, of the last fifth {last} KiB (drift \
         {drift:+.1}%), min {lo} KiB, max {hi} KiB; descriptors {fds0} -> {fds1}; /dev/shm \
         entries {shm0} -> {shm1}",
        samples.len()
    );
    let json = serde_json::json!({
        "minutes": minutes, "rounds": rounds,
        "rss_kib": {"first_fifth_median": first, "last_fifth_median": last, "min": lo, "max": hi,
                    "drift_percent": drift, "samples": samples},
        "fds": {"start": fds0, "end": fds1}, "shm_entries": {"start": shm0, "end": shm1},
        "scenarios": report::json(&rows, args.seed, 0, started.elapsed())["scenarios"].clone(),
    });
    std::fs::write(out.join("soak.json"), serde_json::to_string_pretty(&json)?)?;
    let clean = rows.iter().all(|r| r.clean(0)) && drift <= 5.0 && fds0 == fds1 && shm0 == shm1;
    Ok(clean)
}

/// Kills per failpoint, in the order the scenario names them.
pub(crate) type PerPoint = BTreeMap<String, u64>;
