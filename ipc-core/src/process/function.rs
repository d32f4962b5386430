//! Naming functions across processes: code offsets, the executable's identity, and
//! [`RemoteFn`], a handle to a function that another process of the same executable can call.
//!
//! # Offsets
//! ASLR loads the executable at a different address in every process, but a function's distance
//! from another function of the same object is fixed at link time. So a function is named by its
//! offset from [`anchor`], a fixed function of this crate, and found again in another process
//! by adding the offset to that process's `anchor`. That holds only when the function lives in
//! the object that holds the anchor: a function in a shared object (a Rust `dylib`, a build with
//! `-C prefer-dynamic`, a `dlopen`ed plugin) is loaded at its own random address, and its offset
//! means nothing elsewhere. [`offset_of`] asks the dynamic loader (`dladdr`) which object holds
//! the function and refuses one outside the anchor's.
//!
//! # Who may call a handle
//! ```text
//! RemoteFn wire form:  executable id (build id) | trampoline offset | function offset | tag
//!                      tag = HMAC-SHA256(family key, id | trampoline | function)
//! ```
//! A handle is code to run, so a handle decoded from bytes must be one this program made:
//! - the **executable id** is the GNU build id of the object holding the anchor (read from its
//!   `PT_NOTE` segment in memory; the SHA-256 of the file where the linker wrote none). A
//!   handle from another program, or another build of this one, is refused: its offsets name
//!   other code here.
//! - the **tag** proves the two offsets were paired by [`RemoteFn::new`] (the trampoline is
//!   instantiated for the function's exact argument and result types), not forged: bytes from a
//!   peer that holds no key are refused. The **family key** is 32 random bytes made by the first
//!   process that starts a child or makes a handle, inherited by forked children and handed to
//!   spawned and forkserver children in their boot message, so a process and all its
//!   descendants accept each other's handles. Processes that are not related this way (two
//!   runs of one program, MPI ranks started by `mpirun`) do not share a key and refuse each
//!   other's handles.
//!
//! # The call
//! The receiver does not need the function's types: [`RemoteFn::call_encoded`] takes the
//! argument as postcard bytes (and the descriptors that travelled with them) and returns the
//! result the same way, decoded and encoded by the trampoline that was paired with the function
//! where the handle was made. A typed [`RemoteFn::call`] goes through the same bytes, so a
//! receiver that names other types than the maker gets a decode error, never a call with the
//! wrong types. [`RemoteFn::call_plain_each`] runs the same trampoline over many packed
//! arguments in one loop (a pool worker's chunk): one indirect call per chunk instead of one
//! per item.
//!
//! # Safety
//! Two kinds of `unsafe` here: rebuilding a function pointer from an offset ([`fn_at`], sound
//! when the offset came from [`offset_of`] in a process running the same object with the same
//! type, which the spawn path guarantees by construction and a decoded [`RemoteFn`] by its id
//! and tag); and reading the loader's tables (`dladdr`, `dl_iterate_phdr`) and the build-id note
//! they point to, which lies inside a loaded segment (checked before reading).
#![allow(unsafe_code)]

use std::fmt;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::sync::OnceLock;

use hmac::{Hmac, KeyInit, Mac};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::codec;
use crate::error::{Error, Result};

/// A fixed function that names code positions across `exec` of the same binary.
///
/// It is also the load-time hook (see [`BOOT_HOOK`]): referring to it from the spawn path keeps
/// its object, and so the hook, linked into every binary that can spawn.
extern "C" fn anchor() {
    super::bootstrap::on_load();
}

/// Runs [`anchor`] when the executable is loaded, before `main` and before a test harness.
///
/// In an ordinary process `on_load` returns at once. In a child started by the spawn method (an
/// environment variable says so) it never returns: it runs the requested function and exits, so
/// the program's own `main` never runs there (no fork bomb, no boilerplate in `main`).
#[used]
#[unsafe(link_section = ".init_array")]
static BOOT_HOOK: extern "C" fn() = anchor;

fn anchor_address() -> usize {
    anchor as *const () as usize
}

