//! Tasks that borrow the worker's state: [`Stateful`], the view of a [`Pool`] whose calls
//! take `fn(&mut S, A) -> R`, and [`WorkerExit`], what a worker's exit hook returned.
//!
//! ```text
//! worker start:  initializer(arg) -> S, kept in the worker (ipc-core's worker state)
//! each task:     f(&mut S, A) -> R            (the state is lent for the call)
//! orderly exit:  on_exit(S) -> X, reported   (retired, or the pool joined; not when killed)
//! ```
//! The calls are the pool's own (same chunking, failure contract and lifecycle); only the
//! function handle differs, so this file only converts.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{PoolError, TaskError};
use crate::imap::Imap;
use crate::job::AsyncResult;
use crate::pool::Pool;
use crate::wire::remote_state;

/// What one worker's exit hook returned (see [`Builder::on_exit`](crate::Builder::on_exit)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerExit<X> {
    /// The worker's pid.
    pub pid: u32,
    /// The hook's output, or why there is none (it panicked, the worker's state was missing
    /// or of another type, the output did not decode as `X`).
    pub output: Result<X, String>,
}

/// [`Pool::stateful`]: the pool's calls for functions that borrow the worker's state.
#[derive(Debug, Clone, Copy)]
pub struct Stateful<'p> {
    pub(crate) pool: &'p Pool,
}

impl<'p> Stateful<'p> {
    /// [`Pool::map`] of `f(&mut state, item)`.
    pub fn map<S, A, R>(
        &self,
        f: fn(&mut S, A) -> R,
        items: impl IntoIterator<Item = A>,
    ) -> Result<Vec<R>, PoolError>
    where
        S: 'static,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.map_async(f, items, None)?.get()
    }

    /// [`Pool::map_chunked`] of `f(&mut state, item)`.
    pub fn map_chunked<S, A, R>(
        &self,
        f: fn(&mut S, A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: usize,
    ) -> Result<Vec<R>, PoolError>
    where
        S: 'static,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.map_async(f, items, Some(chunksize))?.get()
    }

    /// [`Pool::map_results`] of `f(&mut state, item)`.
    pub fn map_results<S, A, R>(
        &self,
        f: fn(&mut S, A) -> R,
        items: impl IntoIterator<Item = A>,
    ) -> Result<Vec<Result<R, TaskError>>, PoolError>
    where
        S: 'static,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.pool.results_of(remote_state(f), items, None)
    }

    /// [`Pool::map_results_chunked`] of `f(&mut state, item)`.
    pub fn map_results_chunked<S, A, R>(
        &self,
        f: fn(&mut S, A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: usize,
    ) -> Result<Vec<Result<R, TaskError>>, PoolError>
    where
        S: 'static,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.pool
            .results_of(remote_state(f), items, Some(chunksize))
    }

    /// [`Pool::map_async`] of `f(&mut state, item)`.
    pub fn map_async<S, A, R>(
        &self,
        f: fn(&mut S, A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: Option<usize>,
    ) -> Result<AsyncResult<Vec<R>>, PoolError>
    where
        S: 'static,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.pool.map_async_of(remote_state(f), items, chunksize)
    }

    /// [`Pool::apply`] of `f(&mut state, arg)`.
    pub fn apply<S, A, R>(&self, f: fn(&mut S, A) -> R, arg: A) -> Result<R, PoolError>
    where
        S: 'static,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.apply_async(f, arg)?.get()
    }

    /// [`Pool::apply_async`] of `f(&mut state, arg)`.
    pub fn apply_async<S, A, R>(
        &self,
        f: fn(&mut S, A) -> R,
        arg: A,
    ) -> Result<AsyncResult<R>, PoolError>
    where
        S: 'static,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.pool.apply_async_of(remote_state(f), arg)
    }

    /// [`Pool::imap`] of `f(&mut state, item)`.
    pub fn imap<S, A, R, I>(&self, f: fn(&mut S, A) -> R, items: I) -> Imap<'p, A, R>
    where
        S: 'static,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'p,
    {
        self.pool.lazily(remote_state(f), items, 1, true)
    }

    /// [`Pool::imap_chunked`] of `f(&mut state, item)`.
    pub fn imap_chunked<S, A, R, I>(
        &self,
        f: fn(&mut S, A) -> R,
        items: I,
        chunksize: usize,
    ) -> Imap<'p, A, R>
    where
        S: 'static,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'p,
    {
        self.pool.lazily(remote_state(f), items, chunksize, true)
    }

    /// [`Pool::imap_unordered`] of `f(&mut state, item)`.
    pub fn imap_unordered<S, A, R, I>(&self, f: fn(&mut S, A) -> R, items: I) -> Imap<'p, A, R>
    where
        S: 'static,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'p,
    {
        self.pool.lazily(remote_state(f), items, 1, false)
    }
}
