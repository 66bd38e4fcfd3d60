"""tape.io: safetensors round trips, checksums, atomic writes, hostile files."""

import json
import os
import pickle
import tracemalloc

import numpy as np
import pytest

import tape
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


def test_bad_inputs_are_refused_before_writing(tmp_path):
    path = tmp_path / "m"
    with pytest.raises(TypeError, match="dict of name"):
        save([np.ones(2)], path)
    with pytest.raises(TypeError, match="'w' is a list"):
        save({"w": [1.0, 2.0]}, path)
    with pytest.raises(TypeError, match="complex128"):
        save({"w": np.ones(2, np.complex128)}, path)
    with pytest.raises(TypeError, match="JSON"):
        save({"w": np.ones(2)}, path, metadata={"f": object()})
    with pytest.raises(ValueError, match="reserved"):
        save({"__metadata__": np.ones(2)}, path)
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
    del header["__metadata__"]  # a plain safetensors file from another tool
    _rewrite(saved, header, raw[8 + n:])
    assert "not one written by tape.save" in _why(saved)


def test_malformed_entries_and_offsets(saved):
    raw, n, header = _header(saved)
    data = raw[8 + n:]
    for change, message in [
        (lambda h: h["w"].update(dtype="C64"), "malformed"),
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