/// The base address of the loaded object holding `addr`, from the dynamic loader.
fn object_base(addr: usize) -> Option<usize> {
    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::zeroed();
    // SAFETY: dladdr only reads the loader's tables and writes the out-parameter, which is a
    // valid, writable Dl_info; it returns 0 (and leaves the struct unspecified) on failure.
    let found = unsafe { libc::dladdr(addr as *const libc::c_void, info.as_mut_ptr()) };
    if found == 0 {
        return None;
    }
    // SAFETY: dladdr succeeded, so it filled the struct.
    let info = unsafe { info.assume_init() };
    Some(info.dli_fbase as usize)
}

/// A function's offset from the anchor: the same in every process running this binary. Refuses a
/// function that is not in the anchor's object (see the module doc), as that offset would send
/// another process to an arbitrary address.
pub(crate) fn offset_of(f: *const ()) -> Result<i64> {
    static ANCHOR_BASE: OnceLock<Option<usize>> = OnceLock::new();
    let ours = *ANCHOR_BASE.get_or_init(|| object_base(anchor_address()));
    let theirs = object_base(f as usize);
    if ours.is_none() || theirs != ours {
        return Err(Error::misuse(
            "this function lives in another loaded object (a dylib, -C prefer-dynamic, a plugin) \
             than ipc-core's code, so it cannot be named in another process; define it in the \
             executable that starts the process, or link ipc-core into the same object",
        ));
    }
    Ok((f as i64).wrapping_sub(anchor_address() as i64))
}

/// Rebuilds a function pointer of type `F` from its offset (see [`offset_of`]).
///
/// # Safety
/// `offset` must be [`offset_of`] a function whose type is exactly `F`, computed by a process
/// running this same executable (spawn re-executes `/proc/self/exe`, which names the very file
/// the parent runs even if it was replaced on disk since; forkserver children are forks of such a
/// process; a decoded [`RemoteFn`] checked its executable id and tag).
pub(crate) unsafe fn fn_at<F: Copy>(offset: i64) -> F {
    const { assert!(std::mem::size_of::<F>() == std::mem::size_of::<*const ()>()) };
    let p = (anchor_address() as i64).wrapping_add(offset) as usize as *const ();
    // SAFETY: by the caller's contract `p` is the address of a function of type `F` in this
    // executable's text, and `F` is a function pointer type of the same size as `*const ()`.
    unsafe { std::mem::transmute_copy::<*const (), F>(&p) }
}

/// The identity of the object holding ipc-core's code (normally the executable): its GNU build
/// id, or where the linker wrote none, the SHA-256 of its file. Computed once per process.
pub(crate) fn executable_id() -> &'static [u8] {
    static ID: OnceLock<Vec<u8>> = OnceLock::new();
    ID.get_or_init(|| build_id().unwrap_or_else(file_digest))
}

/// The loaded object that holds the anchor, as `dl_iterate_phdr` describes it: its program
/// headers as `(type, start address, end address)`, and its file name (none for the executable).
struct Object {
    segments: Vec<(u32, usize, usize)>,
    name: Option<std::path::PathBuf>,
}

fn anchor_object() -> Option<Object> {
    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        out: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: the loader passes a valid dl_phdr_info for the duration of the call, and `out`
        // is the `Option<Object>` that `anchor_object` passed in.
        let (info, out) = unsafe { (&*info, &mut *(out as *mut Option<Object>)) };
        let bias = info.dlpi_addr as usize;
        let phdrs: &[libc::Elf64_Phdr] = if info.dlpi_phdr.is_null() {
            &[]
        } else {
            // SAFETY: dlpi_phdr points at dlpi_phnum program headers of this loaded object.
            unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) }
        };
        let segments: Vec<_> = phdrs
            .iter()
            .map(|p| {
                let start = bias.wrapping_add(p.p_vaddr as usize);
                (p.p_type, start, start.wrapping_add(p.p_memsz as usize))
            })
            .collect();
        let a = anchor_address();
        if !segments
            .iter()
            .any(|&(t, s, e)| t == libc::PT_LOAD && s <= a && a < e)
        {
            return 0;
        }
        let name = if info.dlpi_name.is_null() {
            None
        } else {
            // SAFETY: a non-null dlpi_name is a NUL-terminated string owned by the loader.
            let c = unsafe { std::ffi::CStr::from_ptr(info.dlpi_name) };
            let path: &std::ffi::OsStr = std::os::unix::ffi::OsStrExt::from_bytes(c.to_bytes());
            (!path.is_empty()).then(|| path.into())
        };
        *out = Some(Object { segments, name });
        1
    }
    let mut out: Option<Object> = None;
    // SAFETY: `visit` only reads what the loader hands it and writes `out`, which outlives the
    // call; returning 1 stops the iteration once the anchor's object is found.
    unsafe { libc::dl_iterate_phdr(Some(visit), &mut out as *mut _ as *mut libc::c_void) };
    out
}

