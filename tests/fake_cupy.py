"""A strict fake of cupy on numpy: runs the GPU ("cuda") test rows where there is no GPU.

A smoke check of the device code paths, not a substitute for a GPU run::

    PYTHONPATH=tests python -m pytest -p fake_cupy tests -k cuda

Arrays are wrappers (module "cupy") that refuse, as cupy does: implicit conversion to
numpy (``np.asarray``), plain numpy arrays as operands of ufuncs, functions and
``cupyx.scatter_add``, and numpy functions, methods or keyword arguments that cupy 14.2
lacks (names and parameters in fake_cupy_api.json, read from cupy's own signatures).
Reductions give 0-d arrays. Numpy index arrays and assigned numpy values are allowed but
listed at the end of the run. The kernels run the CUDA sources emulated on the host
(kernels.gpu.emulate, needs g++), or else the numpy reference. What it cannot check:
numerics and dtype rules of cupy itself, DLPack with torch, speed.

For tape.distributed's GPU path (run under mpiexec, or as one process): ``ndarray.data.ptr``
is the numpy buffer's address; ``cupy.cuda.Stream`` and ``Event`` run nothing
asynchronously but refuse waiting on an event never recorded; ``cupy.cuda.nccl`` has
cupy's names, constants and signatures, and its ``NcclCommunicator`` (which checks its size
and rank against MPI.COMM_WORLD's) rebuilds the arrays from pointer, count and datatype and
runs the collective with mpi4py at once.
"""

import ctypes
import importlib.machinery
import json
import math
import os
import pathlib
import sys
import types

import numpy as np

with open(pathlib.Path(__file__).with_name("fake_cupy_api.json")) as _f:
    _API = json.load(_f)
_MODULE_API = _API["module"]
_METHODS = set(_API["methods"])
LOG = []


def _bad(x):
    raise TypeError(f"Unsupported type {type(x)}")


def _unwrap(x):
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, np.ndarray):
        _bad(x)
    if isinstance(x, tuple) and not hasattr(x, "_fields"):  # a kernel's geometry stays
        return tuple(_unwrap(i) for i in x)
    if isinstance(x, list):
        return [_unwrap(i) for i in x]
    if isinstance(x, dict):
        return {k: _unwrap(v) for k, v in x.items()}
    return x


def _wrap(r):
    if isinstance(r, np.ndarray):
        return ndarray(r)
    if isinstance(r, np.generic):
        return ndarray(np.asarray(r))
    if isinstance(r, tuple):
        return tuple(_wrap(i) for i in r)
    if isinstance(r, list):
        return [_wrap(i) for i in r]
    return r


def _check(name, kwargs, where="cupy"):
    if name not in _MODULE_API:
        raise AttributeError(f"FAKE: {where}.{name} does not exist in cupy")
    params = _MODULE_API[name]
    if params is not None:
        extra = set(kwargs) - set(params)
        if extra:
            raise TypeError(f"FAKE: cupy.{name} takes no {sorted(extra)}")


class ndarray:
    __module__ = "cupy._core.core"
    __slots__ = ("_a",)
    __array_priority__ = 100

    def __init__(self, a):
        assert isinstance(a, np.ndarray) and not isinstance(a, ndarray)
        object.__setattr__(self, "_a", a)

    # numpy protocols
    def __array__(self, *a, **k):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    def __array_ufunc__(self, ufunc, method, *inputs, **kw):
        for x in inputs:
            if hasattr(x, "__array_ufunc__") and x.__array_ufunc__ is None:
                return NotImplemented
        _check(ufunc.__name__, {k: v for k, v in kw.items() if k not in ("out", "dtype")})
        ins = _unwrap(inputs)
        out = kw.get("out")
        if out is not None:
            kw["out"] = tuple(o._a if isinstance(o, ndarray) else _bad(o) for o in out)
        r = getattr(ufunc, method)(*ins, **kw)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(r)

    def __array_function__(self, func, types_, args, kwargs):
        _check(func.__name__, kwargs)
        return _wrap(func(*_unwrap(args), **_unwrap(kwargs)))

    # attributes and methods
    def __getattr__(self, name):
        if name not in _METHODS:
            raise AttributeError(f"FAKE: cupy.ndarray has no attribute {name!r}")
        v = getattr(self._a, name)
        if callable(v):
            def method(*args, **kwargs):
                return _wrap(v(*_unwrap(args), **_unwrap(kwargs)))
            return method
        return _wrap(v) if name in ("T", "mT", "real", "imag") else v

    def get(self, stream=None, order="C", out=None):
        return np.array(self._a, copy=True)

    def item(self):
        return self._a.item()

    def tolist(self):
        return self._a.tolist()

    def copy(self, order="C"):
        return ndarray(self._a.copy())

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        for i in range(len(self._a)):
            yield self[i]

    def __bool__(self):
        return bool(self._a)

    def __int__(self):
        return int(self._a)

    def __float__(self):
        return float(self._a)

    def __index__(self):
        return self._a.__index__()

    def __repr__(self):
        return "fakecupy." + repr(self._a)

    __hash__ = None

    def _index(self, idx):
        def one(i):
            if isinstance(i, ndarray):
                return i._a
            if isinstance(i, np.ndarray):
                LOG.append(f"numpy index array of shape {i.shape}")
                return i  # real cupy converts numpy index arrays; log it
            return i
        return tuple(one(i) for i in idx) if isinstance(idx, tuple) else one(idx)

    def __getitem__(self, idx):
        return _wrap(self._a[self._index(idx)])

    def __setitem__(self, idx, value):
        if isinstance(value, np.ndarray) and not isinstance(value, ndarray):
            LOG.append(f"setitem with a numpy value of shape {value.shape}")
        self._a[self._index(idx)] = value._a if isinstance(value, ndarray) else value

    def __dlpack__(self, *a, **k):
        return self._a.__dlpack__(*a, **k)

    def __dlpack_device__(self):
        return (2, 0)


