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
from hpcml.io.layout import inspect_file
from hpcml.io.mainfile import AXIS_OF, STEPS_OF
from hpcml.io.vds import mappings_of, missing_sources

__all__ = ["read", "read_scalar", "series"]


def _axis_values(f: h5py.File, dset: h5py.Dataset) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Steps and times of a series variable (from its series axis), ``None`` if it has none."""
    axis = as_str(dset.attrs.get(AXIS_OF, ""))
    if not axis or axis not in f:
        return None, None
    coord = f[axis]
    steps_name = as_str(coord.attrs.get(STEPS_OF, ""))
    if steps_name:  # a time axis: times here, steps in their own variable
        return f[steps_name][...], coord[...]
    return coord[...], None


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
            steps, times = _axis_values(f, dset)
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
                "time": float(times[i]) if times is not None else None,
            }
        else:
            raise OutputError(
                f"{path}:/{name} has shape {tuple(dset.shape)}, which is neither the decomposition's "
                f"global shape {tuple(shape)} nor a time series of it"
            )
        virtual = bool(dset.is_virtual)
        if virtual and (missing := missing_sources(path, mappings_of(dset))):
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
    """Index of a series (serial): ``{"steps", "times", "n", "shape", "dtype", "units", "axis", "dims"}``."""
    info = inspect_file(path)
    if name not in info["series"]:
        raise KeyError(f"{path}: no series {name!r} (variables: {', '.join(info['series']) or 'none'})")
    s = info["series"][name]
    return {k: s[k] for k in ("steps", "times", "n", "shape", "dtype", "units", "axis", "dims")}


def read_scalar(path: str | os.PathLike[str], name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(steps, times, values)`` of series ``name`` (serial; times are NaN on a step axis)."""
    with h5py.File(path, "r") as f:
        if name not in f or as_str(f[name].attrs.get("hpcml_kind", "")) != "scalar":
            have = [k for k, v in f.items() if as_str(v.attrs.get("hpcml_kind", "")) == "scalar"]
            raise KeyError(f"{path}: no scalar series {name!r} (scalar series: {', '.join(have) or 'none'})")
        dset = f[name]
        steps, times = _axis_values(f, dset)
        values = dset[...]
        steps = np.arange(values.shape[0]) if steps is None else steps
        times = np.full(values.shape[0], np.nan) if times is None else times
        return steps, times, values
