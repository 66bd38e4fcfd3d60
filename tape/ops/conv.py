"""Convolution (NCHW), on the kernels of the ``kernels`` package.

conv2d is composed, as Chainer does, from differentiable pieces: ``im2col`` (whose
VJP is ``col2im``, and the other way round), a matmul and reshapes. So the forward is
im2col + one GEMM, the input gradient is a GEMM + col2im, and second-order gradients
through a convolution come for free. Rules fold the extra leading (batch) axes of a
jacobian cotangent into N (``fold_lead``).

On the CPU two routes are faster where they apply, each an op with kernels for the first
order and the maps above, as ops, for higher orders and jacobians: Winograd F(2x2, 3x3)
for 3x3 stride-1 convolutions with >= 8 input channels (``winograd.py``), and direct
kernels for one input channel (kernels/README.md). Which route a convolution takes is the
kernels registry's choice (``kernels.conv2d_route``, the kernel "conv2d"), so that
``kernels.use("conv2d", "im2col")`` selects the im2col route. Pooling is in ``pool.py``.
"""

from __future__ import annotations

import numpy as np

import kernels
from kernels import pair
from kernels.cpu import elementwise as _cpu

from .. import backend
from ..tensor import Tensor
from .core import Op, lead_axes
from .elementwise import add_bias
from .indexing import getitem
from .linalg import _matmul, gemm
from .nn import same_dtype
from .shape import _transpose, concatenate, pad, reshape, swapaxes
from .winograd import (
    _fused_applies,
    _winograd_gemm,
    winograd_conv,
    winograd_input,
    winograd_output,
    winograd_weight,
)


def _shape(x):
    return tuple(x.shape) if isinstance(x, Tensor) else np.shape(x)


def _array(x):
    return x.data if isinstance(x, Tensor) else x


# ----- im2col and col2im: each the other's vector-Jacobian product -----
def _im2col(x, k, stride, padding, dilation):
    return kernels.im2col(x, k[0], k[1], stride, padding, dilation)


def _col2im(cols, x_shape, k, stride, padding, dilation):
    return kernels.col2im(cols, x_shape, k[0], k[1], stride, padding, dilation)


def _im2col_vjp(g, ans, x, k, stride, padding, dilation):
    return _cols_adjoint(g, ans.shape[0], x.shape, k, stride, padding, dilation)


def _cols_adjoint(g, rows, x_shape, k, stride, padding, dilation):
    """col2im of ``g`` (lead + (rows, N*L)) into lead + ``x_shape``."""
    nb = len(lead_axes(g, 2))
    lead = tuple(g.shape[:nb])
    if nb:  # lead + (K, N*L) -> (K, lead*N*L): columns are n-major, so lead folds into N
        g = _transpose(g, axes=(nb,) + tuple(range(nb)) + (nb + 1,))
        g = reshape(g, shape=(rows, -1))
    n = int(np.prod(lead, dtype=np.int64)) * x_shape[0]
    out = col2im(g, x_shape=(n,) + tuple(x_shape[1:]), k=k, stride=stride, padding=padding,
                 dilation=dilation)
    return reshape(out, shape=lead + tuple(x_shape)) if nb else out


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



# ----- direct convolution for one input channel (kernels/cpu/direct.py) -----
try:
    from kernels.cpu import direct as _direct
except ImportError:  # no numba: the im2col route
    _direct = None


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


# The im2col route's convolution, (Cout, K) @ im2col(x): the columns (K = Cin*kh*kw
# times the input for stride 1) are a temporary. The weight's rule makes them again from
# x, so the entry keeps x and the weight, as PyTorch's does. Measured on a 2-core CPU,
# fwd + both gradients, recomputing against keeping the columns: 5x5 on (32, 16, 28, 28)
# 23.6 vs 22.8 ms, keeping 1.7 vs 40.2 MB; 3x3 stride 2 on (64, 32, 28, 28) 14.0 vs 12.8
# ms, 6.5 vs 14.5 MB; 3x3 on (64, 3, 32, 32) 5.8 vs 5.5 ms, 0.8 vs 7.1 MB.
def _conv_im2col(x, w2, k, stride, padding, dilation):
    return gemm(w2, _im2col(x, k, stride, padding, dilation))


