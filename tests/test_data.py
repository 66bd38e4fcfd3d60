"""tape.data: datasets, batching, reproducible shuffling, digits and MNIST IDX files."""

import gzip
import hashlib
import io
import os
import sys
import urllib.error
import urllib.request
import warnings

import numpy as np
import pytest

import tape
import tape.data
from tape.data import (ConcatDataset, DataLoader, Dataset, RandomSampler, Sampler,
                       SequentialSampler, Subset, TensorDataset, default_collate, random_split)
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


# ----- Subset, random_split, ConcatDataset -----

def _ids(dataset):
    """The id column of every item of a dataset of TensorDataset(ids, ...) rows."""
    return [int(dataset[i][0].item()) for i in range(len(dataset))]


class Plain:
    """A dataset without get_batch (and not a Dataset subclass): item i is (i, -i)."""

    def __init__(self, n, start=0):
        self.n, self.start = n, start

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return np.int64(self.start + i), np.float32(-(self.start + i))


@pytest.mark.parametrize("indices, want", [
    ([4, 0, 9], [4, 0, 9]), (range(2, 5), [2, 3, 4]), (np.array([7, 7, 1]), [7, 7, 1]),
    ([-1, -10], [9, 0]), (tape.tensor([3, 5]), [3, 5]), ([], []),
])
def test_subset_items_len_and_batches(indices, want):
    base = TensorDataset(np.arange(10), np.arange(10) * 2.0)
    sub = Subset(base, indices)
    assert len(sub) == len(want) and _ids(sub) == want and sub.dataset is base
    assert sub.indices is indices  # kept as given, as torch's
    if want:
        assert sub[-1][0].item() == want[-1] and sub[-1][1].item() == 2.0 * want[-1]
        assert [t.item() for t in sub[[0]][0]] == want[:1]  # a list of positions, as torch
    fast = _epoch(DataLoader(sub, 2, shuffle=True, seed=0))  # get_batch through the subset
    slow = _epoch(DataLoader(sub, 2, shuffle=True, seed=0, collate_fn=default_collate))
    assert len(fast) == len(slow) == -(-len(want) // 2)
    for f, s in zip(fast, slow):
        for a, b in zip(f, s):
            np.testing.assert_array_equal(a, b)
    assert sorted(np.concatenate([b[0] for b in fast] or [[]]).tolist()) == sorted(want)


def test_subset_of_a_plain_dataset_has_no_get_batch():
    sub = Subset(Plain(6), [5, 1, 3])
    assert not hasattr(sub, "get_batch") and _ids(sub) == [5, 1, 3]
    assert [b[0].tolist() for b in DataLoader(sub, 2)] == [[5, 1], [3]]
    with pytest.raises(IndexError):
        sub[3]


@pytest.mark.parametrize("indices, error, match", [
    ([0, 10], IndexError, r"index 10 is out of range for a dataset of 10 items"),
    ([-11], IndexError, r"index -11 is out of range"),
    ([0.5, 1.0], TypeError, r"1-D sequence of integers.*float64"),
    ([[0, 1]], TypeError, r"shape \(1, 2\)"),
])
def test_subset_errors(indices, error, match):
    with pytest.raises(error, match=match):
        Subset(TensorDataset(np.arange(10)), indices)


@pytest.mark.parametrize("n, lengths", [
    (10, [3, 7]), (10, [10]), (10, [0, 10]), (10, [0.5, 0.5]), (10, [0.3, 0.3, 0.4]),
    (11, [0.3, 0.3, 0.4]), (10, [0.25, 0.75]), (7, [0.1] * 10), (5, [1]), (10, [0, 1]),
    (100, [0.8, 0.2]), (3, [1 / 3] * 3), (0, [0.5, 0.5]), (0, [0, 0]), (4, [2, 1, 1]),
])
def test_random_split_lengths_as_torch(n, lengths):
    """Counts and fractions (floor each, the rest one each from the first) as torch splits;
    the splits are disjoint, cover the dataset and hold its items."""
    torch_data = pytest.importorskip("torch.utils.data")
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # both warn about empty splits
        want = [len(s) for s in torch_data.random_split(
            range(n), lengths, generator=torch.Generator().manual_seed(0))]
        splits = random_split(TensorDataset(np.arange(n) * 3), lengths, generator=0)
    assert [len(s) for s in splits] == want
    assert all(isinstance(s, Subset) and isinstance(s.indices, list) for s in splits)
    every = [i for s in splits for i in s.indices]
    assert sorted(every) == list(range(n))  # disjoint and covering
    for s in splits:
        assert [3 * i for i in s.indices] == _ids(s)


@pytest.mark.parametrize("same, other", [
    (lambda: 5, lambda: 6),
    (lambda: np.random.default_rng(5), lambda: np.random.default_rng(6)),
    (lambda: np.random.SeedSequence(5), lambda: np.random.SeedSequence(6)),
])
def test_random_split_reproducible_by_seed_or_generator(same, other):
    ds = TensorDataset(np.arange(50))

    def split(generator):
        return [s.indices for s in random_split(ds, [0.6, 0.4], generator=generator)]

    assert split(same()) == split(same())
    assert split(same()) != split(other())
    assert split(same())[0] != sorted(split(same())[0])  # shuffled, not a slice


def test_random_split_generator_none_follows_manual_seed_and_numpy_generator_advances():
    ds = TensorDataset(np.arange(40))
    tape.manual_seed(3)
    first, second = (random_split(ds, [20, 20])[0].indices for _ in range(2))
    tape.manual_seed(3)
    assert random_split(ds, [20, 20])[0].indices == first and first != second
    rng = np.random.default_rng(1)
    assert random_split(ds, [20, 20], rng)[0].indices != random_split(ds, [20, 20], rng)[0].indices


@pytest.mark.parametrize("lengths, generator, error, match", [
    ([3, 6], None, ValueError, r"sum of input lengths \(9\) does not equal .* \(10\)"),
    ([0.5, 0.6], None, ValueError, r"fractions summing to 1 \(these sum to 1.1\)"),
    ([-0.5, 1.5], None, ValueError, "fraction at index 0 is not between 0 and 1"),
    ([-1, 11], None, ValueError, r"lengths\[0\] is -1"),
    ([2.5, 7.5], None, ValueError, r"lengths\[0\] is 2.5"),
    ([5, "5"], None, TypeError, r"lengths\[1\]"),
    (5, None, TypeError, "sequence of ints or fractions"),
    ([5, 5], "abc", TypeError, "generator must be None.*got 'abc'"),
    ([5, 5], True, TypeError, "generator must be None"),
    ([5, 5], -1, TypeError, "generator=np.random.default_rng"),
    ([5, 5], 1.5, TypeError, "generator must be None"),
])
def test_random_split_errors(lengths, generator, error, match):
    with pytest.raises(error, match=match):
        random_split(TensorDataset(np.arange(10)), lengths, generator=generator)


def test_random_split_warns_of_an_empty_split():
    with pytest.warns(UserWarning, match="split at index 2 is 0"):
        random_split(TensorDataset(np.arange(2)), [0.5, 0.5, 0.0], generator=0)


@pytest.mark.parametrize("sizes", [[3], [3, 4], [0, 2, 5], [2, 0], [1, 1, 1, 1]])
def test_concat_dataset_indexing_as_torch(sizes):
    torch_data = pytest.importorskip("torch.utils.data")
    starts = np.cumsum([0] + sizes[:-1]) * 100  # distinct ids per dataset
    parts = [TensorDataset(np.arange(n) + s) for n, s in zip(sizes, starts)]
    ours = ConcatDataset(parts)
    theirs = torch_data.ConcatDataset([list(range(s, s + n)) for n, s in zip(sizes, starts)])
    assert len(ours) == len(theirs) and ours.cumulative_sizes == theirs.cumulative_sizes
    n = len(ours)
    for i in range(-n, n):
        assert ours[i][0].item() == theirs[i], i
    assert ours[np.int64(n - 1)][0].item() == theirs[n - 1]
    with pytest.raises(IndexError, match=f"index {n} is out of range for {n} items"):
        ours[n]
    with pytest.raises(IndexError, match="out of range"):
        ours[-n - 1]
    with pytest.raises(TypeError):
        ours[1.0]


@pytest.mark.parametrize("sizes, batch", [([3, 4], 3), ([0, 2, 5], 4), ([5, 5, 5], 15),
                                          ([1, 6], 1)])
def test_concat_dataset_batches_across_datasets(sizes, batch):
    """Gathered per dataset and put back in order: the same batches as item by item."""
    rng = np.random.default_rng(0)
    parts = [TensorDataset(rng.standard_normal((n, 2)), np.arange(n) + 10 * k)
             for k, n in enumerate(sizes)]
    both = ConcatDataset(parts)
    assert hasattr(both, "get_batch")
    fast = _epoch(DataLoader(both, batch, shuffle=True, seed=2))
    slow = _epoch(DataLoader(both, batch, shuffle=True, seed=2, collate_fn=default_collate))
    assert len(fast) == len(slow) == -(-sum(sizes) // batch)
    for f, s in zip(fast, slow):
        for a, b in zip(f, s):
            np.testing.assert_array_equal(a, b)
    x, y = both.get_batch(np.array([-1, 0]))
    np.testing.assert_array_equal(y.numpy(), [both[-1][1].item(), both[0][1].item()])
    with pytest.raises(IndexError, match="out of range"):
        both.get_batch(np.array([0, sum(sizes)]))


def test_concat_dataset_of_dict_batches_and_plain_datasets():
    class Dicts(Dataset):
        def __init__(self, ids):
            self.ids = np.asarray(ids)

        def __len__(self):
            return len(self.ids)

        def __getitem__(self, i):
            return {"id": self.ids[i]}

        def get_batch(self, indices):
            return {"id": tape.tensor(self.ids[indices])}

    both = ConcatDataset([Dicts([0, 1, 2]), Dicts([10, 11])])
    assert both.get_batch(np.array([3, 0, 4, 2]))["id"].tolist() == [10, 0, 11, 2]
    mixed = ConcatDataset(iter([Plain(2), TensorDataset(np.arange(3), -np.arange(3.0))]))
    assert not hasattr(mixed, "get_batch") and len(mixed) == 5
    assert [b[0].tolist() for b in DataLoader(mixed, 5)] == [[0, 1, 0, 1, 2]]
    with pytest.raises(ValueError, match="should not be an empty iterable"):
        ConcatDataset([])
    with pytest.raises(TypeError, match=r"datasets\[1\] is a int"):
        ConcatDataset([Plain(2), 3])


def test_split_and_concat_batches_on_a_device(device):
    x = np.random.default_rng(0).standard_normal((12, 3)).astype(np.float32)
    there = TensorDataset(tape.tensor(x, device=device), tape.tensor(np.arange(12), device=device))
    a, b = random_split(there, [0.5, 0.5], generator=0)
    for ds in [a, ConcatDataset([a, b]), Subset(ConcatDataset([b, a]), [0, 11, 6])]:
        for xb, yb in DataLoader(ds, 5, shuffle=True, seed=0):
            assert xb.device == device and yb.device == device
            np.testing.assert_array_equal(xb.numpy(), x[yb.numpy()])


# ----- samplers -----

@pytest.mark.parametrize("n, replacement, num_samples", [
    (10, False, None), (10, False, 4), (10, False, 25), (10, False, 30), (1, False, 3),
    (10, True, None), (10, True, 4), (3, True, 50), (0, False, None),
])
def test_random_sampler_as_torch(n, replacement, num_samples):
    """Lengths as torch's; without replacement, whole permutations chained (the same
    counts of each index as torch's), with it, draws in range."""
    torch_data = pytest.importorskip("torch.utils.data")
    ours = RandomSampler(range(n), replacement, num_samples, generator=0)
    got = list(ours)
    assert len(ours) == len(got) == (n if num_samples is None else num_samples)
    assert all(isinstance(i, int) and 0 <= i < n for i in got)
    if n == 0:  # torch refuses an empty dataset outright; tape gives no indices
        return
    theirs = list(torch_data.RandomSampler(range(n), replacement, num_samples))
    if not replacement:
        assert sorted(np.bincount(got, minlength=n)) == sorted(np.bincount(theirs, minlength=n))
        assert got[:n] != list(range(n))[:len(got[:n])] or n == 1
    elif len(got) >= 20:
        assert len(set(got)) > 1


def test_samplers_reproducible_and_new_order_each_epoch():
    a, b = RandomSampler(range(30), generator=4), RandomSampler(range(30), generator=4)
    epochs = [list(a) for _ in range(3)]
    assert epochs == [list(b) for _ in range(3)]
    assert epochs[0] != epochs[1] != epochs[2] and sorted(epochs[0]) == list(range(30))
    assert list(RandomSampler(range(30), generator=5)) != epochs[0]
    rng = np.random.default_rng(4)
    shared = RandomSampler(range(30), generator=rng)
    assert shared.generator is rng and list(shared) == list(np.random.default_rng(4)
                                                            .permutation(30))
    tape.manual_seed(9)
    first = list(RandomSampler(range(30)))
    tape.manual_seed(9)
    assert list(RandomSampler(range(30))) == first
    seq = SequentialSampler(range(4))
    assert list(seq) == [0, 1, 2, 3] and len(seq) == 4 and isinstance(seq, Sampler)


@pytest.mark.parametrize("kwargs, error, torch_too", [
    (dict(replacement="yes"), TypeError, True), (dict(replacement=1), TypeError, True),
    (dict(num_samples=0), ValueError, True), (dict(num_samples=-1), ValueError, True),
    (dict(num_samples=1.5), ValueError, True),
    (dict(num_samples=True), ValueError, False),  # torch takes True as 1
])
def test_random_sampler_errors_as_torch(kwargs, error, torch_too):
    torch_data = pytest.importorskip("torch.utils.data")
    if torch_too:
        with pytest.raises(error):
            torch_data.RandomSampler(range(5), **kwargs)
    with pytest.raises(error, match="RandomSampler: (replacement|num_samples)"):
        RandomSampler(range(5), **kwargs)


def test_sampler_errors():
    with pytest.raises(TypeError, match="generator must be None"):
        RandomSampler(range(3), generator="seed")
    with pytest.raises(TypeError, match="data_source with __len__"):
        SequentialSampler(iter([1, 2]))
    with pytest.raises(ValueError, match="cannot draw 2 samples from an empty"):
        list(RandomSampler(range(0), num_samples=2))


class Picked:
    """A user's sampler (no base class): the given indices, in order, and its set_epoch."""

    def __init__(self, indices):
        self.indices, self.epochs = list(indices), []

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)

    def set_epoch(self, epoch):
        self.epochs.append(epoch)


@pytest.mark.parametrize("order, size, drop_last", [
    ([9, 8, 7, 6, 5, 4, 3, 2, 1, 0], 3, False), ([9, 8, 7, 6, 5, 4, 3, 2, 1, 0], 3, True),
    ([0, 2, 4, 6, 8], 2, False), ([0, 2, 4, 6, 8], 2, True), ([1, 1, 1], 5, False),
    ([1, 1, 1], 5, True), ([], 4, False), ([3, -1], 1, False), ([5] * 7, 7, True),
])
def test_loader_with_a_sampler(order, size, drop_last):
    """Batches follow the sampler's order; len(loader) is torch's, from len(sampler)."""
    torch_data = pytest.importorskip("torch.utils.data")
    ds = TensorDataset(np.arange(10), np.arange(10) * 2.0)
    loader = DataLoader(ds, batch_size=size, drop_last=drop_last, sampler=Picked(order))
    want_len = len(torch_data.DataLoader(range(10), batch_size=size, drop_last=drop_last,
                                         sampler=Picked(order)))
    want = [[i % 10 for i in order[k:k + size]] for k in range(0, len(order), size)]
    want = [b for b in want if len(b) == size or not drop_last]
    for collate_fn in [None, default_collate]:  # gathered at once, and item by item
        loader.collate_fn = collate_fn
        batches = [b[0].tolist() for b in loader]
        assert batches == want and len(loader) == want_len == len(want)
    assert [b[0].tolist() for b in loader] == want  # the sampler is read again each epoch


def test_loader_with_random_sampler_and_set_epoch():
    ds = TensorDataset(np.arange(20))
    loader = DataLoader(ds, 6, sampler=RandomSampler(ds, generator=1))
    again = DataLoader(ds, 6, sampler=RandomSampler(ds, generator=1))
    epochs = [[b[0].tolist() for b in loader] for _ in range(2)]
    assert epochs == [[b[0].tolist() for b in again] for _ in range(2)]
    assert epochs[0] != epochs[1] and len(loader) == 4
    assert sorted(sum(epochs[0], [])) == list(range(20))
    picked = Picked(range(20))
    DataLoader(ds, 6, sampler=picked).set_epoch(3)
    assert picked.epochs == [3]
    assert DataLoader(ds).sampler is None
    assert "sampler=Picked" in repr(DataLoader(ds, sampler=picked))


def test_loader_sampler_errors():
    ds = TensorDataset(np.arange(5))
    with pytest.raises(ValueError, match="sampler option is mutually exclusive with shuffle"):
        DataLoader(ds, shuffle=True, sampler=SequentialSampler(ds))
    with pytest.raises(ValueError, match="seed=0 seeds the loader's own shuffle"):
        DataLoader(ds, seed=0, sampler=SequentialSampler(ds))
    with pytest.raises(TypeError, match="sampler must be an iterable of indices"):
        DataLoader(ds, sampler=5)
    with pytest.raises(TypeError, match=r"one integer index at a time, got \[0, 1\]"):
        list(DataLoader(ds, sampler=Picked([[0, 1], [2, 3]])))
    with pytest.raises(TypeError, match="one integer index at a time, got 0.5"):
        list(DataLoader(ds, sampler=Picked([0.5])))


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
