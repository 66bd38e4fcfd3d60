"""New ops, two ways: ``@tape.custom_gradient`` and a ``tape.Function`` subclass.

What it teaches:

1. ``@tape.custom_gradient`` (TensorFlow style): the function returns ``(y, grad_fn)``;
   ``grad_fn(dy)`` is written with tape ops, so it is itself differentiable (second
   derivatives work). Example: a numerically stable ``log1pexp(x) = log(1 + exp(x))``,
   whose naive form overflows to inf (and its gradient to nan) for large x.
2. ``tape.Function`` (PyTorch style): ``forward(ctx, x)`` and ``backward(ctx, grad)`` on
   raw numpy arrays. Example: the Swish activation ``x * sigmoid(x)``. A ``backward`` on
   raw arrays is a constant to any outer tape: first derivatives only. Inside a model
   whose gradient is differentiated again (a gradient penalty, examples/second_order.py)
   the second-order terms through such an op are silently left out: use
   ``custom_gradient`` with a ``grad_fn`` written in tape ops there.
3. Checking both with ``tape.gradcheck`` (central finite differences in float64), and
   what it says about an op whose gradient is deliberately not the true one (a
   "straight-through" rounding).
4. Using them in a tiny model: a Swish MLP trained with the logistic loss
   ``log1pexp(-label * logit)`` on two interleaved half-moons.

Run: python examples/custom_op.py         (about a second, no download)
"""

import numpy as np

import tape
import tape.nn as nn


# ----- 1. custom_gradient: a stable log(1 + exp(x)) with a hand-written gradient -----
@tape.custom_gradient
def log1pexp(x):
    # The forward runs without recording (the op is one entry on the tape), so anything
    # goes here. max(x, 0) + log(1 + exp(-|x|)) never overflows: exp(-|x|) <= 1.
    y = tape.maximum(x, 0.0) + tape.log(1.0 + tape.exp(-tape.abs(x)))

    def grad_fn(dy):
        # d/dx log(1 + exp(x)) = sigmoid(x). Computed here, from the input x, with tape
        # ops, so that an outer tape records it and can differentiate it again.
        return dy * tape.sigmoid(x)

    return y, grad_fn


def log1pexp_naive(x):
    return tape.log(1.0 + tape.exp(x))


# ----- 2. Function: Swish on raw arrays -----
def _sigmoid(a):
    return 0.5 * (1.0 + np.tanh(0.5 * a))  # = 1 / (1 + exp(-a)), without overflow


class Swish(tape.Function):
    """``x * sigmoid(x)`` (also called SiLU); ``Swish.apply(x)`` on a tape.Tensor."""

    @staticmethod
    def forward(ctx, x):  # x is a raw numpy array (cupy on the GPU)
        s = _sigmoid(x)
        ctx.save_for_backward(x, s)  # whatever backward needs, saved on ctx
        return x * s

    @staticmethod
    def backward(ctx, grad):  # grad: d loss / d output, a raw array of the output's shape
        x, s = ctx.saved_tensors
        return grad * s * (1.0 + x * (1.0 - s))  # one gradient per input of forward


class SwishLayer(nn.Module):
    """The op as a layer, to use it in nn.Sequential."""

    def forward(self, x):
        return Swish.apply(x)


