"""Winograd F(2x2, 3x3): a 3x3 stride-1 convolution with 2.25x fewer multiplications.

Each 2x2 block of outputs (a "tile") comes from a 4x4 block ``d`` of the padded input:
``Y = A^T [(G w G^T) * (B^T d B)] A``. Across channels the elementwise product becomes
16 GEMMs, one per position in the 4x4 transformed tile:

    V = transformed_input(x)        (16, T, Cin)   T = N * tiles_h * tiles_w
    U = weight_transform(w)         (16, Cin, Cout)
    y = output(V @ U, N, (H, W))    (N, Cout, H, W)

Every map is linear, so the gradients are the adjoints in reverse order:
``dM = transformed_grad(g)``, ``dx = input_adjoint(dM @ U^T)``,
``dw = weight_transform_adjoint(V^T @ dM)``. Lavin & Gray, "Fast Algorithms for
Convolutional Neural Networks" (2015), give the matrices B, G and A; the one-line
helpers below apply them to a column. The GEMMs are numpy's (tape/ops/conv.py).

For few channels ``fused_forward(x, U)`` and ``fused_backward(g, x, U)`` (dx and dU) do
the same in one pass each, a chunk of images at a time, with the GEMMs called from
inside the kernel: see "the fused convolution" below for when and why.
"""

from __future__ import annotations

import importlib.util

import numpy as np
from numba import types

from . import buffers
from .jit import inline, kernel
from .threads import parallel_for


def _blas_in_kernels():
    """Whether the fused kernels can call BLAS: SciPy installed (numba's np.dot calls its
    BLAS), and numba's GEMM entry, which the fused backward calls directly, still there
    (``_xxgemm`` below; a numba without it: the batched route)."""
    if importlib.util.find_spec("scipy") is None:
        return False
    from numba import _helperlib

    return "xxgemm" in getattr(_helperlib, "c_helpers", {})


HAS_BLAS = _blas_in_kernels()


@inline
def _bt(a0, a1, a2, a3):
    """B^T times a column of four."""
    return a0 - a2, a1 + a2, a2 - a1, a1 - a3


@inline
def _b(a0, a1, a2, a3):
    """B times a column of four (the adjoint of ``_bt``)."""
    return a0, a1 - a2 + a3, a1 + a2 - a0, -a3


@inline
def _at(m0, m1, m2, m3):
    """A^T times a column of four: two outputs."""
    return m0 + m1 + m2, m1 - m2 - m3


@inline
def _a(u0, u1):
    """A times a column of two (the adjoint of ``_at``)."""
    return u0, u0 + u1, u0 - u1, -u1


# ----- the four transforms between (N, C, H, W) planes and the (16, T, C) layout -----
# One work item per image. Each first moves its image into (or out of) a channel-last
# scratch plane, so that the transforms themselves read and write runs of C contiguous
# values (vectorised) on both sides; reading the planes directly, one channel per
# iteration, was 1.5-2.3x slower. The scratch plane is zero-padded and tile-aligned, so
# the convolution's padding costs nothing and the loops need no bounds checks.


def tiles(size):
    """Tiles along one axis of an output ``size`` long."""
    return (size + 1) // 2


# One image at a time: ``t0`` is the image's first tile in the (16, T, C) array. The
# per-image kernels run them for all images at once (one work item each), the fused
# convolution below for its chunk of images. Each is compiled once, as a function of its
# own, and called by both (inlined into every caller, they were compiled three times;
# compiled without numba's noalias flag, called as functions, they ran 3-5x slower).


@kernel
def _input_image(x, n, v, t0, ph, pw, th, tw):
    _, c_, h_, w_ = x.shape
    d = np.zeros((2 * th + 2, 2 * tw + 2, c_), x.dtype)
    for c in range(c_):
        for i in range(h_):
            for j in range(w_):
                d[i + ph, j + pw, c] = x[n, c, i, j]
    for ty in range(th):
        y0 = 2 * ty
        for tx in range(tw):
            t = t0 + ty * tw + tx
            x0 = 2 * tx
            for c in range(c_):
                p0 = _bt(d[y0, x0, c], d[y0, x0 + 1, c], d[y0, x0 + 2, c], d[y0, x0 + 3, c])
                p1 = _bt(d[y0 + 1, x0, c], d[y0 + 1, x0 + 1, c], d[y0 + 1, x0 + 2, c],
                         d[y0 + 1, x0 + 3, c])
                p2 = _bt(d[y0 + 2, x0, c], d[y0 + 2, x0 + 1, c], d[y0 + 2, x0 + 2, c],
                         d[y0 + 2, x0 + 3, c])
                p3 = _bt(d[y0 + 3, x0, c], d[y0 + 3, x0 + 1, c], d[y0 + 3, x0 + 2, c],
                         d[y0 + 3, x0 + 3, c])
                for j in range(4):
                    q = _bt(p0[j], p1[j], p2[j], p3[j])
                    v[j, t, c] = q[0]
                    v[4 + j, t, c] = q[1]
                    v[8 + j, t, c] = q[2]
                    v[12 + j, t, c] = q[3]


