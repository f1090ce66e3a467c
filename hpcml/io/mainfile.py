"""The main file ``NAME.h5``: an in-memory model and its atomic, netCDF-4 compatible writer.

Every hpcml output is one small *main file* that readers open, plus data files
(``NAME.d/...``) that hold the field blocks.  The main file holds everything a
reader needs except field data:

* one dimension scale per dimension (HDF5 ``DIMENSION_SCALE`` named like the
  dimension, so netCDF-4 readers, h5netcdf and xarray see named dimensions):
  the series axes (``time``, ``iteration``) and the space dimensions (``y``,
  ``x``, ``lat``, ``lon``, ``realization``), each a coordinate variable with
  ``units`` and ``long_name``;
* auxiliary coordinates (``step`` along ``time``; ``theta``/``phi``) listed in
  each variable's CF ``coordinates`` attribute;
* scalar series as plain datasets (rank 0's values);
* fields as HDF5 virtual datasets over the data files (or, after
  :func:`~hpcml.io.consolidate.consolidate`, plain datasets);
* root attributes: ``Conventions``, ``title``, ``history`` (text, one line per
  run), ``hpcml_provenance`` (JSON), ``config`` (TOML), versions.

The main file is never modified in place: :func:`write_main` writes a complete
new file under a temporary name, flushes it and renames it over the old one
(``os.replace`` is atomic), so a crash at any moment leaves the previous
complete file readable.  Rank 0 keeps the model (:class:`MainModel`) in memory;
:func:`load_main` reads an existing file back into it for appending.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

__all__ = ["Axis", "Coord", "MainModel", "Var", "load_main", "write_main"]

#: Value of the root attribute ``format`` (files of ``hpcml-io-1`` are refused for appending).
FORMAT = "hpcml-io-2"
CONVENTIONS = "CF-1.8"

# hpcml's own attributes (every one is also meaningful to a human reading `h5dump -A`).
KIND = "hpcml_kind"  # "field" | "scalar" on variables; "axis" | "dim" | "coord" on coordinates
AXIS_KIND = "hpcml_axis"  # "time" | "step" on series axes
AXIS_OF = "hpcml_series_axis"  # name of a variable's series axis ("" = static)
STEPS_OF = "hpcml_steps"  # on a time axis: the name of its step variable


@dataclass
class Axis:
    """A series axis: snapshots appended along it, shared by every series written on it.

    ``kind="time"``: the coordinate holds times (``units``), a companion integer
    variable ``step`` holds the step numbers.  ``kind="step"``: the coordinate
    holds the step (iteration) numbers themselves.
    """

    name: str
    kind: str
    units: str = ""
    steps: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    long_name: str = ""

    @property
    def n(self) -> int:
        """Number of entries."""
        return len(self.steps)

    @property
    def step_var(self) -> str:
        """Name of the variable holding the steps of a time axis."""
        return "step"


@dataclass
class Coord:
    """A coordinate variable: a dimension's own (``dims == (name,)``) or an auxiliary one."""

    name: str
    dims: tuple[str, ...]
    values: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def is_dim(self) -> bool:
        """Whether this is the coordinate variable of dimension ``name``."""
        return self.dims == (self.name,)


@dataclass
class Var:
    """A data variable: a field (virtual or plain dataset) or a scalar series (values in memory).

    ``axis`` is the series axis (``None``: a static variable, no leading axis);
    ``dims`` are the dimensions after it.  ``maps`` are the virtual-dataset
    mappings of a field (file, dataset, boxes; see :mod:`hpcml.io.vds`).
    ``plain`` names a plain source (``file``, ``dset``) holding all of a
    field's data (a consolidated file being read, never written back).
    """

    name: str
    kind: str
    axis: str | None
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: str
    attrs: dict[str, Any] = field(default_factory=dict)
    values: np.ndarray | None = None
    maps: list[dict[str, Any]] = field(default_factory=list)
    n: int = 0

    @property
    def full_shape(self) -> tuple[int, ...]:
        """Shape of the dataset: ``(n, *shape)`` on an axis, ``shape`` if static."""
        return self.shape if self.axis is None else (self.n, *self.shape)


