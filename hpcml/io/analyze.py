"""``hpcml analyze FILE``: summary and figures of an hpcml output (serial, no MPI).

Prints the variables (dimensions, entries, steps, time range, units, virtual or
not) and the root attributes, or the same as JSON with ``--json``, and draws
figures with matplotlib (Agg backend) next to the file (``--out DIR``
elsewhere), named ``NAME-<what>.png``:

* ``NAME-<field>.png``: the last snapshot of each field on its coordinates
  (axes labelled with names and units), one panel per index of a leading
  non-spatial dimension (realizations); a 3-D field's middle slice;
* ``NAME-series.png``: every scalar series against its axis (time with units,
  or step), one panel per series, one line per realization; constant series
  are listed in the summary instead of drawn;
* ``NAME-<series>.png``: a profile series (one value per latitude, say) as a
  time-coordinate diagram (a butterfly diagram for the flux app's ``butterfly``).

Colour maps: a field of both signs gets a diverging map centred on zero with
symmetric limits that saturate at the 99.5th percentile of ``|value|`` (so weak
structure next to strong peaks stays visible); a one-signed field a sequential
map.  An app can add or replace figures: :func:`run` takes a *plotter* lookup
(``hpcml analyze`` passes the apps' registry, ``hpcml.apps.PLOTS``), called with
a :class:`PlotContext`; variables it draws are left out of the generic figures.

Without matplotlib the summary is still printed, with a hint to install
``hpcml[plot]`` or pass ``--no-plots``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hpcml.io._common import as_str, stem

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from hpcml.io.layout import FIELD, SCALAR, inspect_file

__all__ = ["PlotContext", "add_arguments", "diverging_limits", "plot", "run", "summarize"]

_MAX_PIXELS = 1024  # per axis: larger fields are drawn with a stride
_MAX_PANELS = 4  # realizations drawn side by side


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``hpcml analyze``."""
    parser.add_argument("file", help="HDF5 output file (e.g. run.h5)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--out", "--outdir", dest="out", default=None, help="folder for the figures (default: FILE's)")
    parser.add_argument("--no-plots", action="store_true", help="summary only")
    parser.add_argument("--xdmf", action="store_true", help="also (re)write the NAME.xmf sidecar next to FILE")


# -- summary -------------------------------------------------------------------------------


def _finite_range(values: list[float]) -> list[float] | None:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return [min(vals), max(vals)] if vals else None


def summarize(path: str | Path) -> dict[str, Any]:
    """Summary of a file: root attributes, series axes and every variable."""
    info = inspect_file(path)
    attrs = dict(info["attrs"])
    config = attrs.pop("config", "")
    variables = []
    for name, s in info["series"].items():
        axis = info["axes"].get(s["axis"]) if s["axis"] else None
        variables.append(
            {
                "name": name,
                "kind": s["kind"],
                "dims": ([s["axis"]] if s["axis"] else []) + s["dims"],
                "shape": ([s["n"]] if s["axis"] else []) + s["shape"],
                "dtype": s["dtype"],
                "units": s["units"],
                "long_name": s["long_name"],
                "virtual": s["virtual"],
                "entries": s["n"] if s["axis"] else None,
                "steps": [s["steps"][0], s["steps"][-1]] if s["steps"] else None,
                "time": _finite_range(s["times"]) if axis and axis["kind"] == "time" else None,
                "time_units": axis["units"] if axis else None,
            }
        )
    return {
        "file": str(path),
        "format": attrs.get("format"),
        "writer": attrs.get("writer"),
        "app": _app_of(config),
        "axes": {k: {"kind": a["kind"], "units": a["units"], "n": a["n"]} for k, a in info["axes"].items()},
        "attrs": attrs,
        "config": config,
        "variables": variables,
    }


def _app_of(config: str) -> str | None:
    try:
        app = tomllib.loads(config).get("app") if config else None
    except tomllib.TOMLDecodeError:
        return None
    return app if isinstance(app, str) else None


