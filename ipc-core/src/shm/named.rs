//! Named shared-memory segments under `/dev/shm`, like Python's `SharedMemory`.
//!
//! An anonymous [`Segment`] reaches other processes only by descriptor passing; a
//! [`NamedSegment`] can also be found by name by an unrelated process ([`NamedSegment::open`]).
//! The price of a name is that it outlives processes: a name must be unlinked, or it stays in
//! `/dev/shm` until reboot. Here the handle that created a name owns it and unlinks it when
//! dropped (unless told to [`persist`](NamedSegment::persist) it); handles that opened or
//! received the segment never unlink it, so, unlike Python's resource tracker (bug list 8 of the
//! reference), one process ending never pulls a segment from under another that still uses it.
//!
//! Differences from Python, on purpose:
//! - the size is exact (no rounding up to a page), and a zero size is an error (checklist 99);
//! - a segment that travels through a [`Connection`](crate::conn::Connection) or as a process
//!   argument goes by descriptor, not by name, so it arrives even when the name was unlinked
//!   meanwhile (Python's unpickling then fails with `FileNotFoundError`, checklist 102);
//! - a process killed by a signal cannot unlink what it created: there is no tracker process
//!   yet, so such a name stays until someone calls [`NamedSegment::unlink_name`].
//!
//! Named segments cannot be sealed (only memfds can), so any process allowed to open the name
//! could shrink it; the mode is 0600, so only processes of the same user can.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{FileType, Mode};
use rustix::shm::OFlags;
use serde::{Deserialize, Serialize};

use super::Segment;
use crate::codec::{self, TransferFd};
use crate::error::{Error, Os, Result};

/// The longest name, in bytes (the kernel's `NAME_MAX`).
///
/// ```
/// use ipc_core::shm::{MAX_NAME_LEN, NamedSegment};
/// let too_long = "x".repeat(MAX_NAME_LEN + 1);
/// assert!(matches!(NamedSegment::open(&too_long), Err(ipc_core::Error::Misuse(_))));
/// ```
pub const MAX_NAME_LEN: usize = 255;

/// How often [`NamedSegment::create_unique`] and [`NamedSegment::open_or_create`] retry when
/// another process wins a race for the same name.
const ATTEMPTS: usize = 100;

/// A shared-memory segment with a name in `/dev/shm` (Python's `SharedMemory`).
///
/// ```
/// use ipc_core::shm::NamedSegment;
///
/// # let name = format!("ipc-core-doc-{}", std::process::id());
/// let a = NamedSegment::create(&name, 512).unwrap();
/// // SAFETY: nobody else writes the first byte meanwhile.
/// unsafe { a.as_ptr().write(42) };
///
/// // Another process (here: this one again) attaches by name and sees the same bytes.
/// let b = NamedSegment::open(&name).unwrap();
/// assert_eq!(b.len(), 512);
/// // SAFETY: as above.
/// assert_eq!(unsafe { b.as_ptr().read() }, 42);
///
/// a.unlink().unwrap(); // the name is gone; both mappings stay valid
/// assert!(NamedSegment::open(&name).is_err());
/// ```
#[doc(alias = "SharedMemory")]
pub struct NamedSegment {
    seg: Segment,
    name: String,
    /// Whether dropping this handle unlinks the name: only the creator's handle, until
    /// [`unlink`](Self::unlink) or [`persist`](Self::persist).
    owns_name: AtomicBool,
}

