//! The tour's pool sections: the seed's `Pool` experiments (map with the workers' pids,
//! close/join, maxtasksperchild), a worker killed in the middle of a map, and the pool for
//! real workloads (worker state, a task timeout, adaptive chunks and the insights).

use std::collections::BTreeMap;
use std::time::Duration;

use ipc_pool::{Chunking, Pool, TaskError};

use crate::{Res, conclude, say, section};

/// The seed's `do_calculation`: doubles its input, saying which worker ran it.
fn do_calculation(x: u32) -> (u32, u32) {
    (x * 2, ipc_core::process::pid())
}

/// Which worker pid ran which inputs.
fn by_worker(pids: impl IntoIterator<Item = (u32, u32)>) -> String {
    let mut m: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for (x, pid) in pids {
        m.entry(pid).or_default().push(x);
    }
    m.iter()
        .map(|(pid, xs)| format!("pid {pid}: {xs:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Sections 15 to 17.
pub(crate) fn run(epoch: u64) -> Res {
    section(15, "A Pool maps a function over inputs, in parallel");
    let pool = Pool::builder().processes(2).build()?;
    let out = pool.map(do_calculation, 0..10)?;
    say(
        epoch,
        format!(
            "map(do_calculation, 0..10) = {:?}",
            out.iter().map(|r| r.0).collect::<Vec<_>>()
        ),
    );
    say(
        epoch,
        format!("ran by {}", by_worker((0..10).zip(out.iter().map(|r| r.1)))),
    );
    pool.close();
    pool.join()?;
    say(
        epoch,
        "close() then join(): every task ran, the workers are reaped",
    );
    let recycled = Pool::builder()
        .processes(2)
        .max_tasks_per_worker(2)
        .build()?;
    let out = recycled.map_chunked(do_calculation, 0..10, 1)?;
    say(
        epoch,
        format!(
            "with max_tasks_per_worker(2) (maxtasksperchild): {}",
            by_worker((0..10).zip(out.iter().map(|r| r.1)))
        ),
    );
    conclude(
        "the same results as a sequential map, from 2 workers; a worker retires after its 2 \
         tasks and a fresh one takes over",
    );

    section(
        16,
        "A worker killed in the middle of a map fails only its task",
    );
    let pool = Pool::builder().processes(2).build()?;
    let r = pool.map_async(sleepy_or_doomed, 0..12, Some(3))?;
    let err = match r.get() {
        Ok(_) => "no error".to_string(),
        Err(e) => e.to_string(),
    };
    say(
        epoch,
        format!("map_async over 0..12 (item 7 is killed): {err}"),
    );
    let each = pool.map_results_chunked(sleepy_or_doomed, 0..12, 3)?;
    let fine: Vec<u32> = each
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    let failed: Vec<String> = each
        .iter()
        .filter_map(|r| r.as_ref().err().map(TaskError::to_string))
        .collect();
    say(epoch, format!("map_results: ok {fine:?}"));
    say(epoch, format!("map_results: failed {failed:?}"));
    say(
        epoch,
        format!(
            "the pool goes on: map(0..4) = {:?}",
            pool.map(|x: u32| x + 100, 0..4)?
        ),
    );
    conclude(
        "CPython's Pool hangs when a worker dies (gh-66587); here the killed item fails with the \
         signal, its chunk-mates run elsewhere, and a replacement worker takes over",
    );

    section(
        17,
        "Worker state, a task timeout, adaptive chunks and what the pool saw",
    );
    let pool = Pool::builder()
        .processes(2)
        .initializer(load_table, 10_000)
        .on_exit(table_lookups)
        .task_timeout(Duration::from_millis(300))
        .chunking(Chunking::ADAPTIVE)
        .progress_bar(true)
        .build()?;
    let found = pool.stateful().map(look_up, [3u64, 9_999, 123_456])?;
    say(
        epoch,
        format!(
            "initializer(load_table, 10_000) ran once per worker; look_up(3, 9_999, 123_456) = {found:?}"
        ),
    );
    let each = pool.map_results_chunked(nap_for, [10u64, 60_000, 10], 1)?;
    let shown: Vec<String> = each
        .iter()
        .map(|r| match r {
            Ok(ms) => format!("{ms} ms: ok"),
            Err(e) => e.to_string(),
        })
        .collect();
    say(epoch, format!("task_timeout(300 ms): {shown:?}"));
    let sum: u64 = pool.map(|x: u64| x % 7, 0..200_000u64)?.iter().sum();
    say(
        epoch,
        format!(
            "adaptive map of 200 000 tiny tasks: sum {sum} (with a progress bar when this \
             runs in a terminal)"
        ),
    );
    let seen = pool.insights();
    for line in seen.to_string().lines() {
        say(epoch, line);
    }
    pool.close();
    pool.join()?;
    for e in pool.worker_exits::<u64>() {
        say(
            epoch,
            format!(
                "worker {} left after {:?} look-ups (its exit hook)",
                e.pid, e.output
            ),
        );
    }
    conclude(
        "tasks are plain functions, so the pool carries their state: made once per worker,\n\
         borrowed by each task, handed to the exit hook; a task past its timeout has its worker\n\
         replaced; adaptive chunks grow to about 0.5 ms of work (a tiny task travels by the\n\
         hundred); the insights count every item once",
    );
    Ok(())
}

/// The initializer: a table made once in each worker, and a count of its uses.
fn load_table(size: u64) -> (Vec<u64>, u64) {
    ((0..size).map(|k| k * k).collect(), 0)
}

fn look_up(table: &mut (Vec<u64>, u64), k: u64) -> Option<u64> {
    table.1 += 1;
    table.0.get(k as usize).copied()
}

/// The exit hook: how many look-ups this worker served.
fn table_lookups(table: (Vec<u64>, u64)) -> u64 {
    table.1
}

fn nap_for(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Item 7 kills its own worker (as the OOM killer or a stray `kill -9` would); the others take
/// a moment.
fn sleepy_or_doomed(x: u32) -> u32 {
    if x == 7 {
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    }
    std::thread::sleep(Duration::from_millis(20));
    x
}
