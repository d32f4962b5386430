//! The seed's process experiments: workers interleaving, daemons, `join` with a timeout,
//! `terminate`, `cpu_count`, the three start methods, and a pipe carrying typed messages.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipc_core::conn::{Connection, pipe};
use ipc_core::process::{self, Builder, JoinError, RemoteFn, StartMethod};
use serde::{Deserialize, Serialize};

use crate::{Res, conclude, nap, say, section};

/// The seed's `sleepy_worker`: announces itself, naps `naps` times, says goodbye.
fn sleepy_worker((epoch, naps, ms): (u64, u32, u64)) {
    say(epoch, "starting");
    for i in 0..naps {
        say(epoch, format!("sleep time: {i}"));
        nap(ms);
    }
    say(epoch, "exiting");
}

/// The seed's `normal_worker`: starts and exits at once.
fn normal_worker(epoch: u64) {
    say(epoch, "starting");
    say(epoch, "exiting");
}

pub(crate) fn run(epoch: u64) -> Res {
    interleaving(epoch)?;
    daemons(epoch)?;
    join_with_timeout(epoch)?;
    terminate_and_exit_codes(epoch)?;
    cpus()?;
    start_methods(epoch)?;
    typed_pipe(epoch)?;
    Ok(())
}

fn interleaving(epoch: u64) -> Res {
    section(1, "A sleepy and a normal worker");
    let sleepy = Builder::new()
        .name("sleepy")
        .spawn((epoch, 3, 300), sleepy_worker)?;
    let normal = Builder::new().name("normal").spawn(epoch, normal_worker)?;
    say(
        epoch,
        format!(
            "started sleepy (pid {}) and normal (pid {})",
            sleepy.pid(),
            normal.pid()
        ),
    );
    normal.join()?;
    sleepy.join()?;
    conclude("the children ran side by side: neither blocked the other");
    Ok(())
}

/// The child program of the daemon experiment (the binary run as `demo daemon-child`).
///
/// It starts a sleepy daemon, then a normal worker, and returns from `main` while the daemon
/// still sleeps. With `orphan`, it instead waits forever to be killed by the tour.
pub(crate) fn daemon_program(orphan: bool, epoch: u64) -> Res {
    say(epoch, "child program: main starts");
    let sleepy = Builder::new()
        .name("sleepy")
        .daemon(true)
        .spawn((epoch, 3, 300), sleepy_worker)?;
    // Machine-readable, for the tour to check on the daemon afterwards.
    println!("DAEMON_PID {}", sleepy.pid());
    if orphan {
        loop {
            nap(1000);
        }
    }
    nap(400);
    let normal = Builder::new().name("normal").spawn(epoch, normal_worker)?;
    normal.join()?;
    say(
        epoch,
        "child program: main returns (the daemon is still sleeping)",
    );
    Ok(())
}

/// Whether `pid` names a live process (a zombie counts as dead).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

fn daemon_pid(line: &str) -> Option<i32> {
    line.strip_prefix("DAEMON_PID ")?.trim().parse().ok()
}

fn daemons(epoch: u64) -> Res {
    section(2, "Daemons stop with their main process");
    let exe = std::env::current_exe()?;
    println!(
        "  running the child program: {} daemon-child",
        exe.display()
    );
    let out = Command::new(&exe)
        .args(["daemon-child", &epoch.to_string()])
        .stderr(Stdio::inherit())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut daemon = None;
    for line in text.lines() {
        match daemon_pid(line) {
            Some(pid) => daemon = Some(pid),
            None => println!("{line}"),
        }
    }
    let daemon = daemon.ok_or("the child program did not report its daemon")?;
    if !out.status.success() {
        return Err(format!("the child program failed: {}", out.status).into());
    }
    let finished = text
        .lines()
        .any(|l| l.contains("sleepy") && l.contains("exiting"));
    say(
        epoch,
        format!(
            "child program exited ({}); daemon pid {daemon} alive: {}; sleepy said 'exiting': {}",
            out.status,
            alive(daemon),
            finished
        ),
    );
    if alive(daemon) || finished {
        return Err("the daemon outlived its main process".into());
    }
    conclude(
        "when main returns, non-daemon children are joined and daemons are terminated:\n\
         the sleepy daemon never finished its naps",
    );

    println!("\n  now the child program is SIGKILLed while its daemon sleeps:");
    let mut child = Command::new(&exe)
        .args(["daemon-orphan", &epoch.to_string()])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    let mut daemon = None;
    for line in lines.by_ref() {
        let line = line?;
        match daemon_pid(&line) {
            Some(pid) => {
                daemon = Some(pid);
                break;
            }
            None => println!("{line}"),
        }
    }
    let Some(daemon) = daemon else {
        let _ = child.kill();
        let _ = child.wait();
        return Err("the child program did not report its daemon".into());
    };
    nap(100);
    child.kill()?;
    let status = child.wait()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(daemon) && Instant::now() < deadline {
        nap(10);
    }
    say(
        epoch,
        format!(
            "child program killed ({status}); daemon pid {daemon} alive: {}",
            alive(daemon)
        ),
    );
    if alive(daemon) {
        return Err("the daemon outlived its killed main process".into());
    }
    conclude("a killed main process takes its daemons along (their lifeline hangs up)");
    Ok(())
}

