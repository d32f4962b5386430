//! What travels between the pool and its workers (see the crate doc for the protocol).

use ipc_core::process::RemoteFn;
use ipc_sync::{AtomicValue, Queue};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// Bits of the worker slot that hold the item's position in its chunk.
pub(crate) const ITEM_BITS: u32 = 24;
/// The largest chunk (items).
pub(crate) const MAX_CHUNK: usize = (1 << ITEM_BITS) - 1;

/// Items for one worker to run in order.
#[derive(Serialize, Deserialize)]
pub(crate) struct Chunk {
    /// The ledger's id (at least 1: a slot of 0 names nothing).
    pub(crate) id: u64,
    pub(crate) func: RemoteFn<(), ()>,
    /// Each item's encoded argument.
    pub(crate) items: Vec<ByteBuf>,
}

/// The result queue's records.
#[derive(Serialize, Deserialize)]
pub(crate) enum Report {
    /// A worker ran item `item` of chunk `chunk`.
    Item {
        chunk: u64,
        item: u32,
        pid: u32,
        outcome: Outcome,
    },
    /// The supervisor saw worker `worker` (its serial) die.
    Died { worker: u64 },
    /// The pool is stopping: the collector leaves.
    Stop,
}

/// How one item ran.
#[derive(Serialize, Deserialize)]
pub(crate) enum Outcome {
    /// The encoded result.
    Value(ByteBuf),
    /// The function panicked.
    Panicked { message: String, backtrace: String },
    /// The argument did not decode in the worker.
    Argument(String),
    /// The result did not encode.
    Result(String),
}

/// What a worker is started with.
#[derive(Serialize, Deserialize)]
pub(crate) struct WorkerBoot {
    pub(crate) mailbox: Queue<Chunk>,
    pub(crate) results: Queue<Report>,
    pub(crate) slot: AtomicValue<u64>,
}

/// A worker's slot value for item `item` of chunk `chunk`.
pub(crate) fn pack(chunk: u64, item: u32) -> u64 {
    chunk << ITEM_BITS | u64::from(item)
}

/// `(chunk, item)` from a slot value.
pub(crate) fn unpack(slot: u64) -> (u64, u32) {
    (slot >> ITEM_BITS, (slot & ((1 << ITEM_BITS) - 1)) as u32)
}
