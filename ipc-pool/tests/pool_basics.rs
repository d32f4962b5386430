//! The pool's API under spawn and forkserver (and fork, in a fresh process: see
//! `a_fork_pool_works_through_its_zygote`). CPython checklist items 122-150
//! (shared/reference/python-behaviours.md), each:
//! - ported here: 122-126, 128-133, 135, 138, 139, 141 (a pool of 32), 146, 148, 149;
//!   in pool_failures.rs: 144 (every owner there is a spawned child, whose stdin is /dev/null)
//!   and 150's stages that apply (an argument or result that cannot travel: here; a worker
//!   dying while it runs: pool_failures.rs);
//! - inverted (our contract differs on purpose): 134 (a task's error carries its message and
//!   backtrace as data, not a re-raised exception: cpython_135), 145 (a killed worker breaks
//!   nothing: pool_failures.rs), 147 (max_tasks_per_worker works under every start method);
//! - ported as Rust has it: 127 (an input that fails: a Rust iterator panics, in the caller,
//!   and the pool stays usable: `an_input_that_panics_midway_leaves_the_pool_usable`);
//! - not applicable: 136, 137 and 140 (Python's garbage collector and interpreter shutdown);
//! - ported in pool_state.rs: 142 (the initializer runs in each worker; with state);
//! - ported here: 143 (the N-th start fails for want of descriptors, in a child with a low
//!   RLIMIT_NOFILE: the others are stopped and reaped, the error reaches the caller).

mod common;

use std::time::{Duration, Instant};

use common::{LONG, allowed_cpus, eventually};
use ipc_core::process::StartMethod;
use ipc_pool::{Pool, PoolError, TaskError};

/// The pool's start methods (fork is refused: see `the_fork_start_method_is_refused_clearly`).
const METHODS: [StartMethod; 2] = [StartMethod::Spawn, StartMethod::ForkServer];

fn pool(m: StartMethod, n: usize) -> Pool {
    Pool::builder()
        .processes(n)
        .start_method(m)
        .build()
        .unwrap()
}

fn square(x: u64) -> u64 {
    x * x
}

fn add((a, b): (u64, u64)) -> u64 {
    a + b
}

fn pid_of(_: u32) -> u32 {
    ipc_core::process::pid()
}

