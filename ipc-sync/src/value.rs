//! `Value<T>` and `AtomicValue<T>`: one plain-old-data value in shared memory (Python's `Value`).
//!
//! # Shared-memory layout
//! ```text
//! Value<T>:        ShmBox<T> (the value, all-zero = T's zero)  +  Lock (its own, or shared)
//! AtomicValue<T>:  ShmBox<T::Atomic> (AtomicU8 .. AtomicU64, all-zero = 0)
//! ```
//! `Value<T>` reads and writes its cell only while holding its lock, so every access in every
//! process is ordered by the lock's Acquire/Release; `get` and `set` take the lock for one copy,
//! and [`Value::lock`] hands out a guard for read-modify-write sequences. Python's
//! `v.value += 1` is two separately locked steps and loses updates; here `*v.lock()? += 1` is one
//! critical section, and [`AtomicValue::fetch_add`] needs no lock at all.
//!
//! Python's `lock=False` / `RawValue` (unsynchronised access) has no equivalent: concurrent
//! plain reads and writes would be a data race. Use `AtomicValue` for lock-free integers.
//!
//! # Safety
//! The cell is only dereferenced through [`ValueGuard`], which holds the value's lock; every
//! process accesses the cell only under that same lock (the `ShmBox` is never dereferenced
//! directly), so no two accesses race and a `&mut T` is unique while it lives. `T: ShmSafe`
//! makes every bit pattern a valid `T`, so bytes written by another process are a valid value.
//! The lock's exclusion holds from safe code because nothing else can end a guard's hold:
//! - no release under a live guard: [`Lock::release`] refuses a lock held through a guard (only
//!   a leaked guard's lock may be released by another party), the raw word is crate-private,
//!   and `RawLock`'s unconditional unlock is an `unsafe fn`;
//! - no copy of a guard: guards are `!Send`, and `fork`'s closure is `Send + 'static`, so a
//!   guard never runs on in a child while this process drops (unlocks) its copy;
//! - no takeover of a live holder: a lock is taken over only on proof of its holder's death
//!   (see `liveness`), and shared objects refuse to cross a pid namespace.
#![allow(unsafe_code)]

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic;

use ipc_core::shm::{ShmBox, ShmSafe};
use serde::{Deserialize, Serialize};

use crate::error::LockError;
use crate::lock::{Lock, LockGuard};

/// One `T` in shared memory behind a lock (Python's `Value(typecode, v)` with its lock).
///
/// ```
/// let v = ipc_sync::Value::new(41u64)?;
/// *v.lock().unwrap_or_else(ipc_sync::LockError::into_guard) += 1;
/// assert_eq!(v.get(), 42);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// What cannot live in shared memory does not compile (Python's "invalid typecode" TypeError,
/// cpython checklist 93): heap-owning types, and types with invalid bit patterns such as `bool`.
/// ```compile_fail
/// let v = ipc_sync::Value::new(String::from("heap"));
/// ```
/// ```compile_fail
/// let v = ipc_sync::Value::new(true);
/// ```
///
/// A guard cannot move into a forked child: this process would drop (unlock) its copy while
/// the child still wrote through its own.
/// ```compile_fail
/// let v: &'static ipc_sync::Value<u64> = Box::leak(Box::new(ipc_sync::Value::new(0u64)?));
/// let mut g = v.lock().unwrap();
/// let child = ipc_core::process::fork(move || *g += 1)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Value<T: ShmSafe + Copy> {
    cell: ShmBox<T>,
    lock: Lock,
}

/// Holds a [`Value`]'s lock and gives access to the value; releases the lock when dropped.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ValueGuard<'a, T: ShmSafe + Copy> {
    value: &'a Value<T>,
    _lock: LockGuard<'a>,
}

impl<T: ShmSafe + Copy> Value<T> {
    /// A new value with its own lock.
    pub fn new(value: T) -> ipc_core::Result<Self> {
        Self::with_lock(value, Lock::new()?)
    }

    /// A new value guarded by `lock` (Python's `Value(t, v, lock=lock)`), which other values or
    /// code may share.
    ///
    /// The lock is not re-entrant: while you hold it through another guard (a `LockGuard`, a
    /// `ConditionGuard` over the same lock), `get`, `set` and `lock` on this value would wait
    /// for yourself. Give such a value its own lock, or an [`AtomicValue`].
    pub fn with_lock(value: T, lock: Lock) -> ipc_core::Result<Self> {
        let v = Value {
            cell: ShmBox::new()?,
            lock,
        };
        *v.lock().unwrap_or_else(LockError::into_guard) = value;
        Ok(v)
    }

