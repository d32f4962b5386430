//! The server's blocking objects: queues, locks, semaphores, events, conditions, barriers.
//!
//! Each is a mutex-protected state with condition variables, in the server's memory; clients
//! reach it through calls, so a client blocked here blocks only its own connection's thread.
//! Every wait goes through [`block`]: it wakes every [`HANGUP_CHECK`] to give up when the
//! client hung up or the server stops, so a killed client leaves no waiter behind.
//!
//! ```text
//! Lock     holder (session, owner) or none; count (RLock); owner_died
//!          free --Acquire--> held(me) --ReleaseLock by me--> free
//!          held(s) --session s ends--> free + owner_died --next Acquire--> held, Fault::OwnerDied
//!          (the caller holds the lock: the fault is a report, as EOWNERDEAD is)
//! Queue    items, maxsize (0: unbounded), unfinished (joinable: put +1, task_done -1)
//! Semaphore value (bounded: never above its initial value)
//! Event    flag
//! Condition its lock, waiters, tickets (a notify grants min(n, waiters without a ticket))
//! Barrier  parties, count, generation, broken; a generation ends when the last party
//!          arrives (all pass) or by reset (those waiting get Fault::Broken)
//! ```
//! A lock's owner is the caller's session and, for an RLock (and a condition's lock), the
//! owner number the client sends (its thread): a plain Lock may be released by any thread of
//! the process that holds it, as Python's may, but not by another process.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};

use super::objects::Stored;
use super::{Caller, HANGUP_CHECK};
use crate::wire::{Fault, Op, Out};

/// An operation's failure: a fault, or the operation itself when the kind has no such method
/// (`Err(op)`, made into `NoSuchMethod` by `Object::call`).
pub(crate) type OpResult = Result<Out, Result<Fault, Op>>;

/// A fault as an [`OpResult`] error.
pub(crate) fn fault(f: Fault) -> Result<Fault, Op> {
    Ok(f)
}

impl From<Fault> for Result<Fault, Op> {
    /// A fault from `?` in an operation.
    fn from(f: Fault) -> Self {
        Ok(f)
    }
}

/// Waits on `cv` until `done` holds, the timeout passes ([`Fault::Timeout`]), the client hangs
/// up or the server stops.
fn block<S>(
    cv: &Condvar,
    g: &mut MutexGuard<'_, S>,
    timeout_ms: Option<u64>,
    caller: &Caller<'_>,
    mut done: impl FnMut(&mut S) -> bool,
) -> Result<(), Fault> {
    let deadline = timeout_ms.map(|ms| Instant::now() + Duration::from_millis(ms));
    loop {
        if done(g) {
            return Ok(());
        }
        let now = Instant::now();
        let slice = match deadline {
            Some(d) if d <= now => return Err(Fault::Timeout),
            Some(d) => (d - now).min(HANGUP_CHECK),
            None => HANGUP_CHECK,
        };
        if cv.wait_for(g, slice).timed_out() && caller.abandoned() {
            return Err(Fault::ShuttingDown);
        }
    }
}

// ---------------------------------------------------------------------------------------------

pub(crate) struct Queue {
    joinable: bool,
    state: Mutex<QueueState>,
    not_empty: Condvar,
    not_full: Condvar,
    all_done: Condvar,
}

struct QueueState {
    items: VecDeque<Stored>,
    maxsize: u64,
    unfinished: u64,
}

impl Queue {
    pub(crate) fn new(maxsize: u64, joinable: bool) -> Queue {
        Queue {
            joinable,
            state: Mutex::new(QueueState {
                items: VecDeque::new(),
                maxsize,
                unfinished: 0,
            }),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            all_done: Condvar::new(),
        }
    }

    pub(crate) fn joinable(&self) -> bool {
        self.joinable
    }

