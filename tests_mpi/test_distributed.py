"""tape.distributed across processes: collectives, DistributedDataParallel, the sampler.

Every process runs every test; a check that differs between processes is made on each
with what the collectives gave it, so no process waits on another's failure."""

import numpy as np
import pytest

import tape
import tape.nn as nn
from tape import backend
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


def test_local_rank_is_the_rank_among_this_machines_processes():
    from mpi4py import MPI

    local = dist.local_rank()
    assert local == dist.local_rank()  # cached
    every = MPI.COMM_WORLD.allgather(local)
    assert every == list(range(SIZE))  # every process on this one machine


def _fake_cupy():
    cupy = backend.cupy_or_none()
    return cupy is not None and cupy.__version__.endswith("-fake")


def _gpu_or_skip(nccl=True):
    if backend.cupy_or_none() is None:
        pytest.skip("no CuPy GPU (nor the fake CuPy) here")
    if SIZE == 1:
        pytest.skip("one process: no communicator")
    if nccl and dist._nccl_module() is None and not _fake_cupy():  # the fake has NCCL
        pytest.skip("CuPy without NCCL")


class _Counting:
    """A communicator's stand-in that records which collective ran on which stream."""

    def __init__(self, comm):
        self.comm, self.calls = comm, []

    def __getattr__(self, name):
        method = getattr(self.comm, name)

        def call(*args):
            self.calls.append((name, args[-1]))
            return method(*args)
        return call


def _ints(rank, dtype):
    return (np.arange(6).reshape(2, 3) * (rank + 1) + rank).astype(dtype)


def _ddp_step(model, device):
    rng = np.random.default_rng(RANK)
    x = tape.tensor(rng.normal(size=(8, 12)), device=device)
    with tape.Tape() as t:
        loss = (model(x) ** 2).mean()
    return model.gradient(t, loss)


def test_cuda_collectives_and_ddp_go_through_nccl_not_the_host(monkeypatch):
    """With NCCL, no CuPy array is staged through the host: the collectives run on the
    current stream, the gradient buckets' allreduces on the communication stream."""
    _gpu_or_skip()
    to_host = dist._to_host

    def refuse(array):
        assert not backend.is_cupy(array), "a CuPy array staged through the host"
        return to_host(array)

    monkeypatch.setattr(dist, "_to_host", refuse)
    x = tape.tensor(_values(RANK, np.float32), device="cuda")
    want = np.mean([_values(r, np.float32) for r in range(SIZE)], 0)
    np.testing.assert_allclose(dist.all_reduce(x, "mean").numpy(), want, rtol=1e-6)
    nccl = dist._nccl_comm  # made by the first GPU collective
    assert nccl is not None
    counting = _Counting(nccl.comm)
    monkeypatch.setattr(nccl, "comm", counting)
    current = backend.cupy_or_none().cuda.get_current_stream().ptr
    for dtype in (np.float16, np.int32, np.int64, np.uint8):
        x = tape.tensor(_ints(RANK, dtype), device="cuda")
        got = dist.all_reduce(x, "sum")
        assert got.dtype == dtype and got.device == "cuda"
        np.testing.assert_array_equal(got.numpy(), sum(_ints(r, dtype) for r in range(SIZE)))
        np.testing.assert_array_equal(dist.all_reduce(x.data[:, 1:], "max").numpy(),
                                      _ints(SIZE - 1, dtype)[:, 1:])  # a strided input
    got = dist.broadcast(tape.tensor(_values(RANK, np.float64), device="cuda"), src=SIZE - 1)
    np.testing.assert_array_equal(got.numpy(), _values(SIZE - 1, np.float64))
    assert counting.calls == [("allReduce", current)] * 8 + [("bcast", current)]

    tape.manual_seed(RANK)
    model = dist.DistributedDataParallel(_mlp().double().to("cuda"), bucket_cap_mb=1e-3)
    assert counting.calls[9:] == [("bcast", current)] * len(list(model.parameters()))
    del counting.calls[:]
    grads = _ddp_step(model, "cuda")
    assert nccl.stream is not None and nccl.stream.ptr != current
    assert counting.calls == [("allReduce", nccl.stream.ptr)] * len(model._buckets)
    assert len(model._buckets) > 2
    every = _gathered(grads)  # the same averaged gradients on every process
    for other in every[1:]:
        for a, b in zip(every[0], other):
            np.testing.assert_array_equal(a, b)


def test_cuda_collectives_and_ddp_without_nccl_stage_through_the_host(monkeypatch):
    """CuPy without NCCL (``cupy.cuda.nccl.available`` false): the same results, staged."""
    _gpu_or_skip(nccl=False)
    try:
        from cupy.cuda import nccl
    except ImportError:
        nccl = None
    if nccl is not None:
        monkeypatch.setattr(nccl, "available", False, raising=False)
    assert dist._nccl_module() is None
    to_host, staged = dist._to_host, []

    def counting(array):
        staged.append(backend.is_cupy(array))
        return to_host(array)

    monkeypatch.setattr(dist, "_to_host", counting)
    unused = _Counting(None)
    if dist._nccl_comm is not None:  # made by an earlier test: must not be used now
        unused = _Counting(dist._nccl_comm.comm)
        monkeypatch.setattr(dist._nccl_comm, "comm", unused)
    x = tape.tensor(_values(RANK, np.float32), device="cuda")
    got = dist.all_reduce(x, "mean")
    assert got.device == "cuda" and staged == [True]
    want = np.mean([_values(r, np.float32) for r in range(SIZE)], 0)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)
    got = dist.broadcast(x, src=SIZE - 1)
    np.testing.assert_array_equal(got.numpy(), _values(SIZE - 1, np.float32))
    tape.manual_seed(RANK)
    model = dist.DistributedDataParallel(_mlp().double().to("cuda"), bucket_cap_mb=1e-3)
    del staged[:]
    grads = _ddp_step(model, "cuda")
    assert len(staged) == len(grads) and all(staged)  # each gradient copied to the host
    assert all(g.device == "cuda" for g in grads) and unused.calls == []
    every = _gathered(grads)  # the same averaged gradients on every process
    for other in every[1:]:
        for a, b in zip(every[0], other):
            np.testing.assert_array_equal(a, b)


def test_cuda_fake_nccl_refuses_a_wrong_size_or_rank():
    if not _fake_cupy():
        pytest.skip("checks the fake CuPy's NCCL")
    from cupy.cuda import nccl

    uid = nccl.get_unique_id()
    with pytest.raises(ValueError, match=f"ndev={SIZE + 1}"):
        nccl.NcclCommunicator(SIZE + 1, uid, RANK)
    with pytest.raises(ValueError, match="rank="):
        nccl.NcclCommunicator(SIZE, uid, RANK + SIZE)
    with pytest.raises(ValueError, match="128 bytes"):
        nccl.NcclCommunicator(SIZE, tuple(uid), RANK)


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
