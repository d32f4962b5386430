//! How a child started by fork reports its outcome (`process::slot`): a small one through its
//! slot, so that its parent wakes once; a large one, or one carrying descriptors, on its
//! connection, whose end of file still reports a child killed mid-message, whatever siblings
//! were forked meanwhile.

mod common;

use std::time::{Duration, Instant};

use common::{LONG, Reap, builder};
use ipc_core::process::{JoinError, StartMethod};

/// This thread's voluntary context switches so far (each time it blocked).
fn blocked_times() -> u64 {
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("voluntary_ctxt_switches in /proc/thread-self/status")
}

/// Returns `x + 1` after 20 ms.
fn late_small(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(20));
    x + 1
}

/// Returns 200 copies of `u64::MAX - x` (2 000 bytes encoded) after 20 ms.
fn late_large(x: u64) -> Vec<u64> {
    std::thread::sleep(Duration::from_millis(20));
    vec![u64::MAX - x; 200]
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Returns at once, then lingers 50 ms before exiting: its exit waits for a child of its own.
fn report_then_linger(x: u64) -> u64 {
    // Not joined here: the exit joins it, as at normal exit.
    drop(
        ipc_core::process::Builder::new()
            .start_method(StartMethod::Fork)
            .spawn(50, sleep_ms)
            .unwrap(),
    );
    x + 1
}

/// Joins 10 children that report and then linger; how many times the joining thread slept.
/// Run in a spawned child, whose only thread is the joiner (no other test contends for the
/// process-wide lock there).
fn sleeps_for_ten_joins((): ()) -> u64 {
    let mut slept = 0;
    for i in 0..10 {
        // The child ends by itself within 50 ms or so.
        let h = ipc_core::process::Builder::new()
            .start_method(StartMethod::Fork)
            .spawn(i, report_then_linger)
            .unwrap();
        let before = blocked_times();
        assert_eq!(h.join().unwrap(), i + 1);
        slept += blocked_times() - before;
    }
    slept
}

// A joiner waiting for a child that returns a small value sleeps once: the child's exit wakes
// it, with the value already in the slot. (On the connection, the value wakes it, then it
// sleeps again until the exit: here the child lingers after its report, so that is 2 sleeps.)
#[test]
fn a_small_outcome_wakes_the_joiner_once() {
    let slept = builder(StartMethod::Spawn)
        .spawn((), sleeps_for_ten_joins)
        .unwrap()
        .join()
        .unwrap();
    assert!(
        slept <= 15,
        "{slept} sleeps for 10 joins (one each expected)"
    );
}

// Outcomes too large for a slot (504 bytes) come on the connection, alone or among many
// children that hold slots, and more children than slots (64) at once all report.
#[test]
fn large_outcomes_and_more_children_than_slots_all_report() {
    let small: Vec<_> = (0..80u64)
        .map(|i| builder(StartMethod::Fork).spawn(i, late_small).unwrap())
        .collect();
    let large: Vec<_> = (0..5u64)
        .map(|i| builder(StartMethod::Fork).spawn(i, late_large).unwrap())
        .collect();
    for (i, h) in large.into_iter().enumerate() {
        assert_eq!(h.join().unwrap(), vec![u64::MAX - i as u64; 200]);
    }
    for (i, h) in small.into_iter().enumerate() {
        assert_eq!(h.join().unwrap(), i as u64 + 1);
    }
}

/// A string (which encodes with one copy, even in a debug build) of `len` bytes.
fn huge(len: usize) -> String {
    "x".repeat(len)
}

// A child killed while its large outcome waits for a reader is an error for the join, at once,
// even though a sibling forked while that child was running is still alive: the sibling does
// not keep the child's end of its connection (the parent's copy, held for the slot, is closed
// in every later fork child).
#[test]
fn a_child_killed_mid_message_is_an_error_despite_a_younger_sibling() {
    let sender = builder(StartMethod::Fork).spawn(16 << 20, huge).unwrap();
    let reap_sender = Reap(&sender);
    let sibling = builder(StartMethod::Fork).spawn(60_000, sleep_ms).unwrap();
    let reap_sibling = Reap(&sibling);
    // The sender fills what its connection buffers (2 MiB) and blocks, as nobody reads yet
    // (asking whether it is alive would read).
    std::thread::sleep(Duration::from_millis(500));
    sender.kill().unwrap();
    let t0 = Instant::now();
    let code = sender.join_timeout(LONG);
    let took = t0.elapsed();
    assert!(
        matches!(code, Ok(-9)) && took < LONG,
        "the join waited for the sibling: {code:?} after {took:?}"
    );
    drop(reap_sender);
    match sender.join() {
        Err(JoinError::Signaled(9)) => {}
        other => panic!("expected SIGKILL, got {other:?}"),
    }
    sibling.kill().unwrap();
    drop(reap_sibling);
    assert!(matches!(sibling.join(), Err(JoinError::Signaled(9))));
}
