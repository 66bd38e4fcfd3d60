"""The benchmarked workloads, written once for tape and PyTorch alike (``m`` is
``tape.nn`` or ``torch.nn``). Imports neither library, so ``alone.py`` can time each
in a process of its own."""

CONV_SHAPES = [(64, 1, 8, 28), (64, 16, 32, 14), (32, 64, 128, 8)]  # N, Cin, Cout, H=W


def mlp(m):
    """MLP 784-256-256-10."""
    return m.Sequential(m.Linear(784, 256), m.ReLU(), m.Linear(256, 256), m.ReLU(),
                        m.Linear(256, 10))


def lenet(m):
    """LeNet-style CNN: conv 1->8, pool, conv 8->16, pool, linear 784->128->10."""
    return m.Sequential(
        m.Conv2d(1, 8, 3, padding=1), m.ReLU(), m.MaxPool2d(2),
        m.Conv2d(8, 16, 3, padding=1), m.ReLU(), m.MaxPool2d(2),
        m.Flatten(), m.Linear(784, 128), m.ReLU(), m.Linear(128, 10),
    )