@dataclass
class MainModel:
    """Everything in the main file (rank 0's copy)."""

    attrs: dict[str, Any] = field(default_factory=dict)
    axes: dict[str, Axis] = field(default_factory=dict)
    coords: dict[str, Coord] = field(default_factory=dict)
    vars: dict[str, Var] = field(default_factory=dict)

    def dim_size(self, name: str) -> int | None:
        """Length of dimension ``name`` (``None`` if not defined)."""
        if name in self.axes:
            return self.axes[name].n
        c = self.coords.get(name)
        return None if c is None or not c.is_dim else int(c.values.shape[0])

    def names(self) -> set[str]:
        """Every name used at the file's root."""
        out = set(self.axes) | set(self.coords) | set(self.vars)
        out |= {a.step_var for a in self.axes.values() if a.kind == "time"}
        return out


def _fill(dtype: np.dtype) -> Any:
    """NaN for floating types (a hole is visible), 0 otherwise."""
    return np.array(np.nan if dtype.kind in "fc" else 0, dtype=dtype)


def _attrs(obj: Any, attrs: dict[str, Any]) -> None:
    for k, v in attrs.items():
        if v is None:
            continue
        obj.attrs[k] = v


def _coordinates_attr(model: MainModel, var: Var) -> str:
    """The CF ``coordinates`` list of ``var``: aux coordinates on its dims, ``step`` on a time axis."""
    names = []
    if var.axis is not None and model.axes[var.axis].kind == "time":
        names.append(model.axes[var.axis].step_var)
    for c in model.coords.values():
        if not c.is_dim and set(c.dims) <= set(var.dims):
            names.append(c.name)
    return " ".join(names)


def _write_field_virtual(f: h5py.File, var: Var) -> h5py.Dataset:
    from hpcml.io.vds import build_layout

    layout = build_layout(var.full_shape, np.dtype(var.dtype), var.maps)
    return f.create_virtual_dataset(var.name, layout, fillvalue=_fill(np.dtype(var.dtype)))


def write_main(
    path: str | os.PathLike[str], model: MainModel, *, materialize: Any = None, durable: bool = True
) -> Path:
    """Write ``model`` as the main file ``path``: a temporary file, then renamed over ``path``.

    The rename is atomic, so a killed writer leaves the previous complete file.
    ``durable`` also fsyncs the file and the folder (survives a power cut; the
    final write of a session does it).  ``materialize`` (a callable ``(var, f)``)
    fills plain field datasets instead of creating virtual ones (consolidation).
    """
    from hpcml.io._common import fsync_dir, fsync_file

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            _write_contents(f, model, materialize)
        if durable:
            fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent if str(path.parent) else ".")
    return path


def _write_contents(f: h5py.File, model: MainModel, materialize: Any) -> None:
    _attrs(f, model.attrs)
    scales: dict[str, h5py.Dataset] = {}
    # Series axes: coordinate variable + dimension scale; a time axis also gets `step`.
    for ax in model.axes.values():
        if ax.kind == "time":
            d = f.create_dataset(ax.name, data=np.asarray(ax.times, dtype="f8"), maxshape=(None,))
            _attrs(d, {"units": ax.units or "1", "long_name": ax.long_name or "time", "axis": "T"})
        else:
            d = f.create_dataset(ax.name, data=np.asarray(ax.steps, dtype="i8"), maxshape=(None,))
            _attrs(d, {"long_name": ax.long_name or ax.name})
        d.attrs[KIND] = "axis"
        d.attrs[AXIS_KIND] = ax.kind
        d.make_scale(ax.name)
        scales[ax.name] = d
        if ax.kind == "time":
            s = f.create_dataset(ax.step_var, data=np.asarray(ax.steps, dtype="i8"), maxshape=(None,))
            _attrs(s, {"long_name": "simulation step", KIND: "coord"})
            d.attrs[STEPS_OF] = ax.step_var
            s.dims[0].attach_scale(d)
    # Dimension coordinates first (scales), then auxiliary ones attached to them.
    for c in model.coords.values():
        if c.is_dim:
            d = f.create_dataset(c.name, data=c.values)
            _attrs(d, c.attrs)
            d.attrs[KIND] = "dim"
            d.make_scale(c.name)
            scales[c.name] = d
    for c in model.coords.values():
        if not c.is_dim:
            d = f.create_dataset(c.name, data=c.values)
            _attrs(d, c.attrs)
            d.attrs[KIND] = "coord"
            for i, dim in enumerate(c.dims):
                d.dims[i].attach_scale(scales[dim])
    for var in model.vars.values():
        if var.kind == "scalar":
            data = var.values if var.values is not None else np.zeros(var.full_shape, dtype=var.dtype)
            d = f.create_dataset(var.name, data=data, fillvalue=_fill(np.dtype(var.dtype)))
        elif materialize is not None:
            d = materialize(var, f)
        else:
            d = _write_field_virtual(f, var)
        _attrs(d, var.attrs)
        d.attrs[KIND] = var.kind
        d.attrs[AXIS_OF] = var.axis or ""
        coords = _coordinates_attr(model, var)
        if coords:
            d.attrs["coordinates"] = coords
        dims = ((var.axis,) if var.axis is not None else ()) + var.dims
        for i, dim in enumerate(dims):
            d.dims[i].attach_scale(scales[dim])


