#!/usr/bin/env python3
"""The CPython side of ``cargo xtask compare``: the project's named cases, run with ``multiprocessing``.

Standard library only.  The case names, problem sizes, units and method are those of the Rust side
(``benches/src/cases.rs``, defined in ``benches/README.md``), so the two can be joined by name.

Usage::

    python3 mp_bench.py [--quick] [--only CASE,..] [--pin none|same|split]
                        [--reps N] [--warmup N] [--json PATH] [--list]

Method: per case, ``--warmup`` untimed repetitions (default 1), then ``--reps`` timed ones (7, or 3
with ``--quick``; the sizes never change), each after ``gc.collect()``; the JSON gives the median,
min, max and every sample.  Children and fixtures (pools, managers) are started before the clock,
except in ``process_start_join_*`` where starting is what is timed.  Every case checks its result
(counts, echoes, final values), so a broken run raises instead of scoring.

Placement (``--pin``, as in the Rust runner): ``same`` pins this process to its first allowed CPU at
start-up (children inherit it); ``split`` pins, when a case starts a child, this process to its
first CPU and the k-th live child of the case to CPU ``k mod count``, and undoes the parent's
pinning after the case.  Pool, manager and start-up cases start their processes through
``multiprocessing`` and are left to the OS under ``split``.

Progress goes to stderr, JSON to ``--json PATH`` (or stdout).  The exit status is 1 if a case failed.
"""

# Spawned and forkserver children re-import this file as __mp_main__: module-level imports are
# paid by every such child (and show in process_start_join_spawn), so keep them few.
import gc
import multiprocessing as mp
import os
import sys
import time

clock = time.perf_counter

HANDSHAKE_TIMEOUT = 30.0        # a child that does not answer within this is a failure
CASE_TIMEOUT = 120              # seconds before a whole case is abandoned (SIGALRM)
KIB, MIB = 1 << 10, 1 << 20


# --------------------------------------------------------------------------------------------
# Child-side functions (module level: spawn and forkserver pickle them by reference).
# --------------------------------------------------------------------------------------------

def do_nothing():
    """The child of process_start_join_*."""


def identity(x):
    """A trivial pool task."""
    return x


def sum_of_squares(n):
    """A CPU-bound pool task (~10 ms for n = 200000 in CPython)."""
    total = 0
    for i in range(n):
        total += i * i
    return total


def child_queue_producer(q, ready, go, n, payload):
    ready.set()
    go.wait()
    put = q.put
    if payload is None:
        for i in range(n):
            put(i)
    else:
        for _ in range(n):
            put(payload)


def child_queue_echo(inbox, outbox, n):
    outbox.put('ready')
    get, put = inbox.get, outbox.put
    for _ in range(n):
        put(get())


def child_pipe_echo(conn, n, raw):
    conn.send_bytes(b'ready')
    if raw:
        recv, send = conn.recv_bytes, conn.send_bytes
    else:
        recv, send = conn.recv, conn.send
    for _ in range(n):
        send(recv())


def child_pipe_producer(conn, n, size):
    block = b'\xa5' * size
    conn.send_bytes(b'ready')
    if conn.recv_bytes() != b'go':
        raise RuntimeError('expected go')
    send = conn.send_bytes
    for _ in range(n):
        send(block)


def child_locked_counter(lock, counter, n, ready, go, done):
    ready.release()
    go.wait()
    acquire, release = lock.acquire, lock.release
    for _ in range(n):
        acquire()
        counter.value += 1
        release()
    done.release()


def child_event_echo(ping, pong, n):
    pong.set()
    for _ in range(n):
        ping.wait()
        ping.clear()
        pong.set()


def child_condition_echo(cond, turn, n):
    # turn: -1 before the child runs, 0 the parent's turn, 1 the child's.
    with cond:
        turn.value = 0
        cond.notify()
        for _ in range(n):
            while turn.value != 1:
                cond.wait()
            turn.value = 0
            cond.notify()


