//! Managers and proxies across real processes, under every start method: the seed's
//! Manager/Namespace experiment, atomic counters from four processes, every proxy kind used
//! from a child (checklist 119), proxies that travel without the authkey, and blocked clients
//! that delay nobody.

use std::time::Duration;

use ipc_core::process::{Builder, StartMethod};
use ipc_manager::{
    Array, Barrier, Condition, Dict, Error, Event, JoinableQueue, List, Lock, Manager, Namespace,
    Queue, RLock, Semaphore, Value,
};
use serde::{Deserialize, Serialize};

mod common;
use common::{LONG, under_each};

fn start(method: StartMethod) -> Manager {
    Manager::builder().start_method(method).start().unwrap()
}

fn spawn<A: Serialize + serde::de::DeserializeOwned, R: Serialize + serde::de::DeserializeOwned>(
    method: StartMethod,
    arg: A,
    f: fn(A) -> R,
) -> ipc_core::process::JoinHandle<R> {
    Builder::new().start_method(method).spawn(arg, f).unwrap()
}

// The seed's experiment: children update a namespace and a dict, the parent prints them.
fn seed_worker((ns, d, i): (Namespace, Dict<String, u64>, u64)) {
    ns.set(
        &format!("worker{i}"),
        &format!("done by {}", std::process::id()),
    )
    .unwrap();
    d.insert(format!("square{i}"), i * i).unwrap();
    ns.fetch_add("finished", 1u64).unwrap();
}

fn seed_scenario(method: StartMethod) {
    let m = start(method);
    let ns = m.namespace().unwrap();
    let d = m.dict::<String, u64>().unwrap();
    ns.set("finished", &0u64).unwrap();
    let children: Vec<_> = (0..4)
        .map(|i| spawn(method, (ns.clone(), d.clone(), i), seed_worker))
        .collect();
    for c in children {
        c.join().unwrap();
    }
    assert_eq!(ns.get::<u64>("finished").unwrap(), 4);
    for i in 0..4u64 {
        assert_eq!(d.get(&format!("square{i}")).unwrap(), Some(i * i));
        assert!(
            ns.get::<String>(&format!("worker{i}"))
                .unwrap()
                .starts_with("done by ")
        );
    }
    let shown = ns.to_string();
    assert!(
        shown.starts_with("Namespace(finished=4, worker0='done by "),
        "{shown}"
    );
    m.shutdown().unwrap();
}

#[test]
fn the_seed_namespace_experiment_under_every_start_method() {
    under_each(seed_scenario);
}

// The count: 4 processes x 1000 increments of one dict entry end at exactly 4000.
fn increment((d, n): (Dict<String, u64>, u64)) {
    for i in 0..n {
        if i % 2 == 0 {
            d.fetch_add("hits".into(), 1).unwrap();
        } else {
            d.update("hits".into(), |v| Some(v.unwrap_or(0) + 1))
                .unwrap();
        }
    }
}

fn counter_scenario(method: StartMethod) {
    let m = start(method);
    let d = m.dict::<String, u64>().unwrap();
    let children: Vec<_> = (0..4)
        .map(|_| spawn(method, (d.clone(), 1000), increment))
        .collect();
    for c in children {
        c.join().unwrap();
    }
    assert_eq!(d.get("hits").unwrap(), Some(4000));
}

#[test]
fn four_processes_increment_one_entry_exactly_4000_times() {
    under_each(counter_scenario);
}

/// One of each proxy kind, for a child to use (checklist 119).
#[derive(Serialize, Deserialize)]
struct Kit {
    event: Event,
    lock: Lock,
    rlock: RLock,
    semaphore: Semaphore,
    condition: Condition,
    barrier: Barrier,
    queue: Queue<String>,
    joinable: JoinableQueue<u32>,
    list: List<u32>,
    dict: Dict<String, u32>,
    value: Value<f64>,
    array: Array<i32>,
    namespace: Namespace,
}

