"""The op table: every differentiable op, run identically on tape tensors and torch tensors,
in one table of ``Row``s (optable/row.py) that tests/test_ops.py puts through every check
(values and gradients against torch in float64 and float32, Jacobians, second order,
Jacobians of gradients and gradients of Jacobians; on the CPU, and on the GPU where there
is one). The rows live by family: arith (elementwise, comparisons, reductions), shapes
(shapes, indexing, matmul, einsum, softmax), nn (tape.functional, dropout, custom ops)
and conv (conv2d's routes, pooling). tests/test_op_coverage.py checks that every op is
reached by some row.
"""

from dataclasses import replace

from optable import arith, attention, conv, nn, recurrent, shapes
from optable.row import CHECKS, HIGHER, TOL32, TOL64, Row  # noqa: F401
from optable.shapes import BATCH_ROWS  # noqa: F401

# the GPU's share of the arith and shapes rows' higher-order and float64 checks: one or two
# rows per family (the others' forward and float32 gradient run there; nn and conv: all)
GPU_SUBSET = {
    "add_row", "mul_outer", "div_scalar", "pow_same", "pow_scalar_frac", "maximum_tie",
    "rsub_numpy_const", "exp", "log_0d", "sqrt", "abs_at_kink", "sin", "tanh", "sigmoid_large",
    "relu", "leaky_relu_slope", "gelu", "gelu_tanh", "softplus_beta", "clip", "clip_min",
    "where_broadcast", "where_const_cond", "sum_tuple", "mean_dim_alias", "max_tie",
    "min_tuple_keep", "prod_one_zero", "prod_two_zeros", "var_ddof1_ax1", "std_constant_row",
    "logsumexp_neg_inf", "reshape_method_infer", "transpose_axes", "squeeze_tuple",
    "expand_method_keep", "broadcast_to", "flatten_start", "concatenate", "stack_neg",
    "split_indices", "pad_value", "index_array_neg_repeated", "index_two_arrays_broadcast",
    "index_tensor_index", "index_mask_full", "index_mixed_nonadjacent", "index_bool_list",
    "index_mask_slice", "index_neg_step", "matmul_broadcast", "matmul_vec_batched",
    "einsum_diagonal", "einsum_three", "einsum_hadamard_diag", "softmax_masked",
    "log_softmax_dim_alias", "mlp", "normalize",
}
ROWS = [replace(r, gpu=True) if r.name in GPU_SUBSET else r
        for r in [*arith.T, *shapes.T, *nn.T, *conv.T, *attention.T, *recurrent.T]]
BY_NAME = {r.name: r for r in ROWS}
assert len(BY_NAME) == len(ROWS), "two rows share a name"
assert GPU_SUBSET <= set(BY_NAME), GPU_SUBSET - set(BY_NAME)
assert all(r.grad for r in ROWS if r.name in GPU_SUBSET)