@inline
def _tile_adjoint(dv, t, c):
    """B dV B^T of tile ``t``'s 4x4 block of channel ``c`` in ``dv`` (16, T, C): its four
    columns, each as four values from the top."""
    r0 = _b(dv[0, t, c], dv[1, t, c], dv[2, t, c], dv[3, t, c])
    r1 = _b(dv[4, t, c], dv[5, t, c], dv[6, t, c], dv[7, t, c])
    r2 = _b(dv[8, t, c], dv[9, t, c], dv[10, t, c], dv[11, t, c])
    r3 = _b(dv[12, t, c], dv[13, t, c], dv[14, t, c], dv[15, t, c])
    return (_b(r0[0], r1[0], r2[0], r3[0]), _b(r0[1], r1[1], r2[1], r3[1]),
            _b(r0[2], r1[2], r2[2], r3[2]), _b(r0[3], r1[3], r2[3], r3[3]))


@kernel
def _input_adjoint_image(dv, t0, dx, n, ph, pw, th, tw):
    """Each tile's 4x4 block goes to a scratch ``q`` first, then is added into the plane
    one row of it (4 pixels' channels, contiguous) at a time. Added straight into the
    plane, whose rows the compiler cannot prove apart, the loop did not vectorise: one
    image of (64,16->32,14) took 17.8 us in cache, 5.0 so; a (16, 512, 64) product's
    adjoint 1447 us on one thread, 284 us so. (Added one pixel's channels at a time, in 16
    loops, it took 0.2 s longer to compile, which a fresh install's first step waits
    for.)"""
    _, c_, h_, w_ = dx.shape
    d = np.zeros((2 * th + 2, 2 * tw + 2, c_), dx.dtype)
    q = np.empty((16, c_), dx.dtype)
    rows = d.reshape((2 * th + 2, (2 * tw + 2) * c_))  # a row of the plane, (x, c) flat
    blocks = q.reshape((4, 4 * c_))  # a row of the tile's block, (j, c) flat
    for ty in range(th):
        y0 = 2 * ty
        for tx in range(tw):
            t = t0 + ty * tw + tx
            x0 = 2 * tx
            for c in range(c_):
                columns = _tile_adjoint(dv, t, c)
                for j in range(4):
                    s = columns[j]
                    q[j, c] = s[0]
                    q[4 + j, c] = s[1]
                    q[8 + j, c] = s[2]
                    q[12 + j, c] = s[3]
            for a in range(4):
                row, block = rows[y0 + a, x0 * c_:(x0 + 4) * c_], blocks[a]
                for k in range(4 * c_):
                    row[k] += block[k]
    for c in range(c_):
        for i in range(h_):
            for j in range(w_):
                dx[n, c, i, j] = d[i + ph, j + pw, c]


@kernel
def _output_image(m, t0, y, n, th, tw):
    _, c_, ho, wo = y.shape
    o = np.empty((2 * th, 2 * tw, c_), y.dtype)
    for ty in range(th):
        y0 = 2 * ty
        for tx in range(tw):
            t = t0 + ty * tw + tx
            x0 = 2 * tx
            for c in range(c_):
                s0 = _at(m[0, t, c], m[1, t, c], m[2, t, c], m[3, t, c])
                s1 = _at(m[4, t, c], m[5, t, c], m[6, t, c], m[7, t, c])
                s2 = _at(m[8, t, c], m[9, t, c], m[10, t, c], m[11, t, c])
                s3 = _at(m[12, t, c], m[13, t, c], m[14, t, c], m[15, t, c])
                for b in range(2):
                    q = _at(s0[b], s1[b], s2[b], s3[b])
                    o[y0, x0 + b, c] = q[0]
                    o[y0 + 1, x0 + b, c] = q[1]
    for c in range(c_):
        for i in range(ho):
            for j in range(wo):
                y[n, c, i, j] = o[i, j, c]


