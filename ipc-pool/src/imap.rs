//! [`Imap`]: a lazy map over an input iterator, with a bound on the items in flight.
//!
//! ```text
//! next():  refill: while submitted - taken < bound and the input has items:
//!              read up to `chunksize` items, encode them, submit them as one chunk
//!          then ordered: wait for item `taken`; unordered: wait for the next arrival
//!          the input ended and every submitted item was taken -> None
//! bound:   max(2 x processes x chunksize, chunksize): results not yet taken count, so a
//!          slow consumer holds the input back (an endless input works)
//! drop:    the items submitted and not taken are cancelled (those not started never run; a
//!          worker running one is killed and replaced)
//! ```
//! An argument that cannot be encoded becomes that item's error, in its place.

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::engine::{Batch, Engine};
use crate::error::{PoolError, TaskError};
use crate::wire::{MAX_CHUNK, Packed, encode_into};

/// The iterator of [`Pool::imap`](crate::Pool::imap) and
/// [`Pool::imap_unordered`](crate::Pool::imap_unordered): one `Result` per input item.
///
/// ```
/// fn triple(x: u32) -> u32 {
///     x * 3
/// }
/// let pool = ipc_pool::Pool::new(2)?;
/// // An endless input: only what is taken (plus a bounded look-ahead) runs.
/// let mut it = pool.imap(triple, 0..);
/// assert_eq!(it.next().unwrap()?, 0);
/// assert_eq!(it.next().unwrap()?, 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Imap<'p, A, R> {
    engine: Arc<dyn Engine>,
    func: Result<ipc_core::process::RemoteFn<(), ()>, Option<PoolError>>,
    input: Box<dyn Iterator<Item = A> + 'p>,
    batch: Arc<Batch>,
    chunksize: usize,
    bound: u64,
    ordered: bool,
    submitted: u64,
    taken: u64,
    input_done: bool,
    #[cfg(feature = "progress")]
    bar: Option<indicatif::ProgressBar>,
    _r: std::marker::PhantomData<fn() -> R>,
}

impl<'p, A, R> Imap<'p, A, R>
where
    A: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    pub(crate) fn new(
        engine: Arc<dyn Engine>,
        func: Result<ipc_core::process::RemoteFn<(), ()>, PoolError>,
        input: Box<dyn Iterator<Item = A> + 'p>,
        chunksize: usize,
        ordered: bool,
        progress: bool,
    ) -> Self {
        let chunksize = chunksize.clamp(1, MAX_CHUNK);
        let bound = (2 * engine.processes() * chunksize).max(chunksize) as u64;
        let batch = if ordered {
            Batch::new()
        } else {
            Batch::unordered()
        };
        #[cfg(feature = "progress")]
        let bar = progress.then(|| crate::progress::attach(&batch, None));
        #[cfg(not(feature = "progress"))]
        let _ = progress;
        Imap {
            engine,
            func: func.map_err(Some),
            input,
            batch,
            chunksize,
            bound,
            ordered,
            submitted: 0,
            taken: 0,
            input_done: false,
            #[cfg(feature = "progress")]
            bar,
            _r: std::marker::PhantomData,
        }
    }

    /// Items read from the input and submitted so far.
    pub fn submitted(&self) -> u64 {
        self.submitted
    }

    /// Submits chunks while the bound allows; items that cannot be encoded are completed with
    /// their error at once.
    fn refill(&mut self) -> Result<(), PoolError> {
        let func = match &mut self.func {
            Ok(f) => *f,
            Err(e) => return Err(e.take().unwrap_or(PoolError::Closed)),
        };
        while !self.input_done && self.submitted - self.taken < self.bound {
            let read: Vec<A> = self.input.by_ref().take(self.chunksize).collect();
            if read.len() < self.chunksize {
                self.input_done = true;
            }
            let mut start = self.submitted;
            let mut args = Packed::default();
            for a in read {
                let index = self.submitted;
                self.submitted += 1;
                match encode_into(index, &a, &mut args) {
                    Ok(()) => {}
                    Err(PoolError::Task(e)) => {
                        // Submit what came before, then this item's error in its place.
                        self.flush(func, start, std::mem::take(&mut args))?;
                        self.batch.complete(index, Err(e));
                        start = index + 1;
                    }
                    Err(e) => return Err(e),
                }
            }
            self.flush(func, start, args)?;
        }
        Ok(())
    }

    fn flush(
        &self,
        func: ipc_core::process::RemoteFn<(), ()>,
        first: u64,
        args: Packed,
    ) -> Result<(), PoolError> {
        if args.is_empty() {
            return Ok(());
        }
        self.engine.submit(&self.batch, func, first, args)
    }
}

impl<A, R> Iterator for Imap<'_, A, R>
where
    A: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    type Item = Result<R, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Err(e) = self.refill() {
            // The pool is closed (or the function cannot be named): end, saying why once.
            self.input_done = true;
            self.submitted = self.taken;
            return match e {
                PoolError::Task(t) => Some(Err(t)),
                _ => None,
            };
        }
        if self.taken == self.submitted {
            return None;
        }
        let outcome = if self.ordered {
            self.batch.take(self.taken)
        } else {
            self.batch.take_next().1
        };
        self.taken += 1;
        Some(outcome)
    }
}

/// With the `async` feature, an `Imap` is also a `Stream` of the same items: submitting is
/// done on each poll (reading the input, which should not block), and a result not there yet
/// leaves a waker with the batch, woken by the thread that completes an item.
///
/// ```
/// # #[cfg(feature = "async")] {
/// use std::pin::Pin;
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
/// let pool = ipc_pool::Pool::new(2).unwrap();
/// let mut squares = pool.imap(square, 1..=4);
/// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// let got: Vec<u64> = rt.block_on(async {
///     let mut got = Vec::new();
///     while let Some(r) = std::future::poll_fn(|cx| {
///         futures_core::Stream::poll_next(Pin::new(&mut squares), cx)
///     })
///     .await
///     {
///         got.push(r.unwrap());
///     }
///     got
/// });
/// assert_eq!(got, [1, 4, 9, 16]);
/// # }
/// ```
#[cfg(feature = "async")]
impl<A, R> futures_core::Stream for Imap<'_, A, R>
where
    A: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    type Item = Result<R, TaskError>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = self.get_mut();
        if let Err(e) = this.refill() {
            this.input_done = true;
            this.submitted = this.taken;
            return Poll::Ready(match e {
                PoolError::Task(t) => Some(Err(t)),
                _ => None,
            });
        }
        if this.taken == this.submitted {
            return Poll::Ready(None);
        }
        let index = this.ordered.then_some(this.taken);
        match this.batch.poll_take::<R>(index, cx.waker()) {
            Some((_, outcome)) => {
                this.taken += 1;
                Poll::Ready(Some(outcome))
            }
            None => Poll::Pending,
        }
    }
}

impl<A, R> Drop for Imap<'_, A, R> {
    fn drop(&mut self) {
        #[cfg(feature = "progress")]
        if let Some(bar) = &self.bar {
            bar.finish();
        }
        if self.taken < self.submitted {
            self.batch.cancel();
            self.engine.cancel(&self.batch);
        }
    }
}
