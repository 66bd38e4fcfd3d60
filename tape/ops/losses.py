"""Losses with torch's signatures and ``reduction="mean" | "sum" | "none"``.

cross_entropy of (N, C) logits and class indices, without class weights or label
smoothing (a classifier's training loss), is one entry whose rule is the cotangent times
(softmax - one-hot), scaled per row. Every other case is log_softmax followed by one
fused negative log-likelihood entry, whose rule is a constant (the one-hot target, class
weights, label smoothing and the mean's divisor folded together) times the cotangent.
The binary losses are one entry each.
"""

from __future__ import annotations

import warnings

import numpy as np
from kernels.cpu import elementwise as _cpu

from .. import backend
from ..tensor import Tensor
from .core import Op, lead_axes
from .elementwise import abs, cast, clip, exp, log, maximum, sigmoid, softplus, where
from .nn import _shape, log_softmax, softmax
from .reduce import mean, sum
from .shape import reshape


def _data(x):
    return x.data if isinstance(x, Tensor) else x


def _reduce(loss, reduction, name):
    if reduction == "mean":
        return mean(loss)
    if reduction == "sum":
        return sum(loss)
    if reduction == "none":
        return loss
    raise ValueError(f"{name}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


# ----- negative log-likelihood over class axis 1 -----
def _nll_forward(logp, target, coef, smooth, total):
    xp = backend.xp(logp)
    picked = xp.take_along_axis(logp, target[:, None], axis=1)[:, 0]
    out = -(coef * picked)
    if smooth is not None:
        out = out - (smooth * logp).sum(axis=1)
    return out.sum() if total else out


def _nll_vjp(g, ans, logp, target, coef, smooth, total):
    nb = len(lead_axes(g, ans.ndim))
    if total:  # the cotangent of a sum: the same value for every element
        gk = reshape(g, shape=g.shape + (1,) * logp.ndim)
    else:  # a class axis of size one after the batch axis
        gk = reshape(g, shape=g.shape[: nb + 1] + (1,) + g.shape[nb + 1 :])
    lp = _data(logp)
    xp = backend.xp(lp)
    classes = xp.arange(lp.shape[1]).reshape((1, -1) + (1,) * (lp.ndim - 2))
    w = (classes == target[:, None]) * -coef[:, None]
    return gk * (w if smooth is None else w - smooth)


_nll = Op("nll_loss", _nll_forward, _nll_vjp)


def _batched(input, target, probabilities):
    """An unbatched (C,) input and its target as a batch of one."""
    if len(_shape(input)) == 1:
        tshape = (1,) + _shape(target) if probabilities else (1,)
        return reshape(input, shape=(1,) + input.shape), _reshaped(target, tshape), True
    return input, target, False


def _reshaped(t, shape):
    return reshape(t, shape=shape) if isinstance(t, Tensor) else np.reshape(t, shape)


def _class_targets(x, target, weight, ignore_index, name):
    """Targets made safe to index with (ignored ones point at 0) and their coefficients
    (the class weight, 0 where ignored)."""
    xd = _data(x)
    t = _data(target)
    t = t if hasattr(t, "dtype") else np.asarray(t)
    if t.dtype.kind not in "iu":
        raise TypeError(f"{name}: class-index targets must be integers, got dtype {t.dtype}")
    want = xd.shape[:1] + xd.shape[2:]
    if t.shape != want:
        raise ValueError(
            f"{name}: target of shape {t.shape} does not fit an input of shape {xd.shape} "
            f"(expected {want}: the input's shape without the class axis 1)"
        )
    xp = backend.xp(xd)
    t = xp.asarray(t)
    valid = t != ignore_index
    safe = xp.where(valid, t, 0)
    c = xd.shape[1]
    if safe.size and (int(safe.min()) < 0 or int(safe.max()) >= c):
        bad = int(safe.min()) if int(safe.min()) < 0 else int(safe.max())
        raise IndexError(f"{name}: target {bad} is out of bounds for {c} classes")
    if weight is None:
        wvec = None
        coef = valid.astype(xd.dtype)
    else:
        wvec = xp.asarray(_data(weight)).astype(xd.dtype, copy=False)
        if wvec.shape != (c,):
            raise ValueError(f"{name}: weight of shape {wvec.shape}, expected ({c},)")
        coef = xp.where(valid, wvec[safe], 0).astype(xd.dtype, copy=False)
    return safe, coef, valid, wvec


# ----- cross entropy of (N, C) logits and class indices, in one entry -----
def _ce_forward(x, target, coef, none_counted=False):
    """The loss summed over rows with weights ``coef`` (the mean's divisor folded in; 0
    for ignored targets, which point at class 0); NaN for the mean of no targets, as torch
    (whose gradient is then zero: ``coef`` is)."""
    if _cpu.cross_entropy_applies(x, target, coef):  # small, on the CPU: one loop
        loss = _cpu.cross_entropy(x, target, coef)
        return loss * np.nan if none_counted else loss
    xp = backend.xp(x)
    shifted = x - x.max(axis=1, keepdims=True)  # stable for large logits
    total = xp.exp(shifted).sum(axis=1)
    picked = shifted[xp.arange(len(target)), target]
    # -log softmax at the targets, weighted; summed by numpy, whose sum does not depend on
    # where the arrays lie in memory (a BLAS dot's does: a resumed run's losses differed)
    loss = (coef * (xp.log(total) - picked)).sum()
    return loss * xp.nan if none_counted else loss


def _ce_vjp(g, ans, x, target, coef, none_counted=False):
    """coef * (softmax - one-hot) per row, times the cotangent. First order on arrays it
    is computed in place on one new array; otherwise (higher order, jacobians) it is
    written with ops on the logits, so it differentiates again."""
    if not isinstance(g, Tensor) and g.ndim == 0:
        if _cpu.cross_entropy_applies(x, target, coef):
            return _cpu.cross_entropy_grad(x, target, coef, g)
        xp = backend.xp(x)
        d = x - x.max(axis=1, keepdims=True)
        xp.exp(d, out=d)
        d *= (coef / d.sum(axis=1))[:, None]
        d[xp.arange(len(target)), target] -= coef
        d *= g
        return d
    xd = _data(x)
    xp = backend.xp(xd)
    onehot = (xp.arange(xd.shape[1]) == target[:, None]).astype(xd.dtype)
    d = (softmax(x, axis=1) - onehot) * coef[:, None]
    return reshape(g, shape=g.shape + (1, 1)) * d  # g: a scalar, or one per jacobian row


_ce = Op("cross_entropy", _ce_forward, _ce_vjp)


def _fused_cross_entropy(x, target, ignore_index, reduction):
    """``cross_entropy`` as one entry, for (N, C) float logits and (N,) integer class
    indices on one device, outside vmap; None for anything else (the general path takes
    it, and says what is wrong). Raises for a target out of bounds, as that path does."""
    xd = x.data if isinstance(x, Tensor) else x
    td = target.data if isinstance(target, Tensor) else target
    if (type(xd) is not type(td) or not hasattr(xd, "ndim") or xd.ndim != 2
            or xd.dtype.kind != "f" or td.dtype.kind not in "iu" or td.shape != xd.shape[:1]
            or not xd.size or getattr(x, "_mapped", False) or getattr(target, "_mapped", False)):
        return None
    n, c = xd.shape
    low, high = int(td.min()), int(td.max())
    if low >= 0 and not low <= ignore_index <= high:  # no target is ignored
        if high >= c:
            raise IndexError(f"cross_entropy: target {high} is out of bounds for {c} classes")
        coef = backend.xp(xd).full(n, 1 / n if reduction == "mean" else 1, xd.dtype)
        safe = td.astype(np.intp)  # a copy: the caller may refill its label buffer
    else:
        safe, coef, _, _ = _class_targets(x, target, None, ignore_index, "cross_entropy")
        if reduction == "mean":
            denom = coef.sum()
            if not denom:  # every target ignored
                return _ce(x, target=safe, coef=coef, none_counted=True)
            coef = coef / denom
    return _ce(x, target=safe, coef=coef)


def _nll_core(logp, target, weight, ignore_index, reduction, smoothing, name):
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{name}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if any(isinstance(v, Tensor) and v._mapped for v in (logp, target, weight)):
        return _nll_mapped(logp, target, weight, ignore_index, reduction, smoothing, name)
    safe, coef, valid, wvec = _class_targets(logp, target, weight, ignore_index, name)
    lp = _data(logp)
    denom = coef.sum()  # the mean divides by the summed weights of the counted targets
    if reduction == "mean":
        with np.errstate(divide="ignore", invalid="ignore"):  # all ignored: nan, as torch
            coef = coef / denom
    smooth = None
    if smoothing:
        c = lp.shape[1]
        per_class = (wvec if wvec is not None else backend.xp(lp).ones(c, lp.dtype)).reshape(
            (1, c) + (1,) * (lp.ndim - 2))
        smooth = (smoothing / c) * per_class * valid[:, None].astype(lp.dtype)
        if reduction == "mean":
            with np.errstate(divide="ignore", invalid="ignore"):
                smooth = smooth / denom
        coef = coef * (1 - smoothing)
    return _nll(logp, target=safe, coef=coef, smooth=smooth, total=reduction != "none")


def _nll_mapped(logp, target, weight, ignore_index, reduction, smoothing, name):
    """``_nll_core`` inside vmap, where targets differ between examples: written with ops
    that have batching rules (the fused op reads its targets as arrays), the same sums."""
    shape, t = _shape(logp), target
    if not (isinstance(t, Tensor) and t._mapped):
        t = Tensor(backend.to_numpy(_data(t)), device=backend.device_of(_data(logp)))
    if t.dtype.kind not in "iu":
        raise TypeError(f"{name}: class-index targets must be integers, got dtype {t.dtype}")
    if _shape(t) != shape[:1] + shape[2:]:
        raise ValueError(f"{name}: target of shape {_shape(t)} does not fit an input of shape "
                         f"{shape} (expected {shape[:1] + shape[2:]})")
    c = shape[1]
    td = t.data
    valid_d = td != ignore_index
    if valid_d.any() and (int(td[valid_d].min()) < 0 or int(td[valid_d].max()) >= c):
        raise IndexError(f"{name}: a target is out of bounds for {c} classes")
    xp = backend.xp(td)
    per_class = (1, c) + (1,) * (len(shape) - 2)
    classes = xp.arange(c).reshape(per_class)
    valid = t != ignore_index
    onehot = cast(reshape(t, shape=shape[:1] + (1,) + shape[2:]) == classes, dtype=logp.dtype)
    w = xp.ones(per_class, logp.dtype) if weight is None else reshape(weight, shape=per_class)
    coef = sum(onehot * w, axis=1) * cast(valid, dtype=logp.dtype)
    loss = -(coef * (1 - smoothing)) * sum(logp * onehot, axis=1)
    if smoothing:
        loss = loss - sum(logp * w, axis=1) * cast(valid, dtype=logp.dtype) * (smoothing / c)
    if reduction == "none":
        return loss
    return sum(loss) / sum(coef) if reduction == "mean" else sum(loss)


def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """Negative log-likelihood of class indices ``target`` (N,) or (N, d1, ...) under the
    log-probabilities ``input`` (N, C) or (N, C, d1, ...); torch's class weights and
    ``ignore_index`` (the mean divides by the summed weights of the counted targets)."""
    x, t, unbatched = _batched(input, target, False)
    out = _nll_core(x, t, weight, ignore_index, reduction, 0.0, "nll_loss")
    return reshape(out, shape=()) if unbatched and reduction == "none" else out


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0):
    """Cross-entropy of logits ``input`` (N, C) or (N, C, d1, ...) against class indices
    (integer ``target`` of shape (N,) or (N, d1, ...)) or class probabilities (a float
    ``target`` of the input's shape), as torch.nn.functional.cross_entropy.

    >>> F.cross_entropy(tape.zeros(2, 4), tape.tensor([0, 3])).item()  # log(4)
    1.3862943...
    """
    if weight is None and not label_smoothing and (reduction == "mean" or reduction == "sum"):
        loss = _fused_cross_entropy(input, target, ignore_index, reduction)
        if loss is not None:  # a classifier's loss, one entry
            return loss
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got "
                         f"{label_smoothing}")
    xdt = getattr(_data(input), "dtype", None)
    if xdt is not None and xdt.kind != "f":
        raise TypeError(f"cross_entropy: the input (logits) has dtype {xdt}; it must be a "
                        "floating-point tensor: cast it, x.astype(tape.float32)")
    td = _data(target)
    # np.asarray only for lists and numbers: it refuses (implicitly) a cupy array
    probabilities = (td.dtype if hasattr(td, "dtype") else np.asarray(td).dtype).kind == "f"
    x, t, unbatched = _batched(input, target, probabilities)
    logp = log_softmax(x, axis=1)
    if not probabilities:
        out = _nll_core(logp, t, weight, ignore_index, reduction, label_smoothing,
                        "cross_entropy")
        return reshape(out, shape=()) if unbatched and reduction == "none" else out
    shape, c = _shape(logp), _shape(logp)[1]
    if _shape(t) != shape:
        raise ValueError(f"cross_entropy: probability target of shape {_shape(t)} "
                         f"does not match the input's shape {shape}")
    q = t
    if label_smoothing:
        q = q * (1 - label_smoothing) + label_smoothing / c
    if weight is not None:
        q = q * _reshaped(weight, (1, c) + (1,) * (len(shape) - 2))
    per = -sum(logp * q, axis=1)
    if unbatched:
        per = reshape(per, shape=())
    if reduction == "mean":
        return sum(per) / (int(np.prod(shape)) // c)
    return _reduce(per, reduction, "cross_entropy")


# ----- regression losses -----
def _same_size(input, target, name):
    """Warn, as torch does, when the target broadcasts against the input ((4, 1) and (4,)
    make a (4, 4) loss: almost always a mistake)."""
    xs, ts = _shape(input), _shape(target)
    if xs != ts:
        try:
            both = np.broadcast_shapes(xs, ts)
        except ValueError:  # they do not broadcast: the subtraction says so
            return
        warnings.warn(f"{name}: the target's shape {ts} differs from the input's {xs}; they "
                      f"broadcast to {both}, which is likely not what you meant: give them "
                      "the same shape", UserWarning, stacklevel=3)


def mse_loss(input, target, reduction="mean"):
    """Mean squared error (inputs broadcast as numpy, with a warning as torch's)."""
    _same_size(input, target, "mse_loss")
    d = input - target
    return _reduce(d * d, reduction, "mse_loss")


def l1_loss(input, target, reduction="mean"):
    """Mean absolute error; the gradient at zero difference is zero, as torch."""
    _same_size(input, target, "l1_loss")
    return _reduce(abs(input - target), reduction, "l1_loss")


def _huber(d, delta):
    """0.5 d**2 inside |d| < delta, delta (|d| - delta / 2) outside: both pieces with
    ops, so the second derivative is 1 inside and 0 outside, as torch's."""
    a = abs(d)
    return where(a < delta, 0.5 * d * d, delta * (a - 0.5 * delta))


def smooth_l1_loss(input, target, reduction="mean", beta=1.0):
    """Squared (over 2 beta) where |input - target| < beta, else L1 less beta / 2: the
    Huber loss divided by beta; ``beta=0`` is the L1 loss, as torch."""
    if beta < 0:
        raise ValueError(f"smooth_l1_loss: beta must be >= 0, got {beta}")
    _same_size(input, target, "smooth_l1_loss")
    d = input - target
    loss = abs(d) if beta == 0 else _huber(d, beta) / beta
    return _reduce(loss, reduction, "smooth_l1_loss")


def huber_loss(input, target, reduction="mean", delta=1.0, weight=None):
    """Squared / 2 where |input - target| < delta, else delta times L1 less delta / 2;
    ``weight`` (the input's shape) weighs each element before the reduction, as torch."""
    if delta <= 0:
        raise ValueError(f"huber_loss: delta must be > 0, got {delta}")
    _same_size(input, target, "huber_loss")
    loss = _huber(input - target, delta)
    if weight is not None:
        if _shape(weight) != _shape(input):
            raise ValueError(f"huber_loss: weight of shape {_shape(weight)} must have the "
                             f"input's shape {_shape(input)}")
        loss = loss * weight
    return _reduce(loss, reduction, "huber_loss")


_KL_MEAN = ("reduction: 'mean' divides the total loss by both the batch size and the support "
            "size.'batchmean' divides only by the batch size, and aligns with the KL div math "
            "definition.'mean' will be changed to behave the same as 'batchmean' in the next "
            "major release.")  # torch's words


def kl_div(input, target, reduction="mean", log_target=False):
    """Pointwise KL divergence target * (log target - input) for log-probabilities
    ``input`` (target as probabilities, or as log-probabilities with ``log_target``);
    0 where target is 0. ``reduction="batchmean"`` is the true KL divergence per example;
    "mean" (torch's default) averages over every element too, and warns as torch."""
    if reduction not in ("mean", "batchmean", "sum", "none"):
        raise ValueError(f"kl_div: reduction must be 'mean', 'batchmean', 'sum' or 'none', "
                         f"got {reduction!r}")
    if reduction == "mean":
        warnings.warn(_KL_MEAN, UserWarning, stacklevel=2)
    if log_target:
        loss = exp(target) * (target - input)
    else:  # xlogy(t, t) - t * input, the log never seeing a zero (whose 0 * inf is NaN)
        zero = target == 0
        loss = where(zero, 0, target * log(where(zero, 1, target))) - target * input
    if reduction == "batchmean":
        shape = _shape(input)
        return sum(loss) / shape[0] if shape else sum(loss)
    return _reduce(loss, reduction, "kl_div")


# ----- binary cross-entropy on probabilities: log clamped at -100, as torch -----
def _bce_forward(x, t):
    with np.errstate(divide="ignore"):
        return (t - 1) * np.maximum(np.log(1 - x), -100) - t * np.maximum(np.log(x), -100)


_bce = Op(
    "binary_cross_entropy",
    _bce_forward,
    lambda g, ans, x, t: g * (x - t) / maximum((1 - x) * x, 1e-12),
    lambda g, ans, x, t: g * (clip(log(1 - x), min=-100) - clip(log(x), min=-100)),
)


def binary_cross_entropy(input, target, weight=None, reduction="mean"):
    """-w (t log x + (1 - t) log(1 - x)) for probabilities ``input`` in [0, 1]."""
    xd = _data(input)
    if _shape(input) != _shape(target):
        raise ValueError(f"binary_cross_entropy: target of shape {_shape(target)} differs from "
                         f"the input's shape {_shape(input)}")
    if np.size(xd) and (float(xd.min()) < 0 or float(xd.max()) > 1):
        raise ValueError("binary_cross_entropy: all elements of input should be between 0 and 1"
                         " (apply sigmoid, or use binary_cross_entropy_with_logits)")
    loss = _bce(input, target)
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction, "binary_cross_entropy")


