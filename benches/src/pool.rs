//! The pool cases of `cargo xtask compare`: ipc-pool beside CPython's `Pool` (2 workers each,
//! each side's default start method, the pool started outside the clock).

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use ipc_pool::Pool;

use crate::pin::Placement;

fn identity(x: u64) -> u64 {
    x
}

fn pool() -> anyhow::Result<Pool> {
    let pool = Pool::new(2)?;
    // Warm: the workers are up and have run a task each.
    ensure!(
        pool.map_chunked(identity, 0..4, 1)? == [0, 1, 2, 3],
        "warm-up"
    );
    Ok(pool)
}

fn finish(pool: Pool) -> anyhow::Result<()> {
    pool.close();
    pool.join()?;
    Ok(())
}

/// `map` of the identity over `n` items with Python's chunk size, 20 rounds; time per round.
pub fn pool_map_trivial(_: &Placement, n: u64) -> anyhow::Result<Duration> {
    const ROUNDS: u32 = 20;
    let pool = pool()?;
    let t0 = Instant::now();
    for _ in 0..ROUNDS {
        let out = pool.map(identity, 0..n)?;
        ensure!(
            out.len() as u64 == n && out.last() == Some(&(n - 1)),
            "wrong map result"
        );
    }
    let dt = t0.elapsed() / ROUNDS;
    finish(pool)?;
    Ok(dt)
}

/// `map` of the identity over `n` items, one item per chunk.
pub fn pool_map_trivial_chunk1(_: &Placement, n: u64) -> anyhow::Result<Duration> {
    let pool = pool()?;
    let t0 = Instant::now();
    let out = pool.map_chunked(identity, 0..n, 1)?;
    let dt = t0.elapsed();
    ensure!(
        out.len() as u64 == n && out.last() == Some(&(n - 1)),
        "wrong map result"
    );
    finish(pool)?;
    Ok(dt)
}

/// `apply_async(...).get()` of the identity, `n` times in a row.
pub fn pool_apply_async_latency(_: &Placement, n: u64) -> anyhow::Result<Duration> {
    let pool = pool()?;
    let t0 = Instant::now();
    for i in 0..n {
        ensure!(pool.apply_async(identity, i)?.get()? == i, "wrong result");
    }
    let dt = t0.elapsed();
    finish(pool)?;
    Ok(dt)
}

/// The CPU-bound task: the sum of the squares below `n` (as CPython's `sum_of_squares`), kept
/// from being folded away. Never inlined, so the sequential baseline runs the workers' code.
#[inline(never)]
fn sum_of_squares(n: u64) -> u64 {
    let mut total = 0u64;
    for i in 0..black_box(n) {
        total = total.wrapping_add(black_box(i).wrapping_mul(i));
    }
    total
}

/// The length of a task that takes about 10 ms here (as CPython's takes about 10-30 ms).
fn ten_ms_of_work() -> u64 {
    let mut n = 100_000u64;
    loop {
        let t = Instant::now();
        black_box(sum_of_squares(n));
        let e = t.elapsed();
        if e >= Duration::from_millis(2) {
            return (n as f64 * 10e-3 / e.as_secs_f64()) as u64;
        }
        n *= 4;
    }
}

/// `n` tasks of about 10 ms each on 2 workers: the speedup over running them here one after
/// the other (the figure is the ratio: see [`Figure::Ratio`](crate::cases::Figure::Ratio)).
pub fn pool_map_cpu(_: &Placement, n: u64) -> anyhow::Result<Duration> {
    let pool = pool()?;
    let work = ten_ms_of_work();
    let args = vec![work; n as usize];
    let t0 = Instant::now();
    let expected: Vec<u64> = args.iter().map(|&a| sum_of_squares(a)).collect();
    let sequential = t0.elapsed();
    let t0 = Instant::now();
    let got = pool.map(sum_of_squares, args)?;
    let parallel = t0.elapsed();
    ensure!(got == expected, "pool results differ");
    finish(pool)?;
    Ok(Duration::from_secs_f64(
        sequential.as_secs_f64() / parallel.as_secs_f64(),
    ))
}

/// A child of `cpu_two_processes`: waits for `go`, then runs `count` tasks of `work`.
fn cpu_child((go, work, count): (ipc_sync::Event, u64, u64)) -> u64 {
    go.wait();
    (0..count).fold(0u64, |acc, _| acc.wrapping_add(sum_of_squares(work)))
}

