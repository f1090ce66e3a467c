"""Train a CNN surrogate over the decomposed field (``hpcml run`` with ``app = "train"``).

1. Make the dataset if needed: pairs ``(u_0, u_k)`` of the periodic heat
   equation from hpcml's own solver (:func:`hpcml.nn.data.generate_heat_pairs`),
   written to HDF5.
2. Split the ranks into ``train.data_parallel`` replicas x spatial tiles
   (:class:`~hpcml.nn.grid.TrainGrid`); every rank reads its tile of every sample.
3. Build ``HaloConv2d`` layers (hidden channels ``model.channels``, one output
   channel) and train with :class:`~hpcml.nn.trainer.Trainer`: bucketed
   overlapped gradient allreduce (or ZeRO-1), the ``loss`` series in the
   output file, checkpoints that resume on any rank count.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import time
from typing import Any

from mpi4py import MPI

from hpcml.apps import app_comm, check_grid, restart
from hpcml.config import ConfigError, check_choice, check_output_path, dumps
from hpcml.nn import HaloConv2d, Sequential, TileDataset, Trainer, TrainGrid, generate_heat_pairs
from hpcml.runtime import StopPoll
from hpcml.settings import CHOICES

__all__ = ["SOLUTION_KEYS", "build_model", "run", "validate_config"]

log = logging.getLogger("hpcml.apps.train")

#: Config values that determine the trained model (a checkpoint written with others is refused).
#: Not: epochs (train longer), rank layout, bucket size, ZeRO, logging and checkpoint cadence.
SOLUTION_KEYS = (
    "grid.shape", "grid.periodic", "data.samples", "data.steps_ahead", "data.alpha", "data.cfl", "data.modes",
    "data.seed", "model", "train.batch_size", "train.seed", "train.shuffle", "train.optimizer", "train.lr",
    "train.momentum", "train.weight_decay", "train.accumulation",
)  # fmt: skip


def validate_config(cfg: dict[str, Any], ranks: int | None = None) -> None:
    """Check every train option (names in the message); with ``ranks``, the splits too. No MPI."""
    g, d, m, t = cfg["grid"], cfg["data"], cfg["model"], cfg["train"]
    if len(g["shape"]) != 2 or any(not isinstance(n, int) or n < 1 for n in g["shape"]):
        raise ConfigError(f"grid.shape must be two positive integers, got {g['shape']!r}")
    for key in ("periodic", "dims"):
        if len(g[key]) != 2:
            raise ConfigError(f"grid.{key} must have two entries, got {g[key]!r}")
    check_choice(cfg, "data.generate", ("missing", "always", "never"))
    if d["samples"] < 1 or d["steps_ahead"] < 0:
        raise ConfigError("data.samples must be >= 1 and data.steps_ahead >= 0")
    if not m["channels"] or any(not isinstance(c, int) or c < 1 for c in m["channels"]):
        raise ConfigError(f"model.channels must be a non-empty list of positive integers, got {m['channels']!r}")
    if m["kernel_size"] < 1 or m["kernel_size"] % 2 == 0:
        raise ConfigError(f"model.kernel_size must be odd and positive, got {m['kernel_size']}")
    check_choice(cfg, "model.activation", ("tanh", "relu"))
    check_choice(cfg, "model.conv", ("im2col", "direct"))
    check_choice(cfg, "model.dtype", ("float64", "float32"))
    check_choice(cfg, "train.optimizer", ("adam", "sgd"))
    check_choice(cfg, "run.halo_method", CHOICES["halo_method"])
    check_output_path(cfg, "output.path")
    dp = t["data_parallel"]
    if dp < 1 or (ranks is not None and ranks % dp):
        raise ConfigError(f"train.data_parallel={dp} must be a positive divisor of the {ranks} ranks")
    check_grid(g, None if ranks is None else ranks // dp, halo=0, of="ranks per replica")
    for key in ("epochs", "batch_size", "accumulation", "log_every"):
        if t[key] < 1:
            raise ConfigError(f"train.{key} must be >= 1, got {t[key]}")
    if t["lr"] <= 0 or t["bucket_mb"] < 0 or t["checkpoint_every"] < 0:
        raise ConfigError("train.lr must be > 0, train.bucket_mb and train.checkpoint_every >= 0")


def build_model(grid: TrainGrid, model_cfg: dict[str, Any], halo_method: str = "auto") -> Sequential:
    """The surrogate CNN: ``HaloConv2d`` hidden layers (fused activation) and a linear 1-channel output conv."""
    chans = [1, *model_cfg["channels"]]
    layers = []
    common = {
        "kernel_size": model_cfg["kernel_size"],
        "dilation": model_cfg["dilation"],
        "method": model_cfg["conv"],
        "halo_method": halo_method,
        "dtype": model_cfg["dtype"],
    }
    seed = model_cfg["seed"]
    for i, (cin, cout) in enumerate(itertools.pairwise(chans)):
        act = model_cfg["activation"]
        layers.append(HaloConv2d(grid, cin, cout, activation=act, name=f"conv{i}", rng=(seed, i), **common))
    layers.append(HaloConv2d(grid, chans[-1], 1, name="out", rng=(seed, len(chans)), **common))
    return Sequential(*layers)


def _dataset_exists(path: str, comm: MPI.Comm) -> bool:
    return bool(comm.bcast(os.path.exists(path) if comm.Get_rank() == 0 else None, root=0))


#: The settings a generated dataset is made of (its file records the config that made it).
DATASET_KEYS = ("grid.shape", "data.samples", "data.steps_ahead", "data.alpha", "data.cfl", "data.modes", "data.seed")


def _dataset_mismatch(path: str, config: dict[str, Any]) -> str | None:
    """Why the dataset at ``path`` was not made with this config's settings (``None`` if it was, or is not hpcml's).

    Read by rank 0.  A dataset written by hpcml records the config that made it; one
    made with other settings would train a model on data the config does not describe
    (and that its checkpoints would misname), so it is refused rather than reused.
    """
    import h5py

    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    try:
        with h5py.File(path, "r") as f:
            text = f.attrs.get("config")
    except OSError as exc:
        return f"data.path {path!r} is not a readable HDF5 file: {exc}"
    if text is None:
        return None  # not made by hpcml: the user's own dataset
    try:
        made = tomllib.loads(text.decode() if isinstance(text, bytes) else str(text))
    except tomllib.TOMLDecodeError:
        return None
    diffs = []
    for dotted in DATASET_KEYS:
        section, key = dotted.split(".")
        there, here = made.get(section, {}).get(key), config[section][key]
        if there is not None and there != here:
            diffs.append(f"{dotted} = {there!r} there, {here!r} now")
    if not diffs:
        return None
    return (
        f"dataset {path!r} was generated with other settings: {'; '.join(diffs)}. "
        'Set data.generate = "always" to make it again, or give another data.path'
    )


def _stopped_before_training(config: dict[str, Any], comm: MPI.Comm) -> dict[str, Any]:
    """The summary of a run stopped before its first training step (nothing trained, nothing to checkpoint)."""
    return {
        "app": "train",
        "ranks": comm.Get_size(),
        "data_parallel": config["train"]["data_parallel"],
        "resumed": False,
        "epochs": 0,
        "steps": 0,
        "stopped_early": True,
        "loss_first": float("nan"),
        "loss_final": float("nan"),
    }


def run(config: dict[str, Any], comm: MPI.Comm | None = None) -> dict[str, Any]:
    """Run the training job described by ``config``; return a summary (same on every rank).

    The output file and the checkpoint folder are locked for the run.
    """
    comm = app_comm(comm)
    validate_config(config, comm.Get_size())
    o = config["output"]
    ckdir = restart.checkpoint_directory(config["train"]["checkpoint_dir"], o["path"])
    return restart.run_locked(comm, o["path"], ckdir, lambda: _run(config, comm))


def _run(config: dict[str, Any], comm: MPI.Comm) -> dict[str, Any]:
    g, d, m, t, o = config["grid"], config["data"], config["model"], config["train"], config["output"]
    shape = tuple(g["shape"])
    rank0 = comm.Get_rank() == 0
    text = dumps(config)
    stop = StopPoll(comm)  # generating a large dataset takes minutes: a stop request is seen within a second
    if d["generate"] == "always" or (d["generate"] == "missing" and not _dataset_exists(d["path"], comm)):
        t0 = time.perf_counter()
        info = generate_heat_pairs(
            d["path"],
            comm,
            shape,
            d["samples"],
            d["steps_ahead"],
            alpha=d["alpha"],
            cfl=d["cfl"],
            modes=d["modes"],
            seed=d["seed"],
            config=text,
            stop=stop,
        )
        if info["stopped"]:
            if rank0:
                log.info("train: stop signal while generating the dataset: none written (the next run makes it)")
            return _stopped_before_training(config, comm)
        if rank0:
            log.info(
                "train: wrote %d heat pairs (%d steps, dt=%.3e) to %s in %.2f s",
                info["samples"],
                info["steps_ahead"],
                info["dt"],
                d["path"],
                time.perf_counter() - t0,
            )
    elif not _dataset_exists(d["path"], comm):
        raise ConfigError(f"data.path {d['path']!r} does not exist and data.generate = 'never'")
    else:
        mismatch = comm.bcast(_dataset_mismatch(d["path"], config) if rank0 else None, root=0)
        if mismatch is not None:
            raise ConfigError(mismatch)
    ckdir = restart.checkpoint_directory(t["checkpoint_dir"], o["path"])
    plan = restart.plan(config, ckdir, SOLUTION_KEYS, comm, "train")
    dims = None if all(x == 0 for x in g["dims"]) else tuple(g["dims"])
    grid = TrainGrid(comm, t["data_parallel"], shape, dims=dims, periodic=tuple(g["periodic"]))
    dataset = TileDataset.from_hdf5(grid, d["path"], dtype=m["dtype"])
    model = build_model(grid, m, config["run"]["halo_method"])
    hyper: dict[str, Any] = {"weight_decay": t["weight_decay"]}
    if t["optimizer"] == "sgd":
        hyper["momentum"] = t["momentum"]
    trainer = Trainer(
        model,
        grid,
        dataset,
        batch_size=t["batch_size"],
        optimizer=t["optimizer"],
        lr=t["lr"],
        hyper=hyper,
        zero=t["zero"],
        bucket_mb=t["bucket_mb"],
        accumulation=t["accumulation"],
        seed=t["seed"],
        shuffle=t["shuffle"],
        checkpoint_dir=ckdir,
        checkpoint_every=t["checkpoint_every"],
        output=o["path"] or None,
        config=text,
        log_every=t["log_every"],
        solution=plan.record,
    )
    resumed = plan.resume and trainer.resume()
    if rank0:
        log.info(
            "train: %d samples of %s on %d ranks = %d replica(s) x %d tile(s) (dims %s), %d parameters, optimizer %s%s",
            len(dataset),
            shape,
            comm.Get_size(),
            grid.data,
            grid.spatial,
            grid.decomp.dims,
            trainer.ddp.total,
            t["optimizer"],
            " (ZeRO-1)" if t["zero"] else "",
        )
    step0 = trainer.step
    t0 = time.perf_counter()
    history = trainer.fit(t["epochs"])
    elapsed = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
    trainer.close()
    steps = trainer.step - step0
    samples = trainer.samples_seen
    timings = {k: comm.allreduce(v, op=MPI.MAX) for k, v in trainer.timings().items()}
    summary = {
        "app": "train",
        "ranks": comm.Get_size(),
        "data_parallel": grid.data,
        "spatial_dims": list(grid.decomp.dims),
        "parameters": sum(math.prod(p.shape) for p in model.parameters()),
        "resumed": resumed,
        "epochs": trainer.epoch,
        "steps": trainer.step,
        "stopped_early": trainer.stopped_early,
        "loss_first": history[0] if history else float("nan"),
        "loss_final": history[-1] if history else float("nan"),
        "seconds": elapsed,
        "samples_per_s": samples / elapsed if elapsed > 0 and steps else float("nan"),
        "halo_seconds": timings["halo"],
        "allreduce_wait_seconds": timings["allreduce"],
    }
    if o["path"]:
        summary["output"] = o["path"]
    grid.free()
    return summary
