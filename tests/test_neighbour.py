"""A good neighbour: importing and using tape leaves the rest of the process as it was
(environment variables, numba's threading layer, OpenMP runtimes, OpenBLAS's threads and
spin, glibc's malloc thresholds, dlopen flags), and tape says once when it compiles its
kernels. Each check runs in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SNAPSHOT = """
def snapshot():
    import ctypes, glob, os, sys
    import numpy as np
    from numba.np.ufunc import parallel
    import numba
    out = {"env": dict(os.environ), "dlopen": sys.getdlopenflags(),
           "numba_layer": numba.config.THREADING_LAYER,
           "numba_pool_started": bool(getattr(parallel, "_is_initialized", False))}
    with open("/proc/self/maps") as f:
        maps = f.read()
    out["gomp"] = sorted({ln.split()[-1] for ln in maps.splitlines() if "libgomp" in ln})
    root = os.path.dirname(os.path.dirname(np.__file__))
    for path in glob.glob(os.path.join(root, "numpy.libs", "*openblas*")):
        lib = ctypes.CDLL(path)
        for name in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads"):
            if hasattr(lib, name):
                out["openblas_threads"] = getattr(lib, name)()
        if hasattr(lib, "openblas_thread_timeout"):
            out["openblas_timeout"] = lib.openblas_thread_timeout()
    try:  # glibc: is a 64 MiB allocation still its own mapping (mmap threshold not raised)?
        libc = ctypes.CDLL("libc.so.6")
        class Info(ctypes.Structure):
            _fields_ = [(n, ctypes.c_size_t) for n in
                        "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks "
                        "fordblks keepcost".split()]
        libc.mallinfo2.restype = Info
        before = libc.mallinfo2().hblks
        block = np.ones(16 << 20, np.float32)
        out["big_block_mapped"] = libc.mallinfo2().hblks == before + 1
        del block
    except (OSError, AttributeError):
        pass
    return out
"""

USE_TAPE = """
import numpy as np
import tape, tape.nn as nn
model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Flatten(), nn.Linear(784, 10))
opt = tape.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
x = tape.tensor(np.random.default_rng(0).standard_normal((64, 1, 28, 28)).astype(np.float32))
y = tape.tensor(np.arange(64) % 10)
for _ in range(3):
    with tape.Tape() as t:
        loss = nn.CrossEntropyLoss()(model(x), y)
    opt.step(t.gradient(loss, list(model.parameters())))
