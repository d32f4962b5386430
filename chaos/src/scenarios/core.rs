//! ipc-core's transport and starts with a process killed: a connection's peer mid-message, and
//! the forkserver (with the child it forks) mid-start.
//!
//! ```text
//! connection   a child sends 60 messages of up to 1 MiB (id, bytes, checksum) over a socket
//!              pair and counts in the board those its `send` returned; the runner receives.
//!              The sender dies (conn.send.partial: between two writes of one frame), or the
//!              receiver does (a child, the runner sending): the survivor gets whole messages
//!              then a clear error, never a hang or a torn message; every message whose send
//!              returned reaches a live receiver
//! forkserver   a driver child (spawned: a forkserver of its own) starts 6 children through its
//!              forkserver; the server dies with the child it just forked (forkserver.forked),
//!              or the runner kills the server at random; every start succeeds with the right
//!              value or fails with an error; two starts after it all succeed, and then the
//!              driver has no zombie (a server that died between starts, and the child it
//!              died with, are reaped at the next start)
//! ```

use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use ipc_core::conn::Connection;
use ipc_core::process::{Builder, StartMethod};
use serde::{Deserialize, Serialize};

use super::Scenario;
use crate::harness::{Counts, Ctx, HANG, Kill, Rng, board, checksum, reap_victim, settle};

const MESSAGES: u64 = 60;
const SENT: usize = 0;
const RECEIVED: usize = 1;
const SERVER: usize = 2;
const STRUCK: usize = 3;

pub(super) fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "connection-peer",
            about: "Connection: the sender dies mid-message, or the receiver dies",
            points: &["conn.send.partial"],
            max_nth: 8,
            window_us: 30_000,
            run: connection,
        },
        Scenario {
            name: "forkserver",
            about: "the forkserver and the child it forks die mid-start",
            points: &["forkserver.forked"],
            max_nth: 6,
            window_us: 20_000,
            run: forkserver,
        },
    ]
}

#[derive(Serialize, Deserialize)]
struct Message {
    id: u64,
    bytes: Vec<u8>,
    sum: u64,
}

fn message(id: u64, rng: &mut Rng) -> Message {
    let len = match rng.below(4) {
        0 => rng.below(1 << 20),
        _ => rng.below(4096),
    } as usize;
    let bytes: Vec<u8> = (0..len).map(|i| (i as u8) ^ (id as u8)).collect();
    Message {
        id,
        sum: checksum(id, &bytes),
        bytes,
    }
}

fn sender((conn, b, seed, kill): (Connection, crate::harness::Board, u64, Option<Kill>)) {
    if let Some(k) = kill {
        k.arm();
    }
    let mut rng = Rng::new(seed);
    for id in 0..MESSAGES {
        if conn.send(&message(id, &mut rng)).is_err() {
            return;
        }
        b[SENT].store(id + 1, SeqCst);
    }
}

fn receiver((conn, b, kill): (Connection, crate::harness::Board, Option<Kill>)) -> u64 {
    if let Some(k) = kill {
        k.arm();
    }
    let mut torn = 0;
    while let Ok(m) = conn.recv::<Message>() {
        if m.sum != checksum(m.id, &m.bytes) {
            torn += 1;
        }
        b[RECEIVED].fetch_add(1, SeqCst);
    }
    torn
}

fn connection(c: &mut Ctx) -> anyhow::Result<Counts> {
    let b = board()?;
    let mut counts = Counts::default();
    let (ours, theirs) = ipc_core::conn::pipe()?;
    let sender_dies = c.kill.point().is_some() || c.pick(2) == 0;
    let seed = c.rng.next_u64();
    if sender_dies {
        let victim = c
            .builder()
            .spawn((theirs, b.clone(), seed, Some(c.kill.clone())), sender)?;
        let (stop, stopped) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut got = 0u64;
            let mut torn = 0u64;
            let mut expect = 0u64;
            let mut order = 0u64;
            loop {
                match ours.recv_timeout::<Message>(HANG) {
                    Ok(m) => {
                        got += 1;
                        if m.sum != checksum(m.id, &m.bytes) {
                            torn += 1;
                        }
                        if m.id != expect {
                            order += 1;
                        }
                        expect = m.id + 1;
                    }
                    Err(ipc_core::Error::Timeout) => {
                        let _ = stop.send(());
                        return (got, torn, order, true);
                    }
                    Err(_) => return (got, torn, order, false),
                }
            }
        });
        c.strike(&victim);
        reap_victim(&victim, &mut counts);
        drop(stopped);
        let (got, torn, order, hung) = reader.join().expect("the reader thread");
        counts.torn += torn + order;
        if hung {
            counts.hangs += 1;
            counts.note("the receiver was still waiting after the sender died");
        }
        let sent = b[SENT].load(SeqCst);
        if got < sent {
            counts.lost += sent - got;
            counts.note(format!("{sent} sent, {got} received"));
        }
        if got > sent + 1 {
            counts.duplicated += got - sent - 1;
        }
    } else {
        let victim = c
            .builder()
            .spawn((theirs, b.clone(), Some(c.kill.clone())), receiver)?;
        let (done, finished) = std::sync::mpsc::channel();
        let writer = std::thread::spawn(move || {
            let mut rng = Rng::new(seed);
            for id in 0..MESSAGES {
                if ours.send(&message(id, &mut rng)).is_err() {
                    break;
                }
            }
            let _ = done.send(());
        });
        let at = c.strike(&victim);
        match victim.join_timeout(HANG) {
            Ok(code) => counts.killed = code == -9,
            Err(_) => {
                counts.hangs += 1;
                let _ = victim.kill();
                let _ = victim.join_timeout(HANG);
            }
        }
        if finished
            .recv_timeout(HANG.saturating_sub(at.elapsed()))
            .is_err()
        {
            counts.hangs += 1;
            counts.note("a send was still blocked after its receiver died");
        } else {
            let _ = writer.join();
        }
        if counts.killed {
            // Only a receiver that was not killed ran to its end and reported.
        } else if let Ok(torn) = victim.join() {
            counts.torn += torn;
        }
    }
    Ok(counts)
}

