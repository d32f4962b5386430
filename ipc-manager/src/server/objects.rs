//! The objects a server holds, and the operations each kind accepts.
//!
//! ```text
//! kind        state (behind the object's own lock)      operations
//! Dict        HashMap<key bytes, value bytes>           Get Insert Remove Contains SetDefault
//! Namespace   the same, keyed by attribute name          Extend Keys Values Items Len Clear
//!                                                        CompareSet Apply
//! List        Vec<item bytes>                           Index SetIndex Slice Push Append Pop
//! Array       the same, fixed length                    InsertAt Remove Contains Len Clear
//!                                                        CompareSet Apply (Array: no resizing)
//! Value       value bytes                               Load Store CompareSet Apply
//! Queue, Lock, Semaphore, Event, Condition, Barrier:    see `sync`
//! ```
//! Values are bytes the server never interprets (see the wire notes); an `Apply` runs the
//! client's update function (a function of this executable) with the object's lock held, and
//! stores what it returns only if it returned normally.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use parking_lot::Mutex;

use super::sync::{Barrier, Condition, Event, Lock, OpResult, Queue, Semaphore, fault};
use super::{Caller, op_name};
use crate::wire::{At, Blob, Fault, Init, Op, Out, Update, UpdateFn};

/// An object held by the server.
pub(crate) enum Object {
    Map {
        namespace: bool,
        map: Mutex<HashMap<Blob, Blob>>,
    },
    Seq {
        fixed: bool,
        items: Mutex<Vec<Blob>>,
    },
    Value(Mutex<Blob>),
    Queue(Queue),
    Lock(Arc<Lock>),
    Semaphore(Semaphore),
    Event(Event),
    Condition(Condition),
    Barrier(Barrier),
}

impl Object {
    /// A new object; `lock` is the (already checked) lock object of a condition.
    pub(crate) fn new(init: Init, lock: Option<Arc<Object>>) -> Result<Object, Fault> {
        Ok(match init {
            Init::Dict => Object::Map {
                namespace: false,
                map: Mutex::new(HashMap::new()),
            },
            Init::Namespace => Object::Map {
                namespace: true,
                map: Mutex::new(HashMap::new()),
            },
            Init::List(items) => Object::Seq {
                fixed: false,
                items: Mutex::new(items),
            },
            Init::Array(items) => Object::Seq {
                fixed: true,
                items: Mutex::new(items),
            },
            Init::Value(v) => Object::Value(Mutex::new(v)),
            Init::Queue { maxsize, joinable } => Object::Queue(Queue::new(maxsize, joinable)),
            Init::Lock { reentrant } => Object::Lock(Arc::new(Lock::new(reentrant))),
            Init::Semaphore { value, bounded } => Object::Semaphore(Semaphore::new(value, bounded)),
            Init::Event => Object::Event(Event::default()),
            Init::Condition { .. } => {
                let lock = match lock.as_deref() {
                    Some(Object::Lock(l)) => Arc::clone(l),
                    Some(_) => {
                        return Err(Fault::Refused(
                            "a condition's lock must be a manager Lock or RLock".into(),
                        ));
                    }
                    None => Arc::new(Lock::new(true)),
                };
                Object::Condition(Condition::new(lock))
            }
            Init::Barrier { parties } => {
                if parties == 0 {
                    return Err(Fault::Refused("a barrier needs at least one party".into()));
                }
                Object::Barrier(Barrier::new(parties))
            }
        })
    }

