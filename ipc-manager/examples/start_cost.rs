//! How long a manager takes to start and to shut down (the breakdown behind the
//! `manager_start` bench): `cargo run --release -p ipc-manager --example start_cost`.
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut start, mut stop) = (Duration::ZERO, Duration::ZERO);
    let n: u32 = std::env::args().nth(1).map_or(50, |a| a.parse().unwrap());
    for _ in 0..n {
        let t0 = Instant::now();
        let m = ipc_manager::Manager::start()?;
        let t1 = Instant::now();
        m.shutdown()?;
        start += t1 - t0;
        stop += t1.elapsed();
    }
    println!(
        "start {:?}  shutdown {:?}  (mean of {n})",
        start / n,
        stop / n
    );
    Ok(())
}
