"""Run small kernels on one thread: waking a passive pool costs ~40 us on this 2-vCPU VM."""

from __future__ import annotations

import numba

SMALL_WORK = 1 << 18  # elements; below this, waking the pool (~40 us) costs more than it saves


class parallel_threads:
    """``with parallel_threads(n_elements):`` uses one numba thread when the work is small."""

    __slots__ = ("small", "prev")

    def __init__(self, work: int):
        self.small = work < SMALL_WORK

    def __enter__(self):
        if self.small:
            self.prev = numba.get_num_threads()
            numba.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        if self.small:
            numba.set_num_threads(self.prev)
        return False
