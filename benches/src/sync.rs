//! The ipc-sync cases: locks, semaphores, events, conditions, shared values and queues (see
//! `benches/README.md`), plus `shared_memory_create_unlink` (ipc-core's named segments).
//!
//! Cross-process cases fork their children (daemons, through [`Peer`]) before the clock starts
//! and wait for them to report ready through the primitive under test; every wait of the runner
//! has a generous timeout, so a dead child fails the case instead of hanging it. Every case checks
//! its result: echoed values, item counts and order, final counters.

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use ipc_core::shm::NamedSegment;
use ipc_sync::{AtomicValue, Condition, Event, Lock, Queue, Semaphore, SimpleQueue, Value};
use serde_bytes::ByteBuf;

use crate::HANDSHAKE_TIMEOUT;
use crate::peer::Peer;
use crate::pin::Placement;

/// Bytes of one `queue_throughput_64k` item.
pub const QUEUE_PAYLOAD: usize = 64 << 10;
/// Bytes of one `shared_memory_create_unlink` segment.
pub const SEGMENT_SIZE: usize = 1 << 20;

/// `lock_uncontended`: `n` acquire + release pairs (the guard's drop releases) in one process.
pub fn lock_uncontended(_: &Placement, n: u64) -> anyhow::Result<Duration> {
    let lock = Lock::new()?;
    let t0 = Instant::now();
    for _ in 0..n {
        let guard = lock.acquire().map_err(|e| anyhow!("{e}"))?;
        drop(guard);
    }
    let dt = t0.elapsed();
    ensure!(!lock.locked(), "the lock was left held");
    Ok(dt)
}

/// `semaphore_uncontended`: `n` acquire + release pairs on a `Semaphore(1)` in one process.
pub fn semaphore_uncontended(_: &Placement, n: u64) -> anyhow::Result<Duration> {
    let sem = Semaphore::new(1)?;
    let t0 = Instant::now();
    for _ in 0..n {
        let guard = sem.acquire();
        drop(guard);
    }
    let dt = t0.elapsed();
    ensure!(sem.value() == 1, "the semaphore ended at {}", sem.value());
    Ok(dt)
}

/// `value_increment_locked`: `n` times, under the value's own lock, `+= 1` on a shared `u64`.
pub fn value_increment_locked(_: &Placement, n: u64) -> anyhow::Result<Duration> {
    let v = Value::new(0u64)?;
    let t0 = Instant::now();
    for _ in 0..n {
        let mut g = v.lock().map_err(|e| anyhow!("{e}"))?;
        *g += 1;
    }
    let dt = t0.elapsed();
    ensure!(v.get() == n, "the value is {}, expected {n}", v.get());
    Ok(dt)
}

/// `lock_contended_2proc`: two children each do `n` x (acquire, `+= 1` on a counter the lock
/// protects, release); timed from "go" to both reporting done. The count must be exactly `2n`.
pub fn lock_contended_2proc(placement: &Placement, n: u64) -> anyhow::Result<Duration> {
    const WORKERS: usize = 2;
    let lock = Lock::new()?;
    let counter = Value::with_lock(0u64, lock.clone())?;
    let (ready, done, go) = (Semaphore::new(0)?, Semaphore::new(0)?, Event::new()?);
    let mut workers = Vec::new();
    for k in 1..=WORKERS {
        let (counter, ready, done, go) = (counter.clone(), ready.clone(), done.clone(), go.clone());
        workers.push(Peer::start(placement, k, "locked_counter", move || {
            ready.release()?;
            ensure!(go.wait_timeout(HANDSHAKE_TIMEOUT), "no go");
            for _ in 0..n {
                let mut g = counter.lock().map_err(|e| anyhow!("{e}"))?;
                *g += 1;
            }
            done.release()?;
            Ok(())
        })?);
    }
    for _ in 0..WORKERS {
        ready
            .acquire_timeout(HANDSHAKE_TIMEOUT)
            .context("a worker did not start")?
            .forget();
    }
    let t0 = Instant::now();
    go.set();
    for _ in 0..WORKERS {
        done.acquire_timeout(HANDSHAKE_TIMEOUT * 4)
            .context("a worker did not finish")?
            .forget();
    }
    let dt = t0.elapsed();
    for w in workers {
        w.join()?;
    }
    let total = n * WORKERS as u64;
    ensure!(
        counter.get() == total,
        "lost updates: {} of {total}",
        counter.get()
    );
    Ok(dt)
}