# --------------------------------------------------------------------------------------------
# Placement and child helpers.
# --------------------------------------------------------------------------------------------

class Placement:
    def __init__(self, mode):
        self.mode = mode
        self.cpus = sorted(os.sched_getaffinity(0))
        if mode == 'split' and len(self.cpus) < 2:
            raise SystemExit('--pin split needs at least 2 CPUs')
        if mode == 'same':
            os.sched_setaffinity(0, {self.cpus[0]})
        self.parent_pinned = False
        self.live = 0

    def child_started(self, pid):
        self.live += 1
        if self.mode != 'split':
            return
        if not self.parent_pinned:
            os.sched_setaffinity(0, {self.cpus[0]})
            self.parent_pinned = True
        os.sched_setaffinity(pid, {self.cpus[self.live % len(self.cpus)]})

    def case_done(self):
        self.live = 0
        if self.parent_pinned:
            os.sched_setaffinity(0, set(self.cpus))
            self.parent_pinned = False


PLACEMENT = None


def start_child(ctx, target, *args):
    p = ctx.Process(target=target, args=args, daemon=True)
    p.start()
    PLACEMENT.child_started(p.pid)
    return p


def join_children(*procs):
    for p in procs:
        p.join(HANDSHAKE_TIMEOUT)
        if p.exitcode is None:
            p.kill()
            p.join()
            raise RuntimeError(f'child {p.pid} did not exit')
        if p.exitcode != 0:
            raise RuntimeError(f'child {p.pid} exited with code {p.exitcode}')
    PLACEMENT.live = 0


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def handshake(conn):
    check(conn.poll(HANDSHAKE_TIMEOUT), 'the child did not report ready')
    check(conn.recv_bytes() == b'ready', 'bad handshake')


# --------------------------------------------------------------------------------------------
# The cases.  Each is a function (ctx, repeat, **params) -> samples, where repeat(once) runs the
# warm-up and timed repetitions of `once` (which returns one figure) and returns the samples.
# --------------------------------------------------------------------------------------------

def process_start_join(ctx, repeat, method, n):
    pctx = mp.get_context(method)

    def once():
        t0 = clock()
        for _ in range(n):
            p = pctx.Process(target=do_nothing)
            p.start()
            p.join()
            check(p.exitcode == 0, f'child exited with {p.exitcode}')
        return (clock() - t0) / n * 1e6
    return repeat(once)


def queue_throughput(ctx, repeat, n, payload_size, simple=False):
    payload = b'\x5a' * payload_size if payload_size else None

    def once():
        q = ctx.SimpleQueue() if simple else ctx.Queue()
        ready, go = ctx.Event(), ctx.Event()
        p = start_child(ctx, child_queue_producer, q, ready, go, n, payload)
        check(ready.wait(HANDSHAKE_TIMEOUT), 'producer did not start')
        get = q.get
        t0 = clock()
        go.set()
        if payload is None:
            for i in range(n):
                if get() != i:
                    raise AssertionError(f'item {i} out of order')
        else:
            for _ in range(n):
                if len(get()) != payload_size:
                    raise AssertionError('payload size mismatch')
        dt = clock() - t0
        join_children(p)
        q.close()
        return n / dt if payload is None else n * payload_size / dt / 1e6
    return repeat(once)


def queue_pingpong(ctx, repeat, n):
    def once():
        inbox, outbox = ctx.Queue(), ctx.Queue()
        p = start_child(ctx, child_queue_echo, inbox, outbox, n)
        check(outbox.get(timeout=HANDSHAKE_TIMEOUT) == 'ready', 'bad handshake')
        put, get = inbox.put, outbox.get
        t0 = clock()
        for i in range(n):
            put(i)
            if get() != i:
                raise AssertionError('echo mismatch')
        dt = clock() - t0
        join_children(p)
        inbox.close()
        inbox.join_thread()
        outbox.close()
        return dt / n * 1e6
    return repeat(once)


