//! Named segments: Python's `SharedMemory` behaviours (cpython checklist 97-103) and ownership.
//!
//! Names are unique per run (pid and a counter), and every test holds a guard that unlinks its
//! names even when the test fails. A process that attaches by name is played by a second
//! `open` in this process, and one that receives the segment by a codec or `Connection` round
//! trip, which maps the received descriptor afresh just as a child does.

use std::io::ErrorKind;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use ipc_core::shm::{MAX_NAME_LEN, NamedSegment};
use ipc_core::{Error, codec};

/// A unique name whose `/dev/shm` entry is removed when the guard drops, whatever happened.
struct Name(String);

impl Name {
    fn new() -> Name {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Name(format!("ipc-core-test-{}-{n}", std::process::id()))
    }
}

impl Drop for Name {
    fn drop(&mut self) {
        let _ = NamedSegment::unlink_name(&self.0);
    }
}

fn exists(name: &str) -> bool {
    std::path::Path::new("/dev/shm").join(name).exists()
}

fn io_kind(r: ipc_core::Result<NamedSegment>) -> ErrorKind {
    match r {
        Err(Error::Io(e)) => e.kind(),
        other => panic!("expected an I/O error, got {other:?}"),
    }
}

fn is_misuse(r: ipc_core::Result<NamedSegment>) -> bool {
    matches!(r, Err(Error::Misuse(_)))
}

/// The `i`th byte of `s`, as an atomic (every test writes and reads bytes through these).
fn byte(s: &NamedSegment, i: usize) -> &std::sync::atomic::AtomicU8 {
    assert!(i < s.len());
    // SAFETY: `i` is inside the mapping, which lives as long as `s`; AtomicU8 has alignment 1
    // and any byte is a valid value.
    unsafe { &*(s.as_ptr().add(i) as *const std::sync::atomic::AtomicU8) }
}

#[test]
fn create_preserves_name_and_size() {
    // cpython checklist 97
    let n = Name::new();
    let seg = NamedSegment::create(&n.0, 512).unwrap();
    assert_eq!(seg.name(), n.0);
    assert_eq!(seg.len(), 512);
    assert!(exists(&n.0));
    let repr = format!("{seg:?}");
    assert!(repr.contains(&n.0) && repr.contains("512"), "{repr}");
    byte(&seg, 511).store(9, Ordering::SeqCst);
    assert_eq!(byte(&seg, 511).load(Ordering::SeqCst), 9);
    assert_eq!(byte(&seg, 0).load(Ordering::SeqCst), 0);
}

#[test]
fn attaching_by_name_sees_the_same_bytes_and_its_size() {
    // cpython checklist 98
    let n = Name::new();
    let a = NamedSegment::create(&n.0, 4000).unwrap();
    let b = NamedSegment::open(&n.0).unwrap();
    assert_ne!(a.as_ptr(), b.as_ptr());
    assert_eq!(b.len(), 4000);
    byte(&a, 3999).store(1, Ordering::SeqCst);
    assert_eq!(byte(&b, 3999).load(Ordering::SeqCst), 1);
    byte(&b, 0).store(2, Ordering::SeqCst);
    assert_eq!(byte(&a, 0).load(Ordering::SeqCst), 2);
    // A different size when attaching is ignored: the object's own size wins.
    let c = NamedSegment::open_or_create(&n.0, 10).unwrap();
    assert_eq!(c.len(), 4000);
    assert_eq!(byte(&c, 3999).load(Ordering::SeqCst), 1);
}

