"""tape.nn against torch.nn: every layer with torch's initial weights loaded into ours
(forward, input and parameter gradients, train and eval, running statistics), default
initialisation statistics, tape.nn.init, second order through layers, and the Module API
(names, state dicts, strictness, freezing, modes, devices, repr, architecture)."""

from __future__ import annotations

import json
import math
from collections import OrderedDict

import numpy as np
import pytest
import torch

import tape
import tape.functional as F
import tape.nn as nn  # noqa: PLR0402  (the spelling users write)
from tape import backend

TOL = {"float64": (1e-7, 1e-9), "float32": (2e-4, 2e-5)}


def _np(t):
    return t.detach().numpy() if isinstance(t, torch.Tensor) else t.numpy()


def _close(got, want, dtype, what):
    assert got is not None, f"{what}: tape gave None"
    got, want = _np(got), _np(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, torch {want.shape}"
    np.testing.assert_allclose(got, want, *TOL[dtype], err_msg=what)


def _copy_from_torch(ours, theirs):
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})


# ----- every layer: (name, constructor(nn), input shapes (or int arrays), train steps) -----
IDX = np.array([[1, 2, 0, 9], [0, 1, 2, 1]])
TGT = np.array([0, 3, 1, 4, 3, 2])
LAYERS = [
    ("linear", lambda nn: nn.Linear(4, 3), [(5, 4)]),
    ("linear_nobias_3d", lambda nn: nn.Linear(4, 3, bias=False), [(2, 5, 4)]),
    ("mlp", lambda nn: nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.0),
                                     nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2)), [(5, 4)]),
    ("flatten", lambda nn: nn.Flatten(), [(2, 3, 4)]),
    ("flatten_range", lambda nn: nn.Flatten(0, 1), [(2, 3, 4)]),
    ("relu", lambda nn: nn.ReLU(), [(4, 5)]),
    ("leaky_relu", lambda nn: nn.LeakyReLU(0.2), [(4, 5)]),
    ("gelu", lambda nn: nn.GELU(), [(4, 5)]),
    ("gelu_tanh", lambda nn: nn.GELU(approximate="tanh"), [(4, 5)]),
    ("sigmoid", lambda nn: nn.Sigmoid(), [(4, 5)]),
    ("tanh", lambda nn: nn.Tanh(), [(4, 5)]),
    ("softmax", lambda nn: nn.Softmax(dim=1), [(4, 5, 2)]),
    ("log_softmax", lambda nn: nn.LogSoftmax(dim=-1), [(4, 5)]),
    ("dropout", lambda nn: nn.Dropout(0.3), [(4, 5)]),  # compared in eval mode only
    ("layer_norm", lambda nn: nn.LayerNorm(5), [(3, 4, 5)]),
    ("layer_norm_2d_noaffine", lambda nn: nn.LayerNorm((4, 5), elementwise_affine=False),
     [(3, 4, 5)]),
    ("layer_norm_nobias", lambda nn: nn.LayerNorm(5, eps=1e-3, bias=False), [(3, 5)]),
    ("batch_norm1d", lambda nn: nn.BatchNorm1d(4), [(8, 4)]),
    ("batch_norm1d_3d", lambda nn: nn.BatchNorm1d(4, momentum=0.5), [(8, 4, 3)]),
    ("batch_norm1d_noaffine", lambda nn: nn.BatchNorm1d(4, affine=False), [(8, 4)]),
    ("batch_norm1d_nobias", lambda nn: nn.BatchNorm1d(4, bias=False), [(8, 4)]),
    ("batch_norm1d_untracked", lambda nn: nn.BatchNorm1d(4, track_running_stats=False),
     [(8, 4)]),
    ("batch_norm2d", lambda nn: nn.BatchNorm2d(3), [(4, 3, 5, 5)]),
    ("batch_norm2d_cumulative", lambda nn: nn.BatchNorm2d(3, momentum=None, eps=1e-3),
     [(4, 3, 2, 2)]),
    ("embedding", lambda nn: nn.Embedding(10, 3), [IDX]),
    ("embedding_padding", lambda nn: nn.Embedding(10, 3, padding_idx=1), [IDX]),
    ("cross_entropy_loss", lambda nn: nn.CrossEntropyLoss(
        weight=torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0]) if nn is torch.nn else
        [1.0, 2.0, 0.5, 1.0, 3.0], label_smoothing=0.1, ignore_index=2), [(6, 5), TGT]),
    ("nll_loss", lambda nn: nn.NLLLoss(reduction="sum"), [(6, 5), TGT]),
    ("mse_loss", lambda nn: nn.MSELoss(), [(4, 5), (4, 5)]),
    ("l1_loss", lambda nn: nn.L1Loss(reduction="none"), [(4, 5), (4, 5)]),
    ("bce_loss", lambda nn: nn.BCELoss(), [(4, 5), (4, 5)]),
    ("bce_logits_loss", lambda nn: nn.BCEWithLogitsLoss(
        pos_weight=torch.tensor([1.0, 2.0, 3.0]) if nn is torch.nn else [1.0, 2.0, 3.0]),
     [(4, 3), (4, 3)]),
    # ----- identity, SiLU/ELU/Softplus, group and RMS norms, smooth L1/Huber/KL losses -----
    ("identity", lambda nn: nn.Identity(54, unused_argument=0.1), [(4, 5)]),
    ("silu", lambda nn: nn.SiLU(), [(4, 5)]),
    ("elu", lambda nn: nn.ELU(alpha=0.5), [(4, 5)]),
    ("softplus", lambda nn: nn.Softplus(), [(4, 5)]),
    ("softplus_beta", lambda nn: nn.Softplus(beta=2, threshold=1.5), [(4, 5)]),
    ("group_norm", lambda nn: nn.GroupNorm(2, 6), [(4, 6, 3, 3)]),
    ("group_norm_3d_noaffine", lambda nn: nn.GroupNorm(3, 6, eps=1e-3, affine=False),
     [(4, 6, 5)]),
    ("group_norm_2d_nobias", lambda nn: nn.GroupNorm(1, 6, bias=False), [(4, 6)]),
    ("rms_norm", lambda nn: nn.RMSNorm(5), [(3, 4, 5)]),
    ("rms_norm_2d_noaffine", lambda nn: nn.RMSNorm((4, 5), eps=1e-3, elementwise_affine=False),
     [(3, 4, 5)]),
    ("smooth_l1_loss", lambda nn: nn.SmoothL1Loss(beta=0.5), [(4, 5), (4, 5)]),
    ("smooth_l1_loss_l1", lambda nn: nn.SmoothL1Loss(reduction="sum", beta=0.0),
     [(4, 5), (4, 5)]),
    ("huber_loss", lambda nn: nn.HuberLoss(reduction="none", delta=0.7), [(4, 5), (4, 5)]),
    ("kl_div_loss", lambda nn: nn.KLDivLoss(reduction="batchmean"), [(4, 5), (4, 5)]),
    ("kl_div_loss_log_target", lambda nn: nn.KLDivLoss(reduction="sum", log_target=True),
     [(4, 5), (4, 5)]),
]
IDS = [name for name, _, _ in LAYERS]


