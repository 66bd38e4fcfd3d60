"""tape's own threads for the CPU kernels and GEMMs: the calling thread plus a few helpers.

Why a pool of our own (docs/performance.md, "Two traps"). After each threaded GEMM, OpenBLAS's
idle workers spin for about 2**28 cycles (~0.1 s); libgomp's (numba's parallel layer)
spin too. A second pool's threads then find their core taken: a parallel numba kernel
right after a GEMM ran no faster than on one thread, or 3-8x slower with libgomp. The
cures that worked on the pools themselves (a passive libgomp loaded for numba, a short
OpenBLAS spin timeout, both chosen at import) changed the whole process, and PyTorch in
the same process ran up to 2x slower. So tape keeps all its parallel work on one pool of
its own and changes nothing outside it:

* the kernels are serial numba functions over a range of work items
  (``kernel(start, stop, ...)``, compiled by :func:`kernels.cpu.jit.kernel` without the
  GIL), and :func:`parallel_for` deals the range out in chunks to the threads as they come
  free, so a thread whose core is busy with another process simply takes fewer chunks;
* tape's GEMMs (:func:`matmul`) run on OpenBLAS's own threads, as for any numpy user,
  while the machine is otherwise idle: there they are faster than split over ours (ours
  pay to hand a job over, and each half packs its own copy of the other operand). When
  other processes keep a core busy, OpenBLAS's spinning worker gets half a core and its
  half of every GEMM waits, and ours, which sleep and are woken, ran the MLP step 2x
  faster: so tape watches the machine (:class:`_Machine`) and then splits its GEMMs into
  row or column blocks on its own threads, each block one single-threaded OpenBLAS call
  (OpenBLAS is held at one thread for the length of the call, then set back). When other
  processes leave tape about one CPU, it runs everything in the calling thread (its
  GEMMs with OpenBLAS held at one thread): 11% faster again on that MLP step.

Whether splitting a kernel call pays depends on the machine more than on the call:
handing a job to a sleeping helper took ~20 us on one 2-core VM and ~100 us on another
(a virtual CPU that halts when idle is slow to wake), where a 1 MB elementwise pass takes
~150 us on one thread; and one machine's memory bus feeds two cores, another's hardly
more than one; and right after a GEMM, OpenBLAS's spinning worker may hold the other
core. So tape measures it, in place (:class:`_Route`): the first calls of each kind of
kernel call (a kernel over about this much work) alternate the two ways and are timed,
and the faster way is kept for a while (2000 calls), then measured afresh (the setting
``tune_threads``; off, every kernel call and GEMM that can be split is).

The helpers sleep on a lock when idle, and are started on first use. How many threads
(the caller included) tape uses is the setting ``num_threads`` (kernels/config.py:
``TAPE_NUM_THREADS``, ``kernels.configure(num_threads=n)`` or ``kernels.set_num_threads``).
"""

from __future__ import annotations

import ctypes
import glob
import itertools
import os
import threading
import time

import numpy as np

from .. import config
from . import buffers

SMALL_WORK = 1 << 18  # elements; below this one thread is faster than waking a helper
CHUNKS_PER_THREAD = 2  # chunks dealt out per thread: balance (a busy core) against per-call cost
FEW_ITEMS = 32  # up to this many work items, each is dealt out on its own
BUSY_WINDOW = 0.5  # seconds between looks at how much CPU other processes use
BUSY_CPUS = 0.5  # other processes using at least this many CPUs: the machine is busy


