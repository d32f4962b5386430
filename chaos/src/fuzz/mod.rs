//! Fuzzing on stable Rust of the decoders that read bytes another process wrote: structure-aware
//! mutations of valid encodings, fed through real sockets to the real receivers.
//!
//! ```text
//! input      chunks (records on a SOCK_SEQPACKET pair, or byte runs on a stream) + how many
//!            descriptors ride on the first one; stored as: u8 fds, then (u32 len, bytes)*
//! corpus     chaos/corpus/<target>/*.bin (valid encodings, made by the real senders; regenerate
//!            with --write-corpus) and the target's own seeds
//! mutation   1-4 of: flip a bit, set a byte or a u32/u64 field to an edge value, truncate,
//!            extend, insert, duplicate or drop a chunk, splice from another seed, change the
//!            descriptor count; then, half the time, fix the frame headers' length fields so
//!            the mutation reaches the payload's decoder
//! a target   runs one input: Decoded or Refused (a clear error). A panic, a signal, an input
//!            pending 2 s, or a descriptor left open is a fault; the input is saved under
//!            target/chaos/fuzz-crashes/
//! ```
//! Each target runs in a child process (so a crash is counted and its input kept), which
//! copies every input into shared memory before running it.

mod targets;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipc_core::shm::ShmSlice;
use serde::{Deserialize, Serialize};

use crate::harness::Rng;

/// An input: chunks and the number of descriptors sent with the first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Input {
    pub(crate) chunks: Vec<Vec<u8>>,
    pub(crate) fds: u8,
}

impl Input {
    fn to_bytes(&self) -> Vec<u8> {
        let mut v = vec![self.fds];
        for c in &self.chunks {
            v.extend_from_slice(&(c.len() as u32).to_le_bytes());
            v.extend_from_slice(c);
        }
        v
    }

    fn from_bytes(b: &[u8]) -> Option<Input> {
        let (&fds, mut rest) = b.split_first()?;
        let mut chunks = Vec::new();
        while !rest.is_empty() {
            let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
            chunks.push(rest.get(4..4 + len)?.to_vec());
            rest = &rest[4 + len..];
        }
        Some(Input { chunks, fds })
    }
}

/// What one input did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It decoded (or the handshake passed).
    Decoded,
    /// A clear error.
    Refused,
}

/// A decoder under test.
pub(crate) struct Target {
    pub(crate) name: &'static str,
    pub(crate) about: &'static str,
    /// Valid encodings, made by the real senders.
    pub(crate) seeds: fn() -> anyhow::Result<Vec<Input>>,
    /// Runs one input.
    pub(crate) run: fn(&Input) -> anyhow::Result<Outcome>,
    /// Fixes frame lengths after a mutation (structure awareness).
    pub(crate) fix: fn(&mut Input),
}

/// The largest input kept in shared memory for a crash report.
const SLOT: usize = 1 << 20;
/// An input pending this long is a hang.
const INPUT_HANG: Duration = Duration::from_secs(2);

/// A target's tally.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct Tally {
    pub(crate) inputs: u64,
    pub(crate) decoded: u64,
    pub(crate) panics: u64,
    pub(crate) hangs: u64,
    pub(crate) fd_leaks: u64,
    pub(crate) errors: u64,
    pub(crate) notes: Vec<String>,
}

fn corpus_dir(target: &str) -> PathBuf {
    crate::repo_root().join("chaos/corpus").join(target)
}

/// The target's seeds: its own, and those stored in the repo.
fn corpus(t: &Target) -> anyhow::Result<Vec<Input>> {
    let mut seeds = (t.seeds)()?;
    if let Ok(dir) = std::fs::read_dir(corpus_dir(t.name)) {
        let mut files: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            if let Some(i) = std::fs::read(&f).ok().and_then(|b| Input::from_bytes(&b)) {
                seeds.push(i);
            }
        }
    }
    Ok(seeds)
}

/// Runs one saved input (a crash report, a corpus file) on `target`, in this process.
pub(crate) fn replay(target: &str, file: &Path) -> anyhow::Result<()> {
    let t = targets::all()
        .into_iter()
        .find(|t| t.name == target)
        .ok_or_else(|| anyhow::anyhow!("no fuzz target {target:?}"))?;
    let input = Input::from_bytes(&std::fs::read(file)?)
        .ok_or_else(|| anyhow::anyhow!("{} is not a fuzz input", file.display()))?;
    println!("{target}: {:?}", (t.run)(&input)?);
    Ok(())
}

/// Writes each target's seeds into the repo's corpus.
pub(crate) fn write_corpus() -> anyhow::Result<()> {
    for t in targets::all() {
        let dir = corpus_dir(t.name);
        std::fs::create_dir_all(&dir)?;
        for (i, s) in (t.seeds)()?.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:02}.bin")), s.to_bytes())?;
        }
        println!("{}: wrote seeds to {}", t.name, dir.display());
    }
    Ok(())
}

const EDGE_U8: [u8; 6] = [0, 1, 0x7F, 0x80, 0xFE, 0xFF];
const EDGE_U64: [u64; 9] = [
    0,
    1,
    12,
    255,
    8180,
    1 << 30,
    (1 << 30) + 1,
    u32::MAX as u64,
    u64::MAX,
];

