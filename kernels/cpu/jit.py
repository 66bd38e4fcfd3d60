"""How the CPU kernels are compiled: ``@kernel`` is numba's ``njit`` for tape's kernels.

* ``nogil=True``: the kernels run on tape's threads (``threads.parallel_for``) in parallel.
* ``cache=True``: compiled once per install, then loaded from numba's cache in ~ms.
* No aliasing: a kernel promises LLVM that the arrays it is given never overlap (tape's
  wrappers always allocate the outputs), so loops over short rows are vectorised without
  run-time overlap checks. Measured: max pooling 2x2 4.3x faster, the Winograd transforms
  1.5-5x. It only holds for arrays passed as arguments: views made inside a kernel
  (``reshape``) lose it, so wrappers pass flat or reshaped arrays in.

The first call of each kernel on a fresh install compiles it (a second or so each). When
``import kernels`` finds numba's cache without them, it starts ``python -m
kernels.cpu.precompile`` in the background (:func:`start_precompiling`), which compiles
them into the cache backward-first while a first training step compiles its forward
ones; and when compiling takes longer than a second, tape says so once on stderr
(:class:`_CompileNotice`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

from numba import njit
from numba.core import event
from numba.core.compiler import CompilerBase, DefaultPassBuilder


class _NoAliasCompiler(CompilerBase):
    """numba's usual nopython pipeline with its ``noalias`` flag on (as numba sets it for
    the loop bodies of ``parallel=True`` functions, which is why those vectorised better)."""

    def define_pipelines(self):
        self.state.flags.noalias = True
        return [DefaultPassBuilder.define_nopython_pipeline(self.state)]


def kernel(fn=None, **options):
    """``@kernel``: compile a CPU kernel (nogil, cached, arrays never overlapping)."""
    options = {"nogil": True, "cache": True, "pipeline_class": _NoAliasCompiler, **options}
    return njit(**options) if fn is None else njit(**options)(fn)


def inline(fn):
    """A helper inlined into the kernels that call it (numba IR level)."""
    return njit(cache=True, inline="always")(fn)


NOTICE_AFTER = 1.0  # seconds of compiling before tape says so


def start_precompiling():
    """Compile the kernels in a background process (on a second core) when numba's cache
    lacks them; not with the setting ``precompile`` off (``TAPE_PRECOMPILE=0``) or when
    tape runs on one thread."""
    from .. import config
    from . import precompile

    settings = config.current()
    if not settings.precompile or settings.num_threads < 2 or precompile.done():
        return None
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.environ.get("PYTHONPATH")  # the child imports these kernels, wherever they are;
    env = dict(os.environ, TAPE_PRECOMPILE="0",  # and starts no precompiler of its own
               PYTHONPATH=root + (os.pathsep + path if path else ""))
    try:
        return subprocess.Popen([sys.executable, "-m", "kernels.cpu.precompile"], env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError:  # no subprocesses here: the kernels compile on first use as usual
        return None


class _CompileNotice(event.Listener):
    """Says once per process, on stderr, that tape's kernels are being compiled, when a
    compilation of them has taken more than NOTICE_AFTER seconds."""

    def __init__(self):
        self.depth = 0
        self.timer = None
        self.said = False
        self.lock = threading.Lock()

    @staticmethod
    def _ours(ev):
        dispatcher = ev.data.get("dispatcher") if isinstance(ev.data, dict) else None
        module = getattr(getattr(dispatcher, "py_func", None), "__module__", "") or ""
        return module.startswith("kernels.")

    def on_start(self, ev):
        if self.said or not self._ours(ev):
            return
        with self.lock:
            self.depth += 1
            if self.depth == 1:
                self.timer = threading.Timer(NOTICE_AFTER, self._say)
                self.timer.daemon = True
                self.timer.start()

    def on_end(self, ev):
        if not self._ours(ev):
            return
        with self.lock:
            self.depth = max(0, self.depth - 1)
            if self.depth == 0 and self.timer is not None:
                self.timer.cancel()
                self.timer = None

    def _say(self):
        with self.lock:
            if self.said or self.depth == 0:
                return
            self.said = True
        print("tape: compiling its CPU kernels with numba for their first use on this machine "
              "(a few seconds); they are cached, so this happens once.", file=sys.stderr,
              flush=True)


event.register("numba:compile", _CompileNotice())
