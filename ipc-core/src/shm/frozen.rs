//! Frozen shared memory: plain data written once, then sealed read-only for every process, so
//! any number of processes read it in place through `&[T]` (a large table, an embedding
//! matrix, a read-only context for a pool's tasks).
//!
//! ```text
//! Frozen::new(&[T]):  memfd (sealable) -> ftruncate(n x size_of T) -> map read-write -> copy
//!                     -> unmap -> seal WRITE | SHRINK | GROW | SEAL -> map read-only
//! on the wire:        the descriptor and n
//! received:           seals checked (WRITE, SHRINK, GROW), size checked -> map read-only
//! ```
//! Once `F_SEAL_WRITE` is set, no process can change the file (`write(2)` and new writable
//! shared mappings fail, and the kernel refuses the seal while a writable shared mapping
//! exists, which is why the writer unmaps first), and no one can shrink it under a mapping. So
//! a `&[T]` into the read-only mapping is sound in every process that holds one, for any
//! [`ShmSafe`] `T` that is `Copy` (plain data: any bytes are a valid `T`, and nothing in it
//! offers a write through `&T`, which the read-only mapping would refuse with a fault), even if
//! the sender was hostile: the receiver checks the seals itself.
//!
//! The memory is the kernel's page cache of the memfd: one copy, shared by every mapping
//! (each process's proportional set size counts its share), freed with the last descriptor
//! and mapping.
//!
//! # Safety
//! One mapping per `Frozen` (shared by its clones through an `Arc`), from `mmap` here, unmapped
//! once in `Drop`; the slice handed out borrows the `Frozen`. The argument for `&[T]` is the
//! sealing above.
#![allow(unsafe_code)]

use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;

use rustix::fs::{MemfdFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};
use serde::{Deserialize, Serialize};

use super::ShmSafe;
use crate::codec::{self, TransferFd};
use crate::error::{Error, Os, Result};

/// The seals a frozen memfd must carry.
const FROZEN: SealFlags = SealFlags::WRITE
    .union(SealFlags::SHRINK)
    .union(SealFlags::GROW);

/// Read-only shared memory holding `n` `T`s: written once by its maker, then sealed so no
/// process can change it; derefs to `&[T]` in every process that holds one. `T` is plain data
/// (`Copy`: no atomics or cells, which would offer writes the read-only mapping refuses). Travels by
/// descriptor (through a [`Connection`](crate::conn::Connection), a process argument, a
/// pool's initializer); clones share the mapping.
///
/// ```
/// use ipc_core::shm::Frozen;
///
/// fn sum_in_child(table: Frozen<u64>) -> u64 {
///     table.iter().sum()
/// }
///
/// let table = Frozen::new(&(0..1000u64).collect::<Vec<_>>())?;
/// let child = ipc_core::process::spawn(table.clone(), sum_in_child)?;
/// assert_eq!(child.join()?, 499_500);
/// assert_eq!(table[999], 999);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Atomics are not plain data here (a store would hit the read-only mapping):
/// ```compile_fail
/// let t = ipc_core::shm::Frozen::new(&[std::sync::atomic::AtomicU32::new(0)]);
/// ```
pub struct Frozen<T: ShmSafe + Copy> {
    map: Arc<Mapping>,
    len: usize,
    _t: PhantomData<T>,
}

/// The sealed memfd and its read-only mapping (`ptr` is `None` for zero bytes).
struct Mapping {
    fd: OwnedFd,
    ptr: Option<NonNull<u8>>,
    bytes: usize,
}

// SAFETY: the mapping is read-only memory nobody can change (sealed), valid until the last
// clone drops; the descriptor is an ordinary OwnedFd.
unsafe impl Send for Mapping {}
// SAFETY: as above: `&Mapping` only reads.
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        if let Some(p) = self.ptr {
            // SAFETY: `p`/`bytes` come from our one mmap; every slice into it borrowed a
            // `Frozen` holding this `Arc`, so none outlives it.
            let _ = unsafe { rustix::mm::munmap(p.as_ptr().cast(), self.bytes) };
        }
    }
}

