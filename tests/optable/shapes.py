"""The op table's shape, indexing, matmul, einsum, softmax and composed rows, and the
rows with a leading batch axis for ``batch_jacobian``."""

import numpy as np
import torch
from optable.row import Row, Table, fixed, normal, shifted

T = Table()

# ----- shapes -----
T.row("reshape", lambda m, x: m.reshape(x, (4, 3)), (2, 6))
T.row("reshape_method_infer", lambda m, x: x.reshape(3, -1), (2, 3, 2))
T.row("reshape_method_tuple", lambda m, x: x.reshape((6,)) * 2, (3, 2))
T.row("reshape_0d", lambda m, x: x.reshape(1, 1), ())
T.row("transpose_reverse", lambda m, x: m.transpose(x), (2, 3, 4))
T.row("transpose_axes", lambda m, x: m.transpose(x, (1, 0, 2)), (2, 3, 4))
T.row("transpose_method", lambda m, x: x.transpose(2, 0, 1), (2, 3, 4),
    torch_fn=lambda m, x: x.permute(2, 0, 1))
T.row("T", lambda m, x: x.T, (3, 4))
T.row("mT", lambda m, x: x.mT, (2, 3, 4))
T.row("permute", lambda m, x: m.permute(x, (2, 0, 1)), (2, 3, 4))
T.row("permute_method", lambda m, x: x.permute(1, 2, 0), (2, 3, 4))
T.row("swapaxes", lambda m, x: m.swapaxes(x, 0, 2), (2, 3, 4))
T.row("swapaxes_method_neg", lambda m, x: x.swapaxes(-1, 0), (2, 3, 4))
T.row("squeeze_all", lambda m, x: m.squeeze(x), (3, 1, 4, 1))
T.row("squeeze_axis", lambda m, x: m.squeeze(x, 1), (3, 1, 4, 1))
T.row("squeeze_tuple", lambda m, x: m.squeeze(x, axis=(1, 3)), (3, 1, 4, 1))
T.row("squeeze_method_dim", lambda m, x: x.squeeze(dim=-1), (3, 1, 4, 1))
T.row("unsqueeze", lambda m, x: m.unsqueeze(x, 0), (3, 4))
T.row("unsqueeze_neg", lambda m, x: m.unsqueeze(x, -1), (3, 4))
T.row("unsqueeze_0d", lambda m, x: m.unsqueeze(x, 0), ())
T.row("unsqueeze_method_dim", lambda m, x: x.unsqueeze(dim=1), (3, 4))
T.row("expand", lambda m, x: m.expand(x, 2, 3, 4), (3, 1))
T.row("expand_method_keep", lambda m, x: x.expand(-1, 4), (3, 1))
T.row("expand_method_tuple", lambda m, x: x.expand((2, 3)), ())
T.row("broadcast_to", lambda m, x: m.broadcast_to(x, (2, 3, 4)), (3, 1))
T.row("broadcast_to_0d", lambda m, x: m.broadcast_to(x, (2, 2)), ())
T.row("broadcast_to_method", lambda m, x: x.broadcast_to((2, 4)), (4,),
    torch_fn=lambda m, x: x.broadcast_to((2, 4)))
T.row("flatten", lambda m, x: m.flatten(x), (2, 3, 4))
T.row("flatten_start", lambda m, x: m.flatten(x, 1), (2, 3, 4))
T.row("flatten_range", lambda m, x: m.flatten(x, 0, 1), (2, 3, 4))
T.row("flatten_method_0d", lambda m, x: x.flatten(), ())
T.row("concatenate", lambda m, a, b, c: m.concatenate([a, b * 2, c], axis=1), (2, 1), (2, 3),
      (2, 2))
T.row("concatenate_axis0", lambda m, a, b: m.concatenate([a, b]), (1, 3), (2, 3))
T.row("concatenate_neg_same", lambda m, a: m.concatenate([a, a.sin()], axis=-1), (2, 3))
T.row("concatenate_dim_alias", lambda m, a, b: m.concatenate([a, b], dim=0), (2,), (3,))
T.row("concatenate_one_then_many_constants", lambda m, a: m.concatenate(
    [m.concatenate([a])] + [m.tensor(np.full((1, 3), k, a.dtype)) for k in range(7)]), (2, 3),
    torch_fn=lambda m, a: torch.cat([a] + [torch.full((1, 3), k, dtype=a.dtype)
                                           for k in range(7)]))  # a plan per input count
T.row("stack", lambda m, a, b: m.stack([a, b]), (2, 3), (2, 3))
T.row("stack_neg", lambda m, a, b: m.stack([a, b * 3, a], axis=-1), (2, 3), (2, 3))
T.row("stack_0d", lambda m, a, b: m.stack([a, b, a * b]), (), ())
T.row("stack_dim_alias", lambda m, a, b: m.stack([a, b], dim=1), (4,), (4,))
T.row("split_sections",
    lambda m, x: m.concatenate([p * (k + 1.0) for k, p in enumerate(m.split(x, 3, axis=1))],
                               axis=1), (2, 6))