impl NamedSegment {
    /// Creates a zero-filled segment of `size` bytes named `name` (mode 0600).
    ///
    /// The returned handle owns the name: dropping it unlinks the name (the memory lives on in
    /// every process that still maps it) unless [`persist`](Self::persist) was called.
    ///
    /// Errors: [`Error::Io`] of kind [`AlreadyExists`](io::ErrorKind::AlreadyExists) when the
    /// name is taken; [`Error::Misuse`] for a zero size or a bad name (empty, longer than
    /// [`MAX_NAME_LEN`] bytes, containing `/` or NUL, `.` or `..`). Nothing is left in
    /// `/dev/shm` when creation fails.
    ///
    /// ```
    /// use ipc_core::shm::NamedSegment;
    /// # let name = format!("ipc-core-doc-create-{}", std::process::id());
    /// let seg = NamedSegment::create(&name, 4096).unwrap();
    /// assert_eq!((seg.name(), seg.len()), (name.as_str(), 4096));
    /// let again = NamedSegment::create(&name, 4096).unwrap_err();
    /// use std::io::ErrorKind;
    /// assert!(matches!(again, ipc_core::Error::Io(e) if e.kind() == ErrorKind::AlreadyExists));
    /// ```
    pub fn create(name: &str, size: usize) -> Result<NamedSegment> {
        check_name(name)?;
        check_size(size)?;
        let fd = rustix::shm::open(
            name,
            OFlags::CREATE | OFlags::EXCL | OFlags::RDWR,
            Mode::RUSR | Mode::WUSR,
        )
        .os()?;
        // From here on the name exists: any failure must remove it again.
        let mapped = rustix::fs::ftruncate(&fd, size as u64)
            .map_err(Error::os)
            .and_then(|()| Segment::from_fd(fd, size));
        match mapped {
            Ok(seg) => Ok(NamedSegment {
                seg,
                name: name.to_owned(),
                owns_name: AtomicBool::new(true),
            }),
            Err(e) => {
                let _ = rustix::shm::unlink(name);
                Err(e)
            }
        }
    }

    /// Creates a segment under a fresh random name (`ipc_` and 16 hex digits), retrying when a
    /// name is taken (Python's `SharedMemory(create=True, size=...)` without a name).
    ///
    /// ```
    /// let seg = ipc_core::shm::NamedSegment::create_unique(100).unwrap();
    /// assert!(seg.name().starts_with("ipc_"));
    /// ```
    pub fn create_unique(size: usize) -> Result<NamedSegment> {
        check_size(size)?;
        create_from_names(size, std::iter::repeat_with(random_name))
    }

