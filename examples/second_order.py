"""Second-order derivatives with nested tapes: Hessian-vector products, Hessians via
``t.jacobian``, and a WGAN-GP gradient penalty that a critic is trained with.

What it teaches:

1. A Hessian-vector product ``H v`` by differentiating ``grad f(x) . v`` again: the inner
   tape's ``gradient``, computed while an outer tape records, is itself recorded.
   Checked against the closed form for the Rosenbrock function and a finite difference
   of gradients.
2. The whole Hessian as ``outer.jacobian(grad f(x), x)`` in one vectorized replay.
3. A gradient penalty ``(||d critic(x) / dx|| - 1)^2`` (WGAN-GP, Gulrajani et al. 2017):
   a loss that contains a gradient, so training needs the gradient of a gradient. Its
   parameter gradient is checked with ``tape.gradcheck``, then a small critic is trained
   to estimate the Wasserstein-1 distance between two Gaussians, whose exact value (the
   distance between their means) is known, as is what the penalized objective gives.

Run: python examples/second_order.py      (a few seconds on a laptop CPU, no download)
"""

import numpy as np

import tape
import tape.nn as nn


# ----- 1 and 2: Hessian-vector product and Hessian of the Rosenbrock function -----
def rosenbrock(x):
    """sum_i 100 (x[i+1] - x[i]^2)^2 + (1 - x[i])^2, minimal (0) at x = (1, ..., 1)."""
    return (100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2).sum()


def rosenbrock_hessian(x):
    """The closed form, in numpy: tridiagonal."""
    n = len(x)
    h = np.zeros((n, n))
    i = np.arange(n - 1)
    h[i, i] += 1200.0 * x[:-1] ** 2 - 400.0 * x[1:] + 2.0
    h[i + 1, i + 1] += 200.0
    h[i, i + 1] = h[i + 1, i] = -400.0 * x[:-1]
    return h


def gradient(f, x):
    """grad f(x), first order only (one tape)."""
    x = tape.tensor(x, requires_grad=True)
    with tape.Tape() as t:
        y = f(x)
    return t.gradient(y, x).numpy()


def hessian_vector_product(f, x, v):
    """H(x) v without forming H: the gradient of the scalar grad f(x) . v."""
    with tape.Tape() as outer:
        with tape.Tape() as inner:
            y = f(x)
        g = inner.gradient(y, x)     # recorded by `outer`: it is a function of x too
        g_dot_v = (g * v).sum()
    return outer.gradient(g_dot_v, x)


def hessian(f, x):
    """The full Hessian: the Jacobian of the gradient, in one vectorized replay."""
    with tape.Tape() as outer:
        with tape.Tape() as inner:
            y = f(x)
        g = inner.gradient(y, x)
    return outer.jacobian(g, x)    # shape g.shape + x.shape = (n, n)


# ----- 3: the gradient penalty -----
def gradient_penalty(critic, x_hat):
    """mean over examples of (||d critic(x) / dx at x_hat|| - 1)^2, itself differentiable.

    Call it while an outer tape records: the inner tape's gradient is then recorded, and
    the outer tape can differentiate the penalty with respect to the critic's weights.
    """
    with tape.Tape() as inner:
        inner.watch(x_hat)         # x_hat is data: watch it explicitly
        scores = critic(x_hat)     # (N, 1)
    # Examples do not interact in the critic, so the gradient of the sum of the scores
    # holds each example's own input gradient in its row.
    grad_x = inner.gradient(scores, x_hat)                  # (N, 2)
    norm = tape.sqrt((grad_x ** 2).sum(axis=1) + 1e-12)     # + eps: sqrt is not smooth at 0
    return ((norm - 1.0) ** 2).mean()


def small_critic(x, w1, b1, w2):
    """A one-hidden-layer critic written with ops, for gradcheck (weights as inputs)."""
    return tape.tanh(x @ w1 + b1) @ w2


