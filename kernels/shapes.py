"""Argument normalisation and output-shape arithmetic shared by every kernel implementation.

All the shape checks live here so that every implementation (reference, numba, CUDA, or a
user's drop-in) sees the same normalised arguments and the user sees the same error messages.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

__all__ = [
    "ConvGeometry",
    "PoolGeometry",
    "ScatterGeometry",
    "pair",
    "conv_output_shape",
    "conv_geometry",
    "conv2d_geometry",
    "pool_geometry",
    "check_cols",
    "check_max_pool_grad",
    "check_avg_pool_grad",
]


def _fields(*names, doc):
    """A read-only property: the tuple of these fields."""
    return property(lambda g: tuple(getattr(g, n) for n in names), doc=doc)


_X_SHAPE = _fields("n", "c", "h", "w", doc="(N, C, H, W): the input's shape")
_OUT_SHAPE = _fields("n", "c", "ho", "wo", doc="(N, C, Hout, Wout): the output's shape")
_KERNEL_SIZE = _fields("kh", "kw", doc="(kh, kw)")
_STRIDE = _fields("sh", "sw", doc="(sh, sw)")
_PADDING = _fields("ph", "pw", doc="(ph, pw)")


class ConvGeometry(NamedTuple):
    """A ``kh x kw`` window sliding over an (N, C, H, W) input, validated: what im2col and
    col2im implementations receive as ``g``. Fields are ints, in the order of the numba
    and CUDA kernels' parameters (so ``*g`` passes them all)."""

    n: int
    c: int
    h: int
    w: int
    kh: int
    kw: int
    sh: int  # stride
    sw: int
    ph: int  # padding
    pw: int
    dh: int  # dilation
    dw: int
    ho: int  # output size
    wo: int

    x_shape = _X_SHAPE
    out_shape = _OUT_SHAPE
    kernel_size = _KERNEL_SIZE
    stride = _STRIDE
    padding = _PADDING
    dilation = _fields("dh", "dw", doc="(dh, dw)")

    @property
    def cols_shape(self):
        """im2col's ``(C*kh*kw, N*Hout*Wout)``."""
        return self.c * self.kh * self.kw, self.n * self.ho * self.wo


class PoolGeometry(NamedTuple):
    """A pooling window over an (N, C, H, W) input, validated: what pooling forward and
    avg_pool2d_backward implementations receive as ``g`` (fields in the kernels'
    parameter order, as :class:`ConvGeometry` without dilation)."""

    n: int
    c: int
    h: int
    w: int
    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int
    ho: int
    wo: int

    x_shape = _X_SHAPE
    out_shape = _OUT_SHAPE
    kernel_size = _KERNEL_SIZE
    stride = _STRIDE
    padding = _PADDING

    @property
    def plain_2x2(self):
        """2x2 windows, stride 2, no padding: the common CNN case, with kernels of its own."""
        return (self.kh, self.kw, self.sh, self.sw, self.ph, self.pw) == (2, 2, 2, 2, 0, 0)


class ScatterGeometry(NamedTuple):
    """What max_pool2d_backward implementations receive as ``g``: gradients of shape
    (N, C, Hout, Wout) go to the (N, C, H, W) positions argmax holds (no window needed)."""

    n: int
    c: int
    h: int
    w: int
    ho: int
    wo: int

    x_shape = _X_SHAPE
    out_shape = _OUT_SHAPE


def pair(value, name: str = "value", op: str = "kernel") -> tuple[int, int]:
    """Normalise an int or an ``(h, w)`` pair to a tuple of two Python ints.

    >>> pair(3), pair((1, 2))
    ((3, 3), (1, 2))
    """
    if type(value) is int:  # the common cases first: every conv and pooling call gets here
        return value, value
    if type(value) is tuple and len(value) == 2 and type(value[0]) is int is type(value[1]):
        return value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value), int(value)
    try:
        a, b = value
        if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in (a, b)):
            raise TypeError
    except (TypeError, ValueError):
        raise ValueError(
            f"{op}: {name} must be an int or an (h, w) pair of ints, got {value!r}"
        ) from None
    return int(a), int(b)


