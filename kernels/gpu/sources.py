"""CUDA C++ sources of the GPU kernels, one module-level string per kernel.

Each string is a complete translation unit (no #include, so NVRTC compiles it as is and the
host emulation in :mod:`kernels.gpu.emulate` can compile it with g++), made by
:func:`cuda_kernel` from the kernel's name, parameter list and body: a ``template
<typename T> __device__`` function, then ``extern "C" __global__`` entry points
``<name>_float`` and ``<name>_double``. It records each source in :data:`SOURCES`.

Every kernel runs a grid-stride loop, so any grid/block shape is correct. All but one are
gathers (one thread per element they write: no atomics, deterministic); max-pool backward
scatters with ``atomicAdd`` because its API carries no window geometry.
Integer parameters are ``long long`` (numpy int64) so that huge tensors index safely.
"""

from __future__ import annotations

_PRELUDE = r"""
#ifndef KERNELS_PRELUDE
#define KERNELS_PRELUDE
typedef long long ll;
__device__ __forceinline__ ll k_min(ll a, ll b) { return a < b ? a : b; }
__device__ __forceinline__ ll k_max(ll a, ll b) { return a > b ? a : b; }
#define GRID_STRIDE_LOOP(i, total) \
    for (ll i = (ll)blockIdx.x * blockDim.x + threadIdx.x; i < (total); \
         i += (ll)blockDim.x * gridDim.x)
#endif
"""

DTYPES = {"float32": "float", "float64": "double"}
SOURCES: dict[str, str] = {}  # kernel name -> its translation unit, filled by cuda_kernel
PARAMS: dict[str, str] = {}  # kernel name -> its parameter list (``T``: the floating type)


def _arg_names(params: str) -> str:
    return ", ".join(p.split()[-1].lstrip("*") for p in params.split(","))


def cuda_kernel(name: str, params: str, body: str) -> str:
    """Define GPU kernel ``name``: ``body`` (in braces) becomes ``template <typename T>
    __device__ void <name>_impl(<params>)``, called by one ``extern "C"`` entry point per
    dtype. The source is recorded in SOURCES (and PARAMS) for the launcher, the host
    emulation and the tests, so that a kernel is written in one place. Returns it."""
    impl = f"template <typename T>\n__device__ void {name}_impl({params})\n{body.lstrip()}"
    entries = "".join(
        f'extern "C" __global__ void {name}_{ct}({params.replace("T*", ct + "*")})\n'
        f"{{ {name}_impl<{ct}>({_arg_names(params)}); }}\n"
        for ct in DTYPES.values()
    )
    PARAMS[name] = params
    SOURCES[name] = _PRELUDE + impl + entries
    return SOURCES[name]


# ----- im2col / col2im -----

# cols[(c*kh + i)*kw + j, (n*Ho + oh)*Wo + ow] = x[n, c, oh*sh - ph + i*dh, ow*sw - pw + j*dw]
IM2COL = cuda_kernel(
    "im2col",
    "const T* x, T* cols, ll N, ll C, ll H, ll W, ll kh, ll kw, ll sh, ll sw, "
    "ll ph, ll pw, ll dh, ll dw, ll Ho, ll Wo",
    r"""
{
    const ll L = N * Ho * Wo;
    GRID_STRIDE_LOOP(idx, C * kh * kw * L) {
        const ll row = idx / L, q = idx - row * L;
        const ll n = q / (Ho * Wo), p = q - n * (Ho * Wo);
        const ll oh = p / Wo, ow = p - oh * Wo;
        const ll c = row / (kh * kw), r = row - c * (kh * kw);
        const ll i = r / kw, j = r - i * kw;
        const ll h = oh * sh - ph + i * dh, w = ow * sw - pw + j * dw;
        cols[idx] = (h >= 0 && h < H && w >= 0 && w < W) ? x[((n * C + c) * H + h) * W + w]
                                                          : T(0);
    }
}
""")

# One thread per input element, summing every column entry that im2col copied it to.
COL2IM = cuda_kernel(
    "col2im",
    "const T* cols, T* dx, ll N, ll C, ll H, ll W, ll kh, ll kw, ll sh, ll sw, "
    "ll ph, ll pw, ll dh, ll dw, ll Ho, ll Wo",
    r"""
{
    const ll L = N * Ho * Wo;
    GRID_STRIDE_LOOP(idx, N * C * H * W) {
        const ll w = idx % W, h = (idx / W) % H, c = (idx / (W * H)) % C, n = idx / (W * H * C);
        T acc = T(0);
        for (ll i = 0; i < kh; ++i) {
            const ll hh = h + ph - i * dh;
            if (hh < 0 || hh % sh != 0) continue;
            const ll oh = hh / sh;
            if (oh >= Ho) continue;
            for (ll j = 0; j < kw; ++j) {
                const ll ww = w + pw - j * dw;
                if (ww < 0 || ww % sw != 0) continue;
                const ll ow = ww / sw;
                if (ow >= Wo) continue;
                acc += cols[((c * kh + i) * kw + j) * L + (n * Ho + oh) * Wo + ow];
            }
        }
        dx[idx] = acc;
    }
}
""")

