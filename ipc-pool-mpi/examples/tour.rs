//! The seed's Pool experiment on MPI ranks: `cargo xtask mpi` runs it on 4 ranks in both launch
//! modes (`mpirun -n 4 tour world`, then `mpirun -n 1 tour spawn 3`).

use std::time::Duration;

/// The seed's task: a square, and the pid of the process that computed it.
fn square_with_pid(x: u64) -> (u64, u32) {
    std::thread::sleep(Duration::from_millis(20));
    (x * x, std::process::id())
}

fn main() -> Result<(), ipc_pool::PoolError> {
    let mpi = ipc_pool_mpi::init()?;
    let mode: Vec<String> = std::env::args().skip(1).collect();
    let pool = match mode.first().map(String::as_str) {
        Some("spawn") => mpi.spawn_pool(mode.get(1).and_then(|n| n.parse().ok()).unwrap_or(3))?,
        _ => mpi.world_pool()?,
    };
    let (rank, size) = mpi.world();
    println!(
        "driver: pid {} (rank {rank} of a world of {size}), {} ranks serve ({} mode)",
        std::process::id(),
        pool.processes(),
        mode.first().map_or("world", String::as_str)
    );
    let out = pool.map_chunked(square_with_pid, 1..=8, 1)?;
    for (x, (sq, pid)) in (1..=8).zip(&out) {
        println!("  {x}^2 = {sq:<3} computed by pid {pid}");
    }
    let pids: std::collections::BTreeSet<u32> = out.iter().map(|(_, p)| *p).collect();
    println!(
        "  {} distinct rank processes computed the 8 squares",
        pids.len()
    );
    pool.close();
    pool.join()?;
    println!("  close() + join(): the ranks left");
    drop(pool);
    drop(mpi);
    Ok(())
}
