//! The seam between the pool's API and what runs the tasks: [`Engine`]. The local engine
//! (worker processes on this host) is one; a crate of a higher layer (the MPI pool) can bring
//! another, and [`Pool::with_engine`](crate::Pool::with_engine) puts the same API on it.

use std::sync::Arc;
use std::time::Instant;

use ipc_core::process::RemoteFn;

use crate::error::PoolError;
pub use crate::job::Batch;
pub use crate::wire::Packed;

/// Runs chunks of tasks and reports each item's outcome to its [`Batch`].
///
/// The contract: every item submitted is reported exactly once (a value, or a
/// [`TaskError`](crate::TaskError)), unless its batch is cancelled or the engine terminated;
/// nothing waits without a bound; a dead worker fails only the item it was running.
pub trait Engine: Send + Sync + 'static {
    /// How many tasks can run at once.
    fn processes(&self) -> usize;

    /// Queues chunks of one batch, in order: each `(first, args)` is encoded arguments run in
    /// order by `func` on one worker, item `k`'s outcome going to `batch` as item `first + k`.
    /// An engine that takes a lock per submission takes it once for all of them: a `map` with
    /// a chunk size of 1 submits its items this way in growing groups.
    fn submit_many(
        &self,
        batch: &Arc<Batch>,
        func: RemoteFn<(), ()>,
        chunks: Vec<(u64, Packed)>,
    ) -> Result<(), PoolError>;

    /// Queues one chunk (see [`submit_many`](Self::submit_many)).
    fn submit(
        &self,
        batch: &Arc<Batch>,
        func: RemoteFn<(), ()>,
        first: u64,
        args: Packed,
    ) -> Result<(), PoolError> {
        self.submit_many(batch, func, vec![(first, args)])
    }

    /// What the engine did so far (see [`Insights`](crate::Insights)); empty by default.
    fn insights(&self) -> crate::Insights {
        crate::Insights::default()
    }

    /// Takes the outputs of the workers' exit hook that came since the last call (by worker
    /// pid, encoded, in the order the workers left): see
    /// [`Builder::on_exit`](crate::Builder::on_exit). None by default.
    fn take_worker_exits(&self) -> Vec<(u32, Result<Vec<u8>, String>)> {
        Vec::new()
    }

    /// Lends the calling thread, which is about to wait for outcomes, until `done()` says its
    /// wait is over or `until` passes: an engine that can collect outcomes in any thread does
    /// so here (a result then reaches its waiter without waking anybody). The default only
    /// polls `done`.
    fn help(&self, done: &dyn Fn() -> bool, until: Instant) {
        let mut i = 0u32;
        while !done() {
            i = i.wrapping_add(1);
            if i.is_multiple_of(64) && Instant::now() >= until {
                return;
            }
            std::hint::spin_loop();
        }
    }

    /// Drops what of `batch` has not started (its outcomes are no longer wanted).
    fn cancel(&self, batch: &Arc<Batch>);

    /// Takes no more work; what was submitted still runs.
    fn close(&self);

    /// After `close`: waits until every task ran, then stops the workers.
    fn join(&self) -> Result<(), PoolError>;

    /// Stops everything now: running tasks are killed, pending ones fail as cancelled.
    fn terminate(&self);
}
