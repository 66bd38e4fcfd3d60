"""Data-parallel training over MPI (mpi4py): collectives and ``DistributedDataParallel``.

    mpiexec -n 4 python train.py     # the same script runs as one process without mpiexec

Each process holds a whole model and a shard of every batch; ``DistributedDataParallel``
averages the gradients, so every process takes the same optimizer step. CuPy arrays are
staged through host memory (MPI sees numpy buffers only). ``import tape`` never imports
this module; importing it needs mpi4py (``pip install 'tape[mpi]'``), and MPI itself is
started by ``init()`` (or the first collective), not by the import.
"""

from __future__ import annotations

import time

import numpy as np

try:
    import mpi4py  # noqa: F401  (the package only: MPI starts in init())
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "tape.distributed needs mpi4py and an MPI library: install the 'mpi' extra, "
        "pip install 'tape[mpi]' (mpi4py and mpich), or mpi4py built on your cluster's MPI"
    ) from error

from . import backend
from .nn.module import Module
from .tensor import Tensor, wrap

__all__ = ["init", "is_initialized", "rank", "world_size", "all_reduce", "broadcast",
           "barrier", "DistributedDataParallel"]

_MPI = None
_comm = None
_OPS = ("sum", "mean", "max", "min")


def init():
    """Start MPI (once; later calls do nothing). Without mpiexec: one process, rank 0."""
    global _MPI, _comm
    if _comm is None:
        from mpi4py import MPI

        _MPI, _comm = MPI, MPI.COMM_WORLD
    return None


def is_initialized() -> bool:
    return _comm is not None


def _world():
    init()
    return _comm


def rank() -> int:
    """This process's number, 0 to ``world_size() - 1`` (starts MPI if needed)."""
    return _world().Get_rank()


def world_size() -> int:
    """How many processes take part (1 without mpiexec)."""
    return _world().Get_size()


def barrier():
    """Wait until every process has reached this call."""
    _world().Barrier()


def _array(x, who):
    if isinstance(x, Tensor):
        return x.data
    if isinstance(x, np.ndarray) or backend.is_cupy(x):
        return x
    raise TypeError(f"{who} takes a tape.Tensor or an array (numpy or cupy), got "
                    f"{type(x).__name__}")


def _to_host(array):
    """A C-contiguous numpy copy that MPI may write into (cupy: copied off the device)."""
    if backend.is_cupy(array):
        return np.ascontiguousarray(array.get())
    return np.array(array, order="C", copy=True)


def _like(host, array):
    """``host`` on ``array``'s device."""
    return backend.xp(array).asarray(host) if backend.is_cupy(array) else host


def all_reduce(x, op="sum"):
    """A new tensor, on ``x``'s device and of its dtype: ``x`` combined over the processes
    by ``op`` ("sum", "mean", "max" or "min"). Every process must call it, in the same
    order as its other collectives. Not recorded on tapes (no gradient)."""
    array = _array(x, "all_reduce")
    if op not in _OPS:
        raise ValueError(f"all_reduce: op must be one of {', '.join(map(repr, _OPS))}, "
                         f"got {op!r}")
    if op == "mean" and array.dtype.kind not in "fc":
        raise TypeError(f"all_reduce: op='mean' needs a floating-point tensor, got dtype "
                        f"{array.dtype}; use op='sum' and divide, or cast it first")
    comm = _world()
    host = _to_host(array)
    mpi_op = {"sum": _MPI.SUM, "mean": _MPI.SUM, "max": _MPI.MAX, "min": _MPI.MIN}[op]
    if comm.Get_size() > 1:
        comm.Allreduce(_MPI.IN_PLACE, host, op=mpi_op)
    if op == "mean":
        host /= comm.Get_size()
    return wrap(_like(host, array))


def broadcast(x, src=0):
    """A new tensor (``x``'s device, dtype and shape) holding process ``src``'s values."""
    array = _array(x, "broadcast")
    comm = _world()
    size = comm.Get_size()
    if isinstance(src, bool) or not isinstance(src, (int, np.integer)) or not 0 <= src < size:
        raise ValueError(f"broadcast: src must be a rank from 0 to {size - 1}, got {src!r}")
    host = _to_host(array)
    if size > 1:
        comm.Bcast(host, root=int(src))
    return wrap(_like(host, array))


