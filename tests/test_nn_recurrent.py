"""nn.RNN, nn.LSTM and nn.GRU against torch's modules: torch's state_dict loaded by name,
then outputs, final states and the gradients of every parameter, the input and the
initial states compared (float64 and float32; layers, directions, layouts, given states,
unbatched input); initialisation, names, errors, dropout, vmap and devices."""

import numpy as np
import pytest
import torch

import tape
import tape.nn as nn
from tape import func

KINDS = {
    "rnn_tanh": lambda m, *a, **k: m.RNN(*a, **k),
    "rnn_relu": lambda m, *a, **k: m.RNN(*a, nonlinearity="relu", **k),
    "lstm": lambda m, *a, **k: m.LSTM(*a, **k),
    "gru": lambda m, *a, **k: m.GRU(*a, **k),
}
CONFIGS = {  # name: (constructor keywords, given initial states, unbatched)
    "plain": ({}, False, False),
    "two_layers": ({"num_layers": 2}, False, False),
    "bidirectional": ({"bidirectional": True}, False, False),
    "two_layers_bidirectional_hx": ({"num_layers": 2, "bidirectional": True}, True, False),
    "batch_first_hx": ({"batch_first": True}, True, False),
    "no_bias": ({"bias": False, "num_layers": 2}, False, False),
    "unbatched": ({"num_layers": 2, "bidirectional": True}, False, True),
    "unbatched_hx": ({"batch_first": True}, True, True),
    "dropout_eval": ({"num_layers": 2, "dropout": 0.5}, False, False),  # eval: no dropout
}
L, N, IN, H = 5, 3, 4, 6
TOL = {"float64": (1e-9, 1e-10), "float32": (2e-4, 2e-5)}


def _pair(kind, kw, dtype):
    torch.manual_seed(0)
    theirs = KINDS[kind](torch.nn, IN, H, **kw).to(getattr(torch, dtype))
    ours = KINDS[kind](nn, IN, H, **kw, dtype=dtype)
    ours.load_state_dict({k: tape.tensor(v.detach().numpy()) for k, v in
                          theirs.state_dict().items()})
    return ours, theirs


def _run(kind, config, dtype):
    kw, given, unbatched = CONFIGS[config]
    ours, theirs = _pair(kind, kw, dtype)
    ours.eval(), theirs.eval()
    rng = np.random.default_rng(1)
    D = 2 if kw.get("bidirectional") else 1
    layers = kw.get("num_layers", 1)
    x_shape = (L, IN) if unbatched else (N, L, IN) if kw.get("batch_first") else (L, N, IN)
    h_shape = (layers * D, H) if unbatched else (layers * D, N, H)
    arrays = [rng.standard_normal(x_shape).astype(dtype)]
    if given:
        arrays += [rng.standard_normal(h_shape).astype(dtype) * 0.5
                   for _ in range(2 if kind == "lstm" else 1)]
    xs = [tape.tensor(a, requires_grad=True) for a in arrays]
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]

    def call(module, inputs):
        if len(inputs) == 1:
            return module(inputs[0])
        return module(inputs[0], tuple(inputs[1:]) if kind == "lstm" else inputs[1])

    def flat(result):
        out, state = result
        return [out, *state] if kind == "lstm" else [out, state]

    params = [p for _, p in sorted(ours.named_parameters())]
    tparams = [p for _, p in sorted(theirs.named_parameters())]
    with tape.Tape() as t:
        ys = flat(call(ours, xs))
    want = flat(call(theirs, ts))
    vs = [rng.standard_normal(tuple(w.shape)).astype(dtype) for w in want]
    grads = t.gradient(ys, xs + params, output_gradients=[tape.tensor(v) for v in vs])
    twant = torch.autograd.grad(want, ts + tparams, [torch.tensor(v) for v in vs])
    return ys, want, grads, twant


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("kind", list(KINDS))
def test_matches_torch(kind, config, dtype):
    ys, want, grads, twant = _run(kind, config, dtype)
    rtol, atol = TOL[dtype]
    for y, w in zip(ys, want):
        assert y.shape == tuple(w.shape) and y.dtype == np.dtype(dtype)
        np.testing.assert_allclose(y.numpy(), w.detach().numpy(), rtol=rtol, atol=atol)
    assert len(grads) == len(twant)
    for g, w in zip(grads, twant):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=rtol, atol=atol * 10)


