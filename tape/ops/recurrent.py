"""Fused recurrent cells: one op (one tape entry) per time step for all of a cell's gates.

nn.LSTM and nn.GRU project the whole input sequence with one GEMM, then run per step one
GEMM for the hidden state and one of these cells, instead of a dozen small ops per gate
(each a tape entry, a pass over memory, and its own gradient rule). Gate order and
formulas are PyTorch's:

- ``lstm_cell(gates, state)``: ``gates`` (..., 4H) are the pre-activations of i, f, g, o
  (input and hidden projections and both biases summed); ``state`` (..., 2H) is the
  previous step's ``[h | c]`` (only its c half is read). Returns the new ``[h | c]``:
  ``c' = f * c + i * g``, ``h' = o * tanh(c')``.
- ``gru_cell(gx, gh, h)``: ``gx = x W_ih^T + b_ih`` and ``gh = h W_hh^T + b_hh`` (..., 3H),
  gates r, z, n; ``n = tanh(gx_n + r * gh_n)``, ``h' = (1 - z) * n + z * h``.

Leading axes broadcast (examples under vmap, jacobian cotangents). The activations are
recomputed by the gradient rule rather than kept: a tape keeps the inputs and output.
First order on arrays runs one written-out numpy pass; otherwise (higher order, vmap)
the same formulas run as tape ops, which the outer tape records.
"""

from __future__ import annotations

from .. import backend
from ..tensor import Tensor
from .core import Op
from .elementwise import sigmoid, tanh
from .shape import _pad, concatenate


def _sig_tanh(a, tanh_block=None):
    """Sigmoid along the last axis of ``a``, but tanh on its quarter number ``tanh_block``
    (LSTM's g gate: 2), in one tanh pass on a new array: sigmoid(x) = tanh(x / 2) / 2 + 1 / 2,
    stable in both tails."""
    xp = backend.xp(a)
    if tanh_block is None:
        z = a * 0.5
        xp.tanh(z, out=z)
        z *= 0.5
        z += 0.5
        return z
    scale, offset = _scales(a.shape[-1], tanh_block, a.dtype, xp)
    z = a * scale
    xp.tanh(z, out=z)
    z *= scale
    z += offset
    return z


_SCALES = {}


def _scales(width, block, dtype, xp):
    """(scale, offset) rows: 0.5 and 0.5 for the sigmoid gates, 1 and 0 for the tanh one."""
    key = (width, block, dtype, xp.__name__)
    got = _SCALES.get(key)
    if got is None:
        q = width // 4
        scale, offset = xp.full(width, 0.5, dtype), xp.full(width, 0.5, dtype)
        scale[block * q:(block + 1) * q] = 1
        offset[block * q:(block + 1) * q] = 0
        got = _SCALES[key] = (scale, offset)
    return got


def _hidden(name, gates, gate_count, hidden, what):
    """H from the state's last axis, checked against the gates' ``gate_count * H``."""
    if gates.shape[-1:] != (gate_count * hidden,):
        raise ValueError(
            f"{name}: gates of shape {tuple(gates.shape)} need a last axis of "
            f"{gate_count} * H = {gate_count * hidden} for {what}")
    return hidden


# ----- LSTM -----
def _lstm_cell(gates, state):
    if state.shape[-1] % 2:
        raise ValueError(f"lstm_cell: the state (shape {tuple(state.shape)}) is [h | c]: its "
                         "last axis must be 2 * H")
    H = _hidden("lstm_cell", gates, 4, state.shape[-1] // 2,
                f"a state of shape {tuple(state.shape)} ([h | c], 2 * H)")
    xp = backend.xp(gates)
    a = _sig_tanh(gates, 2)
    i, f, g, o = a[..., :H], a[..., H:2 * H], a[..., 2 * H:3 * H], a[..., 3 * H:]
    c = f * state[..., H:]
    c += i * g
    out = xp.empty(c.shape[:-1] + (2 * H,), dtype=c.dtype)
    out[..., H:] = c
    h = out[..., :H]
    xp.tanh(c, out=h)
    h *= o
    return out


