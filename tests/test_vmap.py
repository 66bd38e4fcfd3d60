"""func.vmap: every row of the op table mapped over a batch of examples, against PyTorch
run on each example (the oracle), for the values (float64 and float32) and for the
per-example VJPs (the gradient rules run mapped too); mapping only the first input (the
others shared by every example); then per-example gradients of an MLP and a CNN against
a loop and torch.func, nesting, in_axes/out_axes, grad(vmap(f)), vmap(jacrev(f)),
dropout, and the errors.

Each example of a row is the row's inputs drawn with another salt (the row's generator:
the same domains). Rows listed in UNMAPPABLE raise, naming the op or the reason.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.func as tf
from optable import ROWS
from optable.checks import numpy_of

import tape
import tape.functional as F
from tape import func, nn

B = 3  # examples per batch
DTYPES = ["float64", "float32"]

# rows whose function cannot run mapped, and the words their error must contain
UNMAPPABLE = {
    "custom_gradient": "custom_gradient",
    "custom_gradient_two_inputs": "custom_gradient",
    "function": "_Cube",
    "index_self_mask": "boolean mask",
    "batch_norm_train_2d": "running_mean",
    "batch_norm_train_4d": "running_mean",
}
RANDOM = {"dropout"}  # a mask per example: the oracle's masks differ (tested below)


def _params(rows):
    out = []
    for r in rows:
        marks = ()
        if r.name in RANDOM:
            marks = (pytest.mark.skip(reason=f"{r.name}: random, tested on its own below"),)
        out += [pytest.param(r, d, id=f"{r.name}-{d}", marks=marks) for d in DTYPES]
    return out


def _batch(row, dtype):
    """Per input, B examples stacked on a new first axis."""
    per = [row.inputs(dtype, salt=k) for k in range(B)]
    return [np.stack([p[i] for p in per]) for i in range(len(row.shapes))]


def _torch_each(row, arrays, mapped):
    outs = []
    for k in range(B):
        args = [torch.from_numpy(np.array(a[k] if m else a)) for a, m in zip(arrays, mapped)]
        outs.append(row.torch(*args))
    return torch.stack(outs)


def _check(got, want, tol, what):
    assert isinstance(got, tape.Tensor), f"{what}: got {type(got).__name__}"
    want = numpy_of(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, torch {want.shape}"
    if want.dtype.kind in "biu":
        np.testing.assert_array_equal(got.numpy(), want, err_msg=what)
    else:
        np.testing.assert_allclose(got.numpy(), want, rtol=tol[0], atol=tol[1], err_msg=what)


@pytest.mark.parametrize("row, dtype", _params(ROWS))
@pytest.mark.parametrize("which", ["all", "first"])
def test_vmap_values(row, dtype, which):
    arrays = _batch(row, dtype)
    mapped = [True] * len(arrays) if which == "all" else [i == 0 for i in range(len(arrays))]
    if which == "first":  # the other inputs shared: one example's
        arrays = [a if m else a[0] for a, m in zip(arrays, mapped)]
    in_axes = tuple(0 if m else None for m in mapped)
    fn = func.vmap(lambda *xs: row.tape(*xs), in_axes=in_axes)
    args = [tape.tensor(a) for a in arrays]
    if row.name in UNMAPPABLE:
        with pytest.raises((NotImplementedError, ValueError), match=UNMAPPABLE[row.name]):
            fn(*args)
        return
    tol = row.tol64 if dtype == "float64" else row.tol32
    _check(fn(*args), _torch_each(row, arrays, mapped), tol, f"{row.name} vmap ({which})")


GRAD_ROWS = [r for r in ROWS if r.grad and "gradient" not in {**r.skip, **r.xfail}]


@pytest.mark.parametrize("row, dtype", _params(GRAD_ROWS))
def test_vmap_vjp(row, dtype):
    """Per-example VJPs: vmap(vjp) against torch's gradient of each example."""
    if row.name in UNMAPPABLE:
        pytest.skip(f"{row.name}: cannot be mapped (test_vmap_values checks the error)")
    arrays = _batch(row, dtype)
    out_shape = tuple(row.tape(*[tape.tensor(a[0]) for a in arrays]).shape)
    cts = np.random.default_rng(5).standard_normal((B,) + out_shape).astype(dtype)

    def per_example(ct, *xs):
        def f(*src):
            args = list(xs)
            for i, s in zip(row.sources, src):
                args[i] = s
            return row.tape(*args)

        return func.vjp(f, *[xs[i] for i in row.sources])[1](ct)

    got = func.vmap(per_example)(tape.tensor(cts), *[tape.tensor(a) for a in arrays])
    tol = row.tol64 if dtype == "float64" else row.tol32
    for j, i in enumerate(row.sources):
        want = []
        for k in range(B):
            args = [torch.from_numpy(np.array(a[k])) for a in arrays]
            src = args[i].requires_grad_()
            out = row.torch(*args)
            (g,) = torch.autograd.grad(out, [src], torch.from_numpy(np.array(cts[k])),
                                       allow_unused=True)
            want.append(torch.zeros_like(src) if g is None else g)
        _check(got[j], torch.stack(want), tol, f"{row.name} vmap(vjp), input {i}")