    /// The kind's name, for errors.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Object::Map {
                namespace: false, ..
            } => "Dict",
            Object::Map {
                namespace: true, ..
            } => "Namespace",
            Object::Seq { fixed: false, .. } => "List",
            Object::Seq { fixed: true, .. } => "Array",
            Object::Value(_) => "Value",
            Object::Queue(q) if q.joinable() => "JoinableQueue",
            Object::Queue(_) => "Queue",
            Object::Lock(l) if l.reentrant() => "RLock",
            Object::Lock(_) => "Lock",
            Object::Semaphore(s) if s.bounded() => "BoundedSemaphore",
            Object::Semaphore(_) => "Semaphore",
            Object::Event(_) => "Event",
            Object::Condition(_) => "Condition",
            Object::Barrier(_) => "Barrier",
        }
    }

    /// Tells the object that a session ended: a lock it held is released as owner-died.
    pub(crate) fn session_ended(&self, session: u64) {
        match self {
            Object::Lock(l) => l.session_ended(session),
            Object::Condition(c) => c.session_ended(session),
            _ => {}
        }
    }

    /// Runs one operation.
    pub(crate) fn call(&self, caller: &Caller<'_>, op: Op) -> Result<Out, Fault> {
        let result = match self {
            Object::Map { map, .. } => map_op(&mut map.lock(), op),
            Object::Seq { fixed, items } => seq_op(&mut items.lock(), *fixed, op),
            Object::Value(v) => value_op(&mut v.lock(), op),
            Object::Queue(q) => q.call(caller, op),
            Object::Lock(l) => l.call(caller, op),
            Object::Semaphore(s) => s.call(caller, op),
            Object::Event(e) => e.call(caller, op),
            Object::Condition(c) => c.call(caller, op),
            Object::Barrier(b) => b.call(caller, op),
        };
        result.map_err(|e| {
            e.unwrap_or_else(|op| Fault::NoSuchMethod {
                kind: self.kind().into(),
                op: op_name(&op),
            })
        })
    }
}

