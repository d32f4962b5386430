//! Encoding of values that may carry file descriptors.
//!
//! Every message and every spawned process's argument is postcard. Shared objects (a
//! [`Connection`](crate::conn::Connection), a [`Segment`](crate::shm::Segment), and everything
//! ipc-sync builds on segments) hold file descriptors, which cannot be bytes: they travel beside
//! the bytes, as `SCM_RIGHTS` ancillary data. While [`encode`] runs, a thread-local table collects
//! a duplicate of each descriptor that is serialized and writes its index into the bytes; while
//! [`decode`] runs, the received descriptors are offered in a table and taken back by index.
//!
//! Outside these two functions there is no table, so serializing a shared object (for example
//! into ipc-sync's shared-memory `Queue`, where descriptors cannot follow) is an
//! [`Error::Encode`] that says why instead of sending a number that means nothing to the reader.

use std::cell::{Cell, RefCell};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{CodecError, Error, Result};

/// The most descriptors one message may carry (the kernel's `SCM_MAX_FD` is 253).
pub const MAX_FDS_PER_MESSAGE: usize = 253;

// The descriptor tables, per thread. Every encode and decode says what a descriptor inside
// the value may do, in a mode word of its own (a `Copy` cell: no destructor, so always there and
// a few instructions to set); the tables themselves are touched only when a descriptor
// travels. A value without descriptors (nearly every queue item and task) costs postcard's work
// and two cell writes.
//
//   OUT_MODE  true while an `encode` collects (`encode_plain` sets false): serialize_fd pushes
//             a duplicate on OUTGOING and counts it in OUT_COUNT; each encode takes the
//             descriptors pushed since it started, so nested encodes keep theirs apart
//   IN_MODE   NONE (no decode: a descriptor is an error that says where shared objects may
//             travel), EMPTY (a decode without descriptors: "missing from the message"), TABLE
//             (the decode's descriptors are in INCOMING; a nested decode with descriptors keeps
//             the outer table aside while it runs)
const IN_NONE: u8 = 0;
const IN_EMPTY: u8 = 1;
const IN_TABLE: u8 = 2;

thread_local! {
    static OUT_MODE: Cell<bool> = const { Cell::new(false) };
    static OUT_COUNT: Cell<usize> = const { Cell::new(0) };
    static OUTGOING: RefCell<Vec<OwnedFd>> = const { RefCell::new(Vec::new()) };
    static IN_MODE: Cell<u8> = const { Cell::new(IN_NONE) };
    static INCOMING: RefCell<Vec<Option<OwnedFd>>> = const { RefCell::new(Vec::new()) };
    // postcard drops the text of custom serde errors; the descriptor hooks leave theirs here.
    static LAST_ERROR: RefCell<Option<String>> = const { RefCell::new(None) };
}

// The tables are reached with `try_with`: during thread or process exit (an atexit handler that
// joins children runs after the exiting thread's thread-locals were destroyed) they are gone, and
// a descriptor then fails to travel instead of panicking; plain values still encode.

pub(crate) fn remember(msg: String) -> String {
    let _ = LAST_ERROR.try_with(|e| *e.borrow_mut() = Some(msg.clone()));
    msg
}

/// A serialization error whose text reaches the caller of [`encode`] (and of every send,
/// put and start that encodes): postcard keeps only "Serde Serialization Error" of a custom
/// error, so a `Serialize` impl of a type that travels here should fail through this.
///
/// ```
/// struct Refused;
/// impl serde::Serialize for Refused {
///     fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
///         Err(ipc_core::codec::ser_error("this value stays home"))
///     }
/// }
/// let e = ipc_core::codec::encode_plain(&Refused, &mut Vec::new()).unwrap_err();
/// assert!(e.to_string().contains("this value stays home"), "{e}");
/// ```
pub fn ser_error<E: serde::ser::Error>(msg: impl std::fmt::Display) -> E {
    E::custom(remember(msg.to_string()))
}