def _binary(uf, reflected=False):
    def op(self, other):
        if hasattr(other, "__array_ufunc__") and other.__array_ufunc__ is None:
            return NotImplemented
        return uf(other, self) if reflected else uf(self, other)
    return op


def _inplace(uf):
    def op(self, other):
        uf(self, other, out=(self,))
        return self
    return op


for _name, _uf in {"add": np.add, "sub": np.subtract, "mul": np.multiply,
                   "truediv": np.true_divide, "floordiv": np.floor_divide, "mod": np.remainder,
                   "pow": np.power, "matmul": np.matmul, "and": np.logical_and,
                   "or": np.logical_or, "xor": np.logical_xor}.items():
    if _name in ("and", "or", "xor"):
        _uf = {"and": np.bitwise_and, "or": np.bitwise_or, "xor": np.bitwise_xor}[_name]
    setattr(ndarray, f"__{_name}__", _binary(_uf))
    setattr(ndarray, f"__r{_name}__", _binary(_uf, True))
    setattr(ndarray, f"__i{_name}__", _inplace(_uf))
for _name, _uf in {"lt": np.less, "le": np.less_equal, "gt": np.greater,
                   "ge": np.greater_equal, "eq": np.equal, "ne": np.not_equal}.items():
    setattr(ndarray, f"__{_name}__", _binary(_uf))
ndarray.__neg__ = lambda self: np.negative(self)
ndarray.__pos__ = lambda self: self
ndarray.__abs__ = lambda self: np.absolute(self)
ndarray.__invert__ = lambda self: np.invert(self)


# ----- the module -----
def _lenient(x):
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, (list, tuple)):
        return type(x)(_lenient(i) for i in x)
    return x


def asarray(a, dtype=None, order=None, *, blocking=False):
    if isinstance(a, ndarray) and (dtype is None or a.dtype == np.dtype(dtype)):
        return a
    return ndarray(np.array(_lenient(a), dtype=dtype, copy=True))


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    return ndarray(np.array(_lenient(obj), dtype=dtype, copy=True, ndmin=ndmin))


def _module_getattr(name):
    if name.startswith("__"):
        raise AttributeError(name)
    if name not in _MODULE_API:
        raise AttributeError(f"FAKE: cupy has no {name!r}")
    f = getattr(np, name)
    if not callable(f):
        return f
    if isinstance(f, type):
        return f  # dtypes: cupy.float32 ...

    def fn(*args, **kwargs):
        _check(name, kwargs)
        return _wrap(f(*_unwrap(args), **_unwrap(kwargs)))
    fn.__name__ = name
    return fn


cupy = types.ModuleType("cupy")
cupy.__version__ = "14.2.0-fake"
cupy.ndarray = ndarray
cupy.asarray = asarray
cupy.array = array
cupy.__getattr__ = _module_getattr


class MemoryPointer:
    """``ndarray.data``: ``ptr`` is the address of the array's first element, as cupy's
    (here the numpy buffer's, so that the fake NCCL below can find the values)."""

    def __init__(self, a):
        self.ptr = a.__array_interface__["data"][0]
        self.device_id = 0


ndarray.data = property(lambda self: MemoryPointer(self._a))


