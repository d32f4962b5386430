//! The three queues with a producer or a consumer killed, every record accounted for.
//!
//! ```text
//! participants   2 producers (ids 0..N, N..2N) and 2 consumers, all children; one of them is
//!                the victim (its role fixed by the scenario)
//! ledger[id]     bit 0: the put returned Ok (committed); bits 8..: times a consumer took it
//! board          P_INFLIGHT + p = id + 1 while producer p is inside its put;
//!                IN_GET + c = 1 while consumer c is inside its get (until it recorded it)
//! records        Item { id, payload (8..200 bytes, 1 in 8 of 3-12 KiB: larger than half
//!                the 8 KiB ring, so streamed in chunks), sum (FNV-1a of id and payload) }
//! the end        the runner puts one sentinel per consumer once the producers are done,
//!                then drains what is left
//! ```
//! Accounting: a committed id taken 0 times is lost, except the one record a consumer that
//! died inside its get may have taken (at `queue.get.copied` it had not: the record stays);
//! taken twice is duplicated; a bad sum or a record that does not decode is torn; an id
//! taken that was never put (other than a dead producer's record in flight) is torn too.

use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use ipc_core::shm::ShmBox;
use ipc_sync::{GetError, JoinableQueue, Queue, QueueJoinError, SimpleQueue};
use serde::{Deserialize, Serialize};

use super::Scenario;
use crate::harness::{Board, Counts, Ctx, HANG, Kill, Rng, board, checksum, reap_victim, settle};

const N: u32 = 200;
const SENTINEL: u32 = u32::MAX;
const COMMITTED: u32 = 1;
const TAKEN: u32 = 1 << 8;
// Board slots.
const P_INFLIGHT: usize = 0; // 0..2
const IN_GET: usize = 2; // 2..4
const TORN: usize = 4;

type Ledger = ShmBox<[AtomicU32; 2 * N as usize]>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Producer,
    Consumer,
    Either,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Queue,
    Joinable,
    Simple,
}

pub(super) fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "queue-producer",
            about: "Queue: a producer dies at each step of a put",
            points: &[
                "queue.put.reserved",
                "queue.put.copied",
                "queue.put.committed",
                "queue.wake.announced",
                "lock.acquired",
            ],
            max_nth: 120,
            window_us: 4_000,
            run: |c| queues(c, Kind::Queue, Role::Producer),
        },
        Scenario {
            name: "queue-consumer",
            about: "Queue: a consumer dies mid-get",
            points: &[
                "queue.get.copied",
                "queue.get.taken",
                "queue.wake.announced",
                "lock.acquired",
            ],
            max_nth: 120,
            window_us: 30_000,
            run: |c| queues(c, Kind::Queue, Role::Consumer),
        },
        Scenario {
            name: "joinable-consumer",
            about: "JoinableQueue: a consumer dies before task_done; join still returns",
            points: &["queue.task_done.before", "queue.get.taken"],
            max_nth: 120,
            window_us: 30_000,
            run: |c| queues(c, Kind::Joinable, Role::Consumer),
        },
        Scenario {
            name: "simplequeue",
            about: "SimpleQueue: a producer or a consumer dies",
            points: &[
                "queue.put.copied",
                "queue.put.committed",
                "queue.get.copied",
                "queue.get.taken",
            ],
            max_nth: 120,
            window_us: 30_000,
            run: |c| queues(c, Kind::Simple, Role::Either),
        },
    ]
}

#[derive(Debug, Serialize, Deserialize)]
struct Item {
    id: u32,
    #[serde(with = "serde_bytes_compat")]
    payload: Vec<u8>,
    sum: u64,
}

/// `Vec<u8>` as postcard bytes without a serde_bytes dependency: a length and the bytes.
mod serde_bytes_compat {
    pub(super) fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }
    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
        }
        d.deserialize_bytes(V)
    }
}

fn item(id: u32, rng: &mut Rng) -> Item {
    let len = if rng.below(8) == 0 {
        3000 + rng.below(9000)
    } else {
        8 + rng.below(192)
    } as usize;
    let payload: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
    Item {
        id,
        sum: checksum(u64::from(id), &payload),
        payload,
    }
}

