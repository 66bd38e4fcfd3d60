"""Saving and loading state dicts: safetensors files, checksummed, written atomically.

The format is plain safetensors (an 8-byte little-endian header length, a JSON header,
then the raw little-endian bytes), so other tools can read our files. Loading never
unpickles anything: it only parses JSON and copies bytes. ``__metadata__`` carries a
format marker and a SHA-256 of the header and the data, so a truncated or altered file
raises ``ValueError`` instead of returning wrong numbers.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets

import numpy as np

from . import backend
from .tensor import Tensor, wrap

FORMAT = "tape"
VERSION = "1"
MAX_HEADER = 100 * 1024 * 1024  # the limit the safetensors package itself enforces

_DTYPES = {
    "BOOL": np.dtype(np.bool_), "U8": np.dtype("u1"), "I8": np.dtype("i1"),
    "I16": np.dtype("<i2"), "U16": np.dtype("<u2"), "F16": np.dtype("<f2"),
    "I32": np.dtype("<i4"), "U32": np.dtype("<u4"), "F32": np.dtype("<f4"),
    "I64": np.dtype("<i8"), "U64": np.dtype("<u8"), "F64": np.dtype("<f8"),
}
_NAMES = {(dt.kind, dt.itemsize): name for name, dt in _DTYPES.items()}


# ----- saving -----

def _as_array(name, value) -> np.ndarray:
    """The host array for one entry, contiguous and little-endian."""
    if isinstance(value, Tensor):
        value = value.data
    if not (isinstance(value, (np.ndarray, np.generic)) or backend.is_cupy(value)):
        raise TypeError(
            f"tape.save: {name!r} is a {type(value).__name__}; values must be tensors or "
            "arrays (put other settings in metadata=...)"
        )
    array = backend.to_numpy(value)
    if (array.dtype.kind, array.dtype.itemsize) not in _NAMES:
        raise TypeError(
            f"tape.save: {name!r} has dtype {array.dtype}, which safetensors cannot hold; "
            "use bool, (u)int8-64 or float16/32/64"
        )
    return np.asarray(array, dtype=array.dtype.newbyteorder("<"), order="C")  # keeps 0-d


def _canonical(header: dict) -> bytes:
    """The header bytes that the checksum covers (the checksum itself left out)."""
    meta = dict(header["__metadata__"])
    meta.pop("sha256", None)
    return json.dumps({**header, "__metadata__": meta}, sort_keys=True,
                      separators=(",", ":")).encode()


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows, where folders cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save(obj: dict, path, metadata: dict | None = None) -> None:
    """Write a state dict (name -> tensor or array) to ``path``, atomically.

    The file is a safetensors file with a checksum; a crash mid-write leaves any old
    file at ``path`` as it was. ``metadata`` is any JSON-serialisable dict, returned by
    ``load(path, with_metadata=True)``.

    >>> tape.save({"w": tape.ones(2, 3)}, "weights.safetensors")
    >>> tape.load("weights.safetensors")["w"].shape
    (2, 3)
    """
    if not isinstance(obj, dict):
        raise TypeError(
            f"tape.save takes a dict of name -> tensor (a state_dict), got {type(obj).__name__}"
        )
    meta = {"format": FORMAT, "version": VERSION}
    if metadata is not None:
        try:
            meta["metadata"] = json.dumps(metadata, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise TypeError(f"tape.save: metadata must be JSON-serialisable ({e})") from None
    header, arrays, offset = {"__metadata__": meta}, [], 0
    for name, value in obj.items():
        if not isinstance(name, str):
            raise TypeError(f"tape.save: names must be strings, got {name!r}")
        if name == "__metadata__":
            raise ValueError("tape.save: '__metadata__' is reserved; pass metadata=... instead")
        array = _as_array(name, value)
        name_dtype = _NAMES[array.dtype.kind, array.dtype.itemsize]
        header[name] = {"dtype": name_dtype, "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        arrays.append(array)
        offset += array.nbytes
    digest = hashlib.sha256(_canonical(header))
    for array in arrays:
        digest.update(array.reshape(-1).view(np.uint8))
    meta["sha256"] = digest.hexdigest()
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors does
    _write_atomic(os.fspath(path), [len(text).to_bytes(8, "little"), text] + arrays)


def _write_atomic(path: str, chunks) -> None:
    """Write to a temporary file beside ``path``, fsync it, then rename it over ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk if isinstance(chunk, bytes) else chunk.reshape(-1).view(np.uint8))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(folder)


# ----- loading -----

