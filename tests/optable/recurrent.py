"""The op table's rows for the fused recurrent cells (tape/ops/recurrent.py) and for a few
steps of the LSTM, GRU and RNN layers as tape.nn runs them (one input GEMM, per step a GEMM
with the step's projection as bias, and the cell). Torch's twin of a cell is the same
formula written with torch ops."""

import torch
from optable.row import Table

from tape.ops.nn import _linear
from tape.ops.recurrent import gru_cell, lstm_cell
from tape.ops.shape import concatenate, stack

# every check on the GPU too; tolerances for chains of sigmoids and tanhs
T = Table(tol64=(1e-7, 1e-9), tol32=(2e-4, 2e-5), gpu=True)


def _lstm_torch(gates, state):
    H = state.shape[-1] // 2
    i, f, g, o = gates.split(H, dim=-1)
    c = torch.sigmoid(f) * state[..., H:] + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return torch.cat(torch.broadcast_tensors(h, c), dim=-1)


def _gru_torch(gx, gh, h):
    H = h.shape[-1]
    xr, xz, xn = gx.split(H, dim=-1)
    hr, hz, hn = gh.split(H, dim=-1)
    r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)
    return (1 - z) * n + z * h


H = 3
T.row("lstm_cell", lambda m, g, s: lstm_cell(g, s), (4, 4 * H), (4, 2 * H),
      torch_fn=lambda m, g, s: _lstm_torch(g, s))
T.row("lstm_cell_broadcast", lambda m, g, s: lstm_cell(g, s), (2, 4, 4 * H), (4, 2 * H),
      torch_fn=lambda m, g, s: _lstm_torch(g, s))
T.row("lstm_cell_state_broadcast", lambda m, g, s: lstm_cell(g, s), (4, 4 * H), (2, 1, 2 * H),
      torch_fn=lambda m, g, s: _lstm_torch(g, s))
T.row("lstm_cell_1d", lambda m, g, s: lstm_cell(g, s), (8,), (4,),
      torch_fn=lambda m, g, s: _lstm_torch(g, s))
T.row("gru_cell", lambda m, x, h_, h: gru_cell(x, h_, h), (4, 3 * H), (4, 3 * H), (4, H),
      torch_fn=lambda m, x, h_, h: _gru_torch(x, h_, h))
T.row("gru_cell_broadcast", lambda m, x, h_, h: gru_cell(x, h_, h),
      (2, 4, 3 * H), (4, 3 * H), (4, H), torch_fn=lambda m, x, h_, h: _gru_torch(x, h_, h))
T.row("gru_cell_state_broadcast", lambda m, x, h_, h: gru_cell(x, h_, h),
      (4, 3 * H), (1, 3 * H), (2, 4, H), torch_fn=lambda m, x, h_, h: _gru_torch(x, h_, h))


# ----- a few steps of a layer, as tape.nn.LSTM/GRU/RNN run them -----
def _lstm_steps(m, x, w_ih, w_hh, b, h, c):
    gx = _linear(x, w_ih, b)
    state, outs = concatenate([h, c], axis=-1), []
    for t in range(x.shape[0]):
        state = lstm_cell(_linear(h, w_hh, gx[t]), state)
        h = state[:, :H]
        outs.append(state)
    return stack(outs, axis=0)  # every step's [h | c]


def _lstm_steps_torch(m, x, w_ih, w_hh, b, h, c):
    outs = []
    for t in range(x.shape[0]):
        s = _lstm_torch(x[t] @ w_ih.T + b + h @ w_hh.T, torch.cat([h, c], dim=-1))
        h, c = s[:, :H], s[:, H:]
        outs.append(s)
    return torch.stack(outs)


def _gru_steps(m, x, w_ih, w_hh, b_ih, b_hh, h):
    gx = _linear(x, w_ih, b_ih)
    outs = []
    for t in range(x.shape[0]):
        h = gru_cell(gx[t], _linear(h, w_hh, b_hh), h)
        outs.append(h)
    return stack(outs, axis=0)


def _gru_steps_torch(m, x, w_ih, w_hh, b_ih, b_hh, h):
    outs = []
    for t in range(x.shape[0]):
        h = _gru_torch(x[t] @ w_ih.T + b_ih, h @ w_hh.T + b_hh, h)
        outs.append(h)
    return torch.stack(outs)


def _rnn_steps(m, x, w_ih, w_hh, b, h):
    gx = _linear(x, w_ih, b)
    outs = []
    for t in range(x.shape[0]):
        h = m.tanh(_linear(h, w_hh, gx[t]))
        outs.append(h)
    return stack(outs, axis=0)


def _rnn_steps_torch(m, x, w_ih, w_hh, b, h):
    outs = []
    for t in range(x.shape[0]):
        h = torch.tanh(x[t] @ w_ih.T + b + h @ w_hh.T)
        outs.append(h)
    return torch.stack(outs)


L, N, IN = 3, 2, 2
T.row("lstm_steps", _lstm_steps, (L, N, IN), (4 * H, IN), (4 * H, H), (4 * H,), (N, H), (N, H),
      torch_fn=_lstm_steps_torch)
T.row("gru_steps", _gru_steps, (L, N, IN), (3 * H, IN), (3 * H, H), (3 * H,), (3 * H,), (N, H),
      torch_fn=_gru_steps_torch)
T.row("rnn_steps", _rnn_steps, (L, N, IN), (H, IN), (H, H), (H,), (N, H),
      torch_fn=_rnn_steps_torch)
