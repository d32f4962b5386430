//! The shared heap: zero state, alignment, travel through the codec and connections, lifetime.
//!
//! A handle that travels through `codec::encode`/`decode` or a `Connection` is rebuilt from a
//! received descriptor exactly as in a child process; when the original mapping is gone first,
//! the receiver maps the segment afresh, as a child would.

use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use ipc_core::Error;
use ipc_core::codec;
use ipc_core::shm::{BIG_ALLOCATION, ShmBox, ShmSafe, ShmSlice};

fn roundtrip<T: serde::Serialize + serde::de::DeserializeOwned>(v: &T) -> T {
    let mut buf = Vec::new();
    let fds = codec::encode(v, &mut buf).unwrap();
    codec::decode(&buf, fds).unwrap()
}

#[test]
fn blocks_start_all_zero() {
    // Fill blocks with ones and drop them: later blocks must still be zero (no dirty reuse).
    for _ in 0..50 {
        let s = ShmSlice::<u64>::new(97).unwrap();
        assert!(s.to_vec().iter().all(|&x| x == 0));
        // SAFETY: this thread holds the only handle; all 97 elements are in bounds.
        unsafe { std::ptr::write_bytes(s.as_ptr(), 0xff, s.len()) };
        let b = ShmBox::<[u8; 13]>::new().unwrap();
        assert_eq!(b.read(), [0; 13]);
        // SAFETY: as above.
        unsafe { b.as_ptr().write([0xff; 13]) };
    }
    let big = ShmSlice::<u32>::new(BIG_ALLOCATION).unwrap();
    assert!(big.to_vec().iter().all(|&x| x == 0));
    let empty = ShmSlice::<u64>::new(0).unwrap();
    assert!(empty.is_empty());
    assert_eq!(*ShmBox::<()>::new().unwrap(), ());
}

#[repr(C, align(128))]
struct Wide([AtomicU64; 16]);
// SAFETY: repr(C) over atomics, any bytes valid, nothing process-local.
unsafe impl ShmSafe for Wide {}

#[repr(C, align(8192))]
struct TooAligned(u8);
// SAFETY: one byte, any value valid.
unsafe impl ShmSafe for TooAligned {}

#[test]
fn allocations_are_aligned() {
    let mut keep_small = Vec::new();
    let mut keep_big = Vec::new();
    for i in 0..2000 {
        // Interleave odd sizes so the cursor is rarely aligned by chance.
        keep_small.push(ShmBox::<u8>::new().unwrap());
        let b = ShmBox::<AtomicU64>::new().unwrap();
        assert_eq!(b.as_ptr() as usize % 8, 0);
        let s = ShmSlice::<u16>::new(i % 7 + 1).unwrap();
        assert_eq!(s.as_ptr() as usize % 2, 0);
        // 64 bytes or more: cache-line aligned, whatever T's own alignment.
        let line = ShmBox::<[u8; 64]>::new().unwrap();
        assert_eq!(line.as_ptr() as usize % 64, 0, "allocation {i}");
        let bytes = ShmSlice::<u8>::new(100 + i).unwrap();
        assert_eq!(bytes.as_ptr() as usize % 64, 0);
        let w = ShmBox::<Wide>::new().unwrap();
        assert_eq!(w.as_ptr() as usize % 128, 0);
        keep_big.push((b, s, line, bytes, w));
    }
    let big = ShmSlice::<u8>::new(BIG_ALLOCATION + 1).unwrap();
    assert_eq!(big.as_ptr() as usize % 64, 0);
    assert!(matches!(ShmBox::<TooAligned>::new(), Err(Error::Misuse(_))));
}

#[test]
fn blocks_do_not_overlap() {
    let boxes: Vec<ShmBox<AtomicU32>> = (0..10_000).map(|_| ShmBox::new().unwrap()).collect();
    for (i, b) in boxes.iter().enumerate() {
        b.store(i as u32, Ordering::Relaxed);
    }
    for (i, b) in boxes.iter().enumerate() {
        assert_eq!(b.load(Ordering::Relaxed), i as u32);
    }
}

#[test]
fn oversized_slices_are_errors() {
    assert!(matches!(
        ShmSlice::<u64>::new(usize::MAX / 4),
        Err(Error::Misuse(_))
    ));
}

