"""Strided-face transfer: MPI datatype vs pack + contiguous send vs the contiguous floor.

For faces of 2-D and 3-D float64 arrays (contiguous, strided and very strided),
two ranks exchange the face (``Sendrecv``) with each method; the floor is the same
bytes from a ready contiguous buffer.  On the CPU the local copies that packing
adds are timed alone and against NumPy copying the same face views (the peer).
``--measure`` stores the table as the halo cost model (:mod:`hpcml.halo_model`)
that ``method="auto"`` uses.  On a GPU
(``--device gpu``) the faces are CuPy arrays and the methods are device pack +
CUDA-aware send (``device``, only if the MPI is CUDA-aware), device pack + pinned
host staging (``staged``), the pack kernel alone, and each method's delivered bytes
are checked.  ``--array numba`` uses Numba-CUDA device arrays instead, which also
run in the CUDA simulator (how the GPU half is smoke-tested without a GPU).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from mpi4py import MPI
from mpi4py.util.dtlib import from_numpy_dtype

from hpcml.bench.report import peak_rss_mib, time_call, write_report
from hpcml.datatypes import StridedBlock
from hpcml.devices import device_ops
from hpcml.halo_model import HaloModel, default_model_path

# (label, ghosted array shape, face region) -- faces of the kind halo exchanges send.
FACES: list[tuple[str, tuple[int, ...], tuple[slice, ...]]] = [
    ("2-D row (contiguous)", (4098, 4098), (slice(1, 2), slice(None))),
    ("2-D column (strided)", (4098, 4098), (slice(None), slice(1, 2))),
    ("3-D z-plane (contiguous)", (258, 258, 258), (slice(1, 2), slice(None), slice(None))),
    ("3-D y-plane (runs of 258)", (258, 258, 258), (slice(None), slice(1, 2), slice(None))),
    ("3-D x-plane (very strided)", (258, 258, 258), (slice(None), slice(None), slice(1, 2))),
    ("2-D column, 1026 wide", (1026, 1026), (slice(None), slice(1, 2))),
    ("3-D x-plane, 66^3", (66, 66, 66), (slice(None), slice(None), slice(1, 2))),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``hpcml bench datatypes``."""
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--measure", action="store_true", help="store the table as the halo cost model")
    parser.add_argument("--model-out", default=None, help="model path (default: $HPCML_HALO_MODEL or ~/.cache)")
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="small faces only (smoke test)")
    parser.add_argument(
        "--array",
        choices=["cupy", "numba"],
        default="cupy",
        help="GPU array kind for --device gpu (numba also runs in the CUDA simulator, for testing)",
    )


def _subarray(shape: tuple[int, ...], region: tuple[slice, ...], mpitype: Any) -> Any:
    starts = [s.indices(n)[0] for s, n in zip(region, shape)]
    sub = [len(range(*s.indices(n))) for s, n in zip(region, shape)]
    return mpitype.Create_subarray(list(shape), sub, starts).Commit()


