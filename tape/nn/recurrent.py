"""Recurrent layers: RNN, LSTM and GRU with PyTorch's arguments, parameters and results.

Parameters are named and shaped as torch's (``weight_ih_l{k}{_reverse}`` (G*H, input),
``weight_hh_l{k}`` (G*H, H), ``bias_ih_l{k}``, ``bias_hh_l{k}``, G the gate count), so a
torch ``state_dict`` loads by name; all start U(-1/sqrt(H), 1/sqrt(H)) as torch's.

Speed: per layer and direction, the input projection of the whole sequence is one GEMM
(for LSTM and RNN with both biases folded in); each step is then one GEMM of the hidden
state (``linear`` with the step's projection as its bias: GEMM and sum in one entry) and
one fused cell op (``tape/ops/recurrent.py``): three or four tape entries per step.
"""

from __future__ import annotations

import math
import warnings

from .. import functional as F
from ..ops.elementwise import relu, tanh
from ..ops.nn import _linear, same_dtype
from ..ops.recurrent import gru_cell, lstm_cell
from ..ops.shape import concatenate, stack
from . import init
from .layers import _empty
from .module import Module, count
from .parameter import Parameter

_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


class RNNBase(Module):
    """The shared machinery of RNN, LSTM and GRU (torch.nn.RNNBase's arguments)."""

    def __init__(self, mode, input_size, hidden_size, num_layers=1, bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, proj_size=0,
                 device=None, dtype=None):
        super().__init__()
        name = type(self).__name__
        self.mode = mode
        self.input_size = count(input_size, "input_size", name)
        self.hidden_size = count(hidden_size, "hidden_size", name, least=1)
        self.num_layers = count(num_layers, "num_layers", name, least=1)
        self.bias, self.batch_first = bool(bias), bool(batch_first)
        self.bidirectional = bool(bidirectional)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not (
                0 <= dropout <= 1):
            raise ValueError(f"{name}: dropout should be a number in [0, 1] that is the "
                             f"probability of an element being zeroed, got {dropout!r}")
        self.dropout = float(dropout)
        if dropout > 0 and num_layers == 1:
            warnings.warn(f"{name}: dropout={dropout} and num_layers=1: dropout is applied "
                          "between layers (to every layer's output but the last), so here it "
                          "does nothing", stacklevel=3)
        if proj_size:
            raise NotImplementedError(f"{name}: proj_size={proj_size} (projected LSTM "
                                      "states) is not supported; leave proj_size=0")
        self.proj_size = 0
        H, G = self.hidden_size, _GATES[mode]
        self._flat_names = []
        for k in range(self.num_layers):
            size_in = self.input_size if k == 0 else H * self.num_directions
            for suffix in ("", "_reverse")[: self.num_directions]:
                shapes = [(f"weight_ih_l{k}{suffix}", (G * H, size_in)),
                          (f"weight_hh_l{k}{suffix}", (G * H, H))]
                if self.bias:
                    shapes += [(f"bias_ih_l{k}{suffix}", (G * H,)),
                               (f"bias_hh_l{k}{suffix}", (G * H,))]
                for pname, shape in shapes:
                    setattr(self, pname, Parameter(_empty(shape, device, dtype)))
                    self._flat_names.append(pname)
        self.reset_parameters()

    @property
    def num_directions(self):
        return 2 if self.bidirectional else 1

    def reset_parameters(self):
        """torch's: every weight and bias U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def flatten_parameters(self):
        """A no-op, for torch compatibility (cuDNN's packed weights do not exist here)."""

    def _weights(self, k, suffix):
        get = self._parameters.get
        return (get(f"weight_ih_l{k}{suffix}"), get(f"weight_hh_l{k}{suffix}"),
                get(f"bias_ih_l{k}{suffix}"), get(f"bias_hh_l{k}{suffix}"))

    # ----- forward -----
    def _check_input(self, x):
        name = type(self).__name__
        shape = tuple(x.shape)
        if len(shape) not in (2, 3):
            raise ValueError(
                f"{name}: expected an input of 2 (unbatched: (L, H_in)) or 3 dimensions "
                f"({'(N, L, H_in)' if self.batch_first else '(L, N, H_in)'}), got shape "
                f"{shape}")
        same_dtype(name, ("input", x), ("weight_ih_l0", self.weight_ih_l0))
        if shape[-1] != self.input_size:
            raise ValueError(f"{name}: input of shape {shape} has {shape[-1]} features on its "
                             f"last axis; this layer's input_size is {self.input_size}")

    def _check_state(self, h, batch, what):
        want = (self.num_layers * self.num_directions,) + (
            (batch,) if batch is not None else ()) + (self.hidden_size,)
        if tuple(h.shape) != want:
            raise ValueError(
                f"{type(self).__name__}: {what} has shape {tuple(h.shape)}; expected {want} "
                "(num_layers * num_directions, [batch,] hidden_size), batched as the input")

    def _zeros(self, x, batch):
        shape = (self.num_layers * self.num_directions, batch, self.hidden_size)
        from ..creation import zeros

        return zeros(*shape, dtype=x.dtype, device=x.device)

    def forward(self, input, hx=None):
        """``output, h_n`` (LSTM: ``output, (h_n, c_n)``), as torch: output (L, N, D * H)
        (batch_first: (N, L, D * H); unbatched: (L, D * H)), h_n (num_layers * D, N, H)."""
        lstm = self.mode == "LSTM"
        x = input
        self._check_input(x)
        unbatched = x.ndim == 2
        if unbatched:
            x = F.unsqueeze(x, 1)
        elif self.batch_first:
            x = F.swapaxes(x, 0, 1)
        batch = x.shape[1]
        if hx is None:
            h0 = self._zeros(x, batch)
            c0 = h0 if lstm else None
        else:
            if lstm:
                if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                    raise TypeError("LSTM: hx must be a tuple (h_0, c_0), got "
                                    f"{type(hx).__name__}")
                h0, c0 = hx
            else:
                if isinstance(hx, (tuple, list)):
                    raise TypeError(f"{type(self).__name__}: hx must be a tensor h_0, not a "
                                    f"{type(hx).__name__} (only LSTM takes (h_0, c_0))")
                h0, c0 = hx, None
            for h, what in ((h0, "h_0"), (c0, "c_0")):
                if h is not None:
                    self._check_state(h, None if unbatched else batch, what)
            if unbatched:
                h0 = F.unsqueeze(h0, 1)
                c0 = F.unsqueeze(c0, 1) if lstm else None
        hs, cs = [], []
        D = self.num_directions
        for k in range(self.num_layers):
            outs = []
            for d, suffix in enumerate(("", "_reverse")[:D]):
                j = k * D + d
                out, h, c = self._direction(x, self._weights(k, suffix), h0[j],
                                            c0[j] if lstm else None, reverse=d == 1)
                outs.append(out)
                hs.append(h)
                cs.append(c)
            x = outs[0] if D == 1 else concatenate(outs, axis=-1)
            if self.dropout and self.training and k < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)
        h_n = stack(hs, axis=0)
        state = (h_n, stack(cs, axis=0)) if lstm else h_n
        if unbatched:
            x = F.squeeze(x, 1)
            state = (F.squeeze(h_n, 1), F.squeeze(state[1], 1)) if lstm else F.squeeze(h_n, 1)
        elif self.batch_first:
            x = F.swapaxes(x, 0, 1)
        return x, state

    def _direction(self, x, weights, h, c, reverse):
        """One layer in one direction over the sequence ``x`` (L, N, input): the outputs
        (L, N, H) and the last h and c. The input projection is one GEMM for all steps."""
        w_ih, w_hh, b_ih, b_hh = weights
        H = self.hidden_size
        fold = self.mode != "GRU"  # GRU's b_hn sits inside r * (W_hn h + b_hn)
        b = (b_ih + b_hh if fold else b_ih) if b_ih is not None else None
        gx = _time_steps(_linear(x, w_ih, b))  # one GEMM: every step's input projection
        steps = range(len(gx) - 1, -1, -1) if reverse else range(len(gx))
        outs = []
        if self.mode == "LSTM":
            state = concatenate([h, c], axis=-1)
            for t in steps:
                state = lstm_cell(_linear(h, w_hh, gx[t]), state)
                h = state[:, :H]
                outs.append(h)
            c = state[:, H:]
        elif self.mode == "GRU":
            for t in steps:
                h = gru_cell(gx[t], _linear(h, w_hh, b_hh), h)
                outs.append(h)
        else:
            act = tanh if self.mode == "RNN_TANH" else relu
            for t in steps:
                h = act(_linear(h, w_hh, gx[t]))
                outs.append(h)
        if reverse:
            outs.reverse()
        return stack(outs, axis=0), h, c

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.mode == "RNN_RELU":
            s += ", nonlinearity='relu'"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        for key, default in (("bias", True), ("batch_first", False), ("dropout", 0.0),
                             ("bidirectional", False)):
            if getattr(self, key) != default:
                s += f", {key}={getattr(self, key)}"
        return s


