"""``hpcml bench train --torch``: the PyTorch U-Net on data x spatial grids against single-process torch.

For each rank count P of ``--ranks`` (sub-communicators of the launched ranks;
the others sleep) and each grid — ``spatial`` (one replica, the field split
into P tiles), ``data`` (P replicas of the whole field) and, for P = 4, ``2x2``
— one AdamW step of :class:`hpcml.torch.UNet` under PyTorch's
``DistributedDataParallel`` is timed on a fixed global batch (strong scaling).
The peer is the same U-Net of plain ``torch.nn`` layers on the whole field and
batch in one process with the same threads per process, timed interleaved with
hpcml's one-rank step (best of ``--steps`` each).

Reported per row: samples/s; ``vs_torch`` = samples/s over the peer's;
``efficiency`` = samples/s / (P x peer samples/s) (wall time) and
``cpu_efficiency`` = peer CPU seconds per step / (P x the busiest rank's CPU
seconds per step); ``exchange_pct`` = halo exchanges and adjoints (slowest
rank) as a share of the step; ``gflops`` from torch's FLOP counter on the
peer's step and ``pct_peak`` = that rate over ``min(P, cores)`` times the
one-thread float GEMM rate measured in the same run (the machine limit); peak
memory per rank.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np
from mpi4py import MPI

from hpcml.bench.report import oversubscribed_note, peak_rss_mib, write_report
from hpcml.runtime import node_share

COLUMNS = [
    "case",
    "ranks",
    "grid",
    "step_ms",
    "median_ms",
    "samples_per_s",
    "vs_torch",
    "efficiency",
    "cpu_ms",
    "cpu_efficiency",
    "exchange_pct",
    "gflops",
    "pct_peak",
    "peak_rss_mib",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options only ``--torch`` uses (the shared ones are in :mod:`hpcml.bench.train`)."""
    parser.add_argument("--width", type=int, default=8, help="--torch: channels of the U-Net's first level")
    parser.add_argument("--depth", type=int, default=2, help="--torch: U-Net poolings")


def _torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)


def _batch(args: argparse.Namespace, shape: tuple[int, ...]) -> tuple[Any, Any]:
    import torch

    gen = torch.Generator().manual_seed(0)
    x = torch.randn((args.batch, 1, *shape), dtype=_torch_dtype(args.dtype), generator=gen)
    return x, 0.5 * x


def _stepper(model: Any, x: Any, y: Any, loss_fn: Any) -> Any:
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    return step


def _reference(args: argparse.Namespace, shape: tuple[int, ...]) -> Any:
    """The single-process torch step (plain layers, whole field and batch)."""
    import torch

    from hpcml.torch import UNet

    torch.manual_seed(0)
    model = UNet(None, width=args.width, depth=args.depth, dtype=_torch_dtype(args.dtype))
    x, y = _batch(args, shape)
    return _stepper(model, x, y, torch.nn.functional.mse_loss)


def _flops(args: argparse.Namespace, shape: tuple[int, ...]) -> float:
    """FLOPs of one training step (forward + backward) from torch's counter."""
    from torch.utils.flop_counter import FlopCounterMode

    step = _reference(args, shape)
    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def _gemm_gflops(args: argparse.Namespace) -> float:
    """One-thread GEMM rate through torch (the dtype of the run): the compute limit per core."""
    import torch

    a = torch.randn((1024, 1024), dtype=_torch_dtype(args.dtype))
    b = torch.randn((1024, 1024), dtype=_torch_dtype(args.dtype))
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * 1024**3 / best / 1e9


def _timed(comm: MPI.Comm, step: Any) -> tuple[float, float]:
    """Wall and CPU seconds of one call (the slowest rank's)."""
    comm.Barrier()
    t0, c0 = time.perf_counter(), time.process_time()
    step()
    wall = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
    return wall, comm.allreduce(time.process_time() - c0, op=MPI.MAX)


def _summary(wall: list[float], cpu: list[float], batch: int) -> dict[str, float]:
    return {
        "step_ms": 1e3 * min(wall),
        "median_ms": 1e3 * statistics.median(wall),
        "cpu_ms": 1e3 * min(cpu),
        "samples_per_s": batch / min(wall),
    }


