//! The worker's side for an engine of another crate: [`TaskRunner`] runs tasks in a process
//! that engine started (an MPI rank) exactly as the local pool's workers run them.
//!
//! ```text
//! engine's worker:  TaskRunner::new()            (once: a panic is recorded, not printed)
//!                   for each item of a chunk:    runner.run(&func, args.get(k), index, &mut values)
//!                                                Ok: values gained the encoded result
//!                                                Err(e): values gained an empty item; e is its TaskError
//!                   report (first, values.into_parts(), failures) to the driver, which calls
//!                   Batch::complete_run with them
//! ```

use ipc_core::process::RemoteFn;

use crate::error::TaskError;
use crate::wire::Packed;

/// Runs tasks (the erased [`RemoteFn`]s an engine receives with a chunk) in this process, with
/// the local workers' error contract: a panic is caught and becomes
/// [`TaskError::Panicked`] with its message and backtrace, an argument that does not decode
/// [`TaskError::Argument`], a result that does not encode [`TaskError::Result`], and a task that
/// needs a worker state this process lacks [`TaskError::WorkerState`].
#[derive(Debug)]
pub struct TaskRunner {
    pid: u32,
}

impl TaskRunner {
    /// Makes this process a worker: from now on a panic (in any thread) is recorded for the
    /// item that raised it instead of being printed (it replaces the panic hook).
    pub fn new() -> TaskRunner {
        crate::worker::record_panics();
        TaskRunner {
            pid: ipc_core::process::pid(),
        }
    }

    /// Runs `func` on one encoded argument, item `index` of its input, and appends its
    /// encoded result to `values`; on a failure appends an empty item and returns the error.
    pub fn run(
        &self,
        func: &RemoteFn<(), ()>,
        arg: &[u8],
        index: u64,
        values: &mut Packed,
    ) -> Result<(), TaskError> {
        match values.push_with(|out| crate::worker::run(func, arg, out)) {
            Ok(()) => Ok(()),
            Err(f) => {
                values.push(&[]);
                Err(crate::local::task_error(index, self.pid, f))
            }
        }
    }
}

impl Default for TaskRunner {
    fn default() -> Self {
        TaskRunner::new()
    }
}
