//! Anonymous shared-memory segments backed by a memfd.
//!
//! A fresh segment is `ftruncate`d, so every byte is zero: all shared types in this project take
//! all-zero bytes as their valid initial state and never see a half-initialised window. After
//! sizing, the segment is sealed against shrinking and growing, so no peer can truncate it under
//! another process's mapping (which would turn reads into SIGBUS).
//!
//! # Safety
//! A `Segment` owns one mapping of `len` bytes from `sys::map_shared`, unmapped exactly once in
//! `Drop`; the raw pointer it hands out is valid for `len` bytes while the `Segment` lives. What
//! is read or written through it is the caller's business (shared types use atomics), which is
//! why [`Segment::as_slice`] is `unsafe`. The sealing above keeps the file at least `len` bytes
//! long for as long as anyone maps it, so the mapping never faults.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

use rustix::fs::{MemfdFlags, SealFlags};
use serde::{Deserialize, Serialize};

use crate::codec::{self, TransferFd};
use crate::error::{Error, Os, Result};
use crate::sys;

/// A shared-memory segment: a memfd mapped read-write into this process.
///
/// Cloning is by descriptor: a `Segment` deserialized in another process (or in this one) maps the
/// same memory, at an address of its own.
///
/// ```
/// let seg = ipc_core::shm::Segment::new(4096).unwrap();
/// assert_eq!(seg.len(), 4096);
/// // Fresh segments are zero-filled.
/// // SAFETY: nobody else has this segment yet.
/// assert!(unsafe { seg.as_slice() }.iter().all(|&b| b == 0));
/// ```
#[derive(Debug)]
pub struct Segment {
    fd: OwnedFd,
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is process-wide memory, valid until drop on any thread; access through the
// raw pointer is the caller's business (shared types use atomics).
unsafe impl Send for Segment {}
// SAFETY: as above: `&Segment` only exposes the pointer and the length.
unsafe impl Sync for Segment {}

impl Segment {
    /// Creates a zero-filled segment of `len` bytes (`len > 0`), sealed against resizing.
    ///
    /// ```
    /// use ipc_core::shm::Segment;
    /// assert_eq!(Segment::new(100).unwrap().len(), 100);
    /// assert!(matches!(Segment::new(0), Err(ipc_core::Error::Misuse(_))));
    /// ```
    pub fn new(len: usize) -> Result<Segment> {
        if len == 0 {
            return Err(Error::misuse(
                "a shared-memory segment needs a size above zero",
            ));
        }
        let fd = create_memfd()?;
        rustix::fs::ftruncate(&fd, len as u64).os()?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
            .os()?;
        Self::map(fd, len)
    }

    /// Maps the first `len` bytes of an existing memfd (or any shareable file).
    ///
    /// The file must hold at least `len` bytes ([`Error::Malformed`] otherwise).
    ///
    /// ```
    /// use std::os::fd::AsFd;
    /// use ipc_core::shm::Segment;
    /// let a = Segment::new(8192).unwrap();
    /// let fd = a.as_fd().try_clone_to_owned().unwrap();
    /// let b = Segment::from_fd(fd, 4096).unwrap(); // a prefix of the same memory
    /// assert_eq!(b.len(), 4096);
    /// let fd = a.as_fd().try_clone_to_owned().unwrap();
    /// assert!(Segment::from_fd(fd, 8193).is_err());
    /// ```
    pub fn from_fd(fd: OwnedFd, len: usize) -> Result<Segment> {
        let size = rustix::fs::fstat(&fd).os()?.st_size as u64;
        if size < len as u64 || len == 0 {
            return Err(Error::malformed(format!(
                "segment descriptor holds {size} bytes, {len} expected"
            )));
        }
        Self::map(fd, len)
    }

    fn map(fd: OwnedFd, len: usize) -> Result<Segment> {
        let ptr = sys::map_shared(fd.as_fd(), len)?;
        Ok(Segment { fd, ptr, len })
    }

