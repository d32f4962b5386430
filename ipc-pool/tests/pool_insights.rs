//! Insights and adaptive chunking (issue #13): after a map of N, done == total == N and the
//! workers' task counts add up to N; with `Chunking::ADAPTIVE`, 1 us tasks travel in chunks
//! of dozens or more and 20 ms tasks one by one (as the insights report).

mod common;

use std::time::{Duration, Instant};

use ipc_core::process::StartMethod;
use ipc_pool::{Chunking, Pool};

fn busy_for_us(us: u64) -> u64 {
    let t = Instant::now();
    while t.elapsed() < Duration::from_micros(us) {
        std::hint::spin_loop();
    }
    us
}

fn pool(m: StartMethod, chunking: Chunking) -> Pool {
    Pool::builder()
        .processes(2)
        .start_method(m)
        .chunking(chunking)
        .build()
        .unwrap()
}

#[test]
fn insights_count_every_item_once() {
    for m in [StartMethod::Spawn, StartMethod::ForkServer] {
        let p = pool(m, Chunking::Python);
        let n = 5_000u64;
        let r = p.map_async(busy_for_us, vec![0; n as usize], None).unwrap();
        r.wait();
        assert_eq!(r.progress(), (n, n));
        let seen = p.insights();
        assert_eq!(
            (seen.submitted, seen.completed, seen.failed),
            (n, n, 0),
            "{m}"
        );
        assert_eq!(seen.workers.iter().map(|w| w.tasks).sum::<u64>(), n, "{m}");
        assert_eq!(seen.workers.len(), 2);
        assert!(seen.workers.iter().all(|w| w.alive && w.busy <= w.lifetime));
        // Python's rule: 5000 / (4 x 2) = 625 per chunk.
        assert_eq!((seen.chunks.count, seen.chunks.max), (8, 625), "{m}");
        assert_eq!(r.get().unwrap().len(), n as usize);
        p.close();
        p.join().unwrap();
        assert!(p.insights().workers.iter().all(|w| !w.alive));
    }
}

// A pool that recycles its workers keeps a bounded record of them (the last KEPT_GONE that
// ended, one by one; the others summed), and still counts every task once.
#[test]
fn insights_of_a_recycling_pool_stay_bounded() {
    let p = Pool::builder()
        .processes(2)
        .max_tasks_per_worker(1)
        .build()
        .unwrap();
    let n = (ipc_pool::KEPT_GONE + 40) as u64;
    p.map_chunked(busy_for_us, vec![0; n as usize], 1).unwrap();
    let seen = p.insights();
    let gone = seen.workers.iter().filter(|w| !w.alive).count();
    assert!(gone <= ipc_pool::KEPT_GONE, "{gone} ended workers listed");
    assert!(seen.earlier.count > 0);
    let tasks = seen.workers.iter().map(|w| w.tasks).sum::<u64>() + seen.earlier.tasks;
    assert_eq!(tasks, n);
}

#[test]
fn adaptive_chunks_follow_the_task_length() {
    for m in [StartMethod::Spawn, StartMethod::ForkServer] {
        adaptive_under(m);
    }
}

fn adaptive_under(m: StartMethod) {
    let p = pool(m, Chunking::ADAPTIVE);
    let n = 20_000usize;
    assert_eq!(p.map(busy_for_us, vec![1; n]).unwrap(), vec![1; n]);
    let short = p.insights();
    assert_eq!(short.completed, n as u64);
    assert!(
        short.chunks.recent_median() >= 32,
        "1 us tasks: median chunk {} ({} chunks)",
        short.chunks.recent_median(),
        short.chunks.count
    );
    let p = pool(m, Chunking::ADAPTIVE);
    assert_eq!(
        p.map(busy_for_us, vec![20_000; 12]).unwrap(),
        vec![20_000; 12]
    );
    let long = p.insights();
    assert_eq!(
        (long.chunks.count, long.chunks.max),
        (12, 1),
        "20 ms tasks go one by one"
    );
    // An explicit chunk size still rules.
    p.map_chunked(busy_for_us, vec![0; 100], 50).unwrap();
    assert_eq!(p.insights().chunks.max, 50);
}

fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: f64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * rustix::param::page_size() as f64 / (1 << 20) as f64
}

fn same(x: u64) -> u64 {
    x
}

// Issue #13: the parent's memory stays flat during a long imap (results are taken as they
// come, the input is read only as far as the bound allows): 1 million items, growth well
// within 50 MiB (the 10-million-item figure is in the compare's pool_imap_rss notes).
#[test]
fn a_long_imap_keeps_the_parent_flat() {
    let p = Pool::new(2).unwrap();
    let start = rss_mib();
    let mut peak = start;
    let n = 1_000_000u64;
    let mut count = 0;
    for (i, r) in p.imap_chunked(same, 0..n, 1000).enumerate() {
        assert_eq!(r.unwrap(), i as u64);
        count += 1;
        if i % 100_000 == 0 {
            peak = peak.max(rss_mib());
        }
    }
    assert_eq!(count, n);
    let grew = peak.max(rss_mib()) - start;
    assert!(grew < 50.0, "the parent grew {grew:.1} MiB");
}
