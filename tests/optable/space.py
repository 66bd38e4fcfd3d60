"""The op table: every differentiable op, run identically on tape tensors and torch tensors.

Each ``Row`` holds a function ``fn(m, *xs)`` written once against a namespace ``m``:
``TAPE`` maps names to ``tape`` (numpy spelling: ``axis=``, ``keepdims=``), ``TORCH``
maps the same names and arguments to PyTorch (tinygrad's ``helper_test_op`` style).
Where the spellings cannot be shared, a row gives a separate ``torch_fn``. Inputs are
float64 arrays made by a generator (domains matter: log wants positive numbers,
max wants no ties, abs and relu want no kinks); the tests cast them to each dtype.
Constants (index arrays, masks) live inside the lambdas; ``m.const`` / ``m.idx`` make
them a numpy array for tape and a torch tensor for torch.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as TF

import tape
from tape import backend


# ----- the two namespaces -----
class _TapeNS:
    """``m.<op>`` for tape: the public functions, plus constants as arrays (numpy, or
    cupy for the GPU rows) and ``m.tensor`` on the namespace's device."""

    name = "tape"

    def __init__(self, device="cpu"):
        self.device = device

    def __getattr__(self, name):
        return getattr(tape, name)

    def const(self, a, like=None):
        return backend.to_device(np.asarray(a, dtype=None if like is None else like.dtype),
                                 self.device)

    idx = const

    def tensor(self, data, **kw):
        return tape.tensor(data, device=self.device, **kw)


def _dims(axis):
    return tuple(axis) if isinstance(axis, (tuple, list)) else axis


def _alias(axis, keepdims, dim, keepdim):
    keep = keepdim if keepdim is not None else keepdims
    return _dims(dim if dim is not None else axis), bool(keep)


def _tensor_like(v, x):
    return v if isinstance(v, torch.Tensor) else torch.tensor(v, dtype=x.dtype)


