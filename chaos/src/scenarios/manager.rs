//! The manager with its server, a client, or its owner killed.
//!
//! ```text
//! manager-server  2 client children each insert 300 keys of their own into a dict (and read
//!                 each back); the server dies (manager.server.applied: an operation applied,
//!                 its reply not sent; or at random): every client call ends with a value or
//!                 an error (ServerGone), none pending HANG later
//! manager-client  the same with one client dying (manager.client.sent: a request sent, its
//!                 reply not read; or at random): the other client's keys are all there and
//!                 right, and the server's sessions and connections return to one (ours)
//! manager-owner   a child starts a manager and calls it in a loop; the runner kills the
//!                 child: its server is gone within 1 s
//! ```

use std::time::{Duration, Instant};

use ipc_core::process::StartMethod;
use ipc_manager::{Dict, Manager};

use super::Scenario;
use crate::harness::{Counts, Ctx, HANG, Kill, alive, reap_victim, settle};

const KEYS: u64 = 300;

pub(super) fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "manager-server",
            about: "Manager: the server dies mid-call",
            points: &["manager.server.applied"],
            max_nth: 400,
            window_us: 60_000,
            run: server,
        },
        Scenario {
            name: "manager-client",
            about: "Manager: a client dies mid-call",
            points: &["manager.client.sent"],
            max_nth: 300,
            window_us: 8_000,
            run: client_dies,
        },
        Scenario {
            name: "manager-owner",
            about: "Manager: its owner dies; the server follows within 1 s",
            points: &[],
            max_nth: 1,
            window_us: 100_000,
            run: owner,
        },
    ]
}

/// Inserts this client's keys and reads each back: the number of keys confirmed, or the
/// error that ended it (any error is fine once the server is dead; a wrong value is not).
fn client((d, who, kill): (Dict<u64, u64>, u64, Option<Kill>)) -> Result<u64, String> {
    if let Some(k) = kill {
        k.arm();
    }
    for i in 0..KEYS {
        let key = who * KEYS + i;
        d.insert(key, key * 3).map_err(|e| e.to_string())?;
        match d.get(&key).map_err(|e| e.to_string())? {
            Some(v) if v == key * 3 => {}
            other => return Err(format!("TORN key {key}: {other:?}")),
        }
    }
    Ok(KEYS)
}

fn arm_server(kill: Kill) {
    kill.arm();
}

fn start(c: &Ctx, arm: bool) -> anyhow::Result<Manager> {
    let mut b = Manager::builder().start_method(c.method);
    if arm {
        b = b.initializer(arm_server, c.kill.clone());
    }
    Ok(b.start()?)
}

fn server(c: &mut Ctx) -> anyhow::Result<Counts> {
    let mut counts = Counts::default();
    let m = start(c, c.kill.point().is_some())?;
    let pid = m.server_pid();
    let d: Dict<u64, u64> = match m.dict() {
        Ok(d) => d,
        // Armed to die at its first operation: the dict's creation.
        Err(ipc_manager::Error::ServerGone(_)) if c.kill.point().is_some() => {
            counts.killed = true;
            dropped_in_time(m, &mut counts);
            return Ok(counts);
        }
        Err(e) => return Err(e.into()),
    };
    let mut clients = Vec::new();
    for who in 0..2 {
        match c.builder().spawn((d.clone(), who, None), client) {
            Ok(h) => clients.push(h),
            // The armed server may die while the proxy is shared for this client: a clear
            // error then, and one client fewer.
            Err(e) if !alive(pid) || c.kill.point().is_some() && m.stats().is_err() => {
                counts.note(format!("(a client could not start: {e})"));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let at = c.strike_pid(pid);
    let outcomes = settle(clients, at + HANG, &mut counts, "a client");
    for o in outcomes.into_iter().flatten() {
        if let Err(e) = o
            && e.starts_with("TORN")
        {
            counts.torn += 1;
            counts.note(e);
        }
    }
    let deadline = Instant::now() + HANG;
    while alive(pid) && Instant::now() < deadline && c.kill.delay().is_some() {
        std::thread::sleep(Duration::from_millis(2));
    }
    counts.killed = !alive(pid) || m.stats().is_err();
    drop(d);
    dropped_in_time(m, &mut counts);
    Ok(counts)
}

/// Drops the manager of a dead server: a hang if that takes HANG.
fn dropped_in_time(m: Manager, counts: &mut Counts) {
    let dropped = std::thread::spawn(move || drop(m));
    let deadline = Instant::now() + HANG;
    while !dropped.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    if !dropped.is_finished() {
        counts.hangs += 1;
        counts.note("dropping the manager of a dead server hung");
    }
}

fn client_dies(c: &mut Ctx) -> anyhow::Result<Counts> {
    let mut counts = Counts::default();
    let m = start(c, false)?;
    let d: Dict<u64, u64> = m.dict()?;
    let base = m.stats()?;
    let victim = c
        .builder()
        .spawn((d.clone(), 0, Some(c.kill.clone())), client)?;
    let survivor = c.builder().spawn((d.clone(), 1, None), client)?;
    let at = c.strike(&victim);
    reap_victim(&victim, &mut counts);
    for o in settle(vec![survivor], at + HANG, &mut counts, "the client")
        .into_iter()
        .flatten()
    {
        if let Err(e) = o {
            counts.lost += 1;
            counts.note(format!("the surviving client: {e}"));
        }
    }
    for i in 0..KEYS {
        let key = KEYS + i;
        match d.get(&key) {
            Ok(Some(v)) if v == key * 3 => {}
            Ok(Some(v)) => {
                counts.torn += 1;
                counts.note(format!("key {key} = {v}"));
            }
            Ok(None) => counts.lost += 1,
            Err(e) => {
                counts.hangs += 1;
                counts.note(format!("the server after a client's death: {e}"));
                break;
            }
        }
    }
    // The dead client's sessions and connections are gone with it.
    let deadline = Instant::now() + HANG;
    loop {
        let now = m.stats()?;
        if now.sessions <= base.sessions && now.connections <= base.connections {
            break;
        }
        if Instant::now() > deadline {
            counts.leaks += 1;
            counts.note(format!(
                "sessions {} (was {}), connections {} (was {})",
                now.sessions, base.sessions, now.connections, base.connections
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(d);
    m.shutdown()?;
    Ok(counts)
}

fn owning((method, kill): (StartMethod, Kill)) -> u64 {
    kill.arm();
    let m = Manager::builder()
        .start_method(method)
        .start()
        .expect("a manager");
    let d: Dict<u64, u64> = m.dict().expect("a dict");
    let mut n = 0;
    loop {
        d.insert(n % 64, n).expect("insert");
        n += 1;
    }
}

fn owner(c: &mut Ctx) -> anyhow::Result<Counts> {
    // A head start: the owner starts its server before the random kill's clock runs.
    crate::harness::kill_owner(c, owning, Duration::from_millis(30), "the manager's owner")
}
