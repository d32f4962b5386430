//! Value, AtomicValue and Array across real processes under every start method, and the
//! shared-memory ABI of the types they store. Ports CPython checklist items 91-95.

mod common;

use std::sync::atomic::AtomicU64;

use common::{METHODS, builder};
use ipc_core::shm::ShmSafe;
use ipc_sync::{Array, AtomicValue, Lock, LockError, Value};

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Default)]
struct Point {
    x: f64,
    y: i32,
    tag: u8,
}
// SAFETY: repr(C) over f64, i32, u8 (padding is never read as a field): any bytes are a valid
// Point, nothing process-local inside.
unsafe impl ShmSafe for Point {}

type Several = (
    Value<i32>,
    Value<f64>,
    Value<i16>,
    Value<i64>,
    Value<u8>,
    Value<Point>,
);

fn write_values((i, d, h, q, c, p): Several) {
    i.set(-7);
    d.set(2.5);
    h.set(-300);
    q.set(1 << 40);
    c.set(b'x');
    p.update(|p| {
        p.x = 1.5;
        p.y = -2;
        p.tag = 9;
    });
}

// cpython checklist 91 and 95: values of several C types (and a struct with fields) written by
// a child are visible to the parent.
#[test]
fn cpython_91_95_child_writes_are_visible() {
    for m in METHODS {
        let vals = (
            Value::new(0i32).unwrap(),
            Value::new(0.0f64).unwrap(),
            Value::new(0i16).unwrap(),
            Value::new(0i64).unwrap(),
            Value::new(0u8).unwrap(),
            Value::new(Point::default()).unwrap(),
        );
        builder(m)
            .spawn(vals.clone(), write_values)
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(vals.0.get(), -7, "{m}");
        assert_eq!(vals.1.get(), 2.5);
        assert_eq!(vals.2.get(), -300);
        assert_eq!(vals.3.get(), 1 << 40);
        assert_eq!(vals.4.get(), b'x');
        assert_eq!(
            vals.5.get(),
            Point {
                x: 1.5,
                y: -2,
                tag: 9
            }
        );
    }
}

// cpython checklist 92: a value gets its own lock by default (get_lock), or the lock it is given;
// unsynchronised access has no API at all (AtomicValue replaces RawValue for integers).
#[test]
fn cpython_92_locks_of_values() {
    let own = Value::new(1u32).unwrap();
    let g = own.lock().unwrap();
    assert!(own.get_lock().locked());
    drop(g);
    let shared = Lock::new().unwrap();
    let a = Value::with_lock(1u32, shared.clone()).unwrap();
    let b = Array::<u32>::with_lock(4, shared.clone()).unwrap();
    let held = a.get_lock().acquire().unwrap();
    assert!(shared.locked() && b.get_lock().locked());
    assert!(b.get_lock().try_acquire().is_err());
    drop(held);
    assert_eq!(format!("{a:?}"), "Value(1)");
}

fn increment_all((v, atomic, n): (Value<u64>, AtomicValue<u64>, u64)) {
    for _ in 0..n {
        *v.lock().unwrap_or_else(LockError::into_guard) += 1;
        atomic.fetch_add(1);
    }
}

// Python's `v.value += 1` loses updates even under the lock; a guard's `+= 1` and fetch_add
// do not (pain point 25).
#[test]
fn increments_are_atomic_across_processes() {
    for m in METHODS {
        let v = Value::new(0u64).unwrap();
        let a = AtomicValue::new(0u64).unwrap();
        let kids: Vec<_> = (0..3)
            .map(|_| {
                builder(m)
                    .spawn((v.clone(), a.clone(), 3000), increment_all)
                    .unwrap()
            })
            .collect();
        for k in kids {
            k.join().unwrap();
        }
        assert_eq!((v.get(), a.load()), (9000, 9000), "{m}");
    }
    let x = AtomicValue::new(5i32).unwrap();
    assert_eq!(x.swap(7), 5);
    assert_eq!(x.compare_exchange(7, 9), Ok(7));
    assert_eq!(x.compare_exchange(7, 1), Err(9));
    assert_eq!(x.fetch_min(-3), 9);
    assert_eq!(x.fetch_max(4), -3);
    assert_eq!(x.fetch_sub(1), 4);
    assert_eq!((x.fetch_or(8), x.fetch_and(8), x.fetch_xor(1)), (3, 11, 8));
    assert_eq!(x.load(), 9);
}

fn prefix_sum(a: Array<i32>) {
    let mut g = a.lock().unwrap();
    for i in 1..g.len() {
        g[i] += g[i - 1];
    }
}

// cpython checklist 94: len, index, a child's in-place prefix sum is visible; a new array is
// zero-filled even when shared memory is reused.
#[test]
fn cpython_94_array_prefix_sum_in_a_child() {
    for m in METHODS {
        let a = Array::from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]).unwrap();
        assert_eq!((a.len(), a.get(3), a.get(10)), (10, Some(4), None));
        builder(m)
            .spawn(a.clone(), prefix_sum)
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(a.to_vec(), [1, 3, 6, 10, 15, 21, 28, 36, 45, 55], "{m}");
        assert_eq!(a.set(10, 0), Err(0), "out of range gives the value back");
        assert_eq!(a.set(0, -1), Ok(()));
        assert_eq!(a.get(0), Some(-1));
    }
    for _ in 0..50 {
        let a = Array::<u64>::new(1000).unwrap();
        assert!(a.to_vec().iter().all(|&x| x == 0));
        a.lock().unwrap().fill(u64::MAX);
    }
    let empty = Array::<u8>::new(0).unwrap();
    assert!(empty.is_empty() && empty.to_vec().is_empty());
}

