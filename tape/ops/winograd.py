"""Winograd F(2x2, 3x3) convolutions on the CPU: the route ``conv2d`` takes for 3x3
stride-1 convolutions with enough input channels (kernels/cpu/winograd.py has the
kernels and says why the maps below give the same convolution).
"""

from __future__ import annotations

import math

import numpy as np

from .core import Op, fold_lead, unfold_lead
from .linalg import _matmul, gemm
from .shape import swapaxes


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
# Whether conv2d takes this route is the registry's choice (kernels/convolution.py), and
# whether in the fused form, kernels.cpu.conv2d.winograd_fused's.
try:
    from kernels.cpu import winograd as _wino
    from kernels.cpu.conv2d import winograd_fused as _fused_applies
except ImportError:  # no numba: the registry has no Winograd route
    _wino = _fused_applies = None


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
    xf, lead = fold_lead(x)
    return _to_lead_major(_wino.transformed_input(xf, padding), lead)


def _winograd_input_adjoint(dv, x_shape, padding):
    d, lead = _from_lead_major(dv)
    shape = (math.prod(lead) * x_shape[0],) + tuple(x_shape[1:])
    return unfold_lead(_wino.input_adjoint(d, shape, padding), lead)


def _winograd_output(m, n, out_hw):
    d, lead = _from_lead_major(m)
    return unfold_lead(_wino.output(d, math.prod(lead) * n, out_hw), lead)


def _winograd_output_adjoint(g):
    gf, lead = fold_lead(g)
    return _to_lead_major(_wino.transformed_grad(gf), lead)


def _winograd_weight(w):
    wf, lead = fold_lead(w)  # leading axes folded into Cout
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
    return unfold_lead(_wino.weight_transform_adjoint(du), lead)


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