def _print_summary(summary: dict[str, Any], out: Any) -> None:
    w = out.write
    w(f"{summary['file']}  (format {summary['format']}, writer {summary['writer']}, app {summary['app']})\n")
    w("variables:\n")
    for v in summary["variables"]:
        dims = "(" + ", ".join(f"{d}={n}" for d, n in zip(v["dims"], v["shape"])) + ")"
        line = f"  {v['name']:<20} {v['kind']:<6} {dims:<40} {v['dtype']:<5}"
        if v["steps"]:
            line += f" steps {v['steps'][0]}..{v['steps'][1]}"
        if v["time"]:
            line += f" t={v['time'][0]:.6g}..{v['time'][1]:.6g} {v['time_units'] or ''}".rstrip()
        if v["units"]:
            line += f" [{v['units']}]"
        if v["virtual"]:
            line += " (virtual)"
        w(line + "\n")
    w("attributes:\n")
    for k, v in summary["attrs"].items():
        text = json.dumps(v) if not isinstance(v, str) else v.splitlines()[-1] if k == "history" else v
        w(f"  {k}: {text if len(text) <= 100 else text[:97] + '...'}\n")
    if summary["config"]:
        lines = summary["config"].splitlines()
        w(f"config: {len(lines)} line(s) of TOML (first: {lines[0]!r})\n")
    for p in summary.get("constant", []):
        w(f"constant series (not drawn): {p}\n")
    for p in summary.get("plots", []):
        w(f"wrote {p}\n")


# -- figures --------------------------------------------------------------------------------


@dataclass
class PlotContext:
    """What a plotter gets: the open file, its description, where figures go, pyplot."""

    path: Path
    h5: h5py.File
    info: dict[str, Any]
    out: Path
    plt: Any
    handled: set[str] = field(default_factory=set)
    constant: list[str] = field(default_factory=list)

    def target(self, what: str) -> Path:
        """``OUT/NAME-<what>.png``."""
        return self.out / f"{stem(self.path).name}-{what.replace('/', '_')}.png"

    def save(self, fig: Any, what: str) -> Path:
        """Lay out, write ``OUT/NAME-<what>.png`` and close ``fig``; the file written."""
        fig.tight_layout()
        target = self.target(what)
        fig.savefig(target, dpi=110)
        self.plt.close(fig)
        return target

    def label(self, name: str) -> str:
        """``long name [units]`` of a variable or coordinate."""
        s = self.info["series"].get(name)
        attrs = s["attrs"] if s else self.info["coords"].get(name, {}).get("attrs", {})
        text = str(attrs.get("long_name") or name)
        units = str(attrs.get("units") or "")
        return f"{text} [{units}]" if units and units != "1" else text

    def axis_values(self, axis: str) -> tuple[np.ndarray, str]:
        """The x values and label of a series axis: time (with units) where known, else the step."""
        ax = self.info["axes"][axis]
        times = np.asarray(ax["times"], dtype=float)
        if ax["kind"] == "time" and times.size and np.all(np.isfinite(times)):
            return times, f"time [{ax['units']}]" if ax["units"] not in ("", "1") else "time"
        return np.asarray(ax["steps"], dtype=float), ("step" if ax["kind"] == "time" else axis)

    def when(self, name: str, i: int) -> str:
        """``step S, t = T units`` of entry ``i`` of a variable's axis."""
        s = self.info["series"][name]
        if not s["axis"]:
            return ""
        ax = self.info["axes"][s["axis"]]
        t = ax["times"][i]
        text = f"{s['axis']} {ax['steps'][i]}" if ax["kind"] != "time" else f"step {ax['steps'][i]}"
        if ax["kind"] == "time" and not math.isnan(t):
            text += f", t = {t:.6g}" + (f" {ax['units']}" if ax["units"] not in ("", "1") else "")
        return text


