"""Helpers shared by the writer, reader and checkpoint modules (not public).

* which HDF5 path this h5py can take (``mpio`` needs an MPI-enabled build);
* run-provenance attributes (version, MPI library, decomposition, start time);
* root-checks: rank 0 validates a file and broadcasts the verdict, so a bad file
  raises the same error on every rank before any rank enters a collective;
* hyperslab block I/O straight between a ghosted local block and a dataset;
* the positional checksum used by checkpoints (any-partition computable).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import h5py
import numpy as np

if TYPE_CHECKING:  # mpi4py.MPI is imported where it is used: reading files needs no MPI
    from mpi4py import MPI

T = TypeVar("T")

#: Value of the root attribute ``format`` of an output's main file.
FORMAT = "hpcml-io-2"
#: ... and of its data files (``NAME.d/...``).
FORMAT_DATA = "hpcml-io-2-data"


def h5py_has_mpi() -> bool:
    """Whether this h5py was built against parallel HDF5 (``driver="mpio"`` works)."""
    return bool(h5py.get_config().mpi)


def mpi_library() -> str:
    """First line of ``MPI.Get_library_version()`` (e.g. ``MPICH Version: 4.0.2``)."""
    from mpi4py import MPI

    return " ".join(MPI.Get_library_version().splitlines()[0].split())


def decomposition_record(decomp: Any) -> dict[str, Any]:
    """JSON-able description of a :class:`~hpcml.decomp.CartDecomp`."""
    return {
        "shape": list(decomp.shape),
        "dims": list(decomp.dims),
        "ranks": int(decomp.size),
        "periodic": [bool(p) for p in decomp.periodic],
        "halo": list(decomp.halo),
    }


def provenance(comm: MPI.Comm, config: Any = None) -> dict[str, Any]:
    """Attributes every output and checkpoint file carries at its root."""
    from hpcml._version import __version__

    if config is None:
        text = ""
    elif isinstance(config, str):
        text = config
    else:
        from hpcml.config import dumps

        text = dumps(config)
    return {
        "format": FORMAT,
        "hpcml_version": __version__,
        "mpi_library": mpi_library(),
        "h5py_version": h5py.version.version,
        "hdf5_version": h5py.version.hdf5_version,
        "ranks": int(comm.Get_size()),
        "config": text,
        "start_time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def root_call(comm: MPI.Comm, fn: Callable[[], T], root: int = 0) -> T:
    """Run ``fn`` on ``root`` only and return its result on every rank.

    An exception on the root is re-raised on every rank (same type when it is a
    builtin ``OSError``/``ValueError``/``KeyError``/``TypeError`` or an hpcml.io
    error, else ``RuntimeError``) with the root's message, so all ranks leave
    together instead of the others waiting in the next collective.
    """
    result: Any = None
    err: tuple[str, str] | None = None
    if comm.Get_rank() == root:
        try:
            result = fn()
        except Exception as exc:  # re-raised below on every rank
            err = (type(exc).__name__, str(exc))
    err, result = comm.bcast((err, result), root=root)
    if err is not None:
        raise _rebuild_error(*err)
    return result


def _rebuild_error(name: str, msg: str) -> Exception:
    import builtins

    from hpcml.io import errors

    cls = getattr(errors, name, None) or getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(msg)
        except TypeError:  # exotic constructor: fall back below
            pass
    return RuntimeError(f"{name}: {msg}")


def agree(comm: MPI.Comm, ok: bool) -> bool:
    """``True`` on every rank iff ``ok`` is true on every rank."""
    from mpi4py import MPI

    return bool(comm.allreduce(1 if ok else 0, op=MPI.MIN))


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush a closed file's data to stable storage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename inside ``path`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def open_h5(path: str | os.PathLike[str], mode: str, comm: MPI.Comm | None) -> h5py.File:
    """Open ``path``; with ``comm`` (and parallel h5py) collectively through MPI-IO."""
    if comm is not None:
        return h5py.File(path, mode, driver="mpio", comm=comm)
    return h5py.File(path, mode)


def chunk_shape(shape: Sequence[int], itemsize: int, limit: int = 64 * 2**20) -> tuple[int, ...]:
    """Chunk of one snapshot of ``shape``: the whole snapshot up to ``limit`` bytes.

    A snapshot-sized chunk keeps a collective write one contiguous file region per
    rank and lets a reader pull any hyperslab without touching other snapshots
    (uncompressed chunks larger than the chunk cache are read in place).  Large
    snapshots are split along their slowest axes; HDF5 refuses chunks over 4 GiB.
    """
    chunk = [int(max(1, s)) for s in shape]
    d = 0
    while int(np.prod(chunk)) * itemsize > limit and d < len(chunk):
        if chunk[d] > 1:
            chunk[d] = (chunk[d] + 1) // 2
        else:
            d += 1
    return (1, *chunk)


# -- hyperslab block I/O -------------------------------------------------------------------


def _xfer(collective: bool) -> Any:
    if not collective:
        return None
    dxpl = h5py.h5p.create(h5py.h5p.DATASET_XFER)
    dxpl.set_dxpl_mpio(h5py.h5fd.MPIO_COLLECTIVE)
    return dxpl


def host_block(data: Any, box: Sequence[slice]) -> tuple[np.ndarray, tuple[int, ...]]:
    """A C-contiguous NumPy array holding ``data[box]`` and the box's start in it.

    A C-contiguous NumPy block is returned as is with the box start, so HDF5 reads
    the interior straight out of the ghosted buffer (no copy).  Anything else
    (Fortran order, CuPy) is copied once.
    """
    if isinstance(data, np.ndarray) and data.flags.c_contiguous:
        return data, tuple(s.start for s in box)
    sub = data[tuple(box)]
    sub = sub.get() if hasattr(sub, "get") and not isinstance(sub, np.ndarray) else sub
    return np.ascontiguousarray(sub), (0,) * len(box)


def write_box(
    dset: h5py.Dataset,
    file_start: Sequence[int],
    data: Any,
    box: Sequence[slice],
    *,
    lead: Sequence[int] = (),
    collective: bool = False,
) -> None:
    """Write ``data[box]`` into ``dset`` at ``(*lead, *file_start)``.

    ``lead`` indexes leading axes of the dataset (e.g. the snapshot index of a
    time series) with extent one.  With ``collective`` every rank of the file's
    communicator must call (MPI-IO collective transfer).
    """
    mem, mstart = host_block(data, box)
    count = tuple(s.stop - s.start for s in box)
    mspace = h5py.h5s.create_simple(mem.shape)
    mspace.select_hyperslab(mstart, count)
    fspace = dset.id.get_space()
    fspace.select_hyperslab((*lead, *file_start), ((1,) * len(lead)) + count)
    dset.id.write(mspace, fspace, mem, dxpl=_xfer(collective))


def read_box(
    dset: h5py.Dataset,
    file_start: Sequence[int],
    out: np.ndarray,
    box: Sequence[slice],
    *,
    lead: Sequence[int] = (),
    collective: bool = False,
) -> None:
    """Read ``dset[(*lead, file box)]`` into ``out[box]`` (``out`` C-contiguous NumPy)."""
    count = tuple(s.stop - s.start for s in box)
    mspace = h5py.h5s.create_simple(out.shape)
    mspace.select_hyperslab(tuple(s.start for s in box), count)
    fspace = dset.id.get_space()
    fspace.select_hyperslab((*lead, *file_start), ((1,) * len(lead)) + count)
    if int(np.prod(count)) == 0:
        mspace.select_none()
        fspace.select_none()
    dset.id.read(mspace, fspace, out, dxpl=_xfer(collective))


# -- checksum ----------------------------------------------------------------------------
#
# A checkpoint must verify on any rank count, so its checksum cannot depend on how
# the array was cut.  hpcml uses Adler-32's two sums with global byte positions:
#     A = sum(b_k)            mod P,     B = sum((k + 1) * b_k)   mod P,
# over the bytes b_k of the array in C order (k = global byte offset), P = 2**31 - 1.
# Every rank adds the terms of the bytes it holds, wherever they sit, and one
# allreduce gives the checksum of the whole array.  Any changed byte changes A
# (|delta| < 256 < P); two changes that cancel in A differ in B unless they are a
# multiple of P bytes apart; swapped bytes change B.

CHECKSUM_ALGO = "adler-positional-p31"
_P = 2**31 - 1
_BATCH_BYTES = 4 * 2**20  # bytes per vectorised batch (bounds temporaries to ~40 MiB)
_SEG_BYTES = 2**20  # row segment: keeps float64 partial sums exact (< 2**53)


def checksum_partial(block: np.ndarray, start: Sequence[int], full_shape: Sequence[int]) -> tuple[int, int]:
    """``(A, B)`` terms of the bytes of ``block`` placed at ``start`` in a C-order array.

    ``block`` may be any strided NumPy view; its byte layout in the global array
    follows from ``start`` and ``full_shape``.  Sum the pairs of all blocks that
    tile the array (mod ``2**31 - 1``) to get its checksum.
    """
    block = np.asarray(block)
    if block.size == 0:
        return 0, 0
    if block.ndim == 0:
        block = block.reshape(1)
        start, full_shape = (0,), (1,)
    item = block.dtype.itemsize
    nd = block.ndim
    el_strides = [int(np.prod(full_shape[d + 1 :], dtype=np.int64)) for d in range(nd)]
    row_len = block.shape[-1]
    seg_el = max(1, min(row_len, _SEG_BYTES // item))
    lead_shape = block.shape[:-1]
    # Global element offset of each row's first element (rows = last-axis runs).
    base = int(start[-1])
    row_off = np.zeros(lead_shape, dtype=np.int64) + base
    for d in range(nd - 1):
        shp = [1] * (nd - 1)
        shp[d] = lead_shape[d]
        row_off = row_off + ((np.arange(lead_shape[d], dtype=np.int64) + int(start[d])) * el_strides[d]).reshape(shp)
    rows = block.reshape(-1, row_len) if block.flags.c_contiguous else None
    row_off = row_off.reshape(-1)
    nrows = row_off.size
    per_batch = max(1, _BATCH_BYTES // max(1, row_len * item))
    a_tot = 0
    b_tot = 0
    for r0 in range(0, nrows, per_batch):
        r1 = min(nrows, r0 + per_batch)
        if rows is not None:
            chunk = rows[r0:r1]
        else:
            idx = np.unravel_index(np.arange(r0, r1), lead_shape) if lead_shape else ()
            chunk = block[idx] if lead_shape else block.reshape(1, row_len)
        u8 = np.ascontiguousarray(chunk).view(np.uint8).reshape(r1 - r0, row_len * item)
        offs = row_off[r0:r1] * item
        for e0 in range(0, row_len, seg_el):
            e1 = min(row_len, e0 + seg_el)
            seg = u8[:, e0 * item : e1 * item]
            s = seg.sum(axis=1, dtype=np.int64)
            t = (seg.astype(np.float64) @ np.arange(seg.shape[1], dtype=np.float64)).astype(np.int64)
            first = (offs + e0 * item + 1) % _P  # position weight of each segment's first byte
            a_tot += int(s.sum())
            b_tot += int(((first * (s % _P)) % _P).sum()) + int(t.sum())
    return a_tot % _P, b_tot % _P


def checksum_combine(parts: Sequence[tuple[int, int]]) -> str:
    """Checksum string from the ``(A, B)`` terms of blocks tiling one array."""
    a = sum(p[0] for p in parts) % _P
    b = sum(p[1] for p in parts) % _P
    return f"{a:08x}{b:08x}"


def checksum(array: np.ndarray) -> str:
    """Checksum of a whole (local) array, same value as the distributed computation."""
    arr = np.asarray(array)
    return checksum_combine([checksum_partial(arr, (0,) * arr.ndim, arr.shape)])


def allreduce_checksum(comm: MPI.Comm, part: tuple[int, int]) -> str:
    """Combine every rank's ``(A, B)`` terms into the array's checksum (collective)."""
    return checksum_combine(comm.allgather(part))


def as_str(value: Any) -> str:
    """An HDF5 string attribute as ``str``."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray) and value.shape == ():
        return as_str(value[()])
    return str(value)


def stem(path: str | os.PathLike[str]) -> Path:
    """``NAME`` of ``NAME.h5`` (directory included): the base of sidecar names."""
    p = Path(path)
    return p.with_suffix("") if p.suffix in (".h5", ".hdf5", ".he5") else p
