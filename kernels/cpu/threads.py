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
* while tape's kernels are in use (a CNN), tape's GEMMs run on the same threads
  (:func:`matmul`): split into row or column blocks, each block one single-threaded
  OpenBLAS call (OpenBLAS is held at one thread for the length of the call, then set
  back). Otherwise (an MLP) OpenBLAS's own threads do them, as for any numpy user: on
  an idle machine they are faster (ours pay ~20 us per GEMM to hand a job and the GIL
  over); but when other processes keep a core busy, OpenBLAS's spinning worker gets half
  a core and its half of every GEMM waits, and ours, which sleep and are woken, ran the
  MLP step 2x faster. So tape watches the machine (:class:`_Machine`) and takes its
  GEMMs onto its own threads while other processes use a core. Light elementwise
  kernels (a ReLU) only follow: they use the team while the GEMMs are on it, and run in
  the caller otherwise, so that they never move the GEMMs (``parallel_for(follows=True)``).

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
RECENT = 0.25  # seconds: tape's kernels used this recently -> its GEMMs on our threads
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
        """``fn(start, stop, *args)`` for every ``(start, stop)`` in ``ranges``."""
        if not self.busy.acquire(blocking=False):  # another thread's job, or nested: alone
            for start, stop in ranges:
                fn(start, stop, *args)
            return
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
    """A forked child has only the thread that forked: teams of its own."""
    _teams.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def chunks(n_items, n_chunks):
    """``n_chunks`` (or fewer) contiguous, balanced ``(start, stop)`` ranges over n_items."""
    k = max(1, min(n_items, n_chunks))
    cuts = [n_items * i // k for i in range(k + 1)]
    return [(cuts[i], cuts[i + 1]) for i in range(k)]


def parallel_for(fn, n_items, *args, work=None, follows=False):
    """Run ``fn(start, stop, *args)`` over ``range(n_items)`` split among tape's threads.

    ``fn`` must release the GIL (a ``kernels.cpu.jit.kernel``, or numpy's BLAS calls) and
    write disjoint output for disjoint ranges. ``work`` (elements touched, default
    ``n_items``) below ``SMALL_WORK`` runs in the caller: waking a helper costs more.

    ``follows``: a light, memory-bound kernel (an elementwise pass) that takes tape's
    threads only while the GEMMs are on them too (:func:`gemms_on_team`: heavier kernels
    ran lately, or the machine is busy), and else runs in the caller without claiming the
    threads for the GEMMs. A ReLU between two Linear layers would otherwise move every
    GEMM of a Transformer or MLP step off OpenBLAS's threads, onto ours, which run a GEMM
    1.4-2x slower on an idle machine (both halves share the memory bus, each packs its own
    copy of the other operand), for a kernel that is a fraction of a millisecond on one
    thread.
    """
    if fn not in _called:
        _first_call(fn)
    team = _team()
    if team.n == 1 or n_items < 2 or (n_items if work is None else work) < SMALL_WORK:
        fn(0, n_items, *args)
        return
    now = time.perf_counter()
    if follows:
        if not gemms_on_team(now):
            fn(0, n_items, *args)
            return
    else:
        global _kernels_last_used
        _kernels_last_used = now
    # a few big work items (chunks of images) are dealt one by one, so that the threads
    # finish together; many small ones (planes, elements) in a few runs each
    ranges = n_items if n_items <= FEW_ITEMS else CHUNKS_PER_THREAD * team.n
    team.run(fn, chunks(n_items, ranges), args)


_called = set()  # kernels called in this process
_kernels_last_used = -1.0  # perf_counter() of the last parallel kernel call


def _first_call(fn):
    """On a fresh install a background precompiler may be compiling ``fn`` right now:
    wait for it rather than compile it twice (kernels/cpu/precompile.py)."""
    from . import precompile

    precompile.wait_for(getattr(getattr(fn, "py_func", fn), "__name__", ""))
    _called.add(fn)


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


INNER_CHUNK = 4096  # shared-axis stretch of a long, thin product (Cin=1 convolutions'
# weight gradient, 9 x 50176 @ 50176 x 8): OpenBLAS is up to 4x faster on such pieces


class _Machine:
    """How much CPU other processes used lately: /proc/stat's busy time of all CPUs minus
    this process's own, looked at most every BUSY_WINDOW seconds (a file read, ~30 us)."""

    def __init__(self):
        self.at = self.total = self.ours = None
        self.busy = False

    @staticmethod
    def _cpu_seconds():
        with open("/proc/stat") as f:  # user nice system idle iowait irq softirq steal ...
            fields = [int(v) for v in f.readline().split()[1:8]]
        busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6]  # not idle, not steal
        return busy / os.sysconf("SC_CLK_TCK")

    def others_busy(self, now):
        if self.at is not None and now - self.at < BUSY_WINDOW:
            return self.busy
        try:
            total = self._cpu_seconds()
        except (OSError, ValueError, IndexError):  # not Linux: assume an idle machine
            self.at, self.busy = now, False
            return False
        times = os.times()
        ours = times.user + times.system
        if self.at is not None:
            others = (total - self.total) - (ours - self.ours)
            self.busy = others >= BUSY_CPUS * (now - self.at)
        self.at, self.total, self.ours = now, total, ours
        return self.busy