impl<T: ShmSafe + Copy> Frozen<T> {
    /// Copies `data` into a new frozen segment (the only copy other processes will read).
    ///
    /// Errors: the system's ([`Error::Io`]), or [`Error::Misuse`] when the size overflows or
    /// `T` needs an alignment beyond a page.
    pub fn new(data: &[T]) -> Result<Self> {
        const { assert!(std::mem::align_of::<T>() <= 4096, "alignment beyond a page") };
        let bytes = std::mem::size_of_val(data);
        let fd = memfd()?;
        rustix::fs::ftruncate(&fd, bytes as u64).os()?;
        if bytes > 0 {
            let w = map(&fd, bytes, ProtFlags::READ | ProtFlags::WRITE)?;
            // SAFETY: `w` is a fresh private-to-us writable mapping of `bytes` bytes (nobody
            // else has the memfd yet); `data` is `bytes` readable bytes; they do not overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(data.as_ptr().cast::<u8>(), w.as_ptr(), bytes);
                rustix::mm::munmap(w.as_ptr().cast(), bytes).os()?;
            }
        }
        rustix::fs::fcntl_add_seals(&fd, FROZEN | SealFlags::SEAL).os()?;
        Self::open(fd, data.len())
    }

    /// Maps a frozen memfd holding `len` `T`s, after checking that it is sealed and large
    /// enough.
    fn open(fd: OwnedFd, len: usize) -> Result<Self> {
        super::check_seals(fd.as_fd(), FROZEN, "a frozen segment")?;
        let bytes = len.checked_mul(std::mem::size_of::<T>()).ok_or_else(|| {
            Error::malformed(format!("a frozen segment of {len} items overflows"))
        })?;
        let size = rustix::fs::fstat(&fd).os()?.st_size as u64;
        if size < bytes as u64 {
            return Err(Error::malformed(format!(
                "a frozen segment holds {size} bytes, {bytes} expected"
            )));
        }
        let ptr = if bytes > 0 {
            Some(map(&fd, bytes, ProtFlags::READ)?)
        } else {
            None
        };
        Ok(Frozen {
            map: Arc::new(Mapping { fd, ptr, bytes }),
            len,
            _t: PhantomData,
        })
    }
}

fn memfd() -> Result<OwnedFd> {
    let base = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
    match rustix::fs::memfd_create("ipc-core-frozen", base | MemfdFlags::NOEXEC_SEAL) {
        Ok(fd) => Ok(fd),
        Err(rustix::io::Errno::INVAL) => {
            Ok(rustix::fs::memfd_create("ipc-core-frozen", base).os()?)
        }
        Err(e) => Err(Error::os(e)),
    }
}

fn map(fd: &OwnedFd, bytes: usize, prot: ProtFlags) -> Result<NonNull<u8>> {
    // SAFETY: a null hint lets the kernel pick an address that overlaps no existing mapping,
    // so no Rust object is aliased; the caller unmaps it once with the same length.
    let p = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            bytes,
            prot,
            MapFlags::SHARED,
            fd.as_fd(),
            0,
        )
    }
    .os()?;
    NonNull::new(p.cast()).ok_or_else(|| Error::misuse("mmap returned null"))
}

impl<T: ShmSafe + Copy> std::ops::Deref for Frozen<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match self.map.ptr {
            // SAFETY: the mapping holds `len` Ts (checked at open), page aligned (>= T's
            // alignment, asserted in `new`), read-only and sealed against every writer (module
            // doc), alive while `self` is; any bytes are a valid T (ShmSafe).
            Some(p) => unsafe { std::slice::from_raw_parts(p.as_ptr().cast::<T>(), self.len) },
            // Zero bytes: no items, or zero-sized ones.
            None => {
                // SAFETY: a dangling aligned pointer is valid for zero bytes.
                unsafe { std::slice::from_raw_parts(NonNull::<T>::dangling().as_ptr(), self.len) }
            }
        }
    }
}

impl<T: ShmSafe + Copy> Clone for Frozen<T> {
    /// Another handle on the same mapping.
    fn clone(&self) -> Self {
        Frozen {
            map: self.map.clone(),
            len: self.len,
            _t: PhantomData,
        }
    }
}

impl<T: ShmSafe + Copy> fmt::Debug for Frozen<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frozen")
            .field("len", &self.len)
            .field("bytes", &self.map.bytes)
            .finish()
    }
}

impl<T: ShmSafe + Copy> Serialize for Frozen<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&codec::BorrowedTransferFd(self.map.fd.as_fd()))?;
        t.serialize_element(&(self.len as u64))?;
        t.end()
    }
}

impl<'de, T: ShmSafe + Copy> Deserialize<'de> for Frozen<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (fd, len) = <(TransferFd, u64)>::deserialize(d)?;
        let len = usize::try_from(len).map_err(serde::de::Error::custom)?;
        Frozen::open(fd.0, len).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_and_refuses_writers() {
        let f = Frozen::new(&[1u32, 2, 3]).unwrap();
        assert_eq!(&*f, &[1, 2, 3]);
        // Nobody can write the file any more, by write(2) or by a writable shared mapping.
        assert!(rustix::io::pwrite(&f.map.fd, &[9], 0).is_err());
        assert!(map(&f.map.fd, 12, ProtFlags::READ | ProtFlags::WRITE).is_err());
        assert!(rustix::fs::ftruncate(&f.map.fd, 0).is_err());
        let empty = Frozen::<u64>::new(&[]).unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn an_unsealed_memfd_is_refused() {
        let fd = memfd().unwrap();
        rustix::fs::ftruncate(&fd, 16).unwrap();
        let err = Frozen::<u32>::open(fd, 4).unwrap_err();
        assert!(err.to_string().contains("seals"), "{err}");
    }

    #[test]
    fn a_short_file_is_refused() {
        let f = Frozen::new(&[7u8; 8]).unwrap();
        let fd = f.map.fd.try_clone().unwrap();
        let err = Frozen::<u64>::open(fd, 2).unwrap_err();
        assert!(err.to_string().contains("expected"), "{err}");
    }
}
