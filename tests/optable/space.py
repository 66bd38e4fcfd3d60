"""The two namespaces every row of the op table is written against.

A row's ``fn(m, *xs)`` is written once: ``TAPE`` maps names to ``tape`` (numpy spelling:
``axis=``, ``keepdims=``) and ``m.F`` to ``tape.functional``; ``TORCH`` maps the same
names and arguments to PyTorch and ``m.F`` to ``torch.nn.functional`` (tinygrad's
``helper_test_op`` style). ``m.const`` / ``m.idx`` make a constant (index arrays, masks)
a numpy (or cupy) array for tape and a torch tensor for torch. ``m.dropout_seeded``
is dropout with a fixed seed: torch's twin multiplies by the mask tape draws.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as TF

import tape
import tape.functional as F
from tape import backend


# ----- the two namespaces -----
class TapeNS:
    """``m.<op>`` for tape: the public functions, plus constants as arrays (numpy, or
    cupy for the GPU rows) and ``m.tensor`` on the namespace's device."""

    name = "tape"
    F = F

    def __init__(self, device="cpu"):
        self.device = device

    def __getattr__(self, name):
        return getattr(tape, name)

    def const(self, a, like=None):
        return backend.to_device(np.asarray(a, dtype=None if like is None else like.dtype),
                                 self.device)

    idx = const

    def tensor(self, data, **kw):
        return tape.tensor(data, device=self.device, **kw)

    @staticmethod
    def dropout_seeded(x, p, seed=0):
        """``F.dropout(x, p)`` drawing from ``manual_seed(seed)``; the library RNG's state
        is put back after, so that the row changes nothing for other tests."""
        state = tape.get_rng_state()
        tape.manual_seed(seed)
        try:
            return F.dropout(x, p)
        finally:
            tape.set_rng_state(state)


def _dims(axis):
    return tuple(axis) if isinstance(axis, (tuple, list)) else axis


def _alias(axis, keepdims, dim, keepdim):
    keep = keepdim if keepdim is not None else keepdims
    return _dims(dim if dim is not None else axis), bool(keep)


def _tensor_like(v, x):
    return v if isinstance(v, torch.Tensor) else torch.tensor(v, dtype=x.dtype)


