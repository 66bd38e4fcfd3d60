"""tape's own threads (kernels/cpu/threads.py) and reused buffers (kernels/cpu/buffers.py):
every work item done once, errors raised in the caller, concurrent and nested callers,
fork, the faster way kept for each kind of kernel call, GEMMs on the team (while the
machine is busy) equal to numpy's, and buffers reused only when free."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import sys
import threading
import time

import numpy as np
import pytest

import kernels
from kernels.cpu import buffers, threads


def _record(start, stop, seen, who):
    seen[start:stop] += 1
    who.append(threading.get_ident())


@pytest.fixture
def two_threads():
    """Two threads, and every call that can be split dealt out (no measuring)."""
    with kernels.configure(num_threads=2, tune_threads=False):
        yield


@pytest.fixture
def tuned(monkeypatch):
    """Two threads, routes measured afresh, an idle machine."""
    monkeypatch.setattr(threads, "_routes", {})
    monkeypatch.setattr(threads._machine, "others_load", lambda now: 0.0)
    with kernels.configure(num_threads=2, tune_threads=True):
        yield


@pytest.mark.parametrize("n_items", [1, 2, 3, 7, 1000])
@pytest.mark.parametrize("work", [0, 1 << 30])  # below SMALL_WORK: in the caller; above: dealt
def test_parallel_for_covers_every_item_once(two_threads, n_items, work):
    seen, who = np.zeros(n_items, int), []
    threads.parallel_for(_record, n_items, seen, who, work=work)
    assert (seen == 1).all()
    if work < threads.SMALL_WORK:
        assert who == [threading.get_ident()]  # one call, in the caller


_one_at_a_time = threading.Lock()


def _slow_per_call(start, stop, who):
    """1 ms per call, one call at a time: splitting only adds calls."""
    with _one_at_a_time:
        time.sleep(1e-3)
    who.append(threading.get_ident())


def _slow_per_item(start, stop, who):
    """2 ms per item, calls side by side (sleep releases the GIL): splitting halves it."""
    time.sleep(2e-3 * (stop - start))
    who.append(threading.get_ident())


@pytest.mark.parametrize("fn, kept_shared", [(_slow_per_call, False), (_slow_per_item, True)])
def test_each_kind_of_call_is_measured_both_ways_and_the_faster_kept(tuned, monkeypatch, fn,
                                                                     kept_shared):
    monkeypatch.setattr(threads, "_precompiler_running", lambda: False)
    calls = threads.WARMUP + 2 * threads.TRIALS
    ways = []
    for _ in range(calls):
        who = []
        threads.parallel_for(fn, 8, who, work=1 << 30)
        ways.append(len(who) > 1)
    assert ways[: threads.WARMUP] == [True] * threads.WARMUP  # then alternating
    assert ways[threads.WARMUP:] == [True, False] * threads.TRIALS
    for _ in range(3):  # from now on the faster way only
        who = []
        threads.parallel_for(fn, 8, who, work=1 << 30)
        assert (len(who) > 1) == kept_shared
    route, = threads._routes.values()
    assert route.shared is kept_shared and route.seconds[0] and route.seconds[1]


@pytest.mark.parametrize("alone, shared, kept_shared", [
    ([5, 4, 6, 9, 4], [3, 8, 8, 8, 8], True),  # the best times, not the medians
    ([3, 3, 3, 3, 3], [3, 3, 3, 3, 3], False),  # a tie: alone
    ([1, 1, 1, 1, 1], [2, 2, 2, 2], None),  # too few shared times: not chosen yet
])
def test_a_route_keeps_the_way_with_the_best_time(alone, shared, kept_shared):
    route = threads._Route()
    for seconds in alone:
        route.took(False, seconds)
    for seconds in shared:
        route.took(True, seconds)
    assert route.shared is kept_shared
    if kept_shared is not None:
        assert route.next_way() == (kept_shared, False)  # chosen: no more timing


def test_a_kept_way_is_measured_afresh_after_a_while(monkeypatch):
    monkeypatch.setattr(threads, "REMEASURE", 3)
    route = threads._Route()
    for shared in (False, True) * threads.TRIALS:
        route.took(shared, 1.0 if shared else 2.0)
    assert route.shared is True
    assert [route.next_way() for _ in range(3)] == [(True, False)] * 3
    assert route.next_way() == (True, True) and route.shared is None  # timed again (warm)
    assert route.next_way() == (False, True) and route.seconds == ([], [])


def test_timings_are_dropped_while_the_team_is_busy_or_a_precompiler_runs(tuned, monkeypatch):
    monkeypatch.setattr(threads, "_precompiler_running", lambda: True)
    calls = threads.WARMUP + 2 * threads.TRIALS
    for _ in range(calls):
        threads.parallel_for(_record, 100, np.zeros(100, int), [], work=1 << 20)
    route = threads._routes[(_record, (1 << 20).bit_length(), 2)]
    assert route.calls == calls and route.seconds == ([], []) and route.shared is None
    monkeypatch.setattr(threads, "_precompiler_running", lambda: False)
    threads.parallel_for(_nested, 16, np.zeros(16, int), work=1 << 20)  # inner calls: team busy
    inner = threads._routes[(_record, (1 << 30).bit_length(), 2)]
    assert inner.seconds[0] and not inner.seconds[1]  # alone timed; "shared" ran alone: not


def test_kinds_are_told_apart_by_kernel_and_work(tuned):
    seen, who = np.zeros(100, int), []
    for work in (1 << 20, 1 << 21, 1 << 24):
        threads.parallel_for(_record, 100, seen, who, work=work)
    threads.parallel_for(_slow_per_item, 2, who, work=1 << 20)
    assert (seen == 3).all() and len(threads._routes) == 4


def test_chunks_are_balanced_and_contiguous():
    for n, k in [(10, 4), (3, 8), (1000, 7), (0, 3)]:
        parts = threads.chunks(n, k)
        assert [a for a, _ in parts[1:]] == [b for _, b in parts[:-1]]
        if n:
            assert parts[0][0] == 0 and parts[-1][1] == n
            sizes = [b - a for a, b in parts]
            assert max(sizes) - min(sizes) <= 1 and len(parts) == min(n, k)


def _fail_at(start, stop, bad):
    if start <= bad < stop:
        raise ValueError(f"item {bad} failed")


def test_an_error_in_any_chunk_is_raised_in_the_caller(two_threads):
    for bad in (0, 999):
        with pytest.raises(ValueError, match=f"item {bad} failed"):
            threads.parallel_for(_fail_at, 1000, bad, work=1 << 30)
    seen, who = np.zeros(100, int), []  # and the team still works afterwards
    threads.parallel_for(_record, 100, seen, who, work=1 << 30)
    assert (seen == 1).all()


def test_concurrent_callers_each_get_their_own_result(two_threads):
    def job(k):
        seen, who = np.zeros(500 + k, int), []
        for _ in range(20):
            threads.parallel_for(_record, seen.size, seen, who, work=1 << 30)
        return bool((seen == 20).all())

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        assert all(pool.map(job, range(8)))


def _nested(start, stop, out):
    for i in range(start, stop):
        inner = np.zeros(10, int)
        threads.parallel_for(_record, 10, inner, [], work=1 << 30)  # the team is busy: alone
        out[i] = inner.sum()


def test_nested_calls_run_in_the_caller(two_threads):
    out = np.zeros(16, int)
    threads.parallel_for(_nested, 16, out, work=1 << 30)
    assert (out == 10).all()


def test_one_thread_runs_everything_in_the_caller():
    before = kernels.num_threads()
    kernels.set_num_threads(1)
    try:
        assert kernels.num_threads() == 1 == kernels.config.current().num_threads
        seen, who = np.zeros(1000, int), []
        threads.parallel_for(_record, 1000, seen, who, work=1 << 30)
        assert (seen == 1).all() and set(who) == {threading.get_ident()}
    finally:
        kernels.set_num_threads(before)
    with pytest.raises(ValueError, match="at least one thread"):
        kernels.set_num_threads(0)
    assert kernels.num_threads() == before


def _child(queue):
    seen, who = np.zeros(300, int), []
    threads.parallel_for(_record, 300, seen, who, work=1 << 30)
    queue.put(bool((seen == 1).all()))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_a_team_of_its_own(two_threads):
    seen, who = np.zeros(300, int), []
    threads.parallel_for(_record, 300, seen, who, work=1 << 30)  # the parent's helper exists
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    p = ctx.Process(target=_child, args=(queue,))
    p.start()
    assert queue.get(timeout=60) is True
    p.join(60)
    assert p.exitcode == 0


# ----- GEMMs on the team -----

GEMMS = [  # the shapes, and how _gemm_split splits them on two threads
    ((300, 200), (200, 310), "columns"), ((310, 200), (200, 300), "rows"),
    ((8, 9), (9, 50000), "columns"),
    ((9, 65536), (65536, 8), "stretches"),  # a long shared axis: stretches summed
    ((8, 9), (9, 50176), "columns"),  # a tiny one, a large result: split all the same
    ((16, 400, 30), (16, 30, 40), "batch"), ((3, 4), (4, 5), None),
    ((5, 300, 300), (300, 300), None)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shapes", GEMMS, ids=str)
def test_matmul_on_the_team_equals_numpy(two_threads, shapes, dtype):
    rng = np.random.default_rng(0)
    *shapes, how = shapes
    a, b = (rng.standard_normal(s).astype(dtype) for s in shapes)
    split = threads._gemm_split(a, b, 2)
    assert (split and split[0]) == how
    expected = a @ b
    blas = threads._blas()
    before = blas.get() if blas.get else None
    got = threads.matmul(a, b)
    np.testing.assert_allclose(got, expected, rtol=1e-5 if dtype == np.float32 else 1e-12,
                               atol=1e-4 if dtype == np.float32 else 1e-10)
    if before is not None:
        assert blas.get() == before  # OpenBLAS's thread count given back
    assert threads.matmul(a.T.copy().T, b).shape == expected.shape  # any strides


@pytest.fixture
def blas():
    """numpy's OpenBLAS, whose thread count tape holds; elsewhere tape leaves GEMMs to
    numpy, and these tests skip."""
    blas = threads._blas()
    if blas.set is None:
        pytest.skip("numpy is not built on OpenBLAS here: its GEMMs are left to it")
    return blas


def _spy_on_team(monkeypatch):
    """Count the GEMMs split among tape's threads."""
    calls, on_team = [], threads._matmul_on_team

    def spy(*args):
        calls.append(1)
        return on_team(*args)

    monkeypatch.setattr(threads, "_matmul_on_team", spy)
    return calls


