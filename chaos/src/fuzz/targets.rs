//! The fuzz targets: each feeds an input through a real socket to a real receiver.
//!
//! ```text
//! frame-records   records on a SOCK_SEQPACKET pair (what `pipe()` and Unix listeners use),
//!                 received as a `Sample` by Connection::recv
//! frame-stream    the same frames as one byte stream (TCP, foreign Unix stream sockets)
//! frame-fds       frames carrying shared-memory segments, with 0-5 descriptors attached
//!                 whatever the header says: `(u8, Vec<Segment>)`
//! queue-ring      a queue's shared words and ring bytes as a hostile process could leave
//!                 them (head, tail, frames), taken by `try_get` as `Sample`s
//! manager-requests   a session's messages (hello, then requests) as a real client sent them
//!                 (recorded through a relay), mutated, at a live TCP manager server over a
//!                 fresh authenticated connection; the server must answer or hang up, and live on
//! handshake-answer   the answerer's side: a challenge and a verdict from a fake challenger
//! handshake-deliver  the challenger's side: the real nonce answered by a fake answerer whose
//!                    frame is mutated (the MAC is recomputed unless the input says not to)
//! ```

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use ipc_core::conn::{Connection, HEADER_LEN};
use ipc_core::shm::Segment;
use rustix::net::{
    AddressFamily, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags,
    SocketType,
};
use serde::{Deserialize, Serialize};

use super::{Input, Outcome, Target};

pub(super) fn all() -> Vec<Target> {
    vec![
        Target {
            name: "frame-records",
            about: "Connection frames as SOCK_SEQPACKET records",
            seeds: || seeds_of(Transport::Records, &samples()),
            run: |i| recv_sample(Transport::Records, i),
            fix: fix_records,
        },
        Target {
            name: "frame-stream",
            about: "Connection frames on a byte stream",
            seeds: || seeds_of(Transport::Stream, &samples()),
            run: |i| recv_sample(Transport::Stream, i),
            fix: fix_stream,
        },
        Target {
            name: "frame-fds",
            about: "frames carrying descriptors (SCM_RIGHTS)",
            seeds: fd_seeds,
            run: recv_segments,
            fix: fix_records,
        },
        Target {
            name: "queue-ring",
            about: "queue records in a ring a hostile process wrote",
            seeds: ring_seeds,
            run: ring_get,
            fix: fix_ring,
        },
        Target {
            name: "manager-requests",
            about: "the manager's requests, at a live server",
            seeds: manager_seeds,
            run: manager_requests,
            fix: |_| {},
        },
        Target {
            name: "handshake-answer",
            about: "the authkey handshake, answering side",
            seeds: answer_seeds,
            run: answer,
            fix: fix_stream,
        },
        Target {
            name: "handshake-deliver",
            about: "the authkey handshake, challenging side",
            seeds: deliver_seeds,
            run: deliver,
            fix: fix_stream,
        },
    ]
}

/// What the frame targets decode: a bit of every shape postcard has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Sample {
    Unit,
    Num(u64, i32),
    Text(String),
    Bytes(Vec<u8>),
    Nested {
        names: Vec<String>,
        pairs: Vec<(u16, Option<f64>)>,
        flag: bool,
    },
}

fn samples() -> Vec<Sample> {
    vec![
        Sample::Unit,
        Sample::Num(u64::MAX, -7),
        Sample::Text("hello, chaos".into()),
        Sample::Bytes((0..200u8).collect()),
        Sample::Bytes(vec![7; 20_000]),
        Sample::Nested {
            names: vec!["a".into(), "bb".into(), String::new()],
            pairs: vec![(1, Some(1.5)), (65535, None)],
            flag: true,
        },
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Records,
    Stream,
}

/// A connected pair for `t`: (our raw end, the receiver).
fn pair(t: Transport) -> anyhow::Result<(OwnedFd, Connection)> {
    Ok(match t {
        Transport::Records => socketpair(SocketType::SEQPACKET)?,
        Transport::Stream => socketpair(SocketType::STREAM)?,
    })
}

fn socketpair(kind: SocketType) -> anyhow::Result<(OwnedFd, Connection)> {
    let (a, b) = rustix::net::socketpair(AddressFamily::UNIX, kind, SocketFlags::CLOEXEC, None)?;
    Ok((a, Connection::from_socket(b)))
}

/// Everything waiting on `fd` (records kept apart on a record socket), without blocking.
fn drain(fd: BorrowedFd<'_>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    while let Ok((n, _)) = rustix::net::recv(fd, &mut buf[..], RecvFlags::DONTWAIT) {
        if n == 0 {
            break;
        }
        out.push(buf[..n].to_vec());
    }
    out
}

