"""Convolution and pooling (NCHW), on the kernels of the ``kernels`` package.

conv2d is composed, as Chainer does, from differentiable pieces: ``im2col`` (whose
VJP is ``col2im``, and the other way round), a matmul and reshapes. So the forward is
im2col + one GEMM, the input gradient is a GEMM + col2im, and second-order gradients
through a convolution come for free. Pooling pairs each kernel with its adjoint the
same way: max pooling's gradient scatters at the saved argmax, whose VJP gathers there.

Rules fold the extra leading (batch) axes of a jacobian cotangent into N.

On the CPU two routes are faster where they apply, each an op with kernels for the first
order and the maps above, as ops, for higher orders and jacobians: Winograd F(2x2, 3x3)
for 3x3 stride-1 convolutions with >= 8 input channels, and direct kernels for one input
channel (kernels/README.md).
"""

from __future__ import annotations

import math

import numpy as np

import kernels
from kernels import pair
from kernels.cpu import elementwise as _cpu

from .. import backend
from ..tensor import Tensor
from .core import Op, lead_axes
from .elementwise import add_bias
from .linalg import _matmul, einsum, gemm
from .nn import same_dtype
from .indexing import getitem
from .shape import _transpose, concatenate, reshape, swapaxes


def _shape(x):
    return tuple(x.shape) if isinstance(x, Tensor) else np.shape(x)


def _fold(a, core_ndim=4):
    """``a`` with its leading extra axes folded into N, and those axes' shape."""
    lead = a.shape[: a.ndim - core_ndim]
    if lead:
        a = a.reshape((-1,) + a.shape[a.ndim - core_ndim + 1 :])
    return backend.xp(a).ascontiguousarray(a), lead


def _unfold(a, lead):
    return a.reshape(lead + (-1,) + a.shape[1:]) if lead else a


# ----- im2col and col2im: each the other's vector-Jacobian product -----
def _im2col(x, k, stride, padding, dilation):
    return kernels.im2col(x, k[0], k[1], stride, padding, dilation)


def _col2im(cols, x_shape, k, stride, padding, dilation):
    return kernels.col2im(cols, x_shape, k[0], k[1], stride, padding, dilation)


def _im2col_vjp(g, ans, x, k, stride, padding, dilation):
    nb = len(lead_axes(g, 2))
    lead = tuple(g.shape[:nb])
    if nb:  # lead + (K, N*L) -> (K, lead*N*L): columns are n-major, so lead folds into N
        g = _transpose(g, axes=(nb,) + tuple(range(nb)) + (nb + 1,))
        g = reshape(g, shape=(ans.shape[0], -1))
    n = int(np.prod(lead, dtype=np.int64)) * x.shape[0]
    out = col2im(g, x_shape=(n,) + tuple(x.shape[1:]), k=k, stride=stride, padding=padding,
                 dilation=dilation)
    return reshape(out, shape=lead + tuple(x.shape)) if nb else out


def _col2im_vjp(g, ans, cols, x_shape, k, stride, padding, dilation):
    nb = len(lead_axes(g, 4))
    lead = tuple(g.shape[:nb])
    if nb:
        g = reshape(g, shape=(-1,) + tuple(g.shape[nb + 1 :]))
    out = im2col(g, k=k, stride=stride, padding=padding, dilation=dilation)
    if nb:  # (K, lead*N*L) -> lead + (K, N*L)
        out = reshape(out, shape=(out.shape[0],) + lead + (-1,))
        out = _transpose(out, axes=tuple(range(1, nb + 1)) + (0, nb + 1))
    return out


im2col = Op("im2col", _im2col, _im2col_vjp)
col2im = Op("col2im", _col2im, _col2im_vjp)


