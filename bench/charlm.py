"""examples/charlm.py against its PyTorch twin (bench/charlm_torch.py), each in its own process.

    python bench/charlm.py                       # the full runs and 3 timing pairs (~7 minutes)
    python bench/charlm.py --steps 300 --pairs 3

Two questions:

* quality: both train the same model on the same batches for ``--steps`` steps; the ratio
  of the final validation losses (target: tape within 2% of the twin);
* speed: pairs of short runs (``--time-steps`` steps, alternating which library goes
  first), the median step after the first ten; the median of the pairs' ratios and their
  range (target: tape at most 1.3x the twin).

Writes ``bench/results/charlm-<machine>-<date>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import compare  # noqa: E402

QUALITY_TARGET, SPEED_TARGET = 1.02, 1.3


def run(side, steps, eval_every):
    """One training run in a new process: its validation losses and step times."""
    flags = ["--steps", str(steps), "--eval-every", str(eval_every)]
    if side == "torch":
        cmd = [sys.executable, os.path.join(HERE, "charlm_torch.py"), *flags]
    else:
        out = tempfile.mkdtemp(prefix="charlm-")
        code = ("import json, sys; sys.path.insert(0, 'examples'); import charlm; "
                f"h = charlm.main({flags + ['--no-progress', '--sample', '0', '--out', out]!r}); "
                "print(json.dumps({k: h[k] for k in ('eval_step', 'val_loss', 'step_seconds')}))")
        cmd = [sys.executable, "-c", code]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{side} run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def step_time(result):
    return statistics.median(result["step_seconds"][10:])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--time-steps", type=int, default=60)
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    pairs = []
    for i in range(args.pairs):
        order = ["tape", "torch"] if i % 2 == 0 else ["torch", "tape"]
        got = {side: step_time(run(side, args.time_steps, 10 ** 6)) for side in order}
        pairs.append({"tape_s": got["tape"], "torch_s": got["torch"],
                      "ratio": got["tape"] / got["torch"]})
        print(f"pair {i + 1}: tape {got['tape'] * 1e3:.1f} ms, PyTorch "
              f"{got['torch'] * 1e3:.1f} ms, ratio {got['tape'] / got['torch']:.3f}", flush=True)
    full = {side: run(side, args.steps, 250) for side in ("tape", "torch")}
    ratios = [p["ratio"] for p in pairs]
    loss_ratio = full["tape"]["val_loss"][-1] / full["torch"]["val_loss"][-1]
    env = compare.environment()
    machine = compare.machine_name(env)
    date = datetime.date.today().isoformat()
    result = {
        "machine": machine, "date": date, "environment": env, "steps": args.steps,
        "speed": {"ratio": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
                  "pairs": pairs, "target": SPEED_TARGET},
        "quality": {"tape_val_loss": full["tape"]["val_loss"],
                    "torch_val_loss": full["torch"]["val_loss"],
                    "eval_step": full["tape"]["eval_step"], "ratio": loss_ratio,
                    "target": QUALITY_TARGET,
                    "tape_median_step_s": step_time(full["tape"]),
                    "torch_median_step_s": step_time(full["torch"])},
    }
    s, q = result["speed"], result["quality"]
    md = "\n".join([
        f"# charlm: tape against its PyTorch twin, {machine}, {date}", "",
        "| question | tape / PyTorch | range | target | met |", "|---|---|---|---|---|",
        f"| step time ({args.time_steps}-step runs, median of {len(pairs)} pairs of "
        f"processes) | {s['ratio']:.2f}x | {s['min']:.2f}-{s['max']:.2f} | <= {SPEED_TARGET} "
        f"| {'yes' if s['ratio'] <= SPEED_TARGET else 'no'} |",
        f"| validation loss after {args.steps} steps ({q['tape_val_loss'][-1]:.3f} vs "
        f"{q['torch_val_loss'][-1]:.3f} nats/char) | {q['ratio']:.3f}x | - | <= "
        f"{QUALITY_TARGET} | {'yes' if q['ratio'] <= QUALITY_TARGET else 'no'} |", "",
        "Validation losses at steps " + ", ".join(map(str, q["eval_step"])) + ":",
        "tape " + ", ".join(f"{v:.3f}" for v in q["tape_val_loss"]),
        "; PyTorch " + ", ".join(f"{v:.3f}" for v in q["torch_val_loss"]) + ".", "",
        "Environment: " + json.dumps(env), ""])
    stem = os.path.join(HERE, "results", f"charlm-{machine}-{date}")
    with open(stem + ".json", "w") as f:
        json.dump(result, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