def _inputs(name, shapes, dtype, rng):
    out = []
    for s in shapes:
        if isinstance(s, np.ndarray):
            out.append(s)
        elif name.startswith(("bce_loss", "kl_div_loss")):  # probabilities
            out.append(rng.uniform(0.05, 0.95, s).astype(dtype))
        else:
            out.append(rng.standard_normal(s).astype(dtype))
    return out


def _pair(make, dtype):
    torch.manual_seed(0)
    theirs = make(torch.nn).to(getattr(torch, dtype))
    ours = make(nn).to(np.dtype(dtype))
    _copy_from_torch(ours, theirs)
    return ours, theirs


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name, make, shapes", LAYERS, ids=IDS)
def test_layer_matches_torch(name, make, shapes, dtype, device):
    ours, theirs = _pair(make, dtype)
    assert ours.to(device) is ours
    assert all(t.device == device for t in ours.parameters() + ours.buffers())
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    rng = np.random.default_rng(7)
    modes = ("eval",) if name == "dropout" else ("train", "train", "eval")
    for step, mode in enumerate(modes):
        ours.train(mode == "train")
        theirs.train(mode == "train")
        arrays = _inputs(name, shapes, dtype, rng)
        xs = [tape.tensor(a, requires_grad=a.dtype.kind == "f", device=device) for a in arrays]
        txs = [torch.from_numpy(a.copy()).requires_grad_(a.dtype.kind == "f") for a in arrays]
        params = ours.parameters()
        tparams = list(theirs.parameters())
        with tape.Tape() as t:
            y = ours(*xs)
        ty = theirs(*txs)
        what = f"{name} {mode} step {step}"
        _close(y, ty, dtype, f"{what}: forward")
        assert y.device == device
        v = rng.standard_normal(y.shape).astype(dtype)
        src = [x for x in xs if x.dtype.kind == "f"] + params
        tsrc = [x for x in txs if x.dtype.is_floating_point] + tparams
        grads = t.gradient(y, src, output_gradients=tape.tensor(v, device=device))
        tgrads = torch.autograd.grad(ty, tsrc, torch.from_numpy(v))
        for i, (g, tg) in enumerate(zip(grads, tgrads)):
            _close(g, tg, dtype, f"{what}: gradient {i}")
            assert g.device == device
        for k, tv in theirs.state_dict().items():  # running statistics, num_batches_tracked
            _close(ours.state_dict()[k], tv, dtype, f"{what}: state {k}")