#[test]
fn a_box_through_the_codec_shares_memory() {
    let a = ShmBox::<AtomicU64>::new().unwrap();
    let b: ShmBox<AtomicU64> = roundtrip(&a);
    a.store(41, Ordering::SeqCst);
    b.fetch_add(1, Ordering::SeqCst);
    assert_eq!(a.load(Ordering::SeqCst), 42);
    // Boxes of one arena arriving in a process share one mapping.
    assert_eq!(a.as_ptr(), b.as_ptr());
}

#[test]
fn a_slice_through_a_connection_shares_memory() {
    let (tx, rx) = ipc_core::conn::pipe().unwrap();
    let s = ShmSlice::<AtomicU8>::new(33).unwrap();
    let big = ShmSlice::<AtomicU32>::new(BIG_ALLOCATION).unwrap();
    tx.send(&(s.clone(), big.clone())).unwrap();
    let (r, rbig): (ShmSlice<AtomicU8>, ShmSlice<AtomicU32>) = rx.recv().unwrap();
    assert_eq!((r.len(), rbig.len()), (33, BIG_ALLOCATION));
    r[32].store(7, Ordering::SeqCst);
    assert_eq!(s[32].load(Ordering::SeqCst), 7);
    big[BIG_ALLOCATION - 1].store(9, Ordering::SeqCst);
    assert_eq!(rbig[BIG_ALLOCATION - 1].load(Ordering::SeqCst), 9);
}

#[test]
fn memory_outlives_the_original_while_a_message_carries_it() {
    // A big slice has its own segment: once the original is dropped, this process unmaps it,
    // and only the descriptor inside the message keeps the memory.
    let (tx, rx) = ipc_core::conn::pipe().unwrap();
    let s = ShmSlice::<u8>::new(BIG_ALLOCATION * 2).unwrap();
    // SAFETY: the only handle; every index is in bounds.
    unsafe {
        for i in 0..s.len() {
            s.as_ptr().add(i).write((i % 251) as u8);
        }
    }
    tx.send(&s).unwrap();
    drop(s);
    let r: ShmSlice<u8> = rx.recv().unwrap();
    assert!(
        r.to_vec()
            .iter()
            .enumerate()
            .all(|(i, &b)| b == (i % 251) as u8)
    );
    assert_eq!(r.arena_handles(), 1);
}

#[test]
fn clones_keep_memory_alive_and_are_counted() {
    let a = ShmSlice::<AtomicU64>::new(BIG_ALLOCATION).unwrap();
    a[5].store(5, Ordering::Relaxed);
    let b = a.clone();
    let c: ShmSlice<AtomicU64> = roundtrip(&a);
    assert_eq!(a.arena_handles(), 3);
    drop(a);
    drop(b);
    assert_eq!(c.arena_handles(), 1);
    assert_eq!(c[5].load(Ordering::Relaxed), 5);
}

