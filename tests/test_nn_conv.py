"""Conv2d and pooling layers against torch, and save_model/load_model round trips."""

import re
import tracemalloc

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
    cin = getattr(ours, "in_channels", 4)
    _check_against_torch(ours, theirs, (2, cin, 9, 8))


# the layers after Conv2d: (make, input shape); torch's state_dict loads by name
MORE = [
    (lambda m: m.Conv1d(3, 4, 3, padding=1), (2, 3, 9)),
    (lambda m: m.Conv1d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2, bias=False),
     (2, 4, 11)),
    (lambda m: m.Conv1d(1, 3, 5), (2, 1, 8)),  # one input channel: conv2d's direct route
    (lambda m: m.ConvTranspose2d(3, 4, 3), (2, 3, 5, 4)),
    (lambda m: m.ConvTranspose2d(4, 6, (3, 2), stride=2, padding=1, output_padding=1,
                                 groups=2), (2, 4, 4, 5)),
    (lambda m: m.ConvTranspose2d(2, 3, 2, stride=(1, 2), dilation=2, output_padding=(1, 0),
                                 bias=False), (1, 2, 3, 3)),
    (lambda m: m.Upsample(scale_factor=2), (2, 3, 4, 5)),
    (lambda m: m.Upsample(size=(7, 3)), (2, 3, 4, 5)),
    (lambda m: m.Upsample(scale_factor=1.5, mode="nearest"), (2, 3, 5)),
]


@pytest.mark.parametrize("make, shape", MORE)
def test_more_layers_match_torch(make, shape, device):
    ours, theirs = make(nn), make(torch.nn)
    assert repr(ours) == repr(theirs)
    assert [(k, tuple(v.shape)) for k, v in ours.state_dict().items()] == [
        (k, tuple(v.shape)) for k, v in theirs.state_dict().items()]
    _check_against_torch(ours, theirs, shape, device)


def _check_against_torch(ours, theirs, shape, device="cpu"):
    """Output and gradients (input and parameters) of ``ours`` on ``device`` against
    ``theirs``, after loading torch's state_dict by name."""
    _copy_from_torch(ours, theirs)
    ours.to(device)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    xt = torch.tensor(x, requires_grad=True)
    xs = tape.tensor(x, requires_grad=True, device=device)
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


def test_conv_transpose2d_output_size_picks_output_padding_as_torch():
    ours, theirs = (m.ConvTranspose2d(2, 3, 3, stride=3) for m in (nn, torch.nn))
    _copy_from_torch(ours, theirs)
    x = np.random.default_rng(0).standard_normal((1, 2, 4, 4)).astype(np.float32)
    for size in [(12, 12), (13, 14), (1, 2, 14, 12)]:
        want = theirs(torch.tensor(x), output_size=size).detach().numpy()
        np.testing.assert_allclose(ours(tape.tensor(x), output_size=size).numpy(), want,
                                   rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"output_size=\(15, 12\).*\[12, 14\]"):
        ours(tape.tensor(x), output_size=(15, 12))


@pytest.mark.parametrize("make, fan_in", [
    (lambda: nn.Conv1d(8, 6, 5, groups=2), 4 * 5),
    (lambda: nn.ConvTranspose2d(6, 8, 3, groups=2), 4 * 9),  # weight (6, 4, 3, 3)
])
def test_more_conv_default_init_bounds_like_torch(make, fan_in):
    tape.manual_seed(0)
    conv = make()
    bound = 1 / np.sqrt(fan_in)
    w = conv.weight.numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
    assert np.abs(conv.bias.numpy()).max() <= bound and conv.bias.shape == (conv.out_channels,)


@pytest.mark.parametrize("call, error, message", [
    (lambda: nn.Upsample(scale_factor=2, mode="bilinear"), NotImplementedError, "bilinear"),
    (lambda: nn.Upsample(), ValueError, "exactly one of size and scale_factor"),
    (lambda: tape.functional.interpolate(tape.zeros(1, 1, 2, 2), size=3, mode="bicubic"),
     NotImplementedError, "bicubic"),
    (lambda: tape.functional.interpolate(tape.zeros(1, 2), size=3), ValueError, r"\(1, 2\)"),
    (lambda: nn.ConvTranspose2d(2, 2, 3, stride=2, output_padding=2), ValueError,
     "output_padding"),
    (lambda: nn.Conv1d(3, 4, 3, groups=2), ValueError, "divisible by groups=2"),
    (lambda: nn.Conv1d(2, 2, 3, padding_mode="reflect"), NotImplementedError, "reflect"),
    (lambda: tape.functional.conv1d(tape.zeros(1, 2, 5, 5), tape.zeros(2, 2, 3)), ValueError,
     r"conv1d: expects input \(N, C, L\)"),
    (lambda: tape.functional.conv_transpose2d(tape.zeros(1, 3, 4, 4), tape.zeros(2, 2, 3, 3)),
     ValueError, "3 channels"),
])
def test_new_conv_layers_errors_name_the_problem(call, error, message):
    with pytest.raises(error, match=message):
        call()


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


def _linear(n_in, n_out, **config):
    return {"type": "Linear", "config": {"in_features": n_in, "out_features": n_out, **config}}


SMALL = {"weight": np.ones((2, 2), np.float32), "bias": np.ones(2, np.float32)}


@pytest.mark.parametrize("spec, message", [
    pytest.param(_linear(16000, 16000), r"do not fit.*size mismatch for weight.*\(16000, 16000\)",
                 id="huge-layer-tiny-tensors"),
    pytest.param(_linear(2, 2, bias=False), r"do not fit.*Unexpected key.*bias",
                 id="fewer-tensors"),
    pytest.param(_linear(-1, 2), r"cannot be built.*in_features must be at least",
                 id="negative-size"),
    pytest.param({"type": "os.system", "config": {}}, r"cannot be built.*unknown layer type",
                 id="unknown-layer"),
    pytest.param({"type": "Linear", "config": {"evil": 1}}, r"cannot be built.*evil",
                 id="unknown-argument"),
    pytest.param("Linear", r"cannot be built", id="not-a-dict"),
])
def test_load_model_checks_the_architecture_before_allocating(tmp_path, spec, message):
    path = tmp_path / "crafted.safetensors"
    tape.save(SMALL, path, metadata={"architecture": spec})
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=re.compile(message, re.S)):
            nn.load_model(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20  # Linear(16000, 16000) alone would be 1 GB


def test_a_loaded_model_owns_its_arrays_and_trains(tmp_path):
    model = _cnn()
    nn.save_model(model, tmp_path / "m")
    again = nn.load_model(tmp_path / "m")
    for p in again.parameters():
        assert p.data.flags.writeable and p.data.flags.c_contiguous and all(p.data.strides)
    opt = tape.optim.SGD(again.parameters(), lr=0.1)
    x = tape.randn(2, 1, 8, 8)
    with tape.Tape() as t:
        loss = again(x).sum()
    before = [p.numpy().copy() for p in again.parameters()]
    opt.step(t.gradient(loss, list(again.parameters())))
    assert any((p.numpy() != b).any() for p, b in zip(again.parameters(), before))


def test_save_model_needs_built_in_layers(tmp_path):
    class Mine(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, x):
            return self.fc(x)

    with pytest.raises(TypeError, match="not a built-in layer"):
        nn.save_model(Mine(), tmp_path / "m.safetensors")