class Event:
    """cupy.cuda.Event: work runs at once here, so an event is done when recorded; waiting
    on one never recorded (a no-op on a GPU, a missed dependency) fails."""

    def __init__(self, block=False, disable_timing=False, interprocess=False):
        if interprocess and not disable_timing:
            raise ValueError("Timing must be disabled for interprocess events")
        self.ptr, self.recorded = id(self), False

    @property
    def done(self):
        return True

    def record(self, stream=None):
        if stream is not None and not isinstance(stream, Stream):
            raise TypeError(f"FAKE: Event.record takes a cupy.cuda.Stream, got {stream!r}")
        self.recorded = True

    def synchronize(self):
        pass


class Stream:
    """cupy.cuda.Stream: ``ptr`` 0 for the null stream, else a distinct number; the
    current stream is ``use()``'s or the innermost ``with``'s (the null stream first)."""

    null = None

    def __init__(self, null=False, non_blocking=False, ptds=False, priority=None):
        self.ptr = 0 if null else id(self)
        self.device_id = -1 if null else 0
        self.non_blocking = bool(non_blocking and not null)

    def __enter__(self):
        _streams.append(self)
        return self

    def __exit__(self, *exc):
        _streams.pop()

    def __eq__(self, other):
        return isinstance(other, Stream) and self.ptr == other.ptr

    def __hash__(self):
        return self.ptr

    @property
    def done(self):
        return True

    def use(self):
        _streams[-1] = self
        return self

    def synchronize(self):
        pass

    def record(self, event=None):
        event = Event() if event is None else event
        event.record(self)
        return event

    def wait_event(self, event):
        if not isinstance(event, Event):
            raise TypeError(f"FAKE: Stream.wait_event takes a cupy.cuda.Event, got {event!r}")
        if not event.recorded:
            raise RuntimeError("FAKE: waiting on an event that was never recorded")


Stream.null = Stream(null=True)
_streams = [Stream.null]


