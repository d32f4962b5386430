//! The programs the MPI tests run under `mpirun` (see tests/mpi.rs): each checks one part of
//! the contract from the driver and prints `ok: ...` lines; a failed check panics (exit 101).
//!
//! `scenarios <world|spawn N> <contract|lose|bench ...>`

use std::time::{Duration, Instant};

use ipc_pool::{Pool, PoolError, TaskError};

fn square(x: u64) -> u64 {
    x * x
}

/// This process's pid, after 5 ms (long enough that every rank gets some).
fn pid_of(_: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(5));
    std::process::id()
}

/// A large argument and a large result (they travel in many fragments and messages).
fn reversed(mut v: Vec<u8>) -> Vec<u8> {
    v.reverse();
    v
}

/// A checksum of a large argument.
fn sum_of(v: Vec<u8>) -> u64 {
    v.iter().map(|&b| u64::from(b)).sum()
}

fn add((a, b): (u64, u64)) -> u64 {
    a + b
}

fn panics_on_13(x: u64) -> u64 {
    assert!(x != 13, "thirteen is unlucky");
    x
}

/// Kills its own rank (SIGKILL) on item 7.
fn dies_on_7(x: u64) -> u64 {
    if x == 7 {
        let _ = std::process::Command::new("kill")
            .args(["-9", &std::process::id().to_string()])
            .status();
        std::thread::sleep(Duration::from_secs(60));
    }
    std::thread::sleep(Duration::from_millis(20));
    x
}

fn main() -> Result<(), PoolError> {
    let mpi = ipc_pool_mpi::init()?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "lose" || a == "stall") {
        // Short, for a quick test; long enough for a loaded 2-core machine (heartbeats come
        // every 250 ms from a live rank).
        mpi.silence_limit(Duration::from_secs(2));
    }
    let (pool, rest) = match args.first().map(String::as_str) {
        Some("world") => (mpi.world_pool()?, &args[1..]),
        Some("spawn") => {
            let n = args[1].parse().expect("spawn N");
            (mpi.spawn_pool(n)?, &args[2..])
        }
        _ => panic!("usage: scenarios <world|spawn N> <contract|lose|bench>"),
    };
    match rest.first().map(String::as_str) {
        Some("contract") => contract(&pool)?,
        Some("lose") => lose(&pool)?,
        Some("stall") => stall(&pool)?,
        Some("bench") => bench(&pool, &rest[1..])?,
        // A pool at rest for N seconds after one map (for measuring its idle CPU from outside).
        Some("idle") => {
            pool.map(square, 0..100)?;
            let secs = rest.get(1).and_then(|s| s.parse().ok()).unwrap_or(5);
            println!("ok: idle for {secs} s");
            std::thread::sleep(Duration::from_secs(secs));
        }
        other => panic!("unknown scenario {other:?}"),
    }
    pool.close();
    pool.join()?;
    drop(pool);
    drop(mpi);
    Ok(())
}

fn contract(pool: &Pool) -> Result<(), PoolError> {
    let n = pool.processes();
    println!("ok: {n} ranks serve");
    let squares = pool.map(square, 0..1000)?;
    assert_eq!(squares, (0..1000u64).map(|x| x * x).collect::<Vec<_>>());
    println!("ok: map of 1000 items");
    let one = pool.map_chunked(square, 0..100, 1)?;
    assert_eq!(one[99], 99 * 99);
    println!("ok: map at chunk size 1");
    let big: Vec<Vec<u8>> = (0..40u8)
        .map(|k| vec![k; 50_000 + usize::from(k)])
        .collect();
    let back = pool.map_chunked(reversed, big.clone(), 3)?;
    assert_eq!(back, big, "each argument, reversed, is itself");
    println!("ok: arguments and results of 50 kB");
    // 100 MB of arguments in chunks of 20 MB: the driver's send budget (32 MiB) holds one
    // bundle at a time, the next waits for the first rank's report.
    let sums = pool.map_chunked(sum_of, (0..100u64).map(|k| vec![k as u8; 1 << 20]), 20)?;
    assert_eq!(sums, (0..100u64).map(|k| k << 20).collect::<Vec<_>>());
    // One argument larger than the whole budget (a plain send).
    let huge = pool.apply(sum_of, vec![1u8; 40 << 20])?;
    assert_eq!(huge, 40 << 20);
    println!("ok: 100 MB of arguments, and one of 40 MB");
    let sums = pool.map(add, (0..50u64).map(|k| (k, 2 * k)))?;
    assert_eq!(sums[49], 147);
    println!("ok: a starmap (tuple arguments)");
    let pids: std::collections::BTreeSet<u32> =
        pool.map_chunked(pid_of, 0..64, 1)?.into_iter().collect();
    assert!(
        pids.len() > 1 && !pids.contains(&std::process::id()),
        "{pids:?}"
    );
    println!(
        "ok: tasks ran in {} rank processes, none in the driver",
        pids.len()
    );
    let mut firsts = Vec::new();
    for r in pool.imap(square, 1..).take(5) {
        firsts.push(r?);
    }
    assert_eq!(firsts, [1, 4, 9, 16, 25]);
    println!("ok: imap over an endless input, take(5)");
    let mut unordered: Vec<u64> = pool
        .imap_unordered(square, 0..200)
        .collect::<Result<_, _>>()?;
    unordered.sort();
    assert_eq!(unordered[199], 199 * 199);
    println!("ok: imap_unordered");
    let r = pool.apply_async(square, 12)?;
    assert_eq!(r.get()?, 144);
    println!("ok: apply_async");
    let results = pool.map_results(panics_on_13, 0..20)?;
    for (k, r) in results.iter().enumerate() {
        match r {
            Ok(v) => assert_eq!(*v, k as u64),
            Err(TaskError::Panicked { index, message, .. }) => {
                assert_eq!((k, *index), (13, 13));
                assert!(message.contains("thirteen is unlucky"), "{message}");
            }
            Err(e) => panic!("item {k}: {e}"),
        }
    }
    match pool.map(panics_on_13, 0..20) {
        Err(PoolError::Task(TaskError::Panicked { index: 13, .. })) => {}
        other => panic!("map with a panicking item gave {other:?}"),
    }
    println!("ok: a panicking task fails alone (item 13), the ranks serve on");
    assert_eq!(pool.map(square, 0..10)?[9], 81);
    println!("ok: the pool runs a map after the failures");
    Ok(())
}