def train_critic(steps, lam, lr, seed, batch=256):
    """WGAN-GP critic between two fixed Gaussians; returns the history of the run."""
    rng = np.random.default_rng(seed)
    mean_real, mean_fake, sigma = np.array([1.5, 1.0]), np.array([-1.0, 0.0]), 0.3
    exact_w1 = float(np.linalg.norm(mean_real - mean_fake))  # = 2.6926 for a translation

    critic = nn.Sequential(nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(),
                           nn.Linear(64, 1))
    params = critic.parameters()
    opt = tape.optim.Adam(params, lr=lr, betas=(0.5, 0.9))  # the WGAN-GP paper's betas
    history = {"penalty": [], "w1": []}
    for step in range(steps + 1):
        real = (mean_real + sigma * rng.standard_normal((batch, 2))).astype(np.float32)
        fake = (mean_fake + sigma * rng.standard_normal((batch, 2))).astype(np.float32)
        eps = rng.random((batch, 1)).astype(np.float32)
        x_hat = tape.tensor(eps * real + (1 - eps) * fake)  # random points between pairs
        real, fake = tape.tensor(real), tape.tensor(fake)

        with tape.Tape() as outer:
            w1_estimate = critic(real).mean() - critic(fake).mean()
            penalty = gradient_penalty(critic, x_hat)   # the inner tape lives in here
            loss = -w1_estimate + lam * penalty          # maximise the estimate, subject to
        opt.step(outer.gradient(loss, params))          # ||grad|| ~ 1 (1-Lipschitz critic)

        history["penalty"].append(penalty.item())
        history["w1"].append(w1_estimate.item())
        if step % 50 == 0:
            print(f"step {step:4d}  W1 estimate {w1_estimate.item():.4f}  "
                  f"gradient penalty {penalty.item():.5f}")

    # The estimate on fresh samples, against what the penalized objective gives for the
    # best critic, f(x) = n u.x with u the unit vector between the means: the objective
    # n W1 - lam (n - 1)^2 is largest at n = 1 + W1 / (2 lam). So the soft constraint lets
    # the slope exceed 1 a little, and the estimate is W1 (1 + W1 / (2 lam)), not W1.
    with tape.no_grad():
        real = tape.tensor((mean_real + sigma * rng.standard_normal((20000, 2))).astype("f4"))
        fake = tape.tensor((mean_fake + sigma * rng.standard_normal((20000, 2))).astype("f4"))
        final = (critic(real).mean() - critic(fake).mean()).item()
    slope = 1 + exact_w1 / (2 * lam)
    print(f"W1 estimate on 20,000 fresh samples {final:.4f}, mean gradient penalty of the "
          f"last 50 steps {np.mean(history['penalty'][-50:]):.4f}\n"
          f"best critic of the penalized objective: W1 estimate {exact_w1 * slope:.4f}, "
          f"gradient penalty {(slope - 1) ** 2:.4f}; exact W1 {exact_w1:.4f}")
    history.update(exact_w1=exact_w1, expected_w1=exact_w1 * slope, final_w1=final,
                   expected_penalty=(slope - 1) ** 2)
    return history


def main(steps=200, lam=10.0, lr=2e-3, seed=0):
    tape.manual_seed(seed)
    rng = np.random.default_rng(seed)
    results = {}

    # 1. Hessian-vector product, in float64 so that the finite difference is accurate.
    x_np, v_np = rng.uniform(-1.5, 1.5, 6), rng.standard_normal(6)
    x, v = tape.tensor(x_np, requires_grad=True), tape.tensor(v_np)
    hvp = hessian_vector_product(rosenbrock, x, v).numpy()
    exact = rosenbrock_hessian(x_np) @ v_np
    eps = 1e-5
    fd = (gradient(rosenbrock, x_np + eps * v_np) - gradient(rosenbrock, x_np - eps * v_np)) / (
        2 * eps)
    print("Hessian-vector product   ", np.round(hvp, 4))
    print("closed form H v          ", np.round(exact, 4))
    print("finite difference of grad", np.round(fd, 4))
    results["hvp_vs_exact"] = float(np.abs(hvp - exact).max() / np.abs(exact).max())
    results["hvp_vs_fd"] = float(np.abs(hvp - fd).max() / np.abs(fd).max())
    print(f"relative error: {results['hvp_vs_exact']:.1e} against the closed form, "
          f"{results['hvp_vs_fd']:.1e} against finite differences")

    # 2. The Hessian with t.jacobian; at the minimum (1, ..., 1) it is positive definite.
    h = hessian(rosenbrock, x).numpy()
    results["hessian_vs_exact"] = float(np.abs(h - rosenbrock_hessian(x_np)).max())
    h_min = hessian(rosenbrock, tape.tensor(np.ones(6), requires_grad=True)).numpy()
    results["min_eigenvalue_at_minimum"] = float(np.linalg.eigvalsh(h_min).min())
    print(f"Hessian by t.jacobian: shape {h.shape}, max error {results['hessian_vs_exact']:.1e}"
          f"; smallest eigenvalue at the minimum {results['min_eigenvalue_at_minimum']:.4f}"
          " (> 0)")

    # 3a. The penalty's gradient with respect to the critic's weights, checked against
    # finite differences: gradcheck's tape records the inner tape's gradient.
    x_hat = tape.randn(5, 2, dtype=tape.float64)  # float64: closures are not converted
    weights = [tape.randn(2, 8), tape.randn(8) * 0.1, tape.randn(8, 1)]

    def penalty_of_weights(w1, b1, w2):
        return gradient_penalty(lambda z: small_critic(z, w1, b1, w2), x_hat)

    results["gradcheck_penalty"] = tape.gradcheck(penalty_of_weights, weights)
    print("gradcheck of the gradient penalty's gradient:", results["gradcheck_penalty"])

    # 3b. Train a critic with it.
    history = train_critic(steps, lam, lr, seed)
    results.update(history)
    return results


if __name__ == "__main__":
    main()