def test_dropout_layer_train_and_eval():
    tape.manual_seed(0)
    d = nn.Dropout(0.25)
    x = tape.ones(100, 400)
    y = d(x).numpy()
    assert abs((y != 0).mean() - 0.75) < 0.01
    np.testing.assert_allclose(y[y != 0], 1 / 0.75, rtol=1e-6)
    assert d.eval()(x) is x


def test_batch_norm_input_checks():
    with pytest.raises(ValueError, match="2D or 3D"):
        nn.BatchNorm1d(3)(tape.randn(2, 3, 4, 5))
    with pytest.raises(ValueError, match="4D"):
        nn.BatchNorm2d(3)(tape.randn(2, 3))


# ----- second order through layers: a gradient penalty, and one through cross-entropy -----
def _gradient_penalty(model_t, model_torch, loss_of, dtype="float64", device="cpu"):
    rng = np.random.default_rng(3)
    x_np = rng.standard_normal((5, 4))
    model_t.to(device)
    x = tape.tensor(x_np, requires_grad=True, device=device)
    with tape.Tape() as outer:
        with tape.Tape() as inner:
            out = loss_of(model_t(x), "tape")
        gx = inner.gradient(out, x)
        penalty = (gx * gx).sum()
    grads = outer.gradient(penalty, model_t.parameters(), unconnected_gradients="zero")
    tx = torch.from_numpy(x_np).requires_grad_()
    tout = loss_of(model_torch(tx), "torch")
    (tgx,) = torch.autograd.grad(tout, tx, create_graph=True)
    tgrads = torch.autograd.grad((tgx * tgx).sum(), list(model_torch.parameters()),
                                 allow_unused=True, materialize_grads=True)
    for i, (g, tg) in enumerate(zip(grads, tgrads)):
        _close(g, tg, dtype, f"gradient penalty, parameter {i}")


