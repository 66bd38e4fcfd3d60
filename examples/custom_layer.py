"""A layer of your own: subclass ``tape.nn.Module``, give it ``Parameter``s, use it anywhere.

What it teaches: writing a ``Module`` subclass (a gated residual block, a small cousin of
the gated linear units in modern transformers) with its own ``Parameter``s, initialised
with ``tape.nn.init``, and a submodule; using it inside ``nn.Sequential`` next to
built-in layers; the names that ``named_parameters()`` and ``state_dict()`` give; and
saving/restoring a model with a custom layer through its state dict (``tape.nn.save_model``
only knows the architecture of built-in layers).

Run: python examples/custom_layer.py      (a few seconds on a laptop CPU, no download)
"""

import math
import os
import tempfile

import numpy as np

import tape
import tape.nn as nn
from tape.data import DataLoader
from tape.data.datasets import load_digits


class GatedResidual(nn.Module):
    """``x + proj(value(x) * sigmoid(gate(x)))``, with ``value`` and ``gate`` linear maps.

    The gate, between 0 and 1 per hidden unit and per example, decides how much of each
    hidden feature goes through; the residual connection (``x + ...``) lets the block
    start close to the identity, so stacking several of them trains easily.
    """

    def __init__(self, features, hidden):
        super().__init__()  # first: it sets up the registries of parameters and submodules
        self.features, self.hidden = features, hidden
        # Assigning a Parameter registers it under the attribute's name. The value and
        # gate weights are stored side by side in one (features, 2 * hidden) matrix, so
        # both come out of a single matmul.
        self.weight = nn.Parameter(tape.zeros(features, 2 * hidden))
        self.bias = nn.Parameter(tape.zeros(2 * hidden))
        # Assigning a Module registers it as a submodule: its parameters become ours,
        # named "proj.weight" and "proj.bias".
        self.proj = nn.Linear(hidden, features)
        self.reset_parameters()

    def reset_parameters(self):
        # In place, with the library's random generator (tape.manual_seed).
        nn.init.xavier_uniform_(self.weight)
        nn.init.zeros_(self.bias)
        # A small output projection: the block starts as almost the identity.
        bound = 0.1 / math.sqrt(self.hidden)
        nn.init.uniform_(self.proj.weight, -bound, bound)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x):
        # Any tape ops work here; the tape records them as the model runs.
        h = x @ self.weight + self.bias                   # (N, 2 * hidden)
        value, gate = h[:, : self.hidden], h[:, self.hidden:]
        return x + self.proj(value * tape.sigmoid(gate))

    def extra_repr(self):  # what repr(model) shows between the parentheses
        return f"features={self.features}, hidden={self.hidden}"


def build_model(width=64, hidden=96, blocks=2):
    """Built-in and custom layers mix freely in a Sequential."""
    return nn.Sequential(
        nn.Linear(64, width),
        *[GatedResidual(width, hidden) for _ in range(blocks)],
        nn.LayerNorm(width),
        nn.Linear(width, 10),
    )


def accuracy(model, x, y):
    model.eval()
    with tape.no_grad():
        pred = model(x).argmax(axis=1).numpy()
    model.train()
    return float((pred == y.numpy()).mean())


def main(epochs=8, batch_size=32, lr=2e-3, seed=0):
    tape.manual_seed(seed)
    train, test = load_digits(flatten=True)
    loader = DataLoader(train, batch_size=batch_size, shuffle=True, seed=seed)
    x_test, y_test = test[:]  # the whole test set as two tensors

    model = build_model()
    print(model)

    # named_parameters(): dotted names, in registration order, exactly as PyTorch.
    print("\nparameters:")
    for name, p in model.named_parameters():
        print(f"  {name:16s} {p.shape!s:12s} {p.dtype}")

    params = model.parameters()
    opt = tape.optim.Adam(params, lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    print()
    for epoch in range(1, epochs + 1):
        for x, y in loader:
            with tape.Tape() as t:
                loss = loss_fn(model(x), y)
            opt.step(t.gradient(loss, params))
        print(f"epoch {epoch}  last batch loss {loss.item():.4f}  "
              f"test accuracy {accuracy(model, x_test, y_test):.4f}")
    test_accuracy = accuracy(model, x_test, y_test)

    # state_dict(): the same names, mapped to tensors (parameters and buffers).
    state = model.state_dict()
    print(f"\nstate_dict: {len(state)} tensors, {sum(v.size for v in state.values()):,} "
          f"numbers; keys {list(state)[:4]} ...")

    # Saving a model with a custom layer: save its state dict, rebuild it in code, load.
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "gated.safetensors")
        tape.save(state, path)
        tape.manual_seed(seed + 1)  # different initial weights, to show that loading works
        fresh = build_model()
        fresh.load_state_dict(tape.load(path))  # strict: every name must match
    fresh.eval()
    model.eval()
    same = np.array_equal(fresh(x_test).numpy(), model(x_test).numpy())
    print(f"rebuilt from the saved state dict, same outputs: {same}")
    return {"test_accuracy": test_accuracy, "names": [n for n, _ in model.named_parameters()],
            "restored": same}


if __name__ == "__main__":
    main()