/// One mutation of `input`, drawing splices from `seeds`.
fn mutate(input: &mut Input, seeds: &[Input], rng: &mut Rng) {
    if input.chunks.is_empty() {
        input.chunks.push(Vec::new());
    }
    let ci = rng.below(input.chunks.len() as u64) as usize;
    let at = |rng: &mut Rng, len: usize| rng.below(len.max(1) as u64) as usize;
    let n_chunks = input.chunks.len();
    let kind = rng.below(11);
    match kind {
        6 => {
            let dup = input.chunks[ci].clone();
            input.chunks.insert(ci, dup);
            return;
        }
        7 if n_chunks > 1 => {
            input.chunks.remove(ci);
            return;
        }
        9 => {
            input.fds = rng.below(6) as u8;
            return;
        }
        _ => {}
    }
    let c = &mut input.chunks[ci];
    match kind {
        0 if !c.is_empty() => {
            let i = at(rng, c.len());
            c[i] ^= 1 << rng.below(8);
        }
        1 if !c.is_empty() => {
            let i = at(rng, c.len());
            c[i] = EDGE_U8[rng.below(EDGE_U8.len() as u64) as usize];
        }
        2 if c.len() >= 8 => {
            let i = at(rng, c.len() - 7);
            let v = EDGE_U64[rng.below(EDGE_U64.len() as u64) as usize];
            c[i..i + 8].copy_from_slice(&v.to_le_bytes());
        }
        3 if c.len() >= 4 => {
            let i = at(rng, c.len() - 3);
            let v = EDGE_U64[rng.below(EDGE_U64.len() as u64) as usize] as u32;
            c[i..i + 4].copy_from_slice(&v.to_le_bytes());
        }
        4 => {
            let n = at(rng, c.len() + 1);
            c.truncate(n);
        }
        5 => {
            let n = 1 + rng.below(64) as usize;
            let i = at(rng, c.len() + 1);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            c.splice(i..i, bytes);
        }
        8 if !seeds.is_empty() => {
            let s = &seeds[rng.below(seeds.len() as u64) as usize];
            if let Some(other) = s
                .chunks
                .get(rng.below(s.chunks.len().max(1) as u64) as usize)
            {
                let cut = at(rng, c.len() + 1);
                let from = at(rng, other.len() + 1);
                c.truncate(cut);
                c.extend_from_slice(&other[from..]);
            }
        }
        _ if !c.is_empty() => {
            let i = at(rng, c.len());
            c[i] = rng.next_u64() as u8;
        }
        _ => c.push(rng.next_u64() as u8),
    }
}

/// Arguments of a target's child.
#[derive(Serialize, Deserialize)]
struct Job {
    target: String,
    inputs: u64,
    seed: u64,
    slot: ShmSlice<u8>,
}

/// The child: runs `inputs` mutated inputs of one target.
fn child(job: Job) -> Tally {
    let t = targets::all()
        .into_iter()
        .find(|t| t.name == job.target)
        .expect("a known target");
    let mut tally = Tally::default();
    let seeds = match corpus(&t) {
        Ok(s) if !s.is_empty() => s,
        Ok(_) => {
            tally.errors += 1;
            tally.notes.push("no seeds".into());
            return tally;
        }
        Err(e) => {
            tally.errors += 1;
            tally.notes.push(format!("seeds: {e:#}"));
            return tally;
        }
    };
    // Panics are counted, not printed 10^6 times.
    std::panic::set_hook(Box::new(|_| {}));
    // One run first: what a target keeps for all its inputs (its segments) is not a leak.
    let _ = std::panic::catch_unwind(|| (t.run)(&seeds[0]));
    let fds_before = crate::harness::open_fds();
    let mut rng = Rng::new(job.seed);
    for n in 0..job.inputs {
        let mut input = seeds[rng.below(seeds.len() as u64) as usize].clone();
        // One in ten is a seed as is: the valid path stays exercised.
        if rng.below(10) != 0 {
            for _ in 0..1 + rng.below(4) {
                mutate(&mut input, &seeds, &mut rng);
            }
            if rng.below(2) == 0 {
                (t.fix)(&mut input);
            }
        }
        stash(&job.slot, &input);
        let start = Instant::now();
        let r = std::panic::catch_unwind(|| (t.run)(&input));
        tally.inputs += 1;
        match r {
            Ok(Ok(Outcome::Decoded)) => tally.decoded += 1,
            Ok(Ok(Outcome::Refused)) => {}
            Ok(Err(e)) => {
                tally.errors += 1;
                if tally.notes.len() < 5 {
                    tally
                        .notes
                        .push(format!("input {n}: the harness failed: {e:#}"));
                }
            }
            Err(_) => {
                tally.panics += 1;
                save(job.target.as_str(), "panic", &input, &mut tally);
            }
        }
        if start.elapsed() > INPUT_HANG {
            tally.hangs += 1;
            save(job.target.as_str(), "slow", &input, &mut tally);
        }
        if n % 1024 == 1023 && crate::harness::open_fds() > fds_before {
            tally.fd_leaks += (crate::harness::open_fds() - fds_before) as u64;
            save(job.target.as_str(), "fd-leak", &input, &mut tally);
            break;
        }
    }
    if crate::harness::open_fds() > fds_before {
        tally.fd_leaks += (crate::harness::open_fds() - fds_before) as u64;
    }
    tally
}