fn join_with_timeout(epoch: u64) -> Res {
    section(3, "join with a timeout");
    let sleepy = Builder::new()
        .name("sleepy")
        .spawn((epoch, 3, 200), sleepy_worker)?;
    let first = match sleepy.join_timeout(Duration::from_millis(250)) {
        Ok(code) => format!("exit code {code}"),
        Err(ipc_core::Error::Timeout) => "a timeout error".to_string(),
        Err(e) => return Err(e.into()),
    };
    say(
        epoch,
        format!(
            "join_timeout(0.25 s) returned {first}: is_alive = {}, exitcode = {:?}",
            sleepy.is_alive(),
            sleepy.exitcode()
        ),
    );
    let exitcode = sleepy.join_timeout(Duration::from_secs(30))?;
    say(
        epoch,
        format!("second join returned: exitcode = {exitcode:?}"),
    );
    conclude("join(timeout) waits at most that long; start every process before joining any");
    Ok(())
}

fn sleep_forever(epoch: u64) {
    say(epoch, "sleeping until somebody stops me");
    loop {
        nap(1000);
    }
}

fn panicking_worker(n: u32) -> u32 {
    if n > 2 {
        panic!("{n} is more than I can handle");
    }
    n
}

fn terminate_and_exit_codes(epoch: u64) -> Res {
    section(4, "terminate, kill and exit codes");
    let endless = Builder::new().name("endless").spawn(epoch, sleep_forever)?;
    nap(200);
    say(epoch, format!("terminate() pid {}", endless.pid()));
    endless.terminate()?;
    endless.join_timeout(Duration::from_secs(30))?;
    say(
        epoch,
        format!(
            "exitcode = {:?} (-15: ended by SIGTERM)",
            endless.exitcode()
        ),
    );

    let endless = Builder::new().name("endless").spawn(epoch, sleep_forever)?;
    nap(200);
    endless.kill()?;
    match endless.join() {
        Err(e @ JoinError::Signaled(_)) => say(epoch, format!("after kill(): {e}")),
        other => return Err(format!("expected a signal, got {other:?}").into()),
    }

    let fine = Builder::new().name("careful").spawn(2, panicking_worker)?;
    say(epoch, format!("careful returned {}", fine.join()?));
    let boom = Builder::new().name("careless").spawn(3, panicking_worker)?;
    eprintln!("  (the panic message below comes from the child's stderr)");
    let err = boom
        .join()
        .err()
        .ok_or("the careless worker should have panicked")?;
    say(epoch, format!("careless: exitcode 1, join error: {err}"));
    conclude(
        "Python's convention: 0 on success, 1 when the function panicked, -N when killed by \
         signal N;\njoin gives the typed return value, like std::thread::JoinHandle",
    );
    Ok(())
}

fn cpus() -> Res {
    section(5, "cpu_count");
    println!(
        "  cpu_count() = {} (the system's CPUs), process_cpu_count() = {} (the CPUs this \
         process may run on)",
        process::cpu_count(),
        process::process_cpu_count()
    );
    Ok(())
}

/// Reports where it runs: its pid, its parent's pid (as the kernel sees it) and how it was
/// started.
fn whoami(_: ()) -> (u32, u32, String) {
    let me = process::current_process();
    let parent = rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get() as u32);
    let method = me.start_method.map_or("?".into(), |m| m.to_string());
    (me.pid, parent, method)
}

fn start_methods(epoch: u64) -> Res {
    section(6, "Start methods: fork, spawn, forkserver");
    for method in [
        StartMethod::Fork,
        StartMethod::Spawn,
        StartMethod::ForkServer,
    ] {
        let t = Instant::now();
        let child = Builder::new().start_method(method).spawn((), whoami)?;
        let (pid, parent, how) = child.join()?;
        if parent != std::process::id() {
            return Err(
                format!("the {method} child's parent is {parent}, not this process").into(),
            );
        }
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        say(
            epoch,
            format!(
                "{method:<10}: child pid {pid}, parent {parent}, started by {how}; start+join {ms:.2} ms"
            ),
        );
    }
    if let Some(server) = process::forkserver_pid() {
        say(
            epoch,
            format!(
                "the forkserver (pid {server}) forked the forkserver child ahead of time, as a \
                 child of this process: we reap it"
            ),
        );
    }
    conclude(
        "fork copies this process; spawn re-executes this binary and routes the child to its\n\
         function before main; forkserver asks a clean single-threaded server to fork (each\n\
         start takes a child forked while the previous one ran)",
    );
    Ok(())
}

