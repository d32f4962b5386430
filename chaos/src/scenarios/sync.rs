//! Locks, semaphores, conditions, barriers and events with one participant killed.
//!
//! ```text
//! lock, rlock      3 workers x 2000 critical sections over a board (a, b incremented apart,
//!                  `inside` = the holder's pid); a taker that gets OwnerDied repairs; one
//!                  seeing a != b without OwnerDied counts torn, one finding `inside` set
//!                  counts duplicated
//! semaphore        3 workers on Semaphore(2): never more than 2 live holders (duplicated);
//!                  a dead holder's unit is lost by design, the survivors go on with the other
//! condition        2 notifiers put tokens (notify(1) each), 2 waiters take them; one of the
//!                  four dies; a token left with a live waiter asleep for HANG is a hang
//! barrier          3 parties x 30 generations, 2 s barrier timeout: survivors return
//! event            2 untimed waiters and a setter; one dies; the runner sets the event if
//!                  nobody did: waiters still asleep HANG later hang
//! ```

use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use ipc_sync::{Barrier, Condition, Event, Lock, LockTimeoutError, RLock, Semaphore};
use serde::{Deserialize, Serialize};

use super::Scenario;
use crate::harness::{Board, Counts, Ctx, HANG, Kill, board, reap_victim, settle};

const ITERS: u32 = 2000;
// Board slots.
const INSIDE: usize = 0;
const A: usize = 1;
const B: usize = 2;
const TORN: usize = 3;
const DUP: usize = 4;
const REPAIRS: usize = 5;
const TOKENS: usize = 6;
const STOP: usize = 7;

pub(super) fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "lock-holder",
            about: "Lock: a holder dies anywhere in its critical section",
            points: &["lock.acquired", "lock.releasing"],
            max_nth: ITERS,
            window_us: 6_000,
            run: |c| critical_sections(c, Kind::Lock),
        },
        Scenario {
            name: "rlock-holder",
            about: "RLock (nested twice): a holder dies anywhere",
            points: &["lock.acquired", "lock.releasing"],
            max_nth: ITERS,
            window_us: 6_000,
            run: |c| critical_sections(c, Kind::RLock),
        },
        Scenario {
            name: "semaphore-holder",
            about: "Semaphore(2): a holder dies; the others go on",
            points: &[],
            max_nth: 1,
            window_us: 6_000,
            run: semaphore,
        },
        Scenario {
            name: "condition",
            about: "Condition: a waiter or a notifier dies",
            points: &["condition.notified", "lock.acquired", "lock.releasing"],
            max_nth: 60,
            window_us: 20_000,
            run: condition,
        },
        Scenario {
            name: "barrier-party",
            about: "Barrier(3, timeout 2 s): a party dies",
            points: &["barrier.arrived", "lock.acquired"],
            max_nth: 30,
            window_us: 4_000,
            run: barrier,
        },
        Scenario {
            name: "event",
            about: "Event: a waiter or the setter dies",
            points: &["event.set.before_wake"],
            max_nth: 1,
            window_us: 5_000,
            run: event,
        },
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Kind {
    Lock,
    RLock,
}

#[derive(Serialize, Deserialize)]
enum AnyLock {
    Lock(Lock),
    RLock(RLock),
}

/// The critical section: `inside` must be free, `a == b` unless a holder died (repaired by
/// whoever got OwnerDied), then both move, apart.
fn critical(b: &Board, me: u64) {
    if b[INSIDE].swap(me, SeqCst) != 0 {
        b[DUP].fetch_add(1, SeqCst);
    }
    if b[A].load(SeqCst) != b[B].load(SeqCst) {
        b[TORN].fetch_add(1, SeqCst);
    }
    b[A].fetch_add(1, SeqCst);
    for _ in 0..50 {
        std::hint::spin_loop();
    }
    b[B].fetch_add(1, SeqCst);
    b[INSIDE].store(0, SeqCst);
}

/// What a taker from a dead holder does: put the state right.
fn repair(b: &Board) {
    b[INSIDE].store(0, SeqCst);
    b[B].store(b[A].load(SeqCst), SeqCst);
    b[REPAIRS].fetch_add(1, SeqCst);
}

fn lock_worker((lock, b, kill): (AnyLock, Board, Option<Kill>)) {
    if let Some(k) = kill {
        k.arm();
    }
    let me = u64::from(ipc_core::process::pid());
    for _ in 0..ITERS {
        match &lock {
            AnyLock::Lock(l) => {
                let _g = l.acquire().unwrap_or_else(|e| {
                    let g = e.into_guard();
                    repair(&b);
                    g
                });
                critical(&b, me);
            }
            AnyLock::RLock(l) => {
                let _outer = l.acquire().unwrap_or_else(|e| {
                    let g = e.into_guard();
                    repair(&b);
                    g
                });
                let _inner = l.acquire().unwrap_or_else(|e| e.into_guard());
                critical(&b, me);
            }
        }
    }
}

