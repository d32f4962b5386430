//! The scenarios: who takes part, who dies, and what the survivors must still see.
//!
//! ```text
//! Scenario { name, points (the failpoints its victim may arm), max_nth (the hit it dies at is
//!            drawn from 1..=4 or 1..=max_nth, half and half), window_us (a random kill lands in 0..window_us after
//!            the victim starts), run (one round: start, strike, settle, count) }
//! ```
//! Each file groups the scenarios of one layer: `sync` (locks, conditions, barriers, events),
//! `queue` (the three queues), `core` (connections, the forkserver), `pool`, `manager`.

mod core;
mod manager;
mod pool;
mod queue;
mod sync;

use crate::harness::{Counts, Ctx};

/// One scenario (see the module doc).
pub(crate) struct Scenario {
    pub(crate) name: &'static str,
    pub(crate) about: &'static str,
    pub(crate) points: &'static [&'static str],
    pub(crate) max_nth: u32,
    pub(crate) window_us: u64,
    pub(crate) run: fn(&mut Ctx) -> anyhow::Result<Counts>,
}

/// Every scenario, in the order of the table.
pub(crate) fn all() -> Vec<Scenario> {
    let mut v = Vec::new();
    v.extend(sync::scenarios());
    v.extend(queue::scenarios());
    v.extend(core::scenarios());
    v.extend(pool::scenarios());
    v.extend(manager::scenarios());
    v
}