fn use_kit(kit: Kit) -> Vec<String> {
    let mut log = Vec::new();
    kit.event.wait().unwrap();
    log.push("event".to_string());
    {
        let _g = kit.lock.lock().unwrap();
        assert!(matches!(
            kit.lock.acquire_timeout(Duration::ZERO),
            Ok(false)
        ));
    }
    kit.rlock.acquire().unwrap();
    kit.rlock.acquire().unwrap();
    kit.rlock.release().unwrap();
    kit.rlock.release().unwrap();
    kit.semaphore.acquire().unwrap();
    {
        let _g = kit.condition.lock().unwrap();
        kit.condition.notify_all().unwrap();
    }
    let index = kit.barrier.wait().unwrap();
    assert!(index < 2, "{index}");
    log.push("barrier".into());
    kit.queue
        .put(format!("from {}", std::process::id()))
        .unwrap();
    let n = kit.joinable.get().unwrap();
    kit.joinable.task_done().unwrap();
    kit.list.push(n).unwrap();
    kit.dict.insert("child".into(), n * 2).unwrap();
    kit.value.set(2.5).unwrap();
    kit.array.set(-1, 9).unwrap();
    kit.namespace.set("child", &true).unwrap();
    log.push("done".into());
    log
}

fn kit_scenario(method: StartMethod) {
    let m = start(method);
    let kit = Kit {
        event: m.event().unwrap(),
        lock: m.lock().unwrap(),
        rlock: m.rlock().unwrap(),
        semaphore: m.semaphore(1).unwrap(),
        condition: m.condition().unwrap(),
        barrier: m.barrier(2).unwrap(),
        queue: m.queue(0).unwrap(),
        joinable: m.joinable_queue(0).unwrap(),
        list: m.list(Vec::<u32>::new()).unwrap(),
        dict: m.dict().unwrap(),
        value: m.value(0.0).unwrap(),
        array: m.array(vec![0, 0, 0]).unwrap(),
        namespace: m.namespace().unwrap(),
    };
    kit.joinable.put(21).unwrap();
    let child = Builder::new()
        .start_method(method)
        .spawn(
            Kit {
                event: kit.event.clone(),
                lock: kit.lock.clone(),
                rlock: kit.rlock.clone(),
                semaphore: kit.semaphore.clone(),
                condition: kit.condition.clone(),
                barrier: kit.barrier.clone(),
                queue: kit.queue.clone(),
                joinable: kit.joinable.clone(),
                list: kit.list.clone(),
                dict: kit.dict.clone(),
                value: kit.value.clone(),
                array: kit.array.clone(),
                namespace: kit.namespace.clone(),
            },
            use_kit,
        )
        .unwrap();
    kit.event.set().unwrap();
    kit.barrier.wait().unwrap();
    kit.joinable.join().unwrap();
    let log = child.join().unwrap();
    assert_eq!(log, ["event", "barrier", "done"]);
    assert!(kit.queue.get().unwrap().starts_with("from "));
    assert_eq!(kit.list.to_vec().unwrap(), [21]);
    assert_eq!(kit.dict.get("child").unwrap(), Some(42));
    assert_eq!(kit.value.get().unwrap(), 2.5);
    assert_eq!(kit.array.to_vec().unwrap(), [0, 0, 9]);
    assert!(kit.namespace.get::<bool>("child").unwrap());
    assert_eq!(kit.semaphore.value().unwrap(), 0);
    assert!(!kit.lock.is_locked().unwrap());
    // Everything the child referenced through its own sessions is released with them: only
    // our references remain (13 objects plus the condition's own lock, which is internal).
    assert!(common::eventually(|| m.stats().unwrap().sessions == 1));
    assert_eq!(m.stats().unwrap().objects, 13);
}

#[test]
fn cpython_119_every_proxy_kind_works_from_a_child() {
    under_each(kit_scenario);
}

// A proxy travels as a descriptor of its own: its bytes never hold the authkey.
#[test]
fn a_proxy_never_carries_the_authkey() {
    let key = b"0123456789-the-manager-authkey-0123456789".to_vec();
    let m = Manager::builder().authkey(key.clone()).start().unwrap();
    let d = m.dict::<String, u32>().unwrap();
    d.insert("k".into(), 1).unwrap();
    let mut bytes = Vec::new();
    let fds = ipc_core::codec::encode(&d, &mut bytes).unwrap();
    assert_eq!(fds.len(), 1, "one connection travels with it");
    assert!(
        !bytes.windows(8).any(|w| key.windows(8).any(|k| k == w)),
        "no 8 bytes of the key in {bytes:?}"
    );
    // The received proxy works on its own connection, and its session holds a reference.
    let copy: Dict<String, u32> = ipc_core::codec::decode(&bytes, fds).unwrap();
    drop(d);
    assert_eq!(
        copy.get("k").unwrap(),
        Some(1),
        "the copy keeps the object alive"
    );
    // Plain bytes cannot carry a proxy: a clear error, not a number without meaning.
    let err = ipc_core::codec::encode_plain(&copy, &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("shared object"), "{err}");
}

