"""tape.io: safetensors round trips, nested checkpoints, other tools' files, checksums,
atomic writes, hostile files."""

import json
import math
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import tracemalloc

import numpy as np
import pytest

import tape
import tape.atomic
from tape.io import load, save

DTYPES = [np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64,
          np.uint8, np.uint16, np.uint32, np.uint64, np.bool_]
SHAPES = [(), (0,), (3, 0, 2), (1,), (2, 3), (2, 1, 4)]


def _sample(dtype, shape, rng):
    bits = rng.integers(0, 256, size=int(np.prod(shape)) * np.dtype(dtype).itemsize,
                        dtype=np.uint8)
    if dtype == np.bool_:
        return (bits % 2).astype(np.bool_).reshape(shape)
    return bits.view(dtype).reshape(shape)  # any bit pattern, NaN payloads included


def _same_bits(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()


# ----- round trips -----

@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_round_trip_bit_exact(tmp_path, dtype):
    rng = np.random.default_rng(0)
    state = {f"t{i}": _sample(dtype, s, rng) for i, s in enumerate(SHAPES)}
    save(state, tmp_path / "m.safetensors")
    out = load(tmp_path / "m.safetensors")
    assert list(out) == list(state)
    for name, array in state.items():
        assert isinstance(out[name], tape.Tensor) and out[name].device == "cpu"
        _same_bits(out[name].data, array)


def test_round_trip_through_a_device(tmp_path, device):
    """Tensors and raw arrays on the device save bit-exact; load(device=) puts them back."""
    rng = np.random.default_rng(1)
    host = {f"{np.dtype(d).name}{i}": _sample(d, s, rng)
            for d in (np.float16, np.float32, np.float64, np.int64, np.uint8, np.bool_)
            for i, s in enumerate([(), (0,), (2, 1, 4)])}
    state = {k: tape.tensor(a, device=device) for k, a in host.items()}
    state["raw"] = tape.ones(3, 2, device=device).data.T  # a raw array, not C-contiguous
    host["raw"] = np.ones((2, 3), np.float32)
    save(state, tmp_path / "m.safetensors")
    for where in (None, device):
        out = load(tmp_path / "m.safetensors", device=where)
        assert list(out) == list(host)
        for name, array in host.items():
            assert out[name].device == (where or "cpu")
            _same_bits(out[name].numpy(), array)
    model = tape.nn.Sequential(tape.nn.Linear(3, 2), tape.nn.BatchNorm1d(2)).to(device)
    tape.nn.save_model(model, tmp_path / "model")
    again = tape.nn.load_model(tmp_path / "model", device=device)
    for (k, v), w in zip(model.state_dict().items(), again.state_dict().values()):
        assert w.device == device
        _same_bits(w.numpy(), v.numpy())


def test_tensors_order_layouts_and_byte_order(tmp_path):
    x = tape.randn(3, 4)
    state = {"z.weight": x, "a": np.arange(12.0).reshape(3, 4).T, "big": np.arange(5, dtype=">i4"),
             "scalar": np.float32(2.5), "mixed": np.arange(3, dtype=np.uint8)}
    path = str(tmp_path / "m.st")
    save(state, path)
    out = load(path)
    assert list(out) == ["z.weight", "a", "big", "scalar", "mixed"]
    np.testing.assert_array_equal(out["z.weight"].numpy(), x.numpy())
    np.testing.assert_array_equal(out["a"].numpy(), state["a"])
    assert out["big"].dtype == np.int32 and out["big"].tolist() == [0, 1, 2, 3, 4]
    assert out["scalar"].shape == () and out["scalar"].item() == 2.5
    out["a"].data[0, 0] = 7.0  # loaded arrays are ordinary writable arrays
    assert out["a"].data.flags.writeable and out["mixed"].data.flags.aligned


def test_metadata_round_trip(tmp_path):
    meta = {"arch": {"type": "Sequential", "layers": [["Linear", 4, 2], ["ReLU"]]},
            "epoch": 3, "name": "ünïcode"}
    save({"w": np.ones(2)}, tmp_path / "m", metadata=meta)
    tensors, got = load(tmp_path / "m", with_metadata=True)
    assert got == meta and list(tensors) == ["w"]
    save({}, tmp_path / "empty")
    assert load(tmp_path / "empty", with_metadata=True) == ({}, {})


# ----- nested checkpoints -----

def _same(a, b):
    """Equal structure, types and values; tensors and arrays bit for bit, NaN equal to NaN."""
    if isinstance(a, (tape.Tensor, np.ndarray, np.generic)):
        assert isinstance(b, tape.Tensor)
        _same_bits(b.numpy(), a.numpy() if isinstance(a, tape.Tensor) else np.asarray(a))
    elif isinstance(a, float) and math.isnan(a):
        assert type(b) is float and math.isnan(b)
    elif isinstance(a, dict):
        assert type(b) is dict and list(a) == list(b)  # same keys, same order, same types
        assert [type(k) for k in a] == [type(k) for k in b]
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert type(b) is type(a) and len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    else:
        assert type(b) is type(a) and b == a


def _nest(containers):
    obj = [np.ones(1)]
    for _ in range(containers - 1):
        obj = {"a": obj}
    return obj


NESTED = [
    pytest.param({"w": np.ones(2), "epoch": 3}, id="tensor-beside-a-number"),
    pytest.param({"a": {"b": {"c": tape.arange(3)}}, "d": [tape.ones(1), [np.zeros((0, 2))]]},
                 id="deep"),
    pytest.param({0: np.ones(1), 7: {"k": 1}, "s": "x"}, id="int-keys"),
    pytest.param({np.int64(3): "numpy int key"}, id="numpy-int-key"),
    pytest.param({"f": [float("nan"), float("inf"), -float("inf"), -0.0, 1e-310, 0.1]},
                 id="special-floats"),
    pytest.param({"i": [2**100, -(2**70), 0], "b": [True, False], "n": None, "u": "ünï/cödé"},
                 id="ints-bools-none-strings"),
    pytest.param({"betas": (0.9, 0.999), "empty": [(), [], {}]}, id="tuples-and-empties"),
    pytest.param([tape.ones(2), {"x": 1}], id="top-level-list"),
    pytest.param({"a/b": np.ones(1), "a": {"b": np.zeros(1)}, "__metadata__": {"c": 1}},
                 id="colliding-names"),
    pytest.param({"scalar": np.float32(2.5), "flag": np.bool_(True)}, id="numpy-scalars"),
    pytest.param(_nest(tape.io.MAX_DEPTH), id="as-deep-as-allowed"),
]


@pytest.mark.parametrize("obj", NESTED)
def test_nested_checkpoints_round_trip(tmp_path, obj):
    path = tmp_path / "ck.safetensors"
    save(obj, path, metadata={"note": 1})
    back, meta = load(path, with_metadata=True, verify=True)
    expected = {int(k) if isinstance(k, np.integer) else k: v for k, v in obj.items()} \
        if isinstance(obj, dict) else obj
    _same(expected, back)
    assert meta == {"note": 1}


def test_a_checkpoint_of_a_training_run(tmp_path):
    """model + optimizer + scheduler + epoch + rng: all of it comes back as it went in."""
    model = tape.nn.Sequential(tape.nn.Linear(3, 4), tape.nn.BatchNorm1d(4))
    opt = tape.optim.Adam(model.parameters(), lr=0.1, amsgrad=True)
    sched = tape.optim.lr_scheduler.StepLR(opt, step_size=2)
    with tape.Tape() as t:
        loss = (model(tape.randn(5, 3)) ** 2).mean()
    opt.step(t.gradient(loss, list(model.parameters())))
    sched.step()
    ck = {"model": model.state_dict(), "optimizer": opt.state_dict(),
          "scheduler": sched.state_dict(), "epoch": 1, "rng": tape.get_rng_state()}
    save(ck, tmp_path / "ck")
    _same(ck, load(tmp_path / "ck"))


def _train(steps, resume_at=None, folder=None):
    """Train a small model with dropout, shuffling, Adam and a schedule; when
    ``resume_at`` is given, stop there, save, rebuild every object from scratch (from
    another seed) and continue from the file. Returns the final parameters."""
    x = np.random.default_rng(0).standard_normal((24, 5)).astype(np.float32)
    y = np.random.default_rng(1).standard_normal((24, 2)).astype(np.float32)

    def fresh(seed):
        tape.manual_seed(seed)
        model = tape.nn.Sequential(tape.nn.Linear(5, 8), tape.nn.ReLU(), tape.nn.Dropout(0.3),
                                   tape.nn.Linear(8, 2))
        opt = tape.optim.Adam(model.parameters(), lr=0.01)
        sched = tape.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
        loader = tape.data.DataLoader(tape.data.TensorDataset(tape.tensor(x), tape.tensor(y)),
                                      batch_size=8, shuffle=True)
        return model, opt, sched, loader

    model, opt, sched, loader = fresh(0)
    epoch = 0
    while epoch < steps:
        if epoch == resume_at:
            save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                  "scheduler": sched.state_dict(), "epoch": epoch,
                  "rng": tape.get_rng_state()}, folder / "ck")
            model, opt, sched, loader = fresh(123)
            ck = load(folder / "ck")
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            tape.set_rng_state(ck["rng"])
            epoch, resume_at = ck["epoch"], None
        for xb, yb in loader:
            with tape.Tape() as t:
                loss = tape.functional.mse_loss(model(xb), yb)
            opt.step(t.gradient(loss, list(model.parameters())))
        sched.step()
        epoch += 1
    return [p.numpy().copy() for p in model.parameters()]


