"""Data parallelism over MPI: 2 processes x 1 thread against 1 process x 1 thread.

    python bench/distributed.py                  # runs both itself (mpiexec from PATH)
    python bench/distributed.py --steps 100 --bucket-mb 0.1

The LeNet step of bench/workloads.py (forward, gradient, SGD-momentum step, float32) at
one global batch (``--batch``, 64): one process takes all of it, each of two processes
half, through ``DistributedDataParallel``. Every process runs one thread
(``TAPE_NUM_THREADS=1``, ``OMP_NUM_THREADS=1``). Reported:

* the median step of each, the speed-up and the scaling efficiency at a fixed global
  batch, ``t1 / (N * tN)`` (1.0: N processes take 1/N of the time);
* the communication: ``wait``, the seconds ``model.gradient`` spends after the replay
  waiting for the allreduces, with the buckets started during the replay (overlap) and
  all started after it (no overlap, every byte exposed). The hidden share is
  ``1 - wait_overlap / wait_no_overlap``. The processes pass a barrier before each step
  so that ``wait`` is communication and not one process waiting for a late start (the
  barrier is outside the timed step).

Writes ``bench/results/distributed-<machine>-<date>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def worker(args):
    """One process's measurements (every process of the run runs this); JSON on rank 0."""
    import numpy as np

    import tape
    import tape.distributed as dist
    import tape.nn as nn
    from workloads import lenet

    dist.init()
    rank, size = dist.rank(), dist.world_size()
    per = args.batch // size
    rng = np.random.default_rng(rank)
    x = tape.tensor(rng.normal(size=(per, 1, 28, 28)).astype(np.float32))
    y = tape.tensor(rng.integers(0, 10, per))
    loss_fn = nn.CrossEntropyLoss()
    out = {"processes": size, "per_process_batch": per}
    for overlap in (True, False):
        tape.manual_seed(0)
        model = dist.DistributedDataParallel(lenet(nn), bucket_cap_mb=args.bucket_mb,
                                             overlap=overlap)
        opt = tape.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        steps, waits, replays = [], [], []
        for i in range(args.warmup + args.steps):
            dist.barrier()
            start = time.perf_counter()
            with tape.Tape() as t:
                loss = loss_fn(model(x), y)
            opt.step(model.gradient(t, loss))
            if i >= args.warmup:
                steps.append(time.perf_counter() - start)
                waits.append(model.last_timings["wait"])
                replays.append(model.last_timings["replay"])
        key = "overlap" if overlap else "no_overlap"
        out[key] = {"step_s": float(np.median(steps)), "wait_s": float(np.median(waits)),
                    "replay_s": float(np.median(replays))}
        out["buckets"] = [[int(i) for i in b] for b in model._buckets]
    if rank == 0:
        print(json.dumps(out))


def run(command, env):
    res = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def markdown(r):
    one, two = r["one"], r["two"]
    lines = [
        f"# Data parallelism over MPI: LeNet step, global batch {r['batch']}",
        "",
        f"{r['machine']}, {r['date']}; {r['steps']} timed steps after {r['warmup']}, one "
        f"thread per process, best of {r['rounds']} interleaved runs; buckets of "
        f"{r['bucket_mb']} MB: {len(two['buckets'])} buckets "
        "(python bench/distributed.py).",
        "",
        "| run | step (median) | replay | wait after the replay |",
        "|---|---|---|---|",
        f"| 1 process x batch {r['batch']} | {one['overlap']['step_s'] * 1e3:.2f} ms | "
        f"{one['overlap']['replay_s'] * 1e3:.2f} ms | - |",
        f"| 2 separate processes x batch {r['batch'] // 2} at once, no MPI (the machine's "
        f"limit) | {r['pair']['overlap']['step_s'] * 1e3:.2f} ms | "
        f"{r['pair']['overlap']['replay_s'] * 1e3:.2f} ms | - |",
    ]
    for key, name in (("overlap", "overlap"), ("no_overlap", "no overlap")):
        m = two[key]
        lines.append(f"| 2 processes x batch {two['per_process_batch']}, {name} | "
                     f"{m['step_s'] * 1e3:.2f} ms | {m['replay_s'] * 1e3:.2f} ms | "
                     f"{m['wait_s'] * 1e3:.3f} ms |")
    lines += [
        "",
        f"- speed-up {r['speedup']:.2f}x on 2 processes; scaling efficiency at a fixed "
        f"global batch {r['efficiency']:.2f} (1.0: half the time); two separate processes "
        f"with no communication reach {r['pair_efficiency']:.2f} here, the machine's own "
        "limit",
        f"- communication hidden behind the replay: {r['hidden_share'] * 100:.0f}% "
        f"(wait {two['overlap']['wait_s'] * 1e3:.3f} ms with overlap against "
        f"{two['no_overlap']['wait_s'] * 1e3:.3f} ms without)",
        "",
    ]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="global batch")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--bucket-mb", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=5, help="runs of each; the best kept")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help="file name stem under bench/results/")
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    import compare

    env = dict(os.environ, TAPE_NUM_THREADS="1", OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    me = [sys.executable, os.path.abspath(__file__), "--worker", "--batch", str(args.batch),
          "--steps", str(args.steps), "--warmup", str(args.warmup),
          "--bucket-mb", str(args.bucket_mb)]
    rounds = {"one": [], "two": [], "pair": []}
    for _ in range(args.rounds):  # interleaved: a shared machine's speed drifts
        rounds["one"].append(run(me, env))
        rounds["two"].append(run(["mpiexec", "-n", "2"] + me, env))
        half = me[:me.index("--batch") + 1] + [str(args.batch // 2)] + me[me.index(
            "--batch") + 2:]
        both = [subprocess.Popen(half, env=env, stdout=subprocess.PIPE, text=True)
                for _ in range(2)]
        rounds["pair"].append(max((json.loads(p.communicate()[0].strip().splitlines()[-1])
                                   for p in both), key=lambda r: r["overlap"]["step_s"]))
    one, two, pair = (min(rounds[k], key=lambda r: r["overlap"]["step_s"])
                      for k in ("one", "two", "pair"))
    t1, t2 = one["overlap"]["step_s"], two["overlap"]["step_s"]
    exposed = two["no_overlap"]["wait_s"]
    info = compare.environment()
    result = {"machine": compare.machine_name(info), "date": datetime.date.today().isoformat(),
              "environment": info, "batch": args.batch, "steps": args.steps,
              "warmup": args.warmup, "bucket_mb": args.bucket_mb, "rounds": args.rounds,
              "one": one, "two": two,
              "pair": pair, "all_rounds": rounds,
              "speedup": t1 / t2, "efficiency": t1 / (2 * t2),
              "pair_efficiency": t1 / (2 * pair["overlap"]["step_s"]),
              "hidden_share": 1 - two["overlap"]["wait_s"] / exposed if exposed else 0.0}
    stem = os.path.join(HERE, "results", args.out or
                        f"distributed-{result['machine']}-{result['date']}")
    with open(stem + ".json", "w") as f:
        json.dump(result, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
