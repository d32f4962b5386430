//! What every scenario stands on: the seeded random source, the kill plan of a round, the
//! census of what a round may leak, and the accounting of one round.
//!
//! ```text
//! a round:  plan (Kill::Random after t | Kill::Point name at its n-th hit) + start method
//!           census before -> scenario runs (its victim armed or struck) -> Counts
//!           census after (up to GRACE for stragglers to go) -> leaks; failpoint log -> landed
//! ```
//! Definitions (printed with the table):
//! - hang: a survivor's operation still pending [`HANG`] after the kill;
//! - lost: committed and never taken by anyone (a record the dead consumer had already taken
//!   counts as delivered to it: the queue is at-most-once for a consumer that dies);
//! - torn: a record or a protected state that fails its check without the library saying so
//!   (a lock taken over from a dead holder says `OwnerDied`);
//! - duplicated: taken twice, or two holders of one lock at once;
//! - leaks: memfd and /dev/shm segments, fds, zombies and stray processes after the round.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use ipc_core::process::{Builder, JoinHandle, StartMethod};
use ipc_core::shm::ShmBox;
use serde::{Deserialize, Serialize};

/// How long a survivor's operation may stay pending after the kill before it is a hang.
pub(crate) const HANG: Duration = Duration::from_secs(10);
/// How long stragglers (a dying child, a pool's supervisor reaping) get before a leak counts.
const GRACE: Duration = Duration::from_secs(3);
/// The environment variable that marks every process of this run (see [`Census`]).
pub(crate) const MARKER: &str = "IPC_CHAOS_RUN";

/// A small, fast, seedable generator (SplitMix64): runs are reproducible from `--seed`.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The generator of round `round` of `scenario` under `seed`: `--only` and `--rounds`
    /// replay the same rounds.
    pub(crate) fn for_round(seed: u64, scenario: &str, round: u32) -> Rng {
        let mut h = seed ^ 0x9E37_79B9_7F4A_7C15;
        for b in scenario.bytes().chain(round.to_le_bytes()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3);
        }
        Rng(h)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// The checksum of a record (FNV-1a over its id and its bytes): a torn record fails it.