/// Valid encodings of `values`, made by the real sender and read raw.
fn seeds_of<T: Serialize>(t: Transport, values: &[T]) -> anyhow::Result<Vec<Input>> {
    let mut seeds = Vec::new();
    for v in values {
        let (raw, conn) = pair(t)?;
        // Send from the Connection end, read raw from the other.
        let sender = conn;
        sender.send(v)?;
        let mut chunks = drain(raw.as_fd());
        if t == Transport::Stream {
            chunks = vec![chunks.concat()];
        }
        seeds.push(Input { chunks, fds: 0 });
    }
    Ok(seeds)
}

/// Sends the input's chunks on `fd` (descriptors on the first), never blocking: what does not
/// fit is left out, as a peer that stopped writing.
fn send_input(fd: BorrowedFd<'_>, input: &Input, attach: &[OwnedFd]) {
    for (i, c) in input.chunks.iter().enumerate() {
        let borrowed: Vec<BorrowedFd<'_>> = if i == 0 {
            attach.iter().map(AsFd::as_fd).collect()
        } else {
            Vec::new()
        };
        let mut space = [std::mem::MaybeUninit::<u8>::uninit(); 256];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !borrowed.is_empty() {
            control.push(SendAncillaryMessage::ScmRights(&borrowed));
        }
        let iov = [std::io::IoSlice::new(c)];
        if rustix::net::sendmsg(
            fd,
            &iov,
            &mut control,
            SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
        )
        .is_err()
        {
            return;
        }
    }
}

/// Sets the header's length (to the bytes that follow it in `total`) and descriptor count.
fn set_header(c: &mut [u8], len: u64, fds: u8) {
    if c.len() >= HEADER_LEN {
        c[..8].copy_from_slice(&len.to_le_bytes());
        c[8..HEADER_LEN].copy_from_slice(&u32::from(fds).to_le_bytes());
    }
}

/// Records: the first record's header counts every byte after it, in all records.
fn fix_records(i: &mut Input) {
    let total: usize = i.chunks.iter().map(Vec::len).sum();
    let fds = i.fds;
    if let Some(c) = i.chunks.first_mut() {
        set_header(c, total.saturating_sub(HEADER_LEN) as u64, fds);
    }
}

/// A stream, or records that are each a whole frame (the handshake's): each chunk is one
/// frame.
fn fix_stream(i: &mut Input) {
    let fds = i.fds;
    for c in &mut i.chunks {
        let len = c.len().saturating_sub(HEADER_LEN) as u64;
        set_header(c, len, fds);
    }
}

fn outcome<T>(r: ipc_core::Result<T>) -> Outcome {
    match r {
        Ok(_) => Outcome::Decoded,
        Err(_) => Outcome::Refused,
    }
}

fn recv_sample(t: Transport, input: &Input) -> anyhow::Result<Outcome> {
    let (raw, conn) = pair(t)?;
    conn.set_max_message_size(1 << 20);
    send_input(raw.as_fd(), input, &[]);
    // End of file after the input: a frame cut short is refused at once.
    let _ = rustix::net::shutdown(&raw, rustix::net::Shutdown::Write);
    Ok(outcome(conn.recv_timeout::<Sample>(Duration::from_secs(1))))
}

thread_local! {
    /// Segments whose descriptors ride on the fd target's frames (dup'd per input).
    static SEGMENTS: Vec<Segment> = (0..5).map(|_| Segment::new(4096).expect("a segment")).collect();
}

fn fd_seeds() -> anyhow::Result<Vec<Input>> {
    let mut seeds = Vec::new();
    for k in 0..4usize {
        let (raw, conn) = pair(Transport::Records)?;
        let segs: Vec<Segment> = (0..k)
            .map(|_| Segment::new(4096))
            .collect::<Result<_, _>>()?;
        conn.send(&(k as u8, segs))?;
        let chunks = drain(raw.as_fd());
        // The descriptors that came with the records close here; the target attaches fresh ones.
        seeds.push(Input {
            chunks,
            fds: k as u8,
        });
    }
    Ok(seeds)
}

