"""The array module behind a tensor: numpy on the CPU, cupy on the GPU.

This is the one place in ``tape`` that imports cupy, and it does so lazily, so that
``import tape`` never needs it. Ops ask ``xp(*arrays)`` for the module to call.
NumPy ufuncs (``np.exp``, ``np.add``...) dispatch to cupy by themselves through
``__array_ufunc__``, so elementwise forwards may call them directly.
"""

from __future__ import annotations

import math

import numpy as np

_cupy = None  # the cupy module once imported, False if it cannot be


def cupy_or_none():
    """The cupy module, or None when cupy is not installed or no GPU is usable."""
    global _cupy
    if _cupy is None:
        try:
            import cupy

            cupy.cuda.runtime.getDeviceCount()
            _cupy = cupy
        except Exception:  # ImportError, or CUDA present but no usable device
            _cupy = False
    return _cupy or None


def is_cupy(array) -> bool:
    """True for a cupy array, decided without importing cupy."""
    t = type(array)
    return t is not np.ndarray and t.__module__.startswith("cupy")


def as_array(x):
    """``x`` itself when it is an array (numpy or cupy), else ``np.asarray(x)``: so that a
    forward can call the array's own methods, numpy's module functions (``np.sum``...)
    costing about 1 us of Python each on top."""
    if type(x) is np.ndarray or is_cupy(x):
        return x
    return np.asarray(x)


def device_of(array) -> str:
    """'cuda' for a cupy array, 'cpu' for anything else."""
    return "cuda" if is_cupy(array) else "cpu"


def xp(*arrays):
    """The array module (numpy or cupy) for these arrays; numpy when none is a cupy array."""
    for a in arrays:
        if type(a) is not np.ndarray and is_cupy(a):
            return cupy_or_none()
    return np


def module_for(device: str | None):
    """The array module for a device name ('cpu', 'cuda' or 'cuda:N')."""
    if device is None or device == "cpu":
        return np
    if isinstance(device, str) and (device == "cuda" or device.startswith("cuda:")):
        cp = cupy_or_none()
        if cp is None:
            raise RuntimeError(
                f"device={device!r} needs CuPy and a CUDA GPU, and none is usable here. "
                "Install the GPU extra (pip install 'tape[cuda12x]') on a machine with a GPU, "
                "or use device='cpu'."
            )
        return cp
    raise ValueError(f"unknown device {device!r}: use 'cpu' or 'cuda'")


def to_device(array, device: str | None):
    """A copy of ``array`` on ``device`` (the same object when it is already there)."""
    if device is None:
        return array
    target = module_for(device)
    if target is np:
        return array.get() if is_cupy(array) else array
    return target.asarray(array)


def to_numpy(array) -> np.ndarray:
    """A numpy array (copied from the GPU when needed)."""
    return array.get() if is_cupy(array) else np.asarray(array)


# ----- special functions numpy lacks -----

_erf_ufunc = None


def erf(x):
    """The error function, elementwise, for numpy (numba ufunc) and cupy arrays."""
    global _erf_ufunc
    if is_cupy(x):
        import cupyx.scipy.special

        return cupyx.scipy.special.erf(x)
    if _erf_ufunc is None:
        try:
            import numba

            @numba.vectorize(["float32(float32)", "float64(float64)"], cache=True)
            def _erf(v):
                return math.erf(v)

            _erf_ufunc = _erf
        except ImportError:  # numba missing: slower, but still exact
            _erf_ufunc = np.vectorize(math.erf, otypes=[np.float64])
    x = np.asarray(x)
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    return _erf_ufunc(x).astype(x.dtype, copy=False)


# ----- DLPack: zero-copy exchange with PyTorch, CuPy, JAX... -----
_DLPACK_CPU, _DLPACK_CUDA = 1, 2


def from_dlpack(obj):
    """The array behind any object with ``__dlpack__`` (or a legacy capsule), not copied."""
    if hasattr(obj, "__dlpack_device__"):
        device_type = int(obj.__dlpack_device__()[0])
    else:
        device_type = _DLPACK_CPU
    if device_type == _DLPACK_CUDA:
        return module_for("cuda").from_dlpack(obj)
    if device_type != _DLPACK_CPU:
        raise ValueError(f"from_dlpack: device type {device_type} is neither CPU nor CUDA")
    return np.from_dlpack(obj)