T.row("split_indices",
    lambda m, x: m.concatenate([p * (k + 1.0) for k, p in enumerate(m.split(x, [1, 3]))]),
    (5, 2))
T.row("split_last",
    lambda m, x: m.split(x, 2, axis=-1)[1].exp(), (2, 3, 4))
T.row("pad_last", lambda m, x: m.pad(x, (1, 2)), (2, 3))
T.row("pad_two_axes", lambda m, x: m.pad(x, (1, 0, 2, 1)), (2, 3))
T.row("astype_float32_and_back", lambda m, x: (x.astype(np.float32) * 3).astype(np.float64),
      (2, 3), torch_fn=lambda m, x: (x.to(torch.float32) * 3).to(torch.float64))
T.row("pad_value", lambda m, x: m.pad(x, (0, 1, 1, 0, 2, 2), value=1.5), (2, 3, 2))

# ----- indexing -----
MASK = np.array([[True, False, True, False, True], [False, False, True, True, False],
                 [True, True, False, False, False], [False, True, False, True, True]])
INDEXING = {
    "int": lambda m, x: x[1],
    "int_neg_pair": lambda m, x: x[-1, 2],
    "int_all_0d": lambda m, x: x[0, 1, 2],
    "slices": lambda m, x: x[1:3, 0:4],
    "slices_steps": lambda m, x: x[::2, 1::3, ::2],
    "slice_int": lambda m, x: x[1:, 2],
    "list": lambda m, x: x[[2, 0]],
    "array_neg_repeated": lambda m, x: x[m.idx(np.array([0, -1, 0, 2, 0]))],
    "array_2d": lambda m, x: x[m.idx(np.array([[0, 1], [3, 3]]))],
    "two_arrays": lambda m, x: x[m.idx(np.array([0, 2, 0])), m.idx(np.array([1, 1, -1]))],
    "two_arrays_broadcast": lambda m, x: x[m.idx(np.array([[0], [3]])), m.idx(np.array([1, 1, 4]))],
    "tensor_index": lambda m, x: x[m.tensor(np.array([1, 1, 3]))],
    "tensor_index_0d": lambda m, x: x[m.tensor(2), 1:],
    "mask_full": lambda m, x: x[m.idx(MASK)],
    "mask_rows": lambda m, x: x[m.idx(np.array([True, False, True, True]))],
    "mask_cols": lambda m, x: x[:, m.idx(MASK[0])],
    "mixed_slice_array": lambda m, x: x[:, [0, 2, 2], 1:],
    "mixed_array_slice": lambda m, x: x[[1, 0, 1], 1:3],
    "mixed_nonadjacent": lambda m, x: x[[0, 1, 3], :, [2, 0, 2]],
    "mixed_int_array": lambda m, x: x[2, [4, 0, 4]],
    "ellipsis_int": lambda m, x: x[..., 1],
    "ellipsis_middle": lambda m, x: x[0, ..., ::2],
    "ellipsis_array": lambda m, x: x[..., [2, 0, 2]],
    "none_front": lambda m, x: x[None, 1:, None],
    "ellipsis_none": lambda m, x: x[None, ..., None, 1],
    "none_array": lambda m, x: x[None, [0, 0, 3]],
    "self_mask": lambda m, x: x[x > 0],
    "bool_list": lambda m, x: x[[True, False, True, True]],
    "mask_slice": lambda m, x: x[m.idx(np.array([False, True, True, False])), 1:],
    "negative_bounds": lambda m, x: x[-3:-1, ::4],
    "ellipsis_only": lambda m, x: x[...],
}
for name, fn in INDEXING.items():
    T.row(f"index_{name}", fn, (4, 5, 3))
T.row("index_neg_step", lambda m, x: x[::-1, 3:0:-2], (4, 5),
    torch_fn=lambda m, x: x.flip(0)[:, [3, 1]])
T.row("index_0d_empty_tuple", lambda m, x: x[()] * x[None], ())
T.row("index_1d_scalar_0d", lambda m, x: x[2] * x[-1], (4,))
T.row("index_chain", lambda m, x: x[1:][:, [0, 0]][0], (3, 4))

# ----- matmul and einsum -----
MATMUL = {
    "vec_vec": ((3,), (3,)),
    "mat_mat": ((2, 3), (3, 4)),
    "vec_mat": ((3,), (3, 4)),
    "mat_vec": ((2, 3), (3,)),
    "batched": ((2, 3, 4), (2, 4, 5)),
    "broadcast": ((2, 1, 3, 4), (3, 4, 2)),
    "vec_batched": ((4,), (2, 4, 3)),
    "batched_vec": ((2, 3, 4), (4,)),
}
for name, (sa, sb) in MATMUL.items():
    T.row(f"matmul_{name}", lambda m, a, b: a @ b, sa, sb)
