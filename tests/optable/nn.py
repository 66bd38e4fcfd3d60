"""The op table's rows for tape.functional's layers and losses (torch.nn.functional's
twins), dropout, and the ops users write themselves (custom_gradient, Function)."""

import numpy as np
import torch
from optable.row import Table, away, normal, positive

import tape

# every check on the GPU too; tolerances for sums over whole batches
T = Table(tol64=(1e-7, 1e-9), tol32=(2e-4, 2e-5), gpu=True)


def prob(rng, shape):
    return rng.uniform(0.05, 0.95, shape)


def big(rng, shape):  # logits far into the saturated tails
    return rng.standard_normal(shape) * 40


N, C = 6, 5
TGT = np.array([0, 3, 1, 4, 3, 2])  # class targets of (N, C) inputs
T_IGN = np.array([0, -100, 1, 4, -100, 2])
T_IGN2 = np.array([2, 3, 2, 4, 0, 2])  # ignore_index=2
T4 = np.random.default_rng(4).integers(0, C, (2, 3, 4))
T4[0, 1, 2] = T4[1, 0, 0] = -100
IDX = np.array([[1, 2, 1, 9], [0, 1, 2, 1]])  # repeated rows: the gradient accumulates
NP, NN = (normal, positive), (normal, normal)  # an input and its class weights; two inputs

# ----- layers -----
T.row("linear", lambda m, x, w, b: m.F.linear(x, w, b), (N, 4), (3, 4), (3,))
T.row("linear_nobias", lambda m, x, w: m.F.linear(x, w), (N, 4), (3, 4))
T.row("linear_3d", lambda m, x, w, b: m.F.linear(x, w, b), (2, N, 4), (3, 4), (3,))
T.row("linear_1d", lambda m, x, w, b: m.F.linear(x, w, b), (4,), (3, 4), (3,))
T.row("layer_norm", lambda m, x, w, b: m.F.layer_norm(x, (5,), w, b), (3, 4, 5), (5,), (5,))
T.row("layer_norm_2axes", lambda m, x: m.F.layer_norm(x, (4, 5), eps=1e-3), (3, 4, 5))
STATS = (normal, normal, positive, normal, normal)  # x, running mean and var, weight, bias
T.row("batch_norm_train_2d", lambda m, x, rm, rv, w, b: m.F.batch_norm(
    x, rm, rv, w, b, training=True), (8, 4), (4,), (4,), (4,), (4,), gen=STATS, nograd=(1, 2))
T.row("batch_norm_train_4d", lambda m, x, rm, rv, w, b: m.F.batch_norm(
    x, rm, rv, w, b, training=True, momentum=0.3, eps=1e-3),
    (4, 3, 5, 5), (3,), (3,), (3,), (3,), gen=STATS, nograd=(1, 2))
T.row("batch_norm_train_3d_nostats", lambda m, x: m.F.batch_norm(
    x, None, None, training=True), (4, 3, 7))
T.row("batch_norm_eval_4d", lambda m, x, rm, rv, w, b: m.F.batch_norm(
    x, rm, rv, w, b, training=False), (4, 3, 5, 5), (3,), (3,), (3,), (3,), gen=STATS,
    nograd=(1, 2))
T.row("embedding", lambda m, w: m.F.embedding(m.const(IDX), w), (10, 3))
T.row("embedding_padding", lambda m, w: m.F.embedding(m.const(IDX), w, padding_idx=1), (10, 3))
T.row("embedding_squared", lambda m, w: m.F.embedding(m.const(IDX), w) ** 2, (10, 3))  # the
# gradient depends on w, so its rule (embedding_backward) is recorded and differentiated
T.row("dropout_eval", lambda m, x: m.F.dropout(x, 0.4, training=False), (4, 5))
T.row("dropout", lambda m, x: m.dropout_seeded(x, 0.4) * x, (4, 5),
      note="random: torch's RNG cannot draw tape's mask, so the twin multiplies by the mask "
           "tape draws for the same seed; the values check the mask's scaling, the "
           "derivatives dropout's rule (tape.manual_seed fixes the mask)")

