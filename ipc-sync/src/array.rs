//! `Array<T>`: a fixed-length array of plain-old-data in shared memory (Python's `Array`).
//!
//! # Shared-memory layout
//! ```text
//! ShmSlice<T> (len T's, contiguous, zero-filled; 64-byte aligned from 64 bytes up)  +  Lock
//! ```
//! As for [`Value`](crate::Value), every access to the elements happens under the lock: `get`,
//! `set`, `to_vec` take it for one operation, [`Array::lock`] hands out a guard that derefs to
//! `[T]` for longer work (a prefix sum, a bulk copy).
//!
//! # Safety
//! The slice is only dereferenced through [`ArrayGuard`], which holds the array's lock; every
//! process touches the elements only under that same lock (the `ShmSlice` is never dereferenced
//! directly), so accesses never race and the `&mut [T]` is unique while it lives (why no safe
//! code can end a guard's hold early: the `value` module's Safety paragraph). `T: ShmSafe`
//! makes any bytes a valid `T`.
#![allow(unsafe_code)]

use std::fmt;
use std::ops::{Deref, DerefMut};

use ipc_core::shm::{ShmSafe, ShmSlice};
use serde::{Deserialize, Serialize};

use crate::error::LockError;
use crate::lock::{Lock, LockGuard};

/// `len` values of `T` in shared memory behind a lock (Python's `Array(typecode, n)`).
///
/// ```
/// let a = ipc_sync::Array::<i32>::from_slice(&[1, 2, 3])?;
/// {
///     let mut g = a.lock().unwrap_or_else(ipc_sync::LockError::into_guard);
///     for i in 1..g.len() {
///         g[i] += g[i - 1];
///     }
/// }
/// assert_eq!(a.to_vec(), [1, 3, 6]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[doc(alias = "RawArray")]
#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Array<T: ShmSafe + Copy> {
    cells: Option<ShmSlice<T>>,
    lock: Lock,
}

/// Holds an [`Array`]'s lock and derefs to its elements; releases the lock when dropped.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ArrayGuard<'a, T: ShmSafe + Copy> {
    array: &'a Array<T>,
    _lock: LockGuard<'a>,
}

impl<T: ShmSafe + Copy> Array<T> {
    /// `len` zero-valued elements with their own lock.
    pub fn new(len: usize) -> ipc_core::Result<Self> {
        Self::with_lock(len, Lock::new()?)
    }

    /// `len` zero-valued elements guarded by `lock` (Python's `Array(t, n, lock=lock)`).
    pub fn with_lock(len: usize, lock: Lock) -> ipc_core::Result<Self> {
        // An empty array needs no memory (and the heap has no zero-sized allocations).
        let cells = if len == 0 {
            None
        } else {
            Some(ShmSlice::new(len)?)
        };
        Ok(Array { cells, lock })
    }

    /// A copy of `values` with its own lock.
    pub fn from_slice(values: &[T]) -> ipc_core::Result<Self> {
        let a = Self::new(values.len())?;
        a.lock()
            .unwrap_or_else(LockError::into_guard)
            .copy_from_slice(values);
        Ok(a)
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.cells.as_ref().map_or(0, |c| c.len())
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Locks the array; the guard derefs to `[T]`.
    ///
    /// `Err(OwnerDied(guard))` if a holder died holding the lock (elements may be half-written).
    pub fn lock(&self) -> Result<ArrayGuard<'_, T>, LockError<ArrayGuard<'_, T>>> {
        match self.lock.acquire() {
            Ok(g) => Ok(ArrayGuard {
                array: self,
                _lock: g,
            }),
            Err(LockError::OwnerDied(g)) => Err(LockError::OwnerDied(ArrayGuard {
                array: self,
                _lock: g,
            })),
        }
    }

    fn locked(&self) -> ArrayGuard<'_, T> {
        self.lock().unwrap_or_else(LockError::into_guard)
    }

    /// Element `i`, or `None` past the end.
    pub fn get(&self, i: usize) -> Option<T> {
        self.locked().get(i).copied()
    }

    /// Sets element `i`; gives `value` back if `i` is past the end.
    pub fn set(&self, i: usize, value: T) -> Result<(), T> {
        match self.locked().get_mut(i) {
            Some(slot) => {
                *slot = value;
                Ok(())
            }
            None => Err(value),
        }
    }

    /// A copy of all elements.
    pub fn to_vec(&self) -> Vec<T> {
        self.locked().to_vec()
    }

    /// The lock guarding the array (Python's `get_lock()`).
    pub fn get_lock(&self) -> &Lock {
        &self.lock
    }
}

impl<T: ShmSafe + Copy> Deref for ArrayGuard<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match &self.array.cells {
            // SAFETY: we hold the array's lock, under which alone any process touches the
            // elements (module doc); the slice is `len` valid, aligned `T`s while `array` lives.
            Some(c) => unsafe { std::slice::from_raw_parts(c.as_ptr(), c.len()) },
            None => &[],
        }
    }
}

impl<T: ShmSafe + Copy> DerefMut for ArrayGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        match &self.array.cells {
            // SAFETY: as in `deref`; `&mut self` makes this the only reference made through the
            // guard, and the lock excludes every other guard in every process.
            Some(c) => unsafe { std::slice::from_raw_parts_mut(c.as_ptr(), c.len()) },
            None => &mut [],
        }
    }
}

impl<T: ShmSafe + Copy + fmt::Debug> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only a free lock is taken: taking a dead holder's lock over here and releasing it
        // would erase the `OwnerDied` report that the next real acquirer needs.
        match self.lock.try_acquire_free() {
            Some(g) => {
                let g = ArrayGuard {
                    array: self,
                    _lock: g,
                };
                f.debug_tuple("Array").field(&&*g).finish()
            }
            None => write!(f, "Array({})", self.lock.busy_label()),
        }
    }
}