/// `event_pingpong`: two events bounced between the runner and a child (set / wait / clear).
pub fn event_pingpong(placement: &Placement, n: u64) -> anyhow::Result<Duration> {
    let (ping, pong) = (Event::new()?, Event::new()?);
    let peer = {
        let (ping, pong) = (ping.clone(), pong.clone());
        Peer::start(placement, 1, "event_echo", move || {
            pong.set();
            for i in 0..n {
                ensure!(ping.wait_timeout(HANDSHAKE_TIMEOUT), "no ping {i}");
                ping.clear();
                pong.set();
            }
            Ok(())
        })?
    };
    ensure!(
        pong.wait_timeout(HANDSHAKE_TIMEOUT),
        "the child did not start"
    );
    pong.clear();
    let t0 = Instant::now();
    for i in 0..n {
        ping.set();
        ensure!(pong.wait_timeout(HANDSHAKE_TIMEOUT), "no pong {i}");
        pong.clear();
    }
    let dt = t0.elapsed();
    peer.join()?;
    Ok(dt)
}

/// `condition_pingpong`: one condition and a shared turn word (-1 child not up, 0 runner's turn,
/// 1 child's turn); each side waits for its turn under the condition, flips it and notifies.
pub fn condition_pingpong(placement: &Placement, n: u64) -> anyhow::Result<Duration> {
    let cond = Condition::new()?;
    let turn = AtomicValue::new(-1i32)?;
    let peer = {
        let (cond, turn) = (cond.clone(), turn.clone());
        Peer::start(placement, 1, "condition_echo", move || {
            let mut g = cond.acquire().map_err(|e| anyhow!("{e}"))?;
            turn.store(0);
            g.notify(1);
            for i in 0..n {
                let (g2, ok) = g
                    .wait_for_timeout(HANDSHAKE_TIMEOUT, || turn.load() == 1)
                    .map_err(|e| anyhow!("{e}"))?;
                g = g2;
                ensure!(ok, "the child's turn {i} never came");
                turn.store(0);
                g.notify(1);
            }
            Ok(())
        })?
    };
    let mut g = cond.acquire().map_err(|e| anyhow!("{e}"))?;
    let (g2, ok) = g
        .wait_for_timeout(HANDSHAKE_TIMEOUT, || turn.load() == 0)
        .map_err(|e| anyhow!("{e}"))?;
    g = g2;
    ensure!(ok, "the child did not start");
    let t0 = Instant::now();
    for i in 0..n {
        turn.store(1);
        g.notify(1);
        let (g2, ok) = g
            .wait_for_timeout(HANDSHAKE_TIMEOUT, || turn.load() == 0)
            .map_err(|e| anyhow!("{e}"))?;
        g = g2;
        ensure!(ok, "round trip {i} never came back");
    }
    let dt = t0.elapsed();
    drop(g);
    peer.join()?;
    Ok(dt)
}

/// `queue_pingpong`: the runner puts `i` on queue A, the child gets it and puts it on queue B,
/// the runner gets it back and checks it.
pub fn queue_pingpong(placement: &Placement, n: u64) -> anyhow::Result<Duration> {
    let (inbox, outbox) = (Queue::<u64>::new()?, Queue::<u64>::new()?);
    let peer = {
        let (inbox, outbox) = (inbox.clone(), outbox.clone());
        Peer::start(placement, 1, "queue_echo", move || {
            outbox.put(u64::MAX).map_err(|e| anyhow!("{e}"))?;
            for _ in 0..n {
                let v = inbox.get_timeout(HANDSHAKE_TIMEOUT)?;
                outbox.put(v).map_err(|e| anyhow!("{e}"))?;
            }
            Ok(())
        })?
    };
    ensure!(
        outbox.get_timeout(HANDSHAKE_TIMEOUT)? == u64::MAX,
        "bad handshake"
    );
    let t0 = Instant::now();
    for i in 0..n {
        inbox.put(i).map_err(|e| anyhow!("{e}"))?;
        let back = outbox.get_timeout(HANDSHAKE_TIMEOUT)?;
        ensure!(back == i, "echoed {back}, expected {i}");
    }
    let dt = t0.elapsed();
    peer.join()?;
    Ok(dt)
}

