"""tape.optim against torch.optim: one table of optimizer configurations, run step by step.

Each row runs on tape and on torch from the same weights and the same random gradients
(some of them None), comparing the parameters after every step.
"""

import copy
import math
import tracemalloc

import numpy as np
import pytest
import torch

import tape
from tape import backend, optim
from tape.optim import lr_scheduler

SHAPES = [(4, 3), (5,), (2, 3, 2)]
STEPS = 30
TOL = {np.float32: {"rtol": 1e-5, "atol": 1e-6}, np.float64: {"rtol": 1e-10, "atol": 1e-12}}

# (optimizer, settings, groups): groups lists (parameter indices, per-group overrides)
CASES = [
    ("SGD", {"lr": 0.1}, None),
    ("SGD", {"lr": 0.1, "momentum": 0.9}, None),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.3}, None),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True}, None),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}, None),
    ("SGD", {"lr": 0.1, "weight_decay": 0.1, "maximize": True}, None),
    ("SGD", {"lr": 0.05, "momentum": 0.5, "dampening": 0.5, "weight_decay": 0.05,
             "maximize": True}, None),
    ("SGD", {"lr": 0.1, "momentum": 0.9},
     [([0, 2], {}), ([1], {"lr": 0.01, "nesterov": True, "weight_decay": 0.1})]),
    ("Adam", {}, None),
    ("Adam", {"lr": 1e-2, "betas": (0.8, 0.99), "weight_decay": 0.1}, None),
    ("Adam", {"lr": 1e-2, "amsgrad": True}, None),
    ("Adam", {"lr": 1e-2, "amsgrad": True, "weight_decay": 0.01, "maximize": True}, None),
    ("Adam", {"lr": 1e-2, "betas": (0.0, 0.5)}, None),  # lerp's weight >= 0.5 branch
    ("Adam", {"lr": 1e-2}, [([1], {"lr": 1e-3, "amsgrad": True}), ([2, 0], {"eps": 1e-3})]),
    ("AdamW", {"lr": 1e-2}, None),
    ("AdamW", {"lr": 1e-2, "weight_decay": 0.1, "amsgrad": True}, None),
    ("AdamW", {"lr": 1e-2, "maximize": True, "betas": (0.5, 0.9)}, None),
    ("RMSprop", {"lr": 1e-2}, None),
    ("RMSprop", {"lr": 1e-2, "momentum": 0.9}, None),
    ("RMSprop", {"lr": 1e-2, "centered": True}, None),
    ("RMSprop", {"lr": 1e-2, "centered": True, "momentum": 0.5, "weight_decay": 0.1}, None),
    ("RMSprop", {"lr": 1e-2, "alpha": 0.3, "maximize": True}, None),
    ("RMSprop", {"lr": 1e-2},
     [([0], {"centered": True}), ([1, 2], {"lr": 3e-3, "momentum": 0.9})]),
    ("Adagrad", {}, None),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.05, "initial_accumulator_value": 0.5}, None),
    ("Adagrad", {"lr": 0.1, "weight_decay": 0.1, "eps": 1e-6, "maximize": True}, None),
    ("Adagrad", {"lr": 0.1}, [([2], {"lr_decay": 0.1}), ([0, 1], {"weight_decay": 0.05})]),
    ("Adamax", {}, None),
    ("Adamax", {"lr": 1e-2, "betas": (0.8, 0.99), "weight_decay": 0.1}, None),
    ("Adamax", {"lr": 1e-2, "eps": 1e-3, "maximize": True, "weight_decay": 0.01}, None),
    ("Adamax", {"lr": 1e-2, "betas": (0.0, 0.5)}, [([1, 0], {}), ([2], {"lr": 1e-3})]),
    ("NAdam", {}, None),
    ("NAdam", {"lr": 1e-2, "betas": (0.8, 0.99), "weight_decay": 0.1}, None),
    ("NAdam", {"lr": 1e-2, "weight_decay": 0.1, "decoupled_weight_decay": True}, None),
    ("NAdam", {"lr": 1e-2, "momentum_decay": 0.05, "maximize": True, "weight_decay": 0.01},
     None),
    ("NAdam", {"lr": 1e-2}, [([0], {"momentum_decay": 0.1}), ([2, 1], {"eps": 1e-3})]),
    ("RAdam", {}, None),
    ("RAdam", {"lr": 1e-2, "betas": (0.8, 0.99), "weight_decay": 0.1}, None),
    ("RAdam", {"lr": 1e-2, "weight_decay": 0.1, "decoupled_weight_decay": True}, None),
    ("RAdam", {"lr": 1e-2, "betas": (0.5, 0.8), "maximize": True, "weight_decay": 0.01},
     None),
    ("RAdam", {"lr": 1e-2}, [([1], {"betas": (0.9, 0.9)}), ([0, 2], {"eps": 1e-3})]),
]
NEW = ("Adagrad", "Adamax", "NAdam", "RAdam")  # each one's first row joins the smaller tables
FIRST_NEW = [next(c for c in CASES if c[0] == name) for name in NEW]


