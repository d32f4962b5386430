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

#[test]
fn adaptive_chunks_follow_the_task_length() {
    let m = StartMethod::ForkServer;
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