/// A task sent down the pipe: any `Serialize` type travels.
#[derive(Debug, Serialize, Deserialize)]
enum Task {
    Square(u64),
    Reverse(String),
    Sum(Vec<i64>),
    Stop,
}

/// What comes back.
#[derive(Debug, Serialize, Deserialize)]
enum Answer {
    Square(u64, u64),
    Reverse(String),
    Sum(i64),
}

fn pipe_worker((conn, epoch): (Connection, u64)) -> u32 {
    let mut served = 0;
    loop {
        let task: Task = match conn.recv() {
            Ok(t) => t,
            Err(e) => {
                say(epoch, format!("pipe closed: {e}"));
                break;
            }
        };
        say(epoch, format!("got {task:?}"));
        let answer = match task {
            Task::Square(n) => Answer::Square(n, n * n),
            Task::Reverse(s) => Answer::Reverse(s.chars().rev().collect()),
            Task::Sum(v) => Answer::Sum(v.iter().sum()),
            Task::Stop => break,
        };
        if conn.send(&answer).is_err() {
            break;
        }
        served += 1;
    }
    served
}

fn typed_pipe(epoch: u64) -> Res {
    section(7, "A pipe carrying typed tasks and results");
    let (here, there) = pipe()?;
    let worker = Builder::new()
        .name("pipe-worker")
        .spawn((there, epoch), pipe_worker)?;
    let tasks = [
        Task::Square(12),
        Task::Reverse("multiprocessing".into()),
        Task::Sum(vec![1, 2, 3, 4, 5, -6]),
    ];
    for task in &tasks {
        here.send(task)?;
        let answer: Answer = here.recv()?;
        say(epoch, format!("answer {answer:?}"));
    }
    here.send(&Task::Stop)?;
    let served = worker.join()?;
    say(epoch, format!("the worker served {served} tasks"));
    conclude("messages keep their boundaries and their types (serde + postcard)");
    Ok(())
}

fn cube(x: u64) -> u64 {
    x * x * x
}

fn shout(s: String) -> String {
    s.to_uppercase()
}

/// A worker that knows none of the functions it runs: each message is a handle and an encoded
/// argument, and it sends back the encoded result.
fn handle_worker((conn, epoch): (Connection, u64)) -> u32 {
    let mut ran = 0;
    while let Ok(Some((f, arg))) = conn.recv::<Option<(RemoteFn<(), ()>, Vec<u8>)>>() {
        let reply = f
            .call_encoded(&arg, Vec::new())
            .map(|(bytes, _)| bytes)
            .map_err(|e| e.to_string());
        say(
            epoch,
            format!(
                "ran a function handle: {} byte(s) back",
                reply.as_ref().map_or(0, Vec::len)
            ),
        );
        if conn.send(&reply).is_err() {
            break;
        }
        ran += 1;
    }
    ran
}

/// Section 14: functions sent to a worker that is already running (what a pool does), and a
/// forged handle refused.
pub(crate) fn function_handles(epoch: u64) -> Res {
    section(14, "A running worker runs the functions it is sent");
    let (here, there) = pipe()?;
    let worker = Builder::new()
        .name("handle-worker")
        .spawn((there, epoch), handle_worker)?;
    let ask = |f: RemoteFn<(), ()>,
               arg: Vec<u8>|
     -> Result<Result<Vec<u8>, String>, Box<dyn std::error::Error>> {
        here.send(&Some((f, arg)))?;
        Ok(here.recv()?)
    };
    let cubed = ask(RemoteFn::new(cube)?.erase(), postcard::to_stdvec(&7u64)?)??;
    say(
        epoch,
        format!("cube(7) = {}", postcard::from_bytes::<u64>(&cubed)?),
    );
    let shouted = ask(RemoteFn::new(shout)?.erase(), postcard::to_stdvec("hello")?)??;
    say(
        epoch,
        format!(
            "shout(\"hello\") = {:?}",
            postcard::from_bytes::<String>(&shouted)?
        ),
    );
    // A handle's bytes changed in transit (its code offset pointed elsewhere) never run.
    let mut forged = postcard::to_stdvec(&RemoteFn::new(cube)?)?;
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let refused = postcard::from_bytes::<RemoteFn<u64, u64>>(&forged).is_err();
    say(epoch, format!("a forged handle is refused: {refused}"));
    here.send(&None::<(RemoteFn<(), ()>, Vec<u8>)>)?;
    let ran = worker.join()?;
    say(
        epoch,
        format!("the worker ran {ran} functions it had never been told about"),
    );
    conclude(
        "functions travel as checked handles (build id + family tag), never as code addresses anyone can forge",
    );
    Ok(())
}