/// The decoding twin of [`ser_error`].
pub fn de_error<E: serde::de::Error>(msg: impl std::fmt::Display) -> E {
    E::custom(remember(msg.to_string()))
}

/// A postcard error, with the text a descriptor hook left (postcard drops custom texts).
fn explain(e: postcard::Error) -> CodecError {
    match LAST_ERROR
        .try_with(|l| l.borrow_mut().take())
        .ok()
        .flatten()
    {
        Some(msg) => CodecError::with_source(msg, e),
        None => CodecError::with_source(e.to_string(), e),
    }
}

const NO_TABLE: &str = "a shared object (connection, segment, lock, queue ...) can travel only \
     as a process argument or through a Connection, which carry its file descriptor; \
     it cannot be sent through a shared-memory queue or encoded as plain bytes";

/// postcard's output appended to a `Vec` without a call per byte or per varint (postcard's
/// `io::Write` flavor costs a `memcpy` call for each byte of a varint).
struct Append<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    #[inline]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        // postcard hands every varint over as a slice of 1-10 bytes: a `memcpy` call for each
        // cost more than the copy (a third of a small item's encoding), and a push per byte
        // stores the length each time. Up to 8 bytes go as one word (assembled from byte
        // loads: postcard has just stored them one by one, and a wider load would wait for
        // them), written whole and cut to length: 4.0 -> 2.8 ns a small `u64` here.
        if bytes.len() <= 8 {
            let mut word = 0u64;
            for (i, &b) in bytes.iter().enumerate() {
                word |= u64::from(b) << (8 * i);
            }
            let len = self.0.len() + bytes.len();
            self.0.extend_from_slice(&word.to_le_bytes());
            self.0.truncate(len);
        } else if bytes.len() <= 16 {
            self.0.reserve(bytes.len());
            for &b in bytes {
                self.0.push(b);
            }
        } else {
            self.0.extend_from_slice(bytes);
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// postcard's encoding of `value` appended to `buf` (on an error `buf` may hold a part).
fn append<T: Serialize + ?Sized>(value: &T, buf: &mut Vec<u8>) -> postcard::Result<()> {
    postcard::serialize_with_flavor(value, Append(buf))
}

/// Encodes `value` with postcard, appending to `buf`; returns the descriptors it carries.
pub fn encode<T: Serialize + ?Sized>(value: &T, buf: &mut Vec<u8>) -> Result<Vec<OwnedFd>> {
    let (res, fds) = with_outgoing(|| append(value, &mut *buf));
    res.map_err(|e| Error::Encode(explain(e)))?;
    check_fd_count(fds)
}

/// Encodes `value` into `buf` if it fits: the length used and the descriptors it carries, or
/// `None` if the encoding is longer than `buf` (then nothing is kept: the caller encodes again
/// with [`encode`]). Lets small messages go out without an allocation.
pub(crate) fn encode_to_slice<T: Serialize + ?Sized>(
    value: &T,
    buf: &mut [u8],
) -> Result<Option<(usize, Vec<OwnedFd>)>> {
    let (res, fds) = with_outgoing(|| postcard::to_slice(value, &mut *buf).map(|used| used.len()));
    match res {
        Ok(n) => Ok(Some((n, check_fd_count(fds)?))),
        // Only the buffer's size: the duplicated descriptors are closed with `fds`.
        Err(postcard::Error::SerializeBufferFull) => Ok(None),
        Err(e) => Err(Error::Encode(explain(e))),
    }
}

/// Runs `f` collecting the descriptors serialized meanwhile; returns its result and them.
fn with_outgoing<R>(
    f: impl FnOnce() -> postcard::Result<R>,
) -> (postcard::Result<R>, Vec<OwnedFd>) {
    /// Restores the outer mode and drops what an unwinding `f` left on the table.
    struct Reset {
        mode: bool,
        base: usize,
    }
    impl Drop for Reset {
        fn drop(&mut self) {
            drop(take_outgoing(self.base));
            OUT_MODE.set(self.mode);
        }
    }
    let _reset = Reset {
        mode: OUT_MODE.replace(true),
        base: OUT_COUNT.get(),
    };
    let res = f();
    (res, take_outgoing(_reset.base))
}

/// The descriptors pushed since the table held `base`.
fn take_outgoing(base: usize) -> Vec<OwnedFd> {
    if OUT_COUNT.get() <= base {
        return Vec::new();
    }
    OUT_COUNT.set(base);
    OUTGOING
        .try_with(|t| {
            let mut t = t.borrow_mut();
            let at = base.min(t.len());
            t.split_off(at)
        })
        .unwrap_or_default()
}

fn check_fd_count(fds: Vec<OwnedFd>) -> Result<Vec<OwnedFd>> {
    if fds.len() > MAX_FDS_PER_MESSAGE {
        return Err(Error::Encode(CodecError::new(format!(
            "the value carries {} file descriptors; one message carries at most {}",
            fds.len(),
            MAX_FDS_PER_MESSAGE
        ))));
    }
    Ok(fds)
}

/// Registers this thread's descriptor-table destructors now, so that a forked child's first
/// encode need not (registering allocates, and every page a fresh child writes is a copy).
pub(crate) fn prepare_for_fork() {
    let _ = OUTGOING.try_with(|_| ());
    let _ = INCOMING.try_with(|_| ());
    let _ = LAST_ERROR.try_with(|_| ());
}

/// Decodes a `T` from exactly `bytes`, handing it the descriptors that came with them.
///
/// Trailing bytes are an error (postcard alone would ignore them). Descriptors that the value did
/// not claim are closed when this returns.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], fds: Vec<OwnedFd>) -> Result<T> {
    /// Restores the outer mode, and the outer table if this decode installed one.
    struct Reset {
        mode: u8,
        outer: Option<Vec<Option<OwnedFd>>>,
    }
    impl Drop for Reset {
        fn drop(&mut self) {
            if let Some(outer) = self.outer.take() {
                let _ = INCOMING.try_with(|t| *t.borrow_mut() = outer);
            }
            IN_MODE.set(self.mode);
        }
    }
    let _reset = if fds.is_empty() {
        Reset {
            mode: IN_MODE.replace(IN_EMPTY),
            outer: None,
        }
    } else {
        let table: Vec<Option<OwnedFd>> = fds.into_iter().map(Some).collect();
        let outer = INCOMING
            .try_with(|t| std::mem::replace(&mut *t.borrow_mut(), table))
            .ok();
        let mode = match outer {
            Some(_) => IN_TABLE,
            // The thread is exiting: the descriptors cannot be handed out.
            None => IN_EMPTY,
        };
        Reset {
            mode: IN_MODE.replace(mode),
            outer,
        }
    };
    take_exact(bytes)
}