#[test]
fn threads_share_boxes() {
    let counter = ShmBox::<AtomicU64>::new().unwrap();
    std::thread::scope(|s| {
        for _ in 0..4 {
            let c = counter.clone();
            s.spawn(move || {
                for _ in 0..10_000 {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    assert_eq!(counter.load(Ordering::Relaxed), 40_000);
}

#[test]
fn bad_messages_are_errors() {
    let good = ShmBox::<u64>::new().unwrap();
    let mut buf = Vec::new();
    let fds = codec::encode(&good, &mut buf).unwrap();
    // The wrong type: element size differs.
    let fds2: Vec<_> = fds.iter().map(|f| f.try_clone().unwrap()).collect();
    let err = codec::decode::<ShmBox<u32>>(&buf, fds2).unwrap_err();
    assert!(
        matches!(&err, Error::Decode(m) if m.message().contains("expected")),
        "{err}"
    );
    // A box where a slice of many is described, and vice versa.
    let s = ShmSlice::<u64>::new(3).unwrap();
    let mut sbuf = Vec::new();
    let sfds = codec::encode(&s, &mut sbuf).unwrap();
    let err = codec::decode::<ShmBox<u64>>(&sbuf, sfds).unwrap_err();
    assert!(matches!(err, Error::Decode(_)), "{err}");

    // Forged offsets: out of the arena, overflowing, inside the header, misaligned.
    let our_ns = std::fs::metadata("/proc/self/ns/pid").unwrap().ino();
    let forge_from = |offset: u64, count: u64, elem: u64, pid_ns: u64| {
        let fd = fds[0].try_clone().unwrap();
        let mut b = Vec::new();
        let wire = (codec::TransferFd(fd), offset, count, elem, pid_ns);
        let fds = codec::encode(&wire, &mut b).unwrap();
        codec::decode::<ShmSlice<u64>>(&b, fds)
    };
    let forge = |offset: u64, count: u64, elem: u64| forge_from(offset, count, elem, our_ns);
    for (offset, count) in [
        (1 << 40, 1),
        (64, 1 << 62),
        (u64::MAX - 4, 1),
        (0, 1),
        (8, 1),
        (68, 1),
    ] {
        let err = forge(offset, count, 8).unwrap_err();
        assert!(matches!(err, Error::Decode(_)), "{offset} {count}: {err}");
    }
    assert!(forge(64, 1, 8).is_ok());
    // From another pid namespace (its locks would name holders we cannot see): refused.
    let err = forge_from(64, 1, 8, our_ns + 1).unwrap_err();
    assert!(
        matches!(&err, Error::Decode(m) if m.message().contains("another pid namespace")),
        "{err}"
    );

    // A descriptor that is not an arena: a plain segment, and a socket.
    let seg = ipc_core::shm::Segment::new(4096).unwrap();
    let fd = std::os::fd::AsFd::as_fd(&seg).try_clone_to_owned().unwrap();
    let mut b = Vec::new();
    let f = codec::encode(&(codec::TransferFd(fd), 64u64, 1u64, 8u64, 0u64), &mut b).unwrap();
    let err = codec::decode::<ShmBox<u64>>(&b, f).unwrap_err();
    assert!(
        matches!(&err, Error::Decode(m) if m.message().contains("not a shared-heap arena")),
        "{err}"
    );
    let (sock, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut b = Vec::new();
    let f = codec::encode(
        &(codec::TransferFd(sock.into()), 64u64, 1u64, 8u64, 0u64),
        &mut b,
    )
    .unwrap();
    let err = codec::decode::<ShmBox<u64>>(&b, f).unwrap_err();
    assert!(
        matches!(&err, Error::Decode(m) if m.message().contains("memfd")),
        "{err}"
    );
}

#[test]
fn handles_cannot_be_plain_bytes() {
    let b = ShmBox::<u32>::new().unwrap();
    let mut buf = Vec::new();
    assert!(matches!(
        codec::encode_plain(&b, &mut buf),
        Err(Error::Encode(_))
    ));
}

#[test]
fn debug_names_the_type() {
    let b = ShmBox::<u32>::new().unwrap();
    let s = ShmSlice::<u16>::new(3).unwrap();
    assert!(format!("{b:?}").starts_with("ShmBox<u32>"));
    assert!(format!("{s:?}").starts_with("ShmSlice<u16>(len 3"));
}

#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<ShmBox<AtomicU32>>();
    check::<ShmSlice<AtomicU64>>();
    check::<ShmBox<[u8; 3]>>();
    check::<ipc_core::shm::Segment>();
}

#[test]
fn a_box_through_a_connection_shares_memory() {
    let (tx, rx) = ipc_core::conn::pipe().unwrap();
    let a = ShmBox::<[AtomicU32; 4]>::new().unwrap();
    tx.send(&a).unwrap();
    let b: ShmBox<[AtomicU32; 4]> = rx.recv().unwrap();
    b[3].store(33, Ordering::SeqCst);
    assert_eq!(a[3].load(Ordering::SeqCst), 33);
    a[0].store(1, Ordering::SeqCst);
    assert_eq!(b[0].load(Ordering::SeqCst), 1);
    assert!(a.arena_handles() >= 2);
}

fn write_plain((b, s): (ShmBox<u64>, ShmSlice<u16>)) -> u64 {
    let seen = b.read();
    b.write(seen + 1);
    s.write(2, 9).unwrap();
    seen
}

// Review finding 7: a plain ShmBox<u64> handed out `&u64` to memory other processes write. Plain
// boxes and slices now copy in and out (volatile), and only `ShmSync` types (atomics, raw states)
// deref; the copies see another process's writes.
#[test]
fn plain_data_is_copied_in_and_out_across_processes() {
    let b = ShmBox::<u64>::new().unwrap();
    let s = ShmSlice::<u16>::new(3).unwrap();
    b.write(41);
    let h = ipc_core::process::Builder::new()
        .start_method(ipc_core::process::StartMethod::Spawn)
        .spawn((b.clone(), s.clone()), write_plain)
        .unwrap();
    assert_eq!(h.join().unwrap(), 41);
    assert_eq!(b.read(), 42);
    assert_eq!(s.to_vec(), [0, 0, 9]);
    assert_eq!(s.write(3, 1), Err(1), "out of bounds gives the value back");
}
