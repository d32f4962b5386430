//! The seed's communication and synchronization experiments: queues of tasks and results
//! served by workers, an Event, a Lock (and what happens when its holder is killed), a
//! Condition between two stages, a Semaphore and a Barrier. Every object lives in shared memory
//! and reaches the workers as an argument.

use std::time::Duration;

use ipc_core::process::{Builder, JoinHandle};
use ipc_sync::{
    AtomicValue, Barrier, Condition, Event, JoinableQueue, Lock, LockError, LockTimeoutError,
    Queue, Semaphore, Value,
};

use crate::{Res, conclude, nap, say, section};

pub(crate) fn run(epoch: u64) -> Res {
    queues(epoch)?;
    event(epoch)?;
    lock(epoch)?;
    condition(epoch)?;
    semaphore(epoch)?;
    barrier(epoch)?;
    Ok(())
}

/// Joins every handle, failing on the first child that did not finish well.
fn join_all<R: serde::de::DeserializeOwned>(workers: Vec<JoinHandle<R>>) -> Res<Vec<R>> {
    let mut out = Vec::with_capacity(workers.len());
    for w in workers {
        out.push(w.join()?);
    }
    Ok(out)
}

/// Starts `n` workers named `{name}-{i}` running `f(arg(i))`.
fn start<A, R>(name: &str, n: u32, arg: impl Fn(u32) -> A, f: fn(A) -> R) -> Res<Vec<JoinHandle<R>>>
where
    A: serde::Serialize + serde::de::DeserializeOwned,
    R: serde::Serialize + serde::de::DeserializeOwned,
{
    let mut workers = Vec::new();
    for i in 1..=n {
        workers.push(
            Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(arg(i), f)?,
        );
    }
    Ok(workers)
}

/// A task for the queue workers: how many primes are below `limit`?
fn count_primes(limit: u64) -> u64 {
    let mut sieve = vec![true; limit as usize];
    let mut count = 0;
    for i in 2..limit as usize {
        if sieve[i] {
            count += 1;
            for j in (i * i..limit as usize).step_by(i) {
                sieve[j] = false;
            }
        }
    }
    count
}

type Tasks = JoinableQueue<Option<u64>>;
type Results = Queue<(u64, u64, i32)>;

fn queue_worker((epoch, tasks, results): (u64, Tasks, Results)) -> u32 {
    let me = std::process::id() as i32;
    let mut done = 0;
    while let Ok(task) = tasks.get() {
        let Some(limit) = task else {
            let _ = tasks.task_done();
            break;
        };
        let primes = count_primes(limit);
        if results.put((limit, primes, me)).is_err() {
            break;
        }
        let _ = tasks.task_done();
        done += 1;
    }
    say(epoch, format!("served {done} tasks, exiting"));
    done
}

fn queues(epoch: u64) -> Res {
    section(
        8,
        "A queue of tasks and a queue of results, served by workers",
    );
    let tasks: Tasks = JoinableQueue::new()?;
    let results: Results = Queue::new()?;
    let workers = start(
        "worker",
        3,
        |_| (epoch, tasks.clone(), results.clone()),
        queue_worker,
    )?;
    let limits: Vec<u64> = (1..=9).map(|i| i * 100_000).collect();
    for &l in &limits {
        tasks.put(Some(l))?;
    }
    for _ in &workers {
        tasks.put(None)?;
    }
    tasks.join()?;
    say(epoch, "tasks.join() returned: every task is done");
    let mut answers: Vec<_> = (0..limits.len())
        .map(|_| results.get_timeout(Duration::from_secs(30)))
        .collect::<Result<_, _>>()?;
    answers.sort();
    for (limit, primes, pid) in &answers {
        say(
            epoch,
            format!("{primes:>6} primes below {limit:>7} (by pid {pid})"),
        );
    }
    let served = join_all(workers)?;
    say(epoch, format!("tasks served per worker: {served:?}"));
    conclude("any serde type travels through a Queue; a JoinableQueue counts tasks done");
    Ok(())
}

fn event_waiter((epoch, event, patient): (u64, Event, bool)) -> bool {
    if !patient {
        let set = event.wait_timeout(Duration::from_millis(100));
        say(
            epoch,
            format!("wait_timeout(0.1 s) returned {set}; waiting again"),
        );
    }
    say(epoch, "waiting for the event");
    event.wait();
    say(epoch, format!("the event is set: {}", event.is_set()));
    event.is_set()
}

fn event(epoch: u64) -> Res {
    section(9, "An Event signals between processes");
    let event = Event::new()?;
    let waiters = start(
        "waiter",
        2,
        |i| (epoch, event.clone(), i == 1),
        event_waiter,
    )?;
    nap(300);
    say(epoch, "event.set()");
    event.set();
    let seen = join_all(waiters)?;
    conclude(&format!(
        "both waiters woke when the main process set the event (saw it set: {seen:?})"
    ));
    Ok(())
}

fn locked_worker((epoch, lock, total): (u64, Lock, Value<u64>)) -> u64 {
    let mut mine = 0;
    for round in 0..3 {
        let guard = lock.acquire().unwrap_or_else(LockError::into_guard);
        say(epoch, format!("has the lock (round {round})"));
        // The shared resource: a read-modify-write that would lose updates without the lock.
        let before = total.get();
        nap(20);
        total.set(before + 1);
        mine += 1;
        drop(guard);
    }
    mine
}

