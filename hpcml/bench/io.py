"""HDF5 output write/read GB/s per path and rank count, against h5py and numpy.save.

For a series of ``--steps`` snapshots of a ``--shape`` float64 field (default
4096² x 4), on sub-communicators of 1, 2 and 4 ranks (those that fit the job)
and for each write path this h5py supports (``vds`` always; with a parallel
h5py also ``mpio``, collective writes and collective MPI-IO reads, and
``mpio-indep``, independent writes and per-rank reads), it times

* write: ``Output`` open, every snapshot, ``close()`` (which fsyncs), and the
  per-rank files fsync-ed too, so every number is bytes on stable storage;
* read: every snapshot back with ``hpcml.io.read`` onto the same decomposition,
  after the files' pages were dropped from the page cache
  (``posix_fadvise(DONTNEED)``; ``--cached`` skips that);
* consolidate (``vds``, once): copying the series into one plain file;
* append (on all the job's ranks): the cost per output step of a long run that
  keeps its output readable, ``--append-steps`` snapshots of a small
  ``--append-shape`` field plus one scalar, ``Output.flush()`` after each: with
  the main file replaced at every step (``flush_seconds=0``) and at the default
  rate, against the peer each rank appending its block to its own plain h5py
  file and flushing it (no global view, no coordinates, no crash safety).

Baselines over the same bytes, in one process: the series written and read with
plain ``h5py`` (one chunked dataset, same chunks), and ``numpy.save``/``numpy.load``
of each snapshot (the disk's practical limit: one sequential stream, no HDF5).
Times are the best of ``--repeat`` runs; peak RSS per rank is listed with every row.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from mpi4py import MPI

from hpcml.bench.report import peak_rss_mib, write_report
from hpcml.decomp import CartDecomp
from hpcml.distarray import DistArray
from hpcml.io import Output, consolidate, read
from hpcml.io._common import chunk_shape, fsync_file, h5py_has_mpi


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``hpcml bench io``."""
    parser.add_argument("--shape", default="4096x4096", help="global field shape (float64)")
    parser.add_argument("--steps", type=int, default=4, help="snapshots in the series")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4], help="rank counts (<= job size)")
    parser.add_argument(
        "--paths", nargs="+", default=None, help="vds, mpio, mpio-indep (default: all that this h5py supports)"
    )
    parser.add_argument("--repeat", type=int, default=2, help="runs per measurement (best is reported)")
    parser.add_argument("--dir", default=".", help="where the scratch files go (removed afterwards)")
    parser.add_argument("--cached", action="store_true", help="read from the page cache (no eviction)")
    parser.add_argument("--append-shape", default="256x256", help="field of the per-step append rows")
    parser.add_argument("--append-steps", type=int, default=50, help="output steps of the append rows (0: none)")


