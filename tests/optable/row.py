"""A row of the op table, the generators of its inputs, and the checks it may be spared.

A ``Row`` holds a function ``fn(m, *xs)`` written once against a namespace ``m``
(``space.TAPE`` or ``space.TORCH``); where the spellings cannot be shared it gives a
separate ``torch_fn``. Inputs are float64 arrays made by a generator (domains matter:
log wants positive numbers, max wants no ties, abs and relu want no kinks), the same
on every run; the tests cast them to each dtype. Every row takes every check of
``CHECKS`` (tests/test_ops.py), and what it is spared it says, with the reason: a row
without derivatives (comparisons, argmax) in ``values_only``, a check that cannot apply
(no torch twin for second order) in ``skip``, a library bug as an ``xfail`` (strict).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from optable.space import TAPE, TORCH, TapeNS

# the checks of tests/test_ops.py; the last three are the higher-order ones
CHECKS = ("forward", "gradient", "jacobian", "second_order", "jacobian_of_gradient",
          "gradient_of_jacobian")
HIGHER = CHECKS[3:]


# ----- input generators: (rng, shape) -> float64 array -----
def normal(rng, shape):
    return rng.standard_normal(shape)


def positive(rng, shape):
    return rng.uniform(0.5, 2.0, shape)


def away(*points, eps=0.1, scale=1.0, base=None):
    """Samples (normal, or from ``base``) kept at least ``eps`` from each kink in ``points``."""

    def gen(rng, shape):
        x = base(rng, shape) if base else rng.standard_normal(shape) * scale
        for p in points:
            d = x - p
            x = np.where(np.abs(d) < eps, p + np.where(d < 0, -eps, eps) + d, x)
        return x

    return gen


def distinct(rng, shape):
    """Well separated values in random order: no ties for max/min/argmax, even in float32."""
    n = int(np.prod(shape, dtype=np.int64))
    return (rng.permutation(n) * 0.37 - n * 0.15 + rng.uniform(-0.05, 0.05, n)).reshape(shape)


def rounded(rng, shape):
    """Values on a coarse grid, so that comparisons meet ties."""
    return np.round(rng.standard_normal(shape) * 2) / 2


def with_zeros(*flat_positions):
    """Values of magnitude 0.5..1.5 with zeros at the given flat positions (for prod)."""

    def gen(rng, shape):
        x = rng.uniform(0.5, 1.5, shape) * rng.choice([-1, 1], shape)
        x.reshape(-1)[list(flat_positions)] = 0.0
        return x

    return gen


def fixed(values):
    def gen(rng, shape):
        return np.asarray(values, dtype=np.float64).reshape(shape)

    return gen


def shifted(offset, scale=1.0):
    def gen(rng, shape):
        return offset + scale * rng.standard_normal(shape)

    return gen



# ----- the rows -----
TOL64 = (1e-8, 1e-10)  # (rtol, atol)
TOL32 = (1e-4, 1e-5)


@dataclass(frozen=True)
class Row:
    name: str
    fn: Callable
    shapes: tuple
    gen: tuple = ()  # one generator per input (default: normal)
    torch_fn: Callable | None = None
    values_only: str = ""  # why only the values are compared (no derivative to take)
    tol32: tuple = TOL32
    tol64: tuple = TOL64
    nograd: tuple = ()  # inputs passed as tensors but not differentiated (as in torch):
    #                     class weights, running statistics (compared after the call)
    gpu: bool = False  # every check on the GPU too (else its forward and float32 gradient)
    skip: dict = field(default_factory=dict, compare=False)  # check -> why it cannot apply
    xfail: dict = field(default_factory=dict, compare=False)  # check -> the library bug
    note: str = ""  # what a row's checks mean where that is not plain (a random op's twin)

    def inputs(self, dtype, salt=0):
        """The float64 inputs, cast to ``dtype``; the same for a row on every run."""
        rng = np.random.default_rng(zlib.crc32(self.name.encode()) + salt)
        gens = self.gen or (normal,) * len(self.shapes)
        return [np.asarray(g(rng, s), dtype=np.float64).astype(dtype)
                for g, s in zip(gens, self.shapes)]

    @property
    def grad(self):
        """Whether the row takes the derivative checks."""
        return not self.values_only

    @property
    def sources(self):
        """The indices of the inputs differentiated."""
        return [i for i in range(len(self.shapes)) if i not in self.nograd]

    def torch(self, *xs):
        return (self.torch_fn or self.fn)(TORCH, *xs)

    def tape(self, *xs, device="cpu"):
        """The row on tape tensors ``xs`` that live on ``device``."""
        return self.fn(TAPE if device == "cpu" else TapeNS(device), *xs)


class Table(list):
    """A family's rows; ``table.row(...)`` adds one, with the family's defaults."""

    def __init__(self, **defaults):
        super().__init__()
        self.defaults = defaults

    def row(self, name, fn, *shapes, gen=None, skip_second="", skip=None, **kw):
        """Add a row. ``gen``: one generator for every input or a tuple of them;
        ``skip_second``: why torch cannot be the oracle of the higher-order checks."""
        if gen is not None and not isinstance(gen, tuple):
            gen = (gen,) * len(shapes)
        skip = dict(skip or {})
        if skip_second:
            skip.update(dict.fromkeys(HIGHER, skip_second))
        xfail = kw.get("xfail", {})
        assert set(skip) | set(xfail) <= set(CHECKS), f"{name}: unknown checks"
        assert all(skip.values()) and all(xfail.values()), f"{name}: a check spared says why"
        self.append(Row(name, fn, tuple(shapes), gen or (), skip=skip,
                        **{**self.defaults, **kw}))
