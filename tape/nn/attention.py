"""Attention layers as torch.nn's: MultiheadAttention, TransformerEncoderLayer and
TransformerEncoder, with torch's arguments, parameter names (a torch state_dict loads by
name), initialisation, mask conventions and the computation of its slow path (the one
that records gradients), written with tape ops.
"""

from __future__ import annotations

import copy
import inspect
import math
import warnings

import numpy as np

from .. import backend
from .. import functional as F
from ..ops.nn import _data, _shape
from ..tensor import Tensor
from . import init
from .container import ModuleList
from .layers import Dropout, LayerNorm, Linear, _empty
from .module import Module, count
from .parameter import Parameter


# ----- masks: torch's conventions (bool True = masked here, unlike sdpa's True = kept) -----
def _is_float(mask):
    return mask is not None and backend.as_array(_data(mask)).dtype.kind == "f"


def _canonical_mask(mask, name, other, other_name, dtype, device, check_other=True):
    """torch's ``_canonical_mask``: a bool mask (True: may not attend) as a float array of
    ``dtype`` holding -inf there and 0 elsewhere; a float mask as it is (a tensor keeps its
    gradient)."""
    if mask is None:
        return None
    m = backend.as_array(_data(mask))
    if m.dtype != bool and m.dtype.kind != "f":
        raise TypeError(f"only bool and floating types of {name} are supported, got dtype "
                        f"{m.dtype}")
    if check_other and other is not None:
        od = backend.as_array(_data(other)).dtype
        if od != m.dtype:
            warnings.warn(f"Support for mismatched {name} and {other_name} is deprecated. Use "
                          "same type for both instead.", stacklevel=4)
    if m.dtype.kind == "f":
        return mask if isinstance(mask, Tensor) else backend.to_device(m, device)
    m = backend.to_device(m, device)
    xp = backend.xp(m)
    return xp.where(m, xp.asarray(-np.inf, dtype=dtype), xp.asarray(0, dtype=dtype))


def _reshape(mask, shape):
    return F.reshape(mask, shape) if isinstance(mask, Tensor) else mask.reshape(shape)


def _add(a, b):
    return b + a if isinstance(b, Tensor) and not isinstance(a, Tensor) else a + b


