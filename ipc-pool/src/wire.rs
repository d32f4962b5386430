//! What travels between the pool and its workers (see the crate doc for the protocol).

use ipc_core::process::{PackedArgs, RemoteFn};
use serde::de::DeserializeOwned;

use crate::error::{PoolError, TaskError};
use ipc_sync::{AtomicValue, Queue};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// Bits of the worker slot that hold the item's position in its chunk.
pub(crate) const ITEM_BITS: u32 = 24;
/// The largest chunk (items).
pub(crate) const MAX_CHUNK: usize = (1 << ITEM_BITS) - 1;

/// Encoded items end to end in one buffer: item `k` is `data[ends[k - 1]..ends[k]]` (from 0
/// for the first). One allocation for a chunk's arguments or a report's results, whatever the
/// number of items.
///
/// On the wire: the data's bytes, then the ends as little-endian `u32`s in one byte string
/// (copied, not one varint each); a decoded `Packed` whose ends do not rise within the data is
/// refused.
#[derive(Debug, Clone, Default)]
pub struct Packed {
    data: ByteBuf,
    ends: Vec<u32>,
}

impl Serialize for Packed {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.serialize_range(0, self.len(), s)
    }
}

impl Packed {
    /// Items `start..start + len` as a `Packed` of their own, on the wire.
    fn serialize_range<S: serde::Serializer>(
        &self,
        start: usize,
        len: usize,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let base = if start == 0 { 0 } else { self.ends[start - 1] };
        let end = if len == 0 {
            base
        } else {
            self.ends[start + len - 1]
        };
        let ends = &self.ends[start..start + len];
        let ends = if base == 0 {
            ipc_core::codec::u32s_le_bytes(ends)
        } else {
            ends.iter().flat_map(|e| (e - base).to_le_bytes()).collect()
        };
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(serde_bytes::Bytes::new(
            &self.data[base as usize..end as usize],
        ))?;
        t.serialize_element(serde_bytes::Bytes::new(&ends))?;
        t.end()
    }
}

impl<'de> Deserialize<'de> for Packed {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (data, Ends(ends)): (ByteBuf, Ends) = Deserialize::deserialize(d)?;
        if ends.last().is_some_and(|&e| e as usize > data.len()) {
            return Err(serde::de::Error::custom("packed ends out of range"));
        }
        Ok(Packed { data, ends })
    }
}

/// Packed ends from their wire form (little-endian `u32`s in one byte string), checked to
/// rise, in one pass over the bytes as they lie in the message (a queue's ring).
struct Ends(Vec<u32>);

impl<'de> Deserialize<'de> for Ends {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Ends;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("packed ends (little-endian u32s)")
            }
            fn visit_bytes<E: serde::de::Error>(self, raw: &[u8]) -> Result<Ends, E> {
                if !raw.len().is_multiple_of(4) {
                    return Err(E::custom("packed ends are not whole u32s"));
                }
                let mut ends = Vec::with_capacity(raw.len() / 4);
                let mut last = 0;
                for b in raw.chunks_exact(4) {
                    let e = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    if e < last {
                        return Err(E::custom("packed ends out of order"));
                    }
                    last = e;
                    ends.push(e);
                }
                Ok(Ends(ends))
            }
        }
        d.deserialize_bytes(Visit)
    }
}

impl Packed {
    /// The number of items.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The bytes of all the items.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Item `k`'s bytes.
    pub fn get(&self, k: usize) -> &[u8] {
        let start = if k == 0 { 0 } else { self.ends[k - 1] as usize };
        &self.data[start..self.ends[k] as usize]
    }

    /// Appends an item written by `write` (which appends to the buffer it is given); on an
    /// error nothing is appended.
    pub(crate) fn push_with<E>(
        &mut self,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        let start = self.data.len();
        match write(&mut self.data) {
            Ok(()) => {
                self.ends.push(self.data.len() as u32);
                Ok(())
            }
            Err(e) => {
                self.data.truncate(start);
                Err(e)
            }
        }
    }