def case_id(case):
    name, settings, groups = case
    parts = [name] + [f"{k}={v}" for k, v in settings.items()]
    return "-".join(parts) + ("-groups" if groups else "")


def build(module, case, params):
    """The optimizer of ``module`` (tape.optim or torch.optim) for one table row."""
    name, settings, groups = case
    extra = {"foreach": False} if module is torch.optim else {}
    if groups is None:
        return getattr(module, name)(params, **settings, **extra)
    spec = [{"params": [params[i] for i in idx], **over} for idx, over in groups]
    return getattr(module, name)(spec, **settings, **extra)


def flat_order(case):
    """Parameter indices in the order step() takes their gradients."""
    groups = case[2]
    return list(range(len(SHAPES))) if groups is None else [i for idx, _ in groups for i in idx]


def unflatten(case, flat):
    """Parameters listed in step() order, put back in table-index order for build()."""
    out = [None] * len(flat)
    for i, p in zip(flat_order(case), flat):
        out[i] = p
    return out


def start(case, dtype, device="cpu"):
    """Our optimizer and torch's, on equal copies of the same weights, in step() order."""
    rng = np.random.default_rng(0)
    init = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    ours = [tape.tensor(a, device=device) for a in init]
    theirs = [torch.tensor(a, requires_grad=True) for a in init]
    order = flat_order(case)
    return (build(optim, case, ours), build(torch.optim, case, theirs),
            [ours[i] for i in order], [theirs[i] for i in order])


def gradients(ours, steps, seed=1):
    """A reproducible gradient list per step; parameter 1 gets None every 4th step."""
    rng = np.random.default_rng(seed)
    return [[None if (i == 1 and k % 4 == 3) else
             rng.standard_normal(p.shape).astype(p.dtype) for i, p in enumerate(ours)]
            for k in range(steps)]


def step_tape(opt, grads, device="cpu"):
    opt.step([None if g is None else tape.tensor(g, device=device) for g in grads])


def step_torch(opt, params, grads):
    for p, g in zip(params, grads):
        p.grad = None if g is None else torch.from_numpy(g.copy())
    opt.step()


# ----- the table: every configuration against torch, step by step -----


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_matches_torch(case, dtype, device):
    opt, topt, ours, theirs = start(case, dtype, device)
    arrays = [p.data for p in ours]
    for k, grads in enumerate(gradients(ours, STEPS)):
        step_tape(opt, grads, device)
        step_torch(topt, theirs, grads)
        for i, (p, q, a) in enumerate(zip(ours, theirs, arrays)):
            assert p.data is a, "the update must happen in place"
            assert p.dtype == dtype and p.device == device
            np.testing.assert_allclose(p.numpy(), q.detach().numpy(), **TOL[dtype],
                                       err_msg=f"parameter {i} after step {k + 1}")
    ours_sd, torch_sd = opt.state_dict(), topt.state_dict()
    assert ours_sd["state"].keys() == torch_sd["state"].keys()
    for i, buffers in ours_sd["state"].items():
        assert buffers.keys() == torch_sd["state"][i].keys()
        for key, value in buffers.items():
            expected = torch_sd["state"][i][key]
            if key == "step":
                assert value == int(expected)
            else:
                # parameter-shaped buffers are in the parameter's dtype, NAdam's mu_product
                # in float32: torch's dtypes either way
                assert value.dtype == expected.numpy().dtype == (dtype if value.ndim else
                                                                 np.float32)
                assert backend.device_of(value) == device
                np.testing.assert_allclose(backend.to_numpy(value), expected.numpy(),
                                           **TOL[dtype], err_msg=key)
    for group, tgroup in zip(ours_sd["param_groups"], torch_sd["param_groups"]):
        assert group.keys() <= tgroup.keys()
        assert group == {k: tgroup[k] for k in group}


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_state_dict_round_trip(case, device):
    opt, _, ours, _ = start(case, np.float32, device)
    seq = gradients(ours, 20)
    for grads in seq[:10]:
        step_tape(opt, grads, device)
    saved = opt.state_dict()
    snapshot = copy.deepcopy(saved)
    twins = [tape.tensor(p.data) for p in ours]
    fresh = build(optim, case, unflatten(case, twins))
    for group in fresh.param_groups:
        group["lr"] = 123.0  # the load brings the saved settings back
    fresh.load_state_dict(saved)
    for grads in seq[10:]:
        step_tape(opt, grads, device)
        step_tape(fresh, grads, device)
        for p, q in zip(ours, twins):
            np.testing.assert_array_equal(p.numpy(), q.numpy())
    for i, buffers in snapshot["state"].items():  # the saved dict did not move with the steps
        for key, value in buffers.items():
            np.testing.assert_array_equal(backend.to_numpy(saved["state"][i][key]),
                                          backend.to_numpy(value))
    assert saved["param_groups"] == snapshot["param_groups"]


