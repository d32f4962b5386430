//! The multi-process test helpers: one copy for the workspace, kept with ipc-core's tests.

#[path = "../../../ipc-core/tests/common/mod.rs"]
mod shared;

#[allow(unused_imports, unreachable_pub)]
pub use shared::*;

use ipc_core::process::{Builder, StartMethod};

/// Runs `scenario(method)` for each start method, each in a fresh single-threaded process (so
/// that the fork start method needs no opt-in), and fails with the scenario's panic message.
#[allow(dead_code, unreachable_pub)]
pub fn under_each(scenario: fn(StartMethod)) {
    for method in METHODS {
        let child = Builder::new()
            .start_method(StartMethod::Spawn)
            .spawn(method, scenario)
            .unwrap();
        let reap = Reap(&child);
        child
            .join_timeout(2 * LONG)
            .unwrap_or_else(|e| panic!("the scenario under {method} did not end: {e}"));
        drop(reap);
        if let Err(e) = child.join() {
            panic!("the scenario under {method} failed: {e}");
        }
    }
}

/// A process's resident memory, in KiB.
#[allow(dead_code, unreachable_pub)]
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}