    /// Locks the value for reading and writing.
    ///
    /// `Err(OwnerDied(guard))` if a holder died holding the lock: the value may be half-written
    /// by it; the guard gives access to check or repair it.
    pub fn lock(&self) -> Result<ValueGuard<'_, T>, LockError<ValueGuard<'_, T>>> {
        match self.lock.acquire() {
            Ok(g) => Ok(ValueGuard {
                value: self,
                _lock: g,
            }),
            Err(LockError::OwnerDied(g)) => Err(LockError::OwnerDied(ValueGuard {
                value: self,
                _lock: g,
            })),
        }
    }

    /// A copy of the value (Python's `v.value`), read under the lock.
    ///
    /// A holder that died is ignored here (the copy is returned as found); use
    /// [`lock`](Self::lock) to learn of it.
    pub fn get(&self) -> T {
        *self.lock().unwrap_or_else(LockError::into_guard)
    }

    /// Replaces the value (Python's `v.value = x`) under the lock.
    pub fn set(&self, value: T) {
        *self.lock().unwrap_or_else(LockError::into_guard) = value;
    }

    /// Applies `f` to the value in one critical section; returns the new value.
    pub fn update(&self, f: impl FnOnce(&mut T)) -> T {
        let mut g = self.lock().unwrap_or_else(LockError::into_guard);
        f(&mut g);
        *g
    }

    /// The lock guarding this value (Python's `get_lock()`).
    pub fn get_lock(&self) -> &Lock {
        &self.lock
    }
}

impl<T: ShmSafe + Copy> Deref for ValueGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: we hold the value's lock, under which alone any process touches the cell
        // (module doc); the pointer is valid and aligned for as long as `self.value` lives.
        unsafe { &*self.value.cell.as_ptr() }
    }
}

impl<T: ShmSafe + Copy> DerefMut for ValueGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference made through the
        // guard, and the lock excludes every other guard in every process.
        unsafe { &mut *self.value.cell.as_ptr() }
    }
}

impl<T: ShmSafe + Copy + fmt::Debug> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only a free lock is taken: taking a dead holder's lock over here and releasing it
        // would erase the `OwnerDied` report that the next real acquirer needs.
        match self.lock.try_acquire_free() {
            Some(g) => {
                let g = ValueGuard {
                    value: self,
                    _lock: g,
                };
                f.debug_tuple("Value").field(&*g).finish()
            }
            None => write!(f, "Value({})", self.lock.busy_label()),
        }
    }
}

impl<T: ShmSafe + Copy + fmt::Debug> fmt::Debug for ValueGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ValueGuard").field(&**self).finish()
    }
}

/// Integers with a matching atomic type that may live in shared memory.
pub trait AtomicInt: ShmSafe + Copy + sealed::Sealed {
    /// The atomic counterpart (`u32` -> `AtomicU32` ...).
    type Atomic: ipc_core::shm::ShmSync;
    #[doc(hidden)]
    fn load(a: &Self::Atomic) -> Self;
    #[doc(hidden)]
    fn store(a: &Self::Atomic, v: Self);
    #[doc(hidden)]
    fn swap(a: &Self::Atomic, v: Self) -> Self;
    #[doc(hidden)]
    fn fetch_add(a: &Self::Atomic, v: Self) -> Self;
    #[doc(hidden)]
    fn fetch_sub(a: &Self::Atomic, v: Self) -> Self;
    #[doc(hidden)]
    fn fetch_and(a: &Self::Atomic, v: Self) -> Self;
    #[doc(hidden)]
    fn fetch_or(a: &Self::Atomic, v: Self) -> Self;
    #[doc(hidden)]
    fn fetch_xor(a: &Self::Atomic, v: Self) -> Self;
    #[doc(hidden)]
    fn fetch_max(a: &Self::Atomic, v: Self) -> Self;
    #[doc(hidden)]
    fn fetch_min(a: &Self::Atomic, v: Self) -> Self;
    #[doc(hidden)]
    fn compare_exchange(a: &Self::Atomic, current: Self, new: Self) -> Result<Self, Self>;
}

mod sealed {
    pub trait Sealed {}
}