/// A queue flavour for the throughput cases.
trait Flavour<T>: Clone + Send + 'static {
    fn make() -> anyhow::Result<Self>;
    fn put(&self, item: T) -> anyhow::Result<()>;
    fn get(&self) -> anyhow::Result<T>;
}

impl<T: serde::Serialize + serde::de::DeserializeOwned + 'static> Flavour<T> for Queue<T> {
    fn make() -> anyhow::Result<Self> {
        Ok(Queue::new()?)
    }
    fn put(&self, item: T) -> anyhow::Result<()> {
        Queue::put(self, item).map_err(|e| anyhow!("{e}"))
    }
    fn get(&self) -> anyhow::Result<T> {
        Ok(self.get_timeout(HANDSHAKE_TIMEOUT)?)
    }
}

impl<T: serde::Serialize + serde::de::DeserializeOwned + 'static> Flavour<T> for SimpleQueue<T> {
    fn make() -> anyhow::Result<Self> {
        Ok(SimpleQueue::new()?)
    }
    fn put(&self, item: T) -> anyhow::Result<()> {
        SimpleQueue::put(self, item).map_err(|e| anyhow!("{e}"))
    }
    fn get(&self) -> anyhow::Result<T> {
        Ok(self.get_timeout(HANDSHAKE_TIMEOUT)?)
    }
}

/// A child puts `n` items made by `item(i)` after "go"; the runner gets them all and `check`s
/// each. Timed from "go" to the last item received.
fn throughput<T: 'static, Q: Flavour<T>>(
    placement: &Placement,
    n: u64,
    item: fn(u64) -> T,
    check: fn(u64, &T) -> bool,
) -> anyhow::Result<Duration> {
    let q = Q::make()?;
    let (ready, go) = (Event::new()?, Event::new()?);
    let peer = {
        let (q, ready, go) = (q.clone(), ready.clone(), go.clone());
        Peer::start(placement, 1, "queue_producer", move || {
            ready.set();
            ensure!(go.wait_timeout(HANDSHAKE_TIMEOUT), "no go");
            for i in 0..n {
                q.put(item(i))?;
            }
            Ok(())
        })?
    };
    ensure!(
        ready.wait_timeout(HANDSHAKE_TIMEOUT),
        "the producer did not start"
    );
    let t0 = Instant::now();
    go.set();
    for i in 0..n {
        let got = q.get()?;
        if !check(i, &got) {
            bail!("item {i} is wrong");
        }
    }
    let dt = t0.elapsed();
    peer.join()?;
    Ok(dt)
}

/// `queue_throughput_small`: the integers `0..n` through a `Queue`, order checked.
pub fn queue_throughput_small(placement: &Placement, n: u64) -> anyhow::Result<Duration> {
    throughput::<u64, Queue<u64>>(placement, n, |i| i, |i, v| *v == i)
}

/// `simplequeue_throughput_small`: the same through a `SimpleQueue`.
pub fn simplequeue_throughput_small(placement: &Placement, n: u64) -> anyhow::Result<Duration> {
    throughput::<u64, SimpleQueue<u64>>(placement, n, |i| i, |i, v| *v == i)
}

/// `queue_throughput_64k`: `n` byte strings of 64 KiB through a `Queue` (length and fill checked).
pub fn queue_throughput_64k(placement: &Placement, n: u64) -> anyhow::Result<Duration> {
    throughput::<ByteBuf, Queue<ByteBuf>>(
        placement,
        n,
        |_| ByteBuf::from(vec![0x5a; QUEUE_PAYLOAD]),
        |_, b| b.len() == QUEUE_PAYLOAD && b[0] == 0x5a && b[QUEUE_PAYLOAD - 1] == 0x5a,
    )
}

/// `shared_memory_create_unlink`: `n` times create a uniquely named 1 MiB segment, unlink it and
/// close it (drop).
pub fn shared_memory_create_unlink(_: &Placement, n: u64) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    for _ in 0..n {
        let seg = NamedSegment::create_unique(SEGMENT_SIZE)?;
        ensure!(seg.len() == SEGMENT_SIZE, "segment of {} bytes", seg.len());
        seg.unlink()?;
        drop(seg);
    }
    Ok(t0.elapsed())
}
