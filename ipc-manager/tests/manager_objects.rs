//! Every proxy kind's behaviour against a real server process.
//!
//! The CPython checklist for managers (`python-behaviours.md` 109-121):
//! - ported here: 110 (shutdown, exit code 0), 114 (list: slices, extend, live iteration; no
//!   operators `+`, `*=`: Rust proxies have methods), 115 (dict methods; `keys`/`items` are
//!   snapshots, so "changed size during iteration" cannot happen), 118 (namespace; inverted on
//!   purpose: every name lives on the server, Rust has no local `_private` attributes), 119
//!   (locks, semaphores, events, conditions, barriers, queues, values, arrays);
//! - ported in `manager_processes.rs`: 119 (every kind used from a child);
//! - ported in `manager_failures.rs`: 111 (TCP with an authkey, a second program, str/None/bool/
//!   float/bytes exchanged), 112 (restart on the same address), 113 (initializer; a
//!   non-callable one cannot be written in Rust);
//! - ported in `manager_custom.rs`: 109 (public methods served by default, a private one with
//!   `#[served(expose)]`, the method's own error type comes back as itself, a method the
//!   server lacks is `Error::NoSuchMethod`; wrapping a generator is not applicable: a method
//!   returns a value or a nested proxy);
//! - ported in `manager_nested.rs`: 116, 117 (and 114's list of proxies; a list appended to
//!   itself works, and like Python's it is a cycle, freed only when the server stops);
//! - not applicable: 119's manager `Pool` and 120 (the pool and the manager are layer-2
//!   siblings), 121 (Python reference cycles).

use std::time::Duration;

use ipc_manager::{Dynamic, Error, Manager};

fn manager() -> Manager {
    Manager::start().expect("the manager starts")
}

// Checklist 115: the dict proxy's methods.
#[test]
fn cpython_115_dict_methods() {
    let m = manager();
    let d = m.dict::<String, i32>().unwrap();
    assert_eq!(d.insert("a".into(), 1).unwrap(), None);
    assert_eq!(d.insert("a".into(), 2).unwrap(), Some(1));
    assert_eq!(d.get("a").unwrap(), Some(2));
    assert_eq!(d.get("zz").unwrap(), None);
    assert!(d.contains_key("a").unwrap());
    assert_eq!(d.get_or_insert("b".into(), 5).unwrap(), 5); // setdefault
    assert_eq!(d.get_or_insert("b".into(), 9).unwrap(), 5);
    d.extend([("c".to_string(), 3), ("d".to_string(), 4)])
        .unwrap(); // update
    assert_eq!(d.len().unwrap(), 4);
    let mut keys = d.keys().unwrap();
    keys.sort();
    assert_eq!(keys, ["a", "b", "c", "d"]);
    let mut values = d.values().unwrap();
    values.sort();
    assert_eq!(values, [2, 3, 4, 5]);
    let copy = d.to_map().unwrap(); // copy
    assert_eq!(copy.len(), 4);
    assert_eq!(copy["c"], 3);
    let mut items = d.items().unwrap();
    items.sort();
    assert_eq!(items[0], ("a".to_string(), 2));
    assert_eq!(d.remove("a").unwrap(), Some(2)); // pop
    assert_eq!(d.remove("a").unwrap(), None);
    d.clear().unwrap();
    assert!(d.is_empty().unwrap());
}

#[test]
fn dict_read_modify_write_is_atomic_on_the_server() {
    let m = manager();
    let d = m.dict::<String, u64>().unwrap();
    assert_eq!(d.fetch_add("n".into(), 5).unwrap(), 0, "absent counts as 0");
    assert_eq!(d.fetch_add("n".into(), 5).unwrap(), 5);
    assert_eq!(
        d.update("n".into(), |v| v.map(|x| x * 3)).unwrap(),
        Some(30)
    );
    assert_eq!(d.update("n".into(), |_| None).unwrap(), None);
    assert!(
        !d.contains_key("n").unwrap(),
        "returning None removes the key"
    );
    // compare-and-set: absent -> 1, then 1 -> 2, then a stale 1 -> 3 fails with the current.
    assert_eq!(
        d.compare_and_set("k".into(), None, Some(&1)).unwrap(),
        Ok(())
    );
    assert_eq!(
        d.compare_and_set("k".into(), Some(&1), Some(&2)).unwrap(),
        Ok(())
    );
    assert_eq!(
        d.compare_and_set("k".into(), Some(&1), Some(&3)).unwrap(),
        Err(Some(2))
    );
    assert_eq!(
        d.compare_and_set("k".into(), Some(&2), None).unwrap(),
        Ok(())
    );
    assert_eq!(d.get("k").unwrap(), None);
}

