"""The binary elementwise ops (and where, maximum, minimum) on broadcastable shapes that
hypothesis draws: values and gradients against torch, float64 and float32. A bounded,
derandomized search (the same examples on every run), without a deadline or database."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes
from optable.checks import check_grad, check_values
from optable.row import TOL32, TOL64, Row, away, normal, positive

import tape

NONZERO = away(0, eps=0.5)
OPS = {  # name: (fn(m, *xs), one generator per input)
    "add": (lambda m, a, b: a + b, (normal, normal)),
    "sub": (lambda m, a, b: a - b, (normal, normal)),
    "mul": (lambda m, a, b: a * b, (normal, normal)),
    "div": (lambda m, a, b: a / b, (normal, NONZERO)),
    "pow": (lambda m, a, b: a**b, (positive, normal)),
    "maximum": (lambda m, a, b: m.maximum(a, b), (normal, normal)),
    "minimum": (lambda m, a, b: m.minimum(a, b), (normal, normal)),
    "where": (lambda m, c, a, b: m.where(c > 0, a, b), (normal, normal, normal)),
}
SHAPES = {n: mutually_broadcastable_shapes(num_shapes=len(gens), min_dims=0, max_dims=4,
                                           max_side=3)
          for n, (_, gens) in OPS.items()}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", OPS)
@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(data=st.data())
def test_broadcast_values_and_gradients_match_torch(name, dtype, data):
    fn, gens = OPS[name]
    shapes = data.draw(SHAPES[name], label="shapes")
    row = Row(name, fn, shapes.input_shapes, gens)
    arrays = row.inputs(dtype)
    xs = [tape.tensor(a, requires_grad=True) for a in arrays]
    txs = [torch.from_numpy(a.copy()).requires_grad_() for a in arrays]
    with tape.Tape() as t:
        y = row.tape(*xs)
    ty = row.torch(*txs)
    tol = TOL64 if dtype == "float64" else TOL32
    check_values(y, ty, tol, f"{name} {shapes.input_shapes}")
    assert y.shape == shapes.result_shape
    v = np.random.default_rng(0).standard_normal(y.shape).astype(dtype)
    grads = t.gradient(y, xs, output_gradients=v)
    want = torch.autograd.grad(ty, txs, torch.from_numpy(v), allow_unused=True)
    for i, (g, tg, x) in enumerate(zip(grads, want, xs)):
        check_grad(g, tg, x, tol, f"{name} {shapes.input_shapes}: gradient of input {i}",
                   none_is_zero=True)
