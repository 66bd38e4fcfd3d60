"""The kernel "conv2d": a convolution on arrays, one implementation per route.

Each implementation is a plain forward, ``fn(x, w, g) -> y`` (``g``: the
:class:`~kernels.shapes.ConvGeometry` of ``x`` and the window of ``w``), registered and
selected like every other kernel, so that the routes are listed, tested against the
reference and timed side by side:

* "im2col" (here, every device): im2col, the implementation in effect, and one GEMM;
* "winograd", "direct" (kernels/cpu/conv2d.py): the fast CPU routes, each registered with
  the convolutions it can take (``applies``);
* "auto" (here, the CPU default): picks one of those by :func:`auto_route`;
* "reference" (kernels/reference.py): the reference im2col and one GEMM.

tape's ``F.conv2d`` asks :func:`conv2d_route` which route to take and runs that route's
differentiable ops, so ``with kernels.use("conv2d", "im2col"):`` makes every convolution
in the block take the im2col route.
"""

from __future__ import annotations

from . import config
from .cpu import threads
from .reference import conv2d_from_cols
from .registry import DEVICES, call, device_of, get, register, resolve, selected_impl, takes
from .shapes import conv2d_geometry

ROUTES = ("im2col", "winograd", "direct")  # the routes tape's conv2d has ops for


def im2col_route(x, w, g):
    """im2col (the implementation in effect) and one GEMM (on the CPU through
    kernels/cpu/threads.py's ``matmul``)."""
    matmul = threads.matmul if device_of(x) == "cpu" else None
    return conv2d_from_cols(call("im2col", x, g), w, g, matmul)


for _device in DEVICES:  # the only route on the GPU, where it is the default
    register("conv2d", _device, im2col_route, impl="im2col", dtypes=None,
             default=_device == "cuda")


def auto_route(x, w, g) -> str:
    """The route "auto" takes: "direct" for one input channel; "winograd" for 3x3 stride-1
    convolutions with at least ``winograd_min_channels`` input channels (fewer: im2col's
    GEMM is faster); else "im2col". The fast routes only while the built-in numba im2col is
    in effect: a drop-in im2col (``kernels.use``, or registered as the default) takes
    every convolution, so that an experiment with it measures what it means to."""
    device = device_of(x)
    if selected_impl("im2col", device) == "numba":
        if takes("conv2d", device, "direct", x, w, g):
            return "direct"
        if (g.c >= config.current().winograd_min_channels
                and takes("conv2d", device, "winograd", x, w, g)):
            return "winograd"
    return "im2col"


@register("conv2d", "cpu", impl="auto", default=True, dtypes=None)
def auto(x, w, g):
    """The route :func:`auto_route` picks."""
    return get("conv2d", "cpu", auto_route(x, w, g))(x, w, g)


def conv2d_route(x, w, stride=1, padding=0, dilation=1) -> str:
    """The implementation of "conv2d" that these arrays would run now, "auto" resolved to
    its pick: one of :data:`ROUTES`, or "reference" (where the selected route does not
    take them) or a drop-in's name. tape takes its im2col route for any but
    "winograd" and "direct"."""
    g = conv2d_geometry(x.shape, w.shape, stride, padding, dilation)
    impl = resolve("conv2d", x, w, g)
    return auto_route(x, w, g) if impl == "auto" else impl