def test_gemms_stay_on_openblas_on_an_idle_machine(tuned, blas, monkeypatch):
    calls = _spy_on_team(monkeypatch)
    a = np.ones((300, 300), np.float32)
    for _ in range(3):
        assert (threads.matmul(a, a) == 300).all()
    assert not calls


@pytest.mark.parametrize("threads_set, load, on_team", [
    (4, 1.0, True),  # three CPUs left to tape: split over its threads
    (2, 1.0, False),  # one CPU left: in the caller, OpenBLAS held to one thread
    (2, 0.6, False),
    (4, 2.6, False),
])
def test_gemms_leave_openblas_while_other_processes_keep_a_core_busy(
        tuned, blas, monkeypatch, threads_set, load, on_team):
    calls = _spy_on_team(monkeypatch)
    counts = []
    set_ = blas.set
    monkeypatch.setattr(blas, "set", lambda n: counts.append(n) or set_(n))
    monkeypatch.setattr(threads._machine, "others_load", lambda now: load)
    a = np.ones((300, 300), np.float32)
    with kernels.configure(num_threads=threads_set):
        for _ in range(3):
            assert (threads.matmul(a, a) == 300).all()
    assert len(calls) == (3 if on_team else 0)
    assert counts[::2] == [1, 1, 1]  # each call held OpenBLAS to one thread