class _TorchNS:
    """``m.<op>`` for torch, taking tape's (numpy) spelling of the arguments."""

    name = "torch"

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def const(a, like=None):
        return torch.as_tensor(np.array(a), dtype=None if like is None else like.dtype)

    idx = const

    # reductions: numpy's axis=/keepdims= (and torch's dim=/keepdim=) to torch
    @staticmethod
    def sum(x, axis=None, keepdims=False, *, dim=None, keepdim=None):
        axis, keepdims = _alias(axis, keepdims, dim, keepdim)
        return torch.sum(x, dim=axis, keepdim=keepdims)

    @staticmethod
    def mean(x, axis=None, keepdims=False, *, dim=None, keepdim=None):
        axis, keepdims = _alias(axis, keepdims, dim, keepdim)
        return torch.mean(x, dim=axis, keepdim=keepdims)

    @staticmethod
    def max(x, axis=None, keepdims=False, *, dim=None, keepdim=None):
        axis, keepdims = _alias(axis, keepdims, dim, keepdim)
        return torch.amax(x, dim=() if axis is None else axis, keepdim=keepdims)

    @staticmethod
    def min(x, axis=None, keepdims=False, *, dim=None, keepdim=None):
        axis, keepdims = _alias(axis, keepdims, dim, keepdim)
        return torch.amin(x, dim=() if axis is None else axis, keepdim=keepdims)

    @staticmethod
    def prod(x, axis=None, keepdims=False, *, dim=None, keepdim=None):
        axis, keepdims = _alias(axis, keepdims, dim, keepdim)
        if axis is None:
            out = torch.prod(x)
            return out.reshape((1,) * x.ndim) if keepdims else out
        axes = sorted({a % x.ndim for a in (axis if isinstance(axis, tuple) else (axis,))})
        for a in reversed(axes):  # torch.prod takes one dim at a time
            x = torch.prod(x, dim=a, keepdim=keepdims)
        return x

    @staticmethod
    def var(x, axis=None, ddof=0, keepdims=False, *, dim=None, keepdim=None):
        axis, keepdims = _alias(axis, keepdims, dim, keepdim)
        return torch.var(x, dim=axis, correction=ddof, keepdim=keepdims)

    @staticmethod
    def std(x, axis=None, ddof=0, keepdims=False, *, dim=None, keepdim=None):
        axis, keepdims = _alias(axis, keepdims, dim, keepdim)
        return torch.std(x, dim=axis, correction=ddof, keepdim=keepdims)

    @staticmethod
    def logsumexp(x, axis=None, keepdims=False, *, dim=None, keepdim=None):
        axis, keepdims = _alias(axis, keepdims, dim, keepdim)
        return torch.logsumexp(x, dim=tuple(range(x.ndim)) if axis is None else axis,
                               keepdim=keepdims)

    @staticmethod
    def argmax(x, axis=None, keepdims=False, *, dim=None, keepdim=None):
        axis, keepdims = _alias(axis, keepdims, dim, keepdim)
        return torch.argmax(x, dim=axis, keepdim=keepdims)

    @staticmethod
    def argmin(x, axis=None, keepdims=False, *, dim=None, keepdim=None):
        axis, keepdims = _alias(axis, keepdims, dim, keepdim)
        return torch.argmin(x, dim=axis, keepdim=keepdims)

    # shapes
    @staticmethod
    def transpose(x, *axes):
        axes = tuple(axes[0]) if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
        return x.permute(axes or tuple(reversed(range(x.ndim))))

    @staticmethod
    def squeeze(x, axis=None, *, dim=None):
        axis = _dims(dim if dim is not None else axis)
        return torch.squeeze(x) if axis is None else torch.squeeze(x, axis)

    @staticmethod
    def unsqueeze(x, axis=None, *, dim=None):
        return torch.unsqueeze(x, dim if dim is not None else axis)

    @staticmethod
    def expand(x, *sizes):
        return x.expand(*sizes)

    @staticmethod
    def concatenate(xs, axis=0, *, dim=None):
        return torch.cat(list(xs), dim=dim if dim is not None else axis)

    @staticmethod
    def stack(xs, axis=0, *, dim=None):
        return torch.stack(list(xs), dim=dim if dim is not None else axis)

    @staticmethod
    def split(x, indices_or_sections, axis=0):  # numpy.split's meaning
        return list(torch.tensor_split(x, indices_or_sections, dim=axis))

    @staticmethod
    def pad(x, pad, mode="constant", value=0.0):
        return TF.pad(x, pad, mode=mode, value=value)

    # elementwise and nn
    @staticmethod
    def clip(x, min=None, max=None):
        return torch.clamp(x, min, max)

    @staticmethod
    def maximum(a, b):
        return torch.maximum(_tensor_like(a, b), _tensor_like(b, a))

    @staticmethod
    def minimum(a, b):
        return torch.minimum(_tensor_like(a, b), _tensor_like(b, a))

    @staticmethod
    def gelu(x, approximate="none"):
        return TF.gelu(x, approximate=approximate)

    @staticmethod
    def leaky_relu(x, negative_slope=0.01):
        return TF.leaky_relu(x, negative_slope)

    @staticmethod
    def softplus(x, beta=1.0, threshold=20.0):
        return TF.softplus(x, beta, threshold)

    @staticmethod
    def softmax(x, axis=None, *, dim=None):
        return torch.softmax(x, dim=dim if dim is not None else (-1 if axis is None else axis))

    @staticmethod
    def log_softmax(x, axis=None, *, dim=None):
        return torch.log_softmax(x, dim=dim if dim is not None else (-1 if axis is None else axis))


TAPE = _TapeNS()
TORCH = _TorchNS()


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
    grad: bool = True  # differentiable (False: compare values only)
    tol32: tuple = TOL32
    tol64: tuple = TOL64
    skip_second: str = ""  # why torch cannot be the oracle of the second derivative

    def inputs(self, dtype, salt=0):
        """The float64 inputs, cast to ``dtype``; the same for a row on every run."""
        rng = np.random.default_rng(zlib.crc32(self.name.encode()) + salt)
        gens = self.gen or (normal,) * len(self.shapes)
        return [np.asarray(g(rng, s), dtype=np.float64).astype(dtype)
                for g, s in zip(gens, self.shapes)]

    def torch(self, *xs):
        return (self.torch_fn or self.fn)(TORCH, *xs)

    def tape(self, *xs, device="cpu"):
        """The row on tape tensors ``xs`` that live on ``device``."""
        return self.fn(TAPE if device == "cpu" else _TapeNS(device), *xs)


ROWS: list[Row] = []


def row(name, fn, *shapes, gen=None, **kw):
    """Add a row; ``gen`` is one generator for every input or a tuple of them."""
    if gen is not None and not isinstance(gen, tuple):
        gen = (gen,) * len(shapes)
    ROWS.append(Row(name, fn, tuple(shapes), gen or (), **kw))