def _measure(
    comm: MPI.Comm, args: argparse.Namespace, shape: tuple[int, ...], data: int, peer: Any = None
) -> dict[str, Any]:
    """One hpcml.torch case on ``comm`` (``data`` replicas x ``size / data`` tiles).

    With ``peer`` (a one-process step), it is timed after each of hpcml's steps:
    interleaved, so both see the same machine load.
    """
    import torch

    import hpcml.torch as ht

    grid = ht.TrainGrid(comm, data, shape, periodic=True)
    ht.init_process_group(grid)
    try:
        torch.manual_seed(0)
        model = ht.distributed_data_parallel(
            ht.UNet(grid, width=args.width, depth=args.depth, dtype=_torch_dtype(args.dtype)), grid
        )
        x, y = _batch(args, shape)
        part = np.array_split(np.arange(args.batch), grid.data)[grid.data_rank]
        box = (slice(int(part[0]), int(part[-1]) + 1), slice(None), *grid.decomp.slices)
        step = _stepper(model, x[box].contiguous(), y[box].contiguous(), lambda p, t: ht.mse_loss(p, t, grid))
        steps = [step] if peer is None else [step, peer]
        for _ in range(args.warmup):
            for fn in steps:
                fn()
        ht.timer.reset()
        times: list[list[tuple[float, float]]] = [[] for _ in steps]
        for _ in range(args.steps):
            for fn, out in zip(steps, times):
                out.append(_timed(comm, fn))
        exchange = comm.allreduce(ht.timer.seconds, op=MPI.MAX)
    finally:
        ht.destroy_process_group()
        grid.free()
    wall, cpu = (list(v) for v in zip(*times[0]))
    row = {
        "ranks": comm.Get_size(),
        "grid": f"{data}x{comm.Get_size() // data}",
        **_summary(wall, cpu, args.batch),
        "exchange_pct": 100.0 * exchange / sum(wall),
        "peak_rss_mib": comm.allreduce(peak_rss_mib(), op=MPI.MAX),
    }
    if peer is not None:
        pw, pc = (list(v) for v in zip(*times[1]))
        row["peer"] = _summary(pw, pc, args.batch)
    return row


def _single(comm: MPI.Comm, args: argparse.Namespace, shape: tuple[int, ...]) -> dict[str, Any]:
    """hpcml.torch on one rank and the torch peer, interleaved step by step; the step's FLOPs and the GEMM limit."""
    row = _measure(comm, args, shape, 1, peer=_reference(args, shape))
    row["flops"] = _flops(args, shape)
    row["gemm_gflops"] = _gemm_gflops(args)
    return row


def run(args: argparse.Namespace) -> int:
    """Run the torch benchmark; rank 0 writes ``train_torch.json`` and ``train_torch.md``."""
    import torch

    from hpcml.bench.train import _on_subset

    world = MPI.COMM_WORLD
    torch.set_num_threads(args.threads)
    shape = tuple(int(s) for s in args.shape.lower().split("x"))
    node_ranks, cores = node_share(world)
    ranks = sorted({p for p in args.ranks if p <= world.Get_size()})
    first = _on_subset(world, 1, lambda c: _single(c, args, shape))
    peer = first.pop("peer")
    flops, gemm = first.pop("flops"), first.pop("gemm_gflops")
    rows: list[dict[str, Any]] = [
        {"case": "pytorch", "ranks": 1, "grid": "1x1", **peer, "vs_torch": 1.0, "efficiency": 1.0},
        {"case": "hpcml", **first},
    ]
    for p in ranks:
        if p == 1:
            continue
        layouts = [("spatial", 1), ("data", p)] + ([("2x2", 2)] if p == 4 else [])
        for case, data in layouts:
            mode = "data" if data == p else "spatial"
            if mode not in args.modes or (data > 1 and args.batch % data):
                continue
            r = _on_subset(world, p, lambda c, data=data: _measure(c, args, shape, data))
            rows.append({"case": case, **r})
    for r in rows:
        p = r["ranks"]
        r["vs_torch"] = r["samples_per_s"] / peer["samples_per_s"]
        r["efficiency"] = r["vs_torch"] / p
        r["cpu_efficiency"] = peer["cpu_ms"] / (p * r["cpu_ms"])
        r["gflops"] = flops * r["samples_per_s"] / args.batch / 1e9
        r["pct_peak"] = 100.0 * r["gflops"] / (min(p, cores) * gemm)
    if world.Get_rank() == 0:
        notes = [
            f"U-Net width {args.width}, depth {args.depth} on a {shape} periodic field, global batch {args.batch}, "
            f"{args.dtype}, AdamW, torch {torch.__version__} with {args.threads} thread(s) per process; "
            f"{args.steps} timed steps after {args.warmup} warm-up steps; step_ms and samples/s from the fastest "
            "step, median_ms alongside",
            f"peer: the same U-Net of torch.nn layers, one process, timed interleaved with the 1-rank hpcml row; "
            f"{flops / 1e9:.3f} GFLOP per step (torch's counter); machine limit: one-thread {args.dtype} GEMM "
            f"{gemm:.1f} GFLOP/s measured in this run, times min(ranks, {cores} CPUs)",
            "efficiency = samples/s / (ranks x peer samples/s); cpu_efficiency = peer CPU ms / (ranks x busiest "
            "rank's CPU ms); exchange_pct = halo exchanges + adjoints of the slowest rank / step time",
        ]
        crowded = oversubscribed_note(min(max(ranks), node_ranks), cores, args.threads)
        if crowded:
            notes.append(crowded)
        _j, mpath = write_report(
            "train_torch",
            rows,
            COLUMNS,
            args.out,
            meta={
                "shape": shape,
                "batch": args.batch,
                "width": args.width,
                "depth": args.depth,
                "dtype": args.dtype,
                "flops_per_step": flops,
                "gemm_gflops_1thread": gemm,
            },
            title="hpcml bench train --torch: U-Net training throughput, hpcml.torch vs single-process torch",
            notes=notes,
        )
        print(mpath.read_text())
    return 0