def diverging_limits(data: np.ndarray, percentile: float = 99.5) -> tuple[float, float] | None:
    """Symmetric colour limits ``(-v, v)`` for data of both signs (``v``: a percentile of ``|data|``), else ``None``."""
    finite = np.asarray(data)[np.isfinite(data)]
    if finite.size == 0 or finite.min() >= 0 or finite.max() <= 0:
        return None
    v = float(np.percentile(np.abs(finite), percentile)) or float(np.abs(finite).max()) or 1.0
    return -v, v


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _coord(ctx: PlotContext, dim: str, n: int) -> np.ndarray:
    c = ctx.info["coords"].get(dim)
    return np.asarray(c["values"], dtype=float) if c is not None else np.arange(n, dtype=float)


def _cf_axis(ctx: PlotContext, dim: str) -> str:
    return str(ctx.info["coords"].get(dim, {}).get("attrs", {}).get("axis", ""))


def _spatial_split(ctx: PlotContext, dims: list[str]) -> int:
    """Number of leading non-spatial dims: those before the trailing run of CF axes X/Y/Z.

    Without such axes the last two dimensions (or the only one) are the picture.
    """
    k = len(dims)
    while k > 0 and _cf_axis(ctx, dims[k - 1]) in ("X", "Y", "Z"):
        k -= 1
    return max(0, len(dims) - 2) if k == len(dims) else k


def draw_map(ctx: PlotContext, ax: Any, data: np.ndarray, xdim: str, ydim: str, name: str) -> Any:
    """One 2-D panel on its coordinates (whatever their order: north stays up), diverging if signed."""
    ny, nx = data.shape
    x, y = _coord(ctx, xdim, nx), _coord(ctx, ydim, ny)
    sy, sx = max(1, math.ceil(ny / _MAX_PIXELS)), max(1, math.ceil(nx / _MAX_PIXELS))
    data, x, y = data[::sy, ::sx], x[::sx], y[::sy]
    lim = diverging_limits(data)
    kw = {"cmap": "RdBu_r", "vmin": lim[0], "vmax": lim[1]} if lim else {"cmap": "viridis"}
    mesh = ax.pcolormesh(x, y, np.real(data), shading="nearest", **kw)
    ax.set_xlabel(ctx.label(xdim))
    ax.set_ylabel(ctx.label(ydim))
    return mesh


def plot_field(ctx: PlotContext, name: str) -> Path | None:
    """The last snapshot of field ``name`` (see the module docstring)."""
    s = ctx.info["series"][name]
    dims, shape = s["dims"], s["shape"]
    if not 1 <= len(dims) <= 4 or (s["axis"] and s["n"] == 0):
        return None
    i = s["n"] - 1 if s["axis"] else None
    lead = (i,) if i is not None else ()
    k = _spatial_split(ctx, dims)
    space = dims[k:]
    if len(space) == 3:  # middle slice of the slowest spatial axis
        lead_sel = (*lead, *([0] * k), shape[k] // 2)
        space = space[1:]
    else:
        lead_sel = (*lead, *([0] * k))
    dset = ctx.h5[name]
    n_panels = min(_MAX_PANELS, shape[0]) if k == 1 else 1
    fig, axes = ctx.plt.subplots(n_panels, 1, figsize=(7, 3.4 * n_panels + 0.6), squeeze=False)
    for p in range(n_panels):
        sel = list(lead_sel)
        if k == 1:
            sel[len(lead)] = p
        data = dset[tuple(sel)]
        ax = axes[p, 0]
        where = ctx.when(name, i) if i is not None else "static"
        if k == 1:
            lab = _coord(ctx, dims[0], shape[0])[p]
            where = f"{dims[0]} {int(lab) if float(lab).is_integer() else lab}, {where}"
        if data.ndim == 1:
            ax.plot(_coord(ctx, space[-1], data.size), np.real(data))
            ax.set_xlabel(ctx.label(space[-1]))
            ax.set_ylabel(ctx.label(name))
        else:
            mesh = draw_map(ctx, ax, data, space[-1], space[-2], name)
            ctx.plt.colorbar(mesh, ax=ax, label=ctx.label(name))
        ax.set_title(f"{name}: {where}", fontsize=9)
    return ctx.save(fig, name)


def plot_series(ctx: PlotContext, names: list[str]) -> Path | None:
    """Every 0-D or 1-D (per realization) scalar series: one panel each, constant ones skipped."""
    drawn = []
    for name in names:
        values = np.real(ctx.h5[name][...])
        finite = values[np.isfinite(values)]
        if finite.size and np.all(finite == finite.flat[0]):
            ctx.constant.append(name)
            continue
        drawn.append((name, values))
    if not drawn:
        return None
    cols = 2 if len(drawn) > 1 else 1
    rows = math.ceil(len(drawn) / cols)
    fig, axes = ctx.plt.subplots(rows, cols, figsize=(6.4 * cols, 2.8 * rows + 0.4), squeeze=False)
    for ax in axes.flat[len(drawn) :]:
        ax.set_visible(False)
    for ax, (name, values) in zip(axes.flat, drawn):
        s = ctx.info["series"][name]
        x, xlabel = ctx.axis_values(s["axis"])
        x = x[: values.shape[0]]
        if values.ndim == 1:
            ax.plot(x, values, marker="." if len(x) < 50 else None)
        else:
            labels = _coord(ctx, s["dims"][0], values.shape[1])
            for r in range(values.shape[1]):
                lab = labels[r]
                ax.plot(x, values[:, r], label=f"{s['dims'][0]} {int(lab) if float(lab).is_integer() else lab}")
            ax.legend(fontsize=7)
        pos = values[np.isfinite(values)]
        if pos.size and np.all(pos > 0) and np.ptp(np.log10(pos)) > 3:
            ax.set_yscale("log")  # residuals and losses that fall by decades
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ctx.label(name), fontsize=8)
        ax.grid(True, alpha=0.3)
    return ctx.save(fig, "series")