    /// Appends an item's bytes.
    pub fn push(&mut self, item: &[u8]) {
        self.data.extend_from_slice(item);
        self.ends.push(self.data.len() as u32);
    }

    /// No items yet, with room for `items` of `bytes` in all.
    pub(crate) fn with_capacity(items: usize, bytes: usize) -> Packed {
        Packed {
            data: ByteBuf::with_capacity(bytes),
            ends: Vec::with_capacity(items),
        }
    }

    /// Items from their data and ends (item `k` ends at `ends[k]`, rising within the data).
    pub(crate) fn from_parts(data: Vec<u8>, ends: Vec<u32>) -> Packed {
        Packed {
            data: ByteBuf::from(data),
            ends,
        }
    }

    /// Items `range` as data and ends of their own (no copy when `range` is every item).
    pub(crate) fn take_range(&mut self, range: std::ops::Range<usize>) -> (Vec<u8>, Vec<u32>) {
        if range.start == 0 && range.end == self.len() {
            let whole = std::mem::take(self);
            return whole.into_parts();
        }
        let base = match range.start {
            0 => 0,
            k => self.ends[k - 1],
        };
        let end = match range.end {
            0 => 0,
            k => self.ends[k - 1],
        };
        let data = self.data[base as usize..end as usize].to_vec();
        let ends = self.ends[range].iter().map(|e| e - base).collect();
        (data, ends)
    }

    /// The data and the ends (item `k` ends at `ends[k]`), as
    /// [`Batch::complete_run`](crate::Batch::complete_run) takes them.
    pub fn into_parts(self) -> (Vec<u8>, Vec<u32>) {
        (self.data.into_vec(), self.ends)
    }
}

/// Chunks of one function for one worker to run in order: one mailbox record, so that many
/// small chunks cost one put and at most one wake-up.
#[derive(Serialize, Deserialize)]
pub(crate) struct Parcel {
    /// Where the sender ran (`ipc_core::spin::cpu_tag`: CPU + 1, 0 unknown).
    pub(crate) cpu: u32,
    pub(crate) func: RemoteFn<(), ()>,
    pub(crate) chunks: Vec<Chunk>,
}

/// Items for one worker to run in order.
#[derive(Serialize, Deserialize)]
pub(crate) struct Chunk {
    /// The ledger's id (at least 1: a slot of 0 names nothing).
    pub(crate) id: u64,
    /// Each item's encoded argument (shared with the ledger, which keeps them for a re-run).
    pub(crate) args: SharedArgs,
}

/// Items `start..start + len` of packed arguments behind an `Arc`: the ledger and the message
/// hold the same bytes, and a chunk is cut in two without a copy.
#[derive(Debug, Clone, Default)]
pub(crate) struct SharedArgs {
    all: std::sync::Arc<Packed>,
    start: usize,
    len: usize,
}

impl SharedArgs {
    pub(crate) fn new(p: Packed) -> SharedArgs {
        let len = p.len();
        SharedArgs {
            all: std::sync::Arc::new(p),
            start: 0,
            len,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Item `k`'s bytes.
    pub(crate) fn get(&self, k: usize) -> &[u8] {
        self.all.get(self.start + k)
    }

    /// The bytes of these items.
    pub(crate) fn bytes(&self) -> usize {
        let (args, items) = self.packed();
        let end = |k: usize| match k {
            0 => 0,
            k => args.ends[k - 1] as usize,
        };
        end(items.end) - end(items.start)
    }

    /// The packed arguments these items are part of, and where they lie in them (for
    /// [`RemoteFn::call_plain_each`]).
    pub(crate) fn packed(&self) -> (PackedArgs<'_>, std::ops::Range<usize>) {
        let args = PackedArgs {
            data: &self.all.data,
            ends: &self.all.ends,
        };
        (args, self.start..self.start + self.len)
    }

    /// The first `n` items and the rest.
    pub(crate) fn split(self, n: usize) -> (SharedArgs, SharedArgs) {
        let n = n.min(self.len);
        let head = SharedArgs {
            all: self.all.clone(),
            start: self.start,
            len: n,
        };
        let tail = SharedArgs {
            all: self.all,
            start: self.start + n,
            len: self.len - n,
        };
        (head, tail)
    }
}

impl Serialize for SharedArgs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.all.serialize_range(self.start, self.len, s)
    }
}