BINARY_SHAPES = {  # broadcasting, 0-d and size-1 axes
    "same": ((3, 4), (3, 4)),
    "row": ((3, 4), (4,)),
    "col": ((2, 3, 1), (4,)),
    "outer": ((3, 1), (1, 4)),
    "scalar": ((), (2, 3)),
    "0d": ((), ()),
}

# ----- arithmetic -----
for tag, (sa, sb) in BINARY_SHAPES.items():
    row(f"add_{tag}", lambda m, a, b: a + b, sa, sb)
    row(f"sub_{tag}", lambda m, a, b: a - b, sa, sb)
    row(f"mul_{tag}", lambda m, a, b: a * b, sa, sb)
    row(f"div_{tag}", lambda m, a, b: a / b, sa, sb, gen=(normal, away(0, eps=0.5)))
    row(f"maximum_{tag}", lambda m, a, b: m.maximum(a, b), sa, sb)
    row(f"minimum_{tag}", lambda m, a, b: m.minimum(a, b), sa, sb)
    row(f"pow_{tag}", lambda m, a, b: a**b, sa, sb, gen=(positive, normal))
row("add_python_scalar", lambda m, a: 2.5 + a - 1.0, (3,))
row("mul_numpy_const", lambda m, a: a * m.const(np.array([1.0, -2.0, 0.5])), (2, 3))
row("rsub_rdiv", lambda m, a: 1.0 - 3.0 / a, (2, 3), gen=away(0, eps=0.5))
row("rsub_numpy_const", lambda m, a: m.const(np.array([1.0, 2.0, 3.0]), like=a) - a, (2, 3))
row("neg", lambda m, a: -a, (2, 3))
row("neg_0d", lambda m, a: -a, ())
row("pow_scalar_2", lambda m, a: a**2, (2, 3))
row("pow_scalar_3_negative_base", lambda m, a: a**3, (4,))
row("pow_scalar_frac", lambda m, a: a**2.5, (2, 3), gen=positive)
row("pow_scalar_neg", lambda m, a: a**-1.5, (2, 3), gen=positive)
row("pow_scalar_0", lambda m, a: a**0, (3,))
row("pow_zero_base", lambda m, a, b: a**b, (4,), (4,),
    gen=(fixed([0.0, 1.5, 0.0, 0.5]), lambda rng, s: rng.uniform(2.0, 3.0, s)),
    skip_second="d2(a**b)/da db = a**(b-1) (1 + b log a) -> 0 at a = 0 (b > 1): "
                "tape gives the limit 0, torch gives nan")
row("rpow", lambda m, a: 2.0**a, (2, 3))
row("rpow_0d", lambda m, a: 0.5**a, ())
row("maximum_tie", lambda m, a, b: m.maximum(a, b), (4,), (4,),
    gen=(fixed([1.0, 2.0, -1.0, 0.5]), fixed([1.0, 1.0, -1.0, 3.0])))
row("minimum_tie", lambda m, a, b: m.minimum(a, b), (4,), (4,),
    gen=(fixed([1.0, 2.0, -1.0, 0.5]), fixed([1.0, 1.0, -1.0, 3.0])))
row("maximum_python_scalar", lambda m, a: m.maximum(a, 0.25), (3, 4), gen=away(0.25))
row("minimum_python_scalar", lambda m, a: m.minimum(a, -0.25), (3, 4), gen=away(-0.25))

# ----- unary elementwise -----
UNARY = {
    "exp": (lambda m, a: m.exp(a), normal),
    "log": (lambda m, a: m.log(a), positive),
    "sqrt": (lambda m, a: m.sqrt(a), positive),
    "abs": (lambda m, a: m.abs(a), away(0)),
    "sin": (lambda m, a: m.sin(a), normal),
    "cos": (lambda m, a: m.cos(a), normal),
    "tanh": (lambda m, a: m.tanh(a), normal),
    "sigmoid": (lambda m, a: m.sigmoid(a), normal),
    "relu": (lambda m, a: m.relu(a), away(0)),
    "leaky_relu": (lambda m, a: m.leaky_relu(a), away(0)),
    "leaky_relu_slope": (lambda m, a: m.leaky_relu(a, negative_slope=0.2), away(0)),
    "gelu": (lambda m, a: m.gelu(a), normal),
    "gelu_tanh": (lambda m, a: m.gelu(a, approximate="tanh"), normal),
    "softplus": (lambda m, a: m.softplus(a), normal),
    "softplus_beta": (lambda m, a: m.softplus(a, beta=2.0, threshold=3.0), away(1.5, scale=3)),
    "clip": (lambda m, a: m.clip(a, -0.5, 0.5), away(-0.5, 0.5)),
    "clip_min": (lambda m, a: m.clip(a, min=-0.3), away(-0.3)),
    "clip_max": (lambda m, a: m.clip(a, max=0.3), away(0.3)),
}
for name, (fn, gen) in UNARY.items():
    row(name, fn, (3, 4), gen=gen)
    row(f"{name}_0d", fn, (), gen=gen)