#[derive(Serialize, Deserialize)]
enum AnyQueue {
    Queue(Queue<Item>),
    Joinable(JoinableQueue<Item>),
    Simple(SimpleQueue<Item>),
}

/// What a get brought.
enum Got {
    Item(Item),
    Torn(String),
    Nothing,
}

impl AnyQueue {
    fn new(kind: Kind) -> anyhow::Result<AnyQueue> {
        Ok(match kind {
            Kind::Queue => AnyQueue::Queue(Queue::with_capacity(8192, 0)?),
            Kind::Joinable => AnyQueue::Joinable(JoinableQueue::with_capacity(8192, 0)?),
            Kind::Simple => AnyQueue::Simple(SimpleQueue::new()?),
        })
    }

    fn share(&self) -> AnyQueue {
        match self {
            AnyQueue::Queue(q) => AnyQueue::Queue(q.clone()),
            AnyQueue::Joinable(q) => AnyQueue::Joinable(q.clone()),
            AnyQueue::Simple(q) => AnyQueue::Simple(q.clone()),
        }
    }

    fn put(&self, it: Item) -> bool {
        match self {
            AnyQueue::Queue(q) => q.put(it).is_ok(),
            AnyQueue::Joinable(q) => q.put(it).is_ok(),
            AnyQueue::Simple(q) => q.put(it).is_ok(),
        }
    }

    fn get(&self, t: Duration) -> Got {
        let r = match self {
            AnyQueue::Queue(q) => q.get_timeout(t),
            AnyQueue::Joinable(q) => q.get_timeout(t),
            AnyQueue::Simple(q) => q.get_timeout(t),
        };
        match r {
            Ok(it) => Got::Item(it),
            Err(GetError::Decode(e)) => Got::Torn(e.to_string()),
            Err(_) => Got::Nothing,
        }
    }

    fn task_done(&self) {
        if let AnyQueue::Joinable(q) = self {
            let _ = q.task_done();
        }
    }
}

fn producer((q, ledger, b, who, seed, kill): (AnyQueue, Ledger, Board, u32, u64, Option<Kill>)) {
    if let Some(k) = kill {
        k.arm();
    }
    let mut rng = Rng::new(seed);
    for i in 0..N {
        let id = who * N + i;
        let it = item(id, &mut rng);
        b[P_INFLIGHT + who as usize].store(u64::from(id) + 1, SeqCst);
        if q.put(it) {
            ledger[id as usize].fetch_or(COMMITTED, SeqCst);
        }
        b[P_INFLIGHT + who as usize].store(0, SeqCst);
    }
}

fn consumer((q, ledger, b, who, kill): (AnyQueue, Ledger, Board, usize, Option<Kill>)) {
    if let Some(k) = kill {
        k.arm();
    }
    loop {
        b[IN_GET + who].store(1, SeqCst);
        match q.get(Duration::from_secs(30)) {
            Got::Item(it) => {
                if it.id == SENTINEL {
                    b[IN_GET + who].store(0, SeqCst);
                    q.task_done();
                    return;
                }
                if it.sum != checksum(u64::from(it.id), &it.payload) || it.id >= 2 * N {
                    b[TORN].fetch_add(1, SeqCst);
                } else {
                    ledger[it.id as usize].fetch_add(TAKEN, SeqCst);
                }
                // Now and then a slow consumer: the ring fills and producers sleep, so that
                // frees wake them (queue.wake.announced on the consumer's side).
                if it.id % 16 == 0 {
                    std::thread::sleep(Duration::from_micros(300));
                }
                b[IN_GET + who].store(0, SeqCst);
                q.task_done();
            }
            Got::Torn(_) => {
                b[TORN].fetch_add(1, SeqCst);
                b[IN_GET + who].store(0, SeqCst);
            }
            Got::Nothing => {
                b[IN_GET + who].store(0, SeqCst);
                return;
            }
        }
    }
}

fn sentinel() -> Item {
    Item {
        id: SENTINEL,
        payload: Vec::new(),
        sum: checksum(u64::from(SENTINEL), &[]),
    }
}

