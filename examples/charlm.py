"""A character-level Transformer language model, trained on the text that ships with Python.

    python examples/charlm.py                     # about 3 minutes on 2 CPU cores
    python examples/charlm.py --steps 200         # a quick look
    python examples/charlm.py --resume runs/charlm.ckpt

The text is the standard library's documentation topics (``pydoc_data.topics``, 465 KB):
nothing to download. 90% trains, 10% validates. The model (``chardata.make_model``: token
and position embeddings, pre-norm ``TransformerEncoderLayer``s with a causal mask, a
linear head) predicts each next character; AdamW with warm-up and cosine decay. Shows a
progress bar, evaluates the validation loss every ``--eval-every`` steps, saves a
checkpoint then (``--resume`` continues it, bit for bit), plots the losses, and prints a
few lines of text sampled from the trained model. ``bench/charlm_torch.py`` trains the
same model with PyTorch, for comparison.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import chardata  # noqa: E402  (beside this file)

import tape  # noqa: E402
import tape.functional as F  # noqa: E402
import tape.nn as nn  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=int, default=1500, help="training steps")
    p.add_argument("--batch-size", type=int, default=32, help="windows per step")
    p.add_argument("--context", type=int, default=64, help="characters per window")
    p.add_argument("--d-model", type=int, default=128, help="width")
    p.add_argument("--heads", type=int, default=4, help="attention heads")
    p.add_argument("--layers", type=int, default=2, help="encoder layers")
    p.add_argument("--dropout", type=float, default=0.0, help="dropout")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    p.add_argument("--warmup", type=int, default=100, help="warm-up steps")
    p.add_argument("--scheduler", choices=["cosine", "constant"], default="cosine",
                   help="after the warm-up: cosine decay to a tenth, or constant")
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW's weight decay")
    p.add_argument("--clip-grad", type=float, default=None, metavar="NORM",
                   help="clip the gradients' total norm to this")
    p.add_argument("--eval-every", type=int, default=250, help="steps between evaluations")
    p.add_argument("--seed", type=int, default=0, help="weights, batches, dropout")
    p.add_argument("--sample", type=int, default=300, help="characters to sample at the end")
    p.add_argument("--out", default="runs", help="folder for checkpoint, plot and sample")
    p.add_argument("--resume", metavar="PATH", help="continue the run in this checkpoint")
    p.add_argument("--stop-after", type=int, metavar="STEP",
                   help="end the run after this step's evaluation, as an interruption would")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def loss_of(model, x, y, mask):
    logits = model(tape.tensor(x), mask)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tape.tensor(y.reshape(-1)))


def validation_loss(model, batches, mask):
    model.eval()
    with tape.no_grad():
        loss = float(np.mean([loss_of(model, x, y, mask).item() for x, y in batches]))
    model.train()
    return loss


def sample(model, data, mask, context, length, rng, prompt="The "):
    """``length`` characters drawn one by one from the model's predictions."""
    model.eval()
    codes = list(data.encode(prompt))
    with tape.no_grad():
        for _ in range(length):
            window = np.array(codes[-context:])[None]
            logits = model(tape.tensor(window), mask).numpy()[0, -1].astype(np.float64)
            p = np.exp(logits - logits.max())
            codes.append(int(rng.choice(len(p), p=p / p.sum())))
    model.train()
    return data.decode(codes)


def plot(history, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(history["step"], history["loss"], lw=0.8, label="training (batch)")
    ax.plot(history["eval_step"], history["val_loss"], "o-", label="validation")
    ax.set(xlabel="step", ylabel="cross-entropy (nats/char)", title="charlm")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    from tqdm import tqdm

    tape.manual_seed(args.seed)
    data = chardata.CharData()
    model = chardata.make_model(nn, data.vocab_size, args.context, args.d_model, args.heads,
                                args.layers, 4 * args.d_model, args.dropout)
    params = list(model.parameters())
    opt = tape.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    total = args.steps if args.scheduler == "cosine" else 0  # 0: constant after warm-up
    schedule = tape.optim.lr_scheduler.LambdaLR(
        opt, lambda s: chardata.lr_factor(s, args.warmup, total))
    mask = tape.tensor(chardata.causal_mask(args.context))
    val_batches = data.val_batches(args.batch_size, args.context, 8)
    rng = np.random.default_rng(args.seed)
    history = {k: [] for k in ("step", "loss", "eval_step", "val_loss")}
    os.makedirs(args.out, exist_ok=True)
    checkpoint = os.path.join(args.out, "charlm.ckpt")
    metrics = os.path.join(args.out, "charlm.jsonl")
    step = 0
    if args.resume:
        state = tape.load(args.resume)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        tape.set_rng_state(state["rng"])
        rng.bit_generator.state = state["batch_rng"]
        for key, values in state["history"].items():
            history[key][:] = values
        step = int(state["step"])
        print(f"resumed from {args.resume} at step {step}")
    elif os.path.exists(metrics):
        os.remove(metrics)  # a new run: a new metrics file
    print(f"charlm: {len(data.train):,} training and {len(data.val):,} validation characters, "
          f"{data.vocab_size} symbols, {sum(p.size for p in params):,} parameters")
    start = time.perf_counter()
    bar = tqdm(total=args.steps, initial=step, disable=args.no_progress)
    step_seconds = []
    while step < args.steps:
        began = time.perf_counter()
        x, y = data.batch("train", args.batch_size, args.context, rng)
        with tape.Tape() as t:
            loss = loss_of(model, x, y, mask)
        grads = t.gradient(loss, params)
        if args.clip_grad is not None:
            grads, _ = tape.optim.clip_grad_norm(grads, args.clip_grad)
        opt.step(grads)
        schedule.step()
        step_seconds.append(time.perf_counter() - began)
        step += 1
        history["step"].append(step)
        history["loss"].append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % args.eval_every == 0 or step == args.steps:
            val = validation_loss(model, val_batches, mask)
            history["eval_step"].append(step)
            history["val_loss"].append(val)
            train_loss = float(np.mean(history["loss"][-50:]))
            bar.write(f"step {step:5d}  train {train_loss:.3f}  "
                      f"validation {val:.3f} nats/char ({val / math.log(2):.2f} bits)")
            with open(metrics, "a") as f:
                f.write(json.dumps({"step": step, "train_loss": train_loss, "val_loss": val,
                                    "lr": opt.param_groups[0]["lr"],
                                    "seconds": time.perf_counter() - start}) + "\n")
            tape.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                       "schedule": schedule.state_dict(), "step": step,
                       "rng": tape.get_rng_state(), "batch_rng": rng.bit_generator.state,
                       "history": history}, checkpoint)
            if args.stop_after is not None and step >= args.stop_after:
                bar.close()
                print(f"stopped at step {step}; continue with --resume {checkpoint}")
                return history
    bar.close()
    history["step_seconds"] = step_seconds  # for bench/charlm.py; not in the checkpoint
    elapsed = time.perf_counter() - start
    print(f"validation loss {history['val_loss'][-1]:.3f} after {step} steps ({elapsed:.0f} s)")
    plot(history, os.path.join(args.out, "charlm.png"))
    if args.sample:
        text = sample(model, data, mask, args.context, args.sample,
                      np.random.default_rng(args.seed))
        print("sampled:\n" + text)
        with open(os.path.join(args.out, "charlm-sample.txt"), "w") as f:
            f.write(text + "\n")
    return history


if __name__ == "__main__":
    main()
