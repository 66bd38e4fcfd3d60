"""Where a tape training step's time goes: a table for the results summary.

    python bench/profile_step.py mlp            # or lenet; --seconds 8 --rate 400
    python bench/profile_step.py lenet --root ../old-checkout   # another version of tape

Samples the step with py-spy (``pip install py-spy``; native frames included, so OpenBLAS,
numpy's loops and the numba kernels are seen as such) in a child process, and sorts each
sample of the calling thread by what it was doing:

* GEMM: inside OpenBLAS (numpy's, or SciPy's called from a numba kernel);
* kernels: inside tape's numba kernels (im2col, pooling, Winograd, ...);
* elementwise: inside numpy's loops (ufuncs, copies, reductions, casts);
* allocation: malloc, free, mmap and friends, and numpy creating arrays;
* waiting: the calling thread blocked while tape's helper finishes its share;
* Python: the interpreter running tape's own code (recording, replay, op wrappers,
  the optimizer's loop), with the optimizer's numpy work counted under elementwise.

It also counts, in a separate run without the sampler, the GEMMs' floating-point work per
step (so their GFLOP/s = that work / the GEMM share of the step) and the minor page faults
per step (``getrusage``; each costs about a microsecond and a half on this kind of VM).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

CATEGORIES = ["GEMM", "kernels", "elementwise", "allocation", "waiting", "Python", "other"]
_ALLOC = ("malloc", "free", "mmap", "munmap", "brk", "calloc", "realloc", "madvise",
          "PyArray_NewFromDescr", "npy_alloc", "default_malloc", "default_free", "memset")


def classify(frames):
    """The category of one sample (a list of frames, outermost first)."""
    leaf = frames[-1]
    name, _, where = leaf.partition(" (")
    if "openblas" in where or "gemm" in name:
        return "GEMM"
    if where.startswith("?") or "(?)" in leaf:  # JIT code: numba's kernels
        return "kernels"
    if any(a in name for a in _ALLOC):
        return "allocation"
    if "_multiarray_umath" in where or "_umath" in where:
        return "elementwise"
    if "libc.so" in where or "libpthread" in where:  # a syscall: waiting on a lock, or I/O
        python = [f for f in frames if ".py:" in f]
        if python and any(k in python[-1] for k in ("threads.py", "acquire", "_work", "run")):
            return "waiting"
        return "allocation" if "libc.so" in where and not python else "waiting"
    if ".py:" in where or "libpython" in where or "python3" in where:
        return "Python"
    return "other"


def _env(root):
    """The environment of the child processes: ``root``'s tape and kernels first."""
    if root is None:
        return None
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=os.path.abspath(root) + (os.pathsep + path if path else ""))


def sample(workload, seconds, rate, root=None):
    """py-spy's samples of tape's threads while the steps run, warm-up excluded."""
    pyspy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.path.exists(pyspy):
        raise SystemExit("profile_step.py needs py-spy: pip install py-spy")
    child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--run", workload,
                              "--seconds", str(seconds + 2)], stdout=subprocess.PIPE, text=True,
                             env=_env(root))
    try:
        assert child.stdout.readline().strip() == "ready"
        with tempfile.TemporaryDirectory() as tmp:
            raw = os.path.join(tmp, "raw.txt")
            subprocess.run([pyspy, "record", "--native", "--threads", "--format", "raw",
                            "-r", str(rate), "-d", str(int(seconds)), "-p", str(child.pid),
                            "-o", raw], check=True, capture_output=True)
            counts, helper = collections.Counter(), collections.Counter()
            with open(raw) as f:
                for line in f:
                    stack, _, n = line.rstrip().rpartition(" ")
                    frames = stack.split(";")
                    if "MainThread" in frames[0]:
                        counts[classify(frames)] += int(n)
                    elif "tape-kernels" in frames[0]:
                        helper[classify(frames)] += int(n)
    finally:
        child.kill()
        child.wait()
    return counts, helper


def run_steps(workload, seconds):
    """The sampled child: warm up, say so, then run steps for ``seconds``. tape is told
    the machine is otherwise idle: py-spy itself uses ~0.7 CPU at 400 samples a second,
    and tape, seeing another process keep a core busy, would move its GEMMs off
    OpenBLAS's threads and profile a step that an unsampled run does not take."""
    from workloads import tape_training_step

    _ignore_the_sampler()
    step = tape_training_step(workload)[0]
    for _ in range(30):
        step()
    print("ready", flush=True)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        step()


