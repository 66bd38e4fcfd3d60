"""MultiheadAttention, TransformerEncoderLayer and TransformerEncoder against torch's: the
same state_dict keys, torch's weights loaded by name, then outputs and the gradients of
every input and parameter compared (eval mode: dropout off), in float64 and float32."""

import json

import numpy as np
import pytest
import torch

import tape
import tape.functional as F
import tape.nn as nn

DTYPES = {"float64": (np.float64, torch.float64, (1e-9, 1e-10)),
          "float32": (np.float32, torch.float32, (2e-4, 2e-5))}
E, H, L, S, N = 8, 2, 4, 5, 3


def _pair(make, dtype):
    """Our module and torch's, torch's weights loaded into ours by name; both in eval."""
    np_dtype, t_dtype, _ = DTYPES[dtype]
    torch.manual_seed(0)
    theirs = make(torch.nn).to(t_dtype).eval()
    ours = make(nn).to(np_dtype).eval()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict({k: tape.tensor(v.detach().numpy()) for k, v in
                          theirs.state_dict().items()})
    return ours, theirs


def _inputs(shapes, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(DTYPES[dtype][0]) for s in shapes]


def _compare(ours, theirs, arrays, run, dtype):
    """``run(module, *tensors)`` gives outputs (None allowed); the sum of each output times
    fixed random weights is differentiated for the inputs and every parameter."""
    rtol, atol = DTYPES[dtype][2]
    xs = [tape.tensor(a, requires_grad=True) for a in arrays]
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    params = ours.parameters()
    rng = np.random.default_rng(1)
    loss, tloss, weights = 0.0, 0.0, []
    with tape.Tape() as t:
        outs = run(ours, *xs)
        outs = outs if isinstance(outs, tuple) else (outs,)
        for o in outs:
            w = None if o is None else rng.standard_normal(tuple(o.shape)).astype(o.dtype)
            weights.append(w)
            if o is not None:
                loss = loss + (o * tape.tensor(w)).sum()
    touts = run(theirs, *ts)
    touts = touts if isinstance(touts, tuple) else (touts,)
    for o, to, w in zip(outs, touts, weights):
        assert (o is None) == (to is None)
        if o is None:
            continue
        assert tuple(o.shape) == tuple(to.shape)
        np.testing.assert_allclose(o.numpy(), to.detach().numpy(), rtol=rtol, atol=atol)
        tloss = tloss + (to * torch.tensor(w)).sum()
    grads = t.gradient(loss, xs + params)
    want = torch.autograd.grad(tloss, ts + list(theirs.parameters()), allow_unused=True)
    names = [f"input {i}" for i in range(len(xs))] + [n for n, _ in ours.named_parameters()]
    for name, g, w in zip(names, grads, want):
        w = np.zeros(g.shape) if w is None else w.numpy()
        np.testing.assert_allclose(g.numpy(), w, rtol=rtol * 10, atol=atol * 10, err_msg=name)


def _kpm(kind, n=N, s=S):
    """A key padding mask (N, S): True (or -inf) on padded keys, never a whole row."""
    pad = np.zeros((n, s), bool)
    pad[0, -2:] = pad[1, -1] = True
    if kind == "bool":
        return pad
    return np.where(pad, -np.inf, np.random.default_rng(3).standard_normal((n, s)))


def _causal_bool(lq, lk):
    return np.triu(np.ones((lq, lk), bool), 1)  # True above the diagonal: may not attend


def _as(lib, mask, dtype):
    """A numpy mask as the library's tensor (floats in the inputs' dtype)."""
    if mask is None:
        return None
    if mask.dtype.kind == "f":
        mask = mask.astype(DTYPES[dtype][0])
    return tape.tensor(mask) if lib == "tape" else torch.tensor(mask)


def _lib(module):
    return "torch" if isinstance(module, torch.nn.Module) else "tape"


