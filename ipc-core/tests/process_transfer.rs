//! Objects travel (issue #2, point 7): a Connection or a shared segment is an argument of a
//! child under every start method, can be sent through a Connection, and can be passed on to a
//! grandchild (CPython checklist items 43 and 66).

mod common;

use std::sync::atomic::{AtomicU64, Ordering};

use common::{METHODS, builder};
use ipc_core::conn::{Connection, pipe};
use ipc_core::process::StartMethod;
use ipc_core::shm::Segment;

fn word(seg: &Segment) -> &AtomicU64 {
    assert!(seg.len() >= 8);
    // SAFETY: the segment is page aligned, at least 8 bytes long, lives as long as the borrow,
    // and is only accessed atomically.
    unsafe { &*(seg.as_ptr() as *const AtomicU64) }
}

// Stops on "stop" rather than on end of file: a fork child inherits every descriptor of its
// parent, the other end included, so it would never see EOF (as in CPython).
fn echo(conn: Connection) -> u32 {
    let mut n = 0;
    while let Ok(msg) = conn.recv::<String>() {
        if msg == "stop" {
            break;
        }
        conn.send(&msg.to_uppercase()).unwrap();
        n += 1;
    }
    n
}

#[test]
fn connection_as_argument() {
    for m in METHODS {
        let (a, b) = pipe().unwrap();
        let h = builder(m).spawn(b, echo).unwrap();
        for s in ["one", "two", "three"] {
            a.send(s).unwrap();
            assert_eq!(a.recv::<String>().unwrap(), s.to_uppercase(), "{m}");
        }
        a.send("stop").unwrap();
        assert_eq!(h.join().unwrap(), 3, "{m}");
    }
}

fn add_to_segment((seg, n): (Segment, u64)) -> u64 {
    word(&seg).fetch_add(n, Ordering::SeqCst) + n
}

#[test]
fn segment_as_argument() {
    let seg = Segment::new(4096).unwrap();
    for (i, m) in METHODS.into_iter().enumerate() {
        let h = builder(m)
            .spawn((seg.try_clone().unwrap(), 10), add_to_segment)
            .unwrap();
        assert_eq!(h.join().unwrap(), 10 * (i as u64 + 1), "{m}");
    }
    assert_eq!(word(&seg).load(Ordering::SeqCst), 30);
}

fn receive_and_use(conn: Connection) -> u64 {
    let seg: Segment = conn.recv().unwrap();
    let inner: Connection = conn.recv().unwrap();
    word(&seg).fetch_add(5, Ordering::SeqCst);
    inner.send(&"hello through a sent connection").unwrap();
    word(&seg).load(Ordering::SeqCst)
}

// cpython checklist 43: connections (and other descriptor-backed objects) sent through a
// Connection to another process work there.
#[test]
fn objects_sent_through_a_connection() {
    for m in METHODS {
        let seg = Segment::new(64).unwrap();
        let (a, b) = pipe().unwrap();
        let (x, y) = pipe().unwrap();
        let h = builder(m).spawn(b, receive_and_use).unwrap();
        a.send(&seg).unwrap();
        a.send(&y).unwrap();
        drop(y);
        assert_eq!(
            x.recv::<String>().unwrap(),
            "hello through a sent connection",
            "{m}"
        );
        assert_eq!(h.join().unwrap(), 5, "{m}");
        assert_eq!(word(&seg).load(Ordering::SeqCst), 5);
    }
}

fn pass_on((seg, conn, method): (Segment, Connection, StartMethod)) -> u64 {
    let g = builder(method).spawn((seg, 7), add_to_segment).unwrap();
    let seen = g.join().unwrap();
    conn.send(&seen).unwrap();
    seen
}

// cpython checklist 66: a child can pass what it received on to a grandchild.
#[test]
fn child_passes_objects_to_grandchild() {
    for m in METHODS {
        for g in METHODS {
            let seg = Segment::new(64).unwrap();
            let (a, b) = pipe().unwrap();
            let h = builder(m)
                .spawn((seg.try_clone().unwrap(), b, g), pass_on)
                .unwrap();
            assert_eq!(a.recv::<u64>().unwrap(), 7, "{m}/{g}");
            assert_eq!(h.join().unwrap(), 7);
            assert_eq!(word(&seg).load(Ordering::SeqCst), 7, "{m}/{g}");
        }
    }
}

// An argument that cannot be encoded is an error at start, and the child it was meant for does
// not linger.
#[test]
fn argument_that_cannot_travel_is_an_error() {
    #[derive(Debug)]
    struct Unserializable;
    impl serde::Serialize for Unserializable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom(
                "this value refuses to be serialized",
            ))
        }
    }
    impl<'de> serde::Deserialize<'de> for Unserializable {
        fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
            Ok(Unserializable)
        }
    }
    for m in [StartMethod::Spawn, StartMethod::ForkServer] {
        let err = builder(m)
            .name("refused")
            .spawn(Unserializable, |_| 1u8)
            .unwrap_err();
        assert!(matches!(err, ipc_core::Error::Encode(_)), "{m}: {err}");
        assert!(
            ipc_core::process::active_children()
                .iter()
                .all(|c| c.name != "refused"),
            "{m}: no child left behind"
        );
    }
}
