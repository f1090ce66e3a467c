"""Data assimilation from a list of HipFT maps (section 8.4 of the spec).

The list is HipFT's CSV: a header line, then fixed-format rows of a 19-character
requested time, a blank, a 19-character observed time, a blank, the Julian date
(F13.5), a blank and the map path (relative to ``assimilation.directory``).
Each map holds three slices: the data, a weight in [0, 1] and mu (the
disk-centre cosine).  When the run reaches a map's time the field is blended
towards the data (or the weighted data is added), per realization, and the
time step is cut so that steps land on map times.

Interpretation where HipFT's text leaves it open: a map whose time equals the
start time is applied before the first step.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hpcml.apps.flux.grid import D2R, PI, read_map_info
from hpcml.config import ConfigError

if TYPE_CHECKING:
    from hpcml.apps.flux.state import FluxContext, FluxState

__all__ = ["Assimilation", "check_maps", "read_map_list"]


def read_map_list(path: str | Path, directory: str | Path | None = None) -> list[tuple[float, Path]]:
    """``(hours since the first map, map path)`` for every row of a HipFT DA list."""
    p = Path(path)
    base = Path(directory) if directory else p.parent
    rows: list[tuple[float, Path]] = []
    lines = p.read_text().splitlines()
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            jd = float(line[40:53])
            name = line[54:].strip()
        except ValueError:
            parts = line.replace(",", " ").split()
            try:
                jd, name = float(parts[-2]), parts[-1]
            except (ValueError, IndexError):
                raise ConfigError(f"{p}:{n}: cannot read a Julian date and a map name from {line!r}") from None
        if not name:
            raise ConfigError(f"{p}:{n}: no map file name in {line!r}")
        rows.append((jd, base / name))
    if not rows:
        raise ConfigError(f"{p}: the assimilation list has no maps")
    jd0 = rows[0][0]
    return [(24.0 * jd - 24.0 * jd0, path) for jd, path in rows]


def check_maps(da: dict[str, Any], nt: int, nf: int) -> list[tuple[float, Path]]:
    """Read the list and check every map's shape (all ranks, before any collective)."""
    maps = read_map_list(da["list"], da["directory"] or None)
    for _, path in maps:
        info = read_map_info(path, "assimilation map")
        if info.n_slices < 3 or info.shape[-2:] != (nt, nf):
            raise ConfigError(
                f"assimilation map {str(path)!r} has shape {info.shape}; expected 3 slices "
                f"(data, weight, mu) of {nt} x {nf} (the run's grid)"
            )
    return maps


class Assimilation:
    """Map list, the pointer to the next map, and the blend of one rank's block."""

    def __init__(self, s: FluxContext) -> None:
        from hpcml.apps.flux.diagnostics import Diagnostics

        self.s = s
        self.diag = Diagnostics(s)  # flux balance of the increments
        da = s.cfg["assimilation"]
        self.maps = check_maps(da, s.grid.Nt, s.grid.Nf)
        t0 = s.prm.t_start
        times = [t for t, _ in self.maps]
        if t0 > times[-1]:
            self.next = len(self.maps)  # past the last map: off
        elif t0 <= 0:
            self.next = 0
        else:
            self.next = next(i for i, t in enumerate(times) if t >= t0)
        lay = s.lay
        r = slice(lay.r_start, lay.r_start + lay.nr)
        self.custom = bool(da["custom_from_mu"])
        self.mu_power = s.prm.da_mu_power[r]
        self.mu_limit = s.prm.da_mu_limit[r]
        lat = np.array([float(v) for v in da["lat_limit"]])
        self.lat_limit = (np.full(s.prm.n_real, lat[0]) if len(lat) == 1 else lat)[r]
        if len(lat) not in (1, s.prm.n_real):
            raise ConfigError(f"assimilation.lat_limit has {len(lat)} values but realizations.n = {s.prm.n_real}")
        self.mult = float(da["mult_fac"])
        self.add = bool(da["add"])
        self.balance = bool(da["balance_flux"])
        self.applied = 0

    @property
    def next_time(self) -> float | None:
        """Time of the next map (None when done)."""
        return self.maps[self.next][0] if self.next < len(self.maps) else None

    def cut(self, time: float, dt: float) -> tuple[float, bool]:
        """Cut ``dt`` so that the step ends on the next map time."""
        nt = self.next_time
        if nt is not None and time < nt <= time + dt:
            return nt - time, True
        return dt, False

    def due(self, time: float) -> bool:
        """Whether the next map is due at ``time``."""
        nt = self.next_time
        return nt is not None and time >= nt

    def _read(self, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        import h5py

        lay = self.s.lay
        rows = slice(lay.t0, lay.t0 + lay.ny)
        cols = slice(lay.p0 + 1, lay.p0 + lay.nx + 1)  # the seam takes the file's 2 pi column
        info = read_map_info(path, "assimilation map")
        with h5py.File(path, "r") as fh:
            ds = fh[info.dataset]
            block = np.asarray(ds[0:3, rows, cols], dtype=np.float64)
        return block[0], block[1], block[2]

    def apply(self, st: FluxState) -> None:
        """Assimilate the next map into ``st.f`` (collective over the ensemble group)."""
        lay, g = self.s.lay, self.s.grid
        data, w0, mu = self._read(self.maps[self.next][1])
        x = st.host_data()
        own = (slice(lay.i0, lay.i1), slice(lay.c0, lay.c1))
        delta = lay.zeros()
        for r in range(lay.nr):
            w = w0.copy()
            if self.custom:
                w = np.where(mu > self.mu_limit[r], np.maximum(mu, 0.0) ** self.mu_power[r], 0.0)
            lim = self.lat_limit[r]
            if lim > 0:
                rows_all = g.t[1 : g.Nt + 1]
                j0 = int(np.argmax(rows_all >= lim * D2R)) + 1  # first row at or past the limit
                j1 = int(np.nonzero(rows_all <= PI - lim * D2R)[0][-1]) + 1
                jj = np.arange(lay.t0 + 1, lay.t0 + lay.ny + 1)
                w[(jj <= j0) | (jj >= j1), :] = 0.0
            d = self.mult * data
            if self.add:
                delta.data[r][own] = w * d
            else:
                delta.data[r][own] = w * (d - x[r][own])
        if self.balance:
            self.diag.balance(delta.data)
        x[:, lay.i0 : lay.i1, lay.c0 : lay.c1] += delta.data[:, lay.i0 : lay.i1, lay.c0 : lay.c1]
        st.set_host_data(x)  # the field itself on the CPU; a copy back to a GPU
        self.next += 1
        self.applied += 1

    def state(self) -> dict[str, Any]:
        """Restart state: the index of the next map."""
        return {"next": int(self.next), "applied": int(self.applied)}

    def restore(self, st: dict[str, Any]) -> None:
        """Restore the pointer to the next map."""
        self.next = int(st["next"])
        self.applied = int(st["applied"])