# ----- state_dict keys -----
@pytest.mark.parametrize("make", [
    lambda m: m.MultiheadAttention(E, H),
    lambda m: m.MultiheadAttention(E, H, bias=False, batch_first=True),
    lambda m: m.TransformerEncoderLayer(E, H, 16),
    lambda m: m.TransformerEncoderLayer(E, H, 16, bias=False, norm_first=True),
    lambda m: m.TransformerEncoder(m.TransformerEncoderLayer(E, H, 16), 3),
    lambda m: m.TransformerEncoder(m.TransformerEncoderLayer(E, H, 16), 2, norm=m.LayerNorm(E),
                                   enable_nested_tensor=False),
], ids=["mha", "mha_nobias", "layer", "layer_nobias_norm_first", "encoder", "encoder_norm"])
def test_state_dict_keys_and_shapes_are_torchs(make):
    ours, theirs = make(nn), make(torch.nn)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [tuple(v.shape) for v in ours.state_dict().values()] == \
        [tuple(v.shape) for v in theirs.state_dict().values()]
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]


# ----- MultiheadAttention -----
MHA_CASES = {  # name: (module kwargs, forward kwargs, key_padding_mask kind, attn_mask kind)
    "self": ({}, {}, None, None),
    "self_no_weights": ({}, {"need_weights": False}, None, None),
    "per_head_weights": ({}, {"average_attn_weights": False}, None, None),
    "cross": ({}, {}, None, None),
    "kpm_bool": ({}, {}, "bool", None),
    "kpm_bool_no_weights": ({}, {"need_weights": False}, "bool", None),
    "kpm_float": ({}, {}, "float", None),
    "causal_bool": ({}, {}, None, "causal"),
    "causal_hint": ({}, {"need_weights": False, "is_causal": True}, None, "causal"),
    "causal_hint_kpm": ({}, {"need_weights": False, "is_causal": True}, "bool", "causal"),
    "mask_3d_float": ({}, {"need_weights": False}, "float", "3d"),
    "mask_3d_weights": ({}, {}, "float", "3d"),
    "no_bias": ({"bias": False}, {}, "bool", "causal"),
}


def _attn_mask(kind, n, lq, lk, dtype):
    if kind == "causal":
        return _causal_bool(lq, lk)
    if kind == "3d":
        return np.random.default_rng(4).standard_normal((n * H, lq, lk))
    return None