def test_a_resumed_run_is_bit_identical(tmp_path, steady_gemms):
    straight = _train(5)
    resumed = _train(5, resume_at=2, folder=tmp_path)
    for a, b in zip(straight, resumed):
        _same_bits(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(straight, _train(4)))  # it can fail


def test_rng_state_round_trip():
    state = tape.get_rng_state()
    first = [tape.randn(3).numpy(), tape.rand(2).numpy()]
    tape.set_rng_state(state)
    again = [tape.randn(3).numpy(), tape.rand(2).numpy()]
    for a, b in zip(first, again):
        _same_bits(a, b)
    state["state"]["state"] = 0  # get_rng_state returns a copy: changing it changes nothing
    assert tape.get_rng_state()["state"]["state"] != 0


@pytest.mark.parametrize("obj, exc, match", [
    pytest.param(5, TypeError, "state dict or a nested structure", id="a-number"),
    pytest.param(tape.ones(2), TypeError, "state dict or a nested structure", id="a-tensor"),
    pytest.param({"w": [1.0, object()]}, TypeError, r"'w/1' is of type object.*leaves",
                 id="object"),
    pytest.param({"w": {1, 2}}, TypeError, r"'w' is of type set", id="set"),
    pytest.param({"w": 1 + 2j}, TypeError, r"'w' is of type complex", id="complex-number"),
    pytest.param({"w": np.ones(2, np.complex128)}, TypeError, "complex128", id="complex-array"),
    pytest.param({"w": np.array(["a"])}, TypeError, "<U1", id="string-array"),
    pytest.param({"m": {(1, 2): 3}}, TypeError, r"'m' has the key \(1, 2\).*strings or ints",
                 id="tuple-key"),
    pytest.param({"m": {True: 3}}, TypeError, r"key True", id="bool-key"),
    pytest.param({"__metadata__": np.ones(2)}, ValueError, "reserved", id="reserved-name"),
    pytest.param(_nest(tape.io.MAX_DEPTH + 1), ValueError, "nested more than 100 containers",
                 id="too-deep"),
])
def test_what_a_file_cannot_hold_is_refused_before_writing(tmp_path, obj, exc, match):
    with pytest.raises(exc, match=match):
        save(obj, tmp_path / "m")
    assert os.listdir(tmp_path) == []