def test_gradient_penalty_through_linear_tanh(device):
    def make(nn):
        return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 1))

    ours, theirs = _pair(make, "float64")
    _gradient_penalty(ours, theirs, lambda y, ns: y.sum(), device=device)


def test_gradient_penalty_through_cross_entropy_and_layer_norm(device):
    def make(nn):
        return nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.GELU(), nn.Linear(6, 3))

    ours, theirs = _pair(make, "float64")
    target = np.array([0, 2, 1, 1, 0])

    def loss(y, ns):
        if ns == "tape":
            return F.cross_entropy(y, target, label_smoothing=0.1)
        return torch.nn.functional.cross_entropy(y, torch.from_numpy(target),
                                                 label_smoothing=0.1)

    _gradient_penalty(ours, theirs, loss, device=device)  # numpy targets follow the logits


# ----- default initialisation: the same distributions as torch -----
def _stats(a):
    a = _np(a).ravel()
    return np.abs(a).max(), a.mean(), a.std()


@pytest.mark.parametrize("make, name, bound", [
    (lambda nn: nn.Linear(256, 128), "weight", 1 / 16),
    (lambda nn: nn.Linear(256, 4096), "bias", 1 / 16),
    (lambda nn: nn.Linear(64, 512), "weight", 1 / 8),
    (lambda nn: nn.Embedding(300, 64), "weight", None),
])
def test_default_init_statistics_match_torch(make, name, bound):
    tape.manual_seed(0)
    torch.manual_seed(0)
    ours, theirs = getattr(make(nn), name), getattr(make(torch.nn), name)
    assert ours.dtype == np.float32 and ours.requires_grad and isinstance(ours, nn.Parameter)
    (omax, omean, ostd), (tmax, _, tstd) = _stats(ours), _stats(theirs)
    if bound is not None:  # U(-bound, bound)
        assert omax <= bound and tmax <= bound and omax > 0.95 * bound
    assert abs(ostd - tstd) < 0.06 * tstd
    assert abs(omean) < 0.1 * tstd


def test_default_init_norms_and_padding_row():
    for m in (nn.LayerNorm(7), nn.BatchNorm1d(7), nn.BatchNorm2d(7), nn.GroupNorm(1, 7)):
        assert (m.weight.numpy() == 1).all() and (m.bias.numpy() == 0).all()
    assert (nn.RMSNorm((2, 3)).weight.numpy() == 1).all()
    bn = nn.BatchNorm2d(3)
    assert (bn.running_mean.numpy() == 0).all() and (bn.running_var.numpy() == 1).all()
    assert bn.num_batches_tracked.dtype == np.int64 and bn.num_batches_tracked.item() == 0
    assert not nn.Embedding(5, 3, padding_idx=-1).weight.numpy()[4].any()


def test_seeded_construction_is_reproducible():
    tape.manual_seed(42)
    a = nn.Linear(5, 4).state_dict()
    tape.manual_seed(42)
    b = nn.Linear(5, 4).state_dict()
    for k in a:
        np.testing.assert_array_equal(a[k].numpy(), b[k].numpy())


# ----- tape.nn.init -----
@pytest.mark.parametrize("shape", [(30, 20), (16, 8, 3, 3), (5, 7, 4)])
def test_fans_and_gains_as_torch(shape):
    t = torch.empty(shape)
    assert nn.init._calculate_fan_in_and_fan_out(tape.zeros(shape)) == \
        torch.nn.init._calculate_fan_in_and_fan_out(t)
    for nl, p in [("linear", None), ("conv2d", None), ("sigmoid", None), ("tanh", None),
                  ("relu", None), ("leaky_relu", None), ("leaky_relu", 0.2), ("selu", None)]:
        assert nn.init.calculate_gain(nl, p) == pytest.approx(torch.nn.init.calculate_gain(nl, p))