class DistributedDataParallel(Module):
    """``module`` replicated over the processes, its gradients averaged across them.

    At construction every process takes rank 0's parameters and buffers, so the replicas
    start equal and, taking the same averaged steps, stay equal. Call the wrapper as the
    module; ``model.gradient(t, loss)`` returns the gradients of ``model.parameters()``
    averaged over the processes (a parameter the loss does not reach gets zeros).

    The gradients travel in buckets of about ``bucket_cap_mb`` megabytes, in reverse
    parameter order (the order the replay finishes them). With ``overlap=True`` a bucket's
    non-blocking allreduce starts as soon as the replay has finished its last gradient,
    while the replay goes on with the earlier layers; ``overlap=False`` starts them all
    after the replay (the reference the overlap is measured against). ``last_timings``
    holds the last call's seconds: ``"replay"`` and ``"wait"`` (communication left over
    after the replay).

    Attributes the wrapper lacks are the module's (``model.fc1``); ``state_dict`` and
    ``load_state_dict`` are the module's own, without a prefix, so checkpoints move
    between distributed and single-process runs; ``model.module`` is the wrapped module.
    """

    def __init__(self, module, bucket_cap_mb=1.0, overlap=True):
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel wraps a tape.nn.Module, got "
                            f"{type(module).__name__}")
        if not bucket_cap_mb > 0:
            raise ValueError(f"bucket_cap_mb must be positive, got {bucket_cap_mb!r}")
        self.module = module
        self.bucket_cap_mb, self.overlap = float(bucket_cap_mb), bool(overlap)
        self.last_timings = {"replay": 0.0, "wait": 0.0}
        comm = _world()
        self._params = list(module.parameters())
        if comm.Get_size() > 1:
            for t in [*self._params, *module.buffers()]:
                t.data[...] = broadcast(t.data, 0).data
        self._buckets = _buckets(self._params, int(self.bucket_cap_mb * 2 ** 20))

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            module = self.__dict__.get("_modules", {}).get("module")
            if module is None:
                raise
            return getattr(module, name)

    def state_dict(self, *args, **kwargs):
        return self.module.state_dict(*args, **kwargs)

    def load_state_dict(self, *args, **kwargs):
        return self.module.load_state_dict(*args, **kwargs)

    def gradient(self, tape, target):
        """The gradients of ``target`` (recorded on ``tape``) for ``self.parameters()``,
        averaged over the processes: a list of tensors in parameter order."""
        from . import replay

        comm = _world()
        params = list(self.module.parameters())
        if params != self._params:
            raise RuntimeError("DistributedDataParallel: the module's parameters changed "
                               "after wrapping; wrap the module once it is complete")
        start = time.perf_counter()
        if comm.Get_size() == 1:
            grads = tape.gradient(target, params, unconnected_gradients="zero")
            self.last_timings = {"replay": time.perf_counter() - start, "wait": 0.0}
            return grads
        tape._check_not_spent("compute gradients")
        reducer = _Reducer(self._buckets, params, comm, _MPI)
        with tape._replaying():
            raw = replay.gradients(tape, [target], [None], params,
                                   on_final=reducer.ready if self.overlap else None)
        if not self.overlap:
            for i, g in enumerate(raw):
                reducer.ready(i, g)
        replayed = time.perf_counter()
        grads = reducer.finish()
        self.last_timings = {"replay": replayed - start, "wait": time.perf_counter() - replayed}
        return grads


def _buckets(params, cap):
    """Lists of parameter indices, last parameters first, each of one dtype and device and
    at most ``cap`` bytes (or one parameter)."""
    buckets, current, size, kind = [], [], 0, None
    for i in reversed(range(len(params))):
        p = params[i]
        key = (p.dtype, backend.is_cupy(p.data))
        nbytes = p.size * p.dtype.itemsize
        if current and (key != kind or size + nbytes > cap):
            buckets.append(current)
            current, size = [], 0
        current.append(i)
        size += nbytes
        kind = key
    if current:
        buckets.append(current)
    return buckets


class _Reducer:
    """One gradient call's buckets: filled as gradients become final, started in bucket
    order (the same on every process, as MPI's collectives need), averaged at the end."""

    def __init__(self, buckets, params, comm, mpi):
        self.params, self.comm, self.mpi = params, comm, mpi
        self.buckets = buckets
        self.where = {}  # parameter index -> (bucket, offset)
        self.buffers, self.missing = [], []
        for b, members in enumerate(buckets):
            offset = 0
            for i in members:
                self.where[i] = (b, offset)
                offset += params[i].size
            self.buffers.append(np.empty(offset, params[members[0]].dtype))
            self.missing.append(len(members))
        self.requests, self.started = [], 0

    def ready(self, i, grad):
        """Parameter ``i``'s gradient is final: copy it into its bucket; start the buckets
        now complete, in order; let MPI progress the ones in flight."""
        b, offset = self.where[i]
        piece = self.buffers[b][offset:offset + self.params[i].size]
        if grad is None:
            piece[...] = 0
        else:
            array = grad.data if isinstance(grad, Tensor) else grad
            piece[...] = _to_host(array).reshape(-1) if backend.is_cupy(array) \
                else array.reshape(-1)
        self.missing[b] -= 1
        while self.started < len(self.buckets) and not self.missing[self.started]:
            self.requests.append(self.comm.Iallreduce(self.mpi.IN_PLACE,
                                                      self.buffers[self.started],
                                                      op=self.mpi.SUM))
            self.started += 1
        if self.requests:
            self.mpi.Request.Testall(self.requests)  # MPICH moves collectives only in calls

    def finish(self):
        """Wait for every bucket; the averaged gradients, as tensors on their devices."""
        self.mpi.Request.Waitall(self.requests)
        size = self.comm.Get_size()
        out = [None] * len(self.params)
        for b, members in enumerate(self.buckets):
            buf = self.buffers[b]
            buf /= size
            for i in members:
                p = self.params[i]
                _, offset = self.where[i]
                piece = buf[offset:offset + p.size].reshape(p.shape)
                out[i] = wrap(_like(piece, p.data))
        return out