/// The GNU build id of the anchor's object, from its `PT_NOTE` segments in memory.
fn build_id() -> Option<Vec<u8>> {
    const NT_GNU_BUILD_ID: u32 = 3;
    let obj = anchor_object()?;
    let loaded = |s: usize, e: usize| {
        obj.segments
            .iter()
            .any(|&(t, ls, le)| t == libc::PT_LOAD && ls <= s && e <= le)
    };
    for &(t, start, end) in &obj.segments {
        if t != libc::PT_NOTE || !loaded(start, end) || end <= start {
            continue;
        }
        // SAFETY: the note segment lies inside a PT_LOAD segment of a loaded object (checked
        // just above), which the loader mapped readable for the life of the process.
        let notes = unsafe { std::slice::from_raw_parts(start as *const u8, end - start) };
        let mut rest = notes;
        while rest.len() >= 12 {
            let word = |i: usize| u32::from_ne_bytes(rest[i..i + 4].try_into().unwrap()) as usize;
            let (namesz, descsz, kind) = (word(0), word(4), word(8) as u32);
            let name_end = 12 + namesz.next_multiple_of(4);
            let desc_end = name_end + descsz.next_multiple_of(4);
            if desc_end > rest.len() {
                break;
            }
            if kind == NT_GNU_BUILD_ID && &rest[12..12 + namesz] == b"GNU\0" && descsz > 0 {
                return Some(rest[name_end..name_end + descsz].to_vec());
            }
            rest = &rest[desc_end..];
        }
    }
    None
}

/// The SHA-256 of the anchor's object file: the identity of a binary linked without a build id.
/// Reads the whole file once per process (tens of milliseconds for a large debug binary).
fn file_digest() -> Vec<u8> {
    use sha2::Digest;
    let path = anchor_object()
        .and_then(|o| o.name)
        .unwrap_or_else(|| "/proc/self/exe".into());
    match std::fs::read(&path) {
        Ok(bytes) => Sha256::digest(&bytes).to_vec(),
        // Unreadable: an identity no other process shares, so handles are refused, not misread.
        Err(_) => {
            let mut random = vec![0u8; 32];
            let _ = getrandom::fill(&mut random);
            random
        }
    }
}

/// This process family's key (see the module doc), made on first use.
pub(crate) fn family_key_ref() -> &'static [u8; 32] {
    FAMILY_KEY.get_or_init(|| {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k).expect("the kernel's random source is unavailable");
        k
    })
}

static FAMILY_KEY: OnceLock<[u8; 32]> = OnceLock::new();

/// This process family's key (made now if this process has none yet), for a launcher that
/// starts processes of this program by other means than ipc-core's start methods (MPI ranks
/// started by `mpirun`, or spawned by `MPI_Comm_spawn`): it hands the key to them over its own
/// trusted channel, and they [`join_family`] with it, so that they accept each other's
/// [`RemoteFn`]s.
///
/// Whoever holds the key can make this family run any function of this executable that has
/// been named by a handle: send it only to processes of this program that you trust (a
/// communicator of one MPI job), never over a channel that others can read.
pub fn family_key() -> [u8; 32] {
    *family_key_ref()
}

/// Makes this process a member of the family whose key is `key` (see [`family_key`]): from now
/// on it accepts the handles that family makes, and its own handles are accepted there.
///
/// Call it before this process makes or accepts any handle, or starts a child (which would make
/// its own key). Joining the family it already belongs to is a no-op; a process that already
/// has another key gets [`Error::Misuse`] (its earlier handles would be refused).
///
/// ```
/// use ipc_core::process::{family_key, join_family};
///
/// let key = family_key();
/// join_family(key)?; // already a member: fine
/// assert!(join_family([7; 32]).is_err()); // another family: refused
/// # Ok::<(), ipc_core::Error>(())
/// ```
pub fn join_family(key: [u8; 32]) -> Result<()> {
    if *FAMILY_KEY.get_or_init(|| key) == key {
        Ok(())
    } else {
        Err(Error::misuse(
            "this process already belongs to another process family (it made or accepted a \
             function handle, or started a child, before join_family): join before that",
        ))
    }
}