# ----- Winograd F(2x2, 3x3): 3x3 stride-1 convolutions on the CPU -----
# Three linear maps, each an op paired with its adjoint op (as im2col and col2im): the
# input and weight transforms and the output transform. A convolution is
# winograd_output(winograd_input(x) @ winograd_weight(w)) (kernels/cpu/winograd.py
# says why that is the same), and its gradients, of any order, come from the tape. The
# kernels take no leading batch axes: the forwards here fold a jacobian's leading axes
# into N (and Cout) and unfold them after.
# For few channels the three passes over the batch cost more in memory traffic than the
# GEMMs do: there ``winograd_conv`` (input transform, GEMMs and output transform in one
# fused kernel) takes U = winograd_weight(w), and its rule computes dx and dU in one fused
# pass on first-order arrays; under an outer tape or for jacobians it is the maps above,
# as ops, so higher orders come from the tape as before.
try:
    from kernels.cpu import winograd as _wino
except ImportError:  # no numba: every convolution takes the im2col route
    _wino = None

WINOGRAD_MIN_CHANNELS = 8  # fewer input channels: im2col + one GEMM is faster (bench/);
# set it higher than any channel count to turn the Winograd route off.
WINOGRAD_FUSED_MAX_CHANNELS = 48  # harmonic mean of Cin and Cout up to which the fused
# kernels (one pass per chunk of images) beat the batched GEMMs (bench/); 0 turns them off.


def _winograd_applies(x, w, k, stride, dilation, cin):
    """3x3, stride 1, enough channels, numpy float arrays of one dtype, and the built-in
    im2col in effect: a drop-in im2col (``kernels.use``, or registered as the default)
    takes every convolution, so that experiments with it measure what they mean to."""
    xd, wd = (x.data if isinstance(x, Tensor) else x), (w.data if isinstance(w, Tensor) else w)
    return (_wino is not None and k == (3, 3) and stride == (1, 1) and dilation == (1, 1)
            and cin >= WINOGRAD_MIN_CHANNELS and type(xd) is np.ndarray
            and type(wd) is np.ndarray and xd.dtype == wd.dtype
            and xd.dtype in (np.float32, np.float64)
            and kernels.get("im2col", "cpu") is kernels.get("im2col", "cpu", impl="numba"))


def _fused_applies(out_hw, cin, cout):
    """Few channels, where the transforms' memory traffic costs more than the GEMMs; and
    SciPy installed (numba's np.dot calls its BLAS). Each of one image's GEMMs small
    enough to run on one thread."""
    tiles = _wino.tiles(out_hw[0]) * _wino.tiles(out_hw[1])
    return (2 * cin * cout <= WINOGRAD_FUSED_MAX_CHANNELS * (cin + cout)
            and tiles * cin * cout <= 1 << 18 and _wino.HAS_SCIPY)


def _to_lead_major(v, lead):
    """(16, L*T, C) -> lead + (16, T, C)."""
    if not lead:
        return v
    v = v.reshape((16, math.prod(lead), -1, v.shape[-1])).transpose(1, 0, 2, 3)
    return np.ascontiguousarray(v).reshape(lead + v.shape[1:])


def _from_lead_major(v):
    """lead + (16, T, C) -> (16, L*T, C), and lead."""
    lead = v.shape[:-3]
    if lead:
        v = v.reshape((-1,) + v.shape[-3:]).transpose(1, 0, 2, 3)
        v = np.ascontiguousarray(v).reshape((16, -1, v.shape[-1]))
    return v, lead


def _winograd_input(x, padding):
    xf, lead = _fold(x)
    return _to_lead_major(_wino.transformed_input(xf, padding), lead)


def _winograd_input_adjoint(dv, x_shape, padding):
    d, lead = _from_lead_major(dv)
    shape = (math.prod(lead) * x_shape[0],) + tuple(x_shape[1:])
    return _unfold(_wino.input_adjoint(d, shape, padding), lead)


def _winograd_output(m, n, out_hw):
    d, lead = _from_lead_major(m)
    return _unfold(_wino.output(d, math.prod(lead) * n, out_hw), lead)


def _winograd_output_adjoint(g):
    gf, lead = _fold(g)
    return _to_lead_major(_wino.transformed_grad(gf), lead)


