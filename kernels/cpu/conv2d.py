"""conv2d's fast CPU routes as implementations of the kernel "conv2d" (kernels/convolution.py):
plain forwards ``fn(x, w, g) -> y``, each registered with the convolutions it can take.
tape's conv2d runs the same kernels through its own differentiable ops (tape/ops/conv.py,
tape/ops/winograd.py) once the registry has chosen the route.
"""

from __future__ import annotations

from .. import config
from ..registry import register
from . import direct, winograd
from .threads import matmul


def _same_dtype(x, w):
    return x.dtype == w.dtype


def winograd_applies(x, w, g):
    """F(2x2, 3x3): 3x3 windows, stride 1, no dilation."""
    return (g.kh, g.kw, g.sh, g.sw, g.dh, g.dw) == (3, 3, 1, 1, 1, 1) and _same_dtype(x, w)


def winograd_fused(n, out_hw, cin, cout, itemsize):
    """Whether a Winograd convolution of ``n`` images runs the fused kernels (one pass per
    chunk of images) rather than the batched GEMMs. Where each of one image's GEMMs is
    small enough for one thread and the kernels can call BLAS (``winograd.HAS_BLAS``):
    for few channels (harmonic mean of Cin and Cout at most the setting
    ``winograd_fused_max_channels``; 0 turns the fused kernels off), where the transforms'
    memory traffic costs more than the GEMMs; and for more channels where a chunk's GEMMs
    have at least ``FUSED_MIN_ROWS`` rows (tiles), below which each call's packing and
    setup cost more than the batched route's passes over memory."""
    fused_max = config.current().winograd_fused_max_channels
    tiles = winograd.tiles(out_hw[0]) * winograd.tiles(out_hw[1])
    if not fused_max or tiles * cin * cout > 1 << 18 or not winograd.HAS_BLAS:
        return False
    rows = tiles * winograd.images_per_chunk(n, tiles, cin, cout, itemsize)
    return 2 * cin * cout <= fused_max * (cin + cout) or rows >= FUSED_MIN_ROWS


FUSED_MIN_ROWS = 24  # from 27 rows the fused kernels won, at 16 lost (kernels/README.md)


@register("conv2d", "cpu", impl="winograd", applies=winograd_applies)
def winograd_conv2d(x, w, g):
    """Winograd F(2x2, 3x3): the fused kernels or the transforms around 16 batched GEMMs."""
    u = winograd.weight_transform(w)
    if winograd_fused(g.n, (g.ho, g.wo), g.c, w.shape[0], x.dtype.itemsize):
        return winograd.fused_forward(x, u, g.padding)
    v = winograd.transformed_input(x, g.padding)
    return winograd.output(matmul(v, u), g.n, (g.ho, g.wo))


def direct_applies(x, w, g):
    """One input channel (a first layer on grey images), no dilation."""
    return g.c == 1 and g.dilation == (1, 1) and _same_dtype(x, w)


@register("conv2d", "cpu", impl="direct", applies=direct_applies)
def direct_conv2d(x, w, g):
    """kh*kw shifted multiply-adds of each input plane (kernels/cpu/direct.py)."""
    return direct.forward(x, w, g.stride, g.padding)
