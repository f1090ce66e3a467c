"""The flux app's figures in ``hpcml analyze`` (registered in :data:`hpcml.apps.PLOTS`).

* ``NAME-br.png``: the last map of every realization (up to four panels) in
  longitude-latitude degrees, north up; a diverging colour map centred on zero
  with symmetric limits saturating at the 99.5th percentile of ``|B_r|`` (the
  weak polar fields stay visible next to kG active regions), colorbar in gauss,
  title with the realization and the time in hours and days;
* ``NAME-history.png``: the history series, one column per realization and one
  row per quantity (fluxes, polar-cap fluxes, dipoles, extrema), against time
  in days (hours for runs under three days); all-zero series are left out;
* ``NAME-butterfly.png``: each realization's longitude-averaged B_r against
  time and latitude.

Needs matplotlib only (no MPI, no solver): ``hpcml analyze`` on a login node.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hpcml.io.analyze import PlotContext, diverging_limits, draw_map

__all__ = ["plot"]

_MAX_REALIZATIONS = 4
_GROUPS = (
    ("magnetic flux", ("flux_positive", "flux_negative")),
    ("polar-cap flux", ("npole_flux_positive", "npole_flux_negative", "spole_flux_positive", "spole_flux_negative")),
    ("dipole strength", ("ax_dipole", "eq_dipole")),
    ("B_r extrema", ("br_max", "br_min")),
)


def _time_scale(ctx: PlotContext) -> tuple[np.ndarray, float, str]:
    """The time axis values, the factor to the unit shown, its label: days for runs of three days and more."""
    x, label = ctx.axis_values("time")
    units = ctx.info["axes"]["time"]["units"]
    if units == "hours" and x.size and np.nanmax(x) - np.nanmin(x) >= 72:
        return x, 1 / 24, "time [days]"
    return x, 1.0, label


def _when(ctx: PlotContext, i: int) -> str:
    ax = ctx.info["axes"]["time"]
    t = ax["times"][i]
    text = f"t = {t:.6g} h" if ax["units"] == "hours" else f"t = {t:.6g} {ax['units']}"
    if ax["units"] == "hours" and abs(t) >= 24:
        text += f" ({t / 24:.4g} days)"
    return f"{text}, step {ax['steps'][i]}"


def _realizations(ctx: PlotContext) -> list[int]:
    values = ctx.info["coords"].get("realization", {}).get("values", [1])
    return [int(v) for v in values][:_MAX_REALIZATIONS]


def _maps(ctx: PlotContext) -> Path | None:
    s = ctx.info["series"].get("br")
    if s is None or s["n"] == 0:
        return None
    i = s["n"] - 1
    reals = _realizations(ctx)
    fig, axes = ctx.plt.subplots(len(reals), 1, figsize=(8, 3.6 * len(reals) + 0.5), squeeze=False)
    for p, r in enumerate(reals):
        ax = axes[p, 0]
        data = ctx.h5["br"][i, p]
        mesh = draw_map(ctx, ax, data, "lon", "lat", "br")
        ctx.plt.colorbar(mesh, ax=ax, label="B_r [G]", extend="both" if diverging_limits(data) else "neither")
        ax.set_xlim(0, 360)
        ax.set_ylim(-90, 90)  # north up, whatever the order of the rows
        ax.set_xticks(range(0, 361, 60))
        ax.set_yticks(range(-90, 91, 30))
        ax.set_xlabel("longitude [degrees]")
        ax.set_ylabel("latitude [degrees]")
        ax.set_title(f"B_r, realization {r}, {_when(ctx, i)}", fontsize=9)
    return ctx.save(fig, "br")


def _history(ctx: PlotContext) -> Path | None:
    have = ctx.info["series"]
    x, scale, xlabel = _time_scale(ctx)
    reals = _realizations(ctx)
    rows = []
    for title, names in _GROUPS:
        keep = []
        for n in names:
            if n not in have:
                continue
            v = np.asarray(ctx.h5[n][...], dtype=float)
            if np.any(np.isfinite(v) & (v != 0)):
                keep.append((n, v))
            else:
                ctx.constant.append(n)
        if keep:
            rows.append((title, keep))
    if not rows:
        return None
    fig, axes = ctx.plt.subplots(
        len(rows), len(reals), figsize=(4.2 * len(reals) + 0.6, 2.5 * len(rows) + 0.6), squeeze=False, sharex=True
    )
    for row, (title, series) in enumerate(rows):
        units = str(have[series[0][0]]["units"])
        for col, r in enumerate(reals):
            ax = axes[row, col]
            for name, v in series:
                ax.plot(x[: v.shape[0]] * scale, v[:, col], label=name)
            ax.set_ylabel(f"{title} [{units}]", fontsize=8)
            ax.grid(True, alpha=0.3)
            if row == 0:
                ax.set_title(f"realization {r}", fontsize=9)
            if row == len(rows) - 1:
                ax.set_xlabel(xlabel)
            if col == 0:
                ax.legend(fontsize=6)
    return ctx.save(fig, "history")


def _butterfly(ctx: PlotContext) -> Path | None:
    s = ctx.info["series"].get("butterfly")
    if s is None or s["n"] == 0:
        return None
    values = np.asarray(ctx.h5["butterfly"][...], dtype=float)
    x, scale, xlabel = _time_scale(ctx)
    lat = np.asarray(ctx.info["coords"]["lat"]["values"], dtype=float)
    reals = _realizations(ctx)
    lim = diverging_limits(values)
    kw: dict[str, Any] = {"cmap": "RdBu_r", "vmin": lim[0], "vmax": lim[1]} if lim else {"cmap": "viridis"}
    fig, axes = ctx.plt.subplots(len(reals), 1, figsize=(8, 2.8 * len(reals) + 0.5), squeeze=False)
    for p, r in enumerate(reals):
        ax = axes[p, 0]
        if x.size > 1:
            mesh = ax.pcolormesh(x[: values.shape[0]] * scale, lat, values[:, p, :].T, shading="nearest", **kw)
        else:
            mesh = ax.imshow(values[:, p, :].T, aspect="auto", extent=(0, 1, -90, 90), **kw)
        ctx.plt.colorbar(mesh, ax=ax, label="<B_r>_lon [G]")
        ax.set_ylim(-90, 90)
        ax.set_yticks(range(-90, 91, 30))
        ax.set_xlabel(xlabel)
        ax.set_ylabel("latitude [degrees]")
        ax.set_title(f"butterfly diagram, realization {r}", fontsize=9)
    return ctx.save(fig, "butterfly")


def plot(ctx: PlotContext) -> list[Path]:
    """Draw the flux figures of the module docstring; mark the variables drawn as handled."""
    out = [p for p in (_maps(ctx), _history(ctx), _butterfly(ctx)) if p is not None]
    ctx.handled |= {"br", "butterfly"} | {n for _, names in _GROUPS for n in names}
    return out
