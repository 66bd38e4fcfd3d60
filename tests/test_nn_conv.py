"""Conv2d and pooling layers against torch, and save_model/load_model round trips."""

import numpy as np
import pytest
import torch

import tape
import tape.nn as nn


def _copy_from_torch(ours, theirs):
    ours.load_state_dict({k: tape.tensor(v.detach().numpy()) for k, v in
                          theirs.state_dict().items()})


@pytest.mark.parametrize(
    "make",
    [
        lambda m: m.Conv2d(3, 4, 3, padding=1),
        lambda m: m.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0), groups=2, bias=False),
        lambda m: m.Conv2d(3, 2, 3, dilation=2),
        lambda m: m.MaxPool2d(2),
        lambda m: m.MaxPool2d(3, 2, 1),
        lambda m: m.AvgPool2d(3, 2, 1),
        lambda m: m.AdaptiveAvgPool2d((2, 3)),
    ],
)
def test_layer_matches_torch(make):
    ours, theirs = make(nn), make(torch.nn)
    _copy_from_torch(ours, theirs)
    cin = getattr(ours, "in_channels", 4)
    x = np.random.default_rng(0).standard_normal((2, cin, 9, 8)).astype(np.float32)
    xt = torch.tensor(x, requires_grad=True)
    xs = tape.tensor(x, requires_grad=True)
    params = list(ours.parameters())
    with tape.Tape() as t:
        y = ours(xs)
    yt = theirs(xt)
    v = np.random.default_rng(1).standard_normal(yt.shape).astype(np.float32)
    grads = t.gradient(y, [xs] + params, output_gradients=v)
    want = torch.autograd.grad(yt, [xt] + list(theirs.parameters()), torch.tensor(v))
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=1e-4, atol=1e-5)
    for g, w in zip(grads, want):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-4, atol=1e-4)


def test_conv2d_default_init_bounds_like_torch():
    tape.manual_seed(0)
    conv = nn.Conv2d(16, 32, 3)
    bound = 1 / np.sqrt(16 * 9)  # kaiming_uniform_(a=sqrt(5)) gives U(-1/sqrt(fan_in), ...)
    w = conv.weight.numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
    assert abs(w.std() - bound / np.sqrt(3)) < 0.05 * bound
    assert np.abs(conv.bias.numpy()).max() <= bound
    assert conv.weight.dtype == np.float32


def _cnn():
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.1), nn.Linear(4 * 4 * 4, 3),
    )


def test_save_model_round_trip_is_bit_exact(tmp_path):
    model = _cnn()
    model(tape.randn(5, 1, 8, 8))  # moves the BatchNorm running statistics
    path = tmp_path / "model.safetensors"
    nn.save_model(model, path)
    again = nn.load_model(path)
    assert repr(again) == repr(model)
    for (k, a), (k2, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k == k2 and a.dtype == b.dtype
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    model.eval()
    again.eval()
    x = tape.randn(2, 1, 8, 8)
    np.testing.assert_array_equal(model(x).numpy(), again(x).numpy())


def test_load_model_refuses_plain_state_dicts_and_corrupt_files(tmp_path):
    plain = tmp_path / "weights.safetensors"
    tape.save(_cnn().state_dict(), plain)
    with pytest.raises(ValueError, match="no architecture.*load_state_dict"):
        nn.load_model(plain)
    good = tmp_path / "model.safetensors"
    nn.save_model(_cnn(), good)
    data = bytearray(good.read_bytes())
    data[-3] ^= 0xFF
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum|altered|corrupt"):
        nn.load_model(bad)
    bad.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ValueError, match="truncated|short|corrupt"):
        nn.load_model(bad)


def test_save_model_needs_built_in_layers(tmp_path):
    class Mine(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, x):
            return self.fc(x)

    with pytest.raises(TypeError, match="not a built-in layer"):
        nn.save_model(Mine(), tmp_path / "m.safetensors")