#[test]
fn bad_sizes_and_names_are_misuse() {
    // cpython checklist 99
    let n = Name::new();
    assert!(is_misuse(NamedSegment::create(&n.0, 0)));
    assert!(!exists(&n.0));
    assert!(is_misuse(NamedSegment::open_or_create(&n.0, 0)));
    assert!(is_misuse(NamedSegment::create_unique(0)));
    let long = "x".repeat(MAX_NAME_LEN + 1);
    for bad in ["", "a/b", "/lead", "nul\0byte", ".", "..", long.as_str()] {
        assert!(is_misuse(NamedSegment::create(bad, 8)), "{bad:?}");
        assert!(is_misuse(NamedSegment::open(bad)), "{bad:?}");
        assert!(
            matches!(NamedSegment::unlink_name(bad), Err(Error::Misuse(_))),
            "{bad:?}"
        );
    }
    // Messages say what is wrong and what is allowed.
    let Err(Error::Misuse(msg)) = NamedSegment::create("a/b", 8) else {
        unreachable!()
    };
    assert!(msg.contains("'/'"), "{msg}");
    // The longest allowed name works.
    let longest = Name(format!("{:x<width$}", Name::new().0, width = MAX_NAME_LEN));
    assert_eq!(longest.0.len(), MAX_NAME_LEN);
    let seg = NamedSegment::create(&longest.0, 1).unwrap();
    assert_eq!(seg.name().len(), MAX_NAME_LEN);
}

#[test]
fn existing_missing_and_double_unlink_are_io_errors() {
    // cpython checklist 100
    let n = Name::new();
    let seg = NamedSegment::create(&n.0, 64).unwrap();
    assert_eq!(
        io_kind(NamedSegment::create(&n.0, 64)),
        ErrorKind::AlreadyExists
    );
    // The failed create left the first one alone.
    assert_eq!(NamedSegment::open(&n.0).unwrap().len(), 64);
    seg.unlink().unwrap();
    assert!(!exists(&n.0));
    assert_eq!(io_kind(NamedSegment::open(&n.0)), ErrorKind::NotFound);
    match seg.unlink() {
        Err(Error::Io(e)) => assert_eq!(e.kind(), ErrorKind::NotFound),
        other => panic!("second unlink: {other:?}"),
    }
    // The mapping outlives the name.
    byte(&seg, 63).store(5, Ordering::SeqCst);
    assert_eq!(byte(&seg, 63).load(Ordering::SeqCst), 5);
    // open_or_create (Python's O_CREAT | O_RDWR) creates when missing, attaches when present.
    let a = NamedSegment::open_or_create(&n.0, 32).unwrap();
    let b = NamedSegment::open_or_create(&n.0, 32).unwrap();
    byte(&a, 1).store(3, Ordering::SeqCst);
    assert_eq!(byte(&b, 1).load(Ordering::SeqCst), 3);
}

#[test]
fn unique_names_differ() {
    // cpython checklist 101 (the retry on collision is a unit test of the module)
    let a = NamedSegment::create_unique(16).unwrap();
    let b = NamedSegment::create_unique(16).unwrap();
    let _guards = (Name(a.name().to_owned()), Name(b.name().to_owned()));
    assert_ne!(a.name(), b.name());
    assert!(exists(a.name()) && exists(b.name()));
}

#[test]
fn a_segment_through_the_codec_shares_memory_even_after_unlink() {
    // cpython checklist 102. Unlike Python's pickle (by name), a segment travels by descriptor,
    // so it still arrives after its name was unlinked.
    let n = Name::new();
    let a = NamedSegment::create(&n.0, 100).unwrap();
    let mut buf = Vec::new();
    let fds = codec::encode(&a, &mut buf).unwrap();
    let b: NamedSegment = codec::decode(&buf, fds).unwrap();
    assert_eq!((b.name(), b.len()), (n.0.as_str(), 100));
    byte(&a, 7).store(70, Ordering::SeqCst);
    assert_eq!(byte(&b, 7).load(Ordering::SeqCst), 70);
    byte(&b, 8).store(80, Ordering::SeqCst);
    assert_eq!(byte(&a, 8).load(Ordering::SeqCst), 80);

    let mut buf2 = Vec::new();
    let fds2 = codec::encode(&a, &mut buf2).unwrap();
    a.unlink().unwrap();
    let c: NamedSegment = codec::decode(&buf2, fds2).unwrap();
    assert_eq!(byte(&c, 8).load(Ordering::SeqCst), 80);
}