# ----- losses, each reduction -----
for red in ("mean", "sum", "none"):
    T.row(f"ce_{red}", lambda m, x, red=red: m.F.cross_entropy(
        x, m.const(TGT), reduction=red), (N, C))
    T.row(f"ce_weight_{red}", lambda m, x, w, red=red: m.F.cross_entropy(
        x, m.const(TGT), weight=w, reduction=red), (N, C), (C,), gen=NP, nograd=(1,))
    T.row(f"ce_ignore_{red}", lambda m, x, red=red: m.F.cross_entropy(
        x, m.const(T_IGN), reduction=red), (N, C))
    T.row(f"ce_smooth_{red}", lambda m, x, red=red: m.F.cross_entropy(
        x, m.const(TGT), reduction=red, label_smoothing=0.1), (N, C))
    T.row(f"ce_all_{red}", lambda m, x, w, red=red: m.F.cross_entropy(
        x, m.const(T_IGN2), weight=w, ignore_index=2, reduction=red, label_smoothing=0.2),
        (N, C), (C,), gen=NP, nograd=(1,))
    T.row(f"ce_4d_{red}", lambda m, x, w, red=red: m.F.cross_entropy(
        x, m.const(T4), weight=w, reduction=red, label_smoothing=0.05),
        (2, C, 3, 4), (C,), gen=NP, nograd=(1,))
    T.row(f"ce_prob_{red}", lambda m, x, q, w, red=red: m.F.cross_entropy(
        x, q, weight=w, reduction=red, label_smoothing=0.1),
        (N, C), (N, C), (C,), gen=(normal, prob, positive), nograd=(2,))
    T.row(f"ce_prob_4d_{red}", lambda m, x, q, red=red: m.F.cross_entropy(
        x, q, reduction=red), (2, C, 3), (2, C, 3), gen=(normal, prob))
    T.row(f"ce_unbatched_{red}", lambda m, x, red=red: m.F.cross_entropy(
        x, m.const(3), reduction=red), (C,))
    T.row(f"nll_{red}", lambda m, x, w, red=red: m.F.nll_loss(
        x, m.const(T_IGN), weight=w, reduction=red), (N, C), (C,), gen=NP, nograd=(1,))
    T.row(f"nll_4d_{red}", lambda m, x, red=red: m.F.nll_loss(
        x, m.const(T4), reduction=red), (2, C, 3, 4))
    T.row(f"mse_{red}", lambda m, x, y, red=red: m.F.mse_loss(x, y, reduction=red),
          (4, 5), (4, 5), gen=NN)
    T.row(f"l1_{red}", lambda m, x, y, red=red: m.F.l1_loss(x, y, reduction=red),
          (4, 5), (4, 5), gen=NN)
    T.row(f"bce_{red}", lambda m, x, t, w, red=red: m.F.binary_cross_entropy(
        x, t, weight=w, reduction=red), (4, 5), (4, 5), (5,), gen=(prob, prob, positive),
        nograd=(2,))
    T.row(f"bce_logits_{red}", lambda m, x, t, w, pw, red=red:
          m.F.binary_cross_entropy_with_logits(x, t, weight=w, reduction=red, pos_weight=pw),
          (4, 5), (4, 5), (5,), (5,), gen=(normal, prob, positive, positive), nograd=(2, 3))
T.row("bce_logits_big", lambda m, x, t: m.F.binary_cross_entropy_with_logits(
    x, t, reduction="none"), (4, 5), (4, 5), gen=(big, prob))
T.row("ce_big_logits", lambda m, x: m.F.cross_entropy(x * 100, m.const(TGT)), (N, C))


# ----- ops users write: custom_gradient (tape ops in grad_fn: differentiable again) -----
@tape.custom_gradient
def _softplus(x):
    def grad_fn(dy):
        return dy * tape.sigmoid(x)

    return tape.log(1.0 + tape.exp(x)), grad_fn


@tape.custom_gradient
def _mul(a, b):
    return a * b, lambda dy: (dy * b, dy * a)


