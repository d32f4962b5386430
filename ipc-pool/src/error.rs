//! The pool's errors: [`TaskError`] for one item, [`PoolError`] for a call.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why one task (one input item) has no result. Every variant names the item's index in its
/// input; the others say where it ran. It travels (serde) as an engine of another crate reports
/// it from a remote worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum TaskError {
    /// The function panicked; the worker caught it and lives on.
    Panicked {
        /// The item's index in its input.
        index: u64,
        /// The worker's pid.
        pid: u32,
        /// The panic message (and where it was raised).
        message: String,
        /// The worker's backtrace at the panic.
        backtrace: String,
    },
    /// The worker died while running this item (killed by a signal, or it exited); it was
    /// replaced, and the items that had not started yet ran elsewhere.
    WorkerDied {
        /// The item's index in its input.
        index: u64,
        /// The dead worker's pid.
        pid: u32,
        /// The signal that killed it, if one did.
        signal: Option<i32>,
        /// Its exit code, if it exited.
        exit_code: Option<i32>,
        /// The attempts before this one, oldest first, each on a worker that died too (with
        /// [`Builder::retries`](crate::Builder::retries); empty without).
        earlier: Vec<Death>,
    },
    /// The task ran longer than the pool's [`task_timeout`](crate::Builder::task_timeout):
    /// its worker was killed and replaced; the other items went on.
    TimedOut {
        /// The item's index in its input.
        index: u64,
        /// The killed worker's pid.
        pid: u32,
        /// How long it had run when it was stopped (at least the timeout).
        after: std::time::Duration,
    },
    /// The argument could not be encoded (in the caller) or decoded (in the worker).
    Argument {
        /// The item's index in its input.
        index: u64,
        /// What the codec said.
        message: String,
    },
    /// The result could not be encoded in the worker (for example it holds a shared object),
    /// or decoded here.
    Result {
        /// The item's index in its input.
        index: u64,
        /// What went wrong.
        message: String,
    },
    /// The task takes the worker's state ([`Pool::stateful`](crate::Pool::stateful)), and the
    /// worker has none (its initializer failed: the message says how) or one of another type.
    WorkerState {
        /// The item's index in its input.
        index: u64,
        /// The worker's pid.
        pid: u32,
        /// What is wrong with the state.
        message: String,
    },
    /// The engine lost the worker that ran the task without learning how it ended (a remote
    /// worker stopped answering: an MPI rank that died). The task may have run in part.
    Lost {
        /// The item's index in its input.
        index: u64,
        /// Which worker, in the engine's words (for MPI: rank, pid and host).
        worker: String,
        /// What the engine saw.
        why: String,
    },
    /// The task never ran to the end: its result was cancelled, or the pool was terminated.
    Cancelled {
        /// The item's index in its input.
        index: u64,
    },
}

/// One attempt at a task whose worker died (see [`TaskError::WorkerDied`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Death {
    /// The worker's pid.
    pub pid: u32,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// Its exit code, if it exited.
    pub exit_code: Option<i32>,
}

impl fmt::Display for Death {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.signal, self.exit_code) {
            (Some(s), _) => write!(
                f,
                "worker {} killed by signal {s}{}",
                self.pid,
                signal_name(s)
            ),
            (None, Some(c)) => write!(f, "worker {} exited with code {c}", self.pid),
            (None, None) => write!(f, "worker {} ended", self.pid),
        }
    }
}

fn signal_name(s: i32) -> &'static str {
    match s {
        9 => " (SIGKILL)",
        15 => " (SIGTERM)",
        6 => " (SIGABRT: a panic under panic = \"abort\"?)",
        11 => " (SIGSEGV)",
        _ => "",
    }
}

impl TaskError {
    /// The item's index in its input.
    pub fn index(&self) -> u64 {
        match self {
            TaskError::Panicked { index, .. }
            | TaskError::WorkerDied { index, .. }
            | TaskError::TimedOut { index, .. }
            | TaskError::Argument { index, .. }
            | TaskError::Result { index, .. }
            | TaskError::WorkerState { index, .. }
            | TaskError::Lost { index, .. }
            | TaskError::Cancelled { index } => *index,
        }
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Panicked {
                index,
                pid,
                message,
                ..
            } => write!(f, "task {index} panicked in worker {pid}: {message}"),
            TaskError::WorkerDied {
                index,
                pid,
                signal,
                exit_code,
                earlier,
            } => {
                let this = Death {
                    pid: *pid,
                    signal: *signal,
                    exit_code: *exit_code,
                };
                write!(f, "task {index}: {this} while running it")?;
                if !earlier.is_empty() {
                    let all: Vec<String> = earlier.iter().map(|d| d.to_string()).collect();
                    write!(f, " (earlier attempts: {})", all.join("; "))?;
                }
                Ok(())
            }
            TaskError::TimedOut { index, pid, after } => write!(
                f,
                "task {index} ran {after:?} in worker {pid}, past the pool's task timeout: the \
                 worker was killed and replaced"
            ),
            TaskError::Argument { index, message } => {
                write!(f, "task {index}: its argument cannot travel: {message}")
            }
            TaskError::Result { index, message } => {
                write!(f, "task {index}: its result cannot travel: {message}")
            }
            TaskError::WorkerState {
                index,
                pid,
                message,
            } => write!(
                f,
                "task {index}: no usable worker state in worker {pid}: {message}"
            ),
            TaskError::Lost { index, worker, why } => {
                write!(f, "task {index}: lost with {worker}: {why}")
            }
            TaskError::Cancelled { index } => write!(f, "task {index} was cancelled"),
        }
    }
}

impl std::error::Error for TaskError {}

/// Why a pool call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum PoolError {
    /// A task failed (for `map`, the first failing item, reported once every item ended).
    Task(TaskError),
    /// The pool was closed or terminated: it takes no more work.
    Closed,
    /// The result was not ready in time.
    Timeout,
    /// The result was already taken by an earlier `get`.
    Taken,
    /// Misuse, said in words (zero processes, a chunk size of 0, join before close).
    Misuse(String),
    /// A worker could not be started, or the system refused something the pool needs.
    Os(ipc_core::Error),
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolError::Task(e) => e.fmt(f),
            PoolError::Closed => f.write_str("the pool is closed: it takes no more work"),
            PoolError::Timeout => f.write_str("the result was not ready in time"),
            PoolError::Taken => f.write_str("the result was already taken"),
            PoolError::Misuse(m) => f.write_str(m),
            PoolError::Os(e) => write!(f, "pool: {e}"),
        }
    }
}

impl std::error::Error for PoolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PoolError::Task(e) => Some(e),
            PoolError::Os(e) => Some(e),
            _ => None,
        }
    }
}

impl From<TaskError> for PoolError {
    fn from(e: TaskError) -> Self {
        PoolError::Task(e)
    }
}

impl From<ipc_core::Error> for PoolError {
    fn from(e: ipc_core::Error) -> Self {
        PoolError::Os(e)
    }
}
