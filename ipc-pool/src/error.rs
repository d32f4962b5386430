//! The pool's errors: [`TaskError`] for one item, [`PoolError`] for a call.

use std::fmt;

/// Why one task (one input item) has no result. Every variant names the item's index in its
/// input; the others say where it ran.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// The task never ran to the end: its result was cancelled, or the pool was terminated.
    Cancelled {
        /// The item's index in its input.
        index: u64,
    },
}

impl TaskError {
    /// The item's index in its input.
    pub fn index(&self) -> u64 {
        match self {
            TaskError::Panicked { index, .. }
            | TaskError::WorkerDied { index, .. }
            | TaskError::Argument { index, .. }
            | TaskError::Result { index, .. }
            | TaskError::WorkerState { index, .. }
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
                signal: Some(s),
                ..
            } => write!(
                f,
                "task {index}: worker {pid} was killed by signal {s}{} while running it",
                match *s {
                    9 => " (SIGKILL)",
                    15 => " (SIGTERM)",
                    6 => " (SIGABRT: a panic under panic = \"abort\"?)",
                    11 => " (SIGSEGV)",
                    _ => "",
                }
            ),
            TaskError::WorkerDied {
                index,
                pid,
                exit_code,
                ..
            } => write!(
                f,
                "task {index}: worker {pid} exited with code {} while running it",
                exit_code.map_or_else(|| "?".to_string(), |c| c.to_string())
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
