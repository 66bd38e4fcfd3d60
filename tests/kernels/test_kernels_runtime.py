"""kernels.runtime: the thread-pool and page-fault fixes of PERFORMANCE.md take effect,
whatever was imported first, and configure() is idempotent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import kernels
from kernels import runtime

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _is_glibc():
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError, AttributeError):
        return False


GLIBC = _is_glibc()


def _fresh(code, env=None):
    """Run ``code`` in a fresh interpreter; it prints one JSON line."""
    e = {k: v for k, v in os.environ.items()
         if k not in ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT", "NUMBA_THREADING_LAYER",
                      "TAPE_KERNELS_NO_RUNTIME_FIX")}
    e.update(env or {})
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, cwd=ROOT, env=e, timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


PROBE = """
    import json, os, numpy as np, numba, kernels
    from kernels import runtime
    kernels.im2col(np.ones((64, 8, 16, 16), np.float32), 3, 3, 1, 1, 1)  # launch the pool
    a = np.ones((256, 256), np.float32)
    assert (a @ a == 256).all()  # OpenBLAS restarted its pool after the shutdown
    gomps = sorted({ln.split()[-1] for ln in open("/proc/self/maps") if "libgomp" in ln})
    print(json.dumps(dict(runtime.report(), layer=numba.threading_layer(), gomps=gomps,
                          env={k: os.environ.get(k) for k in
                               ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT")})))
"""


def test_configure_is_idempotent(monkeypatch):
    first = runtime.configure()
    calls = []
    monkeypatch.setattr(runtime, "fix_openblas", lambda *a: calls.append(1))
    assert runtime.configure() == first and calls == []


@pytest.mark.skipif(not GLIBC, reason="mallopt tuning is glibc-only")
def test_malloc_thresholds_raised():
    assert runtime.report()["malloc"]["M_MMAP_THRESHOLD"] == 1
    assert runtime.report()["malloc"]["M_TRIM_THRESHOLD"] == 1
    assert runtime.fix_malloc()["M_MMAP_THRESHOLD"] == 1  # and again: idempotent


def test_fix_in_a_fresh_process_with_numpy_imported_first():
    r = _fresh("import numpy\n" + textwrap.dedent(PROBE))
    assert r["layer"] == "omp" == r["numba_layer"]  # passive libgomp, loaded by us
    if r["openblas"]:
        assert r["openblas_thread_timeout"] == 14  # re-read after numpy had started OpenBLAS
    assert r["env"] == {"OMP_WAIT_POLICY": None, "OPENBLAS_THREAD_TIMEOUT": None}  # no leak
    if GLIBC:
        assert r["malloc"]["M_MMAP_THRESHOLD"] == 1


def test_fix_with_torch_imported_first():
    """torch's libgomp (global scope, spinning) is loaded first: numba's pool must still get
    its own passive libgomp (RTLD_DEEPBIND), or fall back to the workqueue layer."""
    pytest.importorskip("torch")
    r = _fresh("import torch\n" + textwrap.dedent(PROBE))
    if hasattr(os, "RTLD_DEEPBIND"):
        assert r["layer"] == "omp"
        assert len(r["gomps"]) == 2, r["gomps"]  # torch's and numba's own
    else:
        assert r["layer"] == "workqueue"


def test_workqueue_when_deepbind_is_unsafe():
    pytest.importorskip("torch")
    code = ("import os, torch\nos.environ['LD_PRELOAD'] = 'libc.so.6'\n"
            + textwrap.dedent(PROBE))
    r = _fresh(code)
    assert r["layer"] == "workqueue"


def test_user_settings_are_respected():
    r = _fresh(PROBE, env={"NUMBA_THREADING_LAYER": "workqueue", "OPENBLAS_THREAD_TIMEOUT": "6"})
    assert r["layer"] == "workqueue"
    if r["openblas"]:
        assert r["openblas_thread_timeout"] == 6


def test_opt_out():
    r = _fresh(PROBE, env={"TAPE_KERNELS_NO_RUNTIME_FIX": "1"})
    assert r["skipped"] is True and "malloc" not in r


def test_numba_layer_in_this_process_is_the_configured_one():
    kernels.im2col(np.ones((64, 8, 16, 16), np.float32), 3, 3, 1, 1, 1)
    import numba

    assert numba.threading_layer() == runtime.report()["numba_layer"]
