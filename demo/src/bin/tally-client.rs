//! The demo's second binary (section 19): a client built apart from the server's program. It
//! knows the manager's TCP address and key (its arguments) and the `Tally` type, and calls
//! the server by method name and version.
//!
//! Run by `demo`; by hand: `tally-client <address> <authkey as hex>`.

use demo::{TallyProxy, unhex};
use ipc_manager::{Dict, Manager, served};
use serde::{Deserialize, Serialize};

/// A newer build's view of the tally: it calls a `reset` the server's build does not have.
/// (Only its proxy is used here: the server holds the older `demo::Tally`.)
#[derive(Serialize, Deserialize)]
#[allow(dead_code)]
struct NewerTally;

#[served(name = "Tally", proxy = NewerTallyProxy)]
#[allow(dead_code, unreachable_pub)]
impl NewerTally {
    /// Not in the server's build.
    pub fn reset(&mut self) {}
}

fn say(what: impl std::fmt::Display) {
    println!("tally-client pid {}: {what}", std::process::id());
}

fn run(address: &str, key: &str) -> Result<(), Box<dyn std::error::Error>> {
    let key = unhex(key).ok_or("the key is not hex")?;
    let m = Manager::connect(&address.parse()?, &key)?;
    let tally: TallyProxy = m.lookup("tally")?;
    say(format!("add(5) -> {}", tally.add(5)?));
    say(format!("total() -> {}", tally.total()?));
    let history = tally.history()?;
    say(format!(
        "history() returned a List proxy (a nested object) holding {:?}",
        history.to_vec()?
    ));
    let mine = m.create(&demo::Tally::new("the client's"))?;
    mine.add(7)?;
    say(format!(
        "created a Tally of its own on the server: total() -> {}",
        mine.total()?
    ));
    let newer: NewerTallyProxy = m.lookup("tally")?;
    match newer.reset() {
        Err(e) => say(format!("reset(), which the server's build lacks: {e}")),
        Ok(()) => say("reset() ran: the server should not have it"),
    }
    let totals: Dict<String, i64> = m.lookup("totals")?;
    match totals.update("x".into(), |v| v) {
        Err(e) => say(format!("an update function of this binary: {e}")),
        Ok(_) => say("an update function of this binary ran on the server"),
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [address, key] = args.as_slice() else {
        eprintln!("usage: tally-client <address> <authkey as hex>");
        std::process::exit(2);
    };
    if let Err(e) = run(address, key) {
        eprintln!("tally-client: error: {e}");
        std::process::exit(1);
    }
}
