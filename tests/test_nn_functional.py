"""tape.functional's layers and losses against torch.nn.functional: values and gradients
in float64 and float32, Jacobians (cotangents with leading batch axes) and second
derivatives through nested tapes; dropout's statistics; errors in the user's words.
Every row also runs on the GPU (``device`` fixture; skipped without one)."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import tape
import tape.functional as F
from tape import backend

TOL = {"float64": (1e-7, 1e-9), "float32": (2e-4, 2e-5)}


class _TapeNS:
    """``m.F`` and ``m.const`` (index arrays) for tape, on one device."""

    F = F

    def __init__(self, device="cpu"):
        self.device = device

    def const(self, a):
        return backend.to_device(np.asarray(a), self.device)


class _TorchNS:
    F = TF
    const = staticmethod(lambda a: torch.from_numpy(np.asarray(a)))


@dataclass
class Row:
    name: str
    fn: Callable  # fn(m, *xs): m.F is the functional module, m.const makes an index array
    shapes: list
    kinds: str = ""  # per input: n normal, p in (0.05, 0.95), + positive, b big logits
    fixed: tuple = ()  # inputs passed as tensors but not differentiated

    def inputs(self, dtype):
        rng = np.random.default_rng(zlib.crc32(self.name.encode()))
        out = []
        for i, shape in enumerate(self.shapes):
            kind = self.kinds[i] if i < len(self.kinds) else "n"
            if kind == "p":
                a = rng.uniform(0.05, 0.95, shape)
            elif kind == "+":
                a = rng.uniform(0.5, 2.0, shape)
            elif kind == "b":
                a = rng.standard_normal(shape) * 40
            else:
                a = rng.standard_normal(shape)
            out.append(a.astype(dtype))
        return out


N, C = 6, 5
T = np.array([0, 3, 1, 4, 3, 2])  # class targets of (N, C) inputs
T_IGN = np.array([0, -100, 1, 4, -100, 2])
T_IGN2 = np.array([2, 3, 2, 4, 0, 2])  # ignore_index=2
T4 = np.random.default_rng(4).integers(0, C, (2, 3, 4))
T4[0, 1, 2] = T4[1, 0, 0] = -100
IDX = np.array([[1, 2, 1, 9], [0, 1, 2, 1]])  # repeated rows: the gradient accumulates


def _ce_rows():
    rows = []
    for red in ("mean", "sum", "none"):
        rows += [
            Row(f"ce_{red}", lambda m, x, red=red: m.F.cross_entropy(
                x, m.const(T), reduction=red), [(N, C)]),
            Row(f"ce_weight_{red}", lambda m, x, w, red=red: m.F.cross_entropy(
                x, m.const(T), weight=w, reduction=red), [(N, C), (C,)], "n+", (1,)),
            Row(f"ce_ignore_{red}", lambda m, x, red=red: m.F.cross_entropy(
                x, m.const(T_IGN), reduction=red), [(N, C)]),
            Row(f"ce_smooth_{red}", lambda m, x, red=red: m.F.cross_entropy(
                x, m.const(T), reduction=red, label_smoothing=0.1), [(N, C)]),
            Row(f"ce_all_{red}", lambda m, x, w, red=red: m.F.cross_entropy(
                x, m.const(T_IGN2), weight=w, ignore_index=2, reduction=red,
                label_smoothing=0.2), [(N, C), (C,)], "n+", (1,)),
            Row(f"ce_4d_{red}", lambda m, x, w, red=red: m.F.cross_entropy(
                x, m.const(T4), weight=w, reduction=red, label_smoothing=0.05),
                [(2, C, 3, 4), (C,)], "n+", (1,)),
            Row(f"ce_prob_{red}", lambda m, x, q, w, red=red: m.F.cross_entropy(
                x, q, weight=w, reduction=red, label_smoothing=0.1),
                [(N, C), (N, C), (C,)], "np+", (2,)),
            Row(f"ce_prob_4d_{red}", lambda m, x, q, red=red: m.F.cross_entropy(
                x, q, reduction=red), [(2, C, 3), (2, C, 3)], "np"),
            Row(f"ce_unbatched_{red}", lambda m, x, red=red: m.F.cross_entropy(
                x, m.const(3), reduction=red), [(C,)]),
            Row(f"nll_{red}", lambda m, x, w, red=red: m.F.nll_loss(
                x, m.const(T_IGN), weight=w, reduction=red), [(N, C), (C,)], "n+", (1,)),
            Row(f"nll_4d_{red}", lambda m, x, red=red: m.F.nll_loss(
                x, m.const(T4), reduction=red), [(2, C, 3, 4)]),
            Row(f"mse_{red}", lambda m, x, y, red=red: m.F.mse_loss(x, y, reduction=red),
                [(4, 5), (4, 5)]),
            Row(f"l1_{red}", lambda m, x, y, red=red: m.F.l1_loss(x, y, reduction=red),
                [(4, 5), (4, 5)]),
            Row(f"bce_{red}", lambda m, x, t, w, red=red: m.F.binary_cross_entropy(
                x, t, weight=w, reduction=red), [(4, 5), (4, 5), (5,)], "pp+", (2,)),
            Row(f"bce_logits_{red}", lambda m, x, t, w, pw, red=red:
                m.F.binary_cross_entropy_with_logits(x, t, weight=w, reduction=red,
                                                     pos_weight=pw),
                [(4, 5), (4, 5), (5,), (5,)], "np++", (2, 3)),
        ]
    rows += [
        Row("bce_logits_big", lambda m, x, t: m.F.binary_cross_entropy_with_logits(
            x, t, reduction="none"), [(4, 5), (4, 5)], "bp"),
        Row("ce_big_logits", lambda m, x: m.F.cross_entropy(x * 100, m.const(T)), [(N, C)]),
    ]
    return rows


ROWS = [
    Row("linear", lambda m, x, w, b: m.F.linear(x, w, b), [(N, 4), (3, 4), (3,)]),
    Row("linear_nobias", lambda m, x, w: m.F.linear(x, w), [(N, 4), (3, 4)]),
    Row("linear_3d", lambda m, x, w, b: m.F.linear(x, w, b), [(2, N, 4), (3, 4), (3,)]),
    Row("linear_1d", lambda m, x, w, b: m.F.linear(x, w, b), [(4,), (3, 4), (3,)]),
    Row("layer_norm", lambda m, x, w, b: m.F.layer_norm(x, (5,), w, b),
        [(3, 4, 5), (5,), (5,)]),
    Row("layer_norm_2axes", lambda m, x: m.F.layer_norm(x, (4, 5), eps=1e-3), [(3, 4, 5)]),
    Row("batch_norm_train_2d", lambda m, x, rm, rv, w, b: m.F.batch_norm(
        x, rm, rv, w, b, training=True), [(8, 4), (4,), (4,), (4,), (4,)], "nn+nn", (1, 2)),
    Row("batch_norm_train_4d", lambda m, x, rm, rv, w, b: m.F.batch_norm(
        x, rm, rv, w, b, training=True, momentum=0.3, eps=1e-3),
        [(4, 3, 5, 5), (3,), (3,), (3,), (3,)], "nn+nn", (1, 2)),
    Row("batch_norm_train_3d_nostats", lambda m, x: m.F.batch_norm(
        x, None, None, training=True), [(4, 3, 7)]),
    Row("batch_norm_eval_4d", lambda m, x, rm, rv, w, b: m.F.batch_norm(
        x, rm, rv, w, b, training=False), [(4, 3, 5, 5), (3,), (3,), (3,), (3,)], "nn+nn",
        (1, 2)),
    Row("embedding", lambda m, w: m.F.embedding(m.const(IDX), w), [(10, 3)]),
    Row("embedding_padding", lambda m, w: m.F.embedding(m.const(IDX), w, padding_idx=1),
        [(10, 3)]),
    Row("dropout_eval", lambda m, x: m.F.dropout(x, 0.4, training=False), [(4, 5)]),
] + _ce_rows()
IDS = [r.name for r in ROWS]


def _run(row, dtype, device="cpu", watch=True):
    arrays = row.inputs(dtype)
    xs = [tape.tensor(a, requires_grad=watch and i not in row.fixed, device=device)
          for i, a in enumerate(arrays)]
    txs = [torch.from_numpy(a.copy()).requires_grad_(watch and i not in row.fixed)
           for i, a in enumerate(arrays)]
    return xs, txs


def _close(got, want, dtype, what, device="cpu"):
    assert got is not None, f"{what}: tape gave None"
    assert got.device == device, f"{what}: on {got.device}, not {device}"
    want = want.detach().numpy(force=True)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, torch {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, torch {want.dtype}"
    rtol, atol = TOL[str(dtype)]
    np.testing.assert_allclose(got.numpy(), want, rtol=rtol, atol=atol, err_msg=what)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_forward_and_gradient(row, dtype, device):
    xs, txs = _run(row, dtype, device)
    with tape.Tape() as t:
        y = row.fn(_TapeNS(device), *xs)
    ty = row.fn(_TorchNS, *txs)
    _close(y, ty, dtype, f"{row.name} forward", device)
    v = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
    src = [x for i, x in enumerate(xs) if i not in row.fixed]
    tsrc = [x for i, x in enumerate(txs) if i not in row.fixed]
    grads = t.gradient(y, src, output_gradients=tape.tensor(v, device=device))
    want = torch.autograd.grad(ty, tsrc, torch.from_numpy(v))
    for i, (g, tg) in enumerate(zip(grads, want)):
        _close(g, tg, dtype, f"{row.name} gradient {i}", device)
    for i in row.fixed:  # running statistics updated in place, as torch
        np.testing.assert_allclose(xs[i].numpy(), txs[i].detach().numpy(),
                                   *TOL[dtype], err_msg=f"{row.name} input {i} after the call")


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_jacobian(row, device):
    xs, txs = _run(row, "float64", device)
    src = [x for i, x in enumerate(xs) if i not in row.fixed]
    tsrc = [x for i, x in enumerate(txs) if i not in row.fixed]
    with tape.Tape() as t:
        y = row.fn(_TapeNS(device), *xs)
    jacs = t.jacobian(y, src)

    def f(*a):
        it = iter(a)
        args = [next(it) if i not in row.fixed else x.detach().clone()
                for i, x in enumerate(txs)]
        return row.fn(_TorchNS, *args)

    want = torch.autograd.functional.jacobian(f, tuple(s.detach() for s in tsrc))
    for i, (j, tj) in enumerate(zip(jacs, want)):
        _close(j, tj, "float64", f"{row.name} jacobian {i}", device)


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_second_order(row, device):
    xs, txs = _run(row, "float64", device)
    src = [x for i, x in enumerate(xs) if i not in row.fixed]
    tsrc = [x for i, x in enumerate(txs) if i not in row.fixed]
    rng = np.random.default_rng(2)
    with tape.Tape() as outer:
        with tape.Tape() as inner:
            y = row.fn(_TapeNS(device), *xs)
        v = rng.standard_normal(y.shape)
        ws = [rng.standard_normal(s.shape) for s in src]
        grads = inner.gradient(y, src, output_gradients=tape.tensor(v, device=device))
        s = sum((g * backend.to_device(w, device)).sum() for g, w in zip(grads, ws))
    second = outer.gradient(s, src, unconnected_gradients="zero")
    ty = row.fn(_TorchNS, *txs)
    tg = torch.autograd.grad(ty, tsrc, torch.from_numpy(v), create_graph=True)
    ts = sum((g * torch.from_numpy(w)).sum() for g, w in zip(tg, ws))
    tsecond = torch.autograd.grad(ts, tsrc, allow_unused=True, materialize_grads=True) \
        if ts.requires_grad else [torch.zeros_like(x) for x in tsrc]
    for i, (g, want) in enumerate(zip(second, tsecond)):
        _close(g, want, "float64", f"{row.name} second order {i}", device)


# ----- what torch cannot check -----
def test_pos_weight_gradient_by_finite_differences():
    rng = np.random.default_rng(5)
    x, t = rng.standard_normal((3, 4)), rng.uniform(0, 1, (3, 4))
    assert tape.gradcheck(
        lambda pw: F.binary_cross_entropy_with_logits(tape.tensor(x), tape.tensor(t),
                                                      pos_weight=pw, reduction="sum"),
        [tape.tensor(rng.uniform(0.5, 2, 4))])


def test_binary_cross_entropy_at_the_edges_matches_torch():
    x = np.array([0.0, 1.0, 0.0, 1.0, 1e-30, 0.5])
    t = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 0.3])
    xs, tx = tape.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    with tape.Tape() as tp:
        y = F.binary_cross_entropy(xs, tape.tensor(t), reduction="none")
    ty = TF.binary_cross_entropy(tx, torch.tensor(t), reduction="none")
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy())  # log clamped at -100
    np.testing.assert_allclose(tp.gradient(y, xs).numpy(),
                               torch.autograd.grad(ty.sum(), tx)[0].numpy())


def test_bce_with_logits_extreme_logits_are_finite():
    x = tape.tensor([-1e4, -50.0, 0.0, 50.0, 1e4], requires_grad=True)
    t = tape.tensor([1.0, 0.0, 0.5, 1.0, 0.0])
    with tape.Tape() as tp:
        y = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    g = tp.gradient(y, x)
    want = TF.binary_cross_entropy_with_logits(torch.tensor(x.numpy()), torch.tensor(t.numpy()),
                                               reduction="none")
    np.testing.assert_allclose(y.numpy(), want.numpy(), rtol=1e-6)
    assert np.isfinite(g.numpy()).all()


def test_cross_entropy_all_ignored_mean_is_nan_like_torch():
    x = tape.randn(3, 4)
    t = np.full(3, -100)
    assert np.isnan(F.cross_entropy(x, t).item())
    assert np.isnan(TF.cross_entropy(torch.tensor(x.numpy()), torch.from_numpy(t)).item())
    assert F.cross_entropy(x, t, reduction="sum").item() == 0


def test_cross_entropy_accepts_tape_tensor_targets_and_is_two_entries(device):
    x = tape.randn(4, 3, requires_grad=True, device=device)
    with tape.Tape() as t:
        loss = F.cross_entropy(x, tape.tensor([0, 2, 1, 1], device=device))
    assert len(t._entries) == 2  # log_softmax, then one fused nll entry
    assert t.gradient(loss, x).shape == (4, 3)
    assert loss.device == device  # the loss stays on the device until asked
    with pytest.raises(IndexError, match="out of bounds"):
        F.cross_entropy(x, tape.tensor([0, 2, 3, 1], device=device))


def test_linear_is_one_entry():
    x, w, b = tape.randn(3, 4), tape.randn(2, 4, requires_grad=True), tape.randn(2,
                                                                                requires_grad=True)
    with tape.Tape() as t:
        F.linear(x, w, b)
    assert len(t._entries) == 1


# ----- dropout: the library RNG, inverted scaling, the mask kept in the entry -----
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dropout_keep_rate_scaling_and_gradient(dtype, device):
    tape.manual_seed(0)
    x = tape.ones(200, 500, dtype=dtype, requires_grad=True, device=device)
    with tape.Tape() as t:
        y = F.dropout(x, p=0.3)
    kept = y.numpy() != 0
    assert y.dtype == np.dtype(dtype) and y.device == device
    assert abs(kept.mean() - 0.7) < 0.01
    np.testing.assert_allclose(y.numpy()[kept], 1 / 0.7, rtol=1e-6)
    g = t.gradient(y, x, output_gradients=tape.full((200, 500), 2.0, dtype=dtype,
                                                    device=device))
    np.testing.assert_allclose(g.numpy(), y.numpy() * 2, rtol=1e-6)  # the same mask


def test_dropout_seeded_eval_and_edge_probabilities():
    x = tape.randn(10, 10)
    tape.manual_seed(3)
    a = F.dropout(x, 0.5).numpy()
    tape.manual_seed(3)
    np.testing.assert_array_equal(a, F.dropout(x, 0.5).numpy())
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x
    assert not F.dropout(x, 1.0).numpy().any()
    with pytest.raises(ValueError, match="between 0 and 1"):
        F.dropout(x, 1.5)


def test_dropout_second_order_uses_the_same_mask():
    tape.manual_seed(1)
    x = tape.randn(5, 6, dtype="float64", requires_grad=True)
    with tape.Tape() as outer:
        with tape.Tape() as inner:
            y = F.dropout(x, 0.5)
            z = (y * y * y).sum()
        g = inner.gradient(z, x)
        s = g.sum()
    mask = y.numpy() / np.where(x.numpy() == 0, 1, x.numpy())
    np.testing.assert_allclose(outer.gradient(s, x).numpy(), 6 * x.numpy() * mask**3,
                               rtol=1e-10)


# ----- errors say what is wrong -----
@pytest.mark.parametrize("call, error, match", [
    (lambda: F.linear(tape.randn(3, 4), tape.randn(4, 3)), ValueError, "in_features"),
    (lambda: F.linear(tape.randn(3, 4), tape.randn(2, 4), tape.randn(3)), ValueError, "bias"),
    (lambda: F.cross_entropy(tape.randn(3, 4), np.array([0, 1])), ValueError, "target"),
    (lambda: F.cross_entropy(tape.randn(3, 4), np.array([0, 1, 4])), IndexError,
     "out of bounds"),
    (lambda: F.cross_entropy(tape.randn(3, 4), np.array([0, 1, 2]), reduction="avg"),
     ValueError, "reduction"),
    (lambda: F.cross_entropy(tape.randn(3, 4), tape.randn(3, 5)), ValueError, "probability"),
    (lambda: F.nll_loss(tape.randn(3, 4), np.array([0, 1, 2]), weight=tape.ones(3)),
     ValueError, "weight"),
    (lambda: F.mse_loss(tape.randn(3), tape.randn(3), reduction="avg"), ValueError, "reduction"),
    (lambda: F.binary_cross_entropy(tape.tensor([1.5]), tape.tensor([1.0])), ValueError,
     "between 0 and 1"),
    (lambda: F.binary_cross_entropy_with_logits(tape.randn(3), tape.randn(4)), ValueError,
     "shape"),
    (lambda: F.embedding(np.array([0, 10]), tape.randn(10, 3)), IndexError, "out of range"),
    (lambda: F.embedding(np.array([0.5]), tape.randn(10, 3)), TypeError, "integers"),
    (lambda: F.layer_norm(tape.randn(3, 4), (3,)), ValueError, "normalized_shape"),
    (lambda: F.batch_norm(tape.randn(1, 3), None, None, training=True), ValueError,
     "more than 1 value"),
    (lambda: F.batch_norm(tape.randn(4, 3), None, None), ValueError, "running_mean"),
])
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