@pytest.mark.parametrize("batch_first", [False, True], ids=["seq_first", "batch_first"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", MHA_CASES)
def test_multihead_attention_matches_torch(case, dtype, batch_first):
    mkw, fkw, kpm_kind, mask_kind = MHA_CASES[case]
    ours, theirs = _pair(lambda m: m.MultiheadAttention(E, H, batch_first=batch_first, **mkw),
                         dtype)
    self_attn = case != "cross"
    lk = L if self_attn else S
    kpm = None if kpm_kind is None else _kpm(kpm_kind, N, lk)
    mask = _attn_mask(mask_kind, N, L, lk, dtype)
    shape_q = (N, L, E) if batch_first else (L, N, E)
    shape_k = (N, lk, E) if batch_first else (lk, N, E)
    arrays = _inputs([shape_q] if self_attn else [shape_q, shape_k, shape_k], dtype)

    def run(mod, *xs):
        q, k, v = (xs * 3) if self_attn else xs
        lib = _lib(mod)
        return mod(q, k, v, key_padding_mask=_as(lib, kpm, dtype),
                   attn_mask=_as(lib, mask, dtype), **fkw)

    _compare(ours, theirs, arrays, run, dtype)


@pytest.mark.parametrize("fkw", [{}, {"need_weights": False}, {"average_attn_weights": False}],
                         ids=["weights", "no_weights", "per_head"])
def test_multihead_attention_unbatched(fkw):
    ours, theirs = _pair(lambda m: m.MultiheadAttention(E, H), "float64")
    kpm = np.zeros(S, bool)
    kpm[-1] = True
    mask = np.random.default_rng(5).standard_normal((H, L, S))

    def run(mod, q, k, v):
        lib = _lib(mod)
        return mod(q, k, v, key_padding_mask=_as(lib, kpm, "float64"),
                   attn_mask=_as(lib, mask, "float64"), **fkw)

    _compare(ours, theirs, _inputs([(L, E), (S, E), (S, E)], "float64"), run, "float64")


def test_multihead_attention_initialisation_is_torchs():
    tape.manual_seed(0)
    m = nn.MultiheadAttention(64, 4)
    w = m.in_proj_weight.numpy()
    bound = np.sqrt(6 / (64 + 3 * 64))  # xavier_uniform_ of (3E, E)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
    assert not m.in_proj_bias.numpy().any() and not m.out_proj.bias.numpy().any()
    out_bound = 1 / np.sqrt(64)  # out_proj keeps Linear's kaiming_uniform_(a=sqrt(5))
    ow = m.out_proj.weight.numpy()
    assert np.abs(ow).max() <= out_bound and np.abs(ow).max() > 0.9 * out_bound
    assert w.dtype == np.float32 and m.head_dim == 16


def test_multihead_attention_fully_masked_row_as_torch():
    """A query with every key masked: NaN with weights (torch's plain softmax), zeros from
    scaled_dot_product_attention without them (its safe softmax), then out_proj."""
    ours, theirs = _pair(lambda m: m.MultiheadAttention(E, H), "float64")
    x = _inputs([(L, N, E)], "float64")[0]
    kpm = np.zeros((N, L), bool)
    kpm[0] = True
    for need in (True, False):
        a = ours(*[tape.tensor(x)] * 3, key_padding_mask=kpm, need_weights=need)[0].numpy()
        b = theirs(*[torch.tensor(x)] * 3, key_padding_mask=torch.tensor(kpm),
                   need_weights=need)[0].detach().numpy()
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10)
        assert np.isnan(a[:, 0]).all() == need


def test_multihead_attention_dropout_in_training_only():
    m = nn.MultiheadAttention(E, H, dropout=0.5)
    x = tape.randn(L, N, E)
    tape.manual_seed(1)
    a, wa = m(x, x, x)
    b, wb = m(x, x, x)
    assert not np.allclose(wa.numpy(), wb.numpy())
    m.eval()
    c, _ = m(x, x, x)
    d, _ = m(x, x, x)
    np.testing.assert_array_equal(c.numpy(), d.numpy())


@pytest.mark.parametrize("make, call, error, match", [
    (lambda: nn.MultiheadAttention(8, 3), None, ValueError, "divisible"),
    (lambda: nn.MultiheadAttention(8, 2, kdim=4), None, NotImplementedError, "kdim"),
    (lambda: nn.MultiheadAttention(8, 2, add_bias_kv=True), None, NotImplementedError,
     "add_bias_kv"),
    (lambda: nn.MultiheadAttention(8, 2), lambda m, x: m(x, x, x, is_causal=True),
     RuntimeError, "Need attn_mask"),
    (lambda: nn.MultiheadAttention(8, 2), lambda m, x: m(x, x, x, attn_mask=np.zeros((3, 3))),
     ValueError, "attn_mask of shape"),
    (lambda: nn.MultiheadAttention(8, 2),
     lambda m, x: m(x, x, x, key_padding_mask=np.zeros((4, 2), bool)), ValueError,
     "key_padding_mask of shape"),
    (lambda: nn.MultiheadAttention(8, 2),
     lambda m, x: m(x, x, x, key_padding_mask=np.zeros((2, 4), np.int64)), TypeError,
     "bool and floating"),
    (lambda: nn.MultiheadAttention(6, 2), lambda m, x: m(x, x, x), ValueError, "embed_dim=6"),
    (lambda: nn.TransformerEncoderLayer(8, 2, activation="tanh"), None, RuntimeError,
     "relu/gelu"),
])
def test_errors(make, call, error, match):
    with pytest.raises(error, match=match):
        m = make()
        call(m, tape.randn(4, 2, 8))


# ----- scaled_dot_product_attention: what the op table does not reach -----
def test_sdpa_errors_and_dropout():
    q, k, v = tape.randn(2, 3, 4), tape.randn(2, 5, 4), tape.randn(2, 5, 6)
    with pytest.raises(RuntimeError, match="is_causal"):
        F.scaled_dot_product_attention(q, k, v, attn_mask=np.ones((3, 5), bool), is_causal=True)
    with pytest.raises(ValueError, match="do not fit"):
        F.scaled_dot_product_attention(q, tape.randn(2, 5, 3), v)
    with pytest.raises(ValueError, match="do not broadcast"):
        F.scaled_dot_product_attention(q, k, v, attn_mask=np.ones((4, 5), bool))
    with pytest.raises(ValueError, match="do not broadcast"):  # a mask adding an axis
        F.scaled_dot_product_attention(q, k, v, attn_mask=np.ones((1, 1, 3, 5), bool))
    with pytest.raises(TypeError, match="dtype"):
        F.scaled_dot_product_attention(q, k, v, attn_mask=np.zeros((3, 5), np.float64))
    tape.manual_seed(0)
    a = F.scaled_dot_product_attention(q, k, v, dropout_p=0.5)
    b = F.scaled_dot_product_attention(q, k, v, dropout_p=0.5)
    assert not np.allclose(a.numpy(), b.numpy())
    zero = F.scaled_dot_product_attention(q, k, v, dropout_p=1.0)
    assert not zero.numpy().any()


@pytest.mark.parametrize("dropout, train, mask_grad, op", [
    (0.0, True, False, "attention"),  # one op (numba's kernels on the CPU)
    (0.5, False, False, "attention"),  # dropout off in evaluation
    (0.5, True, False, "softmax"),  # dropout on: the composition of ops
    (0.0, True, True, "softmax"),  # a float mask that needs its gradient
])
def test_attention_takes_one_op_where_it_can(dropout, train, mask_grad, op):
    m = nn.MultiheadAttention(E, H, dropout=dropout, batch_first=True).train(train)
    x = tape.randn(N, L, E)
    mask = tape.tensor(_src_mask("float", "float64").astype(np.float32))
    with tape.Tape() as t:
        t.watch(x)
        if mask_grad:
            t.watch(mask)
        loss = m(x, x, x, attn_mask=mask, need_weights=False)[0].sum()
    names = {entry[0].name for entry in t._entries}
    assert op in names and ({"attention", "softmax"} - {op}).isdisjoint(names)
    assert all(g is not None for g in t.gradient(loss, [x, mask] if mask_grad else [x]))


@pytest.mark.parametrize("case", ["expanded_kv", "expanded_q", "flipped", "flipped_mask"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_attention_op_takes_views_of_any_strides(case, dtype, monkeypatch):
    """Broadcast (zero-stride) and flipped (negative-stride) views into the one-op route,
    values and gradients against the composition of ops."""
    import tape.ops.attention as A

    rng = np.random.default_rng(3)
    q0, k0, v0 = (rng.standard_normal(s).astype(DTYPES[dtype][0])
                  for s in ((2, 3, 6, 4), (2, 1, 5, 4), (2, 1, 5, 7)))
    mask = np.where(rng.random((6, 5)) > 0.3, 0.0, -np.inf).astype(DTYPES[dtype][0])
    mask[:, 0] = 0.0

    def run():
        leaves = [tape.tensor(a) for a in (q0, k0, v0)]
        with tape.Tape() as t:
            t.watch(leaves)
            q, k, v = leaves
            if case == "expanded_kv":
                k, v = F.broadcast_to(k, (2, 3, 5, 4)), F.broadcast_to(v, (2, 3, 5, 7))
            else:
                k, v = k[:, [0, 0, 0]], v[:, [0, 0, 0]]
            if case == "expanded_q":
                q = F.broadcast_to(q[:1], (2, 3, 6, 4))
            if case == "flipped":
                q, k = q[:, :, ::-1], k[:, ::-1]
            m = mask[::-1] if case == "flipped_mask" else mask
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=m)
            loss = (y * y).sum()
            names = {e[0].name for e in t._entries}
        return [y.numpy(), *(g.numpy() for g in t.gradient(loss, leaves))], names

    fast, names = run()
    assert "attention" in names
    monkeypatch.setattr(A, "_fusable", lambda *a: False)
    slow, names = run()
    assert "attention" not in names
    rtol, atol = DTYPES[dtype][2]
    for a, b in zip(fast, slow):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


# ----- TransformerEncoderLayer and TransformerEncoder -----
LAYER_CASES = {  # name: (layer kwargs, key padding mask kind, mask kind)
    "post_norm": ({}, None, None),
    "norm_first_gelu": ({"norm_first": True, "activation": "gelu"}, None, None),
    "kpm": ({}, "bool", None),
    "causal": ({}, None, "causal"),
    "kpm_causal_nobias": ({"bias": False}, "bool", "causal"),
    "float_masks": ({"norm_first": True}, "float", "float"),
}


def _src_mask(kind, dtype):
    if kind == "causal":
        return _causal_bool(L, L)
    if kind == "float":
        return np.random.default_rng(6).standard_normal((L, L))
    return None


@pytest.mark.parametrize("batch_first", [False, True], ids=["seq_first", "batch_first"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", LAYER_CASES)
def test_transformer_encoder_layer_matches_torch(case, dtype, batch_first):
    kw, kpm_kind, mask_kind = LAYER_CASES[case]
    ours, theirs = _pair(lambda m: m.TransformerEncoderLayer(
        E, H, 16, batch_first=batch_first, **kw), dtype)
    kpm = None if kpm_kind is None else _kpm(kpm_kind, N, L)
    mask = _src_mask(mask_kind, dtype)
    x = _inputs([(N, L, E) if batch_first else (L, N, E)], dtype)

    def run(mod, src):
        lib = _lib(mod)
        return mod(src, src_mask=_as(lib, mask, dtype),
                   src_key_padding_mask=_as(lib, kpm, dtype))

    _compare(ours, theirs, x, run, dtype)


ENCODER_CASES = {  # name: (forward kwargs builder, norm)
    "plain": (lambda lib, d: {}, False),
    "norm": (lambda lib, d: {}, True),
    "kpm": (lambda lib, d: {"src_key_padding_mask": _as(lib, _kpm("bool", N, L), d)}, True),
    "causal_detected": (lambda lib, d: {"mask": _as(lib, _causal_bool(L, L), d)}, False),
    "causal_float_hint": (lambda lib, d: {"mask": _as(lib, np.triu(np.full(
        (L, L), -np.inf), 1), d), "is_causal": True}, True),
    "causal_kpm": (lambda lib, d: {"mask": _as(lib, _causal_bool(L, L), d),
                                   "src_key_padding_mask": _as(lib, _kpm("bool", N, L), d)},
                   True),
}


@pytest.mark.parametrize("batch_first", [False, True], ids=["seq_first", "batch_first"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ENCODER_CASES)
def test_transformer_encoder_matches_torch(case, dtype, batch_first):
    forward_kw, norm = ENCODER_CASES[case]

    def make(m):
        layer = m.TransformerEncoderLayer(E, H, 16, batch_first=batch_first)
        return m.TransformerEncoder(layer, 2, norm=m.LayerNorm(E) if norm else None,
                                    enable_nested_tensor=False)

    ours, theirs = _pair(make, dtype)
    x = _inputs([(N, L, E) if batch_first else (L, N, E)], dtype)
    _compare(ours, theirs, x, lambda mod, src: mod(src, **forward_kw(_lib(mod), dtype)), dtype)


def test_encoder_layers_are_deep_copies():
    layer = nn.TransformerEncoderLayer(E, H, 16)
    enc = nn.TransformerEncoder(layer, 3)
    ws = [lay.self_attn.in_proj_weight for lay in enc.layers]
    assert len({id(w) for w in ws}) == 3 and all(w is not layer.self_attn.in_proj_weight
                                                  for w in ws)
    np.testing.assert_array_equal(ws[0].numpy(), ws[2].numpy())  # copies, as torch
    assert len(enc.parameters()) == 3 * len(layer.parameters())


def test_encoder_dropout_in_training_only():
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(E, H, 16, dropout=0.3), 2)
    x = tape.randn(L, N, E)
    assert not np.allclose(enc(x).numpy(), enc(x).numpy())
    enc.eval()
    np.testing.assert_array_equal(enc(x).numpy(), enc(x).numpy())


def test_encoder_save_and_load_model(tmp_path):
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(E, H, 16, activation="gelu",
                                                           batch_first=True), 2,
                                norm=nn.LayerNorm(E)).eval()
    spec = json.loads(json.dumps(nn.architecture(enc)))
    assert spec["config"]["encoder_layer"]["config"]["activation"] == "gelu"
    nn.save_model(enc, tmp_path / "enc.safetensors")
    back = nn.load_model(tmp_path / "enc.safetensors").eval()
    x = tape.randn(N, L, E)
    np.testing.assert_array_equal(back(x).numpy(), enc(x).numpy())
    with pytest.raises(TypeError, match="JSON"):
        nn.architecture(nn.TransformerEncoderLayer(E, H, activation=F.tanh))


def test_activation_callable():
    ours, theirs = _pair(lambda m: m.TransformerEncoderLayer(
        E, H, 16, activation=F.tanh if m is nn else torch.tanh), "float64")
    _compare(ours, theirs, _inputs([(L, N, E)], "float64"), lambda mod, x: mod(x), "float64")


def test_vmap_of_attention_per_example():
    """vmap over a batch of unbatched sequences gives the batched module's result."""
    m = nn.MultiheadAttention(E, H).eval()
    x = tape.randn(N, L, E)
    mapped = tape.func.vmap(lambda s: m(s, s, s, need_weights=False)[0])(x)
    whole = m(*[F.swapaxes(x, 0, 1)] * 3, need_weights=False)[0]
    np.testing.assert_allclose(mapped.numpy(), F.swapaxes(whole, 0, 1).numpy(), rtol=1e-5,
                               atol=1e-6)


# ----- devices -----
def test_modules_on_device(device):
    """The encoder (masks included) on each device: the CPU's values and gradients."""
    torch.manual_seed(0)
    theirs = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(
        E, H, 16, batch_first=True), 2, enable_nested_tensor=False).eval()
    ours = nn.TransformerEncoder(nn.TransformerEncoderLayer(E, H, 16, batch_first=True),
                                 2).eval()
    ours.load_state_dict({k: tape.tensor(v.detach().numpy()) for k, v in
                          theirs.state_dict().items()})
    ours.to(device)
    x = _inputs([(N, L, E)], "float32")[0]
    kpm = _kpm("bool", N, L)
    mask = _causal_bool(L, L)
    xs = tape.tensor(x, requires_grad=True, device=device)
    with tape.Tape() as t:
        y = ours(xs, mask=mask, src_key_padding_mask=kpm)
        loss = (y * y).sum()
    grads = t.gradient(loss, [xs] + ours.parameters())
    xt = torch.tensor(x, requires_grad=True)
    yt = theirs(xt, mask=torch.tensor(mask), src_key_padding_mask=torch.tensor(kpm))
    want = torch.autograd.grad((yt * yt).sum(), [xt] + list(theirs.parameters()))
    assert tape.backend.device_of(y.data) == device.split(":")[0]
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=2e-4, atol=2e-5)
    for g, w in zip(grads, want):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=2e-3, atol=2e-4)
