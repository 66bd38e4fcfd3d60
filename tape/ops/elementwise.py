"""Elementwise ops: each forward with its vector-Jacobian rules right below it.

Rules are ``(g, ans, *inputs, **params)`` and are written with ops, so they run on raw
arrays in a first-order replay and on Tensors (recorded) in a higher-order one.
Rules never undo broadcasting: the replay sums each gradient back to its input.
"""

from __future__ import annotations

import math

import numpy as np
from kernels.cpu import buffers
from kernels.cpu import elementwise as _cpu

from .. import backend
from ..tensor import Tensor
from .core import Op

# ----- arithmetic -----
# Operands with a Tensor among them are brought to one dtype first, by PyTorch's rule
# (core.promoted): a float32 tensor stays float32 beside numbers and integer tensors.
add = Op("add", np.add, lambda g, ans, a, b: g, lambda g, ans, a, b: g, promote="arithmetic")
sub = Op("sub", np.subtract, lambda g, ans, a, b: g, lambda g, ans, a, b: -g,
         promote="arithmetic")
mul = Op("mul", np.multiply, lambda g, ans, a, b: g * b, lambda g, ans, a, b: g * a,
         promote="arithmetic")
div = Op(
    "div",
    np.true_divide,
    lambda g, ans, a, b: g / b,
    lambda g, ans, a, b: -g * a / (b * b),
    promote="division",  # integers divide into float32
)


def _add_into_buffer(a, b):
    """``a + b`` for a large float array ``a`` (an activation) and a broadcast ``b`` (a
    bias), written into tape's reused buffers: no new allocation, no page faults."""
    if type(a) is np.ndarray and type(b) is np.ndarray and a.dtype == b.dtype:
        if (a.ndim >= 2 and b.shape == (1, a.shape[1]) + (1,) * (a.ndim - 2)
                and _cpu.applies(a)):  # a channel bias: one pass on tape's threads
            return _cpu.add_channel_bias(a, b)
        return np.add(a, b, out=buffers.empty(np.broadcast_shapes(a.shape, b.shape), a.dtype))
    return np.add(a, b)


# ``add`` for activations and biases (conv2d, linear): the same op, its output buffered
add_bias = Op("add_bias", _add_into_buffer, lambda g, ans, a, b: g, lambda g, ans, a, b: g)
neg = Op("neg", np.negative, lambda g, ans, x: -g)


def _pow_base(g, ans, a, b):
    if not isinstance(b, Tensor) and np.ndim(b) == 0:  # a constant exponent, the common case
        return g * 0 if b == 0 else g * b * a ** (b - 1)
    return where(b == 0, 0, g * b * a ** (b - 1))  # as torch: no nan from 0 ** -1 when b == 0


def _pow_exponent(g, ans, a, b):
    safe_a = where(a == 0, 1, a)  # 0 ** b has a zero derivative in b for b >= 0, as torch
    return where(logical_and(a == 0, b >= 0), 0, g * ans * log(safe_a))  # a may be a number


pow = Op("pow", np.power, _pow_base, _pow_exponent, promote="arithmetic")

# ----- exponentials, logs, roots -----
exp = Op("exp", np.exp, lambda g, ans, x: g * ans, doc="e ** x, elementwise.")
log = Op("log", np.log, lambda g, ans, x: g / x, doc="The natural logarithm, elementwise.")
sqrt = Op("sqrt", np.sqrt, lambda g, ans, x: g / (2 * ans), doc="The square root, elementwise.")
abs = Op("abs", np.abs, lambda g, ans, x: g * sign(x),
         doc="|x|, elementwise (the gradient at 0 is 0, as torch's).")

# ----- trigonometric and hyperbolic -----
sin = Op("sin", np.sin, lambda g, ans, x: g * cos(x), doc="The sine, elementwise.")
cos = Op("cos", np.cos, lambda g, ans, x: -g * sin(x), doc="The cosine, elementwise.")
# g - g*ans*ans rather than g*(1 - ans*ans): numpy is twice as slow with a Python scalar
# operand on small arrays, and the count of passes over large ones is the same.
tanh = Op("tanh", np.tanh, lambda g, ans, x: g - g * ans * ans,
          doc="The hyperbolic tangent, elementwise.")


