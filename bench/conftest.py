"""Shared set-up for the benchmarks: PyTorch on 2 threads, and a ratio report.

Each workload runs twice in the same session, once on tape and once on PyTorch, with
the same pytest-benchmark ``group``; the summary prints tape's median over PyTorch's.
Run: ``python -m pytest bench --benchmark-only``. Add ``--ratio-json=PATH`` to save them,
with the machine and library versions they were measured with (see bench/README.md).
"""

import datetime
import json
import os
import platform

import pytest

import tape  # noqa: F401  (first, as in a user's script: the kernels' runtime fixes apply)

try:
    import torch

    torch.set_num_threads(2)
except ImportError:  # pragma: no cover - torch is in the dev extra
    torch = None


def pytest_addoption(parser):
    parser.addoption("--ratio-json", default=None, help="write tape/torch median ratios here")


def _ratios(config):
    session = getattr(config, "_benchmarksession", None)
    if session is None:
        return {}
    groups = {}
    for bench in session.benchmarks:
        if not bench.stats or not bench.stats.rounds:
            continue
        side = "torch" if "torch" in bench.name else "tape"
        groups.setdefault(bench.group or bench.name, {})[side] = bench.stats.median
    return {
        group: {"tape_s": v["tape"], "torch_s": v["torch"], "ratio": v["tape"] / v["torch"]}
        for group, v in sorted(groups.items())
        if "tape" in v and "torch" in v
    }


def pytest_terminal_summary(terminalreporter, config):
    ratios = _ratios(config)
    if not ratios:
        return
    terminalreporter.section("tape / PyTorch (median time ratio, lower is better)")
    for group, r in ratios.items():
        terminalreporter.write_line(
            f"{group:45s} tape {r['tape_s'] * 1e3:9.3f} ms  torch {r['torch_s'] * 1e3:9.3f} ms"
            f"  ratio {r['ratio']:.3f}"
        )
    path = config.getoption("--ratio-json")
    if path:
        with open(path, "w") as f:
            json.dump({"environment": environment(), "ratios": ratios}, f, indent=2)


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
    """Where the numbers were measured: CPU, GPU (None without one) and library versions."""
    import numpy

    from tape import backend

    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "gpu": None,
        "numpy": numpy.__version__,
        "torch": None,
        "torch_threads": None,
        "torch_cuda": None,
        "cudnn": None,
        "cupy": None,
        "cuda_runtime": None,
    }
    if torch is not None:
        env.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                   torch_cuda=torch.version.cuda)
        if torch.cuda.is_available():
            env["cudnn"] = torch.backends.cudnn.version()
    cp = backend.cupy_or_none()
    if cp is not None:
        props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
        name = props["name"]
        env.update(gpu=name.decode() if isinstance(name, bytes) else name, cupy=cp.__version__,
                   cuda_runtime=cp.cuda.runtime.runtimeGetVersion())
    env["device"] = env["gpu"] or env["cpu"]
    return env


@pytest.fixture
def torch_module():
    if torch is None:
        pytest.skip("PyTorch is not installed (pip install '.[dev]')")
    return torch