    /// Attaches to the existing segment named `name`; its size is read from the segment.
    ///
    /// The handle does not own the name: dropping it leaves the name in place.
    ///
    /// Errors: [`Error::Io`] of kind [`NotFound`](io::ErrorKind::NotFound) when no segment has
    /// that name; [`Error::Misuse`] for a bad name, or an object that is empty (its creator has
    /// not sized it yet) or not a regular file.
    ///
    /// ```
    /// let missing = ipc_core::shm::NamedSegment::open("ipc-core-doc-no-such-name").unwrap_err();
    /// use std::io::ErrorKind;
    /// assert!(matches!(missing, ipc_core::Error::Io(e) if e.kind() == ErrorKind::NotFound));
    /// ```
    pub fn open(name: &str) -> Result<NamedSegment> {
        check_name(name)?;
        // NOFOLLOW: /dev/shm is world-writable; a symlink planted under our name is refused
        // (glibc's shm_open does the same).
        let nofollow = OFlags::from_bits_retain(rustix::fs::OFlags::NOFOLLOW.bits());
        let fd = rustix::shm::open(name, OFlags::RDWR | nofollow, Mode::empty()).os()?;
        let st = rustix::fs::fstat(&fd).os()?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(Error::misuse(format!(
                "/dev/shm/{name} is not a shared-memory segment (not a regular file)"
            )));
        }
        let size = usize::try_from(st.st_size).unwrap_or(0);
        if size == 0 {
            return Err(Error::misuse(format!(
                "the shared-memory segment {name:?} is empty (its creator may not have sized it yet)"
            )));
        }
        Ok(NamedSegment {
            seg: Segment::from_fd(fd, size)?,
            name: name.to_owned(),
            owns_name: AtomicBool::new(false),
        })
    }

    /// Attaches to `name` if it exists, otherwise creates it with `size` bytes (and owns it).
    ///
    /// Python reaches this with `O_CREAT | O_RDWR` flags (checklist 100): an existing segment
    /// keeps its own size.
    ///
    /// ```
    /// use ipc_core::shm::NamedSegment;
    /// # let name = format!("ipc-core-doc-ooc-{}", std::process::id());
    /// let created = NamedSegment::open_or_create(&name, 64).unwrap();
    /// let attached = NamedSegment::open_or_create(&name, 128).unwrap();
    /// assert_eq!(attached.len(), 64);
    /// assert_eq!(attached.name(), created.name());
    /// ```
    pub fn open_or_create(name: &str, size: usize) -> Result<NamedSegment> {
        check_name(name)?;
        check_size(size)?;
        for _ in 0..ATTEMPTS {
            match Self::create(name, size) {
                Err(Error::Io(e)) if e.kind() == io::ErrorKind::AlreadyExists => {}
                other => return other,
            }
            match Self::open(name) {
                // Unlinked between our two attempts: try to create it again.
                Err(Error::Io(e)) if e.kind() == io::ErrorKind::NotFound => {}
                other => return other,
            }
        }
        Err(Error::misuse(format!(
            "the shared-memory name {name:?} keeps appearing and disappearing; gave up after \
             {ATTEMPTS} attempts"
        )))
    }

    /// Removes the name from `/dev/shm`; this and every other mapping stay valid.
    ///
    /// Any handle may unlink, as in Python. Unlinking a name that is already gone is an
    /// [`Error::Io`] of kind [`NotFound`](io::ErrorKind::NotFound) (checklist 100).
    ///
    /// ```
    /// let seg = ipc_core::shm::NamedSegment::create_unique(10).unwrap();
    /// seg.unlink().unwrap();
    /// assert!(seg.unlink().is_err());
    /// ```
    pub fn unlink(&self) -> Result<()> {
        self.owns_name.store(false, Ordering::Relaxed);
        rustix::shm::unlink(self.name.as_str()).os()?;
        Ok(())
    }

    /// Removes the name `name` from `/dev/shm` without attaching (cleanup after a crash).
    ///
    /// ```
    /// # let name = format!("ipc-core-doc-unlink-name-{}", std::process::id());
    /// let seg = ipc_core::shm::NamedSegment::create(&name, 1).unwrap();
    /// seg.persist();
    /// drop(seg);
    /// ipc_core::shm::NamedSegment::unlink_name(&name).unwrap();
    /// ```
    pub fn unlink_name(name: &str) -> Result<()> {
        check_name(name)?;
        rustix::shm::unlink(name).os()?;
        Ok(())
    }

    /// Keeps the name when this handle drops, so it outlives this process (Python's default,
    /// and its `track=False`). Someone must then [`unlink`](Self::unlink) it.
    ///
    /// ```
    /// use ipc_core::shm::NamedSegment;
    /// let seg = NamedSegment::create_unique(8).unwrap();
    /// let name = seg.name().to_owned();
    /// seg.persist();
    /// drop(seg);
    /// let again = NamedSegment::open(&name).unwrap(); // still there
    /// again.unlink().unwrap();
    /// ```
    #[doc(alias = "track")]
    pub fn persist(&self) {
        self.owns_name.store(false, Ordering::Relaxed);
    }

    /// The segment's name (without a leading `/`): the file `/dev/shm/<name>`.
    ///
    /// ```
    /// let seg = ipc_core::shm::NamedSegment::create_unique(8).unwrap();
    /// assert!(std::path::Path::new("/dev/shm").join(seg.name()).exists());
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The segment's size in bytes: exactly what its creator asked for.
    ///
    /// ```
    /// let seg = ipc_core::shm::NamedSegment::create_unique(1000).unwrap();
    /// assert_eq!(seg.len(), 1000);
    /// ```
    pub fn len(&self) -> usize {
        self.seg.len()
    }

    /// Always false: segments are never empty.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The start of the mapping in this process (page aligned).
    ///
    /// Reading or writing through it is `unsafe` for the caller: other processes may access the
    /// same bytes at any time (use atomics, or a lock), and a process that shrinks the file
    /// under the mapping makes accesses past the new end fault.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// let seg = ipc_core::shm::NamedSegment::create_unique(4096).unwrap();
    /// // SAFETY: offset 0 of a page-aligned 4096-byte mapping holds an aligned AtomicU64, and
    /// // only processes of this user (mode 0600) could shrink the file.
    /// let word = unsafe { &*(seg.as_ptr() as *const AtomicU64) };
    /// word.store(1, Ordering::SeqCst);
    /// ```
    pub fn as_ptr(&self) -> *mut u8 {
        self.seg.as_ptr()
    }
}

