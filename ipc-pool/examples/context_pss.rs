//! A 256 MiB read-only context shared by a pool of 2 workers: the proportional set size (PSS)
//! of the parent and the workers together, against the context's size (issue #13: under
//! 1.5 x). Run with `cargo run --release -p ipc-pool --example context_pss [MiB]`.
//!
//! The table is built in the parent, copied once into a `Frozen` segment (sealed read-only
//! shared memory) and dropped; every worker maps the segment and reads all of it.

use std::time::Duration;

use ipc_core::shm::Frozen;
use ipc_pool::Pool;

/// Reads every page of the table (one `u64` per 4 KiB), then waits so that both workers are
/// busy at once (each takes one task); its pid and the sum.
fn touch_all(table: &mut Frozen<u64>, _: u32) -> (u32, u64) {
    let sum = table
        .iter()
        .step_by(512)
        .fold(0u64, |a, &x| a.wrapping_add(x));
    std::thread::sleep(Duration::from_millis(300));
    (ipc_core::process::pid(), sum)
}

/// A process's proportional set size in KiB (`/proc/<pid>/smaps_rollup`).
fn pss_kib(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mib: u64 = std::env::args().nth(1).map_or(Ok(256), |a| a.parse())?;
    let n = (mib << 20) / 8;
    let table: Vec<u64> = (0..n).collect();
    let frozen = Frozen::new(&table)?;
    drop(table);
    let pool = Pool::builder().processes(2).context(frozen).build()?;
    let out = pool.stateful().map_chunked(touch_all, 0..2u32, 1)?;
    let workers: Vec<u32> = out.iter().map(|o| o.0).collect();
    let parent = pss_kib(std::process::id());
    let each: Vec<u64> = workers.iter().map(|&p| pss_kib(p)).collect();
    let total = parent + each.iter().sum::<u64>();
    let ratio = total as f64 / (mib * 1024) as f64;
    println!("context: {mib} MiB, read in full by workers {workers:?}");
    println!(
        "PSS: parent {:.1} MiB, workers {:?} MiB, total {:.1} MiB = {ratio:.2} x the context (target < 1.5 x)",
        parent as f64 / 1024.0,
        each.iter()
            .map(|k| format!("{:.1}", *k as f64 / 1024.0))
            .collect::<Vec<_>>(),
        total as f64 / 1024.0
    );
    pool.close();
    pool.join()?;
    if ratio >= 1.5 {
        return Err(format!("total PSS {ratio:.2} x the context").into());
    }
    Ok(())
}