class _Team:
    """The calling thread and ``n - 1`` helpers working through one job's chunks."""

    def __init__(self, n):
        self.n = n
        self.helpers = []  # (go, done) locks of each started helper
        self.busy = threading.Lock()  # one job at a time; a second caller runs alone
        self.job = None

    def _start_helpers(self):
        while len(self.helpers) < self.n - 1:
            go, done = threading.Lock(), threading.Lock()
            go.acquire()
            done.acquire()
            threading.Thread(target=self._helper, args=(go, done), daemon=True,
                             name=f"tape-kernels-{len(self.helpers) + 1}").start()
            self.helpers.append((go, done))

    def _helper(self, go, done):
        while True:
            go.acquire()
            self._work()
            done.release()

    def _work(self):
        """Take the job's ranges one at a time (whichever thread is free takes the next)."""
        fn, ranges, args, counter, errors = self.job
        for i in counter:
            if i >= len(ranges) or errors:
                return
            try:
                fn(*ranges[i], *args)
            except BaseException as e:  # re-raised in the calling thread
                errors.append(e)
                return

    def run(self, fn, ranges, args):
        """``fn(start, stop, *args)`` for every ``(start, stop)`` in ``ranges``; returns
        whether the helpers shared the work (not when the team was busy)."""
        if not self.busy.acquire(blocking=False):  # another thread's job, or nested: alone
            for start, stop in ranges:
                fn(start, stop, *args)
            return False
        try:
            self._start_helpers()
            errors = []
            self.job = (fn, ranges, args, itertools.count(), errors)
            helpers = self.helpers[: len(ranges) - 1]
            for go, _ in helpers:
                go.release()
            self._work()
            for _, done in helpers:
                done.acquire()
            self.job = None
            if errors:
                raise errors[0]
            return True
        finally:
            self.busy.release()


_teams: dict[int, _Team] = {}  # by size: switching back to a size reuses its helpers


def _team() -> _Team:
    """The team of as many threads as the setting ``num_threads`` says now."""
    n = config.current().num_threads
    team = _teams.get(n)
    if team is None:
        team = _teams.setdefault(n, _Team(n))  # a race makes one extra, never started
    return team