#[test]
fn a_receiver_writes_through_a_connection_and_the_creator_sees_it() {
    // cpython checklist 103, with the child played by the receiving end of a connection.
    let n = Name::new();
    let seg = NamedSegment::create(&n.0, 4096).unwrap();
    let (tx, rx) = ipc_core::conn::pipe().unwrap();
    tx.send(&seg).unwrap();
    let got: NamedSegment = rx.recv().unwrap();
    // SAFETY: offset 1024 is inside both 4096-byte mappings and 4-aligned (page-aligned base).
    let (w, r) = unsafe {
        (
            &*(got.as_ptr().add(1024) as *const AtomicU32),
            &*(seg.as_ptr().add(1024) as *const AtomicU32),
        )
    };
    w.store(0xfeed, Ordering::SeqCst);
    assert_eq!(r.load(Ordering::SeqCst), 0xfeed);
    // The received handle does not own the name: dropping it leaves the name.
    drop(got);
    assert!(exists(&n.0));
}

// Known bug 8 (CPython gh-82300): an attaching process must not unlink a segment others use.
#[test]
fn only_the_creator_unlinks_on_drop() {
    let n = Name::new();
    let creator = NamedSegment::create(&n.0, 8).unwrap();
    let opener = NamedSegment::open(&n.0).unwrap();
    drop(opener);
    assert!(exists(&n.0));
    drop(creator);
    assert!(!exists(&n.0));

    // persist keeps the name after the creator drops (Python's track=False).
    let p = Name::new();
    let seg = NamedSegment::create(&p.0, 8).unwrap();
    byte(&seg, 0).store(4, Ordering::SeqCst);
    seg.persist();
    drop(seg);
    let again = NamedSegment::open(&p.0).unwrap();
    assert_eq!(byte(&again, 0).load(Ordering::SeqCst), 4);
    NamedSegment::unlink_name(&p.0).unwrap();
    assert!(!exists(&p.0));
}

#[test]
fn a_symlink_under_a_name_is_refused() {
    let n = Name::new();
    std::os::unix::fs::symlink("/etc/passwd", format!("/dev/shm/{}", n.0)).unwrap();
    let r = NamedSegment::open(&n.0);
    assert!(matches!(r, Err(Error::Io(_))), "{r:?}");
}

#[test]
fn a_failed_creation_leaves_no_name() {
    // Sizing succeeds on tmpfs (sparse), mapping 2^62 bytes does not: the name must go again.
    let n = Name::new();
    let r = NamedSegment::create(&n.0, 1 << 62);
    assert!(matches!(r, Err(Error::Io(_))), "{r:?}");
    assert!(!exists(&n.0));
}

#[test]
fn named_segments_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<NamedSegment>();
}

#[test]
fn a_forged_message_is_an_error() {
    let n = Name::new();
    let seg = NamedSegment::create(&n.0, 64).unwrap();
    let forge = |len: u64, name: &str| {
        let fd = std::os::fd::AsFd::as_fd(&seg).try_clone_to_owned().unwrap();
        let mut buf = Vec::new();
        let fds = codec::encode(&(codec::TransferFd(fd), len, name), &mut buf).unwrap();
        codec::decode::<NamedSegment>(&buf, fds)
    };
    // Larger than the object, empty, or a name that could escape /dev/shm.
    for (len, name) in [(65, n.0.as_str()), (0, n.0.as_str()), (64, "../etc/passwd")] {
        let r = forge(len, name);
        assert!(matches!(r, Err(Error::Decode(_))), "{len} {name}: {r:?}");
    }
    assert_eq!(forge(64, &n.0).unwrap().len(), 64);
}