@kernel
def _output_adjoint_image(g, n, dm, t0, th, tw):
    _, c_, ho, wo = g.shape
    o = np.zeros((2 * th, 2 * tw, c_), g.dtype)  # zero past the output: whole tiles
    for c in range(c_):
        for i in range(ho):
            for j in range(wo):
                o[i, j, c] = g[n, c, i, j]
    for ty in range(th):
        y0 = 2 * ty
        for tx in range(tw):
            t = t0 + ty * tw + tx
            x0 = 2 * tx
            for c in range(c_):
                r0 = _a(o[y0, x0, c], o[y0, x0 + 1, c])
                r1 = _a(o[y0 + 1, x0, c], o[y0 + 1, x0 + 1, c])
                for j in range(4):
                    q = _a(r0[j], r1[j])
                    dm[j, t, c] = q[0]
                    dm[4 + j, t, c] = q[1]
                    dm[8 + j, t, c] = q[2]
                    dm[12 + j, t, c] = q[3]


@kernel
def _input(start, stop, x, v, ph, pw, th, tw):
    for n in range(start, stop):
        _input_image(x, n, v, n * th * tw, ph, pw, th, tw)


@kernel
def _input_adjoint(start, stop, dv, dx, ph, pw, th, tw):
    for n in range(start, stop):
        _input_adjoint_image(dv, n * th * tw, dx, n, ph, pw, th, tw)


@kernel
def _output(start, stop, m, y, th, tw):
    for n in range(start, stop):
        _output_image(m, n * th * tw, y, n, th, tw)


@kernel
def _output_adjoint(start, stop, g, dm, th, tw):
    for n in range(start, stop):
        _output_adjoint_image(g, n, dm, n * th * tw, th, tw)


def transformed_input(x, padding):
    """``V`` (16, T, C) of ``x`` (N, C, H, W) for a 3x3 convolution with ``padding``."""
    n, c, h, w = x.shape
    th, tw = tiles(h + 2 * padding[0] - 2), tiles(w + 2 * padding[1] - 2)
    v = buffers.empty((16, n * th * tw, c), x.dtype)
    parallel_for(_input, n, np.ascontiguousarray(x), v, padding[0], padding[1], th, tw,
                 work=v.size)
    return v


def input_adjoint(dv, x_shape, padding):
    """The adjoint of ``transformed_input``: (16, T, C) back to ``x_shape``."""
    n, c, h, w = x_shape
    th, tw = tiles(h + 2 * padding[0] - 2), tiles(w + 2 * padding[1] - 2)
    dx = buffers.empty(x_shape, dv.dtype)
    parallel_for(_input_adjoint, n, np.ascontiguousarray(dv), dx, padding[0], padding[1], th,
                 tw, work=dv.size)
    return dx


def output(m, n, out_hw):
    """``Y`` (N, Cout, Hout, Wout) of the transformed product ``m`` (16, T, Cout)."""
    y = buffers.empty((n, m.shape[2]) + tuple(out_hw), m.dtype)
    parallel_for(_output, n, np.ascontiguousarray(m), y, tiles(out_hw[0]), tiles(out_hw[1]),
                 work=m.size)
    return y


def transformed_grad(g):
    """The adjoint of ``output``: (N, Cout, Hout, Wout) to (16, T, Cout)."""
    n, c, ho, wo = g.shape
    th, tw = tiles(ho), tiles(wo)
    dm = buffers.empty((16, n * th * tw, c), g.dtype)
    parallel_for(_output_adjoint, n, np.ascontiguousarray(g), dm, th, tw, work=dm.size)
    return dm


# ----- the fused convolution: transforms and GEMMs per chunk of images -----
# The route above makes each of its nine steps one pass over the whole batch: its arrays
# (16, T, C) are several MB, so every transform streams them from L3 and each kernel
# split among tape's threads wakes them. For few channels that traffic costs more than
# the GEMMs. Here one work item takes a chunk of images through every step while its
# arrays stay in the core's caches, calling BLAS from inside the kernel (numba's np.dot,
# which calls SciPy's BLAS, and for dU that BLAS's GEMM directly). Each GEMM is kept
# small enough that OpenBLAS runs it on the calling thread (it splits only products with
# M*N*K above 2**18): tape's threads do the parallel work, and SciPy's OpenBLAS starts no
# threads of its own to spin beside them. "For few channels": kernels/cpu/conv2d.py's
# ``winograd_fused`` says which convolutions take this route.


