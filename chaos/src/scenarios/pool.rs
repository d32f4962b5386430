//! The pool with a worker killed at each step of a task, and with its owner killed.
//!
//! ```text
//! pool-worker   Pool(2) maps 200 items (chunks of 1-8); the first worker to start takes the
//!               round's token (a file) and is the victim: armed (pool.task.taken,
//!               pool.task.running, pool.result.committed) or struck at random by its pid.
//!               Every item comes back Ok(2x), except at most one WorkerDied(SIGKILL) per
//!               kill (the item it was running); the pool then maps 20 more, all Ok (but
//!               for one WorkerDied(SIGKILL) if the victim reached its armed point only then:
//!               it ran fewer items of the first map than the point's count)
//! pool-owner    a child owns a Pool(2) mapping 2 ms tasks; the runner kills the owner: its
//!               workers are gone within 1 s (the census then finds no stray and no segment)
//! ```

use std::time::{Duration, Instant};

use ipc_pool::{Pool, TaskError};

use super::Scenario;
use crate::harness::{Counts, Ctx, HANG, Kill};

pub(super) fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "pool-worker",
            about: "Pool: a worker dies at each step of a task",
            points: &[
                "pool.task.taken",
                "pool.task.running",
                "pool.result.committed",
            ],
            max_nth: 40,
            window_us: 30_000,
            run: pool_worker,
        },
        Scenario {
            name: "pool-owner",
            about: "Pool: its owner dies mid-map; no worker outlives it by 1 s",
            points: &[],
            max_nth: 1,
            window_us: 100_000,
            run: pool_owner,
        },
    ]
}

/// The initializer: the first worker to create the token file is the victim (it writes its
/// pid there and arms the round's point, if any).
fn take_token((path, kill): (String, Kill)) {
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        use std::io::Write;
        let _ = write!(f, "{}", ipc_core::process::pid());
        kill.arm();
    }
}

fn double(x: u64) -> u64 {
    // About 50 us of work, so that a random kill finds tasks under way.
    let mut h = x;
    for _ in 0..20_000 {
        h = std::hint::black_box(h.wrapping_mul(31).wrapping_add(7));
    }
    std::hint::black_box(h);
    x * 2
}

/// Runs `f` on a thread; the receiver gets its result (a caller that waits for it with a
/// timeout and gets none has found a hang).
fn started<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> std::sync::mpsc::Receiver<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx
}

/// The token file of `pool_worker`, removed when dropped.
struct TokenFile(std::path::PathBuf);

impl Drop for TokenFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn pool_worker(c: &mut Ctx) -> anyhow::Result<Counts> {
    let mut counts = Counts::default();
    // Removed after the pool is gone (locals drop in reverse order): a replacement worker runs
    // the initializer too, and one that started after the map would make the token again.
    let token = TokenFile(std::env::temp_dir().join(format!(
        "ipc-chaos-{}-token-{}",
        std::process::id(),
        c.rng.next_u64()
    )));
    let path = token.0.to_string_lossy().into_owned();
    let pool = std::sync::Arc::new(
        Pool::builder()
            .processes(2)
            .start_method(c.method)
            .initializer(take_token, (path, c.kill.clone()))
            .build()?,
    );
    let chunk = 1 + c.rng.below(8) as usize;
    let map = {
        let pool = pool.clone();
        started(move || pool.map_results_chunked(double, 0..200u64, chunk))
    };
    // The victim's pid is in the token once it started.
    let deadline = Instant::now() + HANG;
    let mut victim = None;
    while victim.is_none() && Instant::now() < deadline {
        victim = std::fs::read_to_string(&token.0)
            .ok()
            .and_then(|s| s.parse::<u32>().ok());
        std::thread::sleep(Duration::from_micros(200));
    }
    if let Some(pid) = victim {
        c.strike_pid(pid);
    }
    let map = map.recv_timeout(HANG * 2).ok();
    let Some(results) = map else {
        counts.hangs += 1;
        counts.note("map_results never returned");
        return Ok(counts);
    };
    let results = results?;
    let mut died = 0;
    for (i, r) in results.iter().enumerate() {
        match r {
            Ok(v) if *v == 2 * i as u64 => {}
            Ok(v) => {
                counts.torn += 1;
                counts.note(format!("item {i}: {v}"));
            }
            Err(TaskError::WorkerDied {
                signal: Some(9), ..
            }) => died += 1,
            Err(e) => {
                counts.lost += 1;
                counts.note(format!("item {i}: {e}"));
            }
        }
    }
    counts.killed = victim.is_some_and(|pid| {
        pool.insights()
            .workers
            .iter()
            .any(|w| w.pid == pid && !w.alive)
    });
    if died > 1 {
        counts.lost += died - 1;
        counts.note(format!("{died} items failed with one worker's death"));
    }
    // Still usable. A victim still alive may reach its armed point in this map (it ran fewer
    // items of the first than the point's count): then the item it runs fails with its death,
    // as the contract says, and every other item comes back.
    let may_die = victim.is_some() && !counts.killed && died == 0;
    let again = {
        let pool = pool.clone();
        started(move || pool.map_results(double, 0..20u64))
            .recv_timeout(HANG)
            .ok()
    };
    match again {
        Some(Ok(results)) if results.len() == 20 => {
            let mut died = 0;
            for (i, r) in results.iter().enumerate() {
                match r {
                    Ok(v) if *v == 2 * i as u64 => {}
                    Err(TaskError::WorkerDied {
                        signal: Some(9), ..
                    }) if may_die && died == 0 => died += 1,
                    r => {
                        counts.lost += 1;
                        counts.note(format!("the next map, item {i}: {r:?}"));
                    }
                }
            }
            counts.killed |= died == 1;
        }
        Some(r) => {
            counts.lost += 1;
            counts.note(format!("the next map: {r:?}"));
        }
        None => {
            counts.hangs += 1;
            counts.note("the next map never returned");
        }
    }
    drop(pool);
    Ok(counts)
}

fn slow(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(2));
    x
}

fn owner((method, kill): (ipc_core::process::StartMethod, Kill)) -> usize {
    kill.arm();
    let pool = Pool::builder()
        .processes(2)
        .start_method(method)
        .build()
        .expect("a pool");
    pool.map(slow, 0..500u64).map_or(0, |v| v.len())
}

fn pool_owner(c: &mut Ctx) -> anyhow::Result<Counts> {
    crate::harness::kill_owner(c, owner, Duration::ZERO, "the pool's owner")
}