type HmacSha256 = Hmac<Sha256>;

/// The MAC of a handle's fields under the family key (see the module doc).
fn mac(trampoline: i64, func: i64) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(family_key_ref()).expect("HMAC takes any key length");
    m.update(executable_id());
    m.update(&trampoline.to_le_bytes());
    m.update(&func.to_le_bytes());
    m
}

/// The tag of `(trampoline, func)`: the cached one if this thread made or verified that
/// handle last (a pool submitting the same function again pays no HMAC), else a fresh HMAC.
fn tag_of(trampoline: i64, func: i64) -> [u8; 32] {
    if let Some((t, f, tag)) = VERIFIED.try_with(std::cell::Cell::get).ok().flatten()
        && t == trampoline
        && f == func
    {
        return tag;
    }
    let tag: [u8; 32] = mac(trampoline, func).finalize().into_bytes().into();
    let _ = VERIFIED.try_with(|v| v.set(Some((trampoline, func, tag))));
    tag
}

/// The monomorphized half of a call: decode the argument, run the function at the offset,
/// append the encoded result to the buffer ([`Call::One`]), or the same for each of many
/// arguments in one loop ([`Call::Each`]). With descriptors (`Some`, maybe empty) the codec
/// hands them to the argument and collects the result's; without (`None`) both are plain bytes,
/// and a descriptor in either is an error (the cheaper path, for shared-memory queues).
pub(crate) type Trampoline = fn(i64, Call<'_>) -> Result<Vec<OwnedFd>>;

/// What [`RemoteFn::call_plain_each`] tells after each call: the item's index, its outcome
/// (`Ok`: its result was appended to the buffer; `Err`: the buffer is as it was) and the buffer;
/// it returns whether to go on.
pub type AfterCall<'a> = dyn FnMut(usize, Result<()>, &mut Vec<u8>) -> bool + 'a;

/// What a trampoline is asked to do.
pub(crate) enum Call<'a> {
    /// One call: its argument, the descriptors that came with it, where its result goes.
    One {
        arg: &'a [u8],
        fds: Option<Vec<OwnedFd>>,
        out: &'a mut Vec<u8>,
    },
    /// Calls on plain arguments, one after the other (see [`RemoteFn::call_plain_each`]).
    Each {
        args: PackedArgs<'a>,
        items: std::ops::Range<usize>,
        out: &'a mut Vec<u8>,
        after: &'a mut AfterCall<'a>,
    },
}

impl Call<'_> {
    /// Does what is asked with `f` (the function the trampoline rebuilt, with what its kind
    /// does around it): decodes each argument as an `A`, encodes each result. Inlined into each
    /// trampoline, so a chunk's loop is compiled whole for the function's types, with one
    /// indirect call per item (`after`).
    #[inline(always)]
    pub(crate) fn run<A: DeserializeOwned, R: Serialize>(
        self,
        mut f: impl FnMut(A) -> Result<R>,
    ) -> Result<Vec<OwnedFd>> {
        match self {
            Call::One {
                arg,
                fds: Some(fds),
                out,
            } => {
                let result = f(codec::decode(arg, fds)?)?;
                let start = out.len();
                codec::encode(&result, out).inspect_err(|_| out.truncate(start))
            }
            Call::One {
                arg,
                fds: None,
                out,
            } => codec::in_plain(|| plain_call(&mut f, arg, out)).map(|()| Vec::new()),
            Call::Each {
                args,
                items,
                out,
                after,
            } => codec::in_plain(|| {
                for k in items {
                    let outcome = match args.get(k) {
                        Some(arg) => plain_call(&mut f, arg, out),
                        None => Err(Error::Decode(crate::error::CodecError::new(format!(
                            "item {k} lies outside its packed arguments"
                        )))),
                    };
                    if !after(k, outcome, out) {
                        break;
                    }
                }
                Ok(Vec::new())
            }),
        }
    }
}

