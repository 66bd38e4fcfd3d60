"""tape against PyTorch, fairly: each library alone in its own process, processes alternating.

    python bench/compare.py                  # every row below, 5 pairs each (about 10 minutes)
    python bench/compare.py --pairs 7 --only mlp,lenet
    python bench/compare.py --list           # the rows

For every row, one process runs the workload on side A and another on side B (a process
never imports the other library), in turns A B, B A, A B, ... Each process warms up, then
times steps for ``--seconds`` and reports the median step. A pair's ratio is A's median
over B's; the row reports the median of the pairs' ratios, their range, and each side's
best median. On a shared machine the speed drifts between runs, so only ratios from the
same pair are compared with each other.

Rows:

* tape / PyTorch on each workload of ``workloads.py``, in the default environment (no
  variables set, each library with its default threads);
* the same with another process spinning on one of the cores (``--load``), for the
  training steps;
* the MLP step written by hand in plain numpy / PyTorch: the floor for a numpy engine;
* good neighbour: PyTorch's training steps in a process that imported tape and ran tape's
  steps first / PyTorch's in a process of its own (should be 1.0);
* first run: the first LeNet step of a fresh install (numba's cache empty), seconds from
  process start, and whether tape said it was compiling.

``--device cuda``: tape on CuPy against PyTorch on CUDA, on the GPU rows (LeNet at batch
256; every step ends with a device synchronize).

Writes ``bench/results/<machine>-<date>.json`` and ``.md`` (``--out`` to choose the name).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from workloads import STEPS, WORKLOADS, conv_name, CONV_SHAPES  # noqa: E402  (no library)


@dataclass
class Row:
    name: str
    workload: str
    a: str  # side: tape | torch | numpy | torch-after-tape
    b: str
    target: float | None  # A/B at most this
    load: bool = False  # another process spins on one core meanwhile


SIDE_NAMES = {"tape": "tape", "torch": "PyTorch", "numpy": "numpy by hand",
              "torch-after-tape": "PyTorch after tape"}

ROWS = [
    Row("chain", "chain", "tape", "torch", 0.45),
    Row("mlp", "mlp", "tape", "torch", 0.9),
    Row("mlp by hand", "mlp", "numpy", "torch", None),
    Row("lenet", "lenet", "tape", "torch", 0.9),
    *[Row(conv_name(s), conv_name(s), "tape", "torch", 1.0) for s in CONV_SHAPES],
    Row("max_pool2d", "max_pool2d", "tape", "torch", 0.3),
    Row("mlp (one core busy)", "mlp", "tape", "torch", 0.7, load=True),
    Row("lenet (one core busy)", "lenet", "tape", "torch", 0.7, load=True),
    Row("neighbour: mlp", "mlp", "torch-after-tape", "torch", 1.05),
    Row("neighbour: lenet", "lenet", "torch-after-tape", "torch", 1.05),
]
GPU_ROWS = [  # the GPU targets, on an H100
    Row("lenet", "lenet", "tape", "torch", 1.5),
    *[Row(conv_name(s), conv_name(s), "tape", "torch", 2.0) for s in CONV_SHAPES],
    Row("max_pool2d", "max_pool2d", "tape", "torch", 2.0),
    Row("mlp", "mlp", "tape", "torch", 1.2),
]
FIRST_RUN_TARGET_S = 5.0


# ----- inside a worker process: one library, one workload -----


def measure(step, seconds, warm_seconds=0.5, min_steps=10):
    """Median seconds per call of ``step`` over ``seconds`` of calls, after a warm-up."""
    end = time.perf_counter() + warm_seconds
    n = 0
    while n < 3 or time.perf_counter() < end:
        step()
        n += 1
    times = []
    end = time.perf_counter() + seconds
    while len(times) < min_steps or time.perf_counter() < end:
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times), len(times)


def worker(side, workload, seconds, device="cpu"):
    """Time ``workload`` on ``side`` in this process; print one JSON line."""
    info = {}
    if side == "torch-after-tape":  # a user who imported tape and trained with it first
        for name in ("mlp", "lenet", *(conv_name(s) for s in CONV_SHAPES), "max_pool2d"):
            measure(STEPS["tape"](name), 0.2, warm_seconds=0.1, min_steps=3)
        side = "torch"
    step = STEPS[side](workload, device)
    median, n = measure(step, seconds)
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        info["torch_threads"] = torch.get_num_threads()
        if device == "cuda":
            info["gpu"] = torch.cuda.get_device_name()
    if "kernels" in sys.modules:
        info["tape_threads"] = sys.modules["kernels"].num_threads()
    print(json.dumps({"median_s": median, "steps": n, **info}), flush=True)


def first_step_worker():
    """The first LeNet training step on tape: print when it has ended."""
    from workloads import tape_training_step

    tape_training_step("lenet")[0]()
    print("done", flush=True)


# ----- the driver -----


def run_worker(side, workload, seconds, device="cpu"):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", side, workload,
           "--seconds", str(seconds), "--device", device]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"worker {side} {workload!r} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def spinner():
    """A process spinning on the last core, as another user's job would."""
    code = "while True:\n    pass\n"
    if hasattr(os, "sched_setaffinity"):
        code = f"import os\nos.sched_setaffinity(0, {{{max(os.sched_getaffinity(0))}}})\n" + code
    return subprocess.Popen([sys.executable, "-c", code])


