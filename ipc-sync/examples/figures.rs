//! Quick figures for the primitives and queues (the criterion benches and the CPython
//! comparison live in the `benches` crate; this is a sanity check runnable on its own).
//!
//! `cargo run --release -p ipc-sync --example figures`

use std::time::{Duration, Instant};

use ipc_core::process::{Builder, StartMethod};
use ipc_sync::{Condition, Lock, Queue, Semaphore, Value};
use serde_bytes::ByteBuf;

fn per_op(n: u32, f: impl FnMut()) -> Duration {
    let mut f = f;
    let t0 = Instant::now();
    for _ in 0..n {
        f();
    }
    t0.elapsed() / n
}

fn echo((a, b, n): (Queue<u64>, Queue<u64>, u32)) {
    for _ in 0..n {
        b.put(a.get().unwrap()).unwrap();
    }
}

fn drain((q, n): (Queue<u64>, u32)) {
    for _ in 0..n {
        q.get().unwrap();
    }
}

fn drain_big((q, n): (Queue<ByteBuf>, u32)) {
    for _ in 0..n {
        q.get().unwrap();
    }
}

fn cond_pong((c, v, n): (Condition, Value<u32>, u32)) {
    let mut g = c.acquire().unwrap();
    for i in 0..n {
        g = g.wait_for(|| v.get() == 2 * i + 1).unwrap();
        v.set(2 * i + 2);
        g.notify(1);
    }
}

fn main() {
    let spawn = || Builder::new().start_method(StartMethod::Spawn);
    let lock = Lock::new().unwrap();
    let d = per_op(1_000_000, || drop(lock.acquire().unwrap()));
    println!(
        "lock_uncontended          {:>9.1} ns",
        d.as_secs_f64() * 1e9
    );
    let sem = Semaphore::new(1).unwrap();
    let d = per_op(1_000_000, || drop(sem.acquire()));
    println!(
        "semaphore_uncontended     {:>9.1} ns",
        d.as_secs_f64() * 1e9
    );
    let v = Value::new(0u64).unwrap();
    let d = per_op(1_000_000, || {
        *v.lock().unwrap() += 1;
    });
    println!(
        "value_increment_locked    {:>9.1} ns",
        d.as_secs_f64() * 1e9
    );

    let (a, b) = (Queue::new().unwrap(), Queue::new().unwrap());
    let n = 20_000;
    let h = spawn().spawn((a.clone(), b.clone(), n), echo).unwrap();
    let d = per_op(n, || {
        a.put(1).unwrap();
        b.get().unwrap();
    });
    h.join().unwrap();
    println!(
        "queue_pingpong            {:>9.2} us",
        d.as_secs_f64() * 1e6
    );

    let c = Condition::new().unwrap();
    let val = Value::new(0u32).unwrap();
    let h = spawn()
        .spawn((c.clone(), val.clone(), n), cond_pong)
        .unwrap();
    let mut i = 0;
    let d = per_op(n, || {
        let g = c.acquire().unwrap();
        val.set(2 * i + 1);
        g.notify(1);
        drop(g.wait_for(|| val.get() == 2 * i + 2).unwrap());
        i += 1;
    });
    h.join().unwrap();
    println!(
        "condition_pingpong        {:>9.2} us",
        d.as_secs_f64() * 1e6
    );

    let q = Queue::new().unwrap();
    let n = 1_000_000;
    let h = spawn().spawn((q.clone(), n), drain).unwrap();
    let t0 = Instant::now();
    for i in 0..n {
        q.put(u64::from(i)).unwrap();
    }
    h.join().unwrap();
    println!(
        "queue_throughput_small    {:>9.2} M items/s",
        f64::from(n) / t0.elapsed().as_secs_f64() / 1e6
    );

    let q = Queue::new().unwrap();
    let n = 20_000;
    let h = spawn().spawn((q.clone(), n), drain_big).unwrap();
    let item = ByteBuf::from(vec![7u8; 64 << 10]);
    let t0 = Instant::now();
    for _ in 0..n {
        q.put(item.clone()).unwrap();
    }
    h.join().unwrap();
    println!(
        "queue_throughput_64k      {:>9.0} MB/s",
        f64::from(n) * 65536.0 / t0.elapsed().as_secs_f64() / 1e6
    );
}