// cpython checklist 95: Array of bytes as a string; copies are independent.
#[test]
fn cpython_95_byte_arrays_and_copies() {
    let a = Array::<u8>::from_slice(b"hello").unwrap();
    let copy = a.to_vec();
    a.lock().unwrap()[0] = b'j';
    assert_eq!(&a.to_vec(), b"jello");
    assert_eq!(&copy, b"hello");
    assert_eq!(format!("{a:?}"), "Array([106, 101, 108, 108, 111])");
}

/// Shared-memory ABI of the values themselves: a struct with atomics can be a Value's payload
/// too, but AtomicValue's cell is exactly the integer's atomic.
#[test]
fn abi_of_value_cells() {
    assert_eq!(size_of::<Point>(), 16);
    assert_eq!(
        (
            size_of::<<u64 as ipc_sync::AtomicInt>::Atomic>(),
            align_of::<<u64 as ipc_sync::AtomicInt>::Atomic>()
        ),
        (size_of::<AtomicU64>(), align_of::<AtomicU64>())
    );
    // A fresh value of every integer type reads zero before anybody sets it.
    let z = Value::<Point>::new(Point::default()).unwrap();
    assert_eq!(z.get(), Point::default());
}

// cpython checklist 93: Python's invalid typecode is a TypeError at run time; here it does not
// compile. The compile_fail doc tests on `Value` (src/value.rs) prove that heap-owning types and
// types with invalid bit patterns (bool) are refused; this pins the other half, that the types of
// Python's valid typecodes are accepted.
#[test]
fn cpython_93_typecodes_are_types() {
    fn shm_safe<T: ShmSafe + Copy>() {}
    // b B h H i I l L q Q f d c
    shm_safe::<i8>();
    shm_safe::<u8>();
    shm_safe::<i16>();
    shm_safe::<u16>();
    shm_safe::<i32>();
    shm_safe::<u32>();
    shm_safe::<i64>();
    shm_safe::<u64>();
    shm_safe::<f32>();
    shm_safe::<f64>();
    shm_safe::<[u8; 16]>();
    assert_eq!(Value::new(-3i16).unwrap().get(), -3);
    assert_eq!(Value::new(b'c').unwrap().get(), b'c');
}

// Found in review: Python lets anyone release a Lock, and a value's lock is reachable, so
// releasing it under a live guard let a second guard (a second &mut T) be granted. A lock held
// through a live guard now refuses a foreign release.
#[test]
fn a_value_lock_cannot_be_released_under_a_live_guard() {
    let v = Value::new(0u64).unwrap();
    let mut a = v.lock().unwrap_or_else(LockError::into_guard);
    assert_eq!(
        v.get_lock().release(),
        Err(ipc_sync::ReleaseError::GuardAlive)
    );
    assert!(
        v.get_lock().try_acquire().is_err(),
        "a second guard was granted"
    );
    *a += 1;
    drop(a);
    assert_eq!(v.get(), 1);
    let arr = Array::<u8>::new(3).unwrap();
    let g = arr.lock().unwrap_or_else(LockError::into_guard);
    assert_eq!(
        arr.get_lock().release(),
        Err(ipc_sync::ReleaseError::GuardAlive)
    );
    drop(g);
    assert!(!arr.get_lock().locked());
}

/// Takes the value's lock and holds it until killed.
fn hold_value_lock(v: Value<u64>) {
    let mut g = v.lock().unwrap_or_else(LockError::into_guard);
    *g = 7;
    std::thread::sleep(std::time::Duration::from_secs(60));
}

// Found in review: formatting a value whose holder died took the lock over and released it,
// which erased the "may be half-written" report the next real acquirer needs.
#[test]
fn debug_of_a_value_whose_holder_died_keeps_the_report() {
    let v = Value::new(0u64).unwrap();
    let h = builder(ipc_core::process::StartMethod::Spawn)
        .spawn(v.clone(), hold_value_lock)
        .unwrap();
    let _reap = common::Reap(&h);
    assert!(
        common::eventually(|| v.get_lock().locked()),
        "the child never took the lock"
    );
    assert_eq!(format!("{v:?}"), "Value(<locked>)");
    h.kill().unwrap();
    assert_eq!(h.join_timeout(common::LONG).unwrap(), -9);
    assert_eq!(format!("{v:?}"), "Value(<owner died>)");
    assert_eq!(
        format!("{v:?}"),
        "Value(<owner died>)",
        "looking twice changes nothing"
    );
    match v.lock() {
        Err(LockError::OwnerDied(g)) => assert_eq!(*g, 7),
        other => panic!(
            "the holder's death was not reported to the next acquirer: {:?}",
            other.map(|_| ()).map_err(|e| e.to_string())
        ),
    }
    assert_eq!(format!("{v:?}"), "Value(7)");
}