def _evict(paths: list[Path]) -> None:
    """Drop the files' clean pages from the page cache so reads hit the disk."""
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _reset_peak() -> bool:
    """Reset this process's peak RSS (Linux ``clear_refs``), so each row gets its own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:  # not Linux, or not permitted: the peak stays cumulative
        return False


def _files(base: Path) -> list[Path]:
    return [p for p in base.rglob("*") if p.is_file()]


def _best(comm: MPI.Comm, fn: Callable[[], None], repeat: int, before: Callable[[], None] | None = None) -> float:
    """Best wall time of ``fn`` (slowest rank of each run)."""
    best = float("inf")
    for _ in range(repeat):
        if before is not None:
            before()
        comm.Barrier()
        t0 = time.perf_counter()
        fn()
        comm.Barrier()
        best = min(best, comm.allreduce(time.perf_counter() - t0, op=MPI.MAX))
    return best


def comm_max(comm: MPI.Comm, value: float) -> float:
    """Largest ``value`` over the ranks of ``comm``."""
    return comm.allreduce(value, op=MPI.MAX)


def _series_rows(
    sub: MPI.Comm, path_kind: str, shape: tuple[int, ...], args: argparse.Namespace, scratch: Path
) -> list[dict[str, Any]]:
    """Write/read (and consolidate) timings of one path on one sub-communicator."""
    d = CartDecomp(shape, sub)
    # One live field, like an application; one cell marks the step (a negligible change).
    u = DistArray.from_global(d, lambda i, j: i * 1.0 + j * 1e-4)
    work = Path(
        sub.bcast(
            tempfile.mkdtemp(prefix=f"{path_kind}-{sub.Get_size()}-", dir=scratch) if sub.Get_rank() == 0 else None
        )
    )
    target = work / "series.h5"

    def clean() -> None:
        if sub.Get_rank() == 0:
            for p in work.iterdir():
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        sub.Barrier()

    def write() -> None:
        driver, collective = path_kind.split("-", maxsplit=1)[0], not path_kind.endswith("-indep")
        with Output(target, sub, mode="w", driver=driver, xdmf=False, flush_every=0, collective=collective) as out:
            for s in range(args.steps):
                u.interior[(0,) * u.data.ndim] = s
                out.write("u", u, step=s, time=float(s))

    def evict() -> None:
        if not args.cached and sub.Get_rank() == 0:
            _evict(_files(work))
        sub.Barrier()

    def read_all() -> None:
        for s in range(args.steps):
            read(target, "u", d, step=s, exchange=False, collective=path_kind == "mpio")

    nbytes = int(np.prod(shape)) * 8 * args.steps
    rows = [{"op": "write", "s": _best(sub, write, args.repeat, before=clean)}]
    rows.append({"op": "read", "s": _best(sub, read_all, args.repeat, before=evict)})
    if path_kind == "vds":  # once, on the series the last write left behind
        t0 = time.perf_counter()
        consolidate(target, comm=sub, progress=False)
        rows.append({"op": "consolidate", "s": comm_max(sub, time.perf_counter() - t0)})
    for r in rows:
        r["GB/s"] = nbytes / r["s"] / 1e9
    d.free()
    if sub.Get_rank() == 0:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def _append_rows(comm: MPI.Comm, args: argparse.Namespace, scratch: Path) -> list[dict[str, Any]]:
    """Seconds per output step: hpcml.io with a flush per step (two rates) and plain per-rank h5py appends."""
    shape = tuple(int(x) for x in args.append_shape.lower().split("x"))
    steps = args.append_steps
    d = CartDecomp(shape, comm)
    u = DistArray.from_global(d, lambda i, j: i * 1.0 + j * 1e-4)
    work = Path(comm.bcast(tempfile.mkdtemp(prefix="append-", dir=scratch) if comm.Get_rank() == 0 else None))

    def clean() -> None:
        if comm.Get_rank() == 0:
            for p in work.iterdir():
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        comm.Barrier()

    def hpcml_append(flush_seconds: float) -> Callable[[], None]:
        def go() -> None:
            with Output(work / "run.h5", comm, mode="w", flush_seconds=flush_seconds) as out:
                for s in range(steps):
                    out.write("u", u, step=s, time=0.1 * s)
                    out.write_scalar("norm", 1.0, step=s, time=0.1 * s)
                    out.flush()

        return go

    def h5py_append() -> None:
        with h5py.File(work / f"plain-{comm.Get_rank()}.h5", "w") as f:
            local = tuple(d.local_shape)
            ds = f.create_dataset("u", shape=(0, *local), maxshape=(None, *local), chunks=(1, *local), dtype="f8")
            sc = f.create_dataset("norm", shape=(0,), maxshape=(None,), chunks=(1024,), dtype="f8")
            for s in range(steps):
                ds.resize(s + 1, axis=0)
                ds[s] = u.interior
                sc.resize(s + 1, axis=0)
                sc[s] = 1.0
                f.flush()

    rows = []
    label = f"append {'x'.join(map(str, shape))} x {steps}"
    for path, fn in (
        ("h5py per rank, flush each step", h5py_append),
        ("Output, main file every step", hpcml_append(0.0)),
        ("Output, default (flush_seconds=5)", hpcml_append(5.0)),
    ):
        rows.append({"path": path, "ranks": comm.Get_size(), "op": label, "s": _best(comm, fn, args.repeat, clean)})
    per_step_bytes = int(np.prod(shape)) * 8
    for r in rows:
        r["ms/step"] = 1e3 * r["s"] / steps
        r["GB/s"] = per_step_bytes * steps / r["s"] / 1e9
        r["x h5py append"] = r["s"] / rows[0]["s"]
    d.free()
    if comm.Get_rank() == 0:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def _baselines(shape: tuple[int, ...], args: argparse.Namespace, scratch: Path) -> list[dict[str, Any]]:
    """Single-process h5py and numpy.save over the same bytes (rank 0 only)."""
    field = np.fromfunction(lambda i, j: i * 1.0 + j * 1e-4, shape)
    nbytes = field.nbytes * args.steps
    work = Path(tempfile.mkdtemp(prefix="baseline-", dir=scratch))
    h5 = work / "plain.h5"
    rows: list[dict[str, Any]] = []

    def best(fn: Callable[[], None], before: Callable[[], None] | None = None) -> float:
        out = float("inf")
        for _ in range(args.repeat):
            if before:
                before()
            t0 = time.perf_counter()
            fn()
            out = min(out, time.perf_counter() - t0)
        return out

    def h5_write() -> None:
        with h5py.File(h5, "w") as f:
            dset = f.create_dataset(
                "u", shape=(args.steps, *shape), chunks=chunk_shape(shape, 8), dtype="f8", maxshape=(None, *shape)
            )
            for s in range(args.steps):
                field.flat[0] = s
                dset[s] = field
        fsync_file(h5)

    def h5_read() -> None:
        with h5py.File(h5, "r") as f:
            for s in range(args.steps):
                f["u"][s]

    def np_write() -> None:
        for s in range(args.steps):
            p = work / f"snap{s}.npy"
            field.flat[0] = s
            np.save(p, field)
            fsync_file(p)

    def np_read() -> None:
        for s in range(args.steps):
            np.load(work / f"snap{s}.npy")

    def evict() -> None:
        if not args.cached:
            _evict(_files(work))

    for label, w, r in (("h5py, 1 process", h5_write, h5_read), ("numpy.save", np_write, np_read)):
        rows.append({"path": label, "ranks": 1, "op": "write", "s": best(w)})
        rows.append({"path": label, "ranks": 1, "op": "read", "s": best(r, evict)})
    for row in rows:
        row["GB/s"] = nbytes / row["s"] / 1e9
    shutil.rmtree(work, ignore_errors=True)
    return rows


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and write ``io.json`` / ``io.md`` on rank 0."""
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    shape = tuple(int(x) for x in args.shape.lower().split("x"))
    paths = args.paths or (["mpio", "mpio-indep", "vds"] if h5py_has_mpi() else ["vds"])
    counts = sorted({n for n in args.ranks if 1 <= n <= size})
    scratch = Path(comm.bcast(tempfile.mkdtemp(prefix=".hpcml-bench-io-", dir=args.dir) if rank == 0 else None))
    rows: list[dict[str, Any]] = []
    resettable = comm.allreduce(_reset_peak(), op=MPI.LAND)
    try:
        base = _baselines(shape, args, scratch) if rank == 0 else []
        peak = comm.allreduce(peak_rss_mib() if rank == 0 else 0.0, op=MPI.MAX)
        for r in base:
            r["peak MiB/rank"] = peak
        rows += base
        for n in counts:
            sub = comm.Split(0 if rank < n else MPI.UNDEFINED, rank)
            for kind in paths:
                _reset_peak()
                got = _series_rows(sub, kind, shape, args, scratch) if sub != MPI.COMM_NULL else []
                peak = comm.allreduce(peak_rss_mib() if rank < n else 0.0, op=MPI.MAX)
                rows += [{"path": kind, "ranks": n, **r, "peak MiB/rank": peak} for r in got]
            if sub != MPI.COMM_NULL:
                sub.Free()
            comm.Barrier()
        if args.append_steps > 0:
            _reset_peak()
            got = _append_rows(comm, args, scratch)
            peak = comm.allreduce(peak_rss_mib(), op=MPI.MAX)
            rows += [{**r, "peak MiB/rank": peak} for r in got]
    finally:
        if rank == 0:
            shutil.rmtree(scratch, ignore_errors=True)
    if rank == 0:
        limit = {r["op"]: r["GB/s"] for r in rows if r["path"] == "numpy.save"}
        for r in rows:
            if r["op"].startswith("append"):
                continue
            op = "write" if r["op"].startswith(("write", "consolidate")) else "read"
            r["x numpy"] = r["GB/s"] / limit[op] if limit.get(op) else float("nan")
        cols = ["path", "ranks", "op", "s", "GB/s", "x numpy", "ms/step", "x h5py append", "peak MiB/rank"]
        gib = int(np.prod(shape)) * 8 * args.steps / 2**30
        notes = [
            f"Series of {args.steps} x {'x'.join(map(str, shape))} float64 ({gib:.2f} GiB); "
            f"best of {args.repeat} runs; job of {size} rank(s) on {os.cpu_count()} CPUs; "
            "smaller rank counts are sub-communicators of it.",
            "write: Output open + every snapshot + close, all files fsync-ed (bytes on stable storage).",
            "read: hpcml.io.read of every snapshot onto the writer's decomposition"
            + (" from the page cache." if args.cached else ", after dropping the files from the page cache."),
            "consolidate: vds only, once: hpcml.io.consolidate of the series into one plain file (rank 0).",
            "mpio: collective writes and collective MPI-IO reads; mpio-indep: independent writes, each rank "
            "opening the file to read (the default of hpcml.io.read).",
            "x numpy: GB/s over numpy.save (write) or numpy.load (read) of the same bytes, one process.",
            "append: the whole job; ms per output step (snapshot + scalar + flush) including open and close, "
            "and the time over each rank appending to its own h5py file (x h5py append).",
            f"h5py {h5py.version.version} (HDF5 {h5py.version.hdf5_version}, mpi={h5py_has_mpi()}).",
            "peak MiB/rank: largest peak RSS of the ranks taking part, "
            + ("reset before each configuration." if resettable else "cumulative (could not reset it here)."),
        ]
        meta = {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, list, type(None)))}
        j, m = write_report("io", rows, cols, args.out, meta=meta, notes=notes)
        print(m.read_text())
        print(f"wrote {j} and {m}")
    return 0