fn queues(c: &mut Ctx, kind: Kind, role: Role) -> anyhow::Result<Counts> {
    let q = AnyQueue::new(kind)?;
    let ledger: Ledger = ShmBox::new()?;
    let b = board()?;
    let mut counts = Counts::default();
    let point = c.kill.point().map(str::to_owned);
    let role = match (role, point.as_deref()) {
        (Role::Either, Some(p)) if p.starts_with("queue.put") => Role::Producer,
        (Role::Either, Some(_)) => Role::Consumer,
        (Role::Either, None) if c.pick(2) == 0 => Role::Producer,
        (Role::Either, None) => Role::Consumer,
        (r, _) => r,
    };
    let victim_no = c.pick(2);
    let kill_for = |r: Role, i: usize| (r == role && i == victim_no).then(|| c.kill.clone());
    let mut producers = Vec::new();
    let mut consumers = Vec::new();
    for i in 0..2 {
        let seed = c.rng.next_u64();
        let k = kill_for(Role::Producer, i);
        producers.push(c.builder().spawn(
            (q.share(), ledger.clone(), b.clone(), i as u32, seed, k),
            producer,
        )?);
    }
    for i in 0..2 {
        let k = kill_for(Role::Consumer, i);
        consumers.push(
            c.builder()
                .spawn((q.share(), ledger.clone(), b.clone(), i, k), consumer)?,
        );
    }
    let (victim, survivors_p, survivors_c) = if role == Role::Producer {
        let v = producers.remove(victim_no);
        (v, producers, consumers)
    } else {
        let v = consumers.remove(victim_no);
        (v, producers, consumers)
    };
    let at = c.strike(&victim);
    if role == Role::Producer {
        reap_victim(&victim, &mut counts);
    }
    settle(survivors_p, at + HANG, &mut counts, "a producer");
    if let AnyQueue::Joinable(jq) = &q {
        // Everything put is done, or written off with the consumer that died holding it.
        match jq.join_timeout(HANG) {
            Ok(()) | Err(QueueJoinError::Abandoned { .. }) => {}
            Err(e) => {
                counts.hangs += 1;
                counts.note(format!("join: {e}"));
            }
        }
    }
    for _ in 0..2 {
        q.put(sentinel());
    }
    if role == Role::Consumer {
        reap_victim(&victim, &mut counts);
    }
    settle(
        survivors_c,
        Instant::now() + HANG,
        &mut counts,
        "a consumer",
    );
    // What is left: sentinels the dead consumer did not take, nothing else.
    loop {
        match q.get(Duration::from_millis(10)) {
            Got::Item(it) if it.id == SENTINEL => q.task_done(),
            Got::Item(it) => {
                counts.lost += 1;
                counts.note(format!("record {} was still queued at the end", it.id));
                q.task_done();
            }
            Got::Torn(e) => {
                counts.torn += 1;
                counts.note(format!("a leftover record did not decode: {e}"));
            }
            Got::Nothing => break,
        }
    }
    account(c, role, victim_no, &ledger, &b, &mut counts);
    Ok(counts)
}

fn account(c: &Ctx, role: Role, victim_no: usize, ledger: &Ledger, b: &Board, counts: &mut Counts) {
    counts.torn += b[TORN].load(SeqCst);
    let in_flight = if role == Role::Producer {
        b[P_INFLIGHT + victim_no].load(SeqCst).checked_sub(1)
    } else {
        None
    };
    // The one record a consumer that died inside its get may have taken with it.
    let mut excused = u64::from(
        role == Role::Consumer
            && counts.killed
            && b[IN_GET + victim_no].load(SeqCst) == 1
            && c.kill.point() != Some("queue.get.copied"),
    );
    for (id, w) in ledger.iter().enumerate() {
        let w = w.load(SeqCst);
        let taken = u64::from(w >> 8);
        let committed = w & COMMITTED != 0;
        if taken > 1 {
            counts.duplicated += taken - 1;
            counts.note(format!("record {id} taken {taken} times"));
        }
        if committed && taken == 0 {
            if excused > 0 {
                excused -= 1;
            } else {
                counts.lost += 1;
                counts.note(format!("record {id} committed and never taken"));
            }
        }
        if !committed && taken > 0 && in_flight != Some(id as u64) {
            counts.torn += 1;
            counts.note(format!("record {id} taken but never put"));
        }
    }
}