fn boom(_: Option<u64>) -> Option<u64> {
    panic!("update refused")
}

#[test]
fn a_panicking_update_is_an_error_and_changes_nothing() {
    let m = manager();
    let d = m.dict::<String, u64>().unwrap();
    d.insert("x".into(), 7).unwrap();
    for _ in 0..20 {
        match d.update("x".into(), boom) {
            Err(Error::Function(msg)) => assert!(msg.contains("update refused"), "{msg}"),
            other => panic!("expected Error::Function, got {other:?}"),
        }
    }
    assert_eq!(d.get("x").unwrap(), Some(7));
    assert_eq!(
        m.stats().unwrap().pid,
        m.server_pid(),
        "the server lives on"
    );
}

// Checklist 114: the list proxy.
#[test]
fn cpython_114_list_methods_and_live_iteration() {
    let m = manager();
    let l = m.list(vec![1, 2, 3]).unwrap();
    l.extend([4, 5]).unwrap();
    assert_eq!(l.slice(1..3).unwrap(), [2, 3]);
    assert_eq!(
        l.slice(-2..100).unwrap(),
        [4, 5],
        "slices clamp like Python's"
    );
    let (from, to) = (3, 1);
    assert_eq!(
        l.slice(from..to).unwrap(),
        Vec::<i32>::new(),
        "an empty slice"
    );
    assert_eq!(l.get(-1).unwrap(), 5);
    assert!(matches!(
        l.get(5),
        Err(Error::IndexOutOfRange { index: 5, len: 5 })
    ));
    assert_eq!(l.set(0, 10).unwrap(), 1);
    l.insert(0, 0).unwrap();
    l.insert(100, 99).unwrap();
    assert_eq!(l.to_vec().unwrap(), [0, 10, 2, 3, 4, 5, 99]);
    assert!(l.remove_item(&99).unwrap());
    assert!(!l.remove_item(&99).unwrap());
    assert!(l.contains(&10).unwrap());
    assert_eq!(l.pop_at(0).unwrap(), 0);
    assert_eq!(l.update(0, |x| x + 1).unwrap(), 11);
    assert_eq!(l.compare_and_set(0, &11, &1).unwrap(), Ok(()));
    assert_eq!(l.compare_and_set(0, &11, &2).unwrap(), Err(1));
    // Iteration reads item by item: items appended meanwhile are seen, and it ends.
    let mut seen = Vec::new();
    for (i, item) in l.iter().enumerate() {
        seen.push(item.unwrap());
        if i == 0 {
            l.push(6).unwrap();
        }
    }
    assert_eq!(seen, [1, 2, 3, 4, 5, 6]);
    l.clear().unwrap();
    assert_eq!(l.pop().unwrap(), None);
    assert!(l.is_empty().unwrap());
}

#[test]
fn arrays_have_a_fixed_length() {
    let m = manager();
    let a = m.array(vec![1u32, 2, 3]).unwrap();
    assert_eq!(a.fetch_add(1, 10).unwrap(), 2);
    assert_eq!(a.to_vec().unwrap(), [1, 12, 3]);
    assert!(matches!(a.get(3), Err(Error::IndexOutOfRange { .. })));
    assert_eq!(a.len().unwrap(), 3);
}

#[test]
fn values_load_store_and_update() {
    let m = manager();
    let v = m.value(String::from("a")).unwrap();
    assert_eq!(v.set("b".into()).unwrap(), "a");
    assert_eq!(v.get().unwrap(), "b");
    assert_eq!(v.update(|s| s + "c").unwrap(), "bc");
    assert_eq!(
        v.compare_and_set(&"x".into(), &"y".into()).unwrap(),
        Err("bc".into())
    );
}