# -- reading a main file back -------------------------------------------------------------------


def _plain_attrs(obj: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    out = {}
    for k, v in obj.attrs.items():
        if k in skip or k in ("CLASS", "NAME", "REFERENCE_LIST", "DIMENSION_LIST", "_Netcdf4Dimid"):
            continue
        out[k] = v.decode() if isinstance(v, bytes) else v
    return out


def _dim_names(d: h5py.Dataset) -> list[str]:
    names = []
    for dim in d.dims:
        if len(dim) == 0:
            names.append("")
            continue
        n = dim[0].attrs.get("NAME", b"")
        names.append(n.decode() if isinstance(n, bytes) else str(n))
    return names


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def load_main(path: str | os.PathLike[str], *, values: bool = True) -> MainModel:
    """Read an hpcml main file (``format = hpcml-io-2``) into a :class:`MainModel`.

    Virtual fields keep their mappings (source names as stored, relative to the
    file's directory); plain fields (a consolidated file) get one mapping onto
    their own dataset in ``path`` and the attribute ``hpcml_plain``.  With
    ``values=False`` scalar series are described but not read.
    """
    from hpcml.io.vds import mappings_of

    model = MainModel()
    with h5py.File(path, "r") as f:
        model.attrs = _plain_attrs(f)
        for name, obj in f.items():
            if not isinstance(obj, h5py.Dataset):
                continue
            kind = _text(obj.attrs.get(KIND, ""))
            if kind == "axis":
                ak = _text(obj.attrs.get(AXIS_KIND, "step"))
                ax = Axis(
                    name, ak, units=_text(obj.attrs.get("units", "")), long_name=_text(obj.attrs.get("long_name", ""))
                )
                if ak == "time":
                    ax.times = [float(t) for t in obj[...]]
                    ax.steps = [int(s) for s in f[_text(obj.attrs.get(STEPS_OF, "step"))][...]]
                else:
                    ax.steps = [int(s) for s in obj[...]]
                    ax.times = [float("nan")] * len(ax.steps)
                model.axes[name] = ax
        for name, obj in f.items():
            if not isinstance(obj, h5py.Dataset):
                continue
            kind = _text(obj.attrs.get(KIND, ""))
            if kind == "dim":
                model.coords[name] = Coord(name, (name,), obj[...], _plain_attrs(obj, (KIND,)))
            elif kind == "coord" and not any(name == a.step_var for a in model.axes.values() if a.kind == "time"):
                model.coords[name] = Coord(name, tuple(_dim_names(obj)), obj[...], _plain_attrs(obj, (KIND,)))
            elif kind in ("field", "scalar"):
                axis = _text(obj.attrs.get(AXIS_OF, "")) or None
                dims = tuple(_dim_names(obj))[(1 if axis else 0) :]
                var = Var(
                    name=name,
                    kind=kind,
                    axis=axis,
                    dims=dims,
                    shape=tuple(obj.shape[(1 if axis else 0) :]),
                    dtype=obj.dtype.str,
                    attrs=_plain_attrs(obj, (KIND, AXIS_OF, "coordinates")),
                    n=int(obj.shape[0]) if axis else 0,
                )
                if kind == "scalar":
                    var.values = obj[...] if values else None
                elif obj.is_virtual:
                    var.maps = mappings_of(obj)
                else:
                    var.maps = [
                        {
                            "file": ".",
                            "dset": "/" + name,
                            "vstart": [0] * obj.ndim,
                            "count": list(obj.shape),
                            "sstart": [0] * obj.ndim,
                            "sshape": list(obj.shape),
                        }
                    ]
                    var.attrs["hpcml_plain"] = 1
                model.vars[name] = var
    return model


def provenance_list(model: MainModel) -> list[dict[str, Any]]:
    """The ``hpcml_provenance`` JSON list (one entry per run that wrote the file)."""
    raw = model.attrs.get("hpcml_provenance")
    try:
        value = json.loads(raw) if raw else []
    except (TypeError, ValueError):
        value = []
    return value if isinstance(value, list) else []