fn sleep_then(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn panics_on_three(x: u32) -> u32 {
    if x == 3 {
        panic!("three is right out");
    }
    std::thread::sleep(Duration::from_millis(20));
    x
}

// cpython checklist 122 and 123: apply; map and starmap equal the sequential map, with and
// without a chunk size; map_async(...).get().
#[test]
fn cpython_122_123_apply_and_map_equal_the_sequential_map() {
    for m in METHODS {
        let p = pool(m, 2);
        assert_eq!(p.apply(square, 5).unwrap(), 25, "{m}");
        let want: Vec<u64> = (0..100).map(square).collect();
        assert_eq!(p.map(square, 0..100).unwrap(), want, "{m}");
        assert_eq!(p.map_chunked(square, 0..100, 20).unwrap(), want, "{m}");
        assert_eq!(
            p.map_async(square, 0..100, None).unwrap().get().unwrap(),
            want
        );
        let pairs: Vec<(u64, u64)> = (0..50).map(|i| (i, 2 * i)).collect();
        let sums: Vec<u64> = pairs.iter().map(|&(a, b)| a + b).collect();
        assert_eq!(p.map(add, pairs).unwrap(), sums, "{m}: starmap");
    }
}

// cpython checklist 126 and 132: empty inputs give empty results, at once.
#[test]
fn cpython_126_132_empty_inputs() {
    let p = pool(StartMethod::ForkServer, 1);
    assert_eq!(p.map(square, Vec::new()).unwrap(), Vec::<u64>::new());
    let r = p.map_async(square, Vec::new(), Some(1)).unwrap();
    assert!(r.ready());
    assert_eq!(r.get().unwrap(), Vec::<u64>::new());
    assert!(p.imap(square, Vec::new()).next().is_none());
    assert!(p.imap_unordered(square, Vec::new()).next().is_none());
}

// cpython checklist 128: get with a timeout gives up after about that long, and the result
// can still be had afterwards.
#[test]
fn cpython_128_get_timeout() {
    let p = pool(StartMethod::ForkServer, 1);
    let r = p.apply_async(sleep_then, 500).unwrap();
    let t = Instant::now();
    assert!(matches!(
        r.get_timeout(Duration::from_millis(50)),
        Err(PoolError::Timeout)
    ));
    assert!(t.elapsed() >= Duration::from_millis(50));
    assert!(!r.ready());
    assert_eq!(r.successful(), None);
    assert_eq!(r.get_timeout(LONG).unwrap(), 500);
    assert!(matches!(r.get_timeout(LONG), Err(PoolError::Taken)));
}

// cpython checklist 129: imap keeps order and ends; chunksize 100 over 1000 items;
// imap_unordered gives the same multiset.
#[test]
fn cpython_129_imap_order_and_unordered() {
    for m in METHODS {
        let p = pool(m, 2);
        let mut it = p.imap(square, 0..10);
        let got: Vec<u64> = it.by_ref().map(Result::unwrap).collect();
        assert_eq!(got, (0..10).map(square).collect::<Vec<_>>(), "{m}");
        assert!(it.next().is_none(), "{m}: after the end");
        let big: Vec<u64> = p
            .imap_chunked(square, 0..1000, 100)
            .map(Result::unwrap)
            .collect();
        assert_eq!(big, (0..1000).map(square).collect::<Vec<_>>(), "{m}");
        let mut unordered: Vec<u64> = p
            .imap_unordered(square, 0..200)
            .map(Result::unwrap)
            .collect();
        unordered.sort_unstable();
        assert_eq!(unordered, (0..200).map(square).collect::<Vec<_>>(), "{m}");
    }
}

// cpython checklist 130: zero processes is an error; Pool(3) has 3 workers.
#[test]
fn cpython_130_process_counts() {
    assert!(matches!(Pool::new(0), Err(PoolError::Misuse(_))));
    let p = pool(StartMethod::ForkServer, 3);
    assert_eq!(p.processes(), 3);
    // Three workers exist: three tasks that each wait for the others run at once.
    let r = p.map_chunked(sleep_then, [300u64, 300, 300], 1).unwrap();
    assert_eq!(r, [300, 300, 300]);
}

// cpython checklist 131 and 133: terminate with 10 000 queued long tasks returns promptly;
// the pool then takes no work; its workers are reaped and its descriptors closed.
#[test]
fn cpython_131_133_terminate_with_a_long_queue() {
    // What stays for the process's life: the forkserver and the shared heap's arena.
    let warm = pool(StartMethod::ForkServer, 1);
    assert_eq!(warm.apply(square, 2).unwrap(), 4);
    drop(warm);
    let fds_before = open_fds();
    let p = pool(StartMethod::ForkServer, 2);
    let r = p
        .map_async(sleep_then, vec![1000u64; 10_000], Some(1))
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    p.terminate();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(matches!(
        r.get(),
        Err(PoolError::Task(TaskError::Cancelled { .. }))
    ));
    assert!(matches!(p.map(square, 0..3), Err(PoolError::Closed)));
    drop(p);
    assert!(
        eventually(|| open_fds() <= fds_before),
        "{} > {fds_before}: {:?}",
        open_fds(),
        fd_targets()
    );
}

// cpython checklist 135: map waits for every task, then reports the first failure; the pool
// stays usable and join does not deadlock. A panic is the item's error, with its index, the
// worker's pid, the message and a backtrace; the other items' results are all there.
#[test]
fn cpython_135_map_waits_for_all_and_reports_the_panic() {
    for m in METHODS {
        let p = pool(m, 2);
        let t = Instant::now();
        let err = p.map_chunked(panics_on_three, 0..8, 1).unwrap_err();
        let PoolError::Task(TaskError::Panicked {
            index,
            pid,
            message,
            backtrace,
        }) = err
        else {
            panic!("{m}: {err}")
        };
        assert_eq!(index, 3, "{m}");
        assert_ne!(pid, 0);
        assert!(message.contains("three is right out"), "{m}: {message}");
        assert!(!backtrace.is_empty(), "{m}");
        // Every other item ran (20 ms each, 7 of them on 2 workers).
        assert!(t.elapsed() >= Duration::from_millis(60), "{m}: fail-fast");
        let each = p.map_results(panics_on_three, 0..8).unwrap();
        for (i, r) in each.iter().enumerate() {
            match r {
                Ok(v) => assert_eq!(*v as usize, i, "{m}"),
                Err(e) => assert_eq!((i, e.index()), (3, 3), "{m}: {e}"),
            }
        }
        p.close();
        p.join().unwrap();
    }
}

/// Panics on a multiple of 7 (items in a row included), and on the last item of a chunk of 25;
/// writes part of a result first on 13 (a panic inside the result's encoding).
fn panics_here_and_there(x: u32) -> Halfway {
    if x.is_multiple_of(7) || x == 8 || x % 25 == 24 {
        panic!("item {x} panics");
    }
    Halfway(x)
}

/// A result whose encoding panics for 13, after part of it was written.
#[derive(Debug, PartialEq)]
struct Halfway(u32);

impl serde::Serialize for Halfway {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&self.0)?;
        if self.0 == 13 {
            panic!("item 13 panics while it is encoded");
        }
        t.serialize_element(&self.0)?;
        t.end()
    }
}

