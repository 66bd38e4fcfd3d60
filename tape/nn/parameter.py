"""``Parameter``: a tensor that a ``Module`` trains."""

from __future__ import annotations

import numpy as np

from .. import backend
from ..tensor import Tensor


class Parameter(Tensor):
    """A tensor that a ``Module`` trains: ``requires_grad=True`` unless told otherwise.

    Wraps without copying: ``Parameter(t)`` shares ``t``'s array, ``Parameter(array)``
    uses the array itself (copied only if it is read-only); other data (lists, scalars)
    is converted as by ``tape.tensor`` (Python floats become float32). Freeze with
    ``p.requires_grad = False``.
    """

    __slots__ = ()

    def __init__(self, data=None, requires_grad=True):
        if data is None:
            array = np.empty((0,), np.float32)
        elif isinstance(data, Tensor):
            array = data.data
        elif isinstance(data, np.ndarray) or backend.is_cupy(data):
            array = data if getattr(data.flags, "writeable", True) else data.copy()
        else:
            array = Tensor(data).data
        if requires_grad and array.dtype.kind != "f":
            raise TypeError(f"only floating-point parameters can require gradients, got dtype "
                            f"{array.dtype}; pass requires_grad=False or a float array")
        self.data = array
        self.requires_grad = bool(requires_grad)
        self._node = None

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()
