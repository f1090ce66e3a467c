"""One plain file from an output: every field copied out of its data files into ``NAME.h5``.

A finished run's ``NAME.h5`` + ``NAME.d/`` become one self-contained ``NAME.h5``
(same variables, dimensions, coordinates and attributes; ``writer =
"consolidated"``) that can be mailed, archived or opened without the data
folder.  The new file is written under a temporary name, fsync-ed and renamed
(a crash leaves the original intact); ``NAME.d`` is removed afterwards.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hpcml.io._common import chunk_shape, root_call
from hpcml.io.errors import OutputError
from hpcml.io.mainfile import Var, load_main, write_main
from hpcml.io.progress import Progress
from hpcml.io.segments import parts_dir, remove_segments
from hpcml.io.vds import missing_sources

__all__ = ["consolidate"]


def consolidate(
    path: str | os.PathLike[str],
    *,
    remove_parts: bool = True,
    comm: Any = None,
    progress: bool | None = None,
) -> Path:
    """Copy an output whose fields are virtual datasets into one plain file (see the module docstring).

    Serial, or collective over ``comm`` with rank 0 doing the work.
    """
    if comm is not None:
        return root_call(comm, lambda: consolidate(path, remove_parts=remove_parts, comm=None, progress=progress))
    path = Path(path)
    model = load_main(path)
    for var in model.vars.values():
        if missing := missing_sources(path, var.maps):
            raise OutputError(f"cannot consolidate {path}: {var.name!r} maps missing files {', '.join(missing[:5])}")
    fields = [v for v in model.vars.values() if v.kind == "field"]
    total = sum(int(np.prod(v.full_shape)) * np.dtype(v.dtype).itemsize for v in fields)
    model.attrs["writer"] = "consolidated"
    with h5py.File(path, "r") as src, Progress(total, f"consolidate {path.name}", enabled=progress) as bar:

        def materialize(var: Var, dst: h5py.File) -> h5py.Dataset:
            return _copy_plain(src[var.name], dst, var, bar)

        write_main(path, model, materialize=materialize)
    if remove_parts:
        remove_segments(parts_dir(path))
    return path


def _copy_plain(obj: h5py.Dataset, dst: h5py.File, var: Var, bar: Progress) -> h5py.Dataset:
    """Copy a (virtual) dataset slab by slab (~64 MiB each) into a plain chunked one."""
    shape = obj.shape
    series = var.axis is not None
    chunks = chunk_shape(shape[1:], obj.dtype.itemsize) if series and len(shape) > 1 else None
    fill = np.array(np.nan if obj.dtype.kind in "fc" else 0, dtype=obj.dtype)
    d = dst.create_dataset(
        var.name, shape=shape, maxshape=(None, *shape[1:]) if series else None, chunks=chunks, dtype=obj.dtype,
        fillvalue=fill,
    )  # fmt: skip
    if obj.size == 0:
        return d
    lead = shape[0] if series else 1
    inner = shape[1:] if series else shape
    row_bytes = int(np.prod(inner[1:], dtype=np.int64)) * obj.dtype.itemsize if len(inner) > 1 else obj.dtype.itemsize
    rows = max(1, (64 * 2**20) // max(1, row_bytes))
    for i in range(lead):
        if not inner:
            d[i] = obj[i]
            continue
        for a in range(0, inner[0], rows):
            sel = (i, slice(a, a + rows)) if series else (slice(a, a + rows),)
            block = obj[sel]
            d[sel] = block
            bar.update(block.nbytes)
    return d