// Checklist 118: Namespace attributes, printing, and typed reads.
#[test]
fn cpython_118_namespace() {
    let m = manager();
    let ns = m.namespace().unwrap();
    ns.set("name", "Bob").unwrap();
    assert_eq!(ns.to_string(), "Namespace(name='Bob')");
    ns.set("age", &42u8).unwrap();
    ns.set("tags", &vec!["x", "y"]).unwrap();
    ns.set("ratio", &0.5).unwrap();
    ns.set("ok", &true).unwrap();
    assert_eq!(
        ns.to_string(),
        "Namespace(age=42, name='Bob', ok=True, ratio=0.5, tags=['x', 'y'])"
    );
    assert_eq!(
        ns.get::<u32>("age").unwrap(),
        42,
        "integers read at any width that fits"
    );
    match ns.get::<String>("age") {
        Err(Error::WrongType { name, detail }) => {
            assert_eq!(name, "age");
            assert!(detail.contains("integer"), "{detail}");
        }
        other => panic!("expected WrongType, got {other:?}"),
    }
    assert!(matches!(ns.get::<i8>("missing"), Err(Error::NoSuchAttribute(n)) if n == "missing"));
    assert_eq!(ns.get_dynamic("ok").unwrap(), Dynamic::Bool(true));
    assert!(ns.contains("tags").unwrap());
    assert!(ns.remove("tags").unwrap());
    assert!(!ns.remove("tags").unwrap());
    assert_eq!(ns.fetch_add("age", 1u32).unwrap(), 42);
    assert_eq!(ns.get::<u64>("age").unwrap(), 43);
    assert!(matches!(
        ns.fetch_add("name", 1u32),
        Err(Error::Function(_))
    ));
    assert_eq!(
        ns.update::<String>("name", |n| n.map(|n| n + "by"))
            .unwrap(),
        Some("Bobby".into())
    );
    ns.clear().unwrap();
    assert_eq!(ns.to_string(), "Namespace()");
}

#[test]
fn queues_block_time_out_and_count_tasks() {
    let m = manager();
    let q = m.queue::<u32>(2).unwrap();
    q.put(1).unwrap();
    q.try_put(2).unwrap();
    assert!(q.is_full().unwrap());
    assert!(matches!(q.try_put(3), Err(Error::Full)));
    assert!(matches!(
        q.put_timeout(3, Duration::from_millis(20)),
        Err(Error::Timeout)
    ));
    assert_eq!(q.len().unwrap(), 2);
    assert_eq!(q.get().unwrap(), 1);
    assert_eq!(q.get_timeout(Duration::from_secs(5)).unwrap(), 2);
    assert_eq!(q.try_get().unwrap(), None);
    assert!(matches!(
        q.get_timeout(Duration::from_millis(20)),
        Err(Error::Timeout)
    ));
    assert!(q.is_empty().unwrap());

    let j = m.joinable_queue::<u32>(0).unwrap();
    j.put(1).unwrap();
    j.put(2).unwrap();
    assert!(matches!(
        j.join_timeout(Duration::from_millis(20)),
        Err(Error::Timeout)
    ));
    j.get().unwrap();
    j.task_done().unwrap();
    j.get().unwrap();
    j.task_done().unwrap();
    j.join().unwrap();
    assert!(
        matches!(j.task_done(), Err(Error::NotHeld(_))),
        "task_done too often"
    );
    // A proxy of the wrong kind (a plain queue read as a joinable one): a typed error that
    // names the object's kind and the operation, and the connection stays usable.
    let mut bytes = Vec::new();
    let fds = ipc_core::codec::encode(&q, &mut bytes).unwrap();
    let wrong: ipc_manager::JoinableQueue<u32> = ipc_core::codec::decode(&bytes, fds).unwrap();
    match wrong.task_done() {
        Err(Error::NoSuchMethod { kind, op }) => {
            assert_eq!((kind.as_str(), op.as_str()), ("Queue", "TaskDone"))
        }
        other => panic!("expected NoSuchMethod, got {other:?}"),
    }
    wrong.put(7).unwrap();
    assert_eq!(q.get().unwrap(), 7);
}