fn holder_then_killed((lock, held): (Lock, Event)) {
    let guard = lock.acquire().unwrap_or_else(LockError::into_guard);
    held.set();
    nap(60_000);
    drop(guard);
}

fn lock(epoch: u64) -> Res {
    section(10, "A Lock controls access to a shared resource");
    let lock = Lock::new()?;
    let total = Value::new(0u64)?;
    let workers = start(
        "locker",
        3,
        |_| (epoch, lock.clone(), total.clone()),
        locked_worker,
    )?;
    let rounds: u64 = join_all(workers)?.iter().sum();
    say(
        epoch,
        format!(
            "{rounds} locked read-modify-write rounds, shared total = {}",
            total.get()
        ),
    );

    if total.get() != rounds {
        return Err(format!("lost updates: {} of {rounds}", total.get()).into());
    }

    let held = Event::new()?;
    let doomed = Builder::new()
        .name("doomed")
        .spawn((lock.clone(), held.clone()), holder_then_killed)?;
    if !held.wait_timeout(Duration::from_secs(30)) {
        return Err("the doomed process never took the lock".into());
    }
    say(
        epoch,
        format!("pid {} holds the lock; SIGKILL it", doomed.pid()),
    );
    doomed.kill()?;
    let _ = doomed.join();
    match lock.acquire_timeout(Duration::from_secs(10)) {
        Ok(_) => return Err("the lock should report its dead owner".into()),
        Err(LockTimeoutError::OwnerDied(guard)) => {
            say(
                epoch,
                "acquire() -> Err(OwnerDied(guard)): we hold the lock and may repair",
            );
            drop(guard);
        }
        Err(e) => return Err(format!("the lock stayed held by a dead process: {e}").into()),
    }
    conclude(
        "no update was lost; a holder that dies does not leave the lock stuck: the next\n\
         acquirer is told (like EOWNERDEAD) and holds it",
    );
    Ok(())
}

fn stage_1((epoch, cond, stage): (u64, Condition, AtomicValue<u32>)) {
    say(epoch, "stage 1: working");
    nap(300);
    let guard = cond.acquire().unwrap_or_else(LockError::into_guard);
    stage.store(1);
    say(epoch, "stage 1: done, notify_all()");
    guard.notify_all();
}

fn stage_2((epoch, cond, stage): (u64, Condition, AtomicValue<u32>)) -> u32 {
    let guard = cond.acquire().unwrap_or_else(LockError::into_guard);
    say(epoch, "stage 2: waiting for stage 1");
    let guard = guard
        .wait_for(|| stage.load() == 1)
        .unwrap_or_else(LockError::into_guard);
    let seen = stage.load();
    drop(guard);
    say(epoch, "stage 2: running");
    seen
}

fn condition(epoch: u64) -> Res {
    section(11, "A Condition synchronizes two stages");
    let cond = Condition::new()?;
    let stage = AtomicValue::new(0u32)?;
    let second = start(
        "stage-2",
        2,
        |_| (epoch, cond.clone(), stage.clone()),
        stage_2,
    )?;
    nap(100);
    let first = Builder::new()
        .name("stage-1")
        .spawn((epoch, cond.clone(), stage.clone()), stage_1)?;
    first.join()?;
    let seen = join_all(second)?;
    conclude(&format!(
        "stage 2 ran only after stage 1 notified (stage seen by stage 2: {seen:?})"
    ));
    Ok(())
}

fn limited_worker(
    (epoch, sem, active, peak): (u64, Semaphore, AtomicValue<u32>, AtomicValue<u32>),
) {
    let _slot = sem.acquire();
    let now = active.fetch_add(1) + 1;
    peak.fetch_max(now);
    say(epoch, format!("working ({now} active)"));
    nap(150);
    active.fetch_sub(1);
}

fn semaphore(epoch: u64) -> Res {
    section(12, "A Semaphore limits concurrent access");
    let sem = Semaphore::new(2)?;
    let active = AtomicValue::new(0u32)?;
    let peak = AtomicValue::new(0u32)?;
    let workers = start(
        "limited",
        5,
        |_| (epoch, sem.clone(), active.clone(), peak.clone()),
        limited_worker,
    )?;
    join_all(workers)?;
    if peak.load() > 2 {
        return Err(format!("{} workers held two slots at once", peak.load()).into());
    }
    conclude(&format!(
        "five workers, two slots: at most {} were ever active at once",
        peak.load()
    ));
    Ok(())
}

fn party((epoch, barrier, delay, released): (u64, Barrier, u64, AtomicValue<u32>)) -> u32 {
    nap(delay);
    say(
        epoch,
        format!("arrives at the barrier ({} waiting)", barrier.n_waiting()),
    );
    let index = barrier
        .wait_with(Some(Duration::from_secs(30)), || {
            released.fetch_add(1);
            say(epoch, "last to arrive: runs the barrier's action");
        })
        .unwrap_or(u32::MAX);
    say(epoch, format!("passed the barrier, arrival index {index}"));
    index
}

fn barrier(epoch: u64) -> Res {
    section(13, "A Barrier: parties meet before going on");
    let barrier = Barrier::new(3)?;
    let actions = AtomicValue::new(0u32)?;
    let parties = start(
        "party",
        3,
        |i| (epoch, barrier.clone(), u64::from(i) * 150, actions.clone()),
        party,
    )?;
    let mut indices = join_all(parties)?;
    indices.sort();
    conclude(&format!(
        "all passed together; arrival indices {indices:?}; the action ran {} time(s)",
        actions.load()
    ));
    Ok(())
}
