//! What every criterion bench of this crate shares: one benchmark per named case, each timed with
//! `iter_custom` over the case's own code (so peers start outside the timed region).
//!
//! Under `cargo test --benches` criterion runs each benchmark once with one iteration, which is
//! the CI smoke run that keeps every case from rotting.

use benches::cases::{self, Figure};
use benches::pin::{Pin, Placement};
use criterion::{Criterion, Throughput};

/// Benchmarks the named cases (they must all be available) and prints criterion's summary.
pub(crate) fn run(names: &[&str]) {
    let placement = Pin::from_env()
        .and_then(Placement::new)
        .unwrap_or_else(|e| panic!("benchmark placement: {e:#}"));
    let mut c = Criterion::default().configure_from_args();
    for name in names {
        let case = cases::get(name).unwrap_or_else(|| panic!("no case named {name}"));
        let cases::Run::Ready(f) = case.run else {
            panic!("{name} is not available yet");
        };
        let mut group = c.benchmark_group(*name);
        if let Figure::MegabytesPerSecond { bytes } = case.figure {
            group.throughput(Throughput::Bytes(bytes));
        }
        group.sample_size(10);
        group.bench_function("ipc", |b| {
            b.iter_custom(|iters| {
                let elapsed = f(&placement, iters).unwrap_or_else(|e| panic!("{name}: {e:#}"));
                placement
                    .case_done()
                    .unwrap_or_else(|e| panic!("{name}: {e:#}"));
                elapsed
            })
        });
        group.finish();
    }
    c.final_summary();
}
