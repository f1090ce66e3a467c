"""Train a U-Net surrogate of the heat equation in PyTorch, tiled over MPI ranks.

    mpiexec -n 4 python examples/train_surrogate_torch.py --data-parallel 2      # 2 replicas x 2 tiles
    python examples/train_surrogate_torch.py --reference                        # plain torch, one process

The data are pairs (u_0, u_k) of the periodic 2-D heat equation made by hpcml's
own solver (written to HDF5 on first use).  Each rank reads its tile of every
sample, the U-Net runs on tiles (HaloConv2d and HaloMaxPool2d exchange halos
with the neighbours), PyTorch's DistributedDataParallel averages over the
replicas and a communication hook sums over the tiles.  AdamW with a cosine
learning-rate schedule; the loss of every step goes to the scalar series
``loss`` of ``--output``; checkpoints (``--checkpoint-dir``) resume on any
data x spatial grid.  ``--reference`` trains the same U-Net built from
``torch.nn.Conv2d``/``MaxPool2d`` on the whole field in one process: the loss
curves are equal (float64).  SIGTERM/SIGUSR1 checkpoint and stop cleanly.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

import numpy as np
import torch
from mpi4py import MPI

import hpcml
import hpcml.torch as ht
from hpcml.nn import storage
from hpcml.nn.data import generate_heat_pairs
from hpcml.runtime import install_stop_handlers, stop_requested

log = logging.getLogger("train_surrogate_torch")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default="heat_pairs.h5", help="dataset (series u_in, u_out); made if missing")
    p.add_argument("--shape", type=int, nargs=2, default=[64, 64], help="field (ny nx) when the data are made")
    p.add_argument("--samples", type=int, default=64, help="pairs when the data are made")
    p.add_argument("--steps-ahead", type=int, default=20, help="Euler steps from u_0 to u_k")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch", type=int, default=8, help="global batch (all replicas)")
    p.add_argument("--lr", type=float, default=3e-3, help="AdamW peak learning rate (cosine decay to 0)")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--width", type=int, default=8, help="channels of the first U-Net level")
    p.add_argument("--depth", type=int, default=2, help="poolings (tiles divisible by 2**depth)")
    p.add_argument("--data-parallel", type=int, default=1, help="replicas; the other ranks split the field")
    p.add_argument("--seed", type=int, default=0, help="initial weights and sample order")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    p.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    p.add_argument("--checkpoint-dir", default="", help="checkpoint directory ('' = none)")
    p.add_argument("--checkpoint-every", type=int, default=0, help="steps between checkpoints (0 = each epoch)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument("--max-steps", type=int, default=0, help="stop (with a checkpoint) after this step")
    p.add_argument("--output", default="surrogate_torch.h5", help="HDF5 file for the loss series ('' = none)")
    p.add_argument("--reference", action="store_true", help="plain torch on the whole field, one process")
    p.add_argument("--json", action="store_true", help="print a JSON summary (rank 0)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    comm = MPI.COMM_WORLD
    rank0 = comm.Get_rank() == 0
    if args.reference and comm.Get_size() != 1:
        raise ValueError("--reference is the single-process run: start it without mpiexec (or with -n 1)")
    torch.set_num_threads(args.threads)
    install_stop_handlers()
    exists = comm.bcast(os.path.exists(args.data) if rank0 else None, root=0)
    if not exists:
        generate_heat_pairs(args.data, comm, args.shape, args.samples, args.steps_ahead, modes=3, seed=1234)
    grid = ht.TrainGrid(comm, args.data_parallel, field_shape(args.data, comm), periodic=True)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(args.seed)
    model = ht.UNet(None if args.reference else grid, width=args.width, depth=args.depth, dtype=dtype)
    if not args.reference:
        ht.init_process_group(grid)
        model = ht.distributed_data_parallel(model, grid)
    dataset = ht.TileDataset(grid, args.data, dtype=dtype, preload=True)
    loader = ht.tile_loader(dataset, grid, args.batch, seed=args.seed)
    steps_per_epoch = len(loader)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs * steps_per_epoch)
    epoch = batch_in_epoch = step = 0
    history: list[float] = []
    if args.resume and ht.checkpoint.has_checkpoint(args.checkpoint_dir, grid):
        state = ht.load_checkpoint(args.checkpoint_dir, grid, model=model, optimizer=opt, scheduler=sched)
        extra = state["extra"]
        epoch, batch_in_epoch, step = int(extra["epoch"]), int(extra["batch"]), int(extra["step"])
        history = [float(v) for v in np.asarray(extra["loss"]).reshape(-1)]
        if rank0:
            log.info("resumed from %s at epoch %d, step %d", state.path, epoch + 1, step)
    losses = storage.LossWriter(
        args.output or None, comm, config=json.dumps(vars(args)), restart_step=step + 1 if step else None
    )

    def checkpoint() -> None:
        if args.checkpoint_dir:
            extra = {"epoch": epoch, "batch": batch_in_epoch, "step": step, "loss": np.asarray(history)}
            ht.save_checkpoint(
                args.checkpoint_dir, step, grid, model=model, optimizer=opt, scheduler=sched, extra=extra
            )

    if rank0:
        log.info(
            "%s: %d samples of %s, %d rank(s) = %d replica(s) x %d tile(s) %s, %d parameters",
            "reference" if args.reference else "hpcml.torch",
            len(dataset),
            grid.shape,
            grid.size,
            grid.data,
            grid.spatial,
            grid.decomp.dims,
            sum(p.numel() for p in model.parameters()),
        )
    t0 = time.perf_counter()
    stopped = False
    while epoch < args.epochs and not stopped:
        loader.sampler.set_epoch(epoch)
        for i, (x, y) in enumerate(loader):
            if i < batch_in_epoch:  # resumed within this epoch: these batches are done
                continue
            opt.zero_grad()
            pred = model(x)
            if args.reference:
                loss = torch.nn.functional.mse_loss(pred, y)
                value = float(loss.detach())
            else:
                loss = ht.mse_loss(pred, y, grid)
                value = ht.global_loss(loss, grid)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            batch_in_epoch = i + 1
            history.append(value)
            losses.add(step, value)
            last = args.max_steps and step >= args.max_steps
            if stop_requested(comm) or last:
                checkpoint()
                stopped = True
                break
            if args.checkpoint_every and step % args.checkpoint_every == 0:
                checkpoint()
        else:
            epoch += 1
            batch_in_epoch = 0
            if rank0:
                log.info("epoch %d: loss %.6e, lr %.3e", epoch, history[-1], sched.get_last_lr()[0])
            if not args.checkpoint_every:
                checkpoint()
    losses.close()
    seconds = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
    if not args.reference:
        ht.destroy_process_group()
    if rank0 and args.json:
        print(
            json.dumps(
                {
                    "steps": step,
                    "epoch": epoch,
                    "stopped_early": stopped,
                    "loss": history,
                    "seconds": seconds,
                    "grid": [grid.data, grid.spatial],
                }
            )
        )
    grid.free()
    return 0


def field_shape(path: str, comm: MPI.Comm) -> tuple[int, ...]:
    """The field shape of the dataset's ``u_in`` series (rank 0 reads; every rank gets it or the error)."""
    from hpcml.io import series

    shape, error = None, None
    if comm.Get_rank() == 0:
        try:
            shape = tuple(series(path, "u_in")["shape"])
        except Exception as exc:  # shared with every rank below
            error = f"{path}: {exc}"
    shape, error = comm.bcast((shape, error), root=0)
    if error:
        raise ValueError(error)
    return shape


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    with hpcml.abort_on_error():
        sys.exit(main())
