"""Elementwise kernels where numpy needs several passes or strides badly: ReLU and its
gradient, a convolution's channel bias and its layout change, the SGD-momentum update,
a layer norm's rows and their gradient, and an embedding's gradient (rows added at their
indices). One pass each, split among tape's threads where that measured faster (the last
on the caller's). And where numpy's cost on small arrays is its calls: a linear layer's
bias and its gradient, and cross entropy with its gradient (run whole in the caller).

numpy needs several passes (and temporaries) for a ReLU's gradient, runs on one thread,
and allocates a new output each time; on the LeNet step these took a fifth of the time.
Each kernel here reads its inputs once, writes an output from ``buffers`` (no page
faults), and splits the elements among tape's threads where that pays (kernels/cpu/threads.py).

The callers (tape/ops/elementwise.py, nn.py, losses.py) use them for C-contiguous
float32/float64 numpy arrays (the elementwise ones from ``MIN_SIZE`` elements, cross
entropy up to ``CE_MAX_SIZE``) and fall back to numpy otherwise.
"""

from __future__ import annotations

import math

import numpy as np

from . import buffers
from .jit import inline, kernel
from .threads import parallel_for, serial

MIN_SIZE = 1 << 14  # smaller arrays: numpy's call is as fast as reaching the kernel
FLOATS = (np.float32, np.float64)


def applies(*arrays):
    """Whether the kernels here take these arrays (same shape, dtype and layout)."""
    a = arrays[0]
    return (type(a) is np.ndarray and a.size >= MIN_SIZE and a.dtype in FLOATS
            and a.flags.c_contiguous
            and all(type(b) is np.ndarray and b.shape == a.shape and b.dtype == a.dtype
                    and b.flags.c_contiguous for b in arrays[1:]))


U = np.uintp  # unsigned indices: no negative-index wrap-around, so the loops vectorise


@kernel
def _relu(start, stop, x, y, zero):
    for i in range(U(start), U(stop)):
        v = x[i]
        y[i] = v if v > 0 or v != v else zero


@kernel
def _relu_grad(start, stop, g, y, dx, zero):
    for i in range(U(start), U(stop)):
        dx[i] = zero if y[i] <= 0 else g[i]  # NaN passes g through, as PyTorch's


def relu(x):
    """max(x, 0), NaN kept (as numpy's maximum)."""
    y = buffers.empty(x.shape, x.dtype)
    parallel_for(_relu, x.size, x.reshape(-1), y.reshape(-1), x.dtype.type(0))
    return y


def relu_grad(g, y):
    """0 where the ReLU's output ``y`` is <= 0, else ``g`` (NaN included, as PyTorch)."""
    dx = buffers.empty(g.shape, g.dtype)
    parallel_for(_relu_grad, g.size, g.reshape(-1), y.reshape(-1), dx.reshape(-1),
                 g.dtype.type(0))
    return dx


@kernel
def _sgd_momentum(start, stop, p, g, buf, lr, momentum):
    for i in range(U(start), U(stop)):
        b = buf[i] * momentum + g[i]
        buf[i] = b
        p[i] += b * -lr


def sgd_momentum_(p, g, buf, lr, momentum):
    """In place: ``buf = momentum * buf + g; p -= lr * buf`` (PyTorch's SGD with momentum,
    no dampening), the same roundings as numpy's three passes, in one."""
    t = p.dtype.type
    parallel_for(_sgd_momentum, p.size, p.reshape(-1), g.reshape(-1), buf.reshape(-1), t(lr),
                 t(momentum))


@kernel
def _add_channel_bias(start, stop, x, b, out, channels, plane):
    for t in range(U(start), U(stop)):  # one (n, c) plane per work item
        v = b[t % U(channels)]
        first = t * U(plane)
        for i in range(first, first + U(plane)):
            out[i] = x[i] + v


def add_channel_bias(x, b):
    """``x + b`` for ``x`` (N, C, ...) and ``b`` holding C values, one per channel (numpy
    broadcasting strides over the small trailing axes)."""
    n, c = x.shape[:2]
    out = buffers.empty(x.shape, x.dtype)
    plane = x.size // max(n * c, 1)
    parallel_for(_add_channel_bias, n * c, x.reshape(-1), np.ascontiguousarray(b).reshape(-1),
                 out.reshape(-1), c, plane, work=x.size)
    return out


