//! The leak check of `cargo xtask ci`: nothing the run started may outlive it.
//!
//! - `/dev/shm`: a snapshot of the entries is taken before the run; entries that appeared since
//!   and are still there after a grace period are leaks. (Another program on the machine can
//!   create entries during the run too; the message says so, and a rerun tells the difference.)
//! - Processes: before the run this process makes itself a child subreaper, so a process that
//!   escaped from a test (its parent exited without reaping or killing it) is re-parented to us
//!   instead of to init. After the run, every process whose parent chain reaches us is a leak,
//!   once zombies are reaped and a grace period has let dying processes finish. Leaked processes
//!   are killed (they are ours) after being reported.
//! - Zombies: a zombie left by a test process that has since exited is re-parented to us and
//!   reaped here without a report, because some tests legitimately orphan processes (they kill a
//!   parent to check what its children see). Whether the library reaps every child it starts is
//!   checked where it can be, per operation, by `ipc-core/tests/process_leaks.rs`: it inspects a
//!   live process that ran every operation for zombies, leftover children, descriptors, shared
//!   mappings and `/dev/shm` entries.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rustix::process::{Pid, WaitOptions, set_child_subreaper};

const SHM: &str = "/dev/shm";
/// How long dying processes and in-flight unlinks get before they count as leaks.
const GRACE: Duration = Duration::from_secs(10);

/// What existed before the run.
#[derive(Debug)]
pub(crate) struct Snapshot {
    shm: BTreeSet<String>,
}

/// Takes the `/dev/shm` snapshot and becomes the subreaper of everything started from here on.
pub(crate) fn start() -> anyhow::Result<Snapshot> {
    set_child_subreaper(Some(rustix::process::getpid())).context("becoming a child subreaper")?;
    Ok(Snapshot {
        shm: shm_entries(Path::new(SHM))?,
    })
}

/// The names in a directory (empty if it does not exist: then nothing can leak there).
fn shm_entries(dir: &Path) -> anyhow::Result<BTreeSet<String>> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
    }
}

/// Entries of `after` that are not in `before`.
pub(crate) fn new_entries(before: &BTreeSet<String>, after: &BTreeSet<String>) -> Vec<String> {
    after.difference(before).cloned().collect()
}

/// One process from /proc.
#[derive(Debug, Clone)]
pub(crate) struct Proc {
    pub(crate) pid: i32,
    pub(crate) ppid: i32,
    pub(crate) state: char,
    pub(crate) cmdline: String,
}

/// Parses `/proc/<pid>/stat`: the command sits in parentheses and may contain anything.
pub(crate) fn parse_stat(stat: &str) -> Option<(i32, char, i32)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let pid = stat[..open].trim().parse().ok()?;
    let mut rest = stat[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((pid, state, ppid))
}

fn processes() -> Vec<Proc> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        // A process can vanish between the listing and the read: skip it.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, state, ppid)) = parse_stat(&stat) else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .replace('\0', " ")
                    .trim()
                    .to_string()
            })
            .unwrap_or_default();
        out.push(Proc {
            pid,
            ppid,
            state,
            cmdline,
        });
    }
    out
}

/// The processes whose parent chain reaches `root` (not `root` itself).
pub(crate) fn descendants(all: &[Proc], root: i32) -> Vec<Proc> {
    let parent: HashMap<i32, i32> = all.iter().map(|p| (p.pid, p.ppid)).collect();
    all.iter()
        .filter(|p| {
            let mut cur = p.ppid;
            // The chain is bounded by the number of processes (a cycle cannot occur in /proc,
            // but a racing read could show one; never loop forever).
            for _ in 0..=all.len() {
                if cur == root {
                    return true;
                }
                match parent.get(&cur) {
                    Some(&pp) if pp != cur => cur = pp,
                    _ => return false,
                }
            }
            false
        })
        .cloned()
        .collect()
}

/// Reaps every exited child (ours and re-parented ones) without blocking.
///
/// `wait` is `waitpid(-1)`: any child. (`waitpid(None)` would be `waitpid(0)`, children in our
/// process group only, which misses re-parented processes that made their own group.)
fn reap_zombies() {
    while let Ok(Some(_)) = rustix::process::wait(WaitOptions::NOHANG) {}
}

/// Checks that the run left nothing behind; kills leftover processes after reporting them.
pub(crate) fn check(before: &Snapshot) -> anyhow::Result<()> {
    let me = rustix::process::getpid().as_raw_nonzero().get();
    let deadline = Instant::now() + GRACE;
    let (procs, shm) = loop {
        reap_zombies();
        let procs = descendants(&processes(), me);
        let shm = new_entries(&before.shm, &shm_entries(Path::new(SHM))?);
        if (procs.is_empty() && shm.is_empty()) || Instant::now() > deadline {
            break (procs, shm);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut problems = Vec::new();
    for p in &procs {
        problems.push(if p.state == 'Z' {
            format!(
                "process {} exited but its parent {} (also started by this run) never reaped it",
                p.pid, p.ppid
            )
        } else {
            format!(
                "process {} (state {}, parent {}) is still running: {}",
                p.pid, p.state, p.ppid, p.cmdline
            )
        });
    }
    for name in &shm {
        problems.push(format!(
            "{SHM}/{name} appeared during the run and was not unlinked \
             (if another program on this machine made it, rerun to confirm)"
        ));
    }
    for p in &procs {
        if let Some(pid) = Pid::from_raw(p.pid) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
    reap_zombies();
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("leak: {p}");
        }
        bail!(
            "the run leaked {} process(es) and {} /dev/shm entr(y/ies)",
            procs.len(),
            shm.len()
        );
    }
    println!("leaks: none (no process left, no new {SHM} entry)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: i32, ppid: i32) -> Proc {
        Proc {
            pid,
            ppid,
            state: 'S',
            cmdline: String::new(),
        }
    }

    #[test]
    fn stat_lines_parse_even_with_odd_command_names() {
        assert_eq!(parse_stat("42 (a) b) R 7 42 42 0"), Some((42, 'R', 7)));
        assert_eq!(parse_stat("1 (init) S 0 1"), Some((1, 'S', 0)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn descendants_follow_the_parent_chain() {
        let all = [p(1, 0), p(10, 1), p(11, 10), p(12, 11), p(20, 1), p(13, 13)];
        let mut d: Vec<i32> = descendants(&all, 10).iter().map(|p| p.pid).collect();
        d.sort();
        assert_eq!(d, vec![11, 12]);
        assert!(descendants(&all, 99).is_empty());
    }

    #[test]
    fn only_new_shm_entries_count() {
        let before: BTreeSet<String> = ["a", "b"].map(String::from).into();
        let after: BTreeSet<String> = ["b", "c"].map(String::from).into();
        assert_eq!(new_entries(&before, &after), vec!["c".to_string()]);
    }

    #[test]
    fn a_real_child_is_seen_as_a_descendant() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let me = std::process::id() as i32;
        let found = descendants(&processes(), me)
            .iter()
            .any(|p| p.pid == child.id() as i32);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(found);
    }
}
