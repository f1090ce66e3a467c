"""Halo-exchange time against hand-written NumPy code and against a modelled floor.

For every field, split and halo width: one full exchange (edges and corners) with
the default method (``auto``, and any ``--methods`` asked for), interleaved with
two references measured in the same loop (best of ``--repeat``; each sample is the
slowest rank's time):

``hand``
    What a careful user writes with NumPy and mpi4py: per dimension and direction,
    ``np.copyto`` of the face into a preallocated buffer, ``Sendrecv``, ``np.copyto``
    into the ghosts (views and buffers made once); self-neighbour faces copied.
``floor``
    A model of the least any packing exchange can cost: the bytes that pack and
    unpack touch, counted in 64-byte cache lines (array side) plus the packed
    buffers, moved by one contiguous ``np.copyto`` of that volume (the machine's
    copy bandwidth at that size, measured in the loop), plus one contiguous
    ``Sendrecv`` of the bytes this rank sends.

Targets (issue #16): ``auto`` <= 1.0x ``hand`` and <= 1.5x ``floor`` on every row.
The floor's parts are each rank's own work, timed alone, so it assumes a CPU per
rank; with more ranks than CPUs on a node (``ranks_per_node`` and ``cpus_per_node``
in the JSON's ``meta``) an exchange also waits for descheduled neighbours, and the
report says so.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from mpi4py import MPI

from hpcml.bench.report import oversubscribed_note, peak_rss_mib, write_report
from hpcml.datatypes import StridedBlock
from hpcml.decomp import CartDecomp
from hpcml.distarray import DistArray
from hpcml.halo_layout import HaloLayout
from hpcml.runtime import node_share

DEFAULT_FIELDS = ("4096x4096", "192x192x384")
LINE = 64


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``hpcml bench halo``."""
    parser.add_argument("--fields", nargs="+", default=list(DEFAULT_FIELDS), help="global shapes, e.g. 4096x4096")
    parser.add_argument("--halo", type=int, nargs="+", default=[1, 2, 3], help="ghost widths")
    parser.add_argument(
        "--splits",
        nargs="+",
        default=["slowest", "fastest"],
        help="process grids: slowest (all ranks on axis 0), fastest (last axis), auto (CartDecomp's), or 2x1 ...",
    )
    parser.add_argument("--methods", nargs="+", default=["auto"], help="hpcml methods timed (auto = the default)")
    parser.add_argument("--repeat", type=int, default=200, help="interleaved samples per row (best of; default 200)")
    parser.add_argument(
        "--started",
        action="store_true",
        help="also time each method's started exchange (start_exchange().wait(), what the apps' steps use)",
    )


def lines_touched(block: StridedBlock) -> int:
    """64-byte cache lines the runs of ``block`` touch (shared lines counted once)."""
    if not block.nbytes:
        return 0
    offsets = np.array([block.start], dtype=np.int64)
    for c, s in zip(block.counts[1:], block.strides[1:]):
        offsets = (offsets[None, :] + s * np.arange(c, dtype=np.int64)[:, None]).ravel()
    offsets.sort()
    first, last = offsets // LINE, (offsets + block.counts[0] - 1) // LINE
    seen = np.maximum.accumulate(last)
    start = first.copy()
    start[1:] = np.maximum(first[1:], seen[:-1] + 1)
    return int(np.maximum(last - start + 1, 0).sum())


def touched_bytes(layout: HaloLayout) -> int:
    """Bytes a packing exchange moves: array lines read and written, packed buffers written and read."""
    total = 0
    for stage in layout.stages:
        for m in stage.sends:
            total += sum(lines_touched(f.send) * LINE + f.nbytes for f in m.faces)
        for m in stage.recvs:
            total += sum(lines_touched(f.recv) * LINE + f.nbytes for f in m.faces)
        total += sum((lines_touched(f.send) + lines_touched(f.recv)) * LINE for f in stage.copies)
    return total


