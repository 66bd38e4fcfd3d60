"""The parts of tape.distributed that need no MPI: the replay's final-gradient hook, the
sampler's shards (checked against PyTorch's), and the error without mpi4py. The MPI
tests proper are in tests_mpi/ (``mpiexec -n 2 python -m pytest tests_mpi``)."""

import itertools
import subprocess
import sys

import numpy as np
import pytest

import tape
import tape.nn as nn
from tape import replay
from tape.data import DataLoader, DistributedSampler, TensorDataset


def _cnn():
    tape.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(4 * 4 * 4, 8), nn.Tanh(), nn.Linear(8, 3))


@pytest.mark.parametrize("persistent", [False, True])
def test_on_final_reports_each_gradient_once_final_and_in_reverse_layer_order(persistent):
    model = _cnn()
    params = list(model.parameters())
    unused = nn.Parameter(tape.zeros(2))
    sources = params + [unused]
    x = tape.randn(5, 1, 8, 8)
    with tape.Tape(persistent=persistent) as t:
        loss = (model(x) ** 2).mean()
    seen = []

    def on_final(i, g):  # a copy now, compared with the replay's answer at the end
        seen.append((i, None if g is None else np.array(g)))

    with t._replaying():
        got = replay.gradients(t, [loss], [None], sources, on_final=on_final)
    with tape.Tape() as t2:
        loss2 = (model(x) ** 2).mean()
    want = t2.gradient(loss2, params)
    assert sorted(i for i, _ in seen) == list(range(len(sources)))
    order = [i for i, _ in seen]
    assert order[:2] == [len(params) - 2, len(params) - 1] or order[:2] == [len(params) - 1,
                                                                          len(params) - 2]
    assert order[-1] == len(params)  # the unused source comes last, with None
    for i, g in seen:
        if i == len(params):
            assert g is None and got[i] is None
        else:
            np.testing.assert_array_equal(g, want[i].numpy())
            np.testing.assert_array_equal(got[i], want[i].numpy())


def test_on_final_for_an_intermediate_source_and_a_repeated_one():
    w = tape.tensor([1.0, 2.0])
    with tape.Tape() as t:
        t.watch(w)
        h = w * 3.0
        loss = (h * h).sum()
    seen = {}
    with t._replaying():
        replay.gradients(t, [loss], [None], [w, h, w], on_final=lambda i, g: seen.setdefault(
            i, np.array(g)))
    np.testing.assert_allclose(seen[1], [6.0, 12.0])
    np.testing.assert_allclose(seen[0], [18.0, 36.0])
    np.testing.assert_allclose(seen[2], [18.0, 36.0])


@pytest.mark.parametrize("n, replicas, drop_last, shuffle", list(itertools.product(
    [0, 1, 7, 10, 13], [1, 2, 3, 4], [False, True], [False, True])))
def test_distributed_sampler_shards_match_pytorch_in_size_and_cover(n, replicas, drop_last,
                                                                    shuffle):
    torch_data = pytest.importorskip("torch.utils.data")
    shards = [DistributedSampler(range(n), replicas, r, shuffle=shuffle, drop_last=drop_last)
              for r in range(replicas)]
    theirs = [torch_data.DistributedSampler(range(n), replicas, r, shuffle=shuffle,
                                            drop_last=drop_last) for r in range(replicas)]
    assert [len(s) for s in shards] == [len(s) for s in theirs]
    if not shuffle:
        assert [list(s) for s in shards] == [list(s) for s in theirs]
    got = [list(s) for s in shards]
    assert all(len(g) == len(shards[0]) for g in got)
    flat = [i for g in got for i in g]
    if drop_last:
        assert len(set(flat)) == len(flat) == n - n % replicas
    else:
        assert set(flat) == set(range(n))
        assert len(set(flat)) == n  # distinct but for the padding, which repeats
        assert len(flat) - n == (-n) % replicas


def test_distributed_sampler_orders_change_with_the_epoch_and_agree_across_ranks():
    a, b = DistributedSampler(range(20), 2, 0, seed=3), DistributedSampler(range(20), 2, 1,
                                                                            seed=3)
    first = list(a)
    assert set(first).isdisjoint(b) and set(first) | set(b) == set(range(20))
    a.set_epoch(1)
    b.set_epoch(1)
    assert list(a) != first and set(a).isdisjoint(b)
    a.set_epoch(0)
    assert list(a) == first
    data = TensorDataset(tape.arange(20))
    loader = DataLoader(data, batch_size=4, sampler=DistributedSampler(data, 2, 0, seed=3))
    loader.set_epoch(1)  # the loader tells its sampler
    a.set_epoch(1)
    assert [int(i) for (xb,) in loader for i in xb.numpy()] == list(a)


@pytest.mark.parametrize("kwargs, message", [
    ({"num_replicas": 2, "rank": 2}, "invalid rank 2"),
    ({"num_replicas": 0, "rank": 0}, "num_replicas must be"),
    ({"num_replicas": 2, "rank": -1}, "rank must be"),
    ({"num_replicas": 2, "rank": 0, "seed": -1}, "seed must be"),
])
def test_distributed_sampler_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DistributedSampler(range(4), **kwargs)


def test_import_tape_does_not_import_mpi_and_distributed_names_the_extra():
    code = ("import sys, builtins\n"
            "real = builtins.__import__\n"
            "def fake(name, *a, **k):\n"
            "    if name.startswith('mpi4py'): raise ImportError('no mpi4py')\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = fake\n"
            "import tape, tape.data, tape.nn\n"
            "assert not any(m.startswith('mpi4py') for m in sys.modules)\n"
            "try:\n"
            "    import tape.distributed\n"
            "except ImportError as e:\n"
            "    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "pip install 'tape[mpi]'" in out and "mpi4py" in out


def test_without_mpiexec_the_world_is_one_process():
    pytest.importorskip("mpi4py")
    code = ("import numpy as np, tape, tape.distributed as dist\n"
            "dist.init(); dist.init()\n"
            "assert (dist.rank(), dist.local_rank(), dist.world_size()) == (0, 0, 1)\n"
            "x = tape.tensor([1.0, 2.0])\n"
            "assert dist.all_reduce(x, 'mean').tolist() == [1.0, 2.0]\n"
            "assert dist.broadcast(np.ones(2, np.float32)).dtype == tape.float32\n"
            "dist.barrier()\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == "ok", out.stderr