pub(crate) fn checksum(id: u64, bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.to_le_bytes().iter().chain(bytes) {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// How the victim of a round dies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Kill {
    /// The runner sends SIGKILL this many microseconds after the victim started.
    Random { after_us: u64 },
    /// The victim arms this failpoint and dies at its `nth` hit.
    Point { name: String, nth: u32 },
}

impl Kill {
    /// In the victim, at its start: arms the failpoint, if the plan names one.
    pub(crate) fn arm(&self) {
        if let Kill::Point { name, nth } = self {
            // Without the feature `main` refuses to run, so no round gets here.
            #[cfg(feature = "failpoints")]
            ipc_core::failpoint::arm_nth(Box::leak(name.clone().into_boxed_str()), *nth);
            #[cfg(not(feature = "failpoints"))]
            let _ = (name, nth);
        }
    }

    /// Disarms whatever this process armed.
    pub(crate) fn disarm() {
        #[cfg(feature = "failpoints")]
        ipc_core::failpoint::disarm();
    }

    pub(crate) fn point(&self) -> Option<&str> {
        match self {
            Kill::Point { name, .. } => Some(name),
            Kill::Random { .. } => None,
        }
    }

    /// The delay of a random kill.
    pub(crate) fn delay(&self) -> Option<Duration> {
        match self {
            Kill::Random { after_us } => Some(Duration::from_micros(*after_us)),
            Kill::Point { .. } => None,
        }
    }
}

/// One round's context, given to the scenario.
pub(crate) struct Ctx {
    pub(crate) rng: Rng,
    pub(crate) kill: Kill,
    pub(crate) method: StartMethod,
}

impl Ctx {
    /// A process builder for this round's start method.
    pub(crate) fn builder(&self) -> Builder {
        Builder::new().start_method(self.method)
    }

    /// A random kill: sleeps its delay, then SIGKILLs `victim`. Nothing for a failpoint (the
    /// victim armed it). Returns when the kill was sent (or would have been).
    pub(crate) fn strike<R>(&self, victim: &JoinHandle<R>) -> Instant {
        if let Some(d) = self.kill.delay() {
            std::thread::sleep(d);
            let _ = victim.kill();
        }
        Instant::now()
    }

    /// A random kill of a process that is not our child (by pid).
    pub(crate) fn strike_pid(&self, pid: u32) -> Instant {
        if let Some(d) = self.kill.delay() {
            std::thread::sleep(d);
            kill_pid(pid);
        }
        Instant::now()
    }

    /// Which of `n` participants dies this round.
    pub(crate) fn pick(&mut self, n: usize) -> usize {
        self.rng.below(n as u64) as usize
    }
}

/// What a round found.
#[derive(Debug, Default, Clone, Serialize)]
pub(crate) struct Counts {
    pub(crate) hangs: u64,
    pub(crate) lost: u64,
    pub(crate) torn: u64,
    pub(crate) duplicated: u64,
    /// Leaks a participant saw (its own zombies); the runner's census adds its own.
    pub(crate) leaks: u64,
    /// Whether the victim died by SIGKILL (a random kill may come after it finished).
    pub(crate) killed: bool,
    /// What went wrong, in words (for the report).
    pub(crate) notes: Vec<String>,
}

impl Counts {
    pub(crate) fn note(&mut self, s: impl Into<String>) {
        self.notes.push(s.into());
    }
}

/// Joins `handles` by `deadline`; each still running then is a hang (killed and reaped, so
/// that the round leaves nothing behind). Returns the results of those that finished.
pub(crate) fn settle<R>(
    handles: Vec<JoinHandle<R>>,
    deadline: Instant,
    counts: &mut Counts,
    what: &str,
) -> Vec<Option<R>>
where
    R: serde::de::DeserializeOwned,
{
    handles
        .into_iter()
        .map(|h| {
            let left = deadline.saturating_duration_since(Instant::now());
            match h.join_timeout(left) {
                Ok(_) => match h.join() {
                    Ok(r) => Some(r),
                    Err(e) => {
                        counts.note(format!("{what}: {e}"));
                        None
                    }
                },
                Err(_) => {
                    counts.hangs += 1;
                    counts.note(format!("{what} {} still pending after the kill", h.pid()));
                    let _ = h.kill();
                    let _ = h.join_timeout(HANG);
                    None
                }
            }
        })
        .collect()
}

/// Joins the victim (it is dead or dying, or done): whether SIGKILL ended it.
pub(crate) fn reap_victim<R>(victim: &JoinHandle<R>, counts: &mut Counts) {
    match victim.join_timeout(HANG) {
        Ok(code) => counts.killed = code == -9,
        Err(_) => {
            counts.hangs += 1;
            counts.note(format!("the victim {} never ended", victim.pid()));
            let _ = victim.kill();
            let _ = victim.join_timeout(HANG);
        }
    }
}

/// A shared scratch board of counters for a scenario's processes.
pub(crate) type Board = ShmBox<[AtomicU64; 64]>;

/// A new board, all zero.
pub(crate) fn board() -> anyhow::Result<Board> {
    Ok(ShmBox::new()?)
}

/// SIGKILL to any process.
pub(crate) fn kill_pid(pid: u32) {
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
    }
}

/// Whether `pid` is a live process (not a zombie).
pub(crate) fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|(state, _)| state != 'Z')
}

/// A process's state letter and parent, from /proc.
fn stat(pid: u32) -> Option<(char, u32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let mut it = rest.split(' ');
    let state = it.next()?.chars().next()?;
    let ppid = it.next()?.parse().ok()?;
    Some((state, ppid))
}

/// What this run holds at a moment: the runner's descriptors, the /dev/shm entries and the
/// live processes of the run. Processes of the run carry [`MARKER`] in their environment (set
/// before anything started), so a stray one is found wherever it was reparented.
///
/// Descriptors and processes are compared by count: the forkserver keeps one child prepared
/// for the next start (a child of ours, with a connection to it), and a start replaces it with
/// another, so their identities change while nothing leaks. Segment names are compared by
/// name; zombies of the runner or its forkserver always count.
pub(crate) struct Census {
    fds: BTreeSet<(u32, String)>,
    shm: BTreeSet<String>,
    procs: BTreeSet<u32>,
}

