"""The main job across processes: ``examples/train.py --distributed`` learns the digits,
and only rank 0 prints and writes files."""

import importlib.util
import pathlib

import pytest

pytest.importorskip("sklearn", reason="the digits data ships with scikit-learn")
pytest.importorskip("tqdm")
pytest.importorskip("matplotlib")
dist = pytest.importorskip("tape.distributed")

_PATH = pathlib.Path(__file__).resolve().parents[1] / "examples" / "train.py"
_spec = importlib.util.spec_from_file_location("train_example", _PATH)
train = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train)


@pytest.mark.parametrize("model, at_least", [("mlp", 0.9), ("cnn", 0.9)])
def test_distributed_training_learns_and_only_rank_0_writes(tmp_path, capsys, model, at_least):
    out = tmp_path / f"rank{dist.rank()}"
    accuracy = train.main(["--distributed", "--model", model, "--epochs", "8",
                           "--no-progress", "--out", str(out)])
    assert accuracy >= at_least
    printed = capsys.readouterr().out
    written = sorted(p.name for p in out.iterdir())
    if dist.rank() == 0:
        assert "test accuracy" in printed and f"{model}-digits.safetensors" in written
    else:
        assert printed == "" and written == []


def test_a_resumed_distributed_run_ends_bit_identical_to_an_uninterrupted_one(tmp_path):
    """Each process's random states (dropout, augmentation shifts) and history travel in
    rank 0's checkpoint; every process reads it back (one folder for both: rank 0's)."""
    import numpy as np
    from mpi4py import MPI

    import tape

    root = pathlib.Path(MPI.COMM_WORLD.bcast(str(tmp_path), root=0))
    common = ["--distributed", "--model", "cnn", "--epochs", "3", "--no-progress"]
    whole = train.main(common + ["--out", str(root / "whole")])
    train.main(common + ["--out", str(root / "cut"), "--stop-after", "1"])
    dist.barrier()  # rank 0 has written the checkpoint
    tape.manual_seed(123 + dist.rank())  # the resumed processes start from other states
    ckpt = root / "cut" / "cnn-digits.ckpt"
    resumed = train.main(common + ["--out", str(root / "cut"), "--resume", str(ckpt)])
    assert resumed == whole
    if dist.rank() == 0:
        a, b = (tape.load(root / d / "cnn-digits.safetensors") for d in ("whole", "cut"))
        for name in a:
            np.testing.assert_array_equal(a[name].numpy(), b[name].numpy(), err_msg=name)
        saved = tape.load(ckpt)["ranks"]
        assert len(saved) == 2 and saved[0]["augment_rng"] != saved[1]["augment_rng"]
    with pytest.raises(SystemExit, match="saved by 2 process"):
        train.resume(ckpt, *([None] * 5), rank=0, world=3)