// Checklist 119 (locks): releasing an unlocked lock is an error; RLock counts.
#[test]
fn cpython_119_locks_semaphores_events() {
    let m = manager();
    let l = m.lock().unwrap();
    assert!(matches!(l.release(), Err(Error::NotHeld(_))));
    l.acquire().unwrap();
    assert!(l.is_locked().unwrap());
    assert!(!l.acquire_timeout(Duration::from_millis(20)).unwrap());
    l.release().unwrap();
    {
        let _g = l.lock().unwrap();
        assert!(!l.try_acquire().unwrap());
    }
    assert!(l.try_acquire().unwrap(), "the guard released it");
    l.release().unwrap();

    let r = m.rlock().unwrap();
    r.acquire().unwrap();
    r.acquire().unwrap();
    r.release().unwrap();
    assert!(r.is_locked().unwrap());
    r.release().unwrap();
    assert!(!r.is_locked().unwrap());
    assert!(matches!(r.release(), Err(Error::NotHeld(_))));
    // Another thread cannot release an RLock this thread holds.
    r.acquire().unwrap();
    let r2 = r.clone();
    let other = std::thread::spawn(move || r2.release()).join().unwrap();
    assert!(matches!(other, Err(Error::NotHeld(_))), "{other:?}");
    r.release().unwrap();

    let s = m.semaphore(2).unwrap();
    s.acquire().unwrap();
    s.acquire().unwrap();
    assert!(!s.try_acquire().unwrap());
    assert_eq!(s.value().unwrap(), 0);
    s.release().unwrap();
    s.release().unwrap();
    s.release().unwrap(); // unbounded
    assert_eq!(s.value().unwrap(), 3);
    let b = m.bounded_semaphore(1).unwrap();
    assert!(matches!(b.release(), Err(Error::NotHeld(_))));

    let e = m.event().unwrap();
    assert!(!e.is_set().unwrap());
    assert!(!e.wait_timeout(Duration::from_millis(10)).unwrap());
    e.set().unwrap();
    assert!(e.wait_timeout(Duration::from_millis(10)).unwrap());
    e.clear().unwrap();
    assert!(!e.is_set().unwrap());
}

#[test]
fn conditions_notify_waiters_across_threads() {
    let m = manager();
    let lock = m.lock().unwrap();
    let c = m.condition_with(&lock).unwrap();
    let flag = m.value(false).unwrap();
    assert!(
        matches!(c.notify(), Err(Error::NotHeld(_))),
        "notify needs the lock"
    );
    assert!(
        matches!(c.wait(), Err(Error::NotHeld(_))),
        "wait needs the lock"
    );
    let (c2, flag2) = (c.clone(), flag.clone());
    let waiter = std::thread::spawn(move || {
        let _g = c2.lock().unwrap();
        c2.wait_for(|| flag2.get(), Some(Duration::from_secs(30)))
    });
    std::thread::sleep(Duration::from_millis(20));
    {
        let _g = c.lock().unwrap();
        flag.set(true).unwrap();
        c.notify_all().unwrap();
    }
    assert!(waiter.join().unwrap().unwrap());
    assert!(!lock.is_locked().unwrap());
}

#[test]
fn barriers_pass_break_and_reset() {
    let m = manager();
    let b = m.barrier(2).unwrap();
    let b2 = b.clone();
    let other = std::thread::spawn(move || b2.wait());
    let mine = b.wait().unwrap();
    let theirs = other.join().unwrap().unwrap();
    let mut both = [mine, theirs];
    both.sort();
    assert_eq!(both, [0, 1]);
    // A party that times out breaks the barrier for everyone.
    assert!(matches!(
        b.wait_timeout(Duration::from_millis(20)),
        Err(Error::Broken)
    ));
    assert!(b.is_broken().unwrap());
    assert!(matches!(b.wait(), Err(Error::Broken)));
    b.reset().unwrap();
    assert!(!b.is_broken().unwrap());
    assert_eq!(b.parties().unwrap(), 2);
    // Reset while a party waits: it gets Broken.
    let b3 = b.clone();
    let waiting = std::thread::spawn(move || b3.wait());
    while b.n_waiting().unwrap() == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    b.reset().unwrap();
    assert!(matches!(waiting.join().unwrap(), Err(Error::Broken)));
}

// Checklist 110: the server exits with code 0 on shutdown; a dropped manager shuts down too.
#[test]
fn cpython_110_shutdown_exits_cleanly_and_proxies_then_fail() {
    let m = manager();
    let d = m.dict::<u8, u8>().unwrap();
    let pid = m.server_pid();
    m.shutdown().expect("exit code 0");
    assert!(matches!(d.get(&1), Err(Error::ServerGone(_))));
    assert!(common::wait_gone(pid, common::LONG));

    let m = manager();
    let pid = m.server_pid();
    drop(m);
    assert!(common::wait_gone(pid, common::LONG));
}

mod common;
