//! The driver: [`MpiEngine`] (ipc-pool's [`Engine`] on MPI ranks) and the one thread that talks
//! MPI for it.
//!
//! ```text
//! submitters (any thread)      ledger (mutex): pending chunks, open count, stop, lost ranks
//!        | submit / cancel          ^
//!        v                          | takes pending, closes chunks
//! driver thread (owns the communicator; the only thread of this process that calls MPI):
//!   loop: receive every message waiting (Reports -> Batch::complete_run; Heartbeat -> slot)
//!         give each live rank bundles while it holds less than 2 bundles' worth of items
//!             (a bundle: pending chunks worth BUNDLE_TIME at the rank's measured pace; one
//!             chunk while the pace is unknown)
//!         a rank holding work and silent for the silence limit is LOST (see the crate doc)
//!         nothing in flight: sleep on the ledger's condvar until a submission or a stop
//!         else: poll again (yield, then naps growing to 1 ms)
//! ```
//! A chunk's life: PENDING -> ASSIGNED(rank) -> every item reported -> closed. On a lost rank,
//! the item it was running fails ([`TaskError::Lost`]) and its other unreported items go back
//! to PENDING (front) as chunks of consecutive items.

use std::collections::VecDeque;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ipc_core::process::RemoteFn;
use ipc_pool::{Batch, Engine, Packed, PoolError, TaskError};
use mpi::point_to_point::{Destination, MatchedReceiveVec, Source};
use mpi::topology::Communicator;

use crate::Nap;
use crate::wire::{FromRank, IDLE, ToRank, encode, unslot};

/// The work a bundle carries, at the rank's measured pace.
const BUNDLE_TIME: Duration = Duration::from_micros(200);
/// The buffer that MPI copies the driver's messages into (`MPI_Bsend`, attached by `init`):
/// a buffered send returns at once, where a plain one waits for a receiver that a rank that
/// died or stopped never becomes (measured here: the driver stalled in its first send to a
/// stopped rank, even of 3 KiB).
pub(crate) const SEND_BUFFER: usize = 64 << 20;
/// What the driver lets its messages hold of [`SEND_BUFFER`]: half, as MPI frees a message's
/// space a little after its receiver took it, which the driver learns from the receiver's
/// reports. A message larger than this goes by a plain send.
const SEND_BUDGET: usize = SEND_BUFFER / 2;
/// The largest message MPI sends at once over shared memory (OpenMPI's vader: 4 KiB with its
/// header); a larger one moves in steps, each when the sender calls MPI again. A bundle of
/// several chunks stays under it (a map of 10 000 tiny tasks at chunk size 100: 0.8-1.8 ms,
/// where bundles of up to 7 KiB took 1-8 ms by turns).
const EAGER: usize = 4000;
/// How long the driver polls without naps after it buffered a larger message. Measured on 2
/// cores: with naps, a map of 10 000 tiny tasks at chunk size 100 took 1 ms or 8 ms by turns;
/// polling for as long as any rank held a buffered message took CPU from the ranks of a
/// CPU-bound map (its speedup fell from 1.9 to 1.55).
const HURRY: Duration = Duration::from_millis(2);
/// MPI's own bookkeeping per buffered message (`MPI_BSEND_OVERHEAD`, well under this).
const SEND_OVERHEAD: usize = 1 << 10;
/// The most items in a bundle.
const MAX_BUNDLE: usize = 4096;

/// How the driver watches its ranks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Watch {
    /// A busy rank sends a heartbeat this often.
    pub(crate) heartbeat: Duration,
    /// A rank that holds work and sends nothing for this long is lost.
    pub(crate) silence: Duration,
    /// How long the ranks may take to answer the driver's first message.
    pub(crate) hello: Duration,
}

/// Chunks of one batch, as the ledger holds them.
struct Chunk {
    id: u64,
    batch: Arc<Batch>,
    func: RemoteFn<(), ()>,
    /// The index of the chunk's first item in its batch.
    first: u64,
    args: Packed,
    /// Items reported so far (a prefix: ranks report in order).
    done: u32,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    No,
    /// Finish what was submitted, then stop the ranks.
    Join,
    /// Stop now: what did not end fails as cancelled.
    Terminate,
}

