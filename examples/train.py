"""Train a small MLP or CNN on a gradient tape and report its test accuracy.

    python examples/train.py                      # CNN on scikit-learn's digits, no download
    python examples/train.py --model mlp --epochs 20
    python examples/train.py --dataset mnist --data-dir ~/data   # the IDX files from there
    python examples/train.py --dataset mnist --download          # fetch them into data/
    mpiexec -n 2 python examples/train.py --distributed          # data parallel, 2 processes

Each step records the forward pass with ``with tape.Tape() as t:`` and updates the
weights with ``opt.step(t.gradient(loss, params))``. A tenth of the training set is held
out for validation (the test set chooses nothing: it is read once, at the end). Shows a
progress bar with loss and accuracy, writes each epoch's metrics to a JSON-lines file,
prints the test accuracy, saves the model with ``tape.nn.save_model`` and plots
the training curves to a PNG (``runs/{model}-{dataset}.*``). After every epoch it saves a
checkpoint (``runs/{model}-{dataset}.ckpt``: model, optimizer, schedule, epoch, random
states, history); ``--resume runs/cnn-digits.ckpt`` continues it, and ends with the same
weights, bit for bit, as a run that was never interrupted.

With ``--distributed`` (under ``mpiexec -n N``) each process takes ``1/N`` of every
``--batch-size`` batch (``tape.data.DistributedSampler``) and ``DistributedDataParallel``
averages the gradients; only rank 0 prints and writes files. Its checkpoint holds every
process's random states and history, and ``--resume`` (with as many processes) has each
process read it: on several machines, put ``--out`` on a filesystem they share.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

import kernels
import tape
import tape.nn as nn
from tape.data import DataLoader, TensorDataset, random_split
from tape.data.datasets import MNIST, FashionMNIST, load_digits


def datasets(name, data_dir, download=False):
    """(train, test) datasets of (N, 1, H, W) float32 images and int64 labels."""
    if name == "digits":
        return load_digits()
    cls = {"mnist": MNIST, "fashion-mnist": FashionMNIST}[name]
    train = cls(data_dir, train=True, download=download)
    test = cls(data_dir, train=False, download=download)
    as_tensors = [TensorDataset(*d.get_batch(np.arange(len(d)))) for d in (train, test)]
    return tuple(as_tensors)


def build_model(kind, size, classes=10):
    """An MLP, or a LeNet-style CNN (two conv+pool blocks) for ``size x size`` images."""
    if kind == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(size * size, 256), nn.ReLU(),
                             nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, classes))
    if size < 16:  # 8x8 digits: one pooling step keeps enough of the picture
        return nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(0.25), nn.Linear(32 * (size // 2) ** 2, 128), nn.ReLU(),
            nn.Dropout(0.25), nn.Linear(128, classes),
        )
    return nn.Sequential(  # LeNet-style, for 28x28 MNIST
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * (size // 4) ** 2, 128), nn.ReLU(), nn.Linear(128, classes),
    )


def random_shift(x, rng, pixels=1):
    """Each image moved by up to ``pixels`` in each direction (zeros fill in): a cheap
    augmentation that helps small data sets such as the 1,438 training digits."""
    n, c, h, w = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (pixels, pixels), (pixels, pixels)))
    dy, dx = rng.integers(0, 2 * pixels + 1, size=(2, n))
    rows = (dy[:, None] + np.arange(h))[:, None, :, None]
    cols = (dx[:, None] + np.arange(w))[:, None, None, :]
    return padded[np.arange(n)[:, None, None, None], np.arange(c)[None, :, None, None], rows, cols]


def make_optimizer(name, params, lr, weight_decay=0.0):
    table = {
        "sgd": lambda: tape.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay),
        "adam": lambda: tape.optim.Adam(params, lr=lr, weight_decay=weight_decay),
        "adamw": lambda: tape.optim.AdamW(params, lr=lr, weight_decay=weight_decay or 0.01),
        "rmsprop": lambda: tape.optim.RMSprop(params, lr=lr, weight_decay=weight_decay),
    }
    return table[name]()


def make_schedule(name, opt, epochs, steps_per_epoch, warmup, lr):
    """(scheduler, whether it steps per batch): the chosen schedule after ``warmup`` epochs
    of linear warm-up. OneCycle has its own warm-up and steps every batch."""
    sched = tape.optim.lr_scheduler
    if name == "onecycle":
        return sched.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch), True
    rest = max(1, epochs - warmup)
    main = {"cosine": lambda: sched.CosineAnnealingLR(opt, T_max=rest),
            "step": lambda: sched.StepLR(opt, step_size=max(1, rest // 3), gamma=0.3),
            "constant": lambda: sched.LambdaLR(opt, lambda e: 1.0)}[name]()
    if not warmup:
        return main, False
    ramp = sched.LinearLR(opt, start_factor=0.1, total_iters=warmup)
    return sched.SequentialLR(opt, [ramp, main], milestones=[warmup]), False


def evaluate(model, loader, device):
    model.eval()
    correct = total = 0
    with tape.no_grad():
        for x, y in loader:
            pred = model(x.to(device)).argmax(axis=1).numpy()
            correct += int((pred == y.numpy()).sum())
            total += len(pred)
    model.train()
    return correct / total


def plot(history, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax1.plot(history["step"], history["loss"], lw=1)
    ax1.set(xlabel="step", ylabel="training loss", title="Loss")
    ax2.plot(history["step"], history["accuracy"], lw=1, label="train (batch)")
    ax2.plot(history["epoch_step"], history["val_accuracy"], "o-", label="validation")
    ax2.set(xlabel="step", ylabel="accuracy", title="Accuracy", ylim=(0, 1.01))
    ax2.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def own_state(rng, history):
    """What differs between the processes of a run: random states and history."""
    return {"rng": tape.get_rng_state(), "augment_rng": rng.bit_generator.state,
            "history": history}


def save_checkpoint(path, epoch, step, model, opt, schedule, ranks):
    """Everything a resumed run needs to continue as if never stopped, written atomically
    (a crash while saving leaves the previous checkpoint whole). ``ranks``: each
    process's :func:`own_state`, in rank order (one for a single process)."""
    tape.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
               "schedule": schedule.state_dict(), "epoch": epoch, "step": step,
               "ranks": ranks, "best": max(ranks[0]["history"]["val_accuracy"])}, path)