fn critical_sections(c: &mut Ctx, kind: Kind) -> anyhow::Result<Counts> {
    let b = board()?;
    let lock = || -> anyhow::Result<AnyLock> {
        Ok(match kind {
            Kind::Lock => AnyLock::Lock(Lock::new()?),
            Kind::RLock => AnyLock::RLock(RLock::new()?),
        })
    };
    let l = lock()?;
    let share = |l: &AnyLock| match l {
        AnyLock::Lock(x) => AnyLock::Lock(x.clone()),
        AnyLock::RLock(x) => AnyLock::RLock(x.clone()),
    };
    let mut counts = Counts::default();
    let victim = c
        .builder()
        .spawn((share(&l), b.clone(), Some(c.kill.clone())), lock_worker)?;
    let survivors = (0..2)
        .map(|_| c.builder().spawn((share(&l), b.clone(), None), lock_worker))
        .collect::<Result<Vec<_>, _>>()?;
    let at = c.strike(&victim);
    reap_victim(&victim, &mut counts);
    settle(survivors, at + HANG, &mut counts, "a worker");
    counts.torn += b[TORN].load(SeqCst);
    counts.duplicated += b[DUP].load(SeqCst);
    // Afterwards the lock is free or its holder is dead: the runner takes it at once.
    let taken = match &l {
        AnyLock::Lock(x) => !matches!(x.acquire_timeout(HANG), Err(LockTimeoutError::Timeout)),
        AnyLock::RLock(x) => !matches!(x.acquire_timeout(HANG), Err(LockTimeoutError::Timeout)),
    };
    if !taken {
        counts.hangs += 1;
        counts.note("the lock could not be taken after the round");
    }
    Ok(counts)
}

fn semaphore_worker((sem, b, kill): (Semaphore, Board, Option<Kill>)) {
    if let Some(k) = kill {
        k.arm();
    }
    for _ in 0..ITERS {
        let g = sem.acquire();
        // A holder killed inside leaves both its unit and its count taken, so the count
        // never exceeds the units: a third holder at once is two too many.
        if b[INSIDE].fetch_add(1, SeqCst) >= 2 {
            b[DUP].fetch_add(1, SeqCst);
        }
        for _ in 0..50 {
            std::hint::spin_loop();
        }
        b[INSIDE].fetch_sub(1, SeqCst);
        drop(g);
    }
}