/// postcard's `T` from exactly `bytes` (trailing bytes are an error).
fn take_exact<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let (value, rest) =
        postcard::take_from_bytes::<T>(bytes).map_err(|e| Error::Decode(explain(e)))?;
    if !rest.is_empty() {
        return Err(Error::Decode(CodecError::new(format!(
            "{} unexpected trailing bytes",
            rest.len()
        ))));
    }
    Ok(value)
}

/// Decodes a `T` from exactly `bytes` that came without descriptors (a queue's record, a
/// pool's result): a descriptor inside is an [`Error::Decode`] that says where shared objects
/// may travel. The fast path of [`decode`] for plain bytes.
pub fn decode_plain<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    in_mode(&IN_MODE, IN_NONE, || take_exact(bytes))
}

/// [`decode_plain`] over many values in a row (a pool's results, end to end), with one switch
/// of the codec's mode for all of them instead of one each: `each` gets each outcome in order
/// and says whether to go on.
///
/// ```
/// let mut buf = Vec::new();
/// let mut ends = Vec::new();
/// ipc_core::codec::encode_plain_each(&[7u64, 300], &mut buf, &mut ends).unwrap();
/// let items = [&buf[..ends[0] as usize], &buf[ends[0] as usize..], &[0xff][..]];
/// let mut got = Vec::new();
/// ipc_core::codec::decode_plain_each(items, |v: ipc_core::Result<u64>| {
///     got.push(v.ok());
///     true
/// });
/// assert_eq!(got, [Some(7), Some(300), None]);
/// ```
pub fn decode_plain_each<'a, T: DeserializeOwned>(
    items: impl IntoIterator<Item = &'a [u8]>,
    mut each: impl FnMut(Result<T>) -> bool,
) {
    in_mode(&IN_MODE, IN_NONE, || {
        for bytes in items {
            if !each(take_exact(bytes)) {
                break;
            }
        }
    })
}