fn receive_proxy(conn: ipc_core::conn::Connection) -> u32 {
    let d: Dict<String, u32> = conn.recv().unwrap();
    d.fetch_add("through a connection".into(), 1).unwrap() + 1
}

#[test]
fn a_proxy_travels_through_a_connection() {
    let m = Manager::start().unwrap();
    let d = m.dict::<String, u32>().unwrap();
    let (ours, theirs) = ipc_core::conn::pipe().unwrap();
    let child = ipc_core::process::spawn(theirs, receive_proxy).unwrap();
    ours.send(&d).unwrap();
    assert_eq!(child.join().unwrap(), 1);
    assert_eq!(d.get("through a connection").unwrap(), Some(1));
}

// A proxy copied into a forked child (not passed as an argument) shares its parent's sockets:
// it refuses to call instead of interleaving with the parent.
#[test]
fn a_proxy_copied_by_fork_refuses_to_call() {
    let m = Manager::start().unwrap();
    let d = m.dict::<u8, u8>().unwrap();
    d.insert(1, 1).unwrap();
    let probe = d.clone();
    let child = common::builder(StartMethod::Fork)
        .fork(move || match probe.get(&1) {
            Err(Error::Refused(msg)) => msg.contains("fork"),
            _ => false,
        })
        .unwrap();
    assert!(child.join().unwrap());
    assert_eq!(
        d.get(&1).unwrap(),
        Some(1),
        "the parent's connection is intact"
    );
}

// A client blocked in a call delays no other client, and no other thread of its own process:
// a child that only has proxies (no authkey) gets more connections from the server.
fn blocked_and_busy((q, d): (Queue<u32>, Dict<u32, u32>)) -> u32 {
    let q2 = q.clone();
    let blocked = std::thread::spawn(move || q2.get());
    for i in 0..100 {
        d.insert(i, i).unwrap();
    }
    let n = d.len().unwrap() as u32;
    q.put(7).unwrap();
    assert_eq!(blocked.join().unwrap().unwrap(), 7);
    n
}

fn wait_on_queue(q: Queue<u32>) -> u32 {
    q.get().unwrap()
}

#[test]
fn a_blocked_client_delays_nobody() {
    let m = Manager::start().unwrap();
    let q = m.queue::<u32>(0).unwrap();
    let d = m.dict::<u32, u32>().unwrap();
    let lock = m.lock().unwrap();
    let barrier = m.barrier(3).unwrap();
    lock.acquire().unwrap();
    // Another process blocked in Queue::get, a thread of ours in Lock::acquire, another in
    // Barrier::wait...
    let getter = ipc_core::process::spawn(q.clone(), wait_on_queue).unwrap();
    let l2 = lock.clone();
    let acquirer = std::thread::spawn(move || l2.acquire_timeout(LONG));
    let b2 = barrier.clone();
    let waiter = std::thread::spawn(move || b2.wait_timeout(LONG));
    // ... while another process does 100 dict operations, one of its threads blocked too.
    let own = m.queue::<u32>(0).unwrap();
    let busy = ipc_core::process::spawn((own, d.clone()), blocked_and_busy).unwrap();
    assert_eq!(busy.join().unwrap(), 100);
    for i in 0..100 {
        assert_eq!(d.get(&i).unwrap(), Some(i));
    }
    q.put(1).unwrap();
    assert_eq!(getter.join().unwrap(), 1);
    lock.release().unwrap();
    assert!(acquirer.join().unwrap().unwrap());
    lock.release().unwrap();
    assert!(matches!(barrier.abort(), Ok(())));
    assert!(matches!(waiter.join().unwrap(), Err(Error::Broken)));
}