def test_a_structure_holding_itself_is_refused(tmp_path):
    loop = {"a": []}
    loop["a"].append(loop)
    with pytest.raises(ValueError, match="'a/0' contains itself"):
        save(loop, tmp_path / "m")
    shared = [1]
    save({"a": shared, "b": shared}, tmp_path / "m")  # the same list twice is no loop
    assert load(tmp_path / "m") == {"a": [1], "b": [1]}


def test_metadata_must_be_json(tmp_path):
    with pytest.raises(TypeError, match="JSON"):
        save({"w": np.ones(2)}, tmp_path / "m", metadata={"f": object()})
    assert os.listdir(tmp_path) == []


def test_readable_by_the_safetensors_package(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    rng = np.random.default_rng(1)
    state = {f"{np.dtype(d).name}": _sample(d, (2, 3), rng) for d in DTYPES}
    state["empty"], state["zero_d"] = np.zeros((0, 4), np.float32), np.array(3, np.int64)
    save(state, tmp_path / "m.safetensors", metadata={"k": [1]})
    out = st.load_file(str(tmp_path / "m.safetensors"))
    for name, array in state.items():
        _same_bits(out[name], array)


# ----- files other tools wrote -----

def test_files_of_the_safetensors_package_load(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    rng = np.random.default_rng(2)
    state = {f"{np.dtype(d).name}": _sample(d, (2, 3), rng) for d in DTYPES}
    state["empty"], state["zero_d"] = np.zeros((0, 4), np.float32), np.array(3, np.int64)
    st.save_file(state, str(tmp_path / "theirs"), metadata={"format": "np"})
    back, meta = load(tmp_path / "theirs", with_metadata=True)
    assert meta == {"format": "np"} and set(back) == set(state)
    for name, array in state.items():
        _same_bits(back[name].numpy(), array)
    with pytest.raises(ValueError, match="no tape checksum.*verify"):
        load(tmp_path / "theirs", verify=True)
    st.save_file({"w": np.ones(2, np.float32)}, str(tmp_path / "bare"))  # no metadata at all
    assert load(tmp_path / "bare", with_metadata=True)[1] == {}


def test_torch_bfloat16_loads_as_exact_float32(tmp_path):
    torch = pytest.importorskip("torch")
    st = pytest.importorskip("safetensors.torch")
    bits = torch.arange(0, 2**16, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)
    values = {"every_bf16": bits, "matrix": torch.randn(3, 4).to(torch.bfloat16),
              "f32": torch.randn(2)}
    st.save_file(values, str(tmp_path / "bf16"), metadata={"format": "pt"})
    back = load(tmp_path / "bf16")
    for name, value in values.items():
        assert back[name].dtype == np.float32
        _same_bits(back[name].numpy(), value.float().numpy())  # NaN payloads and -0 too


def test_unknown_dtypes_are_named(tmp_path):
    torch = pytest.importorskip("torch")
    st = pytest.importorskip("safetensors.torch")
    st.save_file({"w": torch.zeros(2, dtype=torch.float8_e4m3fn)}, str(tmp_path / "f8"))
    with pytest.raises(ValueError, match=r"'w' as F8_E4M3, a dtype tape cannot load"):
        load(tmp_path / "f8")


def test_our_file_rewritten_in_another_order_still_verifies(tmp_path):
    pytest.importorskip("safetensors")
    from safetensors import safe_open
    from safetensors.numpy import save_file

    ck = {"b": np.arange(3.0), "a": {"z": np.ones((2, 2), np.float32), "y": 7}}
    save(ck, tmp_path / "ours")
    with safe_open(str(tmp_path / "ours"), "np") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    save_file(dict(reversed(tensors.items())), str(tmp_path / "rewritten"), metadata=meta)
    assert (tmp_path / "rewritten").read_bytes() != (tmp_path / "ours").read_bytes()
    _same(ck, load(tmp_path / "rewritten", verify=True))
    tensors["b"][0] = 1.5  # a changed value is still caught
    save_file(tensors, str(tmp_path / "changed"), metadata=meta)
    with pytest.raises(ValueError, match="checksum mismatch in 'b'"):
        load(tmp_path / "changed")


def test_names_reads_only_those_tensors(tmp_path, monkeypatch):
    ck = {"model": {"w": np.arange(4.0), "b": np.ones(2)}, "big": np.zeros(100_000)}
    save(ck, tmp_path / "ck")
    reads = []
    real = tape.io._read_exact
    monkeypatch.setattr(tape.io, "_read_exact", lambda f, n: reads.append(n) or real(f, n))
    got = load(tmp_path / "ck", names=["model/w"], verify=True)
    assert list(got) == ["model/w"] and got["model/w"].tolist() == [0, 1, 2, 3]
    assert max(reads) < 100_000  # the big tensor was never read
    with pytest.raises(ValueError, match=r"no tensor named 'model/x'.*'model/w'"):
        load(tmp_path / "ck", names=["model/x"])
    with pytest.raises(TypeError, match="names takes a list"):
        load(tmp_path / "ck", names="model/w")


def test_version_1_files_still_load(tmp_path):
    """Files from before nested checkpoints: one checksum over the header and the data."""
    w, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(2, np.int64)
    header = {"__metadata__": {"format": "tape", "version": "1"},
              "w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
              "b": {"dtype": "I64", "shape": [2], "data_offsets": [24, 40]}}
    raw = {"w": w.tobytes(), "b": b.tobytes()}
    entries = {"w": (None, None, 0, 24), "b": (None, None, 24, 40)}
    header["__metadata__"]["sha256"] = tape.io._legacy_checksum(header, raw, entries)
    path = tmp_path / "v1"
    _rewrite(path, header, raw["w"] + raw["b"])
    back = load(path, verify=True)
    _same_bits(back["w"].numpy(), w)
    _same_bits(back["b"].numpy(), b)
    _rewrite(path, header, raw["w"] + b"\2" + raw["b"][1:])
    assert "checksum mismatch" in _why(path)


# ----- damaged and hostile files -----

@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "m.safetensors"
    save({"w": np.arange(24, dtype=np.float32).reshape(4, 6), "b": np.ones(6, np.int64)}, path)
    return path


def _why(path):
    """The ValueError's message, without the path (which holds the test's name)."""
    with pytest.raises(ValueError) as info:
        load(path)
    return str(info.value).replace(os.fspath(path), "<path>")


def _header(path):
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return raw, n, json.loads(raw[8:8 + n])


def _rewrite(path, header, data):
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + data)


@pytest.mark.parametrize("keep", [0, 5, 8, 30, -1, -100])
def test_truncated_file(saved, keep):
    raw = saved.read_bytes()
    saved.write_bytes(raw[:keep] if keep >= 0 else raw[:len(raw) + keep])
    assert "truncated" in _why(saved)


def test_flipped_bytes_anywhere_are_caught(saved):
    raw, n, _ = _header(saved)
    for at in [8 + n, 8 + n + 50, len(raw) - 1]:  # in the data
        bad = bytearray(raw)
        bad[at] ^= 0x01
        saved.write_bytes(bytes(bad))
        assert "checksum mismatch" in _why(saved)


def test_altered_header_is_caught(saved):
    raw, n, header = _header(saved)
    data = raw[8 + n:]
    header["w"]["shape"] = [6, 4]  # same size, other shape: only the checksum can tell
    _rewrite(saved, header, data)
    assert "checksum mismatch" in _why(saved)
    header["w"]["shape"], header["w"]["dtype"] = [4, 6], "I32"
    _rewrite(saved, header, data)
    assert "checksum mismatch" in _why(saved)


def test_garbage_and_foreign_files(tmp_path, saved):
    garbage = tmp_path / "garbage"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 1000, np.uint8).tobytes())
    assert "not a safetensors file" in _why(garbage)
    pickled = tmp_path / "pickled"
    pickled.write_bytes(pickle.dumps({"w": np.ones(3)}))
    assert "not a safetensors file" in _why(pickled)
    raw, n, header = _header(saved)
    bad_json = tmp_path / "bad_json"
    bad_json.write_bytes(raw[:8] + b"{" + b"x" * (n - 1) + raw[8 + n:])
    assert "not valid JSON" in _why(bad_json)
    del header["__metadata__"]  # now a plain safetensors file: loads, but is not verified
    _rewrite(saved, header, raw[8 + n:])
    assert load(saved)["w"].shape == (4, 6)
    with pytest.raises(ValueError, match="no tape checksum"):
        load(saved, verify=True)