@pytest.mark.parametrize("case", CASES[1:3] + CASES[9:12] + CASES[19:21] + FIRST_NEW,
                         ids=case_id)
def test_loads_a_torch_state_dict(case):
    opt, topt, ours, theirs = start(case, np.float32)
    seq = gradients(ours, 20)
    for grads in seq[:10]:
        step_torch(topt, theirs, grads)
    for p, q in zip(ours, theirs):
        p.data[...] = q.detach().numpy()
    opt.load_state_dict(topt.state_dict())
    for grads in seq[10:]:
        step_tape(opt, grads)
        step_torch(topt, theirs, grads)
    for p, q in zip(ours, theirs):
        np.testing.assert_allclose(p.data, q.detach().numpy(), **TOL[np.float32])


# ----- precision and memory -----


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", *NEW])
def test_float32_stays_float32_with_numpy_settings(name):
    p = tape.tensor(np.ones((3, 2), np.float32))
    settings = {"lr": np.float64(0.1), "weight_decay": np.float64(0.01)}
    settings.update({"momentum": np.float64(0.9)} if name in ("SGD", "RMSprop") else {})
    opt = getattr(optim, name)([p], **settings)
    for _ in range(3):
        opt.step([tape.tensor(np.full((3, 2), 0.5))])  # a float64 gradient, too
    assert p.dtype == np.float32
    for value in opt.state[p].values():
        assert not hasattr(value, "dtype") or value.dtype == np.float32


MEMORY = [
    ("SGD", {"lr": 0.1}, 1),
    ("SGD", {"lr": 0.1, "momentum": 0.9}, 1),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True}, 1),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.1}, 1),
    ("Adam", {}, 1),
    ("Adam", {"amsgrad": True}, 1),
    ("Adam", {"weight_decay": 0.1}, 2),
    ("AdamW", {}, 1),
    ("RMSprop", {"momentum": 0.9, "centered": True}, 1),
    ("Adagrad", {}, 1),
    ("Adagrad", {"weight_decay": 0.1}, 2),
    ("Adamax", {}, 1),
    ("NAdam", {}, 2),
    ("NAdam", {"weight_decay": 0.1}, 2),
    ("RAdam", {}, 2),
    ("RAdam", {"weight_decay": 0.1, "decoupled_weight_decay": True}, 2),
]


@pytest.mark.parametrize("name, settings, temporaries", MEMORY,
                         ids=[f"{n}-{'-'.join(s)}" for n, s, _ in MEMORY])
def test_step_allocates_only_the_formulas_temporaries(name, settings, temporaries):
    p = tape.tensor(np.zeros(1 << 20, np.float32))  # 4 MiB
    g = tape.tensor(np.random.default_rng(0).standard_normal(p.shape).astype(np.float32))
    opt = getattr(optim, name)([p], **settings)
    opt.step([g])
    opt.step([g])  # the state buffers exist from here on
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        opt.step([g])
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    slack = 64 << 10
    assert peak - base <= temporaries * p.data.nbytes + slack
    assert current - base <= slack  # nothing kept


# ----- errors -----