KINKS = fixed([-1.0, -0.5, 0.0, 0.3, 0.5, 2.0])  # exactly on the kinks: torch's conventions
row("relu_at_kink", lambda m, a: m.relu(a), (6,), gen=KINKS)
row("abs_at_kink", lambda m, a: m.abs(a), (6,), gen=KINKS)
row("leaky_relu_at_kink", lambda m, a: m.leaky_relu(a, 0.1), (6,), gen=KINKS,
    torch_fn=lambda m, a: m.leaky_relu(a, negative_slope=0.1))
row("clip_at_bounds", lambda m, a: m.clip(a, -0.5, 0.5), (6,), gen=KINKS)
row("clip_min_at_bound", lambda m, a: m.clip(a, min=0.3), (6,), gen=KINKS)
row("softplus_large", lambda m, a: m.softplus(a), (5,), gen=shifted(0, 15))
row("sigmoid_large", lambda m, a: m.sigmoid(a), (6,), gen=fixed([-800, -30, -1, 1, 30, 800]))
row("abs_method", lambda m, a: a.abs() + abs(a), (4,), gen=away(0))
row("methods", lambda m, a: a.exp().sin() + a.cos().tanh() + a.sigmoid() * a.relu(), (2, 3),
    gen=away(0))
row("sqrt_log_methods", lambda m, a: a.sqrt().log() + a.clip(0.7, 1.5), (2, 3),
    gen=away(0.7, 1.5, eps=0.05, base=positive))
row("clamp_method", lambda m, a: a.clamp(min=-0.5, max=0.5), (5,), gen=away(-0.5, 0.5))
row("where", lambda m, a, b: m.where(a > 0, a, b), (3, 4), (3, 4))
row("where_broadcast", lambda m, a, b: m.where(a > 0, a * 2, b), (3, 1), (4,))
row("where_scalar", lambda m, a: m.where(a < 0, 0.0, a), (2, 3))
row("where_const_cond", lambda m, a, b: m.where(m.idx(np.array([True, False, True])), a, b),
    (2, 3), ())

# ----- comparisons: values only -----
for op_name, fn in {
    "lt": lambda m, a, b: a < b,
    "le": lambda m, a, b: a <= b,
    "gt": lambda m, a, b: a > b,
    "ge": lambda m, a, b: a >= b,
    "eq": lambda m, a, b: a == b,
    "ne": lambda m, a, b: a != b,
}.items():
    row(f"cmp_{op_name}", fn, (3, 4), (4,), gen=rounded, grad=False)
row("cmp_scalar", lambda m, a: (a >= 0.0) & (a < 1.0), (3, 4), gen=rounded, grad=False)
row("cmp_reflected", lambda m, a: (0.5 < a) | ~(a != 0.0), (3, 4), gen=rounded, grad=False)