def _cpu_rows(comm: MPI.Comm, faces: list, repeat: int) -> list[dict[str, Any]]:
    peer = (comm.Get_rank() + 1) % comm.Get_size()
    src = (comm.Get_rank() - 1) % comm.Get_size()
    dbl = from_numpy_dtype(np.dtype("f8"))
    rows = []
    for label, shape, region in faces:
        a = np.random.default_rng(comm.Get_rank()).random(shape)
        b = np.zeros_like(a)
        sb = StridedBlock.from_view(a, region)
        count = sb.nbytes // 8
        dt = _subarray(shape, region, dbl)
        sbuf, rbuf = np.empty(sb.nbytes, np.uint8), np.empty(sb.nbytes, np.uint8)
        ready = np.ones(sb.nbytes, np.uint8)

        def with_datatype(a=a, b=b, dt=dt) -> None:
            comm.Sendrecv([a, 1, dt], peer, 1, [b, 1, dt], src, 1)

        def with_pack(a=a, b=b, sb=sb, sbuf=sbuf, rbuf=rbuf, count=count) -> None:
            sb.pack(a, sbuf)
            comm.Sendrecv([sbuf, count, dbl], peer, 2, [rbuf, count, dbl], src, 2)
            sb.unpack(rbuf, b)

        def floor(ready=ready, rbuf=rbuf) -> None:
            comm.Sendrecv(ready, peer, 3, rbuf, src, 3)

        def local(a=a, b=b, sb=sb, sbuf=sbuf) -> None:  # the copies `pack` adds, without MPI
            sb.pack(a, sbuf)
            sb.unpack(sbuf, b)

        face_a, face_b, tmp = a[region], b[region], np.empty(a[region].shape)

        def numpy_copy(face_a=face_a, face_b=face_b, tmp=tmp) -> None:  # the peer: NumPy's strided copies
            np.copyto(tmp, face_a)
            np.copyto(face_b, tmp)

        fns = (
            ("datatype", with_datatype),
            ("pack", with_pack),
            ("contiguous", floor),
            ("local", local),
            ("numpy copy", numpy_copy),
        )
        times = {name: time_call(fn, repeat=repeat, comm=comm)["median"] * 1e6 for name, fn in fns}
        with_pack()
        expect = np.zeros_like(a)
        expect[region] = comm.sendrecv(np.ascontiguousarray(a[region]), peer, 4, None, src, 4)
        ok = np.array_equal(b[region], expect[region])
        dt.Free()
        best = min(("datatype", "pack"), key=times.__getitem__)
        rows.append(
            {
                "face": label,
                "run_bytes": sb.counts[0],
                "nbytes": sb.nbytes,
                "runs": sb.nbytes // sb.counts[0],
                "datatype": times["datatype"],
                "pack": times["pack"],
                "contiguous": times["contiguous"],
                "local": times["local"],
                "numpy copy": times["numpy copy"],
                "local x numpy": times["local"] / times["numpy copy"],
                "best": best,
                "best x floor": times[best] / times["contiguous"],
                "correct": ok,
            }
        )
    return rows


def _gpu_face(
    comm: MPI.Comm, shape: tuple[int, ...], region: tuple[slice, ...], repeat: int, aware: bool, xp: Any
) -> dict:
    ops = device_ops(xp)
    peer = (comm.Get_rank() + 1) % comm.Get_size()
    src = (comm.Get_rank() - 1) % comm.Get_size()
    dbl = from_numpy_dtype(np.dtype("f8"))
    a = ops.asarray(np.random.default_rng(comm.Get_rank()).random(shape))
    b = ops.asarray(np.zeros(shape))
    sb = StridedBlock.from_view(a, region)
    count = sb.nbytes // 8
    dsend, drecv = ops.empty(sb.nbytes), ops.empty(sb.nbytes)
    hs, hr = ops.pinned(sb.nbytes), ops.pinned(sb.nbytes)

    def staged() -> None:
        sb.pack(a, dsend)
        ops.to_host(dsend, hs)  # ordered after the pack; returns once the bytes have landed
        comm.Sendrecv([hs, count, dbl], peer, 2, [hr, count, dbl], src, 2)
        ops.to_device(hr, drecv)
        sb.unpack(drecv, b)
        ops.synchronize()

    def device() -> None:
        sb.pack(a, dsend)
        ops.synchronize()  # the pack must land before MPI reads the device buffer
        comm.Sendrecv([dsend, count, dbl], peer, 2, [drecv, count, dbl], src, 2)
        sb.unpack(drecv, b)
        ops.synchronize()

    def floor() -> None:
        send, recv = (dsend, drecv) if aware else (hs, hr)
        comm.Sendrecv([send, count, dbl], peer, 3, [recv, count, dbl], src, 3)

    def pack_only() -> None:
        sb.pack(a, dsend)
        ops.synchronize()

    methods = [("staged", staged)] + ([("device", device)] if aware else [])
    times = {name: time_call(fn, repeat=repeat, comm=comm)["median"] * 1e6 for name, fn in methods}
    times["pack kernel"] = time_call(pack_only, repeat=repeat, comm=comm)["median"] * 1e6
    times["contiguous"] = time_call(floor, repeat=repeat, comm=comm)["median"] * 1e6
    expect = np.random.default_rng(src).random(shape)[region]
    correct = True
    for _, fn in methods:  # each method, from cleared buffers, delivers the left neighbour's face
        clear = np.zeros(shape)
        ops.to_device(clear.ravel().view(np.uint8), b.ravel().view(np.uint8))
        ops.to_device(np.zeros(sb.nbytes, np.uint8), drecv)
        hr[...] = 0
        fn()
        ops.to_host(b.ravel().view(np.uint8), clear.ravel().view(np.uint8))
        correct &= bool(np.array_equal(clear[region], expect))
    best = min((m for m, _ in methods), key=times.__getitem__)
    return {
        "nbytes": sb.nbytes,
        "run_bytes": sb.counts[0],
        **times,
        "best": best,
        "best x floor": times[best] / times["contiguous"],
        "pack GB/s": 2 * sb.nbytes / (times["pack kernel"] * 1e-6) / 1e9,
        "correct": correct,
    }


