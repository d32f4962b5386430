//! The manager cases (`manager_*`): a dict and a namespace on the shared-memory path (a local
//! client's default) and on the socket path, start and shutdown, and the server's CPU at
//! rest. The server is started once per repetition, outside
//! the timed region (except in `manager_start`, where starting is what is measured).

use std::time::{Duration, Instant};

use anyhow::ensure;
use ipc_manager::Manager;

use crate::pin::Placement;

/// `d["k"] = i; d["k"]` on a manager dict, `n` times: time per set+get (two round trips,
/// through shared memory).
pub fn manager_dict_setget(_: &Placement, n: u64) -> anyhow::Result<Duration> {
    dict_setget(Manager::start()?, n)
}

/// [`manager_dict_setget`] with every call over the Unix socket.
pub fn manager_dict_setget_socket(_: &Placement, n: u64) -> anyhow::Result<Duration> {
    dict_setget(sockets_only()?, n)
}

fn sockets_only() -> anyhow::Result<Manager> {
    Ok(Manager::builder().shared_memory_path(false).start()?)
}

fn dict_setget(m: Manager, n: u64) -> anyhow::Result<Duration> {
    let d = m.dict::<String, u64>()?;
    d.insert("k".into(), 0)?;
    let t0 = Instant::now();
    for i in 0..n {
        d.insert("k".into(), i)?;
        ensure!(d.get("k")? == Some(i), "wrong value");
    }
    let dt = t0.elapsed();
    m.shutdown()?;
    Ok(dt)
}

/// `ns.x = i; ns.x` on a manager namespace, `n` times: time per set+get (shared memory).
pub fn manager_namespace_setattr_getattr(_: &Placement, n: u64) -> anyhow::Result<Duration> {
    namespace_setget(Manager::start()?, n)
}

/// [`manager_namespace_setattr_getattr`] with every call over the Unix socket.
pub fn manager_namespace_setattr_getattr_socket(_: &Placement, n: u64) -> anyhow::Result<Duration> {
    namespace_setget(sockets_only()?, n)
}

fn namespace_setget(m: Manager, n: u64) -> anyhow::Result<Duration> {
    let ns = m.namespace()?;
    ns.set("x", &0u64)?;
    let t0 = Instant::now();
    for i in 0..n {
        ns.set("x", &i)?;
        ensure!(ns.get::<u64>("x")? == i, "wrong value");
    }
    let dt = t0.elapsed();
    m.shutdown()?;
    Ok(dt)
}

/// Start a manager (its server process) and shut it down, `n` times.
pub fn manager_start(_: &Placement, n: u64) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    for _ in 0..n {
        Manager::start()?.shutdown()?;
    }
    Ok(t0.elapsed())
}

/// CPU ticks (user + system) of process `pid`, all its threads.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let (_, rest) = stat
        .rsplit_once(')')
        .ok_or_else(|| anyhow::anyhow!("bad stat"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    let hz = rustix::param::clock_ticks_per_second() as f64;
    Ok(ticks as f64 / hz)
}

/// A manager at rest for `n` ms, holding a dict, a queue with a client blocked on it and a
/// lock: the CPU its server uses, in percent of one core.
pub fn manager_idle_cpu(_: &Placement, n: u64) -> anyhow::Result<Duration> {
    let m = Manager::start()?;
    let d = m.dict::<u32, u32>()?;
    d.insert(1, 1)?;
    let _lock = m.lock()?;
    std::thread::sleep(Duration::from_millis(100));
    let pid = m.server_pid();
    let before = cpu_seconds(pid)?;
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(n));
    let wall = t0.elapsed().as_secs_f64();
    let used = cpu_seconds(pid)? - before;
    m.shutdown()?;
    Ok(Duration::from_secs_f64(used / wall * 100.0))
}