impl<'de> serde::Deserialize<'de> for Halfway {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (a, b): (u32, u32) = serde::Deserialize::deserialize(d)?;
        assert_eq!(a, b);
        Ok(Halfway(a))
    }
}

// A worker runs a chunk's items in one loop through the function's trampoline; a panic leaves
// the loop, is that item's failure (its half-written result discarded), and the loop goes on
// after it: in chunks of 25, panics at the start, in a row (7 and 8), in the middle of a
// result's encoding (13) and on a chunk's last item (24, 49, ...) fail exactly those items.
#[test]
fn panics_inside_a_chunk_fail_only_their_items() {
    for m in METHODS {
        let p = pool(m, 2);
        let each = p
            .map_results_chunked(panics_here_and_there, 0..100u32, 25)
            .unwrap();
        assert_eq!(each.len(), 100, "{m}");
        for (i, r) in each.into_iter().enumerate() {
            let x = i as u32;
            let fails = x.is_multiple_of(7) || x == 8 || x == 13 || x % 25 == 24;
            match r {
                Ok(v) => assert!(!fails && v == Halfway(x), "{m}: item {i} gave {v:?}"),
                Err(TaskError::Panicked { index, message, .. }) => {
                    assert!(fails, "{m}: item {i} failed: {message}");
                    assert_eq!(index, i as u64, "{m}");
                    assert!(
                        message.contains(&format!("item {i} panics")),
                        "{m}: {message}"
                    );
                }
                Err(e) => panic!("{m}: item {i}: {e}"),
            }
        }
        p.close();
        p.join().unwrap();
    }
}

fn pid_after_ms(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    ipc_core::process::pid()
}

// A worker's mailbox is as deep as about 100 us of its work on the batch at hand: after a map
// of tiny tasks (a deep mailbox, chunks sent in parcels of hundreds), a map of long tasks still
// goes to both workers, not in one parcel to the first.
#[test]
fn long_tasks_after_tiny_ones_use_every_worker() {
    for m in METHODS {
        let p = pool(m, 2);
        for _ in 0..3 {
            assert_eq!(
                p.map_chunked(square, 0..2000, 1).unwrap().len(),
                2000,
                "{m}"
            );
            let pids: std::collections::BTreeSet<u32> =
                p.map(pid_after_ms, [30; 8]).unwrap().into_iter().collect();
            assert_eq!(pids.len(), 2, "{m}: every task ran on {pids:?}");
        }
        p.close();
        p.join().unwrap();
    }
}

/// A shared lock as a result: it travels by descriptor, which the result queue refuses.
fn make_a_lock(_: u32) -> ipc_sync::Lock {
    ipc_sync::Lock::new().unwrap()
}

// cpython checklist 125 and 138: an argument that cannot travel fails in the caller at once,
// before anything runs; a result that cannot travel fails its item, 20 times in a row, and
// no worker is lost.
fn value_of((x, _): (u64, Option<ipc_sync::Lock>)) -> u64 {
    x
}

