"""Map time series (hpcml.io), HipFT-format map files, checkpoints and restart.

The map series goes through :class:`hpcml.io.Output` as one field ``br`` of global
shape ``(n_realizations, N_t, N_f - 1)`` (the unique longitude columns, the last
one being the 0 = 2 pi seam), with coordinate attributes ``theta``, ``phi``,
``latitude`` and ``realization``.  Scalar series hold realization 1's fluxes and
dipoles (every realization's are in the history files) and ``butterfly``, its
longitude-averaged B_r per theta row, which ``hpcml analyze`` draws as a
butterfly diagram.
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

_SCALARS = (
    ("flux_positive", 3, "Mx"),
    ("flux_negative", 4, "Mx"),
    ("npole_flux_positive", 5, "Mx"),
    ("npole_flux_negative", 6, "Mx"),
    ("spole_flux_positive", 7, "Mx"),
    ("spole_flux_negative", 8, "Mx"),
    ("eq_dipole", 11, "G"),
    ("ax_dipole", 12, "G"),
    ("br_max", 1, "G"),
    ("br_min", 0, "G"),
)


class MapWriter:
    """The ``br`` series and scalar series of one run (collective over the world)."""

    def __init__(self, s: FluxSolver, path: Path, restart_step: int | None = None) -> None:
        from hpcml.io import Output

        self.s = s
        self.path = path
        cfg = s.cfg
        self.dtype = np.float32 if cfg["output"]["single_precision"] else np.float64
        self.out = Output(
            path, s.world, config=cfg, mode="a" if restart_step is not None else "w", restart_step=restart_step
        )
        g = s.grid
        t = g.t[1 : g.Nt + 1]
        self.attrs = {
            "theta": t,
            "phi": g.p[2 : g.M],
            "latitude": 90.0 - np.degrees(t),
            "realization": np.arange(1, s.prm.n_real + 1, dtype=np.int64),
            "layout": "(realization, theta, phi); phi = unique columns p_2..p_Nf (the last is the seam 0 = 2pi)",
            "butterfly": 1,
        }
        self.count = 0

    def write(self, step: int, time: float, rows: np.ndarray | None) -> None:
        """Append the field (and the scalar series from history values ``rows``) (collective)."""
        s = self.s
        wd = s.lay.world_decomp
        if self.dtype == np.float64:
            da = DistArray(wd, s.host_data())
        else:
            da = DistArray(wd, s.host_data().astype(self.dtype))
        self.out.write("br", da, step, time, units="G", attrs=self.attrs if self.count == 0 else None)
        vals = rows[0] if rows is not None else np.zeros(14)  # rank 0's values are the ones stored
        for name, col, units in _SCALARS:
            self.out.write_scalar(name, float(vals[col]), step, time, units=units)
        self.out.write_scalar("butterfly", butterfly_profile(s), step, time, units="G")
        self.count += 1

    def close(self) -> None:
        """Close the series; add the latitude axis to ``scalars/butterfly`` (rank 0)."""
        self.out.close()
        if self.s.rank0:
            import h5py

            with h5py.File(self.path, "a") as fh:
                if "scalars/butterfly" in fh:
                    fh["scalars/butterfly"].attrs["latitude"] = self.attrs["latitude"]
                    fh["scalars/butterfly"].attrs["realization"] = 1
        self.s.world.Barrier()


def butterfly_profile(s: FluxSolver) -> np.ndarray:
    """Longitude mean of realization 1's B_r per theta row, on world rank 0 (replicated value).

    Every rank holding realization 1 contributes ``sum_k f dp_k`` over its columns;
    rank 0 adds the parts with ``math.fsum`` (independent of the split).
    """
    lay = s.lay
    part = None
    if lay.r_start == 0:
        dp = s.geo["dp"][lay.c0 : lay.c1]
        rows = s.host_data()[0, lay.i0 : lay.i1, lay.c0 : lay.c1] * dp[None, :]
        part = (lay.t0, rows)
    parts = s.world.gather(part, root=0)
    prof = np.zeros(s.grid.Nt)
    if parts is not None:
        terms: list[list[float]] = [[] for _ in range(s.grid.Nt)]
        for item in parts:
            if item is None:
                continue
            t0, rows = item
            for i in range(rows.shape[0]):
                terms[t0 + i].extend(rows[i].tolist())
        prof = np.array([math.fsum(t) for t in terms]) * TWOPI_INV
    return prof


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
        },
        "sources": s.sources.state() if s.sources is not None else {},
        "assimilation": s.assim.state() if s.assim is not None else {},
    }
    return checkpoint.save(directory, state, s.step, time=s.time, comm=s.world, config=s.cfg)


def load_checkpoint(s: FluxSolver, path: str | Path) -> None:
    """Restore the field and loop state from a checkpoint (file or directory), on any rank count."""
    from hpcml.io import checkpoint

    got = checkpoint.load(path, s.lay.world_decomp)
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
    if s.sources is not None and got.get("sources"):
        s.sources.restore(got["sources"])
    if s.assim is not None and got.get("assimilation"):
        s.assim.restore(got["assimilation"])
    s.dt_flag = True
    if s.flows is not None:
        s.flows.needs_update = True