fn lose(pool: &Pool) -> Result<(), PoolError> {
    let started = Instant::now();
    let results = pool.map_results_chunked(dies_on_7, 0..40, 1)?;
    let mut lost = Vec::new();
    for (k, r) in results.iter().enumerate() {
        match r {
            Ok(v) => assert_eq!(*v, k as u64),
            Err(TaskError::Lost { index, worker, why }) => {
                println!("lost: task {index} on {worker}: {why}");
                lost.push(*index);
            }
            Err(e) => panic!("item {k}: {e}"),
        }
    }
    assert_eq!(lost, [7], "only the task that killed its rank fails");
    println!(
        "ok: the rank running task 7 died; 39 other results present after {:?}",
        started.elapsed()
    );
    assert_eq!(pool.map(square, 0..10)?[9], 81);
    println!("ok: the pool runs a map on the remaining ranks");
    Ok(())
}

/// `n` steps of a 64-bit LCG (the same arithmetic as the Python peer's task), never folded.
/// `reversed`, after 20 ms.
fn slow_reversed(v: Vec<u8>) -> Vec<u8> {
    std::thread::sleep(Duration::from_millis(20));
    reversed(v)
}

/// A rank that stops answering (SIGSTOP) before a map whose messages to it are larger than
/// MPI's eager limit: the driver must not wait for it to take them.
fn stall(pool: &Pool) -> Result<(), PoolError> {
    let pids: std::collections::BTreeSet<u32> =
        pool.map_chunked(pid_of, 0..64, 1)?.into_iter().collect();
    let victim = *pids.iter().next().expect("ranks ran tasks");
    let _ = std::process::Command::new("kill")
        .args(["-STOP", &victim.to_string()])
        .status();
    println!("stopped rank process {victim}");
    let big: Vec<Vec<u8>> = (0..30u8)
        .map(|k| vec![k; 20_000 + usize::from(k)])
        .collect();
    let started = Instant::now();
    let results = pool.map_results_chunked(slow_reversed, big.clone(), 1);
    // It is lost to the pool: end it, so that the job can end (mpirun waits for every rank).
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status();
    let results = results?;
    let mut lost = 0;
    for (k, r) in results.into_iter().enumerate() {
        match r {
            Ok(v) => assert_eq!(v, big[k]),
            Err(TaskError::Lost { worker, .. }) => {
                assert!(worker.contains(&format!("pid {victim}")), "{worker}");
                lost += 1;
            }
            Err(e) => panic!("item {k}: {e}"),
        }
    }
    assert_eq!(lost, 1, "one item fails with the stopped rank");
    println!(
        "ok: a stopped rank was lost after {:?}; 29 of 30 results of 20 kB present",
        started.elapsed()
    );
    Ok(())
}

fn busy(n: u64) -> u64 {
    let mut x = 1u64;
    for _ in 0..n {
        x = std::hint::black_box(
            x.wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407),
        );
    }
    x
}

/// Steps of `busy` that take about 10 ms here, and the median time of 5 runs.
fn calibrate() -> (u64, Duration) {
    let t = Instant::now();
    busy(1_000_000);
    let per = t.elapsed().as_secs_f64() / 1e6;
    let n = (0.010 / per) as u64;
    let mut times: Vec<Duration> = (0..5)
        .map(|_| {
            let t = Instant::now();
            busy(n);
            t.elapsed()
        })
        .collect();
    times.sort();
    (n, times[2])
}

fn trivial(x: u64) -> u64 {
    x
}

/// The lines the MPI compare reads (the same as the mpi4py peer's: see bench/mpi4py_pool.py).
fn bench(pool: &Pool, args: &[String]) -> Result<(), PoolError> {
    let reps: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(3);
    let (n, one) = calibrate();
    println!(
        "calibration: one CPU task takes {:.2} ms here",
        one.as_secs_f64() * 1e3
    );
    let _ = pool.map_chunked(trivial, 0..1000, 10)?;
    for _ in 0..reps {
        for chunk in [1usize, 100] {
            let t = Instant::now();
            let out = pool.map_chunked(trivial, 0..10_000, chunk)?;
            assert_eq!(out.len(), 10_000);
            println!("trivial_chunk{chunk}: {:.6} s", t.elapsed().as_secs_f64());
        }
        // The speedup's baseline: the same 32 tasks one after the other here, just before.
        let t = Instant::now();
        let serial: Vec<u64> = (0..32).map(|_| busy(n)).collect();
        let serial_time = t.elapsed();
        let t = Instant::now();
        let out = pool.map_chunked(busy, vec![n; 32], 1)?;
        let took = t.elapsed();
        assert_eq!(out, serial);
        println!(
            "cpu32: {:.6} s speedup {:.3}",
            took.as_secs_f64(),
            serial_time.as_secs_f64() / took.as_secs_f64()
        );
    }
    Ok(())
}