@pytest.mark.parametrize("fn, kwargs, dist, scale", [
    ("xavier_uniform_", {}, "uniform", lambda fi, fo: math.sqrt(6 / (fi + fo))),
    ("xavier_uniform_", {"gain": 2.0}, "uniform", lambda fi, fo: 2 * math.sqrt(6 / (fi + fo))),
    ("xavier_normal_", {}, "normal", lambda fi, fo: math.sqrt(2 / (fi + fo))),
    ("kaiming_uniform_", {"nonlinearity": "relu"}, "uniform", lambda fi, fo: math.sqrt(6 / fi)),
    ("kaiming_uniform_", {"a": math.sqrt(5)}, "uniform", lambda fi, fo: 1 / math.sqrt(fi)),
    ("kaiming_normal_", {"mode": "fan_out", "nonlinearity": "relu"}, "normal",
     lambda fi, fo: math.sqrt(2 / fo)),
    ("uniform_", {"a": -0.5, "b": 0.5}, "uniform", lambda fi, fo: 0.5),
    ("normal_", {"std": 0.02}, "normal", lambda fi, fo: 0.02),
])
def test_init_functions(fn, kwargs, dist, scale):
    shape = (64, 32, 3, 3)
    fan_in, fan_out = 32 * 9, 64 * 9
    tape.manual_seed(0)
    w = tape.zeros(shape, dtype=np.float64)
    data = w.data
    assert getattr(nn.init, fn)(w, **kwargs) is w and w.data is data  # in place
    s = scale(fan_in, fan_out)
    a = w.numpy()
    if dist == "uniform":
        assert np.abs(a).max() <= s and np.abs(a).max() > 0.99 * s
        assert a.std() == pytest.approx(s / math.sqrt(3), rel=0.03)
    else:
        assert a.std() == pytest.approx(s, rel=0.03)
    tw = torch.zeros(shape, dtype=torch.float64)
    getattr(torch.nn.init, fn)(tw, **kwargs)
    assert a.std() == pytest.approx(tw.std().item(), rel=0.05)


def test_init_constants_and_errors():
    w = tape.randn(3, 4)
    assert nn.init.zeros_(w) is w and not w.numpy().any()
    assert (nn.init.ones_(w).numpy() == 1).all()
    assert (nn.init.constant_(w, 0.5).numpy() == 0.5).all()
    raw = np.zeros((4, 5))
    assert nn.init.xavier_uniform_(raw) is raw and raw.any()  # raw arrays too
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        nn.init.xavier_uniform_(tape.zeros(5))
    with pytest.raises(ValueError, match="mode"):
        nn.init.kaiming_normal_(tape.zeros(3, 3), mode="fan_avg")
    with pytest.raises(ValueError, match="nonlinearity"):
        nn.init.calculate_gain("swish")


# ----- Parameter -----
def test_parameter_is_a_tensor_that_wraps_without_copying():
    a = np.ones((2, 3))
    p = nn.Parameter(a)
    assert isinstance(p, tape.Tensor) and isinstance(p, nn.Parameter)
    assert p.requires_grad and p.data is a and p.dtype == np.float64
    t = tape.randn(3)
    assert nn.Parameter(t).data is t.data
    assert nn.Parameter([1.0, 2.0]).dtype == np.float32  # Python floats: float32
    assert nn.Parameter(np.broadcast_to(np.ones(2), (3, 2))).data.flags.writeable
    assert not nn.Parameter(np.arange(3), requires_grad=False).requires_grad
    with pytest.raises(TypeError, match="floating-point"):
        nn.Parameter(np.arange(3))
    assert repr(p).startswith("Parameter containing:\ntensor(")
    y = p * 2  # ops give plain tensors
    assert type(y) is tape.Tensor and not y.requires_grad
    with tape.Tape() as tp:
        z = (p * p).sum()
    np.testing.assert_array_equal(tp.gradient(z, p).numpy(), 2 * a)


