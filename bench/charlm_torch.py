"""examples/charlm.py's twin in PyTorch: the same model code (examples/chardata.py, with
``torch.nn``), data, batches, schedule and optimizer, default settings otherwise. Prints one
JSON line: the validation losses at the same steps and the training steps' times.

    python bench/charlm_torch.py --steps 1500

This process never imports tape (bench/charlm.py compares the two, each in its own).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "examples"))

import chardata  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--context", type=int, default=64)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    import torch
    import torch.nn.functional as F

    torch.manual_seed(args.seed)
    data = chardata.CharData()
    model = chardata.make_model(torch.nn, data.vocab_size, args.context, args.d_model,
                                args.heads, args.layers, 4 * args.d_model, args.dropout)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: chardata.lr_factor(s, args.warmup, args.steps))
    mask = torch.from_numpy(chardata.causal_mask(args.context))
    val_batches = data.val_batches(args.batch_size, args.context, 8)
    rng = np.random.default_rng(args.seed)

    def loss_of(x, y):
        logits = model(torch.from_numpy(x), mask)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                               torch.from_numpy(y.reshape(-1)))

    out = {"eval_step": [], "val_loss": [], "step_seconds": []}
    for step in range(1, args.steps + 1):
        began = time.perf_counter()
        x, y = data.batch("train", args.batch_size, args.context, rng)
        opt.zero_grad()
        loss_of(x, y).backward()
        opt.step()
        schedule.step()
        out["step_seconds"].append(time.perf_counter() - began)
        if step % args.eval_every == 0 or step == args.steps:
            model.eval()
            with torch.no_grad():
                val = float(np.mean([loss_of(x, y).item() for x, y in val_batches]))
            model.train()
            out["eval_step"].append(step)
            out["val_loss"].append(val)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