# ----- reductions -----
AXES = {
    "all": {"axis": None},
    "all_keep": {"axis": None, "keepdims": True},
    "ax1": {"axis": 1},
    "neg": {"axis": -1},
    "tuple": {"axis": (0, 2)},
    "tuple_keep": {"axis": (0, -1), "keepdims": True},
    "keep": {"axis": 1, "keepdims": True},
    "dim_alias": {"dim": 1, "keepdim": True},
}
REDUCTIONS = {
    "sum": (lambda m, x, kw: m.sum(x, **kw), normal, TOL32),
    "mean": (lambda m, x, kw: m.mean(x, **kw), normal, TOL32),
    "max": (lambda m, x, kw: m.max(x, **kw), distinct, TOL32),
    "min": (lambda m, x, kw: m.min(x, **kw), distinct, TOL32),
    "prod": (lambda m, x, kw: m.prod(x, **kw), shifted(0, 1.2), (3e-4, 1e-5)),
    "var": (lambda m, x, kw: m.var(x, **kw), normal, (3e-4, 1e-5)),
    "var_ddof1": (lambda m, x, kw: m.var(x, ddof=1, **kw), normal, (3e-4, 1e-5)),
    "std": (lambda m, x, kw: m.std(x, **kw), normal, (3e-4, 1e-5)),
    "std_ddof1": (lambda m, x, kw: m.std(x, ddof=1, **kw), normal, (3e-4, 1e-5)),
    "logsumexp": (lambda m, x, kw: m.logsumexp(x, **kw), normal, TOL32),
}
for rname, (rfn, gen, tol) in REDUCTIONS.items():
    for tag, kw in AXES.items():
        row(f"{rname}_{tag}", lambda m, x, rfn=rfn, kw=kw: rfn(m, x, kw), (2, 3, 4), gen=gen,
            tol32=tol)
    row(f"{rname}_size1", lambda m, x, rfn=rfn: rfn(m, x, {"axis": (1, 2)}), (3, 1, 2), gen=gen,
        tol32=tol)
    if not rname.endswith("ddof1"):  # ddof=1 over one element is nan, in torch too
        row(f"{rname}_0d", lambda m, x, rfn=rfn: rfn(m, x, {}), (), gen=gen, tol32=tol)
row("sum_method", lambda m, x: x.sum(1) + x.mean(axis=-1, keepdims=False), (3, 4))
row("reduce_methods", lambda m, x: x.var(0) + x.std(0) + x.logsumexp(axis=0), (3, 4),
    torch_fn=lambda m, x: x.var(0, correction=0) + x.std(0, correction=0) + x.logsumexp(0),
    tol32=(3e-4, 1e-5))
row("max_tie", lambda m, x: m.max(x, axis=1), (2, 3), gen=fixed([[1, 3, 3], [2, 2, 2]]))
row("min_tie_all", lambda m, x: m.min(x), (2, 3), gen=fixed([[1, 3, 1], [2, 5, 4]]))
row("prod_one_zero", lambda m, x: m.prod(x, axis=1), (3, 4), gen=with_zeros(1, 4, 7))
row("prod_two_zeros", lambda m, x: m.prod(x, axis=1), (3, 4), gen=with_zeros(1, 2, 5))
row("prod_three_zeros", lambda m, x: m.prod(x, axis=-1), (2, 4), gen=with_zeros(0, 1, 3))
row("prod_zeros_all", lambda m, x: m.prod(x), (2, 3), gen=with_zeros(4))
row("logsumexp_neg_inf", lambda m, x: m.logsumexp(x, axis=-1), (2, 3),
    gen=fixed([[-np.inf, 1.0, 2.0], [0.5, -np.inf, -1.0]]))
row("std_constant_row", lambda m, x: m.std(x, axis=1), (2, 3),
    gen=fixed([[1.5, 1.5, 1.5], [1.0, 2.0, 4.0]]))
row("logsumexp_large", lambda m, x: m.logsumexp(x, axis=-1), (3, 4), gen=shifted(1000, 5))
row("var_large_offset", lambda m, x: m.var(x, axis=0), (5, 2), gen=shifted(100, 1),
    tol32=(2e-3, 1e-4))
for tag, kw in [("all", {}), ("ax1", {"axis": 1}), ("neg_keep", {"axis": -1, "keepdims": True}),
                ("dim_alias", {"dim": 0, "keepdim": True})]:
    row(f"argmax_{tag}", lambda m, x, kw=kw: m.argmax(x, **kw), (3, 4), gen=distinct, grad=False)
    row(f"argmin_{tag}", lambda m, x, kw=kw: m.argmin(x, **kw), (3, 4), gen=distinct, grad=False)
row("argmax_method", lambda m, x: x.argmax(), (5,), gen=distinct, grad=False)