def resume(path, model, opt, schedule, rng, history, rank=0, world=1):
    """Restore a checkpoint in place (this process's share of it); returns (first epoch
    to run, step, best accuracy). Every process of a distributed run reads the file."""
    state = tape.load(path)
    if len(state["ranks"]) != world:
        sys.exit(f"train.py: {path} was saved by {len(state['ranks'])} process(es); resume "
                 f"it with as many (this run has {world})")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    own = state["ranks"][rank]
    tape.set_rng_state(own["rng"])
    rng.bit_generator.state = own["augment_rng"]
    for key, values in own["history"].items():
        history[key][:] = values
    return int(state["epoch"]) + 1, int(state["step"]), float(state["best"])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0].replace("``", ""),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dataset", choices=["digits", "mnist", "fashion-mnist"],
                        default="digits", help="digits ship with scikit-learn; the MNISTs are "
                        "read from --data-dir")
    parser.add_argument("--data-dir", default="data", help="folder with the IDX files")
    parser.add_argument("--download", action="store_true",
                        help="fetch missing MNIST files into --data-dir")
    parser.add_argument("--model", choices=["mlp", "cnn"], default="cnn", help="network")
    parser.add_argument("--epochs", type=int, default=30, help="passes over the data")
    parser.add_argument("--batch-size", type=int, default=64, help="images per step")
    parser.add_argument("--optimizer", choices=["sgd", "adam", "adamw", "rmsprop"],
                        default="adam", help="update rule")
    parser.add_argument("--lr", type=float, default=2e-3, help="initial learning rate")
    parser.add_argument("--scheduler", choices=["cosine", "onecycle", "step", "constant"],
                        default="cosine", help="learning-rate schedule")
    parser.add_argument("--warmup", type=int, default=0, help="epochs of linear warm-up")
    parser.add_argument("--weight-decay", type=float, default=0.0,
                        help="weight decay (AdamW: decoupled, 0.01 when 0)")
    parser.add_argument("--clip-grad", type=float, default=None, metavar="NORM",
                        help="clip the gradients' total norm to this")
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="share of the training set held out for validation")
    parser.add_argument("--seed", type=int, default=0, help="weights, shuffling, dropout")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--out", default="runs", help="folder for the model and the plot")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--resume", metavar="PATH",
                        help="continue the run saved in this checkpoint (the same arguments)")
    parser.add_argument("--stop-after", type=int, metavar="EPOCH",
                        help="end the run after this epoch, as an interruption would")
    parser.add_argument("--no-augment", action="store_true",
                        help="no random 1-pixel shifts of the CNN's training images")
    parser.add_argument("--distributed", action="store_true",
                        help="data parallel over the processes of mpiexec (needs tape[mpi]); "
                        "--batch-size is the global batch")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)

    from tqdm import tqdm

    rank, world = 0, 1
    if args.distributed:
        import tape.distributed as dist

        dist.init()
        rank, world = dist.rank(), dist.world_size()
        if "TAPE_NUM_THREADS" not in os.environ:  # share the cores of each machine
            from mpi4py import MPI

            here = MPI.COMM_WORLD.Split_type(MPI.COMM_TYPE_SHARED).Get_size()
            kernels.configure(num_threads=max(1, (os.cpu_count() or 1) // here))
        if args.device.startswith("cuda"):  # one GPU per process, by its rank on the machine
            cupy = tape.backend.cupy_or_none()
            if cupy is not None:
                gpus = cupy.cuda.runtime.getDeviceCount()
                if dist.local_rank() >= gpus and "CUDA_VISIBLE_DEVICES" not in os.environ:
                    sys.exit(f"train.py: more processes on this machine than its {gpus} "
                             "GPUs: start one process per GPU (NCCL cannot share one)")
                # (modulo: each process may see one GPU of its own, CUDA_VISIBLE_DEVICES)
                cupy.cuda.Device(dist.local_rank() % gpus).use()
        if args.batch_size % world:
            sys.exit(f"train.py: --batch-size {args.batch_size} does not split evenly over "
                     f"{world} processes")
    lead = rank == 0  # the one process that prints and writes files
    say = print if lead else (lambda *_, **__: None)
    tape.manual_seed(args.seed + rank)  # dropout differs per process; weights are rank 0's
    try:
        train, test = datasets(args.dataset, args.data_dir, args.download)
    except FileNotFoundError:
        sys.exit(f"train.py: the {args.dataset} files are not in {args.data_dir!r}: add "
                 "--download to fetch them there, or point --data-dir at them")
    train, val = random_split(train, [1 - args.val_fraction, args.val_fraction],
                              generator=args.seed)  # the test set chooses nothing
    size = train[0][0].shape[-1]
    model = net = build_model(args.model, size).to(args.device)
    params = list(model.parameters())
    if args.distributed:
        model = dist.DistributedDataParallel(net)
    opt = make_optimizer(args.optimizer, params, args.lr, args.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    if args.distributed:
        sampler = tape.data.DistributedSampler(train, seed=args.seed)
        train_loader = DataLoader(train, batch_size=args.batch_size // world, sampler=sampler)
    else:
        train_loader = DataLoader(train, batch_size=args.batch_size, shuffle=True,
                                  seed=args.seed)
    val_loader = DataLoader(val, batch_size=256)
    schedule, per_batch = make_schedule(args.scheduler, opt, args.epochs, len(train_loader),
                                        args.warmup, args.lr)
    history = {k: [] for k in ("step", "loss", "accuracy", "epoch_step", "val_accuracy")}
    step, start = 0, time.perf_counter()
    rng = np.random.default_rng(args.seed if rank == 0 else [args.seed, rank])
    augment = args.model == "cnn" and not args.no_augment  # shifts do not help an MLP
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"{args.model}-{args.dataset}")
    checkpoint, metrics = stem + ".ckpt", stem + ".jsonl"
    first = 1
    if args.resume:
        first, step, best = resume(args.resume, model, opt, schedule, rng, history, rank,
                                   world)
        train_loader.set_epoch(first - 1)
        say(f"resumed from {args.resume} after epoch {first - 1} (best validation accuracy "
            f"{best:.4f})")
    elif lead and os.path.exists(metrics):
        os.remove(metrics)  # a new run: a new metrics file
    say(f"{args.model} on {args.dataset}: {len(train)} training, {len(val)} validation and "
          f"{len(test)} test images, {sum(p.size for p in params):,} parameters")
    for epoch in range(first, args.epochs + 1):
        if args.distributed:
            train_loader.set_epoch(epoch - 1)  # the same order on every process
        bar = tqdm(train_loader, desc=f"epoch {epoch}/{args.epochs}", leave=False,
                   disable=args.no_progress or not lead)
        for x, y in bar:
            if augment:
                x = tape.tensor(random_shift(x.numpy(), rng))
            x, y = x.to(args.device), y.to(args.device)
            with tape.Tape() as t:
                logits = model(x)
                loss = loss_fn(logits, y)
            grads = model.gradient(t, loss) if args.distributed else t.gradient(loss, params)
            if args.clip_grad is not None:
                grads, _ = tape.optim.clip_grad_norm(grads, args.clip_grad)
            opt.step(grads)
            if per_batch:
                schedule.step()
            accuracy = float((logits.argmax(axis=1).numpy() == y.numpy()).mean())
            step += 1
            history["step"].append(step)
            history["loss"].append(loss.item())
            history["accuracy"].append(accuracy)
            bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{accuracy:.2f}")
        lr = opt.param_groups[0]["lr"]
        if not per_batch:
            schedule.step()
        val_accuracy = evaluate(model, val_loader, args.device)
        history["epoch_step"].append(step)
        history["val_accuracy"].append(val_accuracy)
        train_loss = float(np.mean(history["loss"][-len(train_loader):]))
        if args.distributed:  # the mean over every process's batches
            train_loss = dist.all_reduce(np.array([train_loss]), op="mean").item()
        say(f"epoch {epoch:3d}  loss {train_loss:.4f}  validation accuracy {val_accuracy:.4f}")
        ranks = [own_state(rng, history)]
        if args.distributed:  # every process's random states, to rank 0
            from mpi4py import MPI

            ranks = MPI.COMM_WORLD.gather(ranks[0], root=0)
        if lead:
            with open(metrics, "a") as f:
                f.write(json.dumps({"epoch": epoch, "step": step, "train_loss": train_loss,
                                    "val_accuracy": val_accuracy, "lr": lr,
                                    "seconds": time.perf_counter() - start}) + "\n")
            save_checkpoint(checkpoint, epoch, step, net, opt, schedule, ranks)
        if args.stop_after == epoch:
            say(f"stopped after epoch {epoch}; continue with --resume {checkpoint}")
            return val_accuracy
    elapsed = time.perf_counter() - start
    test_accuracy = evaluate(model, DataLoader(test, batch_size=256), args.device)
    say(f"test accuracy {test_accuracy:.4f} after {args.epochs} epochs ({elapsed:.1f} s)")
    if not lead:
        return test_accuracy
    model_path, plot_path = stem + ".safetensors", stem + ".png"
    nn.save_model(net, model_path)
    plot(history, plot_path)
    print(f"saved the model to {model_path}, the curves to {plot_path} and the metrics to "
          f"{metrics}")
    return test_accuracy


if __name__ == "__main__":
    main()