// Checklist 150 (an argument that cannot travel), in the middle of a map: its chunks go as
// they are encoded (small ones in growing groups: 64 items, then 128, 256, ...), so the
// earlier ones may have started; the caller gets the argument's error at once, what was
// submitted is cancelled, and the pool goes on. Item 30 fails before the first group leaves;
// item 700 after three groups (448 items) left.
#[test]
fn an_argument_that_cannot_travel_midway_stops_the_map() {
    let p = pool(StartMethod::ForkServer, 2);
    let lock = ipc_sync::Lock::new().unwrap();
    for (n, chunk, bad) in [(64u64, 4, 30u64), (1000, 1, 700)] {
        let items = (0..n).map(|i| (i, (i == bad).then(|| lock.clone())));
        let err = p.map_chunked(value_of, items, chunk).unwrap_err();
        assert!(
            matches!(&err, PoolError::Task(TaskError::Argument { index, .. }) if *index == bad),
            "{err}"
        );
        let items = (0..n).map(|i| (i, None));
        assert_eq!(
            p.map_chunked(value_of, items, chunk).unwrap(),
            (0..n).collect::<Vec<_>>()
        );
    }
}

#[test]
fn cpython_125_138_what_cannot_travel() {
    let p = pool(StartMethod::ForkServer, 2);
    let lock = ipc_sync::Lock::new().unwrap();
    let err = p.apply(|l: ipc_sync::Lock| l.locked(), lock).unwrap_err();
    assert!(
        matches!(&err, PoolError::Task(TaskError::Argument { index: 0, .. })),
        "{err}"
    );
    let before: std::collections::BTreeSet<u32> = p
        .map_chunked(pid_of, 0..8, 1)
        .unwrap()
        .into_iter()
        .collect();
    for _ in 0..20 {
        let err = p.apply(make_a_lock, 0).unwrap_err();
        assert!(
            matches!(&err, PoolError::Task(TaskError::Result { index: 0, .. })),
            "{err}"
        );
    }
    let after: std::collections::BTreeSet<u32> = p
        .map_chunked(pid_of, 0..8, 1)
        .unwrap()
        .into_iter()
        .collect();
    assert!(
        after.is_subset(&before),
        "workers were replaced: {before:?} -> {after:?}"
    );
}

// An endless input with take(100): it returns, at most the in-flight bound more items were
// read than taken, and the pool then runs a map (issue #12).
#[test]
fn imap_over_an_endless_input_is_bounded() {
    let p = pool(StartMethod::ForkServer, 2);
    let mut it = p.imap(square, 0..);
    let got: Vec<u64> = it.by_ref().take(100).map(Result::unwrap).collect();
    assert_eq!(got, (0..100).map(square).collect::<Vec<_>>());
    // The bound is 2 x processes x chunksize = 4.
    assert!(it.submitted() <= 100 + 4, "{} read", it.submitted());
    drop(it);
    assert_eq!(p.map(square, 0..5).unwrap(), [0, 1, 4, 9, 16]);
}

// The pool is Send + Sync: 4 threads submit 1000 tasks each, every result right.
#[test]
fn four_threads_share_one_pool() {
    let p = std::sync::Arc::new(pool(StartMethod::ForkServer, 2));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let p = p.clone();
            std::thread::spawn(move || {
                let items: Vec<u64> = (t * 1000..(t + 1) * 1000).collect();
                let want: Vec<u64> = items.iter().map(|&x| square(x)).collect();
                let rs: Vec<_> = items
                    .iter()
                    .map(|&x| p.apply_async(square, x).unwrap())
                    .collect();
                let got: Vec<u64> = rs.into_iter().map(|r| r.get().unwrap()).collect();
                assert_eq!(got, want);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

// Under the fork start method the pool forks a zygote when it is built, which a process that
// already has threads cannot do: a clear error, at once.
#[test]
fn a_fork_pool_needs_a_single_threaded_process() {
    let (stop, wait) = std::sync::mpsc::channel::<()>();
    let helper = std::thread::spawn(move || wait.recv());
    let err = Pool::builder()
        .processes(1)
        .start_method(StartMethod::Fork)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("before starting threads"), "{err}");
    drop(stop);
    let _ = helper.join();
}

static SEEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn seen(_: u32) -> (u64, u32) {
    (
        SEEN.load(std::sync::atomic::Ordering::Relaxed),
        ipc_core::process::pid(),
    )
}

fn kill_self_on_five(x: u32) -> u32 {
    if x == 5 {
        common::kill_pid(ipc_core::process::pid());
    }
    x
}

/// In a fresh (single-threaded) process: a fork pool sees the process as it was when built,
/// replaces a killed worker and recycles workers, all from its zygote.
fn fork_pool_in_a_fresh_process((): ()) -> (Vec<u64>, usize, String, usize) {
    SEEN.store(7, std::sync::atomic::Ordering::Relaxed);
    let p = Pool::builder()
        .processes(2)
        .start_method(StartMethod::Fork)
        .max_tasks_per_worker(5)
        .build()
        .unwrap();
    SEEN.store(8, std::sync::atomic::Ordering::Relaxed);
    let out = p.map_chunked(seen, 0..20, 1).unwrap();
    let values: Vec<u64> = out.iter().map(|o| o.0).collect();
    let workers = out
        .iter()
        .map(|o| o.1)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let each = p.map_results_chunked(kill_self_on_five, 0..10, 1).unwrap();
    let killed = match &each[5] {
        Err(e) => e.to_string(),
        Ok(v) => format!("ran: {v}"),
    };
    let fine = each.iter().filter(|r| r.is_ok()).count();
    p.close();
    p.join().unwrap();
    (values, workers, killed, fine)
}

// Issue #12: the fork start method, with a zygote. Workers see the process as it was when
// the pool was built (7, not the 8 stored after); with max_tasks_per_worker(5), 20 tasks ran
// on at least 4 workers; a killed worker fails its item alone and is replaced.
#[test]
fn a_fork_pool_works_through_its_zygote() {
    let h = ipc_core::process::Builder::new()
        .start_method(StartMethod::Spawn)
        .spawn((), fork_pool_in_a_fresh_process)
        .unwrap();
    let (values, workers, killed, fine) = h.join().unwrap();
    assert_eq!(values, vec![7; 20]);
    assert!(workers >= 4, "{workers} workers ran 20 tasks");
    assert!(killed.contains("SIGKILL"), "{killed}");
    assert_eq!(fine, 9);
}

// join before close is misuse, said at once instead of waiting forever.
#[test]
fn join_before_close_is_an_error() {
    let p = pool(StartMethod::ForkServer, 1);
    assert!(matches!(p.join(), Err(PoolError::Misuse(_))));
}

fn fd_targets() -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_link(e.path()).map_or("?".into(), |t| t.display().to_string()))
        .collect()
}