class _TorchNS:
    """``m.<op>`` for torch, taking tape's (numpy) spelling of the arguments."""

    name = "torch"
    F = TF

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def const(a, like=None):
        return torch.as_tensor(np.array(a), dtype=None if like is None else like.dtype)

    idx = const

    # reductions: numpy's axis=/keepdims= (and torch's dim=/keepdim=) to torch
    @staticmethod
    def sum(x, axis=None, keepdims=False, *, dim=None, keepdim=None):
        axis, keepdims = _alias(axis, keepdims, dim, keepdim)
        return torch.sum(x, dim=axis, keepdim=keepdims)

    @staticmethod
    def mean(x, axis=None, keepdims=False, *, dim=None, keepdim=None):
        axis, keepdims = _alias(axis, keepdims, dim, keepdim)
        return torch.mean(x, dim=axis, keepdim=keepdims)

    @staticmethod
    def max(x, axis=None, keepdims=False, *, dim=None, keepdim=None):
        axis, keepdims = _alias(axis, keepdims, dim, keepdim)
        return torch.amax(x, dim=() if axis is None else axis, keepdim=keepdims)

    @staticmethod
    def min(x, axis=None, keepdims=False, *, dim=None, keepdim=None):
        axis, keepdims = _alias(axis, keepdims, dim, keepdim)
        return torch.amin(x, dim=() if axis is None else axis, keepdim=keepdims)

    @staticmethod
    def prod(x, axis=None, keepdims=False, *, dim=None, keepdim=None):
        axis, keepdims = _alias(axis, keepdims, dim, keepdim)
        if axis is None:
            out = torch.prod(x)
            return out.reshape((1,) * x.ndim) if keepdims else out
        axes = sorted({a % x.ndim for a in (axis if isinstance(axis, tuple) else (axis,))})
        for a in reversed(axes):  # torch.prod takes one dim at a time
            x = torch.prod(x, dim=a, keepdim=keepdims)
        return x

    @staticmethod
    def var(x, axis=None, ddof=0, keepdims=False, *, dim=None, keepdim=None):
        axis, keepdims = _alias(axis, keepdims, dim, keepdim)
        return torch.var(x, dim=axis, correction=ddof, keepdim=keepdims)

    @staticmethod
    def std(x, axis=None, ddof=0, keepdims=False, *, dim=None, keepdim=None):
        axis, keepdims = _alias(axis, keepdims, dim, keepdim)
        return torch.std(x, dim=axis, correction=ddof, keepdim=keepdims)

    @staticmethod
    def logsumexp(x, axis=None, keepdims=False, *, dim=None, keepdim=None):
        axis, keepdims = _alias(axis, keepdims, dim, keepdim)
        return torch.logsumexp(x, dim=tuple(range(x.ndim)) if axis is None else axis,
                               keepdim=keepdims)

    @staticmethod
    def argmax(x, axis=None, keepdims=False, *, dim=None, keepdim=None):
        axis, keepdims = _alias(axis, keepdims, dim, keepdim)
        return torch.argmax(x, dim=axis, keepdim=keepdims)

    @staticmethod
    def argmin(x, axis=None, keepdims=False, *, dim=None, keepdim=None):
        axis, keepdims = _alias(axis, keepdims, dim, keepdim)
        return torch.argmin(x, dim=axis, keepdim=keepdims)

    # shapes
    @staticmethod
    def transpose(x, *axes):
        axes = tuple(axes[0]) if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
        return x.permute(axes or tuple(reversed(range(x.ndim))))

    @staticmethod
    def squeeze(x, axis=None, *, dim=None):
        axis = _dims(dim if dim is not None else axis)
        return torch.squeeze(x) if axis is None else torch.squeeze(x, axis)

    @staticmethod
    def unsqueeze(x, axis=None, *, dim=None):
        return torch.unsqueeze(x, dim if dim is not None else axis)

    @staticmethod
    def expand(x, *sizes):
        return x.expand(*sizes)

    @staticmethod
    def concatenate(xs, axis=0, *, dim=None):
        return torch.cat(list(xs), dim=dim if dim is not None else axis)

    @staticmethod
    def stack(xs, axis=0, *, dim=None):
        return torch.stack(list(xs), dim=dim if dim is not None else axis)

    @staticmethod
    def split(x, indices_or_sections, axis=0):  # numpy.split's meaning
        return list(torch.tensor_split(x, indices_or_sections, dim=axis))

    @staticmethod
    def pad(x, pad, mode="constant", value=0.0):
        return TF.pad(x, pad, mode=mode, value=value)

    # elementwise and nn
    @staticmethod
    def clip(x, min=None, max=None):
        return torch.clamp(x, min, max)

    @staticmethod
    def maximum(a, b):
        return torch.maximum(_tensor_like(a, b), _tensor_like(b, a))

    @staticmethod
    def minimum(a, b):
        return torch.minimum(_tensor_like(a, b), _tensor_like(b, a))

    @staticmethod
    def gelu(x, approximate="none"):
        return TF.gelu(x, approximate=approximate)

    @staticmethod
    def leaky_relu(x, negative_slope=0.01):
        return TF.leaky_relu(x, negative_slope)

    @staticmethod
    def softplus(x, beta=1.0, threshold=20.0):
        return TF.softplus(x, beta, threshold)

    @staticmethod
    def softmax(x, axis=None, *, dim=None):
        return torch.softmax(x, dim=dim if dim is not None else (-1 if axis is None else axis))

    @staticmethod
    def log_softmax(x, axis=None, *, dim=None):
        return torch.log_softmax(x, dim=dim if dim is not None else (-1 if axis is None else axis))

    @staticmethod
    def dropout_seeded(x, p, seed=0):
        """The twin of tape's seeded dropout: torch's RNG cannot draw tape's mask, so the
        mask is tape's (drawn on ones of ``x``'s shape and dtype), scaling included."""
        ones = tape.ones(*x.shape, dtype=str(x.dtype).removeprefix("torch."))
        mask = TapeNS.dropout_seeded(ones, p, seed).numpy()
        return x * torch.from_numpy(mask)


TAPE = TapeNS()
TORCH = _TorchNS()
