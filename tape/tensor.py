"""Tensor: a thin wrapper around a numpy or cupy array.

A tensor holds its array and a ``requires_grad`` flag: no link to the op that made it,
no parents, no ``.grad``. Once a tape records it, it also holds its node
(``tape/node.py``), its identity on tapes, which outlives it there. Operators and
methods delegate to the ops in ``tape/ops``; the tape records them.
"""

from __future__ import annotations

import numpy as np

from . import backend


def _default_array(data, dtype, device):
    """The array for ``tape.tensor(data, ...)``: Python floats become float32; numpy
    arrays and scalars keep their dtype."""
    if isinstance(data, Tensor):
        data = data.data
    if isinstance(data, np.ndarray) or backend.is_cupy(data):
        array = data.copy()
    elif isinstance(data, np.generic):  # a numpy scalar keeps its dtype, as an array does
        array = np.array(data)
    else:
        array = np.array(data)
        if dtype is None and array.dtype == np.float64:
            array = array.astype(np.float32)
        elif array.dtype.kind not in "biuf":
            raise TypeError(
                f"tape.tensor holds numbers only (bool, int, float); this data gives numpy "
                f"dtype {array.dtype} (e.g. Python objects or strings, or ragged lists)"
            )
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    return backend.to_device(array, device)


class Tensor:
    """An n-dimensional array whose operations the active gradient tapes record.

    >>> x = tape.tensor([1.0, 2.0], requires_grad=True)
    >>> with tape.Tape() as t:
    ...     y = (x * x).sum()
    >>> t.gradient(y, x)
    tensor([2., 4.], dtype=float32)
    """

    __slots__ = ("data", "requires_grad", "_node", "__weakref__")
    _mapped = False  # a Batched tensor: its shape is one example's, not its array's
    __array_ufunc__ = None  # numpy defers to our reflected operators: ndarray + Tensor -> Tensor
    __hash__ = object.__hash__

    def __init__(self, data, dtype=None, requires_grad=False, device=None):
        self.data = _default_array(data, dtype, device)
        if requires_grad and self.data.dtype.kind != "f":
            raise TypeError(
                f"only floating-point tensors can require gradients, got dtype {self.data.dtype}; "
                "create it with dtype=tape.float32 (or call .astype(tape.float32))"
            )
        self.requires_grad = bool(requires_grad)
        self._node = None

    # ----- plain attributes -----
    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)
    device = property(lambda self: backend.device_of(self.data))

    def numpy(self) -> np.ndarray:
        """The values as a numpy array (a copy when the tensor lives on the GPU)."""
        return backend.to_numpy(self.data)

    def item(self):
        """The Python scalar of a one-element tensor."""
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.data.item()

    def tolist(self):
        return self.numpy().tolist()

    def to(self, device) -> Tensor:
        """This tensor on ``device`` ('cpu' or 'cuda'); itself when already there."""
        if device == self.device:
            return self
        return wrap(backend.to_device(self.data, device), self.requires_grad)

    def detach(self) -> Tensor:
        """The same data in a new tensor that no tape watches."""
        return wrap(self.data)

    def __dlpack__(self, *args, **kwargs):
        """Share the data with PyTorch, CuPy, JAX... without copying (DLPack)."""
        return self.data.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self.data.__dlpack_device__()

    def __setitem__(self, index, value):
        raise TypeError(
            "tensors cannot be changed in place: a tape may hold this one for a gradient. "
            "Build a new tensor instead (tape.where(mask, value, x), tape.concatenate...), or, "
            "outside any tape, assign to the array: x.data[index] = value"
        )

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __bool__(self):
        if self.data.size != 1:
            raise ValueError(
                f"the truth value of a tensor of shape {self.shape} is ambiguous; "
                "use .any() or .all() on its .data"
            )
        return bool(self.data)

    def __format__(self, spec):
        """``f"{loss:.4f}"`` for a one-element tensor, as torch; ``str`` otherwise."""
        if self.data.size == 1:
            return format(self.item(), spec)
        if spec:
            raise TypeError(f"format spec {spec!r} on a tensor of shape {self.shape}: only "
                            "one-element tensors take one (format x.item(), or x.numpy())")
        return str(self)

    # ----- PyTorch habits that have another spelling here -----
    @property
    def grad(self):
        raise AttributeError(
            "tape tensors hold no .grad: gradients are returned, not stored. Record the "
            "forward in `with tape.Tape() as t:` and ask `grads = t.gradient(loss, params)`")

    @property
    def backward(self):
        raise AttributeError(
            "tape has no loss.backward(): record the forward in `with tape.Tape() as t:`, "
            "then `grads = t.gradient(loss, params)` and `opt.step(grads)`")

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __array__(self, dtype=None, copy=None):
        array = self.numpy()
        return array if dtype is None else array.astype(dtype)

    def __repr__(self):
        body = np.array2string(self.numpy(), separator=", ", prefix="tensor(")
        extra = f", dtype={self.dtype}"
        if self.device != "cpu":
            extra += f", device='{self.device}'"
        if self.requires_grad:
            extra += ", requires_grad=True"
        return f"tensor({body}{extra})"