    /// The segment's size in bytes (of this mapping).
    ///
    /// ```
    /// assert_eq!(ipc_core::shm::Segment::new(10).unwrap().len(), 10);
    /// ```
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: segments are never empty.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The start of the mapping in this process (page aligned).
    ///
    /// Accessing the bytes through it is the caller's responsibility: other processes may
    /// access them at the same time (use atomics, or a lock).
    ///
    /// ```
    /// let seg = ipc_core::shm::Segment::new(4096).unwrap();
    /// assert_eq!(seg.as_ptr() as usize % 4096, 0);
    /// ```
    #[inline]
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The segment's bytes as a slice.
    ///
    /// # Safety
    /// No other process or thread may write the segment while the slice is alive.
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is `len` readable bytes for as long as `self` lives; the caller
        // guarantees nobody writes it meanwhile.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// A second mapping of the same memory (as a child would get it).
    ///
    /// ```
    /// let a = ipc_core::shm::Segment::new(4096).unwrap();
    /// let b = a.try_clone().unwrap();
    /// // SAFETY: no other thread touches the segment; byte 0 is in bounds of both mappings.
    /// unsafe { a.as_ptr().write(5) };
    /// // SAFETY: as above.
    /// assert_eq!(unsafe { b.as_ptr().read() }, 5);
    /// ```
    pub fn try_clone(&self) -> Result<Segment> {
        Self::map(self.fd.try_clone()?, self.len)
    }
}

/// Checks that `fd`, which arrived from a peer as `what` (for the error), is a memfd sealed
/// with at least `needed`. Only a sealed memfd is safe to map for a peer's objects: an unsealed
/// file could be shrunk by its owner under our mapping (a read of a lost page is a SIGBUS), or
/// written when it should be frozen.
pub(crate) fn check_seals(fd: BorrowedFd<'_>, needed: SealFlags, what: &str) -> Result<()> {
    let seals = rustix::fs::fcntl_get_seals(fd).map_err(|_| {
        Error::malformed(format!("{what} came with a descriptor that is not a memfd"))
    })?;
    if !seals.contains(needed) {
        return Err(Error::malformed(format!(
            "{what} came with a memfd that lacks the seals {needed:?}: its owner could change it \
             under our mapping"
        )));
    }
    Ok(())
}

impl AsFd for Segment {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: ptr/len come from our one map_shared call; borrows of the memory end with `self`.
        unsafe { sys::unmap(self.ptr, self.len) };
    }
}

fn create_memfd() -> Result<OwnedFd> {
    let base = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
    // NOEXEC_SEAL (Linux 6.3+) keeps the kernel from warning about executable memfds.
    match rustix::fs::memfd_create("ipc-core", base | MemfdFlags::NOEXEC_SEAL) {
        Ok(fd) => Ok(fd),
        Err(rustix::io::Errno::INVAL) => Ok(rustix::fs::memfd_create("ipc-core", base).os()?),
        Err(e) => Err(Error::os(e)),
    }
}

impl Serialize for Segment {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&codec::BorrowedTransferFd(self.fd.as_fd()))?;
        t.serialize_element(&(self.len as u64))?;
        t.end()
    }
}

impl<'de> Deserialize<'de> for Segment {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (fd, len) = <(TransferFd, u64)>::deserialize(d)?;
        Segment::from_fd(fd.0, len as usize).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn two_mappings_share_bytes() {
        let a = Segment::new(8192).unwrap();
        let b = a.try_clone().unwrap();
        assert_ne!(a.as_ptr(), b.as_ptr());
        // SAFETY: the segments are page aligned and 8192 bytes long, so offset 4096 holds an
        // aligned AtomicU32 for as long as both live.
        let (wa, wb) = unsafe {
            (
                &*(a.as_ptr().add(4096) as *const AtomicU32),
                &*(b.as_ptr().add(4096) as *const AtomicU32),
            )
        };
        wa.store(42, Ordering::SeqCst);
        assert_eq!(wb.load(Ordering::SeqCst), 42);
    }

    #[test]
    fn zero_size_is_an_error() {
        assert!(matches!(Segment::new(0), Err(Error::Misuse(_))));
    }

    #[test]
    fn segment_travels_through_the_codec() {
        let a = Segment::new(100).unwrap();
        let mut buf = Vec::new();
        let fds = codec::encode(&a, &mut buf).unwrap();
        let b: Segment = codec::decode(&buf, fds).unwrap();
        assert_eq!(b.len(), 100);
    }
}
