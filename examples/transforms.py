"""Function transforms with ``tape.func``: per-example gradients, Hessian-vector products
and a differentially private training step.

What it teaches:

1. Per-example gradients of an MLP on the digits: ``func.functional_call`` turns the
   model into a function of its parameters, ``func.grad`` differentiates one example's
   loss, and ``func.vmap`` maps that over the batch, running each op once on the whole
   batch (no Python loop). Their mean is the batch gradient of an ordinary tape.
2. A Hessian-vector product ``H v`` without forming ``H``, two ways: forward-over-reverse
   ``func.jvp(func.grad(f), (w,), (v,))``, and a ``tape.ForwardAccumulator`` around a
   gradient. Both are checked against ``func.hessian(f)(w) @ v`` (and ``H`` against its
   closed form) for a logistic regression.
3. DP-SGD (Abadi et al. 2016): each example's gradient clipped to a norm, their sum
   blurred with Gaussian noise. Needs the per-example gradients of 1; trains the MLP to
   about 91% test accuracy in 8 epochs.

Run: python examples/transforms.py     (a few seconds on a laptop CPU; nothing is
downloaded: the digits ship with scikit-learn)
"""

import time

import numpy as np

import tape
import tape.functional as F
import tape.nn as nn
from tape import func
from tape.data import DataLoader
from tape.data.datasets import load_digits


# ----- 1: per-example gradients -----
def per_example_gradients(model, params, x, y):
    """Each example's gradient of its own loss: a dict of ``(N, *param.shape)`` tensors."""

    def loss(params, x, y):  # one example: x of shape (64,), y a scalar label
        logits = func.functional_call(model, params, x[None])  # a batch of one
        return F.cross_entropy(logits, y[None])

    return func.vmap(func.grad(loss), in_axes=(None, 0, 0))(params, x, y)


def global_norms(grads):
    """Each example's gradient norm over all the parameters together: shape (N,)."""
    return tape.sqrt(sum((g.reshape(len(g), -1) ** 2).sum(axis=1) for g in grads.values()))


# ----- 2: Hessian-vector products -----
def logistic_loss(w, x, t, lam=1e-2):
    """Mean logistic loss of the logits x @ w for targets t in {0, 1}, plus lam |w|^2 / 2."""
    return F.binary_cross_entropy_with_logits(x @ w, t) + 0.5 * lam * (w * w).sum()


def logistic_hessian(w, x, lam=1e-2):
    """The closed form, in numpy: X^T diag(p (1 - p)) X / N + lam I."""
    p = 1 / (1 + np.exp(-x @ w))
    return (x.T * (p * (1 - p))) @ x / len(x) + lam * np.eye(len(w))


# ----- 3: DP-SGD -----
def dp_sgd_step(model, params, opt, x, y, clip=1.0, noise_multiplier=1.0):
    """Clip each example's gradient to norm ``clip``, sum, add noise of standard deviation
    ``noise_multiplier * clip``, divide by the batch size, and step."""
    grads = per_example_gradients(model, params, x, y)
    scale = tape.minimum(clip / (global_norms(grads) + 1e-6), 1.0)  # (N,): 1 if within
    noisy = []
    for g in grads.values():
        clipped = (g * scale.reshape(-1, *[1] * (g.ndim - 1))).sum(axis=0)
        noise = noise_multiplier * clip * tape.randn(*clipped.shape)
        noisy.append((clipped + noise) / len(x))
    opt.step(noisy)  # in the order of params.values(), as the optimizer was given them


def accuracy(model, data):
    x, y = data.get_batch(np.arange(len(data)))
    with tape.no_grad():
        return float((model(x).argmax(axis=1).numpy() == y.numpy()).mean())