# ----- max pooling -----

# Padding acts as -inf: only real elements are compared. First maximum wins; NaN propagates.
MAX_POOL2D_FORWARD = cuda_kernel(
    "max_pool2d_forward",
    "const T* x, T* out, ll* argmax, ll N, ll C, ll H, ll W, ll kh, "
    "ll kw, ll sh, ll sw, ll ph, ll pw, ll Ho, ll Wo",
    r"""
{
    GRID_STRIDE_LOOP(idx, N * C * Ho * Wo) {
        const ll ow = idx % Wo, oh = (idx / Wo) % Ho, nc = idx / (Wo * Ho);
        const T* plane = x + nc * H * W;
        const ll h0 = oh * sh - ph, w0 = ow * sw - pw;
        const ll i0 = k_max(0, -h0), i1 = k_min(kh, H - h0);
        const ll j0 = k_max(0, -w0), j1 = k_min(kw, W - w0);
        ll best_i = (h0 + i0) * W + w0 + j0;
        T best = plane[best_i];
        for (ll i = i0; i < i1; ++i) {
            for (ll j = j0; j < j1; ++j) {
                const ll k = (h0 + i) * W + w0 + j;
                const T v = plane[k];
                if (v > best || v != v) { best = v; best_i = k; }
            }
        }
        out[idx] = best;
        argmax[idx] = best_i;
    }
}
""")

# One thread per output element, scattering into its argmax. The API gives no window
# geometry, so this scatters with atomicAdd (windows may overlap when stride < k); dx must
# be zeroed first. Out-of-range indices are skipped.
MAX_POOL2D_BACKWARD = cuda_kernel(
    "max_pool2d_backward",
    "const T* grad_out, const ll* argmax, T* dx, ll NC, ll HW, ll M",
    r"""
{
    GRID_STRIDE_LOOP(idx, NC * M) {
        const ll a = argmax[idx];
        if (a >= 0 && a < HW) atomicAdd(dx + (idx / M) * HW + a, grad_out[idx]);
    }
}
""")

# ----- average pooling (padding counted in the divisor) -----

AVG_POOL2D_FORWARD = cuda_kernel(
    "avg_pool2d_forward",
    "const T* x, T* out, ll N, ll C, ll H, ll W, ll kh, ll kw, ll sh, "
    "ll sw, ll ph, ll pw, ll Ho, ll Wo",
    r"""
{
    GRID_STRIDE_LOOP(idx, N * C * Ho * Wo) {
        const ll ow = idx % Wo, oh = (idx / Wo) % Ho, nc = idx / (Wo * Ho);
        const T* plane = x + nc * H * W;
        const ll h0 = oh * sh - ph, w0 = ow * sw - pw;
        const ll i0 = k_max(0, -h0), i1 = k_min(kh, H - h0);
        const ll j0 = k_max(0, -w0), j1 = k_min(kw, W - w0);
        T acc = T(0);
        for (ll i = i0; i < i1; ++i)
            for (ll j = j0; j < j1; ++j) acc += plane[(h0 + i) * W + w0 + j];
        out[idx] = acc / T(kh * kw);
    }
}
""")

AVG_POOL2D_BACKWARD = cuda_kernel(
    "avg_pool2d_backward",
    "const T* grad_out, T* dx, ll N, ll C, ll H, ll W, ll kh, ll kw, "
    "ll sh, ll sw, ll ph, ll pw, ll Ho, ll Wo",
    r"""
{
    GRID_STRIDE_LOOP(idx, N * C * H * W) {
        const ll w = idx % W, h = (idx / W) % H, nc = idx / (W * H);
        const ll oh0 = (h + ph < kh) ? 0 : (h + ph - kh) / sh + 1;
        const ll oh1 = k_min((h + ph) / sh + 1, Ho);
        const ll ow0 = (w + pw < kw) ? 0 : (w + pw - kw) / sw + 1;
        const ll ow1 = k_min((w + pw) / sw + 1, Wo);
        const T area = T(kh * kw);
        T acc = T(0);
        for (ll oh = oh0; oh < oh1; ++oh)
            for (ll ow = ow0; ow < ow1; ++ow) acc += grad_out[(nc * Ho + oh) * Wo + ow] / area;
        dx[idx] = acc;
    }
}
""")
