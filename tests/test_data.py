"""tape.data: datasets, batching, reproducible shuffling, digits and MNIST IDX files."""

import gzip
import hashlib
import io
import os
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest

import tape
import tape.data
from tape.data import DataLoader, Dataset, TensorDataset, default_collate
from tape.data.datasets import MNIST, FashionMNIST, load_digits


def _epoch(loader):
    return [tuple(t.numpy() for t in batch) for batch in loader]


# ----- TensorDataset -----

def test_tensor_dataset_items_and_errors():
    x, y = tape.randn(10, 3), np.arange(10)
    ds = TensorDataset(x, y)
    assert len(ds) == 10 and isinstance(ds, Dataset)
    xi, yi = ds[4]
    assert isinstance(xi, tape.Tensor) and xi.shape == (3,) and yi.shape == () and yi.item() == 4
    np.testing.assert_array_equal(xi.numpy(), x.numpy()[4])
    assert TensorDataset([[1.0], [2.0]])[1][0].dtype == np.float32  # lists: tape's default
    with pytest.raises(IndexError):
        ds[10]
    with pytest.raises(ValueError, match=r"first dimensions differ \(\(10, 3\), \(9,\)\)"):
        TensorDataset(x, np.arange(9))
    with pytest.raises(ValueError, match="at least one"):
        TensorDataset()
    with pytest.raises(ValueError, match="0-d"):
        TensorDataset(np.float32(1.0))


# ----- DataLoader -----

@pytest.mark.parametrize("n, size, drop_last, lengths", [
    (10, 3, False, [3, 3, 3, 1]), (10, 3, True, [3, 3, 3]), (9, 3, True, [3, 3, 3]),
    (2, 5, False, [2]), (2, 5, True, []), (0, 4, False, []),
])
def test_batch_sizes_and_len(n, size, drop_last, lengths):
    loader = DataLoader(TensorDataset(np.arange(n * 2).reshape(n, 2), np.arange(n)),
                        batch_size=size, drop_last=drop_last)
    batches = list(loader)
    assert len(loader) == len(lengths) and [len(b[1]) for b in batches] == lengths
    if batches:
        xb, yb = batches[0]
        assert isinstance(xb, tape.Tensor) and xb.shape == (lengths[0], 2) and yb.dtype == np.int64
    assert sorted(np.concatenate([b[1].numpy() for b in batches] or [[]]).tolist()) \
        == list(range(sum(lengths)))


def test_in_order_without_shuffle():
    loader = DataLoader(TensorDataset(np.arange(7)), batch_size=3)
    assert [b[0].tolist() for b in loader] == [[0, 1, 2], [3, 4, 5], [6]]


def test_seeded_shuffle_new_order_each_epoch_and_reproducible():
    ds = TensorDataset(np.arange(50), np.arange(50) * 2.0)
    a = DataLoader(ds, batch_size=8, shuffle=True, seed=3)
    b = DataLoader(ds, batch_size=8, shuffle=True, seed=3)
    epochs_a, epochs_b = [_epoch(a) for _ in range(3)], [_epoch(b) for _ in range(3)]
    for ea, eb in zip(epochs_a, epochs_b):
        for (xa, ya), (xb, yb) in zip(ea, eb):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, xa * 2.0)  # rows stay together
    orders = [np.concatenate([x for x, _ in e]) for e in epochs_a]
    assert all(sorted(o.tolist()) == list(range(50)) for o in orders)
    assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])
    other = np.concatenate([x for x, _ in _epoch(DataLoader(ds, 8, shuffle=True, seed=4))])
    assert not np.array_equal(other, orders[0])
    b.set_epoch(1)  # resuming a run: the order of epoch 1 again
    np.testing.assert_array_equal(np.concatenate([x for x, _ in _epoch(b)]), orders[1])


def test_unseeded_shuffle_follows_manual_seed():
    ds = TensorDataset(np.arange(40))
    tape.manual_seed(7)
    first = [_epoch(DataLoader(ds, 5, shuffle=True)) for _ in range(2)]
    tape.manual_seed(7)
    again = [_epoch(DataLoader(ds, 5, shuffle=True)) for _ in range(2)]
    flat = [np.concatenate([b[0] for b in e]) for e in first + again]
    np.testing.assert_array_equal(flat[0], flat[2])
    np.testing.assert_array_equal(flat[1], flat[3])
    assert not np.array_equal(flat[0], flat[1]) and not np.array_equal(flat[0], np.arange(40))


class Squares(Dataset):
    """A plain map-style dataset with mixed items: (array, Tensor, int, float, bool)."""

    def __len__(self):
        return 6

    def __getitem__(self, i):
        return np.full(2, i, np.float64), tape.tensor([i, i * i]), i, i / 2, i % 2 == 0


