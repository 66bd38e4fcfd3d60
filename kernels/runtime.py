"""Process-level fixes for PERFORMANCE.md's two performance traps, applied at ``import kernels``.

1. **Two thread pools spinning on two cores.** After each call OpenBLAS's worker threads
   busy-wait for ~2**28 cycles and libgomp's (numba's default "omp" layer) spin too, so a
   parallel numba kernel right after a GEMM (or the reverse) fights spinning threads.

   * numba: the "omp" threading layer with its own libgomp loaded under
     ``OMP_WAIT_POLICY=passive`` (workers sleep on a futex, ~40 us to wake on this VM),
     even when torch's libgomp came first; "workqueue" (also passive, but ~110 us to wake)
     where that is not possible. See :func:`fix_numba`.
   * OpenBLAS reads its spin timeout (``OPENBLAS_THREAD_TIMEOUT``) from the environment when
     its thread pool starts, which already happened if numpy was imported first. We set the
     variable, make OpenBLAS re-read its environment (``openblas_read_env``), and shut its
     pool down (``blas_thread_shutdown_``, the same path OpenBLAS takes after ``fork``); the
     next threaded BLAS call restarts the pool, now with the short timeout: 2**14 cycles,
     long enough to bridge the gaps inside one batched matmul (16 GEMMs in a row).

2. **Page faults on large temporaries.** glibc returns big freed blocks to the OS, so every
   training step faults the same pages in again. ``mallopt`` raises the mmap threshold and
   the trim threshold to 1 GiB (mmap threshold 32 MiB where glibc refuses more), so big
   arrays are recycled from the heap: a 58 MB ``empty`` + fill went from 7.0 ms to 3.1 ms
   (1.8 ms is the fill itself). The price: up to 1 GiB of freed memory stays in the process.
   Skipped where the C library is not glibc.

:func:`configure` is idempotent; :func:`report` says what took effect. Set
``TAPE_KERNELS_NO_RUNTIME_FIX=1`` to skip all of it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import glob
import os
import sys
import threading

__all__ = ["configure", "report", "fix_openblas", "fix_malloc", "fix_numba"]

OPENBLAS_THREAD_TIMEOUT = "14"  # 2**14 cycles (~5 us) of spinning, then sleep
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 30  # arrays below 1 GiB come from (and return to) the heap
MMAP_THRESHOLD_FALLBACK = 32 << 20  # HEAP_MAX_SIZE / 2, what older glibcs accept
TRIM_THRESHOLD = 1 << 30

_lock = threading.Lock()
_state: dict = {}


# ----- OpenBLAS -----


def _openblas_libs():
    """ctypes handles of the OpenBLAS libraries loaded in this process (numpy's, scipy's...)."""
    libs = []
    try:
        with open("/proc/self/maps") as f:
            paths = {ln.split()[-1] for ln in f if "openblas" in ln.lower() and "/" in ln}
    except OSError:  # not Linux: look next to numpy
        import numpy

        root = os.path.dirname(os.path.dirname(numpy.__file__))
        paths = set(glob.glob(os.path.join(root, "numpy*.libs", "*openblas*")))
    for p in sorted(paths):
        try:
            libs.append((p, ctypes.CDLL(p)))
        except OSError:
            pass
    return libs


def fix_openblas(timeout: str = OPENBLAS_THREAD_TIMEOUT) -> list[str]:
    """Make every loaded OpenBLAS re-read ``OPENBLAS_THREAD_TIMEOUT`` and restart its pool.

    Returns the paths of the libraries whose pool was restarted.
    """
    import numpy  # noqa: F401  (make sure numpy's OpenBLAS is loaded, so we fix it now)

    fixed = []
    with _env("OPENBLAS_THREAD_TIMEOUT", os.environ.get("OPENBLAS_THREAD_TIMEOUT", timeout)):
        for path, lib in _openblas_libs():
            read_env = getattr(lib, "openblas_read_env", None)
            shutdown = getattr(lib, "blas_thread_shutdown_", None)
            if read_env is None or shutdown is None:  # e.g. an OpenMP build of OpenBLAS
                continue
            read_env.restype = None
            shutdown.restype = ctypes.c_int
            read_env()  # re-reads OPENBLAS_* variables into its globals
            shutdown()  # workers exit; the next threaded call restarts them, short timeout
            fixed.append(path)
    return fixed


def openblas_thread_timeout() -> int | None:
    """The spin timeout exponent numpy's OpenBLAS will use (None if not found)."""
    for _, lib in _openblas_libs():
        fn = getattr(lib, "openblas_thread_timeout", None)
        if fn is not None:
            fn.restype = ctypes.c_int
            return int(fn())
    return None