    pub(crate) fn call(&self, caller: &Caller<'_>, op: Op) -> OpResult {
        let mut g = self.state.lock();
        let full = |s: &QueueState| s.maxsize > 0 && s.items.len() as u64 >= s.maxsize;
        Ok(match op {
            Op::Put { item, timeout_ms } => {
                if timeout_ms == Some(0) && full(&g) {
                    return Err(fault(Fault::Full));
                }
                let item = caller.hold(item)?;
                block(&self.not_full, &mut g, timeout_ms, caller, |s| !full(s))?;
                g.items.push_back(item);
                if self.joinable {
                    g.unfinished += 1;
                }
                self.not_empty.notify_one();
                Out::Unit
            }
            Op::Take { timeout_ms } => {
                if timeout_ms == Some(0) && g.items.is_empty() {
                    return Err(fault(Fault::Empty));
                }
                block(&self.not_empty, &mut g, timeout_ms, caller, |s| {
                    !s.items.is_empty()
                })?;
                let item = g.items.pop_front().expect("waited for an item");
                self.not_full.notify_one();
                Out::Blob(caller.give(&item))
            }
            Op::Len => Out::Count(g.items.len() as u64),
            Op::Full => Out::Flag(full(&g)),
            Op::TaskDone if self.joinable => {
                if g.unfinished == 0 {
                    return Err(fault(Fault::NotHeld(
                        "task_done() called more times than there were items".into(),
                    )));
                }
                g.unfinished -= 1;
                if g.unfinished == 0 {
                    self.all_done.notify_all();
                }
                Out::Unit
            }
            Op::Join { timeout_ms } if self.joinable => {
                block(&self.all_done, &mut g, timeout_ms, caller, |s| {
                    s.unfinished == 0
                })?;
                Out::Unit
            }
            other => return Err(Err(other)),
        })
    }
}

// ---------------------------------------------------------------------------------------------

pub(crate) struct Lock {
    reentrant: bool,
    state: Mutex<LockState>,
    cv: Condvar,
}

struct LockState {
    /// (session, owner) of the holder.
    holder: Option<(u64, u64)>,
    count: u64,
    owner_died: bool,
}

impl Lock {
    pub(crate) fn new(reentrant: bool) -> Lock {
        Lock {
            reentrant,
            state: Mutex::new(LockState {
                holder: None,
                count: 0,
                owner_died: false,
            }),
            cv: Condvar::new(),
        }
    }

    pub(crate) fn reentrant(&self) -> bool {
        self.reentrant
    }

    /// Who the caller is to this lock.
    fn me(&self, caller: &Caller<'_>, owner: u64) -> (u64, u64) {
        (caller.session, if self.reentrant { owner } else { 0 })
    }

    pub(crate) fn call(&self, caller: &Caller<'_>, op: Op) -> OpResult {
        match op {
            Op::Acquire { timeout_ms, owner } => self.acquire(caller, owner, timeout_ms),
            Op::ReleaseLock { owner } => self.release(caller, owner),
            Op::Describe => {
                let g = self.state.lock();
                Ok(Out::Counts(vec![u64::from(g.holder.is_some()), g.count]))
            }
            other => Err(Err(other)),
        }
    }

    fn acquire(&self, caller: &Caller<'_>, owner: u64, timeout_ms: Option<u64>) -> OpResult {
        let me = self.me(caller, owner);
        let mut g = self.state.lock();
        if self.reentrant && g.holder == Some(me) {
            g.count += 1;
            return Ok(Out::Unit);
        }
        match block(&self.cv, &mut g, timeout_ms, caller, |s| s.holder.is_none()) {
            Ok(()) => {}
            Err(Fault::Timeout) => return Ok(Out::Flag(false)),
            Err(f) => return Err(fault(f)),
        }
        g.holder = Some(me);
        g.count = 1;
        if std::mem::take(&mut g.owner_died) {
            return Err(fault(Fault::OwnerDied));
        }
        Ok(Out::Flag(true))
    }

    fn release(&self, caller: &Caller<'_>, owner: u64) -> OpResult {
        let me = self.me(caller, owner);
        let mut g = self.state.lock();
        match g.holder {
            Some(h) if h == me => {}
            Some(_) => {
                return Err(fault(Fault::NotHeld(format!(
                    "release of a {} held by another {}",
                    if self.reentrant { "RLock" } else { "Lock" },
                    if self.reentrant {
                        "thread or process"
                    } else {
                        "process"
                    }
                ))));
            }
            None => return Err(fault(Fault::NotHeld("release of an unlocked lock".into()))),
        }
        g.count -= 1;
        if g.count == 0 {
            g.holder = None;
            self.cv.notify_one();
        }
        Ok(Out::Unit)
    }

