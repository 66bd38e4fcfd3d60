"""Data-parallel training over MPI (mpi4py): collectives and ``DistributedDataParallel``.

    mpiexec -n 4 python train.py     # the same script runs as one process without mpiexec

Each process holds a whole model and a shard of every batch; ``DistributedDataParallel``
averages the gradients, so every process takes the same optimizer step. ``import tape``
never imports this module; importing it needs mpi4py (``pip install 'tape[mpi]'``), and
MPI itself is started by ``init()`` (or the first collective), not by the import.

Which path a collective takes:

- numpy arrays: MPI (``Allreduce``, ``Bcast``; ``Iallreduce`` for the gradient buckets).
- CuPy arrays, with CuPy's NCCL (``cupy.cuda.nccl.available``): NCCL on the device
  buffers, through one communicator per process, made at the first GPU collective (rank 0
  makes the unique id, MPI broadcasts it). ``all_reduce`` and ``broadcast`` run on the
  current stream; the gradient buckets of ``DistributedDataParallel`` on a communication
  stream of their own, so that the replay goes on while they travel.
- CuPy arrays without NCCL, or of a dtype NCCL lacks (bool, complex): staged through host
  memory (copied off the device, MPI, copied back); works with any MPI.
- One process: copies, on the array's device; no communicator.

Every process must take the same path (the same CuPy build and dtypes everywhere). With
several GPUs per machine, give each process its own before building the model:
``cupy.cuda.Device(dist.local_rank()).use()`` (PyTorch's
``torch.cuda.set_device(local_rank)``).
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

__all__ = ["init", "is_initialized", "rank", "local_rank", "world_size", "all_reduce",
           "broadcast", "barrier", "DistributedDataParallel"]

_MPI = None
_comm = None
_local_rank = None
_nccl_comm = None  # this process's _Nccl, made at the first GPU collective
_OPS = ("sum", "mean", "max", "min")


def init():
    """Start MPI (once; later calls do nothing). Without mpiexec: one process, rank 0.
    Every process calls it (or its first collective does)."""
    global _MPI, _comm, _local_rank
    if _comm is None:
        from mpi4py import MPI

        shared = MPI.COMM_WORLD.Split_type(MPI.COMM_TYPE_SHARED)  # collective: here, once
        _local_rank = shared.Get_rank()
        shared.Free()
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


def local_rank() -> int:
    """This process's number among the processes on its machine (0 to their count - 1):
    the GPU to take where a machine has several,
    ``cupy.cuda.Device(dist.local_rank()).use()`` before building the model."""
    init()
    return _local_rank


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


def _nccl_module():
    """CuPy's ``cupy.cuda.nccl`` where CuPy was built with NCCL, else None."""
    try:
        from cupy.cuda import nccl
    except ImportError:
        return None
    return nccl if getattr(nccl, "available", True) else None


class _Nccl:
    """This process's NCCL communicator: collectives on contiguous CuPy arrays, in place."""

    _DTYPES = ("int8", "uint8", "int32", "uint32", "int64", "uint64", "float16", "float32",
               "float64")

    def __init__(self, nccl, comm):
        self.cuda = backend.cupy_or_none().cuda
        unique_id = nccl.get_unique_id() if comm.Get_rank() == 0 else None
        self.comm = nccl.NcclCommunicator(comm.Get_size(), comm.bcast(unique_id, root=0),
                                          comm.Get_rank())
        self.types = {name: getattr(nccl, f"NCCL_{name.upper()}") for name in self._DTYPES}
        self.ops = {"sum": nccl.NCCL_SUM, "mean": nccl.NCCL_SUM, "max": nccl.NCCL_MAX,
                    "min": nccl.NCCL_MIN}
        self.stream = None  # the gradient buckets' stream, made at their first allreduce

    def all_reduce(self, buf, op="sum", stream=None):
        """``buf`` combined over the processes by ``op`` ("mean" sums), on ``stream`` (by
        default the current one)."""
        stream = self.cuda.get_current_stream() if stream is None else stream
        self.comm.allReduce(buf.data.ptr, buf.data.ptr, buf.size, self.types[buf.dtype.name],
                            self.ops[op], stream.ptr)

    def broadcast(self, buf, root):
        self.comm.bcast(buf.data.ptr, buf.size, self.types[buf.dtype.name], root,
                        self.cuda.get_current_stream().ptr)

    def start_sum(self, buf):
        """Start summing ``buf`` over the processes on the communication stream, once the
        current stream's work so far (what filled ``buf``) is done; returns at once."""
        if self.stream is None:
            self.stream = self.cuda.Stream(non_blocking=True)
        filled = self.cuda.Event(disable_timing=True)
        filled.record(self.cuda.get_current_stream())
        self.stream.wait_event(filled)
        self.all_reduce(buf, "sum", self.stream)

    def join(self):
        """Make the current stream wait for the sums started so far."""
        summed = self.cuda.Event(disable_timing=True)
        summed.record(self.stream)
        self.cuda.get_current_stream().wait_event(summed)