# ----- the Module API, against torch's answers on the same model -----
def _net(ns, const):
    class Block(ns.Module):
        def __init__(self):
            super().__init__()
            self.fc = ns.Linear(8, 8)
            self.norm = ns.LayerNorm(8)

        def forward(self, x):
            return self.norm(self.fc(x)).relu()

    class Net(ns.Module):
        def __init__(self):
            super().__init__()
            self.embed = ns.Linear(4, 8)
            self.bn = ns.BatchNorm1d(8)
            self.blocks = ns.ModuleList([Block(), Block()])
            self.heads = ns.ModuleDict({"a": ns.Linear(8, 2), "b": ns.Linear(8, 3, bias=False)})
            self.tail = ns.Sequential(OrderedDict(drop=ns.Dropout(0.5), act=ns.Tanh()))
            self.shared = self.embed  # a module registered twice
            self.register_buffer("scale", const([2.0]))
            self.register_buffer("cache", const([0.0, 0.0]), persistent=False)
            self.temperature = ns.Parameter(const([1.5]))

        def forward(self, x):
            h = self.bn(self.embed(x))
            for b in self.blocks:
                h = b(h)
            h = self.tail(h) * self.scale / self.temperature
            return self.heads["a"](h).sum() + self.heads["b"](h).sum()

    return Net()


def _pair_net():
    torch.manual_seed(0)
    theirs = _net(torch.nn, lambda v: torch.tensor(v))
    ours = _net(nn, lambda v: tape.tensor(v))
    _copy_from_torch(ours, theirs)
    return ours, theirs


def test_module_names_order_and_repr_match_torch():
    ours, theirs = _pair_net()
    for what in ("named_parameters", "named_buffers", "named_modules", "named_children"):
        assert [n for n, _ in getattr(ours, what)()] == [n for n, _ in getattr(theirs, what)()]
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert "cache" not in ours.state_dict() and "cache" in dict(ours.named_buffers())
    assert len(ours.parameters()) == len(list(theirs.parameters()))
    assert len(ours.children()) == len(list(theirs.children()))
    assert len(ours.modules()) == len(list(theirs.modules()))
    assert repr(ours) == repr(theirs)
    assert ours.shared is ours.embed
    assert isinstance(ours.parameters(), list)  # ready for t.gradient(loss, model.parameters())


def test_module_gradients_train_and_eval_match_torch(device):
    ours, theirs = _pair_net()
    ours.to(device)
    x = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    for mode in (True, False):
        ours.train(mode)
        theirs.train(mode)
        assert all(m.training is mode for m in ours.modules())
        if mode:  # dropout differs by RNG: compare without it
            ours.tail.drop.p = theirs.tail.drop.p = 0.0
        with tape.Tape() as t:
            y = ours(tape.tensor(x, device=device))
        ty = theirs(torch.from_numpy(x))
        _close(y, ty, "float32", f"forward training={mode}")
        grads = t.gradient(y, ours.parameters())
        tgrads = torch.autograd.grad(ty, list(theirs.parameters()))
        for (name, _), g, tg in zip(ours.named_parameters(), grads, tgrads):
            _close(g, tg, "float32", f"{name} training={mode}")
    _close(ours.bn.running_var, theirs.bn.running_var, "float32", "running_var")


def test_state_dict_round_trip_shares_and_casts():
    ours, _ = _pair_net()
    sd = ours.state_dict()
    assert all(type(v) is tape.Tensor and not v.requires_grad for v in sd.values())
    assert sd["embed.weight"].data is ours.embed.weight.data  # shares memory, as torch
    saved = {k: v.numpy().copy() for k, v in sd.items()}
    fresh = _net(nn, lambda v: tape.tensor(v))
    weight = fresh.embed.weight
    result = fresh.load_state_dict({k: v.astype(np.float64) if v.dtype == np.float32 else v
                                    for k, v in saved.items()})
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert fresh.embed.weight is weight and weight.dtype == np.float32  # in place, cast
    for k, v in fresh.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), saved[k].astype(v.dtype), err_msg=k)
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in saved.items()})  # torch values


