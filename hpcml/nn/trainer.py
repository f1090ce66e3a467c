"""Epochs, shuffling, gradient accumulation, loss history and checkpoints.

One training step on a ``data x spatial`` :class:`~hpcml.nn.grid.TrainGrid`:

1. The global batch (sample indices, the same on every rank: the epoch's
   permutation comes from ``default_rng((seed, epoch))``) is split into
   ``data`` contiguous parts, one per replica, and each part into
   ``accumulation`` micro-batches.
2. Each micro-batch runs forward/backward on the replica's tiles; the loss is
   normalised by the element count of the whole global batch, so gradients
   add up.  Only the last micro-batch launches the bucketed reduction.
3. The optimizer steps (ZeRO-1: on this rank's shard, then allgather).

The result equals one process training on the full field and the full batch,
to rounding, for any grid, bucket size and accumulation.  Checkpoints hold the
parameters and the *gathered* optimizer state by parameter name plus the
position in the epoch, so a run resumes on any rank count and grid and
continues the same loss curve.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

import numpy as np
from mpi4py import MPI

from hpcml.nn import storage
from hpcml.nn.data import TileDataset
from hpcml.nn.ddp import DataParallel, build_optimizer
from hpcml.nn.grid import TrainGrid
from hpcml.nn.layers import HaloConv, Sequential
from hpcml.nn.losses import mse_loss
from hpcml.runtime import StopPoll

__all__ = ["Trainer"]

log = logging.getLogger("hpcml.nn")


class Trainer:
    """Train a :class:`~hpcml.nn.layers.Sequential` on a :class:`TileDataset` over a :class:`TrainGrid`.

    Parameters
    ----------
    model, grid, dataset
        Network (built on ``grid``), process grid, this rank's tiles of the data.
    batch_size
        Global samples per optimizer step (all replicas and micro-batches).
    optimizer, lr, hyper
        ``"sgd"`` or ``"adam"``, learning rate, other hyper-parameters
        (``momentum``, ``betas``, ``weight_decay``, ...).
    zero
        ZeRO-1: shard the optimizer state over all ranks.
    bucket_mb
        Gradient bucket size in MiB.
    accumulation
        Micro-batches per step (gradient accumulation).
    seed, shuffle, drop_last
        Sample order: a permutation from ``(seed, epoch)``, shared by all ranks.
    checkpoint_dir, checkpoint_every, keep
        Checkpoint directory (``None``: none), every this many steps (``0``: at
        the end of each epoch), how many to keep.
    output, config
        The run's HDF5 file for the ``loss`` series (``None``: not written) and
        the configuration stored with it.
    log_every
        Log a progress line (rank 0) every this many steps.
    solution
        The configuration values that determine the model (stored with every
        checkpoint; :meth:`resume` refuses a checkpoint recording others).
    """

    def __init__(
        self,
        model: Sequential,
        grid: TrainGrid,
        dataset: TileDataset,
        *,
        batch_size: int,
        optimizer: str = "adam",
        lr: float = 1e-3,
        hyper: dict[str, Any] | None = None,
        zero: bool = False,
        bucket_mb: float = 25.0,
        accumulation: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        checkpoint_every: int = 0,
        keep: int = 3,
        output: str | os.PathLike[str] | None = None,
        config: Any = None,
        log_every: int = 10,
        solution: dict[str, Any] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if accumulation < 1:
            raise ValueError(f"accumulation must be >= 1, got {accumulation}")
        if len(dataset) < 1:
            raise ValueError("the dataset is empty")
        self.model, self.grid, self.dataset = model, grid, dataset
        self.comm = grid.comm
        self.batch_size = int(batch_size)
        self.accumulation = int(accumulation)
        self.seed, self.shuffle, self.drop_last = int(seed), bool(shuffle), bool(drop_last)
        self.ddp = DataParallel(model, grid, bucket_mb=bucket_mb, zero=zero)
        self.optimizer = build_optimizer(self.ddp, optimizer, lr=lr, **(hyper or {}))
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = int(checkpoint_every)
        self.keep = int(keep)
        self.output = output
        self.config = config
        self.log_every = max(1, int(log_every))
        self.solution = solution
        self.epoch = 0
        self.batch_in_epoch = 0
        self.step = 0
        self.stopped_early = False  # set by fit() when a stop signal ended it
        self.history: list[float] = []
        self.out_channels = int(dataset.targets.shape[-1])
        self.compute_seconds = 0.0
        self.samples_seen = 0
        self._writer: storage.LossWriter | None = None

    # -- schedule ------------------------------------------------------------------------
    def order(self, epoch: int) -> np.ndarray:
        """Sample order of ``epoch`` (identical on every rank and for any grid)."""
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng((self.seed, int(epoch))).permutation(n)

    def batches(self, epoch: int) -> list[np.ndarray]:
        """The global batches of ``epoch``."""
        order = self.order(epoch)
        b = self.batch_size
        out = [order[i : i + b] for i in range(0, len(order), b)]
        if self.drop_last and out and len(out[-1]) < b:
            out.pop()
        return out

    # -- one step ------------------------------------------------------------------------
    def train_step(self, indices: np.ndarray) -> float:
        """Forward, backward, gradient sync and update for one global batch; return its mean loss."""
        t0 = time.perf_counter()
        indices = np.asarray(indices)
        mine = np.array_split(indices, self.grid.data)[self.grid.data_rank]
        micro = np.array_split(mine, self.accumulation)
        count = len(indices) * math.prod(self.grid.shape) * self.out_channels
        local = 0.0
        for m, idx in enumerate(micro):
            last = m == len(micro) - 1
            if len(idx) == 0:  # more replicas/micro-batches than samples: nothing to add
                if last:
                    self.ddp.sync()
                continue
            x, t = self.dataset.batch(idx)
            y = self.ddp.forward(x)
            part, dy = mse_loss(y, t, count)
            local += part
            self.ddp.backward(dy, sync=last)
        self.optimizer.step()
        self.optimizer.zero_grad()
        loss = self.comm.allreduce(local, op=MPI.SUM)
        self.compute_seconds += time.perf_counter() - t0
        self.samples_seen += len(indices)
        return float(loss)

    # -- epochs --------------------------------------------------------------------------
    def fit(self, epochs: int, max_steps: int | None = None) -> list[float]:
        """Train until ``epochs`` epochs (or ``max_steps`` steps in total) are done; return the loss history."""
        rank0 = self.comm.Get_rank() == 0
        if self._writer is None:
            # A resumed run rewrites the loss series from the checkpoint's history (steps
            # 1..step; whatever the file held, e.g. values written after the checkpoint or
            # nothing at all), then appends: the series is always the whole curve.
            restart = 1 if self.step > 0 else None
            self._writer = storage.LossWriter(self.output, self.comm, self.config, restart_step=restart)
            for i, value in enumerate(self.history[: self.step]):
                self._writer.add(i + 1, value)
        stopped = False
        self.stopped_early = False
        stop = StopPoll(self.comm)  # agreed by all ranks within about a second, whatever the step time
        try:
            while self.epoch < epochs and not stopped:
                batches = self.batches(self.epoch)
                t_epoch = time.perf_counter()
                while self.batch_in_epoch < len(batches):
                    if max_steps is not None and self.step >= max_steps:
                        stopped = True
                        break
                    loss = self.train_step(batches[self.batch_in_epoch])
                    self.batch_in_epoch += 1
                    self.step += 1
                    self.history.append(loss)
                    self._writer.add(self.step, loss)
                    if self.step % self.log_every == 0 and rank0:
                        log.info(
                            "train: epoch %d  step %d  batch %d/%d  loss %.6e",
                            self.epoch + 1,
                            self.step,
                            self.batch_in_epoch,
                            len(batches),
                            loss,
                        )
                    if stop():
                        if rank0:
                            log.info("train: stop signal: checkpointing at step %d and stopping", self.step)
                        self.checkpoint()
                        stopped = self.stopped_early = True
                        break
                    if self.checkpoint_every and self.step % self.checkpoint_every == 0:
                        self.checkpoint()
                if stopped:
                    break
                self.epoch += 1
                self.batch_in_epoch = 0
                if rank0:
                    recent = self.history[-len(batches) :]
                    log.info(
                        "train: epoch %d done in %.2f s, mean loss %.6e",
                        self.epoch,
                        time.perf_counter() - t_epoch,
                        float(np.mean(recent)) if recent else float("nan"),
                    )
                if self.checkpoint_every == 0:
                    self.checkpoint()
        finally:
            self._writer.flush()
        return self.history

    def close(self) -> None:
        """Close the output file (collective)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # -- checkpoints ---------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything a resumed run needs (collective for ZeRO: gathers the optimizer state)."""
        opt = self.optimizer.state_dict()
        return {
            "model": self.ddp.state_dict(),
            "optimizer": {"kind": opt["kind"], "t": int(opt["t"]), "slots": opt["slots"]},
            "trainer": {
                "epoch": int(self.epoch),
                "batch": int(self.batch_in_epoch),
                "step": int(self.step),
                "seed": int(self.seed),
                "batch_size": int(self.batch_size),
                "loss": np.asarray(self.history, dtype=np.float64),
            },
        }

    def checkpoint(self) -> Any:
        """Write a checkpoint (collective) if a directory is set; flushes the loss series first."""
        if not self.checkpoint_dir:
            return None
        if self._writer is not None:
            self._writer.flush()
        return storage.save_checkpoint(
            self.checkpoint_dir,
            self.state(),
            self.step,
            self.comm,
            config=self.config,
            keep=self.keep,
            solution=self.solution,
        )

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` (from any rank count or grid)."""
        tr = state["trainer"]
        if int(tr["batch_size"]) != self.batch_size or int(tr["seed"]) != self.seed:
            raise ValueError(
                f"checkpoint was written with batch_size={int(tr['batch_size'])}, seed={int(tr['seed'])}; "
                f"this run has batch_size={self.batch_size}, seed={self.seed}: the loss curve would not continue"
            )
        self.ddp.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.batch_in_epoch, self.step = int(tr["epoch"]), int(tr["batch"]), int(tr["step"])
        self.history = [float(v) for v in np.asarray(tr["loss"]).reshape(-1)]

    def resume(self, path: str | os.PathLike[str] | None = None) -> bool:
        """Load the newest checkpoint in ``path`` (default ``checkpoint_dir``) if there is one."""
        path = path or self.checkpoint_dir
        if not storage.has_checkpoint(path, self.comm):
            return False
        state = storage.load_checkpoint(path, self.comm, expect=self.solution)
        self.load_state(state)
        if self.comm.Get_rank() == 0:
            log.info("train: resumed from %s at epoch %d, step %d", state.path, self.epoch, self.step)
        return True

    # -- accounting ----------------------------------------------------------------------
    def timings(self) -> dict[str, float]:
        """Seconds in training steps, halo exchanges (+ adjoints) and waiting for gradient reductions."""
        halo = sum(layer.exchange.seconds for layer in self.model.layers if isinstance(layer, HaloConv))
        return {"step": self.compute_seconds, "halo": halo, "allreduce": self.ddp.comm_seconds}
