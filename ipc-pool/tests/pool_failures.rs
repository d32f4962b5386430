//! The failure contract: a worker that dies fails only the item it was running; the items of
//! its chunk that had not started run elsewhere, those it reported are kept; the pool replaces
//! it and stays usable; nothing is left behind. And the owner's death takes the workers along.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{LONG, children_of, eventually, kill_pid, wait_gone};
use ipc_core::conn::{Connection, pipe};
use ipc_core::process::{Builder, StartMethod};
use ipc_pool::{Pool, TaskError};

/// Item `victim` leaves its worker's pid in `dir` and sleeps (the test kills that worker);
/// every other item sleeps 2 ms and doubles.
fn double_or_wait_to_die((dir, victim, x): (PathBuf, u64, u64)) -> u64 {
    if x == victim {
        let pid = ipc_core::process::pid();
        std::fs::write(dir.join("victim.tmp"), pid.to_string()).unwrap();
        std::fs::rename(dir.join("victim.tmp"), dir.join("victim")).unwrap();
        std::thread::sleep(Duration::from_secs(60));
    }
    std::thread::sleep(Duration::from_millis(2));
    x * 2
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ipc-pool-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// Issue #12: a worker SIGKILLed in the middle of a long map, 20 rounds (alternating spawn and
// forkserver, chunks of 4 so the victim's chunk has items before and after it): every other
// item's result is there, the victim's error names SIGKILL and its pid, the dead worker is
// reaped, and no descriptor is left over.
#[test]
fn a_worker_killed_mid_map_fails_only_its_item() {
    let dir = scratch("killed");
    for round in 0..20u64 {
        let m = [StartMethod::Spawn, StartMethod::ForkServer][round as usize % 2];
        let p = Pool::builder()
            .processes(2)
            .start_method(m)
            .build()
            .unwrap();
        let victim = 5 + round % 3;
        let items: Vec<(PathBuf, u64, u64)> = (0..40).map(|x| (dir.clone(), victim, x)).collect();
        let r = p.map_async(double_or_wait_to_die, items, Some(4)).unwrap();
        let marker = dir.join("victim");
        assert!(
            eventually(|| marker.exists()),
            "round {round}: the victim never ran"
        );
        let pid: u32 = std::fs::read_to_string(&marker).unwrap().parse().unwrap();
        std::fs::remove_file(&marker).unwrap();
        kill_pid(pid);
        assert!(r.wait_timeout(LONG), "round {round} ({m}): the map hung");
        drop(r);
        let each = p
            .map_results(
                double_or_wait_to_die,
                (0..40).map(|x| (dir.clone(), 1000, x)),
            )
            .unwrap();
        assert!(
            each.iter().all(Result::is_ok),
            "round {round}: the pool is unusable"
        );
        // The map again, this time reading each item.
        let items: Vec<(PathBuf, u64, u64)> = (0..40).map(|x| (dir.clone(), victim, x)).collect();
        let h = std::thread::spawn({
            let marker = marker.clone();
            move || {
                assert!(eventually(|| marker.exists()));
                let pid: u32 = std::fs::read_to_string(&marker).unwrap().parse().unwrap();
                std::fs::remove_file(&marker).unwrap();
                kill_pid(pid);
                pid
            }
        });
        let each = p
            .map_results_chunked(double_or_wait_to_die, items, 4)
            .unwrap();
        let killed = h.join().unwrap();
        for (x, r) in each.iter().enumerate() {
            if x as u64 == victim {
                match r {
                    Err(TaskError::WorkerDied {
                        index,
                        pid,
                        signal: Some(9),
                        ..
                    }) => assert_eq!((*index, *pid), (victim, killed), "round {round}"),
                    other => panic!("round {round} ({m}): item {x}: {other:?}"),
                }
                assert!(r.as_ref().unwrap_err().to_string().contains("SIGKILL"));
            } else {
                assert_eq!(
                    r.as_ref().ok(),
                    Some(&(2 * x as u64)),
                    "round {round} ({m})"
                );
            }
        }
        assert!(
            wait_gone(killed, LONG),
            "round {round}: the dead worker was not reaped"
        );
        assert!(
            !children_of(std::process::id())
                .iter()
                .any(|&(c, s)| c == killed || s == 'Z'),
            "round {round}: a zombie is left"
        );
        p.close();
        p.join().unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn abort_on_two(x: u32) -> u32 {
    if x == 2 {
        // What a panic is under `panic = "abort"`.
        std::process::abort();
    }
    x
}

// A task that aborts its process (a panic under panic = "abort") is a worker death, reported
// as such for that item only.
#[test]
fn an_aborting_task_is_a_worker_death() {
    let p = Pool::new(2).unwrap();
    let each = p.map_results_chunked(abort_on_two, 0..6, 1).unwrap();
    for (x, r) in each.iter().enumerate() {
        if x == 2 {
            assert!(
                matches!(
                    r,
                    Err(TaskError::WorkerDied {
                        signal: Some(6),
                        ..
                    })
                ),
                "{r:?}"
            );
        } else {
            assert_eq!(r.as_ref().ok(), Some(&(x as u32)));
        }
    }
    assert_eq!(p.map(abort_on_two, [0u32, 1, 3]).unwrap(), [0, 1, 3]);
}

/// Owns a pool of 2 (under `method`), says so, then waits to be killed.
fn pool_owner((conn, method): (Connection, StartMethod)) {
    let p = Pool::builder()
        .processes(2)
        .start_method(method)
        .build()
        .unwrap();
    assert_eq!(p.map(|x: u32| x + 1, [1u32, 2]).unwrap(), [2, 3]);
    conn.send(&()).unwrap();
    std::thread::sleep(Duration::from_secs(600));
}

// Issue #12: the owner SIGKILLed: every worker (and the owner's forkserver) is gone.
#[test]
fn the_owners_death_takes_the_workers_along() {
    for m in [StartMethod::Spawn, StartMethod::ForkServer] {
        let (ours, theirs) = pipe().unwrap();
        let owner = Builder::new()
            .start_method(StartMethod::Spawn)
            .spawn((theirs, m), pool_owner)
            .unwrap();
        ours.recv::<()>().unwrap();
        let workers: Vec<u32> = children_of(owner.pid())
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert!(workers.len() >= 2, "{m}: {workers:?}");
        owner.kill().unwrap();
        assert_eq!(owner.join_timeout(LONG).unwrap(), -9);
        let gone: Vec<bool> = workers.iter().map(|&w| wait_gone(w, LONG)).collect();
        workers.iter().for_each(|&w| kill_pid(w));
        assert!(
            gone.iter().all(|&g| g),
            "{m}: workers outlived their owner: {workers:?}"
        );
    }
}

/// Leads a process group of its own (as a shell's foreground job), starts a long map, says so,
/// and waits for it.
fn interrupted_owner((conn, method): (Connection, StartMethod)) {
    rustix::process::setpgid(None, None).unwrap();
    let p = Pool::builder()
        .processes(2)
        .start_method(method)
        .build()
        .unwrap();
    let r = p.map_async(slow_identity, 0..1000u32, Some(1)).unwrap();
    conn.send(&()).unwrap();
    let _ = r.get();
}

fn slow_identity(x: u32) -> u32 {
    std::thread::sleep(Duration::from_millis(100));
    x
}

// Issue #12: Ctrl-C (SIGINT to the foreground process group) during a map ends the owner at
// once (SIGINT's default action) and leaves no worker behind, never a hang.
#[test]
fn sigint_to_the_process_group_during_a_map_leaves_nothing() {
    for m in [StartMethod::Spawn, StartMethod::ForkServer] {
        let (ours, theirs) = pipe().unwrap();
        let owner = Builder::new()
            .start_method(StartMethod::Spawn)
            .spawn((theirs, m), interrupted_owner)
            .unwrap();
        ours.recv::<()>().unwrap();
        let children: Vec<u32> = children_of(owner.pid())
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        let group = rustix::process::Pid::from_raw(owner.pid() as i32).unwrap();
        rustix::process::kill_process_group(group, rustix::process::Signal::INT).unwrap();
        assert_eq!(owner.join_timeout(LONG).unwrap(), -2, "{m}");
        let gone: Vec<bool> = children.iter().map(|&c| wait_gone(c, LONG)).collect();
        children.iter().for_each(|&c| kill_pid(c));
        assert!(gone.iter().all(|&g| g), "{m}: left behind: {children:?}");
    }
}
