//! No `/dev/shm` entry outlives the shared-memory operations, on success or on failure.
//!
//! One test in its own binary: it runs every way a named segment is made, used and dropped
//! (including failed creations and a panic while a creator holds a name), then scans
//! `/dev/shm` for this run's prefix. The scan sees what the library left: the guards that would
//! clean up after a failed assertion drop only after it.

use std::sync::atomic::{AtomicUsize, Ordering};

use ipc_core::shm::NamedSegment;
use ipc_core::{Error, codec};

fn prefix() -> String {
    format!("ipc-core-leaks-{}-", std::process::id())
}

/// A unique name; dropping the guard removes any entry left under it (for failed runs only).
struct Name(String);

impl Name {
    fn new() -> Name {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        Name(format!(
            "{}{}",
            prefix(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ))
    }
}

impl Drop for Name {
    fn drop(&mut self) {
        let _ = NamedSegment::unlink_name(&self.0);
    }
}

fn entries_with(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

#[test]
fn shared_memory_leaves_nothing_in_dev_shm() {
    let mut guards = Vec::new();
    let mut unique_names = Vec::new();

    // Created, opened, sent, received, dropped.
    let n = Name::new();
    {
        let a = NamedSegment::create(&n.0, 1000).unwrap();
        let b = NamedSegment::open(&n.0).unwrap();
        let mut buf = Vec::new();
        let fds = codec::encode(&(&a, &b), &mut buf).unwrap();
        let (c, d): (NamedSegment, NamedSegment) = codec::decode(&buf, fds).unwrap();
        assert_eq!((c.len(), d.len()), (1000, 1000));
    }
    guards.push(n);

    // Unlinked explicitly, then dropped.
    let n = Name::new();
    NamedSegment::create(&n.0, 10).unwrap().unlink().unwrap();
    guards.push(n);

    // open_or_create, both ways.
    let n = Name::new();
    {
        let _a = NamedSegment::open_or_create(&n.0, 10).unwrap();
        let _b = NamedSegment::open_or_create(&n.0, 10).unwrap();
    }
    guards.push(n);

    // Failures: zero size, existing name, impossible size, bad names.
    let n = Name::new();
    assert!(NamedSegment::create(&n.0, 0).is_err());
    {
        let _a = NamedSegment::create(&n.0, 10).unwrap();
        assert!(NamedSegment::create(&n.0, 10).is_err());
    }
    assert!(NamedSegment::create(&n.0, 1 << 62).is_err());
    assert!(matches!(
        NamedSegment::create(&format!("{}x/y", prefix()), 1),
        Err(Error::Misuse(_))
    ));
    guards.push(n);

    // A panic while the creator holds the name: unwinding drops the handle, which unlinks.
    let n = Name::new();
    let name = n.0.clone();
    let r = std::panic::catch_unwind(move || {
        let _seg = NamedSegment::create(&name, 10).unwrap();
        panic!("a failure while the segment is in use");
    });
    assert!(r.is_err());
    guards.push(n);

    // Random names.
    for _ in 0..5 {
        let s = NamedSegment::create_unique(10).unwrap();
        unique_names.push(s.name().to_owned());
        guards.push(Name(s.name().to_owned()));
    }

    let left = entries_with(&prefix());
    assert!(left.is_empty(), "left in /dev/shm: {left:?}");
    for name in &unique_names {
        assert!(
            !std::path::Path::new("/dev/shm").join(name).exists(),
            "{name} left"
        );
    }
    drop(guards);
}
