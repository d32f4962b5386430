//! Spin tuning: a 2-process ping-pong through two `Event`s, and a contended `Lock`, for several
//! spin budgets; plus what the spin costs a waiter whose wait is long.
//!
//! `cargo run --release -p ipc-sync --example spin_tuning` (the README's "Spin tuning" section
//! records the figures measured on the development VM).

use std::time::{Duration, Instant};

use ipc_core::process::{Builder, StartMethod};
use ipc_sync::{Event, Lock, set_spin_limit};

fn pong((ping, pong, rounds, limit): (Event, Event, u32, u32)) {
    set_spin_limit(limit);
    for _ in 0..rounds {
        ping.wait();
        ping.clear();
        pong.set();
    }
}

fn hammer((lock, go, rounds, limit): (Lock, Event, u32, u32)) {
    set_spin_limit(limit);
    go.wait();
    for _ in 0..rounds {
        drop(lock.acquire().unwrap());
    }
}

fn main() {
    let limits = [0u32, 25, 50, 100, 200, 400, 1000];
    println!("budget  ping-pong round trip   contended lock (2 procs)   spin cost of a long wait");
    for &limit in &limits {
        set_spin_limit(limit);
        let (ping, pong_ev) = (Event::new().unwrap(), Event::new().unwrap());
        let rounds = 20_000;
        let child = Builder::new()
            .start_method(StartMethod::Spawn)
            .spawn((ping.clone(), pong_ev.clone(), rounds, limit), pong)
            .unwrap();
        // Warm up, then time.
        let t0 = Instant::now();
        for _ in 0..rounds {
            ping.set();
            pong_ev.wait();
            pong_ev.clear();
        }
        let rt = t0.elapsed() / rounds;
        child.join().unwrap();

        let lock = Lock::new().unwrap();
        let go = Event::new().unwrap();
        let n = 2_000_000;
        let child = Builder::new()
            .start_method(StartMethod::Spawn)
            .spawn((lock.clone(), go.clone(), n, limit), hammer)
            .unwrap();
        // Both processes start hammering at the same moment.
        std::thread::sleep(Duration::from_millis(20));
        go.set();
        let t0 = Instant::now();
        for _ in 0..n {
            drop(lock.acquire().unwrap());
        }
        child.join().unwrap();
        let per_op = t0.elapsed() / (2 * n);

        // A wait that ends by timeout: what the spin burns before the thread sleeps (fresh
        // events, so no WAITERS bit left by an earlier waiter cuts the spin short).
        let idle: Vec<Event> = (0..1000).map(|_| Event::new().unwrap()).collect();
        let t0 = Instant::now();
        for e in &idle {
            e.wait_timeout(Duration::from_nanos(1));
        }
        let spin_cost = t0.elapsed() / 1000;
        println!(
            "{limit:6}  {:>10.2} us            {:>8.1} ns/op               {:>8.2} us",
            rt.as_secs_f64() * 1e6,
            per_op.as_secs_f64() * 1e9,
            spin_cost.as_secs_f64() * 1e6
        );
    }
}