    /// Releases the lock entirely for a condition wait; returns the recursion count.
    fn release_all(&self, me: (u64, u64)) -> Result<u64, Fault> {
        let mut g = self.state.lock();
        if g.holder != Some(me) {
            return Err(Fault::NotHeld(
                "wait on a condition whose lock is not held".into(),
            ));
        }
        let count = std::mem::take(&mut g.count);
        g.holder = None;
        self.cv.notify_one();
        Ok(count)
    }

    /// Takes the lock back after a condition wait, with its recursion count.
    fn reacquire(&self, caller: &Caller<'_>, me: (u64, u64), count: u64) -> Result<(), Fault> {
        let mut g = self.state.lock();
        block(&self.cv, &mut g, None, caller, |s| s.holder.is_none())?;
        g.holder = Some(me);
        g.count = count;
        if std::mem::take(&mut g.owner_died) {
            return Err(Fault::OwnerDied);
        }
        Ok(())
    }

    fn held_by(&self, me: (u64, u64)) -> bool {
        self.state.lock().holder == Some(me)
    }

    pub(crate) fn session_ended(&self, session: u64) {
        let mut g = self.state.lock();
        if g.holder.is_some_and(|(s, _)| s == session) {
            g.holder = None;
            g.count = 0;
            g.owner_died = true;
            self.cv.notify_one();
        }
    }
}

// ---------------------------------------------------------------------------------------------

pub(crate) struct Semaphore {
    bound: Option<u64>,
    value: Mutex<u64>,
    cv: Condvar,
}

impl Semaphore {
    pub(crate) fn new(value: u64, bounded: bool) -> Semaphore {
        Semaphore {
            bound: bounded.then_some(value),
            value: Mutex::new(value),
            cv: Condvar::new(),
        }
    }

    pub(crate) fn bounded(&self) -> bool {
        self.bound.is_some()
    }

    pub(crate) fn call(&self, caller: &Caller<'_>, op: Op) -> OpResult {
        let mut g = self.value.lock();
        Ok(match op {
            Op::Acquire { timeout_ms, .. } => {
                match block(&self.cv, &mut g, timeout_ms, caller, |v| *v > 0) {
                    Ok(()) => {}
                    Err(Fault::Timeout) => return Ok(Out::Flag(false)),
                    Err(f) => return Err(fault(f)),
                }
                *g -= 1;
                Out::Flag(true)
            }
            Op::ReleaseLock { .. } => {
                if self.bound.is_some_and(|b| *g >= b) {
                    return Err(fault(Fault::NotHeld(
                        "a BoundedSemaphore released more times than it was acquired".into(),
                    )));
                }
                *g += 1;
                self.cv.notify_one();
                Out::Unit
            }
            Op::Describe => Out::Counts(vec![*g]),
            other => return Err(Err(other)),
        })
    }
}

// ---------------------------------------------------------------------------------------------

#[derive(Default)]
pub(crate) struct Event {
    flag: Mutex<bool>,
    cv: Condvar,
}

impl Event {
    pub(crate) fn call(&self, caller: &Caller<'_>, op: Op) -> OpResult {
        let mut g = self.flag.lock();
        Ok(match op {
            Op::SetFlag => {
                *g = true;
                self.cv.notify_all();
                Out::Unit
            }
            Op::ClearFlag => {
                *g = false;
                Out::Unit
            }
            Op::IsSet => Out::Flag(*g),
            Op::Wait { timeout_ms, .. } => {
                match block(&self.cv, &mut g, timeout_ms, caller, |f| *f) {
                    Ok(()) => Out::Flag(true),
                    Err(Fault::Timeout) => Out::Flag(false),
                    Err(f) => return Err(fault(f)),
                }
            }
            other => return Err(Err(other)),
        })
    }
}

// ---------------------------------------------------------------------------------------------

pub(crate) struct Condition {
    lock: Arc<Lock>,
    state: Mutex<CondState>,
    cv: Condvar,
}

struct CondState {
    waiters: u64,
    tickets: u64,
}

impl Condition {
    pub(crate) fn new(lock: Arc<Lock>) -> Condition {
        Condition {
            lock,
            state: Mutex::new(CondState {
                waiters: 0,
                tickets: 0,
            }),
            cv: Condvar::new(),
        }
    }

    fn lock(&self) -> &Lock {
        &self.lock
    }

    pub(crate) fn session_ended(&self, session: u64) {
        self.lock().session_ended(session);
    }

