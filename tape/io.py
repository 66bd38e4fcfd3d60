"""Saving and loading: safetensors files, checksummed, written atomically.

The format is plain safetensors (an 8-byte little-endian header length, a JSON header,
then the raw little-endian bytes), so other tools read our files and we read theirs.
Loading never unpickles anything: it only parses JSON and copies bytes.

What tape adds lives in the header's ``__metadata__`` (string values, as safetensors
requires): a format marker and version, a SHA-256 per tensor ("digests") and one over
the header ("sha256": every tensor's name, dtype and shape and the rest of the metadata,
not the byte offsets, so a file rewritten with the tensors in another order still
verifies). A truncated or altered tape file raises ``ValueError``, never wrong numbers.

Nested checkpoints (dicts and lists of tensors, numbers, strings, ...) keep their tensors
as ordinary named entries, named by their path ("optimizer/state/0/exp_avg"), and the
rest as a JSON "structure" in the metadata: a tree whose nodes are tagged
``{"dict": [[key, node], ...]}``, ``{"list": [...]}``, ``{"tuple": [...]}``,
``{"tensor": name}`` and ``{"float": "nan" | "inf" | "-inf"}``; other JSON values are
leaves. A flat dict of name -> tensor (a state dict) needs no structure.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat

import numpy as np

from . import backend
from .atomic import write_atomic
from .tensor import Tensor, wrap

FORMAT = "tape"
VERSION = "2"  # version 1 (one checksum over the header and data in file order) still loads
MAX_HEADER = 100 * 1024 * 1024  # the limit the safetensors package itself enforces
MAX_ELEMENTS = 2**62  # larger shapes are refused before numpy sees them
MAX_DEPTH = 100  # containers nested deeper are refused by save, so that load can parse them

_DTYPES = {
    "BOOL": np.dtype(np.bool_), "U8": np.dtype("u1"), "I8": np.dtype("i1"),
    "I16": np.dtype("<i2"), "U16": np.dtype("<u2"), "F16": np.dtype("<f2"),
    "I32": np.dtype("<i4"), "U32": np.dtype("<u4"), "F32": np.dtype("<f4"),
    "I64": np.dtype("<i8"), "U64": np.dtype("<u8"), "F64": np.dtype("<f8"),
}
_NAMES = {(dt.kind, dt.itemsize): name for name, dt in _DTYPES.items()}
# Read but never written: bfloat16 is float32's top half, so it widens exactly.
_STORED = {**_DTYPES, "BF16": np.dtype("<u2")}


def _is_array(value) -> bool:
    return isinstance(value, (Tensor, np.ndarray, np.generic)) or backend.is_cupy(value)


# ----- saving -----

def _as_array(name, value) -> np.ndarray:
    """The host array for one tensor, contiguous and little-endian."""
    array = backend.to_numpy(value.data if isinstance(value, Tensor) else value)
    if (array.dtype.kind, array.dtype.itemsize) not in _NAMES:
        raise TypeError(
            f"tape.save: {name!r} has dtype {array.dtype}, which safetensors cannot hold; "
            "use bool, (u)int8-64 or float16/32/64"
        )
    return np.asarray(array, dtype=array.dtype.newbyteorder("<"), order="C")  # keeps 0-d


def _flatten(obj) -> tuple[dict, object]:
    """(name -> array, the JSON structure or None when ``obj`` is a flat state dict)."""
    if isinstance(obj, dict) and all(isinstance(k, str) and _is_array(v)
                                     for k, v in obj.items()):
        if "__metadata__" in obj:
            raise ValueError("tape.save: '__metadata__' is reserved; pass metadata=... instead")
        return {name: _as_array(name, value) for name, value in obj.items()}, None
    if not isinstance(obj, (dict, list, tuple)):
        raise TypeError(
            f"tape.save takes a state dict or a nested structure of dicts and lists (e.g. "
            f"{{'model': model.state_dict(), 'epoch': 3}}), got {type(obj).__name__}"
        )
    arrays = {}
    return arrays, _encode(obj, (), arrays, set())


def _encode(value, path: tuple, arrays: dict, open_containers: set):
    """``value`` as a structure node; its tensors go into ``arrays`` under their path."""
    where = "/".join(path) or "the saved object"
    if _is_array(value):
        name = base = "/".join(path) or "tensor"
        while name in arrays or name == "__metadata__":  # keys holding "/" can collide
            name = f"{base}#{len(arrays)}"
        arrays[name] = _as_array(name, value)
        return {"tensor": name}
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"float": repr(value)}
    if not isinstance(value, (dict, list, tuple)):
        raise TypeError(
            f"tape.save: {where!r} is of type {type(value).__name__}; the leaves of a checkpoint "
            "are tensors, arrays, Python numbers, strings, bools or None"
        )
    if id(value) in open_containers:
        raise ValueError(f"tape.save: {where!r} contains itself, which a file cannot hold")
    if len(path) >= MAX_DEPTH:
        raise ValueError(f"tape.save: {where[:200]!r} is nested more than {MAX_DEPTH} "
                         "containers deep; flatten the checkpoint")
    open_containers.add(id(value))
    try:
        if isinstance(value, dict):
            items = []
            for key, item in value.items():
                if isinstance(key, np.integer):
                    key = int(key)
                if isinstance(key, bool) or not isinstance(key, (str, int)):
                    raise TypeError(f"tape.save: {where!r} has the key {key!r}; dict keys "
                                    "must be strings or ints")
                items.append([key, _encode(item, path + (str(key),), arrays, open_containers)])
            return {"dict": items}
        tag = "tuple" if isinstance(value, tuple) else "list"
        return {tag: [_encode(item, path + (str(i),), arrays, open_containers)
                      for i, item in enumerate(value)]}
    finally:
        open_containers.discard(id(value))


def _checksum(header: dict) -> str:
    """SHA-256 of the metadata (less this checksum) and every tensor's name, dtype and
    shape: not the offsets, so the order of the tensors in the file does not matter."""
    meta = {k: v for k, v in header["__metadata__"].items() if k != "sha256"}
    tensors = {k: [v["dtype"], v["shape"]] for k, v in header.items() if k != "__metadata__"}
    text = json.dumps({"metadata": meta, "tensors": tensors}, sort_keys=True,
                      separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _digest(array_bytes) -> str:
    return hashlib.sha256(array_bytes).hexdigest()


def save(obj, path, metadata: dict | None = None) -> None:
    """Write a state dict, or a nested checkpoint, to ``path`` atomically.

    ``obj`` is a dict of name -> tensor (or array), or dicts and lists nesting tensors,
    arrays, Python numbers, strings, bools and None: ``{"model": model.state_dict(),
    "optimizer": opt.state_dict(), "epoch": 3, "rng": tape.get_rng_state()}``. The
    file is a safetensors file with checksums; a crash mid-write leaves any old file at
    ``path`` as it was. ``metadata`` is any JSON-serialisable dict, returned by
    ``load(path, with_metadata=True)``. A symlink at ``path`` is written through.

    >>> tape.save({"w": tape.ones(2, 3)}, "weights.safetensors")
    >>> tape.load("weights.safetensors")["w"].shape
    (2, 3)
    """
    arrays, structure = _flatten(obj)
    meta = {"format": FORMAT, "version": VERSION}
    if metadata is not None:
        try:
            meta["metadata"] = json.dumps(metadata, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as e:
            raise TypeError(f"tape.save: metadata must be JSON-serialisable ({e})") from None
    if structure is not None:
        meta["structure"] = json.dumps(structure, separators=(",", ":"))
    header, offset = {"__metadata__": meta}, 0
    for name, array in arrays.items():
        header[name] = {"dtype": _NAMES[array.dtype.kind, array.dtype.itemsize],
                        "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    meta["digests"] = json.dumps({name: _digest(_bytes(a)) for name, a in arrays.items()},
                                 separators=(",", ":"))
    meta["sha256"] = _checksum(header)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors does
    chunks = [len(text).to_bytes(8, "little"), text] + [_bytes(a) for a in arrays.values()]
    write_atomic(os.path.realpath(os.fspath(path)), chunks)


def _bytes(array: np.ndarray) -> memoryview:
    return memoryview(array.reshape(-1).view(np.uint8))


# ----- loading -----

def _bad(path, why: str) -> ValueError:
    return ValueError(f"tape.load: {os.fspath(path)!r} {why}")


def _open_regular(path):
    """The open file and its size; FIFOs, devices and folders are refused (a FIFO would
    block forever), without blocking on them."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _bad(path, "is not a regular file (a folder, FIFO or device); tape.load "
                             "reads saved files only")
        return os.fdopen(fd, "rb"), info.st_size
    except BaseException:
        os.close(fd)
        raise


