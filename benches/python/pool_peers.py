"""Python pool peers for `cargo xtask compare --peers`: mpire and loky run the compare's pool
cases, with the same sizes, units, checks and method as mp_bench.py (whose harness and task
functions this script imports), so the table shows them beside this project and CPython.

Each library is reached through a small adapter (map with a chunk size, apply, imap), so every
case is written once for both. Python's chunk size rule is passed explicitly where the case
says "Python's chunk size" (loky's own default is 1, mpire's is its own rule). mpire uses the
fork start method, as mp_bench.py's CPython side does; loky refuses fork and uses its own
(`loky`, a spawn with its own launcher).

Runs inside the virtual environment `cargo xtask compare --peers` makes under target/ (pip
install mpire loky). Output: one JSON document, {"meta", "order", "results": {case: {peer:
summary}}}.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mp_bench as mb  # noqa: E402


def python_chunksize(n, processes):
    c, extra = divmod(n, 4 * processes)
    return max(1, c + (1 if extra else 0))


class Mpire:
    name = 'mpire'

    def __init__(self, processes, initializer=None):
        from mpire import WorkerPool
        self.pool = WorkerPool(n_jobs=processes, start_method='fork', keep_alive=True)
        self.init = (lambda _state=None: initializer()) if initializer else None

    def map(self, f, items, chunksize=None):
        # mpire unpacks tuples into arguments; the cases pass plain numbers. Its worker_init
        # runs once per worker started (the pool is kept alive between maps).
        return self.pool.map(f, items, chunk_size=chunksize, concatenate_numpy_output=False,
                             worker_init=self.init)

    def apply(self, f, x):
        return self.pool.apply_async(f, args=(x,)).get(mb.HANDSHAKE_TIMEOUT)

    def imap(self, f, items, chunksize):
        return self.pool.imap(f, items, chunk_size=chunksize)

    def close(self):
        self.pool.stop_and_join()


class Loky:
    name = 'loky'

    def __init__(self, processes, initializer=None, initargs=()):
        from loky import get_reusable_executor
        # loky refuses fork (it does not respect POSIX, it says); its own start method.
        self.ex = get_reusable_executor(max_workers=processes, reuse=False,
                                        initializer=initializer, initargs=initargs)

    def map(self, f, items, chunksize=None):
        return list(self.ex.map(f, items, chunksize=chunksize or 1))

    def apply(self, f, x):
        return self.ex.submit(f, x).result(mb.HANDSHAKE_TIMEOUT)

    def imap(self, f, items, chunksize):
        return self.ex.map(f, items, chunksize=chunksize)

    def close(self):
        self.ex.shutdown(wait=True)


def warm(pool):
    mb.check(list(pool.map(mb.identity, range(4), 1)) == [0, 1, 2, 3], 'warm-up')


def pool_map_trivial(make, repeat, n, processes, chunksize=None, rounds=1):
    pool = make(processes)
    warm(pool)
    size = chunksize or python_chunksize(n, processes)
    try:
        def once():
            t0 = mb.clock()
            for _ in range(rounds):
                out = pool.map(mb.identity, range(n), size)
            dt = mb.clock() - t0
            mb.check(len(out) == n and out[-1] == n - 1, 'wrong map result')
            return dt / (n * rounds) * 1e6
        return repeat(once)
    finally:
        pool.close()


def pool_apply_async_latency(make, repeat, n, processes):
    pool = make(processes)
    warm(pool)
    try:
        def once():
            t0 = mb.clock()
            for i in range(n):
                mb.check(pool.apply(mb.identity, i) == i, 'wrong result')
            return (mb.clock() - t0) / n * 1e6
        return repeat(once)
    finally:
        pool.close()


def pool_map_cpu(make, repeat, n, work, processes):
    pool = make(processes)
    warm(pool)
    args = [work] * n
    try:
        def once():
            t0 = mb.clock()
            expected = [mb.sum_of_squares(a) for a in args]
            sequential = mb.clock() - t0
            t0 = mb.clock()
            got = pool.map(mb.sum_of_squares, args, python_chunksize(n, processes))
            parallel = mb.clock() - t0
            mb.check(list(got) == expected, 'pool results differ')
            return sequential / parallel
        return repeat(once)
    finally:
        pool.close()


def pool_imap_rss(make, repeat, n, processes, chunksize):
    pool = make(processes)
    warm(pool)
    try:
        def once():
            start = mb.rss_mib()
            peak = start
            count = 0
            for i, r in enumerate(pool.imap(mb.identity, range(n), chunksize)):
                mb.check(r == i, 'wrong imap result')
                count += 1
                if i % 100_000 == 0:
                    peak = max(peak, mb.rss_mib())
            peak = max(peak, mb.rss_mib())
            mb.check(count == n, 'imap gave too few')
            return peak - start
        return repeat(once)
    finally:
        pool.close()


def map_durations(make, repeat, durations, processes):
    pool = make(processes)
    warm(pool)
    try:
        def once():
            t0 = mb.clock()
            got = list(pool.map(mb.busy_us, durations))
            dt = mb.clock() - t0
            mb.check(got == durations, 'wrong results')
            return dt * 1e3
        return repeat(once)
    finally:
        pool.close()


def pool_skewed(make, repeat, n, processes):
    return map_durations(make, repeat, mb.skewed_durations(), processes)


def pool_cyclic(make, repeat, n, processes):
    return map_durations(make, repeat, mb.cyclic_durations(), processes)


def pool_expensive_init(make, repeat, n, processes, init_ms):
    def once():
        t0 = mb.clock()
        pool = make(processes, initializer=mb.slow_init)
        try:
            got = list(pool.map(mb.with_init, range(n)))
            dt = mb.clock() - t0
        finally:
            pool.close()
        mb.check(got[-1] == n - 1 + 7, 'wrong results')
        return dt * 1e3
    return repeat(once)


def pool_worker_state(make, repeat, n, processes, table):
    pool = make(processes, initializer=mb.build_table)
    try:
        mb.check(list(pool.map(mb.look_up, [3, 4])) == [9, 16], 'warm-up')

        def once():
            t0 = mb.clock()
            got = list(pool.map(mb.look_up, range(n), mb_chunks(n, processes)))
            dt = mb.clock() - t0
            mb.check(len(got) == n and got[12_345] == 12_345 ** 2, 'wrong results')
            return dt / n * 1e6
        return repeat(once)
    finally:
        pool.close()


def mb_chunks(n, processes):
    return python_chunksize(n, processes)


def set_shared(table):
    mb.SHARED = table


def pool_shared_data(make, repeat, n, processes, mib):
    """mpire: the array inherited by fork (as CPython's); loky (no fork): the array sent to
    each worker through the initializer."""
    table = mb.shared_table(mib)
    expected = sum(table[:len(table) // 64])

    def once():
        t0 = mb.clock()
        if make is Loky:
            pool = Loky(processes, initializer=set_shared, initargs=(table,))
        else:
            mb.SHARED = table
            pool = make(processes)
        try:
            sums = list(pool.map(mb.slice_sum, range(64)))
            dt = mb.clock() - t0
        finally:
            pool.close()
            mb.SHARED = None
        mb.check(len(sums) == 64 and sums[0] == expected, 'wrong sums')
        return dt * 1e3
    return repeat(once)


# The cases the peers run (the same names and parameters as mp_bench.py's).
CASES = {
    'pool_map_trivial': pool_map_trivial,
    'pool_map_trivial_chunk1': pool_map_trivial,
    'pool_apply_async_latency': pool_apply_async_latency,
    'pool_map_cpu': pool_map_cpu,
    'pool_imap_rss': pool_imap_rss,
    'pool_skewed': pool_skewed,
    'pool_cyclic': pool_cyclic,
    'pool_expensive_init': pool_expensive_init,
    'pool_worker_state': pool_worker_state,
    'pool_shared_data': pool_shared_data,
}

PEERS = [Mpire, Loky]

# mpire's map of trivial tasks costs about 5 us per task here (13 us in its imap), so the
# case's 20 rounds of 100 000 tasks, 8 times, would exceed the 120 s a case may take: it runs
# one round per repetition (the figure is per task either way).
PARAMS = {
    ('pool_map_trivial', 'mpire'): {'rounds': 1},
}

# Runs that cannot finish within the harness's limit, said instead of waited for.
SKIP = {
    ('pool_imap_rss', 'mpire'): 'not run: 8 x 2 million imap items exceed the 120 s a case '
                                'may take (about 13 us per item); --quick runs it',
}


def main(argv=None):
    import argparse
    import json
    import signal

    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true')
    parser.add_argument('--only', action='append', default=[], metavar='CASE,..')
    parser.add_argument('--pin', choices=('none', 'same', 'split'), default='none')
    parser.add_argument('--reps', type=int)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--json', metavar='PATH')
    args = parser.parse_args(argv)
    wanted = [w for arg in args.only for w in arg.split(',') if w]
    reps = args.reps if args.reps is not None else (3 if args.quick else 7)
    params = {c[0]: c[4] for c in mb.CASES}

    repeat = mb.repeater(args.warmup, reps)

    signal.signal(signal.SIGALRM, mb.on_alarm)
    results = {}
    for name in [n for n in CASES if not wanted or n in wanted]:
        results[name] = {}
        for peer in PEERS:
            skip = SKIP.get((name, peer.name))
            if skip and not args.quick:
                results[name][peer.name] = {'error': skip}
                print(f'{name:36} {peer.name:6} {skip}', file=sys.stderr, flush=True)
                continue
            signal.alarm(mb.CASE_TIMEOUT)
            try:
                kwargs = {**params[name], **PARAMS.get((name, peer.name), {})}
                s = mb.summarize(CASES[name](peer, repeat, **kwargs))
                print(f"{name:36} {peer.name:6} {s['median']:>12.3f} {s['min']:>12.3f} "
                      f"{s['max']:>12.3f}", file=sys.stderr, flush=True)
            except Exception as exc:
                mb.kill_leftovers()
                s = {'error': f'{type(exc).__name__}: {exc}'}
                print(f'{name:36} {peer.name:6} ERROR {s["error"]}', file=sys.stderr,
                      flush=True)
            finally:
                signal.alarm(0)
            results[name][peer.name] = s
    text = json.dumps({'meta': {'peers': [p.name for p in PEERS]}, 'results': results},
                      indent=2)
    if args.json and args.json != '-':
        with open(args.json, 'w') as f:
            f.write(text + '\n')
    else:
        print(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
