//! `cargo xtask demo`: a tour of multiprocessing for Rust that replays the experiments of the
//! document the project grew from (an exploration of Python's `multiprocessing`) with real
//! processes, and prints what happens, with pids and times.
//!
//! Every line a process prints starts with the time since the tour began, the process's name
//! and its pid, so the interleaving of processes is visible. Sleeps are shorter than the
//! seed's (0.3 s instead of 2 s) to keep the tour quick.
//!
//! The binary is also its own "child program" for the daemon experiment: run with
//! `daemon-child` or `daemon-orphan` it plays the main program of that experiment.

mod manager;
mod pool;
mod processes;
mod sync;

use std::fmt::Display;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipc_core::process;

/// A result whose error is anything printable: the tour stops at the first failure.
pub(crate) type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// Milliseconds since the Unix epoch: a clock every process of the tour can read alike.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Prints `what` as the current process, stamped with the time since `epoch` (from [`now_ms`]).
pub(crate) fn say(epoch: u64, what: impl Display) {
    let me = process::current_process();
    let dt = now_ms().saturating_sub(epoch);
    println!(
        "  [{:>2}.{:03}s] {:<13} pid {:<7} {what}",
        dt / 1000,
        dt % 1000,
        me.name,
        me.pid
    );
}

/// Prints a section heading.
pub(crate) fn section(n: u32, title: &str) {
    println!("\n== {n}. {title} ==");
}

/// Prints what the section showed.
pub(crate) fn conclude(text: &str) {
    for line in text.lines() {
        println!("  => {line}");
    }
}

/// Sleeps for `ms` milliseconds.
pub(crate) fn nap(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

fn tour() -> Res {
    let epoch = now_ms();
    println!(
        "multiprocessing for Rust: a tour with real processes (main pid {}, default start \
         method {})",
        std::process::id(),
        process::default_start_method()
    );
    processes::run(epoch)?;
    sync::run(epoch)?;
    processes::function_handles(epoch)?;
    pool::run(epoch)?;
    manager::run(epoch)?;
    manager::custom(epoch)?;
    println!(
        "\nTour complete in {:.1} s.",
        (now_ms() - epoch) as f64 / 1000.0
    );
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None => tour(),
        Some(role @ ("daemon-child" | "daemon-orphan")) => {
            let epoch = args
                .get(1)
                .and_then(|e| e.parse().ok())
                .unwrap_or_else(now_ms);
            processes::daemon_program(role == "daemon-orphan", epoch)
        }
        Some(other) => Err(format!("unknown argument {other:?}; run without arguments").into()),
    };
    if let Err(e) = result {
        eprintln!("demo: error: {e}");
        std::process::exit(1);
    }
}