/// One call on plain bytes, inside [`codec::in_plain`]: the argument decoded, the result
/// appended to `out` (nothing appended on an error).
#[inline(always)]
fn plain_call<A: DeserializeOwned, R: Serialize>(
    f: &mut impl FnMut(A) -> Result<R>,
    arg: &[u8],
    out: &mut Vec<u8>,
) -> Result<()> {
    let result = f(codec::decode_in_plain(arg)?)?;
    codec::encode_in_plain(&result, out)
}

/// Encoded arguments end to end in one buffer: item `k` is `data[ends[k - 1]..ends[k]]`
/// (`data[..ends[0]]` for the first), as a pool packs a chunk's arguments.
#[derive(Debug, Clone, Copy)]
pub struct PackedArgs<'a> {
    /// The items' bytes, end to end.
    pub data: &'a [u8],
    /// Where each item ends in `data`.
    pub ends: &'a [u32],
}

impl<'a> PackedArgs<'a> {
    /// Item `k`'s bytes; `None` if `k` or its ends lie outside the data.
    #[inline]
    pub fn get(&self, k: usize) -> Option<&'a [u8]> {
        let start = match k {
            0 => 0,
            _ => *self.ends.get(k - 1)? as usize,
        };
        self.data.get(start..*self.ends.get(k)? as usize)
    }
}

fn trampoline<A: DeserializeOwned, R: Serialize>(
    func: i64,
    call: Call<'_>,
) -> Result<Vec<OwnedFd>> {
    // SAFETY: `func` was paired with this trampoline by `RemoteFn::new::<A, R>` from an
    // `fn(A) -> R` of this executable (the tag proves the pairing of a decoded handle).
    let f = unsafe { fn_at::<fn(A) -> R>(func) };
    call.run(|arg: A| Ok(f(arg)))
}

/// A handle to a function `fn(A) -> R` that any process of this program's family can call: send
/// it (it is `Serialize`) to a running worker and call it there.
///
/// A handle names code, so decoding one checks where it came from:
/// - it carries the executable's identity (its GNU build id), and another program, or another
///   build of this one, refuses it;
/// - it carries a tag made with a key that this process shares only with its ancestors and
///   descendants started through ipc-core, so bytes from anyone else (another run of the same
///   program, a forger) are refused. A worker never calls code it was not given by its family.
///
/// The worker need not know the function's types: [`call_encoded`](Self::call_encoded) takes
/// and returns postcard bytes, decoded and encoded with the types the handle was made with.
/// [`RemoteFn::new`] refuses a function that lives in a shared object (a dylib, a plugin), whose
/// position another process cannot know.
///
/// ```
/// use ipc_core::process::RemoteFn;
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// fn worker(conn: ipc_core::conn::Connection) {
///     // The worker knows nothing of `square` or its types: it runs what arrives.
///     while let Ok((f, arg)) = conn.recv::<(RemoteFn<(), ()>, Vec<u8>)>() {
///         let (result, _fds) = f.call_encoded(&arg, Vec::new()).unwrap();
///         conn.send_bytes(&result).unwrap();
///     }
/// }
///
/// let (ours, theirs) = ipc_core::conn::pipe()?;
/// let child = ipc_core::process::spawn(theirs, worker)?;
/// let f = RemoteFn::new(square)?;
/// for x in [3u64, 4] {
///     ours.send(&(f.erase(), postcard::to_stdvec(&x)?))?;
///     let result: u64 = postcard::from_bytes(&ours.recv_bytes()?)?;
///     assert_eq!(result, x * x);
/// }
/// drop(ours);
/// child.join()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RemoteFn<A, R> {
    trampoline: i64,
    func: i64,
    /// The family tag, computed once (by `new`, or checked when decoded), so sending a handle
    /// costs no MAC.
    tag: [u8; 32],
    _types: PhantomData<fn(A) -> R>,
}

impl<A, R> Clone for RemoteFn<A, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<A, R> Copy for RemoteFn<A, R> {}

/// Two handles are equal when they name the same function with the same trampoline (so a
/// sender can send a function once for many chunks).
impl<A, R> PartialEq for RemoteFn<A, R> {
    fn eq(&self, other: &Self) -> bool {
        self.trampoline == other.trampoline && self.func == other.func
    }
}

impl<A, R> Eq for RemoteFn<A, R> {}

impl<A, R> fmt::Debug for RemoteFn<A, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteFn")
            .field("func", &self.func)
            .field("trampoline", &self.trampoline)
            .finish()
    }
}