BAD_SETTINGS = [
    (lambda ps: optim.SGD(ps, lr=-0.1), "lr"),
    (lambda ps: optim.SGD(ps, lr=0.1, momentum=-0.5), "momentum"),
    (lambda ps: optim.SGD(ps, lr=0.1, nesterov=True), "nesterov"),
    (lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "dampening"),
    (lambda ps: optim.SGD(ps, lr=0.1, weight_decay=-1.0), "weight_decay"),
    (lambda ps: optim.Adam(ps, lr=-1e-3), "lr"),
    (lambda ps: optim.Adam(ps, betas=(1.0, 0.999)), r"betas\[0\]=1.0"),
    (lambda ps: optim.Adam(ps, betas=(0.9, -0.1)), r"betas\[1\]=-0.1"),
    (lambda ps: optim.AdamW(ps, betas=(0.9, 1.5)), r"betas\[1\]"),
    (lambda ps: optim.Adam(ps, eps=-1.0), "eps"),
    (lambda ps: optim.AdamW(ps, weight_decay=-0.01), "weight_decay"),
    (lambda ps: optim.RMSprop(ps, alpha=-0.5), "alpha"),
    (lambda ps: optim.RMSprop(ps, momentum=-0.5), "momentum"),
    (lambda ps: optim.Adagrad(ps, lr_decay=-0.1), "lr_decay=-0.1"),
    (lambda ps: optim.Adagrad(ps, initial_accumulator_value=-1.0), "initial_accumulator"),
    (lambda ps: optim.Adagrad(ps, eps=-1.0), "eps"),
    (lambda ps: optim.Adamax(ps, betas=(0.9, 1.0)), r"betas\[1\]=1.0"),
    (lambda ps: optim.NAdam(ps, momentum_decay=-1e-3), "momentum_decay"),
    (lambda ps: optim.NAdam(ps, weight_decay=-0.1), "weight_decay"),
    (lambda ps: optim.RAdam(ps, betas=(-0.1, 0.999)), r"betas\[0\]"),
    (lambda ps: optim.RAdam(ps, eps=-1e-8), "eps"),
    (lambda ps: optim.Adam([{"params": ps[:1]}, {"params": ps[1:], "lr": -1.0}]), "lr"),
    (lambda ps: optim.Adam([{"params": ps, "momentum": 0.9}]), "unknown setting"),
    (lambda ps: optim.SGD([], lr=0.1), "empty"),
    (lambda ps: optim.SGD([ps[0], ps[0]], lr=0.1), "twice"),
    (lambda ps: optim.SGD([{"params": ps[:1]}, {"params": ps[:1]}], lr=0.1), "twice"),
]


@pytest.mark.parametrize("make, message", BAD_SETTINGS)
def test_bad_settings_raise(make, message):
    params = [tape.zeros(3), tape.zeros(2)]
    with pytest.raises(ValueError, match=message):
        make(params)


def test_bad_arguments_raise_type_errors():
    with pytest.raises(TypeError, match="list"):
        optim.SGD(tape.zeros(3), lr=0.1)
    with pytest.raises(TypeError, match="Tensors"):
        optim.SGD([np.zeros(3)], lr=0.1)
    with pytest.raises(TypeError, match="Optimizer"):
        lr_scheduler.StepLR(torch.optim.SGD([torch.zeros(1)], lr=0.1), step_size=1)


def test_params_may_be_one_group_dict_or_a_generator():
    w = tape.zeros(2)
    assert optim.SGD({"params": w, "lr": 0.5}).param_groups[0]["params"][0] is w
    assert optim.Adam(p for p in [w]).param_groups[0]["params"][0] is w


def test_bad_gradients_raise_before_any_update():
    params = [tape.zeros(3), tape.zeros(2), tape.zeros(4)]
    opt = optim.Adam(params)
    with pytest.raises(ValueError, match="got 2 gradients for 3 parameters"):
        opt.step([tape.ones(3), tape.ones(2)])
    with pytest.raises(ValueError, match=r"gradient 2 has shape \(5,\), its parameter \(4,\)"):
        opt.step([tape.ones(3), tape.ones(2), tape.ones(5)])
    assert all((p.data == 0).all() for p in params) and not any(opt.state_dict()["state"])


def test_load_state_dict_checks_its_shape():
    params = [tape.zeros(3), tape.zeros(2)]
    opt = optim.SGD(params, lr=0.1, momentum=0.9)
    opt.step([tape.ones(3), tape.ones(2)])
    saved = opt.state_dict()
    with pytest.raises(ValueError, match="2 parameters in the state dict and 1"):
        optim.SGD(params[:1], lr=0.1).load_state_dict(saved)
    with pytest.raises(ValueError, match="1 parameter groups, this optimizer 2"):
        optim.SGD([{"params": params[:1]}, {"params": params[1:]}], lr=0.1).load_state_dict(saved)
    with pytest.raises(ValueError, match="shape"):
        optim.SGD(params[::-1], lr=0.1).load_state_dict(saved)


# ----- learning-rate schedulers -----