def _bad(path, why: str) -> ValueError:
    return ValueError(f"tape.load: {os.fspath(path)!r} {why}")


def _read_exact(f, n: int) -> bytearray:
    """Exactly ``n`` bytes (``n`` is already checked against the file size)."""
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = f.readinto(view[got:])
        if not k:
            break
        got += k
    return buf if got == n else buf[:got]


def _parse_header(path, f, size: int) -> tuple[dict, int]:
    if size < 8:
        raise _bad(path, f"is truncated or not a safetensors file: only {size} bytes")
    n = int.from_bytes(f.read(8), "little")
    first = f.read(1)
    if not first:
        raise _bad(path, "is truncated: it ends after the 8-byte header length")
    if first != b"{" or n > MAX_HEADER:
        raise _bad(path, "is not a safetensors file (no JSON header after the first 8 bytes)")
    if n > size - 8:
        raise _bad(path, f"is truncated: its header needs {n} bytes, the file holds {size - 8}")
    raw = first + _read_exact(f, n - 1)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _bad(path, "is not a safetensors file, or is corrupt: its header is not "
                         "valid JSON") from None
    if not isinstance(header, dict):
        raise _bad(path, "is not a safetensors file: its header is not a JSON object")
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "sha256" not in meta:
        raise _bad(path, "is a safetensors file but not one written by tape.save (it has no "
                         "tape format marker and checksum), so it cannot be verified")
    return header, n


def _layout(path, header: dict, data_size: int) -> list:
    """(name, dtype, shape, begin, end) per tensor, checked to tile the data exactly."""
    entries = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        ok = (isinstance(info, dict) and info.get("dtype") in _DTYPES
              and isinstance(info.get("shape"), list) and isinstance(info.get("data_offsets"), list)
              and len(info["data_offsets"]) == 2
              and all(type(v) is int and v >= 0 for v in info["shape"] + info["data_offsets"]))
        if not ok:
            raise _bad(path, f"has a malformed header entry for {name!r}: {str(info)[:200]}")
        dtype, (begin, end) = _DTYPES[info["dtype"]], info["data_offsets"]
        if end < begin or end - begin != math.prod(info["shape"]) * dtype.itemsize:
            raise _bad(path, f"is corrupt: the offsets of {name!r} do not match its shape")
        entries.append((name, dtype, tuple(info["shape"]), begin, end))
    position = 0
    for _, _, _, begin, end in sorted(entries, key=lambda e: (e[3], e[4])):
        if begin != position:
            raise _bad(path, "is corrupt: its tensors overlap or leave gaps in the data")
        position = end
    if position > data_size:
        raise _bad(path, f"is truncated: its tensors need {position} bytes of data, "
                         f"the file holds {data_size}")
    if position < data_size:
        raise _bad(path, f"is corrupt: {data_size - position} bytes follow the last tensor")
    return entries


def load(path, with_metadata: bool = False, device=None):
    """The dict of name -> tensor saved by ``tape.save``, in saved order, on the CPU
    or on ``device`` ("cuda": copied there once verified).

    Raises ``ValueError`` when the file is truncated, altered or not a tape file. With
    ``with_metadata=True`` returns ``(tensors, metadata)``; metadata is ``{}`` when
    none was saved.
    """
    if device is not None:
        backend.module_for(device)  # a clear error for an unknown or unusable device first
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        header, n = _parse_header(path, f, size)
        data_size = size - 8 - n
        entries = _layout(path, header, data_size)
        f.seek(8 + n)
        data = _read_exact(f, data_size)
    if len(data) != data_size:
        raise _bad(path, "is truncated (it shrank while being read)")
    digest = hashlib.sha256(_canonical(header))
    digest.update(data)
    if digest.hexdigest() != header["__metadata__"]["sha256"]:
        raise _bad(path, "is corrupt: checksum mismatch (the file was altered or damaged)")
    tensors = {}
    for name, dtype, shape, begin, end in entries:
        count = (end - begin) // dtype.itemsize
        if count == 0:
            array = np.empty(shape, dtype)
        else:  # a view of the one buffer read; copied only when misaligned
            array = np.frombuffer(data, dtype=dtype, count=count, offset=begin).reshape(shape)
            if not array.flags.aligned:
                array = array.copy()
        array = array.astype(dtype.newbyteorder("="), copy=False)
        tensors[name] = wrap(backend.to_device(array, device))
    if not with_metadata:
        return tensors
    text = header["__metadata__"].get("metadata")
    return tensors, ({} if text is None else json.loads(text))