# ----- per-example gradients of whole models -----
def _mlp_loss(params, x, y):
    w1, b1, w2, b2 = params
    h = (x @ w1 + b1).tanh()
    return F.cross_entropy((h @ w2 + b2)[None], y[None])


def test_per_example_gradients_of_an_mlp():
    rng = np.random.default_rng(0)
    params = [tape.tensor(rng.standard_normal(s) * 0.3) for s in [(6, 5), (5,), (5, 3), (3,)]]
    x, y = tape.tensor(rng.standard_normal((4, 6))), tape.tensor(np.array([0, 2, 1, 2]))
    got = func.vmap(func.grad(_mlp_loss), in_axes=(None, 0, 0))(params, x, y)
    loop = [func.grad(_mlp_loss)(params, x[k], y[k]) for k in range(4)]

    def torch_loss(ps, xi, yi):
        w1, b1, w2, b2 = ps
        h = torch.tanh(xi @ w1 + b1)
        return torch.nn.functional.cross_entropy((h @ w2 + b2)[None], yi[None])

    tps = [torch.from_numpy(p.numpy()) for p in params]
    want = tf.vmap(tf.grad(torch_loss), in_dims=(None, 0, 0))(
        tps, torch.from_numpy(x.numpy()), torch.from_numpy(y.numpy()))
    for j in range(4):
        assert got[j].shape == (4,) + params[j].shape
        np.testing.assert_allclose(got[j].numpy(), np.stack([g[j].numpy() for g in loop]),
                                   rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(got[j].numpy(), want[j].numpy(), rtol=1e-10, atol=1e-12)


class _SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 4 * 4, 4)

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.conv(x)), 2)
        return self.fc(h.reshape(h.shape[0], -1))


def test_per_example_gradients_of_a_cnn():
    tape.manual_seed(0)
    model = _SmallCNN()
    params = dict(model.named_parameters())
    rng = np.random.default_rng(1)
    x = tape.tensor(rng.standard_normal((3, 1, 8, 8)).astype(np.float32))
    y = tape.tensor(np.array([1, 0, 3]))

    def loss(ps, xi, yi):
        return F.cross_entropy(func.functional_call(model, ps, xi[None]), yi[None])

    got = func.vmap(func.grad(loss), in_axes=(None, 0, 0))(params, x, y)
    for k in range(3):
        one = func.grad(loss)(params, x[k], y[k])
        for name in params:
            np.testing.assert_allclose(got[name].numpy()[k], one[name].numpy(), rtol=2e-4,
                                       atol=2e-6, err_msg=name)


# ----- axes, nesting, composition -----
def test_in_axes_and_out_axes():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 5))
    got = func.vmap(lambda u, v: u[:, None] * v, in_axes=(1, 0), out_axes=2)(
        tape.tensor(a), tape.tensor(b))
    want = np.stack([a[:, k][:, None] * b[k] for k in range(4)], axis=2)
    np.testing.assert_allclose(got.numpy(), want)
    # an output that does not depend on the mapped input is repeated
    const = func.vmap(lambda u, v: (u.sum(), v * 2), in_axes=(0, None))(
        tape.tensor(a), tape.tensor(b))
    np.testing.assert_allclose(const[1].numpy(), np.broadcast_to(b * 2, (3, 4, 5)))