def images_per_chunk(n, tiles_per_image, cin, cout, itemsize):
    """Images per chunk: as many as keep V, dV and dM (the backward's three arrays)
    within 2 MiB and each GEMM single-threaded, in at least eight chunks where the batch
    has eight images (the forward's work items, dealt one by one so that the threads
    finish together; the backward's take ``FUSED_SLOTS`` runs of chunks).
    Chunks that fit a 512 KiB L2 were slower on a 2-core AMD EPYC VM: (64,16->32,14) 2
    images per chunk, forward 1009 us and backward 2277 us; 8 images, 925 and 2108 (the
    GEMMs' fewer, longer calls gain more than L2 loses)."""
    per_image = 16 * tiles_per_image * (2 * cin + cout) * itemsize
    by_gemm = (1 << 18) // max(1, tiles_per_image * cin * cout)
    return max(1, min(n // 8, (1 << 21) // per_image, by_gemm))


@kernel
def _fused_forward(start, stop, x, u, y, ph, pw, th, tw, b):
    n_, c_, o_ = x.shape[0], x.shape[1], u.shape[2]
    p = th * tw
    for chunk in range(start, stop):
        n0 = chunk * b
        nb = min(b, n_ - n0)
        v = np.empty((16, nb * p, c_), x.dtype)
        m = np.empty((16, nb * p, o_), x.dtype)
        for i in range(nb):
            _input_image(x, n0 + i, v, i * p, ph, pw, th, tw)
        for k in range(16):
            np.dot(v[k], u[k], m[k])
        for i in range(nb):
            _output_image(m, i * p, y, n0 + i, th, tw)


# numba's entry to SciPy's BLAS GEMM (numba/np/linalg.py calls it for np.dot): xxgemm(kind,
# transa, transb, m, n, k, &alpha, a, lda, b, ldb, &beta, c, ldc), column-major, kind "s"
# or "d". np.dot always overwrites its output; dU is a sum over chunks, so it is called
# directly with beta = 1.
_xxgemm = types.ExternalFunction("numba_xxgemm", types.intc(
    types.char, types.char, types.char, types.intp, types.intp, types.intp, types.voidptr,
    types.voidptr, types.intp, types.voidptr, types.intp, types.voidptr, types.voidptr,
    types.intp))


@inline
def _add_at_b(a, b, c, scale):
    """``c = scale[1] * c + scale[0] * a^T b`` for C-contiguous a (K, M), b (K, N),
    c (M, N); ``scale`` an array of their dtype. (Column-major: c^T = b^T a, b as it lies,
    a transposed.)"""
    k, m = a.shape
    n = b.shape[1]
    kind = 115 if a.itemsize == 4 else 100  # "s", "d"; below, 110 and 116: "n", "t"
    if _xxgemm(kind, 110, 116, n, m, k, scale[:1].ctypes, b.ctypes, n, a.ctypes, m,
               scale[1:].ctypes, c.ctypes, n):
        raise RuntimeError("winograd: SciPy's BLAS GEMM could not be called")


@kernel
def _fused_backward(start, stop, g, x, ut, dx, du, ph, pw, th, tw, b, per_slot):
    """``ut`` is U transposed, (16, Cout, Cin). Work item ``slot`` takes ``per_slot``
    chunks in turn and sums their shares of dU into ``du[slot]``; the caller sums the
    slots (a fixed split, so the sums do not depend on which thread took what)."""
    n_, c_, o_ = x.shape[0], x.shape[1], ut.shape[1]
    p = th * tw
    chunks = (n_ + b - 1) // b
    first, then = np.array([1.0, 0.0], x.dtype), np.array([1.0, 1.0], x.dtype)  # c = / c +=
    for slot in range(start, stop):
        for chunk in range(slot * per_slot, min((slot + 1) * per_slot, chunks)):
            n0 = chunk * b
            nb = min(b, n_ - n0)
            v = np.empty((16, nb * p, c_), x.dtype)
            dm = np.empty((16, nb * p, o_), x.dtype)
            dv = np.empty((16, nb * p, c_), x.dtype)
            for i in range(nb):
                _output_adjoint_image(g, n0 + i, dm, i * p, th, tw)
                _input_image(x, n0 + i, v, i * p, ph, pw, th, tw)  # V again, not kept
            scale = first if chunk == slot * per_slot else then
            for k in range(16):
                np.dot(dm[k], ut[k], dv[k])  # dV = dM U^T
                _add_at_b(v[k], dm[k], du[slot, k], scale)  # dU += V^T dM
            for i in range(nb):
                _input_adjoint_image(dv, i * p, dx, n0 + i, ph, pw, th, tw)


FUSED_SLOTS = 8  # dU's partial sums in the fused backward (and its work items): at most


def _geometry(x_shape, u_shape, padding, dtype, chunk):
    n, c, h, w = x_shape
    th, tw = tiles(h + 2 * padding[0] - 2), tiles(w + 2 * padding[1] - 2)
    if chunk is None:
        chunk = images_per_chunk(n, th * tw, c, u_shape[2], np.dtype(dtype).itemsize)
    return th, tw, chunk


def fused_forward(x, u, padding, chunk=None):
    """The convolution of ``x`` (N, C, H, W) with transformed weights ``u`` (16, C, Cout):
    ``output(transformed_input(x) @ u)`` in one pass, (N, Cout, Hout, Wout). ``chunk``:
    images per work item (default: ``images_per_chunk``'s)."""
    n, _, h, w = x.shape
    th, tw, b = _geometry(x.shape, u.shape, padding, x.dtype, chunk)
    y = buffers.empty((n, u.shape[2], h + 2 * padding[0] - 2, w + 2 * padding[1] - 2), x.dtype)
    parallel_for(_fused_forward, -(-n // b), np.ascontiguousarray(x), np.ascontiguousarray(u),
                 y, padding[0], padding[1], th, tw, b, work=x.size + y.size)
    return y


def fused_backward(g, x, u, padding, chunk=None):
    """Both gradients of ``fused_forward`` for the output gradient ``g``: ``dx`` (the
    shape of ``x``) and ``dU`` (the shape of ``u``)."""
    th, tw, b = _geometry(x.shape, u.shape, padding, x.dtype, chunk)
    chunks = -(-x.shape[0] // b)
    per_slot = -(-chunks // FUSED_SLOTS)
    dx = buffers.empty(x.shape, x.dtype)
    du = np.empty((-(-chunks // per_slot),) + u.shape, x.dtype)
    ut = np.ascontiguousarray(u.swapaxes(1, 2))
    parallel_for(_fused_backward, du.shape[0], np.ascontiguousarray(g), np.ascontiguousarray(x),
                 ut, dx, du, padding[0], padding[1], th, tw, b, per_slot,
                 work=g.size + 2 * x.size)
    return dx, du.sum(axis=0)


# ----- the weight transform and its adjoint -----
# Small (16 x Cin x Cout) arrays: numpy on whole (Cin, Cout) planes (one kernel fewer to
# compile on a fresh install), in the order of operations a kernel would use: G (or G^T)
# along one axis of the 3x3 (4x4) blocks, then along the other.


def _g(a0, a1, a2, h):
    """G times a column of three, G = [[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]]
    (``h``: 0.5 in the arrays' dtype, so float32 stays float32)."""
    return a0, h * (a0 + a1 + a2), h * (a0 - a1 + a2), a2


def _gt(v0, v1, v2, v3, h):
    """G^T times a column of four (the adjoint of ``_g``)."""
    return v0 + h * (v1 + v2), h * (v1 - v2), h * (v1 + v2) + v3


def weight_transform(w):
    """``U[4i+j, c, o] = (G w[o, c] G^T)[i, j]``: (Cout, Cin, 3, 3) to (16, Cin, Cout)."""
    h = w.dtype.type(0.5)
    p = np.ascontiguousarray(w.transpose(2, 3, 1, 0))  # (a, b, C, O): whole planes
    r = [_g(p[a, 0], p[a, 1], p[a, 2], h) for a in range(3)]  # w G^T: r[a][j]
    q = [_g(r[0][j], r[1][j], r[2][j], h) for j in range(4)]  # G (w G^T): q[j][i]
    return np.stack([q[j][i] for i in range(4) for j in range(4)])


def weight_transform_adjoint(du):
    """The adjoint of ``weight_transform``: (16, Cin, Cout) to (Cout, Cin, 3, 3)."""
    h = du.dtype.type(0.5)
    d = np.ascontiguousarray(du)
    r = [_gt(d[4 * i], d[4 * i + 1], d[4 * i + 2], d[4 * i + 3], h) for i in range(4)]
    dw = np.empty((3, 3) + d.shape[1:], d.dtype)  # (a, b, C, O): whole planes
    for b in range(3):
        dw[:, b] = _gt(r[0][b], r[1][b], r[2][b], r[3][b], h)
    return np.ascontiguousarray(dw.transpose(3, 2, 0, 1))