def _hand_written(u: DistArray) -> Any:
    """The NumPy + ``Sendrecv`` exchange a user would write, as a zero-argument callable."""
    d, comm = u.decomp, u.decomp.cart
    steps = []
    for ax in range(d.ndim):
        h, n = d.halo[ax], d.local_shape[ax]
        if h == 0:
            continue
        lo, hi = d.neighbors[ax]
        for dest, source, send, recv in (
            (hi, lo, slice(n, n + h), slice(0, h)),
            (lo, hi, slice(h, 2 * h), slice(n + h, n + 2 * h)),
        ):
            sreg = tuple(send if e == ax else slice(None) for e in range(d.ndim))
            rreg = tuple(recv if e == ax else slice(None) for e in range(d.ndim))
            sview, rview = u.data[sreg], u.data[rreg]
            if dest == d.rank and source == d.rank:
                steps.append((None, sview, rview, None, None, None, None))
            else:
                sbuf, rbuf = np.empty_like(sview), np.empty_like(rview)
                steps.append((comm, sview, rview, sbuf, rbuf, dest, source))

    def exchange() -> None:
        for c, sview, rview, sbuf, rbuf, dest, source in steps:
            if c is None:
                np.copyto(rview, sview)
                continue
            np.copyto(sbuf, sview)
            c.Sendrecv(sbuf, dest, 7, rbuf, source, 7)
            if source != MPI.PROC_NULL:
                np.copyto(rview, rbuf)

    return exchange