fn map_op(map: &mut HashMap<Blob, Blob>, op: Op) -> OpResult {
    Ok(match op {
        Op::Get(k) => Out::Maybe(map.get(&k).cloned()),
        Op::Insert(k, v) => Out::Maybe(map.insert(k, v)),
        Op::Remove(k) => Out::Maybe(map.remove(&k)),
        Op::Contains(k) => Out::Flag(map.contains_key(&k)),
        Op::SetDefault(k, v) => Out::Blob(map.entry(k).or_insert(v).clone()),
        Op::Extend(pairs) => {
            map.extend(pairs);
            Out::Unit
        }
        Op::Keys => Out::Blobs(map.keys().cloned().collect()),
        Op::Values => Out::Blobs(map.values().cloned().collect()),
        Op::Items => Out::Pairs(map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        Op::Len => Out::Count(map.len() as u64),
        Op::Clear => {
            map.clear();
            Out::Unit
        }
        Op::CompareSet {
            at: At::Key(k),
            expected,
            new,
        } => {
            let current = map.get(&k);
            if current != expected.as_ref() {
                return Ok(Out::Swap(Err(current.cloned())));
            }
            match new {
                Some(v) => map.insert(k, v),
                None => map.remove(&k),
            };
            Out::Swap(Ok(()))
        }
        Op::Apply {
            at: At::Key(k),
            update,
        } => {
            let old = map.get(&k).cloned();
            let new = run_update(&update, old.clone()).map_err(fault)?;
            match &new {
                Some(v) => map.insert(k, v.clone()),
                None => map.remove(&k),
            };
            Out::Updated(old, new)
        }
        other => return Err(Err(other)),
    })
}

/// A Python index (negative counts from the end) into a sequence of `len` items.
fn index(i: i64, len: usize) -> Result<usize, Result<Fault, Op>> {
    let n = len as i64;
    let at = if i < 0 { i + n } else { i };
    if (0..n).contains(&at) {
        Ok(at as usize)
    } else {
        Err(fault(Fault::IndexOutOfRange {
            index: i,
            len: len as u64,
        }))
    }
}

/// A Python slice bound, clamped to `0..=len`.
fn clamp(i: i64, len: usize) -> usize {
    let n = len as i64;
    let at = if i < 0 { (i + n).max(0) } else { i.min(n) };
    at as usize
}

fn seq_op(items: &mut Vec<Blob>, fixed: bool, op: Op) -> OpResult {
    let resizes = matches!(
        op,
        Op::Push(_) | Op::Append(_) | Op::Pop(_) | Op::InsertAt(..) | Op::Remove(_) | Op::Clear
    );
    if fixed && resizes {
        return Err(Err(op));
    }
    Ok(match op {
        Op::Index(i) => Out::Blob(items[index(i, items.len())?].clone()),
        Op::SetIndex(i, v) => {
            let at = index(i, items.len())?;
            Out::Blob(std::mem::replace(&mut items[at], v))
        }
        Op::Slice { start, stop } => {
            let (a, b) = (clamp(start, items.len()), clamp(stop, items.len()));
            Out::Blobs(if a < b {
                items[a..b].to_vec()
            } else {
                Vec::new()
            })
        }
        Op::Load => Out::Blobs(items.clone()),
        Op::Push(v) => {
            items.push(v);
            Out::Unit
        }
        Op::Append(vs) => {
            items.extend(vs);
            Out::Unit
        }
        Op::Pop(at) => {
            if items.is_empty() {
                return Err(fault(Fault::Empty));
            }
            let at = index(at.unwrap_or(-1), items.len())?;
            Out::Blob(items.remove(at))
        }
        Op::InsertAt(i, v) => {
            items.insert(clamp(i, items.len()), v);
            Out::Unit
        }
        Op::Remove(v) => match items.iter().position(|x| *x == v) {
            Some(at) => {
                items.remove(at);
                Out::Flag(true)
            }
            None => Out::Flag(false),
        },
        Op::Contains(v) => Out::Flag(items.contains(&v)),
        Op::Len => Out::Count(items.len() as u64),
        Op::Clear => {
            items.clear();
            Out::Unit
        }
        Op::CompareSet {
            at: At::Index(i),
            expected,
            new,
        } => {
            let at = index(i, items.len())?;
            let Some(new) = new else {
                return Err(fault(Fault::Refused(
                    "a compare-and-set cannot remove a list item".into(),
                )));
            };
            if expected.as_ref() != Some(&items[at]) {
                return Ok(Out::Swap(Err(Some(items[at].clone()))));
            }
            items[at] = new;
            Out::Swap(Ok(()))
        }
        Op::Apply {
            at: At::Index(i),
            update,
        } => {
            let at = index(i, items.len())?;
            let old = items[at].clone();
            match run_update(&update, Some(old.clone())).map_err(fault)? {
                Some(new) => {
                    items[at] = new.clone();
                    Out::Updated(Some(old), Some(new))
                }
                None => {
                    return Err(fault(Fault::Function(
                        "an update of a list item returned no value".into(),
                    )));
                }
            }
        }
        other => return Err(Err(other)),
    })
}

fn value_op(value: &mut Blob, op: Op) -> OpResult {
    Ok(match op {
        Op::Load => Out::Blob(value.clone()),
        Op::Store(v) => Out::Blob(std::mem::replace(value, v)),
        Op::CompareSet {
            at: At::Whole,
            expected,
            new: Some(new),
        } => {
            if expected.as_ref() != Some(&*value) {
                return Ok(Out::Swap(Err(Some(value.clone()))));
            }
            *value = new;
            Out::Swap(Ok(()))
        }
        Op::Apply {
            at: At::Whole,
            update,
        } => {
            let old = value.clone();
            match run_update(&update, Some(old.clone())).map_err(fault)? {
                Some(new) => {
                    *value = new.clone();
                    Out::Updated(Some(old), Some(new))
                }
                None => {
                    return Err(fault(Fault::Function(
                        "an update of a Value returned no value".into(),
                    )));
                }
            }
        }
        other => return Err(Err(other)),
    })
}

/// Runs a client's update function on the current encoding; `Ok(new encoding)` or why not.
fn run_update(update: &Update, current: Option<Blob>) -> Result<Option<Blob>, Fault> {
    let f: UpdateFn = ipc_core::codec::decode_plain(&update.f).map_err(|e| {
        Fault::Function(format!(
            "the update function cannot run in the manager's server (a function of another \
             executable?): {e}"
        ))
    })?;
    let operand = update.operand.clone();
    match std::panic::catch_unwind(AssertUnwindSafe(|| f.call((current, operand)))) {
        Ok(Ok(Ok(new))) => Ok(new),
        Ok(Ok(Err(msg))) => Err(Fault::Function(msg)),
        Ok(Err(e)) => Err(Fault::Function(e.to_string())),
        Err(p) => Err(Fault::Function(format!(
            "the update function panicked: {}",
            crate::error::panic_message(&*p)
        ))),
    }
}