def _conv_im2col_dx(g, ans, x, w2, k, stride, padding, dilation):
    gc = _matmul(swapaxes(w2, -1, -2), g)  # lead + (K, N*Hout*Wout)
    return _cols_adjoint(gc, w2.shape[-1], x.shape, k, stride, padding, dilation)


def _conv_im2col_dw(g, ans, x, w2, k, stride, padding, dilation):
    cols = im2col(x, k=k, stride=stride, padding=padding, dilation=dilation)
    return _weight_grad(g, None, None, cols)


conv_im2col = Op("conv_im2col", _conv_im2col, _conv_im2col_dx, _conv_im2col_dw)


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
        route = ("im2col" if getattr(xg, "_mapped", 0) or getattr(wg, "_mapped", 0)  # vmap
                 else kernels.conv2d_route(_array(xg), _array(wg), stride, padding, dilation))
        if route == "direct":
            outs.append(direct_conv(xg, wg, stride=stride, padding=padding))
            continue
        if route == "winograd":
            if _fused_applies(xs[0], (ho, wo), cin, cout, _array(xg).dtype.itemsize):
                outs.append(winograd_conv(xg, winograd_weight(wg), padding=padding))
                continue
            m = _winograd_gemm(winograd_input(xg, padding=padding), winograd_weight(wg))
            outs.append(winograd_output(m, n=xs[0], out_hw=(ho, wo)))
            continue
        y = conv_im2col(xg, reshape(wg, shape=(cout, -1)), k=k, stride=stride,
                        padding=padding, dilation=dilation)  # (Cout, N*Hout*Wout)
        outs.append(swap_leading(reshape(y, shape=(cout, xs[0], ho, wo))))
    out = outs[0] if groups == 1 else concatenate(outs, axis=1)
    if bias is not None:
        out = add_bias(out, reshape(bias, shape=(1, ws[0], 1, 1)))
    return out




# ----- conv1d: conv2d on a height-1 image -----
def _single(value, name, op):
    """An int or a 1-tuple of ints, as an int (torch's _single)."""
    if isinstance(value, (tuple, list)) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{op}: {name} must be an int or a 1-tuple of ints, got {value!r}")
    return int(value)


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """1-D convolution (cross-correlation), as ``torch.nn.functional.conv1d``: conv2d on
    a height-1 image, so it takes conv2d's routes and inherits its derivatives.

    ``x`` (N, Cin, L), ``weight`` (Cout, Cin // groups, k), ``bias`` (Cout,).
    """
    xs, ws = _shape(x), _shape(weight)
    if len(xs) != 3 or len(ws) != 3:
        raise ValueError(
            f"conv1d: expects input (N, C, L) and weight (Cout, Cin/groups, k), got shapes "
            f"{xs} and {ws}"
        )
    stride, padding = _single(stride, "stride", "conv1d"), _single(padding, "padding", "conv1d")
    dilation = _single(dilation, "dilation", "conv1d")
    out = conv2d(reshape(x, shape=(xs[0], xs[1], 1, xs[2])),
                 reshape(weight, shape=(ws[0], ws[1], 1, ws[2])), bias, stride=(1, stride),
                 padding=(0, padding), dilation=(1, dilation), groups=groups)
    n, c, _, lo = _shape(out)
    return reshape(out, shape=(n, c, lo))