# ----- 3. a gradient that is deliberately not the true one -----
class RoundStraightThrough(tape.Function):
    """Rounds in the forward, passes the gradient through unchanged in the backward (the
    "straight-through estimator" used to train quantized networks). The true derivative
    of rounding is 0 almost everywhere, so gradcheck rightly reports a mismatch."""

    @staticmethod
    def forward(ctx, x):
        return np.round(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


def two_moons(n=200, noise=0.15, seed=0):
    """Two interleaved half circles, labels -1 and +1 (made here: nothing to download)."""
    rng = np.random.default_rng(seed)
    angle = rng.random(n) * np.pi
    upper = np.stack([np.cos(angle), np.sin(angle)], 1)
    lower = np.stack([1 - np.cos(angle), 0.5 - np.sin(angle)], 1)
    x = np.concatenate([upper, lower]) + rng.normal(0, noise, (2 * n, 2))
    y = np.concatenate([-np.ones(n), np.ones(n)])
    return x.astype(np.float32), y.astype(np.float32)


def main(steps=200, lr=0.02, seed=0):
    tape.manual_seed(seed)
    results = {}

    # --- the stable op against the naive formula, at a large input ---
    x = tape.tensor([-100.0, 0.0, 3.0, 100.0], requires_grad=True)
    with tape.Tape(persistent=True) as t, np.errstate(over="ignore", invalid="ignore"):
        naive, stable = log1pexp_naive(x), log1pexp(x)  # (numpy's overflow warnings off)
    print("x                      ", x.numpy())
    with np.errstate(invalid="ignore"):  # the naive gradient is inf * 0 at x = 100
        naive_grad = t.gradient(naive, x)
    print("naive  log(1 + exp(x)) ", naive.numpy(), " gradient",
          naive_grad.numpy())             # inf and nan at x = 100 (exp overflows)
    print("stable log1pexp(x)     ", stable.numpy(), " gradient",
          t.gradient(stable, x).numpy())  # 100 and 1 at x = 100
    results["stable_finite"] = bool(np.isfinite(t.gradient(stable, x).numpy()).all())

    # --- second derivative through grad_fn: d2/dx2 log1pexp = sigmoid(x)(1 - sigmoid(x)) ---
    x = tape.tensor([-2.0, 0.0, 1.5], requires_grad=True)
    with tape.Tape() as outer:
        with tape.Tape() as inner:
            y = log1pexp(x)
        dy = inner.gradient(y, x)    # recorded by the outer tape: grad_fn used tape ops
    d2y = outer.gradient(dy, x)
    s = _sigmoid(x.numpy())
    print("second derivative      ", d2y.numpy(), " closed form", s * (1 - s))
    results["second_derivative_error"] = float(np.abs(d2y.numpy() - s * (1 - s)).max())

    # --- gradcheck: tape gradients and Jacobians against finite differences ---
    inputs = [tape.randn(3, 4) * 5]  # gradcheck copies them to float64
    results["gradcheck_log1pexp"] = tape.gradcheck(log1pexp, inputs)
    results["gradcheck_swish"] = tape.gradcheck(Swish.apply, inputs)
    # Function ops compose with everything else on the tape:
    results["gradcheck_composed"] = tape.gradcheck(
        lambda a, b: log1pexp(Swish.apply(a @ b)).sum(axis=0), [tape.randn(3, 4), tape.randn(4, 2)])
    print("gradcheck log1pexp, Swish, composed:", results["gradcheck_log1pexp"],
          results["gradcheck_swish"], results["gradcheck_composed"])
    try:
        tape.gradcheck(RoundStraightThrough.apply, [tape.tensor([0.2, 1.3, -0.6])])
        results["gradcheck_straight_through"] = True
    except tape.GradcheckError as err:  # expected: the backward is a deliberate choice
        print("gradcheck straight-through rounding: mismatch, as it should be:\n   ", err)
        results["gradcheck_straight_through"] = False

    # --- a tiny model using both: a Swish MLP with the logistic loss ---
    x_np, y_np = two_moons(seed=seed)
    x, labels = tape.tensor(x_np), tape.tensor(y_np)
    model = nn.Sequential(nn.Linear(2, 32), SwishLayer(), nn.Linear(32, 32), SwishLayer(),
                          nn.Linear(32, 1))
    params = model.parameters()
    opt = tape.optim.Adam(params, lr=lr)
    for step in range(steps + 1):
        with tape.Tape() as t:
            logits = model(x).reshape(-1)
            loss = log1pexp(-labels * logits).mean()  # logistic loss, labels in {-1, +1}
        opt.step(t.gradient(loss, params))
        if step % 50 == 0:
            accuracy = float((np.sign(logits.numpy()) == y_np).mean())
            print(f"step {step:4d}  logistic loss {loss.item():.4f}  accuracy {accuracy:.3f}")
    results["loss"], results["accuracy"] = loss.item(), accuracy
    return results


if __name__ == "__main__":
    main()
