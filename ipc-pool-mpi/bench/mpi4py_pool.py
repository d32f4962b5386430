"""The MPI compare's peer: mpi4py.futures' MPIPoolExecutor doing what `scenarios bench` does.

Run as `mpirun -n 5 python -m mpi4py.futures mpi4py_pool.py REPS` (world mode: rank 0 runs
this script, ranks 1-4 serve). Prints the same lines as the Rust side:
  trivial_chunk1: <s>      10 000 trivial tasks, chunksize 1
  trivial_chunk100: <s>    the same at chunksize 100
  cpu32: <s> speedup <x>   32 tasks of about 10 ms each; speedup = the same 32 run one after
                           the other in the driver just before / the map
"""
import sys
import time

from mpi4py.futures import MPIPoolExecutor


def trivial(x):
    return x


def busy(n):
    x = 1
    for _ in range(n):
        x = (x * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
    return x


def calibrate(target=0.010):
    """Iterations of `busy` that take about `target` seconds here (the median of 5)."""
    n = 10_000
    t = time.perf_counter()
    busy(n)
    per = (time.perf_counter() - t) / n
    n = max(1, int(target / per))
    times = []
    for _ in range(5):
        t = time.perf_counter()
        busy(n)
        times.append(time.perf_counter() - t)
    return n, sorted(times)[2]


def main():
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    n, one = calibrate()
    print(f"calibration: one CPU task takes {one * 1e3:.2f} ms here", flush=True)
    with MPIPoolExecutor() as pool:
        list(pool.map(trivial, range(1000), chunksize=10))
        for _ in range(reps):
            for chunk in (1, 100):
                t = time.perf_counter()
                out = list(pool.map(trivial, range(10_000), chunksize=chunk))
                assert len(out) == 10_000
                print(f"trivial_chunk{chunk}: {time.perf_counter() - t:.6f} s", flush=True)
            # The speedup's baseline: the same 32 tasks one after the other here, just before.
            t = time.perf_counter()
            serial = [busy(n) for _ in range(32)]
            serial_time = time.perf_counter() - t
            t = time.perf_counter()
            out = list(pool.map(busy, [n] * 32, chunksize=1))
            took = time.perf_counter() - t
            assert out == serial
            print(f"cpu32: {took:.6f} s speedup {serial_time / took:.3f}", flush=True)


if __name__ == "__main__":
    main()
