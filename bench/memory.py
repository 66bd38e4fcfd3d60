"""Activation memory: the bytes autodiff keeps alive for the gradient, tape against PyTorch.

    python bench/memory.py                 # MLP and LeNet, a table on stdout
    python bench/memory.py --json out.json

Each library is measured in a process of its own (``--side`` runs one), after a warm-up
step, at the moment the forward has finished and the gradient is about to be asked for:

* tape: ``tracemalloc``'s traced bytes then, minus those before the forward (parameters,
  the input batch and the optimizer's buffers already exist then, so they are excluded),
  with tape's buffer pool off (``TAPE_BUFFERS=0``: its idle blocks are not the tape's).
  ``t.memory()``, the tape's own account, is reported beside it.
* PyTorch: the tensors autograd saves, seen by ``torch.autograd.graph.saved_tensors_hooks``,
  each storage counted once, parameters and the input batch excluded.

Both count what the forward leaves alive for the backward; neither counts the loss.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from workloads import MODELS, batch, model_shape  # noqa: E402  (imports no library)


def tape_bytes(name):
    import tracemalloc

    import tape
    import tape.nn as nn

    make, shape = model_shape(name)
    model = make(nn)
    params = list(model.parameters())
    loss_fn = nn.CrossEntropyLoss()
    x, y = (tape.tensor(a) for a in batch(shape))

    def forward():
        with tape.Tape() as t:
            loss = loss_fn(model(x), y)
        return t, loss

    t, loss = forward()  # warm-up: compiled kernels, caches
    t.gradient(loss, params)
    del t, loss
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    t, loss = forward()
    gc.collect()
    kept = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return {"traced": kept, "tape.memory()": t.memory()["total"]}


def torch_bytes(name):
    import torch

    make, shape = model_shape(name)
    model = make(torch.nn)
    xa, ya = batch(shape)
    x, y = torch.from_numpy(xa), torch.from_numpy(ya)
    excluded = {p.untyped_storage().data_ptr() for p in model.parameters()}
    excluded.add(x.untyped_storage().data_ptr())
    storages = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in excluded:
            storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        torch.nn.functional.cross_entropy(model(x), y)
    return {"saved": sum(storages.values())}


def run_side(side, name):
    """One measurement in a fresh process holding only that side's library."""
    env = dict(os.environ, TAPE_BUFFERS="0")
    out = subprocess.run([sys.executable, __file__, "--side", side, "--model", name],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--side", choices=["tape", "torch"], help="measure one side here")
    parser.add_argument("--model", choices=list(MODELS), help="with --side: the model")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if args.side:
        fn = tape_bytes if args.side == "tape" else torch_bytes
        print(json.dumps(fn(args.model)))
        return
    rows = {}
    print(f"{'model':8} {'tape (traced)':>14} {'t.memory()':>12} {'PyTorch':>10} {'ratio':>6}")
    for name in MODELS:
        ours, theirs = run_side("tape", name), run_side("torch", name)
        ratio = ours["traced"] / theirs["saved"]
        rows[name] = {**ours, "torch": theirs["saved"], "ratio": ratio}
        print(f"{name:8} {ours['traced'] / 1e6:11.2f} MB {ours['tape.memory()'] / 1e6:9.2f} MB "
              f"{theirs['saved'] / 1e6:7.2f} MB {ratio:5.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