def _after_fork():
    """A forked child has only the thread that forked: teams of its own, no holds on
    OpenBLAS's thread count from threads it does not have, and a fresh look at the
    machine (its own CPU times start from zero)."""
    global _hold_lock, _holds
    _teams.clear()
    _machine.__init__()
    _hold_lock = threading.Lock()
    if _holds and _openblas is not None and _openblas.set is not None:
        _openblas.set(_count_before)
    _holds = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def chunks(n_items, n_chunks):
    """``n_chunks`` (or fewer) contiguous, balanced ``(start, stop)`` ranges over n_items."""
    k = max(1, min(n_items, n_chunks))
    cuts = [n_items * i // k for i in range(k + 1)]
    return [(cuts[i], cuts[i + 1]) for i in range(k)]


def parallel_for(fn, n_items, *args, work=None):
    """Run ``fn(start, stop, *args)`` over ``range(n_items)``, split among tape's threads
    where that pays on this machine (:class:`_Route`), else in the caller.

    ``fn`` must release the GIL (a ``kernels.cpu.jit.kernel``, or numpy's BLAS calls) and
    write disjoint output for disjoint ranges. ``work`` (elements touched, default
    ``n_items``) below ``SMALL_WORK`` always runs in the caller: waking a helper costs more.
    """
    if fn not in _called:
        _first_call(fn)
    team = _team()
    work = n_items if work is None else work
    if team.n == 1 or n_items < 2 or work < SMALL_WORK or _one_cpu_left(team):
        fn(0, n_items, *args)
        return
    route = _route((fn, int(work).bit_length(), team.n))
    shared, timed = route.next_way()
    start = time.perf_counter() if timed else 0.0
    if shared:
        # a few big work items (chunks of images) are dealt one by one, so that the
        # threads finish together; many small ones (planes, elements) in a few runs each
        ranges = n_items if n_items <= FEW_ITEMS else CHUNKS_PER_THREAD * team.n
        ran_shared = team.run(fn, chunks(n_items, ranges), args)
    else:
        fn(0, n_items, *args)
        ran_shared = False
    if timed and ran_shared == shared and not _precompiler_running():
        route.took(shared, time.perf_counter() - start)


def serial(fn, *args):
    """``fn(*args)`` in the caller, for kernels run whole there (small work, or sums whose
    order must not depend on the threads): as :func:`parallel_for`, a kernel's first
    call waits for a precompiler compiling it."""
    if fn not in _called:
        _first_call(fn)
    return fn(*args)


_called = set()  # kernels called in this process


def _precompiler_running():
    """Whether a fresh install's background precompiler holds the other core now: times
    taken meanwhile would favour running alone (kernels/cpu/precompile.py)."""
    from . import precompile

    return precompile.running()


def _first_call(fn):
    """On a fresh install a background precompiler may be compiling ``fn`` right now:
    wait for it rather than compile it twice (kernels/cpu/precompile.py)."""
    from . import precompile

    precompile.wait_for(getattr(getattr(fn, "py_func", fn), "__name__", ""))
    _called.add(fn)


def _one_cpu_left(team):
    """Whether other processes leave tape about one CPU (with ``tune_threads``): then
    everything runs in the caller, faster than split with a thread that shares a core."""
    if not config.current().tune_threads:
        return False
    return team.n - _machine.others_load(time.perf_counter()) < 1 + BUSY_CPUS


# ----- which way each kind of call runs, measured -----

WARMUP = 2  # first calls of a kind, not timed (first-touch page faults, cold caches)
TRIALS = 5  # timed calls each way, alternating, before the faster way is kept
REMEASURE = 2000  # calls of a kind the kept way lasts; then it is measured afresh
MAX_KINDS = 4096  # kinds remembered; past that, all are forgotten and measured afresh


class _Route:
    """Which way one kind of kernel call runs in this process: alone in the caller or
    shared among tape's threads. After WARMUP calls on the team, the next calls
    alternate the two ways and are timed (not while the team was busy with another
    caller's job, nor while a precompiler runs); once each way has TRIALS times, the one
    with the lower best time is kept, for REMEASURE calls, and then measured afresh
    (other processes come and go; on a shared VM the same process measured every kernel
    faster alone at one time and faster shared at another). The best, not the median:
    while a step's kinds are all being measured, other pools' threads come and go
    (OpenBLAS's, tape's helpers), and in a Transformer step's first calls that noise made
    a 1.4 ms GEMM's median 4.2 ms."""

    __slots__ = ("calls", "seconds", "shared")

    def __init__(self):
        self.calls = 0  # while measuring: calls so far; once chosen: calls since
        self.seconds = ([], [])  # the timed calls' seconds: alone [0], shared [1]
        self.shared = None  # the way kept, once chosen

    def next_way(self):
        """``(shared, timed)``: which way the next call goes, and whether to time it."""
        self.calls += 1
        if self.shared is not None:
            if self.calls <= REMEASURE:
                return self.shared, False
            self.calls, self.seconds, self.shared = WARMUP + 1, ([], []), None  # warm
        if self.calls <= WARMUP:
            return True, False
        return (self.calls - WARMUP) % 2 == 1, True  # shared first

    def took(self, shared, seconds):
        self.seconds[int(shared)].append(seconds)
        alone, on_team = self.seconds
        if len(alone) >= TRIALS and len(on_team) >= TRIALS:
            self.shared, self.calls = min(on_team) < min(alone), 0


class _Fixed:
    """A route the settings chose (``tune_threads`` off): never measured."""

    def __init__(self, shared):
        self.shared = shared

    def next_way(self):
        return self.shared, False


_routes: dict[tuple, _Route] = {}
_ALWAYS_SHARED = _Fixed(True)


def _route(kind) -> _Route:
    """The route of one kind of call (a hashable key), made on its first call."""
    if not config.current().tune_threads:
        return _ALWAYS_SHARED
    route = _routes.get(kind)
    if route is None:
        if len(_routes) >= MAX_KINDS:
            _routes.clear()
        route = _routes.setdefault(kind, _Route())
    return route


# ----- GEMMs on the team -----


class _OpenBLAS:
    """numpy's OpenBLAS thread count, read and set through its C API (ctypes)."""

    def __init__(self):
        self.get = self.set = None
        for lib in self._libraries():
            for prefix in ("scipy_openblas", "openblas"):
                for suffix in ("64_", ""):
                    get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                    set_ = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                    if get is not None and set_ is not None:
                        get.restype, set_.restype = ctypes.c_int, None
                        set_.argtypes = [ctypes.c_int]
                        self.get, self.set = get, set_
                        return

    @staticmethod
    def _libraries():
        """numpy's BLAS: the OpenBLAS shipped with numpy's wheel, else any loaded one."""
        root = os.path.dirname(os.path.dirname(np.__file__))
        paths = sorted(glob.glob(os.path.join(root, "numpy.libs", "*openblas*")))
        try:
            with open("/proc/self/maps") as f:
                paths += sorted({ln.split()[-1] for ln in f if "openblas" in ln.lower()
                                 and "/" in ln and "scipy.libs" not in ln})
        except OSError:
            pass
        for p in paths:
            try:
                yield ctypes.CDLL(p)
            except OSError:
                continue


_openblas = None


def _blas():
    global _openblas
    if _openblas is None:
        _openblas = _OpenBLAS()
    return _openblas


def _gemm_block(start, stop, a, b, out, by_rows):
    if by_rows:
        np.matmul(a[start:stop], b, out=out[start:stop])
    else:
        np.matmul(a, b[:, start:stop], out=out[:, start:stop])


def _batched_block(start, stop, a, b, out):
    np.matmul(a[start:stop], b[start:stop], out=out[start:stop])


def _inner_block(start, stop, a, b, parts):
    """Partial products over stretches of the shared axis: ``parts[i]`` for stretch i."""
    for i in range(start, stop):
        lo, hi = i * INNER_CHUNK, min((i + 1) * INNER_CHUNK, a.shape[1])
        np.matmul(a[:, lo:hi], b[lo:hi], out=parts[i])


ONE_THREAD_GEMM = 1 << 18  # multiply-adds: OpenBLAS runs smaller GEMMs on one thread
# (interface/gemm.c: m * n * k below 65536 * GEMM_MULTITHREAD_THRESHOLD, 4 by default)
INNER_CHUNK = 4096  # shared-axis stretch of a long, thin product (a Cin=1 convolution's
# weight gradient by im2col at batch 128, 9 x 100352 @ 100352 x 8): OpenBLAS is up to 4x
# faster on such pieces


class _Machine:
    """How many CPUs other processes kept busy lately: /proc/stat's busy time of all CPUs
    minus this process's own, per second, looked at most every BUSY_WINDOW seconds (a
    file read, ~30 us)."""

    def __init__(self):
        self.at = self.total = self.ours = None
        self.load = 0.0

    @staticmethod
    def _cpu_seconds():
        with open("/proc/stat") as f:  # user nice system idle iowait irq softirq steal ...
            fields = [int(v) for v in f.readline().split()[1:8]]
        busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6]  # not idle, not steal
        return busy / os.sysconf("SC_CLK_TCK")

    def others_load(self, now):
        """CPUs other processes used (0.0 at the first look, and where it cannot be told)."""
        if self.at is not None and now - self.at < BUSY_WINDOW:
            return self.load
        try:
            total = self._cpu_seconds()
        except (OSError, ValueError, IndexError):  # not Linux: assume an idle machine
            self.at, self.load = now, 0.0
            return 0.0
        times = os.times()
        ours = times.user + times.system
        if self.at is not None:
            others = (total - self.total) - (ours - self.ours)
            self.load = max(0.0, others / (now - self.at))
        self.at, self.total, self.ours = now, total, ours
        return self.load