def wrap(array, requires_grad=False) -> Tensor:
    """A Tensor around an existing array, without copying (the ops' fast path)."""
    t = object.__new__(Tensor)
    if type(array) is not np.ndarray and not backend.is_cupy(array):
        array = np.asarray(array)  # numpy scalars from reductions become 0-d arrays
    t.data = array
    t.requires_grad = requires_grad
    t._node = None
    return t


class Batched(Tensor):
    """A tensor inside ``func.vmap``: one example of a batch, as the mapped function sees it.

    ``value`` holds the whole batch (a Tensor, itself ``Batched`` under nested vmaps) with
    the mapped axis first; ``shape`` is one example's. Ops given a ``Batched`` run their
    batching rule (``tape/batching.py``) on ``value``. ``data`` is the array under every
    level (all the mapped axes first), for the device and dtype.
    """

    __slots__ = ("value", "level")
    _mapped = True

    shape = property(lambda self: self.value.shape[1:])
    ndim = property(lambda self: self.value.ndim - 1)
    size = property(lambda self: int(np.prod(self.value.shape[1:], dtype=np.int64)))

    def _no_value(self, what):
        raise ValueError(
            f"{what} of a tensor inside vmap: each example's value exists only as part of the "
            "batch; return the tensor from the mapped function and read it outside vmap")

    def numpy(self):
        self._no_value("numpy()")

    def item(self):
        self._no_value("item()")

    def __bool__(self):
        self._no_value("the truth value")

    def detach(self):
        return batched(self.value.detach(), self.level)

    def __repr__(self):
        return f"Batched(level {self.level}, shape {tuple(self.shape)}, dtype={self.dtype})"


def batched(value, level) -> Batched:
    """``value`` (a Tensor holding a batch, mapped axis first) as one example at ``level``."""
    b = object.__new__(Batched)
    b.value = value
    b.level = level
    b.data = value.data
    b.requires_grad = False
    b._node = None
    return b


# ----- operators and methods: thin delegations to the ops -----
from .ops import elementwise as _ew  # noqa: E402  (the ops import Tensor from this module)
from .ops import indexing as _ix  # noqa: E402
from .ops import linalg as _la  # noqa: E402
from .ops import nn as _nn  # noqa: E402
from .ops import reduce as _rd  # noqa: E402
from .ops import shape as _sh  # noqa: E402


def _binary(op, reflected=False):
    if reflected:
        return lambda self, other: op(other, self)
    return op  # an op is a plain function: it binds as a method by itself


def _shape_args(shape):
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape


_methods = {
    "__add__": _binary(_ew.add),
    "__radd__": _binary(_ew.add, True),
    "__sub__": _binary(_ew.sub),
    "__rsub__": _binary(_ew.sub, True),
    "__mul__": _binary(_ew.mul),
    "__rmul__": _binary(_ew.mul, True),
    "__truediv__": _binary(_ew.div),
    "__rtruediv__": _binary(_ew.div, True),
    "__pow__": _binary(_ew.pow),
    "__rpow__": _binary(_ew.pow, True),
    "__matmul__": _binary(_la.matmul),
    "__rmatmul__": _binary(_la.matmul, True),
    "__neg__": _ew.neg,
    "__pos__": lambda self: self,
    "__abs__": _ew.abs,
    "__lt__": _binary(_ew.lt),
    "__le__": _binary(_ew.le),
    "__gt__": _binary(_ew.gt),
    "__ge__": _binary(_ew.ge),
    "__eq__": _binary(_ew.eq),
    "__ne__": _binary(_ew.ne),
    "__and__": _binary(_ew.logical_and),
    "__or__": _binary(_ew.logical_or),
    "__invert__": _ew.logical_not,
    "__getitem__": lambda self, index: _ix.getitem(self, index),
    # elementwise
    "exp": _ew.exp,
    "log": _ew.log,
    "sqrt": _ew.sqrt,
    "abs": _ew.abs,
    "sin": _ew.sin,
    "cos": _ew.cos,
    "tanh": _ew.tanh,
    "sigmoid": _ew.sigmoid,
    "relu": _ew.relu,
    "clip": lambda self, min=None, max=None: _ew.clip(self, min=min, max=max),
    "astype": lambda self, dtype: _ew.cast(self, dtype=dtype),
    # reductions
    "sum": _rd.sum,
    "mean": _rd.mean,
    "max": _rd.max,
    "min": _rd.min,
    "prod": _rd.prod,
    "var": _rd.var,
    "std": _rd.std,
    "logsumexp": _rd.logsumexp,
    "argmax": _rd.argmax,
    "argmin": _rd.argmin,
    # shapes
    "reshape": lambda self, *shape: _sh.reshape(self, shape=_shape_args(shape)),
    "transpose": _sh.transpose,
    "permute": _sh.permute,
    "swapaxes": _sh.swapaxes,
    "flatten": _sh.flatten,
    "squeeze": _sh.squeeze,
    "unsqueeze": _sh.unsqueeze,
    "expand": _sh.expand,
    "broadcast_to": lambda self, *shape: _sh.broadcast_to(self, shape=_shape_args(shape)),
    "matmul": _la.matmul,
    "softmax": _nn.softmax,
    "log_softmax": _nn.log_softmax,
}
for _name, _fn in _methods.items():
    setattr(Tensor, _name, _fn)
Tensor.clamp = Tensor.clip
Tensor.T = property(lambda self: _sh.transpose(self))
Tensor.mT = property(lambda self: _sh.swapaxes(self, -1, -2))