impl Census {
    pub(crate) fn take() -> Census {
        let fds = std::fs::read_dir("/proc/self/fd")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_str()?.parse().ok()?;
                let target = std::fs::read_link(e.path()).ok()?;
                let target = target.to_string_lossy().into_owned();
                // The descriptor that reads /proc/self/fd itself.
                (!target.starts_with("/proc/")).then_some((n, target))
            })
            .collect();
        Census {
            fds,
            shm: shm_entries(),
            procs: strays().into_iter().collect(),
        }
    }

    /// What is here now beyond what was at `self`, waiting up to [`GRACE`] for it to go.
    pub(crate) fn leaks_since(&self) -> Vec<String> {
        let deadline = Instant::now() + GRACE;
        loop {
            let found = self.leaks_now();
            if found.is_empty() || Instant::now() >= deadline {
                if !found.is_empty() {
                    // Contain the damage: the next round starts clean.
                    let now = Census::take();
                    for pid in now.procs.difference(&self.procs) {
                        kill_pid(*pid);
                    }
                }
                return found;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn leaks_now(&self) -> Vec<String> {
        let now = Census::take();
        let mut out = Vec::new();
        // The shared heap keeps its current arena (a new one when the last filled up): one
        // more arena than before is growth; more is a handle kept somewhere.
        let arenas = |c: &Census| c.fds.iter().filter(|(_, t)| is_arena(t)).count();
        let others = |c: &Census| c.fds.len() - arenas(c);
        let arena_leak = arenas(&now) > arenas(self).max(2);
        if others(&now) > others(self) || arena_leak {
            let new: Vec<String> = now
                .fds
                .difference(&self.fds)
                .map(|(n, t)| format!("fd {n} -> {t}"))
                .collect();
            out.push(format!(
                "{} more descriptor(s), {} more arena(s): {}",
                others(&now).saturating_sub(others(self)),
                arenas(&now).saturating_sub(arenas(self)),
                new.join(", ")
            ));
        }
        for name in now.shm.difference(&self.shm) {
            out.push(format!("/dev/shm/{name}"));
        }
        if now.procs.len() > self.procs.len() {
            let new = described(now.procs.difference(&self.procs).copied());
            out.push(format!(
                "{} more process(es): {}",
                now.procs.len() - self.procs.len(),
                new.join(", ")
            ));
        }
        for pid in zombies() {
            out.push(format!("zombie {pid} ({})", comm(pid)));
        }
        out
    }
}

/// Whether a descriptor's target is one of the shared heap's arenas.
fn is_arena(target: &str) -> bool {
    target.starts_with("/memfd:ipc-core")
}

/// Processes in words, for a leak's note: pid, name, parent, what it is blocked in, its
/// process group and its descriptors (what keeps an orphan waiting is usually among them).
pub(crate) fn described(pids: impl IntoIterator<Item = u32>) -> Vec<String> {
    pids.into_iter()
        .map(|pid| {
            let parent = stat(pid).map_or(0, |(_, ppid)| ppid);
            let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
            let fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| {
                    let t = std::fs::read_link(e.path()).ok()?;
                    Some(format!("{}->{}", e.file_name().to_str()?, t.display()))
                })
                .collect();
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let group = status
                .lines()
                .find(|l| l.starts_with("NSpgid"))
                .unwrap_or("")
                .replace('\t', " ");
            format!(
                "{pid} ({}, parent {parent}, in {wchan}, {group}, fds [{}])",
                comm(pid),
                fds.join(" ")
            )
        })
        .collect()
}

fn shm_entries() -> BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .collect()
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// The processes we keep on purpose: this runner and its forkserver.
fn ours_on_purpose(pid: u32) -> bool {
    pid == std::process::id() || ipc_core::process::forkserver_pid() == Some(pid)
}

/// Live processes of this run other than the runner, its forkserver and the child that
/// server keeps prepared for the next start: a child of the runner (the server forks it as
/// our child) that no start has taken yet, so ipc-core does not list it among our children.
pub(crate) fn strays() -> Vec<u32> {
    let me = std::process::id();
    let marker = format!("{MARKER}={me}");
    let started: Vec<u32> = ipc_core::process::active_children()
        .iter()
        .map(|c| c.pid)
        .collect();
    let mut found: Vec<u32> = all_pids()
        .into_iter()
        .filter(|&pid| !ours_on_purpose(pid) && alive(pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|kv| kv == marker.as_bytes()))
        })
        .collect();
    let prepared = found
        .iter()
        .copied()
        .filter(|&pid| stat(pid).map(|(_, ppid)| ppid) == Some(me) && !started.contains(&pid))
        .max_by_key(|&pid| start_time(pid));
    found.retain(|&pid| Some(pid) != prepared);
    found
}

