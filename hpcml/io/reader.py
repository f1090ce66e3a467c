"""Read hpcml output back, onto any decomposition.

:func:`read` is collective over the decomposition's communicator: rank 0 checks
the file and the request (and broadcasts the verdict, so a missing file or
snapshot raises the same error everywhere), then every rank reads only its own
hyperslab, straight into the interior of its ghosted block.  Plain and virtual
datasets read the same way.  By default each rank opens the file on its own
(read-only; measured fastest here for both paths); ``collective=True`` opens a
plain file once through MPI-IO and reads collectively (h5py with MPI), which
spares a parallel file system thousands of independent opens.
"""

from __future__ import annotations

import os
from typing import Any

import h5py
import numpy as np

from hpcml.decomp import CartDecomp
from hpcml.distarray import DistArray, check_dtype
from hpcml.io._common import as_str, h5py_has_mpi, open_h5, read_box, root_call
from hpcml.io.errors import OutputError
from hpcml.io.layout import index_paths, inspect_file, missing_sources, scalar_path

__all__ = ["read", "read_scalar", "series"]


def _locate(path: str, name: str, shape: tuple[int, ...], step: int | None, index: int | None) -> dict[str, Any]:
    """Rank 0: find the snapshot to read and check it fits ``shape``."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise OutputError(f"{path}: not a readable HDF5 file ({exc})") from None
    with f:
        if name not in f or not isinstance(f[name], h5py.Dataset):
            fields = [k for k, v in f.items() if isinstance(v, h5py.Dataset)]
            raise KeyError(f"{path}: no dataset {name!r} (datasets: {', '.join(fields) or 'none'})")
        dset = f[name]
        try:
            dtype = check_dtype(dset.dtype)
        except TypeError as exc:
            raise OutputError(f"{path}:/{name}: {exc}") from None
        nd = len(shape)
        if tuple(dset.shape) == tuple(shape) and step in (None, -1) and index is None:
            lead: tuple[int, ...] = ()
            info = {"step": None, "time": None}
        elif dset.ndim == nd + 1 and tuple(dset.shape[1:]) == tuple(shape):
            step_p, time_p = index_paths(name)
            steps = f[step_p][...] if step_p in f else None
            n = dset.shape[0] if steps is None else min(dset.shape[0], steps.shape[0])
            if index is not None:
                i = int(index)
            elif step is None or step < 0:
                i = n + (-1 if step is None else int(step))
            else:
                if steps is None:
                    raise OutputError(f"{path}:/{name} has no step index; pass index= instead of step=")
                hits = np.flatnonzero(steps[:n] == int(step))
                if hits.size == 0:
                    have = f"{int(steps[0])}..{int(steps[n - 1])}" if n else "none"
                    raise KeyError(f"{path}:/{name} has no snapshot at step {step} (steps stored: {have})")
                i = int(hits[-1])
            if not 0 <= i < n:
                raise IndexError(f"{path}:/{name}: snapshot index {i} out of range ({n} stored)")
            lead = (i,)
            info = {
                "step": int(steps[i]) if steps is not None else None,
                "time": float(f[time_p][i]) if time_p in f else None,
            }
        else:
            raise OutputError(
                f"{path}:/{name} has shape {tuple(dset.shape)}, which is neither the decomposition's "
                f"global shape {tuple(shape)} nor a time series of it"
            )
        virtual = bool(dset.is_virtual)
        if virtual and (missing := missing_sources(path, dset)):
            raise OutputError(
                f"{path}:/{name} is a virtual dataset whose source files are missing: {', '.join(missing[:5])}"
            )
    return {"lead": lead, "dtype": dtype.str, "virtual": virtual, **info}


def read(
    path: str | os.PathLike[str],
    name: str,
    decomp: CartDecomp,
    step: int | None = -1,
    *,
    index: int | None = None,
    exchange: bool = True,
    collective: bool = False,
    xp: Any = np,
) -> DistArray:
    """Read one snapshot of field ``name`` into a new :class:`DistArray` (collective).

    Parameters
    ----------
    path
        An hpcml output file (or any HDF5 file with a dataset of the global shape).
    name
        Dataset name.
    decomp
        Target decomposition; any rank count or process grid.
    step
        Simulation step to read; negative counts snapshots from the end
        (``-1``: the last).
    index
        Snapshot position instead of ``step``.
    exchange
        Fill the ghost layers from the neighbours after reading.
    collective
        Read through MPI-IO, collectively (needs h5py with MPI; ignored for
        virtual datasets).
    xp
        Array module of the result (``numpy`` or ``cupy``).

    Raises
    ------
    FileNotFoundError, KeyError, IndexError, OutputError
        On every rank, naming the file, before any rank reads.
    """
    comm = decomp.cart
    path = os.fspath(path)
    where = root_call(comm, lambda: _locate(path, name, decomp.shape, step, index))
    out = DistArray.zeros(decomp, where["dtype"], np)
    collective = collective and h5py_has_mpi() and not where["virtual"]
    with open_h5(path, "r", comm if collective else None) as f:
        read_box(f[name], decomp.start, out.data, decomp.interior, lead=where["lead"], collective=collective)
    if exchange:
        out.exchange_halos()
    return out._to(xp)


def series(path: str | os.PathLike[str], name: str) -> dict[str, Any]:
    """Index of a series (serial): ``{"steps", "times", "n", "shape", "dtype", "units"}``.

    ``name`` is a field name or ``scalars/<name>``.
    """
    info = inspect_file(path)
    key = name if name in info["series"] else scalar_path(name)
    if key not in info["series"]:
        raise KeyError(f"{path}: no series {name!r} (series: {', '.join(info['series']) or 'none'})")
    s = info["series"][key]
    return {k: s[k] for k in ("steps", "times", "n", "shape", "dtype", "units")}


def read_scalar(path: str | os.PathLike[str], name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(steps, times, values)`` of scalar series ``name`` (serial)."""
    key = scalar_path(name)
    with h5py.File(path, "r") as f:
        if key not in f:
            have = ", ".join(f["scalars"].keys()) if "scalars" in f else "none"
            raise KeyError(f"{path}: no scalar series {name!r} (scalars: {have})")
        step_p, time_p = index_paths(key)
        n = min(f[key].shape[0], f[step_p].shape[0])
        return f[step_p][:n], f[time_p][:n], f[key][:n]


def field_units(path: str | os.PathLike[str], name: str) -> str:
    """The ``units`` attribute of a dataset ("" when absent)."""
    with h5py.File(path, "r") as f:
        return as_str(f[name].attrs.get("units", ""))