def test_load_state_dict_errors():
    m = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    sd = {k: v.numpy().copy() for k, v in m.state_dict().items()}
    before = m[0].weight.numpy().copy()
    bad = dict(sd, extra=np.zeros(1))
    del bad["1.running_var"]
    bad["0.weight"] = np.zeros((3, 2))
    with pytest.raises(RuntimeError) as e:
        m.load_state_dict(bad)
    msg = str(e.value)
    assert "Error(s) in loading state_dict for Sequential" in msg
    assert 'Missing key(s) in state_dict: "1.running_var"' in msg
    assert 'Unexpected key(s) in state_dict: "extra"' in msg
    assert "size mismatch for 0.weight: copying a param with shape (3, 2) from checkpoint, " \
           "the shape in current model is (2, 3)" in msg
    np.testing.assert_array_equal(m[0].weight.numpy(), before)  # nothing copied
    with pytest.raises(RuntimeError, match="size mismatch"):  # even when not strict
        m.load_state_dict({"0.weight": np.zeros((3, 2))}, strict=False)
    loose = dict(sd, extra=np.zeros(1))
    del loose["1.running_var"]
    missing, unexpected = m.load_state_dict(loose, strict=False)
    assert missing == ["1.running_var"] and unexpected == ["extra"]


def test_freezing_keeps_parameters_listed_and_stops_their_gradients():
    m = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    m[0].weight.requires_grad = False
    assert len(m.parameters()) == 4  # still listed, as torch
    with tape.Tape() as t:
        y = m(tape.randn(5, 3)).sum()
    grads = t.gradient(y, m.parameters())
    assert grads[0] is None and all(g is not None for g in grads[1:])
    m.requires_grad_(False)
    assert not any(p.requires_grad for p in m.parameters())


def test_to_moves_and_casts_in_place():
    m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    params = m.parameters()
    assert m.to(tape.float64) is m
    assert m.parameters() == params and all(p.dtype == np.float64 for p in params)
    assert m[1].running_mean.dtype == np.float64 and m[1].num_batches_tracked.dtype == np.int64
    assert m.float()[0].weight.dtype == np.float32
    assert m.to("cpu").parameters() == params
    if backend.cupy_or_none() is None:
        with pytest.raises(RuntimeError, match="CuPy"):
            m.to("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        m.to("tpu")


def test_to_device_moves_parameters_and_buffers_and_the_optimizer_follows(device):
    tape.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    params = m.parameters()
    opt = tape.optim.Adam(params, lr=0.1)
    x, target = tape.randn(8, 3), np.array([0, 1, 1, 0, 1, 0, 0, 1])
    with tape.Tape() as t:
        loss = F.cross_entropy(m(x), target)
    opt.step(t.gradient(loss, params))  # state on the CPU
    assert m.to(device) is m and m.parameters() == params  # the same Parameter objects
    for name, v in list(m.named_parameters()) + list(m.named_buffers()):
        assert v.device == device, name
    assert m[1].num_batches_tracked.dtype == np.int64
    sd = m.state_dict()
    assert all(v.device == device for v in sd.values())
    with tape.Tape() as t:
        loss = F.cross_entropy(m(x.to(device)), target)
    assert loss.device == device
    opt.step(t.gradient(loss, params))  # the state follows its parameters
    for p in params:
        assert all(backend.device_of(v) == device for v in opt.state[p].values()
                   if hasattr(v, "shape"))
    cpu = {k: v.numpy() for k, v in m.state_dict().items()}
    m.to("cpu")
    for k, v in m.state_dict().items():
        assert v.device == "cpu"
        np.testing.assert_array_equal(v.numpy(), cpu[k])


def test_attribute_rules():
    class Bare(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.ones(2))

    with pytest.raises(AttributeError, match="super"):
        Bare()
    m = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="Parameter or None"):
        m.weight = tape.randn(2, 2)
    m.bias = None
    assert m.bias is None and "bias" not in m.state_dict()
    with pytest.raises(KeyError, match="already exists"):
        m.register_buffer("weight", tape.zeros(2))
    with pytest.raises(KeyError, match="contain"):
        m.register_buffer("a.b", tape.zeros(2))
    m.extra = nn.ReLU()
    assert "extra" in dict(m.named_children())
    del m.extra
    assert "extra" not in dict(m.named_children())
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        m.nothing  # noqa: B018
    with pytest.raises(NotImplementedError, match="forward"):
        nn.Module()(1)
    with pytest.raises(TypeError):
        m.train("yes")


