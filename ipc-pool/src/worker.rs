//! A worker process's life: take a chunk from its mailbox, run each item, report each outcome,
//! until the mailbox is shut down (see the crate doc for the slot protocol).

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};

use ipc_core::process::RemoteFn;
use serde_bytes::ByteBuf;

use crate::wire::{Outcome, Report, WorkerBoot, pack};

thread_local! {
    /// The last panic's message and backtrace, left by the hook for the item that raised it.
    static PANIC: RefCell<Option<(String, String)>> = const { RefCell::new(None) };
}

/// The worker's main function (started by the pool under its start method).
pub(crate) fn main(boot: WorkerBoot) {
    // A task's panic is the item's error, reported to the pool: record it instead of printing.
    std::panic::set_hook(Box::new(|info| {
        let bt = std::backtrace::Backtrace::force_capture().to_string();
        PANIC.with(|p| *p.borrow_mut() = Some((info.to_string(), bt)));
    }));
    let pid = ipc_core::process::pid();
    while let Ok(chunk) = boot.mailbox.get() {
        for (k, arg) in chunk.items.iter().enumerate() {
            let item = k as u32;
            boot.slot.store(pack(chunk.id, item));
            let outcome = run(&chunk.func, arg);
            let report = Report::Item {
                chunk: chunk.id,
                item,
                pid,
                outcome,
            };
            if boot.results.put(report).is_err() {
                // The pool shut its result queue: it is going away.
                return;
            }
        }
    }
}

/// Runs one item, catching a panic.
fn run(func: &RemoteFn<(), ()>, arg: &[u8]) -> Outcome {
    match catch_unwind(AssertUnwindSafe(|| func.call_encoded(arg, Vec::new()))) {
        Ok(Ok((bytes, fds))) if fds.is_empty() => Outcome::Value(ByteBuf::from(bytes)),
        Ok(Ok(_)) => Outcome::Result(
            "it holds a shared object (a file descriptor), which cannot travel through the \
             pool's result queue"
                .into(),
        ),
        Ok(Err(ipc_core::Error::Decode(e))) => Outcome::Argument(e.to_string()),
        Ok(Err(e)) => Outcome::Result(e.to_string()),
        Err(payload) => {
            let (message, backtrace) = PANIC
                .with(|p| p.borrow_mut().take())
                .unwrap_or_else(|| (panic_text(&*payload), String::new()));
            Outcome::Panicked { message, backtrace }
        }
    }
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".into()
    }
}