def pipe_pingpong(ctx, repeat, n, payload_size=None):
    raw = payload_size is not None

    def once():
        conn, theirs = ctx.Pipe()
        p = start_child(ctx, child_pipe_echo, theirs, n, raw)
        theirs.close()
        handshake(conn)
        if raw:
            msg = b'\x01' * payload_size
            send, recv = conn.send_bytes, conn.recv_bytes
            t0 = clock()
            for _ in range(n):
                send(msg)
                if recv() != msg:
                    raise AssertionError('echo mismatch')
        else:
            send, recv = conn.send, conn.recv
            t0 = clock()
            for i in range(n):
                send(i)
                if recv() != i:
                    raise AssertionError('echo mismatch')
        dt = clock() - t0
        join_children(p)
        conn.close()
        return dt / n * 1e6
    return repeat(once)


def pipe_throughput(ctx, repeat, n, size):
    def once():
        conn, theirs = ctx.Pipe()
        p = start_child(ctx, child_pipe_producer, theirs, n, size)
        theirs.close()
        handshake(conn)
        recv = conn.recv_bytes
        total = 0
        t0 = clock()
        conn.send_bytes(b'go')
        for _ in range(n):
            block = recv()
            if len(block) != size or block[0] != 0xa5 or block[-1] != 0xa5:
                raise AssertionError('bad block')
            total += len(block)
        dt = clock() - t0
        join_children(p)
        conn.close()
        check(total == n * size, 'byte count mismatch')
        return total / dt / 1e6
    return repeat(once)


def uncontended(ctx, repeat, primitive, n):
    obj = ctx.Lock() if primitive == 'lock' else ctx.Semaphore(1)
    acquire, release = obj.acquire, obj.release

    def once():
        t0 = clock()
        for _ in range(n):
            acquire()
            release()
        dt = clock() - t0
        check(acquire(False), 'left held')
        release()
        return dt / n * 1e9
    return repeat(once)


def lock_contended(ctx, repeat, n, processes):
    def once():
        lock = ctx.Lock()
        counter = ctx.Value('q', 0, lock=False)
        ready, done, go = ctx.Semaphore(0), ctx.Semaphore(0), ctx.Event()
        procs = [start_child(ctx, child_locked_counter, lock, counter, n, ready, go, done)
                 for _ in range(processes)]
        for _ in procs:
            check(ready.acquire(timeout=HANDSHAKE_TIMEOUT), 'worker did not start')
        t0 = clock()
        go.set()
        for _ in procs:
            check(done.acquire(timeout=HANDSHAKE_TIMEOUT * 4), 'worker did not finish')
        dt = clock() - t0
        join_children(*procs)
        check(counter.value == n * processes, f'lost updates: {counter.value}')
        return n * processes / dt
    return repeat(once)


def event_pingpong(ctx, repeat, n):
    def once():
        ping, pong = ctx.Event(), ctx.Event()
        p = start_child(ctx, child_event_echo, ping, pong, n)
        check(pong.wait(HANDSHAKE_TIMEOUT), 'child did not start')
        pong.clear()
        t0 = clock()
        for _ in range(n):
            ping.set()
            pong.wait()
            pong.clear()
        dt = clock() - t0
        join_children(p)
        return dt / n * 1e6
    return repeat(once)


def condition_pingpong(ctx, repeat, n):
    def once():
        cond = ctx.Condition()
        turn = ctx.Value('i', -1, lock=False)
        p = start_child(ctx, child_condition_echo, cond, turn, n)
        with cond:
            check(cond.wait_for(lambda: turn.value == 0, HANDSHAKE_TIMEOUT), 'child did not start')
            t0 = clock()
            for _ in range(n):
                turn.value = 1
                cond.notify()
                while turn.value != 0:
                    cond.wait()
            dt = clock() - t0
        join_children(p)
        return dt / n * 1e6
    return repeat(once)