@pytest.mark.parametrize("kind", list(KINDS))
def test_parameters_named_shaped_and_initialised_as_torch(kind):
    kw = {"num_layers": 2, "bidirectional": True}
    theirs = KINDS[kind](torch.nn, IN, H, **kw)
    tape.manual_seed(0)
    ours = KINDS[kind](nn, IN, H, **kw)
    want = {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert list(got) == list(want) and got == want
    bound = 1 / np.sqrt(H)
    for name, p in ours.named_parameters():
        assert p.dtype == np.float32 and np.abs(p.numpy()).max() <= bound, name
    every = np.concatenate([p.numpy().ravel() for p in ours.parameters()])
    assert np.abs(every).max() > 0.95 * bound  # uniform over the whole range
    assert abs(every.std() - bound / np.sqrt(3)) < 0.1 * bound
    assert repr(ours).startswith(type(ours).__name__ + f"({IN}, {H}")


def test_lstm_returns_output_and_state_tuple():
    out, (h, c) = nn.LSTM(IN, H, num_layers=3)(tape.randn(L, N, IN))
    assert out.shape == (L, N, H) and h.shape == c.shape == (3, N, H)
    out, h = nn.GRU(IN, H, bidirectional=True, batch_first=True)(tape.randn(N, L, IN))
    assert out.shape == (N, L, 2 * H) and h.shape == (2, N, H)


def test_dropout_between_layers_in_training():
    torch.manual_seed(0)
    ours = nn.LSTM(IN, H, num_layers=2, dropout=0.5)
    x = tape.randn(L, N, IN)
    ours.eval()
    a = ours(x)[0].numpy()
    ours.train()
    tape.manual_seed(1)
    b = ours(x)[0].numpy()
    assert not np.allclose(a, b)
    with pytest.warns(UserWarning, match="num_layers=1"):
        nn.GRU(IN, H, dropout=0.2)


@pytest.mark.parametrize("make, call, match", [
    (lambda: nn.LSTM(IN, H, proj_size=2), None, "proj_size"),
    (lambda: nn.RNN(IN, H, nonlinearity="gelu"), None, "nonlinearity"),
    (lambda: nn.GRU(IN, H, dropout=1.5), None, "dropout"),
    (lambda: nn.LSTM(IN, H), lambda m: m(tape.randn(L, N, IN + 1)), "input_size is 4"),
    (lambda: nn.LSTM(IN, H), lambda m: m(tape.randn(2, L, N, IN)), "2 .* or 3 dimensions"),
    (lambda: nn.GRU(IN, H, num_layers=2), lambda m: m(tape.randn(L, N, IN), tape.randn(1, N, H)),
     r"h_0 has shape \(1, 3, 6\); expected \(2, 3, 6\)"),
    (lambda: nn.LSTM(IN, H), lambda m: m(tape.randn(L, N, IN), tape.randn(1, N, H)), "tuple"),
    (lambda: nn.RNN(IN, H), lambda m: m(tape.randn(L, N, IN).astype(tape.float64)), "dtype"),
])
def test_errors(make, call, match):
    with pytest.raises((ValueError, TypeError, NotImplementedError), match=match):
        call(make()) if call else make()


def test_cell_errors_name_the_op_and_shapes():
    from tape.ops.recurrent import gru_cell, lstm_cell

    with pytest.raises(ValueError, match=r"lstm_cell: gates of shape \(2, 7\)"):
        lstm_cell(tape.randn(2, 7), tape.randn(2, 4))
    with pytest.raises(ValueError, match="gru_cell"):
        gru_cell(tape.randn(2, 6), tape.randn(2, 6), tape.randn(2, 3))


def test_vmap_over_unbatched_sequences_matches_the_batched_run():
    model = nn.GRU(IN, H, num_layers=2, bidirectional=True)
    x = tape.randn(N, L, IN)
    params = dict(model.named_parameters())

    def one(p, seq):
        out, h = func.functional_call(model, p, (seq,))
        return (out ** 2).sum() + h.sum()

    per = func.vmap(func.grad(one), in_axes=(None, 0))(params, x)
    for k in range(N):
        with tape.Tape() as t:
            out, h = model(x[k])
            loss = (out ** 2).sum() + h.sum()
        want = t.gradient(loss, list(params.values()))
        for name, w in zip(params, want):
            np.testing.assert_allclose(per[name].numpy()[k], w.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh"])
def test_on_device(kind, device):
    tape.manual_seed(0)
    ours = KINDS[kind](nn, IN, H, num_layers=2, bidirectional=True)
    ondev = KINDS[kind](nn, IN, H, num_layers=2, bidirectional=True, device=device)
    ondev.load_state_dict(ours.state_dict())
    x = np.random.default_rng(0).standard_normal((L, N, IN)).astype(np.float32)
    results = []
    for model, dev in ((ours, "cpu"), (ondev, device)):
        xs = tape.tensor(x, device=dev, requires_grad=True)
        with tape.Tape() as t:
            out = model(xs)[0]
            loss = (out * out).sum()
        grads = t.gradient(loss, [xs] + list(model.parameters()))
        assert out.device == dev
        results.append([out.to("cpu").numpy()] + [g.to("cpu").numpy() for g in grads])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("make", [
    lambda: nn.LSTM(IN, H, num_layers=2, bidirectional=True, batch_first=True),
    lambda: nn.RNN(IN, H, nonlinearity="relu"),
    lambda: nn.GRU(IN, H, bias=False),
])
def test_save_model_round_trip(make, tmp_path):
    model = make()
    nn.save_model(model, tmp_path / "m.safetensors")
    again = nn.load_model(tmp_path / "m.safetensors")
    assert repr(again) == repr(model)
    x = tape.randn(N, L, IN)
    np.testing.assert_array_equal(again(x)[0].numpy(), model(x)[0].numpy())
