"""The example scripts run as a newcomer runs them (their ``main()`` with its defaults) and
reach what their docstrings promise: accuracy, gradchecks, closed forms, a penalty that
falls to its predicted level."""

import importlib.util
import json
import pathlib

import numpy as np
import pytest

_EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(f"{name}_example", _EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def digits():
    pytest.importorskip("sklearn", reason="the digits data ships with scikit-learn")


def test_mlp_reaches_its_accuracy(digits, capsys):
    assert load("mlp").main() >= 0.93  # 0.95 with the defaults; 0.94-0.96 over seeds
    assert "test accuracy" in capsys.readouterr().out


def test_cnn_reaches_its_accuracy_and_saved_model_predicts_the_same(digits, tmp_path):
    out = load("cnn").main(out_dir=str(tmp_path))
    assert out["test_accuracy"] >= 0.93  # 0.958 with the defaults; 0.958-0.964 over seeds
    assert out["loaded_same_predictions"]
    assert (tmp_path / "cnn-example.safetensors").stat().st_size > 10_000


def test_custom_layer_trains_names_its_parameters_and_restores(digits):
    out = load("custom_layer").main()
    assert out["test_accuracy"] >= 0.92  # 0.95 with the defaults
    assert out["names"][2:6] == ["1.weight", "1.bias", "1.proj.weight", "1.proj.bias"]
    assert out["restored"]


def test_custom_ops_pass_gradcheck_and_train():
    out = load("custom_op").main()
    assert out["stable_finite"]
    assert out["second_derivative_error"] < 1e-6
    assert out["gradcheck_log1pexp"] is True
    assert out["gradcheck_swish"] is True
    assert out["gradcheck_composed"] is True
    assert out["gradcheck_straight_through"] is False  # its gradient is not the true one
    assert out["accuracy"] >= 0.95 and out["loss"] < 0.1


def test_second_order_matches_closed_forms_and_the_penalty_falls():
    out = load("second_order").main()
    assert out["hvp_vs_exact"] < 1e-10
    assert out["hvp_vs_fd"] < 1e-6
    assert out["hessian_vs_exact"] < 1e-8
    assert out["min_eigenvalue_at_minimum"] > 0
    assert out["gradcheck_penalty"] is True
    penalty = np.array(out["penalty"])
    assert penalty[0] > 0.3 and penalty[-50:].mean() < 0.05  # 0.69 -> 0.019
    # the penalty settles where the objective predicts, and so does the estimate of W1
    assert penalty[-50:].mean() == pytest.approx(out["expected_penalty"], rel=0.5)
    assert out["final_w1"] == pytest.approx(out["expected_w1"], rel=0.1)


def test_transforms_per_example_gradients_average_to_the_batch_gradient_and_hvps_agree(digits):
    out = load("transforms").main()
    assert out["mean_vs_batch"] < 1e-6
    assert out["norms"].shape == (32,) and (out["norms"] > 0).all()
    assert out["hvp_jvp_vs_hessian"] < 1e-10
    assert out["hvp_acc_vs_hessian"] < 1e-10
    assert out["hessian_vs_closed_form"] < 1e-10
    assert out["dp_sgd_accuracy"] >= 0.88  # 0.914 with the defaults; 0.914-0.916 over seeds


SMALL_LM = ["--d-model", "32", "--heads", "2", "--layers", "1", "--context", "32",
            "--batch-size", "16", "--eval-every", "20", "--sample", "40", "--no-progress",
            "--warmup", "5", "--lr", "1e-2", "--clip-grad", "1.0"]


def test_charlm_learns_samples_and_resumes_bit_identical(tmp_path, capsys, steady_gemms):
    """A small charlm: the validation loss falls below the uniform guess's log(103) = 4.6
    and keeps falling; a run stopped at step 20 and resumed ends as the uninterrupted one."""
    charlm = load("charlm")
    whole = charlm.main(SMALL_LM + ["--steps", "60", "--out", str(tmp_path / "whole")])
    assert whole["val_loss"][0] < 4.0 and whole["val_loss"][-1] < whole["val_loss"][0]
    assert "sampled:" in capsys.readouterr().out
    assert (tmp_path / "whole" / "charlm.png").stat().st_size > 1000
    cut = SMALL_LM + ["--steps", "60", "--out", str(tmp_path / "cut")]
    charlm.main(cut + ["--stop-after", "20"])
    resumed = charlm.main(cut + ["--resume", str(tmp_path / "cut" / "charlm.ckpt")])
    assert resumed["val_loss"] == whole["val_loss"] and resumed["loss"] == whole["loss"]
    lines = (tmp_path / "cut" / "charlm.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [20, 40, 60]
    sample = (tmp_path / "cut" / "charlm-sample.txt").read_text()
    assert sample == (tmp_path / "whole" / "charlm-sample.txt").read_text()