/// `u32`s as the bytes of their little-endian forms, end to end (a wire form of positions or
/// lengths): borrowed where the machine is little-endian, so writing them costs no pass.
///
/// ```
/// let bytes = ipc_core::codec::u32s_le_bytes(&[1, 0x0302]);
/// assert_eq!(&bytes[..], [1, 0, 0, 0, 2, 3, 0, 0]);
/// ```
#[cfg(target_endian = "little")]
#[allow(unsafe_code)]
pub fn u32s_le_bytes(v: &[u32]) -> std::borrow::Cow<'_, [u8]> {
    // On a little-endian machine each `u32`'s bytes in memory are its little-endian form.
    // SAFETY: `v`'s bytes are initialized (no padding in a `u32`), any byte is a `u8`, which
    // needs no alignment, and they lie in the allocation `v` borrows for the result's life.
    let bytes = unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), size_of_val(v)) };
    std::borrow::Cow::Borrowed(bytes)
}

/// `u32`s as the bytes of their little-endian forms, end to end (copied on a big-endian
/// machine).
#[cfg(not(target_endian = "little"))]
pub fn u32s_le_bytes(v: &[u32]) -> std::borrow::Cow<'_, [u8]> {
    std::borrow::Cow::Owned(v.iter().flat_map(|e| e.to_le_bytes()).collect())
}

/// Encodes `value` as plain bytes, appending to `buf`: a descriptor inside is an [`Error::Encode`].
pub fn encode_plain<T: Serialize + ?Sized>(value: &T, buf: &mut Vec<u8>) -> Result<()> {
    // Not collecting: `serialize_fd` fails with a message that says where shared objects may
    // travel.
    in_mode(&OUT_MODE, false, || append(value, buf)).map_err(|e| Error::Encode(explain(e)))
}

/// Encodes `items` as plain bytes end to end, appending to `buf`, and after each one the
/// length of `buf` to `ends` (item `k` is then `buf[ends[k - 1]..ends[k]]`): how a pool packs a
/// chunk of arguments, with one serializer for all of them. On an error, the position of the
/// item that failed and why, with `buf` and `ends` as they were before that item; a descriptor
/// inside is an error, as for [`encode_plain`].
///
/// ```
/// let (mut buf, mut ends) = (Vec::new(), Vec::new());
/// ipc_core::codec::encode_plain_each(&[1u32, 300, 7], &mut buf, &mut ends).unwrap();
/// assert_eq!(ends, [1, 3, 4]);
/// let second: u32 = ipc_core::codec::decode_plain(&buf[1..3]).unwrap();
/// assert_eq!(second, 300);
/// ```
pub fn encode_plain_each<'a, T: Serialize + 'a>(
    items: impl IntoIterator<Item = &'a T>,
    buf: &mut Vec<u8>,
    ends: &mut Vec<u32>,
) -> std::result::Result<(), (usize, Error)> {
    in_mode(&OUT_MODE, false, || {
        let mut ser = postcard::Serializer {
            output: Append(buf),
        };
        for (k, item) in items.into_iter().enumerate() {
            let start = ser.output.0.len();
            if let Err(e) = item.serialize(&mut ser) {
                ser.output.0.truncate(start);
                return Err((k, Error::Encode(explain(e))));
            }
            ends.push(ser.output.0.len() as u32);
        }
        Ok(())
    })
}