T.row("matmul_fn", lambda m, a, b: m.matmul(a, b), (3, 2), (2, 2))
T.row("matmul_method_same", lambda m, a: a.matmul(a.T), (3, 2))
EINSUM = {
    "matmul": ("ij,jk->ik", (2, 3), (3, 4)),
    "implicit": ("ij,jk", (2, 3), (3, 4)),
    "batched": ("bij,bjk->bik", (2, 3, 4), (2, 4, 2)),
    "trace": ("ii->", (3, 3)),
    "diagonal": ("ii->i", (3, 3)),
    "outer": ("i,j->ij", (3,), (4,)),
    "sum": ("ij->", (2, 3)),
    "transpose": ("ij->ji", (2, 3)),
    "ellipsis": ("...ij,...jk->...ik", (2, 2, 3), (3, 2)),
    "ellipsis_sum": ("...i->...", (2, 3, 4)),
    "three": ("ij,jk,kl->il", (2, 3), (3, 2), (2, 4)),
    "bilinear": ("bi,ij,bj->b", (2, 3), (3, 3), (2, 3)),
}
for name, (spec, *shapes) in EINSUM.items():
    T.row(f"einsum_{name}", lambda m, *xs, spec=spec: m.einsum(spec, *xs), *shapes)
T.row("einsum_hadamard_diag", lambda m, a, b: m.einsum("ii,ij->ij", a, b), (3, 3), (3, 2))
T.row("einsum_same_operand", lambda m, a: m.einsum("ij,ij->i", a, a), (2, 3))
T.row("einsum_list", lambda m, a, b: m.einsum("i,i", [a, b]), (3,), (3,),
    torch_fn=lambda m, a, b: m.einsum("i,i", a, b))

# ----- softmax family -----
SOFTMAX = {
    "default": ({}, (3, 4), normal),
    "axis0": ({"axis": 0}, (3, 4), normal),
    "dim_alias": ({"dim": 1}, (2, 3, 4), normal),
    "size1": ({"axis": 1}, (3, 1), normal),
    "large": ({"axis": -1}, (2, 4), shifted(1000)),
    "spread": ({"axis": -1}, (2, 3), fixed([[1000, 0, -1000], [1, 2, 3]])),
    "0d": ({}, (), normal),
}
for name, (kw, shape, gen) in SOFTMAX.items():
    T.row(f"softmax_{name}", lambda m, x, kw=kw: m.softmax(x, **kw), shape, gen=gen)
    T.row(f"log_softmax_{name}", lambda m, x, kw=kw: m.log_softmax(x, **kw), shape, gen=gen)
MASKED = fixed([[-np.inf, 0.5, 1.0], [2.0, -np.inf, -np.inf]])  # masked attention scores
T.row("softmax_masked", lambda m, x: m.softmax(x, axis=-1), (2, 3), gen=MASKED)
T.row("log_softmax_masked", lambda m, x: m.log_softmax(x, axis=-1), (2, 3), gen=MASKED)
T.row("softmax_method", lambda m, x: x.softmax(0) + x.log_softmax(-1), (3, 4))

# ----- compositions -----
T.row("mlp", lambda m, x, w1, b, w2: m.log_softmax(m.tanh(x @ w1 + b) @ w2, axis=-1),
    (4, 3), (3, 5), (5,), (5, 2))
T.row("normalize", lambda m, x: (x - m.mean(x, axis=-1, keepdims=True))
    / m.sqrt(m.var(x, axis=-1, keepdims=True) + 1e-5), (3, 4))

# ----- a leading batch axis, for batch_jacobian: (name, fn of the batched input, shape) -----
BATCH_ROWS = [
    Row("exp", lambda m, x: m.exp(x), ((3, 4),)),
    Row("softmax", lambda m, x: m.softmax(x, axis=-1), ((3, 5),)),
    Row("log_softmax_3d", lambda m, x: m.log_softmax(x, axis=1), ((2, 3, 4),)),
    Row("matmul_const", lambda m, x: x @ m.const(np.arange(8.0).reshape(4, 2) / 8, like=x),
        ((3, 4),)),
    Row("sum_keep", lambda m, x: m.sum(x * x, axis=1, keepdims=True), ((3, 4),)),
    Row("normalize", lambda m, x: (x - m.mean(x, axis=1, keepdims=True))
        / m.std(x, axis=1, keepdims=True), ((3, 4),)),
    Row("index", lambda m, x: x[:, [0, 2, 2]] * 2, ((3, 4),)),
    Row("outer", lambda m, x: m.einsum("bi,bj->bij", x, x.sin()), ((2, 3),)),
    Row("reduce_3d", lambda m, x: m.logsumexp(x, axis=(1, 2)), ((2, 3, 4),)),
]