def _winograd_weight(w):
    wf, lead = _fold(w)  # leading axes folded into Cout
    u = _wino.weight_transform(wf)
    if not lead:
        return u
    u = u.reshape((16, u.shape[1], math.prod(lead), -1)).transpose(2, 0, 1, 3)
    return np.ascontiguousarray(u).reshape(lead + u.shape[1:])


def _winograd_weight_adjoint(du):
    lead = du.shape[:-3]
    if lead:
        du = du.reshape((-1,) + du.shape[-3:]).transpose(1, 2, 0, 3)
        du = np.ascontiguousarray(du).reshape(du.shape[:2] + (-1,))
    return _unfold(_wino.weight_transform_adjoint(du), lead)


def _winograd_input_grad(g, ans, v, u):
    """dV = dM U^T."""
    return _matmul(g, swapaxes(u, -1, -2))


def _winograd_weight_grad(g, ans, v, u):
    """dU = V^T dM, computed as (dM^T V)^T: OpenBLAS is up to 2x faster on that form of
    these 16 short, wide products (T is the long axis)."""
    if type(g) is np.ndarray:
        return gemm(g.swapaxes(-1, -2), v).swapaxes(-1, -2)
    return _matmul(swapaxes(v, -1, -2), g)


winograd_input = Op(
    "winograd_input", _winograd_input,
    lambda g, ans, x, padding: winograd_input_adjoint(
        g, x_shape=tuple(x.shape[-4:]), padding=padding),
)
winograd_input_adjoint = Op(
    "winograd_input_adjoint", _winograd_input_adjoint,
    lambda g, ans, dv, x_shape, padding: winograd_input(g, padding=padding),
)
winograd_weight = Op(
    "winograd_weight", _winograd_weight, lambda g, ans, w: winograd_weight_adjoint(g)
)
winograd_weight_adjoint = Op(
    "winograd_weight_adjoint", _winograd_weight_adjoint, lambda g, ans, du: winograd_weight(g)
)
_winograd_gemm = Op(  # (16, T, Cin) @ (16, Cin, Cout): 16 GEMMs over the channels
    "winograd_gemm",
    gemm,
    _winograd_input_grad,
    _winograd_weight_grad,
)


def _winograd_conv_vjp(g, ans, x, u, padding):
    """dx and dU together. On plain arrays (first order, no jacobian axes) one fused pass
    computes both; otherwise the batched route's rules, as ops, so that the outer tape
    records them."""
    if type(g) is np.ndarray and g.ndim == 4:
        return _wino.fused_backward(g, x, u, padding)
    dm, v = winograd_output_adjoint(g), winograd_input(x, padding=padding)
    dx = winograd_input_adjoint(_winograd_input_grad(dm, None, v, u), x_shape=tuple(x.shape),
                                padding=padding)
    return dx, _winograd_weight_grad(dm, None, v, u)


winograd_conv = Op(  # the whole convolution of (N, Cin, H, W) with U (16, Cin, Cout)
    "winograd_conv", lambda x, u, padding: _wino.fused_forward(x, u, padding),
    joint=_winograd_conv_vjp,
)
winograd_output = Op(
    "winograd_output", _winograd_output,
    lambda g, ans, m, n, out_hw: winograd_output_adjoint(g),
)
winograd_output_adjoint = Op(
    "winograd_output_adjoint", _winograd_output_adjoint,
    lambda g, ans, gy: winograd_output(g, n=gy.shape[-4], out_hw=tuple(gy.shape[-2:])),
)


# ----- direct convolution for one input channel (kernels/cpu/direct.py) -----
try:
    from kernels.cpu import direct as _direct
except ImportError:  # no numba: the im2col route
    _direct = None


def _direct_applies(x, w, dilation, cin, groups):
    """One input channel (a first layer), undilated, on numpy float arrays, with the
    built-in kernels in effect (as for the Winograd route)."""
    xd, wd = (x.data if isinstance(x, Tensor) else x), (w.data if isinstance(w, Tensor) else w)
    return (_direct is not None and cin == 1 and groups == 1 and dilation == (1, 1)
            and type(xd) is np.ndarray and type(wd) is np.ndarray and xd.dtype == wd.dtype
            and xd.dtype in (np.float32, np.float64)
            and kernels.get("im2col", "cpu") is kernels.get("im2col", "cpu", impl="numba"))