/// Runs `f` with plain encoding and decoding in force (a descriptor in either is an error), for
/// a loop of [`encode_in_plain`] and [`decode_in_plain`] calls.
#[inline]
pub(crate) fn in_plain<R>(f: impl FnOnce() -> R) -> R {
    in_mode(&OUT_MODE, false, || in_mode(&IN_MODE, IN_NONE, f))
}

/// [`encode_plain`] inside [`in_plain`] (one serializer, inlined; nothing appended on an error).
#[inline]
pub(crate) fn encode_in_plain<T: Serialize + ?Sized>(value: &T, buf: &mut Vec<u8>) -> Result<()> {
    let start = buf.len();
    let mut ser = postcard::Serializer {
        output: Append(&mut *buf),
    };
    value.serialize(&mut ser).map_err(|e| {
        buf.truncate(start);
        Error::Encode(explain(e))
    })
}

/// [`decode_plain`] inside [`in_plain`].
#[inline]
pub(crate) fn decode_in_plain<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    take_exact(bytes)
}

/// Runs `f` with the mode cell `key` set to `mode`, restoring it after (also on unwinding).
/// Every setter restores, so a cell already in `mode` (the usual case: a plain encode or
/// decode outside any other) is left alone.
#[inline]
fn in_mode<M: Copy + PartialEq + 'static, R>(
    key: &'static std::thread::LocalKey<Cell<M>>,
    mode: M,
    f: impl FnOnce() -> R,
) -> R {
    if key.get() == mode {
        return f();
    }
    struct Restore<M: Copy + 'static>(&'static std::thread::LocalKey<Cell<M>>, M);
    impl<M: Copy + 'static> Drop for Restore<M> {
        fn drop(&mut self) {
            self.0.set(self.1);
        }
    }
    let _restore = Restore(key, key.replace(mode));
    f()
}

/// Serializes a descriptor inside [`encode`]: a duplicate joins the message, its index the bytes.
///
/// For `Serialize` impls of types that own descriptors (`#[serde(serialize_with = ...)]`).
pub fn serialize_fd<S: Serializer>(fd: BorrowedFd<'_>, s: S) -> Result<S::Ok, S::Error> {
    let index = if OUT_MODE.get() {
        OUTGOING
            .try_with(|t| -> Result<u32, String> {
                let dup = fd
                    .try_clone_to_owned()
                    .map_err(|e| format!("cannot duplicate a descriptor: {e}"))?;
                let mut t = t.borrow_mut();
                t.push(dup);
                OUT_COUNT.set(t.len());
                Ok((t.len() - 1) as u32)
            })
            .unwrap_or_else(|_| Err(NO_TABLE.to_string()))
    } else {
        Err(NO_TABLE.to_string())
    };
    match index {
        Ok(i) => i.serialize(s),
        Err(msg) => Err(serde::ser::Error::custom(remember(msg))),
    }
}

/// Deserializes a descriptor inside [`decode`]: takes the indexed descriptor of the message.
pub fn deserialize_fd<'de, D: Deserializer<'de>>(d: D) -> Result<OwnedFd, D::Error> {
    let index = u32::deserialize(d)? as usize;
    let missing = || {
        serde::de::Error::custom(remember(format!(
            "descriptor {index} is missing from the message or was claimed twice"
        )))
    };
    match IN_MODE.get() {
        IN_TABLE => INCOMING
            .try_with(|t| t.borrow_mut().get_mut(index).and_then(Option::take))
            .ok()
            .flatten()
            .ok_or_else(missing),
        IN_EMPTY => Err(missing()),
        _ => Err(serde::de::Error::custom(remember(NO_TABLE.into()))),
    }
}

