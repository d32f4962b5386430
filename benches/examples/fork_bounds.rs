//! Where a fork start's time goes, between the bare floor and this project's start (issue #17).
//!
//! `cargo run --release -p benches --example fork_bounds [pin] [floor|minimal|socket|ours]`
//!
//! Four ways to fork a child that hands back a `u64`, each timed over 200 starts, taken in turn
//! 15 times over (so a drifting machine moves all alike), reported as medians:
//!
//! ```text
//! floor      fork + _exit + waitpid (the compare floor: the child returns nothing)
//! minimal    + pidfd_open + poll (a join that can time out), the child writes its value
//!            into a shared page: the least any start with a result and a timed join does
//! + socket   + a socketpair made and closed per start (the channel an outcome of any size,
//!            or one carrying descriptors, needs)
//! ours       Builder::spawn(i, echo) + join under the fork start method (as compare's
//!            process_start_join_fork)
//! ```
//!
//! Naming one way runs only that one (2000 starts), for `perf stat` and `perf record`.
//! With `pin`, everything runs on one CPU (children inherit it), so each start's costs add up
//! one after another instead of overlapping on two CPUs. `perf stat -e page-faults` on the
//! example shows the other half of the story: ours faults 25 times a start (parent and child),
//! the minimal start with a socket 11 (the floor 10).
#![allow(unsafe_code)]

use std::hint::black_box;
use std::time::Instant;

use anyhow::{Context, ensure};
use benches::floor::{fork_child, reap};
use benches::pin::{Pin, Placement};
use rustix::event::{PollFd, PollFlags};
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use rustix::process::{Pid, PidfdFlags};

const STARTS: u64 = 200;
const TURNS: usize = 15;

#[derive(Clone, Copy)]
enum Way {
    Floor,
    Minimal,
    Socket,
    Ours,
}

const WAYS: [(Way, &str); 4] = [
    (Way::Floor, "floor"),
    (Way::Minimal, "minimal"),
    (Way::Socket, "socket"),
    (Way::Ours, "ours"),
];

fn echo(x: u64) -> u64 {
    x
}

/// Forks a child that stores `echo(value)` in `*page` (nothing if `page` is null).
fn fork_storing(page: *mut u64, value: u64) -> anyhow::Result<libc::pid_t> {
    // SAFETY: the child makes one volatile store into the shared page `main` mapped for the
    // whole run (only this child writes it meanwhile): no allocation, no lock.
    unsafe {
        fork_child(|| {
            if !page.is_null() {
                std::ptr::write_volatile(page, echo(black_box(value)));
            }
        })
    }
}

/// `STARTS` starts the given way: microseconds per start.
fn run(way: Way, page: *mut u64) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    for i in 0..STARTS {
        match way {
            Way::Floor => reap(fork_storing(std::ptr::null_mut(), i)?)?,
            Way::Minimal | Way::Socket => {
                let pair = match way {
                    Way::Socket => Some(rustix::net::socketpair(
                        AddressFamily::UNIX,
                        SocketType::SEQPACKET,
                        SocketFlags::CLOEXEC,
                        None,
                    )?),
                    _ => None,
                };
                let pid = fork_storing(page, i)?;
                let pidfd = rustix::process::pidfd_open(
                    Pid::from_raw(pid).context("fork returned a bad pid")?,
                    PidfdFlags::empty(),
                )?;
                let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
                rustix::event::poll(&mut fds, None)?;
                reap(pid)?;
                // SAFETY: `page` is the mapped shared page; the child that wrote it is reaped.
                let got = unsafe { std::ptr::read_volatile(page) };
                ensure!(got == i, "the child stored {got}, expected {i}");
                drop((pidfd, pair));
            }
            Way::Ours => {
                let child = ipc_core::process::Builder::new()
                    .start_method(ipc_core::process::StartMethod::Fork)
                    .spawn(i, echo)?;
                let got = child.join()?;
                ensure!(got == i, "the child returned {got}, expected {i}");
            }
        }
    }
    Ok(t0.elapsed().as_secs_f64() * 1e6 / STARTS as f64)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let pin = match args.iter().any(|a| a == "pin") {
        true => Pin::Same,
        false => Pin::None,
    };
    let _placement = Placement::new(pin)?;
    // SAFETY: a fresh anonymous shared mapping of one page, at an address the kernel picks;
    // nothing else refers to it. It stays mapped until the process exits.
    let page = unsafe {
        rustix::mm::mmap_anonymous(
            std::ptr::null_mut(),
            4096,
            rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
            rustix::mm::MapFlags::SHARED,
        )?
    }
    .cast::<u64>();
    if let Some((way, name)) = WAYS.iter().find(|(_, n)| args.iter().any(|a| a == n)) {
        let per = (0..10)
            .map(|_| run(*way, page))
            .sum::<anyhow::Result<f64>>()?
            / 10.0;
        println!("{name}: {per:.1} us a start");
        return Ok(());
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); WAYS.len()];
    for _ in 0..TURNS {
        for (k, (way, _)) in WAYS.iter().enumerate() {
            times[k].push(run(*way, page)?);
        }
    }
    let medians: Vec<f64> = times.into_iter().map(median).collect();
    for ((_, name), m) in WAYS.iter().zip(&medians) {
        println!("{name:8} {m:7.1} us  {:5.2}x floor", m / medians[0]);
    }
    Ok(())
}