def _floor_parts(comm: MPI.Comm, touched: int, sent: int) -> tuple[Any, Any]:
    """Callables timing the floor's two parts: one copy of ``touched / 2`` bytes, one ``Sendrecv`` of ``sent``."""
    src = np.ones(max(touched // 2, 1), dtype=np.uint8)
    dst = np.empty_like(src)
    size, rank = comm.Get_size(), comm.Get_rank()
    sbuf = np.ones(max(sent, 1), dtype=np.uint8)
    rbuf = np.empty_like(sbuf)
    dest, source = (rank + 1) % size, (rank - 1) % size

    def copy() -> None:
        np.copyto(dst, src)

    def message() -> None:
        if size > 1 and sent:
            comm.Sendrecv(sbuf, dest, 8, rbuf, source, 8)

    return copy, message


def _grid(split: str, ndim: int, size: int) -> list[int] | None:
    if split == "auto":
        return None
    if split == "slowest":
        return [size] + [1] * (ndim - 1)
    if split == "fastest":
        return [1] * (ndim - 1) + [size]
    dims = [int(x) for x in split.lower().split("x")]
    return (dims + [1] * ndim)[:ndim]


def _interleaved(comm: MPI.Comm, fns: dict[str, Any], repeat: int) -> dict[str, list[float]]:
    """Samples of every callable, run in turn each round; a sample is the slowest rank's time."""
    for fn in fns.values():  # warm up: plans, caches, compiled code
        fn()
        fn()
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            comm.Barrier()
            t0 = time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - t0)
    for name, samples in out.items():
        slowest = np.array(samples)
        comm.Allreduce(MPI.IN_PLACE, slowest, op=MPI.MAX)
        out[name] = list(slowest)
    return out


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and write ``halo.json`` / ``halo.md`` on rank 0."""
    comm = MPI.COMM_WORLD
    rows: list[dict[str, Any]] = []
    for spec in args.fields:
        shape = tuple(int(x) for x in spec.lower().split("x"))
        for split in args.splits:
            for halo in args.halo:
                try:
                    d = CartDecomp(
                        shape, comm, dims=_grid(split, len(shape), comm.Get_size()), periodic=True, halo=halo
                    )
                except ValueError as exc:
                    if comm.Get_rank() == 0:
                        print(f"skipped {spec} {split} halo {halo}: {exc}")
                    continue
                rows.append(_measure(comm, d, args))
                d.free()
    peak = comm.allreduce(peak_rss_mib(), op=MPI.MAX)
    ranks_here, cpus_here = node_share(comm)
    for r in rows:
        r["peak MiB/rank"] = peak
    if comm.Get_rank() == 0:
        methods = [m for m in args.methods]
        started = [f"{m} started ms" for m in methods] if args.started else []
        cols = ["field", "dims", "halo", "messages", "KiB sent", *[f"{m} ms" for m in methods], *started]
        cols += ["hand ms", "floor ms", *[f"{m} / hand" for m in methods]]
        cols += [f"{m} started / hand" for m in methods] if args.started else []
        cols += [f"{m} / floor" for m in methods] + ["correct", "peak MiB/rank"]
        notes = [
            f"{comm.Get_size()} rank(s), float64, periodic, edges and corners filled; best of {args.repeat} "
            "interleaved samples, each the slowest rank's time.",
            "`hand`: NumPy `copyto` pack + `Sendrecv` + `copyto` unpack per dimension and direction, buffers "
            "and views made once.  `floor`: cache lines touched by pack and unpack moved by one contiguous "
            "`np.copyto` + one contiguous `Sendrecv` of the bytes sent (both measured in the loop).",
            "Targets (issue #16): auto / hand <= 1.0 and auto / floor <= 1.5 on every row, with a CPU per rank "
            "(the floor's two parts are each rank's own work).",
            "`correct`: the exchanged array equals the hand-written exchange's, byte for byte"
            + (" (after a blocking and after a started exchange)." if args.started else "."),
        ]
        if args.started:
            notes.append(
                "`started`: `start_exchange().wait()` with nothing in between, the apps' overlapped step "
                "without its interior sweep; informational (the targets are the blocking exchange's)."
            )
        crowded = oversubscribed_note(ranks_here, cpus_here)
        if crowded:
            notes.append(crowded + "; the floor, timed per rank, does not include it.")
        meta = {**vars_clean(args), "ranks_per_node": ranks_here, "cpus_per_node": cpus_here}
        meta["oversubscribed"] = crowded is not None
        j, m = write_report("halo", rows, cols, args.out, meta=meta, notes=notes)
        print(m.read_text())
        print(f"wrote {j} and {m}")
    return 0


def _measure(comm: MPI.Comm, d: CartDecomp, args: argparse.Namespace) -> dict[str, Any]:
    u = DistArray.from_global(d, lambda *idx: sum((i + 1.0) * 10.0**k for k, i in enumerate(idx)), dtype="f8")
    ref = u.copy()
    hand = _hand_written(ref)
    hand()
    layout = u.halo_plan("auto").layout
    touched = comm.allreduce(touched_bytes(layout), op=MPI.MAX)
    sent = comm.allreduce(layout.nbytes, op=MPI.MAX)
    copy, message = _floor_parts(comm, touched, sent)
    fns: dict[str, Any] = {f"{m} ms": (lambda m=m: u.exchange_halos(m)) for m in args.methods}
    if args.started:
        fns.update({f"{m} started ms": (lambda m=m: u.start_exchange(m).wait()) for m in args.methods})
    fns.update({"hand ms": hand, "copy": copy, "message": message})
    samples = _interleaved(comm, fns, args.repeat)
    best = {k: min(v) * 1e3 for k, v in samples.items()}
    floor = best.pop("copy") + best.pop("message")
    u.exchange_halos()
    same = bool(np.array_equal(u.data, ref.data))
    if args.started:
        u.data[...] = 0.0  # ghosts filled again by the started exchange alone
        u.interior[...] = ref.interior
        u.start_exchange().wait()
        same = same and bool(np.array_equal(u.data, ref.data))
    correct = comm.allreduce(same, op=MPI.LAND)
    row: dict[str, Any] = {
        "field": "x".join(map(str, d.shape)),
        "dims": "x".join(map(str, d.dims)),
        "halo": d.halo[0],
        "messages": comm.allreduce(layout.messages, op=MPI.MAX),
        "KiB sent": sent / 1024,
        **best,
        "floor ms": floor,
        "touched bytes": touched,
        "correct": correct,
    }
    for m in args.methods if args.started else ():
        row[f"{m} started / hand"] = best[f"{m} started ms"] / best["hand ms"]
    for m in args.methods:
        row[f"{m} / hand"] = best[f"{m} ms"] / best["hand ms"]
        row[f"{m} / floor"] = best[f"{m} ms"] / floor if floor > 0 else float("nan")
    return row


def vars_clean(args: argparse.Namespace) -> dict[str, Any]:
    """Arguments as JSON-safe metadata."""
    return {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, list, type(None)))}
