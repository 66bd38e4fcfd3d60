"""A small CNN on the handwritten digits, then saved to a file and loaded back.

What it teaches: image layers (``Conv2d``, ``MaxPool2d``, ``Flatten``) on NCHW batches,
the same training loop as examples/mlp.py, ``model.train()`` / ``model.eval()`` (here
for ``Dropout``), and ``tape.nn.save_model`` / ``tape.nn.load_model``, which store the
architecture with the weights so the model loads without rebuilding it in code.

Run: python examples/cnn.py          (a few seconds on a laptop CPU, nothing downloaded;
the model is written to runs/cnn-example.safetensors)
"""

import os
import time

import numpy as np

import tape
import tape.nn as nn
from tape.data import DataLoader
from tape.data.datasets import load_digits


def build_model():
    """Two conv blocks for 8x8 images: (N, 1, 8, 8) -> (N, 16, 4, 4) -> (N, 32, 2, 2)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, kernel_size=3, padding=1), nn.ReLU(),  # padding=1 keeps 8x8
        nn.MaxPool2d(2),                                         # 8x8 -> 4x4
        nn.Conv2d(16, 32, kernel_size=3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2),                                         # 4x4 -> 2x2
        nn.Flatten(),                                            # (N, 32 * 2 * 2)
        nn.Dropout(0.2),                                         # only while training
        nn.Linear(32 * 2 * 2, 10),
    )


def predict(model, loader):
    """Predicted classes and true labels for a whole dataset, in eval mode."""
    model.eval()  # Dropout becomes the identity
    preds, labels = [], []
    with tape.no_grad():  # nothing to differentiate: record nothing
        for x, y in loader:
            preds.append(model(x).argmax(axis=1).numpy())
            labels.append(y.numpy())
    model.train()
    return np.concatenate(preds), np.concatenate(labels)


def main(epochs=8, batch_size=32, lr=3e-3, seed=0, out_dir="runs"):
    tape.manual_seed(seed)  # initial weights and dropout masks

    train, test = load_digits()  # images (N, 1, 8, 8) in [0, 1], labels int64
    train_loader = DataLoader(train, batch_size=batch_size, shuffle=True, seed=seed)
    test_loader = DataLoader(test, batch_size=256)

    model = build_model()
    loss_fn = nn.CrossEntropyLoss()
    params = list(model.parameters())
    opt = tape.optim.Adam(params, lr=lr)
    print(model)
    print(f"{sum(p.size for p in params):,} parameters")

    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        total_loss = 0.0
        for x, y in train_loader:
            with tape.Tape() as t:
                loss = loss_fn(model(x), y)
            opt.step(t.gradient(loss, params))
            total_loss += loss.item() * len(y)
        pred, labels = predict(model, test_loader)
        print(f"epoch {epoch:2d}  loss {total_loss / len(train):.4f}  "
              f"test accuracy {(pred == labels).mean():.4f}")
    test_accuracy = float((pred == labels).mean())
    print(f"test accuracy {test_accuracy:.4f} ({time.perf_counter() - start:.1f} s)")

    # Save the model: one safetensors file with the weights and, in its metadata, the
    # architecture (built-in layers only). Loading executes no code from the file and
    # checks a checksum. A custom Module would use tape.save(model.state_dict(), path)
    # and model.load_state_dict(tape.load(path)) instead; see examples/custom_layer.py.
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "cnn-example.safetensors")
    nn.save_model(model, path)
    loaded = nn.load_model(path)  # a new Sequential: no build_model() needed
    print(f"saved to {path} ({os.path.getsize(path):,} bytes) and loaded back")
    loaded_pred, _ = predict(loaded, test_loader)
    same = bool((loaded_pred == pred).all())
    print(f"the loaded model makes the same {len(pred)} predictions: {same}")
    return {"test_accuracy": test_accuracy, "loaded_same_predictions": same}


if __name__ == "__main__":
    main()