    pub(crate) fn call(&self, caller: &Caller<'_>, op: Op) -> OpResult {
        let lock = self.lock();
        match op {
            Op::Acquire { .. } | Op::ReleaseLock { .. } | Op::Describe => lock.call(caller, op),
            Op::Wait { timeout_ms, owner } => {
                let me = lock.me(caller, owner);
                // Counted as a waiter before the lock is let go, so that a notify made by the
                // next holder is not lost.
                self.state.lock().waiters += 1;
                let count = match lock.release_all(me) {
                    Ok(c) => c,
                    Err(f) => {
                        self.state.lock().waiters -= 1;
                        return Err(fault(f));
                    }
                };
                let notified = {
                    let mut g = self.state.lock();
                    let r = block(&self.cv, &mut g, timeout_ms, caller, |s| s.tickets > 0);
                    g.waiters -= 1;
                    match r {
                        Ok(()) => {
                            g.tickets -= 1;
                            Ok(true)
                        }
                        Err(Fault::Timeout) => {
                            g.tickets = g.tickets.min(g.waiters);
                            Ok(false)
                        }
                        Err(f) => {
                            g.tickets = g.tickets.min(g.waiters);
                            Err(f)
                        }
                    }
                };
                let notified = notified.map_err(fault)?;
                lock.reacquire(caller, me, count).map_err(fault)?;
                Ok(Out::Flag(notified))
            }
            Op::Notify { n, owner } => {
                if !lock.held_by(lock.me(caller, owner)) {
                    return Err(fault(Fault::NotHeld(
                        "notify on a condition whose lock is not held".into(),
                    )));
                }
                let mut g = self.state.lock();
                let free = g.waiters - g.tickets;
                g.tickets += n.min(free);
                self.cv.notify_all();
                Ok(Out::Unit)
            }
            other => Err(Err(other)),
        }
    }
}

// ---------------------------------------------------------------------------------------------

pub(crate) struct Barrier {
    state: Mutex<BarrierState>,
    cv: Condvar,
}

struct BarrierState {
    parties: u64,
    count: u64,
    generation: u64,
    broken: bool,
    /// Recent generations that a reset ended (their waiters get `Broken`).
    reset: BTreeSet<u64>,
}

impl Barrier {
    pub(crate) fn new(parties: u64) -> Barrier {
        Barrier {
            state: Mutex::new(BarrierState {
                parties,
                count: 0,
                generation: 0,
                broken: false,
                reset: BTreeSet::new(),
            }),
            cv: Condvar::new(),
        }
    }

    pub(crate) fn call(&self, caller: &Caller<'_>, op: Op) -> OpResult {
        let mut g = self.state.lock();
        Ok(match op {
            Op::Wait { timeout_ms, .. } => {
                if g.broken {
                    return Err(fault(Fault::Broken));
                }
                let index = g.count;
                g.count += 1;
                if g.count == g.parties {
                    g.count = 0;
                    g.generation += 1;
                    self.cv.notify_all();
                    return Ok(Out::Count(index));
                }
                let mine = g.generation;
                let r = block(&self.cv, &mut g, timeout_ms, caller, |s| {
                    s.generation != mine || s.broken
                });
                if g.generation != mine {
                    if g.reset.contains(&mine) {
                        return Err(fault(Fault::Broken));
                    }
                    return Ok(Out::Count(index));
                }
                if let Err(f) = r {
                    // A party that times out or leaves breaks the barrier for everyone.
                    g.broken = true;
                    g.count -= 1;
                    self.cv.notify_all();
                    return Err(fault(if f == Fault::Timeout {
                        Fault::Broken
                    } else {
                        f
                    }));
                }
                g.count -= 1;
                return Err(fault(Fault::Broken));
            }
            Op::Abort => {
                g.broken = true;
                self.cv.notify_all();
                Out::Unit
            }
            Op::Reset => {
                if g.count > 0 {
                    let ended = g.generation;
                    g.reset.insert(ended);
                    while g.reset.len() > 64 {
                        g.reset.pop_first();
                    }
                    g.generation += 1;
                }
                g.count = 0;
                g.broken = false;
                self.cv.notify_all();
                Out::Unit
            }
            Op::Describe => Out::Counts(vec![g.parties, g.count, u64::from(g.broken)]),
            other => return Err(Err(other)),
        })
    }
}