fn semaphore(c: &mut Ctx) -> anyhow::Result<Counts> {
    let b = board()?;
    let sem = Semaphore::new(2)?;
    let mut counts = Counts::default();
    let victim = c.builder().spawn(
        (sem.clone(), b.clone(), Some(c.kill.clone())),
        semaphore_worker,
    )?;
    let survivors = (1..3)
        .map(|_| {
            c.builder()
                .spawn((sem.clone(), b.clone(), None), semaphore_worker)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let at = c.strike(&victim);
    reap_victim(&victim, &mut counts);
    settle(survivors, at + HANG, &mut counts, "a worker");
    counts.duplicated += b[DUP].load(SeqCst);
    Ok(counts)
}

const TOKENS_EACH: u64 = 40;

fn notifier((cond, b, kill): (Condition, Board, Option<Kill>)) {
    if let Some(k) = kill {
        k.arm();
    }
    for _ in 0..TOKENS_EACH {
        let g = cond.acquire().unwrap_or_else(|e| e.into_guard());
        b[TOKENS].fetch_add(1, SeqCst);
        g.notify(1);
        drop(g);
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn waiter((cond, b, kill): (Condition, Board, Option<Kill>)) {
    if let Some(k) = kill {
        k.arm();
    }
    loop {
        let g = cond.acquire().unwrap_or_else(|e| e.into_guard());
        let g = g
            .wait_for(|| b[TOKENS].load(SeqCst) > 0 || b[STOP].load(SeqCst) != 0)
            .unwrap_or_else(|e| e.into_guard());
        if b[TOKENS].load(SeqCst) > 0 {
            b[TOKENS].fetch_sub(1, SeqCst);
        } else {
            return;
        }
        drop(g);
    }
}

fn condition(c: &mut Ctx) -> anyhow::Result<Counts> {
    let b = board()?;
    let cond = Condition::new()?;
    let mut counts = Counts::default();
    // The notifier's failpoint kills a notifier; the others any of the four.
    let who = if c.kill.point() == Some("condition.notified") {
        c.pick(2)
    } else {
        c.pick(4)
    };
    let mut victim = None;
    let mut notifiers = Vec::new();
    let mut waiters = Vec::new();
    for i in 0..4 {
        let kill = (i == who).then(|| c.kill.clone());
        let f = if i < 2 { notifier } else { waiter };
        let h = c.builder().spawn((cond.clone(), b.clone(), kill), f)?;
        if i == who {
            victim = Some(h);
        } else if i < 2 {
            notifiers.push(h);
        } else {
            waiters.push(h);
        }
    }
    let victim = victim.expect("one participant is the victim");
    let at = c.strike(&victim);
    // A waiter that was not killed runs until STOP: reaped after it.
    if who < 2 {
        reap_victim(&victim, &mut counts);
    }
    settle(notifiers, at + HANG, &mut counts, "a notifier");
    // Every token put must be taken by a live waiter.
    let deadline = Instant::now() + HANG;
    while b[TOKENS].load(SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    if b[TOKENS].load(SeqCst) > 0 {
        counts.hangs += 1;
        counts.note(format!(
            "{} token(s) left for {HANG:?} beside a live waiter",
            b[TOKENS].load(SeqCst)
        ));
    }
    {
        let g = cond.acquire().unwrap_or_else(|e| e.into_guard());
        b[STOP].store(1, SeqCst);
        g.notify_all();
    }
    if who >= 2 {
        reap_victim(&victim, &mut counts);
    }
    settle(waiters, Instant::now() + HANG, &mut counts, "a waiter");
    Ok(counts)
}

fn party((barrier, kill): (Barrier, Option<Kill>)) -> u32 {
    if let Some(k) = kill {
        k.arm();
    }
    let mut passed = 0;
    for _ in 0..30 {
        if barrier.wait().is_err() {
            break;
        }
        passed += 1;
    }
    passed
}

fn barrier(c: &mut Ctx) -> anyhow::Result<Counts> {
    let barrier = Barrier::with_timeout(3, Some(Duration::from_secs(2)))?;
    let mut counts = Counts::default();
    let victim = c
        .builder()
        .spawn((barrier.clone(), Some(c.kill.clone())), party)?;
    let survivors = (0..2)
        .map(|_| c.builder().spawn((barrier.clone(), None), party))
        .collect::<Result<Vec<_>, _>>()?;
    let at = c.strike(&victim);
    reap_victim(&victim, &mut counts);
    // A survivor may wait out the barrier's 2 s timeout: well inside HANG.
    let passed = settle(survivors, at + HANG, &mut counts, "a party");
    // Survivors pass together: at most one generation apart (one of them may have been
    // released by the generation whose end the other saw broken).
    if let [Some(x), Some(y)] = passed[..]
        && x.abs_diff(y) > 1
    {
        counts.torn += 1;
        counts.note(format!("survivors passed {x} and {y} generations"));
    }
    Ok(counts)
}

fn event_waiter((ev, kill): (Event, Option<Kill>)) {
    if let Some(k) = kill {
        k.arm();
    }
    ev.wait();
}

fn event_setter((ev, pause_us, kill): (Event, u64, Option<Kill>)) {
    if let Some(k) = kill {
        k.arm();
    }
    std::thread::sleep(Duration::from_micros(pause_us));
    ev.set();
}

fn event(c: &mut Ctx) -> anyhow::Result<Counts> {
    let ev = Event::new()?;
    let mut counts = Counts::default();
    // The failpoint is the setter's: its rounds kill the setter.
    let setter_dies = c.kill.point().is_some() || c.pick(2) == 0;
    let pause = 1000 + c.rng.below(4000);
    let kill = |dies: bool| dies.then(|| c.kill.clone());
    let waiters_dying = !setter_dies;
    let mut waiters = (0..2)
        .map(|i| {
            c.builder()
                .spawn((ev.clone(), kill(waiters_dying && i == 0)), event_waiter)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let setter = c
        .builder()
        .spawn((ev.clone(), pause, kill(setter_dies)), event_setter)?;
    let victim = if setter_dies { &setter } else { &waiters[0] };
    let at = c.strike(victim);
    reap_victim(victim, &mut counts);
    if setter_dies {
        // The setter may have died before its set: a live process sets it.
        if !ev.is_set() {
            ev.set();
        }
    } else {
        waiters.remove(0);
        settle(vec![setter], at + HANG, &mut counts, "the setter");
    }
    settle(waiters, Instant::now() + HANG, &mut counts, "a waiter");
    Ok(counts)
}