def _direct_dx(g, ans, x, w, stride, padding):
    """On plain arrays (first order, no jacobian axes) the direct kernel; otherwise the
    im2col route's rules, as ops, so that an outer tape records them."""
    if type(g) is np.ndarray and g.ndim == 4:
        return _direct.input_grad(g, w, x.shape, stride, padding)
    k, cols, w2, g2 = _as_im2col_route(g, x, w, stride, padding)
    return _im2col_vjp(_matmul(swapaxes(w2, -1, -2), g2), cols, x, k, stride, padding, (1, 1))


def _direct_dw(g, ans, x, w, stride, padding):
    if type(g) is np.ndarray and g.ndim == 4:
        return _direct.weight_grad(g, x, w.shape, stride, padding)
    _, cols, w2, g2 = _as_im2col_route(g, x, w, stride, padding)
    return reshape(_weight_grad(g2, None, w2, cols), shape=lead_axes(g, 4)
                   + tuple(w.shape))


def _as_im2col_route(g, x, w, stride, padding):
    """What the im2col route's rules take: the kernel size, cols, the (Cout, K) weight
    and the output gradient as lead + (Cout, N*Hout*Wout)."""
    k, cout, nb = tuple(w.shape[-2:]), w.shape[0], len(lead_axes(g, 4))
    cols = im2col(x, k=k, stride=stride, padding=padding, dilation=(1, 1))
    g2 = _swap_leading_vjp(g, None, None)  # lead + (Cout, N, Hout, Wout)
    return k, cols, reshape(w, shape=(cout, -1)), reshape(g2, shape=tuple(g2.shape[:nb])
                                                           + (cout, -1))


direct_conv = Op(  # conv2d of (N, 1, H, W) with (Cout, 1, kh, kw), in one pass
    "direct_conv", lambda x, w, stride, padding: _direct.forward(x, w, stride, padding),
    _direct_dx, _direct_dw,
)


# ----- conv2d -----
def _weight_grad(g, ans, w, cols):
    """dW = g @ cols.T, computed as (cols @ g.T).T: OpenBLAS is 10-30% faster on these
    long-and-thin products (N*Hout*Wout is the long axis; for few channels tape's GEMM
    splits it into stretches, kernels/cpu/threads.py)."""
    if g.ndim != 2:  # jacobian cotangents with batch axes: the plain form
        return _matmul(g, swapaxes(cols, -1, -2))
    return swapaxes(_matmul(cols, swapaxes(g, -1, -2)), -1, -2)


_conv_gemm = Op(
    "conv_gemm",
    gemm,
    _weight_grad,
    lambda g, ans, w, cols: _matmul(swapaxes(w, -1, -2), g),
)


def _swap_leading(y):
    """(A, B, H, W) -> (B, A, H, W) as a C-contiguous copy (the activations that follow
    run in one pass over contiguous memory)."""
    if _cpu.applies(y):
        return _cpu.swap_leading(y)
    return backend.xp(y).ascontiguousarray(y.transpose(1, 0, 2, 3))


def _swap_leading_vjp(g, ans, y):
    if g.ndim == 4:
        return swap_leading(g)
    nb = len(lead_axes(g, 4))  # jacobian axes in front: swap the two after them
    return _transpose(g, axes=tuple(range(nb)) + (nb + 1, nb, nb + 2, nb + 3))