def _shape4(shape, op: str, what: str = "input") -> tuple[int, int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 4:
        raise ValueError(f"{op} expects a 4-d (N, C, H, W) {what}, got shape {shape}")
    if any(s < 0 for s in shape):
        raise ValueError(f"{op}: {what} shape {shape} has a negative dimension")
    return shape  # type: ignore[return-value]


def conv_output_shape(x_shape, kh, kw, stride=1, padding=0, dilation=1) -> tuple[int, ...]:
    """Output shape ``(N, C, Hout, Wout)`` of sliding a ``kh x kw`` window over ``x_shape``.

    ``Hout = (H + 2*ph - dh*(kh - 1) - 1) // sh + 1`` (and likewise for W), as in
    ``torch.nn.functional.conv2d``. Raises ``ValueError`` for impossible shapes.

    >>> conv_output_shape((2, 3, 28, 28), 3, 3, stride=1, padding=1)
    (2, 3, 28, 28)
    """
    return conv_geometry(x_shape, kh, kw, stride, padding, dilation,
                         op="conv_output_shape").out_shape


def conv_geometry(x_shape, kh, kw, stride=1, padding=0, dilation=1,
                  op: str = "im2col") -> ConvGeometry:
    """Validate a sliding window's arguments; raise ``ValueError`` naming ``op`` otherwise."""
    n, c, h, w = _shape4(x_shape, op)
    kh, kw = pair((kh, kw), "kernel size", op)
    sh, sw = pair(stride, "stride", op)
    ph, pw = pair(padding, "padding", op)
    dh, dw = pair(dilation, "dilation", op)
    if kh <= 0 or kw <= 0:
        raise ValueError(f"{op}: kernel size must be positive, got {kh}x{kw}")
    if sh <= 0 or sw <= 0:
        raise ValueError(f"{op}: stride must be positive, got {(sh, sw)}")
    if ph < 0 or pw < 0:
        raise ValueError(f"{op}: padding must be non-negative, got {(ph, pw)}")
    if dh <= 0 or dw <= 0:
        raise ValueError(f"{op}: dilation must be positive, got {(dh, dw)}")
    ekh, ekw = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    hp, wp = h + 2 * ph, w + 2 * pw
    if ekh > hp or ekw > wp:
        raise ValueError(
            f"{op}: kernel {kh}x{kw} (dilation {dh}x{dw}, effective {ekh}x{ekw}) is larger than "
            f"the padded input {hp}x{wp} (input shape {(n, c, h, w)}, padding {(ph, pw)}); "
            f"use a smaller kernel or more padding"
        )
    ho, wo = (hp - ekh) // sh + 1, (wp - ekw) // sw + 1
    return ConvGeometry(n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo)


def conv2d_geometry(x_shape, w_shape, stride=1, padding=0, dilation=1,
                    op: str = "conv2d") -> ConvGeometry:
    """Validate a convolution of ``x_shape`` (N, C, H, W) with weights ``w_shape``
    (Cout, C, kh, kw); the window is the weights'."""
    ws = tuple(int(s) for s in w_shape)
    xs = _shape4(x_shape, op)
    if len(ws) != 4 or ws[1] != xs[1]:
        raise ValueError(f"{op}: weight of shape {ws} should be (Cout, C, kh, kw) with C the "
                         f"input's {xs[1]} channels (input shape {xs})")
    return conv_geometry(xs, ws[2], ws[3], stride, padding, dilation, op=op)


def pool_geometry(x_shape, k, stride=None, padding=0, op: str = "max_pool2d") -> PoolGeometry:
    """Validate pooling arguments; raise ``ValueError`` naming ``op`` otherwise.

    ``stride=None`` means ``stride = k`` (torch's default). As in torch, padding may be at
    most half the kernel size, so that every window holds at least one real element.
    """
    kh, kw = pair(k, "kernel size", op)
    sh, sw = (kh, kw) if stride is None else pair(stride, "stride", op)
    ph, pw = pair(padding, "padding", op)
    if kh > 0 and kw > 0 and (ph > kh // 2 or pw > kw // 2):
        raise ValueError(
            f"{op}: padding {(ph, pw)} must be at most half the kernel size {kh}x{kw} "
            f"(as in torch); reduce the padding"
        )
    g = conv_geometry(x_shape, kh, kw, (sh, sw), (ph, pw), 1, op=op)
    return PoolGeometry(g.n, g.c, g.h, g.w, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.ho, g.wo)


def check_cols(cols_shape, x_shape, kh, kw, stride=1, padding=0, dilation=1,
               op: str = "col2im") -> ConvGeometry:
    """Validate ``col2im`` arguments against the im2col layout."""
    g = conv_geometry(x_shape, kh, kw, stride, padding, dilation, op=op)
    if tuple(cols_shape) != g.cols_shape:
        raise ValueError(
            f"{op}: cols has shape {tuple(cols_shape)}, but x_shape {tuple(x_shape)} with kernel "
            f"{g.kh}x{g.kw}, stride {g.stride}, padding {g.padding}, dilation {g.dilation} "
            f"needs (C*kh*kw, N*Hout*Wout) = {g.cols_shape}"
        )
    return g


def check_max_pool_grad(grad_shape, argmax_shape, x_shape,
                        op: str = "max_pool2d_backward") -> ScatterGeometry:
    """Validate ``max_pool2d_backward`` shapes."""
    n, c, h, w = _shape4(x_shape, op, "x_shape")
    grad_shape, argmax_shape = tuple(grad_shape), tuple(argmax_shape)
    if len(grad_shape) != 4 or grad_shape != argmax_shape or grad_shape[:2] != (n, c):
        raise ValueError(
            f"{op}: grad_out {grad_shape} and argmax {argmax_shape} must have the same shape "
            f"(N, C, Hout, Wout) with N, C matching x_shape {(n, c, h, w)}"
        )
    return ScatterGeometry(n, c, h, w, grad_shape[2], grad_shape[3])


def check_avg_pool_grad(grad_shape, x_shape, k, stride=None, padding=0,
                        op: str = "avg_pool2d_backward") -> PoolGeometry:
    """Validate ``avg_pool2d_backward`` arguments."""
    g = pool_geometry(x_shape, k, stride, padding, op=op)
    if tuple(grad_shape) != g.out_shape:
        raise ValueError(
            f"{op}: grad_out has shape {tuple(grad_shape)}, expected {g.out_shape} for x_shape "
            f"{tuple(x_shape)}, kernel {g.kernel_size}, stride {g.stride}, padding {g.padding}"
        )
    return g
