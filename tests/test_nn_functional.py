"""What the op table cannot check of tape.functional's layers and losses: gradients torch
has no twin of (finite differences), edges, dropout's statistics, entry counts and errors
in the user's words. Their values, gradients, Jacobians and second order against
torch.nn.functional are rows of the op table (tests/optable/nn.py, run by test_ops.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import tape
import tape.functional as F


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
    x = tape.randn(3, 4, requires_grad=True)
    t = np.full(3, -100)
    with tape.Tape() as tp:
        loss = F.cross_entropy(x, t)
    assert np.isnan(loss.item())
    tx = torch.tensor(x.numpy(), requires_grad=True)
    want = TF.cross_entropy(tx, torch.from_numpy(t))
    want.backward()
    assert np.isnan(want.item())
    np.testing.assert_array_equal(tp.gradient(loss, x).numpy(), tx.grad.numpy())  # zeros
    assert F.cross_entropy(x, t, reduction="sum").item() == 0


@pytest.mark.parametrize("kwargs, entries", [
    ({}, 1),  # a classifier's loss: one fused entry
    ({"ignore_index": 1, "reduction": "sum"}, 1),
    ({"label_smoothing": 0.1}, 2),  # log_softmax, then one fused nll entry
    ({"reduction": "none"}, 2),
])
def test_cross_entropy_accepts_tape_tensor_targets_and_its_entries(device, kwargs, entries):
    x = tape.randn(4, 3, requires_grad=True, device=device)
    with tape.Tape() as t:
        loss = F.cross_entropy(x, tape.tensor([0, 2, 1, 1], device=device), **kwargs)
    assert len(t._entries) == entries
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
    (lambda: F.group_norm(tape.randn(2, 6), 4), ValueError, "positive divisor"),
    (lambda: F.group_norm(tape.randn(6), 2), ValueError, "at least 2 dimensions"),
    (lambda: F.group_norm(tape.randn(2, 6), 2, tape.ones(3)), ValueError, "one per channel"),
    (lambda: F.group_norm(tape.randn(2, 6), 2, tape.ones(6, dtype="float64")), TypeError,
     "same dtype"),
    (lambda: F.rms_norm(tape.randn(3, 4), (3,)), ValueError, "normalized_shape"),
    (lambda: F.rms_norm(tape.randn(3, 4), 4, tape.ones(3)), ValueError, "weight"),
    (lambda: F.smooth_l1_loss(tape.randn(3), tape.randn(3), beta=-1.0), ValueError, "beta"),
    (lambda: F.huber_loss(tape.randn(3), tape.randn(3), delta=0.0), ValueError, "delta"),
    (lambda: F.huber_loss(tape.randn(3), tape.randn(3), weight=tape.ones(1)), ValueError,
     "weight"),
    (lambda: F.kl_div(tape.randn(3), tape.rand(3), reduction="avg"), ValueError, "batchmean"),
    (lambda: tape.nn.GroupNorm(4, 6), ValueError, "divisible"),
    (lambda: tape.nn.KLDivLoss(reduction="avg"), ValueError, "reduction"),
])
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ----- the activations, norms and losses added with torch's names -----
def test_kl_div_mean_warns_as_torch_and_batchmean_does_not():
    x, t = np.log(np.full((2, 4), 0.25)), np.full((2, 4), 0.25)
    with pytest.warns(UserWarning, match="batchmean") as ours:
        F.kl_div(tape.tensor(x), tape.tensor(t))
    with pytest.warns(UserWarning, match="batchmean") as theirs:
        TF.kl_div(torch.tensor(x), torch.tensor(t))
    assert str(ours[0].message) == str(theirs[0].message)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert F.kl_div(tape.tensor(x), tape.tensor(t), reduction="batchmean").item() == 0


def test_elu_of_large_inputs_has_finite_gradients_and_alpha_at_zero():
    x = tape.tensor([-1e3, -1.0, 0.0, 1.0, 1e3], requires_grad=True)
    with tape.Tape() as tp:
        y = F.elu(x, alpha=0.5).sum()
    tx = torch.tensor(x.numpy(), requires_grad=True)
    np.testing.assert_allclose(tp.gradient(y, x).numpy(),
                               torch.autograd.grad(TF.elu(tx, 0.5).sum(), tx)[0].numpy())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_rms_norm_default_eps_is_the_dtype_epsilon(dtype):
    x = np.zeros((2, 3), dtype)  # 0 / sqrt(0 + eps): only eps decides it is not NaN
    x[0, 0] = 1e-4
    got = F.rms_norm(tape.tensor(x), (3,)).numpy()
    np.testing.assert_allclose(got, TF.rms_norm(torch.tensor(x), (3,)).numpy(), rtol=1e-6)
    assert got.dtype == np.dtype(dtype)


def test_cross_entropy_keeps_its_own_targets_when_the_label_buffer_is_refilled():
    x = tape.randn(4, 3, requires_grad=True)
    labels = np.array([0, 1, 2, 1])
    want = TF.cross_entropy(torch.tensor(x.numpy(), requires_grad=True), torch.tensor(labels))
    with tape.Tape() as t:
        loss = F.cross_entropy(x, labels)
    labels[:] = 2  # the next micro-batch's labels, before the gradient is asked
    got = t.gradient(loss, x).numpy()
    tx = torch.tensor(x.numpy(), requires_grad=True)
    TF.cross_entropy(tx, torch.tensor([0, 1, 2, 1])).backward()
    np.testing.assert_allclose(got, tx.grad.numpy(), rtol=1e-5, atol=1e-6)
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)