def plot_profile_series(ctx: PlotContext, name: str) -> Path | None:
    """A series of profiles ``(axis, [lead,] dim)`` as an axis-coordinate diagram, one panel per lead index."""
    s = ctx.info["series"][name]
    values = np.real(ctx.h5[name][...])
    if values.shape[0] == 0:
        return None
    x, xlabel = ctx.axis_values(s["axis"])
    x = x[: values.shape[0]]
    if values.ndim == 2:
        values = values[:, None, :]
        leads = [""]
    else:
        labels = _coord(ctx, s["dims"][0], values.shape[1])
        leads = [f"{s['dims'][0]} {int(v) if float(v).is_integer() else v}" for v in labels]
    n = min(_MAX_PANELS, values.shape[1])
    ydim = s["dims"][-1]
    y = _coord(ctx, ydim, values.shape[-1])
    fig, axes = ctx.plt.subplots(n, 1, figsize=(8, 2.8 * n + 0.6), squeeze=False)
    lim = diverging_limits(values)
    kw = {"cmap": "RdBu_r", "vmin": lim[0], "vmax": lim[1]} if lim else {"cmap": "viridis"}
    for p in range(n):
        ax = axes[p, 0]
        mesh = ax.pcolormesh(x, y, values[:, p, :].T, shading="nearest", **kw)
        ctx.plt.colorbar(mesh, ax=ax, label=ctx.label(name))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ctx.label(ydim))
        ax.set_title(f"{name}{': ' + leads[p] if leads[p] else ''}", fontsize=9)
    return ctx.save(fig, name)


Plotter = Callable[[PlotContext], list[Path]]


def _lines(ctx: PlotContext, s: dict[str, Any]) -> bool:
    """A series drawn as lines: 0-D, or one value per member of a small non-spatial dimension."""
    if not s["dims"]:
        return True
    return len(s["dims"]) == 1 and s["shape"][0] <= 16 and _cf_axis(ctx, s["dims"][0]) == ""


