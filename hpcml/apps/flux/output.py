"""Map time series (hpcml.io), HipFT-format map files, checkpoints and restart.

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
    from hpcml.apps.flux.solver import FluxSolver

__all__ = ["MapWriter", "load_checkpoint", "save_checkpoint", "write_hipft_map"]

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

    def __init__(self, s: FluxSolver, path: Path, restart_step: int | None = None) -> None:
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

    def write(self, step: int, time: float, rows: np.ndarray | None) -> None:
        """Append the field and the series from history values ``rows`` ``(n_real, 14)`` (collective)."""
        s = self.s
        wd = s.lay.world_decomp
        host = s.host_data()  # the field on the host (a copy from the GPU when it lives there)
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
            butterfly_profiles(s),
            step,
            time,
            units="G",
            long_name="longitude-averaged B_r",
            dims=("realization", "lat"),
        )
        self.out.flush()
        self.count += 1

    def close(self) -> None:
        """Close the series (collective)."""
        self.out.close()


def butterfly_profiles(s: FluxSolver) -> np.ndarray:
    """Longitude mean of every realization's B_r per theta row ``(n_real, N_t)``, on world rank 0.

    Every rank holding realization ``r`` contributes ``sum_k f dp_k`` over its
    columns; rank 0 adds the terms of each row with ``math.fsum``, so the value
    does not depend on the split.  One realization is gathered at a time (rank 0
    holds one map's terms, never the ensemble).
    """
    lay = s.lay
    out = np.zeros((s.prm.n_real, s.grid.Nt))
    dp = s.geo["dp"][lay.c0 : lay.c1]
    host = s.host_data()
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


def _file_field(field: np.ndarray) -> np.ndarray:
    """Unique columns ``(..., Np)`` -> HipFT file columns ``(..., N_f)`` (seam at both ends)."""
    return np.concatenate([field[..., -1:], field], axis=-1)


def write_hipft_map(path: Path, field: np.ndarray, grid: Any, single: bool, two_d: bool = True) -> None:
    """Write a HipFT map file: ``Data`` plus dimension scales ``dim1`` (phi), ``dim2`` (theta)[, ``dim3``]."""
    import h5py

    dt = np.float32 if single else np.float64
    data = _file_field(field).astype(dt)
    if two_d and data.shape[0] == 1:
        data = data[0]
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as fh:
        d = fh.create_dataset("Data", data=data)
        scales = [("dim1", grid.p[1 : grid.Nf + 1]), ("dim2", grid.t[1 : grid.Nt + 1])]
        if data.ndim == 3:
            scales.append(("dim3", np.arange(1, data.shape[0] + 1, dtype=np.float64)))
        for axis, (name, values) in enumerate(scales):
            sc = fh.create_dataset(name, data=np.asarray(values, dtype=dt))
            sc.make_scale(name)
            d.dims[data.ndim - 1 - axis].attach_scale(sc)
    tmp.replace(path)


def save_checkpoint(s: FluxSolver, directory: Path) -> Path:
    """Checkpoint the field and the loop state (collective); loads on any rank count."""
    from hpcml.io import checkpoint

    state = {
        "br": DistArray(s.lay.world_decomp, s.host_data()),
        "loop": {
            "time": float(s.time),
            "step": int(s.step),
            "dt": float(s.dt),
            "hist_rows": int(s.hist_rows),
            "next_map_time": float(s.next_map_time) if s.next_map_time is not None else -1.0,
            "next_ckpt_time": float(s.next_ckpt_time) if s.next_ckpt_time is not None else -1.0,
            "maps_written": int(s.maps_written),
            "map_step": int(s.map_step),
        },
        "sources": s.sources.state() if s.sources is not None else {},
        "assimilation": s.assim.state() if s.assim is not None else {},
    }
    return checkpoint.save(directory, state, s.step, time=s.time, comm=s.world, config=s.cfg, solution=s.solution)


def load_checkpoint(s: FluxSolver, path: str | Path, expect: dict[str, Any] | None = None) -> Path:
    """Restore the field and loop state from a checkpoint (file or directory), on any rank count.

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
    s.set_host_data(br.data)
    loop = got["loop"]
    s.time = float(loop["time"])
    s.step = int(loop["step"])
    s.dt = float(loop["dt"])
    s.hist_rows = int(loop["hist_rows"])
    nm = float(loop["next_map_time"])
    s.next_map_time = None if nm < 0 else nm
    nc = float(loop["next_ckpt_time"])
    s.next_ckpt_time = None if nc < 0 else nc
    s.maps_written = int(loop["maps_written"])
    s.map_step = int(loop.get("map_step", -1))
    if s.sources is not None and got.get("sources"):
        s.sources.restore(got["sources"])
    if s.assim is not None and got.get("assimilation"):
        s.assim.restore(got["assimilation"])
    s.dt_flag = True
    if s.flows is not None:
        s.flows.needs_update = True
    return got.path
