"""Halo-exchange time per method against the contiguous-send floor.

For each field (default: 2-D 4096² and 3-D 256³ float64, periodic) and each
method, the time of one full exchange (edges and corners) on the ranks given,
the bytes each rank sends, the achieved GB/s, and two floors measured in the
same run: the same bytes sent as one contiguous buffer with ``Sendrecv`` to one
neighbour (the floor the issue asks for), and the exchange's own messages sent
from contiguous buffers without packing (same message count and peers).
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
from mpi4py import MPI

from hpcml.bench.report import peak_rss_mib, time_call, write_report
from hpcml.decomp import CartDecomp
from hpcml.distarray import DistArray

DEFAULT_FIELDS = ("4096x4096", "256x256x256")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``hpcml bench halo``."""
    parser.add_argument("--fields", nargs="+", default=list(DEFAULT_FIELDS), help="global shapes, e.g. 4096x4096")
    parser.add_argument("--halo", type=int, default=1, help="ghost width")
    parser.add_argument("--methods", nargs="+", default=["pack", "datatype", "auto"])
    parser.add_argument("--repeat", type=int, default=30, help="timed exchanges per method")
    parser.add_argument("--no-corners", action="store_true", help="faces only (one stage)")
    parser.add_argument("--dims", default=None, help="process grid per field, e.g. 1x2 (default: MPI_Dims_create)")


def _floor_one_buffer(comm: MPI.Comm, nbytes: int, repeat: int) -> dict[str, float]:
    """The same bytes as one contiguous Sendrecv with the next rank (ring)."""
    size, rank = comm.Get_size(), comm.Get_rank()
    send = np.ones(max(nbytes, 1), dtype=np.uint8)
    recv = np.empty_like(send)
    dest, src = (rank + 1) % size, (rank - 1) % size
    return time_call(lambda: comm.Sendrecv(send, dest, 5, recv, src, 5), repeat=repeat, comm=comm)


def _floor_same_messages(u: DistArray, repeat: int, corners: bool) -> dict[str, float]:
    """The plan's own messages (same peers, sizes, stages) from contiguous buffers."""
    plan = u.halo_plan("pack", corners)
    comm = plan.comm
    stages = []
    for stage in plan.stages:
        faces = [f for d in stage for f in plan.faces[d]]
        bufs = [(np.ones(f.send_block.nbytes, np.uint8), np.empty(f.recv_block.nbytes, np.uint8)) for f in faces]
        copies = [(u.data[dst], u.data[src]) for d in stage for src, dst in plan.self_copies[d]]
        stages.append((faces, bufs, copies))

    def once() -> None:
        for faces, bufs, copies in stages:
            reqs = [comm.Irecv(b[1], f.peer, f.recv_tag) for f, b in zip(faces, bufs)]
            reqs += [comm.Isend(b[0], f.peer, f.send_tag) for f, b in zip(faces, bufs)]
            for dst, src in copies:  # a rank that is its own neighbour copies in any method
                dst[...] = src
            MPI.Request.Waitall(reqs)

    return time_call(once, repeat=repeat, comm=comm)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and write ``halo.json`` / ``halo.md`` on rank 0."""
    comm = MPI.COMM_WORLD
    rank0 = comm.Get_rank() == 0
    corners = not args.no_corners
    rows: list[dict[str, Any]] = []
    for spec in args.fields:
        shape = tuple(int(x) for x in spec.lower().split("x"))
        dims = None
        if args.dims:
            dims = [int(x) for x in args.dims.lower().split("x")]
            dims = (dims + [1] * len(shape))[: len(shape)]
        d = CartDecomp(shape, comm, dims=dims, periodic=True, halo=args.halo)
        u = DistArray.from_global(d, lambda *idx: sum(i.astype("f8") for i in idx), dtype="f8")
        plan = u.halo_plan("pack", corners)
        # Bytes this rank moves into ghosts: sent to neighbours plus copied locally
        # along periodic dimensions that one rank holds whole.
        nbytes = comm.allreduce(plan.nbytes + plan.copy_nbytes, op=MPI.MAX)
        floor1 = _floor_one_buffer(comm, nbytes, args.repeat)
        floorm = _floor_same_messages(u, args.repeat, corners)
        base = {
            "field": "x".join(map(str, shape)),
            "dims": "x".join(map(str, d.dims)),
            "bytes_per_rank": nbytes,
            "copied": comm.allreduce(plan.copy_nbytes, op=MPI.MAX),
            "messages": comm.allreduce(plan.messages, op=MPI.MAX),
        }
        rows.append({**base, "method": "floor: one Sendrecv", "ms": floor1["median"] * 1e3})
        rows.append({**base, "method": "floor: same messages, no pack", "ms": floorm["median"] * 1e3})
        for method in args.methods:
            t = time_call(lambda m=method, u=u: u.exchange_halos(m, corners), repeat=args.repeat, comm=comm)
            rows.append({**base, "method": method, "ms": t["median"] * 1e3, "ms_min": t["min"] * 1e3})
        for r in rows:
            if r["field"] == base["field"]:
                r["GB/s"] = nbytes / (r["ms"] * 1e-3) / 1e9 if r["ms"] > 0 else float("nan")
                r["x floor"] = r["ms"] / (floor1["median"] * 1e3)
        d.free()
    peak = comm.allreduce(peak_rss_mib(), op=MPI.MAX)
    for r in rows:
        r["peak MiB/rank"] = peak
    if rank0:
        cols = [
            "field",
            "dims",
            "method",
            "ms",
            "GB/s",
            "x floor",
            "bytes_per_rank",
            "copied",
            "messages",
            "peak MiB/rank",
        ]
        notes = [
            f"{comm.Get_size()} rank(s), halo {args.halo}, corners={'yes' if corners else 'no'}, "
            f"median of {args.repeat} exchanges (slowest rank each time).",
            "`bytes_per_rank`: ghost bytes filled per exchange (sent + `copied` locally along periodic "
            "dimensions held by one rank).",
            "`x floor`: time over the same bytes sent as one contiguous Sendrecv (lower is better; "
            "target <= 1.3 for the best method).",
        ]
        j, m = write_report("halo", rows, cols, args.out, meta=vars_clean(args), notes=notes)
        print(m.read_text())
        print(f"wrote {j} and {m}")
    return 0


def vars_clean(args: argparse.Namespace) -> dict[str, Any]:
    """Arguments as JSON-safe metadata."""
    return {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, list, type(None)))}