# ----- MultiheadAttention -----
class MultiheadAttention(Module):
    """Attention over ``num_heads`` heads of ``embed_dim // num_heads`` each: queries, keys
    and values projected by ``in_proj_weight`` (3 * embed_dim, embed_dim) (xavier_uniform_)
    and ``in_proj_bias`` (zeros), attended per head, joined by ``out_proj`` (a Linear, its
    bias zeros). Inputs (L, N, E), or (N, L, E) with ``batch_first``, or unbatched (L, E).
    ``kdim``/``vdim`` other than ``embed_dim``, ``add_bias_kv`` and ``add_zero_attn`` are
    not supported (they raise)."""

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False,
                 add_zero_attn=False, kdim=None, vdim=None, batch_first=False, device=None,
                 dtype=None):
        super().__init__()
        self.embed_dim = count(embed_dim, "embed_dim", "MultiheadAttention", least=1)
        self.num_heads = count(num_heads, "num_heads", "MultiheadAttention", least=1)
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        if not self._qkv_same_embed_dim:
            raise NotImplementedError(
                f"MultiheadAttention: kdim={kdim} and vdim={vdim} other than embed_dim="
                f"{embed_dim} (separate q/k/v projection weights) are not supported; project "
                "key and value to embed_dim first")
        if add_bias_kv or add_zero_attn:
            raise NotImplementedError("MultiheadAttention: add_bias_kv and add_zero_attn are "
                                      "not supported; leave them False")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"MultiheadAttention: dropout must be between 0 and 1, got "
                             f"{dropout}")
        self.dropout, self.batch_first = dropout, batch_first
        self.head_dim = embed_dim // num_heads
        if self.head_dim * num_heads != embed_dim:
            raise ValueError(f"MultiheadAttention: embed_dim must be divisible by num_heads, "
                             f"got embed_dim={embed_dim} and num_heads={num_heads}")
        self.in_proj_weight = Parameter(_empty((3 * embed_dim, embed_dim), device, dtype))
        for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
            self.register_parameter(name, None)
        if bias:
            self.in_proj_bias = Parameter(_empty((3 * embed_dim,), device, dtype))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, device=device, dtype=dtype)
        self.bias_k = self.bias_v = None
        self.add_zero_attn = add_zero_attn
        self._reset_parameters()

    def _reset_parameters(self):
        init.xavier_uniform_(self.in_proj_weight)
        if self.in_proj_bias is not None:
            init.constant_(self.in_proj_bias, 0.0)
            init.constant_(self.out_proj.bias, 0.0)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True,
                attn_mask=None, average_attn_weights=True, is_causal=False):
        """``(attn_output, attn_weights)``: the weights (N, L, S) averaged over heads, or
        (N, num_heads, L, S) with ``average_attn_weights=False``; None when
        ``need_weights=False``. Bool masks: True marks what may not be attended."""
        batched = self._check_shapes(query, key, value, key_padding_mask, attn_mask)
        qd = _data(query)
        dtype, device = qd.dtype, backend.device_of(qd)
        key_padding_mask = _canonical_mask(key_padding_mask, "key_padding_mask", attn_mask,
                                           "attn_mask", dtype, device)
        if is_causal and attn_mask is None:
            raise RuntimeError("Need attn_mask if specifying the is_causal hint. You may use "
                               "the Transformer module method `generate_square_subsequent_mask`"
                               " to create this mask.")
        if is_causal and key_padding_mask is None and not need_weights:
            attn_mask = None  # the hint: sdpa builds the causal mask itself
        else:
            attn_mask = _canonical_mask(attn_mask, "attn_mask", None, "", dtype, device,
                                        check_other=False)
            if key_padding_mask is not None:
                is_causal = False
        if not batched:
            query, key, value = (F.unsqueeze(x, 1) for x in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = _reshape(key_padding_mask, (1, -1))
        # batch_first inputs stay (N, L, E): no swapped copies before and after the GEMMs
        out, weights = self._attend(query, key, value, key_padding_mask, attn_mask,
                                    need_weights, average_attn_weights, is_causal,
                                    self.batch_first and batched)
        if not batched:
            out = F.squeeze(out, 1)
            if weights is not None:
                weights = F.squeeze(weights, 0)
        return out, weights

    def _check_shapes(self, query, key, value, key_padding_mask, attn_mask):
        qs, ks, vs = _shape(query), _shape(key), _shape(value)
        where = "MultiheadAttention"
        if len(qs) not in (2, 3):
            raise ValueError(f"{where}: query should be unbatched 2D or batched 3D, got shape "
                             f"{qs}")
        if len(ks) != len(qs) or len(vs) != len(qs):
            raise ValueError(f"{where}: query of shape {qs} needs key and value of {len(qs)} "
                             f"axes too, got {ks} and {vs}")
        if ks != vs:
            raise ValueError(f"{where}: key shape {ks} does not match value shape {vs}")
        if qs[-1] != self.embed_dim or ks[-1] != self.embed_dim:
            raise ValueError(f"{where}: query {qs} and key {ks} must end in embed_dim="
                             f"{self.embed_dim}")
        batched = len(qs) == 3
        seq, bax = (1, 0) if self.batch_first and batched else (0, 1)
        if batched and (qs[bax] != ks[bax]):
            raise ValueError(f"{where}: query {qs} and key {ks} have different batch sizes "
                             f"(batch_first={self.batch_first})")
        big_l, big_s = qs[seq], ks[seq]
        n = qs[bax] if batched else None
        if key_padding_mask is not None:
            want = (n, big_s) if batched else (big_s,)
            if _shape(key_padding_mask) != want:
                raise ValueError(f"{where}: key_padding_mask of shape "
                                 f"{_shape(key_padding_mask)}, expected {want} (N, S)")
        if attn_mask is not None:
            ms = _shape(attn_mask)
            heads = self.num_heads * (n if batched else 1)
            if ms not in ((big_l, big_s), (heads, big_l, big_s)):
                raise ValueError(f"{where}: attn_mask of shape {ms}, expected (L, S) = "
                                 f"{(big_l, big_s)} or (N * num_heads, L, S) = "
                                 f"{(heads, big_l, big_s)}")
        return batched

    def _attend(self, query, key, value, kpm, attn_mask, need_weights, average, is_causal,
                batch_first=False):
        """torch's multi_head_attention_forward on (L, N, E) inputs, or (N, L, E) with
        ``batch_first`` (the output in the same layout), and float masks."""
        if batch_first:
            n, big_l, e = _shape(query)
            big_s = _shape(key)[1]
        else:
            big_l, n, e = _shape(query)
            big_s = _shape(key)[0]
        h, hd = self.num_heads, self.head_dim
        # three projections by the weight's thirds, self-attention too: one projection split
        # in three would have each third's gradient scattered into zeros of the whole
        # output and summed (the charlm step 10% slower); the weight's thirds are small
        ws = F.split(self.in_proj_weight, 3, axis=0)
        bs = ((None,) * 3 if self.in_proj_bias is None
              else F.split(self.in_proj_bias, 3, axis=0))
        q, k, v = (F.linear(x, w, b) for x, w, b in zip((query, key, value), ws, bs))
        # (L, N, E) or (N, L, E) -> (N, heads, L, head_dim)
        if batch_first:
            q = F.permute(F.reshape(q, (n, big_l, h, hd)), 0, 2, 1, 3)
            k = F.permute(F.reshape(k, (n, big_s, h, hd)), 0, 2, 1, 3)
            v = F.permute(F.reshape(v, (n, big_s, h, hd)), 0, 2, 1, 3)
        else:
            q = F.permute(F.reshape(q, (big_l, n, h, hd)), 1, 2, 0, 3)
            k = F.permute(F.reshape(k, (big_s, n, h, hd)), 1, 2, 0, 3)
            v = F.permute(F.reshape(v, (big_s, n, h, hd)), 1, 2, 0, 3)
        mask = None
        if attn_mask is not None:
            mask = _reshape(attn_mask, (1, 1, big_l, big_s) if len(_shape(attn_mask)) == 2
                            else (n, h, big_l, big_s))
        if kpm is not None:
            kpm = _reshape(kpm, (n, 1, 1, big_s))
            mask = kpm if mask is None else _add(mask, kpm)
        p = self.dropout if self.training else 0.0
        if need_weights:  # torch's explicit path: a plain softmax (NaN for a row all masked)
            scores = F.matmul(q * math.sqrt(1.0 / hd), F.swapaxes(k, -1, -2))
            if mask is not None:
                scores = _add(scores, mask)
            weights = F.softmax(scores, axis=-1)
            if p > 0.0:
                weights = F.dropout(weights, p)
            out = F.matmul(weights, v)
            if average:
                weights = F.mean(weights, axis=1)
        else:
            out = F.scaled_dot_product_attention(q, k, v, mask, p, is_causal)
            weights = None
        if batch_first:
            out = F.reshape(F.permute(out, 0, 2, 1, 3), (n, big_l, e))
        else:
            out = F.reshape(F.permute(out, 2, 0, 1, 3), (big_l, n, e))
        return self.out_proj(out), weights

    def extra_repr(self):
        return ""  # torch prints only out_proj


# ----- Transformer encoder -----
def _activation(activation):
    if isinstance(activation, str):
        if activation == "relu":
            return F.relu
        if activation == "gelu":
            return F.gelu
        raise RuntimeError(f"activation should be relu/gelu, not {activation}")
    if not callable(activation):
        raise TypeError(f"TransformerEncoderLayer: activation must be 'relu', 'gelu' or a "
                        f"callable, got {activation!r}")
    return activation


def _bound_config(module, **replace):
    """``module._config()`` with some constructor arguments replaced by JSON-able ones."""
    from .architecture import config_of

    args, kwargs = module._init_args
    bound = inspect.signature(type(module).__init__).bind(None, *args, **kwargs)
    bound.apply_defaults()
    arguments = {k: v for k, v in list(bound.arguments.items())[1:]}
    arguments.update({k: f(arguments[k]) for k, f in replace.items()})
    clone = object.__new__(type(module))
    object.__setattr__(clone, "_init_args", ((), arguments))
    return config_of(clone)


def _activation_name(activation):
    if isinstance(activation, str):
        return activation
    for name, fn in (("relu", F.relu), ("gelu", F.gelu)):
        if activation is fn:
            return name
    raise TypeError(f"TransformerEncoderLayer(activation={activation!r}): cannot be described "
                    "as JSON; pass 'relu' or 'gelu', or save the state_dict and rebuild the "
                    "model in code")


def _seq_len(src, batch_first):
    s = _shape(src)
    return s[0] if len(s) == 2 else s[1 if batch_first else 0]


class TransformerEncoderLayer(Module):
    """Self-attention then a feed-forward block (linear1, activation, linear2), each with
    dropout, a residual connection and a LayerNorm (after, or before with
    ``norm_first``), as torch: submodules self_attn, linear1, dropout, linear2, norm1,
    norm2, dropout1, dropout2."""

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu",
                 layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True,
                 device=None, dtype=None):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                            batch_first=batch_first, **kw)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, **kw)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, **kw)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kw)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kw)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.activation = _activation(activation)

    def _config(self):
        return _bound_config(self, activation=_activation_name)

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        """``src`` (S, N, E), (N, S, E) with batch_first, or (S, E); masks as
        MultiheadAttention's (``src_mask`` its attn_mask; bool True: masked)."""
        sd = _data(src)
        dtype, device = sd.dtype, backend.device_of(sd)
        src_key_padding_mask = _canonical_mask(src_key_padding_mask, "src_key_padding_mask",
                                               src_mask, "src_mask", dtype, device)
        src_mask = _canonical_mask(src_mask, "src_mask", None, "", dtype, device,
                                   check_other=False)
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            x = x + self._ff_block(self.norm2(x))
        else:
            x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal))
            x = self.norm2(x + self._ff_block(x))
        return x

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal):
        x = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                           need_weights=False, is_causal=is_causal)[0]
        return self.dropout1(x)

    def _ff_block(self, x):
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))


