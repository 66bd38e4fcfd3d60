"""tape.checkpoint: gradients, second order, jacobians and the random state equal to the
plain run's (torch.utils.checkpoint as the oracle for an MLP), the memory it saves, its
errors; and tape.gradgradcheck, which passes on correct ops and catches a wrong second
derivative."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.utils.checkpoint

import tape
from tape import nn


def plain(fn, *args, **kwargs):
    """checkpoint's twin: the same call, recorded op by op."""
    return fn(*args, **kwargs)


def mlp(widths, seed=0, dtype=np.float64, dropout=0.0):
    """Linear + tanh layers (and dropout) between ``widths``, float64 by default."""
    tape.manual_seed(seed)
    layers = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), nn.Tanh()] + ([nn.Dropout(dropout)] if dropout else [])
    model = nn.Sequential(*layers)
    for p in model.parameters():
        p.data = p.data.astype(dtype)
    return model


def blocks(model, size):
    """The model's layers in runs of ``size`` (a Sequential each)."""
    layers = list(model)
    return [nn.Sequential(*layers[i: i + size]) for i in range(0, len(layers), size)]


def tensors(seed, *shapes):
    """float64 tensors requiring gradients, the same for a seed on every call."""
    rng = np.random.default_rng(seed)
    return [tape.tensor(rng.standard_normal(s), requires_grad=True) for s in shapes]


# ----- the cases: ``case(ck)`` builds its tensors (the same each call), runs, returns
# (loss, sources); ``ck`` is tape.checkpoint or ``plain`` -----
def _mlp_blocks(ck):
    model, (x,) = mlp([5, 6, 6, 6, 4]), tensors(1, (3, 5))
    h = x
    for block in blocks(model, 4):
        h = ck(block, h)
    return (h * h).sum(), [x, *model.parameters()]


def _dropout_training(ck):
    model, (x,) = mlp([5, 8, 8, 3], dropout=0.4).train(), tensors(2, (4, 5))
    return ck(model, x).sin().sum(), [x, *model.parameters()]


def _closed_over(ck):
    w, b, x = tensors(3, (4, 4), (4,), (3, 4))
    h = ck(lambda a: ((a @ w + b).tanh() @ w).tanh(), x)
    return (h * x).sum(), [x, w, b]


def _several_args(ck):
    x, w, shift = tensors(4, (3, 4), (4, 4), (4,))

    def fn(a, weight, scale, power, act="tanh", shift=None):
        return getattr(a @ weight * scale, act)() ** power + shift

    y = ck(fn, x, w, 0.5, 2, act="sin", shift=shift)
    return (y * y).sum(), [x, w, shift]


def _tuple_output(ck):
    x, w = tensors(5, (3, 4), (4, 4))
    p, q = ck(lambda a, b: ((a @ b).tanh(), (a * a).sum(axis=1)), x, w)
    return (p.sin() * q[:, None]).sum(), [x, w]


def _list_output_partly_used(ck):
    x, w = tensors(6, (3, 4), (4, 2))
    outs = ck(lambda a: [(a @ w).sin(), a.exp(), a.sum()], x)
    return outs[0].sum() + outs[2], [x, w]  # outs[1] gets no cotangent


def _nested(ck):
    model, (x,) = mlp([4, 5, 5, 4]), tensors(7, (2, 4))
    inner, outer = blocks(model, 4)
    return ck(lambda a: outer(ck(inner, a)).exp(), x).sum(), [x, *model.parameters()]


def _passed_and_closed_over(ck):
    x, w = tensors(8, (3, 3), (3, 3))
    return ck(lambda a, v: (a @ v @ w).tanh(), x, w).sum(), [x, w]  # w both ways


def _intermediate_argument(ck):
    x, w = tensors(9, (3, 4), (4, 4))
    h = (x * 2.0).sin()  # no requires_grad: watched as the tape's result
    return ck(lambda a: (a @ w).tanh() * a, h).sum(), [x, w]


def _returns_its_input(ck):
    (x,) = tensors(10, (3,))
    a, b = ck(lambda v: (v, v.exp()), x)
    return (a * b).sum(), [x]


def _mixed_outputs(ck):
    (x,) = tensors(11, (2, 3))
    y32, y64, idx = ck(lambda a: (a.sin().astype(np.float32), a.cos(), tape.argmax(a, 1)), x)
    assert y32.dtype == np.float32 and idx.dtype.kind == "i"
    return (y32.astype(np.float64) * y64).sum(), [x]