@kernel
def _swap_leading(start, stop, y, out, a, b, plane):
    for t in range(U(start), U(stop)):  # one output plane (j, i) per work item
        j = t // U(a)
        src = ((t - j * U(a)) * U(b) + j) * U(plane)
        first = t * U(plane)
        for q in range(U(plane)):
            out[first + q] = y[src + q]


def swap_leading(y):
    """(A, B, ...) -> (B, A, ...) as a C-contiguous copy: runs of the trailing axes moved
    whole (numpy's strided copy took 0.24 ms on a LeNet conv's output)."""
    a, b = y.shape[:2]
    out = buffers.empty((b, a) + y.shape[2:], y.dtype)
    plane = y.size // max(a * b, 1)
    parallel_for(_swap_leading, a * b, y.reshape(-1), out.reshape(-1), a, b, plane,
                 work=y.size)
    return out



@kernel
def _outer(start, stop, a, b, out, rows, m):
    for r in range(U(start), U(stop)):  # one output row (n, i) per work item
        s = a[r]
        first = r * U(m)
        src = (r // U(rows)) * U(m)
        for j in range(U(m)):
            out[first + j] = s * b[src + j]


def outer(a, b):
    """Outer products of vectors in batches: ``a`` (N, I) and ``b`` (N, J) to (N, I, J),
    written once into a reused buffer (numpy's broadcast multiply ran at a third of the
    memory's speed on vmap's per-example weight gradients)."""
    n, rows = a.shape
    m = b.shape[1]
    out = buffers.empty((n, rows, m), a.dtype)
    parallel_for(_outer, n * rows, a.reshape(-1), b.reshape(-1), out.reshape(-1), rows, m,
                 work=out.size)
    return out


# ----- a linear layer's bias: added to every row; its gradient, the rows summed -----
# numpy's broadcast add and its sum over axis 0 go a row at a time, paying a loop's
# start-up per row: 5-6 us each on the MLP's (128, 256), these ~3 (their call included).
@kernel
def _add_to_rows(start, stop, y, b, cols):
    for r in range(U(start), U(stop)):
        at = r * U(cols)
        for j in range(U(cols)):
            y[at + j] += b[j]


@kernel
def _sum_rows(g, out, rows, cols):
    for j in range(U(cols)):  # from zero, as numpy's sum: -0.0 rows sum to 0.0
        out[j] = 0
    for r in range(U(rows)):  # row after row, as numpy's sum over axis 0: the same roundings
        at = r * U(cols)
        for j in range(U(cols)):
            out[j] += g[at + j]


def rows_apply(y, b):
    """Whether the row kernels take ``y`` (a C-contiguous float (N, C) array) and ``b``
    (C values of its dtype, contiguous); ``b=None``: ``y`` alone."""
    return (type(y) is np.ndarray and y.ndim == 2 and y.dtype in FLOATS
            and y.flags.c_contiguous and (b is None or type(b) is np.ndarray and b.ndim == 1
                                          and b.shape[0] == y.shape[1] and b.dtype == y.dtype
                                          and b.flags.c_contiguous))


def add_to_rows_(y, b):
    """In place: ``y += b`` for (N, C) ``y`` and C values ``b``."""
    rows, cols = y.shape
    parallel_for(_add_to_rows, rows, y.reshape(-1), b, cols, work=y.size)
    return y


def sum_rows(g):
    """``g.sum(axis=0)`` of (N, C) ``g``, bit for bit (numpy's order: row after row)."""
    rows, cols = g.shape
    out = np.empty(cols, g.dtype)
    serial(_sum_rows, g.reshape(-1), out, rows, cols)
    return out


# ----- a layer norm's rows: (x - mean) / sqrt(var + eps) (* weight + bias), gradients -----
# numpy takes a row's mean, variance and gradient sums in separate passes over the whole
# array, with a per-row overhead in each reduction over short rows: on charlm's step
# (2048 rows of 128) a standardize and its gradient took ~2 ms; here each row is read
# while it sits in the cache. Sums are reassociated (vectorised); inf and NaN stay.
_ROWS = {"reassoc", "nsz", "contract"}


@inline
def _mean_rstd(x, at, n, inv_n, eps, one):
    """The mean of row ``x[at:at + n]`` and 1 / sqrt(its variance + eps), two passes."""
    total = one - one
    for j in range(U(n)):
        total += x[at + j]
    mean = total * inv_n
    sq = one - one
    for j in range(U(n)):
        d = x[at + j] - mean
        sq += d * d
    return mean, one / math.sqrt(sq * inv_n + eps)


@kernel(fastmath=_ROWS)
def _standardize_rows(start, stop, x, out, n, inv_n, eps, one):
    for r in range(U(start), U(stop)):
        at = r * U(n)
        mean, rstd = _mean_rstd(x, at, n, inv_n, eps, one)
        for j in range(U(n)):
            out[at + j] = (x[at + j] - mean) * rstd


@kernel(fastmath=_ROWS)
def _standardize_grad_rows(start, stop, g, y, x, out, n, inv_n, eps, one):
    for r in range(U(start), U(stop)):
        at = r * U(n)
        _, rstd = _mean_rstd(x, at, n, inv_n, eps, one)
        g_mean, gy_mean = one - one, one - one
        for j in range(U(n)):
            g_mean += g[at + j]
            gy_mean += g[at + j] * y[at + j]
        g_mean *= inv_n
        gy_mean *= inv_n
        for j in range(U(n)):
            out[at + j] = (g[at + j] - g_mean - y[at + j] * gy_mean) * rstd


def standardize_rows(x, eps):
    """``(x - mean) / sqrt(var + eps)`` over the last axis (biased variance)."""
    n, t = x.shape[-1], x.dtype.type
    out = buffers.empty(x.shape, x.dtype)
    parallel_for(_standardize_rows, x.size // n, x.reshape(-1), out.reshape(-1), n, t(1 / n),
                 t(eps), t(1), work=x.size)
    return out


def standardize_rows_grad(g, y, x, eps):
    """The gradient of :func:`standardize_rows` for ``g``, given its output ``y``:
    ``(g - mean(g) - y * mean(g * y)) / sqrt(var + eps)`` per row."""
    n, t = x.shape[-1], x.dtype.type
    out = buffers.empty(x.shape, x.dtype)
    parallel_for(_standardize_grad_rows, x.size // n, g.reshape(-1), y.reshape(-1),
                 x.reshape(-1), out.reshape(-1), n, t(1 / n), t(eps), t(1), work=3 * x.size)
    return out


@kernel(fastmath=_ROWS)
def _layer_norm_rows(start, stop, x, w, b, out, n, inv_n, eps, one):
    for r in range(U(start), U(stop)):
        at = r * U(n)
        mean, rstd = _mean_rstd(x, at, n, inv_n, eps, one)
        for j in range(U(n)):
            out[at + j] = (x[at + j] - mean) * rstd * w[j] + b[j]


@kernel(fastmath=_ROWS)
def _layer_norm_grad_rows(start, stop, g, x, w, dx, dw, db, rows, total, n, inv_n, eps, one):
    """Work item c: rows ``c * rows`` to ``(c + 1) * rows`` of ``total``, their shares of
    the weight's and bias's gradients into ``dw[c]`` and ``db[c]``."""
    for c in range(start, stop):
        for j in range(U(n)):
            dw[c, j] = 0
            db[c, j] = 0
        for r in range(c * rows, min((c + 1) * rows, total)):
            at = U(r) * U(n)
            mean, rstd = _mean_rstd(x, at, n, inv_n, eps, one)
            gw_mean, gwx_mean = one - one, one - one
            for j in range(U(n)):
                xhat = (x[at + j] - mean) * rstd
                gw = g[at + j] * w[j]
                gw_mean += gw
                gwx_mean += gw * xhat
                dw[c, j] += g[at + j] * xhat
                db[c, j] += g[at + j]
            gw_mean *= inv_n
            gwx_mean *= inv_n
            for j in range(U(n)):
                xhat = (x[at + j] - mean) * rstd
                dx[at + j] = (g[at + j] * w[j] - gw_mean - xhat * gwx_mean) * rstd


def layer_norm_applies(x, w, b):
    """Whether :func:`layer_norm_rows` takes these: ``x`` as :func:`applies` takes it,
    ``w`` and ``b`` contiguous vectors of its last axis's length and its dtype."""
    return applies(x) and all(type(v) is np.ndarray and v.shape == x.shape[-1:]
                              and v.dtype == x.dtype and v.flags.c_contiguous for v in (w, b))


def layer_norm_rows(x, w, b, eps):
    """A layer norm over the last axis with its weight and bias (each of that axis's
    length): ``(x - mean) / sqrt(var + eps) * w + b``, in one pass."""
    n, t = x.shape[-1], x.dtype.type
    out = buffers.empty(x.shape, x.dtype)
    parallel_for(_layer_norm_rows, x.size // n, x.reshape(-1), w, b, out.reshape(-1), n,
                 t(1 / n), t(eps), t(1), work=x.size)
    return out


GRAD_CHUNKS = 8  # work items of the gradient: each sums its rows' shares of dw and db


def layer_norm_rows_grad(g, x, w, eps):
    """``(dx, dw, db)`` of :func:`layer_norm_rows` for the output's gradient ``g``."""
    n, t = x.shape[-1], x.dtype.type
    total = x.size // n
    chunks = min(GRAD_CHUNKS, total)
    dx = buffers.empty(x.shape, x.dtype)
    dw, db = np.empty((chunks, n), x.dtype), np.empty((chunks, n), x.dtype)
    parallel_for(_layer_norm_grad_rows, chunks, g.reshape(-1), x.reshape(-1), w, dx.reshape(-1),
                 dw, db, -(-total // chunks), total, n, t(1 / n), t(eps), t(1),
                 work=3 * x.size)
    return dx, dw.sum(axis=0), db.sum(axis=0)


# ----- cross entropy of small (N, C) logits and class indices, row by row -----
# numpy needs ten calls for the loss (max, subtract, exp, sum, log, pick, ...) and eight
# for its gradient, each paying a call's overhead: 17 + 19 us on the MLP's (128, 10)
# logits, this loop 8 + 8 (its calls included). numpy's exp is vectorised and the loop's
# is not, so from CE_MAX_SIZE elements on numpy is faster (and the callers keep it there).
CE_MAX_SIZE = 1 << 12


@kernel
def _cross_entropy_rows(x, target, coef, g, d, n, c):
    """The loss; and where ``d`` is not empty, its gradient for the cotangent ``g`` into
    ``d`` (one kernel for both: one compile on a fresh install, not two)."""
    total = 0.0
    grad = d.size != 0
    for r in range(U(n)):
        at = r * U(c)
        m = x[at]
        for j in range(U(c)):  # the row's max; NaN if it holds one, as numpy's
            v = x[at + j]
            if v > m or v != v:
                m = v
        s = 0.0  # exp(x - max) summed in float64
        for j in range(U(c)):
            e = math.exp(x[at + j] - m)
            s += e
            if grad:
                d[at + j] = e
        total += coef[r] * (math.log(s) - (x[at + U(target[r])] - m))
        if grad:
            k = coef[r] * g
            scale = k / s
            for j in range(U(c)):
                d[at + j] *= scale
            d[at + U(target[r])] -= k
    return total


def cross_entropy_applies(x, target, coef):
    """Whether the row loops take these: C-contiguous float (N, C) logits of at most
    CE_MAX_SIZE elements, (N,) integer targets and coefficients of the logits' dtype."""
    return (type(x) is np.ndarray and x.ndim == 2 and x.size <= CE_MAX_SIZE
            and x.dtype in FLOATS and x.flags.c_contiguous and type(target) is np.ndarray
            and target.dtype == np.intp and type(coef) is np.ndarray and coef.dtype == x.dtype)


def cross_entropy(x, target, coef):
    """``sum(coef * (logsumexp(x, axis=1) - x[rows, target]))``, as an array of x's dtype.
    Targets must be in range (the caller checks)."""
    n, c = x.shape
    no_grad = np.empty(0, x.dtype)
    return x.dtype.type(serial(_cross_entropy_rows, x.reshape(-1), target, coef, 0.0, no_grad,
                               n, c))


def cross_entropy_grad(x, target, coef, g):
    """Its gradient for the scalar cotangent ``g``: ``coef * (softmax(x) - onehot) * g``."""
    n, c = x.shape
    d = np.empty_like(x)
    serial(_cross_entropy_rows, x.reshape(-1), target, coef, float(g), d.reshape(-1), n, c)
    return d


# ----- an embedding's gradient: rows of g added at their indices -----
@kernel
def _add_rows(out, idx, values, dim):
    for r in range(idx.size):
        at, src = U(idx[r]) * U(dim), U(r) * U(dim)
        for j in range(U(dim)):
            out[at + j] += values[src + j]


def add_rows(values, idx, num):
    """Zeros (num, dim) with the rows of ``values`` (n, dim; C-contiguous float) added at
    ``idx`` (n integers; repeats accumulate), in one serial pass (numpy's bincount needs
    an index per element and float64 sums: 1.2 ms for charlm's 2048 x 128, this 0.1).
    None where an index is out of range, for the caller's general path to handle."""
    idx = idx.reshape(-1)
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= num):
        return None
    out = np.zeros((num, values.shape[-1]), values.dtype)
    _add_rows(out.reshape(-1), idx, values.reshape(-1), values.shape[-1])
    return out
