"""What tape.func's transforms cost.

    python bench/func.py                 # about 2 minutes
    python bench/func.py --pairs 7

Three tables:

* per-example gradients of an MLP 784-256-10, batch 64 (``workloads.per_example``):
  ``vmap(grad(loss), in_axes=(None, 0, 0))`` against a Python loop calling ``grad`` once
  per example (tape alone, one process; target: vmap at least 10x faster);
* the same ``vmap(grad)`` against ``torch.func.vmap(torch.func.grad(...))``, each library
  in its own process, alternating (compare.py's rows; target: at most 1.0x);
* forward mode: ``func.jvp`` of an MLP's loss (784-256-256-10, batch 128, tangents for
  every parameter) and of a chain of 200 elementwise ops, over the forward alone (tape
  alone; target: a JVP at most 3 forwards).

Writes ``bench/results/func-<machine>-<date>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import compare  # noqa: E402
import workloads  # noqa: E402

LOOP_TARGET = 10.0  # vmap at least this many times faster than the loop
TORCH_TARGET = 1.0
JVP_TARGET = 3.0  # a JVP at most this many forwards


def _mlp_jvp(batch=128):
    """(forward, jvp) of an MLP 784-256-256-10's loss as a function of its parameters."""
    import numpy as np

    import tape
    import tape.functional as F
    from tape import func

    rng = np.random.default_rng(0)
    sizes = [(784, 256), (256,), (256, 256), (256,), (256, 10), (10,)]
    params = tuple(tape.tensor((rng.standard_normal(s) * 0.05).astype(np.float32))
                   for s in sizes)
    tangents = tuple(tape.tensor(rng.standard_normal(s).astype(np.float32)) for s in sizes)
    x = tape.tensor(rng.standard_normal((batch, 784)).astype(np.float32))
    y = tape.tensor(rng.integers(0, 10, batch))

    def loss(w1, b1, w2, b2, w3, b3):
        h = F.relu(x @ w1 + b1)
        h = F.relu(h @ w2 + b2)
        return F.cross_entropy(h @ w3 + b3, y)

    return (lambda: loss(*params)), (lambda: func.jvp(loss, params, tangents))


def _chain_jvp():
    import tape
    from tape import func

    x0 = tape.tensor(workloads.chain_input())
    v = tape.ones_like(x0)
    return (lambda: workloads.chain(x0)), (lambda: func.jvp(workloads.chain, (x0,), (v,)))


def tape_alone(seconds):
    """The tape-alone rows: vmap against the loop, and JVPs against forwards."""
    vmapped = workloads.tape_per_example()
    loop = workloads.tape_per_example(loop=True)
    t_vmap, _ = compare.measure(vmapped, seconds)
    t_loop, _ = compare.measure(loop, seconds)
    rows = [{"name": "per-example grads: Python loop / vmap", "a_s": t_loop, "b_s": t_vmap,
             "speedup": t_loop / t_vmap, "target": f">= {LOOP_TARGET}",
             "met": t_loop / t_vmap >= LOOP_TARGET}]
    for name, (fwd, jvp) in (("MLP loss (784-256-256-10, batch 128)", _mlp_jvp()),
                             ("chain of 200 elementwise ops", _chain_jvp())):
        t_fwd, _ = compare.measure(fwd, seconds)
        t_jvp, _ = compare.measure(jvp, seconds)
        rows.append({"name": f"jvp / forward: {name}", "a_s": t_jvp, "b_s": t_fwd,
                     "ratio": t_jvp / t_fwd, "target": f"<= {JVP_TARGET}",
                     "met": t_jvp / t_fwd <= JVP_TARGET})
    return rows


def markdown(result):
    lines = [f"# tape.func on {result['machine']}, {result['date']}", "",
             "## Per-example gradients and forward mode, tape alone (one process)", "",
             "| row | time | against | ratio | target | met |", "|---|---|---|---|---|---|"]
    for r in result["tape_alone"]:
        ratio = r.get("speedup", r.get("ratio"))
        lines.append(f"| {r['name']} | {r['a_s'] * 1e3:.2f} ms | {r['b_s'] * 1e3:.2f} ms | "
                     f"{ratio:.2f}x | {r['target']} | {'yes' if r['met'] else 'no'} |")
    t = result["against_torch"]
    lines += ["", "## vmap(grad) against torch.func, each library in its own process", "",
              "| workload | tape / PyTorch (median of pairs) | range | tape best | PyTorch best "
              "| target | met |", "|---|---|---|---|---|---|---|",
              f"| {t['description']} | {t['ratio']:.2f}x | {t['ratio_min']:.2f}-"
              f"{t['ratio_max']:.2f} | {t['a_best_s'] * 1e3:.2f} ms | "
              f"{t['b_best_s'] * 1e3:.2f} ms | <= {t['target']} | "
              f"{'yes' if t['met'] else 'no'} |", "",
              f"{len(t['pairs'])} pairs of processes (tape, PyTorch alternating), "
              f"{result['seconds']} s of steps each after a warm-up. "
              "Environment: " + json.dumps(result["environment"]), ""]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--out", default=None, help="file name stem under bench/results/")
    args = parser.parse_args()
    env = compare.environment()
    date = datetime.date.today().isoformat()
    machine = compare.machine_name(env)
    print("tape alone: vmap against the loop, jvp against the forward", flush=True)
    alone = tape_alone(args.seconds)
    for r in alone:
        print(f"  {r['name']}: {r['a_s'] * 1e3:.2f} ms vs {r['b_s'] * 1e3:.2f} ms", flush=True)
    print("vmap(grad) against torch.func, own processes", flush=True)
    row = compare.Row("per-example grads", "per_example", "tape", "torch", TORCH_TARGET)
    against = compare.run_row(row, args.pairs, args.seconds)
    result = {"machine": machine, "date": date, "environment": env, "seconds": args.seconds,
              "tape_alone": alone, "against_torch": against}
    stem = os.path.join(HERE, "results", args.out or f"func-{machine}-{date}")
    with open(stem + ".json", "w") as f:
        json.dump(result, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