def run_row(row, pairs, seconds, device="cpu", log=print):
    samples = []
    for i in range(pairs):
        order = [row.a, row.b] if i % 2 == 0 else [row.b, row.a]
        load = spinner() if row.load else None
        try:
            if load:
                time.sleep(0.2)
            got = {side: run_worker(side, row.workload, seconds, device) for side in order}
        finally:
            if load:
                load.kill()
                load.wait()
        a, b = got[row.a]["median_s"], got[row.b]["median_s"]
        samples.append({"a_s": a, "b_s": b, "ratio": a / b,
                        **{k: v for side in order for k, v in got[side].items()
                           if k in ("torch_threads", "tape_threads", "gpu")}})
        log(f"  pair {i + 1}: {SIDE_NAMES[row.a]} {a * 1e3:.3f} ms, {SIDE_NAMES[row.b]} "
            f"{b * 1e3:.3f} ms, ratio {a / b:.3f}")
    ratios = [s["ratio"] for s in samples]
    median = statistics.median(ratios)
    return {
        "name": row.name, "workload": row.workload, "description": WORKLOADS[row.workload],
        "a": row.a, "b": row.b, "load": row.load, "target": row.target,
        "ratio": median, "ratio_min": min(ratios), "ratio_max": max(ratios),
        "a_best_s": min(s["a_s"] for s in samples), "b_best_s": min(s["b_s"] for s in samples),
        "met": None if row.target is None else median <= row.target,
        "pairs": samples,
    }


def first_run():
    """Seconds from process start to the end of the first LeNet step, numba's cache empty."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--first-step"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)
        line = proc.stdout.readline()
        elapsed = time.perf_counter() - start
        _, err = proc.communicate()
    if line.strip() != "done":
        raise RuntimeError(f"the first-step worker failed:\n{err[-3000:]}")
    said = [ln for ln in err.splitlines() if ln.strip()]
    return {"seconds": elapsed, "target_s": FIRST_RUN_TARGET_S,
            "met": elapsed <= FIRST_RUN_TARGET_S, "stderr": said}


def _version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment():
    """Where and with what the numbers were measured (no library imported here)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(), "python": platform.python_version(),
        "cpu": _cpu_name(), "cpus": cpus,
        **{name: _version(name) for name in ("numpy", "numba", "scipy", "torch")},
        "cupy": next(filter(None, map(_version, ("cupy", "cupy-cuda13x", "cupy-cuda12x"))),
                     None),
        "environment_variables": sorted(k for k in os.environ if k.startswith(
            ("OMP_", "MKL_", "OPENBLAS_", "NUMBA_", "TAPE_", "KMP_", "GOMP_"))),
    }


def machine_name(env, gpu=None):
    slug = "".join(c if c.isalnum() else "-" for c in (gpu or env["cpu"]).lower()).strip("-")
    while "--" in slug:
        slug = slug.replace("--", "-")
    return f"gpu-{slug}" if gpu else f"cpu-{slug}-{env['cpus']}core"


def _ms(s):
    return f"{s * 1e3:.3f} ms" if s < 0.1 else f"{s * 1e3:.1f} ms"