/// The same `n` tasks as `pool_map_cpu`, split in halves between two bare processes started
/// before the clock (no pool, no messages): the speedup this machine gives two processes in
/// this run, the ceiling `pool_map_cpu` is read against.
pub fn cpu_two_processes(_: &Placement, n: u64) -> anyhow::Result<Duration> {
    let work = ten_ms_of_work();
    let t0 = Instant::now();
    let expected = (0..n).fold(0u64, |acc, _| acc.wrapping_add(sum_of_squares(work)));
    let sequential = t0.elapsed();
    let go = ipc_sync::Event::new()?;
    let halves = [n / 2, n - n / 2];
    let children = halves
        .iter()
        .map(|&count| {
            ipc_core::process::Builder::new()
                .daemon(true)
                .spawn((go.clone(), work, count), cpu_child)
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Started and waiting: the clock runs from "go" to both results.
    std::thread::sleep(Duration::from_millis(20));
    let t0 = Instant::now();
    go.set();
    let mut got = 0u64;
    for c in children {
        got = got.wrapping_add(c.join()?);
    }
    let parallel = t0.elapsed();
    ensure!(got == expected, "the two processes' sums differ");
    Ok(Duration::from_secs_f64(
        sequential.as_secs_f64() / parallel.as_secs_f64(),
    ))
}

/// This process's resident set in MiB (`/proc/self/statm`).
fn rss_mib() -> anyhow::Result<f64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: f64 = statm.split_whitespace().nth(1).context("statm")?.parse()?;
    Ok(pages * rustix::param::page_size() as f64 / (1 << 20) as f64)
}

/// `imap` of the identity over `n` items (chunks of 1000), consumed as it goes: how far the
/// parent's resident set grew above where it started, in MiB (the figure is the value: see
/// [`Figure::Ratio`](crate::cases::Figure::Ratio)).
pub fn pool_imap_rss(_: &Placement, n: u64) -> anyhow::Result<Duration> {
    let pool = pool()?;
    // As the other sides measure on a pool that already ran the warm-up repetition: the
    // queues' rings (shared pages, counted in the RSS once touched) are warm.
    ensure!(
        pool.imap_chunked(identity, 0..n.min(500_000), 1000).count() as u64 == n.min(500_000),
        "warm-up imap"
    );
    let start = rss_mib()?;
    let mut peak = start;
    let mut count = 0u64;
    for (i, r) in pool.imap_chunked(identity, 0..n, 1000).enumerate() {
        ensure!(r? == i as u64, "wrong imap result");
        count += 1;
        if i % 100_000 == 0 {
            peak = peak.max(rss_mib()?);
        }
    }
    peak = peak.max(rss_mib()?);
    ensure!(count == n, "imap gave {count} of {n}");
    finish(pool)?;
    Ok(Duration::from_secs_f64(peak - start))
}

/// CPU seconds used so far by the pool: this process's pool threads (named `ipc-pool-*`) and
/// this process's children (the workers, and the forkserver, idle).
fn pool_cpu_seconds() -> anyhow::Result<f64> {
    fn ticks(stat: &str) -> Option<(String, u32, u64)> {
        let (head, rest) = stat.rsplit_once(')')?;
        let comm = head.split_once('(')?.1.to_string();
        let f: Vec<&str> = rest.split_whitespace().collect();
        // After the comm: state(0) ppid(1) ... utime(11) stime(12).
        let ppid = f.get(1)?.parse().ok()?;
        let t = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        Some((comm, ppid, t))
    }
    let mut total = 0u64;
    for e in std::fs::read_dir("/proc/self/task")?.flatten() {
        if let Ok(s) = std::fs::read_to_string(e.path().join("stat"))
            && let Some((comm, _, t)) = ticks(&s)
            && comm.starts_with("ipc-pool-")
        {
            total += t;
        }
    }
    let me = std::process::id();
    for e in std::fs::read_dir("/proc")?.flatten() {
        if let Ok(s) = std::fs::read_to_string(e.path().join("stat"))
            && let Some((_, ppid, t)) = ticks(&s)
            && ppid == me
        {
            total += t;
        }
    }
    Ok(total as f64 / rustix::param::clock_ticks_per_second() as f64)
}

/// A pool of 2 at rest for `n` ms: the CPU its threads and workers use, in percent of one core
/// (the figure is the ratio: see [`Figure::Ratio`](crate::cases::Figure::Ratio)).
pub fn pool_idle_cpu(_: &Placement, n: u64) -> anyhow::Result<Duration> {
    let pool = pool()?;
    std::thread::sleep(Duration::from_millis(100));
    let before = pool_cpu_seconds()?;
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(n));
    let wall = t0.elapsed().as_secs_f64();
    let used = pool_cpu_seconds()? - before;
    finish(pool)?;
    Ok(Duration::from_secs_f64(used / wall * 100.0))
}

/// Busy for `us` microseconds (as the Python sides' busy loop): CPU-bound, not asleep.
fn busy_us(us: u64) -> u64 {
    let t = Instant::now();
    while t.elapsed() < Duration::from_micros(us) {
        std::hint::spin_loop();
    }
    us
}

/// The durations (us) of the skewed workload: 400 tasks of 0.2 ms, every 40th of 20 ms
/// (joblib's auto-batching case).
pub fn skewed_durations() -> Vec<u64> {
    (0..400)
        .map(|i| if i % 40 == 0 { 20_000 } else { 200 })
        .collect()
}

