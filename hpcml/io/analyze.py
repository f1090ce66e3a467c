"""``hpcml analyze FILE``: summary and plots of an HDF5 output file (serial).

Prints the datasets (shape, dtype, steps, time range, units, virtual or not) and
root attributes, or the same as JSON with ``--json``, and writes PNGs with
matplotlib (Agg backend, no display needed):

* ``NAME-<field>.png``: the last snapshot of each 2-D field (3-D: the middle
  slice along the first axis; 1-D: a line);
* ``NAME-scalar-<name>.png``: each scalar time series against time (or step);
* ``NAME-butterfly.png``: for flux-transport output, the butterfly diagram
  (longitudinal mean against time and latitude), from a profile series
  ``scalars/butterfly`` of shape ``(nsteps, nlat)`` when present, else from a
  field named ``br`` (or carrying the attribute ``butterfly=1``) of shape
  ``(nsteps, nlat, nlon)``.  A ``latitude`` attribute (one value per row) gives
  the axis its values.

Long reads report progress on stderr (a bar on a terminal, periodic lines
otherwise).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hpcml.io._common import as_str, stem
from hpcml.io.layout import FIELD, INDEX, INTERNAL, SCALAR, inspect_file
from hpcml.io.progress import Progress

__all__ = ["add_arguments", "plot", "run", "summarize"]

_MAX_PIXELS = 1024  # per axis: larger fields are shown with a stride


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``hpcml analyze``."""
    parser.add_argument("file", help="HDF5 output file (e.g. run.h5)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--outdir", default=None, help="directory for PNGs (default: ./NAME-analysis)")
    parser.add_argument("--no-plots", action="store_true", help="summary only")
    parser.add_argument("--xdmf", action="store_true", help="also (re)write the NAME.xmf sidecar next to FILE")