class _Device:
    id = 0

    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)

    def use(self):
        pass

    def synchronize(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


# cupy.cuda.nccl (cupy/cuda/nccl.py over cupy_backends/cuda/libs/nccl.pyx): a communicator
# over the processes of MPI.COMM_WORLD (mpi4py, imported when first used), which rebuilds
# the arrays from the device pointers and counts and runs the collective at once
nccl = types.ModuleType("cupy.cuda.nccl")
nccl.available = True
_NCCL_DTYPES = [np.dtype(t) for t in (np.int8, np.uint8, np.int32, np.uint32, np.int64,
                                      np.uint64, np.float16, np.float32, np.float64)]
for _i, _name in enumerate(["INT8", "UINT8", "INT32", "UINT32", "INT64", "UINT64", "FLOAT16",
                            "FLOAT32", "FLOAT64", "BFLOAT16"]):  # the values of cupy's nccl.pxd
    setattr(nccl, f"NCCL_{_name}", _i)
nccl.NCCL_CHAR, nccl.NCCL_INT, nccl.NCCL_HALF = nccl.NCCL_INT8, nccl.NCCL_INT32, nccl.NCCL_FLOAT16
nccl.NCCL_FLOAT, nccl.NCCL_DOUBLE = nccl.NCCL_FLOAT32, nccl.NCCL_FLOAT64
_NCCL_REDUCE = [lambda a: np.sum(a, 0), lambda a: np.prod(a, 0), lambda a: np.max(a, 0),
                lambda a: np.min(a, 0), lambda a: np.sum(a, 0) / len(a)]
for _i, _name in enumerate(["SUM", "PROD", "MAX", "MIN", "AVG"]):
    setattr(nccl, f"NCCL_{_name}", _i)


def get_unique_id():
    """128 bytes (cupy 14: bytes, earlier a tuple of ints)."""
    return os.urandom(128)


def _at(ptr, count, datatype):
    """The ``count`` values of NCCL type ``datatype`` at address ``ptr``, as a numpy view."""
    if not 0 <= datatype < len(_NCCL_DTYPES):
        raise ValueError(f"FAKE: NCCL has no datatype {datatype!r}")
    dtype = _NCCL_DTYPES[datatype]
    if count and not ptr:
        raise ValueError("FAKE: a null pointer for NCCL")
    if count == 0:
        return np.empty(0, dtype)
    return np.frombuffer((ctypes.c_char * (count * dtype.itemsize)).from_address(ptr), dtype)


class NcclCommunicator:
    """One process's rank of an NCCL communicator (multi-process form of cupy's)."""

    def __init__(self, ndev, commId, rank, config=None):
        from mpi4py import MPI

        self._world = MPI.COMM_WORLD
        if not isinstance(commId, bytes) or len(commId) != 128:
            raise ValueError(f"FAKE: commId must be the 128 bytes of get_unique_id(), got "
                             f"{commId!r:.40}")
        if (ndev, rank) != (self._world.Get_size(), self._world.Get_rank()):
            raise ValueError(f"FAKE: NcclCommunicator(ndev={ndev}, rank={rank}) in process "
                             f"{self._world.Get_rank()} of {self._world.Get_size()}")
        if len(set(self._world.allgather(commId))) != 1:  # the init is collective, as NCCL's
            raise ValueError("FAKE: the processes passed different unique ids")
        self._size, self._rank = ndev, rank

    def _stream(self, stream):
        if not isinstance(stream, int):
            raise TypeError(f"FAKE: stream must be a stream's ptr (int), got {stream!r}")

    def allReduce(self, sendbuf, recvbuf, count, datatype, op, stream):
        self._stream(stream)
        values = np.stack(self._world.allgather(_at(sendbuf, count, datatype).copy()))
        _at(recvbuf, count, datatype)[...] = _NCCL_REDUCE[op](values)

    def broadcast(self, sendbuff, recvbuff, count, datatype, root, stream):
        self._stream(stream)
        mine = _at(sendbuff, count, datatype).copy() if self._rank == root else None
        _at(recvbuff, count, datatype)[...] = self._world.bcast(mine, root=root)

    def bcast(self, buff, count, datatype, root, stream):
        self.broadcast(buff, buff, count, datatype, root, stream)

    def rank_id(self):
        return self._rank

    def size(self):
        return self._size

    def device_id(self):
        return 0

    def destroy(self):
        pass


nccl.get_unique_id = get_unique_id
nccl.NcclCommunicator = NcclCommunicator

cuda = types.ModuleType("cupy.cuda")
cuda.runtime = types.SimpleNamespace(
    getDeviceCount=lambda: 1,
    getDeviceProperties=lambda i: {"name": b"FakeGPU"},
    runtimeGetVersion=lambda: 12000,
)
cuda.get_current_stream = lambda device_id=-1: _streams[-1]
cuda.Stream, cuda.Event, cuda.MemoryPointer = Stream, Event, MemoryPointer
cuda.Device = _Device
cuda.nccl = nccl
cupy.cuda = cuda
cupy.from_dlpack = lambda obj: ndarray(np.from_dlpack(obj))

cupyx = types.ModuleType("cupyx")


def scatter_add(a, slices, value):
    if isinstance(value, np.ndarray) and not isinstance(value, ndarray):
        _bad(value)
    np.add.at(a._a, a._index(slices), _unwrap(value))


cupyx.scatter_add = scatter_add
cupyx_scipy = types.ModuleType("cupyx.scipy")
cupyx_special = types.ModuleType("cupyx.scipy.special")
_erf = np.vectorize(math.erf, otypes=[np.float64])
cupyx_special.erf = lambda x: ndarray(_erf(x._a).astype(x._a.dtype))
cupyx.scipy = cupyx_scipy
cupyx_scipy.special = cupyx_special

cupy.__spec__ = importlib.machinery.ModuleSpec("cupy", None)
sys.modules["cupy"] = cupy
sys.modules["cupy.cuda"] = cuda
sys.modules["cupy.cuda.nccl"] = nccl
sys.modules["cupyx"] = cupyx
sys.modules["cupyx.scipy"] = cupyx_scipy
sys.modules["cupyx.scipy.special"] = cupyx_special


def _install_kernels():
    import kernels
    from kernels import reference
    try:
        from kernels.gpu import emulate
        ops = emulate.host_ops()
        source = "emulated CUDA sources"
    except Exception as e:  # noqa: BLE001  (no g++, a failed build: fall back)
        ops, source = reference, f"reference ({e})"
    for name in kernels.KERNELS:
        fn = getattr(ops, name)

        def k(*args, _fn=fn):
            return _wrap(_fn(*_unwrap(args)))
        kernels.register(name, "cuda", k, impl="fake", default=True)
    return source


def pytest_configure(config):
    config._fake_kernels = _install_kernels()


def pytest_report_header(config):
    return f"FAKE cupy on numpy; cuda kernels: {config._fake_kernels}"


def pytest_terminal_summary(terminalreporter):
    if LOG:
        terminalreporter.section("fake cupy notes")
        for line in sorted(set(LOG)):
            terminalreporter.write_line(f"{line}  x{LOG.count(line)}")