def test_the_machine_reads_how_many_cpus_other_processes_use(monkeypatch):
    machine = threads._Machine()
    now = {"busy": 10.0, "ours": 1.0}  # CPU-seconds: all processes' busy time, and ours
    monkeypatch.setattr(machine, "_cpu_seconds", lambda: now["busy"])
    monkeypatch.setattr(threads.os, "times",
                        lambda: os.times_result((now["ours"], 0.0, 0.0, 0.0, 0.0)))
    assert machine.others_load(100.0) == 0.0  # the first look: nothing to compare with
    now.update(busy=12.0, ours=1.5)  # 2 CPU-seconds busy in 1 s, 0.5 of them ours
    assert machine.others_load(100.2) == 0.0  # within BUSY_WINDOW: the last answer
    assert machine.others_load(101.0) == pytest.approx(1.5)


def test_kernel_calls_run_in_the_caller_with_one_cpu_left(tuned, monkeypatch):
    monkeypatch.setattr(threads._machine, "others_load", lambda now: 1.0)
    for _ in range(threads.WARMUP + 2 * threads.TRIALS):  # idle, these would be dealt out
        who = []
        threads.parallel_for(_slow_per_item, 8, who, work=1 << 30)
        assert who == [threading.get_ident()]  # one call, in the caller
    assert not threads._routes  # and not measured
    monkeypatch.setattr(threads._machine, "others_load", lambda now: 0.0)
    who = []
    threads.parallel_for(_slow_per_item, 8, who, work=1 << 30)
    assert len(who) > 1  # idle again: dealt out