def plot(
    path: str | Path, out: str | Path | None = None, plotter: Callable[[str], Plotter | None] | None = None
) -> tuple[list[Path], list[str]]:
    """Draw the figures of the module docstring; return ``(files written, constant series skipped)``."""
    plt = _pyplot()
    path = Path(path)
    target = Path(out) if out is not None else (path.parent if str(path.parent) else Path("."))
    target.mkdir(parents=True, exist_ok=True)
    info = inspect_file(path)
    written: list[Path] = []
    with h5py.File(path, "r") as f:
        ctx = PlotContext(path, f, info, target, plt)
        app = _app_of(str(info["attrs"].get("config", "") or ""))
        special = plotter(app) if (plotter is not None and app) else None
        if special is not None:
            written += special(ctx)
        series_1d = []
        for name, s in info["series"].items():
            if name in ctx.handled:
                continue
            if s["kind"] == FIELD:
                p = plot_field(ctx, name)
            elif s["kind"] == SCALAR and s["axis"] and _lines(ctx, s):
                series_1d.append(name)
                continue
            elif s["kind"] == SCALAR and s["axis"] and 1 <= len(s["dims"]) <= 2:
                p = plot_profile_series(ctx, name)
            else:
                p = None
            if p is not None:
                written.append(p)
        if series_1d and (p := plot_series(ctx, series_1d)) is not None:
            written.append(p)
    return written, ctx.constant


def run(args: argparse.Namespace, plotter: Callable[[str], Plotter | None] | None = None) -> int:
    """Entry point of ``hpcml analyze`` (exit code); ``plotter(app)`` gives an app's own figures."""
    path = Path(args.file)
    if not path.exists():
        sys.stderr.write(f"hpcml analyze: {path}: no such file\n")
        return 2
    try:
        summary = summarize(path)
        missing = _missing_sources(path)
    except (OSError, KeyError, ValueError) as exc:
        sys.stderr.write(f"hpcml analyze: {path}: not a readable hpcml output ({exc})\n")
        return 2
    if not summary["variables"]:
        sys.stderr.write(f"hpcml analyze: {path}: not an hpcml output (no variables written by hpcml.io.Output)\n")
        return 2
    if missing:
        # HDF5 would read fill values (or a same-named file in the working directory) instead
        sys.stderr.write(
            f"hpcml analyze: {path}: its data files are missing: {', '.join(missing[:5])} (names relative to "
            f"{path.resolve().parent}); copy the folder of data files with the main file, or consolidate it "
            "into one file (hpcml.io.consolidate)\n"
        )
        return 2
    if not args.no_plots:
        try:
            files, constant = plot(path, args.out, plotter)
            summary["plots"] = [str(p) for p in files]
            summary["constant"] = constant
        except BlockingIOError as exc:
            sys.stderr.write(
                f"hpcml analyze: {path}: cannot read the data for the figures ({exc}): the file is being written "
                "by a running job; read it with HDF5_USE_FILE_LOCKING=FALSE (see docs/io.md), or use --no-plots\n"
            )
            return 1
        except ImportError as exc:
            sys.stderr.write(
                f"hpcml analyze: no figures: {exc.name or 'matplotlib'} is not installed. "
                "Install it with `pip install 'hpcml[plot]'`, or pass --no-plots for the summary only.\n"
            )
    if getattr(args, "xdmf", False):
        from hpcml.io.xdmf import write_xdmf_for

        summary["xdmf"] = str(write_xdmf_for(path))
    if args.json:
        sys.stdout.write(json.dumps(summary, indent=2, default=_jsonable) + "\n")
    else:
        _print_summary(summary, sys.stdout)
    return 0


def _missing_sources(path: Path) -> list[str]:
    """Source files of the file's virtual datasets that do not exist beside it."""
    from hpcml.io.vds import mappings_of, missing_sources

    found: set[str] = set()
    with h5py.File(path, "r") as f:

        def visit(_name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset) and obj.is_virtual:
                found.update(missing_sources(path, mappings_of(obj)))

        f.visititems(visit)
    return sorted(found)


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return as_str(o)


def main(argv: list[str] | None = None) -> int:
    """``python -m hpcml.io.analyze FILE`` (same as ``hpcml analyze``, without the apps' figures)."""
    parser = argparse.ArgumentParser(prog="hpcml analyze", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