def _conv_block(ck):
    tape.manual_seed(12)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(12, 2))
    for p in model.parameters():
        p.data = p.data.astype(np.float64)
    (x,) = tensors(12, (2, 2, 4, 4))
    return ck(model, x).tanh().sum(), [x, *model.parameters()]


CASES = {f.__name__[1:]: f for f in (
    _mlp_blocks, _dropout_training, _closed_over, _several_args, _tuple_output,
    _list_output_partly_used, _nested, _passed_and_closed_over, _intermediate_argument,
    _returns_its_input, _mixed_outputs, _conv_block)}
SECOND = ["mlp_blocks", "dropout_training", "closed_over", "several_args", "tuple_output",
          "nested", "passed_and_closed_over", "intermediate_argument", "returns_its_input"]


def _gradients(run, ck, seed=0):
    tape.manual_seed(seed)
    with tape.Tape() as t:
        loss, sources = run(ck)
    return t.gradient(loss, sources)


def _second_order(run, ck, seed=0):
    """The gradient of the squared first-order gradients: grad of grad."""
    tape.manual_seed(seed)
    with tape.Tape() as outer:
        with tape.Tape() as t:
            loss, sources = run(ck)
        grads = t.gradient(loss, sources)
        penalty = sum((g * g).sum() for g in grads)
    return outer.gradient(penalty, sources)


def assert_all_close(got, want, rtol=1e-10, atol=1e-12):
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        assert (g is None) == (w is None), f"source {k}: {g} against {w}"
        if g is not None:
            assert g.shape == w.shape and g.dtype == w.dtype, f"source {k}"
            np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=rtol, atol=atol,
                                       err_msg=f"source {k}")


@pytest.mark.parametrize("name", CASES)
def test_gradients_equal_the_plain_runs(name):
    assert_all_close(_gradients(CASES[name], tape.checkpoint), _gradients(CASES[name], plain))


@pytest.mark.parametrize("name", SECOND)
def test_second_order_equals_the_plain_runs(name):
    got = _second_order(CASES[name], tape.checkpoint)
    assert_all_close(got, _second_order(CASES[name], plain))


@pytest.mark.parametrize("depth, size", [(4, 2), (6, 3), (6, 1)])
def test_mlp_matches_torch_checkpoint(depth, size):
    model, (x,) = mlp([5] + [6] * depth), tensors(13, (3, 5))
    with tape.Tape() as t:
        h = x
        for block in blocks(model, 2 * size):
            h = tape.checkpoint(block, h)
        loss = (h.sin() * h).sum()
    got = t.gradient(loss, [x, *model.parameters()])
    params = [torch.tensor(p.numpy(), requires_grad=True) for p in model.parameters()]
    tx = torch.tensor(x.numpy(), requires_grad=True)

    def block_fn(k):
        def run(h):
            for w, b in zip(params[2 * k: 2 * (k + size): 2], params[2 * k + 1: 2 * (k + size): 2]):
                h = torch.tanh(h @ w.T + b)
            return h
        return run

    h = tx
    for k in range(0, depth, size):
        h = torch.utils.checkpoint.checkpoint(block_fn(k), h, use_reentrant=False)
    want = torch.autograd.grad((h.sin() * h).sum(), [tx, *params])
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-10, atol=1e-12)


# ----- jacobians: the replay's leading axes through the rule, at first and second order -----
JACOBIAN = {
    "closed_over": lambda ck, x, w: ck(lambda a: (a @ w).tanh() * a, x),
    "tuple_output": lambda ck, x, w: (lambda p, q: p * q[:, None])(
        *ck(lambda a, b: ((a @ b).sin(), (a * a).sum(axis=1)), x, w)),
    "kwargs": lambda ck, x, w: ck(lambda a, weight=None: (a @ weight).exp(), x, weight=w),
    "nested": lambda ck, x, w: ck(lambda a: ck(lambda b: (b @ w).tanh(), a).exp() * a, x),
}


