"""The layout of an hpcml output file, shared by writer, reader, XDMF and analysis.

::

    NAME.h5
    ├── <field>              (nsteps, *global_shape)  attrs: kind="field", units, step, time,
    │                                                  nsteps, decomposition (JSON)
    ├── scalars/<name>       (nsteps, *value_shape)   attrs: kind="scalar", units
    ├── index/<series>/step  (nsteps,) int64   simulation step of each snapshot
    ├── index/<series>/time  (nsteps,) float64 simulation time (NaN when not given)
    └── hpcml/base/<field>   (only after appending to a consolidated file in VDS mode)

Root attributes: ``format``, ``writer`` (``mpio``, ``vds`` or ``consolidated``),
``hpcml_version``, ``mpi_library``, ``h5py_version``, ``hdf5_version``, ``ranks``,
``config`` (TOML text), ``start_time`` (first run), ``history`` (JSON list, one
entry per run that wrote to the file).  A field is a plain dataset (``mpio`` or
``consolidated``) or an HDF5 virtual dataset over ``NAME.d/.../rank-NNNNN.h5``;
readers cannot tell the difference.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hpcml.io._common import as_str, decode_json_attr

__all__ = [
    "FIELD",
    "INDEX",
    "INTERNAL",
    "RESERVED",
    "SCALAR",
    "SCALARS",
    "check_name",
    "index_paths",
    "inspect_file",
    "scalar_path",
]

FIELD = "field"
SCALAR = "scalar"
SCALARS = "scalars"
INDEX = "index"
INTERNAL = "hpcml"
RESERVED = (SCALARS, INDEX, INTERNAL)


def check_name(name: str) -> str:
    """Validate a series name (a plain HDF5 link name, not a reserved group)."""
    if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
        raise ValueError(f"series name must be a non-empty string without '/', got {name!r}")
    if name in RESERVED:
        raise ValueError(f"series name {name!r} is reserved (reserved: {', '.join(RESERVED)})")
    return name


def scalar_path(name: str) -> str:
    """Dataset path of scalar series ``name``."""
    return f"{SCALARS}/{name}"


def index_paths(series: str) -> tuple[str, str]:
    """Paths of the ``step`` and ``time`` index datasets of a series path."""
    return f"{INDEX}/{series}/step", f"{INDEX}/{series}/time"


def _vds_maps(dset: h5py.Dataset) -> list[dict[str, Any]]:
    """The mappings of a virtual dataset as plain boxes (start, count per axis)."""
    maps = []
    for m in dset.virtual_sources():
        v0, v1 = m.vspace.get_select_bounds()
        s0, s1 = m.src_space.get_select_bounds()
        maps.append(
            {
                "file": m.file_name,
                "dset": m.dset_name,
                "vstart": list(v0),
                "count": [b - a + 1 for a, b in zip(v0, v1)],
                "sstart": list(s0),
                "sshape": list(m.src_space.shape),
            }
        )
        assert [b - a + 1 for a, b in zip(s0, s1)] == maps[-1]["count"], "non-box VDS mapping"
    return maps


def missing_sources(path: str | os.PathLike[str], dset: h5py.Dataset) -> list[str]:
    """Source files of a virtual dataset that do not exist (relative to ``path``'s directory)."""
    base = Path(path).resolve().parent
    out = []
    for name in sorted({m.file_name for m in dset.virtual_sources()}):
        if name == ".":
            continue
        p = Path(name)
        if not (p if p.is_absolute() else base / p).exists():
            out.append(name)
    return out


def inspect_file(path: str | os.PathLike[str], *, maps: bool = False, index: bool = True) -> dict[str, Any]:
    """Describe an hpcml output file without reading field data.

    Returns a JSON-able dict: ``attrs`` (root attributes as text / parsed JSON) and
    ``series`` mapping each series path (``"u"``, ``"scalars/flux"``) to its
    ``kind``, ``shape`` (per snapshot), ``dtype``, ``n`` (snapshots: the shorter of
    data and index, so a crash between the two never exposes a half-written
    snapshot), ``units``, ``virtual``, ``steps``/``times`` (with ``index``), and
    the virtual-dataset mappings with ``maps``.  Datasets that are not series
    (written by other tools) are listed under ``other``.
    """
    out: dict[str, Any] = {"path": str(path), "attrs": {}, "series": {}, "other": {}}
    with h5py.File(path, "r") as f:
        for key, value in f.attrs.items():
            parsed = decode_json_attr(value) if key in ("history",) else None
            out["attrs"][key] = parsed if parsed is not None else _plain(value)
        candidates: list[tuple[str, h5py.Dataset]] = []
        for key, obj in f.items():
            if isinstance(obj, h5py.Dataset):
                candidates.append((key, obj))
        if isinstance(f.get(SCALARS), h5py.Group):
            candidates += [(scalar_path(k), o) for k, o in f[SCALARS].items() if isinstance(o, h5py.Dataset)]
        for key, dset in candidates:
            kind = as_str(dset.attrs.get("kind", ""))
            step_p, time_p = index_paths(key)
            if kind not in (FIELD, SCALAR) or step_p not in f:
                out["other"][key] = {"shape": list(dset.shape), "dtype": dset.dtype.str, "virtual": dset.is_virtual}
                continue
            steps = f[step_p]
            n = min(dset.shape[0], steps.shape[0], f[time_p].shape[0] if time_p in f else steps.shape[0])
            info: dict[str, Any] = {
                "kind": kind,
                "shape": list(dset.shape[1:]),
                "dtype": dset.dtype.str,
                "n": int(n),
                "stored": int(dset.shape[0]),
                "units": as_str(dset.attrs.get("units", "")),
                "virtual": bool(dset.is_virtual),
                "attrs": {k: _plain(v) for k, v in dset.attrs.items()},
            }
            if index:
                info["steps"] = [int(s) for s in steps[:n]]
                info["times"] = [float(t) for t in f[time_p][:n]] if time_p in f else [float("nan")] * n
            if maps and dset.is_virtual:
                info["maps"] = _vds_maps(dset)
                info["missing"] = missing_sources(path, dset)
            out["series"][key] = info
    return out


def _plain(value: Any) -> Any:
    """An attribute value as a JSON-able Python object."""
    if isinstance(value, (bytes, np.bytes_)):
        return value.decode(errors="replace")
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()] if value.dtype.kind in "SO" else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