fn recv_segments(input: &Input) -> anyhow::Result<Outcome> {
    let (raw, conn) = pair(Transport::Records)?;
    let attach: Vec<OwnedFd> = SEGMENTS.with(|s| {
        s.iter()
            .take(usize::from(input.fds).min(5))
            .filter_map(|seg| seg.as_fd().try_clone_to_owned().ok())
            .collect()
    });
    send_input(raw.as_fd(), input, &attach);
    drop(attach);
    let _ = rustix::net::shutdown(&raw, rustix::net::Shutdown::Write);
    Ok(outcome(conn.recv_timeout::<(u8, Vec<Segment>)>(
        Duration::from_secs(1),
    )))
}

const KEY: &[u8] = b"chaos fuzz key";

/// A frame as `send_bytes` writes it, read raw.
fn frame_of(bytes: &[u8]) -> anyhow::Result<Vec<Vec<u8>>> {
    let (raw, conn) = pair(Transport::Records)?;
    conn.send_bytes(bytes)?;
    Ok(drain(raw.as_fd()))
}

fn answer_seeds() -> anyhow::Result<Vec<Input>> {
    let mut seeds = Vec::new();
    for (salt, verdict) in [
        (37u8, &b"#WELCOME#"[..]),
        (11, b"#WELCOME#"),
        (5, b"#FAILURE#"),
    ] {
        let mut challenge = b"#CHALLENGE#{sha256}".to_vec();
        challenge.extend((0..32u8).map(|i| i.wrapping_mul(salt)));
        let mut chunks = frame_of(&challenge)?;
        chunks.extend(frame_of(verdict)?);
        seeds.push(Input { chunks, fds: 0 });
    }
    Ok(seeds)
}

fn answer(input: &Input) -> anyhow::Result<Outcome> {
    let (raw, conn) = pair(Transport::Records)?;
    send_input(raw.as_fd(), input, &[]);
    let _ = rustix::net::shutdown(&raw, rustix::net::Shutdown::Write);
    Ok(outcome(
        conn.answer_challenge(KEY, Some(Duration::from_secs(1))),
    ))
}

fn deliver_seeds() -> anyhow::Result<Vec<Input>> {
    let mut answer = b"{sha256}".to_vec();
    answer.extend([0u8; 32]);
    Ok(vec![Input {
        chunks: frame_of(&answer)?,
        fds: 0,
    }])
}

/// The MAC an honest answerer sends for `nonce`.
fn mac(nonce: &[u8]) -> Vec<u8> {
    use hmac::{Hmac, KeyInit, Mac};
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(KEY).expect("any key length");
    m.update(b"{sha256}");
    m.update(nonce);
    m.finalize().into_bytes().to_vec()
}

fn deliver(input: &Input) -> anyhow::Result<Outcome> {
    let (raw, conn) = pair(Transport::Records)?;
    let challenger = std::thread::spawn(move || {
        outcome(conn.deliver_challenge(KEY, Some(Duration::from_secs(1))))
    });
    // The challenge: "#CHALLENGE#{sha256}" and the nonce, after the 12-byte header.
    let mut buf = vec![0u8; 512];
    let got = rustix::net::recv(&raw, &mut buf[..], RecvFlags::empty()).map(|(n, _)| n);
    let mut input = input.clone();
    if let Ok(n) = got
        && n >= HEADER_LEN + 19 + 32
        && input.fds.is_multiple_of(2)
        && let Some(c) = input.chunks.first_mut()
        && c.len() >= HEADER_LEN + 8 + 32
    {
        let nonce = &buf[HEADER_LEN + 19..n];
        c[HEADER_LEN + 8..HEADER_LEN + 40].copy_from_slice(&mac(nonce));
    }
    input.fds = 0;
    send_input(raw.as_fd(), &input, &[]);
    let _ = rustix::net::shutdown(&raw, rustix::net::Shutdown::Write);
    // The verdict, if any, is read by nobody: the socket closes with it.
    // A panic in the challenger is the target's panic.
    Ok(challenger
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p)))
}

/// The ring of the queue target (4 KiB), reused by every input.
const RING: usize = 4096;

thread_local! {
    static QUEUE: ipc_sync::Queue<Sample> =
        ipc_sync::Queue::with_capacity(RING, 0).expect("a queue");
}

