"""XDMF sidecars so ParaView, VisIt and VTK's ``vtkXdmfReader`` open hpcml field output.

``NAME.xmf`` next to ``NAME.h5`` describes every field whose last two or three
dimensions are *spatial* (their coordinate variables carry a CF ``axis`` of
``X``, ``Y`` or ``Z``: ``x``/``y``/``z``, ``lon``/``lat``):

* the grid is a ``3DCoRectMesh`` (origin and spacing) when every spatial
  coordinate is uniform, else a ``3DRectMesh`` with the coordinate values
  (``lon``/``lat`` in degrees for the flux maps); 2-D fields are one layer thick
  (``1 x ny x nx``), which is how VTK's reader places them in the x-y plane;
* one leading non-spatial dimension (``realization``) gives one grid per index,
  named after it (``br realization 2``), never a spatial axis;
* a series becomes a temporal collection (``Time`` from the ``time`` axis, the
  step where a time is missing); a static field one grid;
* values are hyperslabs of the HDF5 datasets (``NAME.h5:/u``), no data copied;
  fields sharing grid and axis share the grids.

Values sit on the nodes (cell-centred data: the coordinates are the cell
centres).  The HDF5 file is referenced by its base name, so the pair can be
moved together.  Tested with VTK's ``vtkXdmfReader`` (``pip install vtk``):
geometry and values at every step (``tests/io/test_io_readers.py``).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

from hpcml.io._common import stem
from hpcml.io.mainfile import MainModel, Var

__all__ = ["build_xdmf", "write_xdmf_for", "write_xdmf_for_model"]

_NUMBER = {"f": "Float", "i": "Int", "u": "UInt"}


def _fmt(values: Any) -> str:
    return " ".join(repr(float(v)) for v in np.asarray(values, dtype=float).ravel())


def _spatial(model: MainModel, var: Var) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """``(leading dims, spatial dims)`` of a field the sidecar can show, else ``None``."""
    axes = []
    for d in var.dims:
        c = model.coords.get(d)
        axes.append(str(c.attrs.get("axis", "")) if c is not None else "")
    k = len(axes)
    while k > 0 and axes[k - 1] in ("X", "Y", "Z"):
        k -= 1
    lead, space = var.dims[:k], var.dims[k:]
    if len(space) not in (2, 3) or len(lead) > 1 or np.dtype(var.dtype).kind not in _NUMBER:
        return None
    return lead, space


def _uniform(values: np.ndarray) -> tuple[float, float] | None:
    v = np.asarray(values, dtype=float)
    if v.size == 1:
        return float(v[0]), 1.0
    d = np.diff(v)
    if np.allclose(d, d[0], rtol=1e-9, atol=0) and d[0] != 0:
        return float(v[0]), float(d[0])
    return None


def _mesh(model: MainModel, space: tuple[str, ...], dims3: str) -> tuple[ET.Element, ET.Element]:
    """Topology and geometry of a grid (built once per group, shared by every grid of it)."""
    values = [np.asarray(model.coords[d].values, dtype=float) for d in space]
    if len(values) == 2:
        values = [np.zeros(1), *values]  # a 2-D field is one layer: z = 0
    uni = [_uniform(v) for v in values]
    if all(u is not None for u in uni):
        topo = ET.Element("Topology", TopologyType="3DCoRectMesh", Dimensions=dims3)
        geo = ET.Element("Geometry", GeometryType="ORIGIN_DXDYDZ")
        for part in (0, 1):  # origin, then spacing; slowest axis (z) first, as the dimensions
            item = ET.SubElement(geo, "DataItem", Format="XML", Dimensions="3", NumberType="Float", Precision="8")
            item.text = _fmt([u[part] for u in uni])  # type: ignore[index]
        return topo, geo
    topo = ET.Element("Topology", TopologyType="3DRectMesh", Dimensions=dims3)
    geo = ET.Element("Geometry", GeometryType="VXVYVZ")
    for v in reversed(values):  # X, Y, Z
        item = ET.SubElement(geo, "DataItem", Format="XML", Dimensions=str(v.size), NumberType="Float", Precision="8")
        item.text = _fmt(v)
    return topo, geo


def _attribute(grid: ET.Element, h5_name: str, var: Var, lead: tuple[int, ...], dims3: str) -> None:
    dt = np.dtype(var.dtype)
    attr = ET.SubElement(grid, "Attribute", Name=var.name, AttributeType="Scalar", Center="Node")
    full = var.full_shape
    nd = len(full)
    start = [*lead, *([0] * (nd - len(lead)))]
    count = [*([1] * len(lead)), *full[len(lead) :]]
    slab = ET.SubElement(attr, "DataItem", ItemType="HyperSlab", Dimensions=dims3, Type="HyperSlab")
    sel = ET.SubElement(slab, "DataItem", Dimensions=f"3 {nd}", Format="XML")
    sel.text = "  ".join(" ".join(str(x) for x in row) for row in (start, [1] * nd, count))
    src = ET.SubElement(
        slab,
        "DataItem",
        Format="HDF",
        NumberType=_NUMBER[dt.kind],
        Precision=str(dt.itemsize),
        Dimensions=" ".join(str(x) for x in full),
    )
    src.text = f"{h5_name}:/{var.name}"


def build_xdmf(h5_name: str, model: MainModel) -> ET.Element:
    """The XDMF document (an ``ElementTree`` root) for the fields of ``model`` stored in ``h5_name``."""
    root = ET.Element("Xdmf", Version="2.0")
    domain = ET.SubElement(root, "Domain")
    groups: dict[tuple[Any, ...], list[Var]] = {}
    for var in model.vars.values():
        if var.kind != "field" or (var.axis is not None and var.n == 0):
            continue
        found = _spatial(model, var)
        if found is None:
            continue
        groups.setdefault((var.axis, *found, var.n), []).append(var)
    for (axis, lead, space, n), members in groups.items():
        sizes = [model.dim_size(d) or 0 for d in space]
        dims3 = " ".join(str(x) for x in ([1, *sizes] if len(sizes) == 2 else sizes))
        topo, geo = _mesh(model, space, dims3)  # the same elements in every grid of the group
        names = "+".join(m.name for m in members)
        leads: list[tuple[tuple[int, ...], str]] = [((), names)]
        if lead:
            c = model.coords.get(lead[0])
            labels = c.values if c is not None else np.arange(model.dim_size(lead[0]) or 0)
            leads = [((i,), f"{names} {lead[0]} {_label(v)}") for i, v in enumerate(labels)]
        for index, title in leads:
            if axis is None:
                grid = ET.SubElement(domain, "Grid", Name=title, GridType="Uniform")
                grid.extend([topo, geo])
                for m in members:
                    _attribute(grid, h5_name, m, index, dims3)
                continue
            ax = model.axes[axis]
            coll = ET.SubElement(domain, "Grid", Name=title, GridType="Collection", CollectionType="Temporal")
            for i in range(n):
                t = ax.times[i] if ax.kind == "time" and not np.isnan(ax.times[i]) else ax.steps[i]
                grid = ET.SubElement(coll, "Grid", Name=f"{title} {i}", GridType="Uniform")
                ET.SubElement(grid, "Time", Value=repr(float(t)))
                grid.extend([topo, geo])
                for m in members:
                    _attribute(grid, h5_name, m, (i, *index), dims3)
    return root


def _label(v: Any) -> str:
    f = float(v)
    return str(int(f)) if f.is_integer() else repr(f)


def write_xdmf(xmf_path: str | os.PathLike[str], root: ET.Element) -> Path:
    """Write an XDMF document atomically (temporary file, then rename)."""
    ET.indent(root)
    text = '<?xml version="1.0" ?>\n<!DOCTYPE Xdmf SYSTEM "Xdmf.dtd" []>\n' + ET.tostring(root, encoding="unicode")
    path = Path(xmf_path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_xdmf_for_model(xmf_path: str | os.PathLike[str], h5_name: str, model: MainModel) -> Path:
    """Write the sidecar of a main file described by ``model``."""
    return write_xdmf(xmf_path, build_xdmf(h5_name, model))


def write_xdmf_for(h5_path: str | os.PathLike[str], xmf_path: str | os.PathLike[str] | None = None) -> Path:
    """(Re)write the sidecar of an existing output file (e.g. one copied from elsewhere)."""
    from hpcml.io.mainfile import load_main

    h5_path = Path(h5_path)
    target = Path(xmf_path) if xmf_path is not None else stem(h5_path).with_suffix(".xmf")
    return write_xdmf_for_model(target, h5_path.name, load_main(h5_path))