swap_leading = Op("swap_leading", _swap_leading, _swap_leading_vjp)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution (cross-correlation), as ``torch.nn.functional.conv2d``.

    ``x`` (N, Cin, H, W), ``weight`` (Cout, Cin // groups, kh, kw), ``bias`` (Cout,).
    """
    xs, ws = _shape(x), _shape(weight)
    if len(xs) != 4 or len(ws) != 4:
        raise ValueError(
            f"conv2d: expects input (N, C, H, W) and weight (Cout, Cin/groups, kh, kw), "
            f"got shapes {xs} and {ws}"
        )
    if groups < 1 or xs[1] % groups or ws[0] % groups or xs[1] // groups != ws[1]:
        raise ValueError(
            f"conv2d: input of shape {xs} has {xs[1]} channels, but weight of shape {ws} "
            f"expects {ws[1]} per group with groups={groups} (and Cout divisible by groups)"
        )
    if bias is not None and _shape(bias) != (ws[0],):
        raise ValueError(f"conv2d: bias of shape {_shape(bias)} should be ({ws[0]},)")
    same_dtype("conv2d", ("input", x), ("weight", weight), ("bias", bias))
    stride, padding = pair(stride, "stride", "conv2d"), pair(padding, "padding", "conv2d")
    dilation = pair(dilation, "dilation", "conv2d")
    k = (ws[2], ws[3])
    _, _, ho, wo = kernels.conv_output_shape(xs, k[0], k[1], stride, padding, dilation)
    cin, cout = ws[1], ws[0] // groups
    outs = []
    for gi in range(groups):
        xg = x if groups == 1 else getitem(x, (slice(None), slice(gi * cin, (gi + 1) * cin)))
        wg = weight if groups == 1 else getitem(weight, slice(gi * cout, (gi + 1) * cout))
        if _direct_applies(xg, wg, dilation, cin, groups):
            outs.append(direct_conv(xg, wg, stride=stride, padding=padding))
            continue
        if _winograd_applies(xg, wg, k, stride, dilation, cin):
            if _fused_applies((ho, wo), cin, cout):
                outs.append(winograd_conv(xg, winograd_weight(wg), padding=padding))
                continue
            m = _winograd_gemm(winograd_input(xg, padding=padding), winograd_weight(wg))
            outs.append(winograd_output(m, n=xs[0], out_hw=(ho, wo)))
            continue
        cols = im2col(xg, k=k, stride=stride, padding=padding, dilation=dilation)
        y = _conv_gemm(reshape(wg, shape=(cout, -1)), cols)  # one GEMM: (Cout, N*Hout*Wout)
        outs.append(swap_leading(reshape(y, shape=(cout, xs[0], ho, wo))))
    out = outs[0] if groups == 1 else concatenate(outs, axis=1)
    if bias is not None:
        out = add_bias(out, reshape(bias, shape=(1, ws[0], 1, 1)))
    return out


# ----- max pooling: scatter at the argmax, and gather there -----
def _unpool(g, argmax, x_shape):
    """Scatter-add ``g`` at the argmax positions into zeros of ``lead + x_shape``."""
    g, lead = _fold(g)
    idx = argmax if not lead else _tile(argmax, g.shape[0] // argmax.shape[0])
    return _unfold(kernels.max_pool2d_backward(g, idx, (g.shape[0],) + tuple(x_shape[1:])), lead)


def _tile(a, times):
    return backend.xp(a).concatenate([a] * times) if times > 1 else a


def _gather_at(g, argmax):
    """``g`` (lead + (N, C, H, W)) read at the argmax positions: lead + (N, C, Ho, Wo)."""
    flat = g.reshape(g.shape[:-2] + (-1,))
    idx = argmax.reshape((1,) * (g.ndim - 4) + argmax.shape[:2] + (-1,))
    out = backend.xp(g).take_along_axis(flat, idx, axis=-1)
    return out.reshape(g.shape[:-2] + argmax.shape[2:])


unpool = Op("max_unpool2d", _unpool,
            lambda g, ans, x, argmax, x_shape: gather_at(g, argmax=argmax))
gather_at = Op("gather_at", _gather_at,
               lambda g, ans, x, argmax: unpool(g, argmax=argmax, x_shape=x.shape[-4:]))
_max_pool = Op(
    "max_pool2d",
    lambda x, value, argmax: value,  # computed by the kernel together with the argmax
    lambda g, ans, x, value, argmax: unpool(g, argmax=argmax, x_shape=x.shape),
)


def _pool_args(op, kernel_size, stride, padding, dilation, ceil_mode):
    if ceil_mode:
        raise NotImplementedError(f"{op}: ceil_mode=True is not supported")
    if pair(dilation) != (1, 1):
        raise NotImplementedError(f"{op}: dilation other than 1 is not supported")
    k = pair(kernel_size)
    return k, k if stride is None or stride == () else pair(stride), pair(padding)


def _check_4d(op, x):
    if len(_shape(x)) != 4:
        raise ValueError(f"{op}: expects an input of shape (N, C, H, W), got {_shape(x)}")


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """Max pooling, as ``torch.nn.functional.max_pool2d`` (padding acts as -inf)."""
    _check_4d("max_pool2d", x)
    k, s, p = _pool_args("max_pool2d", kernel_size, stride, padding, dilation, ceil_mode)
    out, argmax = kernels.max_pool2d_forward(x.data if isinstance(x, Tensor) else x, k, s, p)
    y = _max_pool(x, value=out, argmax=argmax)
    return (y, Tensor(argmax)) if return_indices else y


# ----- average pooling: the forward and its adjoint -----
def _avg(x, k, stride, padding):
    x, lead = _fold(x)
    return _unfold(kernels.avg_pool2d_forward(x, k, stride, padding), lead)


def _avg_adjoint(g, x_shape, k, stride, padding):
    g, lead = _fold(g)
    shape = (g.shape[0],) + tuple(x_shape[1:])
    return _unfold(kernels.avg_pool2d_backward(g, shape, k, stride, padding), lead)


avg_pool = Op(
    "avg_pool2d",
    _avg,
    lambda g, ans, x, k, stride, padding: avg_unpool(
        g, x_shape=x.shape[-4:], k=k, stride=stride, padding=padding
    ),
)
avg_unpool = Op(
    "avg_pool2d_backward",
    _avg_adjoint,
    lambda g, ans, x, x_shape, k, stride, padding: avg_pool(g, k=k, stride=stride, padding=padding),
)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """Average pooling, as ``torch.nn.functional.avg_pool2d`` (padding counts as zeros)."""
    _check_4d("avg_pool2d", x)
    if not count_include_pad or divisor_override is not None:
        raise NotImplementedError(
            "avg_pool2d: only count_include_pad=True without divisor_override is supported"
        )
    k, s, p = _pool_args("avg_pool2d", kernel_size, stride, padding, 1, ceil_mode)
    return avg_pool(x, k=k, stride=s, padding=p)


def _bins(size, out, dtype):
    """Averaging matrix (out, size) of adaptive pooling: torch's floor/ceil bins."""
    m = np.zeros((out, size), dtype=dtype)
    for i in range(out):
        lo, hi = (i * size) // out, -((-(i + 1) * size) // out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


def adaptive_avg_pool2d(x, output_size):
    """Average over ``output_size`` bins per axis, as torch's ``adaptive_avg_pool2d``."""
    _check_4d("adaptive_avg_pool2d", x)
    n, c, h, w = _shape(x)
    if isinstance(output_size, int) or output_size is None:
        output_size = (output_size, output_size)
    oh, ow = (h if output_size[0] is None else output_size[0],
              w if output_size[1] is None else output_size[1])
    if oh < 1 or ow < 1:
        raise ValueError(f"adaptive_avg_pool2d: output_size must be positive, got "
                         f"{output_size}")
    if h % oh == 0 and w % ow == 0:
        k = (h // oh, w // ow)
        return avg_pool(x, k=k, stride=k, padding=(0, 0))
    data = x.data if isinstance(x, Tensor) else x
    xp = backend.xp(data)
    ph, pw = xp.asarray(_bins(h, oh, data.dtype)), xp.asarray(_bins(w, ow, data.dtype))
    return einsum("ih,nchw,jw->ncij", ph, x, pw)
