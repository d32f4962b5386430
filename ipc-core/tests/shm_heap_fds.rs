//! Descriptor economy of the shared heap: many objects, few file descriptors, nothing leaked.
//!
//! One test per binary on purpose: it counts this process's descriptors, which any test running
//! beside it in another thread would disturb.

use std::sync::atomic::{AtomicU32, Ordering};

use ipc_core::shm::{BIG_ALLOCATION, ShmBox, ShmSlice};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn many_objects_use_few_descriptors_and_none_leak() {
    let before = open_fds();
    let boxes: Vec<ShmBox<AtomicU32>> = (0..100_000).map(|_| ShmBox::new().unwrap()).collect();
    let lines: Vec<ShmBox<[u64; 8]>> = (0..10_000).map(|_| ShmBox::new().unwrap()).collect();
    let during = open_fds();
    // 400 KB of boxes and 640 KB of cache lines: arenas of 64 KiB doubling to 1 MiB.
    assert!(
        during - before <= 8,
        "{} descriptors for 110 000 objects",
        during - before
    );
    for (i, b) in boxes.iter().enumerate() {
        b.store(i as u32, Ordering::Relaxed);
    }
    assert!(
        boxes
            .iter()
            .enumerate()
            .all(|(i, b)| b.load(Ordering::Relaxed) == i as u32)
    );
    drop(boxes);
    drop(lines);
    // Only the allocator's current arena stays (cpython checklist 96, marked Python internals;
    // the part that translates: the arenas are returned when everything is freed).
    assert_eq!(open_fds(), before + 1);

    // A big slice has its own segment, closed with its last handle, even after travelling.
    let big = ShmSlice::<u8>::new(BIG_ALLOCATION * 4).unwrap();
    assert_eq!(open_fds(), before + 2);
    let (tx, rx) = ipc_core::conn::pipe().unwrap();
    for _ in 0..10 {
        tx.send(&big).unwrap();
    }
    let received: Vec<ShmSlice<u8>> = (0..10).map(|_| rx.recv().unwrap()).collect();
    // Ten copies arriving share the one mapping already here: no descriptor kept per copy.
    assert_eq!(open_fds(), before + 4);
    assert!(received.iter().all(|r| r.as_ptr() == big.as_ptr()));
    drop(big);
    drop(received);
    drop((tx, rx));
    assert_eq!(open_fds(), before + 1);
}
