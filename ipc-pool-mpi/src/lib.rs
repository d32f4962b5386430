//! ipc-pool-mpi: [`ipc_pool::Pool`] on MPI ranks. The same API (`map`, `imap`,
//! `imap_unordered`, `starmap`, `apply_async`, [`AsyncResult`](ipc_pool::AsyncResult),
//! `close`/`join`, progress) runs on the ranks of an MPI job instead of local worker processes:
//! code moves from one host to a cluster by changing how the pool is built. MPI (OpenMPI, its
//! launcher `mpirun`, Slurm's `srun`) starts and connects the processes; this crate adds no
//! scheduler and no wire protocol between hosts of its own.
//!
//! ```no_run
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! fn main() -> Result<(), ipc_pool::PoolError> {
//!     // First thing in main: in a serving rank, `init` serves and then ends the process.
//!     let mpi = ipc_pool_mpi::init()?;
//!     let pool = mpi.world_pool()?; // `mpirun -n 4 prog`: rank 0 drives, ranks 1-3 serve
//!     // or: let pool = mpi.spawn_pool(4)?; // `mpirun -n 1 prog`: 4 ranks are spawned
//!     assert_eq!(pool.map(square, 1..=4)?, [1, 4, 9, 16]);
//!     Ok(())
//! }
//! ```
//!
//! # Two launch modes (as mpi4py.futures has)
//! - **World** ([`Mpi::world_pool`]): `mpirun -n N prog`. Rank 0 drives; ranks 1..N serve
//!   from [`init`] until the pool ends, then leave the process (exit code 0).
//! - **Spawn** ([`Mpi::spawn_pool`]): `mpirun -n 1 prog` (or `prog` alone, as an MPI
//!   singleton). The driver starts N ranks of this same executable with `MPI_Comm_spawn`;
//!   they serve from [`init`] and leave when the pool ends. Each call spawns new ranks.
//!
//! # Tasks across ranks
//! Tasks are plain functions, as in the local pool: a function travels as an
//! [`ipc_core::process::RemoteFn`] (an offset in the executable, checked by its build id and a
//! tag under the process family's key). Ranks run the same executable at other addresses; the
//! driver hands them the family key in its first message, over the job's communicator, so
//! they accept its handles ([`ipc_core::process::join_family`]). Every rank must therefore run
//! the same build (the same file on every host, as MPI jobs do).
//!
//! # Wire protocol (one MPI message each, postcard)
//! ```text
//! driver -> rank   Welcome { family key, heartbeat period }      (first)
//! rank -> driver   Hello { pid, host, refused? }                 (answer; the pool starts
//!                                                                  when every rank answered)
//! driver -> rank   Bundle { funcs, chunks: (id, func, first index, args) }
//!                                                                (chunks run in order)
//! rank -> driver   Reports { (chunk, first, values, failures)*, busy time }
//!                                                                (in item order, grouped:
//!                                                                 at most 1 ms or 256 KiB old)
//! rank -> driver   Heartbeat { slot = chunk << 24 | item }       (while busy, every period)
//! driver -> rank   Stop                                          (the pool ends)
//! ```
//! # The failure contract
//! - A task that panics, whose argument does not decode or whose result does not encode fails
//!   alone, with the same [`TaskError`](ipc_pool::TaskError) as in the local pool (the pid is
//!   the rank's); the rank serves on.
//! - **A rank that dies** (killed, crashed, `panic = "abort"`, its host gone) is noticed by
//!   its silence: a rank that holds work and sends nothing for the silence limit
//!   ([`Mpi::silence_limit`], 3 s by default; busy ranks send a heartbeat every 250 ms) is
//!   lost. The task it was running (named by its last heartbeat, or the first unreported one
//!   it held) fails with [`TaskError::Lost`](ipc_pool::TaskError::Lost), which names the rank,
//!   its pid and host; the driver prints the same on standard error. Its other unreported
//!   tasks run on the remaining ranks (a task it had finished less than about 1 ms before it
//!   died, whose outcome it had not sent, runs again). With no rank left, what remains fails
//!   as lost. The pool stays usable; when the [`Mpi`] handle is dropped the driver exits with
//!   code 1 instead of finalizing MPI (which would wait for the dead rank): the job ends
//!   non-zero and never hangs.
//! - For the driver to see a rank die, `mpirun` must let the job go on:
//!   `mpirun --enable-recovery`. Without it, OpenMPI ends the whole job about a second after
//!   a rank dies and prints which rank died and how (exit code 137 here): the job still ends
//!   non-zero without hanging, but no task is named.
//! - The driver never waits for a rank to take a message: its messages go through a send
//!   buffer of 64 MiB that MPI copies them into (`MPI_Bsend`; a plain send waits for its
//!   receiver, which a dead or stopped rank never becomes). It lets its messages hold half of
//!   it, waiting for ranks' reports to free room; only a single message larger than that (a
//!   chunk whose arguments exceed 32 MiB) goes by a plain send, which a rank that dies at that
//!   moment would leave waiting.
//! - A rank that hangs (a task that never returns) still sends heartbeats: it is not lost, and
//!   the pool waits for it (there is no per-task timeout on MPI ranks).
//! - `terminate` fails what has not ended as cancelled; a rank finishes the task it is running
//!   (an MPI rank cannot be killed and replaced), then stops.
//!
//! # Threads
//! The driver runs one thread per pool, the only one that calls MPI in this process besides
//! [`init`] and the final `MPI_Finalize`; a serving rank runs its tasks on its main thread and
//! sends heartbeats from a second one. MPI is initialized with `MPI_THREAD_MULTIPLE`.
#![forbid(unsafe_code)]

mod driver;
mod rank;
mod wire;

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipc_pool::{Pool, PoolError};
use mpi::Threading;
use mpi::collective::Root;
use mpi::environment::Universe;
use mpi::topology::{Communicator, InterCommunicator, SimpleCommunicator};

use driver::{MpiEngine, Watch};

/// Initializes MPI (with `MPI_THREAD_MULTIPLE`). Call it first thing in `main`, before the
/// program does anything a serving rank should not do:
/// - in a rank that serves (ranks 1.. of the world, or a rank spawned by
///   [`Mpi::spawn_pool`]), it serves the driver until the pool ends, finalizes MPI and ends
///   the process: it never returns there;
/// - in the driver (rank 0, or a lone process), it returns the [`Mpi`] handle that builds
///   pools.
///
/// An error if MPI was initialized already or cannot give `MPI_THREAD_MULTIPLE`.
pub fn init() -> Result<Mpi, PoolError> {
    let (universe, threading) = mpi::initialize_with_threading(Threading::Multiple)
        .ok_or_else(|| PoolError::Misuse("MPI was already initialized in this process".into()))?;
    if threading != Threading::Multiple {
        return Err(PoolError::Misuse(format!(
            "this MPI library gives {threading:?} threading; the pool needs Multiple"
        )));
    }
    let world = universe.world();
    if let Some(link) = world.parent() {
        // Dropping rsmpi's handle would disconnect it (see `rank::serve`).
        std::mem::forget(link);
        let code = rank::serve(parent, 0);
        // Disconnect from the driver (collective with its side) before finalizing. rsmpi 0.8's
        // `Universe` drop disconnects the parent through two handles, the second one already
        // freed (a crash); after this one `MPI_Comm_get_parent` gives none, so it does not.
        drop(parent());
        finish(universe, code);
    }
    if world.rank() != 0 {
        let code = rank::serve(SimpleCommunicator::world, 0);
        finish(universe, code);
    }
    let mut universe = universe;
    // The driver's buffered sends (see `driver::SEND_BUFFER`): pages only as they are used.
    universe.set_buffer_size(driver::SEND_BUFFER);
    Ok(Mpi {
        universe: Some(universe),
        engines: RefCell::new(Vec::new()),
        world_used: Cell::new(false),
        watch: Cell::new(Watch {
            heartbeat: Duration::from_millis(250),
            silence: Duration::from_secs(3),
            hello: Duration::from_secs(60),
        }),
    })
}

/// The spawn's communicator, seen from a spawned rank.
fn parent() -> InterCommunicator {
    SimpleCommunicator::world()
        .parent()
        .expect("a spawned rank has a parent communicator")
}

/// A serving rank's end: finalize MPI and exit.
fn finish(universe: Universe, code: i32) -> ! {
    drop(universe);
    std::process::exit(code)
}

/// The driver's handle on MPI: builds pools on ranks, and ends MPI when dropped.
///
/// Dropping it terminates the pools it built (their ranks stop), then finalizes MPI; if a rank
/// was lost it prints what was lost and ends the process with exit code 1 instead, since
/// finalizing would wait for the dead rank (see the crate doc).
pub struct Mpi {
    /// Taken (and so finalized) when the handle is dropped.
    universe: Option<Universe>,
    engines: RefCell<Vec<Arc<MpiEngine>>>,
    world_used: Cell<bool>,
    watch: Cell<Watch>,
}

impl Mpi {
    /// This process's rank in the world (0 for the driver) and the world's size.
    pub fn world(&self) -> (i32, i32) {
        let w = SimpleCommunicator::world();
        (w.rank(), w.size())
    }

    /// How long a rank that holds work may send nothing before it is lost (3 s by default; at
    /// least 4 heartbeat periods of 250 ms). For the pools built after this call.
    pub fn silence_limit(&self, limit: Duration) {
        let mut w = self.watch.get();
        w.silence = limit.max(w.heartbeat * 4);
        self.watch.set(w);
    }

    /// A pool on the world's ranks 1..N (`mpirun -n N`): N - 1 processes. Once per job: the
    /// ranks leave when this pool ends.
    pub fn world_pool(&self) -> Result<Pool, PoolError> {
        let size = SimpleCommunicator::world().size();
        if size < 2 {
            return Err(PoolError::Misuse(
                "a world pool needs ranks to serve it: start the program with `mpirun -n N` \
                 (N >= 2), or use spawn_pool"
                    .into(),
            ));
        }
        if self.world_used.replace(true) {
            return Err(PoolError::Misuse(
                "the world's ranks served a pool already and have left; use spawn_pool for \
                 another"
                    .into(),
            ));
        }
        let connect: driver::Connect<SimpleCommunicator> =
            Box::new(|| Ok(SimpleCommunicator::world()));
        let ranks = (1..size).collect();
        self.start(MpiEngine::start(connect, ranks, self.watch.get(), false)?)
    }

    /// A pool on `n` new ranks of this executable, started with `MPI_Comm_spawn` (they serve
    /// from [`init`] and leave when the pool ends).
    pub fn spawn_pool(&self, n: usize) -> Result<Pool, PoolError> {
        if n == 0 {
            return Err(PoolError::Misuse("a pool needs at least one rank".into()));
        }
        let exe = std::env::current_exe().map_err(|e| PoolError::Os(e.into()))?;
        let connect: driver::Connect<InterCommunicator> = Box::new(move || {
            let command = std::process::Command::new(exe);
            let me = SimpleCommunicator::self_comm();
            let comm = me
                .process_at_rank(0)
                .spawn(&command, n as i32)
                .map_err(|e| format!("MPI_Comm_spawn of {n} ranks failed: {e}"))?;
            Ok(comm)
        });
        let ranks = (0..n as i32).collect();
        self.start(MpiEngine::start(connect, ranks, self.watch.get(), true)?)
    }

    fn start(&self, engine: Arc<MpiEngine>) -> Result<Pool, PoolError> {
        self.engines.borrow_mut().push(engine.clone());
        Ok(Pool::with_engine(engine))
    }

    /// The ranks lost so far (each as the driver reported it), over every pool built here.
    pub fn lost_ranks(&self) -> Vec<String> {
        self.engines
            .borrow()
            .iter()
            .flat_map(|e| e.lost())
            .collect()
    }
}

impl Drop for Mpi {
    fn drop(&mut self) {
        for e in self.engines.borrow().iter() {
            ipc_pool::Engine::terminate(&**e);
        }
        let lost = self.lost_ranks();
        if !lost.is_empty() {
            eprintln!(
                "ipc-pool-mpi: {} rank(s) lost in this job; ending it with MPI_Abort (code 1) \
                 instead of finalizing MPI, which would wait for them:",
                lost.len()
            );
            for l in lost {
                eprintln!("  {l}");
            }
            // MPI_Abort, not exit: under `mpirun --enable-recovery` an exit code of the driver
            // alone does not make the job's (mpirun's) exit code non-zero.
            SimpleCommunicator::world().abort(1);
        }
        // MPI_Finalize (and, for spawned ranks, their side of the disconnect).
        drop(self.universe.take());
    }
}

/// Polling with back-off (MPI's own blocking calls would spin a core the whole time):
///
/// ```text
/// idle for   0-1 ms     sched_yield (a message within a map is taken at once; the yields give
///                       the core to the other ranks of an oversubscribed host)
///            1-50 ms    naps doubling from 20 us to 100 us
///            50 ms-1 s  naps up to 1 ms
///            past 1 s   naps up to 10 ms (a pool at rest: the 5 processes of a world pool
///                       used 0.6% of one core here; the first message after rest waits up to
///                       10 ms)
/// ```
pub(crate) struct Nap {
    since: Instant,
    nap: Duration,
}

impl Nap {
    pub(crate) fn new() -> Nap {
        Nap {
            since: Instant::now(),
            nap: Duration::from_micros(20),
        }
    }

    pub(crate) fn idle(&mut self) {
        let idle = self.since.elapsed();
        if idle < Duration::from_millis(1) {
            std::thread::yield_now();
        } else {
            std::thread::sleep(self.nap);
            let most = if idle < Duration::from_millis(50) {
                Duration::from_micros(100)
            } else if idle < Duration::from_secs(1) {
                Duration::from_millis(1)
            } else {
                Duration::from_millis(10)
            };
            self.nap = (self.nap * 2).min(most);
        }
    }
}
