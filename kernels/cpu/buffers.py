"""Reuse of tape's large temporaries, instead of a new allocation each step.

glibc gives large freed blocks back to the operating system (it trims the top of its
heap, and maps the largest blocks separately); a training step then faults the same
pages in again, ~4 KiB at a time, each fault costing a microsecond or two. Measured on
the LeNet step: about 3,000 page faults per step, 12.3 ms against 8.8 ms without them.
Raising glibc's thresholds (``mallopt``) cured it but changed every allocation in the
process, so tape keeps its own: ``empty(shape, dtype)`` hands out a view of a block
allocated once and kept, and the block is free again as soon as nothing refers to it
any more (its reference count says so). Steps repeat their shapes, so after the first
step every large temporary is a block that is already mapped.

Only arrays of at least ``MIN_BYTES`` are pooled; at most ``MAX_IDLE_BYTES`` of unused
blocks are kept. The setting ``buffers`` (kernels/config.py; ``TAPE_BUFFERS=0``,
``kernels.configure(buffers=False)``) turns the pool off: plain ``np.empty``.
"""

from __future__ import annotations

import math
import sys
import threading

import numpy as np

from .. import config

MIN_BYTES = 128 << 10  # below this, malloc reuses freed memory without faults anyway
MAX_IDLE_BYTES = 512 << 20
PAGE = 4096

_blocks: dict[int, list[np.ndarray]] = {}  # size in bytes -> blocks (flat uint8 arrays)
_lock = threading.Lock()
_IDLE_REFS = 3  # a block nobody uses: its list's slot, the loop variable, getrefcount's arg


def empty(shape, dtype):
    """An uninitialised C-contiguous array, from a reused block when it is large."""
    dtype = np.dtype(dtype)
    count = math.prod(shape)
    nbytes = count * dtype.itemsize
    if nbytes < MIN_BYTES or not config.current().buffers:
        return np.empty(shape, dtype)
    size = -(-nbytes // PAGE) * PAGE
    with _lock:
        blocks = _blocks.setdefault(size, [])
        for block in blocks:
            if sys.getrefcount(block) == _IDLE_REFS:
                break
        else:
            _trim()
            block = np.empty(size, np.uint8)
            blocks.append(block)
        return block[:nbytes].view(dtype).reshape(shape)


def _trim():
    """Before a new block: release unused blocks while more than
    MAX_IDLE_BYTES of them are kept (the largest first)."""
    idle = []
    for size, blocks in _blocks.items():
        for block in blocks:
            if sys.getrefcount(block) == _IDLE_REFS:
                idle.append((size, id(block)))
    total = sum(size for size, _ in idle)
    for size, key in sorted(idle, reverse=True):
        if total <= MAX_IDLE_BYTES:
            break
        _blocks[size] = [b for b in _blocks[size] if id(b) != key]
        total -= size


def pooled_bytes():
    """Bytes held in blocks, in use or not (for tests and diagnostics)."""
    with _lock:
        return sum(size * len(blocks) for size, blocks in _blocks.items())


def clear():
    """Forget every unused block (blocks in use stay valid; they are freed with their
    last view)."""
    with _lock:
        _blocks.clear()