/// Leaves `<dir>/<tag>` (its pid), then sleeps `ms`.
fn mark_and_sleep((dir, tag, ms): (std::path::PathBuf, String, u64)) -> u32 {
    let pid = ipc_core::process::pid();
    std::fs::write(dir.join(&tag), pid.to_string()).unwrap();
    std::thread::sleep(Duration::from_millis(ms));
    pid
}

// AsyncResult::cancel: a running task has its worker killed and replaced, a queued one never
// runs, and the pool goes on (issue #12).
#[test]
fn cancel_kills_a_running_task_and_skips_queued_ones() {
    let dir = std::env::temp_dir().join(format!("ipc-pool-cancel-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let p = pool(StartMethod::ForkServer, 1);
    let running = p
        .apply_async(mark_and_sleep, (dir.clone(), "running".into(), 60_000))
        .unwrap();
    let queued = p
        .apply_async(mark_and_sleep, (dir.clone(), "queued".into(), 0))
        .unwrap();
    assert!(eventually(|| dir.join("running").exists()));
    let victim: u32 = std::fs::read_to_string(dir.join("running"))
        .unwrap()
        .parse()
        .unwrap();
    queued.cancel();
    running.cancel();
    assert!(
        common::wait_gone(victim, LONG),
        "the running task's worker lives"
    );
    assert!(matches!(
        running.get(),
        Err(PoolError::Task(TaskError::Cancelled { .. }))
    ));
    assert!(matches!(
        queued.get(),
        Err(PoolError::Task(TaskError::Cancelled { .. }))
    ));
    // The pool replaced its worker and runs the next task; the queued one never ran.
    let next = p
        .apply(mark_and_sleep, (dir.clone(), "next".into(), 0))
        .unwrap();
    assert_ne!(next, victim);
    assert!(!dir.join("queued").exists(), "a cancelled task ran");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Item 0 waits until `<dir>/go` exists (a minute at most); the others return at once.
fn hold_the_first((dir, x): (std::path::PathBuf, u64)) -> u64 {
    let until = Instant::now() + Duration::from_secs(60);
    while x == 0 && !dir.join("go").exists() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(2));
    }
    x
}

// A chunk given ahead to a worker that is stuck on a long item is taken back from its mailbox
// for an idle worker: every other item of the map ends while the first one still runs (the
// chunk queued behind it used to wait for it).
#[test]
fn chunks_queued_behind_a_long_item_go_to_an_idle_worker() {
    for m in METHODS {
        let dir = std::env::temp_dir().join(format!("ipc-pool-steal-{}-{m}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = pool(m, 2);
        let n = 8u64;
        let r = p
            .map_async(hold_the_first, (0..n).map(|x| (dir.clone(), x)), Some(1))
            .unwrap();
        let others_ended = eventually(|| r.progress().0 == n - 1);
        std::fs::write(dir.join("go"), b"").unwrap();
        assert!(
            others_ended,
            "{m}: {} items ended while the first ran",
            r.progress().0
        );
        assert_eq!(r.get().unwrap(), (0..n).collect::<Vec<_>>());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

// wait_any and as_completed: the first ready, then the completion order.
#[test]
fn wait_any_and_as_completed() {
    let p = pool(StartMethod::ForkServer, 2);
    let slow = p.apply_async(sleep_then, 600).unwrap();
    let quick = p.apply_async(sleep_then, 10).unwrap();
    assert_eq!(
        ipc_pool::wait_any(&[&slow, &quick], Some(Duration::from_millis(1))),
        None
    );
    assert_eq!(ipc_pool::wait_any(&[&slow, &quick], None), Some(1));
    let order: Vec<u64> = ipc_pool::as_completed(vec![slow, quick])
        .map(|r| r.get().unwrap())
        .collect();
    assert_eq!(order, [10, 600]);
}

// cpython checklist 124 and 138: map_async's callback gets the result list, the error
// callback the error; each runs once, never both; a callback may submit more work.
#[test]
fn cpython_124_138_callbacks() {
    use std::sync::mpsc::channel;
    let p = std::sync::Arc::new(pool(StartMethod::ForkServer, 2));
    let (tx, rx) = channel::<Result<Vec<u64>, String>>();
    let (tx2, tx3) = (tx.clone(), tx.clone());
    let r = p.map_async(square, 0..10, None).unwrap().callbacks(
        move |v| tx.send(Ok(v.clone())).unwrap(),
        move |e| tx2.send(Err(e.to_string())).unwrap(),
    );
    let want: Vec<u64> = (0..10).map(square).collect();
    assert_eq!(rx.recv_timeout(LONG).unwrap(), Ok(want.clone()));
    assert_eq!(r.get().unwrap(), want);
    let (etx, erx) = channel::<String>();
    let etx2 = etx.clone();
    let _failing = p
        .map_async(panics_on_three, 0..5, Some(1))
        .unwrap()
        .callbacks(
            move |_| etx.send("success".into()).unwrap(),
            move |e| etx2.send(e.to_string()).unwrap(),
        );
    let said = erx.recv_timeout(LONG).unwrap();
    assert!(said.contains("three is right out"), "{said}");
    // A callback that submits (it must not wait: it runs in the thread that delivers results):
    // no deadlock, and its work runs.
    let p2 = p.clone();
    let (ntx, nrx) = channel();
    let _chained = p.apply_async(sleep_then, 50).unwrap().callbacks(
        move |v| ntx.send(p2.apply_async(square, *v).unwrap()).unwrap(),
        |e| panic!("{e}"),
    );
    let next = nrx.recv_timeout(LONG).unwrap();
    assert_eq!(next.get().unwrap(), 2500);
    drop(tx3);
    // Never both, never twice.
    assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
    assert!(erx.recv_timeout(Duration::from_millis(100)).is_err());
}

// cpython checklist 139 (and 147, inverted: we have no fork-context refusal to port, and the
// limit works under every start method we offer): max_tasks_per_worker=10 over 100 tasks gives
// the right results from changing workers; tasks are counted, not chunks (a chunk of 10 is
// split at 3); with a limit of 1 and an early close, join returns; 0 is refused.
#[test]
fn cpython_139_147_max_tasks_per_worker() {
    for m in METHODS {
        let p = Pool::builder()
            .processes(2)
            .start_method(m)
            .max_tasks_per_worker(10)
            .build()
            .unwrap();
        let pids = p.map_chunked(pid_of, 0..100, 1).unwrap();
        let distinct: std::collections::BTreeSet<u32> = pids.iter().copied().collect();
        assert!(
            distinct.len() >= 10,
            "{m}: {} workers ran 100 tasks",
            distinct.len()
        );
        for pid in &distinct {
            let ran = pids.iter().filter(|p| *p == pid).count();
            assert!(ran <= 10, "{m}: worker {pid} ran {ran} tasks");
        }
        p.close();
        p.join().unwrap();

        let p = Pool::builder()
            .processes(1)
            .start_method(m)
            .max_tasks_per_worker(3)
            .build()
            .unwrap();
        let pids = p.map_chunked(pid_of, 0..10, 10).unwrap();
        for run in pids.chunks(3) {
            assert!(run.iter().all(|p| *p == run[0]), "{m}: {pids:?}");
        }
        assert_eq!(
            pids.iter().collect::<std::collections::BTreeSet<_>>().len(),
            4,
            "{m}: {pids:?}"
        );
        drop(p);

        let p = Pool::builder()
            .processes(2)
            .start_method(m)
            .max_tasks_per_worker(1)
            .build()
            .unwrap();
        let r = p.map_async(square, 0..20, Some(1)).unwrap();
        p.close();
        p.join().unwrap();
        assert_eq!(r.get().unwrap(), (0..20).map(square).collect::<Vec<_>>());
    }
    assert!(matches!(
        Pool::builder().max_tasks_per_worker(0).build(),
        Err(PoolError::Misuse(_))
    ));
}

// cpython checklist 141 and 148: a pool bigger than the machine works; there are never more
// worker processes than asked for, and a worker is reused for task after task.
#[test]
fn cpython_141_148_pool_sizes_and_reuse() {
    let p = pool(StartMethod::ForkServer, 32);
    let pids: std::collections::BTreeSet<u32> = p
        .map_chunked(pid_of, 0..256, 1)
        .unwrap()
        .into_iter()
        .collect();
    assert!(pids.len() <= 32, "{} workers", pids.len());
    let mine = common::children_of(std::process::id());
    let workers = mine.iter().filter(|(c, _)| pids.contains(c)).count();
    assert_eq!(workers, pids.len());
    drop(p);
    let p = pool(StartMethod::ForkServer, 4);
    let one: std::collections::BTreeSet<u32> =
        (0..20).map(|i| p.apply(pid_of, i).unwrap()).collect();
    assert_eq!(one.len(), 1, "sequential tasks used {} workers", one.len());
}

// cpython checklist 146: map with chunk sizes 6, 40 and 50 equals the sequential map; a chunk
// size of 0 is refused.
#[test]
fn cpython_146_chunk_sizes() {
    let p = pool(StartMethod::ForkServer, 2);
    let want: Vec<u64> = (0..100).map(square).collect();
    for c in [6, 40, 50] {
        assert_eq!(
            p.map_chunked(square, 0..100, c).unwrap(),
            want,
            "chunksize {c}"
        );
    }
    assert!(matches!(
        p.map_chunked(square, 0..10, 0),
        Err(PoolError::Misuse(_))
    ));
}

// cpython checklist 149: after terminate, work is refused; terminating again, or joining, is
// harmless; close then submit is refused too.
#[test]
fn cpython_149_after_terminate_and_close() {
    let p = pool(StartMethod::ForkServer, 1);
    p.terminate();
    p.terminate();
    assert!(matches!(p.apply(square, 2), Err(PoolError::Closed)));
    p.join().unwrap();
    let q = pool(StartMethod::ForkServer, 1);
    q.close();
    assert!(matches!(q.apply_async(square, 2), Err(PoolError::Closed)));
    q.join().unwrap();
}

/// An input that fails after `n` items, as a Rust iterator fails: it panics.
fn failing_after(n: u64) -> impl Iterator<Item = u64> {
    (0..).inspect(move |&i| assert!(i < n, "the input failed at item {i}"))
}

// cpython checklist 127, as Rust has it: an input iterator that fails (panics) mid-way, in map
// (while the arguments are read, before anything runs), in imap (after chunks were submitted)
// and in imap_unordered: the panic reaches the caller, nothing hangs, and the pool goes on.
#[test]
fn an_input_that_panics_midway_leaves_the_pool_usable() {
    let p = pool(StartMethod::ForkServer, 2);
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        p.map(square, failing_after(50))
    }));
    assert!(caught.is_err());
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        p.imap(square, failing_after(50))
            .map(Result::unwrap)
            .sum::<u64>()
    }));
    assert!(caught.is_err());
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        p.imap_unordered(square, failing_after(7)).count()
    }));
    assert!(caught.is_err());
    assert_eq!(p.map(square, 0..5).unwrap(), [0, 1, 4, 9, 16]);
    p.close();
    p.join().unwrap();
}