def _ignore_the_sampler():
    """tape's look at the machine (kernels/cpu/threads.py) answers "idle"."""
    try:
        from kernels.cpu import threads
    except ImportError:  # an older tape: nothing watches the machine
        return
    machine = threads._machine
    if hasattr(machine, "others_load"):
        machine.others_load = lambda now: 0.0
    elif hasattr(machine, "others_busy"):  # versions before 2026-12-07's last session
        machine.others_busy = lambda now: False


def counted(workload, steps=50):
    """Step time, GEMM FLOPs and minor page faults per step, without the sampler."""
    from workloads import tape_training_step

    try:
        import kernels.cpu.threads as threads
        from kernels.cpu import winograd
    except ImportError:  # an older tape: time and faults only
        return _timed(tape_training_step(workload)[0], steps, None)

    flops = [0]
    matmul = threads.matmul

    def counting_matmul(a, b):
        out = matmul(a, b)
        flops[0] += 2 * a.size * b.shape[-1] if a.ndim == b.ndim else 0
        return out

    def fused_flops(x, u, factor):
        n, c, h, w = x.shape
        return factor * 2 * 16 * n * winograd.tiles(h) * winograd.tiles(w) * c * u.shape[2]

    fwd, bwd = winograd.fused_forward, winograd.fused_backward

    def counting_fwd(x, u, padding, chunk=None):
        flops[0] += fused_flops(x, u, 1)
        return fwd(x, u, padding, chunk)

    def counting_bwd(g, x, u, padding, chunk=None):
        flops[0] += fused_flops(x, u, 2)
        return bwd(g, x, u, padding, chunk)

    threads.matmul = counting_matmul
    winograd.fused_forward, winograd.fused_backward = counting_fwd, counting_bwd
    import tape.ops.linalg as linalg

    linalg._threaded_matmul = counting_matmul
    return _timed(tape_training_step(workload)[0], steps, flops)


def _timed(step, steps, flops):
    for _ in range(20):
        step()
    if flops:
        flops[0] = 0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    times.sort()
    return {"step_s": times[len(times) // 2], "gemm_flops": flops[0] / steps if flops else None,
            "page_faults": faults / steps}


def table(workload, seconds, rate, root=None):
    counts, helper = sample(workload, seconds, rate, root)
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--count", workload],
                          check=True, capture_output=True, text=True, env=_env(root))
    c = json.loads(proc.stdout.strip().splitlines()[-1])
    total = sum(counts.values())
    step_ms = c["step_s"] * 1e3
    rows = []
    for cat in CATEGORIES:
        share = counts[cat] / total if total else 0.0
        ms = share * step_ms
        note = ""
        if cat == "GEMM" and ms and c["gemm_flops"]:
            rate = c["gemm_flops"] / (ms * 1e-3) / 1e9
            note = f"{c['gemm_flops'] / 1e6:.0f} MFLOP, {rate:.0f} GFLOP/s"
        if cat == "allocation":
            note = f"{c['page_faults']:.0f} page faults per step"
        rows.append((cat, share, ms, note))
    busy = sum(v for k, v in helper.items() if k != "waiting")
    return {"workload": workload, "step_ms": step_ms, "samples": total,
            "helper_busy_share": busy / total if total else 0.0,
            "rows": [dict(zip(("what", "share", "ms", "note"), r)) for r in rows]}


def markdown(result):
    lines = [f"{result['workload']} step, {result['step_ms']:.2f} ms (calling thread; "
             f"{result['samples']} samples; tape's helper thread busy "
             f"{100 * result['helper_busy_share']:.0f}% of the step)", "",
             "| where | share | ms | |", "|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['what']} | {100 * r['share']:.0f}% | {r['ms']:.2f} | {r['note']} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", nargs="?", choices=["mlp", "lenet"])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rate", type=int, default=400, help="samples per second")
    parser.add_argument("--json", default=None)
    parser.add_argument("--root", default=None, help="profile the tape of this checkout")
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--count", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        return run_steps(args.run, args.seconds)
    if args.count:
        print(json.dumps(counted(args.count)))
        return None
    if not args.workload:
        parser.error("name a workload: mlp or lenet")
    result = table(args.workload, args.seconds, args.rate, args.root)
    print(markdown(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return None


if __name__ == "__main__":
    main()