def test_malformed_entries_and_offsets(saved):
    raw, n, header = _header(saved)
    data = raw[8 + n:]
    for change, message in [
        (lambda h: h["w"].update(dtype="C64"), "as C64, a dtype tape cannot load"),
        (lambda h: h["w"].update(shape=[4, -6]), "malformed"),
        (lambda h: h["w"].update(data_offsets=[0]), "malformed"),
        (lambda h: h["w"].update(shape=[4, 5]), "do not match its shape"),
        (lambda h: h["b"].update(data_offsets=[90, 138]), "overlap or leave gaps"),
    ]:
        h = json.loads(json.dumps(header))
        change(h)
        _rewrite(saved, h, data)
        assert message in _why(saved)
    _rewrite(saved, header, data + b"\0" * 8)
    assert "bytes follow the last tensor" in _why(saved)


def _reseal(header):
    """Recompute the header checksum, as a forger would, to reach the checks behind it."""
    header["__metadata__"]["sha256"] = tape.io._checksum(header)
    return header


def _deep(depth):
    return "[" * depth + "]" * depth


def _file(header: bytes, length=None) -> bytes:
    return (len(header) if length is None else length).to_bytes(8, "little") + header


CRAFTED = [  # (a whole file, or a change to the saved header; a fragment of the message)
    pytest.param(_file(b""), "truncated: it ends after", id="header-length-only"),
    pytest.param(_file(b'{"a": 1}', length=0), "not a safetensors file", id="header-length-0"),
    pytest.param(_file(b"{"), "not a safetensors file", id="header-length-1"),
    pytest.param(_file(b'{"a": ' + _deep(100_000).encode() + b"}"), "nested too deeply",
                 id="deeply-nested-json"),
    pytest.param(_file(b'{"__metadata__": {"format": 1}}'), "malformed __metadata__",
                 id="metadata-not-strings"),
    pytest.param(_file(b'{"w": 1}'), "malformed header entry for 'w'", id="entry-a-number"),
    pytest.param(lambda h: h["w"].update(shape=[0, 2**70], data_offsets=[0, 0]),
                 "impossible shape (0, 1180591620717411303424)", id="shape-too-big"),
    pytest.param(lambda h: h["__metadata__"].update(version="3"), "newer tape",
                 id="newer-version"),
    pytest.param(lambda h: h["__metadata__"].pop("digests"), "digests do not list",
                 id="no-digests"),
    pytest.param(lambda h: h["__metadata__"].update(structure=_deep(100_000)),
                 "nested too deeply", id="deeply-nested-structure"),
    pytest.param(lambda h: h["__metadata__"].update(structure='{"tensor": "nope"}'),
                 "malformed structure", id="structure-names-a-missing-tensor"),
    pytest.param(lambda h: h["__metadata__"].update(structure='{"list": [{"x": 1}]}'),
                 "malformed structure", id="structure-unknown-tag"),
    pytest.param(lambda h: h["__metadata__"].update(structure='{"dict": [[1.5, 2]]}'),
                 "malformed structure", id="structure-float-key"),
]