# ----- on logits: (1 - t) x + (1 + (pos_weight - 1) t) softplus(-x), never overflows -----
_INF = float("inf")

_bce_logits = Op(
    "binary_cross_entropy_with_logits",
    lambda x, t, pw: (1 - t) * x + (1 + (pw - 1) * t) * np.logaddexp(0, -x),
    lambda g, ans, x, t, pw: g * ((1 + (pw - 1) * t) * (sigmoid(x) - 1) + 1 - t),
    lambda g, ans, x, t, pw: g * ((pw - 1) * softplus(-x, threshold=_INF) - x),
    lambda g, ans, x, t, pw: g * t * softplus(-x, threshold=_INF),
)


def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean",
                                     pos_weight=None):
    """sigmoid + binary cross-entropy in one numerically stable step; ``pos_weight``
    (broadcast over the last axis) weighs the positive term, as torch."""
    xd = _data(input)
    if _shape(input) != _shape(target):
        raise ValueError(f"binary_cross_entropy_with_logits: target of shape {_shape(target)} "
                         f"differs from the input's shape {_shape(input)}")
    if pos_weight is None:
        pos_weight = backend.xp(xd).ones((), dtype=xd.dtype)
    loss = _bce_logits(input, target, pos_weight)
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction, "binary_cross_entropy_with_logits")