// One impl per integer width; every operation is SeqCst, the simple and safe default for
// counters shared by processes (the cost difference is nil on x86-64 for RMW operations).
macro_rules! atomic_int {
    ($($t:ty => $a:ty),* $(,)?) => {$(
        impl sealed::Sealed for $t {}
        impl AtomicInt for $t {
            type Atomic = $a;
            #[inline]
            fn load(a: &$a) -> $t { a.load(atomic::Ordering::SeqCst) }
            #[inline]
            fn store(a: &$a, v: $t) { a.store(v, atomic::Ordering::SeqCst) }
            #[inline]
            fn swap(a: &$a, v: $t) -> $t { a.swap(v, atomic::Ordering::SeqCst) }
            #[inline]
            fn fetch_add(a: &$a, v: $t) -> $t { a.fetch_add(v, atomic::Ordering::SeqCst) }
            #[inline]
            fn fetch_sub(a: &$a, v: $t) -> $t { a.fetch_sub(v, atomic::Ordering::SeqCst) }
            #[inline]
            fn fetch_and(a: &$a, v: $t) -> $t { a.fetch_and(v, atomic::Ordering::SeqCst) }
            #[inline]
            fn fetch_or(a: &$a, v: $t) -> $t { a.fetch_or(v, atomic::Ordering::SeqCst) }
            #[inline]
            fn fetch_xor(a: &$a, v: $t) -> $t { a.fetch_xor(v, atomic::Ordering::SeqCst) }
            #[inline]
            fn fetch_max(a: &$a, v: $t) -> $t { a.fetch_max(v, atomic::Ordering::SeqCst) }
            #[inline]
            fn fetch_min(a: &$a, v: $t) -> $t { a.fetch_min(v, atomic::Ordering::SeqCst) }
            #[inline]
            fn compare_exchange(a: &$a, c: $t, n: $t) -> Result<$t, $t> {
                a.compare_exchange(c, n, atomic::Ordering::SeqCst, atomic::Ordering::SeqCst)
            }
        }
    )*};
}

atomic_int!(
    u8 => atomic::AtomicU8, u16 => atomic::AtomicU16, u32 => atomic::AtomicU32,
    u64 => atomic::AtomicU64, usize => atomic::AtomicUsize,
    i8 => atomic::AtomicI8, i16 => atomic::AtomicI16, i32 => atomic::AtomicI32,
    i64 => atomic::AtomicI64, isize => atomic::AtomicIsize,
);

/// An integer in shared memory with lock-free atomic operations (all `SeqCst`).
///
/// ```
/// let hits = ipc_sync::AtomicValue::new(0u64)?;
/// assert_eq!(hits.fetch_add(5), 0);
/// assert_eq!(hits.load(), 5);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[doc(alias = "RawValue")]
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct AtomicValue<T: AtomicInt> {
    cell: ShmBox<T::Atomic>,
}

impl<T: AtomicInt> Clone for AtomicValue<T> {
    fn clone(&self) -> Self {
        AtomicValue {
            cell: self.cell.clone(),
        }
    }
}

impl<T: AtomicInt> AtomicValue<T> {
    /// A new atomic integer holding `value`.
    pub fn new(value: T) -> ipc_core::Result<Self> {
        let v = AtomicValue {
            cell: ShmBox::new()?,
        };
        v.store(value);
        Ok(v)
    }
    /// The current value.
    pub fn load(&self) -> T {
        T::load(&self.cell)
    }
    /// The standard atomic in shared memory, for an operation with another ordering than
    /// `SeqCst` (a flag one process publishes with `Release` costs a plain store on x86-64,
    /// where `store` costs an `xchg`).
    ///
    /// ```
    /// use std::sync::atomic::Ordering;
    ///
    /// let progress = ipc_sync::AtomicValue::new(0u64)?;
    /// progress.atomic().store(42, Ordering::Release);
    /// assert_eq!(progress.atomic().load(Ordering::Acquire), 42);
    /// assert_eq!(progress.load(), 42);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn atomic(&self) -> &T::Atomic {
        &self.cell
    }
    /// Replaces the value.
    pub fn store(&self, v: T) {
        T::store(&self.cell, v)
    }
    /// Replaces the value, returning the old one.
    pub fn swap(&self, v: T) -> T {
        T::swap(&self.cell, v)
    }
    /// Adds (wrapping), returning the old value.
    pub fn fetch_add(&self, v: T) -> T {
        T::fetch_add(&self.cell, v)
    }
    /// Subtracts (wrapping), returning the old value.
    pub fn fetch_sub(&self, v: T) -> T {
        T::fetch_sub(&self.cell, v)
    }
    /// Bitwise and, returning the old value.
    pub fn fetch_and(&self, v: T) -> T {
        T::fetch_and(&self.cell, v)
    }
    /// Bitwise or, returning the old value.
    pub fn fetch_or(&self, v: T) -> T {
        T::fetch_or(&self.cell, v)
    }
    /// Bitwise xor, returning the old value.
    pub fn fetch_xor(&self, v: T) -> T {
        T::fetch_xor(&self.cell, v)
    }
    /// Maximum, returning the old value.
    pub fn fetch_max(&self, v: T) -> T {
        T::fetch_max(&self.cell, v)
    }
    /// Minimum, returning the old value.
    pub fn fetch_min(&self, v: T) -> T {
        T::fetch_min(&self.cell, v)
    }
    /// Stores `new` if the value is `current`; `Ok(previous)` or `Err(actual)`.
    pub fn compare_exchange(&self, current: T, new: T) -> Result<T, T> {
        T::compare_exchange(&self.cell, current, new)
    }
}

impl<T: AtomicInt + fmt::Debug> fmt::Debug for AtomicValue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AtomicValue").field(&self.load()).finish()
    }
}