/// This process's open descriptors.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// The pool's owner for checklist 143: with so few descriptors left that only some workers
/// can start, building a pool of 8 fails; says the error and the children left afterwards.
fn build_with_few_fds((): ()) -> (String, usize) {
    let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    // Enough for the pool's own queues and a worker or two, not for eight.
    let limit = rustix::process::Rlimit {
        current: Some(open + 24),
        maximum: rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum,
    };
    rustix::process::setrlimit(rustix::process::Resource::Nofile, limit).unwrap();
    let err = match Pool::builder()
        .processes(8)
        .start_method(StartMethod::Spawn)
        .build()
    {
        Ok(_) => "built".to_string(),
        Err(e) => e.to_string(),
    };
    // Every worker started before the failure was stopped and reaped.
    let me = std::process::id();
    let list =
        std::fs::read_to_string(format!("/proc/{me}/task/{me}/children")).unwrap_or_default();
    let left: Vec<String> = list
        .split_whitespace()
        .map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default())
        .collect();
    (format!("{err}; left: {left:?}"), left.len())
}

// Checklist 143: if starting the N-th worker fails, the workers started before are stopped
// (and reaped) and the error reaches the caller.
#[test]
fn cpython_143_a_failed_worker_start_stops_the_others() {
    let h = ipc_core::process::Builder::new()
        .start_method(StartMethod::Spawn)
        .spawn((), build_with_few_fds)
        .unwrap();
    let (err, children) = h.join().unwrap();
    assert_ne!(err, "built", "8 workers started with few descriptors");
    assert_eq!(children, 0, "workers left after a failed build ({err})");
}

