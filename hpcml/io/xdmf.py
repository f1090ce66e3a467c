"""XDMF sidecars so ParaView and VisIt open hpcml field output.

``NAME.xmf`` next to ``NAME.h5`` describes every 2-D and 3-D field time series as
a temporal collection of uniform grids (``2DCoRectMesh``/``3DCoRectMesh``); each
snapshot is a hyperslab of the HDF5 dataset (``NAME.h5:/u`` at ``[i, ...]``), so
no data is duplicated.  Fields sharing a grid and a time axis share one
collection.  The HDF5 file is referenced by its base name, so the pair can be
moved together; virtual datasets work because ParaView reads them through the
HDF5 library like any other dataset.

Grid geometry comes from the optional field attributes ``origin`` and
``spacing`` (one value per axis, slowest axis first, like the array); the
default is origin 0 and spacing 1.  Values sit on the mesh nodes.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpcml.io._common import stem

__all__ = ["XdmfField", "write_xdmf", "write_xdmf_for"]


@dataclass
class XdmfField:
    """One field time series as the XDMF writer needs it."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    times: Sequence[float]
    steps: Sequence[int] = ()
    origin: Sequence[float] | None = None
    spacing: Sequence[float] | None = None
    units: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _number_type(dtype: str) -> tuple[str, int] | None:
    dt = np.dtype(dtype)
    kinds = {"f": "Float", "i": "Int", "u": "UInt"}
    if dt.kind not in kinds:
        return None  # complex and others: ParaView has no scalar type for them
    return kinds[dt.kind], dt.itemsize


def _times(fld: XdmfField) -> tuple[float, ...]:
    """Time values, falling back to step numbers (then indices) where time is NaN."""
    out = []
    for i, t in enumerate(fld.times):
        missing = t is None or (isinstance(t, float) and math.isnan(t))
        out.append(float((fld.steps[i] if i < len(fld.steps) else i) if missing else t))
    return tuple(out)


def _geometry(fld: XdmfField) -> tuple[tuple[float, ...], tuple[float, ...]]:
    nd = len(fld.shape)
    origin = tuple(float(x) for x in (fld.origin if fld.origin is not None else (0.0,) * nd))
    spacing = tuple(float(x) for x in (fld.spacing if fld.spacing is not None else (1.0,) * nd))
    return origin, spacing


def _fmt(values: Iterable[float]) -> str:
    return " ".join(repr(float(v)) if not float(v).is_integer() else str(int(v)) for v in values)


def build_xdmf(h5_name: str, fields: Sequence[XdmfField]) -> ET.Element:
    """The XDMF document (an ``ElementTree`` root) for ``fields`` stored in ``h5_name``."""
    root = ET.Element("Xdmf", Version="3.0")
    domain = ET.SubElement(root, "Domain")
    groups: dict[tuple[Any, ...], list[XdmfField]] = {}
    for fld in fields:
        if len(fld.shape) not in (2, 3) or _number_type(fld.dtype) is None or not fld.times:
            continue
        key = (tuple(fld.shape), _geometry(fld), _times(fld))
        groups.setdefault(key, []).append(fld)
    for (shape, (origin, spacing), times), members in groups.items():
        nd = len(shape)
        coll = ET.SubElement(
            domain,
            "Grid",
            Name="+".join(m.name for m in members),
            GridType="Collection",
            CollectionType="Temporal",
        )
        dims = " ".join(str(s) for s in shape)
        for i, t in enumerate(times):
            grid = ET.SubElement(coll, "Grid", Name=f"{members[0].name}_{i}", GridType="Uniform")
            ET.SubElement(grid, "Time", Value=repr(float(t)))
            ET.SubElement(grid, "Topology", TopologyType=f"{nd}DCoRectMesh", Dimensions=dims)
            geo = ET.SubElement(grid, "Geometry", GeometryType="ORIGIN_DXDY" if nd == 2 else "ORIGIN_DXDYDZ")
            for values in (origin, spacing):
                item = ET.SubElement(geo, "DataItem", Format="XML", Dimensions=str(nd), NumberType="Float")
                item.set("Precision", "8")
                item.text = _fmt(values)
            for m in members:
                ntype, prec = _number_type(m.dtype)  # type: ignore[misc]
                attr = ET.SubElement(grid, "Attribute", Name=m.name, AttributeType="Scalar", Center="Node")
                slab = ET.SubElement(attr, "DataItem", ItemType="HyperSlab", Dimensions=f"1 {dims}", Type="HyperSlab")
                sel = ET.SubElement(slab, "DataItem", Dimensions=f"3 {nd + 1}", Format="XML")
                sel.text = f"{i} {' '.join(['0'] * nd)}  {' '.join(['1'] * (nd + 1))}  1 {dims}"
                src = ET.SubElement(
                    slab,
                    "DataItem",
                    Format="HDF",
                    NumberType=ntype,
                    Precision=str(prec),
                    Dimensions=f"{len(m.times)} {dims}",
                )
                src.text = f"{h5_name}:/{m.name}"
    return root


def write_xdmf(xmf_path: str | os.PathLike[str], h5_name: str, fields: Sequence[XdmfField]) -> Path:
    """Write the XDMF sidecar atomically (temporary file, then rename); return its path."""
    root = build_xdmf(h5_name, fields)
    ET.indent(root)
    text = '<?xml version="1.0" ?>\n<!DOCTYPE Xdmf SYSTEM "Xdmf.dtd" []>\n' + ET.tostring(root, encoding="unicode")
    path = Path(xmf_path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def fields_from_info(info: dict[str, Any]) -> list[XdmfField]:
    """:class:`XdmfField` list from :func:`hpcml.io.layout.inspect_file` output."""
    out = []
    for name, s in info["series"].items():
        if s["kind"] != "field" or s["n"] == 0:
            continue
        attrs = s.get("attrs", {})
        out.append(
            XdmfField(
                name=name,
                shape=tuple(s["shape"]),
                dtype=s["dtype"],
                times=s["times"],
                steps=s["steps"],
                origin=attrs.get("origin"),
                spacing=attrs.get("spacing"),
                units=s.get("units", ""),
            )
        )
    return out


def write_xdmf_for(h5_path: str | os.PathLike[str], xmf_path: str | os.PathLike[str] | None = None) -> Path:
    """(Re)write the sidecar of an existing output file (e.g. after a crash)."""
    from hpcml.io.layout import inspect_file

    h5_path = Path(h5_path)
    info = inspect_file(h5_path)
    target = Path(xmf_path) if xmf_path is not None else stem(h5_path).with_suffix(".xmf")
    return write_xdmf(target, h5_path.name, fields_from_info(info))