# (scheduler, settings, optimizer); SequentialLR's schedulers are (scheduler, settings) rows
SCHEDULES = [
    ("StepLR", {"step_size": 7, "gamma": 0.5}, "SGD"),
    ("StepLR", {"step_size": 1}, "SGD"),
    ("CosineAnnealingLR", {"T_max": 10}, "SGD"),
    ("CosineAnnealingLR", {"T_max": 13, "eta_min": 1e-3}, "SGD"),
    ("LambdaLR", {"lr_lambda": lambda e: 0.95**e}, "SGD"),
    ("LambdaLR", {"lr_lambda": [lambda e: 1 / (e + 1), lambda e: min(1.0, (e + 1) / 5)]},
     "SGD"),
    ("MultiStepLR", {"milestones": [3, 7, 7, 20], "gamma": 0.5}, "SGD"),
    ("ExponentialLR", {"gamma": 0.9}, "SGD"),
    ("LinearLR", {}, "SGD"),
    ("LinearLR", {"start_factor": 1.0, "end_factor": 0.1, "total_iters": 20}, "SGD"),
    ("OneCycleLR", {"max_lr": 1.0, "total_steps": 60}, "SGD"),
    ("OneCycleLR", {"max_lr": [0.5, 0.05], "epochs": 6, "steps_per_epoch": 10,
                    "anneal_strategy": "linear", "three_phase": True, "pct_start": 0.25}, "SGD"),
    ("OneCycleLR", {"max_lr": 0.01, "total_steps": 55, "base_momentum": [0.8, 0.7],
                    "max_momentum": 0.9}, "Adam"),
    ("OneCycleLR", {"max_lr": 0.3, "total_steps": 51, "cycle_momentum": False,
                    "div_factor": 10.0, "final_div_factor": 100.0}, "RMSprop"),
    ("CosineAnnealingWarmRestarts", {"T_0": 7}, "SGD"),
    ("CosineAnnealingWarmRestarts", {"T_0": 3, "T_mult": 2, "eta_min": 1e-3}, "SGD"),
    ("SequentialLR", {"schedulers": [("LinearLR", {"start_factor": 0.1, "total_iters": 5}),
                                     ("CosineAnnealingLR", {"T_max": 20})],
                      "milestones": [5]}, "SGD"),
    ("SequentialLR", {"schedulers": [("ExponentialLR", {"gamma": 0.9}),
                                     ("StepLR", {"step_size": 4}),
                                     ("MultiStepLR", {"milestones": [3, 9]}),
                                     ("CosineAnnealingWarmRestarts", {"T_0": 6})],
                      "milestones": [10, 25, 35]}, "SGD"),
]
SCHEDULE_IDS = [f"{n}-{i}" for i, (n, _, _) in enumerate(SCHEDULES)]


def two_groups(module, make, optimizer="SGD"):
    params = [make(), make()]
    return getattr(module, optimizer)([{"params": params[:1]}, {"params": params[1:],
                                                                 "lr": 0.02}], lr=0.1)


def scheduler(module, opt, name, settings):
    """The scheduler of ``module`` (tape's or torch's lr_scheduler) for one table row."""
    if name == "SequentialLR":
        inner = [scheduler(module, opt, *row) for row in settings["schedulers"]]
        return module.SequentialLR(opt, inner, settings["milestones"])
    return getattr(module, name)(opt, **settings)


def momenta(opt):
    """Each group's momentum, or beta1 for the Adam family (OneCycleLR cycles them)."""
    return [g["betas"][0] if "betas" in g else g["momentum"] for g in opt.param_groups]


@pytest.mark.filterwarnings("ignore:.*every gradient is None")  # steps with no gradients
@pytest.mark.parametrize("name, settings, optimizer", SCHEDULES, ids=SCHEDULE_IDS)
def test_scheduler_matches_torch(name, settings, optimizer):
    opt = two_groups(optim, lambda: tape.zeros(2), optimizer)
    topt = two_groups(torch.optim, lambda: torch.zeros(2, requires_grad=True), optimizer)
    sched = scheduler(lr_scheduler, opt, name, settings)
    tsched = scheduler(torch.optim.lr_scheduler, topt, name, settings)
    seen = set()
    for epoch in range(51):
        expected = tsched.get_last_lr()
        assert sched.get_last_lr() == pytest.approx(expected, rel=0, abs=1e-12), epoch
        assert [g["lr"] for g in opt.param_groups] == sched.get_last_lr()
        assert momenta(opt) == pytest.approx(momenta(topt), rel=0, abs=1e-12), epoch
        seen.add(tuple(sched.get_last_lr()))
        opt.step([None, None])
        topt.step()
        sched.step()
        tsched.step()
    assert len(seen) > 2  # the row schedules something


