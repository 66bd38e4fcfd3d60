"""The registry: which implementations each kernel has on each device, and which one runs.

A module of its own, importing nothing else of ``kernels``, so that every implementation
can register itself where it is defined (``@register(...)``) without an import cycle;
``kernels`` re-exports it all. Each registration says which calls it takes: the dtypes
of its first array (float32 and float64 unless told otherwise) and, optionally, a
predicate ``applies(*args)`` (conv2d's Winograd route: 3x3, stride 1). :func:`call` sends
the other calls to the device's "reference" implementation, so that no implementation
needs a fallback of its own.
"""

from __future__ import annotations

import contextlib
import importlib.util
import threading
from typing import Callable, NamedTuple

import numpy as np

CUPY_INSTALLED = importlib.util.find_spec("cupy") is not None  # "cuda" kernels registered
DEVICES = ("cpu", "cuda") if CUPY_INSTALLED else ("cpu",)  # where kernels are registered
FLOATS = ("float32", "float64")


class _Impl(NamedTuple):
    fn: Callable
    dtypes: frozenset | None  # the np.dtypes of its first array it takes; None: any
    applies: Callable | None  # applies(*args): whether it takes the call; None: always

    def takes(self, args) -> bool:
        return ((self.dtypes is None or args[0].dtype in self.dtypes)
                and (self.applies is None or bool(self.applies(*args))))


_impls: dict[str, dict[str, dict[str, _Impl]]] = {}  # name -> device -> impl -> entry
_defaults: dict[tuple[str, str], list[str]] = {}  # (name, device) -> defaults, newest last
_lock = threading.Lock()  # registrations; lookups read the dicts without it
_local = threading.local()  # .selected: {name: impl} set by use()


def device_of(x) -> str:
    """"cuda" for cupy arrays (detected without importing cupy), else "cpu"."""
    return "cuda" if type(x).__module__.startswith("cupy") else "cpu"


def register(name: str, device: str, fn: Callable | None = None, impl: str = "mine",
             default: bool = False, dtypes=FLOATS, applies: Callable | None = None):
    """Register ``fn`` as implementation ``impl`` of kernel ``name`` on ``device``.

    Usable as a decorator: ``@kernels.register("im2col", "cpu", impl="numba")``. A new
    implementation is only used inside ``kernels.use(name, impl)`` unless ``default=True``
    (or it is the first one registered for that device). ``dtypes``: those of its first
    array argument that it takes (``None``: any); ``applies``: called with ``fn``'s
    arguments, whether it takes the call. The calls it does not take go to the device's
    "reference" implementation. Returns ``fn``.
    """
    if fn is None:
        return lambda f: register(name, device, f, impl=impl, default=default, dtypes=dtypes,
                                  applies=applies)
    if not callable(fn):
        raise TypeError(f"kernels.register({name!r}, {device!r}): fn must be callable")
    entry = _Impl(fn, None if dtypes is None else frozenset(np.dtype(d) for d in dtypes),
                  applies)
    with _lock:
        _impls.setdefault(name, {}).setdefault(device, {})[impl] = entry
        defaults = _defaults.setdefault((name, device), [])
        if default or not defaults:
            if impl in defaults:
                defaults.remove(impl)
            defaults.append(impl)
    return fn


def unregister(name: str, device: str, impl: str) -> None:
    """Remove a registration; the default goes back to the one it replaced."""
    with _lock:
        impls = _impls[name][device]
        del impls[impl]
        defaults = [i for i in _defaults[(name, device)] if i != impl]
        if not defaults and impls:  # it was the only default: any that is left
            defaults = [next(iter(impls))]
        if impls:
            _defaults[(name, device)] = defaults
        else:
            del _defaults[(name, device)], _impls[name][device]


def available() -> dict[str, dict[str, list[str]]]:
    """``{name: {device: [impls]}}`` of everything registered, default first."""
    with _lock:  # a consistent view while another thread registers
        return {name: {device: sorted(impls, key=lambda i: (i != default_impl(name, device), i))
                       for device, impls in devices.items()}
                for name, devices in _impls.items()}