@pytest.mark.parametrize("craft, message", CRAFTED)
def test_crafted_headers_raise_a_clear_error(saved, craft, message):
    raw, n, header = _header(saved)
    if isinstance(craft, bytes):
        saved.write_bytes(craft)
    else:
        craft(header)
        _rewrite(saved, _reseal(header), raw[8 + n:])
    assert message in _why(saved)


def _peak_bytes(path):
    """The peak memory that a refused load allocated, and its message."""
    tracemalloc.start()
    try:
        message = _why(path)
        return tracemalloc.get_traced_memory()[1], message
    finally:
        tracemalloc.stop()


def test_huge_lengths_never_allocate(tmp_path):
    path = tmp_path / "huge"
    path.write_bytes((1 << 62).to_bytes(8, "little") + b'{"a": 1}')
    peak, message = _peak_bytes(path)
    assert peak < 1 << 20 and "not a safetensors file" in message
    path.write_bytes((50 << 20).to_bytes(8, "little") + b'{"a": 1}')  # plausible but too long
    peak, message = _peak_bytes(path)
    assert peak < 1 << 20 and "truncated" in message
    huge = 1 << 40  # a header claiming a terabyte of data in a tiny file
    header = {"__metadata__": {"format": "tape", "sha256": "0" * 64},
              "w": {"dtype": "U8", "shape": [huge], "data_offsets": [0, huge]}}
    _rewrite(path, header, b"\0" * 16)
    peak, message = _peak_bytes(path)
    assert peak < 1 << 20 and "truncated" in message


