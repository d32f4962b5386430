//! The tour runs to the end and shows what it promises: `cargo xtask demo` cannot rot.

use std::process::Command;

#[test]
fn the_tour_runs_and_shows_each_experiment() {
    let out = Command::new(env!("CARGO_BIN_EXE_demo"))
        .output()
        .expect("the demo binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "sleepy said 'exiting': false",
        "exitcode = Some(-15)",
        "after kill(): the child process was killed by signal 9",
        "join error: the child process panicked: 3 is more than I can handle",
        "answer Sum(9)",
        "tasks served per worker",
        "the event is set: true",
        "shared total = 9",
        "Err(OwnerDied(guard))",
        "at most 2 were ever active at once",
        "arrival indices [0, 1, 2]; the action ran 1 time(s)",
        "cube(7) = 343",
        "a forged handle is refused: true",
        "the worker ran 2 functions it had never been told about",
        "map(do_calculation, 0..10) = [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]",
        "the pool goes on: map(0..4) = [100, 101, 102, 103]",
        "look_up(3, 9_999, 123_456) = [Some(9), Some(99980001), None]",
        "past the pool's task timeout: the worker was killed and replaced",
        "200006 submitted, 200006 done (1 failed)",
        "results: [(0, 0), (1, 2), (2, 4), (3, 6), (4, 8), (5, 10), (6, 12), (7, 14), (8, 16), (9, 18)]",
        "consumer read ns.value = \"This is the value\"",
        "the namespace prints as Namespace(value='This is the value')",
        "4 processes x 250 fetch_add(1) = 1000",
        "scores[\"remote\"] = 42",
        "a client with a wrong key: ",
        "server killed; a proxy call: the manager's server is gone",
        "add(5) -> 15",
        "history() returned a List proxy (a nested object) holding [10, 5]",
        "created a Tally of its own on the server: total() -> 7",
        "reset(), which the server's build lacks: a Tally has no operation reset (version 1)",
        "an update function of this binary: ",
        "tally.total() = 15",
        "Tour complete",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    for heading in 1..=19 {
        assert!(
            stdout.contains(&format!("\n== {heading}. ")),
            "section {heading} missing"
        );
    }
}