def test_generic_dataset_and_collate():
    loader = DataLoader(Squares(), batch_size=4)
    arr, ten, ints, floats, flags = next(iter(loader))
    assert arr.shape == (4, 2) and arr.dtype == np.float64
    assert ten.tolist() == [[0, 0], [1, 1], [2, 4], [3, 9]]
    assert ints.dtype == np.int64 and floats.dtype == np.float32 and flags.dtype == np.bool_
    assert flags.tolist() == [True, False, True, False] and floats.tolist() == [0, 0.5, 1, 1.5]
    assert [len(b[0]) for b in loader] == [4, 2]


def test_single_array_items_and_dicts():
    class Plain:  # not even a Dataset subclass
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return np.arange(3) + i

    batches = list(DataLoader(Plain(), batch_size=2))
    assert isinstance(batches[0], tape.Tensor) and batches[0].shape == (2, 3)
    out = default_collate([{"x": np.ones(2), "y": 1}, {"x": np.zeros(2), "y": 2}])
    assert out["x"].shape == (2, 2) and out["y"].tolist() == [1, 2]
    with pytest.raises(TypeError, match="cannot batch items of type str"):
        default_collate(["a", "b"])
    custom = DataLoader(Plain(), batch_size=2, collate_fn=lambda items: len(items))
    assert list(custom) == [2, 2, 1]


def test_tensor_dataset_batches_equal_per_item_stacking():
    ds = TensorDataset(np.random.default_rng(0).standard_normal((20, 3, 2)), np.arange(20))
    fast = _epoch(DataLoader(ds, 6, shuffle=True, seed=1))
    slow = _epoch(DataLoader(ds, 6, shuffle=True, seed=1, collate_fn=default_collate))
    for f, s in zip(fast, slow):
        for a, b in zip(f, s):
            np.testing.assert_array_equal(a, b)


def test_batches_on_a_device(device):
    """Batches move with .to(device); a dataset already on the device batches there, in
    the same order as on the CPU."""
    x, y = np.random.default_rng(0).standard_normal((20, 3)).astype(np.float32), np.arange(20)
    on_cpu = _epoch(DataLoader(TensorDataset(x, y), 6, shuffle=True, seed=1))
    for xb, yb in DataLoader(TensorDataset(x, y), 6):
        assert xb.to(device).device == device and yb.to(device).device == device
    there = TensorDataset(tape.tensor(x, device=device), tape.tensor(y, device=device))
    batches = list(DataLoader(there, 6, shuffle=True, seed=1))
    assert all(t.device == device for batch in batches for t in batch)
    for got, want in zip([tuple(t.numpy() for t in b) for b in batches], on_cpu):
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
    items = DataLoader(there, 4, collate_fn=default_collate)  # item by item, stacked there
    assert all(t.device == device for batch in items for t in batch)


def test_loader_argument_errors():
    ds = TensorDataset(np.arange(3))
    for bad in [0, -1, 1.5, True]:
        with pytest.raises(ValueError, match="batch_size"):
            DataLoader(ds, batch_size=bad)
    with pytest.raises(ValueError, match="seed"):
        DataLoader(ds, seed=-1)
    with pytest.raises(TypeError, match="__len__ and __getitem__"):
        DataLoader(42)


# ----- scikit-learn digits -----