/// Copies the input into the shared slot (length first), for a crash report.
fn stash(slot: &ShmSlice<u8>, input: &Input) {
    let b = input.to_bytes();
    let n = b.len().min(SLOT - 8);
    for (i, x) in (n as u64).to_le_bytes().iter().chain(&b[..n]).enumerate() {
        let _ = slot.write(i, *x);
    }
}

fn stashed(slot: &ShmSlice<u8>) -> Vec<u8> {
    let len: Vec<u8> = (0..8).filter_map(|i| slot.read(i)).collect();
    let n = u64::from_le_bytes(len.try_into().unwrap_or([0; 8])) as usize;
    (8..8 + n.min(SLOT - 8))
        .filter_map(|i| slot.read(i))
        .collect()
}

fn crash_dir() -> PathBuf {
    crate::repo_root().join("target/chaos/fuzz-crashes")
}

fn save(target: &str, what: &str, input: &Input, tally: &mut Tally) {
    let dir = crash_dir();
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{target}-{what}-{}.bin", tally.inputs));
    let _ = std::fs::write(&path, input.to_bytes());
    if tally.notes.len() < 5 {
        tally.notes.push(format!("{what}: {}", path.display()));
    }
}

/// Runs every target (or those named) for `inputs` each; prints the table; Ok if clean.
pub(crate) fn run(
    inputs: u64,
    seed: u64,
    only: Option<&[String]>,
    out: &Path,
) -> anyhow::Result<bool> {
    let all = targets::all();
    let chosen: Vec<&Target> = all
        .iter()
        .filter(|t| only.is_none_or(|o| o.iter().any(|n| n == t.name)))
        .collect();
    println!(
        "fuzz: {} target(s), {inputs} inputs each, seed {seed}",
        chosen.len()
    );
    let mut rows = Vec::new();
    for t in chosen {
        let slot = ShmSlice::<u8>::new(SLOT)?;
        let started = Instant::now();
        let h = ipc_core::process::Builder::new()
            .start_method(ipc_core::process::StartMethod::Spawn)
            .spawn(
                Job {
                    target: t.name.into(),
                    inputs,
                    seed,
                    slot: slot.clone(),
                },
                child,
            )?;
        // Generous: an input of the slowest target (manager-requests: a connection and its
        // handshake each) takes about 0.5 ms here; an input pending 2 s is counted in the
        // child, this only catches one that never returns.
        let limit = Duration::from_secs(60) + Duration::from_micros(inputs * 2000);
        let tally = match h.join_timeout(limit) {
            Ok(_) => match h.join() {
                Ok(t) => t,
                Err(e) => crashed(t.name, &format!("{e}"), &slot),
            },
            Err(_) => {
                let _ = h.kill();
                let _ = h.join_timeout(Duration::from_secs(10));
                let mut tally = crashed(t.name, "pending past its time limit", &slot);
                tally.panics = 0;
                tally.hangs = 1;
                tally
            }
        };
        let share = if tally.inputs == 0 {
            0.0
        } else {
            100.0 * tally.decoded as f64 / tally.inputs as f64
        };
        println!(
            "{:<16} inputs {:>8}  decoded {:>5.1}%  panics {} hangs {} fd-leaks {} errors {}  ({:.1} s)  {}",
            t.name,
            tally.inputs,
            share,
            tally.panics,
            tally.hangs,
            tally.fd_leaks,
            tally.errors,
            started.elapsed().as_secs_f64(),
            t.about
        );
        for n in &tally.notes {
            println!("    {n}");
        }
        rows.push((t.name, tally, share));
    }
    let clean = rows
        .iter()
        .all(|(_, t, share)| t.panics + t.hangs + t.fd_leaks + t.errors == 0 && *share > 10.0);
    let json = serde_json::json!({
        "seed": seed,
        "inputs_per_target": inputs,
        "targets": rows.iter().map(|(name, t, share)| serde_json::json!({
            "name": name, "inputs": t.inputs, "decoded_percent": share,
            "panics": t.panics, "hangs": t.hangs, "fd_leaks": t.fd_leaks,
            "errors": t.errors, "notes": t.notes,
        })).collect::<Vec<_>>(),
    });
    std::fs::write(out.join("fuzz.json"), serde_json::to_string_pretty(&json)?)?;
    Ok(clean)
}

/// The tally of a child that died (a crash: its input is in the slot).
fn crashed(target: &str, why: &str, slot: &ShmSlice<u8>) -> Tally {
    let mut tally = Tally {
        panics: 1,
        ..Tally::default()
    };
    let bytes = stashed(slot);
    let dir = crash_dir();
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{target}-crash.bin"));
    let _ = std::fs::write(&path, &bytes);
    tally.notes.push(format!(
        "the target's process died ({why}); input: {}",
        path.display()
    ));
    tally
}
