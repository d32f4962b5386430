//! The multi-process test helpers: one copy for the workspace, kept with ipc-core's tests.

#[path = "../../../ipc-core/tests/common/mod.rs"]
mod shared;

#[allow(unused_imports, unreachable_pub)]
pub use shared::*;