def default_impl(name: str, device: str = "cpu") -> str:
    """The implementation used for ``name`` on ``device`` outside any ``use`` block."""
    return _defaults[(name, device)][-1]


def get(name: str, device: str = "cpu", impl: str | None = None) -> Callable:
    """The function that a call of kernel ``name`` on ``device`` would run now, where it
    takes the call (:func:`resolve` says which one does)."""
    return _entry(name, device, impl).fn


def _entry(name, device, impl=None) -> _Impl:
    if name not in _impls:
        raise LookupError(f"unknown kernel {name!r}; known kernels: {sorted(_impls)}")
    impls = _impls[name].get(device)
    if not impls:
        hint = ("install cupy (the cuda12x extra) for the GPU kernels" if device == "cuda"
                else "register one with kernels.register")
        raise LookupError(f"kernel {name!r} has no implementation for device {device!r} "
                          f"(it has some for {sorted(_impls[name])}); {hint}")
    if impl is None:
        impl = selected_impl(name, device)
    try:
        return impls[impl]
    except KeyError:
        raise LookupError(
            f"kernel {name!r} has no {impl!r} implementation for device {device!r} "
            f"(available there: {sorted(impls)}); register one with kernels.register"
        ) from None


@contextlib.contextmanager
def use(name, impl: str):
    """Select implementation ``impl`` of kernel ``name`` for the calls this thread makes in
    the block. ``name`` may be a list of kernel names, or "*" for every kernel that has
    an ``impl`` implementation.

    >>> import numpy as np, kernels
    >>> with kernels.use("*", "reference"):
    ...     out, arg = kernels.max_pool2d_forward(np.ones((1, 1, 2, 2)), 2, 2, 0)
    """
    def has(n):
        return any(impl in d for d in _impls.get(n, {}).values())

    if name == "*":
        names = [n for n in _impls if has(n)]
        if not names:
            raise LookupError(f"kernels.use: no kernel has an {impl!r} implementation")
    else:
        names = [name] if isinstance(name, str) else list(name)
    for n in names:
        if not has(n):
            have = sorted({i for d in _impls.get(n, {}).values() for i in d})
            raise LookupError(f"kernels.use: kernel {n!r} has no {impl!r} implementation "
                              f"(available: {have})")
    prev = getattr(_local, "selected", {})
    _local.selected = {**prev, **{n: impl for n in names}}
    try:
        yield
    finally:
        _local.selected = prev


def selected_impl(name: str, device: str = "cpu") -> str:
    """The implementation in effect for ``name`` on ``device`` in this thread: the one
    ``use`` selected, else the default (before any fallback)."""
    return getattr(_local, "selected", {}).get(name) or default_impl(name, device)


def takes(name: str, device: str, impl: str, *args) -> bool:
    """Whether implementation ``impl`` is registered there and takes these arguments."""
    entry = _impls.get(name, {}).get(device, {}).get(impl)
    return entry is not None and entry.takes(args)


def resolve(name: str, *args) -> str:
    """The implementation a call of kernel ``name`` with these arguments runs: the one in
    effect on their device, or the "reference" where that one does not take them."""
    device = device_of(args[0])
    impl = selected_impl(name, device)
    entry = _entry(name, device, impl)
    if entry.takes(args):
        return impl
    if "reference" not in _impls[name][device]:
        why = ("its applies() refuses them" if entry.dtypes is None or args[0].dtype
               in entry.dtypes else f"it takes {sorted(d.name for d in entry.dtypes)}, "
               f"not {args[0].dtype}")
        raise TypeError(f"kernel {name!r} on {device!r}: {impl!r} does not take these "
                        f"arguments ({why}), and there is no 'reference' implementation to "
                        f"fall back to")
    return "reference"


def call(name, *args):
    """Run kernel ``name`` with the implementation :func:`resolve` picks."""
    return _impls[name][device_of(args[0])][resolve(name, *args)].fn(*args)