/// The durations (us) of the cyclic workload: 600 tasks cycling 0.05, 0.5 and 5 ms.
pub fn cyclic_durations() -> Vec<u64> {
    (0..600).map(|i| [50, 500, 5_000][i % 3]).collect()
}

/// Each side's default chunking: Python's rule (ours too; `Chunking::ADAPTIVE` measured
/// 144-146 ms and 561-563 ms on these two workloads against 140-143 and 558 with the rule:
/// its pieces of about 0.5 ms cost more refills than they save here).
const CHUNKING: ipc_pool::Chunking = ipc_pool::Chunking::Python;

fn map_durations(durations: Vec<u64>) -> anyhow::Result<Duration> {
    let pool = Pool::builder().processes(2).chunking(CHUNKING).build()?;
    ensure!(pool.map(busy_us, [1u64, 1])? == [1, 1], "warm-up");
    let expected = durations.clone();
    let t0 = Instant::now();
    let got = pool.map(busy_us, durations)?;
    let dt = t0.elapsed();
    ensure!(got == expected, "wrong results");
    finish(pool)?;
    Ok(dt)
}

/// `map` over tasks of skewed durations (see [`skewed_durations`]), each side's default
/// chunking; the whole map's time.
pub fn pool_skewed(_: &Placement, _n: u64) -> anyhow::Result<Duration> {
    map_durations(skewed_durations())
}

/// `map` over tasks of cyclic durations (see [`cyclic_durations`]); the whole map's time.
pub fn pool_cyclic(_: &Placement, _n: u64) -> anyhow::Result<Duration> {
    map_durations(cyclic_durations())
}

fn slow_init((): ()) -> u32 {
    std::thread::sleep(Duration::from_millis(200));
    7
}

fn with_init(state: &mut u32, x: u64) -> u64 {
    x + u64::from(*state)
}

/// A pool of 2 whose initializer takes 200 ms per worker, then `map` of `n` small stateful
/// tasks: from building the pool to the results (the initializers run in parallel).
pub fn pool_expensive_init(_: &Placement, n: u64) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let pool = Pool::builder()
        .processes(2)
        .initializer(slow_init, ())
        .build()?;
    let got = pool.stateful().map(with_init, 0..n)?;
    let dt = t0.elapsed();
    ensure!(got.last() == Some(&(n - 1 + 7)), "wrong results");
    finish(pool)?;
    Ok(dt)
}

/// The per-worker state of `pool_worker_state`: a table of 100 000 squares.
fn build_table((): ()) -> std::collections::HashMap<u64, u64> {
    (0..100_000u64).map(|k| (k, k * k)).collect()
}

fn look_up(table: &mut std::collections::HashMap<u64, u64>, k: u64) -> u64 {
    table[&(k % 100_000)]
}

/// `map` of `n` look-ups in a per-worker table (built once per worker by the initializer,
/// outside the clock).
pub fn pool_worker_state(_: &Placement, n: u64) -> anyhow::Result<Duration> {
    let pool = Pool::builder()
        .processes(2)
        .initializer(build_table, ())
        .build()?;
    ensure!(
        pool.stateful().map(look_up, [3u64, 4])? == [9, 16],
        "warm-up"
    );
    let t0 = Instant::now();
    let got = pool.stateful().map(look_up, 0..n)?;
    let dt = t0.elapsed();
    ensure!(
        got.len() as u64 == n && got[12_345] == 12_345 * 12_345,
        "wrong results"
    );
    finish(pool)?;
    Ok(dt)
}

/// The shared table of `pool_shared_data`: 64 MiB of `f64`s.
const SHARED_LEN: usize = 8 << 20;

fn slice_sum(table: &mut ipc_core::shm::Frozen<f64>, i: u64) -> f64 {
    let chunk = SHARED_LEN / 64;
    let s = i as usize * chunk;
    table[s..s + chunk].iter().sum()
}

/// A 64 MiB read-only table given to 2 workers, then `map` of 64 tasks each summing a 1/64th of
/// it: from handing the table over (building the pool) to the results.
pub fn pool_shared_data(_: &Placement, _n: u64) -> anyhow::Result<Duration> {
    let table: Vec<f64> = (0..SHARED_LEN).map(|i| (i % 1000) as f64).collect();
    let t0 = Instant::now();
    let frozen = ipc_core::shm::Frozen::new(&table)?;
    drop(table);
    let pool = Pool::builder().processes(2).context(frozen).build()?;
    let sums = pool.stateful().map(slice_sum, 0..64u64)?;
    let dt = t0.elapsed();
    let expected: f64 = (0..SHARED_LEN / 64).map(|i| (i % 1000) as f64).sum();
    ensure!(sums.len() == 64 && sums[0] == expected, "wrong sums");
    finish(pool)?;
    Ok(dt)
}
