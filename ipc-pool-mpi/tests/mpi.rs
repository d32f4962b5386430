//! The MPI pool under a real `mpirun` (OpenMPI), in both launch modes: each test runs the
//! `scenarios` example (built by `cargo test` with the other examples) as an MPI job and checks
//! its output and exit status. Every job runs under `timeout`, so a hang fails the test instead
//! of holding CI.

use std::path::PathBuf;
use std::process::{Command, Output};

/// The `scenarios` example beside this test's binary (target/<profile>/examples).
fn scenarios() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let path = profile.join("examples/scenarios");
    assert!(
        path.exists(),
        "{} is missing: run through cargo test",
        path.display()
    );
    path
}

/// A directory of its own for one MPI job's files (OpenMPI's shared-memory segments and session
/// directory), removed when dropped: a job whose rank was killed, or that was aborted, leaves
/// its `vader_segment.*` files behind, and they would otherwise stay in /dev/shm.
struct JobDir(PathBuf);

impl JobDir {
    fn new() -> JobDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = PathBuf::from(format!(
            "/dev/shm/ipc-pool-mpi-test.{}.{n}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("a job directory in /dev/shm");
        JobDir(dir)
    }
}

impl Drop for JobDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `mpirun <mpirun_args> <wrapped program> <args>`, bounded by 120 s, its files in a
/// [`JobDir`]. The program runs under `sh -c` so that each rank prints its own exit code
/// (mpirun's own code says less: see `a_dead_rank_*`).
fn mpirun(mpirun_args: &[&str], args: &[&str]) -> (Output, String) {
    let dir = JobDir::new();
    let out = Command::new("timeout")
        .args(["120", "mpirun", "--oversubscribe"])
        .args(mpirun_args)
        .args([
            "sh",
            "-c",
            r#""$0" "$@"; echo "exit code $? of pid $$" >&2"#,
        ])
        .arg(scenarios())
        .args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        // One host: MPI's TCP traffic (between a driver and the ranks it spawned) on loopback.
        // This VM has an interface whose address no peer answers on; OpenMPI tried it once
        // and hung.
        .env("OMPI_MCA_btl_tcp_if_include", "lo")
        .env("OMPI_MCA_btl_vader_backing_directory", &dir.0)
        .env("OMPI_MCA_orte_tmpdir_base", &dir.0)
        .output()
        .expect("mpirun runs (install openmpi-bin: cargo xtask mpi does)");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(out.status.code(), Some(124), "the MPI job hung:\n{text}");
    (out, text)
}

/// The `ok:` lines every contract run prints.
const CONTRACT: [&str; 12] = [
    "ok: 3 ranks serve",
    "ok: map of 1000 items",
    "ok: map at chunk size 1",
    "ok: arguments and results of 50 kB",
    "ok: 100 MB of arguments, and one of 40 MB",
    "ok: a starmap (tuple arguments)",
    "ok: tasks ran in 3 rank processes, none in the driver",
    "ok: imap over an endless input, take(5)",
    "ok: imap_unordered",
    "ok: apply_async",
    "ok: a panicking task fails alone (item 13), the ranks serve on",
    "ok: the pool runs a map after the failures",
];

fn assert_contract(out: &Output, text: &str) {
    assert!(out.status.success(), "{text}");
    for line in CONTRACT {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    assert!(
        !text.contains("exit code 1") && !text.contains("exit code 2"),
        "{text}"
    );
}

#[test]
fn world_mode_keeps_the_pool_contract() {
    let (out, text) = mpirun(&["-n", "4"], &["world", "contract"]);
    assert_contract(&out, &text);
    assert_eq!(
        text.matches("exit code 0 of").count(),
        4,
        "every rank ends with 0:\n{text}"
    );
}

#[test]
fn spawn_mode_keeps_the_pool_contract() {
    let (out, text) = mpirun(&["-n", "1"], &["spawn", "3", "contract"]);
    assert_contract(&out, &text);
    assert_eq!(
        text.matches("exit code 0 of").count(),
        1,
        "the driver ends with 0:\n{text}"
    );
}

/// What a run of the `lose` scenario must show: only task 7 (whose rank was SIGKILLed) failed,
/// as lost, naming its rank; the pool went on; the driver exited 1; and, when the killed rank
/// ran under the `sh` wrapper (world mode: spawned ranks run the program itself), that it died
/// by SIGKILL.
fn lost_checks(text: &str, rank_wrapped: bool) {
    assert!(
        text.contains("lost: task 7 on rank"),
        "task 7 fails as lost, naming its rank:\n{text}"
    );
    assert!(text.contains("while it ran task 7"), "{text}");
    assert!(
        text.contains("ok: the rank running task 7 died; 39 other results present"),
        "{text}"
    );
    assert!(
        text.contains("ok: the pool runs a map on the remaining ranks"),
        "{text}"
    );
    assert!(
        text.contains("exit code 1 of"),
        "the driver exits 1:\n{text}"
    );
    if rank_wrapped {
        assert!(
            text.contains("exit code 137 of"),
            "the killed rank (SIGKILL):\n{text}"
        );
    }
}

#[test]
fn a_dead_rank_fails_its_task_and_the_driver_exits_non_zero_in_world_mode() {
    // OpenMPI 4.1's mpirun itself returns 0 under --enable-recovery, whatever its ranks'
    // codes: the wrapper's lines give the driver's.
    let (_, text) = mpirun(&["--enable-recovery", "-n", "4"], &["world", "lose"]);
    lost_checks(&text, true);
}

#[test]
fn a_dead_rank_fails_its_task_and_the_driver_exits_non_zero_in_spawn_mode() {
    let (_, text) = mpirun(&["--enable-recovery", "-n", "1"], &["spawn", "3", "lose"]);
    lost_checks(&text, false);
}

#[test]
fn a_rank_that_stops_taking_messages_does_not_stall_the_driver() {
    // The stopped rank is sent bundles larger than MPI's eager limit: whole, such a send
    // would wait for the rank to take it, forever; in fragments, each completes at once.
    let (_, text) = mpirun(&["--enable-recovery", "-n", "4"], &["world", "stall"]);
    assert!(
        text.contains("ok: a stopped rank was lost after"),
        "the map ended with one item lost:\n{text}"
    );
    assert!(
        text.contains("exit code 1 of"),
        "the driver exits 1:\n{text}"
    );
}

#[test]
fn without_recovery_mpirun_ends_the_job_non_zero_and_names_the_rank() {
    let (out, text) = mpirun(&["-n", "4"], &["world", "lose"]);
    assert!(!out.status.success(), "{text}");
    // "mpirun noticed that process rank 2 ... exited on signal 9", or "mpirun has exited due
    // to process rank 2 ... exiting improperly", depending on which it sees first.
    assert!(
        text.contains("process rank"),
        "mpirun names the dead rank:\n{text}"
    );
}

/// The CPU time (in clock ticks of 10 ms) of the processes whose command line holds `marker`.
fn cpu_ticks_of(marker: &str) -> (usize, u64) {
    let mut found = (0, 0);
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        // The rank itself, not the `sh` wrapper or mpirun (their command lines hold the
        // marker too): its first word is the scenarios binary.
        let first = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).contains(marker) || !first.ends_with(b"scenarios") {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // Fields after the `(comm)`: state is the 1st, utime the 12th, stime the 13th.
        let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 =
            fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
        found = (found.0 + 1, found.1 + ticks);
    }
    found
}

#[test]
fn a_pool_at_rest_costs_almost_no_cpu() {
    // A world pool of 5 processes maps once, then rests for 8 s; from 3 s to 6 s (naps have
    // reached their longest) its processes may use at most 5% of one core in all (0.6% was
    // measured here; one process spinning would use 100%).
    let marker = format!("idle-marker-{}", std::process::id());
    let job = std::thread::spawn({
        let marker = marker.clone();
        move || mpirun(&["-n", "5"], &["world", "idle", "8", &marker])
    });
    std::thread::sleep(std::time::Duration::from_secs(3));
    let (n, before) = cpu_ticks_of(&marker);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let (_, after) = cpu_ticks_of(&marker);
    let (out, text) = job.join().expect("the job's thread");
    assert!(out.status.success(), "{text}");
    assert_eq!(n, 5, "5 processes of the job were found:\n{text}");
    let used = after - before;
    assert!(
        used <= 15,
        "{used} ticks of 10 ms in 3 s: more than 5% of one core"
    );
}
