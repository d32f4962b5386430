//! Processes that run your functions.

pub(crate) mod bootstrap;