class _Cube(tape.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x**3

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 3 * x**2 * grad


T.row("custom_gradient", lambda m, x: _softplus(x) * x, (3, 4),
      torch_fn=lambda m, x: torch.nn.functional.softplus(x) * x)
T.row("custom_gradient_two_inputs", lambda m, a, b: _mul(a.sin(), b) * a, (2, 3), (2, 3),
      torch_fn=lambda m, a, b: a.sin() * b * a)
T.row("function", lambda m, x: _Cube.apply(x.sin()) * x, (3, 4),
      torch_fn=lambda m, x: x.sin() ** 3 * x,
      skip_second="Function.backward works on raw arrays, so its gradient is differentiable "
                  "once (PyTorch's once_differentiable): a gradient of it raises "
                  "(tests/test_tape.py), there is no second order to compare")


# ----- checkpoint: one entry whose rule runs the function again. Torch's twin is the plain
# function (torch.utils.checkpoint is the oracle in tests/test_checkpoint.py: torch.func,
# which other tests run the rows' twins under, refuses its saved-tensor hooks) -----
def _block(a, b):
    return (a @ b).tanh() * a.sin()


def _pair(a, b):
    return a.tanh(), (a @ b).sin().sum(1)


def _pair_product(p, q):
    return p * q[:, None]


T.row("checkpoint", lambda m, x, w: m.checkpoint(_block, x, w) * x, (3, 4), (4, 4),
      torch_fn=lambda m, x, w: _block(x, w) * x)
T.row("checkpoint_tuple", lambda m, x, w: _pair_product(*m.checkpoint(_pair, x, w)),
      (3, 4), (4, 4), torch_fn=lambda m, x, w: _pair_product(*_pair(x, w)))


# ----- function transforms inside a recorded function: tape.func's twins are torch.func's -----
def _energy(a):
    return (a.sin() ** 2).sum()


T.row("func_grad", lambda m, x: m.func.grad(_energy)(x) * x, (3, 4))
T.row("func_jvp", lambda m, x, v: m.func.jvp(lambda a: (a @ a.T).tanh(), (x,), (v,))[1],
      (3, 4), (3, 4))


def _example_loss(w, x):
    return ((x @ w).tanh() ** 2).sum()


T.row("func_vmap_grad", lambda m, w, x: m.func.vmap(m.func.grad(_example_loss),
                                                    in_axes=(None, 0))(w, x), (3, 2), (4, 3),
      torch_fn=lambda m, w, x: m.func.vmap(m.func.grad(_example_loss), in_dims=(None, 0))(w, x))
T.row("func_vmap", lambda m, x, w: m.func.vmap(lambda r: (r @ w).sin(), in_axes=1)(x),
      (3, 4), (3, 2), torch_fn=lambda m, x, w: m.func.vmap(lambda r: (r @ w).sin(), in_dims=1)(x))


# ----- SiLU, ELU, softplus, group and RMS norms, smooth L1, Huber and KL losses
# (torch.nn.functional's twins; compositions of ops, so every transform comes with them) -----
def kl_target_zeros(rng, shape):  # probabilities with zeros, where xlogy(t, t) is 0
    t = prob(rng, shape)
    t.reshape(-1)[::3] = 0.0
    return t


T.row("silu", lambda m, x: m.F.silu(x), (4, 5))
T.row("elu", lambda m, x: m.F.elu(x), (4, 5), gen=away(0))
T.row("elu_alpha_big", lambda m, x: m.F.elu(x, alpha=0.5), (4, 5), gen=away(0, base=big))
T.row("softplus_functional", lambda m, x: m.F.softplus(x, beta=2.0, threshold=3.0), (4, 5),
      gen=away(1.5, scale=3))
T.row("group_norm", lambda m, x, w, b: m.F.group_norm(x, 2, w, b), (4, 6, 3, 3), (6,), (6,))
T.row("group_norm_2d", lambda m, x: m.F.group_norm(x, 3), (4, 12))
T.row("group_norm_per_channel", lambda m, x, w: m.F.group_norm(x, 4, w, eps=1e-3),
      (2, 4, 5), (4,))
T.row("rms_norm", lambda m, x, w: m.F.rms_norm(x, (5,), w), (3, 4, 5), (5,))
T.row("rms_norm_2axes", lambda m, x: m.F.rms_norm(x, (4, 5), eps=1e-3), (3, 4, 5))
for red in ("mean", "sum", "none"):
    T.row(f"smooth_l1_{red}", lambda m, x, y, red=red: m.F.smooth_l1_loss(
        x, y, reduction=red), (4, 5), (4, 5), gen=NN)
    T.row(f"huber_{red}", lambda m, x, y, red=red: m.F.huber_loss(
        x, y, reduction=red, delta=0.5), (4, 5), (4, 5), gen=NN)
T.row("smooth_l1_beta", lambda m, x, y: m.F.smooth_l1_loss(x, y, beta=0.3), (4, 5), (4, 5),
      gen=NN)
T.row("smooth_l1_beta0", lambda m, x, y: m.F.smooth_l1_loss(x, y, reduction="sum", beta=0.0),
      (4, 5), (4, 5), gen=NN)
T.row("huber_weight", lambda m, x, y, w: m.F.huber_loss(x, y, weight=w), (4, 5), (4, 5),
      (4, 5), gen=(normal, normal, positive))
for red in ("mean", "batchmean", "sum", "none"):
    T.row(f"kl_div_{red}", lambda m, x, t, red=red: m.F.kl_div(x, t, reduction=red),
          (4, 5), (4, 5), gen=(normal, prob))
T.row("kl_div_log_target", lambda m, x, t: m.F.kl_div(x, t, reduction="batchmean",
                                                       log_target=True), (4, 5), (4, 5))
T.row("kl_div_zero_target", lambda m, x, t: m.F.kl_div(x, t, reduction="sum"), (4, 5), (4, 5),
      gen=(normal, kl_target_zeros), nograd=(1,),
      note="the target is not differentiated: torch's gradient there is NaN where it is 0 "
           "(0 / 0 in xlogy's rule), tape's the limit of the other terms, -input")