impl<A: Serialize + DeserializeOwned, R: Serialize + DeserializeOwned> RemoteFn<A, R> {
    /// A handle to `f`, a function or a non-capturing closure. An error if `f` lives in another
    /// loaded object than ipc-core's code (a dylib or plugin: see the module doc).
    pub fn new(f: fn(A) -> R) -> Result<Self> {
        RemoteFn::pair(trampoline::<A, R> as Trampoline, f as *const ())
    }

    /// Calls the function here with `arg` (through its encoding, as a worker would: see
    /// [`call_encoded`](Self::call_encoded)). A panic in the function unwinds out of this call.
    pub fn call(&self, arg: A) -> Result<R> {
        let mut buf = Vec::new();
        let fds = codec::encode(&arg, &mut buf)?;
        let (out, fds) = self.call_encoded(&buf, fds)?;
        codec::decode(&out, fds)
    }
}

impl<A, R> RemoteFn<A, R> {
    /// Pairs a trampoline with the function it calls (the caller instantiated the trampoline
    /// for the function's exact type: that pairing is what the tag then proves).
    pub(crate) fn pair(t: Trampoline, func: *const ()) -> Result<Self> {
        let trampoline = offset_of(t as *const ())?;
        let func = offset_of(func)?;
        Ok(RemoteFn {
            trampoline,
            func,
            tag: tag_of(trampoline, func),
            _types: PhantomData,
        })
    }

    /// Calls the function with a postcard-encoded argument (and the descriptors that came with
    /// it, for shared objects); returns the encoded result and its descriptors. The types are
    /// those the handle was made with, wherever it was made: a worker can run handles of any
    /// types through this one method. A panic in the function unwinds out of this call.
    pub fn call_encoded(&self, arg: &[u8], fds: Vec<OwnedFd>) -> Result<(Vec<u8>, Vec<OwnedFd>)> {
        let mut out = Vec::new();
        let fds = self.call_encoded_into(arg, fds, &mut out)?;
        Ok((out, fds))
    }

    /// [`call_encoded`](Self::call_encoded), appending the encoded result to `out` (a worker
    /// packs many results into one buffer without an allocation each). On an error, `out` is
    /// as it was.
    pub fn call_encoded_into(
        &self,
        arg: &[u8],
        fds: Vec<OwnedFd>,
        out: &mut Vec<u8>,
    ) -> Result<Vec<OwnedFd>> {
        self.call_with(arg, Some(fds), out)
    }

    /// [`call_encoded_into`](Self::call_encoded_into) for an argument and a result of plain
    /// bytes (what a shared-memory queue carries): a shared object in either is an error. The
    /// fastest way to run a small task.
    pub fn call_plain_into(&self, arg: &[u8], out: &mut Vec<u8>) -> Result<()> {
        self.call_with(arg, None, out).map(drop)
    }