# ----- shapes -----
row("reshape", lambda m, x: m.reshape(x, (4, 3)), (2, 6))
row("reshape_method_infer", lambda m, x: x.reshape(3, -1), (2, 3, 2))
row("reshape_method_tuple", lambda m, x: x.reshape((6,)) * 2, (3, 2))
row("reshape_0d", lambda m, x: x.reshape(1, 1), ())
row("transpose_reverse", lambda m, x: m.transpose(x), (2, 3, 4))
row("transpose_axes", lambda m, x: m.transpose(x, (1, 0, 2)), (2, 3, 4))
row("transpose_method", lambda m, x: x.transpose(2, 0, 1), (2, 3, 4),
    torch_fn=lambda m, x: x.permute(2, 0, 1))
row("T", lambda m, x: x.T, (3, 4))
row("mT", lambda m, x: x.mT, (2, 3, 4))
row("permute", lambda m, x: m.permute(x, (2, 0, 1)), (2, 3, 4))
row("permute_method", lambda m, x: x.permute(1, 2, 0), (2, 3, 4))
row("swapaxes", lambda m, x: m.swapaxes(x, 0, 2), (2, 3, 4))
row("swapaxes_method_neg", lambda m, x: x.swapaxes(-1, 0), (2, 3, 4))
row("squeeze_all", lambda m, x: m.squeeze(x), (3, 1, 4, 1))
row("squeeze_axis", lambda m, x: m.squeeze(x, 1), (3, 1, 4, 1))
row("squeeze_tuple", lambda m, x: m.squeeze(x, axis=(1, 3)), (3, 1, 4, 1))
row("squeeze_method_dim", lambda m, x: x.squeeze(dim=-1), (3, 1, 4, 1))
row("unsqueeze", lambda m, x: m.unsqueeze(x, 0), (3, 4))
row("unsqueeze_neg", lambda m, x: m.unsqueeze(x, -1), (3, 4))
row("unsqueeze_0d", lambda m, x: m.unsqueeze(x, 0), ())
row("unsqueeze_method_dim", lambda m, x: x.unsqueeze(dim=1), (3, 4))
row("expand", lambda m, x: m.expand(x, 2, 3, 4), (3, 1))
row("expand_method_keep", lambda m, x: x.expand(-1, 4), (3, 1))
row("expand_method_tuple", lambda m, x: x.expand((2, 3)), ())
row("broadcast_to", lambda m, x: m.broadcast_to(x, (2, 3, 4)), (3, 1))
row("broadcast_to_0d", lambda m, x: m.broadcast_to(x, (2, 2)), ())
row("broadcast_to_method", lambda m, x: x.broadcast_to((2, 4)), (4,),
    torch_fn=lambda m, x: x.broadcast_to((2, 4)))
row("flatten", lambda m, x: m.flatten(x), (2, 3, 4))
row("flatten_start", lambda m, x: m.flatten(x, 1), (2, 3, 4))
row("flatten_range", lambda m, x: m.flatten(x, 0, 1), (2, 3, 4))
row("flatten_method_0d", lambda m, x: x.flatten(), ())
row("concatenate", lambda m, a, b, c: m.concatenate([a, b * 2, c], axis=1), (2, 1), (2, 3), (2, 2))
row("concatenate_axis0", lambda m, a, b: m.concatenate([a, b]), (1, 3), (2, 3))
row("concatenate_neg_same", lambda m, a: m.concatenate([a, a.sin()], axis=-1), (2, 3))
row("concatenate_dim_alias", lambda m, a, b: m.concatenate([a, b], dim=0), (2,), (3,))
row("stack", lambda m, a, b: m.stack([a, b]), (2, 3), (2, 3))
row("stack_neg", lambda m, a, b: m.stack([a, b * 3, a], axis=-1), (2, 3), (2, 3))
row("stack_0d", lambda m, a, b: m.stack([a, b, a * b]), (), ())
row("stack_dim_alias", lambda m, a, b: m.stack([a, b], dim=1), (4,), (4,))
row("split_sections",
    lambda m, x: m.concatenate([p * (k + 1.0) for k, p in enumerate(m.split(x, 3, axis=1))],
                               axis=1), (2, 6))
row("split_indices",
    lambda m, x: m.concatenate([p * (k + 1.0) for k, p in enumerate(m.split(x, [1, 3]))]),
    (5, 2))
row("split_last",
    lambda m, x: m.split(x, 2, axis=-1)[1].exp(), (2, 3, 4))
row("pad_last", lambda m, x: m.pad(x, (1, 2)), (2, 3))
row("pad_two_axes", lambda m, x: m.pad(x, (1, 0, 2, 1)), (2, 3))
row("pad_value", lambda m, x: m.pad(x, (0, 1, 1, 0, 2, 2), value=1.5), (2, 3, 2))