def _time_steps(seq):
    """``[seq[0], seq[1], ...]``, sliced through chunks of about sqrt(L) steps. A slice's
    gradient is a scatter into zeros the size of what it was sliced from: L steps sliced
    straight from the sequence cost L full-size scatters and sums in the backward
    (quadratic in L); through chunks, about 2 L sqrt(L) / L of that."""
    n = seq.shape[0]
    k = max(1, math.isqrt(n))
    if k == n:
        return [seq[t] for t in range(n)]
    out = []
    for start in range(0, n, k):
        chunk = seq[start:start + k]
        out.extend(chunk[j] for j in range(chunk.shape[0]))
    return out


class RNN(RNNBase):
    """Elman RNN: ``h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)`` (or relu)."""

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, device=None,
                 dtype=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: unknown nonlinearity {nonlinearity!r}; use 'tanh' or "
                             "'relu'")
        self.nonlinearity = nonlinearity
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size,
                         hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         device=device, dtype=dtype)


class LSTM(RNNBase):
    """LSTM with torch's gates (i, f, g, o): returns ``output, (h_n, c_n)``."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None):
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, proj_size, device=device, dtype=dtype)


class GRU(RNNBase):
    """GRU with torch's gates (r, z, n), ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None):
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, device=device, dtype=dtype)


