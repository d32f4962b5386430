//! The messages between the driver (the rank that owns the pool) and the ranks that serve it,
//! postcard-encoded, one MPI message each (never empty: the enum's tag is a byte).

use ipc_core::process::RemoteFn;
use ipc_pool::{Packed, TaskError};
use serde::{Deserialize, Serialize};

/// A serving rank's slot value when it runs nothing.
pub(crate) const IDLE: u64 = u64::MAX;

/// Driver -> rank.
#[derive(Serialize, Deserialize)]
pub(crate) enum ToRank {
    /// The first message: the process family's key (so the rank accepts the driver's function
    /// handles) and how often to send a heartbeat while busy.
    Welcome { key: [u8; 32], heartbeat_ms: u64 },
    /// Chunks to run in order: `(chunk id, index into funcs, the index of its first item in
    /// its batch, arguments)`.
    Bundle {
        funcs: Vec<RemoteFn<(), ()>>,
        chunks: Vec<(u64, u32, u64, Packed)>,
    },
    /// No more work: finish and leave.
    Stop,
}

/// Outcomes of consecutive items of one chunk: `(chunk id, position of the first, their values
/// (a failed item's is empty), failures by position within the run)`.
pub(crate) type Run = (u64, u32, Packed, Vec<(u32, TaskError)>);

/// Rank -> driver.
#[derive(Serialize, Deserialize)]
pub(crate) enum FromRank {
    /// The answer to `Welcome`: who this rank is (for the driver's messages), or why it cannot
    /// serve.
    Hello {
        pid: u32,
        host: String,
        refused: Option<String>,
    },
    /// Outcomes: for each `(chunk, first, values, failures)`, items `first..first + len` of
    /// that chunk (positions within it; failures by position within the run). `busy_ns` is the
    /// time the items took, for the driver's pace.
    Reports { runs: Vec<Run>, busy_ns: u64 },
    /// Alive, and running item `slot & 0xff_ffff` of chunk `slot >> 24` (or [`IDLE`]).
    Heartbeat { slot: u64 },
}

/// The slot value for item `item` of chunk `chunk`.
pub(crate) fn slot(chunk: u64, item: u32) -> u64 {
    chunk << 24 | u64::from(item & 0xff_ffff)
}

/// `(chunk, item)` of a slot value.
pub(crate) fn unslot(slot: u64) -> (u64, u32) {
    (slot >> 24, (slot & 0xff_ffff) as u32)
}

pub(crate) fn encode<T: Serialize>(m: &T) -> Vec<u8> {
    postcard::to_stdvec(m).expect("the pool's messages always encode")
}
