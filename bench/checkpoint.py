"""Gradient checkpointing: what ``tape.checkpoint`` saves in memory and costs in time.

    python bench/checkpoint.py                 # a table on stdout
    python bench/checkpoint.py --batch 1024    # where activations outweigh parameters
    python bench/checkpoint.py --json out.json

A 20-layer MLP (Linear 256 -> 256 and tanh each, float32, batch 64, loss the mean of the
squared output; ``--depth``, ``--width`` and ``--batch`` change those), tape alone, run
plainly and checkpointed in blocks of k layers (``tape.checkpoint(block, h)`` each).
For each run:

* ``t.memory()``: the bytes the tape keeps for the gradient once the forward is done,
  and of those, the activations: all but the parameters (which exist anyway);
* traced: ``tracemalloc``'s bytes after the forward, and its peak over forward and
  gradient, less those before the step (parameters and the batch exist then); with
  tape's buffer pool off (``kernels.configure(buffers=False)``), so that its idle
  blocks do not count;
* step: the median time of forward + gradient over ``--steps`` steps (pool on, as in
  training; tracemalloc off).
"""

from __future__ import annotations

import argparse
import gc
import json
import time
import tracemalloc

import numpy as np

import kernels
import tape
import tape.nn as nn
from tape.inspect import _held


def model_and_batch(depth, width, batch, seed=0):
    tape.manual_seed(seed)
    layers = [m for _ in range(depth) for m in (nn.Linear(width, width), nn.Tanh())]
    return layers, tape.randn(batch, width)


def forward(layers, x, per_block):
    """The loss on a recording tape: plain (``per_block`` 0) or checkpointed per block."""
    with tape.Tape() as t:
        h = x
        if per_block:
            size = 2 * per_block  # a Linear and a Tanh per layer
            for i in range(0, len(layers), size):
                h = tape.checkpoint(nn.Sequential(*layers[i: i + size]), h)
        else:
            for layer in layers:
                h = layer(h)
        loss = (h * h).mean()
    return t, loss


def activation_bytes(t, params):
    """The bytes of the arrays the tape's entries hold, parameters left out."""
    held = {}
    for entry in t._entries:
        held.update(_held(entry))
    weights = {id(p.data) for p in params}
    return sum(int(a.nbytes) for k, a in held.items() if k not in weights)


def measure(per_block, shape, steps):
    layers, x = model_and_batch(*shape)
    params = [p for layer in layers for p in layer.parameters()]
    t, loss = forward(layers, x, per_block)  # warm-up
    t.gradient(loss, params)
    with kernels.configure(buffers=False):
        del t, loss
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        t, loss = forward(layers, x, per_block)
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
        tape_total, activations = t.memory()["total"], activation_bytes(t, params)
        t.gradient(loss, params)
        peak = tracemalloc.get_traced_memory()[1] - before
        tracemalloc.stop()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        t, loss = forward(layers, x, per_block)
        t.gradient(loss, params)
        times.append(time.perf_counter() - start)
    return {"tape.memory()": tape_total, "activations": activations,
            "traced after forward": kept, "traced peak": peak,
            "step ms": float(np.median(times)) * 1e3}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per run")
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    runs = {"plain": 0, "checkpoint per layer": 1, "checkpoint per 4 layers": 4,
            "checkpoint per 10 layers": 10}
    rows, shape = {}, (args.depth, args.width, args.batch)
    print(f"{args.depth}-layer MLP, width {args.width}, batch {args.batch}")
    print(f"{'run':26} {'t.memory()':>11} {'activations':>12} {'traced after fwd':>17} "
          f"{'traced peak':>12} {'step':>9}")
    for name, per_block in runs.items():
        r = rows[name] = measure(per_block, shape, args.steps)
        print(f"{name:26} {r['tape.memory()'] / 1e6:8.2f} MB {r['activations'] / 1e6:9.2f} MB "
              f"{r['traced after forward'] / 1e6:14.2f} MB {r['traced peak'] / 1e6:9.2f} MB "
              f"{r['step ms']:6.2f} ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