@pytest.mark.parametrize("name, settings, optimizer", SCHEDULES, ids=SCHEDULE_IDS)
def test_scheduler_state_dict_round_trip(name, settings, optimizer, tmp_path):
    """The state dicts, through a checkpoint file, continue the schedule exactly."""
    opt = two_groups(optim, lambda: tape.zeros(2), optimizer)
    sched = scheduler(lr_scheduler, opt, name, settings)
    for _ in range(12):
        sched.step()
    tape.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, tmp_path / "ck")
    checkpoint = tape.load(tmp_path / "ck")
    saved_opt, saved = checkpoint["opt"], checkpoint["sched"]
    opt2 = two_groups(optim, lambda: tape.zeros(2), optimizer)
    sched2 = scheduler(lr_scheduler, opt2, name, settings)
    opt2.load_state_dict(saved_opt)
    sched2.load_state_dict(saved)
    for _ in range(20):
        sched.step()
        sched2.step()
        assert sched2.get_last_lr() == sched.get_last_lr()
        assert momenta(opt2) == momenta(opt)


# a validation loss: falling, then plateaus with small wiggles, a late improvement, a rise
LOSSES = [1.0, 0.8, 0.7, 0.65, 0.64, 0.64, 0.6399, 0.64, 0.645, 0.64, 0.5, 0.5, 0.501, 0.4999,
          0.5, 0.5, 0.5, 0.45, 0.4499, 0.4498, 0.45, 0.46, 0.47, 0.44, 0.44, 0.44, 0.44, 0.44,
          0.3, 0.31, 0.32, 0.33, 0.34, 0.35, 0.36, 0.37, 0.38, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2]
PLATEAUS = [
    {"patience": 2},
    {"patience": 1, "factor": 0.5},
    {"mode": "max", "patience": 2, "threshold": 0.01, "cooldown": 2},
    {"threshold_mode": "abs", "threshold": 0.02, "patience": 1, "min_lr": [0.01, 0.001]},
    {"mode": "max", "threshold_mode": "abs", "threshold": 0.0, "patience": 0, "factor": 0.5},
    {"patience": 0, "factor": 0.5, "min_lr": 0.015, "eps": 5e-3, "cooldown": 1},
]


@pytest.mark.filterwarnings("ignore:.*every gradient is None")
@pytest.mark.parametrize("settings", PLATEAUS, ids=[str(i) for i in range(len(PLATEAUS))])
def test_reduce_lr_on_plateau_matches_torch(settings):
    opt = two_groups(optim, lambda: tape.zeros(2))
    topt = two_groups(torch.optim, lambda: torch.zeros(2, requires_grad=True))
    sched = lr_scheduler.ReduceLROnPlateau(opt, **settings)
    tsched = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **settings)
    sign = -1.0 if settings.get("mode") == "max" else 1.0
    seen = set()
    for k, loss in enumerate(LOSSES):
        metric = sign * loss
        opt.step([None, None])
        topt.step()
        sched.step(tape.tensor(np.float64(metric)) if k % 2 else metric)  # or a 0-d tensor
        tsched.step(metric)
        assert sched.get_last_lr() == pytest.approx(tsched.get_last_lr(), rel=0, abs=1e-15), k
        assert [g["lr"] for g in opt.param_groups] == sched.get_last_lr()
        assert (sched.num_bad_epochs, sched.cooldown_counter, sched.best) == (
            tsched.num_bad_epochs, tsched.cooldown_counter, tsched.best)
        seen.add(tuple(sched.get_last_lr()))
    assert len(seen) >= 3  # the metrics made it reduce at least twice


def test_reduce_lr_on_plateau_state_dict_round_trip(tmp_path):
    opt = two_groups(optim, lambda: tape.zeros(2))
    sched = lr_scheduler.ReduceLROnPlateau(opt, **PLATEAUS[2])
    for loss in LOSSES[:15]:
        sched.step(-loss)
    tape.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, tmp_path / "ck")
    checkpoint = tape.load(tmp_path / "ck")
    opt2 = two_groups(optim, lambda: tape.zeros(2))
    sched2 = lr_scheduler.ReduceLROnPlateau(opt2)  # the load brings mode, patience... back
    opt2.load_state_dict(checkpoint["opt"])
    sched2.load_state_dict(checkpoint["sched"])
    for loss in LOSSES[15:]:
        sched.step(-loss)
        sched2.step(-loss)
        assert sched2.get_last_lr() == sched.get_last_lr()
    assert sched2.get_last_lr() != [0.1, 0.02]


