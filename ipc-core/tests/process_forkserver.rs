//! The forkserver killed in the middle of starts (its own test binary: it kills this process's
//! server over and over, which would disturb other tests sharing it). A start either gives a
//! child that ran its function once, or is served by a replacement server; a function never
//! runs twice, and a start that failed never ran its function.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{LONG, builder, kill_pid, wait_gone};
use ipc_core::process::{self, StartMethod};

/// Leaves a mark `<token>.<pid>` in `dir`: proof of each run of the function.
fn mark((dir, token): (PathBuf, u32)) -> u32 {
    std::fs::write(dir.join(format!("{token}.{}", std::process::id())), b"").unwrap();
    token
}

fn noop((): ()) {}

fn runs_per_token(dir: &Path) -> HashMap<u32, usize> {
    let mut runs = HashMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        let (token, _pid) = name.split_once('.').unwrap();
        *runs.entry(token.parse().unwrap()).or_default() += 1;
    }
    runs
}

#[test]
fn a_server_killed_during_starts_never_runs_a_function_twice() {
    let dir = std::env::temp_dir().join(format!("ipc-core-forkserver-kill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut failed = Vec::new();
    for i in 0..100u32 {
        if process::forkserver_pid().is_none() {
            builder(StartMethod::ForkServer)
                .spawn((), noop)
                .unwrap()
                .join()
                .unwrap();
        }
        let server = process::forkserver_pid().expect("a forkserver runs");
        // Kill the server at a different moment of each start (0 to 400 us into it).
        let delay = Duration::from_micros(u64::from(i * 37 % 400));
        let killer = std::thread::spawn(move || {
            let t = Instant::now();
            while t.elapsed() < delay {
                std::hint::spin_loop();
            }
            kill_pid(server);
        });
        match builder(StartMethod::ForkServer).spawn((dir.clone(), i), mark) {
            // Whether the child ran depends on when the server died; it is ours either way
            // (the server forks its children as our children), so its exit is known.
            Ok(h) => assert!(
                h.join_timeout(LONG).unwrap().is_some(),
                "start {i}: no exit"
            ),
            Err(e) => failed.push((i, e.to_string())),
        }
        killer.join().unwrap();
        assert!(wait_gone(server, LONG));
    }
    // Orphaned children (if any) would run now: give them time to leave their marks.
    std::thread::sleep(Duration::from_millis(300));
    let runs = runs_per_token(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let twice: Vec<_> = runs.iter().filter(|&(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "functions run more than once: {twice:?}");
    let failed_but_ran: Vec<_> = failed
        .iter()
        .filter(|(i, _)| runs.contains_key(i))
        .collect();
    assert!(
        failed_but_ran.is_empty(),
        "failed starts that ran: {failed_but_ran:?}"
    );
    assert!(
        failed.is_empty(),
        "starts failed because the server was killed: {failed:?}"
    );
}
