"""tape and PyTorch in one process, taking turns: the steadiest ratio this VM gives.

    python bench/interleaved.py [--rounds 8] [--json PATH]

pytest-benchmark times all of tape's rounds of a workload, then all of PyTorch's; on
this shared VM the machine's speed drifts by 20-50% within a minute, and that drift
lands in the ratio. Here each round times both libraries back to back (the median of
a few steps each), and the ratio reported is the median over rounds of the per-round
ratios. The workloads are alone.py's (the suites' own).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from alone import median_ms, tape_steps, torch_steps
from conftest import environment  # the same record of machine and versions as the suites


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()
    ours, theirs = tape_steps(), torch_steps()
    results = {}
    for name in ours:
        n = 101 if "chain" in name else 11
        a, b = [], []
        for _ in range(args.rounds):
            a.append(median_ms(ours[name], n, warm=1))
            b.append(median_ms(theirs[name], n, warm=1))
        ratios = np.array(a) / np.array(b)
        results[name] = {"tape_ms": min(a), "torch_ms": min(b), "ratio": float(np.median(ratios)),
                         "ratio_range": [float(ratios.min()), float(ratios.max())]}
        r = results[name]
        print(f"{name:32s} tape {r['tape_ms']:8.3f} ms  torch {r['torch_ms']:8.3f} ms  "
              f"ratio {r['ratio']:.2f} ({ratios.min():.2f}-{ratios.max():.2f})", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": environment(), "interleaved": results}, f, indent=2)


if __name__ == "__main__":
    main()