# ----- indexing -----
MASK = np.array([[True, False, True, False, True], [False, False, True, True, False],
                 [True, True, False, False, False], [False, True, False, True, True]])
INDEXING = {
    "int": lambda m, x: x[1],
    "int_neg_pair": lambda m, x: x[-1, 2],
    "int_all_0d": lambda m, x: x[0, 1, 2],
    "slices": lambda m, x: x[1:3, 0:4],
    "slices_steps": lambda m, x: x[::2, 1::3, ::2],
    "slice_int": lambda m, x: x[1:, 2],
    "list": lambda m, x: x[[2, 0]],
    "array_neg_repeated": lambda m, x: x[m.idx(np.array([0, -1, 0, 2, 0]))],
    "array_2d": lambda m, x: x[m.idx(np.array([[0, 1], [3, 3]]))],
    "two_arrays": lambda m, x: x[m.idx(np.array([0, 2, 0])), m.idx(np.array([1, 1, -1]))],
    "two_arrays_broadcast": lambda m, x: x[m.idx(np.array([[0], [3]])), m.idx(np.array([1, 1, 4]))],
    "tensor_index": lambda m, x: x[m.tensor(np.array([1, 1, 3]))],
    "tensor_index_0d": lambda m, x: x[m.tensor(2), 1:],
    "mask_full": lambda m, x: x[m.idx(MASK)],
    "mask_rows": lambda m, x: x[m.idx(np.array([True, False, True, True]))],
    "mask_cols": lambda m, x: x[:, m.idx(MASK[0])],
    "mixed_slice_array": lambda m, x: x[:, [0, 2, 2], 1:],
    "mixed_array_slice": lambda m, x: x[[1, 0, 1], 1:3],
    "mixed_nonadjacent": lambda m, x: x[[0, 1, 3], :, [2, 0, 2]],
    "mixed_int_array": lambda m, x: x[2, [4, 0, 4]],
    "ellipsis_int": lambda m, x: x[..., 1],
    "ellipsis_middle": lambda m, x: x[0, ..., ::2],
    "ellipsis_array": lambda m, x: x[..., [2, 0, 2]],
    "none_front": lambda m, x: x[None, 1:, None],
    "ellipsis_none": lambda m, x: x[None, ..., None, 1],
    "none_array": lambda m, x: x[None, [0, 0, 3]],
    "self_mask": lambda m, x: x[x > 0],
    "bool_list": lambda m, x: x[[True, False, True, True]],
    "mask_slice": lambda m, x: x[m.idx(np.array([False, True, True, False])), 1:],
    "negative_bounds": lambda m, x: x[-3:-1, ::4],
    "ellipsis_only": lambda m, x: x[...],
}
for name, fn in INDEXING.items():
    row(f"index_{name}", fn, (4, 5, 3))
row("index_neg_step", lambda m, x: x[::-1, 3:0:-2], (4, 5),
    torch_fn=lambda m, x: x.flip(0)[:, [3, 1]])
row("index_0d_empty_tuple", lambda m, x: x[()] * x[None], ())
row("index_1d_scalar_0d", lambda m, x: x[2] * x[-1], (4,))
row("index_chain", lambda m, x: x[1:][:, [0, 0]][0], (3, 4))

# ----- matmul and einsum -----
MATMUL = {
    "vec_vec": ((3,), (3,)),
    "mat_mat": ((2, 3), (3, 4)),
    "vec_mat": ((3,), (3, 4)),
    "mat_vec": ((2, 3), (3,)),
    "batched": ((2, 3, 4), (2, 4, 5)),
    "broadcast": ((2, 1, 3, 4), (3, 4, 2)),
    "vec_batched": ((4,), (2, 4, 3)),
    "batched_vec": ((2, 3, 4), (4,)),
}
for name, (sa, sb) in MATMUL.items():
    row(f"matmul_{name}", lambda m, a, b: a @ b, sa, sb)
