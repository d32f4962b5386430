//! `cargo xtask`: the project's workflows, one command per file (this file only dispatches).
//!
//! ```text
//! cargo xtask test      every test of the workspace, doc tests included, with a summary
//! cargo xtask ci        fmt, clippy, layers, tidy, test, benches smoke, loom, leak check
//! cargo xtask layers    crates depend only on lower layers (from cargo metadata)
//! cargo xtask tidy      what lints cannot check (file headers, futex flag, SAFETY comments...)
//! cargo xtask demo      runs the demo crate
//! cargo xtask bench     criterion benches (arguments go to criterion)
//! cargo xtask compare   this project side by side with CPython (and Rust peers), see --help
//! cargo xtask chaos     kills participants at random and at failpoints, counts what was lost
//! cargo xtask mpi       the opt-in MPI pool: its tests and tour under mpirun; `mpi compare`
//! ```

mod bench;
mod chaos;
mod ci;
mod compare;
mod demo;
mod layers;
mod leaks;
mod metadata;
mod mpi;
mod report;
mod test;
mod tidy;
mod util;

const USAGE: &str = "usage: cargo xtask <command> [options]

commands:
  test [--cargo-test]   every test of the workspace, doc tests included (nextest when installed,
                        or plain cargo test with --cargo-test or when it is not)
  ci [--cargo-test]     fmt check, clippy -D warnings, layers, tidy, test, benches smoke run, loom,
                        then a leak check (/dev/shm entries and processes left by the run)
  layers                check that crates depend only on crates of lower layers
  tidy                  file headers, no private futex flag, no ignored tests, SAFETY comments,
                        no unsafe in ipc-pool and ipc-manager
  demo                  cargo run --release -p demo
  bench [ARGS..]        cargo bench -p benches (ARGS go to criterion)
  compare [--quick] [--only CASE,..] [--pin none|same|split] [--peers] [--reps N]
                        the named cases of this project and of CPython's multiprocessing,
                        side by side; writes target/compare/{compare.json,compare.md,compare.svg}
  chaos [--rounds N] [--seed S] [--only NAME,..] [--list]
                        kills participants of every scenario at random moments and at named
                        failpoints; prints hangs, lost, torn, duplicated and leaks (all must be
                        0) and writes target/chaos/chaos.json
  chaos --fuzz [--inputs N | --full] [--only TARGET,..]
                        fuzzes every decoder that reads another process's bytes (--full: 10^6
                        inputs per target); writes target/chaos/fuzz.json
  mpi [compare [N]]     the opt-in MPI pool (ipc-pool-mpi; needs OpenMPI and libclang): fmt,
                        clippy, its tests under mpirun and the tour; `compare`: against
                        mpi4py.futures, N interleaved turns; writes target/mpi/compare.json";

fn main() {
    let mut args = std::env::args().skip(1);
    let command = args.next();
    let rest: Vec<String> = args.collect();
    let result = match command.as_deref() {
        Some("test") => test::run(&rest),
        Some("ci") => ci::run(&rest),
        Some("layers") => util::no_args("layers", &rest).and_then(|()| layers::run()),
        Some("tidy") => util::no_args("tidy", &rest).and_then(|()| tidy::run()),
        Some("demo") => util::no_args("demo", &rest).and_then(|()| demo::run()),
        Some("bench") => bench::run(&rest),
        Some("compare") => compare::run(&rest),
        Some("chaos") => chaos::run(&rest),
        Some("mpi") => mpi::run(&rest),
        Some("help" | "-h" | "--help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(anyhow::anyhow!("unknown command {other:?}\n\n{USAGE}")),
        None => Err(anyhow::anyhow!("no command given\n\n{USAGE}")),
    };
    if let Err(e) = result {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}