/// A file descriptor that travels with [`encode`]/[`decode`] (a wrapper for `#[derive]`).
#[derive(Debug)]
pub struct TransferFd(pub OwnedFd);

impl Serialize for TransferFd {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_fd(self.0.as_fd(), s)
    }
}

impl<'de> Deserialize<'de> for TransferFd {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_fd(d).map(TransferFd)
    }
}

/// A borrowed descriptor to serialize in place (for hand-written `Serialize` impls of types
/// that own one); it deserializes as a [`TransferFd`].
#[derive(Debug, Clone, Copy)]
pub struct BorrowedTransferFd<'a>(pub BorrowedFd<'a>);

impl Serialize for BorrowedTransferFd<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_fd(self.0, s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appended_encodings_are_postcards_own_for_every_varint_length() {
        // 1 to 10 bytes of varint (the short path takes up to 8, the byte loop 9 and 10),
        // appended after other bytes, and a value of many varints (a string and a tuple).
        let mut values: Vec<u64> = (0..64).map(|s| 1u64 << s).collect();
        values.extend((0..64).map(|s| (1u64 << s) - 1));
        values.push(u64::MAX);
        let mut buf = vec![0xAA];
        let mut ends = Vec::new();
        encode_plain_each(&values, &mut buf, &mut ends).unwrap();
        let mut start = 1;
        for (v, &end) in values.iter().zip(&ends) {
            let bytes = &buf[start..end as usize];
            assert_eq!(bytes, postcard::to_stdvec(v).unwrap(), "{v}");
            assert_eq!(decode_plain::<u64>(bytes).unwrap(), *v);
            start = end as usize;
        }
        let mixed = ("héllo".to_string(), u32::MAX, -5i64, 1u128 << 100);
        let mut out = vec![1, 2, 3];
        encode_plain(&mixed, &mut out).unwrap();
        assert_eq!(out[3..], postcard::to_stdvec(&mixed).unwrap());
    }

    #[test]
    fn descriptors_travel_beside_the_bytes() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let value = (7u8, TransferFd(OwnedFd::from(a)), "x".to_string());
        let mut buf = Vec::new();
        let fds = encode(&value, &mut buf).unwrap();
        assert_eq!(fds.len(), 1);
        let back: (u8, TransferFd, String) = decode(&buf, fds).unwrap();
        assert_eq!((back.0, back.2.as_str()), (7, "x"));
    }

    #[test]
    fn plain_encoding_refuses_descriptors() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut buf = Vec::new();
        let err = encode_plain(&TransferFd(OwnedFd::from(a)), &mut buf).unwrap_err();
        assert!(
            matches!(&err, Error::Encode(m) if m.message().contains("Connection")),
            "{err}"
        );
    }

    /// The serializer's own error stays reachable as the source (layer 2 need not parse text).
    #[test]
    fn a_decode_error_keeps_postcard_as_its_source() {
        use std::error::Error as _;
        let err = decode::<String>(&[5, b'a'], vec![]).unwrap_err();
        let Error::Decode(codec) = &err else {
            panic!("{err}")
        };
        assert!(codec.source().is_some(), "{err}");
        assert!(err.source().is_some(), "{err}");
        // A check of ours, not postcard's, has no source.
        let trailing = decode::<u8>(&[1, 2], vec![]).unwrap_err();
        assert!(trailing.source().unwrap().source().is_none(), "{trailing}");
    }

    #[test]
    fn trailing_bytes_and_missing_descriptors_are_errors() {
        assert!(matches!(
            decode::<u8>(&[1, 2], vec![]),
            Err(Error::Decode(_))
        ));
        assert!(matches!(
            decode::<TransferFd>(&[0], vec![]),
            Err(Error::Decode(_))
        ));
    }
}