def value_increment_locked(ctx, repeat, n):
    def once():
        v = ctx.Value('q', 0)
        t0 = clock()
        for _ in range(n):
            with v.get_lock():
                v.value += 1
        dt = clock() - t0
        check(v.value == n, 'wrong final value')
        return dt / n * 1e9
    return repeat(once)


def pool_map_trivial(ctx, repeat, n, processes, chunksize=None, rounds=1):
    with ctx.Pool(processes) as pool:
        def once():
            t0 = clock()
            for _ in range(rounds):
                out = pool.map(identity, range(n), chunksize)
            dt = clock() - t0
            check(len(out) == n and out[-1] == n - 1, 'wrong map result')
            return dt / (n * rounds) * 1e6
        samples = repeat(once)
        pool.close()
        pool.join()
    return samples


def pool_apply_async_latency(ctx, repeat, n, processes):
    with ctx.Pool(processes) as pool:
        def once():
            t0 = clock()
            for i in range(n):
                if pool.apply_async(identity, (i,)).get(HANDSHAKE_TIMEOUT) != i:
                    raise AssertionError('wrong result')
            return (clock() - t0) / n * 1e6
        samples = repeat(once)
        pool.close()
        pool.join()
    return samples


def pool_cpu_seconds():
    """CPU seconds of this process's threads other than the main one (the pool's handler
    threads) and of its children (the workers)."""
    def ticks(path):
        try:
            with open(path) as f:
                stat = f.read()
        except OSError:
            return None
        head, rest = stat.rsplit(')', 1)
        fields = rest.split()
        return int(fields[1]), int(fields[11]) + int(fields[12])

    total = 0
    me = os.getpid()
    for tid in os.listdir('/proc/self/task'):
        if int(tid) != me:
            t = ticks(f'/proc/self/task/{tid}/stat')
            total += t[1] if t else 0
    for pid in os.listdir('/proc'):
        if pid.isdigit():
            t = ticks(f'/proc/{pid}/stat')
            if t and t[0] == me:
                total += t[1]
    return total / os.sysconf('SC_CLK_TCK')


def pool_idle_cpu(ctx, repeat, n, processes, idle_ms):
    """A pool of `processes` at rest for `idle_ms`: the CPU its threads and workers use, in
    percent of one core."""
    with ctx.Pool(processes) as pool:
        pool.map(identity, range(4), 1)
        def once():
            time.sleep(0.1)
            before = pool_cpu_seconds()
            t0 = clock()
            time.sleep(idle_ms / 1000)
            wall = clock() - t0
            return (pool_cpu_seconds() - before) / wall * 100
        samples = repeat(once)
        pool.close()
        pool.join()
    return samples


def rss_mib():
    with open('/proc/self/statm') as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf('SC_PAGE_SIZE') / (1 << 20)


def pool_imap_rss(ctx, repeat, n, processes, chunksize):
    """imap of the identity over n items, consumed as it goes: the parent's resident set
    growth above its start, in MiB (CPython's imap reads its whole input ahead: gh-64192)."""
    with ctx.Pool(processes) as pool:
        def once():
            start = rss_mib()
            peak = start
            count = 0
            for i, r in enumerate(pool.imap(identity, range(n), chunksize)):
                check(r == i, 'wrong imap result')
                count += 1
                if i % 100_000 == 0:
                    peak = max(peak, rss_mib())
            peak = max(peak, rss_mib())
            check(count == n, 'imap gave too few')
            return peak - start
        samples = repeat(once)
        pool.close()
        pool.join()
    return samples


def busy_us(us):
    """Busy (CPU-bound, not asleep) for `us` microseconds."""
    end = time.perf_counter() + us / 1e6
    while time.perf_counter() < end:
        pass
    return us


def skewed_durations():
    """400 tasks of 0.2 ms, every 40th of 20 ms (joblib's auto-batching case)."""
    return [20_000 if i % 40 == 0 else 200 for i in range(400)]