# ----- activations -----
def _sigmoid(x):
    return np.exp(-np.logaddexp(0, -x))  # never overflows, accurate in both tails


def _sigmoid_vjp(g, ans, x):
    ga = g * ans
    return ga - ga * ans  # g * ans * (1 - ans), without a Python-scalar operand


sigmoid = Op("sigmoid", _sigmoid, _sigmoid_vjp,
             doc="1 / (1 + exp(-x)), elementwise, stable in both tails.")
def _relu(x):
    return _cpu.relu(x) if _cpu.applies(x) else np.maximum(x, 0)


def _relu_vjp(g, ans, x):
    """0 where the output is <= 0 (the input was), else g: a NaN input passes g through,
    as in PyTorch. Reading only the output, the tape keeps it and not the input."""
    if type(g) is np.ndarray and type(ans) is np.ndarray:  # on arrays (no outer tape)
        if g.size < _cpu.MIN_SIZE:  # small: one select (jacobian axes in g broadcast)
            return np.where(ans <= 0, g.dtype.type(0), g)
        if _cpu.applies(g, ans):  # no jacobian axes: one pass on tape's threads
            return _cpu.relu_grad(g, ans)
    return where(ans <= 0, 0, g)


relu = Op("relu", _relu, _relu_vjp, doc="max(x, 0), elementwise.")
_leaky_relu = Op(
    "leaky_relu",
    lambda x, negative_slope: _where(x > 0, x, x * negative_slope),
    lambda g, ans, x, negative_slope: where(x > 0, g, g * negative_slope),
)

_SQRT1_2 = 1 / math.sqrt(2)
_SQRT_2_PI = math.sqrt(2 / math.pi)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)

erf = Op("erf", backend.erf, lambda g, ans, x: g * (2 / math.sqrt(math.pi)) * exp(-x * x),
         doc="The error function, elementwise.")


def _gelu(x, approximate):
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(_SQRT_2_PI * (x + 0.044715 * x * x * x)))
    if approximate != "none":
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return 0.5 * x * (1 + backend.erf(x * _SQRT1_2))


def _gelu_vjp(g, ans, x, approximate):
    if approximate == "tanh":
        t = tanh(_SQRT_2_PI * (x + 0.044715 * x * x * x))
        inner = _SQRT_2_PI * (1 + 3 * 0.044715 * x * x)
        return g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * inner)
    return g * (0.5 * (1 + erf(x * _SQRT1_2)) + x * exp(-0.5 * x * x) * _INV_SQRT_2PI)


_gelu_op = Op("gelu", _gelu, _gelu_vjp)


def leaky_relu(x, negative_slope=0.01):
    """max(x, 0) + negative_slope * min(x, 0)."""
    return _leaky_relu(x, negative_slope=negative_slope)


def gelu(x, approximate="none"):
    """x * Phi(x), exactly (erf) or with torch's tanh approximation."""
    return _gelu_op(x, approximate=approximate)


def _softplus(x, beta, threshold):
    return _where(x * beta > threshold, x, np.logaddexp(0, x * beta) / beta)


_softplus_op = Op(
    "softplus",
    _softplus,
    lambda g, ans, x, beta, threshold: where(
        x * beta > threshold, g, g * sigmoid(x * beta)
    ),
)

# ----- two-operand selections -----
maximum = Op(
    "maximum",
    np.maximum,
    lambda g, ans, a, b: where(a == b, g * 0.5, where(a > b, g, 0)),  # ties share, as torch
    lambda g, ans, a, b: where(a == b, g * 0.5, where(b > a, g, 0)),
    promote="arithmetic",
    doc="The larger of a and b, elementwise (ties share the gradient, as torch).",
)
minimum = Op(
    "minimum",
    np.minimum,
    lambda g, ans, a, b: where(a == b, g * 0.5, where(a < b, g, 0)),
    lambda g, ans, a, b: where(a == b, g * 0.5, where(b < a, g, 0)),
    promote="arithmetic",
    doc="The smaller of a and b, elementwise (ties share the gradient, as torch).",
)


_SAME_SIZE_INT = {4: np.int32, 8: np.int64}