_machine = _Machine()


def gemms_on_team(now):
    """Whether tape's GEMMs run on its own threads now: its (leading) kernels ran in the
    last RECENT seconds, or other processes keep a core busy."""
    return now - _kernels_last_used <= RECENT or _machine.others_busy(now)


def matmul(a, b):
    """``a @ b`` for numpy arrays, on tape's threads while its kernels are in use or other
    processes keep a core busy.

    Then (or with one thread set) OpenBLAS is held to one thread for the call: 2-D
    products and 3-D batches of equal length are split into blocks among tape's threads
    (a long shared axis into stretches whose products are summed), anything else (or
    small) runs in the caller. Otherwise numpy's own matmul, threaded by OpenBLAS as for
    any numpy user.
    """
    team = _team()
    if team.n > 1 and not gemms_on_team(time.perf_counter()):
        return a @ b
    blas = _blas()
    if blas.set is None:  # not numpy's OpenBLAS: nothing we can hold
        return a @ b
    previous = blas.get()
    blas.set(1)
    try:
        job = _gemm_job(a, b, team.n)
        if job is None:
            return a @ b
        fn, blocks, args = job
        team.run(fn, blocks, args)
        return args[2].sum(axis=0) if fn is _inner_block else args[2]
    finally:
        blas.set(previous)


def _gemm_job(a, b, n_threads):
    """``(block function, blocks, args)`` splitting ``a @ b`` among the threads, or None
    where that does not pay (small, one thread) or the shapes are not plain 2-D / 3-D."""
    if (n_threads == 1 or a.ndim != b.ndim or a.dtype != b.dtype or a.dtype.kind != "f"
            or (a.size * b.shape[-1] < SMALL_WORK * 16  # little arithmetic...
                and a.size // a.shape[-1] * b.shape[-1] < SMALL_WORK)):  # ...and a small result
        return None
    if a.ndim == 3 and a.shape[0] == b.shape[0] and a.shape[0] >= 2 * n_threads:
        out = buffers.empty((a.shape[0], a.shape[1], b.shape[2]), a.dtype)
        return _batched_block, chunks(a.shape[0], n_threads), (a, b, out)
    if a.ndim != 2:
        return None
    m, k, n = a.shape[0], a.shape[1], b.shape[1]
    if m * n <= INNER_CHUNK and k >= 4 * INNER_CHUNK:
        stretches = -(-k // INNER_CHUNK)
        parts = np.empty((stretches, m, n), a.dtype)
        return _inner_block, chunks(stretches, 2 * n_threads), (a, b, parts)
    by_rows = m >= n
    blocks = m if by_rows else n
    if blocks >= 2 * n_threads:
        out = buffers.empty((m, n), a.dtype)
        return _gemm_block, chunks(blocks, n_threads), (a, b, out, by_rows)
    return None
