"""Compile every CPU kernel for float32 into numba's cache: ``python -m kernels.cpu.precompile``.

numba compiles a kernel on its first call and caches it on disk, so only the first run
after an install pays (about a second per kernel; a CNN's first step needs a dozen).
Run this once after installing to pay it up front. ``import kernels`` (and so ``import
tape``) also starts it by itself, in the background on a second core, when numba's cache
lacks the kernels (kernels/cpu/jit.py): a first training step then compiles its forward
kernels while this process compiles the backward ones (it goes through them
backward-first), and neither compiles what the other is compiling: while this process
compiles a kernel it holds a lock named after it, and a first call of that kernel in the
training process waits for the lock (:func:`wait_for`) and loads the result from the
cache. ``TAPE_PRECOMPILE=0`` turns the background start off; one runs at a time.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time

import numpy as np

try:
    import fcntl
except ImportError:  # not POSIX: no locks; each process compiles what it needs
    fcntl = None

# kernels compiled into a kernel's code (numba links them in): its first call waits for them
DEPENDS = {
    "_forward_s1": ("_pad_plane",), "_input_grad_s1": ("_pad_plane",),
    "_weight_grad_s1": ("_pad_plane",),
    "_fused_forward": ("_input_image", "_output_image"),
    "_fused_backward": ("_output_adjoint_image", "_input_adjoint_image", "_input_image"),
    "_input": ("_input_image",), "_output": ("_output_image",),
    "_input_adjoint": ("_input_adjoint_image",),
    "_output_adjoint": ("_output_adjoint_image",),
    "_attention_mix": ("_attention_scores",),  # compiled by the same item
}


def _items(dtype=np.float32):
    """(kernel name, a small call compiling it), a CNN's backward kernels first, with the
    argument types the wrappers pass at run time (so the signatures training will use).
    The arguments are made without kernels, so that nothing compiles out of this order."""
    from ..shapes import check_max_pool_grad, conv_geometry, pool_geometry
    from . import attention, direct, elementwise, im2col, pool, winograd

    rng = np.random.default_rng(0)

    def a(*shape):
        return rng.standard_normal(shape).astype(dtype)

    x, g, u, pooled, cols = a(4, 8, 12, 12), a(4, 8, 12, 12), a(16, 8, 8), a(4, 8, 6, 6), a(72, 576)
    arg, v, m, big = np.zeros(pooled.shape, np.int64), a(16, 144, 8), a(16, 36, 8), a(1 << 14)
    conv = conv_geometry(x.shape, 3, 3, 1, 1, 1)
    two, three = pool_geometry(x.shape, 2), pool_geometry(x.shape, 3, 1, 1)  # 3: the general
    scatter = check_max_pool_grad(pooled.shape, arg.shape, x.shape)  # pooling kernels
    grey, wg, gg = a(4, 1, 12, 12), a(8, 1, 3, 3), a(4, 8, 12, 12)  # a first layer's conv
    heads = a(2, 6, 2, 4).transpose(0, 2, 1, 3)  # (N, heads, L, E) of an (N, L, heads, E)
    rows = a(4, 8)  # a layer norm's; a classifier's logits
    labels = np.arange(4, dtype=np.intp)  # their targets
    return [
        ("_output_adjoint_image", lambda: winograd._output_adjoint_image(g, 0, m, 0, 6, 6)),
        ("_input_adjoint_image", lambda: winograd._input_adjoint_image(m, 0, x, 0, 1, 1, 6, 6)),
        ("_pad_plane", lambda: direct._pad_plane(grey.reshape(-1), 0, 12, 12, big, 1, 1, 14, 15)),
        ("_weight_grad_s1", lambda: direct.weight_grad(gg, grey, wg.shape, (1, 1), (1, 1))),
        ("_input_image", lambda: winograd._input_image(x, 0, m, 0, 1, 1, 6, 6)),  # (forward's)
        ("_fused_backward", lambda: winograd.fused_backward(g, x, u, (1, 1))),
        ("_max_bwd", lambda: pool.max_pool2d_backward(pooled, arg, scatter)),
        ("_relu_grad", lambda: elementwise.relu_grad(big, big)),
        ("_cross_entropy_rows", lambda: elementwise.cross_entropy_grad(  # loss and gradient
            rows, labels, rows[:, 0].copy(), 1.0)),
        ("_sum_rows", lambda: elementwise.sum_rows(rows)),  # a linear layer's bias gradient
        ("_swap_leading", lambda: elementwise.swap_leading(x)),  # an im2col conv's both ways
        ("_outer", lambda: elementwise.outer(rows, rows)),  # per-example weight gradients
        ("_layer_norm_grad_rows", lambda: elementwise.layer_norm_rows_grad(
            rows, rows, rows[0], 1e-5)),
        ("_standardize_grad_rows", lambda: elementwise.standardize_rows_grad(
            rows, rows, rows, 1e-5)),
        ("_attention_backward", lambda: attention.attention_backward(
            heads, heads, heads, heads, a(2, 2, 6, 6), 0.5)),
        ("_col2im", lambda: im2col.col2im(cols, conv)),
        ("_input_grad_s1", lambda: direct.input_grad(gg, wg, grey.shape, (1, 1), (1, 1))),
        ("_sgd_momentum", lambda: elementwise.sgd_momentum_(big.copy(), big, big.copy(), .1, .9)),
        ("_output_image", lambda: winograd._output_image(m, 0, x, 0, 6, 6)),
        ("_fused_forward", lambda: winograd.fused_forward(x, u, (1, 1))),
        ("_forward_s1", lambda: direct.forward(grey, wg, (1, 1), (1, 1))),
        ("_relu", lambda: elementwise.relu(big)),
        ("_add_channel_bias", lambda: elementwise.add_channel_bias(x, x[0, :, 0, 0].copy())),
        ("_add_to_rows", lambda: elementwise.add_to_rows_(rows.copy(), rows[0].copy())),
        ("_add_rows", lambda: elementwise.add_rows(rows, np.arange(4) % 2, 2)),
        ("_layer_norm_rows", lambda: elementwise.layer_norm_rows(rows, rows[0], rows[1], 1e-5)),
        ("_standardize_rows", lambda: elementwise.standardize_rows(rows, 1e-5)),
        ("_attention_scores", lambda: [attention.attention(heads, heads, heads, mask, .5, False)
                                       for mask in (None, a(6, 6))]),  # with a mask: a
        # read-only view, another type
        ("_max_fwd_2x2", lambda: pool.max_pool2d_forward(x, two)),
        ("_im2col", lambda: im2col.im2col(x, conv)),
        ("_output_adjoint", lambda: winograd.transformed_grad(g)),
        ("_input_adjoint", lambda: winograd.input_adjoint(v, x.shape, (1, 1))),
        ("_input", lambda: winograd.transformed_input(x, (1, 1))),
        ("_output", lambda: winograd.output(v, 4, (12, 12))),
        ("_avg_bwd_2x2", lambda: pool.avg_pool2d_backward(pooled, two)),
        ("_avg_fwd_2x2", lambda: pool.avg_pool2d_forward(x, two)),
        ("_max_fwd", lambda: pool.max_pool2d_forward(x, three)),
        ("_avg_bwd", lambda: pool.avg_pool2d_backward(g, three)),
        ("_forward", lambda: direct.forward(grey, wg, (2, 2), (1, 1))),
        ("_input_grad", lambda: direct.input_grad(a(4, 8, 6, 6), wg, grey.shape, (2, 2), (1, 1))),
        ("_weight_grad", lambda: direct.weight_grad(a(4, 8, 6, 6), grey, wg.shape, (2, 2),
                                                    (1, 1))),
        ("_avg_fwd", lambda: pool.avg_pool2d_forward(x, three)),  # last: "all done"
    ]


def done():
    """Whether numba's cache holds the kernels already (the last one compiled here is in it);
    True also where that cannot be told, so that nothing is started then."""
    from . import pool

    try:
        return os.path.exists(pool._avg_fwd._cache._cache_file._index_path)
    except AttributeError:  # numba's internals moved: do not guess
        return True


# ----- locks: one for the whole run, one per kernel being compiled -----


def _path(name):
    folder = os.path.join(tempfile.gettempdir(), f"tape-precompile-{os.getuid()}")
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f"{name}.lock")


@contextlib.contextmanager
def _held(name, mode, wait=True):
    """Hold the lock ``name`` (``fcntl.LOCK_EX`` or ``LOCK_SH``) in the block; yields False
    instead of waiting when ``wait`` is false and another process holds it."""
    if fcntl is None:
        yield True
        return
    with open(_path(name), "a") as f:
        try:
            fcntl.flock(f, mode | (0 if wait else fcntl.LOCK_NB))
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def running():
    """Whether a precompiler holds the run's lock now (none can without a temporary
    folder to keep its locks in)."""
    try:
        with _held("run", fcntl.LOCK_SH if fcntl else 0, wait=False) as free:
            return not free
    except OSError:
        return False


_compiling_here = False  # this process is the precompiler: it never waits for itself


def wait_for(kernel_name, timeout=60.0):
    """Before the first call of a kernel in a process, while a precompiler runs: if it is
    compiling this kernel (or one compiled into it), wait until that is in the cache."""
    if fcntl is None or _compiling_here or not running():
        return
    end = time.monotonic() + timeout
    for name in (*DEPENDS.get(kernel_name, ()), kernel_name):
        while time.monotonic() < end:
            with _held(name, fcntl.LOCK_SH, wait=False) as free:
                if free:
                    break
            time.sleep(0.005)


def main():
    global _compiling_here
    _compiling_here = True
    with _held("run", fcntl.LOCK_EX if fcntl else 0, wait=False) as mine:
        if not mine:
            return 0  # another one is at it
        for name, call in _items():
            with _held(name, fcntl.LOCK_EX if fcntl else 0):
                call()
    return 0


if __name__ == "__main__":  # run as the package's module, the one the kernels' calls see
    from kernels.cpu.precompile import main as _main

    sys.exit(_main())