def test_deepcopy_and_pickle_keep_everything():
    import copy
    import pickle

    m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    m(tape.randn(5, 3))
    for clone in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert type(clone[0].weight) is nn.Parameter and clone[0].weight is not m[0].weight
        assert repr(clone) == repr(m) and clone[0]._config() == m[0]._config()
        for k, v in m.state_dict().items():
            np.testing.assert_array_equal(clone.state_dict()[k].numpy(), v.numpy())


def test_containers():
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    assert len(seq) == 3 and isinstance(seq[-1], nn.Linear)
    assert isinstance(seq[:2], nn.Sequential) and len(seq[:2]) == 2
    del seq[1]
    assert [n for n, _ in seq.named_children()] == ["0", "1"]
    seq.append(nn.Sigmoid())
    assert seq(tape.randn(4, 2)).shape == (4, 1)
    ml = nn.ModuleList([nn.ReLU()])
    ml.append(nn.Tanh())
    ml += [nn.Sigmoid()]
    ml.insert(0, nn.GELU())
    assert [type(m).__name__ for m in ml] == ["GELU", "ReLU", "Tanh", "Sigmoid"]
    assert [n for n, _ in ml.named_children()] == ["0", "1", "2", "3"]
    md = nn.ModuleDict({"x": nn.ReLU()})
    md["y"] = nn.Linear(1, 1)
    assert list(md) == ["x", "y"] and "y" in md and len(md.parameters()) == 2
    assert isinstance(md.pop("x"), nn.ReLU) and list(md.keys()) == ["y"]


def test_architecture_round_trip_is_json():
    tape.manual_seed(0)
    model = nn.Sequential(OrderedDict(
        body=nn.Sequential(nn.Linear(4, 8, dtype=np.float64), nn.LayerNorm((8,), eps=1e-3),
                           nn.GELU(approximate="tanh"), nn.Dropout(0.1)),
        heads=nn.ModuleDict({"cls": nn.Linear(8, 3, dtype=np.float64)}),
        extra=nn.ModuleList([nn.BatchNorm1d(8, momentum=None), nn.Embedding(5, 2, padding_idx=0)]),
        loss=nn.CrossEntropyLoss(weight=[1.0, 2.0, 3.0], label_smoothing=0.1),
    ))
    spec = json.loads(json.dumps(nn.architecture(model)))
    assert spec["children"]["body"]["children"]["0"]["config"] == {
        "in_features": 4, "out_features": 8, "bias": True, "device": None, "dtype": "float64"}
    rebuilt = nn.build(spec)
    assert repr(rebuilt) == repr(model)
    rebuilt.load_state_dict(model.state_dict())
    assert rebuilt.body[0].weight.dtype == np.float64
    x = tape.randn(3, 4, dtype=np.float64)
    model.eval()
    rebuilt.eval()
    np.testing.assert_array_equal(rebuilt.heads["cls"](rebuilt.body(x)).numpy(),
                                  model.heads["cls"](model.body(x)).numpy())

    class Mine(nn.Module):
        pass

    with pytest.raises(TypeError, match="not a built-in layer"):
        nn.architecture(nn.Sequential(Mine()))