def test_scheduler_bad_settings():
    opt = optim.SGD([tape.zeros(2)], lr=0.1)
    with pytest.raises(ValueError, match="step_size"):
        lr_scheduler.StepLR(opt, step_size=0)
    with pytest.raises(ValueError, match="T_max"):
        lr_scheduler.CosineAnnealingLR(opt, T_max=0)
    with pytest.raises(ValueError, match="2 lr_lambdas for 1"):
        lr_scheduler.LambdaLR(opt, [lambda e: 1.0, lambda e: 1.0])


SCHEDULER_ERRORS = [
    (lambda o: lr_scheduler.LinearLR(o, start_factor=0.0), "start_factor"),
    (lambda o: lr_scheduler.LinearLR(o, end_factor=1.5), "end_factor"),
    (lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=0), "T_0"),
    (lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=0), "T_mult"),
    (lambda o: lr_scheduler.OneCycleLR(o, 0.1), "total_steps"),
    (lambda o: lr_scheduler.OneCycleLR(o, 0.1, total_steps=0), "total_steps"),
    (lambda o: lr_scheduler.OneCycleLR(o, 0.1, epochs=2, steps_per_epoch=0), "steps_per_epoch"),
    (lambda o: lr_scheduler.OneCycleLR(o, 0.1, 10, pct_start=1.5), "pct_start"),
    (lambda o: lr_scheduler.OneCycleLR(o, 0.1, 10, anneal_strategy="exp"), "anneal_strategy"),
    (lambda o: lr_scheduler.OneCycleLR(o, [0.1, 0.2], 10), "2 values for 1"),
    (lambda o: lr_scheduler.OneCycleLR(optim.Adagrad(o.param_groups[0]["params"]), 0.1, 10),
     "cycle_momentum=False"),
    (lambda o: lr_scheduler.ReduceLROnPlateau(o, factor=1.0), "factor"),
    (lambda o: lr_scheduler.ReduceLROnPlateau(o, mode="up"), "mode"),
    (lambda o: lr_scheduler.ReduceLROnPlateau(o, threshold_mode="pct"), "threshold_mode"),
    (lambda o: lr_scheduler.ReduceLROnPlateau(o, min_lr=[0.1, 0.2]), "2 values for 1"),
    (lambda o: lr_scheduler.SequentialLR(o, [], []), "at least one"),
    (lambda o: lr_scheduler.SequentialLR(
        o, [lr_scheduler.ExponentialLR(o, 0.9), lr_scheduler.StepLR(o, 2)], []), "milestone"),
    (lambda o: lr_scheduler.SequentialLR(o, [lr_scheduler.ReduceLROnPlateau(o)], []),
     "ReduceLROnPlateau"),
    (lambda o: lr_scheduler.SequentialLR(
        o, [lr_scheduler.ExponentialLR(optim.SGD([tape.zeros(1)], lr=0.1), 0.9)], []),
     "another optimizer"),
]


@pytest.mark.parametrize("make, message", SCHEDULER_ERRORS)
def test_new_scheduler_bad_settings(make, message):
    with pytest.raises(ValueError, match=message):
        make(optim.SGD([tape.zeros(2)], lr=0.1))


@pytest.mark.filterwarnings("ignore:.*every gradient is None")
def test_one_cycle_stops_past_total_steps():
    sched = lr_scheduler.OneCycleLR(optim.SGD([tape.zeros(2)], lr=0.1), 0.1, total_steps=3)
    for _ in range(3):
        sched.step()
    with pytest.raises(ValueError, match="total_steps=3"):
        sched.step()


def test_warm_restarts_fractional_epochs_match_torch():
    opt = two_groups(optim, lambda: tape.zeros(2))
    topt = two_groups(torch.optim, lambda: torch.zeros(2, requires_grad=True))
    sched = lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=4, T_mult=2, eta_min=1e-3)
    tsched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(topt, T_0=4, T_mult=2,
                                                                  eta_min=1e-3)
    for epoch in [0.25, 0.5, 1.75, 3.9, 4.0, 5.5, 11.99, 12.0, 30.2, 2.0]:
        sched.step(epoch)
        tsched.step(epoch)
        assert sched.get_last_lr() == pytest.approx(tsched.get_last_lr(), rel=0, abs=1e-12)
        assert (sched.T_cur, sched.T_i, sched.last_epoch) == (
            tsched.T_cur, tsched.T_i, tsched.last_epoch)