fn ring_seeds() -> anyhow::Result<Vec<Input>> {
    let sets: Vec<Vec<Sample>> = vec![
        samples()
            .into_iter()
            .filter(|s| !matches!(s, Sample::Bytes(b) if b.len() > 1000))
            .collect(),
        vec![Sample::Unit],
        vec![Sample::Text("x".repeat(1500)), Sample::Num(1, 2)],
    ];
    let mut seeds = Vec::new();
    for set in sets {
        let q = ipc_sync::Queue::<Sample>::with_capacity(RING, 0)?;
        for s in set {
            q.put(s).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        let (head, tail, data) = q.__snapshot();
        let used = (tail & ((1 << 40) - 1)) as usize;
        let mut words = head.to_le_bytes().to_vec();
        words.extend(tail.to_le_bytes());
        seeds.push(Input {
            chunks: vec![words, data[..used.min(RING)].to_vec()],
            fds: 0,
        });
    }
    Ok(seeds)
}

/// Structure: the tail publishes exactly the bytes given, from a head at 0 (records counted
/// from the frames' LAST flags).
fn fix_ring(i: &mut Input) {
    if i.chunks.len() < 2 {
        return;
    }
    let data = &i.chunks[1];
    let mut at = 0usize;
    let mut records = 0u64;
    while at + 8 <= data.len() {
        let len = u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes")) as usize;
        let flags = u32::from_le_bytes(data[at + 4..at + 8].try_into().expect("4 bytes"));
        records += u64::from(flags & 2 != 0);
        at += (8 + len + 7) & !7;
    }
    let tail = (records << 40) | data.len() as u64;
    let mut words = 0u64.to_le_bytes().to_vec();
    words.extend(tail.to_le_bytes());
    i.chunks[0] = words;
}

fn ring_get(input: &Input) -> anyhow::Result<Outcome> {
    let word = |i: usize| -> u64 {
        input
            .chunks
            .first()
            .and_then(|c| c.get(i * 8..i * 8 + 8))
            .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    let data = input.chunks.get(1).map_or(&[][..], Vec::as_slice);
    QUEUE.with(|q| {
        q.__scribble(word(0), word(1), data);
        let mut out = Outcome::Refused;
        for _ in 0..8 {
            match q.try_get() {
                Ok(_) => out = Outcome::Decoded,
                Err(ipc_sync::GetError::Decode(_)) => {}
                Err(_) => break,
            }
        }
        Ok(out)
    })
}

const MANAGER_KEY: &[u8] = b"chaos fuzz manager";

/// Relays one connection to the server, recording what the client sends.
fn relay_one(
    client: Connection,
    server_at: &ipc_core::conn::Address,
    sessions: &std::sync::Mutex<Vec<Vec<Vec<u8>>>>,
) {
    let Ok(server) = ipc_core::conn::connect(server_at, None) else {
        return;
    };
    let (Ok((to_client, from_client)), Ok((to_server, from_server))) =
        (client.split(), server.split())
    else {
        return;
    };
    let Ok(server_fd) = from_server.as_fd().try_clone_to_owned() else {
        return;
    };
    let back = std::thread::spawn(move || {
        while let Ok(b) = from_server.recv_bytes() {
            if to_client.send_bytes(&b).is_err() {
                break;
            }
        }
    });
    let mut frames = Vec::new();
    while let Ok(b) = from_client.recv_bytes() {
        frames.push(b.clone());
        if to_server.send_bytes(&b).is_err() {
            break;
        }
    }
    // The client hung up: so do we, and the server then hangs up on the way back.
    let _ = rustix::net::shutdown(&server_fd, rustix::net::Shutdown::Write);
    let _ = back.join();
    if let Ok(mut s) = sessions.lock() {
        s.push(frames);
    }
}

/// What a real client says to a manager, recorded through a relay: the frames after the
/// handshake (its hello and its requests).
fn manager_seeds() -> anyhow::Result<Vec<Input>> {
    use ipc_core::conn::{Address, Listener, connect};
    use ipc_manager::Manager;
    // Over TCP: one socket carries everything (no descriptors, no shared-memory path).
    let m = Manager::builder()
        .address("127.0.0.1:0".parse()?)
        .authkey(MANAGER_KEY.to_vec())
        .start()?;
    let relay = Listener::bind(&"127.0.0.1:0".parse()?, None)?;
    let relay_at: Address = relay.address().clone();
    let server_at = m.address().clone();
    // Every connection the client makes is relayed and recorded (it may open several).
    let sessions = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Vec<Vec<u8>>>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acceptor = {
        let (sessions, stop) = (sessions.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut relays = Vec::new();
            while let Ok(client) = relay.accept() {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let (server_at, sessions) = (server_at.clone(), sessions.clone());
                relays.push(std::thread::spawn(move || {
                    relay_one(client, &server_at, &sessions)
                }));
            }
            for r in relays {
                let _ = r.join();
            }
        })
    };
    {
        let c = Manager::connect(&relay_at, MANAGER_KEY)?;
        let d = c.dict::<String, u64>()?;
        d.insert("a".into(), 1)?;
        let _ = d.get("a")?;
        let _ = d.len()?;
        let ns = c.namespace()?;
        ns.set("x", &3u32)?;
        let l = c.list([1u8, 2, 3])?;
        l.push(4)?;
        let _ = l.len()?;
        let q = c.queue::<String>(0)?;
        q.put("hi".into())?;
        let _ = q.len()?;
        let _ = c.stats()?;
    }
    // Wake the acceptor with one last connection, and let it finish.
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = connect(&relay_at, None);
    acceptor
        .join()
        .map_err(|_| anyhow::anyhow!("the relay panicked"))?;
    let frames = sessions
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .iter()
        .max_by_key(|s| s.len())
        .cloned()
        .unwrap_or_default();
    // The handshake is the first three frames the client sends (its answer, its challenge,
    // its verdict); the fuzzer's connections make their own.
    let session: Vec<Vec<u8>> = frames.into_iter().skip(3).collect();
    let mut seeds = vec![Input {
        chunks: session.clone(),
        fds: 0,
    }];
    // Shorter sessions too: the hello and each request alone.
    for r in session.iter().skip(1) {
        seeds.push(Input {
            chunks: vec![session[0].clone(), r.clone()],
            fds: 0,
        });
    }
    m.shutdown()?;
    Ok(seeds)
}

thread_local! {
    /// The server of the manager target, started once per fuzzing process (and again after
    /// an input that was a valid `Shutdown`).
    static MANAGER: std::cell::RefCell<Option<ipc_manager::Manager>> =
        const { std::cell::RefCell::new(None) };
}

fn manager_server() -> anyhow::Result<ipc_manager::Manager> {
    Ok(ipc_manager::Manager::builder()
        .address("127.0.0.1:0".parse()?)
        .authkey(MANAGER_KEY.to_vec())
        .start()?)
}

fn manager_requests(input: &Input) -> anyhow::Result<Outcome> {
    MANAGER.with(|slot| -> anyhow::Result<Outcome> {
        let mut slot = slot.borrow_mut();
        if slot.is_none() {
            *slot = Some(manager_server()?);
        }
        let m = slot.as_ref().expect("started above");
        let c = match ipc_core::conn::connect(m.address(), Some(MANAGER_KEY)) {
            Ok(c) => c,
            Err(_) => {
                // The previous input asked the server to shut down (a valid request): it must
                // have exited cleanly (code 0). Start another.
                let old = slot.take().expect("there");
                old.shutdown().map_err(|e| {
                    anyhow::anyhow!("the manager's server did not end cleanly: {e}")
                })?;
                *slot = Some(manager_server()?);
                return Ok(Outcome::Decoded);
            }
        };
        let mut decoded = 0;
        for (i, frame) in input.chunks.iter().enumerate() {
            if c.send_bytes(frame).is_err() {
                break;
            }
            let reply = match c.poll(Some(Duration::from_secs(1))) {
                Ok(true) => c.recv_bytes(),
                Ok(false) => Err(ipc_core::Error::Timeout),
                Err(e) => Err(e),
            };
            match reply {
                // A request that does not decode is answered so, then the server hangs up.
                Ok(reply) if contains(&reply, b"the connection is closed") => break,
                Ok(_) if i > 0 => decoded += 1,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        drop(c);
        // The server lives on whatever it was sent (or exits cleanly when told to).
        if !crate::harness::alive(m.server_pid()) {
            let old = slot.take().expect("there");
            old.shutdown()
                .map_err(|e| anyhow::anyhow!("the manager's server died: {e}"))?;
        }
        Ok(if decoded > 0 {
            Outcome::Decoded
        } else {
            Outcome::Refused
        })
    })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
