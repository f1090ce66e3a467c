"""Map time series (hpcml.io), checkpoints and restart (HipFT-format files: :mod:`.hipft_output`).

The map series goes through :class:`hpcml.io.Output` as one field ``br`` with
dimensions ``(time, realization, lat, lon)``: ``lat``/``lon`` in degrees (north
first, as HipFT's theta grid runs from the north pole), the unique longitude
columns (the last is the 0 = 360 degree seam), with the auxiliary coordinates
``theta``/``phi`` in radians.  Per-realization series along ``time``: the
fluxes, dipoles and extrema of the history files and ``butterfly``, each
realization's longitude-averaged B_r per latitude, which the flux plots draw as
a butterfly diagram (``hpcml analyze``).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hpcml.apps.flux.grid import TWOPI_INV
from hpcml.distarray import DistArray

if TYPE_CHECKING:
    from hpcml.apps.flux.state import FluxContext, FluxState

__all__ = ["MapWriter", "load_checkpoint", "save_checkpoint"]

log = logging.getLogger("hpcml.apps.flux")

# (name, column of a history row without STEP/TIME, units, long name)
_SCALARS = (
    ("flux_positive", 3, "Mx", "positive magnetic flux"),
    ("flux_negative", 4, "Mx", "negative magnetic flux"),
    ("npole_flux_positive", 5, "Mx", "positive flux of the north polar cap"),
    ("npole_flux_negative", 6, "Mx", "negative flux of the north polar cap"),
    ("spole_flux_positive", 7, "Mx", "positive flux of the south polar cap"),
    ("spole_flux_negative", 8, "Mx", "negative flux of the south polar cap"),
    ("eq_dipole", 11, "G", "equatorial dipole strength"),
    ("ax_dipole", 12, "G", "axial dipole strength"),
    ("br_max", 1, "G", "largest B_r"),
    ("br_min", 0, "G", "smallest B_r"),
)


class MapWriter:
    """The ``br`` series and the per-realization series of one run (collective over the world)."""

    def __init__(self, s: FluxContext, path: Path, restart_step: int | None = None) -> None:
        from hpcml.io import Output

        self.s = s
        self.path = path
        cfg = s.cfg
        self.dtype = np.float32 if cfg["output"]["single_precision"] else np.float64
        self.out = Output(
            path,
            s.world,
            config=cfg,
            mode="a" if restart_step is not None else "w",
            restart_step=restart_step,
            time_units="hours",
            title="hpcml flux: surface flux transport on the sphere (HipFT model)",
        )
        g = s.grid
        self.theta = g.t[1 : g.Nt + 1]
        self.phi = g.p[2 : g.M]
        self.coords = {
            "realization": (np.arange(1, s.prm.n_real + 1, dtype=np.int64), {"long_name": "realization"}),
            "lat": (
                90.0 - np.degrees(self.theta),
                {"units": "degrees_north", "long_name": "latitude", "standard_name": "latitude", "axis": "Y"},
            ),
            "lon": (
                np.degrees(self.phi),
                {"units": "degrees_east", "long_name": "longitude", "standard_name": "longitude", "axis": "X"},
            ),
        }
        self.count = 0

    def write(self, step: int, time: float, rows: np.ndarray | None, field: np.ndarray,
              flows: tuple[np.ndarray, np.ndarray] | None = None) -> None:  # fmt: skip
        """Append the field and the series from history values ``rows`` ``(n_real, 14)`` (collective).

        ``field``: the ghosted block on the host (the run's field, or a flux-balanced copy);
        ``flows``: ``(v_theta, v_phi)`` ghosted blocks in m/s, written as ``vt``/``vp``.
        """
        s = self.s
        wd = s.lay.world_decomp
        host = field
        data = host if self.dtype == np.float64 else host.astype(self.dtype)
        self.out.write(
            "br",
            DistArray(wd, data),
            step,
            time,
            units="G",
            long_name="radial magnetic field B_r",
            dims=("realization", "lat", "lon"),
            coords=self.coords,
            attrs={"comment": "lon: the unique longitude columns; the last is the 0 = 360 degree seam"},
        )
        for name, v, where in (("vt", flows[0], "north"), ("vp", flows[1], "west")) if flows is not None else ():
            self.out.write(
                name, DistArray(wd, v if self.dtype == np.float64 else v.astype(self.dtype)), step, time, units="m/s",
                long_name=f"{'colatitudinal' if name == 'vt' else 'longitudinal'} flow on each cell's {where} face",
                dims=("realization", "lat", "lon"), coords=self.coords,
            )  # fmt: skip
        if self.count == 0:
            self.out.coordinate("theta", self.theta, ("lat",), units="radian", long_name="colatitude")
            self.out.coordinate("phi", self.phi, ("lon",), units="radian", long_name="longitude")
        vals = rows if rows is not None else np.zeros((s.prm.n_real, 14))  # rank 0's values are the ones stored
        for name, col, units, long_name in _SCALARS:
            self.out.write_scalar(
                name, vals[:, col], step, time, units=units, long_name=long_name, dims=("realization",)
            )
        self.out.write_scalar(
            "butterfly",
            butterfly_profiles(s, host),
            step,
            time,
            units="G",
            long_name="longitude-averaged B_r",
            dims=("realization", "lat"),
        )
        self.out.flush()
        self.count += 1

    def sync(self) -> None:
        """Make every map written so far readable in the main file now (collective).

        Called before a checkpoint, so that a job killed later leaves a file that
        reaches the checkpoint's step (its restart then appends without a gap).
        """
        self.out.flush(force=True)

    def close(self) -> None:
        """Close the series (collective)."""
        self.out.close()


def butterfly_profiles(s: FluxContext, host: np.ndarray) -> np.ndarray:
    """Longitude mean of every realization's B_r per theta row ``(n_real, N_t)``, on world rank 0.

    Every rank holding realization ``r`` contributes ``sum_k f dp_k`` over its
    columns; rank 0 adds the terms of each row with ``math.fsum``, so the value
    does not depend on the split.  One realization is gathered at a time (rank 0
    holds one map's terms, never the ensemble).
    """
    lay = s.lay
    out = np.zeros((s.prm.n_real, s.grid.Nt))
    dp = s.geo["dp"][lay.c0 : lay.c1]
    nr_local = host.shape[0]
    for r in range(s.prm.n_real):
        part = None
        if lay.r_start <= r < lay.r_start + nr_local:
            rows = host[r - lay.r_start, lay.i0 : lay.i1, lay.c0 : lay.c1] * dp[None, :]
            part = (lay.t0, rows)
        parts = s.world.gather(part, root=0)
        if parts is None:
            continue
        terms: list[list[float]] = [[] for _ in range(s.grid.Nt)]
        for item in parts:
            if item is None:
                continue
            t0, rows = item
            for i in range(rows.shape[0]):
                terms[t0 + i].extend(rows[i].tolist())
        out[r] = np.array([math.fsum(t) for t in terms]) * TWOPI_INV
    return out


def save_checkpoint(s: FluxContext, st: FluxState, parts: dict[str, Any], directory: Path,
                    solution: dict[str, Any]) -> Path:  # fmt: skip
    """Checkpoint the field, the clock and ``parts``' own states (collective); loads on any rank count.

    ``parts`` maps names to components with ``state()``/``restore()`` (flow files, sources,
    assimilation); ``solution`` is the run's solution record (see ``hpcml.apps.restart``).
    """
    from hpcml.io import checkpoint

    state = {"br": DistArray(s.lay.world_decomp, st.host_data()), "loop": st.state()}
    for name, part in parts.items():
        state[name] = part.state() if part is not None else {}
    return checkpoint.save(directory, state, st.step, time=st.time, comm=s.world, config=s.cfg, solution=solution)


def load_checkpoint(s: FluxContext, st: FluxState, parts: dict[str, Any], path: str | Path,
                    expect: dict[str, Any] | None = None) -> Path:  # fmt: skip
    """Restore the field, the clock and ``parts``' states from a checkpoint, on any rank count.

    ``expect`` is the run's solution record (a checkpoint of another problem is
    refused, naming the keys).  Returns the file loaded.
    """
    from hpcml.io import checkpoint

    got = checkpoint.load(path, s.lay.world_decomp, expect=expect)
    br = got["br"]
    if tuple(br.shape) != tuple(s.lay.world_decomp.shape):
        raise ValueError(
            f"checkpoint {path}: field shape {tuple(br.shape)} does not match this run's "
            f"{tuple(s.lay.world_decomp.shape)} (realizations, theta, phi)"
        )
    st.set_host_data(br.data)
    st.restore(got["loop"])
    for name, part in parts.items():
        if part is not None and got.get(name):
            part.restore(got[name])
    return got.path
