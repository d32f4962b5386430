//! Criterion benches of the ipc-sync cases and named segments (defined in `benches/README.md`,
//! code in `benches::sync`).

mod common;

fn main() {
    common::run(&[
        "lock_uncontended",
        "semaphore_uncontended",
        "value_increment_locked",
        "lock_contended_2proc",
        "event_pingpong",
        "condition_pingpong",
        "queue_pingpong",
        "queue_throughput_small",
        "simplequeue_throughput_small",
        "queue_throughput_64k",
        "shared_memory_create_unlink",
    ]);
}