impl AsFd for NamedSegment {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.seg.as_fd()
    }
}

impl Drop for NamedSegment {
    fn drop(&mut self) {
        if self.owns_name.load(Ordering::Relaxed) {
            // Ignore NotFound: someone else may have unlinked it through the name.
            let _ = rustix::shm::unlink(self.name.as_str());
        }
    }
}

impl fmt::Debug for NamedSegment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NamedSegment")
            .field("name", &self.name)
            .field("size", &self.len())
            .finish()
    }
}

/// Travels by descriptor (with its name and size); the received handle does not own the name.
impl Serialize for NamedSegment {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(3)?;
        t.serialize_element(&codec::BorrowedTransferFd(self.as_fd()))?;
        t.serialize_element(&(self.len() as u64))?;
        t.serialize_element(&self.name)?;
        t.end()
    }
}

impl<'de> Deserialize<'de> for NamedSegment {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (fd, len, name) = <(TransferFd, u64, String)>::deserialize(d)?;
        receive(fd.0, len, name)
            .map_err(|e| serde::de::Error::custom(codec::remember(e.to_string())))
    }
}

fn receive(fd: OwnedFd, len: u64, name: String) -> Result<NamedSegment> {
    check_name(&name).map_err(|e| Error::malformed(format!("received a bad name: {e}")))?;
    let len = usize::try_from(len).map_err(|_| Error::malformed("segment size out of range"))?;
    Ok(NamedSegment {
        seg: Segment::from_fd(fd, len)?,
        name,
        owns_name: AtomicBool::new(false),
    })
}

fn check_name(name: &str) -> Result<()> {
    let problem = if name.is_empty() {
        "is empty"
    } else if name.len() > MAX_NAME_LEN {
        "is longer than 255 bytes"
    } else if name.contains('/') {
        "contains '/'"
    } else if name.contains('\0') {
        "contains a NUL byte"
    } else if name == "." || name == ".." {
        "is a directory name"
    } else {
        return Ok(());
    };
    Err(Error::misuse(format!(
        "the shared-memory name {name:?} {problem}; use 1 to {MAX_NAME_LEN} bytes without \
         '/' or NUL"
    )))
}

fn check_size(size: usize) -> Result<()> {
    if size == 0 {
        return Err(Error::misuse(
            "a named shared-memory segment needs a size above zero",
        ));
    }
    Ok(())
}

fn random_name() -> String {
    let mut bytes = [0u8; 8];
    // Without the kernel's randomness, fall back to the clock and the pid: collisions are
    // retried anyway, the name only needs to be unlikely to be taken.
    if getrandom::fill(&mut bytes).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        bytes = (t ^ (u64::from(std::process::id()) << 40)).to_le_bytes();
    }
    format!("ipc_{:016x}", u64::from_le_bytes(bytes))
}

/// Creates under the first free name of `names` (checklist 101: retry on collision).
fn create_from_names(size: usize, names: impl Iterator<Item = String>) -> Result<NamedSegment> {
    for name in names.take(ATTEMPTS) {
        match NamedSegment::create(&name, size) {
            Err(Error::Io(e)) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            other => return other,
        }
    }
    Err(Error::misuse(format!(
        "no free shared-memory name after {ATTEMPTS} attempts"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checklist 101: a random name that collides with an existing segment is retried.
    #[test]
    fn creation_retries_on_collision() {
        let taken = NamedSegment::create_unique(8).unwrap();
        let fresh = format!("ipc-core-unit-{}-retry", std::process::id());
        let names = [taken.name().to_owned(), fresh.clone()].into_iter();
        let seg = create_from_names(8, names).unwrap();
        assert_eq!(seg.name(), fresh);
        assert_eq!(taken.len(), 8);
    }

    #[test]
    fn names_are_checked() {
        for bad in ["", "a/b", "/x", "a\0b", ".", ".."] {
            assert!(matches!(check_name(bad), Err(Error::Misuse(_))), "{bad:?}");
        }
        assert!(check_name(&"x".repeat(MAX_NAME_LEN)).is_ok());
        assert!(check_name(&"x".repeat(MAX_NAME_LEN + 1)).is_err());
        assert!(check_name("psm_0123-abc.x").is_ok());
    }
}
