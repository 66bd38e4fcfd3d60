"""tape.distributed across processes: collectives, DistributedDataParallel, the sampler.

Every process runs every test; a check that differs between processes is made on each
with what the collectives gave it, so no process waits on another's failure."""

import numpy as np
import pytest

import tape
import tape.nn as nn
from tape.data import DataLoader, DistributedSampler, TensorDataset

dist = pytest.importorskip("tape.distributed")
dist.init()
RANK, SIZE = dist.rank(), dist.world_size()


def _values(rank, dtype, xp=np):
    return xp.asarray((np.arange(6).reshape(2, 3) - 2.5) * (rank + 1) + rank, dtype=dtype)


@pytest.mark.parametrize("op", ["sum", "mean", "max", "min"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["tensor", "array"])
def test_all_reduce(op, dtype, kind, device):
    x = tape.tensor(_values(RANK, dtype), device=device)
    got = dist.all_reduce(x if kind == "tensor" else x.data, op=op)
    every = np.stack([_values(r, dtype) for r in range(SIZE)])
    want = {"sum": every.sum(0), "mean": every.mean(0), "max": every.max(0),
            "min": every.min(0)}[op]
    assert isinstance(got, tape.Tensor) and got.device == device and got.dtype == dtype
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)
    np.testing.assert_array_equal(x.numpy(), _values(RANK, dtype))  # the input is kept


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["tensor", "array"])
@pytest.mark.parametrize("src", range(2))
def test_broadcast(dtype, kind, src, device):
    src = src % SIZE
    x = tape.tensor(_values(RANK, dtype), device=device)
    got = dist.broadcast(x if kind == "tensor" else x.data, src=src)
    assert isinstance(got, tape.Tensor) and got.device == device and got.dtype == dtype
    np.testing.assert_array_equal(got.numpy(), _values(src, dtype))


def test_collective_errors():
    with pytest.raises(ValueError, match="op must be one of"):
        dist.all_reduce(tape.ones(2), op="prod")
    with pytest.raises(TypeError, match="floating-point"):
        dist.all_reduce(np.ones(2, np.int64), op="mean")
    with pytest.raises(ValueError, match="src must be a rank"):
        dist.broadcast(tape.ones(2), src=SIZE)
    with pytest.raises(TypeError, match="tape.Tensor or an array"):
        dist.all_reduce([1.0, 2.0])
    dist.init()  # idempotent
    assert 0 <= dist.rank() < dist.world_size() == SIZE


def _mlp():
    return nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(),
                         nn.Linear(16, 3))


def _cnn():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(6 * 4 * 4, 3))


def _gathered(params):
    """Every process's copy of ``params`` (a list per process)."""
    from mpi4py import MPI

    return MPI.COMM_WORLD.allgather([p.numpy() for p in params])


def test_ddp_copies_rank_0s_weights_and_buffers_and_keeps_them_equal(device):
    tape.manual_seed(100 + RANK)  # different weights on each process
    net = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2))
    net.to(device)
    net[1].running_mean.data[...] = RANK  # and different buffers
    model = dist.DistributedDataParallel(net)
    states = _gathered(list(model.parameters()) + list(model.buffers()))
    for other in states[1:]:
        for a, b in zip(states[0], other):
            np.testing.assert_array_equal(a, b)
    opt = tape.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    rng = np.random.default_rng(RANK)
    for _ in range(3):
        x = tape.tensor(rng.normal(size=(8, 5)).astype(np.float32), device=device)
        with tape.Tape() as t:
            loss = (model(x) ** 2).mean()
        opt.step(model.gradient(t, loss))
    states = _gathered(list(model.parameters()))
    for other in states[1:]:
        for a, b in zip(states[0], other):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("build, shape", [(_mlp, (12,)), (_cnn, (1, 8, 8))],
                         ids=["mlp", "cnn"])
@pytest.mark.parametrize("overlap, bucket_cap_mb", [(True, 1e-3), (True, 4.0),
                                                    (False, 1e-3)])