def _jacobians(fn, ck):
    x, w = tensors(14, (3, 4), (4, 4))
    with tape.Tape(persistent=True) as t:
        y = fn(ck, x, w)
    first = [*t.jacobian(y, [x, w]), t.batch_jacobian(y, x)]
    with tape.Tape() as outer:  # the jacobian of a gradient: tensors with leading axes
        with tape.Tape() as t:
            loss = (fn(ck, x, w) ** 2).sum()
        gw = t.gradient(loss, w)
    of_gradient = outer.jacobian(gw, x)
    with tape.Tape() as outer:  # the gradient of a jacobian
        with tape.Tape() as t:
            y = fn(ck, x, w)
        jx = t.jacobian(y, x)
    return [*first, of_gradient, outer.gradient((jx * jx).sum(), w)]


@pytest.mark.parametrize("name", JACOBIAN)
def test_jacobians_equal_the_plain_runs(name):
    got = _jacobians(JACOBIAN[name], tape.checkpoint)
    assert_all_close(got, _jacobians(JACOBIAN[name], plain))


# ----- what the tape keeps -----
def test_one_entry_keeps_the_inputs_and_parameters_only():
    model, (x,) = mlp([8, 16, 16, 8]), tensors(15, (32, 8))
    with tape.Tape() as t:
        y = tape.checkpoint(model, x)
    (entry,) = t._entries
    assert entry[0].name == "checkpoint"
    kept = x.data.nbytes + sum(p.data.nbytes for p in model.parameters())
    assert t.memory() == {"total": kept, "checkpoint": kept}  # not the output, not the insides
    assert y.shape == (32, 8)


def _memory(depth=20, width=32, batch=512, per_block=4, ck=plain):
    model = mlp([width] * (depth + 1), dtype=np.float32)
    x = tape.randn(batch, width)
    with tape.Tape() as t:
        h = x
        for block in blocks(model, 2 * per_block):
            h = ck(block, h)
        h.sum()
    params = sum(p.data.nbytes for p in model.parameters())
    return t.memory(), params, len(t._entries)


def test_memory_of_a_20_layer_mlp_checkpointed_per_block():
    (plain_mem, params, plain_entries) = _memory()
    (mem, params, entries) = _memory(ck=tape.checkpoint)
    assert entries == 5 + 1 and plain_entries == 2 * 20 + 1
    activation = 512 * 32 * 4
    assert plain_mem["total"] - params >= 19 * activation
    assert mem["total"] - params <= 5 * activation  # each block's input alone
    assert mem["total"] < plain_mem["total"] / 3
    assert set(mem) == {"total", "checkpoint", "sum"}


# ----- the random state -----
def _dropout_run(ck, seed=21):
    model = mlp([6, 6, 6], dropout=0.5).train()
    (x,) = tensors(16, (5, 6))
    tape.manual_seed(seed)
    with tape.Tape() as t:
        y = ck(model, x)
        after_forward = tape.get_rng_state()
        loss = (y * tape.rand(5, 6, dtype=np.float64)).sum()  # draws after fn, as a plain run
    grads = t.gradient(loss, [x, *model.parameters()])
    return after_forward, tape.get_rng_state(), tape.rand(3).numpy(), grads


def test_rng_state_after_equals_a_plain_runs():
    got, want = _dropout_run(tape.checkpoint), _dropout_run(plain)
    assert got[0] == want[0] and got[1] == want[1]
    np.testing.assert_array_equal(got[2], want[2])
    assert_all_close(got[3], want[3])


def test_a_persistent_tape_reruns_the_same_function_each_time():
    model = mlp([4, 4, 4], dropout=0.5).train()
    (x,) = tensors(17, (3, 4))
    tape.manual_seed(3)
    with tape.Tape(persistent=True) as t:
        y = tape.checkpoint(model, x)
    first = t.gradient(y, [x, *model.parameters()])
    tape.rand(10)  # the caller's random state moves on; the rerun's does not
    assert_all_close(t.gradient(y, [x, *model.parameters()]), first)


# ----- what it differentiates -----
def test_only_what_the_tape_watches_gets_a_gradient():
    x, w = tensors(18, (2, 3), (3, 3))
    with tape.Tape(watch_accessed_variables=False) as t:
        t.watch(x)
        y = tape.checkpoint(lambda a: (a @ w).tanh(), x)
    gx, gw = t.gradient(y, [x, w])
    assert gw is None
    with tape.Tape() as t:
        want = (x @ w).tanh()
    np.testing.assert_allclose(gx.numpy(), t.gradient(want, x).numpy(), rtol=1e-12)


