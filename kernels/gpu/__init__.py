"""CuPy RawKernel implementations (device "cuda"): sources in :mod:`.sources`, launcher in
:mod:`.launch`, wrappers in :mod:`.ops`, host emulation for tests in :mod:`.emulate`.

Importing this package never imports cupy; the first kernel call does. The wrappers are
registered as the "cuda" default, "cupy", where cupy is installed.
"""

from __future__ import annotations

from ..registry import CUPY_INSTALLED
from .launch import CupyBackend
from .ops import KernelOps, gpu_kernel

CUPY = KernelOps(CupyBackend())  # the kernels on the GPU

if CUPY_INSTALLED:
    CUPY.register("cuda", "cupy", default=True)

__all__ = ["CUPY", "KernelOps", "gpu_kernel"]