def test_n_processes_follow_one_process_with_n_times_the_batch(build, shape, overlap,
                                                                bucket_cap_mb, device):
    """Per-process batch 16 on each of N processes == batch 16 N in one, to 1e-6 in
    float64, over 20 SGD-momentum steps."""
    tape.manual_seed(0)
    reference = build().double().to(device)
    tape.manual_seed(RANK + 7)  # different weights, replaced by rank 0's
    net = build().double().to(device)
    if RANK == 0:
        net.load_state_dict(reference.state_dict())
    model = dist.DistributedDataParallel(net, bucket_cap_mb=bucket_cap_mb, overlap=overlap)
    if bucket_cap_mb < 0.01:
        assert len(model._buckets) > 2
    opts = [tape.optim.SGD(m.parameters(), lr=0.05, momentum=0.9) for m in (reference, model)]
    loss_fn = nn.CrossEntropyLoss()
    rng = np.random.default_rng(42)  # the same global batches on every process
    batch = 16
    for _ in range(20):
        x = tape.tensor(rng.normal(size=(batch * SIZE, *shape)), device=device)
        y = tape.tensor(rng.integers(0, 3, batch * SIZE), device=device)
        with tape.Tape() as t:
            loss = loss_fn(reference(x), y)
        opts[0].step(t.gradient(loss, list(reference.parameters())))
        mine = slice(RANK * batch, (RANK + 1) * batch)
        with tape.Tape() as t:
            loss = loss_fn(model(x[mine]), y[mine])
        opts[1].step(model.gradient(t, loss))
    for a, b in zip(reference.parameters(), model.parameters()):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-6, atol=1e-6)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body, self.head = _mlp(), nn.Linear(3, 2)
        self.note = "kept"

    def forward(self, x):
        return self.head(self.body(x))


def test_ddp_passes_through_to_the_module():
    tape.manual_seed(0)
    net = _Net()
    model = dist.DistributedDataParallel(net)
    assert model.module is net and model.head is net.head and model.note == "kept"
    assert model.state_dict().keys() == net.state_dict().keys()
    assert "head.weight" in model.state_dict()
    model.load_state_dict(net.state_dict())
    model.eval()
    assert not net.training and not net.body[0].training
    model.train()
    assert net.training
    assert [p is q for p, q in zip(model.parameters(), net.parameters())] == [True] * 8
    with pytest.raises(AttributeError):
        model.no_such_thing
    net.extra = nn.Linear(2, 2)
    with pytest.raises(RuntimeError, match="parameters changed"):
        with tape.Tape() as t:
            loss = model(tape.ones(1, 12)).sum()
        model.gradient(t, loss)


def test_unused_parameters_get_zeros_on_every_process():
    tape.manual_seed(0)
    net = nn.ModuleDict({"used": nn.Linear(3, 2), "unused": nn.Linear(3, 2)})
    model = dist.DistributedDataParallel(net)
    with tape.Tape() as t:
        loss = net["used"](tape.ones(4, 3) * (RANK + 1)).sum()
    grads = model.gradient(t, loss)
    names = [n for n, _ in net.named_parameters()]
    for name, g in zip(names, grads):
        if name.startswith("unused"):
            np.testing.assert_array_equal(g.numpy(), 0)
        else:
            assert np.abs(g.numpy()).sum() > 0


def test_distributed_sampler_shards_are_disjoint_cover_and_change_with_the_epoch():
    data = TensorDataset(tape.arange(50))
    sampler = DistributedSampler(data, seed=1)  # the world's size and this rank
    assert (sampler.num_replicas, sampler.rank) == (SIZE, RANK)
    loader = DataLoader(data, batch_size=8, sampler=sampler)
    epochs = []
    for epoch in range(2):
        loader.set_epoch(epoch)
        mine = [int(i) for (xb,) in loader for i in xb.numpy()]
        shards = [list(s) for s in _gathered([tape.tensor(np.array(mine))])]
        shards = [s[0].tolist() for s in shards]
        assert len({len(s) for s in shards}) == 1
        flat = [i for s in shards for i in s]
        assert set(flat) == set(range(50)) and len(flat) - 50 == (-50) % SIZE
        if SIZE > 1:
            assert len(set(shards[0]) & set(shards[1])) <= (-50) % SIZE
        epochs.append(mine)
    assert epochs[0] != epochs[1]