def _lstm_cell_vjp(g, ans, gates, state):
    H = ans.shape[-1] // 2
    if not isinstance(g, Tensor):  # first order on arrays: written out
        a = _sig_tanh(gates, 2)
        i, f, gg, o = a[..., :H], a[..., H:2 * H], a[..., 2 * H:3 * H], a[..., 3 * H:]
        tc = backend.xp(ans).tanh(ans[..., H:])
        gh, gc = g[..., :H], g[..., H:]
        ho = gh * o
        dc = gc + ho - ho * tc * tc
        d_o = ho * tc * (1 - o)
        d_i = dc * gg
        d_g = dc * i
        d_i *= i * (1 - i)
        d_g *= 1 - gg * gg
        d_f = dc * state[..., H:] * f * (1 - f)
        d_gates = backend.xp(g).concatenate([d_i, d_f, d_g, d_o], axis=-1)
        d_state = backend.xp(g).zeros(dc.shape[:-1] + (2 * H,), dc.dtype)
        d_state[..., H:] = dc * f
        return d_gates, d_state
    i, f = sigmoid(gates[..., :H]), sigmoid(gates[..., H:2 * H])
    gg, o = tanh(gates[..., 2 * H:3 * H]), sigmoid(gates[..., 3 * H:])
    tc = tanh(ans[..., H:])
    gh, gc = g[..., :H], g[..., H:]
    dc = gc + gh * o * (1 - tc * tc)
    d_gates = concatenate([dc * gg * i * (1 - i), dc * state[..., H:] * f * (1 - f),
                           dc * i * (1 - gg * gg), gh * tc * o * (1 - o)], axis=-1)
    dcf = dc * f
    d_state = _pad(dcf, pad_width=((0, 0),) * (dcf.ndim - 1) + ((H, 0),), value=0.0)
    return d_gates, d_state


lstm_cell = Op("lstm_cell", _lstm_cell, joint=_lstm_cell_vjp, doc="""\
One LSTM step for all gates (PyTorch's order i, f, g, o): ``gates`` (..., 4H) the summed
pre-activations, ``state`` (..., 2H) the previous ``[h | c]``; returns the new ``[h | c]``.""")


# ----- GRU -----
def _gru_cell(gx, gh, h):
    H = _hidden("gru_cell", gx, 3, h.shape[-1], f"a hidden state of shape {tuple(h.shape)}")
    _hidden("gru_cell", gh, 3, H, f"a hidden state of shape {tuple(h.shape)}")
    xp = backend.xp(gx)
    pre = gx[..., :2 * H] + gh[..., :2 * H]
    rz = _sig_tanh(pre)
    r, z = rz[..., :H], rz[..., H:]
    n = r * gh[..., 2 * H:]
    n += gx[..., 2 * H:]
    xp.tanh(n, out=n)
    out = h - n
    out *= z
    out += n
    return out


def _gru_cell_vjp(g, ans, gx, gh, h):
    H = h.shape[-1]
    if not isinstance(g, Tensor):  # first order on arrays: written out
        xp = backend.xp(g)
        rz = _sig_tanh(gx[..., :2 * H] + gh[..., :2 * H])
        r, z = rz[..., :H], rz[..., H:]
        ghn = gh[..., 2 * H:]
        n = xp.tanh(gx[..., 2 * H:] + r * ghn)
        d_z = g * (h - n) * z * (1 - z)
        d_n = g * (1 - z) * (1 - n * n)
        d_r = d_n * ghn * r * (1 - r)
        d_gx = xp.concatenate(xp.broadcast_arrays(d_r, d_z, d_n), axis=-1)
        d_gh = d_gx.copy()
        d_gh[..., 2 * H:] *= r
        return d_gx, d_gh, g * z
    both = sigmoid(gx[..., :2 * H] + gh[..., :2 * H])
    r, z = both[..., :H], both[..., H:]
    ghn = gh[..., 2 * H:]
    n = tanh(gx[..., 2 * H:] + r * ghn)
    d_z = g * (h - n) * z * (1 - z)
    d_n = g * (1 - z) * (1 - n * n)
    d_r = d_n * ghn * r * (1 - r)
    return (concatenate([d_r, d_z, d_n], axis=-1), concatenate([d_r, d_z, d_n * r], axis=-1),
            g * z)


gru_cell = Op("gru_cell", _gru_cell, joint=_gru_cell_vjp, doc="""\
One GRU step for all gates (PyTorch's order r, z, n): ``gx`` and ``gh`` (..., 3H) the input
and hidden projections with their biases, ``h`` (..., H) the previous hidden state.""")
