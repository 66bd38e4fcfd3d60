"""Ready-made datasets: scikit-learn's bundled 8x8 digits, and MNIST / Fashion-MNIST.

MNIST and Fashion-MNIST are read from the standard IDX files, which are small enough
to hold in memory as uint8 (47 MB for the training images); pixels are scaled to
float32 in [0, 1] as batches are drawn.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import math
import os
import struct
import urllib.request
import zlib
from typing import ClassVar

import numpy as np

from ..atomic import write_atomic
from ..tensor import wrap
from .dataset import Dataset, TensorDataset

# ----- scikit-learn's digits -----


def _stratified_test(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of a test split holding ``fraction`` of each class (rounded to the total)."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    want = fraction * counts
    take = np.floor(want).astype(np.int64)
    extra = round(fraction * len(labels)) - int(take.sum())
    take[np.argsort(take - want, kind="stable")[:extra]] += 1  # largest remainders first
    picks = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)]
    return np.sort(np.concatenate(picks)) if picks else np.zeros(0, np.int64)


def load_digits(test_fraction=0.2, seed=0, flatten=False):
    """scikit-learn's 1,797 handwritten 8x8 digits as ``(train, test)`` TensorDatasets.

    Images are float32 in [0, 1], shaped (N, 1, 8, 8), or (N, 64) with ``flatten=True``;
    labels are int64. The split is stratified by class and fixed by ``seed``. Nothing is
    downloaded: the data ships with scikit-learn.

    >>> train, test = tape.data.datasets.load_digits()
    >>> x, y = train[0]
    """
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        raise ImportError(
            "tape.data.datasets.load_digits reads the digits bundled with scikit-learn, "
            "which is not installed: pip install scikit-learn"
        ) from None
    if not 0 <= test_fraction < 1:
        raise ValueError(f"load_digits: test_fraction must be in [0, 1), got {test_fraction}")
    bunch = sklearn_digits()
    images = (bunch.images / 16.0).astype(np.float32)  # pixel values are 0..16
    images = images.reshape(len(images), 64) if flatten else images[:, None]
    labels = bunch.target.astype(np.int64)
    test = np.zeros(len(labels), dtype=bool)
    test[_stratified_test(labels, test_fraction, seed)] = True
    return (TensorDataset(images[~test], labels[~test]),
            TensorDataset(images[test], labels[test]))


# ----- IDX files -----


def _read_idx(path: str, ndim: int) -> np.ndarray:
    """The uint8 array in an IDX file (gzipped when its name ends in .gz), checked."""
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            with open(path, "rb") as f:
                raw = f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise ValueError(f"{path} is not a complete gzip file ({e}): it is truncated or "
                         "corrupt; delete it and download it again") from None
    magic, head = 0x800 | ndim, 4 + 4 * ndim  # 0x08: unsigned bytes, then the number of dims
    kind = "image" if ndim == 3 else "label"
    if len(raw) < head:
        raise ValueError(f"{path} is truncated: {len(raw)} bytes, fewer than an IDX header")
    got = int.from_bytes(raw[:4], "big")
    if got != magic:
        raise ValueError(f"{path} is not an IDX {kind} file: its magic number is 0x{got:08X}, "
                         f"expected 0x{magic:08X}; is it the right file, and unpacked?")
    dims = struct.unpack(f">{ndim}I", raw[4:head])
    size = math.prod(dims)
    if len(raw) - head != size:
        raise ValueError(f"{path} has the wrong size: its header announces {kind}s of shape "
                         f"{dims} ({size} bytes) but it holds {len(raw) - head} bytes; it is "
                         "truncated or corrupt, so delete it and download it again")
    return np.frombuffer(raw, np.uint8, size, head).reshape(dims).copy()


def _scaled(pixels: np.ndarray) -> np.ndarray:
    return pixels.astype(np.float32) / np.float32(255)


class MNIST(Dataset):
    """The MNIST handwritten digits, read from the standard IDX files under ``root``.

    The files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, and ``t10k-``
    for the test split, gzipped or not) are looked for in ``root/MNIST/raw``,
    ``root/MNIST``, ``root/raw`` and ``root``. ``download=True`` fetches missing files
    into ``root/MNIST/raw`` and checks their MD5. Items are ``(image, label)``: a float32
    (1, 28, 28) tensor in [0, 1] and an int64 label; ``.data`` holds the uint8 images
    (N, 28, 28) and ``.targets`` the int64 labels.

    >>> train = tape.data.datasets.MNIST("data", train=True, download=True)
    >>> loader = tape.data.DataLoader(train, batch_size=128, shuffle=True)
    """

    mirrors = (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    )
    md5: ClassVar[dict[str, str]] = {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    }
    classes = ("0 - zero", "1 - one", "2 - two", "3 - three", "4 - four", "5 - five",
               "6 - six", "7 - seven", "8 - eight", "9 - nine")

    def __init__(self, root, train=True, download=False):
        self.root, self.train = os.fspath(root), bool(train)
        prefix = "train" if self.train else "t10k"
        names = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
        found = self._find(names)
        if found is None and download:
            self._download(names)
            found = self._find(names)
        if found is None:
            raise FileNotFoundError(
                f"{self._name} files not found: put {names[0]} and {names[1]} (or their .gz) "
                f"in {os.path.abspath(self.raw_folder)}, or pass download=True to fetch them"
            )
        images, labels = _read_idx(found[0], 3), _read_idx(found[1], 1)
        if len(images) != len(labels):
            raise ValueError(f"{found[0]} holds {len(images)} images but {found[1]} holds "
                             f"{len(labels)} labels: the files do not belong together")
        if labels.size and labels.max() >= len(self.classes):
            raise ValueError(f"{found[1]} holds label {labels.max()}; {self._name} labels are "
                             f"0 to {len(self.classes) - 1}")
        self.data, self.targets = images, labels.astype(np.int64)

    _name = property(lambda self: type(self).__name__)
    raw_folder = property(lambda self: os.path.join(self.root, self._name, "raw"))

    def _find(self, names):
        """The paths of ``names`` in the first folder that holds them all, or None."""
        folders = [self.raw_folder, os.path.join(self.root, self._name),
                   os.path.join(self.root, "raw"), self.root]
        for folder in folders:
            paths = []
            for name in names:  # also the .idx spelling some copies use
                spellings = [name, name + ".gz", name.replace("-idx", ".idx")]
                paths += [p for p in (os.path.join(folder, s) for s in spellings)
                          if os.path.isfile(p)][:1]
            if len(paths) == len(names):
                return paths
        return None

    def _download(self, names) -> None:
        """Fetch ``names`` (gzipped) into ``raw_folder``, trying each mirror in turn."""
        os.makedirs(self.raw_folder, exist_ok=True)
        for name in names:
            filename, errors = name + ".gz", []
            if any(os.path.isfile(os.path.join(self.raw_folder, n)) for n in (name, filename)):
                continue
            for mirror in self.mirrors:
                try:
                    with urllib.request.urlopen(mirror + filename, timeout=60) as response:
                        body = response.read()
                    digest = hashlib.md5(body, usedforsecurity=False).hexdigest()
                    if digest != self.md5[filename]:
                        raise ValueError(f"MD5 {digest}, expected {self.md5[filename]}")
                except (OSError, ValueError, http.client.HTTPException) as e:
                    errors.append(f"{mirror + filename}: {e}")
                    continue
                write_atomic(os.path.join(self.raw_folder, filename), [body])
                break
            else:
                raise RuntimeError(self._no_download(names, errors))

    def _no_download(self, names, errors) -> str:
        wanted = "\n".join(f"  {n}.gz  (MD5 {self.md5[n + '.gz']}; e.g. from "
                           f"{self.mirrors[0]}{n}.gz)" for n in names)
        return (f"could not download {self._name}:\n  " + "\n  ".join(errors)
                + f"\nWithout network access, fetch these files on another machine and put "
                f"them in {os.path.abspath(self.raw_folder)}:\n{wanted}\n"
                "(gzipped or unpacked), then create the dataset again.")

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index):
        return wrap(_scaled(self.data[index][None])), wrap(self.targets[index])

    def get_batch(self, indices):
        """Images (B, 1, 28, 28) and labels (B,) at ``indices``, gathered at once."""
        return wrap(_scaled(self.data[indices][:, None])), wrap(self.targets[indices])

    def __repr__(self):
        split = "train" if self.train else "test"
        return f"{self._name}({split}, {len(self)} images, root={self.root!r})"


class FashionMNIST(MNIST):
    """Zalando's Fashion-MNIST: ten kinds of clothing, in MNIST's format and sizes.

    Everything works as in ``MNIST``; the files live in ``root/FashionMNIST/raw``.
    """

    mirrors = (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    )
    md5: ClassVar[dict[str, str]] = {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    }
    classes = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot")
