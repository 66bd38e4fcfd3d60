"""Quickstart: a two-layer network trained with ``with tape.Tape() as t:`` on two spirals.

Everything here is tape's core: tensors, ops, the tape and its gradients, plain SGD.
Run: python examples/quickstart.py
"""

import numpy as np

import tape


def spirals(n=200, seed=0):
    """Two interleaved spirals in 2-D, labels 0 and 1 (made here: nothing to download)."""
    rng = np.random.default_rng(seed)
    t = np.sqrt(rng.random(n)) * 3 * np.pi
    arms = [np.stack([t * np.cos(t + k * np.pi), t * np.sin(t + k * np.pi)], 1) for k in (0, 1)]
    x = np.concatenate(arms) / (3 * np.pi) + rng.normal(0, 0.02, (2 * n, 2))
    y = np.concatenate([np.zeros(n), np.ones(n)]).astype(np.int64)
    return x.astype(np.float32), y


def main(steps=3000, lr=0.2, hidden=128):
    tape.manual_seed(0)
    x_np, y_np = spirals()
    x, onehot = tape.tensor(x_np), tape.tensor(np.eye(2, dtype=np.float32)[y_np])
    w1 = tape.tensor(tape.randn(2, hidden).numpy() * 4.0, requires_grad=True)
    b1 = tape.zeros(hidden, requires_grad=True)
    w2 = tape.tensor(tape.randn(hidden, 2).numpy() * 0.1, requires_grad=True)
    b2 = tape.zeros(2, requires_grad=True)
    params = [w1, b1, w2, b2]
    for step in range(steps + 1):
        with tape.Tape() as t:
            logits = tape.tanh(x @ w1 + b1) @ w2 + b2
            loss = -(tape.log_softmax(logits, axis=1) * onehot).sum(axis=1).mean()
        grads = t.gradient(loss, params)
        for p, g in zip(params, grads):
            p.data -= lr * g.data  # plain SGD, in place
        if step % 500 == 0:
            accuracy = (logits.argmax(axis=1).numpy() == y_np).mean()
            print(f"step {step:5d}  loss {loss.item():.4f}  accuracy {accuracy:.3f}")
    return accuracy


if __name__ == "__main__":
    main()
