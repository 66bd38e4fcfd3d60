"""Per-op overhead: a chain of tiny elementwise ops on a (4,) tensor, forward + gradient.

The arrays are so small that the time is all bookkeeping: recording each op on the tape
and replaying its rule. (PyTorch's time for the same chain: bench/compare.py.)
"""

from workloads import CHAIN_REPEATS, tape_step


def test_chain(benchmark):
    benchmark.group = f"chain of {5 * CHAIN_REPEATS} ops on a (4,) tensor, fwd + grad"
    benchmark(tape_step("chain"))