def _where(cond, x, y):
    """``xp.where``; on the CPU for floats, a branchless select on the bits instead.

    numpy's where branches per element and mispredicts on a random mask (a ReLU's):
    1.4 ms for 400k float32 elements, against 0.1-0.2 ms for ``(x & m) | (y & ~m)`` on
    the same bits viewed as integers, with ``m`` all ones where ``cond`` holds. Exact,
    NaN and inf included."""
    xp = backend.xp(cond, x, y)
    if xp is np and getattr(cond, "dtype", None) == np.bool_:
        dtype = np.result_type(x, y)
        if dtype.kind == "f" and dtype.itemsize in _SAME_SIZE_INT:
            itype = _SAME_SIZE_INT[dtype.itemsize]
            mask = -cond.view(np.int8).astype(itype)
            out = np.asarray(x, dtype).view(itype) & mask
            yb = np.asarray(y, dtype).view(itype)
            if yb.ndim or yb != 0:  # where(c, g, 0), the common case, needs only one half
                out = out | (yb & ~mask)
            return out.view(dtype)
    return xp.where(cond, x, y)


_where_op = Op(
    "where",
    _where,
    None,
    lambda g, ans, cond, x, y: where(cond, g, 0),
    lambda g, ans, cond, x, y: where(cond, 0, g),
)


def where(cond, x, y):
    """``x`` where ``cond`` holds, else ``y`` (the gradient goes to the chosen side);
    ``cond`` a boolean tensor or array (torch refuses other dtypes too)."""
    dtype = getattr(getattr(cond, "data", cond), "dtype", None)
    if dtype is not None and dtype.kind != "b":
        raise TypeError(f"where: the condition must be a boolean tensor, got dtype {dtype}: "
                        "compare first (x > 0) or cast with .astype(bool)")
    return _where_op(cond, x, y)


def _clip_vjp(g, ans, x, min=None, max=None):
    if min is None:
        return where(x <= max, g, 0)
    if max is None:
        return where(x >= min, g, 0)
    return where((x >= min) & (x <= max), g, 0)


_clip = Op("clip", lambda x, min=None, max=None: np.clip(x, min, max), _clip_vjp)


def clip(x, min=None, max=None):
    """Limit ``x`` to [min, max]; either bound may be None (numpy.clip, torch.clamp)."""
    if min is None and max is None:
        raise ValueError("clip: give at least one of min and max")
    return _clip(x, min=min, max=max)


def softplus(x, beta=1.0, threshold=20.0):
    """log(1 + exp(beta * x)) / beta, linear above ``threshold`` (as torch)."""
    return _softplus_op(x, beta=beta, threshold=threshold)


def silu(x, inplace=False):
    """x * sigmoid(x) (swish); ``inplace`` is accepted as torch's and never done."""
    return mul(x, sigmoid(x))


def elu(x, alpha=1.0, inplace=False):
    """x for x > 0, else alpha * (exp(x) - 1), as torch (whose gradient at 0 is alpha).

    The exponential sees only the non-positive part, so a large x makes no inf whose
    zero gradient would turn into NaN; ``inplace`` is accepted and never done."""
    positive = gt(x, 0)
    return where(positive, x, mul(sub(exp(where(positive, 0, x)), 1), alpha))


# ----- not differentiable: comparisons, logic, sign, casts -----
lt = Op("lt", np.less, differentiable=False)
le = Op("le", np.less_equal, differentiable=False)
gt = Op("gt", np.greater, differentiable=False)
ge = Op("ge", np.greater_equal, differentiable=False)
eq = Op("eq", np.equal, differentiable=False)
ne = Op("ne", np.not_equal, differentiable=False)
logical_and = Op("logical_and", np.logical_and, differentiable=False)
logical_or = Op("logical_or", np.logical_or, differentiable=False)
logical_not = Op("logical_not", np.logical_not, differentiable=False)
sign = Op("sign", np.sign, differentiable=False)

cast = Op(
    "cast",
    lambda x, dtype: x.astype(dtype),
    # float -> float keeps the gradient (the replay casts it back); to integers it stops
    lambda g, ans, x, dtype: g if ans.dtype.kind == "f" else None,
)
