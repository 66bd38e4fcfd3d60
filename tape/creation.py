"""Creating tensors: from data, filled, ranges and random (float32 unless told otherwise)."""

from __future__ import annotations

import copy

import numpy as np

from . import backend
from .tensor import Tensor, wrap

_rng = np.random.default_rng()


def manual_seed(seed: int) -> None:
    """Seed the generator behind ``randn``, ``rand`` and the library's random choices."""
    global _rng
    _rng = np.random.default_rng(seed)


def generator() -> np.random.Generator:
    """The library's random generator (seeded by ``manual_seed``)."""
    return _rng


def get_rng_state() -> dict:
    """The state of the generator behind ``randn``, ``rand``, dropout, initialisation and
    shuffling: a dict of numbers that ``tape.save`` can store (with a checkpoint) and
    ``set_rng_state`` restores, so a resumed run draws the same numbers."""
    return copy.deepcopy(_rng.bit_generator.state)


def set_rng_state(state: dict) -> None:
    """Restore a state that ``get_rng_state`` returned."""
    if not (isinstance(state, dict) and state.get("bit_generator") == "PCG64"):
        raise ValueError(f"set_rng_state takes the dict get_rng_state returned, got "
                         f"{str(state)[:100]}")
    try:
        _rng.bit_generator.state = state
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"set_rng_state: the state is not one get_rng_state returned ({e})") \
            from None


def tensor(data, dtype=None, requires_grad=False, device=None) -> Tensor:
    """A new tensor holding a copy of ``data`` (lists, scalars, numpy or cupy arrays).

    Python floats become float32; integers stay integers; arrays keep their dtype.
    """
    return Tensor(data, dtype=dtype, requires_grad=requires_grad, device=device)


def _shape(shape, op="tensor creation"):
    """A shape given as sizes or as one tuple/list: non-negative ints, or a clear error."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    for s in shape:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)):
            raise TypeError(f"{op}: sizes must be ints, got {s!r} in {tuple(shape)}")
        if s < 0:
            raise ValueError(f"{op}: size {s} in {tuple(shape)} is negative; sizes must be "
                             "non-negative ints")
    return tuple(int(s) for s in shape)


def _made(array, dtype, requires_grad, device):
    array = backend.to_device(array.astype(dtype or np.float32, copy=False), device)
    t = wrap(array, False)
    if requires_grad:
        t = Tensor(t.data, requires_grad=True)
    return t


def zeros(*shape, dtype=None, requires_grad=False, device=None) -> Tensor:
    return _made(np.zeros(_shape(shape, "zeros")), dtype, requires_grad, device)


def ones(*shape, dtype=None, requires_grad=False, device=None) -> Tensor:
    return _made(np.ones(_shape(shape, "ones")), dtype, requires_grad, device)


def full(shape, value, dtype=None, requires_grad=False, device=None) -> Tensor:
    shape = (shape,) if isinstance(shape, (int, np.integer)) else shape
    return _made(np.full(_shape((shape,), "full"), value), dtype, requires_grad, device)


def zeros_like(x, dtype=None, requires_grad=False) -> Tensor:
    return zeros(x.shape, dtype=dtype or x.dtype, requires_grad=requires_grad, device=x.device)


def ones_like(x, dtype=None, requires_grad=False) -> Tensor:
    return ones(x.shape, dtype=dtype or x.dtype, requires_grad=requires_grad, device=x.device)


def randn(*shape, dtype=None, requires_grad=False, device=None) -> Tensor:
    """Standard normal samples."""
    return _made(_rng.standard_normal(_shape(shape, "randn")), dtype, requires_grad, device)


def rand(*shape, dtype=None, requires_grad=False, device=None) -> Tensor:
    """Uniform samples in [0, 1)."""
    return _made(_rng.random(_shape(shape, "rand")), dtype, requires_grad, device)


def arange(start, stop=None, step=1, dtype=None, requires_grad=False, device=None) -> Tensor:
    """Evenly spaced values as numpy.arange; integers unless a float or dtype is given."""
    array = np.arange(start, stop, step) if stop is not None else np.arange(start)
    if dtype is None and array.dtype == np.float64:
        dtype = np.float32
    return _made(array, dtype or array.dtype, requires_grad, device)


def eye(n, m=None, dtype=None, requires_grad=False, device=None) -> Tensor:
    return _made(np.eye(n, m), dtype, requires_grad, device)


def from_dlpack(obj) -> Tensor:
    """A tensor sharing memory with ``obj`` (a torch tensor, cupy array, ...) via DLPack.

    >>> t = tape.from_dlpack(torch.arange(3.0))  # no copy: same memory
    """
    return wrap(backend.from_dlpack(obj))
