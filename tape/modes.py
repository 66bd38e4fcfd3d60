"""Modes that change what is recorded: ``no_grad`` (nothing, on any tape) and
``detect_anomaly`` (NaN/inf checks, with the user's source line in the error)."""

from __future__ import annotations

import functools

from .tape import _local


class _Mode:
    """A context manager that also decorates: each call of the function gets a fresh one."""

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with type(self)():
                return fn(*args, **kwargs)

        return wrapper


class no_grad(_Mode):
    """Records nothing on any tape inside it. A context manager and a decorator."""

    def __enter__(self):
        self._saved = _local.stack
        for tape in self._saved:
            tape._pauses += 1
        _local.stack = []

    def __exit__(self, *exc):
        _local.stack = self._saved
        return False


class detect_anomaly(_Mode):
    """The first op whose forward or gradient produces NaN or inf raises
    ``FloatingPointError``, naming the op and the source line that created it."""

    def __enter__(self):
        from .ops import core

        _local.anomaly += 1
        core.debug_mode(True)

    def __exit__(self, *exc):
        from .ops import core

        _local.anomaly -= 1
        core.debug_mode(False)
        return False
