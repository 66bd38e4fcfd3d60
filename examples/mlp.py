"""An MLP on the handwritten digits: the smallest complete training script with tape.nn.

What it teaches: building a model from ``tape.nn`` layers, batching a dataset with
``DataLoader``, the training step (forward under ``with tape.Tape() as t:``, then
``t.gradient`` and ``opt.step``), and evaluating under ``tape.no_grad()``.

Run: python examples/mlp.py          (about 2 s on a laptop CPU; nothing is downloaded:
the 1,797 8x8 digits ship with scikit-learn)
"""

import time

import tape
import tape.nn as nn
from tape.data import DataLoader
from tape.data.datasets import load_digits


def accuracy(model, loader):
    """Fraction of correctly classified examples; nothing is recorded (no tape needed)."""
    model.eval()  # no effect on this model, but a good habit (Dropout, BatchNorm)
    correct = total = 0
    with tape.no_grad():
        for x, y in loader:
            pred = model(x).argmax(axis=1)
            correct += int((pred.numpy() == y.numpy()).sum())
            total += len(y)
    model.train()
    return correct / total


def main(epochs=10, batch_size=32, lr=2e-3, seed=0):
    tape.manual_seed(seed)  # fixes the initial weights

    # 1. Data: (N, 64) float32 images in [0, 1] and int64 labels, split 80/20 by class.
    train, test = load_digits(flatten=True)
    train_loader = DataLoader(train, batch_size=batch_size, shuffle=True, seed=seed)
    test_loader = DataLoader(test, batch_size=256)

    # 2. Model, loss and optimizer. Linear layers start as PyTorch's do.
    model = nn.Sequential(
        nn.Linear(64, 128), nn.ReLU(),
        nn.Linear(128, 128), nn.ReLU(),
        nn.Linear(128, 10),  # logits: CrossEntropyLoss applies log_softmax itself
    )
    loss_fn = nn.CrossEntropyLoss()
    params = list(model.parameters())  # a list: the gradients come back in this order
    opt = tape.optim.Adam(params, lr=lr)
    print(model)
    print(f"{sum(p.size for p in params):,} parameters, {len(train)} training images")

    # 3. Training loop.
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        total_loss = 0.0
        for x, y in train_loader:
            with tape.Tape() as t:          # records the ops on the parameters...
                loss = loss_fn(model(x), y)
            grads = t.gradient(loss, params)  # ...and replays them in reverse, once
            opt.step(grads)                   # grads[i] belongs to params[i]
            total_loss += loss.item() * len(y)
        print(f"epoch {epoch:2d}  loss {total_loss / len(train):.4f}  "
              f"test accuracy {accuracy(model, test_loader):.4f}")

    test_accuracy = accuracy(model, test_loader)
    print(f"test accuracy {test_accuracy:.4f} ({time.perf_counter() - start:.1f} s)")
    return test_accuracy


if __name__ == "__main__":
    main()