def test_without_a_recording_tape_it_is_a_plain_call():
    (x,) = tensors(19, (3,))
    np.testing.assert_allclose(tape.checkpoint(lambda a: a.exp(), x).numpy(), np.exp(x.numpy()))
    with tape.Tape() as t, tape.no_grad():
        y = tape.checkpoint(lambda a: a.exp(), x)
    assert not t._entries
    np.testing.assert_allclose(y.numpy(), np.exp(x.numpy()))


def test_a_function_of_nothing_watched_records_nothing():
    x = tape.tensor(np.random.default_rng(20).standard_normal(3))
    with tape.Tape() as t:
        y = tape.checkpoint(lambda a: a.exp(), x)
    assert not t._entries and isinstance(y, tape.Tensor)


# ----- errors -----
@pytest.mark.parametrize("fn, message", [
    (3, "fn must be callable"),
    (lambda a: 1.0, "must return a tape.Tensor or a tuple or list of them, got a float"),
    (lambda a: (a, 2), "got a tuple whose item 1 is of type int"),
    (lambda a: [], "got an empty list"),
    (lambda a: {"y": a}, "got a dict"),
])
def test_what_fn_returns_is_checked(fn, message):
    (x,) = tensors(21, (3,))
    with pytest.raises(TypeError, match=message):
        tape.checkpoint(fn, x)  # a plain call
    with tape.Tape(), pytest.raises(TypeError, match=message):
        tape.checkpoint(fn, x)


def test_a_function_that_changes_when_rerun_raises():
    (x,) = tensors(22, (4,))
    calls = []

    def fn(a):
        calls.append(1)
        return a[: len(calls) + 1].exp()

    with tape.Tape() as t:
        y = tape.checkpoint(fn, x)
    with pytest.raises(RuntimeError, match="gave other outputs when run again"):
        t.gradient(y, x)


# ----- gradgradcheck -----
@tape.custom_gradient
def _sin_right(x):
    return tape.sin(x), lambda dy: dy * tape.cos(x)


@tape.custom_gradient
def _sin_constant_grad(x):  # right at first order; its gradient is a constant to the tape
    cos = tape.tensor(np.cos(x.numpy()))
    return tape.sin(x), lambda dy: dy * cos


@tape.custom_gradient
def _sin_cut_cotangent(x):  # right at first order; cut off from its cotangent
    return tape.sin(x), lambda dy: dy.detach() * tape.cos(x)


GRADGRAD = {
    "cube": (lambda x: (x * x * x).sum(), [(4,)]),
    "tanh_matmul": (lambda x, w: ((x @ w).tanh() * x).sin(), [(3, 4), (4, 4)]),
    "softmax": (lambda x: tape.softmax(x, axis=-1) * x, [(2, 5)]),
    "linear_in_x": (lambda x, w: x @ w, [(2, 3), (3, 2)]),
    "custom_gradient": (lambda x: _sin_right(x) * x, [(5,)]),
    "checkpoint": (lambda x, w: tape.checkpoint(lambda a: (a @ w).tanh() * a, x), [(3, 4), (4, 4)]),
}


@pytest.mark.parametrize("name", GRADGRAD)
def test_gradgradcheck_passes_on_correct_ops(name):
    fn, shapes = GRADGRAD[name]
    rng = np.random.default_rng(23)
    assert tape.gradgradcheck(fn, [tape.tensor(rng.standard_normal(s)) for s in shapes])


@pytest.mark.parametrize("fn, names", [
    (_sin_constant_grad, "second-order gradient of input 0 \\(shape \\(5,\\)\\)"),
    (_sin_cut_cotangent, "second-order gradient of output_gradients"),
])
def test_gradgradcheck_catches_a_wrong_second_derivative(fn, names):
    x = tape.tensor(np.random.default_rng(24).standard_normal(5))
    assert tape.gradcheck(fn, [x])  # the first order is right
    with pytest.raises(tape.GradcheckError, match=names + " differs from finite differences: "
                                                         "element \\d+ is"):
        tape.gradgradcheck(fn, [x])


def test_gradgradcheck_wants_a_tensor():
    with pytest.raises(TypeError, match="gradgradcheck: fn must return a tape.Tensor"):
        tape.gradgradcheck(lambda x: 1.0, [tape.randn(2)])
