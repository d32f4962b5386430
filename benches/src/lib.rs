//! Shared code of the benchmark suite: the named cases (see `benches/README.md`), their registry,
//! the measurement method shared with the CPython script, CPU placement and peer processes.
//!
//! Both the criterion benches (`benches/benches/*.rs`) and the `compare` binary run the cases
//! from here, so the two can never measure different things.
//!
//! # Map
//! - [`cases`]: the registry of named cases, with units, sizes, targets and availability.
//! - [`conn`]: the connection cases (`pipe_pingpong`, `pipe_bytes_pingpong`,
//!   `pipe_throughput_1m`).
//! - [`floor`]: the machine's floor of a case, the same operation by the most direct means
//!   (`compare --floor`).
//! - [`manager`]: the ipc-manager cases (`manager_*`).
//! - [`measure`]: warm-up, repetitions, median / min / max.
//! - [`pin`]: the `--pin none|same|split` placement of the runner and its children.
//! - [`process`]: the process start cases (`process_start_join_*`).
//! - [`sync`]: the ipc-sync cases (locks, events, conditions, values, queues) and named segments.
//! - [`peer`]: the child processes that the cross-process cases talk to.
//! - `peers` (cargo feature `peers`): procspawn and ipc-channel running the same cases.

pub mod cases;
pub mod conn;
pub mod floor;
pub mod manager;
pub mod measure;
pub mod peer;
#[cfg(feature = "peers")]
pub mod peers;
pub mod pin;
pub mod pool;
pub mod process;
pub mod sync;

/// Give up on a handshake or a join after this long: a hang is a bug, never a result.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The workspace README's examples run as doc tests here (a tooling crate, the one library that
/// sees every layer they use: the pool and the manager are siblings), so the front page cannot
/// go stale.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
