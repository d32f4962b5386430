//! What the demo's two binaries share: the custom type that section 19 serves. `demo` runs the
//! manager's server; `tally-client`, a program built apart, reaches it over TCP with the key
//! and calls the type's methods by name and version (its own code addresses mean nothing to
//! the server).

use ipc_manager::{Context, List, Ref, served};
use serde::{Deserialize, Serialize};

/// A tally of amounts held by a manager's server (Python's `BaseManager.register('Tally',
/// Tally)`); clients reach it through [`TallyProxy`].
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Tally {
    /// What the tally counts.
    pub label: String,
    amounts: Vec<i64>,
}

#[served]
impl Tally {
    /// An empty tally (not served: it has no receiver).
    pub fn new(label: &str) -> Tally {
        Tally {
            label: label.into(),
            amounts: Vec::new(),
        }
    }

    /// Adds `amount`; returns the new total.
    pub fn add(&mut self, amount: i64) -> i64 {
        self.amounts.push(amount);
        self.total()
    }

    /// The sum of the amounts.
    pub fn total(&self) -> i64 {
        self.amounts.iter().sum()
    }

    /// The amounts so far, as a new list on the server: the client gets a `List` proxy.
    pub fn history(&self, cx: &mut Context) -> ipc_manager::Result<Ref<List<i64>>> {
        cx.list(self.amounts.clone())
    }
}

/// An authkey as hex, for a command line.
pub fn hex(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// An authkey from hex.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}
