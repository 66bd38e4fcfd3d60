"""CuPy RawKernel implementations (device "cuda"): sources in :mod:`.sources`, launcher in
:mod:`.launch`, wrappers in :mod:`.ops`, host emulation for tests in :mod:`.emulate`.

Importing this package never imports cupy; the first kernel call does.
"""

from __future__ import annotations

from ..shapes import KERNELS
from .launch import CupyBackend
from .ops import KernelOps

_ops = KernelOps(CupyBackend())

im2col = _ops.im2col
col2im = _ops.col2im
max_pool2d_forward = _ops.max_pool2d_forward
max_pool2d_backward = _ops.max_pool2d_backward
avg_pool2d_forward = _ops.avg_pool2d_forward
avg_pool2d_backward = _ops.avg_pool2d_backward

__all__ = [*KERNELS, "KernelOps"]
