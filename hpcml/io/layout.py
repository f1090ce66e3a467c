"""The layout of an hpcml output, as readers see it, and :func:`inspect_file`.

::

    NAME.h5                      (format "hpcml-io-2", Conventions "CF-1.8")
    ├── time        (time)       float64, units, axis "T"     series axis + dimension scale
    ├── step        (time)       int64                        the step of each entry
    ├── iteration   (iteration)  int64                        a step-valued series axis
    ├── y, x        (y), (x)     float64, units, axis "Y"/"X" dimension coordinates
    ├── theta       (lat)        float64                      auxiliary coordinate
    ├── u           (time, y, x) virtual dataset over NAME.d/...  (plain once consolidated)
    ├── norm        (time)       rank 0's values
    └── residual    (iteration)
    NAME.d/[sKKKK/]rank-RRRRR.h5 or data.h5    the field blocks of each session
    NAME.xmf                     ParaView / VisIt sidecar

Every dimension is an HDF5 dimension scale named like it, so
``xarray.open_dataset("NAME.h5", engine="h5netcdf")`` shows named dimensions
and coordinates without options, and netCDF-4 tools see a netCDF-4 file.
Variables carry ``units``, ``long_name`` and a CF ``coordinates`` list; hpcml's
own attributes start with ``hpcml_`` (``hpcml_kind``: ``field``/``scalar``,
``hpcml_series_axis``).  Root attributes: ``Conventions``, ``title``,
``source``, ``history`` (one text line per run that wrote the file),
``hpcml_provenance`` (JSON: versions, MPI library, ranks, driver, restart step
of every run), ``config`` (the run's TOML), ``writer``, ``format``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from hpcml.io.mainfile import MainModel, load_main
from hpcml.io.vds import missing_sources

__all__ = ["FIELD", "SCALAR", "check_name", "describe", "inspect_file"]

FIELD = "field"
SCALAR = "scalar"


def check_name(name: str) -> str:
    """Validate a variable name (a plain HDF5 link name at the file's root)."""
    if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
        raise ValueError(f"a series name must be a non-empty string without '/', got {name!r}")
    return name


def _plain(value: Any) -> Any:
    """An attribute value as a JSON-able Python object."""
    if isinstance(value, (bytes, np.bytes_)):
        return value.decode(errors="replace")
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()] if value.dtype.kind in "SO" else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _plain_dict(attrs: dict[str, Any]) -> dict[str, Any]:
    return {k: _plain(v) for k, v in attrs.items()}


def describe(path: str | os.PathLike[str], model: MainModel, *, maps: bool = False) -> dict[str, Any]:
    """The JSON-able description of a main file's ``model`` (see :func:`inspect_file`)."""
    out: dict[str, Any] = {
        "path": str(path),
        "attrs": _plain_dict(model.attrs),
        "axes": {
            name: {"kind": ax.kind, "units": ax.units, "n": ax.n, "steps": list(ax.steps), "times": list(ax.times)}
            for name, ax in model.axes.items()
        },
        "coords": {
            name: {
                "dims": list(c.dims),
                "attrs": {k: _plain(v) for k, v in c.attrs.items()},
                "values": c.values.tolist(),
            }
            for name, c in model.coords.items()
        },
        "series": {},
    }
    for name, var in model.vars.items():
        ax = model.axes.get(var.axis) if var.axis else None
        info: dict[str, Any] = {
            "kind": var.kind,
            "axis": var.axis,
            "dims": list(var.dims),
            "shape": list(var.shape),
            "dtype": var.dtype,
            "n": var.n if ax is not None else 1,
            "units": str(var.attrs.get("units", "")),
            "long_name": str(var.attrs.get("long_name", name)),
            "virtual": var.kind == FIELD and "hpcml_plain" not in var.attrs,
            "attrs": _plain_dict(var.attrs),
            "steps": list(ax.steps[: var.n]) if ax is not None else [],
            "times": list(ax.times[: var.n]) if ax is not None else [],
        }
        if maps and var.kind == FIELD:
            info["maps"] = var.maps
            info["missing"] = missing_sources(path, var.maps)
        out["series"][name] = info
    return out


def inspect_file(path: str | os.PathLike[str], *, maps: bool = False) -> dict[str, Any]:
    """Describe an hpcml output without reading field data.

    Returns a JSON-able dict: ``attrs`` (root attributes), ``axes`` (kind,
    units, steps, times), ``coords`` (dims, attributes, values) and ``series``
    mapping each variable to its ``kind`` (``field``/``scalar``), ``axis``
    (``None``: static), ``dims``, ``shape`` (without the axis), ``dtype``,
    ``n`` (entries), ``units``, ``long_name``, ``virtual``, ``attrs``,
    ``steps``/``times``, and with ``maps`` the virtual-dataset mappings and
    missing source files.
    """
    return describe(path, load_main(path, values=False), maps=maps)