impl<'de> Deserialize<'de> for SharedArgs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Packed::deserialize(d).map(SharedArgs::new)
    }
}

/// Outcomes of consecutive items of one chunk: items `first..first + count` of chunk `chunk`,
/// whose results are the report's next `count` values (empty for the items that failed, listed
/// here with their failure, by position in the chunk).
#[derive(Serialize, Deserialize)]
pub(crate) struct Outcomes {
    pub(crate) chunk: u64,
    pub(crate) first: u32,
    pub(crate) count: u32,
    pub(crate) failures: Vec<(u32, Failure)>,
}

/// The result queue's records.
#[derive(Serialize, Deserialize)]
pub(crate) enum Report {
    /// A worker ran these items (of one chunk or of several, in the order it ran them): their
    /// results end to end in one buffer, in the order of `runs`.
    Items {
        pid: u32,
        values: Packed,
        runs: Vec<Outcomes>,
        /// How long the worker spent on these items.
        busy_ns: u64,
    },
    /// The supervisor saw worker `worker` (its serial) die.
    Died { worker: u64 },
    /// A worker leaving in order ran the pool's exit hook: its encoded output, or why there is
    /// none (put before the worker exits, so before its `Died`).
    Exited {
        pid: u32,
        output: Result<ByteBuf, String>,
    },
}

/// Why one item has no result.
#[derive(Serialize, Deserialize)]
pub(crate) enum Failure {
    /// The function panicked.
    Panicked { message: String, backtrace: String },
    /// The argument did not decode in the worker.
    Argument(String),
    /// The result did not encode.
    Result(String),
    /// The task needs the worker's state, and it is missing (the initializer failed) or of
    /// another type.
    State(String),
}

/// What a worker is started with.
#[derive(Serialize, Deserialize)]
pub(crate) struct WorkerBoot {
    pub(crate) mailbox: Queue<Parcel>,
    pub(crate) results: Queue<Report>,
    pub(crate) slot: AtomicValue<u64>,
    /// Retire after this many items (Python's `maxtasksperchild`).
    pub(crate) max_tasks: Option<u64>,
    /// Run first (an initializer handle, its encoded argument and the descriptors of the
    /// shared objects in it): makes the worker state.
    pub(crate) init: Option<(RemoteFn<(), ()>, ByteBuf, Vec<PassFd>)>,
    /// Run when leaving in order (a finisher handle): its output is reported.
    pub(crate) exit: Option<RemoteFn<(), ()>>,
    /// The CPU to pin the worker to.
    pub(crate) cpu: Option<usize>,
    /// Retire once the resident set is larger (bytes), checked after tasks.
    pub(crate) max_memory: Option<u64>,
}

/// A descriptor that travels with a process's boot message (a shared object's, in the
/// initializer's argument).
pub(crate) struct PassFd(pub(crate) std::os::fd::OwnedFd);

impl Serialize for PassFd {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use std::os::fd::AsFd;
        ipc_core::codec::serialize_fd(self.0.as_fd(), s)
    }
}

impl<'de> Deserialize<'de> for PassFd {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ipc_core::codec::deserialize_fd(d).map(PassFd)
    }
}

/// A worker's slot value for item `item` of chunk `chunk`.
pub(crate) fn pack(chunk: u64, item: u32) -> u64 {
    chunk << ITEM_BITS | u64::from(item)
}

/// `(chunk, item)` from a slot value.
pub(crate) fn unpack(slot: u64) -> (u64, u32) {
    (slot >> ITEM_BITS, (slot & ((1 << ITEM_BITS) - 1)) as u32)
}

