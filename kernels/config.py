"""The process-wide settings of tape's kernels, in one place.

Each field of :class:`Config` is read once, at import, from the environment variable
``TAPE_<FIELD>`` (``TAPE_NUM_THREADS=2``, ``TAPE_BUFFERS=0``), and changed at run time,
under a lock, with :class:`configure`::

    kernels.configure(num_threads=2)                    # from now on
    with kernels.configure(winograd_min_channels=10**9):   # in the block: the fields it
        ...                                             # set are put back after it

A setting holds for every thread (selecting implementations with ``kernels.use`` is per
thread). The code that uses a setting reads :func:`current` when it runs, so a change
takes effect at the next kernel call; a setting is an immutable snapshot, replaced whole.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import threading


def _cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclasses.dataclass(frozen=True)
class Config:
    """Attributes:

    num_threads: threads of tape's CPU kernels and GEMMs, the calling thread included
        (default: the CPUs this process may run on; 1 runs everything in the caller).
    tune_threads: measure, for each kind of kernel call, whether splitting it among
        tape's threads is faster on this machine than running it alone, and keep the
        faster; GEMMs stay on OpenBLAS's threads unless other processes keep a core busy
        (then on tape's threads; with about one CPU left to tape, everything runs in the
        caller: kernels/cpu/threads.py). Off: every kernel call and GEMM that can be
        split is.
    buffers: reuse large temporaries instead of allocating them each step
        (kernels/cpu/buffers.py); off: plain ``np.empty``.
    precompile: on a fresh install, ``import kernels`` compiles the numba kernels in a
        background process (kernels/cpu/jit.py); read at import, so only
        ``TAPE_PRECOMPILE=0`` keeps that one from starting.
    winograd_min_channels: conv2d's automatic route takes Winograd F(2x2, 3x3) for 3x3
        stride-1 convolutions with at least this many input channels (per group); fewer:
        im2col and one GEMM are faster. Above any channel count: Winograd off.
    winograd_fused_max_channels: Winograd convolutions whose harmonic mean of Cin and
        Cout is at most this run the fused kernels, a chunk of images at a time; larger
        ones too where a chunk gives each GEMM enough rows, else the batched GEMMs
        (kernels/cpu/conv2d.py, ``winograd_fused``). 0: the fused kernels off.
    """

    num_threads: int = dataclasses.field(default_factory=_cpus)
    tune_threads: bool = True
    buffers: bool = True
    precompile: bool = True
    winograd_min_channels: int = 8
    winograd_fused_max_channels: int = 48


_FIELDS = {f.name: f for f in dataclasses.fields(Config)}
_MINIMUM = {"num_threads": 1}  # the other ints may be 0


def _checked(name, value, source):
    """``value`` for field ``name`` if it is valid, else a ValueError naming ``source``."""
    if name not in _FIELDS:
        raise TypeError(f"{source}: no setting {name!r}; the settings are {sorted(_FIELDS)}")
    if _FIELDS[name].type == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{source}: {name} must be True or False, got {value!r}")
        return value
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise ValueError(f"{source}: {name} must be a whole number, got {value!r}")
    if value < _MINIMUM.get(name, 0):
        least = "one thread" if name == "num_threads" else _MINIMUM.get(name, 0)
        raise ValueError(f"{source}: {name} must be at least {least}, got {value!r}")
    return int(value)


def _from_environment(environ=os.environ) -> Config:
    """The settings the environment gives; read once, at import (later, configure)."""
    values = {}
    for name, f in _FIELDS.items():
        var = f"TAPE_{name.upper()}"
        raw = environ.get(var, "").strip()
        if not raw:
            continue
        if f.type == "bool":
            values[name] = raw != "0"
            continue
        try:
            values[name] = _checked(name, int(raw), var)
        except ValueError:
            raise ValueError(f"{var} must be a whole number (at least "
                             f"{_MINIMUM.get(name, 0)}), got {raw!r}") from None
    return Config(**values)


_current = _from_environment()
_lock = threading.Lock()


def current() -> Config:
    """The settings now."""
    return _current


class configure:
    """Change settings for the whole process: ``kernels.configure(buffers=False)``; as
    ``with kernels.configure(...) as config:``, the fields it set get back, after the
    block, the values they had before it. Returns (and the ``with`` gives) the new
    :class:`Config`."""

    def __init__(self, **changes):
        global _current
        checked = {k: _checked(k, v, "kernels.configure") for k, v in changes.items()}
        with _lock:
            self.before = {k: getattr(_current, k) for k in checked}
            _current = dataclasses.replace(_current, **checked)
            self.config = _current

    def __enter__(self) -> Config:
        return self.config

    def __exit__(self, *exc) -> None:
        configure(**self.before)


def num_threads() -> int:
    """How many threads tape's CPU kernels and GEMMs use (the calling thread included)."""
    return _current.num_threads


def set_num_threads(n: int) -> None:
    """Use ``n`` threads (the caller included) from now on; 1 runs everything in the
    caller. The same as ``kernels.configure(num_threads=n)``."""
    configure(num_threads=int(n))