def test_load_never_unpickles(saved, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("tape.load must never unpickle")

    for name in ["loads", "load", "Unpickler"]:
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(np, "load", refuse)
    assert load(saved)["w"].shape == (4, 6)


# ----- atomic writes -----

def _fail(*args, **kwargs):
    raise OSError("disk full (simulated)")


@pytest.mark.parametrize("where", ["fsync", "replace", "write"])
def test_failed_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch, where):
    path = tmp_path / "m.safetensors"
    save({"w": np.ones(3)}, path)
    before = path.read_bytes()
    new = {"a": np.zeros(1000), "b": np.zeros(1000)}
    if where == "write":  # the disk fills up after the header, half way through the tensors
        real_fdopen = os.fdopen

        class HalfFull:
            def __init__(self, fd, mode):
                self.f, self.writes = real_fdopen(fd, mode), 0

            def write(self, chunk):
                self.writes += 1
                if self.writes == 4:
                    raise OSError("disk full (simulated)")
                return self.f.write(chunk)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()

        monkeypatch.setattr(os, "fdopen", HalfFull)
    else:
        monkeypatch.setattr(os, where, _fail)
    with pytest.raises(OSError, match="simulated"):
        save(new, path)
    monkeypatch.undo()
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["m.safetensors"]
    np.testing.assert_array_equal(load(path)["w"].numpy(), np.ones(3))