def _read_exact(f, n: int) -> bytearray:
    """``n`` bytes, or fewer if the file ends first."""
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = f.readinto(view[got:])
        if not k:
            break
        got += k
    return buf if got == n else buf[:got]


def _json(path, text, what: str):
    try:
        return json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _bad(path, f"is not a safetensors file, or is corrupt: its {what} is not "
                         "valid JSON (or is nested too deeply)") from None


def _parse_header(path, f, size: int) -> tuple[dict, int]:
    if size < 8:
        raise _bad(path, f"is truncated or not a safetensors file: only {size} bytes")
    n = int.from_bytes(f.read(8), "little")
    first = f.read(1)
    if not first:
        raise _bad(path, "is truncated: it ends after the 8-byte header length")
    if first != b"{" or not 2 <= n <= MAX_HEADER:
        raise _bad(path, "is not a safetensors file (no JSON header after the first 8 bytes)")
    if n > size - 8:
        raise _bad(path, f"is truncated: its header needs {n} bytes, the file holds {size - 8}")
    header = _json(path, bytes(first + _read_exact(f, n - 1)), "header")
    if not isinstance(header, dict):
        raise _bad(path, "is not a safetensors file: its header is not a JSON object")
    meta = header.setdefault("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise _bad(path, "has a malformed __metadata__ (it must map strings to strings)")
    return header, n


def _layout(path, header: dict, data_size: int) -> dict:
    """name -> (dtype name, shape, begin, end), checked to tile the data exactly."""
    entries = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        ok = (isinstance(info, dict) and isinstance(info.get("dtype"), str)
              and isinstance(info.get("shape"), list) and isinstance(info.get("data_offsets"), list)
              and len(info["data_offsets"]) == 2
              and all(type(v) is int and v >= 0 for v in info["shape"] + info["data_offsets"]))
        if not ok:
            raise _bad(path, f"has a malformed header entry for {name!r}: {str(info)[:200]}")
        if info["dtype"] not in _STORED:
            raise _bad(path, f"holds {name!r} as {info['dtype']}, a dtype tape cannot load "
                             f"(it reads {', '.join(_STORED)}); convert it with the tool that "
                             "wrote it")
        shape, (begin, end) = tuple(info["shape"]), info["data_offsets"]
        if math.prod(max(d, 1) for d in shape) > MAX_ELEMENTS:
            raise _bad(path, f"is corrupt: {name!r} has the impossible shape {shape}")
        if end < begin or end - begin != math.prod(shape) * _STORED[info["dtype"]].itemsize:
            raise _bad(path, f"is corrupt: the offsets of {name!r} do not match its shape")
        entries[name] = (info["dtype"], shape, begin, end)
    position = 0
    for _, _, begin, end in sorted(entries.values(), key=lambda e: (e[2], e[3])):
        if begin != position:
            raise _bad(path, "is corrupt: its tensors overlap or leave gaps in the data")
        position = end
    if position > data_size:
        raise _bad(path, f"is truncated: its tensors need {position} bytes of data, "
                         f"the file holds {data_size}")
    if position < data_size:
        raise _bad(path, f"is corrupt: {data_size - position} bytes follow the last tensor")
    return entries


def _legacy_checksum(header: dict, raw: dict, entries: dict) -> str:
    """Version 1's checksum: the header with offsets, then the data in file order."""
    meta = {k: v for k, v in header["__metadata__"].items() if k != "sha256"}
    text = json.dumps({**header, "__metadata__": meta}, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(text.encode())
    for name in sorted(entries, key=lambda k: entries[k][2]):
        digest.update(raw[name])
    return digest.hexdigest()


def _verify(path, header: dict, raw: dict, entries: dict) -> None:
    """Raise unless the tensors read (``raw``, name -> bytes) are what tape.save wrote."""
    meta = header["__metadata__"]
    if meta.get("version") == "1":
        if "sha256" not in meta or len(raw) != len(entries):
            raise _bad(path, "is a version-1 tape file, which can only be loaded whole")
        if _legacy_checksum(header, raw, entries) != meta["sha256"]:
            raise _bad(path, "is corrupt: checksum mismatch (the file was altered or damaged)")
        return
    if meta.get("version") != VERSION:
        raise _bad(path, f"was written by a newer tape (format version "
                         f"{meta.get('version')!r}); upgrade tape to load it")
    if meta.get("sha256") != _checksum(header):
        raise _bad(path, "is corrupt: checksum mismatch (the file was altered or damaged)")
    digests = _json(path, meta.get("digests", "null"), "list of digests")
    if not isinstance(digests, dict) or set(digests) != set(entries):
        raise _bad(path, "is corrupt: its digests do not list its tensors")
    for name, data in raw.items():
        if _digest(data) != digests[name]:
            raise _bad(path, f"is corrupt: checksum mismatch in {name!r} (the file was "
                             "altered or damaged)")


def _array(dtype: str, shape: tuple, data: bytearray) -> np.ndarray:
    """The native-order array over ``data`` (BF16 widened to float32, exactly)."""
    stored = _STORED[dtype]
    array = np.frombuffer(data, dtype=stored).reshape(shape) if data else np.empty(shape, stored)
    if dtype == "BF16":
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array.astype(stored.newbyteorder("="), copy=False)


class _Malformed(Exception):
    pass


def _decode(node, tensors: dict):
    """The object a structure node describes (see the module doc)."""
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if not (isinstance(node, dict) and len(node) == 1):
        raise _Malformed(str(node)[:100])
    (tag, body), = node.items()
    if tag == "tensor" and isinstance(body, str) and body in tensors:
        return tensors[body]
    if tag == "float" and body in ("nan", "inf", "-inf"):
        return float(body)
    if tag in ("list", "tuple") and isinstance(body, list):
        items = [_decode(item, tensors) for item in body]
        return tuple(items) if tag == "tuple" else items
    if tag == "dict" and isinstance(body, list) and all(
            isinstance(p, list) and len(p) == 2 and type(p[0]) in (str, int) for p in body):
        return {key: _decode(item, tensors) for key, item in body}
    raise _Malformed(str(node)[:100])


def load(path, with_metadata: bool = False, device=None, names=None, verify: bool = False):
    """What ``tape.save`` wrote (a dict of name -> tensor, or the nested checkpoint), on
    the CPU or on ``device`` ("cuda": copied there once verified).

    Any safetensors file loads, also those written by PyTorch, Hugging Face or the
    ``safetensors`` package (BF16 becomes float32, exactly); they carry no tape checksum,
    so ``verify=True`` raises for them. ``names=[...]`` reads only those tensors and
    returns them as a dict of name -> tensor. Raises ``ValueError`` when the file is
    truncated, altered or not a safetensors file. With ``with_metadata=True`` returns
    ``(tensors, metadata)``: what ``save`` got as ``metadata`` ({} when none), or the
    string metadata of another tool's file.
    """
    if device is not None:
        backend.module_for(device)  # a clear error for an unknown or unusable device first
    if names is not None and (isinstance(names, str)
                              or not all(isinstance(k, str) for k in names)):
        raise TypeError(f"tape.load: names takes a list of tensor names, got {names!r}")
    f, size = _open_regular(path)
    with f:
        header, n = _parse_header(path, f, size)
        entries = _layout(path, header, size - 8 - n)
        meta = header["__metadata__"]
        ours = meta.get("format") == FORMAT
        if not ours and verify:
            raise _bad(path, "has no tape checksum (another tool wrote it), so verify=True "
                             "cannot be satisfied; load it without verify")
        wanted = list(entries) if names is None else list(dict.fromkeys(names))
        missing = [k for k in wanted if k not in entries]
        if missing:
            raise _bad(path, f"has no tensor named {', '.join(map(repr, missing))}; it holds "
                             f"{', '.join(map(repr, list(entries)[:20]))}"
                             + (" ..." if len(entries) > 20 else ""))
        if ours and meta.get("version") == "1":
            wanted_bytes = list(entries)  # its one checksum covers every byte
        else:
            wanted_bytes = wanted
        raw = {}
        for name in wanted_bytes:
            _, _, begin, end = entries[name]
            f.seek(8 + n + begin)
            raw[name] = _read_exact(f, end - begin)
            if len(raw[name]) != end - begin:
                raise _bad(path, "is truncated (it shrank while being read)")
    if ours:
        _verify(path, header, raw, entries)
    tensors = {name: wrap(backend.to_device(_array(*entries[name][:2], raw[name]), device))
               for name in wanted}
    result = tensors
    if ours and names is None and "structure" in meta:
        try:
            result = _decode(_json(path, meta["structure"], "structure"), tensors)
        except (_Malformed, RecursionError) as e:
            raise _bad(path, f"has a malformed structure near {e}") from None
    if not with_metadata:
        return result
    if not ours:
        return result, {k: v for k, v in meta.items()}
    text = meta.get("metadata")
    return result, ({} if text is None else _json(path, text, "metadata"))
