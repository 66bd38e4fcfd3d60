"""The op table's rows for tape.functional.scaled_dot_product_attention, checked as one
function against torch's. On the CPU the rows with 2 to 4 axes take the attention op's
numba kernels (kernels/cpu/attention.py), the 5-axis row its batched-GEMM route (the
GPU's), the float mask that needs a gradient the composition of ops; every rule on
tensors (higher order, jacobians, forward mode) the composition too."""

import numpy as np
from optable.row import Table

# every check on the GPU too; sums of products over the keys
T = Table(tol64=(1e-7, 1e-9), tol32=(2e-4, 2e-5), gpu=True)

L, S, E, EV = 3, 5, 4, 6
KEEP = np.random.default_rng(7).random((L, S)) > 0.4  # True: the pair takes part
KEEP[:, 0] = True
DEAD = KEEP.copy()
DEAD[1] = False  # a query row with no key: zeros (torch's safe softmax), no NaN
KEEP4 = np.random.default_rng(8).random((2, 1, L, S)) > 0.3  # per batch, broadcast on heads
KEEP4[..., 0] = True


def sdpa(m, *args, **kw):
    return m.F.scaled_dot_product_attention(*args, **kw)


QKV = ((2, L, E), (2, S, E), (2, S, EV))
QKV4 = ((2, 2, L, E), (2, 2, S, E), (2, 2, S, EV))  # (N, heads, L, E)
T.row("sdpa", lambda m, q, k, v: sdpa(m, q, k, v), *QKV)
T.row("sdpa_unbatched", lambda m, q, k, v: sdpa(m, q, k, v), (L, E), (S, E), (S, EV))
T.row("sdpa_scale", lambda m, q, k, v: sdpa(m, q, k, v, scale=0.3), *QKV)
T.row("sdpa_bool_mask", lambda m, q, k, v: sdpa(m, q, k, v, attn_mask=m.const(KEEP)), *QKV)
T.row("sdpa_bool_mask_dead_row", lambda m, q, k, v: sdpa(m, q, k, v, attn_mask=m.const(DEAD)),
      *QKV)
T.row("sdpa_float_mask", lambda m, q, k, v, b: sdpa(m, q, k, v, attn_mask=b), *QKV, (L, S))
T.row("sdpa_float_mask_const", lambda m, q, k, v: sdpa(
    m, q, k, v, attn_mask=m.const(np.where(KEEP, 0.5, -np.inf), like=q)), *QKV)
T.row("sdpa_causal", lambda m, q, k, v: sdpa(m, q, k, v, is_causal=True), *QKV)
T.row("sdpa_causal_tall", lambda m, q, k, v: sdpa(m, q, k, v, is_causal=True),
      (2, S, E), (2, L, E), (2, L, EV))  # more queries than keys: the last rows see all
T.row("sdpa_causal_square", lambda m, q, k, v: sdpa(m, q, k, v, is_causal=True),
      (2, L, E), (2, L, E), (2, L, EV))
T.row("sdpa_heads", lambda m, q, k, v: sdpa(m, q, k, v), *QKV4)
T.row("sdpa_heads_bool_mask", lambda m, q, k, v: sdpa(m, q, k, v, attn_mask=m.const(KEEP4)),
      *QKV4)
T.row("sdpa_heads_float_mask", lambda m, q, k, v, b: sdpa(m, q, k, v, attn_mask=b), *QKV4,
      (2, 1, L, S))
T.row("sdpa_heads_causal", lambda m, q, k, v: sdpa(m, q, k, v, is_causal=True), *QKV4)
T.row("sdpa_5d_bool_mask", lambda m, q, k, v: sdpa(m, q, k, v, attn_mask=m.const(DEAD)),
      (2, 1, 2, L, E), (2, 1, 2, S, E), (2, 1, 2, S, EV))
T.row("sdpa_5d_causal", lambda m, q, k, v: sdpa(m, q, k, v, is_causal=True),
      (2, 1, 2, L, E), (2, 1, 2, S, E), (2, 1, 2, S, EV))
T.row("sdpa_broadcast_kv", lambda m, q, k, v: sdpa(m, q, k, v), (2, 2, L, E), (S, E), (S, EV))