def _gpu_rows(comm: MPI.Comm, faces: list, repeat: int, array: str) -> list[dict[str, Any]]:
    from hpcml.cudaaware import cuda_aware_mpi

    if array == "numba":
        from numba import cuda as xp
    else:
        import cupy as xp
    aware = cuda_aware_mpi()
    return [{"face": label, **_gpu_face(comm, shape, region, repeat, aware, xp)} for label, shape, region in faces]


def run(args: argparse.Namespace) -> int:
    """Run and write ``datatypes.json``/``.md``; with ``--measure`` also the cost model."""
    comm = MPI.COMM_WORLD
    faces = [f for f in FACES if not args.quick or np.prod(f[1]) <= 70**3]
    if args.device == "gpu":
        rows = _gpu_rows(comm, faces, args.repeat, args.array)
        cols = [
            "face",
            "nbytes",
            "run_bytes",
            "staged",
            "device",
            "pack kernel",
            "contiguous",
            "best",
            "best x floor",
            "pack GB/s",
            "correct",
        ]
    else:
        rows = _cpu_rows(comm, faces, args.repeat)
        cols = [
            "face",
            "run_bytes",
            "nbytes",
            "datatype",
            "pack",
            "contiguous",
            "best",
            "best x floor",
            "local",
            "numpy copy",
            "local x numpy",
            "correct",
        ]
    peak = comm.allreduce(peak_rss_mib(), op=MPI.MAX)
    for r in rows:
        r["peak MiB/rank"] = peak
    cols.append("peak MiB/rank")
    if comm.Get_rank() == 0:
        notes = [
            f"{comm.Get_size()} rank(s) in a ring, Sendrecv of one face, median of {args.repeat}; "
            "times in microseconds; `best x floor` = best method / contiguous send of the same bytes."
        ]
        if args.device == "cpu":
            notes.append(
                "`local` = pack + unpack of the face without MPI (what `pack` adds to the floor); "
                "`numpy copy` = NumPy copying the face view out and back in (the peer for those copies)."
            )
        if args.measure:
            model = default_model_path() if args.model_out is None else Path(args.model_out)
            existing = HaloModel()
            if model.is_file():
                existing = HaloModel.from_json(model.read_text(encoding="utf-8"))
            keep = ("run_bytes", "nbytes", "datatype", "pack", "contiguous", "staged", "device")
            table = [{k: r[k] for k in keep if k in r} for r in rows]
            if args.device == "gpu":
                existing.gpu = table
            else:
                existing.cpu = table
            model.parent.mkdir(parents=True, exist_ok=True)
            tmp = model.with_suffix(".tmp")
            tmp.write_text(existing.to_json(), encoding="utf-8")
            tmp.replace(model)
            notes.append(f"cost model written to {model}; `method='auto'` uses it from now on")
        j, m = write_report("datatypes", rows, cols, args.out, notes=notes)
        print(m.read_text())
        print(f"wrote {j} and {m}")
    return 0