/// A process's start time (clock ticks since boot), from /proc.
fn start_time(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s[s.rfind(')')? + 2..].to_owned();
            rest.split(' ').nth(19)?.parse().ok()
        })
        .unwrap_or(0)
}

/// An owner killed: `owner` runs in a child started by spawn (so that what it starts, a
/// forkserver included, is its own), is given `head_start`, then dies by the round's kill;
/// everything it started must be gone within 1 s.
pub(crate) fn kill_owner<R>(
    c: &Ctx,
    owner: fn((StartMethod, Kill)) -> R,
    head_start: Duration,
    what: &str,
) -> anyhow::Result<Counts>
where
    R: serde::Serialize + serde::de::DeserializeOwned,
{
    let mut counts = Counts::default();
    let victim = Builder::new()
        .start_method(StartMethod::Spawn)
        .spawn((c.method, c.kill.clone()), owner)?;
    let pid = victim.pid();
    std::thread::sleep(head_start);
    let at = c.strike(&victim);
    reap_victim(&victim, &mut counts);
    let left = outliving(pid, at, Duration::from_secs(1));
    if !left.is_empty() {
        counts.leaks += left.len() as u64;
        counts.note(format!("outlived {what} by 1 s: {}", left.join(", ")));
    }
    Ok(counts)
}

/// The processes of the run (other than `owner`, which was just killed) still alive `limit`
/// after `at`, described: an owner's workers and servers must follow it.
pub(crate) fn outliving(owner: u32, at: Instant, limit: Duration) -> Vec<String> {
    let left = || -> Vec<u32> { strays().into_iter().filter(|&p| p != owner).collect() };
    while !left().is_empty() && at.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(5));
    }
    described(left())
}

/// Zombies whose parent is the runner or its forkserver (nobody reaped them).
fn zombies() -> Vec<u32> {
    let mut found = zombies_of(std::process::id());
    if let Some(server) = ipc_core::process::forkserver_pid() {
        found.extend(zombies_of(server));
    }
    found
}

/// Zombies whose parent is `parent` (nobody reaped them).
pub(crate) fn zombies_of(parent: u32) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|&pid| stat(pid).is_some_and(|(s, ppid)| s == 'Z' && ppid == parent))
        .collect()
}

/// This process's open descriptors.
pub(crate) fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// The failpoint log: one line per kill that landed on a named point.
pub(crate) struct PointLog(pub(crate) std::path::PathBuf);

impl PointLog {
    pub(crate) fn clear(&self) {
        let _ = std::fs::write(&self.0, b"");
    }

    pub(crate) fn fired(&self) -> Vec<String> {
        std::fs::read_to_string(&self.0)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// Start methods a round may use: fork only while the runner has one thread (a pool's or a
/// manager client's threads are gone once the round that made them ends).
pub(crate) fn method_for(round: u32) -> StartMethod {
    let methods = [
        StartMethod::ForkServer,
        StartMethod::Spawn,
        StartMethod::Fork,
    ];
    let m = methods[round as usize % 3];
    if m == StartMethod::Fork && threads() > 1 {
        StartMethod::ForkServer
    } else {
        m
    }
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(1, |d| d.count())
}