/// The handle of `f`, which borrows the worker's state, erased.
pub(crate) fn remote_state<S: 'static, A, R>(
    f: fn(&mut S, A) -> R,
) -> Result<RemoteFn<(), ()>, PoolError>
where
    A: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    Ok(RemoteFn::with_state(f)?.erase())
}

/// The handle of `f`, erased.
pub(crate) fn remote<A, R>(f: fn(A) -> R) -> Result<RemoteFn<(), ()>, PoolError>
where
    A: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    Ok(RemoteFn::new(f)?.erase())
}

/// Appends the arguments `items` to `args`, the first being item `first` of the input (one
/// serializer for all); an error for the first that cannot travel through a queue.
pub(crate) fn encode_all_into<A: Serialize>(
    first: u64,
    items: &[A],
    args: &mut Packed,
) -> Result<(), PoolError> {
    ipc_core::codec::encode_plain_each(items, &mut args.data, &mut args.ends).map_err(|(k, e)| {
        PoolError::Task(TaskError::Argument {
            index: first + k as u64,
            message: e.to_string(),
        })
    })
}

/// Appends an argument's bytes to `args`; an error (for item `index`) if it cannot travel
/// through a queue (it holds a shared object).
pub(crate) fn encode_into<A: Serialize>(
    index: u64,
    arg: &A,
    args: &mut Packed,
) -> Result<(), PoolError> {
    args.push_with(|buf| ipc_core::codec::encode_plain(arg, buf))
        .map_err(|e| {
            PoolError::Task(TaskError::Argument {
                index,
                message: e.to_string(),
            })
        })
}

#[cfg(test)]
mod tests {
    use super::Packed;

    /// A packed form on the wire: its data, then its ends as little-endian bytes.
    fn wire(data: &[u8], ends: &[u32]) -> Vec<u8> {
        let raw: Vec<u8> = ends.iter().flat_map(|e| e.to_le_bytes()).collect();
        postcard::to_stdvec(&(serde_bytes::Bytes::new(data), serde_bytes::Bytes::new(&raw)))
            .unwrap()
    }

    #[test]
    fn packed_items_travel_whole_and_in_part() {
        let mut p = Packed::default();
        for item in [&b"a"[..], b"", b"bcd", b"ef"] {
            p.push(item);
        }
        let back: Packed = postcard::from_bytes(&postcard::to_stdvec(&p).unwrap()).unwrap();
        assert_eq!((back.len(), back.bytes()), (4, 6));
        assert_eq!(
            [back.get(0), back.get(1), back.get(2), back.get(3)],
            [&b"a"[..], b"", b"bcd", b"ef"]
        );
        let part = postcard::to_stdvec(&PartOf(&p, 2, 2)).unwrap();
        let back: Packed = postcard::from_bytes(&part).unwrap();
        assert_eq!([back.get(0), back.get(1)], [&b"bcd"[..], b"ef"]);
    }

    struct PartOf<'a>(&'a Packed, usize, usize);

    impl serde::Serialize for PartOf<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            self.0.serialize_range(self.1, self.2, s)
        }
    }

    #[test]
    fn packed_ends_that_do_not_rise_within_the_data_are_refused() {
        let ok: Packed = postcard::from_bytes(&wire(b"abc", &[1, 1, 3])).unwrap();
        assert_eq!([ok.get(0), ok.get(1), ok.get(2)], [&b"a"[..], b"", b"bc"]);
        // Out of order; past the data.
        for ends in [&[2u32, 1][..], &[1, 4][..]] {
            assert!(postcard::from_bytes::<Packed>(&wire(b"abc", ends)).is_err());
        }
        // Not whole u32s: 7 bytes of ends.
        let raw = [1u8, 0, 0, 0, 3, 0, 0];
        let bytes = postcard::to_stdvec(&(
            serde_bytes::Bytes::new(b"abc"),
            serde_bytes::Bytes::new(&raw),
        ))
        .unwrap();
        assert!(postcard::from_bytes::<Packed>(&bytes).is_err());
    }
}