def main(batch_size=32, epochs=8, lr=1.0, clip=1.0, noise_multiplier=1.0, seed=0):
    tape.manual_seed(seed)
    train, test = load_digits(flatten=True)  # (N, 64) float32 in [0, 1], int64 labels
    model = nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10))
    params = dict(model.named_parameters())  # {"0.weight": ..., "0.bias": ..., ...}
    results = {}

    # 1. Per-example gradients of one batch, and the batch gradient from a plain tape.
    x, y = train.get_batch(np.arange(batch_size))
    start = time.perf_counter()
    grads = per_example_gradients(model, params, x, y)
    elapsed = time.perf_counter() - start
    norms = global_norms(grads).numpy()
    print(f"per-example gradients of a batch of {batch_size} in {elapsed * 1e3:.1f} ms: "
          + ", ".join(f"{k} {tuple(g.shape)}" for k, g in grads.items()))
    print("their norms:", np.array2string(norms, precision=2, max_line_width=100))
    with tape.Tape() as t:
        loss = F.cross_entropy(model(x), y)  # the mean over the batch
    batch = t.gradient(loss, list(params.values()))
    results["mean_vs_batch"] = max(float(np.abs(g.numpy().mean(axis=0) - b.numpy()).max())
                                   for g, b in zip(grads.values(), batch))
    print(f"mean of the per-example gradients vs the batch gradient: largest difference "
          f"{results['mean_vs_batch']:.1e}")
    assert results["mean_vs_batch"] < 1e-6
    results["norms"] = norms

    # 2. H v for a logistic regression (is the digit a 3?), in float64.
    xs, ys = train.get_batch(np.arange(200))
    x64 = tape.tensor(xs.numpy(), dtype=tape.float64)
    t64 = tape.tensor((ys.numpy() == 3).astype(np.float64))
    rng = np.random.default_rng(seed)
    w = tape.tensor(0.1 * rng.standard_normal(64))
    v = tape.tensor(rng.standard_normal(64))

    def f(w):
        return logistic_loss(w, x64, t64)

    hvp_jvp = func.jvp(func.grad(f), (w,), (v,))[1]   # forward-over-reverse
    with tape.ForwardAccumulator(w, v) as acc:        # the same, TensorFlow's way
        g = func.grad(f)(w)
    hvp_acc = acc.jvp(g)
    h = func.hessian(f)(w)                            # (64, 64): jacfwd(jacrev(f))
    exact = (h @ v).numpy()
    results["hvp_jvp_vs_hessian"] = float(np.abs(hvp_jvp.numpy() - exact).max())
    results["hvp_acc_vs_hessian"] = float(np.abs(hvp_acc.numpy() - exact).max())
    results["hessian_vs_closed_form"] = float(
        np.abs(h.numpy() - logistic_hessian(w.numpy(), x64.numpy())).max())
    print(f"H v: func.jvp of func.grad vs func.hessian(f)(w) @ v "
          f"{results['hvp_jvp_vs_hessian']:.1e}, ForwardAccumulator "
          f"{results['hvp_acc_vs_hessian']:.1e}; func.hessian vs the closed form "
          f"{results['hessian_vs_closed_form']:.1e}")
    assert max(results["hvp_jvp_vs_hessian"], results["hvp_acc_vs_hessian"],
               results["hessian_vs_closed_form"]) < 1e-10

    # 3. Train the MLP with DP-SGD.
    opt = tape.optim.SGD(list(params.values()), lr=lr)
    loader = DataLoader(train, batch_size=64, shuffle=True, seed=seed)
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        for xb, yb in loader:
            dp_sgd_step(model, params, opt, xb, yb, clip, noise_multiplier)
        print(f"DP-SGD epoch {epoch}: test accuracy {accuracy(model, test):.3f}")
    results["dp_sgd_accuracy"] = accuracy(model, test)
    print(f"DP-SGD: {epochs} epochs in {time.perf_counter() - start:.1f} s (clip {clip}, "
          f"noise multiplier {noise_multiplier})")
    return results


if __name__ == "__main__":
    main()
