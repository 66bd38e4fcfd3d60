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