def _nccl_for(array):
    """The NCCL communicator for a collective on ``array`` (made at the first), or None:
    a numpy array, one process, CuPy without NCCL or a dtype NCCL lacks."""
    global _nccl_comm
    if not backend.is_cupy(array) or _world().Get_size() == 1:
        return None
    nccl = _nccl_module()
    if nccl is None or array.dtype.name not in _Nccl._DTYPES:
        return None
    if _nccl_comm is None:
        _nccl_comm = _Nccl(nccl, _world())
    return _nccl_comm


def _buffer(array, nccl):
    """A C-contiguous copy of ``array`` for a collective to write into: on the device for
    NCCL or one process, else on the host (numpy, or CuPy staged for MPI)."""
    if backend.is_cupy(array) and (nccl is not None or _world().Get_size() == 1):
        return array.copy(order="C")
    return _to_host(array)


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
    comm, nccl = _world(), _nccl_for(array)
    buf = _buffer(array, nccl)
    if nccl is not None:
        nccl.all_reduce(buf, op)
    elif comm.Get_size() > 1:
        mpi_op = {"sum": _MPI.SUM, "mean": _MPI.SUM, "max": _MPI.MAX, "min": _MPI.MIN}[op]
        comm.Allreduce(_MPI.IN_PLACE, buf, op=mpi_op)
    if op == "mean":
        buf /= comm.Get_size()
    return wrap(_like(buf, array))


def broadcast(x, src=0):
    """A new tensor (``x``'s device, dtype and shape) holding process ``src``'s values."""
    array = _array(x, "broadcast")
    comm = _world()
    size = comm.Get_size()
    if isinstance(src, bool) or not isinstance(src, (int, np.integer)) or not 0 <= src < size:
        raise ValueError(f"broadcast: src must be a rank from 0 to {size - 1}, got {src!r}")
    nccl = _nccl_for(array)
    buf = _buffer(array, nccl)
    if nccl is not None:
        nccl.broadcast(buf, int(src))
    elif size > 1:
        comm.Bcast(buf, root=int(src))
    return wrap(_like(buf, array))


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
    after the replay (the reference the overlap is measured against). With CuPy and NCCL
    the buckets are device buffers and their allreduces run on a communication stream of
    their own, after the work that filled them (an event), as PyTorch's DDP: the host goes
    on with the replay at once, and the gradients returned are ordered after the sums on
    the current stream. ``last_timings`` holds the last call's seconds: ``"replay"`` and
    ``"wait"`` (communication left over after the replay; on a GPU, the host's time only).

    With several GPUs per machine, each process takes its own before building the model:
    ``cupy.cuda.Device(dist.local_rank()).use()``.

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
    order (the same on every process, as the collectives need), averaged at the end.

    A bucket of numpy gradients (or of CuPy ones staged through the host) is a numpy
    buffer summed by MPI's ``Iallreduce``; one of CuPy gradients with NCCL is a device
    buffer, filled on the current stream and summed by NCCL on the communication stream
    (``_Nccl.start_sum``)."""

    def __init__(self, buckets, params, comm, mpi):
        self.params, self.comm, self.mpi = params, comm, mpi
        self.buckets = buckets
        self.where = {}  # parameter index -> (bucket, offset)
        self.buffers, self.missing = [], []
        self.nccl = None  # the communicator, where a bucket uses it
        for b, members in enumerate(buckets):
            offset = 0
            for i in members:
                self.where[i] = (b, offset)
                offset += params[i].size
            first = params[members[0]].data
            nccl = _nccl_for(first)
            xp = backend.xp(first) if nccl is not None else np
            self.buffers.append(xp.empty(offset, first.dtype))
            if nccl is not None:
                self.nccl = nccl
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
            if backend.is_cupy(array) and isinstance(piece, np.ndarray):
                array = _to_host(array)  # staged
            piece[...] = array.reshape(-1)
        self.missing[b] -= 1
        while self.started < len(self.buckets) and not self.missing[self.started]:
            buf = self.buffers[self.started]
            if isinstance(buf, np.ndarray):
                self.requests.append(self.comm.Iallreduce(self.mpi.IN_PLACE, buf,
                                                          op=self.mpi.SUM))
            else:
                self.nccl.start_sum(buf)
            self.started += 1
        if self.requests:
            self.mpi.Request.Testall(self.requests)  # MPICH moves collectives only in calls

    def finish(self):
        """Wait for every bucket; the averaged gradients, as tensors on their devices."""
        self.mpi.Request.Waitall(self.requests)
        if self.nccl is not None:
            self.nccl.join()
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