_machine = _Machine()


def matmul(a, b):
    """``a @ b`` for numpy arrays: on OpenBLAS's threads, as for any numpy user, or split
    among tape's while other processes keep a core busy (and always with the setting
    ``tune_threads`` off).

    On tape's threads, OpenBLAS is held to one thread for the call: 2-D products and 3-D
    batches of equal length are split into blocks (a long shared axis into stretches
    whose products are summed); anything else, or small, runs in the caller. With one
    thread set, every GEMM runs in the caller, OpenBLAS held to one thread.

    GEMMs are not measured as kernels are (:class:`_Route`): on an idle 2-core VM every
    GEMM of a LeNet and a Transformer step was faster on OpenBLAS's threads once the
    step ran steadily (1.4-2x: tape's halves share the memory bus and each packs its own
    copy of the other operand), but a step's first calls, timed while its other calls
    were being measured too, sometimes said otherwise, and a Transformer step that kept
    one GEMM on tape's threads ran 10% slower.
    """
    if a.ndim == b.ndim == 2 and a.size * b.shape[1] < ONE_THREAD_GEMM:
        return a @ b  # OpenBLAS runs it on the calling thread anyway: nothing to hold
    team = _team()
    blas = _blas()
    if blas.set is None:  # not numpy's OpenBLAS: nothing we can hold
        return a @ b
    if team.n == 1:
        return _held(blas, np.matmul, a, b)
    if config.current().tune_threads:
        if _machine.others_load(time.perf_counter()) < BUSY_CPUS:  # idle: OpenBLAS's threads
            return a @ b
        if _one_cpu_left(team):
            return _held(blas, np.matmul, a, b)
    split = _gemm_split(a, b, team.n)
    if split is None:  # small, or not plain 2-D / 3-D: in the caller
        return _held(blas, np.matmul, a, b)
    return _held(blas, _matmul_on_team, team, a, b, split)