# ----- conv_transpose2d: conv2d's input gradient as a forward -----
def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """Transposed 2-D convolution, as ``torch.nn.functional.conv_transpose2d``.

    ``x`` (N, Cin, H, W), ``weight`` (Cin, Cout // groups, kh, kw), ``bias`` (Cout,);
    ``Hout = (H - 1)*stride - 2*padding + dilation*(kh - 1) + output_padding + 1``. The
    forward is conv2d's input gradient on the im2col route's ops, ``col2im(W2.T @ x2)``,
    so its derivatives (a conv2d and a weight GEMM), vmap and forward mode come with them.
    """
    xs, ws = _shape(x), _shape(weight)
    if len(xs) != 4 or len(ws) != 4:
        raise ValueError(
            f"conv_transpose2d: expects input (N, Cin, H, W) and weight (Cin, Cout/groups, "
            f"kh, kw), got shapes {xs} and {ws}"
        )
    if groups < 1 or xs[1] != ws[0] or ws[0] % groups:
        raise ValueError(
            f"conv_transpose2d: input of shape {xs} has {xs[1]} channels, but weight of shape "
            f"{ws} expects {ws[0]} (its first axis, divisible by groups={groups})"
        )
    cout = ws[1] * groups
    if bias is not None and _shape(bias) != (cout,):
        raise ValueError(f"conv_transpose2d: bias of shape {_shape(bias)} should be ({cout},)")
    same_dtype("conv_transpose2d", ("input", x), ("weight", weight), ("bias", bias))
    op = "conv_transpose2d"
    stride, padding = pair(stride, "stride", op), pair(padding, "padding", op)
    dilation, out_pad = pair(dilation, "dilation", op), pair(output_padding, "output_padding", op)
    k = (ws[2], ws[3])
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0 or min(out_pad) < 0:
        raise ValueError(f"{op}: stride and dilation must be positive, padding and "
                         f"output_padding not negative; got stride={stride}, padding={padding}, "
                         f"dilation={dilation}, output_padding={out_pad}")
    if any(o >= max(s, d) for o, s, d in zip(out_pad, stride, dilation)):
        raise ValueError(f"{op}: output_padding={out_pad} must be smaller than either stride="
                         f"{stride} or dilation={dilation}")
    full = [(i - 1) * s + d * (kk - 1) + 1 for i, s, d, kk in zip(xs[2:], stride, dilation, k)]
    out_hw = tuple(f - 2 * p + o for f, p, o in zip(full, padding, out_pad))
    if min(out_hw) < 1:
        raise ValueError(f"{op}: input of shape {xs} with kernel {k}, stride={stride}, padding="
                         f"{padding}, dilation={dilation} gives an empty output {out_hw}")
    # output_padding < stride: col2im writes the output at once; else (a dilation's
    # allowance) col2im writes the uncropped output, cropped and padded after
    direct = all(o < s for o, s in zip(out_pad, stride))
    cols_hw, cols_pad = (out_hw, padding) if direct else (tuple(full), (0, 0))
    cin, cout_g = ws[0] // groups, ws[1]
    x2 = reshape(swap_leading(x), shape=(xs[1], -1))  # (Cin, N*H*W), n-major columns
    outs = []
    for gi in range(groups):
        xg = x2 if groups == 1 else getitem(x2, slice(gi * cin, (gi + 1) * cin))
        wg = weight if groups == 1 else getitem(weight, slice(gi * cin, (gi + 1) * cin))
        cols = _matmul(swapaxes(reshape(wg, shape=(cin, -1)), -1, -2), xg)  # (Cout_g*kh*kw, .)
        outs.append(col2im(cols, x_shape=(xs[0], cout_g) + cols_hw, k=k, stride=stride,
                           padding=cols_pad, dilation=dilation))
    out = outs[0] if groups == 1 else concatenate(outs, axis=1)
    if not direct:
        (h, w), (ph, pw) = out_hw, padding
        out = getitem(out, (slice(None), slice(None), slice(ph, ph + h), slice(pw, pw + w)))
        _, _, hc, wc = _shape(out)
        out = pad(out, (0, w - wc, 0, h - hc))
    if bias is not None:
        out = add_bias(out, reshape(bias, shape=(1, cout, 1, 1)))
    return out
