//! Bounds on tasks (issue #13): a per-task timeout (the worker is killed and replaced, the task
//! fails with `TimedOut`, the others finish) and opt-in retries for tasks whose worker died
//! (the last error lists every attempt); under spawn and forkserver.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ipc_core::process::StartMethod;
use ipc_pool::{Pool, TaskError};

const METHODS: [StartMethod; 2] = [StartMethod::Spawn, StartMethod::ForkServer];

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn pid_of(_: u32) -> u32 {
    ipc_core::process::pid()
}

// A task past the timeout: its worker is killed and replaced, it fails with TimedOut, every
// other item (in its chunk too) has its result, and the pool goes on.
#[test]
fn a_task_past_its_timeout_fails_alone() {
    for m in METHODS {
        let p = Pool::builder()
            .processes(2)
            .start_method(m)
            .task_timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        let items = vec![10, 30_000, 10, 20, 10, 10, 50, 10];
        let t0 = Instant::now();
        let each = p.map_results_chunked(sleep_ms, items.clone(), 2).unwrap();
        let took = t0.elapsed();
        assert!(took < Duration::from_secs(10), "{m}: {took:?}");
        for (i, r) in each.iter().enumerate() {
            if i == 1 {
                match r {
                    Err(TaskError::TimedOut {
                        index: 1, after, ..
                    }) => {
                        assert!(*after >= Duration::from_millis(300), "{m}: {after:?}")
                    }
                    other => panic!("{m}: {other:?}"),
                }
                assert!(r.as_ref().unwrap_err().to_string().contains("timeout"));
            } else {
                assert_eq!(r.as_ref().ok(), Some(&items[i]), "{m}: item {i}");
            }
        }
        // Tasks shorter than the timeout are left alone, idle workers too.
        std::thread::sleep(Duration::from_millis(700));
        let pids: std::collections::BTreeSet<u32> = p
            .map_chunked(pid_of, 0..20, 1)
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(p.map(sleep_ms, [100, 200]).unwrap(), [100, 200]);
        let again: std::collections::BTreeSet<u32> = p
            .map_chunked(pid_of, 0..20, 1)
            .unwrap()
            .into_iter()
            .collect();
        assert!(again.is_subset(&pids), "{m}: {pids:?} -> {again:?}");
    }
}

/// Dies (SIGKILL) on its first `fail` attempts at `tag` (counted with files in `dir`), then
/// returns the attempt number.
fn die_then_succeed((dir, tag, fail): (PathBuf, u32, u32)) -> u32 {
    let mut attempt = 0;
    while dir.join(format!("{tag}.{attempt}")).exists() {
        attempt += 1;
    }
    std::fs::write(dir.join(format!("{tag}.{attempt}")), b"").unwrap();
    if attempt < fail {
        rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL)
            .unwrap();
        std::thread::sleep(Duration::from_secs(60));
    }
    attempt
}

// retries(2): a task whose worker dies twice runs a third time and succeeds; one that always
// kills its worker fails after 3 attempts, the error naming each (3 different workers).
#[test]
fn retries_rerun_a_task_whose_worker_died() {
    for m in METHODS {
        let dir = std::env::temp_dir().join(format!("ipc-pool-retry-{}-{m}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = Pool::builder()
            .processes(2)
            .start_method(m)
            .retries(2)
            .build()
            .unwrap();
        let items: Vec<(PathBuf, u32, u32)> = vec![
            (dir.clone(), 0, 0),
            (dir.clone(), 1, 2),
            (dir.clone(), 2, 0),
            (dir.clone(), 3, 99),
            (dir.clone(), 4, 1),
        ];
        let each = p.map_results_chunked(die_then_succeed, items, 1).unwrap();
        assert_eq!(each[0].as_ref().ok(), Some(&0), "{m}");
        assert_eq!(each[1].as_ref().ok(), Some(&2), "{m}: third attempt");
        assert_eq!(each[2].as_ref().ok(), Some(&0), "{m}");
        assert_eq!(each[4].as_ref().ok(), Some(&1), "{m}: second attempt");
        match &each[3] {
            Err(TaskError::WorkerDied {
                index: 3,
                pid,
                signal: Some(9),
                earlier,
                ..
            }) => {
                assert_eq!(earlier.len(), 2, "{m}: {earlier:?}");
                let mut pids: Vec<u32> = earlier.iter().map(|d| d.pid).collect();
                pids.push(*pid);
                pids.sort_unstable();
                pids.dedup();
                assert_eq!(pids.len(), 3, "{m}: three workers");
                assert!(earlier.iter().all(|d| d.signal == Some(9)));
                let text = each[3].as_ref().unwrap_err().to_string();
                assert!(text.contains("earlier attempts"), "{text}");
            }
            other => panic!("{m}: {other:?}"),
        }
        // Without retries the first death is final.
        let once = Pool::builder()
            .processes(1)
            .start_method(m)
            .build()
            .unwrap();
        let r = once.apply(die_then_succeed, (dir.clone(), 10, 1));
        assert!(
            matches!(&r, Err(ipc_pool::PoolError::Task(TaskError::WorkerDied { earlier, .. })) if earlier.is_empty()),
            "{m}: {r:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

const MIB: usize = 1 << 20;

/// Leaks 64 MiB (touched) and says which worker ran it.
fn leak_64_mib(i: u32) -> (u32, u32) {
    let block = vec![1u8; 64 * MIB];
    std::hint::black_box(&block);
    std::mem::forget(block);
    (i, ipc_core::process::pid())
}

// A 128 MiB ceiling with tasks that leak 64 MiB each: a worker retires within 3 tasks (its pid
// changes), and every result is right.
#[test]
fn a_worker_past_its_memory_ceiling_retires() {
    for m in METHODS {
        let p = Pool::builder()
            .processes(1)
            .start_method(m)
            .max_memory_per_worker(128 * MIB as u64)
            .build()
            .unwrap();
        let out = p.map_chunked(leak_64_mib, 0..9u32, 1).unwrap();
        assert_eq!(
            out.iter().map(|o| o.0).collect::<Vec<_>>(),
            (0..9).collect::<Vec<_>>()
        );
        let mut runs: Vec<(u32, usize)> = Vec::new();
        for (_, pid) in &out {
            match runs.last_mut() {
                Some((p, n)) if p == pid => *n += 1,
                _ => runs.push((*pid, 1)),
            }
        }
        assert!(runs.len() >= 3, "{m}: {runs:?}");
        assert!(
            runs.iter().all(|&(_, n)| n <= 3),
            "{m}: a worker ran more than 3: {runs:?}"
        );
        p.close();
        p.join().unwrap();
    }
}

// A caller waiting for a result that is not ready sleeps: it helps collect for a few
// microseconds, then waits without using a CPU (a timed queue get of ipc-sync once spun for
// its whole timeout).
#[test]
fn a_timed_wait_for_a_result_sleeps() {
    let pool = Pool::new(1).unwrap();
    let slow = pool.apply_async(sleep_ms, 5_000).unwrap();
    let wait = Duration::from_millis(300);
    common::sleeps("AsyncResult::wait_timeout", wait, || {
        !slow.wait_timeout(wait)
    });
    common::sleeps("AsyncResult::get_timeout", wait, || {
        matches!(slow.get_timeout(wait), Err(ipc_pool::PoolError::Timeout))
    });
    pool.terminate();
}