# ----- gradient clipping -----


@pytest.mark.parametrize("max_norm", [0.5, 1e3])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
def test_clip_grad_norm_matches_torch(norm_type, max_norm):
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    grads = [tape.tensor(arrays[0]), None, tape.tensor(arrays[1]), tape.tensor(arrays[2])]
    clipped, total = optim.clip_grad_norm(grads, max_norm, norm_type)

    params = [torch.zeros(s, requires_grad=True) for s in SHAPES]
    for p, a in zip(params, arrays):
        p.grad = torch.from_numpy(a.copy())
    expected = torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type, foreach=False)

    assert isinstance(total, tape.Tensor) and total.shape == () and total.dtype == np.float32
    np.testing.assert_allclose(total.item(), expected.item(), rtol=1e-5)
    assert clipped[1] is None
    for mine, given, p, a in zip([clipped[0], *clipped[2:]], [grads[0], *grads[2:]], params,
                                 arrays):
        assert mine is not given and mine.data is not given.data and mine.dtype == np.float32
        np.testing.assert_array_equal(given.data, a)  # the inputs are left alone
        np.testing.assert_allclose(mine.data, p.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_clip_grad_norm_edge_cases():
    clipped, total = optim.clip_grad_norm([None, None], 1.0)
    assert clipped == [None, None] and total.item() == 0.0
    bad = [tape.tensor(np.array([np.inf, 1.0], np.float32))]
    with pytest.raises(RuntimeError, match="inf"):
        optim.clip_grad_norm(bad, 1.0, error_if_nonfinite=True)


# ----- the GPU keeps its arrays on the device, and state follows its parameters -----


@pytest.mark.parametrize("case", CASES[3:4] + CASES[11:12] + CASES[20:21] + FIRST_NEW,
                         ids=case_id)
def test_state_follows_parameters_across_devices(case, device):
    """A torch state dict, or one saved on the other device, loads onto the parameters'
    device; parameters moved after some steps take their state along."""
    opt, topt, ours, theirs = start(case, np.float32)
    seq = gradients(ours, 12)
    for grads in seq[:4]:
        step_tape(opt, grads)
        step_torch(topt, theirs, grads)
    moved = [tape.tensor(p.data, device=device) for p in ours]  # copies
    other = build(optim, case, unflatten(case, moved))
    other.load_state_dict(opt.state_dict())
    assert all(backend.device_of(v) == device for st in other.state.values()
               for v in st.values() if hasattr(v, "shape"))
    for p in ours:  # the same Parameter objects, moved in place, as Module.to does
        p.data = backend.to_device(p.data, device)
    for grads in seq[4:]:
        step_tape(opt, grads, device)
        step_tape(other, grads, device)
        step_torch(topt, theirs, grads)
    for p, q, r in zip(ours, moved, theirs):
        assert p.device == device
        np.testing.assert_allclose(p.numpy(), r.detach().numpy(), **TOL[np.float32])
        np.testing.assert_allclose(q.numpy(), r.detach().numpy(), **TOL[np.float32])
    torch_loaded = build(optim, case, unflatten(case, [tape.tensor(p.data) for p in ours]))
    torch_loaded.load_state_dict(topt.state_dict())
    assert all(backend.device_of(v) == device for st in torch_loaded.state.values()
               for v in st.values() if hasattr(v, "shape"))


@pytest.mark.skipif(backend.cupy_or_none() is None, reason="needs CuPy and a CUDA GPU")
@pytest.mark.parametrize("case", CASES[3:4] + CASES[11:12] + CASES[20:21] + FIRST_NEW,
                         ids=case_id)
def test_gpu_matches_cpu(case):
    opt, _, ours, _ = start(case, np.float32)
    gpu = [p.to("cuda") for p in ours]
    gopt = build(optim, case, unflatten(case, gpu))
    for grads in gradients(ours, 10):
        step_tape(opt, grads)
        gopt.step([None if g is None else tape.tensor(g, device="cuda") for g in grads])
    for p, q in zip(ours, gpu):
        np.testing.assert_allclose(q.numpy(), p.data, **TOL[np.float32])
    saved = gopt.state_dict()
    for buffers in saved["state"].values():
        assert all(backend.is_cupy(v) for k, v in buffers.items() if k != "step")
    build(optim, case, unflatten(case, gpu)).load_state_dict(saved)
    clipped, total = optim.clip_grad_norm([tape.tensor(np.ones(3), device="cuda")], 1.0)
    assert clipped[0].device == "cuda" and total.device == "cuda"