/// A worker that finds itself on the CPU of the thread that sent its task moves away by
/// narrowing its affinity for a moment (see the worker's `StepAside`): every task still sees
/// the worker's whole affinity. The caller sits on each CPU in turn and lets the worker fall
/// asleep before each task, so that the worker is woken beside it now and then.
#[test]
fn a_worker_that_steps_aside_keeps_its_whole_affinity() {
    let all = allowed_cpus(0);
    if all.len() < 2 {
        return;
    }
    let pool = pool(StartMethod::ForkServer, 1);
    let mine = rustix::thread::sched_getaffinity(None).unwrap();
    for round in 0..24 {
        let mut one = rustix::thread::CpuSet::new();
        one.set(all[round % all.len()]);
        rustix::thread::sched_setaffinity(None, &one).unwrap();
        // Longer than the worker's spin and than its rate limit of one step a 10 ms.
        std::thread::sleep(Duration::from_millis(12));
        let seen = pool.apply(allowed_cpus, round as u32);
        rustix::thread::sched_setaffinity(None, &mine).unwrap();
        assert_eq!(seen.unwrap(), all, "round {round}");
    }
    pool.close();
    pool.join().unwrap();
}

/// A result that travels but that the parent refuses to decode: 13 (its `Deserialize` says
/// no), every other value as it is.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "u64")]
struct NotThirteen(u64);

