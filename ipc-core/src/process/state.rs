//! Worker state: a value that a process makes once and its tasks then borrow, for functions
//! that are plain `fn`s and so cannot capture (a model, a database connection, a cache).
//!
//! ```text
//! STATE (per thread): empty --initializer handle--> holds a Box<S>
//!                     holds --stateful task--> lent to the call (empty meanwhile), put back
//!                                               after it, also when the task panics
//!                     holds --finisher handle--> taken: the finisher consumes it (empty)
//! ```
//! Three kinds of [`RemoteFn`] reach it, each made from a plain function and paired with a
//! trampoline that knows `S` (the pairing is what a handle's tag proves, as for any handle):
//! [`RemoteFn::initializer`] (`fn(I) -> S`: the state is stored, the caller gets `()`),
//! [`RemoteFn::with_state`] (`fn(&mut S, A) -> R`) and [`RemoteFn::finisher`]
//! (`fn(S) -> X`). A call that finds no state, or a state of another type, or that is made
//! from inside a stateful task (the state is lent out), is an [`Error::Misuse`] that says
//! so: never a call with the wrong state.
//!
//! # Safety
//! The one kind of `unsafe` here is function.rs's: rebuilding a function pointer from its
//! offset ([`fn_at`]), in a trampoline instantiated for that function's exact type when the
//! handle was made (a decoded handle's tag proves that pairing). The state itself is a
//! `Box<dyn Any>`, downcast with a check.
#![allow(unsafe_code)]

use std::any::Any;
use std::cell::RefCell;
use std::os::fd::OwnedFd;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::function::{Call, RemoteFn, Trampoline, fn_at};
use crate::error::{Error, Result};

thread_local! {
    /// This thread's worker state (see the module doc).
    static STATE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

/// Takes the state out as an `S`; on a mismatch it stays where it was.
fn take<S: 'static>() -> Result<Box<S>> {
    let held = STATE.with(|s| s.borrow_mut().take());
    match held {
        None => Err(Error::misuse(format!(
            "no worker state of type {} in this thread: a stateful function runs only where an \
             initializer made one (and not from inside another stateful call, which holds it)",
            std::any::type_name::<S>()
        ))),
        Some(b) => b.downcast::<S>().map_err(|other| {
            STATE.with(|s| *s.borrow_mut() = Some(other));
            Error::misuse(format!(
                "the worker state here is not a {}: the initializer made another type",
                std::any::type_name::<S>()
            ))
        }),
    }
}

fn put<S: 'static>(state: Box<S>) {
    STATE.with(|s| *s.borrow_mut() = Some(state));
}

/// Whether this thread holds a worker state (of any type).
pub fn has_state() -> bool {
    STATE.with(|s| s.borrow().is_some())
}

fn init_trampoline<I: DeserializeOwned, S: 'static>(
    func: i64,
    call: Call<'_>,
) -> Result<Vec<OwnedFd>> {
    // SAFETY: `func` was paired with this trampoline by `RemoteFn::initializer::<I, S>` from an
    // `fn(I) -> S` of this executable (the tag proves the pairing of a decoded handle).
    let f = unsafe { fn_at::<fn(I) -> S>(func) };
    call.run(|arg: I| {
        put(Box::new(f(arg)));
        Ok(())
    })
}

fn state_trampoline<S: 'static, A: DeserializeOwned, R: Serialize>(
    func: i64,
    call: Call<'_>,
) -> Result<Vec<OwnedFd>> {
    // SAFETY: `func` was paired with this trampoline by `RemoteFn::with_state::<S>` from an
    // `fn(&mut S, A) -> R` of this executable (the tag proves the pairing of a decoded handle).
    let f = unsafe { fn_at::<fn(&mut S, A) -> R>(func) };
    call.run(|arg: A| {
        /// Puts the lent state back, also when the task unwinds.
        struct Lent<S: 'static>(Option<Box<S>>);
        impl<S: 'static> Drop for Lent<S> {
            fn drop(&mut self) {
                if let Some(s) = self.0.take() {
                    put(s);
                }
            }
        }
        let mut lent = Lent(Some(take::<S>()?));
        let state = lent.0.as_deref_mut().expect("lent until the guard drops");
        Ok(f(state, arg))
    })
}

fn finish_trampoline<S: 'static, X: Serialize>(func: i64, call: Call<'_>) -> Result<Vec<OwnedFd>> {
    // SAFETY: `func` was paired with this trampoline by `RemoteFn::finisher::<S, X>` from an
    // `fn(S) -> X` of this executable (the tag proves the pairing of a decoded handle).
    let f = unsafe { fn_at::<fn(S) -> X>(func) };
    call.run(|(): ()| Ok(f(*take::<S>()?)))
}

impl<I: DeserializeOwned> RemoteFn<I, ()> {
    /// A handle that runs `f` and keeps what it returns as this thread's worker state (see
    /// the module doc), replacing any state held; its caller gets `()`.
    ///
    /// ```
    /// use ipc_core::process::RemoteFn;
    ///
    /// fn open(base: u64) -> Vec<u64> {
    ///     vec![base]
    /// }
    /// fn push(seen: &mut Vec<u64>, x: u64) -> usize {
    ///     seen.push(x);
    ///     seen.len()
    /// }
    /// fn close(seen: Vec<u64>) -> u64 {
    ///     seen.iter().sum()
    /// }
    ///
    /// RemoteFn::initializer(open)?.call(100)?;
    /// let f = RemoteFn::with_state(push)?;
    /// assert_eq!(f.call(1)?, 2);
    /// assert_eq!(f.call(2)?, 3);
    /// assert_eq!(RemoteFn::finisher(close)?.call(())?, 103);
    /// assert!(f.call(3).is_err(), "the state is gone");
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn initializer<S: 'static>(f: fn(I) -> S) -> Result<Self> {
        RemoteFn::pair(init_trampoline::<I, S> as Trampoline, f as *const ())
    }
}

impl<A: DeserializeOwned, R: Serialize> RemoteFn<A, R> {
    /// A handle to `f`, which borrows this thread's worker state (made by an
    /// [`initializer`](RemoteFn::initializer)) for the length of each call.
    pub fn with_state<S: 'static>(f: fn(&mut S, A) -> R) -> Result<Self> {
        RemoteFn::pair(state_trampoline::<S, A, R> as Trampoline, f as *const ())
    }
}

impl<X: Serialize> RemoteFn<(), X> {
    /// A handle that takes this thread's worker state and gives it to `f` (a worker's last
    /// call: what it returns is the caller's).
    pub fn finisher<S: 'static>(f: fn(S) -> X) -> Result<Self> {
        RemoteFn::pair(finish_trampoline::<S, X> as Trampoline, f as *const ())
    }
}
