"""Run the CUDA kernel sources on the host, to test their logic where there is no GPU.

A thin header (:data:`EMU_HEADER`) turns the CUDA subset the kernels use into plain C++:
``__global__``/``__device__`` vanish, ``blockIdx``/``threadIdx``/``blockDim``/``gridDim``
are globals, ``atomicAdd`` is a plain add (the emulation is sequential). For each kernel a
generated ``emu_<kernel>`` entry point loops over every block and thread of the launch and
calls the kernel, exactly as a GPU would (one thread at a time). g++ builds it all into a
shared library loaded with ctypes; :func:`host_ops` wraps it in the same
:class:`~kernels.gpu.ops.KernelOps` as the cupy backend, so the conformance tests run the
GPU wrappers and kernels end to end on numpy arrays.

>>> ops = host_ops()                             # doctest: +SKIP
>>> ops.im2col(x, 3, 3, 1, 1, 1)                 # same result as kernels.reference.im2col
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading

import numpy as np

from . import launch as _launch
from .ops import KernelOps
from .sources import DTYPES, PARAMS, SOURCES

EMU_HEADER = r"""
// Host emulation of the CUDA subset used by kernels/gpu/sources.py (sequential).
struct emu_dim3 { unsigned int x, y, z; };
static emu_dim3 threadIdx = {0, 0, 0}, blockIdx = {0, 0, 0};
static emu_dim3 blockDim = {1, 1, 1}, gridDim = {1, 1, 1};
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
template <typename T> inline T atomicAdd(T* address, T val) {
    T old = *address; *address = old + val; return old;
}
"""

CXX_FLAGS = ("-O2", "-std=c++14", "-shared", "-fPIC", "-Wall", "-Werror", "-x", "c++")

_lock = threading.Lock()
_libs: dict = {}


def compiler() -> str | None:
    """The C++ compiler used (``$CXX``, g++, c++ or clang++), or None."""
    for cand in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if cand and shutil.which(cand):
            return cand
    return None


def _params(name: str, ctype: str) -> list[tuple[str, str]]:
    """[(C type, arg name)] of ``<name>_<ctype>``."""
    out = []
    for p in PARAMS[name].split(","):
        *ty, arg = p.replace("*", "* ").split()
        out.append((" ".join(ty).replace("T", ctype), arg))
    return out


def translation_unit() -> str:
    """Header + every kernel source + one ``emu_<kernel>_<ctype>`` launcher per entry point."""
    parts = [EMU_HEADER, *SOURCES.values()]
    for name in SOURCES:
        for ctype in DTYPES.values():
            params = _params(name, ctype)
            decl = ", ".join(f"{t} {a}" for t, a in params)
            call = ", ".join(a for _, a in params)
            parts.append(
                f'extern "C" void emu_{name}_{ctype}(unsigned int grid, unsigned int block, '
                f"{decl}) {{\n"
                f"    gridDim.x = grid; blockDim.x = block;\n"
                f"    for (unsigned int b = 0; b < grid; ++b) {{ blockIdx.x = b;\n"
                f"        for (unsigned int t = 0; t < block; ++t) {{ threadIdx.x = t; "
                f"{name}_{ctype}({call}); }} }}\n}}\n"
            )
    return "\n".join(parts)


def build(cxx: str | None = None, cache_dir: str | None = None) -> ctypes.CDLL:
    """Compile :func:`translation_unit` (cached by content hash) and load it."""
    cxx = cxx or compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set $CXX or install g++)")
    src = translation_unit()
    key = hashlib.sha256((cxx + " ".join(CXX_FLAGS) + src).encode()).hexdigest()[:16]
    with _lock:
        if key in _libs:
            return _libs[key]
        cache_dir = cache_dir or os.path.join(tempfile.gettempdir(), "kernels-gpu-emulation")
        os.makedirs(cache_dir, exist_ok=True)
        so = os.path.join(cache_dir, f"emu-{key}.so")
        if not os.path.exists(so):
            cpp = os.path.join(cache_dir, f"emu-{key}-{os.getpid()}.cpp")
            tmp = so + f".{os.getpid()}.tmp"
            with open(cpp, "w") as f:
                f.write(src)
            res = subprocess.run([cxx, *CXX_FLAGS, cpp, "-o", tmp], capture_output=True,
                                 text=True)
            if res.returncode != 0:
                raise RuntimeError(f"{cxx} failed to build the CUDA emulation:\n{res.stderr}")
            os.replace(tmp, so)  # atomic: concurrent builders never load a partial file
            os.remove(cpp)
        lib = ctypes.CDLL(so)
        _libs[key] = lib
        return lib


_CTYPES = {"ll": ctypes.c_longlong}


class HostBackend:
    """Backend running the kernels through the emulation library; ``grid``/``block``
    override the launch shape (default: the cupy launcher's :func:`grid_block`)."""

    xp = np

    def __init__(self, lib: ctypes.CDLL | None = None, grid=None, block=None):
        self._lib = lib
        self.grid, self.block = grid, block
        self._fns: dict = {}

    @property
    def lib(self) -> ctypes.CDLL:
        """The emulation library, built on first use (not when registered)."""
        if self._lib is None:
            self._lib = build()
        return self._lib

    def _fn(self, name, ctype):
        fn = self._fns.get((name, ctype))
        if fn is None:
            fn = getattr(self.lib, f"emu_{name}_{ctype}")
            fn.restype = None
            fn.argtypes = [ctypes.c_uint, ctypes.c_uint] + [
                ctypes.c_void_p if t.endswith("*") else _CTYPES[t]
                for t, _ in _params(name, ctype)
            ]
            self._fns[(name, ctype)] = fn
        return fn

    def launch(self, name, dtype, total, args):
        (grid,), (block,) = _launch.grid_block(total)
        grid, block = self.grid or grid, self.block or block
        conv = [a.ctypes.data if isinstance(a, np.ndarray) else int(a) for a in args]
        self._fn(name, DTYPES[np.dtype(dtype).name])(grid, block, *conv)


def host_ops(grid=None, block=None) -> KernelOps:
    """The GPU kernels, emulated on the host over numpy arrays (built on the first call)."""
    return KernelOps(HostBackend(grid=grid, block=block))