def _all_datasets(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with h5py.File(path, "r") as f:

        def visit(name: str, obj: Any) -> None:
            if not isinstance(obj, h5py.Dataset) or name.startswith((INDEX + "/", INTERNAL + "/")):
                return
            rows.append(
                {
                    "path": name,
                    "shape": list(obj.shape),
                    "dtype": str(obj.dtype),
                    "virtual": bool(obj.is_virtual),
                    "nbytes": int(obj.size) * obj.dtype.itemsize,
                }
            )

        f.visititems(visit)
    return rows


def _finite_range(values: list[float]) -> list[float] | None:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return [min(vals), max(vals)] if vals else None


def summarize(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Summary of a file: root attributes and every dataset, series with their steps."""
    info = inspect_file(path)
    datasets = []
    for row in _all_datasets(path):
        s = info["series"].get(row["path"])
        if s is not None:
            row |= {
                "kind": s["kind"],
                "nsteps": s["n"],
                "snapshot_shape": s["shape"],
                "steps": [s["steps"][0], s["steps"][-1]] if s["n"] else None,
                "time": _finite_range(s["times"]),
                "units": s["units"],
            }
        datasets.append(row)
    attrs = dict(info["attrs"])
    config = attrs.pop("config", "")
    return {
        "file": str(path),
        "format": attrs.get("format"),
        "writer": attrs.get("writer"),
        "attrs": attrs,
        "config": config,
        "datasets": datasets,
    }


def _print_summary(summary: dict[str, Any], out: Any) -> None:
    w = out.write
    w(f"{summary['file']}  (format {summary['format']}, writer {summary['writer']})\n")
    w("datasets:\n")
    for d in summary["datasets"]:
        line = f"  {d['path']:<24} {'x'.join(map(str, d['shape'])) or 'scalar':>18} {d['dtype']:<8}"
        if "kind" in d:
            line += f" {d['kind']:<6} {d['nsteps']} step(s)"
            if d["steps"]:
                line += f" [{d['steps'][0]}..{d['steps'][1]}]"
            if d["time"]:
                line += f" t=[{d['time'][0]:.6g}, {d['time'][1]:.6g}]"
            if d["units"]:
                line += f" [{d['units']}]"
        if d["virtual"]:
            line += " (virtual)"
        w(line + "\n")
    w("attributes:\n")
    for k, v in summary["attrs"].items():
        text = json.dumps(v) if not isinstance(v, str) else v
        w(f"  {k}: {text if len(text) <= 100 else text[:97] + '...'}\n")
    if summary["config"]:
        lines = summary["config"].splitlines()
        w(f"config: {len(lines)} line(s) of TOML (first: {lines[0]!r})\n")
    for p in summary.get("plots", []):
        w(f"wrote {p}\n")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _safe(name: str) -> str:
    return name.replace("/", "_")


def _plot_field(plt: Any, dset: h5py.Dataset, name: str, s: dict[str, Any], target: Path) -> None:
    shape = s["shape"]
    i = s["n"] - 1
    strides = [max(1, math.ceil(n / _MAX_PIXELS)) for n in shape]
    if len(shape) == 3:
        sel = (i, shape[0] // 2, slice(None, None, strides[1]), slice(None, None, strides[2]))
        where = f", slice {shape[0] // 2} of axis 0"
    else:
        sel = (i, *(slice(None, None, st) for st in strides))
        where = ""
    data = dset[sel]
    fig, ax = plt.subplots(figsize=(6, 5))
    label = f"{name} [{s['units']}]" if s["units"] else name
    t = s["times"][i]
    title = f"{label}: step {s['steps'][i]}" + (f", t={t:.6g}" if not math.isnan(t) else "") + where
    if data.ndim == 1:
        ax.plot(np.arange(data.size) * strides[0], data)
        ax.set_xlabel("index")
    else:
        im = ax.imshow(
            np.real(data),
            origin="lower",
            aspect="auto",
            extent=(0, shape[-1], 0, shape[-2]),
            interpolation="nearest",
        )
        fig.colorbar(im, ax=ax, label=label)
        ax.set_xlabel(f"axis {len(shape) - 1}")
        ax.set_ylabel(f"axis {len(shape) - 2}")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(target, dpi=100)
    plt.close(fig)


def _plot_scalar(
    plt: Any, steps: np.ndarray, times: np.ndarray, values: np.ndarray, name: str, units: str, target: Path
) -> None:
    use_time = times.size and np.all(np.isfinite(times))
    x = times if use_time else steps
    fig, ax = plt.subplots(figsize=(6, 4))
    vals = np.real(values.reshape(values.shape[0], -1))
    ax.plot(x, vals, marker="." if len(x) < 50 else None)
    if np.all(vals[np.isfinite(vals)] > 0) and np.ptp(np.log10(vals[np.isfinite(vals)] + 1e-300)) > 3:
        ax.set_yscale("log")  # residuals and norms that fall by decades
    ax.set_xlabel("time" if use_time else "step")
    ax.set_ylabel(f"{name} [{units}]" if units else name)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(target, dpi=100)
    plt.close(fig)


def _butterfly_source(f: h5py.File, info: dict[str, Any]) -> tuple[str, str] | None:
    s = info["series"].get("scalars/butterfly")
    if s is not None and len(s["shape"]) == 1 and s["n"]:
        return "profile", "scalars/butterfly"
    for name, s in info["series"].items():
        if s["kind"] != FIELD or len(s["shape"]) != 2 or not s["n"]:
            continue
        if name.lower() == "br" or bool(s.get("attrs", {}).get("butterfly", False)):
            return "field", name
    return None


def _plot_butterfly(plt: Any, f: h5py.File, info: dict[str, Any], kind: str, name: str, target: Path) -> None:
    s = info["series"][name]
    n = s["n"]
    if kind == "profile":
        diagram = np.real(f[name][:n])
    else:
        dset = f[name]
        diagram = np.empty((n, s["shape"][0]))
        nbytes = int(np.prod(s["shape"])) * dset.dtype.itemsize
        with Progress(n * nbytes, f"butterfly from {name}") as bar:
            for i in range(n):  # one snapshot at a time: memory stays one field
                diagram[i] = np.real(dset[i]).mean(axis=1)
                bar.update(nbytes)
    times = np.asarray(s["times"], dtype=float)
    x = times if np.all(np.isfinite(times)) else np.asarray(s["steps"], dtype=float)
    lat = f[name].attrs.get("latitude")
    y = (
        np.asarray(lat, dtype=float)
        if lat is not None and len(lat) == diagram.shape[1]
        else np.arange(diagram.shape[1])
    )
    fig, ax = plt.subplots(figsize=(8, 4))
    vmax = float(np.nanmax(np.abs(diagram))) or 1.0
    if x.size > 1:
        mesh = ax.pcolormesh(x, y, diagram.T, cmap="RdBu_r", vmin=-vmax, vmax=vmax, shading="nearest")
    else:
        mesh = ax.imshow(diagram.T, cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto", origin="lower")
    units = s["units"]
    fig.colorbar(mesh, ax=ax, label=f"<{name.rsplit('/', maxsplit=1)[-1]}>_lon" + (f" [{units}]" if units else ""))
    ax.set_xlabel("time" if np.all(np.isfinite(times)) else "step")
    ax.set_ylabel("latitude" if lat is not None else "latitude index")
    ax.set_title("butterfly diagram", fontsize=9)
    fig.tight_layout()
    fig.savefig(target, dpi=100)
    plt.close(fig)


def plot(path: str | os.PathLike[str], outdir: str | os.PathLike[str]) -> list[Path]:
    """Write the PNGs described in the module docstring; return their paths."""
    plt = _pyplot()
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    base = stem(path).name
    info = inspect_file(path)
    written: list[Path] = []
    with h5py.File(path, "r") as f:
        for name, s in info["series"].items():
            if s["n"] == 0:
                continue
            if s["kind"] == FIELD and 1 <= len(s["shape"]) <= 3:
                target = out / f"{base}-{_safe(name)}.png"
                _plot_field(plt, f[name], name, s, target)
                written.append(target)
            elif s["kind"] == SCALAR and len(s["shape"]) == 0:
                target = out / f"{base}-scalar-{_safe(name.split('/', 1)[1])}.png"
                steps = np.asarray(s["steps"])
                times = np.asarray(s["times"], dtype=float)
                _plot_scalar(plt, steps, times, f[name][: s["n"]], name.split("/", 1)[1], s["units"], target)
                written.append(target)
        src = _butterfly_source(f, info)
        if src is not None:
            target = out / f"{base}-butterfly.png"
            _plot_butterfly(plt, f, info, src[0], src[1], target)
            written.append(target)
    return written


def run(args: argparse.Namespace) -> int:
    """Entry point of ``hpcml analyze`` (exit code)."""
    path = Path(args.file)
    if not path.exists():
        sys.stderr.write(f"hpcml analyze: {path}: no such file\n")
        return 2
    try:
        summary = summarize(path)
    except OSError as exc:
        sys.stderr.write(f"hpcml analyze: {path}: not a readable HDF5 file ({exc})\n")
        return 2
    if not args.no_plots:
        outdir = Path(args.outdir) if args.outdir else Path(f"{stem(path).name}-analysis")
        summary["plots"] = [str(p) for p in plot(path, outdir)]
    if getattr(args, "xdmf", False):
        from hpcml.io.xdmf import write_xdmf_for

        summary["xdmf"] = str(write_xdmf_for(path))
    if args.json:
        sys.stdout.write(json.dumps(summary, indent=2, default=_jsonable) + "\n")
    else:
        _print_summary(summary, sys.stdout)
    return 0


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return as_str(o)


def main(argv: list[str] | None = None) -> int:
    """``python -m hpcml.io.analyze FILE`` (same as ``hpcml analyze``)."""
    parser = argparse.ArgumentParser(prog="hpcml analyze", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
