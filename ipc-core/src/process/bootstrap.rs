//! The child side of the spawn and forkserver start methods.

/// A monomorphized entry point: decodes the argument, runs the function, encodes the outcome.
pub(crate) type Trampoline = fn(isize, &[u8], Vec<std::os::fd::OwnedFd>);

/// Called by the load-time hook in every process before `main`.
pub(crate) fn on_load() {}