def test_nested_vmap_is_an_outer_product():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((3, 2)), rng.standard_normal((4, 2))
    got = func.vmap(func.vmap(lambda u, v: (u * v).sum(), in_axes=(None, 0)),
                    in_axes=(0, None))(tape.tensor(a), tape.tensor(b))
    np.testing.assert_allclose(got.numpy(), a @ b.T)


def test_grad_of_vmap_and_vmap_of_jacrev():
    rng = np.random.default_rng(4)
    x = tape.tensor(rng.standard_normal((3, 4)))
    g = func.grad(lambda z: func.vmap(lambda r: (r.sin() * r).sum())(z).sum())(x)
    np.testing.assert_allclose(g.numpy(), np.sin(x.numpy()) + x.numpy() * np.cos(x.numpy()))
    jac = func.vmap(func.jacrev(lambda r: r.tanh() * r.sum()))(x)
    want = tf.vmap(tf.jacrev(lambda r: torch.tanh(r) * r.sum()))(torch.from_numpy(x.numpy()))
    np.testing.assert_allclose(jac.numpy(), want.numpy(), rtol=1e-10, atol=1e-12)
    hvp = func.vmap(func.hessian(lambda r: (r ** 3).sum()))(x)
    np.testing.assert_allclose(hvp.numpy(), np.stack([np.diag(6 * r) for r in x.numpy()]))


def test_vmap_under_a_users_tape():
    x = tape.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    with tape.Tape() as t:
        y = func.vmap(lambda r: (r * r).sum())(x).sum()
    np.testing.assert_allclose(t.gradient(y, x).numpy(), 2 * x.numpy())


def test_dropout_draws_a_mask_per_example():
    tape.manual_seed(0)
    x = tape.ones(64, 50)
    out = func.vmap(lambda r: F.dropout(r, 0.5))(x).numpy()
    assert set(np.unique(out)) <= {0.0, 2.0}
    assert not all((out[k] == out[0]).all() for k in range(1, 64))
    assert 0.4 < (out == 0).mean() < 0.6


# ----- errors -----
@pytest.mark.parametrize("call, match", [
    (lambda x: func.vmap(lambda r: r, in_axes=(0, 0))(x), "in_axes"),
    (lambda x: func.vmap(lambda r: r, in_axes=2)(x), "out of range"),
    (lambda x: func.vmap(lambda r: r, in_axes=None)(x), "maps no tensor"),
    (lambda x: func.vmap(lambda r, s: r + s)(x, x[:2]), "different sizes"),
    (lambda x: func.vmap(lambda r: r.numpy())(x), "inside vmap"),
    (lambda x: func.vmap(lambda r: float(r.sum()))(x), "inside vmap"),
    (lambda x: func.vmap(lambda r: r, out_axes=None)(x), "differs between examples"),
    (lambda x: func.vmap(lambda r: r[r > 0])(x), "boolean mask"),
])
def test_errors(call, match):
    with pytest.raises((ValueError, NotImplementedError), match=match):
        call(tape.tensor(np.ones((3, 4))))


# ----- on each device: the same numbers as on the CPU -----
def test_transforms_on_each_device(device):
    rng = np.random.default_rng(6)
    params = [rng.standard_normal(s) for s in [(6, 5), (5,), (5, 3), (3,)]]
    x, y = rng.standard_normal((4, 6)), np.array([0, 2, 1, 2])
    images, w = rng.standard_normal((2, 3, 1, 6, 6)), rng.standard_normal((2, 1, 3, 3))

    def run(dev):
        ps = [tape.tensor(p, device=dev) for p in params]
        per_example = func.vmap(func.grad(_mlp_loss), in_axes=(None, 0, 0))(
            ps, tape.tensor(x, device=dev), tape.tensor(y, device=dev))
        tangent = func.jvp(lambda a: (a @ ps[0]).tanh().sum(), (tape.tensor(x, device=dev),),
                           (tape.ones_like(tape.tensor(x, device=dev)),))[1]
        convs = func.vmap(lambda im: F.max_pool2d(F.conv2d(im, tape.tensor(w, device=dev),
                                                           padding=1), 2))(
            tape.tensor(images, device=dev))
        return [g.numpy() for g in per_example] + [tangent.numpy(), convs.numpy()]

    for got, want in zip(run(device), run("cpu")):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
