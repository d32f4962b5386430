//! `AsyncResult` as a `Future` and `Imap` as a `Stream` (feature `async`, issue #13), under
//! tokio: awaiting never blocks the runtime's thread, outcomes and errors come as `get` gives
//! them, streams yield every item once.
#![cfg(feature = "async")]

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ipc_pool::{Pool, PoolError, TaskError};

fn sleep_then(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn square(x: u64) -> u64 {
    x * x
}

fn panics(_: u32) -> u32 {
    panic!("no async for you")
}

/// The next item of a stream (what `StreamExt::next` does, without the extra crate).
async fn next<S: futures_core::Stream + Unpin>(s: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| Pin::new(&mut *s).poll_next(cx)).await
}

// On a single-threaded runtime, a timer keeps ticking while two results are awaited: the
// futures park on wakers, no thread blocks.
#[test]
fn awaiting_results_leaves_the_runtime_free() {
    let pool = Pool::new(2).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let ticks = Arc::new(AtomicU32::new(0));
    let t = ticks.clone();
    let (a, b) = rt.block_on(async {
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                t.fetch_add(1, Ordering::Relaxed);
            }
        });
        let a = pool.apply_async(sleep_then, 300).unwrap();
        let b = pool.apply_async(sleep_then, 200).unwrap();
        let out = tokio::join!(a, b);
        ticker.abort();
        out
    });
    assert_eq!((a.unwrap(), b.unwrap()), (300, 200));
    assert!(
        ticks.load(Ordering::Relaxed) >= 5,
        "the runtime was blocked: {} ticks",
        ticks.load(Ordering::Relaxed)
    );
}

#[test]
fn futures_give_what_get_gives() {
    for m in [
        ipc_core::process::StartMethod::Spawn,
        ipc_core::process::StartMethod::ForkServer,
    ] {
        futures_under(m);
    }
}

fn futures_under(m: ipc_core::process::StartMethod) {
    let pool = Pool::builder()
        .processes(2)
        .start_method(m)
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        assert_eq!(pool.map_async(square, 0..100u64, None).unwrap().await.unwrap().len(), 100);
        let err = pool.apply_async(panics, 1).unwrap().await.unwrap_err();
        assert!(
            matches!(&err, PoolError::Task(TaskError::Panicked { message, .. }) if message.contains("no async for you")),
            "{err}"
        );
        // Many at once, from tasks of the runtime.
        let pool = Arc::new(pool);
        let handles: Vec<_> = (0..50u64)
            .map(|i| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.apply_async(square, i).unwrap().await.unwrap() })
            })
            .collect();
        let mut got = Vec::new();
        for h in handles {
            got.push(h.await.unwrap());
        }
        assert_eq!(got, (0..50u64).map(|i| i * i).collect::<Vec<_>>());
    });
}

#[test]
fn imap_streams_every_item_once() {
    let pool = Pool::new(2).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut ordered = pool.imap(square, 0..200u64);
        let mut got = Vec::new();
        while let Some(r) = next(&mut ordered).await {
            got.push(r.unwrap());
        }
        assert_eq!(got, (0..200u64).map(|i| i * i).collect::<Vec<_>>());
        let mut any = pool.imap_unordered(sleep_then, [30u64, 1, 20, 2]);
        let mut got = Vec::new();
        while let Some(r) = next(&mut any).await {
            got.push(r.unwrap());
        }
        got.sort_unstable();
        assert_eq!(got, [1, 2, 20, 30]);
        // An endless input, taken in part: the stream holds back the input as the iterator does.
        let mut endless = pool.imap(square, 0..);
        for i in 0..10u64 {
            assert_eq!(next(&mut endless).await.unwrap().unwrap(), i * i);
        }
        assert!(endless.submitted() <= 10 + 4, "{}", endless.submitted());
    });
}