def test_one_thread_runs_gemms_in_the_caller_with_openblas_held(blas, monkeypatch):
    before, calls = blas.get(), []
    set_ = blas.set
    monkeypatch.setattr(blas, "set", lambda n: calls.append(n) or set_(n))
    a = np.random.default_rng(0).standard_normal((300, 300))
    with kernels.configure(num_threads=1):
        np.testing.assert_allclose(threads.matmul(a, a), a @ a, rtol=1e-12, atol=1e-10)
    assert calls == [1, before] and blas.get() == before


def test_overlapping_holds_give_openblas_its_thread_count_back(blas):
    before = blas.get()
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()

    def first():
        first_in.set()
        assert second_in.wait(10)

    def second():
        second_in.set()
        assert first_out.wait(10)  # the first hold has ended: this one ends last

    a = threading.Thread(target=threads._held, args=(blas, first))
    b = threading.Thread(target=lambda: first_in.wait(10) and threads._held(blas, second))
    a.start()
    b.start()
    a.join(10)
    first_out.set()
    b.join(10)
    assert blas.get() == before  # not the 1 the second hold would have read


def _child_holds(queue, before):
    queue.put((threads._holds, threads._blas().get() == before, threads._machine.at))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_child_forked_during_a_hold_gets_openblas_back_and_looks_afresh(blas):
    before, holding, done = blas.get(), threading.Event(), threading.Event()
    a = threading.Thread(target=threads._held,
                         args=(blas, lambda: holding.set() or done.wait(60)))
    a.start()
    try:
        assert holding.wait(10) and blas.get() == 1
        threads._machine.others_load(time.perf_counter())  # the parent has looked
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        p = ctx.Process(target=_child_holds, args=(queue, before))
        p.start()
        assert queue.get(timeout=60) == (0, True, None)  # the child: no hold, its count
        p.join(60)  # back, and no look at the machine from its parent's CPU times
    finally:
        done.set()
        a.join(10)
    assert blas.get() == before


def test_numpys_openblas_thread_count_is_found():
    if "openblas" not in str(np.show_config(mode="dicts")).lower():
        pytest.skip("numpy is not built on OpenBLAS here")
    assert threads._blas().get is not None and threads._blas().get() >= 1


# ----- buffers -----


@pytest.fixture
def buffers_on():
    with kernels.configure(buffers=True):
        yield


def test_a_free_block_is_reused_and_a_used_one_is_not(buffers_on):
    buffers.clear()
    shape = (64, 1024)  # 256 KiB of float32
    a = buffers.empty(shape, np.float32)
    block = a.ctypes.data  # its address: holding a.base itself would keep the block in use
    b = buffers.empty(shape, np.float32)
    assert b.ctypes.data != block  # a is alive: another block
    a[:] = 1
    b[:] = 2
    assert (a == 1).all()
    del a
    c = buffers.empty(shape, np.float32)
    assert c.ctypes.data == block  # a's block, free again
    view = c[3:5]
    del c
    d = buffers.empty(shape, np.float32)
    assert d.ctypes.data != block  # a view of the block is still alive
    del view, d, b


def test_buffers_give_contiguous_arrays_of_any_dtype_and_small_ones_plainly():
    for dtype in (np.float32, np.float64, np.int64, np.uint8):
        a = buffers.empty((300, 500), dtype)
        assert a.dtype == dtype and a.shape == (300, 500) and a.flags.c_contiguous
        assert a.flags.writeable
    small = buffers.empty((4, 4), np.float32)
    assert small.base is None  # below MIN_BYTES: a plain allocation


def test_idle_blocks_are_released_past_the_limit(buffers_on, monkeypatch):
    monkeypatch.setattr(buffers, "MAX_IDLE_BYTES", 4 << 20)
    buffers.clear()
    for k in range(1, 20):
        buffers.empty((k << 18,), np.uint8)  # each freed at once: idle blocks pile up...
    assert buffers.pooled_bytes() <= (4 << 20) + (20 << 18)  # ...but only up to the limit
    buffers.clear()


def test_buffers_can_be_turned_off():
    import subprocess

    code = ("import numpy as np; from kernels.cpu import buffers; "
            "print(buffers.empty((1000, 1000), np.float32).base is None)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, TAPE_BUFFERS="0"), check=True)
    assert out.stdout.strip() == "True"


def test_no_temporary_folder_means_no_precompiler(monkeypatch):
    from kernels.cpu import precompile

    def unwritable(name):
        raise PermissionError(f"cannot create the lock for {name}")

    monkeypatch.setattr(precompile, "_path", unwritable)
    assert precompile.running() is False and threads._precompiler_running() is False
    precompile.wait_for("_relu")  # returns at once instead of raising