def cyclic_durations():
    """600 tasks cycling 0.05, 0.5 and 5 ms."""
    return [(50, 500, 5_000)[i % 3] for i in range(600)]


def map_durations(ctx, repeat, durations, processes):
    with ctx.Pool(processes) as pool:
        pool.map(busy_us, [1, 1])

        def once():
            t0 = clock()
            got = pool.map(busy_us, durations)
            dt = clock() - t0
            check(got == durations, 'wrong results')
            return dt * 1e3
        samples = repeat(once)
        pool.close()
        pool.join()
    return samples


def pool_skewed(ctx, repeat, n, processes):
    return map_durations(ctx, repeat, skewed_durations(), processes)


def pool_cyclic(ctx, repeat, n, processes):
    return map_durations(ctx, repeat, cyclic_durations(), processes)


STATE = None


def slow_init():
    """An initializer that takes 200 ms (a model to load)."""
    global STATE
    time.sleep(0.2)
    STATE = 7


def with_init(x):
    return x + STATE


def pool_expensive_init(ctx, repeat, n, processes, init_ms):
    def once():
        t0 = clock()
        with ctx.Pool(processes, initializer=slow_init) as pool:
            got = pool.map(with_init, range(n))
            dt = clock() - t0
        check(got[-1] == n - 1 + 7, 'wrong results')
        return dt * 1e3
    return repeat(once)


def build_table():
    """The per-worker state of pool_worker_state: a table of 100 000 squares."""
    global STATE
    STATE = {k: k * k for k in range(100_000)}


def look_up(k):
    return STATE[k % 100_000]


def pool_worker_state(ctx, repeat, n, processes, table):
    with ctx.Pool(processes, initializer=build_table) as pool:
        check(pool.map(look_up, [3, 4]) == [9, 16], 'warm-up')

        def once():
            t0 = clock()
            got = pool.map(look_up, range(n))
            dt = clock() - t0
            check(len(got) == n and got[12_345] == 12_345 ** 2, 'wrong results')
            return dt / n * 1e6
        samples = repeat(once)
        pool.close()
        pool.join()
    return samples


SHARED = None


def slice_sum(i):
    chunk = len(SHARED) // 64
    return sum(SHARED[i * chunk:(i + 1) * chunk])


def shared_table(mib):
    from array import array
    n = mib * 1024 * 1024 // 8
    return array('d', (float(i % 1000) for i in range(n)))