impl TryFrom<u64> for NotThirteen {
    type Error = String;
    fn try_from(v: u64) -> Result<Self, String> {
        if v == 13 {
            Err("13 refused".into())
        } else {
            Ok(NotThirteen(v))
        }
    }
}

fn not_thirteen(x: u64) -> NotThirteen {
    NotThirteen(x)
}

// A result that does not decode in the parent, in the middle of a chunk after other chunks:
// the error names that item, the others arrive (checklist 135: map waits for every item and
// gives the first error).
#[test]
fn a_result_that_does_not_decode_here_fails_its_item_only() {
    let p = pool(StartMethod::ForkServer, 2);
    let err = p.map_chunked(not_thirteen, 0..40, 10).unwrap_err();
    assert!(
        matches!(&err, PoolError::Task(TaskError::Result { index: 13, .. })),
        "{err}"
    );
    let each = p.map_results_chunked(not_thirteen, 0..40, 10).unwrap();
    for (i, r) in each.into_iter().enumerate() {
        match r {
            Ok(v) => assert_eq!(v, NotThirteen(i as u64)),
            Err(e) => assert!(
                i == 13 && matches!(e, TaskError::Result { index: 13, .. }),
                "{e}"
            ),
        }
    }
    assert_eq!(p.map(not_thirteen, 0..13).unwrap().len(), 13);
}
