"""``hpcml bench numpy``: DistArray's NumPy protocol, global indexing and redistribution, measured.

Launch with the rank count to measure, e.g. ``mpiexec -n 2 hpcml bench numpy``.
On an ``--n`` x ``--n`` float64 field split by ``CartDecomp``'s default grid:

* **ufunc expression** ``w = np.sqrt(u**2 + v**2)`` on DistArrays, against the
  same expression on each rank's local NumPy block (the peer: what a user writes
  by hand on ``.interior``), timed interleaved; GB/s over the bytes NumPy's
  temporaries move, and the ratio to STREAM triad measured in the same run;
* **reductions** ``u.sum()``, ``u.std()``, ``u.mean(axis=1)`` against NumPy on the
  local block plus one ``allreduce`` (the hand-written way);
* **global indexing** ``u[i, :]`` (one row, every rank receives it) against one
  ``Bcast`` of the same bytes (the MPI floor);
* **redistribute** from the default grid to the other split (rows to columns),
  against one ``Alltoall`` of the same number of bytes (the floor).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from mpi4py import MPI

from hpcml.bench.report import peak_rss_mib, write_report

COLUMNS = ["case", "impl", "ranks", "ms", "GB/s", "vs limit", "vs peer", "peak MiB/rank"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``hpcml bench numpy``."""
    parser.add_argument("--n", type=int, default=4096, help="field is n x n float64 (default 4096)")
    parser.add_argument("--repeat", type=int, default=10, help="timed calls per case (best is reported)")


def _best(comm: MPI.Comm, fns: dict[str, Callable[[], Any]], repeat: int) -> dict[str, float]:
    """Best time of each function (slowest rank per call), calls interleaved so both see the same load."""
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, np.inf)
    for _ in range(repeat):
        for name, fn in fns.items():
            comm.Barrier()
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], comm.allreduce(time.perf_counter() - t0, op=MPI.MAX))
    return best