def test_load_digits():
    train, test = load_digits()
    assert len(train) + len(test) == 1797 and len(test) == round(0.2 * 1797)
    x, y = train.tensors
    assert x.shape == (len(train), 1, 8, 8) and x.dtype == np.float32 and y.dtype == np.int64
    assert x.numpy().min() == 0.0 and x.numpy().max() == 1.0
    counts = np.bincount(test.tensors[1].numpy(), minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: ~20% of each class
    again, _ = load_digits()
    np.testing.assert_array_equal(again.tensors[0].numpy(), x.numpy())
    other, _ = load_digits(seed=1)
    assert not np.array_equal(other.tensors[1].numpy(), y.numpy())
    flat_train, flat_test = load_digits(test_fraction=0.5, flatten=True)
    assert flat_train.tensors[0].shape[1:] == (64,) and len(flat_test) == round(0.5 * 1797)
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits(test_fraction=1.0)


def test_load_digits_without_sklearn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        load_digits()


# ----- MNIST IDX files -----

def _idx(array, magic=None):
    head = (magic if magic is not None else 0x800 | array.ndim).to_bytes(4, "big")
    return head + b"".join(d.to_bytes(4, "big") for d in array.shape) + array.tobytes()


def _write_split(folder, prefix, n, gz, seed=0, magic=None, cut=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    os.makedirs(folder, exist_ok=True)
    for name, array in [(f"{prefix}-images-idx3-ubyte", images),
                        (f"{prefix}-labels-idx1-ubyte", labels)]:
        raw = _idx(array, magic if "images" in name else None)
        raw = raw[:len(raw) - cut] if "images" in name else raw
        path = os.path.join(folder, name + (".gz" if gz else ""))
        with (gzip.open if gz else open)(path, "wb") as f:
            f.write(raw)
    return images, labels


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("cls", [MNIST, FashionMNIST])
def test_mnist_reads_idx_files(tmp_path, cls, gz):
    images, labels = _write_split(tmp_path / cls.__name__ / "raw", "train", 7, gz)
    test_images, _ = _write_split(tmp_path / cls.__name__ / "raw", "t10k", 3, gz, seed=1)
    ds = cls(tmp_path)
    assert len(ds) == 7 and len(cls(tmp_path, train=False)) == 3
    assert ds.data.dtype == np.uint8 and ds.data.shape == (7, 28, 28)
    np.testing.assert_array_equal(ds.data, images)
    assert ds.targets.dtype == np.int64 and ds.targets.tolist() == labels.tolist()
    x, y = ds[2]
    assert x.shape == (1, 28, 28) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_allclose(x.numpy()[0], images[2] / 255.0, rtol=1e-6)
    assert float(x.numpy().max()) <= 1.0 and y.item() == labels[2]
    np.testing.assert_array_equal(cls(tmp_path, train=False).data, test_images)
    xb, yb = next(iter(DataLoader(ds, batch_size=4, shuffle=True, seed=0)))
    assert xb.shape == (4, 1, 28, 28) and yb.shape == (4,)
    slow = next(iter(DataLoader(ds, 4, shuffle=True, seed=0, collate_fn=default_collate)))
    np.testing.assert_array_equal(xb.numpy(), slow[0].numpy())


@pytest.mark.parametrize("sub", ["", "raw", "MNIST"])
def test_mnist_finds_other_folders(tmp_path, sub):
    _write_split(tmp_path / sub, "t10k", 2, gz=False)
    assert len(MNIST(tmp_path, train=False)) == 2


def test_mnist_corrupt_files(tmp_path):
    folder = tmp_path / "MNIST" / "raw"
    _write_split(folder, "train", 3, gz=False, magic=0x00000801)
    with pytest.raises(ValueError, match="magic number is 0x00000801, expected 0x00000803"):
        MNIST(tmp_path)
    _write_split(folder, "train", 3, gz=False, cut=5)
    with pytest.raises(ValueError, match="wrong size.*truncated"):
        MNIST(tmp_path)
    _write_split(folder, "train", 3, gz=True, cut=5)  # the gzipped files alone
    for name in os.listdir(folder):
        if not name.endswith(".gz"):
            os.remove(folder / name)
    with pytest.raises(ValueError, match="wrong size"):
        MNIST(tmp_path)
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])  # a cut-off download
    with pytest.raises(ValueError, match="not a complete gzip file"):
        MNIST(tmp_path)
    path.write_bytes(b"\x1f\x8b" + b"\x00" * 30)
    with pytest.raises(ValueError, match="not a complete gzip file"):
        MNIST(tmp_path)
    _write_split(tmp_path / "other", "train", 4, gz=False)
    (tmp_path / "other" / "train-labels-idx1-ubyte").write_bytes(_idx(np.zeros(3, np.uint8)))
    with pytest.raises(ValueError, match="4 images but .* 3 labels"):
        MNIST(tmp_path / "other")


def test_mnist_missing_files_message(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"t10k-images-idx3-ubyte.*MNIST.raw.*download"):
        MNIST(tmp_path, train=False)


def test_download_without_network_says_what_to_put_where(tmp_path, monkeypatch):
    calls = []

    def offline(url, timeout=None):
        calls.append(url)
        raise urllib.error.URLError("no network (simulated)")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(RuntimeError) as info:
        FashionMNIST(tmp_path, download=True)
    message = str(info.value)
    assert "no network (simulated)" in message
    assert str(tmp_path / "FashionMNIST" / "raw") in message
    assert "train-images-idx3-ubyte.gz" in message and "8d4fb7e6c68d591d4c3dfef9ec88bf0d" in message
    assert len(calls) == len(FashionMNIST.mirrors)  # every mirror tried, then a clear stop


def test_download_checks_md5_and_falls_back_to_the_next_mirror(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    files = {"t10k-images-idx3-ubyte.gz": _idx(rng.integers(0, 256, (2, 28, 28), np.uint8)),
             "t10k-labels-idx1-ubyte.gz": _idx(np.array([3, 1], np.uint8))}
    files = {k: gzip.compress(v) for k, v in files.items()}
    md5 = {k: hashlib.md5(v).hexdigest() for k, v in files.items()}
    monkeypatch.setattr(MNIST, "md5", md5)
    monkeypatch.setattr(MNIST, "mirrors", ("http://bad/", "http://good/"))

    def fake(url, timeout=None):
        name = url.rsplit("/", 1)[1]
        return io.BytesIO(files[name] if url.startswith("http://good/") else b"junk")

    monkeypatch.setattr(urllib.request, "urlopen", fake)
    ds = MNIST(tmp_path, train=False, download=True)
    assert ds.targets.tolist() == [3, 1]
    assert sorted(os.listdir(tmp_path / "MNIST" / "raw")) == sorted(files)