fn plus_one(x: u64) -> u64 {
    x + 1
}

/// What the driver saw: starts that worked, starts that failed cleanly, wrong values,
/// whether the start after it all worked, and its zombies.
#[derive(Debug, Serialize, Deserialize)]
struct Driven {
    ok: u32,
    failed: u32,
    wrong: u32,
    after: bool,
    zombies: Vec<u32>,
    /// The forkservers seen and the children started, for the report.
    seen: Vec<String>,
}

fn driver((b, kill, random): (crate::harness::Board, Option<Kill>, bool)) -> Driven {
    // Armed here, the point reaches every forkserver this driver starts (its environment).
    if let Some(k) = kill {
        k.arm();
    }
    let fs = || Builder::new().start_method(StartMethod::ForkServer);
    let mut d = Driven {
        ok: 0,
        failed: 0,
        wrong: 0,
        after: false,
        zombies: Vec::new(),
        seen: Vec::new(),
    };
    for i in 0..6u64 {
        match fs().spawn(i, plus_one).map(|h| (h.pid(), h.join())) {
            Ok((pid, Ok(v))) if v == i + 1 => {
                d.ok += 1;
                d.seen.push(format!("child {pid}"));
            }
            Ok((_, Ok(_))) => d.wrong += 1,
            Ok((pid, Err(e))) => {
                d.failed += 1;
                d.seen.push(format!("child {pid} failed: {e}"));
            }
            Err(e) => {
                d.failed += 1;
                d.seen.push(format!("start failed: {e}"));
            }
        }
        if let Some(pid) = ipc_core::process::forkserver_pid() {
            b[SERVER].store(u64::from(pid), SeqCst);
            d.seen.push(format!("server {pid}"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Kill::disarm();
    // A random kill lands while the starts go on: wait for it (the runner raises STRUCK).
    let deadline = std::time::Instant::now() + HANG;
    while random && b[STRUCK].load(SeqCst) == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    // A server that died between two starts is found, replaced and reaped at the next start.
    // The current server may still be armed (it dies at a fork it makes for a later start):
    // kill it too, then two starts on an unarmed one, and nothing of a dead server may be left.
    if let Some(pid) = ipc_core::process::forkserver_pid() {
        crate::harness::kill_pid(pid);
    }
    let start = |x: u64| fs().spawn(x, plus_one).ok().and_then(|h| h.join().ok());
    let _ = start(40);
    d.after = start(41) == Some(42);
    d.zombies = crate::harness::zombies_of(ipc_core::process::pid());
    d
}

fn forkserver(c: &mut Ctx) -> anyhow::Result<Counts> {
    let b = board()?;
    let mut counts = Counts::default();
    // The driver is spawned, so it has a forkserver of its own to kill.
    let d = Builder::new().start_method(StartMethod::Spawn).spawn(
        (
            b.clone(),
            c.kill.point().map(|_| c.kill.clone()),
            c.kill.delay().is_some(),
        ),
        driver,
    )?;
    if c.kill.delay().is_some() {
        let deadline = Instant::now() + HANG;
        while b[SERVER].load(SeqCst) == 0 && Instant::now() < deadline && d.is_alive() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let server = b[SERVER].load(SeqCst) as u32;
        if server != 0 {
            let at = c.strike_pid(server);
            while crate::harness::alive(server) && at.elapsed() < Duration::from_secs(1) {
                std::thread::sleep(Duration::from_millis(1));
            }
            counts.killed = !crate::harness::alive(server);
        }
        b[STRUCK].store(1, SeqCst);
    }
    let driven = settle(
        vec![d],
        Instant::now() + 3 * HANG,
        &mut counts,
        "the driver",
    );
    if let Some(Some(driven)) = driven.into_iter().next() {
        if c.kill.point().is_some() {
            counts.killed = driven.failed > 0;
        }
        counts.torn += u64::from(driven.wrong);
        if !driven.after {
            counts.hangs += 1;
            counts.note("no start worked after the server's deaths");
        }
        if !driven.zombies.is_empty() {
            counts.leaks += driven.zombies.len() as u64;
            counts.note(format!(
                "the driver's zombies: {:?} (seen: {})",
                driven.zombies,
                driven.seen.join(", ")
            ));
        }
    }
    Ok(counts)
}