def _triad_gbs(n_local: int, repeat: int) -> float:
    """STREAM triad ``a = b + s c`` with NumPy on this rank's block size: the memory limit seen here."""
    b, c, a = np.ones(n_local), np.ones(n_local), np.empty(n_local)
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        np.multiply(c, 3.0, out=a)
        a += b
        best = min(best, time.perf_counter() - t0)
    return 4 * 8 * n_local / best / 1e9  # NumPy's two-pass triad moves 4 arrays


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; rank 0 writes ``numpy.json`` / ``numpy.md``."""
    import hpcml
    from hpcml import CartDecomp, DistArray

    comm = MPI.COMM_WORLD
    hpcml.init(threads=1)
    p, n = comm.Get_size(), args.n
    d = CartDecomp((n, n), comm)
    u = DistArray.from_global(d, lambda i, j: np.sin(1e-3 * i) + 1e-3 * j)
    v = DistArray.from_global(d, lambda i, j: np.cos(2e-3 * j) - 1e-3 * i)
    ul, vl = u.interior.copy(), v.interior.copy()
    local = ul.size
    rows: list[dict] = []
    triad = comm.allreduce(_triad_gbs(local, args.repeat), op=MPI.MIN) * p

    def row(case: str, impl: str, seconds: float, nbytes: float | None = None, limit: float | None = None) -> dict:
        r = {"case": case, "impl": impl, "ranks": p, "ms": 1e3 * seconds}
        if nbytes is not None:
            r["GB/s"] = nbytes / seconds / 1e9
            if limit is not None:
                r["vs limit"] = r["GB/s"] / limit
        rows.append(r)
        return r

    # ufunc expression: NumPy moves 2 reads + 1 write per pass, 4 passes (u**2, v**2, +, sqrt)
    t = _best(comm, {"hpcml": lambda: np.sqrt(u**2 + v**2), "numpy": lambda: np.sqrt(ul**2 + vl**2)}, args.repeat)
    traffic = (3 + 3 + 3 + 2) * 8 * n * n
    row("np.sqrt(u**2 + v**2)", "STREAM triad (NumPy, all ranks)", 4 * 8 * n * n / triad / 1e9, 4 * 8 * n * n)
    r = row("np.sqrt(u**2 + v**2)", "hpcml DistArray", t["hpcml"], traffic, triad)
    r["vs peer"] = t["hpcml"] / t["numpy"]
    row("np.sqrt(u**2 + v**2)", "NumPy on each local block", t["numpy"], traffic, triad)

    # reductions against the hand-written local reduction + allreduce
    cases = {
        "u.sum()": (u.sum, lambda: comm.allreduce(float(ul.sum()))),
        "u.std()": (u.std, lambda: _hand_std(comm, ul, n * n)),
        "u.mean(axis=1)": (lambda: u.mean(axis=1), lambda: _hand_row_mean(comm, d, ul)),
    }
    for name, (ours, hand) in cases.items():
        t = _best(comm, {"hpcml": ours, "hand": hand}, args.repeat)
        r = row(name, "hpcml DistArray", t["hpcml"], 8 * n * n * (2 if "std" in name else 1), triad)
        r["vs peer"] = t["hpcml"] / t["hand"]
        row(name, "NumPy on the local block + allreduce", t["hand"])

    # one global row on every rank against one Bcast of the same bytes
    line = np.empty(n)
    t = _best(comm, {"hpcml": lambda: u[n // 3, :], "bcast": lambda: comm.Bcast(line, root=0)}, args.repeat)
    r = row(f"u[{n // 3}, :] on every rank", "hpcml global get", t["hpcml"], 8 * n)
    r["vs limit"] = t["bcast"] / t["hpcml"]
    row(f"u[{n // 3}, :] on every rank", "MPI Bcast of the same bytes (floor)", t["bcast"], 8 * n)

    # redistribution to the other split (rows <-> columns), against one Alltoall moving the same bytes
    target = CartDecomp((n, n), comm, dims=(1, p) if d.dims[0] > 1 else (p, 1), halo=0)
    moved_plan = u.redistribute(target)  # builds and caches the plan
    moved = int(comm.allreduce(_moved_bytes(d, target), op=MPI.SUM))
    per_pair = max(1, moved // max(1, p * p) // 8)
    sbuf, rbuf = np.zeros(per_pair * p), np.zeros(per_pair * p)
    t = _best(
        comm,
        {"hpcml": lambda: u.redistribute(target), "alltoall": lambda: comm.Alltoall(sbuf, rbuf)},
        args.repeat,
    )
    case = f"redistribute {d.dims[0]}x{d.dims[1]} -> {target.dims[0]}x{target.dims[1]}"
    r = row(case, "hpcml redistribute", t["hpcml"], max(moved, 1))
    r["vs limit"] = t["alltoall"] / t["hpcml"]
    row(case, "MPI Alltoall of the bytes that change owner (floor)", t["alltoall"], max(moved, 1))
    del moved_plan
    peak = comm.allreduce(peak_rss_mib(), op=MPI.MAX)
    if comm.Get_rank() == 0:
        for r in rows:
            r["peak MiB/rank"] = peak
        notes = [
            f"{n}x{n} float64 on {p} rank(s), process grid {d.dims}; best of {args.repeat} calls, slowest rank per "
            "call, hpcml and its peer interleaved call by call.",
            "`GB/s`: bytes NumPy's passes move (ufunc: 11 arrays of n^2 doubles for 4 passes) or bytes moved "
            "between ranks (indexing, redistribution), per second. `vs limit`: GB/s over STREAM triad measured in "
            "the same run (NumPy, all ranks), or for communication the floor's time over hpcml's (1 = at the "
            "floor). `vs peer`: hpcml's time over the peer's (< 1 is faster).",
        ]
        meta = {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, list, type(None)))}
        j, m = write_report("numpy", rows, COLUMNS, args.out, meta=meta, notes=notes)
        print(m.read_text())
        print(f"wrote {j} and {m}")
    target.free()
    d.free()
    return 0


def _hand_std(comm: MPI.Comm, ul: np.ndarray, count: int) -> float:
    mean = comm.allreduce(float(ul.sum())) / count
    return float(np.sqrt(comm.allreduce(float(((ul - mean) ** 2).sum())) / count))


def _hand_row_mean(comm: MPI.Comm, d: Any, ul: np.ndarray) -> np.ndarray:
    part = np.zeros(d.shape[0])
    part[d.slices[0]] = ul.sum(axis=1)
    comm.Allreduce(MPI.IN_PLACE, part, op=MPI.SUM)
    return part / d.shape[1]


def _moved_bytes(src: Any, dst: Any) -> int:
    """Bytes of this rank's source block that belong to another rank in ``dst``."""
    lo = [max(a, b) for a, b in zip(src.start, dst.start)]
    hi = [min(a + m, b + k) for a, m, b, k in zip(src.start, src.local_shape, dst.start, dst.local_shape)]
    stay = int(np.prod([max(0, h - low) for low, h in zip(lo, hi)]))
    return 8 * (int(np.prod(src.local_shape)) - stay)