_hold_lock = threading.Lock()
_holds = 0  # calls holding OpenBLAS at one thread now, in any thread
_count_before = 0  # OpenBLAS's thread count before the first of them


def _held(blas, fn, *args):
    """``fn(*args)`` with OpenBLAS held at one thread, then set back to what it was
    before the first of the calls overlapping it (each call restoring what it read
    itself, two Python threads left it at one thread for the whole process)."""
    global _holds, _count_before
    with _hold_lock:
        if _holds == 0:
            _count_before = blas.get()
            blas.set(1)
        _holds += 1
    try:
        return fn(*args)
    finally:
        with _hold_lock:
            _holds -= 1
            if _holds == 0:
                blas.set(_count_before)


def _matmul_on_team(team, a, b, split):
    how, blocks = split
    if how == "stretches":
        parts = np.empty((blocks[-1][1], a.shape[0], b.shape[1]), a.dtype)
        team.run(_inner_block, blocks, (a, b, parts))
        return parts.sum(axis=0)
    if how == "batch":
        out = buffers.empty((a.shape[0], a.shape[1], b.shape[2]), a.dtype)
        team.run(_batched_block, blocks, (a, b, out))
    else:
        out = buffers.empty((a.shape[0], b.shape[1]), a.dtype)
        team.run(_gemm_block, blocks, (a, b, out, how == "rows"))
    return out


def _gemm_split(a, b, n_threads):
    """``(how, blocks)`` splitting ``a @ b`` among ``n_threads`` (2 or more; ``how``:
    "batch", "rows", "columns" or "stretches" of the shared axis), or None where that does
    not pay (small) or the shapes are not plain 2-D / 3-D."""
    if (a.ndim != b.ndim or a.dtype != b.dtype or a.dtype.kind != "f"
            or (a.size * b.shape[-1] < SMALL_WORK * 16  # little arithmetic...
                and a.size // a.shape[-1] * b.shape[-1] < SMALL_WORK)):  # ...and a small result
        return None
    if a.ndim == 3 and a.shape[0] == b.shape[0] and a.shape[0] >= 2 * n_threads:
        return "batch", chunks(a.shape[0], n_threads)
    if a.ndim != 2:
        return None
    m, k, n = a.shape[0], a.shape[1], b.shape[1]
    if m * n <= INNER_CHUNK and k >= 4 * INNER_CHUNK:
        return "stretches", chunks(-(-k // INNER_CHUNK), 2 * n_threads)
    blocks = max(m, n)
    if blocks >= 2 * n_threads:
        return ("rows" if m >= n else "columns"), chunks(blocks, n_threads)
    return None
