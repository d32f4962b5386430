//! The forkserver killed in the middle of starts (its own test binary: it kills this process's
//! server over and over, which would disturb other tests sharing it). A start either gives a
//! child that ran its function once, or is served by a replacement server; a function never
//! runs twice, and a start that failed never ran its function.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{LONG, builder, kill_pid, wait_gone};
use ipc_core::process::{self, StartMethod};

/// Leaves a mark `<token>.<pid>` in `dir`: proof of each run of the function.
fn mark((dir, token): (PathBuf, u32)) -> u32 {
    std::fs::write(dir.join(format!("{token}.{}", std::process::id())), b"").unwrap();
    token
}

fn noop((): ()) {}

fn runs_per_token(dir: &Path) -> HashMap<u32, usize> {
    let mut runs = HashMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        let (token, _pid) = name.split_once('.').unwrap();
        *runs.entry(token.parse().unwrap()).or_default() += 1;
    }
    runs
}

#[test]
fn a_server_killed_during_starts_never_runs_a_function_twice() {
    let dir = std::env::temp_dir().join(format!("ipc-core-forkserver-kill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut failed = Vec::new();
    for i in 0..100u32 {
        if process::forkserver_pid().is_none() {
            builder(StartMethod::ForkServer)
                .spawn((), noop)
                .unwrap()
                .join()
                .unwrap();
        }
        let server = process::forkserver_pid().expect("a forkserver runs");
        // Kill the server at a different moment of each start (0 to 400 us into it).
        let delay = Duration::from_micros(u64::from(i * 37 % 400));
        let killer = std::thread::spawn(move || {
            let t = Instant::now();
            while t.elapsed() < delay {
                std::hint::spin_loop();
            }
            kill_pid(server);
        });
        match builder(StartMethod::ForkServer).spawn((dir.clone(), i), mark) {
            // Whether the child ran depends on when the server died; it is ours either way
            // (the server forks its children as our children), so its exit is known.
            Ok(h) => assert!(h.join_timeout(LONG).is_ok(), "start {i}: no exit"),
            Err(e) => failed.push((i, e.to_string())),
        }
        killer.join().unwrap();
        assert!(wait_gone(server, LONG));
    }
    // Orphaned children (if any) would run now: give them time to leave their marks.
    std::thread::sleep(Duration::from_millis(300));
    let runs = runs_per_token(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let twice: Vec<_> = runs.iter().filter(|&(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "functions run more than once: {twice:?}");
    let failed_but_ran: Vec<_> = failed
        .iter()
        .filter(|(i, _)| runs.contains_key(i))
        .collect();
    assert!(
        failed_but_ran.is_empty(),
        "failed starts that ran: {failed_but_ran:?}"
    );
    assert!(
        failed.is_empty(),
        "starts failed because the server was killed: {failed:?}"
    );
}

/// A small xorshift generator: the storm is random but replayable from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// SIGKILLs `pid` if it is still an unreaped child of `me` (through a pidfd opened before the
/// check, so a recycled pid is never hit).
fn kill_if_child(me: u32, pid: u32) {
    let Some(p) = common::raw_pid(pid) else {
        return;
    };
    let Ok(fd) = rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()) else {
        return;
    };
    let state = common::children_of(me)
        .into_iter()
        .find_map(|(p, s)| (p == pid).then_some(s));
    if matches!(state, Some('S' | 'R')) {
        let _ = rustix::process::pidfd_send_signal(&fd, rustix::process::Signal::KILL);
    }
}

/// The function of the storm's children: leaves its mark, returns a value derived from the
/// token (so a wrong answer cannot pass); one in three takes 2 ms, long enough to be killed.
fn mark_and_answer(arg: (PathBuf, u32)) -> u64 {
    let token = mark(arg);
    if token.is_multiple_of(3) {
        std::thread::sleep(Duration::from_millis(2));
    }
    u64::from(token) * 7 + 3
}

/// In its own process (so the forkserver is its own): `starts` forkserver starts while a thread
/// SIGKILLs, at random moments, the server, the idle prepared child or the running child.
/// Returns what went wrong (nothing, if all is well), and how many starts failed, how many
/// children were killed and how many servers served.
fn storm((dir, starts, seed): (PathBuf, u32, u64)) -> (Vec<String>, usize, usize, usize) {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
    use std::sync::{Arc, Mutex};
    let me = std::process::id();
    let running = Arc::new(AtomicU32::new(0));
    let server = Arc::new(AtomicU32::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let (running, server, stop) = (running.clone(), server.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut rng = Rng(seed | 1);
            while !stop.load(Relaxed) {
                std::thread::sleep(Duration::from_micros(rng.below(400)));
                let (run, srv) = (running.load(Relaxed), server.load(Relaxed));
                let victim = match rng.below(3) {
                    0 => srv,
                    1 => run,
                    // The idle prepared child: a child that is neither the server nor running.
                    _ => common::children_of(me)
                        .into_iter()
                        .map(|(p, _)| p)
                        .find(|&p| p != srv && p != run)
                        .unwrap_or(0),
                };
                kill_if_child(me, victim);
            }
        })
    };
    let outcomes = Mutex::new(Vec::new());
    let mut failed = Vec::new();
    let mut servers = std::collections::HashSet::new();
    for token in 0..starts {
        match builder(StartMethod::ForkServer).spawn((dir.clone(), token), mark_and_answer) {
            Err(_) => failed.push(token),
            Ok(h) => {
                running.store(h.pid(), Relaxed);
                let srv = process::forkserver_pid().unwrap_or(0);
                servers.insert(srv);
                server.store(srv, Relaxed);
                let r = h.join();
                running.store(0, Relaxed);
                outcomes.lock().unwrap().push((token, r));
            }
        }
    }
    stop.store(true, Relaxed);
    killer.join().unwrap();
    // The killer's last signal may still be on its way into the idle prepared child: let it land,
    // so that the next start finds that child dead (and takes another) rather than handing its
    // start to a child about to die (which reports -9, as any kill does).
    std::thread::sleep(Duration::from_millis(100));
    let mut problems: Vec<String> = Vec::new();
    let mut killed = 0;
    for (token, r) in outcomes.into_inner().unwrap() {
        match r {
            Ok(v) if v == u64::from(token) * 7 + 3 => {}
            Err(process::JoinError::Signaled(9)) => killed += 1,
            other => problems.push(format!("start {token}: {other:?}")),
        }
    }
    // After the storm, starts work again, and nothing is left but the server and one idle
    // prepared child (no zombie, no straggler).
    for token in starts..starts + 3 {
        match builder(StartMethod::ForkServer).spawn((dir.clone(), token), mark_and_answer) {
            Ok(h) => match h.join() {
                Ok(v) if v == u64::from(token) * 7 + 3 => {}
                other => problems.push(format!("clean start {token} after the storm: {other:?}")),
            },
            Err(e) => problems.push(format!("clean start {token} after the storm: {e}")),
        }
    }
    let children = common::children_of(me);
    if children.len() > 2 || children.iter().any(|&(_, s)| s == 'Z') {
        problems.push(format!("children after the storm: {children:?}"));
    }
    let runs = runs_per_token(&dir);
    problems.extend(
        runs.iter()
            .filter(|&(_, &n)| n > 1)
            .map(|(t, n)| format!("token {t} ran {n} times")),
    );
    problems.extend(
        failed
            .iter()
            .filter(|t| runs.contains_key(t))
            .map(|t| format!("start {t} failed but its function ran")),
    );
    (problems, failed.len(), killed, servers.len())
}

// Kills anything of the forkserver's at random moments (server, idle prepared child, running
// child): every start gives the right value, a kill (-9) or an error; no function runs twice
// or after its start failed; nothing is left behind; starts work afterwards.
#[test]
fn a_kill_storm_loses_nothing_and_runs_nothing_twice() {
    let dir =
        std::env::temp_dir().join(format!("ipc-core-forkserver-storm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let h = builder(StartMethod::Spawn)
        .spawn((dir.clone(), 150u32, seed), storm)
        .unwrap();
    let _kill = common::KillOnPanic(vec![h.pid()]);
    let done = h.join_timeout(Duration::from_secs(120));
    assert!(done.is_ok(), "the storm hung (seed {seed}): {done:?}");
    let (problems, failed, killed, servers) = h.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(problems.is_empty(), "seed {seed}: {problems:#?}");
    // The storm must have hit something, or it proved nothing.
    assert!(
        killed > 0 && servers > 1,
        "seed {seed}: a storm that killed {killed} children and {} servers",
        servers.saturating_sub(1)
    );
    eprintln!(
        "storm (seed {seed}): 150 starts, {failed} failed with an error, {killed} children \
         killed, {servers} servers"
    );
}

fn plus_one(x: u32) -> u32 {
    x + 1
}

/// The tests that stop this process's forkserver take turns (under `cargo test` they share it).
static STOPS_THE_SERVER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// This process's forkserver, SIGSTOPped until the guard is dropped (then SIGCONT, whatever the
/// test's outcome: other tests of this process use the server).
struct StoppedServer {
    pid: u32,
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl StoppedServer {
    fn new() -> StoppedServer {
        let turn = STOPS_THE_SERVER.lock().unwrap_or_else(|p| p.into_inner());
        builder(StartMethod::ForkServer)
            .spawn((), noop)
            .unwrap()
            .join()
            .unwrap();
        let pid = process::forkserver_pid().expect("the server is running");
        common::raw_pid(pid)
            .map(|p| rustix::process::kill_process(p, rustix::process::Signal::STOP))
            .expect("a pid")
            .unwrap();
        StoppedServer { pid, _turn: turn }
    }
}

impl Drop for StoppedServer {
    fn drop(&mut self) {
        if let Some(p) = common::raw_pid(self.pid) {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::CONT);
        }
    }
}

// Review finding 6: a start waiting on the forkserver held the process lock, so while the server
// was slow (here: stopped), current_process, active_children and starts by other methods waited
// too. The forkserver has a lock of its own now: they answer, and the stalled start completes
// once the server runs again.
#[test]
fn a_stalled_forkserver_start_stalls_nothing_else() {
    let resume = StoppedServer::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let starter = std::thread::spawn(move || {
        tx.send(common::current_tid()).unwrap();
        // The first start may take the child the server prepared before it stopped; the second
        // needs the stopped server.
        let a = builder(StartMethod::ForkServer).spawn(1, plus_one)?;
        let b = builder(StartMethod::ForkServer).spawn(2, plus_one)?;
        Ok::<_, ipc_core::Error>((a.join().unwrap(), b.join().unwrap()))
    });
    let tid = rx.recv().unwrap();
    assert!(
        common::eventually(|| {
            std::thread::sleep(Duration::from_millis(50));
            !starter.is_finished()
                && common::blocked_in(process::pid(), tid)
                    .is_some_and(|n| n == 47 || common::SYS_POLL.contains(&n))
        }),
        "the start never waited on the stopped server"
    );
    let t = Instant::now();
    let me = process::current_process();
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "current_process waited {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    let _ = process::active_children();
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "active_children waited {:?}",
        t.elapsed()
    );
    // Another method starts and finishes meanwhile.
    let other = builder(StartMethod::Spawn).spawn(41, plus_one).unwrap();
    assert_eq!(other.join().unwrap(), 42);
    assert!(!starter.is_finished(), "the server was stopped all along");
    drop(resume);
    assert_eq!(starter.join().unwrap().unwrap(), (2, 3));
    assert!(!me.name.is_empty());
}

// Issue #11, window 4: a SIGSTOPped forkserver made every later start wait forever. A start now
// gives a server that does not answer up after its answer timeout (10 s), replaces it (the
// stopped one is killed and reaped) and runs on the new one.
#[test]
fn a_stopped_forkserver_is_replaced_and_the_start_goes_on() {
    let server = StoppedServer::new();
    let stopped = server.pid;
    // The first start may take the child prepared before the stop; the second needs the server.
    let t = Instant::now();
    let results: Vec<u32> = (0..2)
        .map(|i| {
            builder(StartMethod::ForkServer)
                .spawn(i, plus_one)
                .unwrap()
                .join()
                .unwrap()
        })
        .collect();
    drop(server);
    assert_eq!(results, [1, 2]);
    assert!(t.elapsed() < LONG, "the starts took {:?}", t.elapsed());
    let now = process::forkserver_pid().expect("a new server");
    assert_ne!(now, stopped, "the stopped server was kept");
    assert!(
        wait_gone(stopped, LONG),
        "the stopped server was not killed and reaped"
    );
}

/// Arms the double death (every server dies with the first child it forks, both before they
/// say a word), makes a start, disarms, makes another; returns whether the first failed, the
/// second's result, and this process's children that are zombies.
#[cfg(feature = "failpoints")]
fn start_through_double_deaths((): ()) -> (bool, u32, Vec<u32>) {
    ipc_core::failpoint::arm("forkserver.forked");
    let first_failed = match builder(StartMethod::ForkServer).spawn(1, plus_one) {
        Ok(h) => h.join().is_err(),
        Err(_) => true,
    };
    ipc_core::failpoint::disarm();
    let second = builder(StartMethod::ForkServer)
        .spawn(2, plus_one)
        .unwrap()
        .join()
        .unwrap();
    let zombies = common::children_of(process::pid())
        .into_iter()
        .filter(|&(_, state)| state == 'Z')
        .map(|(pid, _)| pid)
        .collect();
    (first_failed, second, zombies)
}

// Issue #11, window 4: a forkserver and the child it just forked, killed before either told us
// the child's pid, left a zombie of ours that nobody knew of until we exited. Replacing the
// server now kills and reaps its process group, where such a child still is. (In a process of
// its own: the failpoint is inherited by every server that process starts.)
#[cfg(feature = "failpoints")]
#[test]
fn a_server_and_its_new_child_dying_together_leave_no_zombie() {
    let h = builder(StartMethod::Spawn)
        .spawn((), start_through_double_deaths)
        .unwrap();
    let (first_failed, second, zombies) = h.join().unwrap();
    assert!(first_failed, "a start succeeded on servers that all died");
    assert_eq!(second, 3);
    assert_eq!(zombies, Vec::<u32>::new(), "unknown children left unreaped");
}

/// Makes a zygote, sends its pid, and waits to be killed.
fn zygote_owner(tx: ipc_core::conn::Connection) {
    let z = process::Zygote::new().unwrap();
    tx.send(&z.pid()).unwrap();
    std::thread::sleep(LONG);
}

// Found by `cargo xtask chaos` (scenario pool-owner under fork): a zygote is a fork of its
// owner and kept the owner's end of its own control channel, so when the owner was SIGKILLed
// the zygote waited on that channel forever, an orphan. It now closes that copy first.
#[test]
fn a_zygote_dies_with_its_owner() {
    let (ours, theirs) = ipc_core::conn::pipe().unwrap();
    let owner = builder(StartMethod::Spawn)
        .spawn(theirs, zygote_owner)
        .unwrap();
    let zygote: u32 = ours.recv_timeout(LONG).unwrap();
    owner.kill().unwrap();
    assert_eq!(owner.join_timeout(LONG).unwrap(), -9);
    let gone = wait_gone(zygote, LONG);
    if !gone {
        kill_pid(zygote);
    }
    assert!(gone, "the zygote outlived its owner");
}