def test_interrupt_mid_write_cleans_up(tmp_path, monkeypatch):
    path = tmp_path / "m"
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        save({"w": np.ones(3)}, path)
    assert os.listdir(tmp_path) == []


def test_overwrite_replaces_atomically(tmp_path):
    path = tmp_path / "m"
    save({"w": np.ones(3)}, path)
    save({"v": np.zeros(2, np.int8)}, path)
    assert list(load(path)) == ["v"] and os.listdir(tmp_path) == ["m"]


# ----- what is at the path -----

def test_fifos_and_folders_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "fifo"
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    os.mkfifo(fifo)
    outcome = []
    reader = threading.Thread(target=lambda: outcome.append(_why(fifo)), daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "tape.load blocked on a FIFO"
    assert "not a regular file" in outcome[0]
    assert "not a regular file" in _why(tmp_path)


def test_saving_to_a_symlink_writes_through_it(tmp_path):
    target, link = tmp_path / "real.safetensors", tmp_path / "latest.safetensors"
    save({"w": np.ones(2)}, target)
    link.symlink_to(target.name)
    save({"w": np.zeros(3)}, link)
    assert link.is_symlink() and load(target)["w"].tolist() == [0, 0, 0]
    assert sorted(os.listdir(tmp_path)) == ["latest.safetensors", "real.safetensors"]


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_save_removes_what_killed_saves_of_the_same_file_left(tmp_path):
    host, dead = tape.atomic._HOST, _dead_pid()
    leftovers = {
        f".m.{host}.{dead}.{'a' * 12}.tmp": False,  # a killed save of m on this host
        f".m.{host}.{os.getpid()}.{'b' * 12}.tmp": True,  # a live save (this process)
        f".m.other-host.{dead}.{'c' * 12}.tmp": True,  # another host may still be writing
        f".n.{host}.{dead}.{'d' * 12}.tmp": True,  # another file's
        ".m.tmp": True,  # not ours
    }
    for name in leftovers:
        (tmp_path / name).write_bytes(b"x")
    save({"w": np.ones(2)}, tmp_path / "m")
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["m"] + [name for name, kept in leftovers.items() if kept])


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_killed_writer_leaves_the_old_file_and_the_next_save_cleans_up(tmp_path):
    path = tmp_path / "m.safetensors"
    save({"w": np.ones(3)}, path)
    before = path.read_bytes()
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import os, sys, time, numpy as np, tape
        def stall(fd):  # killed between writing and renaming
            print("written", flush=True)
            time.sleep(60)
        os.fsync = stall
        tape.save({{"w": np.zeros(1_000_000)}}, {os.fspath(path)!r})
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "written"
    finally:
        writer.kill()
        writer.wait()
    assert path.read_bytes() == before and len(os.listdir(tmp_path)) == 2
    save({"w": np.zeros(2)}, path)
    assert os.listdir(tmp_path) == ["m.safetensors"]