class TransformerEncoder(Module):
    """``num_layers`` deep copies of ``encoder_layer`` (as ``layers``), then ``norm`` if
    given. ``enable_nested_tensor`` and ``mask_check`` are accepted for torch's signature
    (tape has no nested-tensor fast path: padded positions are computed, not zeroed)."""

    def __init__(self, encoder_layer, num_layers, norm=None, enable_nested_tensor=True,
                 mask_check=True):
        super().__init__()
        from .architecture import build

        if isinstance(encoder_layer, dict):  # an architecture (save_model / load_model)
            encoder_layer = build(encoder_layer)
        if isinstance(norm, dict):
            norm = build(norm)
        if not isinstance(encoder_layer, Module):
            raise TypeError(f"TransformerEncoder: encoder_layer must be a Module, got "
                            f"{type(encoder_layer).__name__}")
        self.layers = ModuleList([copy.deepcopy(encoder_layer) for _ in range(
            count(num_layers, "num_layers", "TransformerEncoder"))])
        self.num_layers = num_layers
        self.norm = norm
        self.enable_nested_tensor = self.use_nested_tensor = enable_nested_tensor
        self.mask_check = mask_check

    def _config(self):
        from .architecture import architecture

        def spec(m):
            return m if m is None or isinstance(m, dict) else architecture(m)

        return _bound_config(self, encoder_layer=spec, norm=spec)

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal=None):
        sd = _data(src)
        dtype, device = sd.dtype, backend.device_of(sd)
        src_key_padding_mask = _canonical_mask(src_key_padding_mask, "src_key_padding_mask",
                                               mask, "mask", dtype, device)
        mask = _canonical_mask(mask, "mask", None, "", dtype, device, check_other=False)
        if not len(self.layers):
            raise IndexError("TransformerEncoder: num_layers=0, there is no layer to run")
        batch_first = self.layers[0].self_attn.batch_first
        is_causal = _detect_is_causal_mask(mask, is_causal, _seq_len(src, batch_first))
        out = src
        for layer in self.layers:
            out = layer(out, src_mask=mask, is_causal=is_causal,
                        src_key_padding_mask=src_key_padding_mask)
        return self.norm(out) if self.norm is not None else out


def _detect_is_causal_mask(mask, is_causal=None, size=None):
    """torch's: ``is_causal`` when given, else whether ``mask`` is exactly the (size, size)
    causal mask (-inf above the diagonal, 0 elsewhere)."""
    make_causal = is_causal is True
    if is_causal is None and mask is not None:
        m = backend.to_numpy(_data(mask))
        sz = size if size is not None else m.shape[-2]
        causal = np.triu(np.full((sz, sz), -np.inf, dtype=m.dtype), 1)
        make_causal = m.shape == causal.shape and bool((m == causal).all())
    return make_causal