    /// Calls the function on items `items` of `args` in order (each a plain argument, as for
    /// [`call_plain_into`](Self::call_plain_into)), appending each result to `out`. After
    /// each call, `after` gets the item's index, its outcome (on an error `out` is as it was
    /// before that item) and `out`, and says whether to go on. One indirect call for the run
    /// instead of one per item: how a worker runs a chunk of small tasks. A panic in the
    /// function unwinds out of this call (`after` has seen every item before it).
    ///
    /// ```
    /// use ipc_core::process::{PackedArgs, RemoteFn};
    ///
    /// fn double(x: u32) -> u32 {
    ///     2 * x
    /// }
    ///
    /// let f = RemoteFn::new(double)?.erase();
    /// let (mut data, mut ends) = (Vec::new(), Vec::new());
    /// for x in [1u32, 2, 300] {
    ///     data.extend(postcard::to_stdvec(&x)?);
    ///     ends.push(data.len() as u32);
    /// }
    /// let args = PackedArgs { data: &data, ends: &ends };
    /// let (mut out, mut results) = (Vec::new(), Vec::new());
    /// f.call_plain_each(args, 0..3, &mut out, &mut |k, outcome, out| {
    ///     outcome.unwrap();
    ///     results.push((k, postcard::from_bytes::<u32>(&out[..]).unwrap()));
    ///     out.clear();
    ///     true
    /// });
    /// assert_eq!(results, [(0, 2), (1, 4), (2, 600)]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn call_plain_each(
        &self,
        args: PackedArgs<'_>,
        items: std::ops::Range<usize>,
        out: &mut Vec<u8>,
        after: &mut AfterCall<'_>,
    ) {
        let call = Call::Each {
            args,
            items,
            out,
            after,
        };
        // Each outcome went to `after`.
        let _ = self.dispatch(call);
    }

    fn call_with(
        &self,
        arg: &[u8],
        fds: Option<Vec<OwnedFd>>,
        out: &mut Vec<u8>,
    ) -> Result<Vec<OwnedFd>> {
        self.dispatch(Call::One { arg, fds, out })
    }

    fn dispatch(&self, call: Call<'_>) -> Result<Vec<OwnedFd>> {
        // SAFETY: `trampoline` is the offset of a `Trampoline` in this executable: made here by
        // `new`, or decoded with a matching executable id and family tag.
        let t = unsafe { fn_at::<Trampoline>(self.trampoline) };
        t(self.func, call)
    }

    /// The same handle with its types forgotten, for a worker that runs functions of many types
    /// through [`call_encoded`](Self::call_encoded).
    pub fn erase(self) -> RemoteFn<(), ()> {
        RemoteFn {
            trampoline: self.trampoline,
            func: self.func,
            tag: self.tag,
            _types: PhantomData,
        }
    }
}

/// The wire form (see the module doc). The executable id is borrowed from the message: a
/// worker decodes a handle per task, and allocates nothing for it.
#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    #[serde(borrow, with = "serde_bytes")]
    executable: &'a [u8],
    trampoline: i64,
    func: i64,
    /// 32 bytes, as one byte string (an array would be 32 elements, each a call).
    #[serde(borrow, with = "serde_bytes")]
    tag: &'a [u8],
}

thread_local! {
    /// The last handle this thread made or verified: a worker receives the same handle with
    /// every task, and a pool's caller makes the same one for every submission; an HMAC each
    /// time would be most of the cost.
    static VERIFIED: std::cell::Cell<Option<(i64, i64, [u8; 32])>> = const { std::cell::Cell::new(None) };
}

/// Whether two tags are equal, in time that does not depend on where they differ (so a forger
/// comparing guesses against a verified tag learns nothing from timing).
fn same_tag(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `(trampoline, func, tag)` was made by this process family: the cached last verified
/// handle, or a fresh HMAC check (constant time either way).
fn verified(trampoline: i64, func: i64, tag: &[u8; 32]) -> bool {
    let cached = VERIFIED.try_with(std::cell::Cell::get).ok().flatten();
    if let Some((t, f, known)) = cached
        && t == trampoline
        && f == func
        && same_tag(&known, tag)
    {
        return true;
    }
    let ok = mac(trampoline, func).verify_slice(tag).is_ok();
    if ok {
        let _ = VERIFIED.try_with(|v| v.set(Some((trampoline, func, *tag))));
    }
    ok
}

impl<A, R> Serialize for RemoteFn<A, R> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        Wire {
            executable: executable_id(),
            trampoline: self.trampoline,
            func: self.func,
            tag: &self.tag,
        }
        .serialize(s)
    }
}

impl<'de, A, R> Deserialize<'de> for RemoteFn<A, R> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let w = Wire::deserialize(d)?;
        let refuse = |msg: String| serde::de::Error::custom(codec::remember(msg));
        if w.executable != executable_id() {
            return Err(refuse(format!(
                "a function handle from another executable (build {}) cannot run in this one \
                 (build {}): its code offsets name other code here",
                hex(w.executable),
                hex(executable_id())
            )));
        }
        let tag: [u8; 32] = w.tag.try_into().map_err(|_| {
            refuse(format!(
                "a function handle whose tag is {} bytes long, not 32",
                w.tag.len()
            ))
        })?;
        if !verified(w.trampoline, w.func, &tag) {
            return Err(refuse(
                "a function handle that this process family did not make (its tag does not \
                 match): handles are accepted only from this process, its ancestors and \
                 descendants, never from other programs or forged bytes"
                    .into(),
            ));
        }
        Ok(RemoteFn {
            trampoline: w.trampoline,
            func: w.func,
            tag,
            _types: PhantomData,
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
