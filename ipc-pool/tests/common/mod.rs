//! The multi-process test helpers: one copy for the workspace, kept with ipc-core's tests.

#[path = "../../../ipc-core/tests/common/mod.rs"]
mod shared;

#[allow(unused_imports, unreachable_pub)]
pub use shared::*;

/// The CPUs this process may run on now (a pool task: read in its worker).
#[allow(dead_code, unreachable_pub)]
pub fn allowed_cpus(_: u32) -> Vec<usize> {
    let set = rustix::thread::sched_getaffinity(None).unwrap();
    (0..rustix::thread::CpuSet::MAX_CPU)
        .filter(|&c| set.is_set(c))
        .collect()
}