row("matmul_fn", lambda m, a, b: m.matmul(a, b), (3, 2), (2, 2))
row("matmul_method_same", lambda m, a: a.matmul(a.T), (3, 2))
EINSUM = {
    "matmul": ("ij,jk->ik", (2, 3), (3, 4)),
    "implicit": ("ij,jk", (2, 3), (3, 4)),
    "batched": ("bij,bjk->bik", (2, 3, 4), (2, 4, 2)),
    "trace": ("ii->", (3, 3)),
    "diagonal": ("ii->i", (3, 3)),
    "outer": ("i,j->ij", (3,), (4,)),
    "sum": ("ij->", (2, 3)),
    "transpose": ("ij->ji", (2, 3)),
    "ellipsis": ("...ij,...jk->...ik", (2, 2, 3), (3, 2)),
    "ellipsis_sum": ("...i->...", (2, 3, 4)),
    "three": ("ij,jk,kl->il", (2, 3), (3, 2), (2, 4)),
    "bilinear": ("bi,ij,bj->b", (2, 3), (3, 3), (2, 3)),
}
for name, (spec, *shapes) in EINSUM.items():
    row(f"einsum_{name}", lambda m, *xs, spec=spec: m.einsum(spec, *xs), *shapes)
row("einsum_hadamard_diag", lambda m, a, b: m.einsum("ii,ij->ij", a, b), (3, 3), (3, 2))
row("einsum_same_operand", lambda m, a: m.einsum("ij,ij->i", a, a), (2, 3))
row("einsum_list", lambda m, a, b: m.einsum("i,i", [a, b]), (3,), (3,),
    torch_fn=lambda m, a, b: m.einsum("i,i", a, b))

# ----- softmax family -----
SOFTMAX = {
    "default": ({}, (3, 4), normal),
    "axis0": ({"axis": 0}, (3, 4), normal),
    "dim_alias": ({"dim": 1}, (2, 3, 4), normal),
    "size1": ({"axis": 1}, (3, 1), normal),
    "large": ({"axis": -1}, (2, 4), shifted(1000)),
    "spread": ({"axis": -1}, (2, 3), fixed([[1000, 0, -1000], [1, 2, 3]])),
    "0d": ({}, (), normal),
}
for name, (kw, shape, gen) in SOFTMAX.items():
    row(f"softmax_{name}", lambda m, x, kw=kw: m.softmax(x, **kw), shape, gen=gen)
    row(f"log_softmax_{name}", lambda m, x, kw=kw: m.log_softmax(x, **kw), shape, gen=gen)
MASKED = fixed([[-np.inf, 0.5, 1.0], [2.0, -np.inf, -np.inf]])  # masked attention scores
row("softmax_masked", lambda m, x: m.softmax(x, axis=-1), (2, 3), gen=MASKED)
row("log_softmax_masked", lambda m, x: m.log_softmax(x, axis=-1), (2, 3), gen=MASKED)
row("softmax_method", lambda m, x: x.softmax(0) + x.log_softmax(-1), (3, 4))

# ----- compositions -----
row("mlp", lambda m, x, w1, b, w2: m.log_softmax(m.tanh(x @ w1 + b) @ w2, axis=-1),
    (4, 3), (3, 5), (5,), (5, 2))
row("normalize", lambda m, x: (x - m.mean(x, axis=-1, keepdims=True))
    / m.sqrt(m.var(x, axis=-1, keepdims=True) + 1e-5), (3, 4))

# ----- a leading batch axis, for batch_jacobian: (name, fn of the batched input, shape) -----
BATCH_ROWS = [
    Row("exp", lambda m, x: m.exp(x), ((3, 4),)),
    Row("softmax", lambda m, x: m.softmax(x, axis=-1), ((3, 5),)),
    Row("log_softmax_3d", lambda m, x: m.log_softmax(x, axis=1), ((2, 3, 4),)),
    Row("matmul_const", lambda m, x: x @ m.const(np.arange(8.0).reshape(4, 2) / 8, like=x),
        ((3, 4),)),
    Row("sum_keep", lambda m, x: m.sum(x * x, axis=1, keepdims=True), ((3, 4),)),
    Row("normalize", lambda m, x: (x - m.mean(x, axis=1, keepdims=True))
        / m.std(x, axis=1, keepdims=True), ((3, 4),)),
    Row("index", lambda m, x: x[:, [0, 2, 2]] * 2, ((3, 4),)),
    Row("outer", lambda m, x: m.einsum("bi,bj->bij", x, x.sin()), ((2, 3),)),
    Row("reduce_3d", lambda m, x: m.logsumexp(x, axis=(1, 2)), ((2, 3, 4),)),
]
