"""End to end: the main job trains on the bundled digits and reaches its accuracy."""

import importlib.util
import json
import pathlib
import time

import numpy as np
import pytest

import tape

pytest.importorskip("sklearn", reason="the digits data ships with scikit-learn")
pytest.importorskip("tqdm")
pytest.importorskip("matplotlib")

_PATH = pathlib.Path(__file__).resolve().parents[1] / "examples" / "train.py"
_spec = importlib.util.spec_from_file_location("train_example", _PATH)
train = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train)


@pytest.mark.parametrize("model, at_least", [("mlp", 0.95), ("cnn", 0.97)])
def test_training_on_digits_reaches_its_accuracy_within_a_minute(tmp_path, model, at_least,
                                                                 device):
    if device != "cpu":  # cupy compiles each kernel on first use: not part of the minute
        train.main(["--model", model, "--out", str(tmp_path / "warm-up"), "--no-progress",
                    "--device", device, "--epochs", "1"])
    start = time.perf_counter()
    accuracy = train.main(["--model", model, "--out", str(tmp_path), "--no-progress",
                           "--device", device])
    assert time.perf_counter() - start < 60
    assert accuracy >= at_least
    saved = tmp_path / f"{model}-digits.safetensors"
    assert saved.exists() and (tmp_path / f"{model}-digits.png").stat().st_size > 1000
    # the saved model (written from the device's arrays) gives the same test accuracy
    again = tape.nn.load_model(saved, device=device)
    assert all(p.device == device for p in again.parameters())
    _, test = tape.data.datasets.load_digits()
    loader = tape.data.DataLoader(test, batch_size=512)
    assert train.evaluate(again, loader, device) == pytest.approx(accuracy)


def test_random_shift_moves_each_image_by_at_most_one_pixel():
    x = np.zeros((50, 1, 8, 8), np.float32)
    x[:, 0, 4, 4] = 1.0
    out = train.random_shift(x, np.random.default_rng(0))
    assert out.shape == x.shape
    ys, xs = np.nonzero(out[:, 0].reshape(50, 64) == 1.0)
    rows, cols = np.divmod(xs, 8)
    assert set(rows) <= {3, 4, 5} and set(cols) <= {3, 4, 5} and len(set(rows)) > 1


def _write_idx(path, array):
    import struct

    with open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, 8, array.ndim))
        f.write(struct.pack(">" + "I" * array.ndim, *array.shape))
        f.write(array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
def test_training_reads_idx_files_from_data_dir(tmp_path, dataset):
    """--dataset mnist/fashion-mnist with --data-dir: the IDX files, no download."""
    rng = np.random.default_rng(0)
    for split, n in [("train", 128), ("t10k", 32)]:
        labels = rng.integers(0, 10, n)
        images = np.zeros((n, 28, 28))
        for i, c in enumerate(labels):  # a bar whose height says the class
            images[i, 2 + 2 * c: 6 + 2 * c, 4:24] = 255
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte", images)
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte", labels)
    accuracy = train.main(["--dataset", dataset, "--data-dir", str(tmp_path), "--epochs", "3",
                           "--model", "mlp", "--no-progress", "--out", str(tmp_path)])
    assert accuracy > 0.5  # ten bars at different heights: easy once it has learnt
    assert (tmp_path / f"mlp-{dataset}.safetensors").exists()


def test_help_shows_defaults_and_no_markup(capsys):
    with pytest.raises(SystemExit):
        train.parse_args(["--help"])
    text = capsys.readouterr().out
    assert "``" not in text and "--download" in text
    assert "(default: 30)" in text and "(default: digits)" in text


def test_missing_mnist_files_end_in_one_line_naming_download(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        train.main(["--dataset", "mnist", "--data-dir", str(tmp_path), "--no-progress"])
    message = str(info.value.code)
    assert "--download" in message and str(tmp_path) in message and "\n" not in message


@pytest.mark.parametrize("model, stop, options", [
    ("cnn", 1, []),
    ("mlp", 2, ["--scheduler", "onecycle", "--clip-grad", "1.0", "--weight-decay", "1e-4",
                "--optimizer", "sgd", "--lr", "0.05"]),
    ("mlp", 1, ["--warmup", "2", "--scheduler", "step", "--optimizer", "adamw"]),
])
def test_a_resumed_run_ends_bit_identical_to_an_uninterrupted_one(tmp_path, model, stop,
                                                                  options, steady_gemms):
    common = ["--model", model, "--epochs", "3", "--no-progress", *options]
    whole = train.main(common + ["--out", str(tmp_path / "whole")])
    train.main(common + ["--out", str(tmp_path / "cut"), "--stop-after", str(stop)])
    tape.manual_seed(123)  # the resumed process starts from another random state
    ckpt = tmp_path / "cut" / f"{model}-digits.ckpt"
    resumed = train.main(common + ["--out", str(tmp_path / "cut"), "--resume", str(ckpt)])
    assert resumed == whole
    a = tape.load(tmp_path / "whole" / f"{model}-digits.safetensors")
    b = tape.load(tmp_path / "cut" / f"{model}-digits.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name].numpy(), b[name].numpy(), err_msg=name)
    both = [tape.load(tmp_path / d / f"{model}-digits.ckpt") for d in ("whole", "cut")]
    assert both[0]["ranks"] == both[1]["ranks"] and both[1]["epoch"] == 3  # history too
    lines = [[json.loads(line) for line in open(tmp_path / d / f"{model}-digits.jsonl")]
             for d in ("whole", "cut")]
    assert [m["epoch"] for m in lines[1]] == [1, 2, 3]  # a line per epoch, none repeated
    drop = ("seconds",)  # the one field that differs between the runs
    assert [{k: v for k, v in m.items() if k not in drop} for m in lines[0]] == \
        [{k: v for k, v in m.items() if k not in drop} for m in lines[1]]
    assert len({m["lr"] for m in lines[0]}) > 1  # the schedule moved the learning rate