def pool_shared_data(ctx, repeat, n, processes, mib):
    """A 64 MiB read-only array inherited by forked workers (copy-on-write), then 64 tasks each
    summing 1/64th: from handing it over (the pool's start) to the results."""
    global SHARED
    table = shared_table(mib)
    expected = sum(table[:len(table) // 64])

    def once():
        global SHARED
        t0 = clock()
        SHARED = table
        with ctx.Pool(processes) as pool:
            sums = pool.map(slice_sum, range(64))
            dt = clock() - t0
        check(len(sums) == 64 and sums[0] == expected, 'wrong sums')
        return dt * 1e3
    samples = repeat(once)
    SHARED = None
    return samples


def child_cpu(go, work, count, out):
    go.wait()
    total = 0
    for _ in range(count):
        total += sum_of_squares(work)
    out.put(total)


def cpu_two_processes(ctx, repeat, n, work, processes):
    """pool_map_cpu's tasks split in halves between two bare processes started before the
    clock: the speedup this machine gives two processes in this run."""
    def once():
        t0 = clock()
        expected = sum(sum_of_squares(work) for _ in range(n))
        sequential = clock() - t0
        go, out = ctx.Event(), ctx.SimpleQueue()
        halves = [n // 2, n - n // 2]
        children = [ctx.Process(target=child_cpu, args=(go, work, c, out)) for c in halves]
        for c in children:
            c.start()
        time.sleep(0.02)
        t0 = clock()
        go.set()
        got = out.get() + out.get()
        for c in children:
            c.join()
        parallel = clock() - t0
        check(got == expected, 'the two processes\' sums differ')
        return sequential / parallel
    return repeat(once)


def pool_map_cpu(ctx, repeat, n, work, processes):
    args = [work] * n
    with ctx.Pool(processes) as pool:
        def once():
            t0 = clock()
            expected = [sum_of_squares(a) for a in args]
            sequential = clock() - t0
            t0 = clock()
            got = pool.map(sum_of_squares, args)
            parallel = clock() - t0
            check(got == expected, 'pool results differ')
            return sequential / parallel
        samples = repeat(once)
        pool.close()
        pool.join()
    return samples


def manager_setget(ctx, repeat, n, namespace=False):
    with ctx.Manager() as manager:
        obj = manager.Namespace() if namespace else manager.dict()

        def once():
            t0 = clock()
            if namespace:
                for i in range(n):
                    obj.x = i
                    if obj.x != i:
                        raise AssertionError('wrong value')
            else:
                for i in range(n):
                    obj['k'] = i
                    if obj['k'] != i:
                        raise AssertionError('wrong value')
            return (clock() - t0) / n * 1e6
        return repeat(once)


def manager_start(ctx, repeat, n):
    def once():
        t0 = clock()
        for _ in range(n):
            m = ctx.Manager()
            m.shutdown()
        return (clock() - t0) / n * 1e3
    return repeat(once)


def manager_idle_cpu(ctx, repeat, n, idle_ms):
    """A manager at rest for `idle_ms`, holding a dict and a lock: the CPU its server process
    uses, in percent of one core."""
    def server_seconds(pid):
        with open(f'/proc/{pid}/stat') as f:
            fields = f.read().rsplit(')', 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')

    with ctx.Manager() as manager:
        d = manager.dict()
        d[1] = 1
        lock = manager.Lock()
        pid = manager._process.pid

        def once():
            time.sleep(0.1)
            before = server_seconds(pid)
            t0 = clock()
            time.sleep(idle_ms / 1000)
            wall = clock() - t0
            return (server_seconds(pid) - before) / wall * 100
        samples = repeat(once)
        del lock
    return samples


def shared_memory_create_unlink(ctx, repeat, n, size):
    from multiprocessing.shared_memory import SharedMemory

    def once():
        t0 = clock()
        for _ in range(n):
            shm = SharedMemory(create=True, size=size)
            shm.close()
            shm.unlink()
        return (clock() - t0) / n * 1e6
    return repeat(once)


def task_handle_roundtrip(ctx, repeat, n):
    """What a pool does per task, in one process: the task (function and argument) pickled and
    unpickled (the function by reference, as Pool sends it), called, its result pickled and
    unpickled."""
    import pickle

    def once():
        t0 = clock()
        for i in range(n):
            f, args = pickle.loads(pickle.dumps((identity, (i,))))
            r = pickle.loads(pickle.dumps(f(*args)))
            if r != i:
                raise AssertionError(f'round trip gave {r} for {i}')
        return (clock() - t0) / n * 1e9
    return repeat(once)


# (name, unit, better, function, params).  Sizes: benches/src/cases.rs (the same table).
CASES = [
    ('process_start_join_fork', 'us/process', 'lower', process_start_join,
     dict(method='fork', n=100)),
    ('process_start_join_spawn', 'us/process', 'lower', process_start_join,
     dict(method='spawn', n=6)),
    ('process_start_join_forkserver', 'us/process', 'lower', process_start_join,
     dict(method='forkserver', n=25)),
    ('queue_throughput_small', 'items/s', 'higher', queue_throughput,
     dict(n=50_000, payload_size=0)),
    ('queue_throughput_64k', 'MB/s', 'higher', queue_throughput,
     dict(n=4_000, payload_size=64 * KIB)),
    ('simplequeue_throughput_small', 'items/s', 'higher', queue_throughput,
     dict(n=50_000, payload_size=0, simple=True)),
    ('queue_pingpong', 'us/round-trip', 'lower', queue_pingpong, dict(n=4_000)),
    ('pipe_pingpong', 'us/round-trip', 'lower', pipe_pingpong, dict(n=10_000)),
    ('pipe_bytes_pingpong', 'us/round-trip', 'lower', pipe_pingpong,
     dict(n=10_000, payload_size=16)),
    ('pipe_throughput_1m', 'MB/s', 'higher', pipe_throughput, dict(n=256, size=MIB)),
    ('lock_uncontended', 'ns/pair', 'lower', uncontended, dict(primitive='lock', n=2_000_000)),
    ('lock_contended_2proc', 'ops/s', 'higher', lock_contended, dict(n=200_000, processes=2)),
    ('event_pingpong', 'us/round-trip', 'lower', event_pingpong, dict(n=5_000)),
    ('condition_pingpong', 'us/round-trip', 'lower', condition_pingpong, dict(n=5_000)),
    ('semaphore_uncontended', 'ns/pair', 'lower', uncontended,
     dict(primitive='semaphore', n=2_000_000)),
    ('value_increment_locked', 'ns/op', 'lower', value_increment_locked, dict(n=300_000)),
    ('pool_map_trivial', 'us/task', 'lower', pool_map_trivial,
     dict(n=100_000, processes=2, rounds=20)),
    ('pool_map_trivial_chunk1', 'us/task', 'lower', pool_map_trivial,
     dict(n=10_000, processes=2, chunksize=1)),
    ('pool_apply_async_latency', 'us/call', 'lower', pool_apply_async_latency,
     dict(n=2_000, processes=2)),
    ('pool_map_cpu', 'x speedup', 'higher', pool_map_cpu, dict(n=32, work=200_000, processes=2)),
    ('pool_imap_rss', 'MiB', 'lower', pool_imap_rss,
     dict(n=2_000_000, processes=2, chunksize=1000)),
    ('pool_skewed', 'ms', 'lower', pool_skewed, dict(n=400, processes=2)),
    ('pool_cyclic', 'ms', 'lower', pool_cyclic, dict(n=600, processes=2)),
    ('pool_expensive_init', 'ms', 'lower', pool_expensive_init,
     dict(n=1_000, processes=2, init_ms=200)),
    ('pool_worker_state', 'us/task', 'lower', pool_worker_state,
     dict(n=20_000, processes=2, table=100_000)),
    ('pool_shared_data', 'ms', 'lower', pool_shared_data, dict(n=64, processes=2, mib=64)),
    ('cpu_two_processes', 'x speedup', 'higher', cpu_two_processes,
     dict(n=32, work=200_000, processes=2)),
    ('pool_idle_cpu', '% of a core', 'lower', pool_idle_cpu,
     dict(n=1_000, processes=2, idle_ms=1_000)),
    ('manager_dict_setget', 'us/set+get', 'lower', manager_setget, dict(n=4_000)),
    # CPython's manager has only the socket path: the same figure stands beside both of ours.
    ('manager_dict_setget_socket', 'us/set+get', 'lower', manager_setget, dict(n=4_000)),
    ('manager_namespace_setattr_getattr', 'us/set+get', 'lower', manager_setget,
     dict(n=4_000, namespace=True)),
    ('manager_namespace_setattr_getattr_socket', 'us/set+get', 'lower', manager_setget,
     dict(n=4_000, namespace=True)),
    ('manager_start', 'ms/start+shutdown', 'lower', manager_start, dict(n=20)),
    ('manager_idle_cpu', '% of a core', 'lower', manager_idle_cpu, dict(n=1_000, idle_ms=1_000)),
    ('shared_memory_create_unlink', 'us/cycle', 'lower', shared_memory_create_unlink,
     dict(n=5_000, size=MIB)),
    ('task_handle_roundtrip', 'ns/task', 'lower', task_handle_roundtrip, dict(n=200_000)),
]


# --------------------------------------------------------------------------------------------
# Harness.
# --------------------------------------------------------------------------------------------

def repeater(warmup, reps):
    """The harness's `repeat(once)`: `warmup` untimed runs, then `reps` samples."""
    def repeat(once):
        for _ in range(warmup):
            once()
        samples = []
        for _ in range(reps):
            gc.collect()
            samples.append(once())
        return samples
    return repeat


def summarize(samples):
    s = sorted(samples)
    mid = len(s) // 2
    median = s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2
    return {'median': median, 'min': s[0], 'max': s[-1], 'samples': samples}


class CaseTimeout(Exception):
    pass


def on_alarm(_signum, _frame):
    raise CaseTimeout(f'the case took more than {CASE_TIMEOUT} s')


def kill_leftovers():
    for p in mp.active_children():
        p.kill()
    for p in mp.active_children():
        p.join(5)


def main(argv=None):
    import argparse
    import json
    import platform
    import signal

    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true', help='3 repetitions instead of 7')
    parser.add_argument('--only', action='append', default=[], metavar='CASE,..')
    parser.add_argument('--pin', choices=('none', 'same', 'split'), default='none')
    parser.add_argument('--reps', type=int)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--json', metavar='PATH')
    parser.add_argument('--list', action='store_true')
    args = parser.parse_args(argv)

    names = [c[0] for c in CASES]
    wanted = [w for arg in args.only for w in arg.split(',') if w]
    unknown = [w for w in wanted if w not in names]
    if unknown:
        parser.error(f'unknown case(s): {", ".join(unknown)}')
    selected = [c for c in CASES if not wanted or c[0] in wanted]
    if args.list:
        for name, unit, better, _fn, params in selected:
            print(f'{name:36} {unit:18} {better:7} {params}')
        return 0
    reps = args.reps if args.reps is not None else (3 if args.quick else 7)
    if reps < 1 or args.warmup < 0:
        parser.error('--reps must be at least 1 and --warmup at least 0')

    nproc = len(os.sched_getaffinity(0))
    global PLACEMENT
    PLACEMENT = Placement(args.pin)
    ctx = mp.get_context('fork')

    repeat = repeater(args.warmup, reps)

    print(f'CPython {platform.python_version()} multiprocessing | nproc={nproc} | '
          f'pin {args.pin} | warmup={args.warmup} reps={reps}', file=sys.stderr, flush=True)
    signal.signal(signal.SIGALRM, on_alarm)
    results, failed = {}, []
    started = clock()
    for name, unit, better, fn, params in selected:
        entry = {'unit': unit, 'better': better, 'params': params}
        t0 = clock()
        signal.alarm(CASE_TIMEOUT)
        try:
            entry.update(summarize(fn(ctx, repeat, **params)))
            print(f"{name:36} {entry['median']:>14.3f} {entry['min']:>14.3f} "
                  f"{entry['max']:>14.3f}  {unit}", file=sys.stderr, flush=True)
        except Exception as exc:
            kill_leftovers()
            failed.append(name)
            entry['error'] = f'{type(exc).__name__}: {exc}'
            print(f'{name:36} ERROR {entry["error"]}', file=sys.stderr, flush=True)
        finally:
            signal.alarm(0)
            PLACEMENT.case_done()
        entry['case_wall_s'] = clock() - t0
        results[name] = entry

    meta = {
        'benchmark': 'ipc compare (CPython)',
        'python_version': platform.python_version(),
        'python_implementation': platform.python_implementation(),
        'nproc': nproc,
        'pin': args.pin,
        'mode': 'quick' if args.quick else 'full',
        'warmup': args.warmup,
        'reps': reps,
        'start_method': 'fork (process_start_join_* name their own)',
        'total_wall_s': clock() - started,
    }
    text = json.dumps({'meta': meta, 'order': [c[0] for c in selected], 'results': results},
                      indent=2)
    if args.json and args.json != '-':
        with open(args.json, 'w') as f:
            f.write(text + '\n')
    else:
        print(text)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