# ----- glibc malloc -----


def fix_malloc() -> dict[str, int] | None:
    """Raise glibc's mmap / trim thresholds; returns mallopt's results (1 = success)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        gnu_get_libc_version = libc.gnu_get_libc_version  # glibc only
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None  # musl or another libc: nothing to tune this way
    gnu_get_libc_version.restype = ctypes.c_char_p
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    threshold = MMAP_THRESHOLD
    ok = mallopt(M_MMAP_THRESHOLD, threshold)
    if not ok:
        threshold = MMAP_THRESHOLD_FALLBACK
        ok = mallopt(M_MMAP_THRESHOLD, threshold)
    return {
        "M_MMAP_THRESHOLD": int(ok),
        "mmap_threshold": threshold,
        "M_TRIM_THRESHOLD": int(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)),
        "glibc": gnu_get_libc_version().decode(),
    }


# ----- numba -----


def _libgomp_loaded() -> bool:
    """Whether any libgomp is mapped already (torch loads its own with RTLD_GLOBAL, and then
    numba's omppool binds to it, whatever wait policy it was started with)."""
    try:
        with open("/proc/self/maps") as f:
            return any("libgomp" in ln.rsplit("/", 1)[-1] for ln in f if "/" in ln)
    except OSError:
        return False


@contextlib.contextmanager
def _env(name: str, value: str):
    """Set an environment variable for a block (a library reads it while loading)."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


@contextlib.contextmanager
def _dlopen_flags(flags: int):
    old = sys.getdlopenflags()
    sys.setdlopenflags(flags)
    try:
        yield
    finally:
        sys.setdlopenflags(old)


def fix_numba() -> str | None:
    """Pick numba's threading layer so that idle workers sleep instead of spinning.

    "omp" with ``OMP_WAIT_POLICY=passive``: we load numba's OpenMP pool (and with it its
    libgomp, which reads the variable once, while loading) with the variable set, then
    restore the environment so nothing else (torch, child processes) inherits it.

    If a libgomp is loaded already (``import torch`` came first: torch puts its own libgomp
    in the global symbol scope, and numba's pool would bind to it, spinning: measured 2-4x
    slower), the pool is loaded with ``RTLD_DEEPBIND`` so that it binds to its own, passive
    libgomp. Where that is not possible (no RTLD_DEEPBIND, or ``LD_PRELOAD`` set, with which
    DEEPBIND can split malloc/free) "workqueue" is used: passive too, but ~110 us to wake.
    An explicit ``NUMBA_THREADING_LAYER`` or an already launched pool is left alone.
    """
    try:
        import numba
        from numba.np.ufunc import parallel
    except ImportError:
        return None
    if getattr(parallel, "_is_initialized", False) or os.environ.get("NUMBA_THREADING_LAYER"):
        return numba.config.THREADING_LAYER
    user_policy = os.environ.get("OMP_WAIT_POLICY")
    flags = sys.getdlopenflags()
    if (user_policy or "").lower() != "passive" and _libgomp_loaded():
        deepbind = getattr(os, "RTLD_DEEPBIND", 0)
        if not deepbind or os.environ.get("LD_PRELOAD") or "numba.np.ufunc.omppool" in sys.modules:
            numba.config.THREADING_LAYER = "workqueue"
            return "workqueue"
        flags |= deepbind
    try:
        with _env("OMP_WAIT_POLICY", user_policy or "passive"), _dlopen_flags(flags):
            from numba.np.ufunc import omppool  # noqa: F401  (loads libgomp now)
    except ImportError:
        numba.config.THREADING_LAYER = "workqueue"
        return "workqueue"
    numba.config.THREADING_LAYER = "omp"
    return "omp"


# ----- entry points -----


def configure(force: bool = False) -> dict:
    """Apply all fixes once per process (idempotent); returns :func:`report`."""
    with _lock:
        if _state and not force:
            return dict(_state)
        if os.environ.get("TAPE_KERNELS_NO_RUNTIME_FIX"):
            _state.update(skipped=True)
            return dict(_state)
        _state.update(
            numba_layer=fix_numba(),
            malloc=fix_malloc(),
            openblas=fix_openblas(),
            skipped=False,
        )
        return dict(_state)


def report() -> dict:
    """What :func:`configure` did, plus the live numba layer and OpenBLAS timeout."""
    out = dict(_state)
    try:
        import numba

        out["numba_layer_config"] = numba.config.THREADING_LAYER
    except ImportError:
        pass
    out["openblas_thread_timeout"] = openblas_thread_timeout()
    return out
