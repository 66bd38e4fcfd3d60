"""CuPy RawKernel launcher: lazy compilation, a per-(kernel, dtype) cache, grid/block sizes.

cupy is imported on the first launch, never at ``import kernels``.
"""

from __future__ import annotations

import threading

from .sources import DTYPES, SOURCES

BLOCK = 256  # threads per block: a multiple of the warp size, good occupancy on sm_60+
MAX_GRID = 65535 * 32  # the kernels loop grid-stride, so a capped grid is still correct
NVRTC_OPTIONS = ("-std=c++14",)

_cache: dict = {}
_lock = threading.Lock()


def grid_block(total: int, block: int = BLOCK) -> tuple[tuple[int], tuple[int]]:
    """``((grid,), (block,))`` covering ``total`` threads (one per output element)."""
    grid = max(1, min((total + block - 1) // block, MAX_GRID))
    return (grid,), (block,)


def kernel(name: str, dtype) -> object:
    """The compiled ``cupy.RawKernel`` ``<name>_<float|double>`` (compiled once, then cached)."""
    import numpy as np

    ctype = DTYPES[np.dtype(dtype).name]
    key = (name, ctype)
    k = _cache.get(key)
    if k is None:
        with _lock:
            k = _cache.get(key)
            if k is None:
                import cupy

                k = cupy.RawKernel(SOURCES[name], f"{name}_{ctype}", options=NVRTC_OPTIONS)
                _cache[key] = k
    return k


def launch(name: str, dtype, total: int, args: tuple) -> None:
    """Run kernel ``name`` for ``dtype`` over ``total`` threads on the current device."""
    grid, block = grid_block(total)
    kernel(name, dtype)(grid, block, args)


class CupyBackend:
    """The backend of :class:`kernels.gpu.ops.KernelOps` for real GPUs."""

    launch = staticmethod(launch)

    @property
    def xp(self):
        import cupy

        return cupy