def markdown(result):
    env = result["environment"]
    where = f"{env['gpu']} GPU, " if env.get("gpu") else ""
    lines = [
        f"# tape / PyTorch, each alone in its own process ({env['date'][:10]})",
        "",
        f"{where}{env['cpu']}, {env['cpus']} CPUs; Python {env['python']}, numpy {env['numpy']}, "
        f"numba {env['numba']}, torch {env['torch']}; default environment "
        f"(variables set: {', '.join(env['environment_variables']) or 'none'}).",
        f"`python bench/compare.py`: {result['pairs']} pairs of processes per row, alternating; "
        f"each process times {result['seconds']} s of steps after a warm-up and reports its "
        "median step. Ratio: median over pairs of A's median / B's (range in brackets); "
        "A and B: each side's best median.",
        "",
        "| row | A | B | A | B | A / B | target | |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        target = "" if r["target"] is None else f"<= {r['target']}"
        met = "" if r["met"] is None else ("met" if r["met"] else "**not met**")
        lines.append(
            f"| {r['name']} | {SIDE_NAMES[r['a']]} | {SIDE_NAMES[r['b']]} | {_ms(r['a_best_s'])} "
            f"| {_ms(r['b_best_s'])} | {r['ratio']:.2f} ({r['ratio_min']:.2f}-"
            f"{r['ratio_max']:.2f}) | {target} | {met} |")
    fr = result.get("first_run")
    if fr:
        lines += ["", f"First LeNet step of a fresh install (numba's cache empty): "
                  f"{fr['seconds']:.1f} s after process start (target <= {fr['target_s']:.0f} s, "
                  f"{'met' if fr['met'] else 'not met'}). tape said: "
                  + ("; ".join(f"`{s}`" for s in fr["stderr"]) or "nothing") + "."]
    lines += ["", "Rows: " + "; ".join(f"**{r['name']}**: {r['description']}"
                                        + (" (another process spinning on one core)"
                                           if r["load"] else "") for r in result["rows"]) + "."]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.5, help="timed seconds per process")
    parser.add_argument("--only", default=None, help="comma-separated row names (see --list)")
    parser.add_argument("--no-first-run", action="store_true")
    parser.add_argument("--out", default=None, help="results path without extension")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--worker", nargs=2, metavar=("SIDE", "WORKLOAD"), help=argparse.SUPPRESS)
    parser.add_argument("--first-step", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(*args.worker, args.seconds, args.device)
    if args.first_step:
        return first_step_worker()
    all_rows = GPU_ROWS if args.device == "cuda" else ROWS
    if args.list:
        for r in all_rows:
            print(f"{r.name:28s} {SIDE_NAMES[r.a]} / {SIDE_NAMES[r.b]}"
                  f"{' (one core busy)' if r.load else ''}: {WORKLOADS[r.workload]}")
        return None
    rows = all_rows
    if args.only:
        wanted = {w.strip() for w in args.only.split(",")}
        rows = [r for r in all_rows if r.name in wanted]
        unknown = wanted - {r.name for r in rows}
        if unknown:
            parser.error(f"unknown rows {sorted(unknown)}; see --list")
    env = environment()
    result = {"environment": env, "device": args.device, "pairs": args.pairs,
              "seconds": args.seconds, "rows": []}
    for row in rows:
        print(f"{row.name}: {SIDE_NAMES[row.a]} / {SIDE_NAMES[row.b]}", flush=True)
        result["rows"].append(run_row(row, args.pairs, args.seconds, args.device,
                                      log=lambda s: print(s, flush=True)))
        r = result["rows"][-1]
        print(f"  -> {r['ratio']:.3f} ({r['ratio_min']:.3f}-{r['ratio_max']:.3f})", flush=True)
    if args.device == "cuda":
        env["gpu"] = next((p["gpu"] for r in result["rows"] for p in r["pairs"] if "gpu" in p),
                          None)
    elif not args.no_first_run and not args.only:
        result["first_run"] = first_run()
        print(f"first LeNet step, empty numba cache: {result['first_run']['seconds']:.1f} s")
    out = args.out
    if out is None:
        name = machine_name(env, env.get("gpu"))
        base = os.path.join(HERE, "results", f"{name}-{env['date'][:10]}")
        out, k = base, 2
        while os.path.exists(out + ".json"):
            out, k = f"{base}-{k}", k + 1
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out + ".json", "w") as f:
        json.dump(result, f, indent=1)
    with open(out + ".md", "w") as f:
        f.write(markdown(result))
    print(markdown(result))
    print(f"wrote {out}.json and {out}.md")
    return None


if __name__ == "__main__":
    main()
