"""HDF5 virtual datasets as lists of box mappings (the field datasets of a main file).

A mapping is a plain dict, JSON-able and cheap to keep on rank 0::

    {"file": "run.d/rank-00003.h5", "dset": "/u",
     "vstart": [t0, y0, x0], "count": [n, ny, nx],      # box in the virtual dataset
     "sstart": [0, 0, 0], "sshape": [n, ny, nx]}        # box start and full shape of the source

``file`` is relative to the main file's directory (HDF5 resolves relative
source names there), so ``NAME.h5`` and ``NAME.d/`` move together.  A field's
dataset is rebuilt from its mappings whenever the main file is written
(:func:`build_layout`); regions no mapping covers read as the fill value (NaN
for floating types), so a missing block or a series a field skipped is visible.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

__all__ = ["box", "build_layout", "clip", "mapping", "mappings_of", "missing_sources"]


def box(start: Sequence[int], count: Sequence[int]) -> tuple[slice, ...]:
    """Slices of the box ``start .. start + count``."""
    return tuple(slice(int(a), int(a) + int(c)) for a, c in zip(start, count))


def mapping(
    file: str, dset: str, vstart: Sequence[int], count: Sequence[int], sshape: Sequence[int], sstart: Sequence[int] = ()
) -> dict[str, Any]:
    """A mapping of ``count`` cells of source ``file:dset`` (from ``sstart``) to ``vstart``."""
    return {
        "file": file,
        "dset": dset,
        "vstart": [int(v) for v in vstart],
        "count": [int(c) for c in count],
        "sstart": [int(s) for s in (sstart or [0] * len(count))],
        "sshape": [int(s) for s in sshape],
    }


def build_layout(shape: Sequence[int], dtype: np.dtype, maps: Sequence[dict[str, Any]]) -> h5py.VirtualLayout:
    """The ``VirtualLayout`` of a dataset of ``shape`` from ``maps`` (boxes past ``shape`` clipped)."""
    layout = h5py.VirtualLayout(shape=tuple(int(s) for s in shape), dtype=dtype)
    for m in clip(maps, shape):
        src = h5py.VirtualSource(m["file"], m["dset"], shape=tuple(m["sshape"]))
        layout[box(m["vstart"], m["count"])] = src[box(m["sstart"], m["count"])]
    return layout


def clip(maps: Sequence[dict[str, Any]], shape: Sequence[int]) -> list[dict[str, Any]]:
    """Mappings restricted to a dataset of ``shape`` (those entirely outside dropped)."""
    out = []
    for m in maps:
        count = [min(c, int(n) - v) for c, v, n in zip(m["count"], m["vstart"], shape)]
        if any(c <= 0 for c in count):
            continue
        out.append({**m, "count": count})
    return out


def mappings_of(dset: h5py.Dataset) -> list[dict[str, Any]]:
    """The mappings of a virtual dataset (every selection a box, as hpcml writes them)."""
    maps = []
    for m in dset.virtual_sources():
        v0, v1 = m.vspace.get_select_bounds()
        s0, s1 = m.src_space.get_select_bounds()
        count = [b - a + 1 for a, b in zip(v0, v1)]
        if [b - a + 1 for a, b in zip(s0, s1)] != count:
            raise ValueError(f"{dset.name}: a virtual mapping that is not a box cannot be appended to")
        maps.append(mapping(m.file_name, m.dset_name, v0, count, m.src_space.shape, s0))
    return maps


def missing_sources(path: str | os.PathLike[str], maps: Sequence[dict[str, Any]]) -> list[str]:
    """Source files of ``maps`` that do not exist (names relative to ``path``'s directory)."""
    base = Path(path).resolve().parent
    out = []
    for name in sorted({m["file"] for m in maps}):
        if name == ".":
            continue
        p = Path(name)
        if not (p if p.is_absolute() else base / p).exists():
            out.append(name)
    return out