"""


def _run(code, env=None, timeout=300):
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, cwd=ROOT, env=dict(os.environ, **(env or {})),
                         timeout=timeout)
    assert res.returncode == 0, res.stderr
    return res


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_importing_and_using_tape_changes_nothing_else_in_the_process():
    code = (SNAPSHOT + "\nimport json\nbefore = snapshot()\n" + USE_TAPE
            + "\nafter = snapshot()\nprint(json.dumps([before, after]))\n")
    before, after = json.loads(_run(code).stdout.strip().splitlines()[-1])
    assert after["env"] == before["env"]
    assert after["dlopen"] == before["dlopen"]
    assert after["numba_layer"] == before["numba_layer"]
    assert not after["numba_pool_started"]  # no numba thread pool, so no OpenMP runtime
    assert after["gomp"] == before["gomp"]
    assert after.get("openblas_threads") == before.get("openblas_threads")
    assert after.get("openblas_timeout") == before.get("openblas_timeout")
    if "big_block_mapped" in before:
        assert after["big_block_mapped"] and before["big_block_mapped"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_torch_imported_first_is_left_alone_too():
    pytest.importorskip("torch")
    code = ("import torch\n" + SNAPSHOT + "\nimport json\nbefore = snapshot()\n"
            "threads = torch.get_num_threads()\n" + USE_TAPE
            + "\nassert torch.get_num_threads() == threads\n"
            "after = snapshot()\nprint(json.dumps([before, after]))\n")
    before, after = json.loads(_run(code).stdout.strip().splitlines()[-1])
    assert after["gomp"] == before["gomp"] and after["env"] == before["env"]


COMPILE_TWO = """
import numpy as np
import kernels
from kernels.cpu import jit
jit.NOTICE_AFTER = 0.05  # say so after 50 ms rather than a second: the test is quick
x = np.ones((2, 3, 6, 6), np.float32)
kernels.col2im(kernels.im2col(x, 3, 3, 1, 1, 1), x.shape, 3, 3, 1, 1, 1)
kernels.max_pool2d_forward(x, 2, 2, 0)
"""


def test_compiling_kernels_is_said_once_and_only_when_it_happens(tmp_path):
    env = {"NUMBA_CACHE_DIR": str(tmp_path), "TAPE_PRECOMPILE": "0"}
    first = _run(COMPILE_TWO, env)
    said = [ln for ln in first.stderr.splitlines() if ln.startswith("tape: compiling")]
    assert len(said) == 1 and "once" in said[0]
    again = _run(COMPILE_TWO, env)  # now from numba's cache: nothing to say
    assert "tape: compiling" not in again.stderr


def test_the_background_precompiler_is_started_only_when_needed(monkeypatch):
    import kernels
    from kernels.cpu import jit, precompile

    started = []
    monkeypatch.setattr(jit.subprocess, "Popen", lambda *a, **k: started.append(a) or None)
    monkeypatch.setattr(precompile, "done", lambda: True)
    with kernels.configure(num_threads=2, precompile=True):
        jit.start_precompiling()
        assert not started  # the cache has the kernels
        monkeypatch.setattr(precompile, "done", lambda: False)
        with kernels.configure(precompile=False):
            jit.start_precompiling()
        assert not started  # turned off
        with kernels.configure(num_threads=1):
            jit.start_precompiling()
        assert not started  # one thread: no second core to compile on
        jit.start_precompiling()
    assert len(started) == 1 and started[0][0][-1] == "kernels.cpu.precompile"


def test_the_precompiler_compiles_every_kernel():
    """Each numba kernel of kernels/cpu has an item in the precompiler's list, or is
    compiled into one that has (inlined helpers, DEPENDS): a kernel left off compiles
    in the training process on a fresh install."""
    import importlib
    import pkgutil

    import kernels.cpu
    from kernels.cpu import precompile
    from numba.core.registry import CPUDispatcher

    listed = {name for name, _ in precompile._items()}
    listed |= {d for deps in precompile.DEPENDS.values() for d in deps} | set(precompile.DEPENDS)
    missing = []
    for info in pkgutil.iter_modules(kernels.cpu.__path__):
        module = importlib.import_module(f"kernels.cpu.{info.name}")
        for name, value in vars(module).items():
            if (isinstance(value, CPUDispatcher) and value.py_func.__module__ == module.__name__
                    and value.targetoptions.get("inline") != "always" and name not in listed):
                missing.append(f"{info.name}.{name}")
    assert not missing


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file locks")
def test_a_first_call_waits_while_the_precompiler_compiles_that_kernel():
    """Another process holding the run's lock and a kernel's lock (as the precompiler does
    while compiling it): wait_for returns only once that kernel's lock is released."""
    holder = textwrap.dedent("""
        import sys, time
        from kernels.cpu import precompile as p
        import fcntl
        with p._held("run", fcntl.LOCK_EX), p._held("_relu", fcntl.LOCK_EX):
            print("held", flush=True)
            time.sleep(1.0)
    """)
    proc = subprocess.Popen([sys.executable, "-c", holder], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        from kernels.cpu import precompile

        import time

        assert precompile.running()
        start = time.monotonic()
        precompile.wait_for("_im2col")  # not being compiled: no wait
        assert time.monotonic() - start < 0.5
        precompile.wait_for("_relu")
        assert time.monotonic() - start > 0.5  # waited for the other process
    finally:
        proc.wait(30)
    assert not precompile.running()