struct Ledger {
    pending: VecDeque<Chunk>,
    /// The items of the pending chunks.
    pending_items: usize,
    next_id: u64,
    /// Chunks submitted and not yet closed.
    open: usize,
    closed: bool,
    stop: Stop,
    /// The ranks lost so far, in words.
    lost: Vec<String>,
    /// Ranks still serving.
    live: usize,
}

impl Ledger {
    /// A new pending chunk, at the back (a submission) or the front (work of a lost rank).
    fn enqueue(
        &mut self,
        batch: Arc<Batch>,
        func: RemoteFn<(), ()>,
        first: u64,
        args: Packed,
        front: bool,
    ) {
        let chunk = Chunk {
            id: self.next_id,
            batch,
            func,
            first,
            args,
            done: 0,
        };
        self.next_id += 1;
        self.open += 1;
        self.pending_items += chunk.args.len();
        if front {
            self.pending.push_front(chunk);
        } else {
            self.pending.push_back(chunk);
        }
    }
}

struct Shared {
    ledger: Mutex<Ledger>,
    /// The driver thread sleeps here when nothing is in flight.
    work: Condvar,
    processes: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// ipc-pool's [`Engine`] on MPI ranks (built by [`Mpi`](crate::Mpi)).
pub(crate) struct MpiEngine {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Makes the communicator, in the driver thread (rsmpi's communicators stay in their thread).
pub(crate) type Connect<C> = Box<dyn FnOnce() -> Result<C, String> + Send>;

impl MpiEngine {
    /// Starts the driver thread, which connects (`connect`: the world, or a spawn), welcomes
    /// ranks `ranks` of that communicator and waits for their answers; an error if they do not
    /// all answer.
    pub(crate) fn start<C: Communicator + 'static>(
        connect: Connect<C>,
        ranks: Vec<i32>,
        watch: Watch,
        disconnect: bool,
    ) -> Result<Arc<MpiEngine>, PoolError> {
        let shared = Arc::new(Shared {
            ledger: Mutex::new(Ledger {
                pending: VecDeque::new(),
                pending_items: 0,
                next_id: 0,
                open: 0,
                closed: false,
                stop: Stop::No,
                lost: Vec::new(),
                live: ranks.len(),
            }),
            work: Condvar::new(),
            processes: ranks.len(),
        });
        let (ready, started) = mpsc::channel();
        let ours = shared.clone();
        let thread = std::thread::Builder::new()
            .name("ipc-pool-mpi driver".into())
            .spawn(move || {
                let comm = match connect() {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                let mut driver = match Driver::welcome(&comm, &ranks, watch) {
                    Ok(d) => d,
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        // The ranks that did answer still wait for work: let them go.
                        for r in &ranks {
                            comm.process_at_rank(*r).send(&encode(&ToRank::Stop)[..]);
                        }
                        std::mem::forget(comm);
                        return;
                    }
                };
                let _ = ready.send(Ok(()));
                driver.run(&comm, &ours);
                // Disconnecting a spawn's communicator is collective with its ranks, which a
                // lost rank never joins: then the process ends without it (see `Mpi`'s drop).
                if disconnect && ours.lock().lost.is_empty() {
                    drop(comm);
                } else {
                    std::mem::forget(comm);
                }
            })
            .map_err(|e| PoolError::Os(ipc_core::Error::from(e)))?;
        let why = match started.recv() {
            Ok(Ok(())) => {
                return Ok(Arc::new(MpiEngine {
                    shared,
                    thread: Mutex::new(Some(thread)),
                }));
            }
            Ok(Err(e)) => e,
            Err(_) => "the MPI driver thread ended before the ranks answered".into(),
        };
        let _ = thread.join();
        Err(PoolError::Misuse(why))
    }

    /// The ranks lost so far, in words.
    pub(crate) fn lost(&self) -> Vec<String> {
        self.shared.lock().lost.clone()
    }

    /// Asks the driver thread to stop (`how`) and waits for it.
    fn stop(&self, how: Stop) {
        {
            let mut l = self.shared.lock();
            l.closed = true;
            if l.stop != Stop::Terminate {
                l.stop = how;
            }
        }
        self.shared.work.notify_all();
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl Engine for MpiEngine {
    fn processes(&self) -> usize {
        self.shared.processes
    }

    fn submit_many(
        &self,
        batch: &Arc<Batch>,
        func: RemoteFn<(), ()>,
        chunks: Vec<(u64, Packed)>,
    ) -> Result<(), PoolError> {
        let mut l = self.shared.lock();
        if l.closed {
            return Err(PoolError::Closed);
        }
        if l.live == 0 {
            drop(l);
            for (first, args) in chunks {
                for k in 0..args.len() as u64 {
                    batch.complete(first + k, Err(no_rank_left(first + k)));
                }
            }
            return Ok(());
        }
        for (first, args) in chunks {
            l.enqueue(batch.clone(), func, first, args, false);
        }
        drop(l);
        self.shared.work.notify_all();
        Ok(())
    }

    fn cancel(&self, batch: &Arc<Batch>) {
        let mut l = self.shared.lock();
        let (before, items) = (l.pending.len(), l.pending_items);
        let mut dropped_items = 0;
        l.pending.retain(|c| {
            let keep = !Arc::ptr_eq(&c.batch, batch);
            if !keep {
                dropped_items += c.args.len();
            }
            keep
        });
        let dropped = before - l.pending.len();
        l.open -= dropped;
        l.pending_items = items - dropped_items;
    }

    fn close(&self) {
        self.shared.lock().closed = true;
    }

    fn join(&self) -> Result<(), PoolError> {
        if !self.shared.lock().closed {
            return Err(PoolError::Misuse(
                "join before close: the pool would wait for work that may still come".into(),
            ));
        }
        self.stop(Stop::Join);
        Ok(())
    }

    fn terminate(&self) {
        self.stop(Stop::Terminate);
    }
}

impl Drop for MpiEngine {
    fn drop(&mut self) {
        self.stop(Stop::Terminate);
    }
}

fn no_rank_left(index: u64) -> TaskError {
    TaskError::Lost {
        index,
        worker: "no rank".into(),
        why: "every rank of the pool was lost before the task could run".into(),
    }
}

/// A serving rank, as the driver sees it.
struct Rank {
    rank: i32,
    pid: u32,
    host: String,
    /// Chunks given to it, in the order it runs them.
    assigned: VecDeque<Chunk>,
    assigned_items: usize,
    last_heard: Instant,
    /// Its last heartbeat's slot.
    slot: u64,
    /// Measured time per item (0: not yet).
    pace_ns: u64,
    lost: bool,
    /// Buffered messages it may not have taken yet: (the last chunk of the bundle, its room in
    /// the send buffer), freed when that chunk closes.
    unacked: VecDeque<(u64, usize)>,
}

impl Rank {
    fn name(&self) -> String {
        format!("rank {} (pid {} on {})", self.rank, self.pid, self.host)
    }

    /// Items per bundle at its pace.
    fn bundle_items(&self) -> usize {
        (BUNDLE_TIME.as_nanos() as u64)
            .checked_div(self.pace_ns)
            .map_or(1, |n| (n as usize).clamp(1, MAX_BUNDLE))
    }
}

struct Driver {
    ranks: Vec<Rank>,
    watch: Watch,
    /// Room left in the send buffer (of [`SEND_BUDGET`]).
    send_free: usize,
    /// Until when the loop polls without naps (see [`HURRY`]).
    hurry_until: Instant,
}

impl Driver {
    /// Sends every rank the family key and waits (bounded) for all their answers.
    fn welcome<C: Communicator>(comm: &C, ranks: &[i32], watch: Watch) -> Result<Driver, String> {
        let welcome = encode(&ToRank::Welcome {
            key: ipc_core::process::family_key(),
            heartbeat_ms: watch.heartbeat.as_millis() as u64,
        });
        for r in ranks {
            comm.process_at_rank(*r).send(&welcome[..]);
        }
        let mut answered: Vec<Option<Rank>> = ranks.iter().map(|_| None).collect();
        let deadline = Instant::now() + watch.hello;
        let mut nap = Nap::new();
        while answered.iter().any(Option::is_none) {
            if Instant::now() >= deadline {
                let silent: Vec<String> = ranks
                    .iter()
                    .zip(&answered)
                    .filter(|(_, a)| a.is_none())
                    .map(|(r, _)| r.to_string())
                    .collect();
                return Err(format!(
                    "MPI ranks {} did not answer the driver within {:?}",
                    silent.join(", "),
                    watch.hello
                ));
            }
            let Some(probed) = comm.any_process().immediate_matched_probe() else {
                nap.idle();
                continue;
            };
            let (bytes, status) = probed.matched_receive_vec::<u8>();
            let from = status.source_rank();
            let Some(k) = ranks.iter().position(|r| *r == from) else {
                continue;
            };
            match postcard::from_bytes::<FromRank>(&bytes) {
                Ok(FromRank::Hello {
                    refused: Some(why), ..
                }) => {
                    return Err(format!("MPI rank {from} cannot serve the pool: {why}"));
                }
                Ok(FromRank::Hello { pid, host, .. }) => {
                    answered[k] = Some(Rank {
                        rank: from,
                        pid,
                        host,
                        assigned: VecDeque::new(),
                        assigned_items: 0,
                        last_heard: Instant::now(),
                        slot: IDLE,
                        pace_ns: 0,
                        lost: false,
                        unacked: VecDeque::new(),
                    });
                }
                _ => {
                    return Err(format!(
                        "MPI rank {from} answered with something else than Hello"
                    ));
                }
            }
        }
        Ok(Driver {
            ranks: answered.into_iter().flatten().collect(),
            watch,
            send_free: SEND_BUDGET,
            hurry_until: Instant::now(),
        })
    }

    fn run<C: Communicator>(&mut self, comm: &C, shared: &Shared) {
        let mut nap = Nap::new();
        loop {
            let mut progressed = false;
            while let Some(probed) = comm.any_process().immediate_matched_probe() {
                let (bytes, status) = probed.matched_receive_vec::<u8>();
                self.receive(status.source_rank(), &bytes, shared);
                progressed = true;
            }
            // Right after taking every message that came (not after the sends below, which
            // may take a while): a rank is silent only if nothing of it is waiting here.
            self.find_lost(shared);
            let mut bundles: Vec<(usize, Vec<u8>, u64)> = Vec::new();
            {
                let mut l = shared.lock();
                if l.stop == Stop::Terminate {
                    drop(l);
                    self.cancel_all(shared);
                    break;
                }
                // A fair share caps a bundle, so that a rank whose pace was measured on
                // another batch's tiny tasks does not take a whole batch of slow ones.
                let fair = (l.pending_items / (2 * l.live.max(1))).max(1);
                // Room in the send buffer for this round; when it is short and live ranks hold
                // messages whose space their reports will free, wait for those.
                let mut room = self.send_free;
                let mut frees_soon = self.ranks.iter().any(|r| !r.lost && !r.unacked.is_empty());
                'dispatch: for (k, r) in self.ranks.iter_mut().enumerate().filter(|(_, r)| !r.lost)
                {
                    let want = r.bundle_items().min(fair);
                    while let Some(next) = l.pending.front()
                        && r.assigned_items < 2 * want
                    {
                        if estimate(next) + SEND_OVERHEAD > room && frees_soon {
                            break 'dispatch;
                        }
                        let (message, items, last) =
                            bundle(r, &mut l.pending, want, room.saturating_sub(SEND_OVERHEAD));
                        l.pending_items -= items;
                        room = room.saturating_sub(message.len() + SEND_OVERHEAD);
                        frees_soon = true;
                        bundles.push((k, message, last));
                    }
                }
                let in_flight = self.ranks.iter().any(|r| !r.assigned.is_empty());
                if !in_flight && l.pending.is_empty() {
                    if l.stop == Stop::Join {
                        break;
                    }
                    let _unused = shared
                        .work
                        .wait_timeout(l, Duration::from_millis(100))
                        .unwrap_or_else(|p| p.into_inner());
                    nap = Nap::new();
                    continue;
                }
            }
            progressed |= !bundles.is_empty();
            for (k, message, last) in bundles {
                self.send(comm, k, &message, last);
            }
            if progressed {
                nap = Nap::new();
            } else if Instant::now() < self.hurry_until {
                // A large buffered message moves only while this thread calls MPI, in steps
                // that each wait for it: no naps for a moment after one was sent.
                std::thread::yield_now();
            } else {
                nap.idle();
            }
        }
        let stop = encode(&ToRank::Stop);
        for k in 0..self.ranks.len() {
            if !self.ranks[k].lost {
                self.send(comm, k, &stop, u64::MAX);
            }
        }
    }

    /// Sends `message` to the `k`th rank: buffered if the send buffer has room (its room is
    /// freed once chunk `last` closes), else plainly (see [`SEND_BUFFER`]).
    fn send<C: Communicator>(&mut self, comm: &C, k: usize, message: &[u8], last: u64) {
        let cost = message.len() + SEND_OVERHEAD;
        let r = &mut self.ranks[k];
        let to = comm.process_at_rank(r.rank);
        if cost <= self.send_free {
            to.buffered_send(message);
            self.send_free -= cost;
            r.unacked.push_back((last, cost));
            if message.len() > EAGER {
                self.hurry_until = Instant::now() + HURRY;
            }
        } else {
            to.send(message);
        }
    }

    /// One message from rank `from`.
    fn receive(&mut self, from: i32, bytes: &[u8], shared: &Shared) {
        let Some(r) = self.ranks.iter_mut().find(|r| r.rank == from) else {
            return;
        };
        if r.lost {
            // It was only slow: its work already failed or runs elsewhere.
            return;
        }
        r.last_heard = Instant::now();
        match postcard::from_bytes::<FromRank>(bytes) {
            Ok(FromRank::Heartbeat { slot }) => r.slot = slot,
            Ok(FromRank::Reports { runs, busy_ns }) => {
                let items: usize = runs.iter().map(|(_, _, v, _)| v.len()).sum();
                if items > 0 {
                    let pace = busy_ns / items as u64;
                    r.pace_ns = if r.pace_ns == 0 {
                        pace.max(1)
                    } else {
                        ((r.pace_ns * 3 + pace) / 4).max(1)
                    };
                }
                let mut closed = 0;
                for (id, first, values, failures) in runs {
                    let Some(c) = r.assigned.iter_mut().find(|c| c.id == id) else {
                        continue;
                    };
                    let n = values.len() as u32;
                    let (data, ends) = values.into_parts();
                    c.batch
                        .complete_run(c.first + u64::from(first), data, ends, failures);
                    c.done = first + n;
                    r.assigned_items -= n as usize;
                    if c.done as usize >= c.args.len() {
                        closed += 1;
                    }
                }
                if closed > 0 {
                    r.assigned.retain(|c| (c.done as usize) < c.args.len());
                    shared.lock().open -= closed;
                    // Bundles whose chunks all closed were taken: their buffer space is free.
                    while let Some(&(last, cost)) = r.unacked.front()
                        && r.assigned.front().is_none_or(|c| c.id > last)
                    {
                        r.unacked.pop_front();
                        self.send_free += cost;
                    }
                }
            }
            Ok(other) => {
                let what = match other {
                    FromRank::Hello { .. } => "a second Hello",
                    _ => "an unexpected message",
                };
                eprintln!("ipc-pool-mpi: {} sent {what}; ignored", r.name());
            }
            Err(e) => eprintln!(
                "ipc-pool-mpi: a message from {} did not decode: {e}",
                r.name()
            ),
        }
    }

    /// Ranks that hold work and were silent past the limit are lost: the item each was
    /// running fails, its other unreported items run elsewhere.
    fn find_lost(&mut self, shared: &Shared) {
        let now = Instant::now();
        let silence = self.watch.silence;
        for r in self
            .ranks
            .iter_mut()
            .filter(|r| !r.lost && !r.assigned.is_empty() && now - r.last_heard > silence)
        {
            r.lost = true;
            let name = r.name();
            let why = format!(
                "no message from it for {:?} (a busy rank sends one every {:?}): it died or \
                 hangs; the task was running there",
                silence, self.watch.heartbeat
            );
            // The item it was running: its last heartbeat's, if that is not reported yet; else
            // the first unreported item of the oldest chunk it holds (it runs them in order).
            let (hb_chunk, hb_item) = unslot(r.slot);
            let running = r
                .assigned
                .iter()
                .position(|c| r.slot != IDLE && c.id == hb_chunk && hb_item >= c.done)
                .map(|k| (k, hb_item))
                .unwrap_or((0, r.assigned[0].done));
            let mut back = Vec::new();
            let mut failed_index = 0;
            let taken = r.assigned.len();
            for (k, c) in std::mem::take(&mut r.assigned).into_iter().enumerate() {
                let mut piece = Packed::default();
                let mut piece_first = c.first + u64::from(c.done);
                for item in c.done..c.args.len() as u32 {
                    let index = c.first + u64::from(item);
                    if (k, item) == running {
                        failed_index = index;
                        c.batch.complete(
                            index,
                            Err(TaskError::Lost {
                                index,
                                worker: name.clone(),
                                why: why.clone(),
                            }),
                        );
                        if !piece.is_empty() {
                            back.push((c.batch.clone(), c.func, piece_first, piece));
                        }
                        piece = Packed::default();
                        piece_first = index + 1;
                    } else {
                        piece.push(c.args.get(item as usize));
                    }
                }
                if !piece.is_empty() {
                    back.push((c.batch.clone(), c.func, piece_first, piece));
                }
            }
            r.assigned_items = 0;
            let note = format!(
                "ipc-pool-mpi: lost {name} while it ran task {failed_index}: {why}; its other \
                 tasks run on the remaining ranks, and the job will exit non-zero"
            );
            eprintln!("{note}");
            let mut l = shared.lock();
            l.lost.push(note);
            l.live -= 1;
            // The lost rank's chunks close; what runs again is pending in new chunks.
            l.open -= taken;
            for (batch, func, first, args) in back.into_iter().rev() {
                l.enqueue(batch, func, first, args, true);
            }
            if l.live == 0 {
                let pending = std::mem::take(&mut l.pending);
                l.open -= pending.len();
                l.pending_items = 0;
                drop(l);
                for c in pending {
                    for k in 0..c.args.len() as u64 {
                        c.batch
                            .complete(c.first + k, Err(no_rank_left(c.first + k)));
                    }
                }
            }
        }
    }

    /// Terminate: every item not reported fails as cancelled.
    fn cancel_all(&mut self, shared: &Shared) {
        let pending = {
            let mut l = shared.lock();
            l.pending_items = 0;
            std::mem::take(&mut l.pending)
        };
        let assigned = self
            .ranks
            .iter_mut()
            .flat_map(|r| std::mem::take(&mut r.assigned));
        for c in pending.into_iter().chain(assigned) {
            for item in c.done..c.args.len() as u32 {
                let index = c.first + u64::from(item);
                c.batch.complete(index, Err(TaskError::Cancelled { index }));
            }
        }
        shared.lock().open = 0;
    }
}

/// At least the encoded size of chunk `c` in a bundle.
fn estimate(c: &Chunk) -> usize {
    c.args.bytes() + 4 * c.args.len() + 128
}

/// Takes about `want` items, at most `room` bytes and [`EAGER`] (estimated), of pending chunks for rank `r` (at least one
/// chunk) and encodes them; the message, its item count and its last chunk's id.
fn bundle(
    r: &mut Rank,
    pending: &mut VecDeque<Chunk>,
    want: usize,
    room: usize,
) -> (Vec<u8>, usize, u64) {
    let mut funcs: Vec<RemoteFn<(), ()>> = Vec::new();
    let mut chunks = Vec::new();
    let (mut items, mut bytes, mut last) = (0, 0, 0);
    while let Some(c) = pending.front() {
        if items > 0 && (items + c.args.len() > want || bytes + estimate(c) > room.min(EAGER)) {
            break;
        }
        bytes += estimate(c);
        last = c.id;
        let c = pending.pop_front().expect("just seen");
        let f = match funcs.iter().position(|f| *f == c.func) {
            Some(f) => f,
            None => {
                funcs.push(c.func);
                funcs.len() - 1
            }
        };
        items += c.args.len();
        chunks.push((c.id, f as u32, c.first, c.args.clone()));
        r.assigned_items += c.args.len();
        r.assigned.push_back(c);
    }
    (encode(&ToRank::Bundle { funcs, chunks }), items, last)
}
